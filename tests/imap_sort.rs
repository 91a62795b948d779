//! SORT and THREAD (RFC 5256, issue 22) with imaplib against `pecgate
//! serve` (tests/imap/sort_thread.py): the fixture of tests/data/sort-thread
//! (its README lists each message's keys, and the answers Dovecot gives to
//! the same messages, which the script expects exactly), the UID forms,
//! REVERSE, the charsets taken and refused, and the capabilities.

mod imap_support;

use imap_support::{start_with, Setup};

/// The fixture's messages with their internal dates.
fn fixture() -> Vec<(Vec<u8>, chrono::DateTime<chrono::Utc>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sort-thread/fixture.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).expect("read fixture.json")).expect("fixture.json");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            let raw = e["message"].as_str().expect("message").as_bytes().to_vec();
            let at = chrono::DateTime::parse_from_rfc3339(e["internal"].as_str().expect("internal")).expect("a date");
            (raw, at.with_timezone(&chrono::Utc))
        })
        .collect()
}

/// Guards SORT and THREAD as a real client uses them: every answer of the
/// fixture exact, BADCHARSET for a charset not taken, BAD for an unknown
/// algorithm, and no panic.
#[test]
fn sort_and_thread_with_imaplib() {
    let mut gw = start_with(Setup { dated: fixture(), ..Setup::default() });
    let (ok, out, err) = gw.python("sort_thread.py", &[]);
    assert!(ok && out.contains("all checks passed"), "sort_thread.py failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}", gw.log());
    gw.stop();
    assert!(!gw.log().contains("panicked"), "panic in the server log: {}", gw.log());
}
