//! The simulator's messages must be what pecgate itself recognises: each
//! kind classified as built, without disagreements, signature valid against
//! the simulator's CA, and the envelope's `postacert.eml` byte-identical to
//! the submission.

use super::build::{build, Notice, Provider, Submission};
use super::pki::Pki;
use crate::pec::{classify, unwrap_envelope, verify, PecKind, ReceiptForm, TrustStore};

fn submission() -> Submission {
    Submission {
        sender: "protocollo@pec.sim.test".into(),
        recipients: vec![("legale@pec.sim.test".into(), true), ("info@example.com".into(), false)],
        original: b"Message-ID: <abc.1@client.test>\r\nFrom: Protocollo <protocollo@pec.sim.test>\r\nTo: legale@pec.sim.test\r\nSubject: Prova \xc3\xa8 <&>\r\n\r\nCorpo\r\n.riga\r\n".to_vec(),
        subject: "Prova è <&>".into(),
        msgid: "<abc.1@client.test>".into(),
        identificativo: "opec-sim.1.2.3@pec.sim.test".into(),
        at: chrono::Utc::now(),
    }
}

#[test]
fn every_notice_classifies_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_generate(dir.path(), "posta-certificata@pec.sim.test").unwrap();
    // Loading again gives the same CA (restart keeps trust).
    let again = Pki::load_or_generate(dir.path(), "posta-certificata@pec.sim.test").unwrap();
    assert_eq!(pki.ca_pem().unwrap(), again.ca_pem().unwrap());
    let trust = TrustStore::from_pem(&std::fs::read(dir.path().join("ca.pem")).unwrap()).unwrap();
    let p = Provider { address: "posta-certificata@pec.sim.test".into(), name: "Sim".into() };
    let s = submission();
    let cases = [
        (Notice::Accettazione, PecKind::Accettazione),
        (Notice::NonAccettazione { reason: "mittente errato".into() }, PecKind::NonAccettazione),
        (Notice::Envelope, PecKind::PostaCertificata),
        (
            Notice::Consegna { recipient: "legale@pec.sim.test".into() },
            PecKind::AvvenutaConsegna { form: ReceiptForm::Completa },
        ),
        (
            Notice::ErroreConsegna {
                recipient: "nobody@pec.sim.test".into(),
                reason: "5.1.1 - Utente non riconosciuto".into(),
            },
            PecKind::ErroreConsegna,
        ),
        (
            Notice::PreavvisoErroreConsegna {
                recipient: "lento@cittadini.sim".into(),
                reason: "Nessuna ricevuta dal gestore del destinatario entro 12 ore".into(),
            },
            PecKind::PreavvisoErroreConsegna,
        ),
    ];
    for (notice, kind) in cases {
        let raw = build(&pki, &p, &s, &notice, chrono::Utc::now()).unwrap();
        let c = classify(&raw);
        assert_eq!(c.kind, kind, "{notice:?}: {c:#?}");
        assert!(c.disagreements.is_empty(), "{notice:?}: {:?}", c.disagreements);
        assert!(c.daticert_error.is_none(), "{notice:?}: {:?}", c.daticert_error);
        assert_eq!(c.original_message_id.as_deref(), Some("<abc.1@client.test>"));
        assert_eq!(c.identificativo.as_deref(), Some("opec-sim.1.2.3@pec.sim.test"));
        assert!(verify(&raw, &trust).is_valid(), "{notice:?}: {:?}", verify(&raw, &trust));
        if matches!(notice, Notice::Envelope | Notice::Consegna { .. }) {
            assert_eq!(unwrap_envelope(&raw).unwrap().original.as_deref(), Some(&s.original[..]));
        }
        if let Notice::Consegna { recipient }
        | Notice::ErroreConsegna { recipient, .. }
        | Notice::PreavvisoErroreConsegna { recipient, .. } = &notice
        {
            assert_eq!(c.consegna(), Some(recipient.as_str()));
        }
    }
}
