//! Several nodes on one archive (issue 21): `[store] backend = "cluster"`
//! against a real PostgreSQL 15 and a real S3 server (s3s-fs), with two
//! `pecgate serve` nodes on loopback and Python's imaplib as the client.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pecgate::store::{Store, StoreOptions};
use support::cluster::{Node, Postgres, S3};

const PASSWORD: &str = "pw-Secret-1";

/// Mailbox `prot`, its provider never reached (nothing polls it).
const PROT: &str = "[[mailbox]]\nalias = \"prot\"\naddress = \"protocollo@pec.example.it\"\nusername = \"u\"\npassword = \"p\"\n\
     imap = { host = \"127.0.0.1\", port = 9, tls = \"none\" }\noffload = { mode = \"never\" }\npoll_interval = \"1h\"\nretention = \"3650days\"\n\n";

/// Node `name` with `body` (mailboxes, `[upstream]`) between `[store]`
/// and `[http]`, `[imap]`, `[tls]` and the user mario.
fn node(dir: &Path, name: &str, pg: &Postgres, s3: &S3, cert: &Path, key: &Path, body: &str) -> Node {
    let hash = pecgate::auth::hash_password(PASSWORD).expect("hash");
    Node::new(dir, name, pg, s3, |port, http| {
        format!(
            "{body}[http]\nlisten = \"127.0.0.1:{http}\"\n\n[imap]\nlisten = [\"127.0.0.1:{port}\"]\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [[user]]\nname = \"mario\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"prot\"\n\
             grants = {{ prot = [\"read\", \"triage\", \"send\", \"delete\"] }}\n",
            cert.display(),
            key.display()
        )
    })
}

fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    support::selfsigned::certificate(&cert, &key);
    (cert, key)
}

fn options(pg: &Postgres, s3: &S3, node: &str) -> StoreOptions {
    s3.store_options(pg, node)
}

/// What a client does on node A is seen on node B (folders, messages,
/// flags; B's IDLE within a second); UIDs assigned on both nodes never
/// collide; the blobs are in the bucket and nowhere else; each node's
/// journal mirror is the shared journal, verifies, and a node whose index
/// directory is deleted rebuilds the same index from PostgreSQL.
#[test]
fn two_nodes_share_one_archive() {
    let pg = Postgres::start();
    let s3 = S3::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = certificate(dir.path());
    let mut a = node(dir.path(), "a", &pg, &s3, &cert, &key, PROT);
    let mut b = node(dir.path(), "b", &pg, &s3, &cert, &key, PROT);
    a.start();
    b.start();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/imap/cluster.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(a.port.to_string())
        .arg(&cert)
        .arg(dir.path())
        .arg(b.port.to_string())
        .output()
        .expect("run python3");
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && so.contains("all checks passed"),
        "cluster.py failed\n{so}\n{se}\nnode a:\n{}\nnode b:\n{}",
        a.log(),
        b.log()
    );
    // `cluster status`: the head, both nodes caught up, who polls prot
    // (taken an eighth of the lease after the start, at most 2 s: nodes
    // started together first see each other).
    let mut status = serde_json::Value::Null;
    let caught_up = |st: &serde_json::Value| {
        let head = st["head"].as_u64().unwrap_or(0);
        let nodes = st["nodes"].as_array().cloned().unwrap_or_default();
        let polled = st["leases"].as_array().is_some_and(|l| l.iter().any(|l| l["name"] == "mailbox:prot"));
        head > 0 && nodes.len() == 2 && nodes.iter().all(|n| n["lag"] == 0) && polled
    };
    for _ in 0..100 {
        let out = a.cli(&["cluster", "status", "--json"]);
        assert!(out.status.success(), "cluster status: {}", String::from_utf8_lossy(&out.stderr));
        status = serde_json::from_slice(&out.stdout).expect("status JSON");
        if caught_up(&status) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(caught_up(&status), "both nodes report their index at the head, one polls prot: {status}");
    let lease = status["leases"].as_array().and_then(|l| l.iter().find(|l| l["name"] == "mailbox:prot")).cloned();
    assert!(lease.is_some_and(|l| l["holder"] == "a" || l["holder"] == "b"), "{status}");
    // The expiry run (prot keeps ten years) is once-per-archive work: one
    // node holds its lease.
    let retention = status["leases"].as_array().and_then(|l| l.iter().find(|l| l["name"] == "retention")).cloned();
    assert!(retention.is_some_and(|l| l["holder"] == "a" || l["holder"] == "b"), "{status}");
    let text = a.cli(&["cluster", "status"]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("shared journal head: record") && text.contains("mailbox:prot"), "{text}");

    // The metrics the dashboard's cluster row and the alerts use.
    let grafana: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/pecgate.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let used: Vec<String> =
        support::dashboard_metric_names(&grafana).into_iter().filter(|n| n.starts_with("pecgate_cluster_")).collect();
    assert!(used.len() >= 4, "{used:?}");
    for n in [&a, &b] {
        let m = n.metrics();
        for name in &used {
            assert!(m.contains(&format!("\n{name}")), "node {} does not export {name}", n.name);
        }
        assert!(m.contains("pecgate_cluster_index_lag_records 0"), "node {} is caught up", n.name);
    }
    let held = |n: &Node| n.metrics().contains("pecgate_cluster_lease_held{mailbox=\"prot\"} 1");
    assert!(held(&a) != held(&b), "exactly one node says it polls prot");

    a.stop();
    b.stop();

    // The eleven messages' blobs are objects in the bucket, none a file
    // in a node's directory.
    let objects = s3.objects();
    let blobs: Vec<_> = objects.iter().filter(|o| o.starts_with("blobs/") && o.ends_with(".eml")).collect();
    assert_eq!(blobs.len(), 11, "{objects:?}");
    for n in [&a, &b] {
        let local = n.index_dir.join("blobs");
        let files =
            std::fs::read_dir(&local).map(|d| d.flatten().filter(|e| e.file_name() != "tmp").count()).unwrap_or(0);
        assert_eq!(files, 0, "node {} keeps no blob files", n.name);
    }

    // One chain: both mirrors are the shared journal, line for line.
    let rows: u64 = pg.sql("SELECT count(*) FROM pecgate_journal").parse().expect("count");
    let (ma, mb) = (a.mirror(), b.mirror());
    assert_eq!(ma.lines().count() as u64, rows, "node a's mirror holds every record");
    assert_eq!(ma, mb, "the two mirrors are the same journal");
    let head = pg.sql("SELECT seq || ' ' || hash FROM pecgate_chain");
    let last = ma.lines().last().expect("a record");
    assert!(head.starts_with(&format!("{rows} ")), "{head}");
    assert!(last.ends_with(&format!("\"hash\":\"{}\"}}", head.split(' ').nth(1).unwrap_or(""))), "{last}\n{head}");
    let v = a.cli(&["audit", "verify"]);
    assert!(
        v.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // Node b's index directory lost: it comes back from PostgreSQL and the
    // bucket, the same index as node a's.
    std::fs::remove_dir_all(&b.index_dir).expect("remove b's index");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (sa, _) = Store::open(&a.index_dir, options(&pg, &s3, "a")).expect("open a");
        let (sb, rep) = Store::open(&b.index_dir, options(&pg, &s3, "b")).expect("open b again");
        assert_eq!(rep.replayed_records, rows, "b took in the whole shared journal");
        assert_eq!(sa.index_dump().expect("dump a"), sb.index_dump().expect("dump b"), "the same index");
        let (_, folder) = sa
            .folders("prot")
            .expect("folders")
            .into_iter()
            .find(|(_, st)| st.category.as_deref() == Some("Contratti"))
            .expect("category");
        assert_eq!(folder.exists, 11);
        sa.close().expect("close a");
        sb.close().expect("close b");
    });

    // A conservation export on a node: the messages come from the bucket
    // (no blob file on any node), checked against their names, and the
    // package verifies.
    let pkg = dir.path().join("export-prot");
    let out = b.cli(&["export", "--mailbox", "prot", "--out", pkg.to_str().expect("path")]);
    let said = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(out.status.success(), "export on a cluster node: {}", said(&out));
    let sums = std::fs::read_to_string(pkg.join("SHA256SUMS")).expect("SHA256SUMS");
    let emls: std::collections::BTreeSet<&str> =
        sums.lines().filter(|l| l.ends_with(".eml")).map(|l| &l[..64]).collect();
    let in_bucket: std::collections::BTreeSet<String> = objects
        .iter()
        .filter(|o| o.starts_with("blobs/") && o.ends_with(".eml"))
        .filter_map(|o| o.rsplit('/').next()?.strip_suffix(".eml").map(str::to_string))
        .collect();
    assert_eq!(emls.len(), 11, "{sums}");
    assert!(emls.iter().all(|h| in_bucket.contains(*h)), "every exported message is a bucket object");
    let verified = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["export", "verify", pkg.to_str().expect("path")])
        .output()
        .expect("run pecgate");
    assert!(verified.status.success(), "export verify: {}", said(&verified));
    assert!(!a.log().contains("panicked") && !b.log().contains("panicked"));
}

