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

/// The subscription records (per-user SUBSCRIBE/UNSUBSCRIBE, and a
/// category RENAME moving subscriptions) have one written form: these
/// lines read into the events and write back to the same bytes.
#[test]
fn subscription_records_have_a_fixed_form() {
    use pecgate::store::{Event, Record};
    let lines = [
        (
            r#"{"seq":24,"time":"2026-12-06T09:00:00.408003Z","actor":"mario","source":"127.0.0.1:50000","proto":"imap","op":"unsubscribe","mailbox":"protocollo","folder":"Receipts","outcome":"ok","event":{"type":"subscription-changed","user":"mario","name":"protocollo/Receipts","subscribed":false},"prev":"ab32f588f87af32442470064bcf3190998622c51d1459e74c481e9bea453074d"}"#,
            Event::SubscriptionChanged { user: "mario".into(), name: "protocollo/Receipts".into(), subscribed: false },
        ),
        (
            r#"{"seq":25,"time":"2026-12-06T09:00:01.000001Z","actor":"mario","source":"127.0.0.1:50000","proto":"imap","op":"rename","mailbox":"protocollo","folder":"Contratti","outcome":"ok","event":{"type":"subscriptions-renamed","from":"protocollo/Contratti","to":"protocollo/Archivio/Contratti"},"prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
            Event::SubscriptionsRenamed {
                from: "protocollo/Contratti".into(),
                to: "protocollo/Archivio/Contratti".into(),
            },
        ),
    ];
    for (body, event) in lines {
        let rec: Record = serde_json::from_str(body).unwrap();
        assert_eq!(rec.event, event);
        assert_eq!(serde_json::to_string(&rec).unwrap(), body);
        let (line, hash) = encode_line(&rec);
        assert_eq!(decode_line(&line).unwrap(), (rec, hash));
    }
}

/// An old journal with subscription records after it: the index built
/// from it (at open, and again by rebuild-index) holds them.
#[tokio::test]
async fn subscriptions_after_an_old_journal_rebuild() {
    use pecgate::store::{Audit, Change};
    let d = data_dir();
    let (st, _) = Store::open(d.path(), StoreOptions::default()).unwrap();
    let a = |op: &str| Audit::user("mario", Some("127.0.0.1:1".into()), "imap", op);
    let sub = |name: &str, on| Change::Subscribe { user: "mario".into(), name: name.into(), subscribed: on };
    st.commit(a("subscribe"), sub("protocollo/Contratti/2026", true)).await.unwrap();
    st.commit(a("unsubscribe"), sub("protocollo/Receipts", false)).await.unwrap();
    let from = "protocollo/Contratti".to_string();
    st.commit(a("rename"), Change::RenameSubscriptions { from, to: "protocollo/Archivio".into() }).await.unwrap();
    let want = vec![("protocollo/Archivio/2026".to_string(), true), ("protocollo/Receipts".to_string(), false)];
    assert_eq!(st.subscriptions("mario").unwrap(), want);
    assert_eq!(st.subscriptions("anna").unwrap(), vec![]);
    st.close().unwrap();
    drop(st);
    let t0 = std::time::Instant::now();
    while let Err(e) = pecgate::store::rebuild_index(d.path(), &mut |_, _| {}) {
        assert!(matches!(e, pecgate::store::StoreError::Locked(_)) && t0.elapsed().as_secs() < 10, "rebuild: {e}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (st, _) = Store::open(d.path(), StoreOptions::default()).unwrap();
    assert_eq!(st.subscriptions("mario").unwrap(), want);
    st.close().unwrap();
}
