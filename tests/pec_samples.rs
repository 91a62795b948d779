//! Classification, daticert parsing and unwrapping of the shared synthetic
//! samples, plus variants derived from them by text transformation to cover
//! what real providers do differently (line endings, folding, header case,
//! encoded subjects, bracket-less ids, odd attachment names and types, the
//! unescaped-msgid defect, and signals that disagree).

mod pec_common;

use chrono::{FixedOffset, TimeZone};
use pec_common::*;
use pecgate::pec::daticert::{Errore, RecipientType};
use pecgate::pec::{
    classify, inspect, render_text, unwrap_envelope, Classification, Daticert, PecError, PecFolder, PecKind,
    ReceiptForm,
};
use std::str::FromStr;

fn completa() -> PecKind {
    PecKind::AvvenutaConsegna { form: ReceiptForm::Completa }
}

fn expected_date() -> chrono::DateTime<FixedOffset> {
    FixedOffset::east_opt(3600)
        .unwrap()
        .with_ymd_and_hms(2026, 11, 25, 10, 15, 2)
        .unwrap()
}

/// The common assertions for a sample of the shared submission.
fn assert_submission_daticert(c: &Classification, tipo: &str) {
    assert_eq!(c.original_message_id.as_deref(), Some(ORIGINAL_ID));
    assert_eq!(c.identificativo.as_deref(), Some(IDENTIFICATIVO));
    let d = c.daticert.as_ref().expect("daticert parsed");
    assert_eq!(d.tipo, tipo);
    assert!(!d.malformed);
    assert_eq!(d.mittente.as_deref(), Some("protocollo@pec.comune.example.it"));
    assert_eq!(d.risposte.as_deref(), Some("protocollo@pec.comune.example.it"));
    assert_eq!(d.oggetto.as_deref(), Some("Sollecito di pagamento n. 42/2026 - fattura idrica"));
    assert_eq!(d.gestore_emittente.as_deref(), Some("EXAMPLE PEC S.p.A."));
    assert_eq!(d.data, Some(expected_date()));
    assert_eq!(d.data.map(|t| t.offset().local_minus_utc()), Some(3600));
    let recipients: Vec<(&str, &RecipientType)> =
        d.destinatari.iter().map(|r| (r.address.as_str(), &r.tipo)).collect();
    assert_eq!(
        recipients,
        vec![
            (CERT_A, &RecipientType::Certificato),
            (CERT_B, &RecipientType::Certificato),
            (EXTERNAL, &RecipientType::Esterno),
        ]
    );
    assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);
    assert_eq!(c.daticert_error, None);
}

#[test]
fn sample_01_posta_certificata() {
    let c = classify(&sample("01-posta-certificata.eml"));
    assert_eq!(c.kind, PecKind::PostaCertificata);
    assert_eq!(c.folder(), PecFolder::Inbox);
    assert!(!c.is_receipt() && !c.is_anomaly_or_error());
    assert_submission_daticert(&c, "posta-certificata");
    let d = c.daticert.as_ref().unwrap();
    assert_eq!(d.errore, Some(Errore::Nessuno));
    assert_eq!(d.consegna, None);
    assert_eq!(d.ricevuta, None);
    assert_eq!(
        c.message_id.as_deref(),
        Some("<opec21012.20261125101500.4711.12.1.5@pec.example.it>")
    );
    assert_eq!(
        c.subject.as_deref(),
        Some("POSTA CERTIFICATA: Sollecito di pagamento n. 42/2026 - fattura idrica")
    );
}

#[test]
fn sample_02_accettazione() {
    let c = classify(&sample("02-accettazione.eml"));
    assert_eq!(c.kind, PecKind::Accettazione);
    assert_eq!(c.folder(), PecFolder::Receipts);
    assert!(c.is_receipt() && !c.is_anomaly_or_error());
    assert_submission_daticert(&c, "accettazione");
    assert_eq!(c.consegna(), None);
    assert_eq!(
        c.message_id.as_deref(),
        Some("<accettazione-opec21012.20261125101500.4711.12.1.5@pec.example.it>")
    );
}

