//! Old journals stay readable: a journal written by earlier code
//! (tests/data/journal-v1) opens, verifies, re-encodes byte for byte, and
//! the index built from it holds the same PEC state as that code's index.

use std::path::{Path, PathBuf};

use pecgate::store::{decode_line, encode_line, JournalReader, Store, StoreOptions};
use serde_json::{json, Value};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/journal-v1")
}

/// A data directory holding a copy of the fixture's journal (opening a
/// store writes to it: the index, and the journal's own files stay as they
/// are unless damaged).
fn data_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("journal")).unwrap();
    for e in std::fs::read_dir(fixture().join("journal")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.path().join("journal").join(e.file_name())).unwrap();
    }
    d
}

fn lines() -> Vec<String> {
    let mut segs: Vec<_> = std::fs::read_dir(fixture().join("journal")).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs.iter().flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect::<Vec<_>>()).collect()
}

#[test]
fn old_journal_verifies() {
    let d = data_dir();
    let v = pecgate::audit::verify(&JournalReader::open_read_only(d.path())).unwrap();
    assert_eq!(v.broken, None);
    assert_eq!((v.records, v.segments), (23, 2));
    assert_eq!(v.head, "ab32f588f87af32442470064bcf3190998622c51d1459e74c481e9bea453074d");
}

/// Every record reads into today's types and writes back to exactly the
/// line on disk: the format did not change.
#[test]
fn old_records_re_encode_to_the_same_lines() {
    let lines = lines();
    assert_eq!(lines.len(), 23);
    for line in &lines {
        let (rec, hash) = decode_line(line).unwrap();
        let (again, hash2) = encode_line(&rec);
        assert_eq!(&again, line);
        assert_eq!(hash, hash2);
    }
}

#[test]
fn index_from_old_journal_has_the_same_state() {
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
    let d = data_dir();
    let (st, report) = Store::open(d.path(), StoreOptions::default()).unwrap();
    assert_eq!(report.replayed_records, 23);
    assert_eq!(report.journal_truncated_bytes, 0);
    let mb = "protocollo";
    let mut folders = serde_json::Map::new();
    for (f, state) in st.folders(mb).unwrap() {
        let msgs: Vec<_> = st
            .messages(mb, &f)
            .unwrap()
            .into_iter()
            .map(|(uid, m)| json!({"uid": uid, "hash": m.hash, "flags": m.flags, "modseq": m.modseq, "pec": m.pec}))
            .collect();
        folders.insert(f, json!({"state": state, "messages": msgs}));
    }
    let got = json!({
        "applied_seq": st.applied_seq().unwrap(),
        "folders": folders,
        "sent": st.sent_states(mb).unwrap(),
        "handling": st.handling_all(mb).unwrap(),
        "hidden_receipt": st.hidden_message(mb, "Receipts", 1).unwrap().map(|m| m.pec),
    });
    for k in ["applied_seq", "folders", "sent", "handling", "hidden_receipt"] {
        assert_eq!(got[k], expected[k], "{k}");
    }
    st.close().unwrap();
    // The journal itself was not touched.
    for e in std::fs::read_dir(fixture().join("journal")).unwrap() {
        let e = e.unwrap();
        assert_eq!(std::fs::read(e.path()).unwrap(), std::fs::read(d.path().join("journal").join(e.file_name())).unwrap());
    }
}
