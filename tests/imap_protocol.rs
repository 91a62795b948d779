//! The IMAP server's answers to malformed and oversized input (issue 13),
//! over raw TLS sockets and imaplib against `pecgate serve`:
//!
//! * a syntax error gets a TAGGED `BAD` (tests/imap/protocol_errors.py):
//!   the parser used to answer any line it could not parse with an
//!   untagged `* BAD`, so a client waiting for its tag (imaplib,
//!   Thunderbird) hung;
//! * before login only small literals are read
//!   (tests/imap/preauth_literal.py): LITERAL+ was advertised before login
//!   and the 50 MiB literal limit applied, so an unauthenticated peer could
//!   make the server read and buffer a 100 MB literal;
//! * a line without CRLF is cut off after 64 KiB (tests/imap/long_line.py):
//!   the line limit was the literal limit plus 64 KiB, about 50 MiB.
//!
//! Set PECGATE_TEST_KEEP_GOING=1 to have a script run every check instead
//! of stopping at the first failure.

mod imap_support;

use imap_support::{start_with, Gateway, Setup};

fn run(gw: &Gateway, script: &str, extra: &[&str]) {
    let (ok, out, err) = gw.python(script, extra);
    assert!(
        ok,
        "{script} failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
        gw.log()
    );
    assert!(out.contains("all checks passed"), "{out}");
}

/// Guards against untagged-only answers to syntax errors (x1 SEARCH 0:*,
/// nested FETCH lists, 8-bit quoted strings, unknown commands) and against
/// silence for commands sent in the wrong state.
#[test]
fn syntax_errors_get_a_tagged_bad() {
    let mut gw = start_with(Setup {
        inbox: 3,
        ..Setup::default()
    });
    run(&gw, "protocol_errors.py", &[]);
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

/// Guards against an unauthenticated client streaming a 100 MB literal:
/// LITERAL- before login, BAD and close for a big literal, LITERAL+ and
/// APPENDLIMIT after login.
#[test]
fn preauth_literals_are_small() {
    let mut gw = start_with(Setup {
        inbox: 1,
        ..Setup::default()
    });
    run(&gw, "preauth_literal.py", &[]);
    gw.stop();
    assert!(
        !gw.log().contains("panicked"),
        "panic in the server log: {}",
        gw.log()
    );
}

/// Guards against the server buffering a line without CRLF up to the
/// literal limit: `* BAD ... line too long` and a close soon after 64 KiB,
/// before and after login.
#[test]
fn long_lines_are_cut_off() {
    let mut gw = start_with(Setup {
        inbox: 1,
        ..Setup::default()
    });
    run(&gw, "long_line.py", &[]);
    gw.stop();
    assert!(
        !gw.log().contains("panicked"),
        "panic in the server log: {}",
        gw.log()
    );
}
