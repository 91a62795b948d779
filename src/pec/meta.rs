//! What the archive keeps about each message's PEC nature: the value stored
//! with every archived message (in its journal record and the index).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::signature::SignatureStatus;
use super::Classification;

/// Our own copy of a sent message: what reconciliation needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentInfo {
    /// Normalised Message-ID: the key receipts refer to.
    pub key: String,
    pub recipients: Vec<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PecMeta {
    pub classification: Classification,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureStatus>,
    /// Present for messages filed in `Sent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<SentInfo>,
}

/// The `pec` member of an archived message's journal record and index
/// entry: the metadata, typed, or — for a record whose `pec` JSON this
/// version does not understand (written by another version, or damaged) —
/// that JSON, kept as written.
///
/// The JSON is the same as when this was an untyped `serde_json::Value`:
/// metadata is written through one (so its members are in alphabetical
/// order at every level, byte for byte as before), and an unrecognised
/// value is written back unchanged. An unrecognised value never makes a
/// record unreadable; it reads as "no PEC metadata" ([`StoredPec::meta`]),
/// and the index logs it when it applies the record.
///
/// Boxed: most messages' metadata is large, and events, changes and index
/// entries without any should not carry its room.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredPec {
    Meta(Box<PecMeta>),
    Unrecognised(serde_json::Value),
}

impl StoredPec {
    /// The metadata, if it is metadata this version understands.
    pub fn meta(&self) -> Option<&PecMeta> {
        match self {
            StoredPec::Meta(m) => Some(m),
            StoredPec::Unrecognised(_) => None,
        }
    }

    /// Why the stored JSON is not metadata (`None` for metadata).
    pub fn unrecognised_because(&self) -> Option<String> {
        match self {
            StoredPec::Meta(_) => None,
            StoredPec::Unrecognised(v) => Some(match PecMeta::deserialize(v) {
                Ok(_) => "unrecognised".into(),
                Err(e) => e.to_string(),
            }),
        }
    }
}

impl From<PecMeta> for StoredPec {
    fn from(m: PecMeta) -> Self {
        StoredPec::Meta(Box::new(m))
    }
}

impl Serialize for StoredPec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // Through a `Value`, whose objects are sorted maps: the JSON the
            // journal has always held.
            StoredPec::Meta(m) => serde_json::to_value(m).map_err(serde::ser::Error::custom)?.serialize(s),
            StoredPec::Unrecognised(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StoredPec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(match PecMeta::deserialize(&v) {
            Ok(m) => StoredPec::Meta(Box::new(m)),
            Err(_) => StoredPec::Unrecognised(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pec::{Classification, PecKind};
    use serde_json::json;

    fn meta() -> PecMeta {
        let classification =
            Classification { kind: PecKind::Accettazione, subject: Some("ACCETTAZIONE: x".into()), ..Default::default() };
        PecMeta {
            classification,
            signature: Some(SignatureStatus::Valid { signer: "CN=p".into() }),
            sent: Some(SentInfo { key: "<a@b>".into(), recipients: vec!["r@x".into()], at: chrono::DateTime::UNIX_EPOCH }),
        }
    }

    #[test]
    fn metadata_is_written_as_the_untyped_value_was() {
        let m = meta();
        let typed = serde_json::to_string(&StoredPec::from(m.clone())).unwrap();
        let untyped = serde_json::to_string(&serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(typed, untyped);
        assert!(typed.starts_with("{\"classification\":{\"daticert\":null,\"daticert_error\":null,\"disagreements\":[]"), "{typed}");
        let back: StoredPec = serde_json::from_str(&typed).unwrap();
        assert_eq!(back, StoredPec::from(m));
    }

    /// Metrics label messages by these names, which were read from the
    /// JSON before metadata was typed.
    #[test]
    fn kind_and_signature_names_are_their_serialised_names() {
        for k in PecKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap()["type"], k.as_str());
        }
        for s in [
            SignatureStatus::Valid { signer: "s".into() },
            SignatureStatus::Invalid { reason: "r".into() },
            SignatureStatus::UnknownSigner { signer: "s".into() },
            SignatureStatus::NotSigned,
        ] {
            assert_eq!(serde_json::to_value(&s).unwrap()["status"], s.as_str());
        }
    }

    #[test]
    fn unknown_json_is_kept_and_reads_as_no_metadata() {
        for v in [
            json!({"classification": {"kind": {"type": "rem-evidence"}, "disagreements": [], "warnings": []}}),
            json!("not metadata"),
            json!(null),
            json!({"classification": 7, "extra": [1, 2]}),
        ] {
            let text = serde_json::to_string(&v).unwrap();
            let p: StoredPec = serde_json::from_str(&text).unwrap();
            assert_eq!(p.meta(), None, "{text}");
            assert!(p.unrecognised_because().is_some());
            assert_eq!(serde_json::to_string(&p).unwrap(), text, "written back as it was");
        }
    }
}