#[test]
fn sample_03_avvenuta_consegna_completa() {
    let c = classify(&sample("03-avvenuta-consegna-completa.eml"));
    assert_eq!(c.kind, completa());
    assert_eq!(c.folder(), PecFolder::Receipts);
    assert_submission_daticert(&c, "avvenuta-consegna");
    assert_eq!(c.consegna(), Some(CERT_A));
    assert_eq!(c.daticert.as_ref().unwrap().ricevuta, Some(ReceiptForm::Completa));
}

#[test]
fn sample_04_avvenuta_consegna_sintetica() {
    let c = classify(&sample("04-avvenuta-consegna-sintetica.eml"));
    assert_eq!(c.kind, PecKind::AvvenutaConsegna { form: ReceiptForm::Sintetica });
    assert_eq!(c.folder(), PecFolder::Receipts);
    assert_submission_daticert(&c, "avvenuta-consegna");
    assert_eq!(c.consegna(), Some(CERT_B));
}

#[test]
fn sample_05_errore_consegna() {
    let c = classify(&sample("05-errore-consegna.eml"));
    assert_eq!(c.kind, PecKind::ErroreConsegna);
    assert_eq!(c.folder(), PecFolder::Anomalies);
    assert!(c.is_receipt() && c.is_anomaly_or_error());
    assert_submission_daticert(&c, "errore-consegna");
    let d = c.daticert.as_ref().unwrap();
    assert_eq!(d.errore, Some(Errore::NoDest));
    assert_eq!(d.consegna.as_deref(), Some(CERT_B));
    assert_eq!(d.errore_esteso.as_deref(), Some("5.1.1 - Utente non riconosciuto"));
}

#[test]
fn sample_06_preavviso() {
    let c = classify(&sample("06-preavviso-errore-consegna.eml"));
    assert_eq!(c.kind, PecKind::PreavvisoErroreConsegna);
    assert_eq!(c.folder(), PecFolder::Receipts);
    assert_submission_daticert(&c, "preavviso-errore-consegna");
    let d = c.daticert.as_ref().unwrap();
    assert_eq!(d.errore, Some(Errore::Altro));
    assert_eq!(d.consegna.as_deref(), Some(CERT_B));
    assert!(d.errore_esteso.as_deref().unwrap().contains("12 ore"));
}

#[test]
fn sample_07_non_accettazione() {
    let c = classify(&sample("07-non-accettazione.eml"));
    assert_eq!(c.kind, PecKind::NonAccettazione);
    assert_eq!(c.folder(), PecFolder::Anomalies);
    assert_submission_daticert(&c, "non-accettazione");
    let d = c.daticert.as_ref().unwrap();
    assert_eq!(d.errore, Some(Errore::Altro));
    assert_eq!(d.consegna, None);
    assert_eq!(
        d.errore_esteso.as_deref(),
        Some("Il mittente non corrisponde al titolare della casella")
    );
}

#[test]
fn sample_08_anomalia_without_daticert() {
    let c = classify(&sample("08-anomalia.eml"));
    assert_eq!(c.kind, PecKind::Anomalia);
    assert_eq!(c.folder(), PecFolder::Anomalies);
    assert!(!c.is_receipt() && c.is_anomaly_or_error());
    assert!(c.daticert.is_none());
    assert_eq!(c.daticert_error, None);
    assert_eq!(c.original_message_id.as_deref(), Some("<news-998877@example.com>"));
    // No daticert: the envelope's own Message-ID stands in for the id.
    assert_eq!(
        c.identificativo.as_deref(),
        Some("anomalia-opec21012.20261125101500.4711.12.1.5@pec.example.it")
    );
    assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);
}

#[test]
fn daticert_parse_direct_from_sample() {
    let xml = daticert_xml(&sample("05-errore-consegna.eml"));
    let d = Daticert::parse(xml.as_bytes()).unwrap();
    assert_eq!(d.kind(), Some(PecKind::ErroreConsegna));
    assert_eq!(d.certified_recipients().collect::<Vec<_>>(), vec![CERT_A, CERT_B]);
}

