//! Hostile and broken input: nothing in the PEC module may panic, blow the
//! stack, or take unbounded time or memory, whatever bytes arrive. Anyone
//! can send mail into a PEC box (it arrives as an anomaly), so every parser
//! here sees attacker-controlled input before any signature check.

mod pec_common;

use std::time::{Duration, Instant};

use pec_common::*;
use pecgate::pec::daticert::{DaticertError, MAX_DATICERT_BYTES};
use pecgate::pec::{classify, inspect, unwrap_envelope, verify, Daticert, TrustStore};
use proptest::prelude::*;

/// Generous even for the unoptimised test profile; the point is "bounded",
/// not "fast" (the benchmark measures speed).
const BOUND: Duration = Duration::from_secs(10);

fn trust() -> &'static TrustStore {
    static TRUST: std::sync::OnceLock<TrustStore> = std::sync::OnceLock::new();
    TRUST.get_or_init(|| TrustStore::from_pem(&sample("test-provider-ca.pem")).unwrap())
}

/// Runs every entry point on `raw`; a panic fails the test.
fn exercise(raw: &[u8]) {
    let c = classify(raw);
    let _ = serde_json::to_string(&c).unwrap();
    let _ = unwrap_envelope(raw);
    let _ = verify(raw, trust());
    let _ = Daticert::parse(raw);
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(start.elapsed() < BOUND, "{what} took {:?}", start.elapsed());
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    HugeHeader(usize),
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec((any::<usize>(), 1u8..=255), 1..16).prop_map(Mutation::Flip),
        (1usize..200_000).prop_map(Mutation::HugeHeader),
        (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(a, b, c)| Mutation::Splice(a, b, c)),
    ]
}

fn mutate(raw: &[u8], m: &Mutation) -> Vec<u8> {
    let mut v = raw.to_vec();
    match m {
        Mutation::Truncate(at) => v.truncate(at % (raw.len() + 1)),
        Mutation::Flip(flips) => {
            for (at, mask) in flips {
                let i = at % v.len();
                v[i] ^= mask;
            }
        }
        Mutation::HugeHeader(len) => {
            let mut header = b"X-Huge: ".to_vec();
            header.extend(std::iter::repeat_n(b'a', *len));
            header.extend_from_slice(b"\r\n");
            v.splice(0..0, header);
        }
        Mutation::Splice(a, b, c) => {
            // Copy a slice of the message somewhere else (duplicated
            // boundaries, headers inside bodies, …).
            let (a, b) = (a % v.len(), b % v.len());
            let (lo, hi) = (a.min(b), a.max(b));
            let chunk = v[lo..hi].to_vec();
            let at = c % v.len();
            v.splice(at..at, chunk);
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..4096)) {
        exercise(&raw);
    }

    #[test]
    fn arbitrary_header_like_text(raw in "([A-Za-z-]{1,20}: [ -~]{0,80}\r?\n){0,20}(\r?\n[ -~\r\n]{0,400})?") {
        exercise(raw.as_bytes());
    }

    #[test]
    fn mutated_samples(which in 0usize..8, m in mutation()) {
        let raw = mutate(&sample(SAMPLES[which]), &m);
        exercise(&raw);
        let _ = inspect(&raw, Some(trust()));
    }

    #[test]
    fn mutated_daticert(which in 0usize..7, m in mutation()) {
        let xml = daticert_xml(&sample(SAMPLES[which]));
        let bytes = mutate(xml.as_bytes(), &m);
        let _ = Daticert::parse(&bytes);
        // And inside the envelope, as base64.
        let _ = classify(&with_daticert(&sample(SAMPLES[which]), &bytes));
    }

    #[test]
    fn arbitrary_text_in_daticert_fields(s in "[<>&;#a-z0-9 \"']{0,64}") {
        let xml = daticert_xml(&sample("03-avvenuta-consegna-completa.eml"));
        for field in ["<msgid>", "<oggetto>", "<consegna>"] {
            let at = xml.find(field).unwrap() + field.len();
            let edited = format!("{}{}{}", &xml[..at], s, &xml[at..]);
            let _ = Daticert::parse(edited.as_bytes());
        }
    }
}

