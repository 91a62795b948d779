//! The simulator's messages must be what pecgate itself recognises: each
//! kind classified as built, without disagreements, signature valid against
//! the simulator's CA, and the envelope's `postacert.eml` byte-identical to
//! the submission.

use super::build::{build, Notice, Provider, Submission};
use super::pki::Pki;
use crate::pec::{classify, unwrap_envelope, verify, PecKind, ReceiptForm, TrustStore};

fn submission() -> Submission {
    Submission {
        sender: "protocollo@pec.sim.test".into(),
        recipients: vec![("legale@pec.sim.test".into(), true), ("info@example.com".into(), false)],
        original: b"Message-ID: <abc.1@client.test>\r\nFrom: Protocollo <protocollo@pec.sim.test>\r\nTo: legale@pec.sim.test\r\nSubject: Prova \xc3\xa8 <&>\r\n\r\nCorpo\r\n.riga\r\n".to_vec(),
        subject: "Prova è <&>".into(),
        msgid: "<abc.1@client.test>".into(),
        identificativo: "opec-sim.1.2.3@pec.sim.test".into(),
        at: chrono::Utc::now(),
    }
}

#[test]
fn every_notice_classifies_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_generate(dir.path(), "posta-certificata@pec.sim.test").unwrap();
    // Loading again gives the same CA (restart keeps trust).
    let again = Pki::load_or_generate(dir.path(), "posta-certificata@pec.sim.test").unwrap();
    assert_eq!(pki.ca_pem().unwrap(), again.ca_pem().unwrap());
    let trust = TrustStore::from_pem(&std::fs::read(dir.path().join("ca.pem")).unwrap()).unwrap();
    let p = Provider { address: "posta-certificata@pec.sim.test".into(), name: "Sim".into() };
    let s = submission();
    let cases = [
        (Notice::Accettazione, PecKind::Accettazione),
        (Notice::NonAccettazione { reason: "mittente errato".into() }, PecKind::NonAccettazione),
        (Notice::Envelope, PecKind::PostaCertificata),
        (
            Notice::Consegna { recipient: "legale@pec.sim.test".into() },
            PecKind::AvvenutaConsegna { form: ReceiptForm::Completa },
        ),
        (
            Notice::ErroreConsegna {
                recipient: "nobody@pec.sim.test".into(),
                reason: "5.1.1 - Utente non riconosciuto".into(),
            },
            PecKind::ErroreConsegna,
        ),
        (
            Notice::PreavvisoErroreConsegna {
                recipient: "lento@cittadini.sim".into(),
                reason: "Nessuna ricevuta dal gestore del destinatario entro 12 ore".into(),
            },
            PecKind::PreavvisoErroreConsegna,
        ),
    ];
    for (notice, kind) in cases {
        let raw = build(&pki, &p, &s, &notice, chrono::Utc::now()).unwrap();
        let c = classify(&raw);
        assert_eq!(c.kind, kind, "{notice:?}: {c:#?}");
        assert!(c.disagreements.is_empty(), "{notice:?}: {:?}", c.disagreements);
        assert!(c.daticert_error.is_none(), "{notice:?}: {:?}", c.daticert_error);
        assert_eq!(c.original_message_id.as_deref(), Some("<abc.1@client.test>"));
        assert_eq!(c.identificativo.as_deref(), Some("opec-sim.1.2.3@pec.sim.test"));
        assert!(verify(&raw, &trust).is_valid(), "{notice:?}: {:?}", verify(&raw, &trust));
        if matches!(notice, Notice::Envelope | Notice::Consegna { .. }) {
            assert_eq!(unwrap_envelope(&raw).unwrap().original.as_deref(), Some(&s.original[..]));
        }
        if let Notice::Consegna { recipient }
        | Notice::ErroreConsegna { recipient, .. }
        | Notice::PreavvisoErroreConsegna { recipient, .. } = &notice
        {
            assert_eq!(c.consegna(), Some(recipient.as_str()));
        }
    }
}

// ---------------------------------------------------------------------------
// campaign settings: patterns, validation, sliding windows

use super::campaign::{glob_match, Dest, Outcome, RateLimiter, Recorder, SenderLimit};
use super::{SimConfig, SimError, SimSettings};
use std::time::{Duration, Instant};

