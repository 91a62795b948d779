//! One chain for the whole archive against one chain per mailbox (issue
//! 21), measured with a prototype of the cluster append transaction at the
//! SQL level: the same two round trips as `store::cluster::Link` (BEGIN
//! pipelined with `SELECT … FOR UPDATE` of the heads the batch touches,
//! locked in sorted order; then one statement inserting the lines, moving
//! the heads and `pg_notify`ing, pipelined with COMMIT), in throwaway
//! tables (`proto_journal`, `proto_heads`) on the tests' PostgreSQL 15
//! (`fsync=on`). The two variants run the same code: only the head keys
//! differ (`all` for one chain, `mbx0`…`mbx5` for per-mailbox chains).
//!
//! Each node is a group-committing writer on its own thread and connection
//! (it takes every record waiting, up to 256, into one transaction, as the
//! real writer does), with a LISTEN connection beside it, fed by W client
//! tasks that each submit one record (≈ 330 bytes of JSON, like an audit
//! record) and wait for its commit. Under the lock the writer first reads
//! the records other nodes committed on the chains it locked (as the real
//! writer takes in the shared chain), checks their hashes and links, then
//! chains its own: each record carries its chain's sequence number, the
//! previous hash, and the SHA-256 of its body. Beside it, a follower woken
//! by the LISTEN connection's notifications (at most every 50 ms) reads and
//! checks every chain's new records without a lock: each node still takes
//! in the whole archive, whatever the chains. Six mailboxes, in two
//! distributions: partitioned (node i writes only mailboxes 2i and 2i+1,
//! as pollers under per-mailbox leases do) and mixed (every record goes to
//! a random one of the six). Per-mailbox runs also commit, every second,
//! one record listing all six heads on a seventh chain (`heads`), on its
//! own connection: the periodic record of every head.
//!
//! Before them, at each W, the real `Store` (one chain, as
//! `benches/cluster_append.rs` runs it) on the same PostgreSQL, to check
//! the prototype's one-chain figures against the real code.
//!
//!     CHAINS_SECS=5 CHAINS_ROUNDS=4 cargo bench --bench chain_heads
//!
//! Environment: CHAINS_SECS (seconds per run, default 10), CHAINS_WRITERS
//! (writers per node, default "2,16,64"), CHAINS_ROUNDS (runs of each
//! configuration, back to back, default 1; every other round runs
//! per-mailbox chains before one chain; the summary gives the medians),
//! CHAINS_REAL (0: skip the real `Store`). PostgreSQL 15 and s3s-fs as for
//! tests/cluster.rs.

#[path = "../tests/support/cluster.rs"]
#[allow(dead_code)]
mod cluster_support;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_support::{Postgres, S3};
use futures::StreamExt;
use pecgate::store::{Audit, Change, Store};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const MAILBOXES: usize = 6;
/// As `store::Writer`: how many requests one group commit takes at most.
const MAX_BATCH: usize = 256;
const CHANNEL: &str = "proto_journal";
const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_KEY: &str = ",\"hash\":\"";

