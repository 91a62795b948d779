//! Writes tests/data/journal-v1 with the code of commit 872aa54 (where
//! `pec` was an untyped `serde_json::Value`). Run once:
//! PECGATE_FIXTURE_OUT=/tmp/journal-v1 cargo test --release --test gen_journal_v1 -- --ignored

use chrono::{TimeZone, Utc};
use pecgate::handling::{Action, Routing, Transition};
use pecgate::store::{Audit, Change, FlagOp, ProviderRef, Store, StoreOptions};
use serde_json::json;

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/pec/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
#[ignore]
fn write_fixture() {
    let out = std::path::PathBuf::from(std::env::var("PECGATE_FIXTURE_OUT").expect("PECGATE_FIXTURE_OUT"));
    let _ = std::fs::remove_dir_all(&out);
    let pem = sample("test-provider-ca.pem");
    let trust = pecgate::pec::signature::TrustStore::from_pem(&pem).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (st, _) = Store::open(&out, StoreOptions { journal_segment_bytes: 16 * 1024 }).unwrap();
        let mb = "protocollo";
        let login = |who: &str, outcome: &str| {
            (Audit::user(who, Some("127.0.0.1:50000".into()), "imap", "login").outcome(outcome), Change::None)
        };
        st.commit_batch(vec![login("mario", "ok"), login("mario", "failed: wrong password")]).await.unwrap();

        // Our sent copy, then its receipts (acceptance, delivery, error).
        let sent_at = Utc.with_ymd_and_hms(2026, 11, 25, 9, 14, 55).unwrap();
        let sent_raw = format!("From: protocollo@pec.comune.example.it\r\nTo: ufficio.legale@pec.ditta.example.it, amministrazione@pec.altra.example.it\r\nCc: info@ditta.example.com\r\nSubject: Sollecito di pagamento n. 42/2026 - fattura idrica\r\nDate: Wed, 25 Nov 2026 10:14:55 +0100\r\nMessage-ID: <20261125101455.ABC123@client.comune.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSi sollecita il pagamento.\r\n").into_bytes();
        let mut archive = Vec::new();
        let mut push = |raw: Vec<u8>, from_sent: bool, at, provider: Option<ProviderRef>, handling: Option<Routing>| {
            let f = pecgate::upstream::filing::file(&raw, from_sent, at, Some(&trust));
            archive.push((raw, f, at, provider, handling));
        };
        push(sent_raw, true, sent_at, Some(ProviderRef { folder: "Sent".into(), uidvalidity: 7, uid: 1 }), None);
        for (i, n) in ["02-accettazione.eml", "03-avvenuta-consegna-completa.eml", "05-errore-consegna.eml"].iter().enumerate() {
            let at = sent_at + chrono::Duration::minutes(i as i64 + 1);
            push(sample(n), false, at, Some(ProviderRef { folder: "INBOX".into(), uidvalidity: 9, uid: i as u32 + 1 }), None);
        }
        // A receipt whose signature no longer verifies (one byte changed).
        let mut bad = sample("06-preavviso-errore-consegna.eml");
        if let Some(p) = bad.windows(9).position(|w| w == b"sintetico") {
            bad[p] = b'S';
        }
        push(bad, false, sent_at + chrono::Duration::hours(12), None, None);
        // An incoming certified message, tracked from arrival.
        let due = Utc.with_ymd_and_hms(2026, 12, 25, 0, 0, 0).unwrap();
        push(
            sample("01-posta-certificata.eml"),
            false,
            sent_at + chrono::Duration::hours(1),
            Some(ProviderRef { folder: "INBOX".into(), uidvalidity: 9, uid: 10 }),
            Some(Routing { rule: Some("legale".into()), office: Some("legale".into()), person: None, due: Some(due) }),
        );
        push(sample("08-anomalia.eml"), false, sent_at + chrono::Duration::hours(2), None, None);
        let mut hashes = Vec::new();
        for (raw, f, at, provider, handling) in archive {
            let blob = st.put_blob(raw).await.unwrap();
            hashes.push(blob.hash.clone());
            let a = Audit::system("upstream", "archive").mailbox(mb).message_id(f.message_id.clone());
            let change = Change::Archive {
                mailbox: mb.into(),
                folder: f.folder,
                blob,
                internal_date: at,
                flags: vec![],
                provider,
                pec: serde_json::to_value(&f.meta).ok(),
                handling,
            };
            st.commit(a, change).await.unwrap();
        }
        // The envelope arrives a second time (a provider UIDVALIDITY reset).
        let blob = st.put_blob(sample("01-posta-certificata.eml")).await.unwrap();
        st.commit(
            Audit::system("upstream", "archive").mailbox(mb),
            Change::Archive {
                mailbox: mb.into(),
                folder: "INBOX".into(),
                blob,
                internal_date: sent_at,
                flags: vec![],
                provider: Some(ProviderRef { folder: "INBOX".into(), uidvalidity: 10, uid: 1 }),
                pec: serde_json::to_value(&pecgate::upstream::filing::file(&sample("01-posta-certificata.eml"), false, sent_at, None).meta).ok(),
                handling: None,
            },
        )
        .await
        .unwrap();
        // PEC metadata this code does not understand: a kind from a newer
        // scheme, and a value that is not an object at all.
        for (i, pec) in [
            json!({"classification": {"kind": {"type": "rem-evidence"}, "disagreements": [], "warnings": []}, "scheme": "etsi-rem"}),
            json!("not metadata"),
        ]
        .into_iter()
        .enumerate()
        {
            let blob = st.put_blob(format!("Subject: odd {i}\r\n\r\nodd\r\n").into_bytes()).await.unwrap();
            st.commit(
                Audit::system("upstream", "archive").mailbox(mb),
                Change::Archive {
                    mailbox: mb.into(),
                    folder: "INBOX".into(),
                    blob,
                    internal_date: sent_at,
                    flags: vec![],
                    provider: None,
                    pec: Some(pec),
                    handling: None,
                },
            )
            .await
            .unwrap();
        }
        st.commit(
            Audit::system("upstream", "provider-delete").mailbox(mb),
            Change::ProviderDeleted { mailbox: mb.into(), folder: "INBOX".into(), uidvalidity: 9, uids: vec![1, 2], hashes: hashes[1..3].to_vec(), gone: false },
        )
        .await
        .unwrap();
        let envelope_hash = hashes[5].clone();
        let (_, uid) = st.find_hash(mb, &envelope_hash).unwrap().unwrap();
        st.commit(
            Audit::user("mario", Some("127.0.0.1:50001".into()), "imap", "store").mailbox(mb).folder("INBOX"),
            Change::SetFlags { mailbox: mb.into(), folder: "INBOX".into(), uids: vec![uid], op: FlagOp::Add, flags: vec!["\\Flagged".into(), "$Multe".into()] },
        )
        .await
        .unwrap();
        st.commit(
            Audit::user("mario", Some("127.0.0.1:50001".into()), "imap", "fetch").mailbox(mb).folder("INBOX"),
            Change::SetSeen { user: "mario".into(), mailbox: mb.into(), folder: "INBOX".into(), uids: vec![uid], seen: true },
        )
        .await
        .unwrap();
        st.commit(
            Audit::user("mario", Some("127.0.0.1:50001".into()), "imap", "take").mailbox(mb),
            Change::Handle { mailbox: mb.into(), hashes: vec![envelope_hash], transition: Transition::new(Action::Take, "mario") },
        )
        .await
        .unwrap();
        let anomaly = st.find_hash(mb, &hashes[6]).unwrap().unwrap();
        st.commit(
            Audit::user("mario", Some("127.0.0.1:50001".into()), "imap", "move").mailbox(mb),
            Change::Move { mailbox: mb.into(), from: anomaly.0.clone(), to: "Archivio".into(), uids: vec![anomaly.1] },
        )
        .await
        .unwrap();
        st.commit(
            Audit::user("mario", Some("127.0.0.1:50001".into()), "imap", "expunge").mailbox(mb),
            Change::Hide { mailbox: mb.into(), folder: "Receipts".into(), uids: vec![1] },
        )
        .await
        .unwrap();

        // What the index holds: the PEC state a reader of this journal must
        // find again.
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
        let expected = json!({
            "applied_seq": st.applied_seq().unwrap(),
            "folders": folders,
            "sent": st.sent_states(mb).unwrap(),
            "handling": st.handling_all(mb).unwrap(),
            "hidden_receipt": st.hidden_message(mb, "Receipts", 1).unwrap().map(|m| m.pec),
        });
        std::fs::write(out.join("expected.json"), serde_json::to_string_pretty(&expected).unwrap()).unwrap();
        st.close().unwrap();
    });
}
