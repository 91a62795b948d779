//! Receipt reconciliation: one unit test per path through the state machine
//! (with the real samples), and property tests showing that shuffled,
//! duplicated and early (before-Submitted) receipts always end in the state
//! and keywords of in-order delivery, and that the keywords match a simple
//! independent model of the outcome.

mod pec_common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use pec_common::*;
use pecgate::pec::daticert::{Destinatario, RecipientType};
use pecgate::pec::reconcile::{Event, Overall, ReconcileError, RecipientStatus, SentMessage};
use pecgate::pec::{classify, Classification, Daticert, PecKind, ReceiptForm};
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 15, 0).unwrap()
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

fn receipt(name: &str, minutes: i64) -> Event {
    Event::Receipt(classify(&sample(name)), at(minutes))
}

fn submitted(minutes: i64) -> Event {
    Event::Submitted {
        recipients: vec![CERT_A.into(), CERT_B.to_uppercase(), format!("<{EXTERNAL}>")],
        at: at(minutes),
    }
}

fn fold(events: &[Event]) -> SentMessage {
    let mut s = SentMessage::new(ORIGINAL_ID);
    for e in events {
        s.apply(e).unwrap();
    }
    s
}

#[test]
fn all_delivered() {
    let s = fold(&[
        submitted(0),
        receipt("02-accettazione.eml", 1),
        receipt("03-avvenuta-consegna-completa.eml", 2),
        receipt("04-avvenuta-consegna-sintetica.eml", 3),
    ]);
    assert_eq!(s.overall(), Overall::Accepted);
    assert_eq!(s.identificativo(), Some(IDENTIFICATIVO));
    let now = at(60 * 48);
    let statuses = s.statuses(now);
    assert_eq!(statuses[CERT_A], RecipientStatus::Delivered);
    assert_eq!(statuses[CERT_B], RecipientStatus::Delivered);
    assert_eq!(statuses[EXTERNAL], RecipientStatus::SentToNonCertified);
    assert_eq!(s.keywords(now), vec!["$PecAccepted", "$PecDelivered"]);
    assert!(!s.is_undelivered(now));
    assert!(s.conflicts().is_empty());
}

#[test]
fn one_delivered_one_failed() {
    let s = fold(&[
        submitted(0),
        receipt("02-accettazione.eml", 1),
        receipt("03-avvenuta-consegna-completa.eml", 2),
        receipt("05-errore-consegna.eml", 3),
    ]);
    let now = at(10);
    assert_eq!(s.statuses(now)[CERT_B], RecipientStatus::DeliveryFailed);
    assert_eq!(s.keywords(now), vec!["$PecAccepted", "$PecPartiallyDelivered", "$PecFailed"]);
    assert!(s.is_undelivered(now));
    let failed = s.recipients[CERT_B].failed.as_ref().unwrap();
    assert_eq!(failed.detail.as_deref(), Some("5.1.1 - Utente non riconosciuto"));
}

#[test]
fn warning_then_delivery_wins() {
    let s = fold(&[
        submitted(0),
        receipt("02-accettazione.eml", 1),
        receipt("03-avvenuta-consegna-completa.eml", 2),
        receipt("06-preavviso-errore-consegna.eml", 12 * 60),
    ]);
    let now = at(13 * 60);
    assert_eq!(s.statuses(now)[CERT_B], RecipientStatus::Warned);
    assert_eq!(s.keywords(now), vec!["$PecAccepted", "$PecPartiallyDelivered", "$PecWarned"]);
    assert!(!s.is_undelivered(now));
    // Past 24 h with only a warning: overdue as well.
    let later = at(25 * 60);
    assert_eq!(s.statuses(later)[CERT_B], RecipientStatus::Overdue);
    assert_eq!(
        s.keywords(later),
        vec!["$PecAccepted", "$PecPartiallyDelivered", "$PecOverdue", "$PecWarned"]
    );
    assert!(s.is_undelivered(later));
    // The late delivery receipt still wins.
    let mut s = s;
    s.apply(&receipt("04-avvenuta-consegna-sintetica.eml", 20 * 60)).unwrap();
    assert_eq!(s.statuses(later)[CERT_B], RecipientStatus::Delivered);
    assert_eq!(s.keywords(later), vec!["$PecAccepted", "$PecDelivered"]);
}

