//! Several nodes (issue 21): what a client sees through each of three
//! `pecgate serve` nodes sharing one archive (PostgreSQL 15 and s3s-fs on
//! loopback, started as tests/cluster.rs starts them), next to one node on
//! the same cluster backend and one node on the local backend (the cost of
//! the network hop):
//!
//! * APPEND through node a, one at a time (p50/p99): its tagged OK comes
//!   once the record is committed (in PostgreSQL) and the blob stored (in
//!   the bucket);
//! * IDLE across nodes: a session on every node IDLEs on the folder; the
//!   time from the APPEND's OK on node a to each session's `EXISTS`
//!   (p50/p99 per node; on one node, its own sessions);
//! * FETCH through each node: `UID FETCH 1:* BODY.PEEK[]` of a folder of
//!   CLUSTER_LOAD_MESSAGES messages of ≈ 20 KB appended through node a,
//!   twice (the second from what the node keeps);
//! * each node's resident memory (VmRSS) at the end.
//!
//! ```text
//! cargo bench --bench cluster_load
//! ```
//!
//! CLUSTER_LOAD_NODES (3), CLUSTER_LOAD_APPENDS (200), CLUSTER_LOAD_MESSAGES
//! (2000).

#[path = "bench_client/mod.rs"]
mod bench_client;
#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench_client::{loadavg, ms, pct, Client};
use support::cluster::{Postgres, S3};
use support::free_port;

