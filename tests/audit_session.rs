//! One person's scripted day against a running gateway — a real provider
//! (Dovecot), the PEC provider simulator, Python's imaplib and smtplib —
//! then `pecgate audit query` must return exactly that person's records, in
//! order, with their folders, UIDs and outcomes; and `/metrics` must count
//! the SMTP side (sessions open, logins, submissions by outcome, commands).

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::gateway::{mailbox_toml, tail, Gateway, FAST_UPSTREAM};
use support::sim::{wait_port, Sim};
use support::{free_port, make_message, Dovecot, DovecotOptions, UserSpec};

const PW: &str = "Gw-pass-1";
const PROT: &str = "prot@pec.sim.test";
const LEGAL: &str = "legal@pec.sim.test";

struct Env {
    dv: Dovecot,
    sim: Sim,
    gw: Gateway,
    imaps: u16,
    smtps: u16,
    http: u16,
    ca: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

fn user(name: &str, grants: &str) -> String {
    let hash = pecgate::auth::hash_password(PW).unwrap();
    format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"prot\"\ngrants = {{ {grants} }}\n\n")
}

fn setup() -> Env {
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new("prot", "imap-prot")).user(UserSpec::new("legal", "imap-legal")));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let sim_port = free_port();
    let pki = dir.join("sim-pki");
    let sim_cfg = dir.join("sim.toml");
    let mb = |addr: &str, user: &str, pw: &str| support::sim::mailbox_config(addr, user, pw, dv.port);
    std::fs::write(
        &sim_cfg,
        format!(
            "listen = \"127.0.0.1:{sim_port}\"\ndomains = [\"pec.sim.test\"]\npki_dir = \"{}\"\n{}{}",
            pki.display(),
            mb(PROT, "prot", "imap-prot"),
            mb(LEGAL, "legal", "imap-legal")
        ),
    )
    .unwrap();
    let mut sim = Sim { child: None, config: sim_cfg, log: dir.join("sim.log"), port: sim_port };
    sim.start();

    let c = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
    std::fs::write(dir.join("ca.pem"), c.ca).unwrap();
    std::fs::write(dir.join("cert.pem"), c.chain).unwrap();
    std::fs::write(dir.join("key.pem"), c.key).unwrap();
    let (imaps, smtps, http) = (free_port(), free_port(), free_port());
    let mailbox = |alias: &str, addr: &str, user: &str, pw: &str| {
        mailbox_toml(alias, user, pw, dv.port, &format!("smtp = {{ host = \"127.0.0.1\", port = {sim_port}, tls = \"none\" }}\n"))
            .replace(&format!("address = \"{user}\""), &format!("address = \"{addr}\""))
    };
    let body = format!(
        "{FAST_UPSTREAM}[pec]\ntrust_store = \"{pki}/ca.pem\"\n\n[tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\n\
         [imap]\nlisten = [\"127.0.0.1:{imaps}\"]\n\n[smtp]\nlisten = [\"127.0.0.1:{smtps}\"]\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n{}{}{}{}",
        mailbox("prot", PROT, "prot", "imap-prot"),
        mailbox("legal", LEGAL, "legal", "imap-legal"),
        user("mario", "prot = [\"read\", \"triage\", \"send\"], legal = [\"read\"]"),
        user("anna", "prot = [\"read\"]"),
        pki = pki.display(),
        d = dir.display(),
    );
    let mut gw = Gateway::new(&body);
    gw.start();
    for p in [imaps, smtps, http] {
        wait_port(p, &gw.log_path);
    }
    Env { dv, sim, gw, imaps, smtps, http, ca: dir.join("ca.pem"), _tmp: tmp }
}

/// Run a Python snippet with `PORT`, `SMTP`, `CA`, `PW` defined; panic with
/// its output unless it exits 0.
fn python(env: &Env, code: &str) -> String {
    let prelude = format!(
        "import imaplib, smtplib, ssl, socket, sys\nPORT, SMTP, CA, PW = {}, {}, {:?}, {:?}\nCTX = ssl.create_default_context(cafile=CA)\n",
        env.imaps,
        env.smtps,
        env.ca.display().to_string(),
        PW
    );
    let out = Command::new("python3").arg("-c").arg(format!("{prelude}{code}")).output().expect("python3");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python failed:\n{text}\n{}", tail(&env.gw.log(), 40));
    text
}

fn metrics(port: u16) -> BTreeMap<String, f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
        .collect()
}

fn wait_metric(env: &Env, series: &str, want: f64) -> BTreeMap<String, f64> {
    wait_metric_for(env, series, want, Duration::from_secs(20))
}