/// Time-stamp tokens in a cluster: the node that anchors keeps its token
/// beside its journal mirror and puts it in the bucket; a conservation
/// export made on another node takes it from there, and the package's
/// anchor verifies with openssl as its README says.
#[test]
fn an_export_on_another_node_carries_the_anchor() {
    use pecgate::store::Audit;
    let pg = Postgres::start();
    let s3 = S3::start();
    let tsa = support::tsa::Tsa::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = certificate(dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (x, _) = Store::open(&dir.path().join("x"), options(&pg, &s3, "x")).expect("open x");
        for n in 0..4 {
            let c = archiving(&x, "prot", format!("From: a@example.it\r\nSubject: atto {n}\r\n\r\nbody {n}\r\n")).await;
            x.commit(Audit::system("upstream", "archive"), c).await.expect("archive");
        }
        x.close().expect("close x");
    });
    // Only node a anchors (every 3 records or second).
    let mut a = node(dir.path(), "a", &pg, &s3, &cert, &key, &format!("{PROT}{}\n", tsa.anchor_toml(3, "1s")));
    // Node b knows the TSA's CA (to check tokens) and never serves here.
    let b = node(dir.path(), "b", &pg, &s3, &cert, &key, &format!("{PROT}{}\n", tsa.anchor_toml(3, "1s")));
    a.start();
    let anchored = || pg.sql("SELECT count(*) FROM pecgate_journal WHERE line LIKE '%\"op\":\"anchor\"%'");
    wait("an anchor", Duration::from_secs(30), || anchored() != "0", || a.log());
    a.stop();
    let tokens = std::fs::read_dir(a.index_dir.join("anchors")).map(|d| d.count()).unwrap_or(0);
    assert!(tokens > 0, "node a keeps its tokens beside its mirror");
    assert!(!b.index_dir.join("anchors").exists(), "node b never anchored");

    let pkg = dir.path().join("export-b");
    let out = b.cli(&["export", "--mailbox", "prot", "--out", pkg.to_str().expect("path")]);
    let said = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(out.status.success(), "export on node b: {}", said(&out));
    let sums = std::fs::read_to_string(pkg.join("SHA256SUMS")).expect("SHA256SUMS");
    assert_eq!(sums.lines().filter(|l| l.ends_with(".eml")).count(), 4, "{sums}");
    let tsr: Vec<&str> = sums.lines().filter(|l| l.contains("audit/anchor-") && l.ends_with(".tsr")).collect();
    assert_eq!(tsr.len(), 1, "the package carries the anchor's token: {sums}");
    let verified = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["export", "verify", pkg.to_str().expect("path")])
        .output()
        .expect("run pecgate");
    assert!(verified.status.success(), "export verify: {}", said(&verified));
    // `audit verify` on either node: the token named by the `anchor`
    // record is found (on node b, in the bucket), unaltered, signed by the
    // TSA and about the record the chain has at its seq.
    for n in [&a, &b] {
        let v = n.cli(&["audit", "verify"]);
        let text = said(&v);
        assert!(v.status.success(), "audit verify on node {}: {text}", n.name);
        assert!(text.contains("anchors OK: ") && !text.contains("anchors OK: 0 tokens"), "node {}: {text}", n.name);
        assert!(!text.contains("not checked"), "node {}: the signatures are checked: {text}", n.name);
    }
    // On node b with another CA than the TSA's, the token does not verify.
    let other_ca = std::fs::read_to_string(&b.config)
        .expect("b's config")
        .replace(&tsa.ca().display().to_string(), cert.to_str().expect("path"));
    let other = dir.path().join("b-other-ca.toml");
    std::fs::write(&other, other_ca).expect("write config");
    let v = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["audit", "verify", "--config"])
        .arg(&other)
        .output()
        .expect("run pecgate");
    let text = said(&v);
    assert!(!v.status.success() && text.contains("does not verify"), "a token checked against another CA: {text}");
    let token = std::fs::read(pkg.join(&tsr[0][66..])).expect("token in the package");
    let in_bucket = s3.objects().iter().any(|o| o.contains(&sha256_hex(&token)));
    assert!(in_bucket, "the token is a bucket object, named by its SHA-256");
}

