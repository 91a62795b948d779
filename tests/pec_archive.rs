//! PEC understanding wired into the archive, against a real provider
//! (Dovecot): each message filed by its kind with its classification and
//! signature status in the index, and the sent message reconciled with its
//! receipts even though the receipts are archived before the sent copy.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pecgate::pec::signature::SignatureStatus;
use support::gateway::{mailbox_toml, Gateway, FAST_UPSTREAM};
use support::{make_message, sha256_hex, Dovecot, DovecotOptions, UserSpec};

const USER: &str = "protocollo@pec.comune.example.it";
const PASS: &str = "pw-protocollo";
const SENT_ID: &str = "<20261125101455.ABC123@client.comune.example.it>";

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pec").join(name)).unwrap()
}

#[test]
fn messages_filed_by_kind_and_sent_copy_reconciled() {
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new(USER, PASS)));
    let imap = dv.imap(USER);
    let inbox = [
        "01-posta-certificata.eml",
        "02-accettazione.eml",
        "03-avvenuta-consegna-completa.eml",
        "05-errore-consegna.eml",
        "08-anomalia.eml",
    ];
    let plain = make_message(1, 2000);
    imap.append("INBOX", inbox.iter().map(|n| sample(n)).chain([plain.clone()]));
    // Our own sent copy, as the provider's webmail keeps it: the original
    // carried inside the certified envelope.
    let original = pecgate::pec::unwrap_envelope(&sample("01-posta-certificata.eml")).unwrap().original.unwrap();
    imap.create("Posta inviata");
    imap.append("Posta inviata", [original.clone()]);

    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pec/test-provider-ca.pem");
    let mut g = Gateway::new(&format!(
        "{FAST_UPSTREAM}[pec]\ntrust_store = \"{}\"\n\n{}",
        ca.display(),
        mailbox_toml(
            "protocollo",
            USER,
            PASS,
            dv.port,
            "folders = [\"INBOX\", \"Posta inviata\"]\nsent_folder = \"Posta inviata\""
        )
    ));
    g.start();
    g.wait_mailbox("protocollo", Duration::from_secs(60), "7 archived", |s| s["archived_total"] == 7 && s["on_provider"] == 0);
    g.stop();

    let s = g.open_store();
    let folders: BTreeMap<String, Vec<String>> = s
        .folders("protocollo")
        .unwrap()
        .into_iter()
        .map(|(f, _)| {
            let hashes = s.messages("protocollo", &f).unwrap().into_iter().map(|(_, m)| m.hash).collect();
            (f, hashes)
        })
        .collect();
    let h = |n: &str| sha256_hex(&sample(n));
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(folders["INBOX"].clone()), sorted(vec![h("01-posta-certificata.eml"), sha256_hex(&plain)]));
    assert_eq!(
        sorted(folders["Receipts"].clone()),
        sorted(vec![h("02-accettazione.eml"), h("03-avvenuta-consegna-completa.eml")])
    );
    assert_eq!(sorted(folders["Anomalies"].clone()), sorted(vec![h("05-errore-consegna.eml"), h("08-anomalia.eml")]));
    assert_eq!(folders["Sent"], vec![sha256_hex(&original)]);

    // Classification and signature are in the index.
    for (uid, m) in s.messages("protocollo", "Receipts").unwrap() {
        let meta = m.pec_meta().expect("pec metadata");
        assert!(meta.classification.is_receipt(), "uid {uid}");
        assert!(matches!(meta.signature, Some(SignatureStatus::Valid { .. })), "uid {uid}: {:?}", meta.signature);
    }
    let (_, plain_meta) = s
        .messages("protocollo", "INBOX")
        .unwrap()
        .into_iter()
        .find(|(_, m)| m.hash == sha256_hex(&plain))
        .unwrap();
    let pm = plain_meta.pec_meta().unwrap();
    assert_eq!(pm.classification.kind.as_str(), "plain");
    assert_eq!(pm.signature, None, "plain mail is not signature-checked");

    // Reconciliation: accepted; one certified recipient delivered, the other
    // failed; the external one needs no receipt.
    let state = s.sent_state("protocollo", SENT_ID).unwrap().expect("sent state");
    let now = chrono::Utc::now();
    let kw = state.keywords(now);
    assert!(kw.contains(&"$PecAccepted"), "{kw:?}");
    assert!(kw.contains(&"$PecPartiallyDelivered"), "{kw:?}");
    assert!(kw.contains(&"$PecFailed"), "{kw:?}");
    assert!(state.is_undelivered(now));
    assert!(state.submitted_at.is_some(), "the sent copy was seen");
    s.close().unwrap();
    drop(s);

    // A rebuilt index has the same state.
    let out = g.cli(&["store", "rebuild-index"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = g.open_store();
    assert_eq!(s.sent_state("protocollo", SENT_ID).unwrap(), Some(state));
    s.close().unwrap();
}