#[test]
fn not_accepted() {
    let s = fold(&[submitted(0), receipt("07-non-accettazione.eml", 1)]);
    assert_eq!(s.overall(), Overall::NotAccepted);
    let now = at(60 * 48);
    assert_eq!(s.statuses(now)[CERT_A], RecipientStatus::NotSent);
    assert_eq!(s.statuses(now)[EXTERNAL], RecipientStatus::NotSent);
    assert_eq!(s.keywords(now), vec!["$PecNotAccepted", "$PecFailed"]);
    assert!(s.is_undelivered(now));
    assert_eq!(
        s.not_accepted.as_ref().unwrap().detail.as_deref(),
        Some("Il mittente non corrisponde al titolare della casella")
    );
}

#[test]
fn overdue_after_is_configurable_and_uses_the_given_now() {
    let s = fold(&[submitted(0)]);
    assert_eq!(s.overall(), Overall::Submitted);
    // Recipient types unknown before any receipt: all are expected to answer.
    assert_eq!(s.statuses(at(23 * 60))[CERT_A], RecipientStatus::Pending);
    assert_eq!(s.keywords(at(23 * 60)), Vec::<&str>::new());
    assert_eq!(s.statuses(at(24 * 60))[CERT_A], RecipientStatus::Overdue);
    assert_eq!(s.keywords(at(24 * 60)), vec!["$PecOverdue"]);
    let quick = s.clone().with_overdue_after(std::time::Duration::from_secs(3600));
    assert_eq!(quick.keywords(at(61)), vec!["$PecOverdue"]);
    assert_eq!(quick.keywords(at(59)), Vec::<&str>::new());
    // The acceptance tells us which recipient is external: it is not overdue.
    let mut s = s;
    s.apply(&receipt("02-accettazione.eml", 1)).unwrap();
    assert_eq!(s.statuses(at(48 * 60))[EXTERNAL], RecipientStatus::SentToNonCertified);
}

#[test]
fn receipts_before_submitted_and_webmail() {
    let in_order = fold(&[
        submitted(0),
        receipt("02-accettazione.eml", 1),
        receipt("03-avvenuta-consegna-completa.eml", 2),
        receipt("04-avvenuta-consegna-sintetica.eml", 3),
    ]);
    let early = fold(&[
        receipt("04-avvenuta-consegna-sintetica.eml", 3),
        receipt("03-avvenuta-consegna-completa.eml", 2),
        receipt("04-avvenuta-consegna-sintetica.eml", 3),
        receipt("02-accettazione.eml", 1),
        submitted(0),
    ]);
    assert_eq!(early, in_order);
    // Webmail: no Submitted ever; same keywords, clock from the receipts.
    let webmail = fold(&[
        receipt("03-avvenuta-consegna-completa.eml", 2),
        receipt("02-accettazione.eml", 1),
        receipt("04-avvenuta-consegna-sintetica.eml", 3),
    ]);
    assert_eq!(webmail.submitted_at, None);
    assert_eq!(webmail.clock_start(), Some(at(1)));
    assert_eq!(webmail.keywords(at(100)), in_order.keywords(at(100)));
}

#[test]
fn idempotent_and_serialisable() {
    let events = [
        submitted(0),
        receipt("02-accettazione.eml", 1),
        receipt("06-preavviso-errore-consegna.eml", 700),
    ];
    let once = fold(&events);
    let twice = fold(&[events.clone(), events.clone()].concat());
    assert_eq!(once, twice);
    let json = serde_json::to_string(&once).unwrap();
    let back: SentMessage = serde_json::from_str(&json).unwrap();
    assert_eq!(back, once);
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
}

