//! Classification of one message: which PEC message kind it is, which
//! submission it refers to, and where its signals disagree.
//!
//! A PEC message announces its kind three times: the `X-Ricevuta` /
//! `X-Trasporto` header, the subject prefix, and `daticert.xml`'s `tipo`. Only
//! the daticert is inside the signed part; headers and subject are not covered
//! by the provider's signature and may be rewritten by any relay. So the
//! daticert decides, the header decides when there is no daticert (anomaly
//! envelopes may have none), and the subject alone never makes a PEC message
//! (anyone can write "CONSEGNA: " in a subject). Every disagreement between
//! signals is reported in [`Classification::disagreements`], never resolved
//! silently.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::daticert::Daticert;
use super::{mime, normalize_message_id};

/// Form of a delivery receipt (`X-TipoRicevuta`, daticert `ricevuta/@tipo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptForm {
    /// `completa`: carries the whole original message.
    Completa,
    /// `breve`: the original with attachments replaced by their hashes.
    Breve,
    /// `sintetica`: only the daticert.
    Sintetica,
    /// Not stated, or a value outside the technical rules.
    #[default]
    Unknown,
}

impl ReceiptForm {
    /// The PEC spelling (`unknown` for [`ReceiptForm::Unknown`]).
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptForm::Completa => "completa",
            ReceiptForm::Breve => "breve",
            ReceiptForm::Sintetica => "sintetica",
            ReceiptForm::Unknown => "unknown",
        }
    }

    /// Reads a form, mapping anything unrecognised to `Unknown`.
    pub fn parse_lenient(s: &str) -> ReceiptForm {
        match s.trim().to_ascii_lowercase().as_str() {
            "completa" => ReceiptForm::Completa,
            "breve" => ReceiptForm::Breve,
            "sintetica" => ReceiptForm::Sintetica,
            _ => ReceiptForm::Unknown,
        }
    }
}

/// The kind of a message as far as PEC is concerned.
///
/// `#[non_exhaustive]` because PEC is moving to ETSI REM (EN 319 532), whose
/// evidence kinds will be added as further variants without breaking callers.
/// Serialised as `{"type": "avvenuta-consegna", "form": "completa"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PecKind {
    /// Transport envelope: a certified message for the recipient.
    PostaCertificata,
    /// Acceptance receipt: the sender's provider took the submission.
    Accettazione,
    /// Non-acceptance notice: the submission was refused (final).
    NonAccettazione,
    /// Taking-charge receipt between providers.
    PresaInCarico,
    /// Delivery receipt for one recipient: the legal proof of delivery.
    AvvenutaConsegna {
        /// Which form the receipt has.
        form: ReceiptForm,
    },
    /// Warning: no delivery receipt within 12 hours (not final).
    PreavvisoErroreConsegna,
    /// Non-delivery notice for one recipient (final).
    ErroreConsegna,
    /// Virus detection notice.
    RilevazioneVirus,
    /// Anomaly envelope: a message that failed the provider's checks (e.g.
    /// ordinary mail into a PEC mailbox).
    Anomalia,
    /// Not a PEC message.
    #[default]
    Plain,
}

/// Error of [`PecKind::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown PEC message kind {0:?}: expected one of posta-certificata, accettazione, non-accettazione, presa-in-carico, avvenuta-consegna, preavviso-errore-consegna, errore-consegna, rilevazione-virus, anomalia, plain")]
pub struct UnknownKind(pub String);

impl PecKind {
    /// Every kind, with `AvvenutaConsegna` in its `Unknown` form.
    pub const ALL: [PecKind; 10] = [
        PecKind::PostaCertificata,
        PecKind::Accettazione,
        PecKind::NonAccettazione,
        PecKind::PresaInCarico,
        PecKind::AvvenutaConsegna { form: ReceiptForm::Unknown },
        PecKind::PreavvisoErroreConsegna,
        PecKind::ErroreConsegna,
        PecKind::RilevazioneVirus,
        PecKind::Anomalia,
        PecKind::Plain,
    ];