#[test]
fn classification_serde_round_trip() {
    for name in SAMPLES {
        let c = classify(&sample(name));
        let json = serde_json::to_string(&c).unwrap();
        let back: Classification = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c, "{name}");
    }
    let json = serde_json::to_value(classify(&sample("03-avvenuta-consegna-completa.eml"))).unwrap();
    assert_eq!(json["kind"]["type"], "avvenuta-consegna");
    assert_eq!(json["kind"]["form"], "completa");
}

#[test]
fn kind_names_round_trip() {
    let names = [
        "posta-certificata",
        "accettazione",
        "non-accettazione",
        "presa-in-carico",
        "avvenuta-consegna",
        "preavviso-errore-consegna",
        "errore-consegna",
        "rilevazione-virus",
        "anomalia",
        "plain",
    ];
    for name in names {
        assert_eq!(PecKind::from_str(name).unwrap().as_str(), name);
    }
    assert_eq!(completa().as_str(), "avvenuta-consegna");
    assert!(PecKind::from_str("ricevuta").is_err());
}

// ---- variants ------------------------------------------------------------

#[test]
fn many_recipients_certified_and_external() {
    let raw = edit_daticert(
        &sample("02-accettazione.eml"),
        "<destinatari tipo=\"esterno\">info@ditta.example.com</destinatari>",
        "<destinatari tipo=\"esterno\">info@ditta.example.com</destinatari>\
         <destinatari tipo=\"certificato\">c3@pec.example.org</destinatari>\
         <destinatari tipo=\"esterno\">e2@example.net</destinatari>\
         <destinatari tipo=\"certificato\">C4@PEC.example.org</destinatari>",
    );
    let c = classify(&raw);
    let d = c.daticert.unwrap();
    let certified: Vec<&str> = d.certified_recipients().collect();
    assert_eq!(certified, vec![CERT_A, CERT_B, "c3@pec.example.org", "C4@PEC.example.org"]);
    let external: Vec<&str> = d
        .destinatari
        .iter()
        .filter(|r| r.tipo == RecipientType::Esterno)
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(external, vec![EXTERNAL, "e2@example.net"]);
}

#[test]
fn every_receipt_form() {
    let raw = sample("03-avvenuta-consegna-completa.eml");
    for (word, form) in [
        ("completa", ReceiptForm::Completa),
        ("breve", ReceiptForm::Breve),
        ("sintetica", ReceiptForm::Sintetica),
    ] {
        let v = edit_daticert(&raw, "<ricevuta tipo=\"completa\"/>", &format!("<ricevuta tipo=\"{word}\"/>"));
        let v = replace(&v, "X-TipoRicevuta: completa\r\nMIME", &format!("X-TipoRicevuta: {word}\r\nMIME"));
        let c = classify(&v);
        assert_eq!(c.kind, PecKind::AvvenutaConsegna { form }, "{word}");
        assert!(c.disagreements.is_empty(), "{word}: {:?}", c.disagreements);
    }
    // Without daticert ricevuta the header decides; without both: Unknown.
    let v = edit_daticert(&raw, "<ricevuta tipo=\"completa\"/>", "");
    assert_eq!(classify(&v).kind, completa());
    let v = replace(&v, "X-TipoRicevuta: completa\r\nMIME", "MIME");
    assert_eq!(classify(&v).kind, PecKind::AvvenutaConsegna { form: ReceiptForm::Unknown });
}

#[test]
fn unix_line_endings_classify_the_same() {
    for name in SAMPLES {
        let crlf = classify(&sample(name));
        let lf = classify(&to_lf(&sample(name)));
        assert_eq!(lf.kind, crlf.kind, "{name}");
        assert_eq!(lf.original_message_id, crlf.original_message_id, "{name}");
        assert_eq!(lf.identificativo, crlf.identificativo, "{name}");
        assert_eq!(lf.daticert, crlf.daticert, "{name}");
        assert_eq!(lf.subject, crlf.subject, "{name}");
    }
}