const SCHEMA: &str = "
SET client_min_messages = warning;
DROP TABLE IF EXISTS proto_journal, proto_heads;
CREATE TABLE proto_journal (
    chain TEXT NOT NULL,
    seq   BIGINT NOT NULL,
    line  TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE TABLE proto_heads (
    chain TEXT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Chains {
    One,
    PerMailbox,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Spread {
    Partitioned,
    Mixed,
}

fn chain_of(chains: Chains, mailbox: usize) -> String {
    match chains {
        Chains::One => "all".into(),
        Chains::PerMailbox => format!("mbx{mailbox}"),
    }
}

/// `body` (a JSON object) with its hash appended as the journal does:
/// the line and the hash.
fn seal(body: String) -> (String, String) {
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    let mut line = body;
    line.pop();
    line.push_str(HASH_KEY);
    line.push_str(&hash);
    line.push_str("\"}");
    (line, hash)
}

/// Check a line another node committed: its hash, and that it follows
/// `prev`. Returns its hash.
fn check(line: &str, prev: &str) -> String {
    let i = line.rfind(HASH_KEY).expect("a hash member");
    let body = format!("{}}}", &line[..i]);
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    assert_eq!(&line[i + HASH_KEY.len()..i + HASH_KEY.len() + 64], hash, "hash of {line}");
    assert!(body.contains(&format!("\"prev\":\"{prev}\"")), "{line} does not follow {prev}");
    hash
}

struct Req {
    mailbox: usize,
    folder: String,
    reply: oneshot::Sender<()>,
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect to PostgreSQL");
    // Awaiting the connection reads (and drops) notifications too.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn pg<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> T {
    r.unwrap_or_else(|e| {
        panic!("{what}: {}", e.as_db_error().map(|d| d.message().to_string()).unwrap_or(e.to_string()))
    })
}

#[derive(Default)]
struct WriterStats {
    transactions: u64,
    records: u64,
    /// Records other nodes committed, read under the lock.
    taken_in: u64,
    /// Heads locked, summed over transactions.
    heads_locked: u64,
    /// From BEGIN sent to COMMIT answered, summed over transactions.
    busy: Duration,
    /// Records other nodes committed, read by the follower (no lock).
    followed: u64,
}

/// A node's writer: group commit on its own connection.
/// What a node has taken in of each chain: (seq, hash). Shared by its
/// writer and its follower (one thread: never held across an await).
type Known = Arc<Mutex<HashMap<String, (i64, String)>>>;

/// Take in one line another node committed on `chain`, unless this node
/// has it already: check its hash and its link, move `known`.
fn take_in(known: &Known, chain: &str, seq: i64, line: &str) -> bool {
    let mut kn = known.lock().expect("known");
    let k = kn.entry(chain.to_string()).or_insert((0, ZERO.to_string()));
    if seq <= k.0 {
        return false;
    }
    assert_eq!(seq, k.0 + 1, "chain {chain} has no gap");
    k.1 = check(line, &k.1);
    k.0 = seq;
    true
}

/// The records committed after what this node knows of `names`.
async fn read_after(c: &Client, known: &Known, names: Vec<String>) -> Vec<(String, i64, String)> {
    let after: Vec<i64> = {
        let kn = known.lock().expect("known");
        names.iter().map(|n| kn.get(n).map(|k| k.0).unwrap_or(0)).collect()
    };
    let rows = pg(
        c.query_typed(
            "SELECT j.chain, j.seq, j.line FROM proto_journal j \
             JOIN UNNEST($1::text[], $2::int8[]) AS k(chain, after) \
               ON j.chain = k.chain AND j.seq > k.after \
             ORDER BY j.chain, j.seq",
            &[(&names, Type::TEXT_ARRAY), (&after, Type::INT8_ARRAY)],
        )
        .await,
        "take in",
    );
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

/// A node's follower: woken by the other nodes' notifications (or once a
/// second), at most every 50 ms, it reads and checks every chain's new
/// records outside any transaction, as a node takes in the journal for
/// its index between its own batches. Counts what it took in.
async fn follower(c: &Client, mut wake: mpsc::UnboundedReceiver<()>, known: Known, all: Vec<String>, n: &AtomicU64) {
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), wake.recv()).await;
        while wake.try_recv().is_ok() {}
        for (chain, seq, line) in read_after(c, &known, all.clone()).await {
            if take_in(&known, &chain, seq, &line) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn writer(
    c: Client,
    node: usize,
    chains: Chains,
    mut rx: mpsc::UnboundedReceiver<Req>,
    known: Known,
) -> WriterStats {
    let mut stats = WriterStats::default();
    while let Some(first) = rx.recv().await {
        let mut reqs = vec![first];
        while reqs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => reqs.push(r),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut keys: Vec<String> = reqs.iter().map(|r| chain_of(chains, r.mailbox)).collect();
        keys.sort();
        keys.dedup();
        // Round trip 1: BEGIN and the heads' locks, in sorted order (the
        // sort runs below the row locks) so that two nodes never wait on
        // each other's heads in a cycle.
        let lock: [(&(dyn ToSql + Sync), Type); 1] = [(&keys, Type::TEXT_ARRAY)];
        let (begun, heads) = futures::join!(
            c.batch_execute("BEGIN"),
            c.query_typed(
                "SELECT chain, seq, hash FROM proto_heads WHERE chain = ANY($1) ORDER BY chain FOR UPDATE",
                &lock,
            )
        );
        pg(begun, "BEGIN");
        let heads = pg(heads, "lock the heads");
        assert_eq!(heads.len(), keys.len(), "a head row per chain");
        stats.heads_locked += keys.len() as u64;
        let behind: Vec<String> = {
            let kn = known.lock().expect("known");
            heads
                .iter()
                .filter(|h| h.get::<_, i64>(1) > kn.get(h.get::<_, &str>(0)).map(|k| k.0).unwrap_or(0))
                .map(|h| h.get(0))
                .collect()
        };
        // Take in what other nodes committed on these chains (a third
        // round trip, only when there is some, as `Link::begin`).
        if !behind.is_empty() {
            for (chain, seq, line) in read_after(&c, &known, behind).await {
                if take_in(&known, &chain, seq, &line) {
                    stats.taken_in += 1;
                }
            }
        }
        let mut kn = known.lock().expect("known");
        for h in &heads {
            let (chain, seq, hash): (String, i64, String) = (h.get(0), h.get(1), h.get(2));
            assert_eq!(
                kn.entry(chain.clone()).or_insert((0, ZERO.to_string())),
                &(seq, hash),
                "node {node} caught up with {chain}"
            );
        }
        // Chain the batch under the lock.
        let time = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let (mut lc, mut ls, mut ll) = (Vec::new(), Vec::new(), Vec::new());
        for r in &reqs {
            let chain = chain_of(chains, r.mailbox);
            let k = kn.get_mut(&chain).expect("a locked chain");
            let seq = k.0 + 1;
            let body = format!(
                "{{\"seq\":{seq},\"chain\":\"{chain}\",\"time\":\"{time}\",\"actor\":\"operatore{node}\",\
                 \"source\":\"10.1.2.{node}:5{:04}\",\"proto\":\"imap\",\"op\":\"select\",\
                 \"mailbox\":\"protocollo{}@pec.comune.example.it\",\"folder\":\"{}\",\"outcome\":\"ok\",\
                 \"event\":{{\"type\":\"none\"}},\"prev\":\"{}\"}}",
                reqs.len(),
                r.mailbox,
                r.folder,
                k.1
            );
            let (line, hash) = seal(body);
            *k = (seq, hash);
            lc.push(chain);
            ls.push(seq);
            ll.push(line);
        }
        let (hc, hs, hh): (Vec<String>, Vec<i64>, Vec<String>) = {
            let mut a = (Vec::new(), Vec::new(), Vec::new());
            for key in &keys {
                let (s, h) = &kn[key];
                a.0.push(key.clone());
                a.1.push(*s);
                a.2.push(h.clone());
            }
            a
        };
        drop(kn);
        let notice: String = hc.iter().zip(&hs).map(|(c, s)| format!("{c}:{s}")).collect::<Vec<_>>().join(",");
        let channel = CHANNEL.to_string();
        let params: [(&(dyn ToSql + Sync), Type); 8] = [
            (&lc, Type::TEXT_ARRAY),
            (&ls, Type::INT8_ARRAY),
            (&ll, Type::TEXT_ARRAY),
            (&hc, Type::TEXT_ARRAY),
            (&hs, Type::INT8_ARRAY),
            (&hh, Type::TEXT_ARRAY),
            (&channel, Type::TEXT),
            (&notice, Type::TEXT),
        ];
        // Round trip 2: the lines, the heads, the notification and COMMIT.
        let (written, committed) = futures::join!(
            c.query_typed(
                "WITH lines AS (INSERT INTO proto_journal (chain, seq, line) \
                    SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[])), \
                 heads AS (UPDATE proto_heads h SET seq = n.seq, hash = n.hash \
                    FROM UNNEST($4::text[], $5::int8[], $6::text[]) AS n(chain, seq, hash) \
                    WHERE h.chain = n.chain) \
                 SELECT pg_notify($7, $8)",
                &params,
            ),
            c.batch_execute("COMMIT")
        );
        pg(written, "append");
        pg(committed, "COMMIT");
        stats.busy += started.elapsed();
        stats.transactions += 1;
        stats.records += reqs.len() as u64;
        for r in reqs {
            let _ = r.reply.send(());
        }
    }
    stats
}

/// Every second until `until`: one record on chain `heads` listing every
/// mailbox head (one statement's snapshot: a consistent cut). Returns
/// how many and their commit times.
async fn checkpoints(c: Client, until: Instant) -> Vec<Duration> {
    let mut lat = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        if Instant::now() >= until {
            return lat;
        }
        let t = Instant::now();
        let (begun, head, all) = futures::join!(
            c.batch_execute("BEGIN"),
            c.query_typed("SELECT seq, hash FROM proto_heads WHERE chain = 'heads' FOR UPDATE", &[]),
            c.query_typed("SELECT chain, seq, hash FROM proto_heads WHERE chain <> 'heads' ORDER BY chain", &[])
        );
        pg(begun, "BEGIN");
        let head = pg(head, "lock heads");
        let all = pg(all, "read heads");
        let (seq, prev): (i64, String) = (head[0].get::<_, i64>(0) + 1, head[0].get(1));
        let list: Vec<String> = all
            .iter()
            .map(|r| {
                format!(
                    "{{\"chain\":\"{}\",\"seq\":{},\"hash\":\"{}\"}}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, String>(2)
                )
            })
            .collect();
        let time = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        let (line, hash) = seal(format!(
            "{{\"seq\":{seq},\"chain\":\"heads\",\"time\":\"{time}\",\"actor\":\"system\",\"proto\":\"system\",\
             \"op\":\"heads\",\"heads\":[{}],\"outcome\":\"ok\",\"event\":{{\"type\":\"none\"}},\"prev\":\"{prev}\"}}",
            list.join(",")
        ));
        let notice = format!("heads:{seq}");
        let params: [(&(dyn ToSql + Sync), Type); 5] = [
            (&seq, Type::INT8),
            (&line, Type::TEXT),
            (&hash, Type::TEXT),
            (&CHANNEL, Type::TEXT),
            (&notice, Type::TEXT),
        ];
        let (written, committed) = futures::join!(
            c.query_typed(
                "WITH lines AS (INSERT INTO proto_journal (chain, seq, line) VALUES ('heads', $1, $2)), \
                 head AS (UPDATE proto_heads SET seq = $1, hash = $3 WHERE chain = 'heads') \
                 SELECT pg_notify($4, $5)",
                &params,
            ),
            c.batch_execute("COMMIT")
        );
        pg(written, "heads record");
        pg(committed, "COMMIT");
        lat.push(t.elapsed());
    }
}

struct Outcome {
    rate: f64,
    p50: Duration,
    p99: Duration,
    per_txn: f64,
    heads_per_txn: f64,
    /// Mean transaction time (BEGIN sent to COMMIT answered).
    txn: Duration,
    taken_in: u64,
    followed: u64,
    checkpoints: Vec<Duration>,
}

fn percentiles(all: &mut [Duration]) -> (Duration, Duration) {
    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    (pct(0.5), pct(0.99))
}

async fn prototype(url: &str, nodes: usize, writers: usize, chains: Chains, spread: Spread, secs: u64) -> Outcome {
    let setup = connect(url).await;
    pg(setup.batch_execute(SCHEMA).await, "schema");
    let heads: Vec<String> = match chains {
        Chains::One => vec!["all".into()],
        Chains::PerMailbox => (0..MAILBOXES).map(|m| chain_of(chains, m)).chain(["heads".to_string()]).collect(),
    };
    pg(
        setup
            .query_typed(
                "INSERT INTO proto_heads (chain, seq, hash) SELECT c, 0, $2 FROM UNNEST($1::text[]) AS c",
                &[(&heads, Type::TEXT_ARRAY), (&ZERO, Type::TEXT)],
            )
            .await,
        "heads",
    );
    pg(setup.batch_execute("CHECKPOINT").await, "CHECKPOINT");
    let mut senders = Vec::new();
    let mut writer_threads = Vec::new();
    for n in 0..nodes {
        // A node's writer on a thread of its own, its connections on that
        // thread's runtime (the real writer is a thread, its PostgreSQL
        // client a one-worker runtime of the store's).
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let (ready, is_ready) = oneshot::channel();
        let url = url.to_string();
        let all = heads.clone();
        writer_threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("writer runtime");
            rt.block_on(async move {
                let c = connect(&url).await;
                // The LISTEN connection, driven here to see notifications.
                let (l, mut conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect to PostgreSQL");
                let (wake, woken) = mpsc::unbounded_channel();
                tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(Ok(m)) = messages.next().await {
                        if let tokio_postgres::AsyncMessage::Notification(_) = m {
                            let _ = wake.send(());
                        }
                    }
                });
                pg(l.batch_execute(&format!("LISTEN {CHANNEL}")).await, "LISTEN");
                let _ = ready.send(());
                let known = Known::default();
                let followed = AtomicU64::new(0);
                let mut stats = tokio::select! {
                    s = writer(c, n, chains, rx, known.clone()) => s,
                    _ = follower(&l, woken, known, all, &followed) => unreachable!("the follower stops with the writer"),
                };
                stats.followed = followed.load(Ordering::Relaxed);
                stats
            })
        }));
        is_ready.await.expect("writer connected");
    }
    let until = Instant::now() + Duration::from_secs(secs);
    let heads_task = match chains {
        Chains::PerMailbox => Some(tokio::spawn(checkpoints(connect(url).await, until))),
        Chains::One => None,
    };
    let t0 = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for (n, tx) in senders.iter().enumerate() {
        for w in 0..writers {
            let tx = tx.clone();
            let folder = format!("n{n}w{w}");
            clients.spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64((n * 1000 + w) as u64);
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let mailbox = match spread {
                        Spread::Partitioned => 2 * n + rng.gen_range(0..2),
                        Spread::Mixed => rng.gen_range(0..MAILBOXES),
                    };
                    let t = Instant::now();
                    let (reply, done) = oneshot::channel();
                    tx.send(Req { mailbox, folder: folder.clone(), reply }).expect("writer running");
                    done.await.expect("committed");
                    lat.push(t.elapsed());
                }
                lat
            });
        }
    }
    drop(senders);
    let mut all = Vec::new();
    while let Some(r) = clients.join_next().await {
        all.extend(r.expect("client"));
    }
    let elapsed = t0.elapsed().as_secs_f64().max(secs as f64);
    let mut stats = WriterStats::default();
    for t in writer_threads {
        let s = t.join().expect("writer");
        stats.transactions += s.transactions;
        stats.records += s.records;
        stats.taken_in += s.taken_in;
        stats.heads_locked += s.heads_locked;
        stats.busy += s.busy;
        stats.followed += s.followed;
    }
    let checkpoints = match heads_task {
        Some(t) => t.await.expect("heads records"),
        None => Vec::new(),
    };
    let (p50, p99) = percentiles(&mut all);
    Outcome {
        rate: all.len() as f64 / elapsed,
        p50,
        p99,
        per_txn: stats.records as f64 / stats.transactions.max(1) as f64,
        heads_per_txn: stats.heads_locked as f64 / stats.transactions.max(1) as f64,
        txn: stats.busy / stats.transactions.max(1) as u32,
        taken_in: stats.taken_in,
        followed: stats.followed,
        checkpoints,
    }
}

