//! What each right lets an IMAP client do (issue 13), over imaplib against
//! `pecgate serve`:
//!
//! * Thunderbird's sent copy (tests/imap/thunderbird_sent.py): with one
//!   account for several PEC mailboxes Thunderbird APPENDs the copy into
//!   the Sent folder it has configured, which can be another mailbox's; the
//!   gateway filed it there, claiming that mailbox had sent it.
//! * Read-only users and \Seen (tests/imap/readonly_seen.py): a user with
//!   only `read` got READ-ONLY folders and could never mark a message read,
//!   though \Seen is per person.
//! * Delete that only pretends (tests/imap/trash.py): `triage` allowed
//!   STORE \Deleted while EXPUNGE needed `delete`, so messages looked deleted
//!   and stayed; `delete` without `triage` could not delete at all; hidden
//!   messages could not be found again (now in `<mailbox>/Trash`).
//! * The whole matrix of triage / send / delete against every command that
//!   changes something (tests/imap/permission_matrix.py).
//!
//! Set PECGATE_TEST_KEEP_GOING=1 to have a script (but the matrix, which
//! always lists every mismatch) run every check instead of stopping at the
//! first failure.

mod imap_support;

use imap_support::{start_with, users, Gateway, Setup};

fn run(gw: &Gateway, script: &str, extra: &[&str]) {
    let (ok, out, err) = gw.python(script, extra);
    assert!(
        ok,
        "{script} failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
        gw.log()
    );
    assert!(out.contains("all checks passed"), "{out}");
}

/// Guards against an APPEND into one mailbox's Sent filing a message sent
/// from another (SENT_A, already in prot/Sent: APPENDUID names it there),
/// and against a new message whose From is not the target mailbox's
/// address being filed at all.
#[test]
fn thunderbird_sent_copy_goes_where_it_was_sent_from() {
    let gw = start_with(Setup {
        pec: true,
        extra_config: users(&[(
            "tb",
            "prot = [\"read\", \"triage\", \"send\"], tributi = [\"read\", \"triage\", \"send\"]",
        )]),
        ..Setup::default()
    });
    let sent_a = gw.dir.path().join("sent_a.eml");
    std::fs::write(&sent_a, imap_support::sent_a()).expect("write sent_a");
    run(
        &gw,
        "thunderbird_sent.py",
        &[&sent_a.display().to_string(), imap_support::SAMPLE_MID],
    );
}

/// Guards against users with only `read` getting READ-ONLY folders where
/// \Seen can never be set.
#[test]
fn read_only_users_can_mark_read() {
    let gw = start_with(Setup {
        inbox: 3,
        ..Setup::default()
    });
    run(&gw, "readonly_seen.py", &[]);
}

/// Guards against \Deleted being settable without `delete` (a delete that
/// only pretends), against `delete` without `triage` being unable to
/// delete, and against hidden messages being lost to clients: Trash shows
/// them and a MOVE out of it restores them, both in the journal.
#[test]
fn delete_hides_into_trash_and_back() {
    let mut gw = start_with(Setup {
        inbox: 6,
        extra_config: users(&[("del", "prot = [\"read\", \"delete\"]")]),
        ..Setup::default()
    });
    run(&gw, "trash.py", &[]);
    gw.stop();
    pecgate::store::rebuild_index(&gw.data(), &mut |_, _| {}).expect("rebuild index");
    let mut records = Vec::new();
    for e in std::fs::read_dir(gw.data().join("journal")).expect("journal dir") {
        let text = std::fs::read_to_string(e.expect("entry").path()).expect("segment");
        for line in text.lines() {
            let r: serde_json::Value = serde_json::from_str(line).expect("journal line is JSON");
            records.push(r);
        }
    }
    let by_del: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["actor"] == "del" && r["mailbox"] == "prot")
        .collect();
    let says = |r: &serde_json::Value, words: &[&str]| {
        let op = r["op"].as_str().unwrap_or_default().to_lowercase();
        let ty = r["event"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        words.iter().any(|w| op.contains(w) || ty.contains(w))
    };
    let summary: Vec<String> = by_del
        .iter()
        .map(|r| format!("op={} type={}", r["op"], r["event"]["type"]))
        .collect();
    // The hide: the store's `hidden` event (or an op naming a hide).
    assert!(
        by_del
            .iter()
            .any(|r| r["event"]["type"] == "hidden" || (says(r, &["hide"]) && !says(r, &["unhid"]))),
        "no record of del hiding a message; del's records: {summary:?}"
    );
    // The unhide: an op or event type naming it (`unhide`, `unhidden`,
    // `restore`).
    assert!(
        by_del.iter().any(|r| says(r, &["unhid", "restor"])),
        "no record of del unhiding (restoring) a message; del's records: {summary:?}"
    );
}

/// Guards against any right allowing more (or less) than it says: every
/// combination of triage, send and delete against STORE, EXPUNGE, MOVE,
/// APPEND and COPY, and SELECT's access and PERMANENTFLAGS.
#[test]
fn permission_matrix() {
    let combos = ["r", "rt", "rs", "rd", "rts", "rtd", "rsd", "rtsd"];
    let list: Vec<(String, String)> = combos
        .iter()
        .map(|c| {
            let mut rights = vec!["\"read\""];
            for (ch, right) in [('t', "\"triage\""), ('s', "\"send\""), ('d', "\"delete\"")] {
                if c.contains(ch) {
                    rights.push(right);
                }
            }
            (
                format!("u_{c}"),
                format!("prot = [{}], tributi = [\"read\"]", rights.join(", ")),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = list.iter().map(|(n, g)| (n.as_str(), g.as_str())).collect();
    let gw = start_with(Setup {
        inbox: 40,
        extra_config: users(&refs),
        ..Setup::default()
    });
    let (ok, out, err) = gw.python("permission_matrix.py", &[]);
    // The table goes to the test's output either way.
    println!("{out}");
    assert!(
        ok && out.contains("all checks passed"),
        "permission_matrix.py failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
        gw.log()
    );
}