#[test]
fn folded_headers() {
    let raw = sample("03-avvenuta-consegna-completa.eml");
    let v = replace(&raw, "X-Ricevuta: avvenuta-consegna", "X-Ricevuta:\r\n avvenuta-consegna");
    let v = replace(
        &v,
        "X-Riferimento-Message-ID: <20261125101455.ABC123@client.comune.example.it>",
        "X-Riferimento-Message-ID:\r\n\t<20261125101455.ABC123@\r\n client.comune.example.it>",
    );
    let v = replace(
        &v,
        "Subject: CONSEGNA: Sollecito di pagamento n. 42/2026 - fattura idrica",
        "Subject: CONSEGNA: Sollecito di pagamento\r\n n. 42/2026 - fattura idrica",
    );
    let c = classify(&v);
    assert_eq!(c.kind, completa());
    assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);
    assert_eq!(c.subject.as_deref(), Some("CONSEGNA: Sollecito di pagamento n. 42/2026 - fattura idrica"));
    // Header-only path (no daticert) still reads the folded header.
    let no_dati = edit_without_daticert(&v);
    let c = classify(&no_dati);
    assert_eq!(c.kind, completa());
    assert_eq!(c.original_message_id.as_deref(), Some(ORIGINAL_ID));
}

/// The message with its daticert part renamed and retyped so it is not found.
fn edit_without_daticert(raw: &[u8]) -> Vec<u8> {
    let v = replace(raw, "application/xml; name=\"daticert.xml\"", "image/png; name=\"other.png\"");
    replace(&v, "filename=\"daticert.xml\"", "filename=\"other.png\"")
}

#[test]
fn rfc2047_encoded_italian_subjects() {
    let raw = sample("03-avvenuta-consegna-completa.eml");
    let subject_line = "Subject: CONSEGNA: Sollecito di pagamento n. 42/2026 - fattura idrica";
    let b = format!(
        "Subject: =?UTF-8?B?{}?=",
        openssl::base64::encode_block("CONSEGNA: Perché è già così – più".as_bytes())
    );
    let c = classify(&replace(&raw, subject_line, &b));
    assert_eq!(c.subject.as_deref(), Some("CONSEGNA: Perché è già così – più"));
    assert_eq!(c.kind, completa());
    assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);

    let q = "Subject: =?utf-8?Q?CONSEGNA:_Citt=C3=A0_di_Forl=C3=AC?=\r\n =?utf-8?Q?_-_atto_n._7?=";
    let c = classify(&replace(&raw, subject_line, q));
    assert_eq!(c.subject.as_deref(), Some("CONSEGNA: Città di Forlì - atto n. 7"));
    assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);

    let latin1 = "Subject: =?ISO-8859-1?Q?ACCETTAZIONE:_universit=E0?=";
    let c = classify(&replace(
        &sample("02-accettazione.eml"),
        "Subject: ACCETTAZIONE: Sollecito di pagamento n. 42/2026 - fattura idrica",
        latin1,
    ));
    assert_eq!(c.subject.as_deref(), Some("ACCETTAZIONE: università"));
    assert_eq!(c.kind, PecKind::Accettazione);
}

#[test]
fn header_names_in_any_case() {
    let raw = sample("04-avvenuta-consegna-sintetica.eml");
    for (ricevuta, rif, tipo, mid) in [
        ("x-ricevuta", "x-riferimento-message-id", "x-tiporicevuta", "message-id"),
        ("X-RICEVUTA", "X-RIFERIMENTO-MESSAGE-ID", "X-TIPORICEVUTA", "MESSAGE-ID"),
    ] {
        let v = replace(&raw, "X-Ricevuta:", &format!("{ricevuta}:"));
        let v = replace(&v, "X-Riferimento-Message-ID:", &format!("{rif}:"));
        let v = replace(&v, "X-TipoRicevuta:", &format!("{tipo}:"));
        let v = replace(&v, "\r\nMessage-ID:", &format!("\r\n{mid}:"));
        // Take the daticert out so the headers alone must carry the result.
        let c = classify(&edit_without_daticert(&v));
        assert_eq!(c.kind, PecKind::AvvenutaConsegna { form: ReceiptForm::Sintetica }, "{ricevuta}");
        assert_eq!(c.original_message_id.as_deref(), Some(ORIGINAL_ID));
        assert_eq!(
            c.message_id.as_deref(),
            Some("<consegna2-opec21012.20261125101500.4711.12.1.5@pec.example.it>")
        );
        assert!(c.warnings.iter().any(|w| w.contains("no daticert")), "{:?}", c.warnings);
    }
}

