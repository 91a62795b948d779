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

impl PecMeta {
    pub fn from_value(v: &serde_json::Value) -> Option<PecMeta> {
        serde_json::from_value(v.clone()).ok()
    }
}
