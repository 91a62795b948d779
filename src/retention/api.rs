//! The HTTP API of retention and legal holds (`pecgate hold`, `pecgate
//! retention plan` talk to it):
//!
//! - `GET /api/holds[?mailbox=A]`: the standing holds (role `hold` or `audit`).
//! - `POST /api/holds` `{"mailbox", "reason", "messages": [sha256…] |
//!   "query": "words" | "whole": true}`: place a hold (role `hold`). A
//!   query holds every message of the mailbox the full-text index finds
//!   for it now (the words are kept in the record).
//! - `POST /api/holds/<id>/release` `{"reason"}` (role `hold`).
//! - `GET /api/retention[?mailbox=A&limit=N]`: what the next expiry run
//!   would remove (role `hold` or `audit`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::User;
use crate::fulltext::FullText;
use crate::store::{Audit, Change, Event, Store, StoreError};

pub type Answer = (u16, &'static str, Vec<u8>);

fn answer(status: u16, v: Value) -> Answer {
    (status, "application/json", v.to_string().into_bytes())
}

/// The most messages one search-made hold takes.
const MAX_QUERY_HITS: usize = 1_000_000;

pub struct HoldApi {
    pub store: Store,
    pub ft: Option<Arc<FullText>>,
    /// Each configured mailbox and its retention (replaced on SIGHUP).
    pub mailboxes: std::sync::RwLock<Vec<(String, Option<Duration>)>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceHold {
    mailbox: String,
    reason: String,
    #[serde(default)]
    messages: Vec<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    whole: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    reason: String,
}

fn may_view(user: &User) -> bool {
    user.roles.contains("hold") || user.roles.contains("audit")
}

impl HoldApi {
    pub fn new(store: Store, ft: Option<Arc<FullText>>, cfg: &crate::config::Config) -> HoldApi {
        HoldApi { store, ft, mailboxes: std::sync::RwLock::new(Self::retentions(cfg)) }
    }

    fn retentions(cfg: &crate::config::Config) -> Vec<(String, Option<Duration>)> {
        cfg.mailboxes.iter().map(|m| (m.alias.clone(), cfg.retention_of(m))).collect()
    }

    /// After a SIGHUP: the mailboxes and retentions of the new configuration.
    pub fn reload(&self, cfg: &crate::config::Config) {
        *self.mailboxes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Self::retentions(cfg);
    }

    fn mailboxes(&self) -> Vec<(String, Option<Duration>)> {
        self.mailboxes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn known(&self, mailbox: &str) -> bool {
        self.mailboxes().iter().any(|(m, _)| m == mailbox)
    }

    pub fn list(&self, user: &User, params: &HashMap<String, String>) -> Answer {
        if !may_view(user) {
            return answer(
                403,
                json!({ "error": format!("user {} has neither the hold nor the audit role", user.name) }),
            );
        }
        match self.store.holds(params.get("mailbox").map(String::as_str)) {
            Ok(h) => answer(200, json!({ "holds": h })),
            Err(e) => answer(500, json!({ "error": e.to_string() })),
        }
    }

    pub async fn place(&self, user: &User, source: &str, body: &[u8]) -> Answer {
        if !user.roles.contains("hold") {
            return answer(
                403,
                json!({ "error": format!("user {} may not place legal holds (role hold)", user.name) }),
            );
        }
        let req: PlaceHold = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return answer(400, json!({ "error": format!("request: {e}") })),
        };
        if !self.known(&req.mailbox) {
            return answer(404, json!({ "error": format!("no mailbox {:?}", req.mailbox) }));
        }
        let ways = usize::from(req.whole) + usize::from(!req.messages.is_empty()) + usize::from(req.query.is_some());
        if ways != 1 {
            return answer(400, json!({ "error": "give exactly one of messages, query, whole" }));
        }
        let mut hashes: Vec<String> = req.messages.iter().map(|h| h.to_ascii_lowercase()).collect();
        if let Some(q) = &req.query {
            let Some(ft) = self.ft.clone() else {
                return answer(
                    503,
                    json!({ "error": "the full-text index is not available: hold by message instead" }),
                );
            };
            let (mb, q2) = (req.mailbox.clone(), q.clone());
            let hits = tokio::task::spawn_blocking(move || {
                ft.search(&[mb], &q2, &crate::fulltext::Filter::default(), MAX_QUERY_HITS)
            })
            .await;
            match hits {
                Ok(Ok(h)) => hashes = h.into_iter().map(|h| h.hash).collect(),
                Ok(Err(e)) => return answer(500, json!({ "error": e.to_string() })),
                Err(e) => return answer(500, json!({ "error": format!("search task: {e}") })),
            }
            if hashes.is_empty() {
                return answer(
                    409,
                    json!({ "error": format!("the search {q:?} finds nothing in {}: no hold placed", req.mailbox) }),
                );
            }
        } else {
            // Each named message must be one the mailbox holds.
            for h in &hashes {
                match self.store.find_hash(&req.mailbox, h) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return answer(404, json!({ "error": format!("{} holds no message {h}", req.mailbox) }));
                    }
                    Err(e) => return answer(400, json!({ "error": e.to_string() })),
                }
            }
        }
        hashes.sort();
        hashes.dedup();
        let audit = Audit::user(&user.name, Some(source.to_string()), "http", "hold-place").mailbox(&req.mailbox);
        let ev = Event::HoldPlaced {
            mailbox: req.mailbox.clone(),
            whole: req.whole,
            hashes: hashes.clone(),
            reason: req.reason.clone(),
            query: req.query.clone(),
        };
        match self.store.commit(audit, Change::Conservation(ev)).await {
            Ok(c) => answer(
                201,
                json!({ "id": c.seq, "mailbox": req.mailbox, "whole": req.whole, "messages": hashes.len(), "reason": req.reason }),
            ),
            Err(e) => store_error(e),
        }
    }

    pub async fn release(&self, user: &User, source: &str, id: &str, body: &[u8]) -> Answer {
        if !user.roles.contains("hold") {
            return answer(
                403,
                json!({ "error": format!("user {} may not release legal holds (role hold)", user.name) }),
            );
        }
        let Ok(id) = id.parse::<u64>() else { return answer(404, json!({ "error": format!("no hold {id:?}") })) };
        let req: Release = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return answer(400, json!({ "error": format!("request: {e}") })),
        };
        let Some(h) = self.store.holds(None).ok().and_then(|hs| hs.into_iter().find(|h| h.id == id)) else {
            return answer(404, json!({ "error": format!("no legal hold {id} stands") }));
        };
        let audit = Audit::user(&user.name, Some(source.to_string()), "http", "hold-release").mailbox(&h.mailbox);
        let ev = Event::HoldReleased { mailbox: h.mailbox.clone(), hold: id, reason: req.reason };
        match self.store.commit(audit, Change::Conservation(ev)).await {
            Ok(c) => answer(200, json!({ "released": id, "mailbox": h.mailbox, "record": c.seq })),
            Err(e) => store_error(e),
        }
    }

    /// Blocking (reads the index): call from a blocking thread.
    pub fn plan(&self, user: &User, params: &HashMap<String, String>) -> Answer {
        if !may_view(user) {
            return answer(
                403,
                json!({ "error": format!("user {} has neither the hold nor the audit role", user.name) }),
            );
        }
        let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(1000);
        let mut plans = Vec::new();
        for (m, retention) in &self.mailboxes() {
            if params.get("mailbox").is_some_and(|x| x != m) {
                continue;
            }
            let Some(r) = retention else {
                plans.push(json!({ "mailbox": m, "retention": null, "messages": 0 }));
                continue;
            };
            match super::plan(&self.store, m, *r, Utc::now()) {
                Ok(mut p) => {
                    let total = p.items.len();
                    p.items.truncate(limit);
                    let mut v = serde_json::to_value(&p).unwrap_or_default();
                    v["items_total"] = json!(total);
                    plans.push(v);
                }
                Err(e) => return answer(500, json!({ "error": e.to_string() })),
            }
        }
        if plans.is_empty() {
            return answer(404, json!({ "error": "no such mailbox" }));
        }
        answer(200, json!({ "plans": plans }))
    }
}

fn store_error(e: StoreError) -> Answer {
    match e {
        StoreError::Invalid(w) => answer(400, json!({ "error": w })),
        StoreError::Conflict(w) => answer(409, json!({ "error": w })),
        e => answer(500, json!({ "error": e.to_string() })),
    }
}