#[test]
fn message_ids_with_and_without_brackets() {
    let raw = sample("02-accettazione.eml");
    let v = replace(
        &raw,
        "X-Riferimento-Message-ID: <20261125101455.ABC123@client.comune.example.it>",
        "X-Riferimento-Message-ID: 20261125101455.ABC123@client.comune.example.it",
    );
    let v = replace(
        &v,
        "Message-ID: <accettazione-opec",
        "Message-ID: accettazione-opec",
    );
    let v = replace(&v, "5@pec.example.it>\r\nX-Ricevuta", "5@pec.example.it\r\nX-Ricevuta");
    let v = edit_daticert(
        &v,
        "&lt;20261125101455.ABC123@client.comune.example.it&gt;",
        " 20261125101455.ABC123@client.comune.example.it ",
    );
    let c = classify(&v);
    assert_eq!(c.original_message_id.as_deref(), Some(ORIGINAL_ID));
    assert_eq!(
        c.message_id.as_deref(),
        Some("<accettazione-opec21012.20261125101500.4711.12.1.5@pec.example.it>")
    );
    assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);
}

#[test]
fn disagreements_are_reported_not_guessed() {
    let raw = sample("03-avvenuta-consegna-completa.eml");
    // Header says acceptance, daticert says delivery: the signed daticert wins.
    let v = replace(&raw, "X-Ricevuta: avvenuta-consegna", "X-Ricevuta: accettazione");
    let c = classify(&v);
    assert_eq!(c.kind, completa());
    assert_eq!(c.disagreements.len(), 2, "{:?}", c.disagreements); // header vs daticert, header vs subject
    assert!(c.disagreements[0].contains("accettazione") && c.disagreements[0].contains("avvenuta-consegna"));

    // Subject alone disagrees.
    let v = replace(&raw, "Subject: CONSEGNA:", "Subject: ACCETTAZIONE:");
    let c = classify(&v);
    assert_eq!(c.kind, completa());
    assert_eq!(c.disagreements.len(), 2, "{:?}", c.disagreements);
    assert!(c.disagreements.iter().all(|d| d.contains("subject prefix")));

    // Receipt form disagreement.
    let v = replace(&raw, "X-TipoRicevuta: completa\r\nMIME", "X-TipoRicevuta: sintetica\r\nMIME");
    let c = classify(&v);
    assert_eq!(c.kind, completa());
    assert!(c.disagreements.iter().any(|d| d.contains("X-TipoRicevuta")), "{:?}", c.disagreements);

    // Original Message-ID disagreement.
    let v = replace(
        &raw,
        "X-Riferimento-Message-ID: <20261125101455",
        "X-Riferimento-Message-ID: <99999999",
    );
    let c = classify(&v);
    assert_eq!(c.original_message_id.as_deref(), Some(ORIGINAL_ID));
    assert!(c.disagreements.iter().any(|d| d.contains("X-Riferimento-Message-ID")), "{:?}", c.disagreements);
}

#[test]
fn subject_alone_does_not_make_pec() {
    let plain = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: CONSEGNA: pizza\r\nMessage-ID: x@y\r\n\r\nciao\r\n";
    let c = classify(plain);
    assert_eq!(c.kind, PecKind::Plain);
    assert_eq!(c.folder(), PecFolder::Inbox);
    assert_eq!(c.message_id.as_deref(), Some("<x@y>"));
    assert!(c.warnings.iter().any(|w| w.contains("subject prefix")));
    assert!(matches!(unwrap_envelope(plain), Err(PecError::NoPecParts)));
}

