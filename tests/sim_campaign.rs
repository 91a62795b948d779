//! The PEC provider simulator's campaign behaviour, end to end: the real
//! `pecgate sim-provider` with its own mailboxes (`[mailstore]`, no
//! Dovecot), a real SMTP client (Python's smtplib) submitting, the
//! receipts read back over the simulator's IMAP server and classified by
//! pecgate, and the simulator's record file checked line by line.
//!
//! * a sender over `sender_limit.per_minute` is refused at `MAIL FROM`
//!   with InfoCert Legalmail's `"Class Of Service" - Too much traffic`
//!   reply, other senders are not, and the record says so;
//! * recipients on a remote domain get the receipts their rule scripts
//!   (delivered, full, unknown, late → warning; ordinary mail → none), the
//!   simulator's own recipients keep today's behaviour, no remote envelope
//!   is stored anywhere;
//! * a `drop` rule closes the connection right after the `250`, and the
//!   message is processed anyway;
//! * a malformed campaign configuration stops the simulator with a message
//!   naming the key.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pecgate::pec::{classify, PecKind};
use serde_json::{json, Value};
use support::sim::{wait_port, Sim};
use support::{free_port, pecgate_bin, python, Imap};

const DOMAIN: &str = "pec.sim.test";
const PROT: &str = "prot@pec.sim.test";
const MASSIVO: &str = "massivo@pec.sim.test";
const LEGAL: &str = "legal@pec.sim.test";

/// After the mailboxes (arrays of tables); `sender_limit = { per_minute =
/// 6 }` is at the top.
const REMOTES: &str = r#"
[[remote]]
domain = "cittadini.sim"
[[remote.rule]]
pattern = "pieno*"
outcome = "full"
delay = "1s"
[[remote.rule]]
pattern = "ignoto*"
outcome = "unknown"
[[remote.rule]]
pattern = "lento*"
outcome = "late"
delay = "1s"
[[remote.rule]]
pattern = "taglia*"
drop = true
[[remote.rule]]
pattern = "*"
outcome = "delivered"

[[remote]]
domain = "posta.example"
pec = false
"#;

struct Env {
    sim: Sim,
    imap_port: u16,
    smtp_port: u16,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

/// The simulator with mailboxes `prot`, `massivo` and `legal` (IMAP login =
/// local part, password `pw`), at most 6 submissions a minute per sender
/// and [`REMOTES`], recording to `record.jsonl`; `extra`: more top-level
/// keys.
fn start(extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (smtp_port, imap_port) = (free_port(), free_port());
    let record = dir.path().join("record.jsonl");
    let mut toml = format!(
        "listen = \"127.0.0.1:{smtp_port}\"\ndomains = [\"{DOMAIN}\"]\npki_dir = \"{pki}\"\nrecord = \"{rec}\"\n\
         sender_limit = {{ per_minute = 6 }}\n{extra}\n\
         [mailstore]\ndata_dir = \"{store}\"\nimap_listen = \"127.0.0.1:{imap_port}\"\n",
        pki = dir.path().join("pki").display(),
        rec = record.display(),
        store = dir.path().join("store").display(),
    );
    for addr in [PROT, MASSIVO, LEGAL] {
        let user = addr.split('@').next().unwrap();
        toml += &format!(
            "[[mailbox]]\naddress = \"{addr}\"\npassword = \"pw\"\nimap_user = \"{user}\"\nimap_password = \"pw\"\n"
        );
    }
    toml += REMOTES;
    let config = dir.path().join("sim.toml");
    std::fs::write(&config, toml).unwrap();
    let mut sim = Sim { child: None, config, log: dir.path().join("sim.log"), port: smtp_port };
    sim.start();
    wait_port(imap_port, &sim.log);
    Env { sim, imap_port, smtp_port, record, _dir: dir }
}

impl Env {
    fn imap(&self, user: &str) -> Imap {
        Imap { host: "127.0.0.1".into(), port: self.imap_port, user: user.into(), password: "pw".into(), tls_ca: None }
    }

