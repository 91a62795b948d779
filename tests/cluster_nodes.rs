//! Three nodes on one archive (issue 21): `pecgate serve` x3 on loopback
//! against one PostgreSQL 15 and one S3 server (s3s-fs), each node with
//! its own ports and index directory. One provider mailbox polled by one
//! node at a time, seen through IMAP on all three; and a campaign sent
//! through the PEC provider simulator while the sending node is killed
//! (kill -9) again and again: every notice sent exactly once.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{Node, Postgres, S3};
use support::free_port;
use support::sim::REMOTES;

/// Every gateway user's password here (tests/imap/common.py's too).
const PASSWORD: &str = "pw-Secret-1";

/// `pecgate campaign ARGS` as mario, through `node`'s API.
fn campaign(node: &Node, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .arg("campaign")
        .args(args)
        .arg("--config")
        .arg(&node.config)
        .args(["--user", "mario"])
        .env("PECGATE_PASSWORD", PASSWORD)
        .output()
        .expect("run pecgate campaign")
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

/// How soon another node has a lease whose holder died: the lease runs
/// out (at most its length after the last renewal), then a standing-by
/// node tries again every third of it; half a second of slack.
fn takeover(lease: Duration) -> Duration {
    lease + lease / 3 + Duration::from_millis(500)
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
/// b or c takes the mailbox within [`takeover`] and the ingest goes
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
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();

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
        takeover(lease),
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

/// The live mailbox leases, as holder -> aliases.
fn pollers(pg: &Postgres) -> BTreeMap<String, Vec<String>> {
    let rows = pg.sql(
        "SELECT holder || ' ' || substring(name from 9) FROM pecgate_leases \
         WHERE name LIKE 'mailbox:%' AND expires_at > now() ORDER BY name",
    );
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (h, a) in rows.lines().filter_map(|l| l.split_once(' ')) {
        m.entry(h.to_string()).or_default().push(a.to_string());
    }
    m
}

/// Six provider mailboxes. Node a, alone, polls all six; when b and c
/// join, a gives up the four beyond its share at a safe point and b and
/// c take two each; the mail that arrives next is archived by the new
/// pollers, every message exactly once, and nothing is left at the
/// provider.
#[test]
fn six_mailboxes_spread_over_three_nodes() {
    let pg = Postgres::start();
    let s3 = S3::start();
    let users: Vec<String> = (0..6).map(|i| format!("p{i}@pec.example.it")).collect();
    let mut opts = support::DovecotOptions::new();
    for u in &users {
        opts = opts.user(support::UserSpec::new(u, PROVIDER_PASS).quota(1 << 30, 1_000_000));
    }
    let dv = support::Dovecot::start(opts);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    support::selfsigned::certificate(&cert, &key);
    let lease = Duration::from_secs(3);
    let mailboxes: String = users
        .iter()
        .enumerate()
        .map(|(i, u)| support::gateway::mailbox_toml(&format!("m{i}"), u, PROVIDER_PASS, dv.port, ""))
        .collect();
    let body = |imap: u16, http: u16| {
        format!(
            "[upstream]\ntimeout = \"10s\"\nmin_backoff = \"100ms\"\nmax_backoff = \"1s\"\nlease = \"{}s\"\n\n{mailboxes}\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\n[imap]\nlisten = [\"127.0.0.1:{imap}\"]\n\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            lease.as_secs(),
            cert.display(),
            key.display()
        )
    };
    let mut nodes = [
        Node::new(dir.path(), "a", &pg, &s3, body),
        Node::new(dir.path(), "b", &pg, &s3, body),
        Node::new(dir.path(), "c", &pg, &s3, body),
    ];
    let provider: Vec<_> = users.iter().map(|u| dv.imap(u)).collect();
    let deliver = |round: usize| {
        for (i, p) in provider.iter().enumerate() {
            let msgs: Vec<Vec<u8>> = (0..5)
                .map(|k| {
                    format!(
                        "From: a@example.it\r\nTo: {}\r\nSubject: spread {round}-{i}-{k}\r\n\
                         Message-ID: <spread-{round}-{i}-{k}@pecgate.test>\r\n\r\nbody {k}\r\n",
                        users[i]
                    )
                    .into_bytes()
                })
                .collect();
            p.append("INBOX", msgs);
        }
    };
    let empty = || provider.iter().all(|p| p.count("INBOX") == 0);

    // a alone: every mailbox is its.
    nodes[0].start();
    let all: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    wait("a polls all six", Duration::from_secs(20), || pollers(&pg).get("a") == Some(&all), || logs(&nodes));
    deliver(0);
    wait("the providers emptied", Duration::from_secs(30), empty, || logs(&nodes));

    // b and c join: two each.
    nodes[1].start();
    nodes[2].start();
    let spread = wait(
        "two mailboxes per node",
        Duration::from_secs(30),
        || {
            let p = pollers(&pg);
            p.len() == 3 && p.values().all(|v| v.len() == 2)
        },
        || format!("{:?}\n{}", pollers(&pg), logs(&nodes)),
    );
    let p = pollers(&pg);
    eprintln!("spread over three nodes in {spread:?}: {p:?}");
    assert!(nodes[0].log().contains("giving this one to another node"), "{}", nodes[0].log());

    // The next mail goes through the new pollers.
    deliver(1);
    wait("the providers emptied again", Duration::from_secs(30), empty, || logs(&nodes));
    assert_eq!(pollers(&pg), p, "the spread holds");
    for n in &nodes[1..] {
        assert!(n.log().contains("logged in to the provider"), "node {} polled: {}", n.name, n.log());
    }
    for n in nodes.iter_mut() {
        n.stop();
    }
    let archived = per_message_id(&pg, "archive");
    let want: BTreeMap<String, u64> = (0..2)
        .flat_map(|r| (0..6).flat_map(move |i| (0..5).map(move |k| (format!("<spread-{r}-{i}-{k}@pecgate.test>"), 1))))
        .collect();
    assert_eq!(archived, want, "one archive record per provider message");
    for n in &nodes {
        let v = n.cli(&["audit", "verify"]);
        assert!(v.status.success(), "audit verify on node {}: {}", n.name, said(&v));
        assert!(!n.log().contains("panicked"), "node {}: {}", n.name, n.log());
    }
}

// ---------------------------------------------------------------------------
// A campaign while its sending node is killed.

const PROT: &str = "prot@pec.sim.test";

/// The recipient of row `i` and what becomes of its notice (as in
/// tests/campaign.rs): `taglia*` has its connection dropped after the 250.
fn recipient(i: usize) -> (String, &'static str) {
    match i % 10 {
        0 => (format!("pieno{i}@cittadini.sim"), "failed"),
        1 => (format!("ignoto{i}@cittadini.sim"), "failed"),
        2 => (format!("taglia{i}@cittadini.sim"), "delivered"),
        3 => (format!("persona{i}@posta.example"), "not-certified"),
        _ => (format!("Cittadino.{i}@cittadini.sim"), "delivered"),
    }
}

fn csv_rows(n: usize) -> String {
    let mut csv = String::from("\u{feff}verbale;nome;pec;importo\r\n");
    for i in 0..n {
        csv += &format!("V-{i:05};\"Rossi; Mario {i}\";{};{},00\r\n", recipient(i).0, 100 + i);
    }
    csv
}

const TEMPLATE: &str =
    "Subject: Verbale n. {{verbale}} - notifica\n\nGentile {{nome}},\nle notifichiamo il verbale {{verbale}} di {{importo}} euro.\n";

/// Accepted submissions in the simulator's record, by Message-ID.
fn received(record: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in std::fs::read_to_string(record).unwrap_or_default().lines() {
        let v: Value = serde_json::from_str(l).expect("a record line");
        if let Some(id) = v["message_id"].as_str() {
            *m.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    m
}

fn report(node: &Node, id: &str, extra: &[&str]) -> Vec<BTreeMap<String, String>> {
    let mut args = vec!["report", id];
    args.extend_from_slice(extra);
    let out = campaign(node, &args);
    assert!(out.status.success(), "report through node {}: {}", node.name, said(&out));
    let sep = if extra.contains(&"--fallback") { b';' } else { b',' };
    let mut r = csv::ReaderBuilder::new().delimiter(sep).from_reader(out.stdout.as_slice());
    let headers = r.headers().expect("headers").clone();
    r.records()
        .map(|rec| {
            headers.iter().zip(rec.expect("a row").iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect()
        })
        .collect()
}

fn status(node: &Node, id: &str) -> Value {
    let out = campaign(node, &["status", id]);
    assert!(out.status.success(), "status through node {}: {}", node.name, said(&out));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// Notices not in a final state (nor ambiguous).
fn open(st: &Value) -> u64 {
    ["queued", "submitting", "retrying", "accepted", "acceptance-receipt"]
        .iter()
        .map(|s| st["states"][s].as_u64().unwrap_or(0))
        .sum()
}

/// The simulator (as tests/campaign.rs starts it) in `d`, with prot's
/// mailbox and [`REMOTES`]; its SMTP and IMAP ports and its record.
fn start_sim(d: &Path) -> (support::sim::Sim, u16, std::path::PathBuf) {
    let (smtp_port, sim_imap) = (free_port(), free_port());
    let record = d.join("record.jsonl");
    let sim_cfg = d.join("sim.toml");
    std::fs::write(
        &sim_cfg,
        format!(
            "listen = \"127.0.0.1:{smtp_port}\"\ndomains = [\"pec.sim.test\"]\npki_dir = \"{pki}\"\nrecord = \"{rec}\"\n\n\
             [mailstore]\ndata_dir = \"{store}\"\nimap_listen = \"127.0.0.1:{sim_imap}\"\n\
             [[mailbox]]\naddress = \"{PROT}\"\npassword = \"pw\"\nimap_user = \"prot\"\nimap_password = \"pw\"\n{REMOTES}",
            pki = d.join("pki").display(),
            rec = record.display(),
            store = d.join("store").display(),
        ),
    )
    .expect("sim config");
    let mut sim = support::sim::Sim { child: None, config: sim_cfg, log: d.join("sim.log"), port: smtp_port };
    sim.start();
    support::sim::wait_port(sim_imap, &sim.log);
    let c = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").expect("certificate");
    std::fs::write(d.join("cert.pem"), c.chain).expect("cert");
    std::fs::write(d.join("key.pem"), c.key).expect("key");
    (sim, sim_imap, record)
}

/// A node's configuration for the campaign tests: prot on the simulator,
/// `campaigns` the `[campaigns]` section's lines.
fn campaign_node_toml(d: &Path, sim: &support::sim::Sim, sim_imap: u16, lease: Duration, campaigns: &str) -> impl Fn(u16, u16) -> String {
    let hash = pecgate::auth::hash_password(PASSWORD).expect("hash");
    let (d, smtp_port, campaigns) = (d.to_path_buf(), sim.port, campaigns.to_string());
    move |imap: u16, http: u16| {
        format!(
            "[upstream]\ntimeout = \"10s\"\nmin_backoff = \"200ms\"\nmax_backoff = \"1s\"\nlease = \"{}s\"\n\n\
             [pec]\ntrust_store = \"{pki}/ca.pem\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n\
             [tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\n[imap]\nlisten = [\"127.0.0.1:{imap}\"]\n\n\
             [campaigns]\n{campaigns}\n\n\
             [[mailbox]]\nalias = \"prot\"\naddress = \"{PROT}\"\nusername = \"prot\"\npassword = \"pw\"\n\
             imap = {{ host = \"127.0.0.1\", port = {sim_imap}, tls = \"none\" }}\n\
             smtp = {{ host = \"127.0.0.1\", port = {smtp_port}, tls = \"none\" }}\npoll_interval = \"1s\"\n\
             sending = {{ per_minute = 900 }}\n\n\
             [[user]]\nname = \"mario\"\npassword_hash = \"{hash}\"\ngrants = {{ prot = [\"read\", \"send\"] }}\n",
            lease.as_secs(),
            pki = d.join("pki").display(),
            d = d.display(),
        )
    }
}

/// A node frozen (SIGSTOP) in the middle of a notice's dialogue, past its
/// lease: the node that takes the sending over finds the notice claimed
/// (`FOR UPDATE SKIP LOCKED`) and leaves it alone, although the policy
/// would resend a notice left mid-dialogue that long without receipts.
/// Resumed, the frozen node's late commit is refused (its lease is gone)
/// and its claim ends; the other settles the notice by the provider's
/// receipts. The simulator received it once.
#[test]
fn a_node_frozen_mid_dialogue_keeps_its_notice() {
    let pg = Postgres::start();
    let s3 = S3::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let (sim, sim_imap, record) = start_sim(d);
    let lease = Duration::from_secs(2);
    // Without the claim, the new sender would call the notice ambiguous 2 s
    // after its dialogue began and resend it by policy.
    let body = campaign_node_toml(d, &sim, sim_imap, lease, "settle_after = \"2s\"\nresend_ambiguous = true");
    let mut nodes = [Node::new(d, "a", &pg, &s3, &body), Node::new(d, "b", &pg, &s3, &body)];
    for node in nodes.iter_mut() {
        node.start();
    }
    let sender = |pg: &Postgres| holder(pg, "campaigns:prot");
    wait("a node sends prot's campaigns", Duration::from_secs(20), || !sender(&pg).is_empty(), || logs(&nodes));
    let s = nodes.iter().position(|x| x.name == sender(&pg)).expect("the sending node");
    let t = 1 - s;
    let csv = d.join("uno.csv");
    std::fs::write(&csv, "verbale;nome;pec;importo\r\nV-1;Lento;lento1@cittadini.sim;10,00\r\n").expect("csv");
    let tpl = d.join("avviso.txt");
    std::fs::write(&tpl, TEMPLATE).expect("template");
    let args = ["create", "--mailbox", "prot", "--name", "Lento", "--recipients", csv.to_str().expect("path")];
    let out = campaign(&nodes[t], &[&args[..], &["--template", tpl.to_str().expect("path"), "--start"]].concat());
    assert!(out.status.success(), "create: {}", said(&out));
    let id = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).expect("campaign <id> created").to_string();

    // The DATA is in; the provider holds its 250; the sender freezes.
    wait("the provider holds the 250", Duration::from_secs(30), || sim.log().contains("holding the 250"), || logs(&nodes));
    let held_at = Instant::now();
    let pid = nodes[s].child.as_ref().expect("running").id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    let other = nodes[t].name.clone();
    wait("the other node takes the sending", takeover(lease) + lease, || sender(&pg) == other, || logs(&nodes));
    // Long past the settle time, and past the 250 and the receipts.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(held_at.elapsed()));
    let log = nodes[t].log();
    assert!(log.contains("another node's dialogue holds it"), "node {other} left the notice alone: {log}");
    assert!(!log.contains("notice-ambiguous") && !log.contains("resent by policy"), "{log}");
    assert_eq!(received(&record).len(), 1, "one submission while the sender was frozen");
    assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());

    wait(
        "the notice settled by its receipts",
        Duration::from_secs(60),
        || status(&nodes[t], &id)["states"]["delivered"].as_u64() == Some(1),
        || format!("{}\n{}", status(&nodes[t], &id), logs(&nodes)),
    );
    let got = received(&record);
    assert_eq!(got.values().copied().collect::<Vec<_>>(), [1], "the simulator received the notice once: {got:?}");
    for n in nodes.iter_mut() {
        n.stop();
    }
    for n in &nodes {
        let v = n.cli(&["audit", "verify"]);
        assert!(v.status.success(), "audit verify on node {}: {}", n.name, said(&v));
        assert!(!n.log().contains("panicked"), "node {}: {}", n.name, n.log());
    }
    drop(sim);
}

/// A campaign of 300 notices with mixed outcomes created through one node
/// of three, sent through the PEC provider simulator; while it sends, the
/// node holding the campaign's sending lease is killed (kill -9) five
/// times, each time one of the others taking the sending over within
/// [`takeover`], the killed node then restarted. At the end the
/// simulator received every notice exactly once (the ones left mid-dialogue
/// by a kill settled by their receipts, those the provider never got
/// resent by the administrator, as on one machine), every report row is
/// final and what the simulator did, on every node, the fallback list is
/// exactly the rows not delivered, each notice's sent copy is archived
/// once, and `audit verify` passes.
#[test]
fn a_campaign_survives_its_sending_node_killed() {
    let n = 300;
    let pg = Postgres::start();
    let s3 = S3::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let (sim, sim_imap, record) = start_sim(d);
    let lease = Duration::from_secs(2);
    let body = campaign_node_toml(d, &sim, sim_imap, lease, "settle_after = \"8s\"");
    let body = &body;
    let mut nodes =
        [Node::new(d, "a", &pg, &s3, body), Node::new(d, "b", &pg, &s3, body), Node::new(d, "c", &pg, &s3, body)];
    for node in nodes.iter_mut() {
        node.start();
    }
    let sender = |pg: &Postgres| holder(pg, "campaigns:prot");
    wait("a node sends prot's campaigns", Duration::from_secs(20), || !sender(&pg).is_empty(), || logs(&nodes));

    // Created through a node that does not send: the sender hears of it.
    let via = nodes.iter().position(|x| x.name != sender(&pg)).expect("a node that does not send");
    let csv = d.join("destinatari.csv");
    std::fs::write(&csv, csv_rows(n)).expect("csv");
    let tpl = d.join("avviso.txt");
    std::fs::write(&tpl, TEMPLATE).expect("template");
    let out = campaign(&nodes[via], &[
        "create",
        "--mailbox",
        "prot",
        "--name",
        "Verbali in cluster",
        "--recipients",
        csv.to_str().expect("path"),
        "--template",
        tpl.to_str().expect("path"),
        "--start",
    ]);
    assert!(out.status.success(), "create through node {}: {}", nodes[via].name, said(&out));
    let id = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).expect("campaign <id> created").to_string();
    let created = Instant::now();
    let submitting = |pg: &Postgres| -> u64 {
        pg.sql("SELECT count(*) FROM pecgate_journal WHERE line LIKE '%\"op\":\"notice-submitting\"%'")
            .parse()
            .expect("count")
    };
    let first = wait("the first notice sent", Duration::from_secs(5), || submitting(&pg) > 0, || logs(&nodes));
    eprintln!("first notice {first:?} after the campaign was created through node {}", nodes[via].name);

    // Kill the sending node five times while it sends, each time once it
    // has begun a few more notices (5 to 30: the moment in a dialogue
    // varies); another node takes the sending over, then the killed one
    // comes back.
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut kills = Vec::new();
    for k in 0..5 {
        let base = submitting(&pg);
        let more = rng.gen_range(5..30);
        wait("the sender sends on", Duration::from_secs(20), || submitting(&pg) >= base + more, || logs(&nodes));
        let name = sender(&pg);
        let i = nodes.iter().position(|x| x.name == name).unwrap_or_else(|| panic!("no live sender: {name:?}"));
        nodes[i].kill9();
        let killed = Instant::now();
        let begun = submitting(&pg);
        assert!(begun < n as u64, "kill {k}: the campaign was still sending ({begun} notices begun)");
        let mut next = String::new();
        let took = wait(
            "another node takes the sending over",
            takeover(lease),
            || {
                next = sender(&pg);
                !next.is_empty() && next != name
            },
            || logs(&nodes),
        );
        kills.push(format!("{name} killed after {begun} notices begun; {next} took over in {took:?}"));
        assert!(killed.elapsed() >= took);
        nodes[i].start();
    }
    eprintln!("{}", kills.join("\n"));

    // The end: every notice final. Ambiguous ones (a kill after
    // `submitting`, before the provider had the message) are resent by the
    // administrator, through any node; one the provider got is settled by
    // its receipts, never ambiguous.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut resent = 0;
    let st = loop {
        let st = status(&nodes[via], &id);
        if open(&st) == 0 {
            let ambiguous: Vec<_> =
                report(&nodes[via], &id, &[]).into_iter().filter(|r| r["state"] == "ambiguous").collect();
            if ambiguous.is_empty() {
                break st;
            }
            let got = received(&record);
            for r in &ambiguous {
                assert!(!got.contains_key(&r["message_id"]), "the provider has {r:?}, yet it is ambiguous");
                let o = campaign(&nodes[resent % 3], &["resolve", &id, "--notice", &r["n"], "--resend"]);
                assert!(o.status.success(), "resolve: {}", said(&o));
                resent += 1;
            }
        }
        assert!(Instant::now() < deadline, "the campaign does not settle: {st:#}\n{}", logs(&nodes));
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("{n} notices final {:?} after the start, {resent} resent by resolve: {st}", created.elapsed());

    let rows = report(&nodes[via], &id, &[]);
    assert_eq!(rows.len(), n);
    let got = received(&record);
    for (i, r) in rows.iter().enumerate() {
        let (to, want) = recipient(i);
        assert_eq!((r["address"].as_str(), r["key"].as_str()), (to.as_str(), format!("V-{i:05}").as_str()));
        assert_eq!(r["state"], want, "{r:?}");
        match want {
            "delivered" => assert!(!r["delivered_at"].is_empty() && !r["provider_id"].is_empty(), "{r:?}"),
            "failed" => assert!(r["failure"].contains(if i % 10 == 0 { "5.2.2" } else { "5.1.1" }), "{r:?}"),
            _ => {}
        }
        assert_eq!(got.get(&r["message_id"]), Some(&1), "{r:?} received {:?} times", got.get(&r["message_id"]));
    }
    let ids: BTreeSet<&String> = rows.iter().map(|r| &r["message_id"]).collect();
    assert_eq!(ids.len(), n, "one Message-ID per notice");
    assert_eq!(got.len(), n, "the simulator got something that is not a notice");
    // The fallback list: exactly the rows not delivered.
    let fb = report(&nodes[via], &id, &["--fallback"]);
    let want: Vec<String> = (0..n).filter(|i| recipient(*i).1 != "delivered").map(|i| format!("V-{i:05}")).collect();
    assert_eq!(fb.iter().map(|r| r["verbale"].clone()).collect::<Vec<_>>(), want);
    // Every node reports the same.
    for node in &nodes {
        wait(
            &format!("node {}'s report is the same", node.name),
            Duration::from_secs(10),
            || report(node, &id, &[]) == rows,
            || logs(&nodes),
        );
    }
    // Each notice's sent copy archived once.
    let copies = per_message_id(&pg, "archive-sent");
    let want: BTreeMap<String, u64> = ids.iter().map(|id| (id.to_string(), 1)).collect();
    assert_eq!(copies, want, "one sent copy per notice");
    let j = |op: &str| per_message_id(&pg, op).values().sum::<u64>();
    eprintln!(
        "{} dialogues for {n} notices, {} ambiguous, {resent} resent",
        j("notice-submitting"),
        j("notice-ambiguous")
    );
    for node in nodes.iter_mut() {
        node.stop();
    }
    let v = nodes[0].cli(&["audit", "verify"]);
    assert!(v.status.success(), "audit verify: {}", said(&v));
    for node in &nodes {
        assert!(!node.log().contains("panicked"), "node {}: {}", node.name, node.log());
    }
}
