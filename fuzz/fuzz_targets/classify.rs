//! MIME walking and PEC classification (src/pec/classify.rs, mime.rs,
//! envelope.rs, signature.rs' part extraction) on arbitrary message bytes:
//! everything the gateway does with a message pulled from the provider
//! before it is archived (src/upstream/filing.rs), plus what `pec inspect`
//! and the SEARCH field cache derive from it.
//!
//! Input: byte 0 = options (bit 0: filed from the provider's sent folder),
//! the rest = the message.
//!
//! Checked beyond "no panic": the PEC metadata archived with the message
//! survives the JSON round trip through the journal (what the index reads
//! back must equal what was decided); an unwrapped original is a part of
//! the input's decoded bytes, never larger than the input allows.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pecgate::pec::{self, TrustStore};
use pecgate::store::StoredPec;
use pecgate::store::fields::SearchFields;
use pecgate::upstream::filing;

/// The test provider's CA (the same the signature tests use), so signed
/// inputs go through the whole CMS check.
static TRUST: LazyLock<TrustStore> = LazyLock::new(|| {
    TrustStore::from_pem(include_bytes!("../../tests/data/pec/test-provider-ca.pem")).expect("test CA")
});

fuzz_target!(|data: &[u8]| {
    let Some((&opts, raw)) = data.split_first() else { return };
    let date = chrono::DateTime::from_timestamp(1_764_000_000, 0).expect("valid time");
    let filing = filing::file(raw, opts & 1 != 0, date, Some(&TRUST));
    let c = &filing.meta.classification;
    let _ = (c.folder(), c.is_receipt(), c.is_anomaly_or_error(), c.consegna());

    // What the archive stores (the `pec` of the journal record) and the
    // index reads back: the same metadata, never "unrecognised".
    let stored = StoredPec::from(filing.meta.clone());
    let line = serde_json::to_string(&stored).expect("meta serialises");
    let back: StoredPec = serde_json::from_str(&line).expect("own JSON parses");
    assert_eq!(back.meta(), Some(&filing.meta), "PEC metadata JSON round trip: {:?}: {line}", back.unrecognised_because());

    if let Ok(u) = pec::unwrap_envelope(raw) {
        // Transfer decoding never makes a part larger than the message.
        assert!(u.original.as_ref().is_none_or(|o| o.len() <= raw.len()));
        assert!(u.daticert.as_ref().is_none_or(|d| d.len() <= raw.len()));
    }
    let i = pec::inspect(raw, None);
    let _ = pec::render_text(&i);
    let _ = SearchFields::of(raw);
});
