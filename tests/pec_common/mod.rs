//! Shared helpers for the `pec_*` integration tests: loading the fixtures
//! and deriving variants from them by text transformation.
#![allow(dead_code)]

use std::path::PathBuf;

pub const ORIGINAL_ID: &str = "<20261125101455.ABC123@client.comune.example.it>";
pub const IDENTIFICATIVO: &str = "opec21012.20261125101500.4711.12.1.5@pec.example.it";
pub const CERT_A: &str = "ufficio.legale@pec.ditta.example.it";
pub const CERT_B: &str = "amministrazione@pec.altra.example.it";
pub const EXTERNAL: &str = "info@ditta.example.com";

pub const SAMPLES: [&str; 8] = [
    "01-posta-certificata.eml",
    "02-accettazione.eml",
    "03-avvenuta-consegna-completa.eml",
    "04-avvenuta-consegna-sintetica.eml",
    "05-errore-consegna.eml",
    "06-preavviso-errore-consegna.eml",
    "07-non-accettazione.eml",
    "08-anomalia.eml",
];

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pec").join(name)
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(data_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn text(raw: &[u8]) -> String {
    String::from_utf8(raw.to_vec()).expect("fixtures are UTF-8")
}

/// Replaces exactly the occurrences of `from` (which must exist).
pub fn replace(raw: &[u8], from: &str, to: &str) -> Vec<u8> {
    let t = text(raw);
    assert!(t.contains(from), "fixture lacks {from:?}");
    t.replace(from, to).into_bytes()
}

/// CRLF → LF everywhere (a message as stored by a Unix MTA).
pub fn to_lf(raw: &[u8]) -> Vec<u8> {
    text(raw).replace("\r\n", "\n").into_bytes()
}

/// The base64 body of the part named daticert.xml: (start, end) offsets.
fn daticert_span(t: &str) -> (usize, usize) {
    let name = t.find("filename=\"daticert.xml\"").expect("daticert part");
    let start = t[name..].find("\r\n\r\n").expect("part body") + name + 4;
    let end = t[start..].find("\r\n\r\n").expect("part end") + start;
    (start, end)
}

/// The decoded daticert.xml of a fixture.
pub fn daticert_xml(raw: &[u8]) -> String {
    let t = text(raw);
    let (start, end) = daticert_span(&t);
    let b64: String = t[start..end].split_whitespace().collect();
    String::from_utf8(openssl::base64::decode_block(&b64).expect("base64")).expect("utf-8")
}

/// The fixture with its daticert.xml replaced by `xml` (base64, 76 columns).
pub fn with_daticert(raw: &[u8], xml: &[u8]) -> Vec<u8> {
    let t = text(raw);
    let (start, end) = daticert_span(&t);
    let b64 = openssl::base64::encode_block(xml);
    let wrapped: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!("{}{}{}", &t[..start], wrapped.join("\r\n"), &t[end..]).into_bytes()
}

/// Applies a text edit to a fixture's daticert.xml.
pub fn edit_daticert(raw: &[u8], from: &str, to: &str) -> Vec<u8> {
    let xml = daticert_xml(raw);
    assert!(xml.contains(from), "daticert lacks {from:?}");
    with_daticert(raw, xml.replace(from, to).as_bytes())
}