/// The message `raw` put in the store's blobs, and the change that
/// archives it in `mailbox`'s INBOX.
async fn archiving(store: &Store, mailbox: &str, raw: String) -> pecgate::store::Change {
    let blob = store.put_blob(raw.into_bytes()).await.expect("blob");
    pecgate::store::Change::Archive {
        mailbox: mailbox.into(),
        folder: "INBOX".into(),
        blob,
        internal_date: chrono::Utc::now(),
        flags: vec![],
        provider: None,
        pec: None,
        handling: None,
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// PostgreSQL over TLS: with `sslmode=require` and `[store] postgres_ca`
/// every connection (the writer's, the listener's, the lease pool's) is
/// encrypted, and a server whose certificate no trusted CA signed is
/// refused rather than used in the clear.
#[test]
fn postgres_over_tls() {
    use pecgate::store::Audit;
    let mut pg = Postgres::start();
    let s3 = S3::start();
    let dir = tempfile::tempdir().expect("temp dir");
    support::slapd::make_ca_and_server_cert(dir.path());
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("server.pem"), dir.path().join("server.key"));
    pg.enable_tls(&cert, &key);
    let with = |ca: Option<&Path>| {
        let mut o = options(&pg, &s3, "t");
        if let Some(c) = o.cluster.as_mut() {
            c.postgres = format!("{}?sslmode=require", pg.url());
            c.postgres_ca = ca.map(Path::to_path_buf);
        }
        o
    };
    let err = Store::open(&dir.path().join("untrusted"), with(None)).err().expect("an untrusted server is refused");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (st, _) = Store::open(&dir.path().join("t"), with(Some(&ca))).expect("open over TLS");
        let c = archiving(&st, "prot", "Subject: tls\r\n\r\nbody\r\n".into()).await;
        st.commit(Audit::system("upstream", "archive"), c).await.expect("commit over TLS");
        let ttl = Duration::from_secs(5);
        assert!(st.acquire_lease("mailbox:prot", ttl).await.expect("lease over TLS").is_some());
        // Every pecgate connection the server sees is encrypted.
        let seen = || {
            pg.sql("SELECT count(*) FILTER (WHERE s.ssl) || ' ' || count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'pecgate' AND a.pid <> pg_backend_pid() AND a.application_name NOT LIKE 'psql%'")
        };
        let t0 = Instant::now();
        let mut last = seen();
        while !last.starts_with("3 3") && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
            last = seen();
        }
        let (tls, all) = last.split_once(' ').expect("two counts");
        assert!(all.parse::<u32>().unwrap_or(0) >= 2 && tls == all, "encrypted / all connections: {last}");
        st.close().expect("close");
    });
}

/// PostgreSQL that authenticates nodes by their certificate (`hostssl …
/// cert`, `ssl_ca_file`): a node with `[store] postgres_cert` and
/// `postgres_key` signed by that CA, CN `pecgate`, archives and reads, every
/// connection presenting it; a node without one, or with one from another
/// CA, is refused at start with an error that says why; a key file that
/// cannot be used is named; and `check-config` names the missing half.
#[test]
fn postgres_client_certificates() {
    use pecgate::store::Audit;
    let mut pg = Postgres::start();
    let s3 = S3::start();
    let dir = tempfile::tempdir().expect("temp dir");
    support::slapd::make_ca_and_server_cert(dir.path());
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("server.pem"), dir.path().join("server.key"));
    let (client, client_key) = support::slapd::client_certificate(dir.path(), "pecgate", "client");
    let other_ca = dir.path().join("other");
    std::fs::create_dir(&other_ca).expect("dir");
    support::slapd::make_ca_and_server_cert(&other_ca);
    let (stranger, stranger_key) = support::slapd::client_certificate(&other_ca, "pecgate", "client");
    pg.enable_tls(&cert, &key);
    pg.require_client_certs(&ca);
    let with = |id: Option<(&Path, &Path)>| {
        let mut o = options(&pg, &s3, "t");
        if let Some(c) = o.cluster.as_mut() {
            c.postgres = format!("{}?sslmode=require", pg.url());
            c.postgres_ca = Some(ca.clone());
            c.postgres_cert = id.map(|i| i.0.to_path_buf());
            c.postgres_key = id.map(|i| i.1.to_path_buf());
        }
        o
    };
    let refused = |name: &str, id: Option<(&Path, &Path)>| {
        Store::open(&dir.path().join(name), with(id)).err().expect("refused").to_string()
    };
    let err = refused("none", None);
    assert!(err.contains("requires a valid client certificate"), "no certificate: {err}");
    let err = refused("stranger", Some((&stranger, &stranger_key)));
    assert!(
        err.contains("UnknownCA") && err.contains("refused this node's client certificate"),
        "another CA's certificate: {err}"
    );
    let junk = dir.path().join("junk.key");
    std::fs::write(&junk, "not a key").expect("write");
    let err = refused("junk", Some((&client, &junk)));
    assert!(err.contains("store.postgres_key") && err.contains(&junk.display().to_string()), "{err}");
    let err = refused("mismatch", Some((&client, &stranger_key)));
    assert!(err.contains("store.postgres_key") && err.contains("not usable with the certificate"), "{err}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (st, _) = Store::open(&dir.path().join("t"), with(Some((&client, &client_key)))).expect("open");
        let c = archiving(&st, "prot", "Subject: client cert\r\n\r\nbody\r\n".into()).await;
        st.commit(Audit::system("upstream", "archive"), c).await.expect("commit");
        assert!(st.acquire_lease("mailbox:prot", Duration::from_secs(5)).await.expect("lease").is_some());
        // Every pecgate connection (writer, listener, lease pool) is
        // authenticated by the certificate.
        let seen = || {
            pg.sql("SELECT count(*) FILTER (WHERE s.client_dn = '/CN=pecgate') || ' ' || count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'pecgate' AND a.pid <> pg_backend_pid()")
        };
        let all_three = |s: &str| {
            let (dn, all) = s.split_once(' ').unwrap_or_default();
            dn == all && all.parse::<u32>().unwrap_or(0) >= 3
        };
        let t0 = Instant::now();
        let mut last = seen();
        while !all_three(&last) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
            last = seen();
        }
        assert!(all_three(&last), "connections with the client certificate / all: {last}");
        // Another node with the certificate reads the record back.
        let mut o = with(Some((&client, &client_key)));
        if let Some(c) = o.cluster.as_mut() {
            c.node = "r".into();
        }
        let (r, rep) = Store::open(&dir.path().join("r"), o).expect("open a second node");
        assert!(rep.replayed_records >= 1, "{rep:?}");
        let exists: u64 = r.folders("prot").expect("folders").iter().map(|(_, f)| f.exists).sum();
        assert_eq!(exists, 1, "the message archived by the first node");
        r.close().expect("close");
        st.close().expect("close");
    });

    // check-config: one half of the pair is a problem named by its key.
    let (scert, skey) = certificate(dir.path());
    let node = node(dir.path(), "c", &pg, &s3, &scert, &skey, PROT);
    let text = std::fs::read_to_string(&node.config).expect("config");
    let half = text.replacen("[store]\n", &format!("[store]\npostgres_cert = \"{}\"\n", client.display()), 1);
    std::fs::write(&node.config, half).expect("config");
    let out = node.cli(&["check-config"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success() && said.contains("store.postgres_key: required with store.postgres_cert"), "{said}");
}

