//! Full-text indexing inside the running daemon while IMAP keeps serving
//! (issue 16): an archive of N messages of ≈ 20 KB (the messages of
//! `benches/fulltext.rs`) filled through the store API with `pecgate
//! serve` stopped, so that the daemon starts with all N to index; then
//! `pecgate serve` over loopback, and meanwhile
//!
//! * one IMAP session over TLS asking `UID SEARCH BODY` in turn for a
//!   rare word, a word in every message and a prefix, every 250 ms;
//! * another over TLS fetching a whole message (`UID FETCH n BODY.PEEK[]`)
//!   and asking a header key (`UID SEARCH SUBJECT`), every 250 ms;
//! * `/metrics` read every 500 ms: `pecgate_fulltext_documents` and
//!   `pecgate_fulltext_backlog_records`;
//!
//! until the index holds all N, and for FULLTEXT_LOAD_AFTER (40) more
//! searches after. Prints the indexing rate the metrics show, the
//! latencies (p50, p99, max) while indexing and after, the daemon's CPU
//! time and peak RSS, and the load average.
//!
//! ```text
//! FULLTEXT_LOAD_MESSAGES=100000 cargo bench --bench fulltext_load
//! ```
//! FULLTEXT_LOAD_MESSAGES (N, 20000); FULLTEXT_LOAD_TMP puts the data
//! directory elsewhere than the system's temporary directory (/dev/shm
//! spares the disk the N blob fsyncs of the filling); FULLTEXT_LOAD_KEEP
//! keeps it; FULLTEXT_LOAD_PECGATE runs another `pecgate` binary (an
//! older build, side by side).

#[path = "bench_client/mod.rs"]
mod bench_client;
#[path = "../tests/imap_support/mod.rs"]
mod imap_support;
#[path = "fulltext_support/mod.rs"]
mod messages;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench_client::{loadavg, ms, pct, Client};
use chrono::Utc;
use futures::StreamExt;
use pecgate::store::{Audit, Change, Store, StoreOptions};

const ADDRESS: &str = "protocollo@pec.comune.example.it";
const MAILBOX: &str = "prot";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Archive `n` of the benchmark's messages in prot/INBOX; their bytes.
fn archive(data: &Path, n: usize) -> u64 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (store, _) = Store::open(data, StoreOptions::default()).expect("open store");
        let mut r = messages::Rng(messages::SEED);
        let (mut start, mut bytes) = (0, 0u64);
        while start < n {
            let end = (start + 5_000).min(n);
            let raws: Vec<Vec<u8>> = (start..end).map(|i| messages::message(i, &mut r)).collect();
            bytes += raws.iter().map(|m| m.len() as u64).sum::<u64>();
            let blobs: Vec<_> = futures::stream::iter(raws)
                .map(|raw| {
                    let store = store.clone();
                    async move {
                        let at = Utc::now();
                        let filing = pecgate::upstream::filing::file(&raw, false, at, None);
                        (store.put_blob(raw).await.expect("blob"), filing, at)
                    }
                })
                .buffered(32)
                .collect()
                .await;
            let entries = blobs
                .into_iter()
                .map(|(blob, filing, at)| {
                    assert_eq!(filing.folder, "INBOX");
                    (
                        Audit::system("bench", "archive"),
                        Change::Archive {
                            mailbox: MAILBOX.into(),
                            folder: filing.folder,
                            blob,
                            internal_date: at,
                            flags: vec![],
                            provider: None,
                            pec: Some(filing.meta.into()),
                            handling: None,
                        },
                    )
                })
                .collect();
            store.commit_batch(entries).await.expect("archive batch");
            start = end;
            eprint!("\rarchived {end}/{n}");
        }
        eprintln!();
        store.close().expect("close store");
        bytes
    })
}

/// One timed command: when it started (since the daemon started), how
/// long it took, what it was, how many messages SEARCH found.
#[derive(Clone)]
struct Sample {
    at: Duration,
    took: Duration,
    what: &'static str,
    found: usize,
}


/// A process's CPU time (user + system, s) and peak RSS (MiB).
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or_default().split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    ((tick(11) + tick(12)) / 100.0, hwm / 1024.0)
}

