//! The daticert.xml parser (src/pec/daticert.rs) on arbitrary bytes: the
//! document comes from the provider inside each PEC message, so it is
//! hostile input (size, DTDs, encodings, malformed markup and its repair).
//!
//! Checked beyond "no panic": what parses, parses the same way twice; its
//! derived values are computed; and it survives the JSON round trip that
//! archiving puts it through (it is part of the classification stored in
//! the journal record and read back by the index).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pecgate::pec::Daticert;

fuzz_target!(|data: &[u8]| {
    match Daticert::parse(data) {
        Ok(d) => {
            let _ = d.kind();
            assert!(d.certified_recipients().count() <= d.destinatari.len());
            assert_eq!(Daticert::parse(data).as_ref(), Ok(&d), "parsing is deterministic");
            let json = serde_json::to_string(&d).expect("serialises");
            let back: Daticert = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
            assert_eq!(back, d, "JSON round trip: {json}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
