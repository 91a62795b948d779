//! Hostile clients (tests/imap/abuse.py over TLS): garbage lines, commands
//! before login, a 100 MB literal announcement, an unterminated literal then
//! disconnect, 5000 pipelined NOOPs, a 2 MB line. Each gets BAD/NO or a
//! closed connection; the daemon keeps serving new clients and never panics.

mod imap_support;

#[test]
fn imap_abuse_never_kills_the_server() {
    let mut gw = imap_support::start(1, false);
    let (ok, out, err) = gw.python("abuse.py", &[]);
    assert!(
        ok,
        "abuse.py failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
        gw.log()
    );
    assert!(out.contains("all checks passed"), "{out}");
    assert!(
        matches!(gw.child.try_wait(), Ok(None)),
        "the daemon exited: {}",
        gw.log()
    );
    gw.stop();
    assert!(
        !gw.log().contains("panicked"),
        "panic in the server log: {}",
        gw.log()
    );
}
