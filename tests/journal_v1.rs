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
    // MODSEQs are derived from the records' times since CONDSTORE (issue
    // 22: microseconds, so that a deadline can be one): they are checked
    // for what they must be, the rest of the state for equality.
    let (mut got, mut expected) = (got, expected);
    let record_times = 1_700_000_000_000_000u64..2_000_000_000_000_000;
    for (f, v) in got["folders"].as_object().unwrap() {
        let highest = v["state"]["highest_modseq"].as_u64().unwrap();
        assert!(record_times.contains(&highest), "{f}: {highest}");
        for m in v["messages"].as_array().unwrap() {
            let ms = m["modseq"].as_u64().unwrap();
            assert!(record_times.contains(&ms) && ms <= highest, "{f}: {ms} > {highest}");
        }
    }
    strip_modseqs(&mut got);
    strip_modseqs(&mut expected);
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

fn strip_modseqs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("modseq");
            o.remove("highest_modseq");
            o.values_mut().for_each(strip_modseqs);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_modseqs),
        _ => {}
    }
}

/// The same state, typed: metadata reads as metadata, the two records whose
/// `pec` this code does not understand read as messages without it (and
/// keep their JSON, as the comparison above shows).
#[test]
fn old_pec_metadata_reads_typed() {
    use pecgate::pec::reconcile::Overall;
    use pecgate::pec::{PecKind, SignatureStatus};
    use pecgate::store::StoredPec;
    let d = data_dir();
    let (st, _) = Store::open(d.path(), StoreOptions::default()).unwrap();
    let mb = "protocollo";
    let inbox = st.messages(mb, "INBOX").unwrap();
    assert_eq!(inbox.len(), 3);
    let env = inbox[0].1.pec_meta().expect("envelope metadata");
    assert_eq!(env.classification.kind, PecKind::PostaCertificata);
    assert!(matches!(env.signature, Some(SignatureStatus::Valid { .. })));
    for (_, m) in &inbox[1..] {
        assert!(matches!(m.pec, Some(StoredPec::Unrecognised(_))), "{:?}", m.pec);
        assert_eq!(m.pec_meta(), None);
    }
    let sent = st.messages(mb, "Sent").unwrap();
    let key = &sent[0].1.pec_meta().and_then(|p| p.sent.as_ref()).expect("sent info").key;
    let state = st.sent_state(mb, key).unwrap().expect("reconciliation state");
    assert_eq!(state.overall(), Overall::Accepted);
    let receipts = st.messages(mb, "Receipts").unwrap();
    let warned = receipts.iter().find_map(|(_, m)| m.pec_meta().filter(|p| p.classification.kind == PecKind::PreavvisoErroreConsegna));
    assert!(matches!(warned.and_then(|p| p.signature.as_ref()), Some(SignatureStatus::Invalid { .. })));
    st.close().unwrap();

    // The handling register, read from the journal beside a store: sender and
    // subject come from the typed daticert.
    let rows = pecgate::handling::commands::report_rows(d.path(), &Default::default(), chrono::Utc::now()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].sender.as_deref(), Some("protocollo@pec.comune.example.it"));
    assert!(rows[0].subject.as_deref().is_some_and(|s| s.contains("Sollecito")), "{:?}", rows[0].subject);
}