#[test]
fn unescaped_msgid_is_recovered_and_flagged() {
    let raw = edit_daticert(
        &sample("03-avvenuta-consegna-completa.eml"),
        "&lt;20261125101455.ABC123@client.comune.example.it&gt;",
        "<20261125101455.ABC123@client.comune.example.it>",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, completa());
    let d = c.daticert.as_ref().expect("recovered, not dropped");
    assert!(d.malformed);
    assert_eq!(d.msgid.as_deref(), Some(ORIGINAL_ID));
    assert_eq!(d.consegna.as_deref(), Some(CERT_A));
    assert_eq!(d.destinatari.len(), 3);
    assert!(c.daticert_error.as_deref().unwrap().contains("msgid"));
    assert_eq!(c.original_message_id.as_deref(), Some(ORIGINAL_ID));
    assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);

    // A raw ampersand in oggetto is the same kind of defect.
    let raw = edit_daticert(&raw, "fattura idrica</oggetto>", "Rossi & Figli <srl></oggetto>");
    let d = classify(&raw).daticert.unwrap();
    assert!(d.malformed);
    assert_eq!(d.oggetto.as_deref(), Some("Sollecito di pagamento n. 42/2026 - Rossi & Figli <srl>"));
}

#[test]
fn unrepairable_daticert_is_an_error_not_a_guess() {
    let raw = edit_daticert(&sample("02-accettazione.eml"), "</intestazione>", "");
    let c = classify(&raw);
    assert!(c.daticert.is_none());
    assert!(c.daticert_error.as_deref().unwrap().contains("not well-formed"));
    // The header still classifies it, and says the daticert was missing.
    assert_eq!(c.kind, PecKind::Accettazione);
}

#[test]
fn daticert_found_by_name_whatever_its_content_type() {
    let raw = sample("05-errore-consegna.eml");
    let ct = "Content-Type: application/xml; name=\"daticert.xml\"";
    let variants = [
        replace(&raw, ct, "Content-Type: text/xml; charset=\"utf-8\"; name=\"daticert.xml\""),
        replace(&raw, ct, "Content-Type: application/octet-stream; name=\"daticert.xml\""),
        replace(
            &replace(&raw, ct, "Content-Type: application/xml; name=\"DATICERT.XML\""),
            "filename=\"daticert.xml\"",
            "filename=\"DatiCert.XML\"",
        ),
        // No name at all: found by content (a <postacert> root).
        replace(
            &replace(&raw, ct, "Content-Type: application/xml"),
            "Content-Disposition: inline; filename=\"daticert.xml\"",
            "Content-Disposition: inline",
        ),
    ];
    for (i, v) in variants.iter().enumerate() {
        let c = classify(v);
        assert_eq!(c.kind, PecKind::ErroreConsegna, "variant {i}");
        let d = c.daticert.as_ref().unwrap_or_else(|| panic!("variant {i}: {:?}", c.daticert_error));
        assert_eq!(d.consegna.as_deref(), Some(CERT_B), "variant {i}");
        assert!(unwrap_envelope(v).unwrap().daticert.is_some(), "variant {i}");
    }
}

#[test]
fn latin1_daticert() {
    let xml = daticert_xml(&sample("02-accettazione.eml"))
        .replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\"")
        .replace("fattura idrica", "fattura \u{e8}");
    // Encode the text as ISO-8859-1 bytes.
    let bytes: Vec<u8> = xml.chars().map(|ch| u8::try_from(u32::from(ch)).unwrap()).collect();
    let d = Daticert::parse(&bytes).unwrap();
    assert_eq!(d.oggetto.as_deref(), Some("Sollecito di pagamento n. 42/2026 - fattura è"));
    // The same bytes declared UTF-8 are refused, not mangled.
    let wrong: Vec<u8> = xml
        .replace("encoding=\"ISO-8859-1\"", "encoding=\"UTF-8\"")
        .chars()
        .map(|ch| u8::try_from(u32::from(ch)).unwrap())
        .collect();
    assert!(Daticert::parse(&wrong).is_err());
}

// ---- unwrapping -----------------------------------------------------------