#[test]
fn unroutable_events_leave_the_state_unchanged() {
    let mut s = fold(&[submitted(0)]);
    let before = s.clone();
    let mut other = classify(&sample("02-accettazione.eml"));
    other.original_message_id = Some("<other@example.com>".into());
    assert!(matches!(
        s.apply(&Event::Receipt(other, at(1))),
        Err(ReconcileError::OtherMessage { .. })
    ));
    let mut orphan = classify(&sample("02-accettazione.eml"));
    orphan.original_message_id = None;
    assert_eq!(s.apply(&Event::Receipt(orphan, at(1))), Err(ReconcileError::NoReference));
    let envelope = classify(&sample("01-posta-certificata.eml"));
    assert_eq!(
        s.apply(&Event::Receipt(envelope, at(1))),
        Err(ReconcileError::NotAReceipt("posta-certificata"))
    );
    assert_eq!(s, before);
}

/// A sample receipt turned into another kind (daticert and header agree).
fn as_kind(name: &str, kind: PecKind, consegna: Option<&str>) -> Classification {
    let mut c = classify(&sample(name));
    c.kind = kind;
    if let Some(d) = c.daticert.as_mut() {
        d.tipo = kind.as_str().to_string();
        d.consegna = consegna.map(str::to_string);
    }
    c
}

#[test]
fn virus_taking_charge_and_unattributed_receipts() {
    let mut s = fold(&[submitted(0)]);
    // Taking charge implies acceptance.
    s.apply(&Event::Receipt(as_kind("02-accettazione.eml", PecKind::PresaInCarico, None), at(1)))
        .unwrap();
    assert_eq!(s.overall(), Overall::Accepted);
    // A virus notice about one recipient is a failure for that recipient.
    s.apply(&Event::Receipt(as_kind("05-errore-consegna.eml", PecKind::RilevazioneVirus, Some(CERT_A)), at(2)))
        .unwrap();
    assert_eq!(s.statuses(at(3))[CERT_A], RecipientStatus::DeliveryFailed);
    // An error naming no recipient cannot be pinned on one, but still fails
    // the message.
    let mut t = fold(&[submitted(0), receipt("02-accettazione.eml", 1)]);
    t.apply(&Event::Receipt(as_kind("05-errore-consegna.eml", PecKind::ErroreConsegna, None), at(2)))
        .unwrap();
    assert!(t.unattributed.contains_key("errore-consegna"));
    assert!(t.keywords(at(3)).contains(&"$PecFailed"));
    assert_eq!(t.statuses(at(3))[CERT_A], RecipientStatus::Pending);
}

#[test]
fn contradictory_evidence_is_kept_and_reported() {
    let mut s = fold(&[
        receipt("02-accettazione.eml", 1),
        receipt("04-avvenuta-consegna-sintetica.eml", 2),
        receipt("05-errore-consegna.eml", 3),
    ]);
    // Delivery is the legal proof: it wins, and the conflict is reported.
    assert_eq!(s.statuses(at(4))[CERT_B], RecipientStatus::Delivered);
    assert_eq!(s.conflicts(), vec![format!("{CERT_B}: both a delivery receipt and a non-delivery notice")]);
    s.apply(&receipt("07-non-accettazione.eml", 5)).unwrap();
    assert!(s.conflicts().iter().any(|c| c.contains("acceptance and a non-acceptance")));
}

#[test]
fn key_is_normalised() {
    let s = SentMessage::new(" 20261125101455.ABC123@client.comune.example.it ");
    assert_eq!(s.original_message_id, ORIGINAL_ID);
}

// ---- property tests ---------------------------------------------------------

/// What eventually happens to one recipient.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Delivered,
    Failed,
    WarnedThenDelivered,
    WarnedThenFailed,
    WarnedOnly,
    NoReceipt,
}