/// PgBouncer in transaction pooling mode between the nodes and PostgreSQL,
/// which cannot carry LISTEN: `[store] postgres` goes through it and
/// `postgres_listen` straight to PostgreSQL. A message appended on node A
/// is seen on node B, leases are taken, refused, released and taken over
/// with a new epoch, and PostgreSQL and PgBouncer both show where each
/// connection went: the two LISTEN connections direct (a client address
/// in pg_stat_activity), every other one through PgBouncer (its Unix
/// socket: none), PgBouncer's clients and transactions counted.
#[test]
fn pgbouncer_in_transaction_mode() {
    use pecgate::store::Audit;
    let pg = Postgres::start();
    let s3 = S3::start();
    let bouncer = support::cluster::PgBouncer::start(&pg);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = certificate(dir.path());
    let mut a = node(dir.path(), "a", &pg, &s3, &cert, &key, PROT);
    let mut b = node(dir.path(), "b", &pg, &s3, &cert, &key, PROT);
    for n in [&a, &b] {
        let text = std::fs::read_to_string(&n.config).expect("config");
        let direct = format!("postgres = \"{}\"\n", pg.url());
        assert!(text.contains(&direct), "{text}");
        let through = format!("postgres = \"{}\"\npostgres_listen = \"{}\"\n", bouncer.url(), pg.url());
        std::fs::write(&n.config, text.replacen(&direct, &through, 1)).expect("config");
    }
    a.start();
    b.start();
    let logs = || format!("node a:\n{}\nnode b:\n{}\npgbouncer:\n{}", a.log(), b.log(), bouncer.log());

    let script = r#"
import imaplib, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
def login(port):
    m = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ctx)
    assert m.login("mario", sys.argv[4])[0] == "OK"
    return m
a, b = login(sys.argv[2]), login(sys.argv[3])
assert a.create("prot/Bouncer")[0] == "OK"
msg = b"From: ufficio@comune.example.it\r\nSubject: via PgBouncer\r\nMessage-ID: <bouncer-1@comune.example.it>\r\n\r\nTesto.\r\n"
typ, data = a.append("prot/Bouncer", None, None, msg)
assert typ == "OK", data
deadline = time.time() + 10
while True:
    typ, data = b.select("prot/Bouncer")
    if (typ == "OK" and data[0] == b"1") or time.time() > deadline:
        break
    time.sleep(0.1)
