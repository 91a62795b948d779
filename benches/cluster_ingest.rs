//! Ingest from six provider mailboxes, one node against three (issue 21):
//! a throwaway Dovecot with six users, each INBOX loaded with the same
//! log-uniform 2 KiB–2 MiB mix as `PECGATE_BENCH_MIX=loguniform cargo
//! bench --bench ingest` (the same seed, `benches/ingest_mix`), distinct
//! messages in each (Message-ID `<test-N@pecgate.test>`, N unique across
//! the six). Then, for each configuration, `pecgate serve` with all six
//! mailboxes (offload `after-archive`; the archive fsyncs, PostgreSQL runs
//! with `fsync=on`):
//!
//! * `local`: one node, local backend;
//! * `cluster1`: one node, cluster backend (PostgreSQL 15 and s3s-fs on
//!   loopback, as `tests/support/cluster.rs` starts them): the cost of the
//!   network hop next to `local`;
//! * `cluster3`: three nodes on the cluster backend, every node configured
//!   with the six mailboxes, the three processes spawned together.
//!
//! The clock runs from the first spawn until every message is in the
//! archive (each mailbox's `archived_total` in the nodes' `status.json`)
//! and every provider INBOX is empty (Dovecot's Maildir, `cur` and `new`).
//! Printed per configuration: wall time, messages/s and MB/s, and the same
//! from the moment the first message is archived (before it: the nodes'
//! start, and a cluster node's settling on its share of the mailboxes,
//! a quarter of the lease: 5 s by default); each node's
//! CPU time (`/proc/PID/stat`) and peak resident memory (VmHWM), and how
//! many messages it archived from which mailbox (its `status.json`); the
//! CPU the peers used meanwhile (Dovecot, PostgreSQL and s3s-fs: each
//! process tree's own and reaped children's time); the mailbox leases
//! (`pecgate_leases`: holder and epoch, epoch 1 = never moved). Then the
//! check, which panics on failure: every Message-ID has exactly one
//! `archive` record in the journal (PostgreSQL's, or the local journal
//! files), none missing. The mailboxes are loaded again before each
//! configuration; each cluster configuration gets a fresh PostgreSQL and
//! bucket.
//!
//! ```text
//! cargo bench --bench cluster_ingest
//! CLUSTER_INGEST_MESSAGES=1200 CLUSTER_INGEST_ROUNDS=2 cargo bench --bench cluster_ingest
//! CLUSTER_INGEST_CONFIGS=cluster3,cluster3@/tmp/pecgate-before cargo bench --bench cluster_ingest
//! ```
//!
//! * `CLUSTER_INGEST_MESSAGES` (600): the total, split evenly over the six;
//! * `CLUSTER_INGEST_ROUNDS` (1): repeat the configurations, alternating;
//! * `CLUSTER_INGEST_CONFIGS` (`local,cluster1,cluster3`): which, in order;
//!   `NAME@PATH` runs that configuration with the `pecgate` binary at PATH
//!   (e.g. a copy built before a change) instead of this build's;
//! * `CLUSTER_INGEST_LEASE` (unset: the default, 20 s): `[upstream] lease`;
//! * `CLUSTER_INGEST_KEEP=1`: keep the nodes' directories (logs) and say
//!   where.

mod ingest_mix;
#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{Postgres, S3};
use support::{make_message, Dovecot, DovecotOptions, UserSpec};

const MAILBOXES: usize = 6;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn alias(k: usize) -> String {
    format!("m{}", k + 1)
}

fn user(k: usize) -> String {
    format!("casella{}@pec.example.it", k + 1)
}

fn password(k: usize) -> String {
    format!("bench-secret-{}", k + 1)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// `/proc/PID/stat`: (ppid, own user+system ticks, reaped children's
/// user+system ticks).
fn proc_stat(pid: u32) -> Option<(u32, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is 3.
    let rest: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let f = |field: usize| rest.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    Some((f(4)? as u32, f(14)? + f(15)?, f(16)? + f(17)?))
}

/// CPU seconds of `root` and every live descendant, each with the children
/// it reaped: the difference over an interval is what the tree used.
fn tree_cpu(root: u32) -> f64 {
    let mut procs: Vec<(u32, u32, u64, u64)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
            if let Some((ppid, own, reaped)) = proc_stat(pid) {
                procs.push((pid, ppid, own, reaped));
            }
        }
    }
    let mut tree = vec![root];
    let mut ticks = 0;
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        for &(pid, ppid, own, reaped) in &procs {
            if pid == p {
                ticks += own + reaped;
            }
            if ppid == p && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        i += 1;
    }
    ticks as f64 / clk_tck()
}

