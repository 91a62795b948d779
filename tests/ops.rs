//! Operations: alert rules (promtool), the Grafana dashboard against what a
//! running gateway exports, `/metrics` against a real provider (quota, up,
//! archived counts), `/readyz`, API permissions, audit query and export.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::gateway::{mailbox_toml, tail, Gateway};
use support::{dashboard_metric_names, free_port, make_message, sha256_hex, Dovecot, DovecotOptions, UserSpec};

const ARCH: &str = "protocollo@pec.example.it";
const KEEP: &str = "ufficio@pec.example.it";
const PASS: &str = "provider-secret-7";
const WAIT: Duration = Duration::from_secs(60);

fn promtool() -> &'static str {
    // A missing promtool is a failure, not a skip: these checks are the
    // only thing standing between a typo and a silent alert.
    assert!(
        Path::new("/usr/bin/promtool").exists() || which("promtool"),
        "promtool is not installed"
    );
    "promtool"
}

fn which(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = repo("config/prometheus");
    let p = promtool();
    let out = run_ok(
        Command::new(p)
            .args(["check", "rules", "pecgate-alerts.yml"])
            .current_dir(&dir),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_ok(
        Command::new(p)
            .args(["test", "rules", "pecgate-alerts.test.yml"])
            .current_dir(&dir),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test, and a runbook paragraph.
    let rules = std::fs::read_to_string(dir.join("pecgate-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("pecgate-alerts.test.yml")).unwrap();
    let runbook = std::fs::read_to_string(repo("docs/runbook.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}\n")),
            "alert {a} has no promtool unit test"
        );
    }
    for anchor in rules
        .lines()
        .filter_map(|l| l.split("docs/runbook.md#").nth(1))
    {
        let anchor = anchor.trim_end_matches('"');
        assert!(
            runbook.contains(&format!("<a id=\"{anchor}\"></a>")),
            "runbook has no paragraph {anchor}"
        );
    }
}

// ---------------------------------------------------------------------------
// A tiny HTTP/1.1 client (Connection: close).

struct Reply {
    status: u16,
    body: String,
}

fn b64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn get(port: u16, path: &str, auth: Option<(&str, &str)>) -> Option<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        req.push_str(&format!(
            "Authorization: Basic {}\r\n",
            b64(&format!("{u}:{p}"))
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        body: body.to_string(),
    })
}

fn must_get(port: u16, path: &str, auth: Option<(&str, &str)>) -> Reply {
    get(port, path, auth).unwrap_or_else(|| panic!("GET {path}: no answer"))
}

/// `name{labels}` → value, from the text exposition format.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            Some((series.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn names(m: &BTreeMap<String, f64>) -> BTreeSet<String> {
    m.keys()
        .map(|k| k.split('{').next().unwrap_or(k).to_string())
        .collect()
}