assert typ == "OK" and data[0] == b"1", (typ, data)
typ, data = b.fetch("1", "(BODY.PEEK[])")
assert typ == "OK" and data[0][1] == msg, data
print("all checks passed")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&cert)
        .arg(a.port.to_string())
        .arg(b.port.to_string())
        .arg(PASSWORD)
        .output()
        .expect("run python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("all checks passed"),
        "appended on A, read on B: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        logs()
    );

    // `cluster status` through PgBouncer: both nodes caught up, one of
    // them holding mailbox prot's lease.
    let mut status = serde_json::Value::Null;
    let settled = |st: &serde_json::Value| {
        let nodes = st["nodes"].as_array().cloned().unwrap_or_default();
        let lease = st["leases"].as_array().and_then(|l| l.iter().find(|l| l["name"] == "mailbox:prot").cloned());
        nodes.len() == 2
            && nodes.iter().all(|n| n["lag"] == 0)
            && lease.is_some_and(|l| l["holder"] == "a" || l["holder"] == "b")
    };
    for _ in 0..50 {
        let out = a.cli(&["cluster", "status", "--json"]);
        assert!(out.status.success(), "cluster status: {}", String::from_utf8_lossy(&out.stderr));
        status = serde_json::from_slice(&out.stdout).expect("status JSON");
        if settled(&status) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(settled(&status), "{status}\n{}", logs());

    // Where the connections went, as PostgreSQL sees them: the two
    // listeners over TCP, straight; everything else over PgBouncer's Unix
    // socket (no client address).
    let seen = || {
        pg.sql(
            "SELECT count(*) FILTER (WHERE application_name = 'pecgate-listener' AND client_addr IS NOT NULL) || ' ' \
                 || count(*) FILTER (WHERE application_name = 'pecgate-listener' AND client_addr IS NULL) || ' ' \
                 || count(*) FILTER (WHERE application_name <> 'pecgate-listener' AND client_addr IS NOT NULL) || ' ' \
                 || (count(*) FILTER (WHERE client_addr IS NULL) > 0) \
             FROM pg_stat_activity WHERE datname = 'pecgate' AND pid <> pg_backend_pid()",
        )
    };
    let mut last = seen();
    let t0 = Instant::now();
    while last != "2 0 0 true" && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        last = seen();
    }
    assert_eq!(
        last,
        "2 0 0 true",
        "listeners direct / listeners through PgBouncer / others direct / PgBouncer's server connections\n{}",
        pg.sql("SELECT application_name, client_addr, state, query FROM pg_stat_activity WHERE datname = 'pecgate'")
    );
    // And as PgBouncer sees them: the nodes' writers and pools are its
    // clients, no listener among them, their transactions counted.
    let clients = bouncer.show("CLIENTS");
    let ours: Vec<_> = clients.iter().filter(|c| c.get("database").is_some_and(|d| d == "pecgate")).collect();
    assert!(ours.len() >= 4, "two nodes' writers and lease pools: {clients:?}");
    assert!(
        ours.iter().all(|c| c.get("application_name").is_none_or(|n| n != "pecgate-listener")),
        "no LISTEN through PgBouncer: {clients:?}"
    );
    let xacts = || {
        bouncer
            .show("STATS")
            .into_iter()
            .find(|r| r.get("database").is_some_and(|d| d == "pecgate"))
            .and_then(|r| r.get("total_xact_count")?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = xacts();
    assert!(before >= 10, "transactions through PgBouncer: {before}\n{:?}", bouncer.show("STATS"));

    // Leases, and a commit on one in-process node woken on another, over
    // the same split (these nodes' own PgBouncer clients and listeners).
    let through = |node: &str| {
        let mut o = options(&pg, &s3, node);
        if let Some(c) = o.cluster.as_mut() {
            c.postgres = bouncer.url();
            c.postgres_listen = Some(pg.url());
        }
        o
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (c, _) = Store::open(&dir.path().join("c"), through("c")).expect("open c");
        let (d, _) = Store::open(&dir.path().join("d"), through("d")).expect("open d");
        let ttl = Duration::from_secs(30);
        let fc = c.acquire_lease("bouncer", ttl).await.expect("lease").expect("c takes the free lease");
        assert!(d.acquire_lease("bouncer", ttl).await.expect("lease").is_none(), "c holds it");
        assert!(c.renew_lease(&fc, ttl).await.expect("renew"), "c renews its hold");
        c.release_lease(&fc).await;
        let fd = d.acquire_lease("bouncer", ttl).await.expect("lease").expect("d takes it once released");
        assert!(fd.epoch > fc.epoch, "{fd:?} after {fc:?}");
        assert!(!c.renew_lease(&fc, ttl).await.expect("renew"), "c's hold is over");
        let exists = |s: &Store| s.folders("prot").expect("folders").iter().map(|(_, f)| f.exists).sum::<u64>();
        let was = exists(&c);
        let m = archiving(&d, "prot", "Subject: d\r\n\r\nbody\r\n".into()).await;
        d.commit_batch_fenced(Some(&fd), vec![(Audit::system("upstream", "archive"), m)]).await.expect("commit on d");
        let t0 = Instant::now();
        while exists(&c) != was + 1 {
            assert!(t0.elapsed() < Duration::from_secs(5), "c sees d's commit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.close().expect("close c");
        d.close().expect("close d");
    });
    let after = xacts();
    let t0 = Instant::now();
    let mut after = after;
    while after < before + 6 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        after = xacts();
    }
    assert!(after >= before + 6, "the leases and the commit went through PgBouncer: {before} then {after}");
    assert!(!a.log().contains("panicked") && !b.log().contains("panicked"), "{}", logs());
}

const PROVIDER_USER: &str = "protocollo@pec.example.it";
const PROVIDER_PASS: &str = "provider-secret-7";

/// The archive records in the shared journal: (count, distinct blobs).
fn archived(pg: &Postgres) -> (u64, u64) {
    let n = pg.sql(
        "SELECT count(*) || ' ' || count(DISTINCT substring(line from '\"hash\":\"([0-9a-f]{64})\"')) \
         FROM pecgate_journal WHERE line LIKE '%\"op\":\"archive\"%'",
    );
    let mut it = n.split(' ').map(|x| x.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// PostgreSQL, the bucket, Dovecot as the provider of mailbox `prot`, and
/// two nodes a and b both configured with it (`[upstream] lease`, quick
/// retries), started.
struct WithProvider {
    pg: Postgres,
    s3: S3,
    _dv: support::Dovecot,
    imap: support::Imap,
    dir: tempfile::TempDir,
    cert: PathBuf,
    a: Node,
    b: Node,
}

fn with_provider(lease: &str, max_backoff: &str) -> WithProvider {
    let pg = Postgres::start();
    let s3 = S3::start();
    let dv = support::Dovecot::start(
        support::DovecotOptions::new()
            .user(support::UserSpec::new(PROVIDER_USER, PROVIDER_PASS).quota(1 << 30, 1_000_000)),
    );
    let imap = dv.imap(PROVIDER_USER);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = certificate(dir.path());
    let body = format!(
        "[upstream]\ntimeout = \"10s\"\nmin_backoff = \"100ms\"\nmax_backoff = \"{max_backoff}\"\nlease = \"{lease}\"\n\n{}",
        support::gateway::mailbox_toml("prot", PROVIDER_USER, PROVIDER_PASS, dv.port, "")
    );
    let mut a = node(dir.path(), "a", &pg, &s3, &cert, &key, &body);
    let mut b = node(dir.path(), "b", &pg, &s3, &cert, &key, &body);
    a.start();
    b.start();
    WithProvider { pg, s3, _dv: dv, imap, dir, cert, a, b }
}

fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool, logs: impl Fn() -> String) -> Duration {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

/// Both nodes configure the same provider mailbox; only the lease holder
/// polls it. kill -9 of the holder: the other node takes the mailbox over
/// within 30 s (lease 3 s here), the epoch moves on, and every message is
/// archived exactly once, the provider emptied.
#[test]
fn one_poller_per_mailbox_and_takeover() {
    let WithProvider { pg, s3: _s3, imap, dir: _dir, mut a, mut b, _dv, .. } = with_provider("3s", "2s");
    imap.append("INBOX", (0..40).map(|i| support::make_message(i, 3000)));
    let logs = || format!("node a:\n{}\nnode b:\n{}", a.log(), b.log());
    wait(
        "40 archived and the provider emptied",
        Duration::from_secs(60),
        || archived(&pg).0 >= 40 && imap.count("INBOX") == 0,
        logs,
    );
    assert_eq!(archived(&pg), (40, 40), "each message archived once");
    let holder = pg.sql("SELECT holder || ' ' || epoch FROM pecgate_leases WHERE name = 'mailbox:prot'");
    let (first, epoch) = holder.split_once(' ').expect("a holder");
    let epoch: u64 = epoch.parse().expect("epoch");
    let polling = |n: &Node| n.log().contains("logged in to the provider");
    assert!(polling(&a) != polling(&b), "exactly one node logged in to the provider\n{}", logs());
    assert!(polling(if first == "a" { &a } else { &b }), "the lease holder polls: {holder}");

    // The holder dies; the other takes over.
    let (dead, alive) = if first == "a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    if let Some(mut c) = dead.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let killed = Instant::now();
    imap.append("INBOX", (40..70).map(|i| support::make_message(i, 3000)));
    let alive_log = || alive.log();
    wait(
        "70 archived by the other node",
        Duration::from_secs(30),
        || archived(&pg).0 >= 70 && imap.count("INBOX") == 0,
        alive_log,
    );
    assert!(killed.elapsed() < Duration::from_secs(30), "taken over in {:?}", killed.elapsed());
    assert_eq!(archived(&pg), (70, 70), "each message archived once across the takeover");
    let holder = pg.sql("SELECT holder || ' ' || epoch FROM pecgate_leases WHERE name = 'mailbox:prot'");
    let (second, epoch2) = holder.split_once(' ').expect("a holder");
    assert_ne!(second, first, "the surviving node holds the lease");
    assert!(epoch2.parse::<u64>().expect("epoch") > epoch, "the epoch moved on: {holder}");
    alive.stop();
    let v = alive.cli(&["audit", "verify"]);
    assert!(
        v.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
}

/// Two nodes' stores, x and y, on a fresh PostgreSQL and bucket: `f` runs
/// with them, then both are closed. The PostgreSQL, for what a test checks
/// after.
fn two_stores<Fut: std::future::Future<Output = ()>>(f: impl FnOnce(Store, Store) -> Fut) -> Postgres {
    let pg = Postgres::start();
    let s3 = S3::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (x, _) = Store::open(&dir.path().join("x"), options(&pg, &s3, "x")).expect("open x");
        let (y, _) = Store::open(&dir.path().join("y"), options(&pg, &s3, "y")).expect("open y");
        f(x.clone(), y.clone()).await;
        x.close().expect("close x");
        y.close().expect("close y");
    });
    pg
}

/// A node that held a lease and lost it (frozen past its expiry while
/// another node took it): its late commits are refused by the epoch check
/// in the commit's own transaction, and nothing of them is in the journal.
#[test]
fn late_commits_under_a_lost_lease_are_refused() {
    use pecgate::store::{Audit, StoreError};
    let pg = two_stores(|x, y| async move {
        let ttl = Duration::from_secs(1);
        let fx = x.acquire_lease("mailbox:t", ttl).await.expect("lease").expect("x takes it");
        assert!(y.acquire_lease("mailbox:t", ttl).await.expect("lease").is_none(), "held by x");
        let archive = |store: &Store, n: u8| {
            let store = store.clone();
            async move { archiving(&store, "t", format!("Subject: {n}\r\n\r\nbody {n}\r\n")).await }
        };
        let c = archive(&x, 1).await;
        x.commit_batch_fenced(Some(&fx), vec![(Audit::system("upstream", "archive"), c)])
            .await
            .expect("x commits while it holds");
        // x "freezes" past the lease; y takes over.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let fy = y.acquire_lease("mailbox:t", ttl).await.expect("lease").expect("y takes the expired lease");
        assert!(fy.epoch > fx.epoch);
        assert!(!x.renew_lease(&fx, ttl).await.expect("renew"), "x learns it lost the lease");
        let c = archive(&x, 2).await;
        match x.commit_batch_fenced(Some(&fx), vec![(Audit::system("upstream", "archive"), c)]).await {
            Err(StoreError::Fenced(name)) => assert_eq!(name, "mailbox:t"),
            other => panic!("x's late commit must be refused, got {other:?}"),
        }
        let c = archive(&y, 3).await;
        y.commit_batch_fenced(Some(&fy), vec![(Audit::system("upstream", "archive"), c)]).await.expect("y commits");
    });
    assert_eq!(archived(&pg), (2, 2), "x's late record is not in the journal");
}

/// Campaign notices are claimed for a dialogue with `FOR UPDATE SKIP
/// LOCKED`: a notice another node's dialogue holds is refused at once (not
/// waited for), even after that node lost its lease (frozen mid-dialogue);
/// it is free again when the dialogue releases it, when the holder's
/// connection dies, or when the holder stays idle past its hold.
#[test]
fn campaign_notices_are_claimed_with_skip_locked() {
    let pg = two_stores(|x, y| async move {
        let ttl = Duration::from_secs(1);
        let hold = Duration::from_secs(60);
        let fx = x.acquire_lease("campaigns:prot", ttl).await.expect("lease").expect("x sends");
        let held = x.claim_notice(Some(&fx), "c1", 1, hold).await.expect("claim").expect("x claims notice 1");
        // x freezes mid-dialogue past its lease; y takes the sending over.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let fy = y.acquire_lease("campaigns:prot", ttl).await.expect("lease").expect("y takes the expired lease");
        let t0 = std::time::Instant::now();
        assert!(y.claim_notice(Some(&fy), "c1", 1, hold).await.expect("claim").is_none(), "x's dialogue holds it");
        assert!(t0.elapsed() < Duration::from_secs(2), "skipped, not waited for: {:?}", t0.elapsed());
        let other = y.claim_notice(Some(&fy), "c1", 2, hold).await.expect("claim").expect("another notice is free");
        other.release().await;
        // x's dialogue ends: the notice is y's to settle.
        held.release().await;
        let again = y.claim_notice(Some(&fy), "c1", 1, hold).await.expect("claim").expect("released");
        // y dies mid-dialogue (its claim dropped, its connection closed).
        drop(again);
        let fx = x.acquire_lease("campaigns:prot", ttl).await.expect("lease");
        assert!(fx.is_none(), "y's lease still runs");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let fx = x.acquire_lease("campaigns:prot", ttl).await.expect("lease").expect("x takes it back");
        let short = x.claim_notice(Some(&fx), "c1", 1, Duration::from_secs(1)).await.expect("claim");
        let short = short.expect("a dead holder's claim is gone");
        // x stays idle in its dialogue past its hold: PostgreSQL ends it.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let fy = {
            tokio::time::sleep(Duration::from_millis(200)).await;
            y.acquire_lease("campaigns:prot", Duration::from_secs(30)).await.expect("lease")
        };
        let fy = match fy {
            Some(f) => f,
            None => {
                tokio::time::sleep(ttl).await;
                y.acquire_lease("campaigns:prot", Duration::from_secs(30)).await.expect("lease").expect("y takes it")
            }
        };
        let late = y.claim_notice(Some(&fy), "c1", 1, hold).await.expect("claim");
        assert!(late.is_some(), "a claim held idle past its hold is ended by PostgreSQL");
        short.release().await;
        late.expect("claimed").release().await;
    });
    let claims = pg.sql("SELECT campaign || ' ' || notice || ' ' || node FROM pecgate_claims ORDER BY notice");
    assert_eq!(claims.lines().collect::<Vec<_>>(), ["c1 1 y", "c1 2 y"], "{claims}");
}

/// A provider mailbox's sending limits hold across nodes: each node's
/// `Limiter` (its process's count) asks PostgreSQL, so sends through x and
/// y share one window, as submissions and a campaign on one machine do.
#[test]
fn sending_limits_are_counted_across_nodes() {
    use pecgate::config::SendingLimits;
    use pecgate::sending::Limiter;
    let pg = two_stores(|x, y| async move {
        let (lx, ly) = (Limiter::default(), Limiter::default());
        let l = SendingLimits { per_minute: Some(3), ..Default::default() };
        let ok = |r: Result<Result<(), pecgate::sending::Wait>, _>| r.expect("counted").is_ok();
        assert!(ok(lx.try_acquire_shared(&x, "prot", &l).await), "1st, through x");
        assert!(ok(ly.try_acquire_shared(&y, "prot", &l).await), "2nd, through y");
        assert!(ok(lx.try_acquire_shared(&x, "prot", &l).await), "3rd, through x");
        for (who, lim, st) in [("y", &ly, &y), ("x", &lx, &x)] {
            let w = lim.try_acquire_shared(st, "prot", &l).await.expect("counted").expect_err("the 4th waits");
            assert_eq!(w.limit, ("per_minute", 3), "through {who}");
            assert!(w.wait > Duration::from_secs(55), "through {who}: {:?}", w.wait);
        }
        // Another mailbox has its own window.
        assert!(ok(ly.try_acquire_shared(&y, "other", &l).await));
        // Without limits nothing is counted.
        assert!(ok(ly.try_acquire_shared(&y, "prot", &SendingLimits::default()).await));
        // Ten at once through both nodes for a fresh mailbox: exactly three
        // go (the check and the count are one transaction per send).
        let (x2, y2) = (x.clone(), y.clone());
        let tries = (0..10).map(|i| {
            let (st, l) = (if i % 2 == 0 { x2.clone() } else { y2.clone() }, l.clone());
            tokio::spawn(async move {
                let lim = Limiter::default();
                lim.try_acquire_shared(&st, "busy", &l).await.expect("counted").is_ok()
            })
        });
        let mut went = 0;
        for t in tries.collect::<Vec<_>>() {
            went += usize::from(t.await.expect("task"));
        }
        assert_eq!(went, 3, "three of ten concurrent sends fit the minute");
    });
    assert_eq!(pg.sql("SELECT count(*) FROM pecgate_sends WHERE mailbox = 'prot'"), "3");
}

/// The folder's message count and distinct blobs on a node's index (the
/// node stopped), opened through the store API.
fn inbox_of(pg: &Postgres, s3: &S3, node: &Node) -> (u64, usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (st, _) = Store::open(&node.index_dir, options(pg, s3, &node.name)).expect("open node store");
        let exists = st.folder("prot", "INBOX").expect("folder").map(|f| f.exists).unwrap_or(0);
        let hashes: std::collections::HashSet<String> =
            st.messages("prot", "INBOX").expect("messages").into_iter().map(|(_, m)| m.hash).collect();
        st.close().expect("close");
        (exists, hashes.len())
    })
}

