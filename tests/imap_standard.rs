//! Standard IMAP as Dovecot's imaptest checks it (issue 22), with imaplib
//! and raw TLS against `pecgate serve` (tests/imap/standard.py): the nine
//! findings (sections inside message/rfc822, ENVELOPE groups and routes,
//! SENT* dates, CLOSE, `\Recent`, keywords in FLAGS, EXISTS before an
//! APPEND's OK, UIDVALIDITY of a folder never used, each APPEND its own
//! message) and categories (CREATE/RENAME/DELETE under a mailbox, COPY
//! labels, MOVE files with COPYUID before EXPUNGE, EXPUNGE unlabels).

mod imap_support;

use imap_support::{start_with, Setup};

#[test]
fn standard_imap_and_categories() {
    let mut gw = start_with(Setup { inbox: 2, ..Setup::default() });
    let (ok, out, err) = gw.python("standard.py", &[]);
    assert!(ok, "standard.py failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}", gw.log());
    assert!(out.contains("all checks passed"), "{out}");
    gw.stop();
    assert!(!gw.log().contains("panicked"), "panic in the server log: {}", gw.log());
}
