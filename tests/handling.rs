//! Handling PEC as a team, end to end: certified messages arrive at a real
//! Dovecot (the provider), the gateway archives them and routes them by
//! its rules; people take and complete them from imaplib by dragging into
//! `Mine` / `Done` or by keywords (tests/imap/handling.py); the register,
//! the audit, the metrics and the views agree, and survive a restart and a
//! rebuilt index; deadlines pass on a moved clock.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use support::gateway::{mailbox_toml, tail, Gateway};
use support::{free_port, http_get, sample, Dovecot, DovecotOptions, UserSpec};

const PROT: &str = "protocollo@pec.comune.example.it";
const ALTRO: &str = "altro@pec.comune.example.it";
const PASS: &str = "provider-secret-8";
const PW: &str = "pw-Secret-1";
const WAIT: Duration = Duration::from_secs(60);

/// A certified envelope to protocollo.
fn envelope(pki: &pecgate::sim::pki::Pki, sender: &str, subject: &str, n: u32) -> Vec<u8> {
    support::certified_envelope(pki, sender, PROT, subject, n)
}

fn user(name: &str, hash: &str, grants: &str) -> String {
    format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ngrants = {{ {grants} }}\n\n")
}

struct Setup {
    _dv: Dovecot,
    gw: Gateway,
    imap_port: u16,
    http_port: u16,
    ca: PathBuf,
}

fn setup() -> Setup {
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new(PROT, PASS)).user(UserSpec::new(ALTRO, PASS)));
    let pki = pecgate::sim::pki::Pki::generate("posta-certificata@pec.mittente.example.it").expect("pki");
    dv.imap(PROT).append(
        "INBOX",
        [
            envelope(&pki, "vigili@pec.polizia.example.it", "Verbale di accertamento n. 123/2026", 1),
            envelope(&pki, "cittadino@pec.example.org", "Richiesta certificato di residenza", 2),
            envelope(&pki, "vigili@pec.polizia.example.it", "Sanzione amministrativa n. 77/2026", 3),
        ],
    );
    let (imap_port, http_port) = (free_port(), free_port());
    let tmp = tempfile::tempdir().expect("tmp").keep();
    let cert = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").expect("cert");
    let (ca, chain, key) = (tmp.join("ca.pem"), tmp.join("chain.pem"), tmp.join("key.pem"));
    std::fs::write(&ca, &cert.ca).unwrap();
    std::fs::write(&chain, &cert.chain).unwrap();
    std::fs::write(&key, &cert.key).unwrap();
    let hash = pecgate::auth::hash_password(PW).expect("hash");
    let body = format!(
        "{}{}[imap]\nlisten = [\"127.0.0.1:{imap_port}\"]\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         {}{}{}{}\
         [[office]]\nname = \"tributi\"\nmembers = [\"mario\", \"anna\", \"lucia\"]\n\n\
         [[office]]\nname = \"anagrafe\"\nmembers = []\n\n\
         [[rule]]\nmailbox = \"protocollo\"\nname = \"multe\"\n\
         match = {{ from_domain = \"pec.polizia.example.it\", subject = \"(?i)verbale|sanzione\" }}\n\
         assign = \"tributi\"\nkeywords = [\"$Multe\"]\ndue = \"30d\"\n",
        mailbox_toml(
            "protocollo",
            PROT,
            PASS,
            dv.port,
            "offload = { mode = \"never\" }\ndefault_office = \"anagrafe\"\ndefault_due = \"60d\"",
        ),
        mailbox_toml("altro", ALTRO, PASS, dv.port, ""),
        chain.display(),
        key.display(),
        user("mario", &hash, "protocollo = [\"read\", \"triage\"]"),
        user("anna", &hash, "protocollo = [\"read\", \"triage\"]"),
        user("lucia", &hash, "protocollo = [\"read\"]"),
        user("ugo", &hash, "altro = [\"read\", \"triage\"]"),
    );
    let mut gw = Gateway::new(&body);
    gw.start();
    gw.wait_mailbox("protocollo", WAIT, "3 messages archived", |s| s["archived_total"].as_u64() == Some(3));
    Setup { _dv: dv, gw, imap_port, http_port, ca }
}