fn scrape(port: u16) -> (String, BTreeMap<String, f64>) {
    let r = must_get(port, "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let m = parse_metrics(&r.body);
    (r.body, m)
}

fn wait_metric(g: &mut Gateway, port: u16, series: &str, want: f64) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, m) = scrape(port);
        if m.get(series) == Some(&want) {
            return m;
        }
        assert!(g.is_running(), "pecgate exited\n{}", g.log());
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {series} == {want}; have {:?}\n{}",
            m.get(series),
            tail(&g.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn user_toml(name: &str, password: &str, grants: &str, roles: &str) -> String {
    let hash = pecgate::auth::hash_password(password).unwrap();
    format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\nroles = [{roles}]\ngrants = {{ {grants} }}\n")
}

/// One gateway against one Dovecot covers metrics, readiness and the API;
/// starting Dovecot and the gateway once keeps the suite fast on 2 cores.
#[test]
fn metrics_readiness_api_and_audit_against_a_real_provider() {
    let mut dv = Dovecot::start(
        DovecotOptions::new()
            .user(UserSpec::new(ARCH, PASS).quota(50 * 1024 * 1024, 10_000))
            .user(UserSpec::new(KEEP, PASS).quota(20 * 1024 * 1024, 500)),
    );
    let arch_msgs: Vec<Vec<u8>> = (0..5).map(|i| make_message(i, 2048 + i * 100)).collect();
    let keep_msgs: Vec<Vec<u8>> = (10..13).map(|i| make_message(i, 40 * 1024)).collect();
    dv.imap(ARCH)
        .append("INBOX", arch_msgs.iter().map(|m| m.as_slice()));
    dv.imap(KEEP)
        .append("INBOX", keep_msgs.iter().map(|m| m.as_slice()));

    // A provider that accepts the connection and never answers: that
    // mailbox has neither synced nor failed until the timeout.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = blackhole.local_addr().unwrap().port();

    let http_port = free_port();
    let body = format!(
        "[upstream]\ntimeout = \"4s\"\nmin_backoff = \"200ms\"\nmax_backoff = \"1s\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n{}{}{}{}{}",
        mailbox_toml("arch", ARCH, PASS, dv.port, ""),
        mailbox_toml("keep", KEEP, PASS, dv.port, "offload = { mode = \"never\" }"),
        mailbox_toml("slow", "slow@pec.example.it", PASS, hole_port, ""),
        user_toml("alice", "alice-pw", "arch = [\"read\"]", ""),
        user_toml("auditor", "audit-pw", "keep = [\"read\"]", "\"audit\""),
    );
    let mut g = Gateway::new(&body);
    let t0 = chrono::Utc::now();
    g.start();

    // (e) Not ready while a mailbox has neither synced nor failed.
    let deadline = Instant::now() + WAIT;
    let first = loop {
        if let Some(r) = get(http_port, "/healthz", None) {
            assert_eq!(r.status, 200);
            break must_get(http_port, "/readyz", None);
        }
        assert!(g.is_running(), "pecgate exited\n{}", g.log());
        assert!(Instant::now() < deadline, "HTTP never came up\n{}", g.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(first.status, 503, "{}", first.body);
    let reason: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(reason["ready"], false);
    assert!(
        reason["mailboxes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "slow"),
        "{reason}"
    );

    g.wait_mailbox("arch", WAIT, "arch offloaded", |s| {
        s["archived_total"] == 5 && s["on_provider"] == 0
    });
    g.wait_mailbox("keep", WAIT, "keep archived", |s| {
        s["archived_total"] == 3 && s["quota"].is_object()
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let r = must_get(http_port, "/readyz", None);
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {}", r.body);
        std::thread::sleep(Duration::from_millis(100));
    }

    // (d) The gauges say what the provider says.
    let (text, m) = scrape(http_port);
    let mut exported = names(&m);
    let q = dv.imap(KEEP).quota("INBOX");
    let storage = q.storage.expect("Dovecot reports STORAGE");
    let msgs = q.messages.expect("Dovecot reports MESSAGE");
    assert_eq!(
        m["pecgate_provider_quota_used_bytes{mailbox=\"keep\"}"],
        (storage.used * 1024) as f64
    );
    assert_eq!(
        m["pecgate_provider_quota_limit_bytes{mailbox=\"keep\"}"],
        (storage.limit * 1024) as f64
    );
    assert_eq!(
        m["pecgate_provider_quota_used_messages{mailbox=\"keep\"}"],
        msgs.used as f64
    );
    assert_eq!(
        m["pecgate_provider_quota_limit_messages{mailbox=\"keep\"}"],
        msgs.limit as f64
    );
    assert_eq!(msgs.used, 3, "offload = never leaves them on the provider");
    assert!(storage.used > 0);
    assert_eq!(dv.imap(ARCH).count("INBOX"), 0);
    assert_eq!(
        m["pecgate_archived_messages_total{mailbox=\"arch\"}"], 5.0,
        "archived counter = messages moved"
    );
    assert_eq!(
        m["pecgate_provider_deleted_messages_total{mailbox=\"arch\"}"],
        5.0
    );
    assert_eq!(
        m["pecgate_provider_deleted_messages_total{mailbox=\"keep\"}"],
        0.0
    );
    assert_eq!(m["pecgate_archive_messages{mailbox=\"arch\"}"], 5.0);
    // Every blob write and journal commit is timed: 8 blobs (5 + 3) at least.
    assert!(m["pecgate_store_write_duration_seconds_count{what=\"blob\"}"] >= 8.0, "blob write latency histogram");
    assert!(m["pecgate_store_write_duration_seconds_count{what=\"journal\"}"] >= 1.0, "journal commit latency histogram");
    let bytes: usize = arch_msgs.iter().map(Vec::len).sum();
    assert_eq!(
        m["pecgate_archived_bytes_total{mailbox=\"arch\"}"],
        bytes as f64
    );
    assert_eq!(m["pecgate_provider_messages{mailbox=\"keep\"}"], 3.0);
    assert_eq!(m["pecgate_provider_up{mailbox=\"arch\"}"], 1.0);
    assert_eq!(m["pecgate_provider_up{mailbox=\"slow\"}"], 0.0);
    assert!(m["pecgate_store_free_bytes"] > 0.0);
    assert!(m["pecgate_index_bytes"] > 0.0, "the index files' size");
    assert!(m["pecgate_process_start_time_seconds"] >= t0.timestamp() as f64 - 1.0);
    let kinds: f64 = m
        .iter()
        .filter(|(k, _)| {
            k.starts_with("pecgate_pec_messages_total{") && k.contains("mailbox=\"arch\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(kinds, 5.0, "every archived message counted once by kind");

    // (c) The exposition passes promtool's linter.
    let mut lint = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // (g) API permissions.
    let alice = Some(("alice", "alice-pw"));
    let auditor = Some(("auditor", "audit-pw"));
    let r = must_get(http_port, "/api/mailboxes", alice);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let seen: Vec<&str> = v["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["alias"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["arch"]);
    let v: Value =
        serde_json::from_str(&must_get(http_port, "/api/mailboxes", auditor).body).unwrap();
    let seen: Vec<&str> = v["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["alias"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["keep"]);
    assert_eq!(must_get(http_port, "/api/mailboxes", None).status, 401);
    assert_eq!(
        must_get(http_port, "/api/mailboxes", Some(("alice", "wrong"))).status,
        401
    );
    assert_eq!(
        must_get(http_port, "/api/sent?mailbox=keep", alice).status,
        403
    );
    assert_eq!(
        must_get(http_port, "/api/sent?mailbox=arch", alice).status,
        200
    );
    assert_eq!(must_get(http_port, "/api/sent", alice).status, 400);
    assert_eq!(must_get(http_port, "/api/audit", None).status, 401);
    assert_eq!(must_get(http_port, "/api/audit", alice).status, 403);
    let r = must_get(http_port, "/api/audit?op=archive&mailbox=arch", auditor);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 5);
    assert_eq!(
        must_get(http_port, "/api/audit?since=yesterday", auditor).status,
        400
    );
    assert_eq!(must_get(http_port, "/nope", None).status, 404);

    // (d) `up` follows the provider.
    dv.kill();
    let m = wait_metric(
        &mut g,
        http_port,
        "pecgate_provider_up{mailbox=\"arch\"}",
        0.0,
    );
    exported.extend(names(&m));
    dv.start_again();
    let m = wait_metric(
        &mut g,
        http_port,
        "pecgate_provider_up{mailbox=\"arch\"}",
        1.0,
    );
    exported.extend(names(&m));
    // The failed HTTP login above is counted from the audit trail.
    assert!(m["pecgate_logins_total{outcome=\"failed\",protocol=\"http\"}"] >= 1.0);

    // (b) The dashboard is importable and queries only what is exported.
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("config/grafana/pecgate.json")).unwrap(),
    )
    .unwrap();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    assert!(d["title"].is_string() && d["uid"].is_string());
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no datasource variable"
    );
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert!(p["gridPos"].is_object() && p["title"].is_string(), "{p}");
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {} does not use the datasource variable",
            p["title"]
        );
    }
    let mut used = dashboard_metric_names(&d);
    assert!(used.len() >= 15, "{used:?}");
    // Campaign series exist once there is a campaign: tests/campaign.rs
    // checks those panels against its own scrape.
    used.retain(|n| !n.starts_with("pecgate_campaign_"));
    // Cluster series exist on cluster nodes: tests/cluster.rs checks them.
    used.retain(|n| !n.starts_with("pecgate_cluster_"));
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries metrics /metrics does not export: {missing:?}\nexported: {exported:?}"
    );

    assert_eq!(g.stop(), Some(0));
    drop(blackhole);

    // (f) Audit queries from the CLI.
    let cli = |args: &[&str]| {
        let out = g.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let jsonl = cli(&[
        "audit",
        "query",
        "--op",
        "archive",
        "--mailbox",
        "arch",
        "--format",
        "jsonl",
    ]);
    let recs: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hashes: BTreeSet<String> = recs
        .iter()
        .map(|r| r["event"]["hash"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = arch_msgs.iter().map(|m| sha256_hex(m)).collect();
    assert_eq!(recs.len(), 5);
    assert_eq!(hashes, expected, "exactly the archived messages of arch");
    assert!(recs
        .iter()
        .all(|r| r["op"] == "archive" && r["mailbox"] == "arch" && r["hash"].is_string()));
    let all_archive = cli(&["audit", "query", "--op", "archive", "--format", "jsonl"]);
    assert_eq!(all_archive.lines().count(), 8);
    let csv = cli(&[
        "audit",
        "query",
        "--op",
        "archive",
        "--mailbox",
        "keep",
        "--format",
        "csv",
    ]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0].trim_end(),
        "seq,time,actor,source,proto,op,mailbox,folder,uids,outcome,hash"
    );
    assert_eq!(rows.len(), 4);
    assert!(rows[1..]
        .iter()
        .all(|r| r.split(',').nth(5) == Some("archive") && r.split(',').nth(6) == Some("keep")));
    let http_logins = cli(&[
        "audit", "query", "--user", "alice", "--op", "login", "--format", "jsonl",
    ]);
    assert_eq!(
        http_logins.lines().count(),
        1,
        "the one failed HTTP login of alice: {http_logins}"
    );
    let none = cli(&[
        "audit",
        "query",
        "--op",
        "archive",
        "--until",
        "2000-01-01",
        "--format",
        "jsonl",
    ]);
    assert!(none.is_empty());
    let table = cli(&["audit", "query", "--op", "provider-delete"]);
    assert!(
        table.contains("provider-delete") && table.trim_end().ends_with("records"),
        "{table}"
    );

    // An export of a range from the middle of the chain verifies, and a
    // tampered one does not.
    let all: Vec<Value> = cli(&["audit", "query", "--format", "jsonl"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |r: &Value| chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap()).unwrap();
    // A start in the middle of the chain: the first record later than the
    // first group commit.
    let middle = all
        .iter()
        .find(|r| at(r) > at(&all[0]))
        .expect("records at different times");
    let since = middle["time"].as_str().unwrap();
    let out = g.path().join("excerpt.jsonl");
    cli(&[
        "audit",
        "export",
        "--since",
        since,
        "--until",
        "2100-01-01",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let since_t = at(middle);
    let first = all.iter().find(|r| at(r) >= since_t).unwrap();
    assert_eq!(header["first_seq"], first["seq"]);
    assert_eq!(header["last_seq"], all.last().unwrap()["seq"]);
    assert_eq!(
        header["records"].as_u64().unwrap() as usize,
        text.lines().count() - 1
    );
    let before = all
        .iter()
        .rev()
        .find(|r| r["seq"].as_u64() < first["seq"].as_u64())
        .unwrap();
    assert_eq!(
        header["prev_hash"], before["hash"],
        "the excerpt chains to the record before it"
    );
    assert_ne!(header["prev_hash"], "0".repeat(64));
    let verify = Command::new(support::pecgate_bin())
        .args(["audit", "verify-export"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.remove(2); // a record removed from the middle
    std::fs::write(&out, lines.join("\n") + "\n").unwrap();
    let verify = Command::new(support::pecgate_bin())
        .args(["audit", "verify-export"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
