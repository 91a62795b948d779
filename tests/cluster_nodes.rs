//! Three nodes on one archive (issue 21): `pecgate serve` x3 on loopback
//! against one PostgreSQL 15 and one S3 server (s3s-fs), each node with
//! its own ports and index directory. One provider mailbox polled by one
//! node at a time, seen through IMAP on all three.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{Postgres, S3};
use support::free_port;

/// Every gateway user's password here (tests/imap/common.py's too).
const PASSWORD: &str = "pw-Secret-1";

struct Node {
    name: String,
    config: PathBuf,
    log: PathBuf,
    /// The IMAP listener (implicit TLS).
    imap: u16,
    /// The HTTP listener (API, `/metrics`).
    http: u16,
    child: Option<Child>,
}

impl Node {
    /// Node `name` of the cluster on `pg` and `s3`: its `[store]`, then
    /// `body(imap_port, http_port)` (every other section).
    fn new(dir: &Path, name: &str, pg: &Postgres, s3: &S3, body: impl Fn(u16, u16) -> String) -> Node {
        let index_dir = dir.join(format!("node-{name}"));
        let (imap, http) = (free_port(), free_port());
        let text = format!("{}{}", s3.store_toml(pg, name, &index_dir), body(imap, http));
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).expect("write config");
        Node { name: name.into(), log: dir.join(format!("{name}.log")), config, imap, http, child: None }
    }

    /// Start `serve` and wait until it answers IMAP and HTTP.
    fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pecgate serve");
        self.child = Some(child);
        let t0 = Instant::now();
        for port in [self.imap, self.http] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                    panic!("node {} exited ({st}): {}", self.name, self.log());
                }
                assert!(t0.elapsed() < Duration::from_secs(60), "node {} did not listen: {}", self.name, self.log());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGKILL: the node dies at whatever it was doing.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                assert!(t0.elapsed() < Duration::from_secs(60), "node {} did not stop: {}", self.name, self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pecgate"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run pecgate")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn said(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("node {}:\n{}", n.name, support::gateway::tail(&n.log(), 60)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool, logs: impl Fn() -> String) -> Duration {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

/// The live holder of lease `name` ("" if none).
fn holder(pg: &Postgres, name: &str) -> String {
    pg.sql(&format!(
        "SELECT coalesce(max(holder), '') FROM pecgate_leases WHERE name = '{name}' AND expires_at > now()"
    ))
}

/// Journal records of operation `op`, counted per Message-ID.
fn per_message_id(pg: &Postgres, op: &str) -> BTreeMap<String, u64> {
    let rows = pg.sql(&format!(
        "SELECT id || ' ' || count(*) FROM (SELECT coalesce(substring(line from '\"message_id\":\"([^\"]*)\"'), '-') AS id \
         FROM pecgate_journal WHERE line LIKE '%\"op\":\"{op}\"%') AS r GROUP BY id"
    ));
    rows.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(id, n)| (id.to_string(), n.parse().expect("a count")))
        .collect()
}

/// `cluster status` says `nodes` nodes, each with its index at the head.
fn caught_up(node: &Node, nodes: usize) -> bool {
    let out = node.cli(&["cluster", "status", "--json"]);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let all = st["nodes"].as_array().cloned().unwrap_or_default();
    all.len() == nodes && all.iter().all(|n| n["lag"] == 0)
}

const PROVIDER_USER: &str = "protocollo@pec.example.it";
const PROVIDER_PASS: &str = "provider-secret-7";

/// Run tests/imap/cluster_nodes.py against the nodes `ports` (see there
/// for `steps`); its output.
fn script(ports: &[u16], cert: &Path, dv: &support::Dovecot, steps: &[&str]) -> std::process::Child {
    let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    Command::new(support::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/imap/cluster_nodes.py"))
        .arg("0")
        .arg(cert)
        .arg(".")
        .arg(ports)
        .arg(dv.port.to_string())
        .args([PROVIDER_USER, PROVIDER_PASS])
        .args(steps)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3")
}

fn script_ok(child: std::process::Child, nodes: &[Node]) -> String {
    let out = child.wait_with_output().expect("python3");
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && so.contains("all checks passed"),
        "cluster_nodes.py failed\n{so}\n{se}\n{}",
        logs(nodes)
    );
    eprintln!("{}", so.lines().filter(|l| !l.starts_with("ok:")).collect::<Vec<_>>().join("\n"));
    so.to_string()
}

/// Three nodes, one provider mailbox (Dovecot) that node a polls: the
/// messages it archives are announced to IDLE sessions on all three
/// nodes within a second of each other; `\Seen` set on b is seen on c;
/// c's IDLE hears of a message APPENDed through a. kill -9 of the poller:
/// b or c takes the mailbox within the lease's length and the ingest goes
/// on (seen on both); a restarted catches up. Every provider message is
/// archived exactly once and `audit verify` passes on every node.
#[test]
fn three_nodes_one_poller_and_its_takeover() {
    let pg = Postgres::start();
    let s3 = S3::start();
    let dv = support::Dovecot::start(
        support::DovecotOptions::new()
            .user(support::UserSpec::new(PROVIDER_USER, PROVIDER_PASS).quota(1 << 30, 1_000_000)),
    );
    let provider = dv.imap(PROVIDER_USER);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    support::selfsigned::certificate(&cert, &key);
    let lease = Duration::from_secs(3);
    let hash = pecgate::auth::hash_password(PASSWORD).expect("hash");
    let body = |imap: u16, http: u16| {
        format!(
            "[upstream]\ntimeout = \"10s\"\nmin_backoff = \"100ms\"\nmax_backoff = \"1s\"\nlease = \"{}s\"\n\n{}\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\n[imap]\nlisten = [\"127.0.0.1:{imap}\"]\n\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [[user]]\nname = \"mario\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"prot\"\n\
             grants = {{ prot = [\"read\", \"triage\", \"send\", \"delete\"] }}\n",
            lease.as_secs(),
            support::gateway::mailbox_toml("prot", PROVIDER_USER, PROVIDER_PASS, dv.port, ""),
            cert.display(),
            key.display()
        )
    };
    let mut nodes = [
        Node::new(dir.path(), "a", &pg, &s3, body),
        Node::new(dir.path(), "b", &pg, &s3, body),
        Node::new(dir.path(), "c", &pg, &s3, body),
    ];
    // a first: it takes the mailbox; then b and c stand by.
    nodes[0].start();
    wait("node a polls prot", Duration::from_secs(20), || holder(&pg, "mailbox:prot") == "a", || logs(&nodes));
    nodes[1].start();
    nodes[2].start();
    let ports: Vec<u16> = nodes.iter().map(|n| n.imap).collect();

    // 20 messages through a's poller, on every node's IDLE; the flag; the
    // APPEND through a seen by c's IDLE.
    let out = script_ok(script(&ports, &cert, &dv, &["see:0:20", "flags", "append"]), &nodes);
    assert!(out.contains("SEEN") && out.contains("FLAG seen") && out.contains("APPEND seen"), "{out}");
    wait("the provider emptied", Duration::from_secs(20), || provider.count("INBOX") == 0, || logs(&nodes));
    let polled = |n: &Node| n.log().contains("logged in to the provider");
    assert_eq!(nodes.iter().filter(|n| polled(n)).map(|n| n.name.as_str()).collect::<Vec<_>>(), ["a"], "only a polled");
    assert_eq!(holder(&pg, "mailbox:prot"), "a");

    // The poller dies; the 20 next messages arrive meanwhile, seen on b
    // and c as soon as one of them has taken the mailbox.
    nodes[0].kill9();
    let killed = Instant::now();
    let child = script(&ports[1..], &cert, &dv, &["see:20:20"]);
    let mut next = String::new();
    let took = wait(
        "b or c takes the mailbox",
        lease * 2,
        || {
            next = holder(&pg, "mailbox:prot");
            next == "b" || next == "c"
        },
        || logs(&nodes),
    );
    eprintln!("node {next} took the mailbox {took:?} after a was killed (lease {lease:?})");
    script_ok(child, &nodes);
    wait("the provider emptied again", Duration::from_secs(20), || provider.count("INBOX") == 0, || logs(&nodes));
    let other = nodes.iter().find(|n| n.running() && n.name != next).expect("the third node");
    assert!(!polled(other), "node {} never polled", other.name);
    assert!(killed.elapsed() > took);

    // a back: it catches up, stands by (the mailbox stays with its new
    // poller), and sees what is archived next like the others.
    nodes[0].start();
    wait("every node caught up", Duration::from_secs(20), || caught_up(&nodes[0], 3), || logs(&nodes));
    script_ok(script(&ports, &cert, &dv, &["see:40:5"]), &nodes);
    assert_eq!(holder(&pg, "mailbox:prot"), next, "the mailbox stays with its poller");
    wait("the provider emptied at the end", Duration::from_secs(20), || provider.count("INBOX") == 0, || logs(&nodes));

    for n in nodes.iter_mut() {
        n.stop();
    }
    // Each provider message archived exactly once (one archive record per
    // Message-ID); the one APPENDed through a is in the journal once too.
    let archived = per_message_id(&pg, "archive");
    let want: BTreeMap<String, u64> = (0..45).map(|i| (format!("<nodes-{i}@pecgate.test>"), 1)).collect();
    assert_eq!(archived, want, "one archive record per provider message");
    let appended = per_message_id(&pg, "append");
    assert_eq!(appended.values().sum::<u64>(), 1, "{appended:?}");
    for n in &nodes {
        let v = n.cli(&["audit", "verify"]);
        assert!(v.status.success(), "audit verify on node {}: {}", n.name, said(&v));
        assert!(!n.log().contains("panicked"), "node {}: {}", n.name, n.log());
    }
}