/// kill -9 of whichever node holds the mailbox's lease, 25 times at random
/// moments while 600 messages (2 KB–200 KB) are pulled from the provider,
/// the killed node restarted each time: every message is archived once
/// (600 messages, 600 blobs, in the shared journal and on both nodes), the
/// provider emptied, and `audit verify` passes.
#[test]
fn kill_the_poller_25_times_during_ingest() {
    use rand::Rng;
    let WithProvider { pg, s3, imap, dir: _dir, a, b, _dv, .. } = with_provider("1s", "1s");
    let mut nodes = [a, b];
    let mut rng = rand::thread_rng();
    let sizes: Vec<usize> = (0..600).map(|_| (2000.0 * 100f64.powf(rng.gen::<f64>())) as usize).collect();
    imap.append("INBOX", sizes.iter().enumerate().map(|(i, &n)| support::make_message(i, n)));
    let mut kills = 0;
    let t0 = Instant::now();
    while kills < 25 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..900)));
        let holder = pg.sql(
            "SELECT coalesce(max(holder), '') FROM pecgate_leases WHERE name = 'mailbox:prot' AND expires_at > now()",
        );
        let Some(n) = nodes.iter_mut().find(|n| n.name == holder) else { continue };
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kills += 1;
        n.start();
        assert!(t0.elapsed() < Duration::from_secs(240), "25 kills took too long");
    }
    let logs = || nodes.iter().map(|n| format!("node {}:\n{}", n.name, n.log())).collect::<Vec<_>>().join("\n");
    wait(
        "600 archived and the provider emptied",
        Duration::from_secs(120),
        || imap.count("INBOX") == 0 && archived(&pg).1 == 600,
        logs,
    );
    for n in nodes.iter_mut() {
        n.stop();
    }
    let (records, blobs) = archived(&pg);
    assert_eq!(blobs, 600, "600 distinct messages archived");
    let dups: u64 = pg.sql("SELECT count(*) FROM pecgate_journal WHERE line LIKE '%\"op\":\"archive\"%' AND line LIKE '%\"duplicate\":true%'").parse().expect("count");
    println!("{kills} kills; {records} archive records, {dups} of them duplicates (a message fetched again after a kill between its archive and its delete)");
    for n in &nodes {
        assert_eq!(inbox_of(&pg, &s3, n), (600, 600), "node {}: 600 messages in INBOX, each once", n.name);
        let v = n.cli(&["audit", "verify"]);
        assert!(v.status.success(), "audit verify on {}: {}", n.name, String::from_utf8_lossy(&v.stdout));
    }
    assert_eq!(s3.objects().iter().filter(|o| o.ends_with(".eml")).count(), 600, "600 blobs in the bucket");
}

