//! The simulator's own mailboxes, so that it needs no IMAP server beside it:
//! each simulated PEC mailbox is a mailbox of a pecgate archive (`Store`)
//! of its own, in a separate data directory, and pecgate's IMAP server code
//! (`crate::imap`) serves them, one login per simulated mailbox.
//!
//! What a provider mailbox needs to be for the gateway's upstream sync is
//! exactly what pecgate's IMAP server already offers a user holding `read`,
//! `triage` and `delete` on one mailbox: `INBOX` is that mailbox's INBOX,
//! `UID FETCH … BODY.PEEK[]`, `UID STORE +FLAGS (\Deleted)`, `UID EXPUNGE`
//! (UIDPLUS), IDLE (woken by the store's notices when the simulator
//! delivers), and QUOTA without a quota root. An EXPUNGE hides a message
//! (the archive keeps its bytes): for the simulator that is what "deleted
//! from the provider" means.
//!
//! Delivering is filing a message in the mailbox's INBOX (blob fsynced,
//! then a journal record), the same commit the gateway makes when it
//! archives; no IMAP round trip.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{SimError, SimMailbox};
use crate::config::UserConfig;
use crate::store::{Audit, Change, Store, StoreError, StoreOptions};

/// `[mailstore]` of the simulator's configuration: keep the mailboxes here
/// and serve them over IMAP (instead of APPENDing into a real IMAP server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailStoreConfig {
    /// The archive holding the simulated mailboxes (created on first use;
    /// not the gateway's own data directory).
    pub data_dir: PathBuf,
    /// IMAP listener, `ip:port`. Plain (STARTTLS offered); login without
    /// TLS is allowed from loopback only, so keep it on loopback.
    pub imap_listen: String,
}

/// The simulator's mailboxes, open.
pub struct MailStore {
    store: Store,
    /// Each simulated mailbox's address (lower case) → its store mailbox
    /// (its `imap_user`).
    boxes: BTreeMap<String, String>,
    pub imap_addr: SocketAddr,
    tasks: JoinSet<()>,
}

/// Rights of a simulated mailbox's IMAP login on its own mailbox: read,
/// flag `\Deleted` (triage) and expunge (delete).
const RIGHTS: [&str; 3] = ["read", "triage", "delete"];

/// The certificate the IMAP server offers after STARTTLS (kept in the data
/// directory; the gateway logs in on loopback without TLS).
fn server_tls(dir: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let (cert, key) = (dir.join("imap-cert.pem"), dir.join("imap-key.pem"));
    if !key.exists() {
        let c = super::pki::server_cert_for_ip("127.0.0.1").map_err(|e| e.to_string())?;
        std::fs::write(&cert, c.chain).map_err(|e| format!("{}: {e}", cert.display()))?;
        std::fs::write(&key, c.key).map_err(|e| format!("{}: {e}", key.display()))?;
    }
    crate::tls::server_config(&cert, &key).map_err(|e| e.to_string())
}

impl MailStore {
    /// Open (creating) the archive and start the IMAP listener.
    pub async fn start(
        cfg: &MailStoreConfig,
        mailboxes: &[SimMailbox],
        shutdown: watch::Receiver<bool>,
    ) -> Result<MailStore, SimError> {
        let err = |message: String| SimError::Config { path: cfg.data_dir.clone(), message };
        let imap_addr: SocketAddr =
            cfg.imap_listen.parse().map_err(|_| err(format!("mailstore.imap_listen: {:?} is not ip:port", cfg.imap_listen)))?;
        let dir = cfg.data_dir.clone();
        let mbs = mailboxes.to_vec();
        // Opening the index and hashing passwords (argon2) block: off the runtime.
        let (store, users, tls) = tokio::task::spawn_blocking(move || -> Result<_, String> {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let (store, _) = Store::open(&dir.join("archive"), StoreOptions::default()).map_err(|e| e.to_string())?;
            let mut users = Vec::new();
            for m in &mbs {
                users.push(UserConfig {
                    name: m.imap_user.clone(),
                    password_hash: crate::auth::hash_password(&m.imap_password).map_err(|e| e.to_string())?,
                    default_mailbox: Some(m.imap_user.clone()),
                    grants: BTreeMap::from([(m.imap_user.clone(), RIGHTS.iter().map(|r| r.to_string()).collect())]),
                    roles: Vec::new(),
                });
            }
            Ok((store, users, server_tls(&dir)?))
        })
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(err)?;
        let imap_cfg: crate::config::ImapConfig = serde_json::from_value(serde_json::json!({
            "listen_starttls": [cfg.imap_listen],
            "allow_plaintext_on_loopback": true,
        }))
        .map_err(|e| err(format!("IMAP settings: {e}")))?;
        let ctx = Arc::new(crate::imap::Ctx {
            cfg: imap_cfg,
            tls,
            store: store.clone(),
            fulltext: None,
            auth: Arc::new(crate::auth::Authenticator::new(&users)),
            sessions: Default::default(),
            addresses: Default::default(),
            metas: Default::default(),
            overdue_after: None,
            rules: Default::default(),
            mailbox_addresses: Default::default(),
            recent: Default::default(),
        });
        let tasks = crate::imap::start(ctx, shutdown).await.map_err(|e| SimError::Bind {
            addr: cfg.imap_listen.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let boxes = mailboxes.iter().map(|m| (m.address.to_ascii_lowercase(), m.imap_user.clone())).collect();
        tracing::info!(addr = %imap_addr, dir = %cfg.data_dir.display(), "simulated mailboxes served over IMAP");
        Ok(MailStore { store, boxes, imap_addr, tasks })
    }

    /// Messages in the INBOX of the simulated mailbox `address`.
    pub fn inbox_count(&self, address: &str) -> Result<u64, StoreError> {
        let Some(mailbox) = self.boxes.get(&address.to_ascii_lowercase()) else {
            return Err(StoreError::Invalid(format!("{address} is not a simulated mailbox")));
        };
        Ok(self.store.folder(mailbox, "INBOX")?.map(|st| st.exists).unwrap_or(0))
    }

    /// File `msg` in the INBOX of the simulated mailbox `address`.
    pub async fn deliver(&self, address: &str, msg: Vec<u8>) -> Result<(), StoreError> {
        let Some(mailbox) = self.boxes.get(&address.to_ascii_lowercase()) else {
            return Err(StoreError::Invalid(format!("{address} is not a simulated mailbox")));
        };
        let blob = self.store.put_blob(msg).await?;
        let audit = Audit::system("sim", "deliver").mailbox(mailbox).folder("INBOX");
        let change = Change::Archive {
            mailbox: mailbox.clone(),
            folder: "INBOX".into(),
            blob,
            internal_date: Utc::now(),
            flags: Vec::new(),
            provider: None,
            pec: None,
            handling: None,
        };
        self.store.commit(audit, change).await.map(|_| ())
    }

    /// After shutdown was signalled: wait for the IMAP sessions to end,
    /// then close the archive.
    pub async fn close(mut self) {
        while self.tasks.join_next().await.is_some() {}
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
}
