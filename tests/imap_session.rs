//! End-to-end: `pecgate serve` with an archive filled through the store API,
//! driven over TLS by Python's imaplib (tests/imap/session.py): the folder
//! tree, byte-identical bodies, shared flags vs per-user \Seen, SEARCH,
//! EXPUNGE that hides, IDLE, APPEND, MOVE and the permission matrix; then
//! the audit chain verifies and holds the login/select/read records.

mod imap_support;

use std::process::Command;

#[test]
fn imap_session_end_to_end() {
    let mut gw = imap_support::start(4, false);
    let (ok, out, err) = gw.python("session.py", &[]);
    assert!(
        ok,
        "session.py failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
        gw.log()
    );
    assert!(out.contains("all checks passed"), "{out}");
    gw.stop();

    let verify = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["audit", "verify", "--config"])
        .arg(&gw.config)
        .output()
        .expect("run audit verify");
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let mut journal = String::new();
    for e in std::fs::read_dir(gw.data().join("journal")).expect("journal dir") {
        journal += &std::fs::read_to_string(e.expect("entry").path()).expect("segment");
    }
    for (op, actor) in [
        ("login", "mario"),
        ("select", "mario"),
        ("read", "anna"),
        ("logout", "mario"),
        ("store", "mario"),
        ("expunge", "mario"),
        ("append", "mario"),
        ("move", "mario"),
    ] {
        let found = journal.lines().any(|l| {
            l.contains(&format!("\"op\":\"{op}\""))
                && l.contains(&format!("\"actor\":\"{actor}\""))
                && l.contains("\"proto\":\"imap\"")
        });
        assert!(found, "no imap {op} record by {actor} in the journal");
    }
    assert!(
        journal
            .lines()
            .any(|l| l.contains("\"op\":\"login\"") && l.contains("\"outcome\":\"failed\"")),
        "failed logins are recorded"
    );
    // The store's own view agrees after a rebuild from the journal.
    pecgate::store::rebuild_index(&gw.data(), &mut |_, _| {}).expect("rebuild index");
}