/// PostgreSQL crashes (`pg_ctl restart -m immediate`) while a node pulls
/// from the provider and a client APPENDs on the other node: the nodes
/// reconnect by themselves; the client's APPENDs answer OK or `NO
/// [UNAVAILABLE]` meanwhile and every acknowledged one is there after;
/// every provider message is archived once and the provider emptied.
#[test]
fn postgres_restarted_mid_ingest_and_mid_session() {
    let WithProvider { mut pg, s3, imap, dir, cert, mut a, mut b, _dv, .. } = with_provider("3s", "1s");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/imap/cluster_outage.py");
    let client = Command::new("python3")
        .arg(&script)
        .arg(b.port.to_string())
        .arg(&cert)
        .arg(dir.path())
        .arg("6")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    imap.append("INBOX", (0..600).map(|i| support::make_message(i, 20_000)));
    let pg_ref = &pg;
    let t0 = Instant::now();
    wait("the ingest under way", Duration::from_secs(60), || archived(pg_ref).0 >= 20, || a.log());
    pg.restart_immediate();
    eprintln!("PostgreSQL restarted {:?} after the ingest began", t0.elapsed());
    let out = client.wait_with_output().expect("python3");
    eprintln!("the client finished at {:?}", t0.elapsed());
    eprintln!(
        "{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("ok: APPEND"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{}",
        b.log().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).take(40).collect::<Vec<_>>().join("\n")
    );
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && so.contains("all checks passed"),
        "cluster_outage.py:\n{so}\n{se}\nnode b:\n{}",
        b.log()
    );
    let logs = || format!("node a:\n{}\nnode b:\n{}", a.log(), b.log());
    wait(
        "200 archived and the provider emptied",
        Duration::from_secs(90),
        || imap.count("INBOX") == 0 && archived(&pg).1 >= 600,
        logs,
    );
    eprintln!("all archived at {:?}", t0.elapsed());
    a.stop();
    b.stop();
    assert_eq!(archived(&pg).1, 600, "each provider message archived once");
    for n in [&a, &b] {
        assert_eq!(inbox_of(&pg, &s3, n), (600, 600), "node {}", n.name);
        let v = n.cli(&["audit", "verify"]);
        assert!(v.status.success(), "audit verify on {}: {}", n.name, String::from_utf8_lossy(&v.stdout));
    }
    assert_eq!(a.mirror(), b.mirror(), "the two mirrors are the same journal");
    assert!(!a.log().contains("panicked") && !b.log().contains("panicked"));
}