#[derive(Debug, Clone)]
struct Scenario {
    /// (certified, outcome) per recipient.
    recipients: Vec<(bool, Outcome)>,
    accepted: bool,
    submitted: bool,
}

fn address(i: usize, certified: bool) -> String {
    if certified {
        format!("utente{i}@pec.example.org")
    } else {
        format!("utente{i}@example.com")
    }
}

/// A synthetic receipt, as `classify` would produce it.
fn synthetic(s: &Scenario, kind: PecKind, consegna: Option<String>, id: usize) -> Classification {
    let mut d = Daticert::default();
    d.tipo = kind.as_str().to_string();
    d.msgid = Some(ORIGINAL_ID.to_string());
    d.identificativo = Some(IDENTIFICATIVO.to_string());
    d.consegna = consegna;
    d.destinatari = s
        .recipients
        .iter()
        .enumerate()
        .map(|(i, (certified, _))| Destinatario {
            address: address(i, *certified),
            tipo: if *certified { RecipientType::Certificato } else { RecipientType::Esterno },
        })
        .collect();
    if kind == PecKind::ErroreConsegna {
        d.errore_esteso = Some("5.1.1".into());
    }
    let mut c = Classification::default();
    c.kind = kind;
    c.original_message_id = d.msgid.clone();
    c.identificativo = d.identificativo.clone();
    c.message_id = Some(format!("<r{id}@pec.example.it>"));
    c.daticert = Some(d);
    c
}

/// The events of a scenario in the order a provider would send them.
fn in_order(s: &Scenario) -> Vec<Event> {
    let mut events = Vec::new();
    if s.submitted {
        events.push(Event::Submitted {
            recipients: (0..s.recipients.len()).map(|i| address(i, s.recipients[i].0)).collect(),
            at: at(0),
        });
    }
    if !s.accepted {
        events.push(Event::Receipt(synthetic(s, PecKind::NonAccettazione, None, 0), at(1)));
        return events;
    }
    events.push(Event::Receipt(synthetic(s, PecKind::Accettazione, None, 0), at(1)));
    let delivered = PecKind::AvvenutaConsegna { form: ReceiptForm::Sintetica };
    for (i, (certified, outcome)) in s.recipients.iter().enumerate() {
        if !certified {
            continue;
        }
        let who = Some(address(i, true));
        let minutes = 2 + i as i64;
        let mut push = |kind, when| events.push(Event::Receipt(synthetic(s, kind, who.clone(), i * 10 + events.len()), at(when)));
        match outcome {
            Outcome::Delivered => push(delivered, minutes),
            Outcome::Failed => push(PecKind::ErroreConsegna, minutes),
            Outcome::WarnedThenDelivered => {
                push(PecKind::PreavvisoErroreConsegna, 12 * 60 + minutes);
                push(delivered, 13 * 60 + minutes);
            }
            Outcome::WarnedThenFailed => {
                push(PecKind::PreavvisoErroreConsegna, 12 * 60 + minutes);
                push(PecKind::ErroreConsegna, 24 * 60 + minutes);
            }
            Outcome::WarnedOnly => push(PecKind::PreavvisoErroreConsegna, 12 * 60 + minutes),
            Outcome::NoReceipt => {}
        }
    }
    events
}