#[test]
fn glob_patterns() {
    for (p, t) in [
        ("*", ""),
        ("*", "mario.rossi"),
        ("pieno*", "pieno"),
        ("pieno*", "PIENO.42"),
        ("?ario", "mario"),
        ("*.rossi", "mario.rossi"),
        ("a*b*c", "axxbyyc"),
        ("a*b*c", "abcbc"),
        ("**x", "x"),
        ("mario.rossi@cittadini.sim", "Mario.Rossi@Cittadini.Sim"),
    ] {
        assert!(glob_match(p, t), "{p:?} should match {t:?}");
    }
    for (p, t) in
        [("pieno*", "xpieno"), ("?ario", "ario"), ("a*b*c", "abx"), ("mario", "mario2"), ("", "x"), ("a?", "a")]
    {
        assert!(!glob_match(p, t), "{p:?} should not match {t:?}");
    }
}

/// Write `text` as a simulator configuration (with the keys it always
/// needs before it) and load it.
fn load(text: &str) -> Result<SimSettings, SimError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.toml");
    let base = "listen = \"127.0.0.1:0\"\ndomains = [\"pec.sim.test\"]\npki_dir = \"/nonexistent\"\n";
    std::fs::write(&path, format!("{base}{text}")).unwrap();
    SimConfig::load(&path)
}

fn load_err(text: &str) -> String {
    match load(text) {
        Ok(s) => panic!("accepted: {text}\n{s:?}"),
        Err(e) => e.to_string(),
    }
}

const CAMPAIGN: &str = r#"
sender_limit = { per_minute = 6, per_hour = 100 }
drop_after_accept = 0.25
record = "/tmp/x.jsonl"

[[remote]]
domain = "cittadini.sim"
[[remote.rule]]
pattern = "pieno*"
outcome = "full"
delay = "2s"
[[remote.rule]]
pattern = "sconosciuto.*"
outcome = "unknown"
[[remote.rule]]
pattern = "lento@cittadini.sim"
outcome = "late"
delay = "1m"
[[remote.rule]]
pattern = "taglia*"
drop = true
[[remote.rule]]
pattern = "*.consegna"
outcome = "delivered"

[[remote]]
domain = "gmail.example"
pec = false
[[remote.rule]]
pattern = "taglia"
drop = true
"#;

#[test]
fn campaign_config_loads_and_routes() {
    let s = load(CAMPAIGN).unwrap();
    assert_eq!(s.script.sender_limit, SenderLimit { per_minute: 6, per_hour: 100, per_day: 0 });
    assert_eq!(s.script.drop_after_accept, 0.25);
    assert_eq!(s.script.record.as_deref(), Some(std::path::Path::new("/tmp/x.jsonl")));
    let r = |a: &str| s.script.route(a);
    let remote = |outcome, delay| Dest::Remote { outcome, delay };
    assert_eq!(r("pieno.1@cittadini.sim"), Some((remote(Outcome::Full, Some(Duration::from_secs(2))), false)));
    assert_eq!(r("Sconosciuto.x@CITTADINI.sim"), Some((remote(Outcome::Unknown, None), false)));
    assert_eq!(r("lento@cittadini.sim"), Some((remote(Outcome::Late, Some(Duration::from_secs(60))), false)));
    // A rule without outcome delivers; drop goes with it.
    assert_eq!(r("taglia.3@cittadini.sim"), Some((remote(Outcome::Delivered, None), true)));
    // First match wins: "pieno.consegna" is full, not delivered.
    assert_eq!(r("pieno.consegna@cittadini.sim").unwrap().0, remote(Outcome::Full, Some(Duration::from_secs(2))));
    // No rule matches: delivered after receipt_delay.
    assert_eq!(r("mario@cittadini.sim"), Some((remote(Outcome::Delivered, None), false)));
    // Ordinary mail domain: never a delivery receipt; a rule may drop.
    assert_eq!(r("taglia@gmail.example"), Some((Dest::NotPec, true)));
    assert_eq!(r("x@gmail.example"), Some((Dest::NotPec, false)));
    // Not a remote domain at all.
    assert_eq!(r("x@pec.sim.test"), None);
    assert_eq!(r("x@elsewhere.example"), None);
}

