//! The SMTP submission session (src/smtp/session.rs) and its framing
//! (src/smtp/wire.rs) fed arbitrary client bytes, without sockets: the
//! harness plays the I/O driver (src/smtp/server.rs) the way
//! src/smtp/session_tests.rs does.
//!
//! Input: byte 0 = options (bit 0 implicit TLS, bit 1 plaintext AUTH allowed,
//! bit 2 STARTTLS offered, bit 3 logins succeed, bits 4-5 relay outcome),
//! byte 1 = chunk size (0: everything at once), the rest = what the client
//! sends, fed chunk by chunk so lines and bodies are cut at every position.
//!
//! Checked beyond "no panic": every reply is well-formed SMTP (one or more
//! `NNN-`/`NNN ` lines, each ending in CRLF, no other CR or LF: a client
//! value echoed into a reply cannot inject a line); the input buffer stays
//! bounded; a relayed submission comes from a configured mailbox.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pecgate::auth::{Right, User};
use pecgate::smtp::session::{Action, Limits, RelayOutcome, Session};

/// Largest buffer the wire may hold between steps (its `MAX_PARTIAL`).
const MAX_PENDING: usize = 64 * 1024;

fn check_reply(r: &str) {
    assert!(r.ends_with("\r\n"), "reply without CRLF: {r:?}");
    let lines: Vec<&str> = r[..r.len() - 2].split("\r\n").collect();
    for (i, l) in lines.iter().enumerate() {
        let b = l.as_bytes();
        assert!(b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit), "bad reply line {l:?} in {r:?}");
        let sep = if i + 1 == lines.len() { b' ' } else { b'-' };
        assert_eq!(b[3], sep, "bad continuation in {r:?}");
        assert!(!l.contains(['\r', '\n']), "bare CR or LF inside reply {r:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let (&opts, rest) = match data.split_first() {
        Some(x) => x,
        None => return,
    };
    let (&chunk, input) = match rest.split_first() {
        Some(x) => x,
        None => return,
    };
    let mailboxes = Arc::new(vec![
        ("prot".to_string(), "prot@pec.test".to_string()),
        ("ro".to_string(), "ro@pec.test".to_string()),
    ]);
    let limits = Limits {
        hostname: "gw.test".into(),
        max_message_size: 1000,
        max_recipients: 3,
        starttls: opts & 4 != 0,
        plaintext_ok: opts & 2 != 0,
        mailboxes: mailboxes.clone(),
        sending: Arc::new(std::collections::HashMap::from([(
            "prot".to_string(),
            pecgate::config::SendingLimits { max_recipients: Some(2), max_message_bytes: Some(1500), ..Default::default() },
        )])),
    };
    let user = Arc::new(User {
        name: "mario".into(),
        default_mailbox: None,
        grants: BTreeMap::from([
            ("prot".to_string(), BTreeSet::from([Right::Read, Right::Send])),
            ("ro".to_string(), BTreeSet::from([Right::Read])),
        ]),
        roles: BTreeSet::new(),
        dn: None,
    });
    let mut s = Session::new(limits, opts & 1 != 0);
    check_reply(&s.greeting());
    let chunk = if chunk == 0 { input.len().max(1) } else { usize::from(chunk) };
    let mut closed = false;
    for piece in input.chunks(chunk) {
        if closed {
            break;
        }
        s.feed(piece);
        while let Some(a) = s.step() {
            match a {
                Action::Reply(r) | Action::Refused(_, r) => check_reply(&r),
                Action::Close(r) => {
                    check_reply(&r);
                    closed = true;
                }
                Action::StartTls(r) => {
                    check_reply(&r);
                    s.tls_started();
                }
                Action::Login { user: name, password } => {
                    let ok = opts & 8 != 0 && !name.is_empty() && !password.is_empty();
                    check_reply(&s.login_result(ok.then(|| user.clone())));
                    assert!(!ok || s.user() == Some("mario"));
                }
                Action::Relay(sub) => {
                    assert!(mailboxes.iter().any(|(a, addr)| *a == sub.mailbox && *addr == sub.from), "{sub:?}");
                    assert!(!sub.rcpts.is_empty() && sub.rcpts.len() <= 3, "{sub:?}");
                    assert!(sub.data.len() <= 1000 + 200, "relayed {} bytes", sub.data.len());
                    let outcome = match (opts >> 4) & 3 {
                        0 => RelayOutcome::Accepted(String::from_utf8_lossy(piece).into_owned()),
                        1 => RelayOutcome::Temporary("421 busy\r\ninjected".into()),
                        2 => RelayOutcome::Permanent { code: 554, text: "no\r\n250 ok".into() },
                        _ => RelayOutcome::Permanent { code: u16::from(chunk as u8), text: String::new() },
                    };
                    check_reply(&s.relay_result(&outcome));
                }
            }
        }
        if !closed {
            assert!(s.pending() <= MAX_PENDING, "{} bytes buffered", s.pending());
        }
    }
});
