//! `GET /api/search`: full-text search across the mailboxes a user may
//! read, ranked, each hit with a snippet and the folder a mail client
//! shows it in (`protocollo/Receipts`). Parameters: `q` (the words),
//! `mailbox`, `from`, `since` (`YYYY-MM-DD`), `kind` (`certified`,
//! `receipt`, `anomaly`, `sent`, `plain`), `state` (a sent message's
//! delivery: `delivered`, `failed`, `accepted`, `notaccepted`, `overdue`,
//! `warned`), `limit` (default 50, at most 1,000).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde_json::{json, Value};

use super::{Filter, FullText};
use crate::auth::{Right, User};
use crate::store::Store;

pub type Answer = (u16, &'static str, Vec<u8>);

fn answer(status: u16, v: Value) -> Answer {
    (status, "application/json", v.to_string().into_bytes())
}

pub struct SearchApi {
    pub store: Store,
    pub ft: Arc<FullText>,
    pub overdue_after: Option<Duration>,
}

pub const KINDS: [&str; 5] = ["certified", "receipt", "anomaly", "sent", "plain"];
pub const STATES: [&str; 6] = ["delivered", "failed", "accepted", "notaccepted", "overdue", "warned"];

impl SearchApi {
    /// Blocking (the index and the store): call from a blocking thread.
    pub fn search(&self, user: &User, params: &HashMap<String, String>) -> Answer {
        let q = params.get("q").map(String::as_str).unwrap_or_default();
        let visible: Vec<String> = user.visible_mailboxes().into_iter().map(str::to_string).collect();
        let mailboxes = match params.get("mailbox") {
            Some(m) if user.may(m, Right::Read) => vec![m.clone()],
            // Not granted and not existing answer alike.
            Some(m) => return answer(403, json!({ "error": format!("user {} may not read mailbox {m}", user.name) })),
            None => visible,
        };
        let since = match params.get("since") {
            Some(s) => match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(d) => d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()),
                Err(_) => return answer(400, json!({ "error": format!("since: {s:?} is not a date (YYYY-MM-DD)") })),
            },
            None => None,
        };
        let kind = params.get("kind").cloned();
        if let Some(k) = &kind {
            if !KINDS.contains(&k.as_str()) {
                return answer(400, json!({ "error": format!("kind: {k:?} is not one of {}", KINDS.join(", ")) }));
            }
        }
        let state = params.get("state").map(|s| s.to_ascii_lowercase());
        if let Some(s) = &state {
            if !STATES.contains(&s.as_str()) {
                return answer(400, json!({ "error": format!("state: {s:?} is not one of {}", STATES.join(", ")) }));
            }
        }
        if q.trim().is_empty() && params.get("from").is_none() {
            return answer(400, json!({ "error": "q: give the words to find" }));
        }
        let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(50).clamp(1, 1000);
        let filter = Filter { from: params.get("from").cloned(), since, kind };
        // A state filter looks past what the index ranks first.
        let ask = if state.is_some() { limit * 10 } else { limit };
        // What was just archived is indexed at once rather than with the
        // next gathered commit; this answer is from what is indexed now.
        self.ft.hurry();
        let hits = match self.ft.search(&mailboxes, q, &filter, ask) {
            Ok(h) => h,
            Err(e) => return answer(500, json!({ "error": e.to_string() })),
        };
        let mut out = Vec::new();
        let mut names: HashMap<String, HashMap<String, String>> = HashMap::new();
        for h in hits {
            if out.len() >= limit {
                break;
            }
            // Where it is now; a message no longer in any folder is left out.
            let Ok(Some((folder, uid))) = self.store.find_hash(&h.mailbox, &h.hash) else { continue };
            let shown = names
                .entry(h.mailbox.clone())
                .or_insert_with(|| {
                    self.store
                        .folders(&h.mailbox)
                        .map(|f| f.into_iter().filter_map(|(sf, st)| Some((sf, st.category?))).collect())
                        .unwrap_or_default()
                })
                .get(&folder)
                .cloned()
                .unwrap_or_else(|| folder.clone());
            let delivery = self.delivery(&h.mailbox, &folder, uid);
            if let Some(want) = &state {
                if !delivery.iter().any(|d| d == want) {
                    continue;
                }
            }
            out.push(json!({
                "mailbox": h.mailbox, "folder": format!("{}/{shown}", h.mailbox), "uid": uid,
                "subject": h.subject, "from": h.from, "date": h.date.to_rfc3339(), "kind": h.kind,
                "state": delivery, "score": h.score, "snippet": h.snippet, "sha256": h.hash,
            }));
        }
        answer(200, json!({ "query": q, "mailboxes": mailboxes, "hits": out }))
    }

    /// A sent message's delivery, as the `$Pec*` keywords say it
    /// (`delivered`, `failed`, …); empty for anything else.
    fn delivery(&self, mailbox: &str, folder: &str, uid: u32) -> Vec<String> {
        if folder != "Sent" {
            return Vec::new();
        }
        let Ok(Some(m)) = self.store.message(mailbox, folder, uid) else { return Vec::new() };
        let Some(key) = m.pec_meta().and_then(|p| p.sent.as_ref()).map(|s| s.key.clone()) else { return Vec::new() };
        let Ok(Some(s)) = self.store.sent_state(mailbox, &key) else { return Vec::new() };
        let s = match self.overdue_after {
            Some(d) => s.with_overdue_after(d),
            None => s,
        };
        s.keywords(Utc::now()).into_iter().map(|k| k.trim_start_matches("$Pec").to_ascii_lowercase()).collect()
    }
}