// ---- hostile XML --------------------------------------------------------------

fn accettazione_xml() -> String {
    daticert_xml(&sample("02-accettazione.eml"))
}

#[test]
fn billion_laughs_is_refused() {
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE postacert [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
        xml.push_str(&format!("<!ENTITY lol{i} \"{}\">\n", format!("&{prev};").repeat(10)));
    }
    xml.push_str("]>\n<postacert tipo=\"accettazione\"><intestazione><oggetto>&lol9;</oggetto></intestazione></postacert>");
    let err = timed("billion laughs", || Daticert::parse(xml.as_bytes())).unwrap_err();
    assert_eq!(err, DaticertError::Dtd);
    // Inside an envelope it becomes a daticert_error, not a crash.
    let c = timed("billion laughs in envelope", || {
        classify(&with_daticert(&sample("02-accettazione.eml"), xml.as_bytes()))
    });
    assert!(c.daticert.is_none());
    assert!(c.daticert_error.unwrap().contains("DTD"));
}

#[test]
fn dtd_and_external_entities_are_refused() {
    let body = accettazione_xml();
    let decl_end = body.find("?>").unwrap() + 2;
    for dtd in [
        "<!DOCTYPE postacert SYSTEM \"http://example.com/daticert.dtd\">",
        "<!DOCTYPE postacert [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>",
        "<!doctype postacert>",
    ] {
        let xml = format!("{}{dtd}{}", &body[..decl_end], &body[decl_end..]);
        assert_eq!(Daticert::parse(xml.as_bytes()), Err(DaticertError::Dtd), "{dtd}");
    }
    // An undeclared entity outside a text element is an error, not expanded.
    let xml = body.replace("tipo=\"accettazione\"", "tipo=\"&xxe;\"");
    assert!(matches!(Daticert::parse(xml.as_bytes()), Err(DaticertError::Xml { .. })));
}

#[test]
fn ten_megabytes_is_refused_quickly() {
    let mut xml = accettazione_xml().into_bytes();
    xml.extend(std::iter::repeat_n(b' ', 10 * 1024 * 1024));
    let err = timed("10 MB daticert", || Daticert::parse(&xml)).unwrap_err();
    assert!(matches!(err, DaticertError::TooLarge { len, max } if len > max && max == MAX_DATICERT_BYTES));
    // A 10 MB message body is classified in bounded time too.
    let t = text(&sample("03-avvenuta-consegna-completa.eml"));
    let big = t.replacen("Gentile cliente,", &"Gentile cliente, ".repeat(600_000), 1);
    assert!(big.len() > 10_000_000);
    let c = timed("10 MB message", || classify(big.as_bytes()));
    assert!(c.daticert.is_some());
    timed("10 MB verify", || verify(big.as_bytes(), trust()));
}

#[test]
fn deep_nesting_is_refused() {
    let deep = |n: usize| {
        format!(
            "<postacert tipo=\"accettazione\">{}{}</postacert>",
            "<a>".repeat(n),
            "</a>".repeat(n)
        )
    };
    // 100k levels: over the size bound before any parsing.
    let err = timed("100k deep", || Daticert::parse(deep(100_000).as_bytes())).unwrap_err();
    assert!(matches!(err, DaticertError::TooLarge { .. }));
    // Within the size bound but deeper than the depth bound.
    let err = timed("5k deep", || Daticert::parse(deep(5_000).as_bytes())).unwrap_err();
    assert!(matches!(err, DaticertError::TooDeep { .. }));
    // Self-closing elements count too.
    let xml = format!("<postacert tipo=\"x\">{}<b/>{}</postacert>", "<a>".repeat(15), "</a>".repeat(15));
    assert!(matches!(Daticert::parse(xml.as_bytes()), Err(DaticertError::TooDeep { .. })));
}

