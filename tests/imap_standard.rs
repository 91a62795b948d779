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
//! CONTEXT=SORT (context.py), CATENATE (catenate.py), NOTIFY (notify.py);
//! per-user subscriptions (subscriptions.py), also after a rebuilt index;
//! SEARCH TEXT over every header field (search_text.py).

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

/// SEARCH TEXT finds a word only in a header field of its own, BODY does
/// not (imaptest search-body's first half).
#[test]
fn search_text_sees_every_header_field() {
    script("search_text.py");
}

/// SUBSCRIBE, UNSUBSCRIBE, LSUB and LIST (SUBSCRIBED ...) as RFC 3501 and
/// RFC 5258 say (tests/imap/subscriptions.py); every change is a journal
/// record of its user, so a rebuilt index has the same subscriptions.
#[test]
fn subscriptions_are_per_user_and_survive_a_rebuilt_index() {
    let mut gw = start_with(Setup { inbox: 2, ..Setup::default() });
    let (ok, out, err) = gw.python("subscriptions.py", &["run"]);
    assert!(ok, "subscriptions.py failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}", gw.log());
    assert!(out.contains("all checks passed"), "{out}");
    gw.stop();
    let mut journal = String::new();
    for e in std::fs::read_dir(gw.data().join("journal")).expect("journal dir") {
        journal += &std::fs::read_to_string(e.expect("entry").path()).expect("segment");
    }
    let recorded = |op: &str, actor: &str, what: &str| {
        journal.lines().any(|l| {
            l.contains(&format!("\"op\":\"{op}\"")) && l.contains(&format!("\"actor\":\"{actor}\"")) && l.contains(what)
        })
    };
    assert!(
        recorded("unsubscribe", "mario", "\"name\":\"prot/Receipts\",\"subscribed\":false"),
        "no unsubscribe record"
    );
    assert!(recorded("subscribe", "anna", "\"name\":\"prot/Sub/a\",\"subscribed\":true"), "no subscribe record");
    assert!(recorded("rename", "mario", "\"type\":\"subscriptions-renamed\""), "no record moving the subscriptions");
    let subs = |user: &str| {
        let (store, _) = pecgate::store::Store::open(&gw.data(), Default::default()).expect("open store");
        let s = store.subscriptions(user).expect("subscriptions");
        store.close().expect("close");
        s
    };
    let before = (subs("mario"), subs("anna"));
    assert!(before.0.contains(&("prot/Moved/a".to_string(), true)), "{before:?}");
    // Once the closed store's last background task let go of the index.
    let t0 = std::time::Instant::now();
    while let Err(e) = pecgate::store::rebuild_index(&gw.data(), &mut |_, _| {}) {
        assert!(matches!(e, pecgate::store::StoreError::Locked(_)) && t0.elapsed().as_secs() < 10, "rebuild: {e}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!((subs("mario"), subs("anna")), before, "rebuild-index changed the subscriptions");
    gw.restart();
    let (ok, out, err) = gw.python("subscriptions.py", &["verify"]);
    assert!(ok, "subscriptions.py verify failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}", gw.log());
    gw.stop();
    assert!(!gw.log().contains("panicked"), "panic in the server log: {}", gw.log());
}