fn main() {
    let n = env("FULLTEXT_LOAD_MESSAGES", 20_000);
    let after = env("FULLTEXT_LOAD_AFTER", 40);
    println!("fulltext_load: messages={n} (load average {})", loadavg());
    let dir = match std::env::var_os("FULLTEXT_LOAD_TMP") {
        Some(p) => tempfile::tempdir_in(p),
        None => tempfile::tempdir(),
    }
    .expect("tempdir");
    let data = dir.path().join("data");
    let cert = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").expect("cert");
    let (ca, chain, key) = (dir.path().join("ca.pem"), dir.path().join("chain.pem"), dir.path().join("key.pem"));
    std::fs::write(&ca, &cert.ca).expect("write ca");
    std::fs::write(&chain, &cert.chain).expect("write chain");
    std::fs::write(&key, &cert.key).expect("write key");
    let (port, http_port) = (imap_support::free_port(), imap_support::free_port());
    let hash = pecgate::auth::hash_password(imap_support::PASSWORD).expect("hash");
    let config = dir.path().join("pecgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\ndata_dir = \"{}\"\n\n\
             [[mailbox]]\nalias = \"{MAILBOX}\"\naddress = \"{ADDRESS}\"\nusername = \"u\"\npassword = \"p\"\n\
             imap = {{ host = \"127.0.0.1\", port = 9, tls = \"none\" }}\noffload = {{ mode = \"never\" }}\npoll_interval = \"1h\"\n\n\
             [imap]\nlisten = [\"127.0.0.1:{port}\"]\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
             [[user]]\nname = \"mario\"\npassword_hash = \"{hash}\"\ngrants = {{ {MAILBOX} = [\"read\"] }}\n",
            data.display(),
            chain.display(),
            key.display(),
        ),
    )
    .expect("write config");

    let t0 = Instant::now();
    let bytes = archive(&data, n);
    println!(
        "filled: {n} messages ({:.1} MB) archived in {:.1} s, none indexed",
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );

    let log = dir.path().join("serve.log");
    let start = Instant::now();
    let bin = std::env::var_os("FULLTEXT_LOAD_PECGATE").unwrap_or_else(|| env!("CARGO_BIN_EXE_pecgate").into());
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start pecgate serve");
    let pid = child.id();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("pecgate serve exited early ({st}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(start.elapsed() < Duration::from_secs(60), "pecgate serve did not listen in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("pecgate serve listening after {:.2} s", start.elapsed().as_secs_f64());

    // (since start, documents, backlog)
    let metrics: Arc<Mutex<Vec<(Duration, u64, u64)>>> = Arc::default();
    let done_at: Arc<Mutex<Option<Duration>>> = Arc::default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (searches, others) = rt.block_on(async {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let (metrics, done_at, stop) = (metrics.clone(), done_at.clone(), stop.clone());
            tokio::task::spawn_blocking(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let m = support::http_get(http_port, "/metrics", None);
                    let docs = support::sample(&m, "pecgate_fulltext_documents", &[]).unwrap_or(0.0) as u64;
                    let backlog = support::sample(&m, "pecgate_fulltext_backlog_records", &[]).unwrap_or(-1.0) as u64;
                    let at = start.elapsed();
                    metrics.lock().unwrap().push((at, docs, backlog));
                    if docs >= n as u64 {
                        done_at.lock().unwrap().get_or_insert(at);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        };
        let indexed = |extra: usize, count: usize| done_at.lock().unwrap().is_some() && count >= extra;
        let search = async {
            let mut c = Client::connect(port, &ca).await;
            c.cmd(&format!("LOGIN mario \"{}\"", imap_support::PASSWORD)).await;
            let r = c.cmd(&format!("SELECT \"{MAILBOX}/INBOX\"")).await;
            assert_eq!(r.exists, Some(n), "INBOX");
            let (mut out, mut since_done) = (Vec::new(), 0);
            for word in ["raccomandata", "sollecito", "raccom"].into_iter().cycle() {
                if indexed(after, since_done) {
                    break;
                }
                if done_at.lock().unwrap().is_some() {
                    since_done += 1;
                }
                let at = start.elapsed();
                let r = c.cmd(&format!("UID SEARCH BODY {word}")).await;
                out.push(Sample { at, took: start.elapsed() - at, what: word, found: r.found });
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            c.cmd("LOGOUT").await;
            out
        };
        let other = async {
            let mut c = Client::connect(port, &ca).await;
            c.cmd(&format!("LOGIN mario \"{}\"", imap_support::PASSWORD)).await;
            c.cmd(&format!("SELECT \"{MAILBOX}/INBOX\"")).await;
            let (mut out, mut i, mut since_done) = (Vec::new(), 0usize, 0);
            loop {
                if indexed(after, since_done) {
                    break;
                }
                if done_at.lock().unwrap().is_some() {
                    since_done += 1;
                }
                i += 1;
                let uid = 1 + (i * 7919) % n;
                let at = start.elapsed();
                let r = c.cmd(&format!("UID FETCH {uid} BODY.PEEK[]")).await;
                assert!(r.literal_bytes > 10_000, "FETCH {uid}: {} bytes", r.literal_bytes);
                out.push(Sample { at, took: start.elapsed() - at, what: "FETCH BODY.PEEK[]", found: 1 });
                let at = start.elapsed();
                let r = c.cmd(&format!("UID SEARCH SUBJECT \"Pratica n. {uid} \"")).await;
                out.push(Sample { at, took: start.elapsed() - at, what: "SEARCH SUBJECT", found: r.found });
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            c.cmd("LOGOUT").await;
            out
        };
        let (s, o) = tokio::join!(search, other);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        poller.await.expect("poller");
        (s, o)
    });
    let (cpu, rss) = usage(pid);
    let _ = child.kill();
    let _ = child.wait();

    let done = done_at.lock().unwrap().expect("indexed");
    let metrics = metrics.lock().unwrap().clone();
    println!("indexing as /metrics showed it (s since the daemon started: documents, backlog records):");
    let mut last = u64::MAX;
    for (at, docs, backlog) in &metrics {
        if *docs != last {
            println!("  {:>7.1} s: {docs:>8} documents, backlog {backlog}", at.as_secs_f64());
            last = *docs;
        }
    }
    println!(
        "indexed {n} messages in {:.1} s from the daemon's start: {:.0} messages/s (load average {})",
        done.as_secs_f64(),
        n as f64 / done.as_secs_f64(),
        loadavg()
    );
    println!("daemon: {cpu:.1} s of CPU in all, peak RSS {rss:.0} MiB");
    println!(
        "{:<34} {:>5} {:>9} {:>9} {:>9}   found",
        "command (while indexing / after)", "count", "p50", "p99", "max"
    );
    let all: Vec<Sample> = searches.iter().chain(others.iter()).cloned().collect();
    for what in ["raccomandata", "sollecito", "raccom", "FETCH BODY.PEEK[]", "SEARCH SUBJECT"] {
        for (phase, during) in [("while indexing", true), ("after", false)] {
            let s: Vec<&Sample> = all.iter().filter(|s| s.what == what && (s.at < done) == during).collect();
            if s.is_empty() {
                continue;
            }
            let took: Vec<Duration> = s.iter().map(|s| s.took).collect();
            let found: Vec<usize> = s.iter().map(|s| s.found).collect();
            let label = if what.starts_with("FETCH") || what.starts_with("SEARCH") {
                what.to_string()
            } else {
                format!("SEARCH BODY {what}")
            };
            println!(
                "{:<34} {:>5} {:>7.1}ms {:>7.1}ms {:>7.1}ms   {}..{}",
                format!("{label}, {phase}"),
                s.len(),
                ms(pct(&took, 0.5)),
                ms(pct(&took, 0.99)),
                ms(*took.iter().max().unwrap()),
                found.iter().min().unwrap(),
                found.iter().max().unwrap()
            );
        }
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    for l in log_text.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).take(5) {
        println!("daemon log: {l}");
    }
    if std::env::var_os("FULLTEXT_LOAD_KEEP").is_some() {
        println!("data directory kept: {}", dir.keep().display());
    }
}