    fn record(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        assert!(text.is_empty() || text.ends_with('\n'), "record ends in a partial line: {text}");
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("record line {l:?}: {e}"))).collect()
    }

    /// Every message in `user`'s INBOX, classified, once it holds `n`
    /// (30 s at most); then checks for 1.5 s more that no other arrives.
    fn inbox(&self, user: &str, n: usize) -> Vec<pecgate::pec::Classification> {
        let imap = self.imap(user);
        let deadline = Instant::now() + Duration::from_secs(30);
        while imap.count("INBOX") < n {
            assert!(Instant::now() < deadline, "{user}: {} of {n} messages\n{}", imap.count("INBOX"), self.sim.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let uids = imap.uids("INBOX");
        assert_eq!(uids.len(), n, "{user}: more messages than expected\n{}", self.sim.log());
        uids.iter().map(|&u| classify(&imap.fetch("INBOX", u))).collect()
    }
}

/// A submission: From is the sender (else the provider answers with a
/// non-acceptance), a unique Message-ID.
fn message(from: &str, to: &[&str], msgid: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: Avviso di pagamento {msgid}\r\nMessage-ID: <{msgid}>\r\nDate: Mon, 1 Jun 2026 10:00:00 +0200\r\n\r\nGentile cittadino,\r\nin allegato l'avviso.\r\n",
        to.join(", ")
    )
}

/// Python smtplib: one session, AUTH PLAIN, then for each message
/// MAIL/RCPT/DATA; the answers as JSON: per message `{"mail": [code, text],
/// "data": [code, text]}` (no `data` when MAIL was refused). With
/// `"probe": true`, then whether the server closed the connection without
/// being asked (`"after": "closed"`: end of stream within 2 s, `"open"`: no
/// end), and how QUIT went (`"quit": "ok"`, or the exception's class).
const SMTP_CLIENT: &str = r#"
import json, smtplib, sys
job = json.loads(sys.argv[1])
s = smtplib.SMTP("127.0.0.1", job["port"], timeout=30)
s.ehlo("client.test")
s.login(job["user"], "pw")
out = []
for m in job["messages"]:
    r = {}
    code, text = s.mail(m["from"])
    r["mail"] = [code, text.decode()]
    if code == 250:
        for t in m["to"]:
            s.rcpt(t)
        code, text = s.data(m["data"].encode())
        r["data"] = [code, text.decode()]
    out.append(r)
answer = {"results": out}
if job.get("probe"):
    s.sock.settimeout(2)
    try:
        answer["after"] = "closed" if s.sock.recv(1) == b"" else "data"
    except TimeoutError:
        answer["after"] = "open"
    except ConnectionError as e:
        answer["after"] = type(e).__name__
    s.sock.settimeout(30)
try:
    s.quit()
    answer["quit"] = "ok"
except Exception as e:
    answer["quit"] = type(e).__name__
print(json.dumps(answer))
"#;

fn smtp(port: u16, user: &str, messages: Value) -> Value {
    smtp_job(json!({ "port": port, "user": user, "messages": messages }))
}

fn smtp_job(job: Value) -> Value {
    let out = Command::new(python()).args(["-c", SMTP_CLIENT, &job.to_string()]).output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("smtplib: {e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

/// One raw SMTP exchange up to `MAIL FROM`: the exact reply line to it.
fn raw_mail_from(port: u16, user: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rd = BufReader::new(tcp.try_clone().unwrap());
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            rd.read_line(&mut l).unwrap();
            all += &l;
            if l.len() < 4 || l.as_bytes()[3] == b' ' {
                return all;
            }
        }
    };
    reply();
    let auth = openssl::base64::encode_block(format!("\0{user}\0pw").as_bytes());
    for cmd in ["EHLO client.test".to_string(), format!("AUTH PLAIN {auth}")] {
        tcp.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let r = reply();
        assert!(r.starts_with('2'), "{cmd}: {r}");
    }
    tcp.write_all(format!("MAIL FROM:<{user}>\r\n").as_bytes()).unwrap();
    reply()
}

