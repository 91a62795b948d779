//! Responses larger than TLS's record buffers: UNSEEN over a 25,000-message
//! folder returns every UID in one line, and a 1 MB message comes back whole,
//! to a real client (imaplib). Both once dropped the connection ("failed to
//! write whole buffer": rustls's 64 KiB limit on unsent records).

mod imap_support;

use imap_support::{start_with, Gateway, Setup};

/// Run an inline imaplib `script` with the gateway's port and certificate
/// (then `extra`) as arguments; its stdout and stderr.
fn python(gw: &Gateway, script: &str, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(gw.port.to_string())
        .arg(gw.cert())
        .args(extra)
        .output()
        .expect("python3");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn search_with_25000_hits() {
    let gw = start_with(Setup { bulk: 25_000, ..Setup::default() });
    let script = r#"
import imaplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=cafile))
m.login("mario", "pw-Secret-1")
typ, data = m.select("prot/INBOX", readonly=True)
assert typ == "OK", data
n = int(data[0])
typ, data = m.uid("SEARCH", "UNSEEN")
assert typ == "OK", (typ, data)
hits = data[0].split()
assert len(hits) == n, (len(hits), n)
typ, data = m.uid("SEARCH", "SUBJECT", "Pratica 24999")
assert typ == "OK" and len(data[0].split()) == 1, data
m.logout()
print("all checks passed", n)
"#;
    let (ok, text) = python(&gw, script, &[]);
    assert!(ok && text.contains("all checks passed 25000"), "{text}\n{}", gw.log());
}

/// A message larger than TLS's record buffers (1 MB) comes back whole.
#[test]
fn fetch_of_a_1mb_message_over_tls() {
    let gw = start_with(Setup { inbox: 1, pad: 1_000_000, ..Setup::default() });
    let script = r#"
import hashlib, imaplib, ssl, sys
port, cafile, want = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=cafile))
m.login("mario", "pw-Secret-1")
m.select("prot/INBOX", readonly=True)
typ, data = m.fetch("1", "(BODY.PEEK[])")
assert typ == "OK", data
body = data[0][1]
assert hashlib.sha256(body).hexdigest() == want, len(body)
m.logout()
print("all checks passed", len(body))
"#;
    let (ok, text) = python(&gw, script, &[&gw.blobs[0].hash]);
    assert!(ok && text.contains("all checks passed"), "{text}\n{}", gw.log());
}