const PASSWORD: &str = "Bench-pass-1";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `pecgate serve` process.
struct Node {
    name: String,
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Node {
    /// Start node `name` with `store` as its `[store]` section.
    fn start(dir: &Path, name: &str, store: &str, cert: &Path, key: &Path) -> Node {
        let (port, http) = (free_port(), free_port());
        let hash = pecgate::auth::hash_password(PASSWORD).expect("hash");
        let text = format!(
            "{store}[[mailbox]]\nalias = \"prot\"\naddress = \"protocollo@pec.example.it\"\nusername = \"u\"\npassword = \"p\"\n\
             imap = {{ host = \"127.0.0.1\", port = 9, tls = \"none\" }}\noffload = {{ mode = \"never\" }}\npoll_interval = \"1h\"\n\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\n[imap]\nlisten = [\"127.0.0.1:{port}\"]\n\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[[user]]\nname = \"mario\"\npassword_hash = \"{hash}\"\n\
             default_mailbox = \"prot\"\ngrants = {{ prot = [\"read\", \"triage\", \"send\", \"delete\"] }}\n",
            cert.display(),
            key.display()
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start pecgate serve");
        let mut n = Node { name: name.into(), port, log, child };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!("node {name} exited ({st}): {}", std::fs::read_to_string(&n.log).unwrap_or_default());
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "node {name} did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn login(port: u16, ca: &Path) -> Client {
    let mut c = Client::connect(port, ca).await;
    c.cmd(&format!("LOGIN mario {PASSWORD}")).await;
    c
}

/// A message of about `size` bytes, distinct by `n`.
fn message(n: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: ufficio@comune.example.it\r\nTo: protocollo@pec.example.it\r\nSubject: Pratica {n}\r\n\
         Message-ID: <bench-{n}@comune.example.it>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0100\r\n\r\n"
    );
    let line = format!("Testo della pratica numero {n}, protocollo in entrata, allegati a seguire.\r\n");
    while m.len() < size {
        m.push_str(&line);
    }
    m.into_bytes()
}

/// The figures of one setup (`nodes`, the first takes the APPENDs).
async fn measure(label: &str, nodes: &[Node], ca: &Path, appends: usize, messages: usize) {
    let mut a = login(nodes[0].port, ca).await;
    a.cmd("CREATE prot/Bench").await;
    a.cmd("CREATE prot/Fetch").await;
    // One idling session per node, each in a task that stamps every EXISTS.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, usize, Instant)>();
    let mut idlers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (port, ca, tx) = (n.port, ca.to_path_buf(), tx.clone());
        let mut c = login(port, &ca).await;
        c.cmd("SELECT prot/Bench").await;
        c.idle().await;
        idlers.push(tokio::spawn(async move {
            loop {
                let e = c.next_exists().await;
                if tx.send((i, e, Instant::now())).is_err() {
                    return;
                }
            }
        }));
    }
    let mut append_lat = Vec::new();
    let mut idle_lat: Vec<Vec<Duration>> = vec![Vec::new(); nodes.len()];
    for k in 1..=appends {
        let t0 = Instant::now();
        a.append("prot/Bench", &message(k, 2048)).await;
        let ok = Instant::now();
        append_lat.push(ok - t0);
        let mut seen = vec![false; nodes.len()];
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        while seen.iter().any(|s| !s) {
            tokio::select! {
                got = rx.recv() => {
                    let (i, e, at) = got.expect("idlers alive");
                    if e >= k && !seen[i] {
                        seen[i] = true;
                        idle_lat[i].push(at.saturating_duration_since(ok));
                    }
                }
                _ = &mut deadline => panic!("{label}: message {k} not announced within 10 s on nodes {seen:?}"),
            }
        }
    }
    for t in idlers {
        t.abort();
    }
    println!(
        "{label}: APPEND 2 KB through {}: p50 {:.2} ms, p99 {:.2} ms ({appends})",
        nodes[0].name,
        ms(pct(&append_lat, 0.5)),
        ms(pct(&append_lat, 0.99))
    );
    for (n, lat) in nodes.iter().zip(&idle_lat) {
        println!(
            "{label}: IDLE on {} told of it after the OK: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            n.name,
            ms(pct(lat, 0.5)),
            ms(pct(lat, 0.99)),
            ms(pct(lat, 1.0))
        );
    }
    // The FETCH folder, through node a.
    let t0 = Instant::now();
    for k in 0..messages {
        a.append("prot/Fetch", &message(appends + 1 + k, 20 * 1024)).await;
    }
    let fill = t0.elapsed();
    println!(
        "{label}: {messages} APPENDs of 20 KB through {}, one at a time: {:.1} s ({:.0}/s)",
        nodes[0].name,
        fill.as_secs_f64(),
        messages as f64 / fill.as_secs_f64()
    );
    for n in nodes {
        let mut c = login(n.port, ca).await;
        // Every node has them all (node a's OK came after the commit; the
        // others follow the journal).
        let t0 = Instant::now();
        while c.cmd("SELECT prot/Fetch").await.exists.unwrap_or(0) < messages {
            assert!(t0.elapsed() < Duration::from_secs(60), "{label}: {} never showed {messages}", n.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut rates = Vec::new();
        for _ in 0..2 {
            let t = Instant::now();
            let r = c.cmd("UID FETCH 1:* (BODY.PEEK[])").await;
            assert_eq!(r.fetches, messages, "{label}: FETCH through {}", n.name);
            let secs = t.elapsed().as_secs_f64();
            rates.push((messages as f64 / secs, r.literal_bytes as f64 / secs / 1e6));
        }
        println!(
            "{label}: FETCH {messages} x 20 KB through {}: {:.0} messages/s ({:.0} MB/s), again {:.0}/s ({:.0} MB/s)",
            n.name, rates[0].0, rates[0].1, rates[1].0, rates[1].1
        );
    }
    for n in nodes {
        println!("{label}: {} resident memory {:.1} MiB", n.name, n.rss_mib());
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (count, appends, messages) =
        (env("CLUSTER_LOAD_NODES", 3), env("CLUSTER_LOAD_APPENDS", 200), env("CLUSTER_LOAD_MESSAGES", 2000));
    println!("cluster_load: nodes={count} appends={appends} messages={messages} load_average={}", loadavg());
    let dir = tempfile::Builder::new().prefix("pecgate-cluster-load").tempdir().expect("temp dir");
    let pki = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").expect("certificate");
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("chain.pem"), dir.path().join("key.pem"));
    for (path, pem) in [(&ca, &pki.ca), (&cert, &pki.chain), (&key, &pki.key)] {
        std::fs::write(path, pem).expect("write PEM");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // One node, local backend.
    {
        let data = dir.path().join("local");
        let store = format!("[store]\ndata_dir = \"{}\"\n\n", data.display());
        let nodes = [Node::start(dir.path(), "local", &store, &cert, &key)];
        rt.block_on(measure("local backend, 1 node", &nodes, &ca, appends, messages));
    }
    // One node, then `count`, on the cluster backend (a fresh archive each).
    for n in [1, count] {
        let (pg, s3) = (Postgres::start(), S3::start());
        let sub = dir.path().join(format!("cluster-{n}"));
        std::fs::create_dir_all(&sub).expect("dir");
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let name = ["a", "b", "c", "d", "e"][i.min(4)];
                let store = s3.store_toml(&pg, name, &sub.join(format!("node-{name}")));
                Node::start(&sub, name, &store, &cert, &key)
            })
            .collect();
        rt.block_on(measure(&format!("cluster backend, {n} node(s)"), &nodes, &ca, appends, messages));
    }
    println!("load average at the end: {}", loadavg());
}
