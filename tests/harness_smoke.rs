//! Proves the test harness (tests/support) works: if Dovecot, the IMAP
//! helper or the message generator broke, these tests fail.

mod support;

use std::collections::HashSet;
use std::process::Command;

use support::*;

#[test]
fn harness_make_message_is_valid_and_deterministic() {
    for &(i, size) in &[(0usize, 0usize), (1, 1), (2, 400), (3, 401), (4, 402), (5, 479), (6, 100_000), (7, 5 << 20)] {
        let m = make_message(i, size);
        assert_eq!(m, make_message(i, size), "deterministic");
        let head_len = m.windows(4).position(|w| w == b"\r\n\r\n").expect("header/body separator") + 4;
        if size >= head_len + 2 {
            assert_eq!(m.len(), size, "message {i} has the asked size");
        }
        assert!(m.ends_with(b"\r\n"));
        for line in m.split(|&b| b == b'\n') {
            assert!(line.len() <= 998, "line too long");
            assert!(line.is_empty() || line.ends_with(b"\r"), "bare LF");
            assert!(!line[..line.len().saturating_sub(1)].contains(&b'\r'), "bare CR");
            assert!(!line.starts_with(b".") && !line.starts_with(b"From "));
        }
        let text = String::from_utf8(m).expect("ASCII");
        assert!(text.contains(&format!("Message-ID: <test-{i}@pecgate.test>\r\n")));
    }
    let ids: HashSet<Vec<u8>> = (0..100).map(|i| make_message(i, 500)).collect();
    assert_eq!(ids.len(), 100);
    assert!(pecgate_bin().is_file(), "pecgate binary at {}", pecgate_bin().display());
    let (a, b) = (free_port(), free_port());
    assert_ne!(a, b);
}

#[test]
fn harness_dovecot_append_fetch_quota_restart() {
    let dc = &mut Dovecot::start(
        DovecotOptions::new()
            .user(UserSpec::new("pec1", "s3cret").quota(10 << 20, 1000))
            .user(UserSpec::new("pec2", "other")),
    );
    let imap = dc.imap("pec1");

    // 20 messages of varied sizes, some with an INTERNALDATE and flags
    let sizes: Vec<usize> = (0..20).map(|i| 300 + i * i * 1500).collect();
    let msgs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &s)| make_message(i, s)).collect();
    let forty_days_ago = chrono::Utc::now().timestamp() - 40 * 86_400;
    let uids = imap.append(
        "INBOX",
        msgs.iter().enumerate().map(|(i, m)| {
            let msg = Msg::new(m.clone());
            if i % 2 == 0 {
                msg.dated(forty_days_ago).flags(&["\\Seen"])
            } else {
                msg
            }
        }),
    );
    assert_eq!(uids, (1..=20).collect::<Vec<u32>>());
    assert_eq!(imap.count("INBOX"), 20);
    assert_eq!(imap.uids("INBOX"), uids);
    let expected: Vec<(u32, String)> = uids.iter().zip(&msgs).map(|(&u, m)| (u, sha256_hex(m))).collect();
    assert_eq!(imap.sha256s("INBOX"), expected, "Dovecot returns the exact bytes appended");
    assert_eq!(imap.fetch("INBOX", 3), msgs[2]);
    let flags = imap.flags("INBOX");
    assert!(flags[0].1.contains(&"\\Seen".to_string()) && !flags[1].1.contains(&"\\Seen".to_string()));
    let st = imap.status("INBOX");
    assert_eq!((st.messages, st.uidnext, st.unseen), (20, 21, 10));

    // quota: limits as configured, usage counts what we appended
    let q = imap.quota("INBOX");
    let total: usize = msgs.iter().map(Vec::len).sum();
    let storage = q.storage.expect("STORAGE resource");
    assert_eq!(storage.limit, 10 * 1024, "{q:?}");
    assert!(storage.used > 0 && storage.used.abs_diff((total / 1024) as u64) <= 1, "{q:?} vs {total} bytes");
    assert_eq!(q.messages.expect("MESSAGE resource"), QuotaResource { used: 20, limit: 1000 });

    // other users are separate; no quota configured -> no limits reported
    assert_eq!(dc.imap("pec2").count("INBOX"), 0);

    // folders and UIDVALIDITY
    imap.create("Archive");
    assert!(imap.list().contains(&"Archive".to_string()), "{:?}", imap.list());
    imap.append("Archive", [make_message(100, 1000)]);
    let v1 = imap.uidvalidity("Archive");
    imap.delete("Archive");
    imap.create("Archive");
    let v2 = imap.uidvalidity("Archive");
    assert_ne!(v1, v2, "re-created folder gets a new UIDVALIDITY");
    assert_eq!(imap.count("Archive"), 0);
    let inbox_v = imap.uidvalidity("INBOX");
    let bumped = dc.bump_uidvalidity("pec1", "INBOX");
    assert!(bumped > inbox_v);
    assert_eq!(imap.uidvalidity("INBOX"), bumped);

    // over quota -> APPEND refused, earlier ones kept
    let err = dc
        .imap("pec1")
        .try_append("INBOX", [make_message(200, 1000), make_message(201, 11 << 20)])
        .expect_err("11 MB message over a 10 MB quota");
    assert!(err.contains("message 1") && err.to_ascii_lowercase().contains("quota"), "{err}");
    assert_eq!(imap.count("INBOX"), 21);
    imap.expunge("INBOX", &[21]);

    // stop / start again: same port, same data
    let port = dc.port;
    dc.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped Dovecot still listens");
    assert!(imap.try_login().is_err());
    dc.start_again();
    assert_eq!(dc.port, port);
    assert_eq!(imap.sha256s("INBOX"), expected);
    assert_eq!(imap.uidvalidity("INBOX"), bumped);

    // crash (SIGKILL) / start again
    dc.kill();
    dc.start_again();
    assert_eq!(imap.count("INBOX"), 20);
}

