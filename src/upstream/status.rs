//! Live status of each mailbox task, shared with `status.json`, `/readyz`
//! and metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::Store;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaStatus {
    pub storage_used_bytes: Option<u64>,
    pub storage_limit_bytes: Option<u64>,
    pub messages_used: Option<u64>,
    pub messages_limit: Option<u64>,
}

impl QuotaStatus {
    /// The fuller of the two resources, as a fraction of its limit.
    pub fn ratio(&self) -> f64 {
        let r = |u: Option<u64>, l: Option<u64>| match (u, l) {
            (Some(u), Some(l)) if l > 0 => u as f64 / l as f64,
            _ => 0.0,
        };
        r(self.storage_used_bytes, self.storage_limit_bytes).max(r(self.messages_used, self.messages_limit))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Caps {
    pub idle: bool,
    pub uidplus: bool,
    pub quota: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MailboxStatus {
    pub alias: String,
    pub address: String,
    /// `starting`, `connecting`, `syncing`, `idle`, `error`, `stopped`.
    pub state: String,
    pub connected: bool,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_reason: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub next_retry: Option<DateTime<Utc>>,
    #[serde(default)]
    pub errors_by_reason: BTreeMap<String, u64>,
    /// Messages still on the provider after the last pass.
    pub on_provider: Option<u64>,
    pub quota: Option<QuotaStatus>,
    pub capabilities: Caps,
    /// Since this process started.
    pub archived_this_run: u64,
    pub archived_bytes_this_run: u64,
    pub deleted_this_run: u64,
    /// In the archive, all folders (filled when written out).
    pub archived_total: u64,
    pub archived_total_bytes: u64,
}

/// The shared board. Every update rewrites `status.json` so that
/// `pecgate status` (another process) sees the daemon's view.
#[derive(Clone)]
pub struct StatusBoard {
    inner: Arc<Mutex<BTreeMap<String, MailboxStatus>>>,
    store: Store,
    started: DateTime<Utc>,
}

impl StatusBoard {
    pub fn new(store: Store, mailboxes: &[(String, String)]) -> StatusBoard {
        let map = mailboxes
            .iter()
            .map(|(alias, address)| {
                (
                    alias.clone(),
                    MailboxStatus { alias: alias.clone(), address: address.clone(), state: "starting".into(), ..Default::default() },
                )
            })
            .collect();
        let b = StatusBoard { inner: Arc::new(Mutex::new(map)), store, started: Utc::now() };
        b.write();
        b
    }

    pub fn update(&self, alias: &str, f: impl FnOnce(&mut MailboxStatus)) {
        if let Ok(mut m) = self.inner.lock() {
            if let Some(s) = m.get_mut(alias) {
                f(s);
            }
        }
        self.write();
    }

    pub fn snapshot(&self) -> Vec<MailboxStatus> {
        let mut v: Vec<MailboxStatus> = self.inner.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        for s in &mut v {
            if let Ok((n, b)) = self.store.mailbox_totals(&s.alias) {
                s.archived_total = n;
                s.archived_total_bytes = b;
            }
        }
        v
    }

    fn write(&self) {
        let doc = serde_json::json!({
            "pid": std::process::id(),
            "started": self.started,
            "written": Utc::now(),
            "store_failure": self.store.failure(),
            "mailboxes": self.snapshot(),
        });
        if let Err(e) = self.store.write_status(&doc) {
            tracing::warn!(error = %e, "cannot write status.json");
        }
    }
}