    /// The daticert-style name (`avvenuta-consegna` for every form).
    pub fn as_str(&self) -> &'static str {
        match self {
            PecKind::PostaCertificata => "posta-certificata",
            PecKind::Accettazione => "accettazione",
            PecKind::NonAccettazione => "non-accettazione",
            PecKind::PresaInCarico => "presa-in-carico",
            PecKind::AvvenutaConsegna { .. } => "avvenuta-consegna",
            PecKind::PreavvisoErroreConsegna => "preavviso-errore-consegna",
            PecKind::ErroreConsegna => "errore-consegna",
            PecKind::RilevazioneVirus => "rilevazione-virus",
            PecKind::Anomalia => "anomalia",
            PecKind::Plain => "plain",
        }
    }

    /// Provider messages about a submission (they go to the sender).
    pub fn is_receipt(&self) -> bool {
        matches!(
            self,
            PecKind::Accettazione
                | PecKind::NonAccettazione
                | PecKind::PresaInCarico
                | PecKind::AvvenutaConsegna { .. }
                | PecKind::PreavvisoErroreConsegna
                | PecKind::ErroreConsegna
                | PecKind::RilevazioneVirus
        )
    }

    /// Kinds that tell of a failure: a user must look at them.
    pub fn is_anomaly_or_error(&self) -> bool {
        matches!(
            self,
            PecKind::NonAccettazione | PecKind::ErroreConsegna | PecKind::RilevazioneVirus | PecKind::Anomalia
        )
    }

    /// Where the gateway files a message of this kind.
    pub fn folder(&self) -> PecFolder {
        if self.is_anomaly_or_error() {
            PecFolder::Anomalies
        } else if self.is_receipt() {
            PecFolder::Receipts
        } else {
            PecFolder::Inbox
        }
    }

    /// Same kind, ignoring the delivery-receipt form.
    fn same_kind(&self, other: &PecKind) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Display for PecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PecKind::AvvenutaConsegna { form } if *form != ReceiptForm::Unknown => {
                write!(f, "avvenuta-consegna ({})", form.as_str())
            }
            other => f.write_str(other.as_str()),
        }
    }
}

impl FromStr for PecKind {
    type Err = UnknownKind;

    /// Parses a daticert-style name (case-insensitive). `avvenuta-consegna`
    /// gives the `Unknown` form: the name does not carry it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        PecKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownKind(s.chars().take(64).collect()))
    }
}

/// The gateway folder a message belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PecFolder {
    /// Certified messages and plain mail.
    Inbox,
    /// Receipts and warnings about our own submissions.
    Receipts,
    /// Refusals, failures, virus notices and anomaly envelopes.
    Anomalies,
}

/// What [`classify`] found out about one message.
///
/// Serialised to JSON by the index. `#[non_exhaustive]` so evidence of other
/// schemes (ETSI REM) can add fields; build one with `Default` and assign.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Classification {
    /// The decided kind.
    pub kind: PecKind,
    /// The parsed daticert, when there was one and it could be read.
    pub daticert: Option<Daticert>,
    /// Message-ID of the original submission this message is about
    /// (normalised): daticert `msgid`, else `X-Riferimento-Message-ID`.
    pub original_message_id: Option<String>,
    /// Provider identifier of the submission: daticert `identificativo`,
    /// else (envelopes only) the envelope's own Message-ID without brackets.
    pub identificativo: Option<String>,
    /// This message's own Message-ID (normalised).
    pub message_id: Option<String>,
    /// Decoded subject.
    pub subject: Option<String>,
    /// Where headers, subject and daticert disagree, in words.
    pub disagreements: Vec<String>,
    /// Why the daticert was malformed (repaired) or unreadable (dropped).
    pub daticert_error: Option<String>,
    /// Other observations worth an audit line (not disagreements).
    pub warnings: Vec<String>,
}

impl Classification {
    /// See [`PecKind::is_receipt`].
    pub fn is_receipt(&self) -> bool {
        self.kind.is_receipt()
    }

    /// See [`PecKind::is_anomaly_or_error`].
    pub fn is_anomaly_or_error(&self) -> bool {
        self.kind.is_anomaly_or_error()
    }

    /// See [`PecKind::folder`].
    pub fn folder(&self) -> PecFolder {
        self.kind.folder()
    }

    /// The recipient a per-recipient receipt is about (daticert `consegna`).
    pub fn consegna(&self) -> Option<&str> {
        self.daticert.as_ref().and_then(|d| d.consegna.as_deref())
    }
}

