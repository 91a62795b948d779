//! `POST /api/exports`: record a conservation export written beside the
//! running daemon (`pecgate export` reads the journal and blobs itself;
//! only the daemon may append to the journal). Role `audit`. Body: the
//! `exported` record's fields, `{"mailbox", "first_seq", "last_seq",
//! "messages", "package", "name"?, "partial"?}`. 201 `{"record": seq}`;
//! 409 when another export of the mailbox was recorded meanwhile.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::User;
use crate::store::{Audit, Change, Event, Store, StoreError};

pub type Answer = (u16, &'static str, Vec<u8>);

fn answer(status: u16, v: Value) -> Answer {
    (status, "application/json", v.to_string().into_bytes())
}

pub struct ExportApi {
    pub store: Store,
    /// The configured mailboxes' aliases.
    pub mailboxes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exported {
    pub mailbox: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub messages: u64,
    pub package: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub partial: bool,
}

impl Exported {
    /// Checked before it is recorded (a bad request changes nothing).
    pub fn check(&self) -> Result<(), String> {
        if self.first_seq == 0 || self.last_seq < self.first_seq {
            return Err(format!("records {}..={} are not a range", self.first_seq, self.last_seq));
        }
        if !crate::store::blobs::valid_hash(&self.package) {
            return Err("package: not a SHA-256 (lower-case hex)".into());
        }
        if self.name.as_ref().is_some_and(|n| n.len() > 1024) {
            return Err("name: over 1024 bytes".into());
        }
        Ok(())
    }

    pub fn event(self) -> Event {
        Event::Exported {
            mailbox: self.mailbox,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            messages: self.messages,
            package: self.package,
            name: self.name,
            partial: self.partial,
        }
    }
}

/// Record an export through `store` (the daemon's, or the CLI's own when
/// the daemon is stopped).
pub async fn record(
    store: &Store,
    actor: &str,
    source: Option<String>,
    proto: &str,
    e: Exported,
) -> Result<u64, StoreError> {
    let audit = Audit::user(actor, source, proto, "export").mailbox(&e.mailbox);
    Ok(store.commit(audit, Change::Conservation(e.event())).await?.seq)
}

impl ExportApi {
    pub async fn post(&self, user: &User, source: &str, body: &[u8]) -> Answer {
        if !user.roles.contains("audit") {
            return answer(403, json!({ "error": format!("user {} may not record exports (role audit)", user.name) }));
        }
        let req: Exported = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return answer(400, json!({ "error": format!("request: {e}") })),
        };
        if !self.mailboxes.contains(&req.mailbox) {
            return answer(404, json!({ "error": format!("no mailbox {:?}", req.mailbox) }));
        }
        if let Err(e) = req.check() {
            return answer(400, json!({ "error": e }));
        }
        match record(&self.store, &user.name, Some(source.to_string()), "http", req).await {
            Ok(seq) => answer(201, json!({ "record": seq })),
            Err(StoreError::Invalid(w)) => answer(400, json!({ "error": w })),
            Err(StoreError::Conflict(w)) => answer(409, json!({ "error": w })),
            Err(e) => answer(500, json!({ "error": e.to_string() })),
        }
    }
}