/// The s3s-fs process listening on `port` (its command line says so).
fn s3s_pid(port: u16) -> Option<u32> {
    let want = format!("--port\0{port}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("s3s-fs") && cmd.contains(&want)).then_some(pid)
    })
}

fn postmaster_pid(pg: &Postgres) -> Option<u32> {
    std::fs::read_to_string(pg.dir.path().join("data/postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
}

/// A `pecgate serve` process of this bench.
struct Node {
    name: String,
    config: PathBuf,
    /// Where its `status.json` is (`data_dir`, or `index_dir` in a cluster).
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path, name: &str, store: &str, body: &str) -> Node {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, format!("{store}{body}")).expect("write config");
        Node {
            name: name.into(),
            config,
            data: dir.join(format!("node-{name}")),
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn spawn(&mut self, bin: &Path) {
        let log = std::fs::File::create(&self.log).expect("log");
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} serve: {e}", bin.display()));
        self.child = Some(child);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn check_alive(&mut self) {
        if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
            panic!("node {} exited ({st}):\n{}", self.name, tail(&self.log(), 40));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its mailboxes in `status.json`, by alias.
    fn status(&self) -> BTreeMap<String, Value> {
        let v: Value = std::fs::read(self.data.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        v["mailboxes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["alias"].as_str()?.to_string(), m.clone())))
            .collect()
    }

    /// (user + system CPU seconds, VmHWM in MiB), while it runs.
    fn usage(&self) -> (f64, f64) {
        let cpu = proc_stat(self.pid()).map(|(_, own, _)| own as f64 / clk_tck()).unwrap_or(0.0);
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        (cpu, kib / 1024.0)
    }

    /// SIGTERM, without waiting: the nodes stop together, so that none
    /// takes over the mailboxes of another while it shuts down.
    fn terminate(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
    }

    /// Wait until it has exited (after [`Node::terminate`]).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if t0.elapsed() > Duration::from_secs(60) {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("node {} did not stop within 60 s of SIGTERM:\n{}", self.name, tail(&self.log(), 40));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Messages in `user`'s INBOX at the provider (Dovecot's Maildir files).
fn on_provider(dv: &Dovecot, k: usize) -> usize {
    let md = dv.maildir(&user(k));
    ["cur", "new"].iter().map(|d| std::fs::read_dir(md.join(d)).map(|r| r.count()).unwrap_or(0)).sum()
}

/// Put mailbox `k`'s messages into its INBOX, the six at once.
fn load(dv: &Dovecot, per: usize, sizes: &[usize]) -> Duration {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for k in 0..MAILBOXES {
            s.spawn(move || {
                assert_eq!(on_provider(dv, k), 0, "{}'s INBOX is empty before loading", user(k));
                let uids = dv.imap(&user(k)).append("INBOX", (0..per).map(|j| make_message(k * per + j, sizes[j])));
                assert_eq!(uids.len(), per, "{} loaded", user(k));
            });
        }
    });
    t0.elapsed()
}

/// Archive records per Message-ID in journal lines.
fn archived_ids<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in lines.filter(|l| l.contains("\"op\":\"archive\"")) {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}"));
        if v["op"] == "archive" {
            let id = v["message_id"].as_str().unwrap_or("-").to_string();
            *out.entry(id).or_insert(0) += 1;
        }
    }
    out
}

/// Panic unless each of the `n` Message-IDs has exactly one record.
fn check_once(label: &str, got: &BTreeMap<String, usize>, n: usize) {
    let want: Vec<String> = (0..n).map(|i| format!("<test-{i}@pecgate.test>")).collect();
    let missing: Vec<&String> = want.iter().filter(|id| !got.contains_key(*id)).collect();
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, c)| **c != 1).collect();
    let wanted: std::collections::HashSet<&String> = want.iter().collect();
    let stray: Vec<&String> = got.keys().filter(|id| !wanted.contains(id)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && stray.is_empty(),
        "{label}: every Message-ID archived exactly once? {} missing (e.g. {:?}), {} archived more than once \
         (e.g. {:?}), {} unexpected (e.g. {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        stray.len(),
        stray.iter().take(5).collect::<Vec<_>>()
    );
    println!("{label}: check: {n} Message-IDs, each archived exactly once");
}