fn python(s: &Setup, phase: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/imap/handling.py");
    let out = Command::new("python3")
        .arg(script)
        .args([s.imap_port.to_string(), s.ca.display().to_string(), s.http_port.to_string(), phase.to_string()])
        .output()
        .expect("python3");
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && o.contains("all checks passed"),
        "handling.py {phase} failed\nstdout:\n{o}\nstderr:\n{e}\nlog:\n{}",
        tail(&s.gw.log(), 60)
    );
}

fn metrics(port: u16) -> String {
    http_get(port, "/metrics", None)
}

fn cli_ok(gw: &Gateway, args: &[&str]) -> String {
    let out = gw.cli(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "pecgate {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn report(gw: &Gateway, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["handling", "report", "--format", "jsonl"];
    args.extend_from_slice(extra);
    cli_ok(gw, &args).lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect()
}

fn row<'a>(rows: &'a [Value], word: &str) -> &'a Value {
    rows.iter()
        .filter(|r| r["type"] == "message")
        .map(|r| &r["row"])
        .find(|r| r["subject"].as_str().is_some_and(|s| s.contains(word)))
        .unwrap_or_else(|| panic!("no register row for {word}: {rows:?}"))
}

#[test]
fn team_handling_end_to_end() {
    let mut s = setup();
    python(&s, "folders");
    let m = metrics(s.http_port);
    assert_eq!(
        sample(&m, "pecgate_handling_overdue_messages", &["mailbox=\"protocollo\"", "office=\"tributi\""]),
        Some(0.0),
        "nothing is overdue yet"
    );
    assert_eq!(
        sample(&m, "pecgate_handling_time_to_done_seconds_count", &["mailbox=\"protocollo\"", "office=\"tributi\""]),
        Some(1.0)
    );
    python(&s, "keywords");

    // The register: who took and completed what, and when.
    let rows = report(&s.gw, &[]);
    let fine = row(&rows, "Verbale");
    assert_eq!(fine["rule"], "multe");
    assert_eq!(fine["office"], "tributi");
    assert_eq!(fine["taken_by"], "mario");
    assert_eq!(fine["done_by"], "mario");
    assert_eq!(fine["deadline"], "met");
    assert_eq!(fine["sender"], "vigili@pec.polizia.example.it");
    assert!(fine["taken_at"].is_string() && fine["done_at"].is_string());
    let req = row(&rows, "certificato");
    assert_eq!((req["office"].as_str(), req["rule"].as_str()), (Some("anagrafe"), None));
    assert_eq!((req["taken_by"].as_str(), req["done_by"].as_str()), (Some("anna"), Some("anna")));
    let open = row(&rows, "Sanzione");
    assert_eq!((open["state"].as_str(), open["deadline"].as_str()), (Some("assigned"), Some("open")));
    let tributi: Vec<&Value> = rows.iter().filter(|r| r["type"] == "office" && r["summary"]["office"] == "tributi").collect();
    assert_eq!(tributi.len(), 1, "{rows:?}");
    assert_eq!((tributi[0]["summary"]["messages"].as_u64(), tributi[0]["summary"]["done"].as_u64()), (Some(2), Some(1)));
    // Filters and the other formats.
    let only = report(&s.gw, &["--office", "anagrafe"]);
    assert_eq!(only.iter().filter(|r| r["type"] == "message").count(), 1);
    let csv = cli_ok(&s.gw, &["handling", "report", "--format", "csv"]);
    assert!(csv.starts_with("mailbox,received,sender,subject,state") && csv.lines().count() == 4, "{csv}");
    let html = cli_ok(&s.gw, &["handling", "report", "--format", "html"]);
    assert!(html.contains("<td>mario</td>") && html.contains("Per office"), "{html}");

    // The same register on the JSON API, for the mailbox's triagers only.
    let api = http_get(s.http_port, "/api/handling?mailbox=protocollo&office=tributi", Some(("anna", PW)));
    assert!(api.starts_with("HTTP/1.1 200"), "{api}");
    let body: Value = serde_json::from_str(api.split("\r\n\r\n").nth(1).unwrap_or("")).expect("API JSON");
    let msgs = body["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2, "{body}");
    assert!(msgs.iter().any(|m| m["taken_by"] == "mario" && m["deadline"] == "met"), "{body}");
    assert_eq!(body["offices"][0]["done"], 1, "{body}");
    let denied = http_get(s.http_port, "/api/handling?mailbox=protocollo", Some(("lucia", PW)));
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");

    // The audit holds every step, the refused ones too.
    let audit = |u: &str| -> Vec<Value> {
        cli_ok(&s.gw, &["audit", "query", "--user", u, "--format", "jsonl"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let ops = |recs: &[Value]| -> Vec<String> {
        recs.iter()
            .filter(|r| ["take", "done", "reopen", "assign"].contains(&r["op"].as_str().unwrap_or("")))
            .map(|r| format!("{} {}", r["op"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(
        ops(&audit("mario")),
        ["take ok", "done ok", "take refused: already taken in charge by anna", "assign ok", "assign ok"]
    );
    let anna = ops(&audit("anna"));
    assert_eq!(
        anna,
        [
            "take refused: already taken in charge by mario",
            "take refused: already taken in charge by mario",
            "done refused: already taken in charge by mario",
            "take ok",
            "reopen ok",
            "take ok",
            "done ok"
        ]
    );
    let lucia = ops(&audit("lucia"));
    assert!(lucia.is_empty(), "read-only lucia changed something: {lucia:?}");

    // Restart: the same views and states.
    s.gw.stop();
    let before = {
        let st = s.gw.open_store();
        let v = st.handling_all("protocollo").unwrap();
        st.close().unwrap();
        v
    };
    assert_eq!(before.len(), 3);
    s.gw.start();
    s.gw.wait_pass("protocollo", WAIT);
    python(&s, "verify");
    s.gw.stop();
    // A rebuilt index: identical handling, identical views.
    let out = s.gw.cli(&["store", "rebuild-index"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = {
        let st = s.gw.open_store();
        let v = st.handling_all("protocollo").unwrap();
        st.close().unwrap();
        v
    };
    assert_eq!(before, after, "rebuild-index changed handling states");

    // Deadlines: 31 days later the untouched fine (due 30 days) is overdue,
    // the completed ones are not.
    s.gw.env.push(("TEST_PECGATE_CLOCK_OFFSET".into(), (31 * 86400).to_string()));
    s.gw.start();
    s.gw.wait_pass("protocollo", WAIT);
    python(&s, "verify");
    let m = metrics(s.http_port);
    assert_eq!(
        sample(&m, "pecgate_handling_overdue_messages", &["mailbox=\"protocollo\"", "office=\"tributi\""]),
        Some(1.0),
        "{}",
        m.lines().filter(|l| l.contains("handling")).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(sample(&m, "pecgate_handling_overdue_messages", &["office=\"anagrafe\""]), Some(0.0));
    assert!(
        sample(&m, "pecgate_handling_oldest_waiting_seconds", &["office=\"tributi\""]).unwrap_or(0.0) > 30.0 * 86400.0
    );
    let later = (Utc::now() + chrono::Duration::days(31)).to_rfc3339();
    let rows = report(&s.gw, &["--now", &later]);
    assert_eq!(row(&rows, "Sanzione")["deadline"], "overdue");
    assert_eq!(row(&rows, "Verbale")["deadline"], "met");
    s.gw.stop();
}

#[test]
fn rules_test_and_apply_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pecgate::sim::pki::Pki::generate("posta-certificata@pec.mittente.example.it").expect("pki");
    let eml = dir.path().join("multa.eml");
    std::fs::write(&eml, envelope(&pki, "vigili@pec.polizia.example.it", "Verbale n. 9", 9)).unwrap();
    let data = dir.path().join("data");
    let hash = pecgate::auth::hash_password(PW).expect("hash");
    let base = format!(
        "[store]\ndata_dir = \"{}\"\n\n{}{}[[office]]\nname = \"tributi\"\nmembers = [\"mario\"]\n\n",
        data.display(),
        mailbox_toml("protocollo", PROT, PASS, 1, ""),
        user("mario", &hash, "protocollo = [\"read\", \"triage\"]"),
    );
    let rule = "[[rule]]\nmailbox = \"protocollo\"\nname = \"multe\"\nmatch = { from_domain = \"pec.polizia.example.it\", subject = \"(?i)verbale\" }\nassign = \"tributi\"\n";
    let cfg = dir.path().join("pecgate.toml");
    std::fs::write(&cfg, format!("{base}{rule}")).unwrap();
    // (success, stdout; stderr too when it failed)
    let run = |args: &[&str]| {
        let out = Command::new(support::pecgate_bin()).args(args).output().expect("pecgate");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            text += &String::from_utf8_lossy(&out.stderr);
        }
        (out.status.success(), text)
    };
    let c = cfg.display().to_string();
    let (ok, out) = run(&["rules", "test", "--config", &c, &eml.display().to_string()]);
    assert!(ok, "{out}");
    assert!(out.contains("rule \"multe\": MATCH"), "{out}");
    assert!(out.contains("✓ from_domain") && out.contains("✓ subject"), "{out}");
    assert!(out.contains("assign to office tributi"), "{out}");

    // Archived before the rule existed: `rules apply` tracks and assigns it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (st, _) = pecgate::store::Store::open(&data, Default::default()).unwrap();
        let raw = std::fs::read(&eml).unwrap();
        let blob = st.put_blob(raw.clone()).await.unwrap();
        let pec = Some(pecgate::upstream::filing::file(&raw, false, Utc::now(), None).meta.into());
        st.commit(
            pecgate::store::Audit::system("test", "archive"),
            pecgate::store::Change::Archive {
                mailbox: "protocollo".into(),
                folder: "INBOX".into(),
                blob,
                internal_date: Utc::now(),
                flags: vec![],
                provider: None,
                pec,
                handling: None,
            },
        )
        .await
        .unwrap();
        st.close().unwrap();
    });
    let (ok, out) = run(&["rules", "apply", "--config", &c, "--mailbox", "protocollo", "--dry-run", "--json"]);
    assert!(ok, "{out}");
    let rep: Value = serde_json::from_str(&out).expect("json");
    assert_eq!((rep["examined"].as_u64(), rep["opened"].as_u64()), (Some(1), Some(1)), "{out}");
    let (ok, out) = run(&["handling", "report", "--config", &c, "--format", "jsonl"]);
    assert!(ok && out.trim().is_empty(), "a dry run wrote something: {out}");
    let (ok, out) = run(&["rules", "apply", "--config", &c, "--mailbox", "protocollo"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["handling", "report", "--config", &c, "--format", "jsonl"]);
    assert!(ok, "{out}");
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let r = row(&rows, "Verbale");
    assert_eq!((r["office"].as_str(), r["rule"].as_str(), r["state"].as_str()), (Some("tributi"), Some("multe"), Some("assigned")));
    // A second run changes nothing.
    let (ok, out) = run(&["rules", "apply", "--config", &c, "--mailbox", "protocollo", "--json"]);
    assert!(ok, "{out}");
    let rep: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((rep["opened"].as_u64(), rep["assigned"].as_u64(), rep["unchanged"].as_u64()), (Some(0), Some(0), Some(1)));

    // Rule mistakes: one line each, naming the key.
    std::fs::write(
        &cfg,
        format!(
            "{base}[[rule]]\nmailbox = \"protocollo\"\nname = \"x\"\nmatch = {{ subject = \"(unclosed\", daticert = {{ colore = \"rosso\" }} }}\nassign = \"ufficio-fantasma\"\n"
        ),
    )
    .unwrap();
    let (ok, out) = run(&["check-config", "--config", &c]);
    assert!(!ok, "{out}");
    for key in ["rule[0].match.subject: invalid regex", "rule[0].match.daticert.colore: unknown daticert field", "rule[0].assign: no office or user \"ufficio-fantasma\""] {
        assert_eq!(out.lines().filter(|l| l.contains(key)).count(), 1, "{key} in:\n{out}");
    }
    std::fs::write(&cfg, format!("{base}[[rule]]\nmailbox = \"protocollo\"\nname = \"x\"\nmatch = {{ sender = \"x\" }}\nassign = \"tributi\"\n")).unwrap();
    let (ok, out) = run(&["check-config", "--config", &c]);
    assert!(!ok && out.contains("sender") && out.contains("rule"), "{out}");
}