#[test]
fn harness_dovecot_capabilities_and_tls() {
    let caps = capabilities_without(&["IDLE", "UIDPLUS"]);
    let dc = Dovecot::start(DovecotOptions::new().user(UserSpec::new("pec1", "pw")).capabilities(caps).tls(true));
    let plain = dc.imap("pec1").capabilities();
    assert!(plain.iter().any(|c| c == "IMAP4rev1") && plain.iter().any(|c| c == "QUOTA"), "{plain:?}");
    assert!(!plain.iter().any(|c| c == "IDLE" || c == "UIDPLUS"), "{plain:?}");

    // the default Dovecot advertises both (so the override did something)
    let default = Dovecot::start(DovecotOptions::new().user(UserSpec::new("u", "p")));
    let all = default.imap("u").capabilities();
    assert!(all.iter().any(|c| c == "IDLE") && all.iter().any(|c| c == "UIDPLUS"), "{all:?}");
    assert_eq!(all.join(" "), DOVECOT_DEFAULT_CAPABILITY, "update DOVECOT_DEFAULT_CAPABILITY");
    let pgid = default.pid().expect("running");
    assert!(group_alive(pgid));
    drop(default);
    assert!(!group_alive(pgid), "Dovecot processes left after drop");

    // TLS listener: imaplib.IMAP4_SSL trusting only the generated certificate
    let tls = dc.imaps("pec1");
    tls.try_login().expect("TLS login");
    tls.append("INBOX", [make_message(1, 2000)]);
    assert_eq!(dc.imap("pec1").count("INBOX"), 1);
    // without trusting the certificate the handshake fails
    let script = format!(
        "import imaplib,ssl\ntry:\n  imaplib.IMAP4_SSL('127.0.0.1', {}, ssl_context=ssl.create_default_context(cafile=None))\nexcept ssl.SSLError as e:\n  print('refused', e)\n",
        dc.tls_port.unwrap()
    );
    let out = Command::new(python()).arg("-c").arg(script).output().expect("python3");
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused"), "{out:?}");
    let cert = std::fs::read_to_string(dc.cert_path.as_ref().unwrap()).unwrap();
    assert!(cert.contains("BEGIN CERTIFICATE"));
}

/// Loading speed: the provider side of big-mailbox tests must be cheap.
/// Run the full-size variant by hand: PECGATE_BULK_MB=5 cargo test --release harness_bulk -- --nocapture
#[test]
fn harness_bulk_append_1000() {
    let big_mb: usize = std::env::var("PECGATE_BULK_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let dc = Dovecot::start(DovecotOptions::new().user(UserSpec::new("bulk", "pw")));
    let imap = dc.imap("bulk");
    let size = |i: usize| if big_mb > 0 { big_mb << 20 } else if i.is_multiple_of(100) { 5 << 20 } else { 2_000 + (i * 7919) % 30_000 };
    let t = std::time::Instant::now();
    let uids = imap.append("INBOX", (0..1000).map(|i| make_message(i, size(i))));
    let append_secs = t.elapsed().as_secs_f64();
    assert_eq!(uids.len(), 1000);
    let t = std::time::Instant::now();
    let hashes = imap.sha256s("INBOX");
    let fetch_secs = t.elapsed().as_secs_f64();
    assert_eq!(hashes.len(), 1000);
    for (i, (_, h)) in [0usize, 1, 500, 999].iter().map(|&i| (i, &hashes[i])) {
        assert_eq!(h, &sha256_hex(&make_message(i, size(i))), "message {i}");
    }
    let total: usize = (0..1000).map(size).sum();
    eprintln!("bulk: {} MB appended in {append_secs:.1}s, hashed back in {fetch_secs:.1}s", total >> 20);
    assert!(append_secs < 60.0, "appending 1000 messages took {append_secs:.1}s");
}