/// One line of the summary table.
struct Row {
    round: usize,
    label: String,
    load: String,
    wall: f64,
    /// Seconds from the start to the first message archived.
    first: f64,
    n: usize,
    bytes: usize,
    nodes: Vec<(String, f64, f64, String)>,
    peers: String,
    leases: String,
}

struct Run<'a> {
    dv: &'a Dovecot,
    per: usize,
    sizes: &'a [usize],
    dir: &'a Path,
    lease: Option<String>,
    /// Keep each configuration's directory (configs, logs, local archive).
    keep: bool,
}

impl Run<'_> {
    fn n(&self) -> usize {
        self.per * MAILBOXES
    }

    fn bytes(&self) -> usize {
        self.sizes[..self.per].iter().sum::<usize>() * MAILBOXES
    }

    /// The configuration after `[store]`: the six mailboxes.
    fn body(&self) -> String {
        let mut b = String::new();
        if let Some(l) = &self.lease {
            b += &format!("[upstream]\nlease = \"{l}\"\n\n");
        }
        for k in 0..MAILBOXES {
            b += &support::gateway::mailbox_toml(
                &alias(k),
                &user(k),
                &password(k),
                self.dv.port,
                "offload = { mode = \"after-archive\" }",
            );
            b += "\n";
        }
        b
    }

    /// One configuration: `count` nodes (0 = one on the local backend).
    fn configuration(&self, round: usize, name: &str, bin: &Path) -> Row {
        let count = match name {
            "local" | "cluster1" => 1,
            "cluster3" => 3,
            other => panic!("CLUSTER_INGEST_CONFIGS: unknown configuration {other:?} (local, cluster1, cluster3)"),
        };
        let local = name == "local";
        let label = if bin == Path::new(env!("CARGO_BIN_EXE_pecgate")) {
            name.to_string()
        } else {
            format!("{name}@{}", bin.display())
        };
        let sub = self.dir.join(format!("r{round}-{}", label.replace('/', "_")));
        std::fs::create_dir_all(&sub).expect("dir");
        let took = load(self.dv, self.per, self.sizes);
        println!(
            "-- round {round}, {label}: {} messages loaded into {MAILBOXES} INBOXes in {:.1} s; load average {}",
            self.n(),
            took.as_secs_f64(),
            loadavg()
        );
        let (pg, s3) = if local { (None, None) } else { (Some(Postgres::start()), Some(S3::start())) };
        let mut nodes: Vec<Node> = (0..count)
            .map(|i| {
                let node = ["a", "b", "c"][i];
                let store = match (&pg, &s3) {
                    (Some(pg), Some(s3)) => s3.store_toml(pg, node, &sub.join(format!("node-{node}"))),
                    _ => format!("[store]\ndata_dir = \"{}\"\n\n", sub.join(format!("node-{node}")).display()),
                };
                Node::new(&sub, node, &store, &self.body())
            })
            .collect();
        // The peers' CPU from here until the nodes have stopped.
        let peer_pids: Vec<(&str, u32)> = [
            ("dovecot", self.dv.pid()),
            ("postgres", pg.as_ref().and_then(postmaster_pid)),
            ("s3s-fs", s3.as_ref().and_then(|s| s3s_pid(s.port))),
        ]
        .into_iter()
        .filter_map(|(n, p)| Some((n, p?)))
        .collect();
        let peers_before: Vec<f64> = peer_pids.iter().map(|(_, p)| tree_cpu(*p)).collect();
        let load_before = loadavg();

        let t0 = Instant::now();
        for n in nodes.iter_mut() {
            n.spawn(bin);
        }
        let mut last_say = Instant::now();
        // When `status.json` first shows a message archived: what came
        // before is the nodes' start (and, in a cluster, their settling on
        // who polls what).
        let mut first: Option<Duration> = None;
        let wall = loop {
            for n in nodes.iter_mut() {
                n.check_alive();
            }
            let statuses: Vec<BTreeMap<String, Value>> = nodes.iter().map(Node::status).collect();
            let archived: Vec<u64> = (0..MAILBOXES)
                .map(|k| {
                    statuses.iter().filter_map(|s| s.get(&alias(k))?["archived_total"].as_u64()).max().unwrap_or(0)
                })
                .collect();
            let left: Vec<usize> = (0..MAILBOXES).map(|k| on_provider(self.dv, k)).collect();
            if first.is_none() && archived.iter().any(|a| *a > 0) {
                first = Some(t0.elapsed());
            }
            if archived.iter().all(|a| *a as usize == self.per) && left.iter().all(|l| *l == 0) {
                break t0.elapsed();
            }
            if last_say.elapsed() > Duration::from_secs(30) {
                println!("   {:.0} s: archived {archived:?}, on the provider {left:?}", t0.elapsed().as_secs_f64());
                last_say = Instant::now();
            }
            if t0.elapsed() > Duration::from_secs(1200) {
                panic!(
                    "{label}: not done after 20 min: archived {archived:?}, on the provider {left:?}\n{}",
                    nodes.iter().map(|n| format!("node {}:\n{}", n.name, tail(&n.log(), 30))).collect::<String>()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let load_after = loadavg();
        let usage: Vec<(f64, f64)> = nodes.iter().map(Node::usage).collect();
        let leases = pg
            .as_ref()
            .map(|pg| {
                pg.sql(
                    "SELECT substring(name from 9) || ' ' || coalesce(holder, '-') || ' ' || epoch FROM pecgate_leases \
                     WHERE name LIKE 'mailbox:%' ORDER BY name",
                )
            })
            .unwrap_or_default();
        let stopping = Instant::now();
        for n in &nodes {
            n.terminate();
        }
        for n in nodes.iter_mut() {
            n.stop();
        }
        let stopped = stopping.elapsed();
        // Read after the stop: a mailbox's last delete can reach Dovecot
        // before its count reaches `status.json`.
        let statuses: Vec<BTreeMap<String, Value>> = nodes.iter().map(Node::status).collect();
        // Let Dovecot and PostgreSQL reap the sessions' processes.
        std::thread::sleep(Duration::from_millis(500));
        let peers: Vec<String> = peer_pids
            .iter()
            .zip(&peers_before)
            .map(|((name, pid), before)| format!("{name} {:.2} s", tree_cpu(*pid) - before))
            .collect();

        // Who archived what (and deleted it), per node.
        let mut node_rows = Vec::new();
        let (mut archived_sum, mut deleted_sum) = (0, 0);
        for ((n, (cpu, hwm)), st) in nodes.iter().zip(&usage).zip(&statuses) {
            let mut polled = Vec::new();
            for (a, s) in st {
                let (ar, de) =
                    (s["archived_this_run"].as_u64().unwrap_or(0), s["deleted_this_run"].as_u64().unwrap_or(0));
                archived_sum += ar;
                deleted_sum += de;
                if ar > 0 || de > 0 {
                    polled.push(if ar == self.per as u64 && de == ar { a.clone() } else { format!("{a} ({ar}/{de})") });
                }
            }
            let polled = if polled.is_empty() { "none".to_string() } else { polled.join(" ") };
            node_rows.push((n.name.clone(), *cpu, *hwm, polled));
        }
        let leases = leases
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                match f.as_slice() {
                    [m, h, "1"] => format!("{m} {h}"),
                    [m, h, e] => format!("{m} {h} (epoch {e})"),
                    _ => l.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");

        let (s, mb) = (wall.as_secs_f64(), self.bytes() as f64 / 1e6);
        let first = first.unwrap_or(wall).as_secs_f64();
        println!(
            "{label}: {} messages, {mb:.1} MB in {s:.2} s: {:.1} messages/s, {:.1} MB/s (load average {load_before} -> {load_after})",
            self.n(),
            self.n() as f64 / s,
            mb / s
        );
        println!(
            "{label}: the first message archived after {first:.2} s; from then on {:.2} s: {:.1} messages/s, {:.1} MB/s",
            s - first,
            self.n() as f64 / (s - first),
            mb / (s - first)
        );
        for (name, cpu, hwm, polled) in &node_rows {
            println!("{label}: node {name}: CPU {cpu:.2} s, peak RSS {hwm:.1} MiB, archived and deleted: {polled}");
        }
        println!("{label}: peers' CPU: {}; the nodes stopped in {:.1} s", peers.join(", "), stopped.as_secs_f64());
        if !leases.is_empty() {
            println!("{label}: leases (mailbox holder): {leases}");
        }
        println!("{label}: status.json: {archived_sum} archived, {deleted_sum} deleted at the provider this run");

        // Every Message-ID archived exactly once.
        let got = match &pg {
            Some(pg) => {
                let lines = pg.sql("SELECT line FROM pecgate_journal WHERE line LIKE '%\"op\":\"archive\"%'");
                archived_ids(lines.lines())
            }
            None => {
                let jdir = nodes[0].data.join("journal");
                let mut files: Vec<PathBuf> =
                    std::fs::read_dir(&jdir).expect("journal dir").flatten().map(|e| e.path()).collect();
                files.sort();
                let text: String = files.iter().map(|p| std::fs::read_to_string(p).expect("journal segment")).collect();
                archived_ids(text.lines())
            }
        };
        check_once(&label, &got, self.n());
        for n in &nodes {
            assert!(!n.log().contains("panicked"), "node {} panicked:\n{}", n.name, n.log());
        }
        if !self.keep {
            drop(nodes);
            let _ = std::fs::remove_dir_all(&sub);
        }
        Row {
            round,
            label,
            load: format!("{load_before} / {load_after}"),
            wall: s,
            first,
            n: self.n(),
            bytes: self.bytes(),
            nodes: node_rows,
            peers: peers.join(", "),
            leases,
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` nothing: a
    // smoke run of two messages a mailbox then.
    let benching = std::env::args().any(|a| a == "--bench");
    let total = env_usize("CLUSTER_INGEST_MESSAGES", if benching { 600 } else { 12 });
    let per = (total / MAILBOXES).max(1);
    let rounds = env_usize("CLUSTER_INGEST_ROUNDS", 1);
    let configs: Vec<(String, PathBuf)> = std::env::var("CLUSTER_INGEST_CONFIGS")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "local,cluster1,cluster3".into())
        .split(',')
        .map(|c| match c.trim().split_once('@') {
            Some((name, bin)) => (name.to_string(), PathBuf::from(bin)),
            None => (c.trim().to_string(), PathBuf::from(env!("CARGO_BIN_EXE_pecgate"))),
        })
        .collect();
    let lease = std::env::var("CLUSTER_INGEST_LEASE").ok().filter(|v| !v.is_empty());
    let sizes = ingest_mix::sizes_loguniform(per);
    println!(
        "cluster_ingest: {MAILBOXES} mailboxes x {per} messages ({:.1} MB each, {:.1} MB in all), log-uniform \
         2 KiB-2 MiB; configurations {:?} x {rounds}; load average {}",
        sizes.iter().sum::<usize>() as f64 / 1e6,
        sizes.iter().sum::<usize>() as f64 * MAILBOXES as f64 / 1e6,
        configs.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        loadavg()
    );
    let mut users = DovecotOptions::new();
    for k in 0..MAILBOXES {
        users = users.user(UserSpec::new(&user(k), &password(k)).quota(8 << 30, 10_000_000));
    }
    let dv = Dovecot::start(users);
    let dir = tempfile::Builder::new().prefix("pecgate-cluster-ingest").tempdir().expect("temp dir");
    let keep = std::env::var("CLUSTER_INGEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
    let run = Run { dv: &dv, per, sizes: &sizes, dir: dir.path(), lease, keep };
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for (name, bin) in &configs {
            rows.push(run.configuration(round, name, bin));
        }
    }

    println!(
        "\n| round | configuration | load average (start / end) | wall | messages/s | MB/s | first archived at | \
         messages/s after it | node: CPU, peak RSS, mailboxes | peers' CPU | leases |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let mb = r.bytes as f64 / 1e6;
        let nodes = r
            .nodes
            .iter()
            .map(|(name, cpu, hwm, polled)| format!("{name}: {cpu:.2} s, {hwm:.0} MiB, {polled}"))
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "| {} | {} | {} | {:.2} s | {:.1} | {:.1} | {:.2} s | {:.1} | {nodes} | {} | {} |",
            r.round,
            r.label,
            r.load,
            r.wall,
            r.n as f64 / r.wall,
            mb / r.wall,
            r.first,
            r.n as f64 / (r.wall - r.first),
            r.peers,
            if r.leases.is_empty() { "-" } else { &r.leases }
        );
    }
    if keep {
        println!("kept: {}", dir.keep().display());
    }
}