#[test]
fn no_campaign_keys_keep_todays_behaviour() {
    let s = load("").unwrap();
    assert_eq!(s.script.sender_limit, SenderLimit::default());
    assert_eq!(s.script.drop_after_accept, 0.0);
    assert!(s.script.record.is_none());
    assert_eq!(s.script.route("a@cittadini.sim"), None);
    // Unknown keys are still refused, at the top level and inside.
    assert!(load_err("bogus = 1\n").contains("bogus"), "{}", load_err("bogus = 1\n"));
    let e = load_err("sender_limit = { per_minute = 6, per_week = 1 }\n");
    assert!(e.contains("per_week"), "{e}");
    let e = load_err("[[remote]]\ndomain = \"c.sim\"\n[[remote.rule]]\npattern = \"*\"\nwhen = \"now\"\n");
    assert!(e.contains("when"), "{e}");
}

#[test]
fn bad_campaign_config_names_the_key() {
    let rule = |body: &str| format!("[[remote]]\ndomain = \"cittadini.sim\"\n[[remote.rule]]\n{body}\n");
    let cases = [
        (
            rule("pattern = \"*\"\noutcome = \"bounce\""),
            &["remote[0]", "rule[0]", "outcome", "\"bounce\"", "delivered, full, unknown, late"][..],
        ),
        (rule("pattern = \"*\"\noutcome = \"drop\""), &["outcome", "drop = true"]),
        (rule("pattern = \"\""), &["rule[0]", "pattern", "empty"]),
        (rule("pattern = \"pie no\""), &["pattern", "not allowed"]),
        (rule("pattern = \"[a-z]*\""), &["pattern", "'['"]),
        (rule("pattern = \"a@b@cittadini.sim\""), &["pattern", "more than one"]),
        (rule("pattern = \"*@altro.sim\""), &["pattern", "never match", "cittadini.sim"]),
        (rule("pattern = \"*\"\ndelay = \"soon\""), &["delay"]),
        (
            "[[remote]]\ndomain = \"posta.it\"\npec = false\n[[remote.rule]]\npattern = \"*\"\noutcome = \"full\"\n"
                .into(),
            &["remote[0]", "pec = false", "only set drop"],
        ),
        ("[[remote]]\ndomain = \"pec.sim.test\"\n".into(), &["remote[0]", "domain", "own domains"]),
        ("[[remote]]\ndomain = \"a.sim\"\n[[remote]]\ndomain = \"A.sim\"\n".into(), &["remote[1]", "twice"]),
        ("drop_after_accept = 1.5\n".into(), &["drop_after_accept", "between 0 and 1"]),
        ("sender_limit = { per_minute = -1 }\n".into(), &["per_minute"]),
    ];
    for (text, wanted) in cases {
        let e = load_err(&text);
        for w in wanted {
            assert!(e.contains(w), "error for {text:?} should say {w:?}: {e}");
        }
    }
}

#[test]
fn sliding_windows_per_sender() {
    let rl = RateLimiter::new(&SenderLimit { per_minute: 2, per_hour: 3, per_day: 0 });
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert_eq!(rl.over("a@x", at(0)), None);
    rl.note("a@x", at(0));
    rl.note("A@X", at(1)); // one sender, whatever the case
    assert_eq!(rl.over("a@x", at(2)), Some("minute"));
    assert_eq!(rl.over("b@x", at(2)), None, "another sender has its own count");
    // The first leaves the minute window at 60 s.
    assert_eq!(rl.over("a@x", at(59)), Some("minute"));
    assert_eq!(rl.over("a@x", at(60)), None);
    rl.note("a@x", at(60));
    // Three in the hour now, although only two in the last minute... then one.
    assert_eq!(rl.over("a@x", at(121)), Some("hour"));
    assert_eq!(rl.over("a@x", at(3600)), None);
    // Unlimited: nothing kept, nothing refused.
    let free = RateLimiter::new(&SenderLimit::default());
    (0..1000).for_each(|_| free.note("a@x", t0));
    assert_eq!(free.over("a@x", t0), None);
}

#[test]
fn record_lines_stay_whole_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let rec = std::sync::Arc::new(Recorder::open(&path).unwrap());
    let long = "x".repeat(10_000);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (rec, long) = (rec.clone(), long.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    rec.write(&serde_json::json!({ "t": t, "i": i, "pad": long })).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 400);
    // Reopening appends.
    Recorder::open(&path).unwrap().write(&serde_json::json!({ "again": true })).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 401);
}
