//! One journal line (src/store/journal.rs `decode_line`, the records of
//! src/store/record.rs): what `audit verify`, `store check`, the journal's
//! own open and the metrics tail parse from disk, and what an export brings
//! back from outside (`audit verify-export`).
//!
//! A random line almost never carries the right hash, so each input is
//! tried twice: as it is (hash check and framing), and as a record body
//! with its correct hash appended, which gets the JSON record parser.
//!
//! Checked beyond "no panic": a body with its own hash is never refused for
//! its hash; every record that decodes re-encodes (`encode_line`) into a
//! line that decodes to the same record; an archived message's `pec`
//! (`StoredPec`: typed metadata, or JSON this version does not understand,
//! kept as written) reads back as itself; what the index and the audit
//! filters read from a record is computed without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pecgate::audit::Filter;
use pecgate::store::{decode_line, encode_line, LineError};
use pecgate::store::{Event, Record, StoredPec};
use sha2::{Digest, Sha256};

fn exercise(rec: &Record) {
    let filter = Filter { user: Some("mario".into()), mailbox: Some("prot".into()), ..Filter::default() };
    let _ = filter.matches(rec);
    let _ = rec.event.mailbox();
    match &rec.event {
        Event::Archived { pec: Some(p), .. } => {
            // What the index reads (metadata, or why not) and writes back.
            match p {
                StoredPec::Meta(_) => assert!(p.unrecognised_because().is_none()),
                StoredPec::Unrecognised(_) => assert!(p.meta().is_none() && p.unrecognised_because().is_some()),
            }
            let json = serde_json::to_string(p).expect("pec serialises");
            let back: StoredPec = serde_json::from_str(&json).unwrap_or_else(|e| panic!("own pec JSON refused: {e}: {json}"));
            assert_eq!(&back, p, "pec JSON round trip: {json}");
        }
        Event::FlagsChanged { op, flags, .. } => {
            let _ = op.apply(flags, flags);
        }
        _ => {}
    }
    let (line, hash) = encode_line(rec);
    let (again, hash2) = decode_line(&line).unwrap_or_else(|e| panic!("own line refused: {e}: {line}"));
    assert_eq!(hash, hash2);
    assert_eq!(&again, rec, "re-encoded record differs: {line}");
}

fuzz_target!(|data: &[u8]| {
    // As journal::read_all reads a line.
    let text = String::from_utf8_lossy(data);
    if let Ok((rec, _)) = decode_line(&text) {
        exercise(&rec);
    }
    // The same text as a body, hashed as the writer does.
    if let Some(open) = text.strip_suffix('}') {
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        let line = format!("{open},\"hash\":\"{hash}\"}}");
        match decode_line(&line) {
            Ok((rec, h)) => {
                assert_eq!(h, hash);
                exercise(&rec);
            }
            Err(LineError::Json(_)) => {}
            Err(e) => panic!("a body with its own hash refused: {e}: {line}"),
        }
    }
});