/// Subject prefixes, longest first where one is a prefix of another.
/// Source: PEC-SPEC.md; the preavviso wording varies between providers.
const SUBJECT_PREFIXES: &[(&str, PecKind)] = &[
    ("POSTA CERTIFICATA:", PecKind::PostaCertificata),
    ("ANOMALIA MESSAGGIO:", PecKind::Anomalia),
    ("ACCETTAZIONE:", PecKind::Accettazione),
    ("AVVISO DI NON ACCETTAZIONE PER VIRUS:", PecKind::NonAccettazione),
    ("AVVISO DI NON ACCETTAZIONE:", PecKind::NonAccettazione),
    ("PRESA IN CARICO:", PecKind::PresaInCarico),
    ("CONSEGNA:", PecKind::AvvenutaConsegna { form: ReceiptForm::Unknown }),
    ("AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO:", PecKind::PreavvisoErroreConsegna),
    ("PREAVVISO DI MANCATA CONSEGNA:", PecKind::PreavvisoErroreConsegna),
    ("AVVISO DI MANCATA CONSEGNA PER VIRUS:", PecKind::ErroreConsegna),
    ("AVVISO DI MANCATA CONSEGNA:", PecKind::ErroreConsegna),
    ("PROBLEMA DI SICUREZZA:", PecKind::RilevazioneVirus),
];