/// One start tag with as many attributes as fit in the size bound (the
/// shape of RUSTSEC-2026-0194, quadratic duplicate-name checks in
/// quick-xml < 0.41): the attributes the parser wants come last, so every
/// lookup walks them all.
#[test]
fn many_attributes_on_one_tag_are_bounded() {
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i:x}=\"\"")).collect::<String>();
    let n = 4_000;
    let xml = format!(
        "<postacert{} tipo=\"accettazione\" errore=\"nessuno\"><intestazione>\
         <destinatari{} tipo=\"certificato\">x@example.com</destinatari></intestazione></postacert>",
        attrs(n),
        attrs(n / 2)
    );
    assert!(xml.len() < MAX_DATICERT_BYTES, "{}", xml.len());
    let d = timed("attributes", || Daticert::parse(xml.as_bytes())).unwrap();
    assert_eq!(d.tipo, "accettazione");
    assert_eq!(d.certified_recipients().collect::<Vec<_>>(), ["x@example.com"]);
    // A repeated name is not looked for (the first `tipo` wins) and is no error.
    let dup = format!("<postacert{} tipo=\"accettazione\" tipo=\"errore\"/>", attrs(n));
    assert_eq!(timed("repeated attribute", || Daticert::parse(dup.as_bytes())).unwrap().tipo, "accettazione");
}

#[test]
fn wrong_encoding_declarations_are_refused() {
    let body = accettazione_xml();
    for enc in ["UTF-16", "EBCDIC-US", "windows-1252", "Shift_JIS"] {
        let xml = body.replace("encoding=\"UTF-8\"", &format!("encoding=\"{enc}\""));
        assert!(
            matches!(Daticert::parse(xml.as_bytes()), Err(DaticertError::UnsupportedEncoding(_))),
            "{enc}"
        );
    }
    // Declared UTF-8, actually Latin-1.
    let mut xml = body.clone().into_bytes();
    let at = body.find("fattura idrica").unwrap();
    xml[at + 1] = 0xE0;
    assert!(matches!(Daticert::parse(&xml), Err(DaticertError::InvalidUtf8 { .. })));
    // UTF-16 with a byte-order mark.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(body.encode_utf16().flat_map(|u| u.to_le_bytes()))
        .collect();
    assert!(matches!(Daticert::parse(&utf16), Err(DaticertError::UnsupportedEncoding(_))));
}

#[test]
fn structural_errors_are_actionable() {
    assert_eq!(Daticert::parse(b""), Err(DaticertError::Empty));
    assert!(matches!(
        Daticert::parse(b"<other tipo=\"accettazione\"/>"),
        Err(DaticertError::WrongRoot { .. })
    ));
    assert_eq!(Daticert::parse(b"<postacert errore=\"nessuno\"/>"), Err(DaticertError::MissingTipo));
    let err = Daticert::parse(b"<postacert tipo=\"accettazione\"><dati>").unwrap_err();
    assert!(err.to_string().contains("not well-formed"), "{err}");
}

#[test]
fn deeply_nested_mime_does_not_overflow_the_stack() {
    let n = 20_000;
    let mut m = String::from("From: a@example.com\r\nSubject: deep\r\n");
    for i in 0..n {
        m.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"));
    }
    m.push_str("Content-Type: text/plain\r\n\r\nhi\r\n");
    timed("deep multipart", || exercise(m.as_bytes()));
    let mut m = String::from("From: a@example.com\r\n");
    for _ in 0..n {
        m.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    m.push_str("Subject: x\r\n\r\nhi\r\n");
    timed("deep message/rfc822", || exercise(m.as_bytes()));
}

#[test]
fn many_parts_and_huge_headers() {
    let mut m = String::from("From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
    for i in 0..50_000 {
        m.push_str(&format!("--b\r\nContent-Type: application/xml; name=\"d{i}.xml\"\r\n\r\n<x/>\r\n"));
    }
    m.push_str("--b--\r\n");
    timed("50k parts", || exercise(m.as_bytes()));
    let huge = format!("Subject: {}\r\nX-Ricevuta: {}\r\n\r\nbody", "a".repeat(2_000_000), "b".repeat(2_000_000));
    timed("huge headers", || exercise(huge.as_bytes()));
}