/// The bucket goes away mid-ingest: nothing is archived meanwhile and the
/// provider keeps its messages; once it is back the ingest resumes and
/// every message is archived once. A node frozen (SIGSTOP) past its lease
/// and resumed writes nothing the other node did not (epoch check). The
/// LISTEN connection killed: the other node still hears of new mail.
#[test]
fn bucket_away_node_frozen_listen_killed() {
    let WithProvider { pg, mut s3, imap, dir: _dir, cert: _, mut a, mut b, _dv, .. } = with_provider("2s", "1s");
    let logs = |a: &Node, b: &Node| format!("node a:\n{}\nnode b:\n{}", a.log(), b.log());

    // 1. The bucket away.
    s3.stop();
    imap.append("INBOX", (0..30).map(|i| support::make_message(i, 5000)));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(archived(&pg).1, 0, "nothing archived without the bucket");
    assert_eq!(imap.count("INBOX"), 30, "the provider keeps every message");
    s3.start_again();
    wait(
        "30 archived once the bucket is back",
        Duration::from_secs(60),
        || archived(&pg).1 == 30 && imap.count("INBOX") == 0,
        || logs(&a, &b),
    );

    // 2. The holder frozen past its lease, new mail meanwhile, resumed.
    let holder = pg.sql("SELECT holder FROM pecgate_leases WHERE name = 'mailbox:prot'");
    let (frozen, other) = if holder == "a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    let pid = frozen.child.as_ref().expect("running").id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    imap.append("INBOX", (30..60).map(|i| support::make_message(i, 5000)));
    wait(
        "the other node archives the new mail",
        Duration::from_secs(30),
        || archived(&pg).1 == 60 && imap.count("INBOX") == 0,
        || other.log(),
    );
    assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        frozen.log().contains("lost the mailbox's lease")
            || frozen.log().contains("lease mailbox:prot is no longer held"),
        "{}",
        frozen.log()
    );
    assert_eq!(archived(&pg).1, 60, "each message archived once");

    // 3. The LISTEN connections killed: IDLE on either node still sees
    //    what the other archives (the listener reconnects; a poll every
    //    second meanwhile).
    let killed = pg.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pecgate-listener'",
    );
    assert!(killed.parse::<u32>().unwrap_or(0) >= 2, "the nodes' LISTEN connections: {killed}");
    imap.append("INBOX", (60..65).map(|i| support::make_message(i, 5000)));
    wait("65 archived", Duration::from_secs(30), || archived(&pg).1 == 65 && imap.count("INBOX") == 0, || logs(&a, &b));
    let t0 = Instant::now();
    let rows: u64 = pg.sql("SELECT count(*) FROM pecgate_journal").parse().expect("count");
    wait(
        "both nodes caught up after their LISTEN was killed",
        Duration::from_secs(5),
        || {
            let st = a.cli(&["cluster", "status", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
            v["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["applied"].as_u64().unwrap_or(0) >= rows))
        },
        || logs(&a, &b),
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    a.stop();
    b.stop();
    for n in [&a, &b] {
        assert_eq!(inbox_of(&pg, &s3, n), (65, 65), "node {}", n.name);
    }
    assert_eq!(a.mirror(), b.mirror());
}

/// `pecgate store migrate`: one machine's archive (pulled from Dovecot by
/// `serve`, plus a category) into the cluster; a node opened on the
/// cluster has the same index as the data directory; run again it copies
/// nothing; into a cluster holding another archive it writes nothing.
/// `store migrate --from FROM --to TO` fails, saying the destination
/// holds another archive.
fn refused_as_another_archive(from: &Path, to: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["store", "migrate", "--from"])
        .arg(from)
        .arg("--to")
        .arg(to)
        .output()
        .expect("run pecgate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("another archive"), "{}: {err}", to.display());
}

#[test]
fn migrate_a_data_directory_into_the_cluster() {
    let pg = Postgres::start();
    let s3 = S3::start();
    let dv = support::Dovecot::start(
        support::DovecotOptions::new()
            .user(support::UserSpec::new(PROVIDER_USER, PROVIDER_PASS).quota(1 << 30, 1_000_000)),
    );
    dv.imap(PROVIDER_USER).append("INBOX", (0..25).map(|i| support::make_message(i, 4000)));
    let mut g = support::gateway::Gateway::new(&format!(
        "{}{}",
        support::gateway::FAST_UPSTREAM,
        support::gateway::mailbox_toml("prot", PROVIDER_USER, PROVIDER_PASS, dv.port, "")
    ));
    g.start();
    g.wait_mailbox("prot", Duration::from_secs(60), "25 archived", |s| {
        s["archived_total"] == 25 && s["on_provider"] == 0
    });
    g.stop();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = certificate(dir.path());
    let node = node(dir.path(), "a", &pg, &s3, &cert, &key, PROT);
    let migrate = || {
        let out = Command::new(env!("CARGO_BIN_EXE_pecgate"))
            .args(["store", "migrate", "--json", "--from"])
            .arg(&g.config_path)
            .arg("--to")
            .arg(&node.config)
            .output()
            .expect("run pecgate");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = migrate();
    assert!(ok, "migrate: {out}{err}");
    let m: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let records = std::fs::read_to_string(g.journal_dir().join("000001.log")).expect("journal").lines().count() as u64;
    assert_eq!(m["blobs_copied"], 25, "{m}");
    assert_eq!(m["records_copied"], records, "{m}");
    // Again: nothing to copy.
    let (ok, out, err) = migrate();
    assert!(ok, "migrate again: {out}{err}");
    let m: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!((m["blobs_copied"].as_u64(), m["blobs_present"].as_u64()), (Some(0), Some(25)), "{m}");
    assert_eq!((m["records_copied"].as_u64(), m["records_present"].as_u64()), (Some(0), Some(records)), "{m}");
    // The cluster's index is the data directory's.
    let local = g.open_store();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (cl, rep) = Store::open(&node.index_dir, options(&pg, &s3, "a")).expect("open the cluster");
        assert_eq!(rep.replayed_records, records);
        assert_eq!(cl.index_dump().expect("dump"), local.index_dump().expect("dump"), "the same index");
        let hashes: Vec<String> =
            local.messages("prot", "INBOX").expect("messages").into_iter().map(|(_, m)| m.hash).collect();
        for h in &hashes {
            assert_eq!(cl.get_blob(h).expect("blob from the bucket"), local.get_blob(h).expect("blob"), "{h}");
        }
        cl.close().expect("close");
    });
    local.close().expect("close");
    drop(local);
    // Another archive into this cluster: refused, nothing written.
    let mut other = support::gateway::Gateway::new("");
    other.start();
    std::thread::sleep(Duration::from_millis(500));
    other.stop();
    let before = pg.sql("SELECT count(*) FROM pecgate_journal");
    refused_as_another_archive(&other.config_path, &node.config);
    assert_eq!(pg.sql("SELECT count(*) FROM pecgate_journal"), before, "nothing written");

    // And back to one machine: a new data directory gets every blob and
    // the journal byte for byte, and the same index.
    let back = support::gateway::Gateway::new("");
    let migrate_back = || {
        let out = Command::new(env!("CARGO_BIN_EXE_pecgate"))
            .args(["store", "migrate", "--json", "--from"])
            .arg(&node.config)
            .arg("--to")
            .arg(&back.config_path)
            .output()
            .expect("run pecgate");
        assert!(out.status.success(), "migrate back: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let m = migrate_back();
    assert_eq!((m["blobs_copied"].as_u64(), m["records_copied"].as_u64()), (Some(25), Some(records)), "{m}");
    let journal = |dir: PathBuf| std::fs::read(dir.join("000001.log")).expect("journal");
    assert_eq!(journal(back.journal_dir()), journal(g.journal_dir()), "the journal, byte for byte");
    let m = migrate_back();
    assert_eq!((m["blobs_copied"].as_u64(), m["blobs_present"].as_u64()), (Some(0), Some(25)), "{m}");
    assert_eq!((m["records_copied"].as_u64(), m["records_present"].as_u64()), (Some(0), Some(records)), "{m}");
    let (mine, theirs) = (back.open_store(), g.open_store());
    assert_eq!(mine.index_dump().expect("dump"), theirs.index_dump().expect("dump"), "the same index");
    for (_, msg) in theirs.messages("prot", "INBOX").expect("messages") {
        assert_eq!(mine.get_blob(&msg.hash).expect("blob back"), theirs.get_blob(&msg.hash).expect("blob"));
    }
    mine.close().expect("close");
    theirs.close().expect("close");
    // A data directory of another archive is not written into.
    let st = other.open_store();
    rt.block_on(st.commit(
        pecgate::store::Audit::system("test", "ensure"),
        pecgate::store::Change::EnsureFolder { mailbox: "x".into(), folder: "INBOX".into() },
    ))
    .expect("a record of its own");
    st.close().expect("close");
    drop(st);
    let before = std::fs::read(other.journal_dir().join("000001.log")).expect("journal");
    refused_as_another_archive(&node.config, &other.config_path);
    assert_eq!(std::fs::read(other.journal_dir().join("000001.log")).expect("journal"), before, "nothing written");
}