/// The real `Store`s, as `benches/cluster_append.rs` drives them.
async fn real(stores: &[Store], writers: usize, secs: u64) -> (f64, Duration, Duration) {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in stores.iter().enumerate() {
        for w in 0..writers {
            let s = s.clone();
            tasks.spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let a = Audit::system("bench", "select").mailbox("bench").folder(&format!("n{i}w{w}"));
                    s.commit(a, Change::None).await.expect("commit");
                    lat.push(t.elapsed());
                }
                lat
            });
        }
    }
    let t0 = Instant::now();
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("writer"));
    }
    let elapsed = t0.elapsed().as_secs_f64().max(secs as f64);
    let (p50, p99) = percentiles(&mut all);
    (all.len() as f64 / elapsed, p50, p99)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env("CHAINS_SECS", 10);
    let passes = env("CHAINS_ROUNDS", 1);
    let with_real = env("CHAINS_REAL", 1) != 0;
    let writers: Vec<usize> = std::env::var("CHAINS_WRITERS")
        .unwrap_or_else(|_| "2,16,64".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let _ = free_port;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = Postgres::start();
    let s3 = if with_real { Some(S3::start()) } else { None };
    let url = pg.url();
    println!(
        "journal appends: one chain against per-mailbox chains, {secs} s a run, six mailboxes, {} UTC",
        chrono::Utc::now().format("%Y-%m-%d %H:%M")
    );
    println!(
        "{:<5} {:>3} {:>5} {:<12} {:<12} {:>10} {:>9} {:>9} {:>8} {:>9} {:>6} {:>17} {:>14}  load",
        "pass",
        "W",
        "nodes",
        "spread",
        "chains",
        "records/s",
        "p50",
        "p99",
        "rec/txn",
        "txn",
        "heads",
        "in: lock/follower",
        "heads records"
    );
    let mut summary: BTreeMap<(usize, usize, String, String), Vec<(f64, Duration, Duration)>> = BTreeMap::new();
    for &w in &writers {
        if let Some(s3) = &s3 {
            for nodes in [1usize, 3] {
                for pass in 0..passes {
                    pg.sql("DROP TABLE IF EXISTS pecgate_journal, pecgate_chain, pecgate_nodes, pecgate_leases");
                    pg.sql("CHECKPOINT");
                    let (r, p50, p99) = rt.block_on(async {
                        let stores: Vec<Store> = (0..nodes)
                            .map(|i| {
                                let name = format!("p{pass}w{w}n{nodes}-{i}");
                                Store::open(&dir.path().join(&name), s3.store_options(&pg, &name))
                                    .expect("cluster store")
                                    .0
                            })
                            .collect();
                        let out = real(&stores, w, secs).await;
                        for s in stores {
                            s.close().expect("close");
                        }
                        out
                    });
                    println!(
                        "{:<5} {:>3} {:>5} {:<12} {:<12} {:>10.0} {:>9.2?} {:>9.2?} {:>8} {:>9} {:>6} {:>17} {:>14}  {}",
                        pass + 1,
                        w,
                        nodes,
                        "-",
                        "real Store",
                        r,
                        p50,
                        p99,
                        "",
                        "",
                        "",
                        "",
                        "",
                        load()
                    );
                    summary.entry((w, nodes, "-".into(), "real Store".into())).or_default().push((r, p50, p99));
                }
            }
        }
        for spread in [Spread::Partitioned, Spread::Mixed] {
            for nodes in [1usize, 3] {
                for pass in 0..passes {
                    // Each round the other variant first: the machine's
                    // load drifts.
                    let order = if pass % 2 == 0 {
                        [Chains::One, Chains::PerMailbox]
                    } else {
                        [Chains::PerMailbox, Chains::One]
                    };
                    for chains in order {
                        let o = rt.block_on(prototype(&url, nodes, w, chains, spread, secs));
                        let hr = if o.checkpoints.is_empty() {
                            "-".to_string()
                        } else {
                            let mut c = o.checkpoints.clone();
                            let (p50, _) = percentiles(&mut c);
                            format!("{} p50 {:.2?}", c.len(), p50)
                        };
                        let (sp, ch) = (format!("{spread:?}").to_lowercase(), format!("{chains:?}"));
                        println!(
                            "{:<5} {:>3} {:>5} {:<12} {:<12} {:>10.0} {:>9.2?} {:>9.2?} {:>8.1} {:>9.2?} {:>6.1} {:>17} {:>14}  {}",
                            pass + 1,
                            w,
                            nodes,
                            sp,
                            ch,
                            o.rate,
                            o.p50,
                            o.p99,
                            o.per_txn,
                            o.txn,
                            o.heads_per_txn,
                            format!("{}/{}", o.taken_in, o.followed),
                            hr,
                            load()
                        );
                        summary.entry((w, nodes, sp, ch)).or_default().push((o.rate, o.p50, o.p99));
                    }
                }
            }
        }
    }
    println!("\nsummary: the median of the rounds' records/s, p50 and p99 (each round's records/s)");
    for ((w, nodes, sp, ch), runs) in &summary {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
        };
        let r = median(runs.iter().map(|x| x.0).collect());
        let a = median(runs.iter().map(|x| x.1.as_secs_f64() * 1e3).collect());
        let b = median(runs.iter().map(|x| x.2.as_secs_f64() * 1e3).collect());
        let each: Vec<String> = runs.iter().map(|x| format!("{:.0}", x.0)).collect();
        println!("W={w:<3} nodes={nodes} {sp:<12} {ch:<12} {r:>8.0} {a:>7.2} ms {b:>7.2} ms  ({})", each.join(", "));
    }
}