fn wait_metric_for(env: &Env, series: &str, want: f64, timeout: Duration) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = metrics(env.http);
        if m.get(series) == Some(&want) {
            return m;
        }
        assert!(Instant::now() < deadline, "{series}: wanted {want}, have {:?}", m.get(series));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The records `audit query` returns for `args`, as (proto, op, mailbox,
/// folder, uids, outcome) with the outcome cut at its first `:` (the rest
/// holds provider texts and sizes).
fn query(gw: &Gateway, args: &[&str]) -> Vec<(String, String, String, String, Vec<u64>, String)> {
    let mut all = vec!["audit", "query", "--format", "jsonl"];
    all.extend_from_slice(args);
    let out = gw.cli(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            let uids = r["uids"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
            let outcome = s("outcome").split(':').next().unwrap_or("").to_string();
            (s("proto"), s("op"), s("mailbox"), s("folder"), uids, outcome)
        })
        .collect()
}

#[test]
fn audit_query_returns_exactly_a_scripted_session_and_smtp_is_measured() {
    let mut env = setup();
    // One message in prot/INBOX, archived from the provider (UID 1).
    env.dv.imap("prot").append("INBOX", [make_message(1, 2000)]);
    env.gw.wait_mailbox("prot", Duration::from_secs(60), "prot archived", |s| s["archived_total"] == 1);

    // Before any client: every SMTP series exists, at zero.
    // (wait_port's probe connection may still be closing)
    let m = wait_metric(&env, "pecgate_smtp_sessions_open", 0.0);
    for o in ["accepted", "temporary", "rejected", "refused"] {
        assert_eq!(m[&format!("pecgate_smtp_submissions_total{{outcome=\"{o}\"}}")], 0.0, "{o}");
    }

    // IMAP: log in, open INBOX, read the message (BODY[] also sets \Seen),
    // flag it, log out.
    python(
        &env,
        r#"
c = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=CTX)
c.login("mario", PW)
typ, d = c.select("INBOX")
assert typ == "OK" and d[0] == b"1", d
typ, d = c.uid("FETCH", "1", "(BODY[])")
assert typ == "OK" and b"Subject" in d[0][1], d
typ, d = c.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
assert typ == "OK", d
c.logout()
"#,
    );
    // The session has ended (and its logout record is written) once the
    // gauge is back to zero.
    wait_metric(&env, "pecgate_imap_sessions_open", 0.0);

    // SMTP: an accepted submission; while its connection is open the
    // sessions gauge shows it.
    python(
        &env,
        r#"
s = smtplib.SMTP_SSL("127.0.0.1", SMTP, context=CTX)
s.login("mario", PW)
msg = "From: <prot@pec.sim.test>\r\nTo: <legal@pec.sim.test>\r\nSubject: Prova\r\nMessage-ID: <audit1@pecgate.test>\r\n\r\nTesto\r\n"
s.sendmail("prot@pec.sim.test", ["legal@pec.sim.test"], msg)
s.quit()
"#,
    );
    // A connection held open shows in the gauge, and leaves it on close.
    let held = TcpStream::connect(("127.0.0.1", env.smtps)).unwrap();
    wait_metric(&env, "pecgate_smtp_sessions_open", 1.0);
    drop(held);
    wait_metric(&env, "pecgate_smtp_sessions_open", 0.0);

    // Refused by pecgate: mario holds only read on legal.
    python(
        &env,
        r#"
s = smtplib.SMTP_SSL("127.0.0.1", SMTP, context=CTX)
s.login("mario", PW)
try:
    s.sendmail("legal@pec.sim.test", ["prot@pec.sim.test"], "From: <legal@pec.sim.test>\r\nSubject: x\r\n\r\nx\r\n")
    raise SystemExit("a send without the send right was accepted")
except smtplib.SMTPSenderRefused as e:
    assert e.smtp_code == 550, e
s.quit()
"#,
    );
    // Provider down: 451, nothing sent.
    env.sim.stop();
    python(
        &env,
        r#"
s = smtplib.SMTP_SSL("127.0.0.1", SMTP, context=CTX)
s.login("mario", PW)
try:
    s.sendmail("prot@pec.sim.test", ["legal@pec.sim.test"], "From: <prot@pec.sim.test>\r\nMessage-ID: <audit2@pecgate.test>\r\nSubject: y\r\n\r\ny\r\n")
    raise SystemExit("accepted with the provider down")
except smtplib.SMTPDataError as e:
    assert e.smtp_code == 451, e
s.quit()
"#,
    );
    // A wrong password, last (the throttle would delay what follows);
    // smtplib tries PLAIN, then LOGIN: two failed attempts.
    python(
        &env,
        r#"
s = smtplib.SMTP_SSL("127.0.0.1", SMTP, context=CTX)
try:
    s.login("mario", "wrong")
    raise SystemExit("a wrong password was accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
s.close()
"#,
    );

    // (1) Metrics: the SMTP side counted by outcome.
    let m = wait_metric(&env, "pecgate_logins_total{outcome=\"failed\",protocol=\"smtp\"}", 2.0);
    let v = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} not exported"));
    assert_eq!(v("pecgate_smtp_submissions_total{outcome=\"accepted\"}"), 1.0);
    assert_eq!(v("pecgate_smtp_submissions_total{outcome=\"refused\"}"), 1.0);
    assert_eq!(v("pecgate_smtp_submissions_total{outcome=\"temporary\"}"), 1.0);
    assert_eq!(v("pecgate_smtp_submissions_total{outcome=\"rejected\"}"), 0.0);
    assert_eq!(v("pecgate_logins_total{outcome=\"ok\",protocol=\"smtp\"}"), 3.0);
    assert_eq!(v("pecgate_logins_total{outcome=\"ok\",protocol=\"imap\"}"), 1.0);
    assert_eq!(v("pecgate_client_commands_total{command=\"MAIL\",protocol=\"smtp\"}"), 3.0);
    assert_eq!(v("pecgate_client_commands_total{command=\"AUTH\",protocol=\"smtp\"}"), 5.0);
    assert_eq!(v("pecgate_client_commands_total{command=\"DATA\",protocol=\"smtp\"}"), 2.0);
    assert_eq!(v("pecgate_smtp_sessions_open"), 0.0);
    let commit = m
        .keys()
        .find_map(|k| k.strip_prefix("pecgate_build_info{commit=\""))
        .and_then(|k| k.split('"').next())
        .expect("build info");
    assert_ne!(commit, "unknown", "build.rs found no commit in this checkout");

    // The sent-message gauges (cached between scrapes) follow the receipts
    // the simulator sent for the accepted submission: once upstream has
    // archived them, the message is accepted and delivered to legal.
    let m = wait_metric_for(&env, "pecgate_pec_sent_recipients{mailbox=\"prot\",status=\"delivered\"}", 1.0, Duration::from_secs(60));
    assert_eq!(m["pecgate_pec_sent_awaiting_acceptance{mailbox=\"prot\"}"], 0.0);
    assert_eq!(m["pecgate_pec_sent_awaiting_delivery{mailbox=\"prot\"}"], 0.0);
    assert_eq!(m["pecgate_pec_sent_recipients{mailbox=\"prot\",status=\"pending\"}"], 0.0);
    assert_eq!(m["pecgate_pec_delivery_failures_total{mailbox=\"prot\"}"], 0.0);

    // (2) The audit trail: exactly mario's operations, in order.
    let t = |proto: &str, op: &str, mailbox: &str, folder: &str, uids: &[u64], outcome: &str| {
        (proto.to_string(), op.to_string(), mailbox.to_string(), folder.to_string(), uids.to_vec(), outcome.to_string())
    };
    let expected = vec![
        t("imap", "login", "", "", &[], "ok"),
        // First login: the user's own Drafts and Templates are made.
        t("imap", "create", "~mario", "Drafts", &[], "ok"),
        t("imap", "create", "~mario", "Templates", &[], "ok"),
        t("imap", "select", "prot", "INBOX", &[], "ok"),
        t("imap", "read", "prot", "INBOX", &[1], "ok"),
        t("imap", "store-seen", "prot", "INBOX", &[1], "ok"),
        t("imap", "store", "prot", "INBOX", &[1], "ok"),
        t("imap", "logout", "", "", &[], "ok"),
        t("smtp", "login", "", "", &[], "ok"),
        t("smtp", "send", "prot", "", &[], "ok"),
        t("smtp", "archive-sent", "prot", "Sent", &[1], "ok"),
        t("smtp", "login", "", "", &[], "ok"),
        t("smtp", "send", "legal", "", &[], "refused by pecgate"),
        t("smtp", "login", "", "", &[], "ok"),
        t("smtp", "send", "prot", "", &[], "failed temporarily"),
        t("smtp", "login", "", "", &[], "rejected"),
        t("smtp", "login", "", "", &[], "rejected"),
    ];
    let got = query(&env.gw, &["--user", "mario"]);
    assert_eq!(got, expected, "audit query --user mario");
    // The filters narrow it exactly.
    assert_eq!(query(&env.gw, &["--user", "mario", "--op", "read"]), vec![expected[4].clone()]);
    assert_eq!(
        query(&env.gw, &["--user", "mario", "--mailbox", "legal"]),
        vec![expected[12].clone()],
        "only the refused send names legal"
    );
    assert_eq!(
        query(&env.gw, &["--user", "mario", "--op", "send"]),
        vec![expected[9].clone(), expected[12].clone(), expected[14].clone()]
    );
    // Nobody else acted; anna has no records.
    assert!(query(&env.gw, &["--user", "anna"]).is_empty());
    // The accepted send names the message; the archived copy is the Sent copy.
    let out = env.gw.cli(&["audit", "query", "--format", "jsonl", "--user", "mario", "--op", "archive-sent"]);
    let rec: Value = serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(rec["message_id"], "<audit1@pecgate.test>");
    assert_eq!(rec["event"]["type"], "archived", "{rec}");
    assert_eq!(rec["event"]["folder"], "Sent", "{rec}");
    assert_eq!(env.gw.stop(), Some(0));
}
