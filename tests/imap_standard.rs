//! Standard IMAP as Dovecot's imaptest checks it (issue 22), with imaplib
//! and raw TLS against `pecgate serve` (tests/imap/standard.py): the nine
//! findings (sections inside message/rfc822, ENVELOPE groups and routes,
//! SENT* dates, CLOSE, `\Recent`, keywords in FLAGS, EXISTS before an
//! APPEND's OK, UIDVALIDITY of a folder never used, each APPEND its own
//! message) and categories (CREATE/RENAME/DELETE under a mailbox, COPY
//! labels, MOVE files with COPYUID before EXPUNGE, EXPUNGE unlabels);
//! CONDSTORE and QRESYNC (tests/imap/condstore.py), BINARY and MULTIAPPEND
//! (tests/imap/binary.py), ESEARCH and LIST-EXTENDED (search_list.py),
//! ESORT, SORT=DISPLAY and PARTIAL (esort.py), CONTEXT=SEARCH and
//! CONTEXT=SORT (context.py), CATENATE (catenate.py), NOTIFY (notify.py).

mod imap_support;

use imap_support::{start_with, Setup};

/// Run `script` (tests/imap/) against a gateway whose prot/INBOX holds
/// two messages; it must pass every check, and the server must not panic.
fn script(script: &str) {
    let mut gw = start_with(Setup { inbox: 2, ..Setup::default() });
    let (ok, out, err) = gw.python(script, &[]);
    assert!(ok, "{script} failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}", gw.log());
    assert!(out.contains("all checks passed"), "{out}");
    gw.stop();
    assert!(!gw.log().contains("panicked"), "panic in the server log: {}", gw.log());
}

#[test]
fn standard_imap_and_categories() {
    script("standard.py");
}

#[test]
fn condstore_and_qresync() {
    script("condstore.py");
}

#[test]
fn binary_and_multiappend() {
    script("binary.py");
}

#[test]
fn esearch_and_extended_list() {
    script("search_list.py");
}

#[test]
fn esort_sort_display_and_partial() {
    script("esort.py");
}

#[test]
fn search_and_sort_contexts() {
    script("context.py");
}

#[test]
fn catenate() {
    script("catenate.py");
}

#[test]
fn notify() {
    script("notify.py");
}