#[test]
fn unwrap_transport_envelope_byte_exact() {
    let raw = sample("01-posta-certificata.eml");
    let u = unwrap_envelope(&raw).unwrap();
    let original = u.original.as_deref().unwrap();
    let t = text(&raw);
    let start = t.find("\r\n\r\nMessage-ID: <20261125101455").unwrap() + 4;
    let end = t.find("--=_orig_boundary_1--\r\n").unwrap() + "--=_orig_boundary_1--\r\n".len();
    assert!(original == &raw[start..end], "postacert.eml is not byte-exact");
    assert_eq!(classify(original).kind, PecKind::Plain);
    assert_eq!(u.daticert.as_deref().map(|d| Daticert::parse(d).unwrap().tipo), Some("posta-certificata".into()));
    assert!(u.text.as_deref().unwrap().contains("Messaggio di posta certificata"));
    assert_eq!(u.attachments.len(), 1);
    assert_eq!(u.attachments[0].name.as_deref(), Some("fattura-42.pdf"));
    assert_eq!(u.attachments[0].content_type, "application/pdf");
    assert_eq!(u.attachments[0].size, b"%PDF-1.4 test pdf\n%%EOF\n".len());
}

#[test]
fn unwrap_receipts() {
    let u = unwrap_envelope(&sample("03-avvenuta-consegna-completa.eml")).unwrap();
    assert!(u.original.is_some() && u.daticert.is_some());
    let u = unwrap_envelope(&sample("04-avvenuta-consegna-sintetica.eml")).unwrap();
    assert!(u.original.is_none() && u.daticert.is_some());
    assert!(u.attachments.is_empty());
    let u = unwrap_envelope(&sample("08-anomalia.eml")).unwrap();
    assert!(u.original.unwrap().starts_with(b"Message-ID: <news-998877@example.com>"));
    assert!(u.daticert.is_none());
}

#[test]
fn unwrap_base64_encoded_and_upper_case_postacert() {
    let raw = sample("01-posta-certificata.eml");
    let t = text(&raw);
    let start = t.find("\r\n\r\nMessage-ID: <20261125101455").unwrap() + 4;
    let end = t.find("--=_orig_boundary_1--\r\n").unwrap() + "--=_orig_boundary_1--\r\n".len();
    let original = &raw[start..end];
    let b64 = openssl::base64::encode_block(original);
    let lines: Vec<&str> = b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    let v = format!(
        "{}Content-Transfer-Encoding: base64\r\nContent-Disposition: inline; filename=\"POSTACERT.EML\"\r\n\r\n{}{}",
        &t[..t.find("Content-Disposition: inline; filename=\"postacert.eml\"").unwrap()],
        lines.join("\r\n"),
        &t[end..]
    );
    let v = v.replace("message/rfc822; name=\"postacert.eml\"", "message/rfc822; name=\"POSTACERT.EML\"");
    let u = unwrap_envelope(v.as_bytes()).unwrap();
    assert!(u.original.as_deref() == Some(original), "decoded postacert.eml differs");
    assert_eq!(u.attachments.len(), 1);
}

#[test]
fn unwrap_lf_message_keeps_its_bytes() {
    let raw = to_lf(&sample("03-avvenuta-consegna-completa.eml"));
    let u = unwrap_envelope(&raw).unwrap();
    let original = u.original.unwrap();
    assert!(original.starts_with(b"Message-ID: <20261125101455"));
    assert!(!original.contains(&b'\r'));
    assert!(original.ends_with(b"--=_orig_boundary_1--\n"));
}

#[test]
fn inspect_reports_the_receipt() {
    let raw = sample("05-errore-consegna.eml");
    let i = inspect(&raw, None);
    assert_eq!(i.refers_to.as_deref(), Some(ORIGINAL_ID));
    assert!(i.signature.is_none());
    let text = render_text(&i);
    for needle in [
        "errore-consegna",
        "refers to:",
        ORIGINAL_ID,
        IDENTIFICATIVO,
        "no-dest",
        "5.1.1 - Utente non riconosciuto",
        "not checked",
        "2026-11-25T10:15:02+01:00",
        CERT_B,
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let json = serde_json::to_value(&i).unwrap();
    assert_eq!(json["classification"]["kind"]["type"], "errore-consegna");
    assert_eq!(json["sha256"].as_str().unwrap().len(), 64);

    let v = replace(&sample("03-avvenuta-consegna-completa.eml"), "X-Ricevuta: avvenuta-consegna", "X-Ricevuta: accettazione");
    let text = render_text(&inspect(&v, None));
    assert!(text.contains("DISAGREEMENT"), "{text}");
    assert!(text.contains("fattura-42.pdf"), "{text}");
}
