//! The submission state machine without sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::*;

fn user(rights: &[(&str, &[Right])]) -> Arc<User> {
    Arc::new(User {
        name: "mario".into(),
        default_mailbox: None,
        grants: rights.iter().map(|(m, r)| (m.to_string(), r.iter().copied().collect::<BTreeSet<_>>())).collect::<BTreeMap<_, _>>(),
        roles: BTreeSet::new(),
        dn: None,
    })
}

fn session(tls: bool, plaintext_ok: bool) -> Session {
    Session::new(
        Limits {
            hostname: "gw.test".into(),
            max_message_size: 1000,
            max_recipients: 2,
            starttls: true,
            plaintext_ok,
            mailboxes: Arc::new(vec![("prot".into(), "prot@pec.test".into()), ("ro".into(), "ro@pec.test".into())]),
            sending: Arc::new(Default::default()),
        },
        tls,
    )
}

/// Feed `input`, answer Login with `u`, return replies (and relays) as text.
fn run(s: &mut Session, input: &[u8], u: &Arc<User>) -> (Vec<String>, Vec<Submission>) {
    s.feed(input);
    let (mut out, mut relays) = (Vec::new(), Vec::new());
    while let Some(a) = s.step() {
        match a {
            Action::Reply(r) | Action::StartTls(r) | Action::Close(r) | Action::Refused(_, r) => out.push(r),
            Action::Login { password, .. } => out.push(s.login_result((password == "pw").then(|| u.clone()))),
            Action::Relay(sub) => {
                relays.push(sub);
                out.push(s.relay_result(&RelayOutcome::Accepted("ok".into())));
            }
        }
    }
    (out, relays)
}

fn codes(out: &[String]) -> Vec<&str> {
    out.iter().map(|r| &r[..3]).collect()
}

const AUTH: &[u8] = b"EHLO c\r\nAUTH PLAIN AG1hcmlvAHB3\r\n"; // \0mario\0pw

#[test]
fn auth_refused_before_tls_and_allowed_on_loopback_when_configured() {
    let u = user(&[("prot", &[Right::Send])]);
    let (out, _) = run(&mut session(false, false), AUTH, &u);
    assert!(!out[0].contains("AUTH") && out[0].contains("STARTTLS"), "{out:?}");
    assert_eq!(codes(&out), ["250", "538"]);
    let (out, _) = run(&mut session(false, true), AUTH, &u);
    assert_eq!(codes(&out), ["250", "235"]);
}

#[test]
fn pipelined_submission_is_relayed_exactly() {
    let u = user(&[("prot", &[Right::Send])]);
    let msg = b"From: <prot@pec.test>\r\nMessage-ID: <m1@x>\r\nSubject: s\r\n\r\n..body\r\n";
    let mut input = AUTH.to_vec();
    input.extend_from_slice(b"MAIL FROM:<prot@pec.test> SIZE=100\r\nRCPT TO:<a@pec.other>\r\nDATA\r\n");
    input.extend_from_slice(msg);
    input.extend_from_slice(b".\r\nQUIT\r\n");
    let (out, relays) = run(&mut session(true, false), &input, &u);
    assert_eq!(codes(&out), ["250", "235", "250", "250", "354", "250", "221"], "{out:?}");
    assert_eq!(relays.len(), 1);
    assert_eq!(relays[0].data, b"From: <prot@pec.test>\r\nMessage-ID: <m1@x>\r\nSubject: s\r\n\r\n.body\r\n".to_vec());
    assert_eq!(relays[0].message_id, "<m1@x>");
    assert_eq!((relays[0].mailbox.as_str(), relays[0].rcpts.clone()), ("prot", vec!["a@pec.other".to_string()]));
}