#[test]
fn seventh_message_in_a_minute_is_too_much_traffic() {
    let env = start("");
    let msgs: Vec<Value> = (1..=7)
        .map(|i| {
            let id = format!("rate-{i}@client.test");
            json!({ "from": MASSIVO, "to": ["cittadino@posta.example"], "data": message(MASSIVO, &["cittadino@posta.example"], &id) })
        })
        .collect();
    let r = smtp(env.smtp_port, MASSIVO, json!(msgs));
    let results = r["results"].as_array().unwrap();
    for (i, m) in results[..6].iter().enumerate() {
        assert_eq!(m["mail"][0], 250, "message {}: {m}", i + 1);
        assert_eq!(m["data"][0], 250, "message {}: {m}", i + 1);
    }
    assert_eq!(results[6]["mail"][0], 550, "{}", results[6]);
    assert_eq!(
        results[6]["mail"][1],
        format!("5.7.1 <{MASSIVO}>: \"Class Of Service\" - Too much traffic from this sender"),
        "{}",
        results[6]
    );
    assert!(results[6].get("data").is_none());
    assert_eq!(r["quit"], "ok", "{r}");
    // The exact bytes on the wire, in a new session: still refused.
    assert_eq!(
        raw_mail_from(env.smtp_port, MASSIVO),
        format!("550 5.7.1 <{MASSIVO}>: \"Class Of Service\" - Too much traffic from this sender\r\n")
    );
    // Counted per sender: another one submits at once.
    let other = smtp(
        env.smtp_port,
        PROT,
        json!([{ "from": PROT, "to": ["x@posta.example"], "data": message(PROT, &["x@posta.example"], "other@client.test") }]),
    );
    assert_eq!(other["results"][0]["data"][0], 250, "{other}");

    // Only the six accepted submissions have an acceptance receipt.
    let receipts = env.inbox("massivo", 6);
    assert!(receipts.iter().all(|c| c.kind == PecKind::Accettazione), "{receipts:#?}");
    let mut ids: Vec<String> = receipts.iter().map(|c| c.original_message_id.clone().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (1..=6).map(|i| format!("<rate-{i}@client.test>")).collect::<Vec<_>>());

    let record = env.record();
    let accepted: Vec<&Value> = record.iter().filter(|l| l.get("id").is_some()).collect();
    let refused: Vec<&Value> = record.iter().filter(|l| l.get("refused").is_some()).collect();
    assert_eq!(accepted.len(), 7, "six by massivo, one by prot: {record:#?}");
    assert_eq!(accepted.iter().filter(|l| l["sender"] == MASSIVO).count(), 6);
    assert_eq!(refused.len(), 2, "{record:#?}");
    for l in refused {
        assert_eq!(l["refused"], "rate");
        assert_eq!(l["sender"], MASSIVO);
        assert!(chrono::DateTime::parse_from_rfc3339(l["at"].as_str().unwrap()).is_ok(), "{l}");
    }
    for l in &accepted {
        assert_eq!(l["outcomes"].as_object().unwrap().values().collect::<Vec<_>>(), vec!["not-pec"], "{l}");
        assert_eq!(l["dropped"], false);
    }
    let log = env.sim.log();
    assert!(log.contains("Too much traffic") && log.contains("refused_rate=2"), "{log}");
}