fn subject_kind(subject: &str) -> Option<PecKind> {
    let s = subject.trim_start().as_bytes();
    SUBJECT_PREFIXES
        .iter()
        .find(|(prefix, _)| s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
        .map(|(_, kind)| *kind)
}

/// Kind from `X-Ricevuta` (receipts) and `X-Trasporto` (envelopes).
fn header_kind(name: &str, value: &str) -> Option<PecKind> {
    if name.eq_ignore_ascii_case("X-Trasporto") {
        return match value.trim().to_ascii_lowercase().as_str() {
            "posta-certificata" => Some(PecKind::PostaCertificata),
            "errore" => Some(PecKind::Anomalia),
            _ => None,
        };
    }
    PecKind::from_str(value)
        .ok()
        .filter(|k| k.is_receipt())
}

/// Whether two signals are compatible. An anomaly envelope's daticert says
/// `posta-certificata` (PEC-SPEC.md, to be checked against providers), so
/// that pair agrees.
fn compatible(a: &PecKind, b: &PecKind) -> bool {
    a.same_kind(b)
        || matches!(
            (a, b),
            (PecKind::Anomalia, PecKind::PostaCertificata) | (PecKind::PostaCertificata, PecKind::Anomalia)
        )
}

/// One signal about the kind, with where it came from for messages.
struct Signal {
    source: String,
    kind: PecKind,
}

/// Classifies one raw message (CRLF or LF, any header case, folded headers,
/// RFC 2047 subjects). Never fails: unreadable input is `Plain` with a
/// warning, so the caller can still archive and file it.
pub fn classify(raw: &[u8]) -> Classification {
    let mut c = Classification::default();
    let msg = mime::Entity::parse(raw);
    if !msg.has_headers() {
        c.warnings.push("no RFC 5322 header block found; treated as plain".into());
        return c;
    }
    c.subject = msg.subject();
    c.message_id = msg.header_value("Message-ID").and_then(|v| normalize_message_id(&v));

    // 1. daticert, the signed signal.
    let leaves = mime::leaves(&msg);
    let parts = mime::find_pec_parts(&leaves);
    if let Some(idx) = parts.daticert {
        if let Some(part) = leaves.get(idx) {
            match Daticert::parse(&part.decoded()) {
                Ok(d) => {
                    if d.malformed {
                        c.daticert_error = d.warnings.first().cloned();
                    }
                    c.daticert = Some(d);
                }
                Err(e) => c.daticert_error = Some(e.to_string()),
            }
        }
    }

    // 2. Collect the signals.
    let mut signals: Vec<Signal> = Vec::new();
    if let Some(d) = &c.daticert {
        match d.kind() {
            Some(kind) => signals.push(Signal { source: format!("daticert tipo `{}`", d.tipo), kind }),
            None => c.warnings.push(format!("daticert tipo `{}` is not a known PEC kind", d.tipo)),
        }
    }
    let mut header_signals = Vec::new();
    for name in ["X-Trasporto", "X-Ricevuta"] {
        for value in msg.header_values(name) {
            match header_kind(name, &value) {
                Some(kind) => header_signals.push(Signal { source: format!("{name} `{value}`"), kind }),
                None => c.warnings.push(format!("unknown {name} value `{value}`")),
            }
        }
    }
    let subject_signal = c
        .subject
        .as_deref()
        .and_then(subject_kind)
        .map(|kind| Signal { source: "subject prefix".to_string(), kind });

    // 3. Decide: daticert, else header; anomaly header refines a
    //    posta-certificata daticert.
    let decided = signals
        .first()
        .map(|s| s.kind)
        .or_else(|| header_signals.first().map(|s| s.kind));
    let header_says_anomaly = header_signals.iter().any(|s| s.kind == PecKind::Anomalia);
    c.kind = match decided {
        Some(PecKind::PostaCertificata) if header_says_anomaly => PecKind::Anomalia,
        Some(kind) => kind,
        None => {
            if let Some(s) = &subject_signal {
                c.warnings.push(format!(
                    "subject prefix suggests {} but there is no PEC header or daticert: treated as plain",
                    s.kind.as_str()
                ));
            }
            PecKind::Plain
        }
    };
    signals.extend(header_signals);
    signals.extend(subject_signal);
    for (i, a) in signals.iter().enumerate() {
        for b in &signals[i + 1..] {
            if !compatible(&a.kind, &b.kind) {
                c.disagreements.push(format!(
                    "{} says {} but {} says {}; classified as {}",
                    a.source,
                    a.kind.as_str(),
                    b.source,
                    b.kind.as_str(),
                    c.kind.as_str()
                ));
            }
        }
    }

    if c.kind != PecKind::Plain {
        resolve_form(&mut c, &msg);
        resolve_references(&mut c, &msg);
        if parts.daticert.is_none() && c.kind != PecKind::Anomalia {
            c.warnings.push("no daticert.xml part: kind taken from unsigned headers only".into());
        }
        for value in msg.header_values("X-VerificaSicurezza") {
            if value.eq_ignore_ascii_case("errore") {
                c.warnings.push(
                    "X-VerificaSicurezza: errore: the provider could not verify the integrity of the incoming message"
                        .into(),
                );
            }
        }
    }
    c
}

/// Delivery-receipt form: daticert `ricevuta` over `X-TipoRicevuta`.
fn resolve_form(c: &mut Classification, msg: &mime::Entity<'_>) {
    let PecKind::AvvenutaConsegna { form } = &mut c.kind else {
        return;
    };
    let header = msg.header_value("X-TipoRicevuta").map(|v| (ReceiptForm::parse_lenient(&v), v));
    let from_daticert = c.daticert.as_ref().and_then(|d| d.ricevuta);
    if let (Some(d), Some((h, raw))) = (from_daticert, &header) {
        if d != *h {
            c.disagreements.push(format!(
                "X-TipoRicevuta `{raw}` but daticert ricevuta tipo `{}`; using the daticert",
                d.as_str()
            ));
        }
    }
    *form = from_daticert.or(header.map(|(h, _)| h)).unwrap_or(ReceiptForm::Unknown);
}

/// Original Message-ID and identificativo, daticert first.
fn resolve_references(c: &mut Classification, msg: &mime::Entity<'_>) {
    let header_ref = msg.header_value("X-Riferimento-Message-ID").and_then(|v| normalize_message_id(&v));
    let daticert_ref = c.daticert.as_ref().and_then(|d| d.msgid.clone());
    if let (Some(h), Some(d)) = (&header_ref, &daticert_ref) {
        if h != d {
            c.disagreements.push(format!(
                "X-Riferimento-Message-ID {h} but daticert msgid {d}; using the daticert"
            ));
        }
    }
    c.original_message_id = daticert_ref.or(header_ref);
    c.identificativo = c
        .daticert
        .as_ref()
        .and_then(|d| d.identificativo.clone())
        .filter(|s| !s.is_empty());
    if c.identificativo.is_none() && matches!(c.kind, PecKind::PostaCertificata | PecKind::Anomalia) {
        // HYPOTHESIS: an envelope's own Message-ID is the identificativo
        // (PEC-SPEC.md); receipts have their own ids, so no fallback there.
        c.identificativo = c.message_id.as_deref().map(|m| m.trim_matches(|ch| ch == '<' || ch == '>').to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in PecKind::ALL {
            assert_eq!(PecKind::from_str(k.as_str()).unwrap(), k);
        }
        assert!(PecKind::from_str("consegna").is_err());
    }

    #[test]
    fn subject_prefix_longest_match() {
        assert_eq!(
            subject_kind("AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: x"),
            Some(PecKind::PreavvisoErroreConsegna)
        );
        assert_eq!(subject_kind("avviso di mancata consegna: x"), Some(PecKind::ErroreConsegna));
        assert_eq!(subject_kind("Re: CONSEGNA: x"), None);
    }
}
