//! SORT and THREAD (RFC 5256, issue 22) in whole sessions, on the fixture
//! in tests/data/sort-thread (its README has the table of the messages'
//! keys, and the answers Dovecot gives to the same messages, which are
//! the answers expected here).

use super::*;

/// The fixture's messages and internal dates.
fn fixture() -> Vec<(Vec<u8>, chrono::DateTime<chrono::Utc>)> {
    #[derive(serde::Deserialize)]
    struct Entry {
        internal: chrono::DateTime<chrono::Utc>,
        message: String,
    }
    let v: Vec<Entry> =
        serde_json::from_str(include_str!("../../tests/data/sort-thread/fixture.json")).expect("fixture.json");
    v.into_iter().map(|e| (e.message.into_bytes(), e.internal)).collect()
}

/// Logged in as `user` with prot/INBOX holding the fixture, its first
/// message expunged (message n has UID n + 1), selected (`cmd`: SELECT or
/// EXAMINE).
async fn session(user: &str, cmd: &str) -> Client {
    let mut c = start_with(fixture()).await;
    c.login("mario").await;
    assert!(c.cmd("s", "SELECT prot/INBOX").await.contains("s OK"));
    assert!(c.cmd("d", "STORE 1 +FLAGS.SILENT (\\Deleted)").await.contains("d OK"));
    assert!(c.cmd("e", "EXPUNGE").await.contains("* 1 EXPUNGE"));
    let mut c = if user == "mario" { c } else { c.another().await };
    if user != "mario" {
        c.login(user).await;
    }
    let r = c.cmd("x", &format!("{cmd} prot/INBOX")).await;
    assert!(r.contains("* 8 EXISTS") && r.contains("x OK"), "{r}");
    c
}

/// The untagged answer line of `line` (sent with tag `t`).
async fn answer(c: &mut Client, line: &str) -> String {
    let r = c.cmd("t", line).await;
    assert!(tagged_line(&r, "t").starts_with("t OK"), "{line}: {r}");
    r.lines().filter(|l| l.starts_with("* SORT") || l.starts_with("* THREAD")).collect::<Vec<_>>().join("\n")
}

/// Dovecot's answers (tests/data/sort-thread/README.md).
const SORTS: &[(&str, &str)] = &[
    ("SORT (ARRIVAL) UTF-8 ALL", "* SORT 3 1 2 4 5 6 7 8"),
    ("SORT (DATE) UTF-8 ALL", "* SORT 3 1 8 5 2 4 6 7"),
    ("SORT (REVERSE DATE) UTF-8 ALL", "* SORT 7 6 4 2 5 1 8 3"),
    ("SORT (SUBJECT) UTF-8 ALL", "* SORT 6 3 4 1 2 5 8 7"),
    ("SORT (SUBJECT DATE) UTF-8 ALL", "* SORT 6 3 4 1 8 5 2 7"),
    ("SORT (FROM) UTF-8 ALL", "* SORT 3 2 5 4 7 1 8 6"),
    ("SORT (REVERSE FROM) UTF-8 ALL", "* SORT 6 1 8 4 7 2 5 3"),
    ("SORT (TO) UTF-8 ALL", "* SORT 6 8 4 1 5 2 3 7"),
    ("SORT (CC) UTF-8 ALL", "* SORT 1 3 5 6 7 8 4 2"),
    ("SORT (SIZE) UTF-8 ALL", "* SORT 6 3 1 7 8 4 2 5"),
    ("SORT (REVERSE SIZE) UTF-8 ALL", "* SORT 5 2 4 8 7 1 3 6"),
    ("SORT (REVERSE ARRIVAL) UTF-8 FROM avvocato", "* SORT 5 2"),
    ("SORT (DATE) UTF-8 SUBJECT pratica", "* SORT 1 8 5 2"),
    ("UID SORT (DATE) UTF-8 ALL", "* SORT 4 2 9 6 3 5 7 8"),
    ("SORT (date) us-ascii ALL", "* SORT 3 1 8 5 2 4 6 7"),
    ("SORT (DATE) UTF-8 SUBJECT nonesuch", "* SORT"),
];