#[test]
fn remote_recipients_get_scripted_receipts_and_drop_closes_after_250() {
    let env = start("");
    let to = [
        "pieno.1@cittadini.sim",
        "ignoto.2@cittadini.sim",
        "mario.rossi@cittadini.sim",
        "lento.4@cittadini.sim",
        "amico@posta.example",
        LEGAL,
    ];
    let r = smtp_job(json!({
        "port": env.smtp_port, "user": PROT, "probe": true,
        "messages": [{ "from": PROT, "to": to, "data": message(PROT, &to, "campagna-1@client.test") }],
    }));
    assert_eq!(r["results"][0]["data"][0], 250, "{r}");
    // Without a drop rule the session stays open until QUIT.
    assert_eq!((&r["after"], &r["quit"]), (&json!("open"), &json!("ok")), "{r}");
    // The drop rule: 250, then the connection is gone before QUIT.
    let dropped_to = ["taglia.5@cittadini.sim"];
    let d = smtp_job(json!({
        "port": env.smtp_port, "user": PROT, "probe": true,
        "messages": [{ "from": PROT, "to": dropped_to, "data": message(PROT, &dropped_to, "campagna-2@client.test") }],
    }));
    assert_eq!(d["results"][0]["data"][0], 250, "{d}");
    assert!(d["results"][0]["data"][1].as_str().unwrap().contains("queued as"), "{d}");
    assert_eq!(d["after"], "closed", "the connection should close right after 250: {d}");
    assert_ne!(d["quit"], "ok", "{d}");

    // The record: one line per accepted message, written before the 250.
    let record = env.record();
    assert_eq!(record.len(), 2, "{record:#?}");
    let (first, second) = (&record[0], &record[1]);
    assert_eq!(first["message_id"], "<campagna-1@client.test>");
    assert_eq!(first["sender"], PROT);
    assert_eq!(first["recipients"], json!(to));
    let outcomes: BTreeMap<String, String> = serde_json::from_value(first["outcomes"].clone()).unwrap();
    let expected: BTreeMap<String, String> = [
        ("pieno.1@cittadini.sim", "full"),
        ("ignoto.2@cittadini.sim", "unknown"),
        ("mario.rossi@cittadini.sim", "delivered"),
        ("lento.4@cittadini.sim", "late"),
        ("amico@posta.example", "not-pec"),
        (LEGAL, "own-mailbox"),
    ]
    .into_iter()
    .map(|(a, o)| (a.to_string(), o.to_string()))
    .collect();
    assert_eq!(outcomes, expected);
    assert_eq!(first["dropped"], false);
    assert_eq!(second["message_id"], "<campagna-2@client.test>");
    assert_eq!(second["outcomes"], json!({ "taglia.5@cittadini.sim": "delivered" }));
    assert_eq!(second["dropped"], true);
    assert!(chrono::DateTime::parse_from_rfc3339(first["at"].as_str().unwrap()).is_ok());

    // The sender's receipts: per submission (identificativo = the record's
    // id), exactly one of each expected (kind, recipient).
    let receipts = env.inbox("prot", 8);
    let mut got: Vec<(String, &'static str, String)> = receipts
        .iter()
        .map(|c| {
            assert!(c.disagreements.is_empty(), "{c:#?}");
            (c.identificativo.clone().unwrap(), c.kind.as_str(), c.consegna().unwrap_or("").to_string())
        })
        .collect();
    got.sort();
    let (id1, id2) = (first["id"].as_str().unwrap().to_string(), second["id"].as_str().unwrap().to_string());
    let mut want = vec![
        (id1.clone(), "accettazione", String::new()),
        (id1.clone(), "errore-consegna", "pieno.1@cittadini.sim".to_string()),
        (id1.clone(), "errore-consegna", "ignoto.2@cittadini.sim".to_string()),
        (id1.clone(), "avvenuta-consegna", "mario.rossi@cittadini.sim".to_string()),
        (id1.clone(), "preavviso-errore-consegna", "lento.4@cittadini.sim".to_string()),
        (id1.clone(), "avvenuta-consegna", LEGAL.to_string()),
        (id2.clone(), "accettazione", String::new()),
        (id2.clone(), "avvenuta-consegna", "taglia.5@cittadini.sim".to_string()),
    ];
    want.sort();
    assert_eq!(got, want);
    // The errors say why, as the rules script.
    let reason = |who: &str| {
        receipts
            .iter()
            .find(|c| c.consegna() == Some(who))
            .and_then(|c| c.daticert.as_ref())
            .and_then(|d| d.errore_esteso.clone())
            .unwrap_or_default()
    };
    assert!(reason("pieno.1@cittadini.sim").contains("5.2.2 - Casella piena"));
    assert!(reason("ignoto.2@cittadini.sim").contains("5.1.1 - Utente non riconosciuto"));

    // Only the simulator's own recipient has a mailbox: one envelope there;
    // the remote recipients' envelopes are stored nowhere.
    let legal = env.inbox("legal", 1);
    assert_eq!(legal[0].kind, PecKind::PostaCertificata);
    assert_eq!(env.inbox("massivo", 0).len(), 0);
    let log = env.sim.log();
    assert!(log.contains("dropped=1") && log.contains("late=1") && log.contains("full=1"), "{log}");
}

#[test]
fn malformed_campaign_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "listen = \"127.0.0.1:{}\"\ndomains = [\"{DOMAIN}\"]\npki_dir = \"{}\"\n",
        free_port(),
        dir.path().join("pki").display()
    );
    let cases = [
        (
            "[[remote]]\ndomain = \"cittadini.sim\"\n[[remote.rule]]\npattern = \"*\"\noutcome = \"bounce\"\n",
            vec!["outcome", "bounce", "rule[0]"],
        ),
        ("[[remote]]\ndomain = \"cittadini.sim\"\n[[remote.rule]]\npattern = \"pie no\"\n", vec!["pattern", "rule[0]"]),
        ("sender_limit = { per_minute = 6, per_second = 1 }\n", vec!["per_second"]),
        ("drop_after_accept = 2\n", vec!["drop_after_accept"]),
    ];
    for (text, wanted) in cases {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, format!("{base}{text}")).unwrap();
        let out = Command::new(pecgate_bin()).args(["sim-provider", "--config"]).arg(&config).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: started anyway");
        for w in wanted {
            assert!(err.contains(w), "{text}: the error should name {w:?}: {err}");
        }
        assert!(err.contains("bad.toml"), "{err}");
    }
}

#[test]
fn drop_after_accept_closes_after_250_at_random() {
    // 1.0: every submission, whatever its recipients.
    let env = start("drop_after_accept = 1.0");
    let to = ["mario.rossi@cittadini.sim"];
    let d = smtp_job(json!({
        "port": env.smtp_port, "user": PROT, "probe": true,
        "messages": [{ "from": PROT, "to": to, "data": message(PROT, &to, "caso@client.test") }],
    }));
    assert_eq!(d["results"][0]["data"][0], 250, "{d}");
    assert_eq!(d["after"], "closed", "{d}");
    let record = env.record();
    assert_eq!(record.len(), 1, "{record:#?}");
    assert_eq!(record[0]["dropped"], true);
    let kinds: Vec<&str> = env.inbox("prot", 2).iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["accettazione", "avvenuta-consegna"]);
}