/// Independent model of the final keywords, long after everything.
fn model_keywords(s: &Scenario) -> Vec<&'static str> {
    if !s.accepted {
        return vec!["$PecNotAccepted", "$PecFailed"];
    }
    let certified: Vec<Outcome> = s.recipients.iter().filter(|(c, _)| *c).map(|(_, o)| *o).collect();
    let delivered = certified
        .iter()
        .filter(|o| matches!(o, Outcome::Delivered | Outcome::WarnedThenDelivered))
        .count();
    let mut k = vec!["$PecAccepted"];
    if delivered > 0 && delivered == certified.len() {
        k.push("$PecDelivered");
    } else if delivered > 0 {
        k.push("$PecPartiallyDelivered");
    }
    if certified.iter().any(|o| matches!(o, Outcome::Failed | Outcome::WarnedThenFailed)) {
        k.push("$PecFailed");
    }
    if certified.iter().any(|o| matches!(o, Outcome::WarnedOnly | Outcome::NoReceipt)) {
        k.push("$PecOverdue");
    }
    if certified.contains(&Outcome::WarnedOnly) {
        k.push("$PecWarned");
    }
    k
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Delivered),
        1 => Just(Outcome::Failed),
        1 => Just(Outcome::WarnedThenDelivered),
        1 => Just(Outcome::WarnedThenFailed),
        1 => Just(Outcome::WarnedOnly),
        1 => Just(Outcome::NoReceipt),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec((prop::bool::weighted(0.8), outcome()), 1..=20),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(recipients, accepted, submitted)| Scenario { recipients, accepted, submitted })
}

/// The same event, observed `minutes` later.
fn later(e: &Event, minutes: i64) -> Event {
    match e.clone() {
        Event::Submitted { recipients, at } => Event::Submitted { recipients, at: at + Duration::minutes(minutes) },
        Event::Receipt(c, at) => Event::Receipt(c, at + Duration::minutes(minutes)),
    }
}

/// A scenario, its in-order events, and a shuffled copy with duplicates.
fn scrambled() -> impl Strategy<Value = (Scenario, Vec<Event>, Vec<Event>)> {
    scenario().prop_flat_map(|s| {
        let events = in_order(&s);
        let n = events.len();
        // A duplicate may be seen again later (re-sync, second copy).
        let dupes = prop::collection::vec((0..n, 0i64..3000), 0..=n);
        (Just(s), Just(events.clone()), dupes).prop_flat_map(|(s, events, dupes)| {
            let mut all = events.clone();
            all.extend(dupes.iter().map(|&(i, delay)| later(&events[i], delay)));
            (Just(s), Just(events), Just(all).prop_shuffle())
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_order_with_duplicates_ends_as_in_order((s, ordered, shuffled) in scrambled()) {
        let reference = fold(&ordered);
        let scrambled = fold(&shuffled);
        prop_assert_eq!(&scrambled, &reference);
        prop_assert_eq!(serde_json::to_string(&scrambled).unwrap(), serde_json::to_string(&reference).unwrap());
        for minutes in [30, 13 * 60, 25 * 60, 60 * 24 * 30] {
            prop_assert_eq!(scrambled.keywords(at(minutes)), reference.keywords(at(minutes)));
            prop_assert_eq!(scrambled.is_undelivered(at(minutes)), reference.is_undelivered(at(minutes)));
        }
        prop_assert_eq!(reference.keywords(at(60 * 24 * 30)), model_keywords(&s));
        // Every certified recipient of an accepted message ends delivered,
        // failed, or overdue; externals never wait for a receipt.
        let statuses = reference.statuses(at(60 * 24 * 30));
        for (i, (certified, _)) in s.recipients.iter().enumerate() {
            let st = statuses[address(i, *certified).as_str()];
            if !s.accepted {
                prop_assert_eq!(st, RecipientStatus::NotSent);
            } else if !certified {
                prop_assert_eq!(st, RecipientStatus::SentToNonCertified);
            } else {
                prop_assert!(matches!(st, RecipientStatus::Delivered | RecipientStatus::DeliveryFailed | RecipientStatus::Overdue));
            }
        }
    }

    #[test]
    fn applying_any_event_twice_changes_nothing((_s, ordered, shuffled) in scrambled()) {
        let base = fold(&shuffled);
        for e in &ordered {
            let mut again = base.clone();
            again.apply(e).unwrap();
            prop_assert_eq!(&again, &base);
        }
    }
}