const THREADS: &[(&str, &str)] = &[
    ("THREAD REFERENCES UTF-8 ALL", "* THREAD (3 4)((1 (5)(2))(8))((6)(7))"),
    ("THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (3 4)(1 (8)(5)(2))(6)(7)"),
    ("UID THREAD REFERENCES UTF-8 ALL", "* THREAD (4 5)((2 (6)(3))(9))((7)(8))"),
    ("THREAD REFERENCES US-ASCII SUBJECT pratica", "* THREAD ((1 (5)(2))(8))"),
    ("UID THREAD ORDEREDSUBJECT UTF-8 SUBJECT pratica", "* THREAD (2 (9)(6)(3))"),
    ("THREAD ORDEREDSUBJECT UTF-8 SUBJECT nonesuch", "* THREAD"),
];

#[tokio::test]
async fn capabilities_offer_sort_and_thread() {
    let mut c = start(0).await;
    for when in ["before login", "after login"] {
        let r = c.cmd("c", "CAPABILITY").await;
        let caps = r.lines().find(|l| l.starts_with("* CAPABILITY")).unwrap_or_default();
        let words: Vec<&str> = caps.split(' ').collect();
        for want in ["SORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"] {
            assert!(words.contains(&want), "{when}: {want} in {caps}");
        }
        if when == "before login" {
            c.login("mario").await;
        }
    }
}

#[tokio::test]
async fn sort_answers_as_dovecot() {
    let mut c = session("mario", "SELECT").await;
    for (line, want) in SORTS {
        assert_eq!(answer(&mut c, line).await, *want, "{line}");
    }
}

#[tokio::test]
async fn thread_answers_as_dovecot() {
    let mut c = session("mario", "SELECT").await;
    for (line, want) in THREADS {
        assert_eq!(answer(&mut c, line).await, *want, "{line}");
    }
}

/// SORT and THREAD need only read: a read-only user, in a folder opened
/// with EXAMINE, gets the same answers.
#[tokio::test]
async fn read_is_enough() {
    let mut c = session("ro", "EXAMINE").await;
    assert_eq!(answer(&mut c, SORTS[1].0).await, SORTS[1].1);
    assert_eq!(answer(&mut c, THREADS[0].0).await, THREADS[0].1);
}

/// The keys come from the index and the fields cached when each message
/// was archived: with every message file gone, SORT and THREAD still
/// answer in full (a SORT on a large folder reads no message).
#[tokio::test]
async fn no_message_is_read() {
    let mut c = session("mario", "SELECT").await;
    let blobs = c._dir.path().join("data/blobs");
    let mut stack = vec![blobs];
    let mut removed = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read blobs dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "eml") {
                std::fs::remove_file(&p).expect("remove blob");
                removed += 1;
            }
        }
    }
    assert_eq!(removed, 9);
    for (line, want) in SORTS.iter().chain(THREADS) {
        assert_eq!(answer(&mut c, line).await, *want, "{line}");
    }
    // A body search does need the messages: nothing matches now.
    assert_eq!(answer(&mut c, "SORT (DATE) UTF-8 BODY pratica").await, "* SORT");
}

#[tokio::test]
async fn refusals() {
    let mut c = session("mario", "SELECT").await;
    for (line, want) in [
        ("SORT (DATE) ISO-8859-1 ALL", "t NO [BADCHARSET (UTF-8 US-ASCII)]"),
        ("THREAD REFERENCES KOI8-R ALL", "t NO [BADCHARSET (UTF-8 US-ASCII)]"),
        ("THREAD FOO UTF-8 ALL", "t BAD unknown threading algorithm FOO"),
        ("SORT () UTF-8 ALL", "t BAD"),
        ("SORT (DATE) ALL", "t BAD"),
        ("SORT (DATE SENDER) UTF-8 ALL", "t BAD"),
    ] {
        let r = c.cmd("t", line).await;
        assert!(tagged_line(&r, "t").starts_with(want), "{line}: {r}");
        assert!(!r.contains("* SORT") && !r.contains("* THREAD"), "{line}: {r}");
    }
    assert!(c.cmd("u", "UNSELECT").await.contains("u OK"));
    let r = c.cmd("t", "SORT (DATE) UTF-8 ALL").await;
    assert!(tagged_line(&r, "t").starts_with("t BAD") && r.contains("SELECT one first"), "{r}");
}