#[test]
fn permissions_from_and_limits() {
    let u = user(&[("prot", &[Right::Send]), ("ro", &[Right::Read])]);
    let mut s = session(true, false);
    let (out, _) = run(&mut s, AUTH, &u);
    assert_eq!(codes(&out), ["250", "235"]);
    let (out, _) = run(&mut s, b"MAIL FROM:<ro@pec.test>\r\nMAIL FROM:<x@y.z>\r\nRCPT TO:<a@b.c>\r\nDATA\r\n", &u);
    assert_eq!(codes(&out), ["550", "550", "503", "503"], "{out:?}");
    let (out, relays) = run(
        &mut s,
        b"MAIL FROM:<prot@pec.test> SIZE=5000\r\nMAIL FROM:<prot@pec.test>\r\nRCPT TO:<a@b.c>\r\nRCPT TO:<b@b.c>\r\nRCPT TO:<c@b.c>\r\nDATA\r\nFrom: ro@pec.test\r\n\r\nx\r\n.\r\n",
        &u,
    );
    assert_eq!(codes(&out), ["552", "250", "250", "250", "452", "354", "550"], "{out:?}");
    assert!(relays.is_empty());
    let big = format!("MAIL FROM:<prot@pec.test>\r\nRCPT TO:<a@b.c>\r\nDATA\r\nFrom: prot@pec.test\r\n\r\n{}\r\n.\r\n", "x".repeat(2000));
    let (out, _) = run(&mut s, big.as_bytes(), &u);
    assert_eq!(codes(&out), ["250", "250", "354", "552"], "{out:?}");
}

#[test]
fn abuse_gets_codes_not_panics() {
    let u = user(&[("prot", &[Right::Send])]);
    let mut s = session(true, false);
    let (out, _) = run(&mut s, b"HELLO\r\n\r\nMAIL FROM:<>\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\n\x00\xff\r\n", &u);
    assert!(out.iter().all(|r| r.starts_with('5')), "{out:?}");
    // Flood of errors ends the connection.
    let (out, _) = run(&mut s, "BOGUS\r\n".repeat(40).as_bytes(), &u);
    assert!(out.last().unwrap().starts_with("421"), "{out:?}");
    assert!(s.step().is_none());
    // Bare LF in DATA closes.
    let mut s = session(true, false);
    let mut input = AUTH.to_vec();
    input.extend_from_slice(b"MAIL FROM:<prot@pec.test>\r\nRCPT TO:<a@b.c>\r\nDATA\r\nFrom: prot@pec.test\n\nx\n.\n");
    let (out, relays) = run(&mut s, &input, &u);
    assert!(out.last().unwrap().starts_with("521"), "{out:?}");
    assert!(relays.is_empty());
    // STARTTLS drops what was pipelined after it.
    let mut s = session(false, false);
    let (out, _) = run(&mut s, b"EHLO c\r\nSTARTTLS\r\nAUTH PLAIN AG1hcmlvAHB3\r\n", &u);
    assert_eq!(codes(&out), ["250", "220"]);
    s.tls_started();
    assert!(s.step().is_none());
}

/// Every line of every reply is `NNN-text` or `NNN text` and ends with the
/// reply's own CRLF: a client value echoed into a reply (EHLO host, MAIL
/// FROM address, the message's From header) cannot split it. Found by the
/// `smtp_session` fuzz target (a bare CR inside the From header).
#[test]
fn client_values_cannot_split_a_reply() {
    let u = user(&[("prot", &[Right::Send])]);
    let mut s = session(true, false);
    let mut input = b"EHLO c\rd\x01\r\nHELO e\rf\r\nAUTH PLAIN AG1hcmlvAHB3\r\n".to_vec();
    input.extend_from_slice(b"MAIL FROM:<x\ry@z.t>\r\nMAIL FROM:<prot@pec.test> X-\rZ=1\r\n");
    input.extend_from_slice(b"MAIL FROM:<prot@pec.test>\r\nRCPT TO:<a@b.c>\r\nDATA\r\nFrom: prot@pec.test\rc.test\r\n\r\nx\r\n.\r\n");
    let (out, relays) = run(&mut s, &input, &u);
    assert!(relays.is_empty());
    assert!(out.iter().any(|r| r.starts_with("550") && r.contains("Header From")), "{out:?}");
    for r in &out {
        let body = r.strip_suffix("\r\n").unwrap_or_else(|| panic!("no CRLF: {r:?}"));
        for line in body.split("\r\n") {
            assert!(!line.contains(['\r', '\n']), "bare CR/LF in {r:?}");
            assert!(line.len() >= 4 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit), "{r:?}");
        }
    }
}
