//! The client-facing IMAP server: listeners, TLS, per-user session limits.
//!
//! * `mod.rs` (this file): bind the listeners, accept, cap connections,
//!   hand each one to a task that does its TLS handshake under a timeout.
//! * [`session`]: one task per connection: the protocol state machine.
//! * [`io`]: imap-next's stream and server with bounded output.
//! * [`view`]: the per-user folder tree over the store.
//! * [`shared`]: selected-folder entries shared between sessions.
//! * [`fetch`], [`search`]: message data and search over stored messages.
//! * [`sort`], [`thread`]: RFC 5256 SORT and THREAD over what a search
//!   selected (pure: base subjects, sort keys, ORDEREDSUBJECT, REFERENCES).

pub mod anatomy;
pub mod catenate;
pub mod command;
pub mod context;
pub mod extended;
pub mod fetch;
pub mod io;
pub mod notify;
pub mod permission;
pub mod respond;
pub mod scan;
pub mod recent;
pub mod search;
pub mod session;
pub mod shared;
pub mod subscriptions;
pub mod sort;
pub mod thread;
pub mod uidset;
pub mod view;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::auth::Authenticator;
use crate::config::ImapConfig;
use crate::store::Store;

/// HYPOTHESIS: 16,384 concurrent connections cover an organisation of
/// hundreds of users with several clients each, with room for the 10,000
/// idle sessions of the memory target (BENCHMARKS.md); past it new
/// connections wait in the kernel's backlog. The process needs a file
/// limit above it (the systemd unit sets `LimitNOFILE=65536`).
const MAX_CONNECTIONS: usize = 16_384;
/// A TLS handshake slower than this is an attack or a broken client.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// What every session shares.
pub struct Ctx {
    pub cfg: ImapConfig,
    pub tls: Arc<rustls::ServerConfig>,
    pub store: Store,
    /// The full-text index (BODY and TEXT), when it could be opened.
    pub fulltext: Option<Arc<crate::fulltext::FullText>>,
    pub auth: Arc<Authenticator>,
    /// Open sessions per user (for `max_sessions_per_user`); shared by the
    /// contexts a SIGHUP replaces, so reloaded limits count every session.
    pub sessions: Arc<Mutex<HashMap<String, usize>>>,
    /// Open connections per source address (for
    /// `max_sessions_per_address`), counted from accept, before TLS and
    /// login: one address cannot take all `MAX_CONNECTIONS` slots.
    pub addresses: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// `pec.overdue_after`: when a sent message without its final receipts
    /// shows `$PecOverdue` (reconcile's default if `None`).
    pub overdue_after: Option<Duration>,
    /// Offices and routing rules (a SIGHUP replaces them in place, for
    /// open sessions too).
    pub rules: crate::handling::rules::LiveRules,
    /// Selected-folder entries shared between sessions; kept across the
    /// contexts a SIGHUP replaces.
    pub metas: Arc<shared::SharedMetas>,
    /// Each PEC mailbox's address by alias: what the `From` of a message
    /// APPENDed to its Sent must be.
    pub mailbox_addresses: Arc<HashMap<String, String>>,
    /// Which messages some session of a user has already been told about
    /// (`\\Recent`); kept across the contexts a SIGHUP replaces.
    pub recent: Arc<RecentMarks>,
}

pub use recent::RecentMarks;

/// Counts one authenticated session of a user; dropping it releases it.
pub struct SessionGuard {
    ctx: Arc<Ctx>,
    user: String,
}

impl Ctx {
    /// The current offices and rules.
    pub fn rules(&self) -> crate::handling::rules::LiveRules {
        self.rules.clone()
    }

    /// Take a session slot for `user`, or `None` if they have too many.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Option<SessionGuard> {
        let mut m = self.sessions.lock().ok()?;
        let n = m.entry(user.to_string()).or_insert(0);
        if *n >= self.cfg.max_sessions_per_user {
            return None;
        }
        *n += 1;
        crate::counters::imap_sessions_open().inc();
        Some(SessionGuard {
            ctx: self.clone(),
            user: user.to_string(),
        })
    }
}

/// Counts one connection from an address; dropping it releases it.
pub struct AddressGuard {
    ctx: Arc<Ctx>,
    ip: IpAddr,
}

impl Ctx {
    /// Take a connection slot for `ip`, or `None` if it has too many.
    pub fn acquire_address(self: &Arc<Self>, ip: IpAddr) -> Option<AddressGuard> {
        let mut m = self.addresses.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= self.cfg.max_sessions_per_address {
            return None;
        }
        *n += 1;
        Some(AddressGuard {
            ctx: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.ctx.addresses.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        crate::counters::imap_sessions_open().dec();
        if let Ok(mut m) = self.ctx.sessions.lock() {
            if let Some(n) = m.get_mut(&self.user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.user);
                }
            }
        }
    }
}

/// Bind every configured listener (failing if one cannot be bound) and
/// serve them until `shutdown` turns true. Sessions get BYE on shutdown.
pub async fn start(
    ctx: Arc<Ctx>,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinSet<()>, ImapError> {
    start_reloadable(watch::channel(ctx).1, shutdown).await
}

/// Like [`start`], with the context read from `current` at each accept: a
/// SIGHUP publishes a new [`Ctx`] (limits, users, TLS) and new connections
/// get it while open sessions keep the one they started with (the users,
/// offices and rules inside it are shared and change for them too). The
/// listener addresses are those of the context at start.
pub async fn start_reloadable(
    current: watch::Receiver<Arc<Ctx>>,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinSet<()>, ImapError> {
    let ctx = current.borrow().clone();
    let mut tasks = JoinSet::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let addrs = ctx
        .cfg
        .listen
        .iter()
        .map(|a| (a.clone(), true))
        .chain(ctx.cfg.listen_starttls.iter().map(|a| (a.clone(), false)));
    for (addr, implicit) in addrs {
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ImapError::Bind {
                addr: addr.clone(),
                source,
            })?;
        tracing::info!(%addr, implicit_tls = implicit, "IMAP listening");
        tasks.spawn(accept_loop(
            listener,
            implicit,
            current.clone(),
            limit.clone(),
            shutdown.clone(),
        ));
    }
    Ok(tasks)
}

async fn accept_loop(
    listener: TcpListener,
    implicit: bool,
    current: watch::Receiver<Arc<Ctx>>,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    crate::listener::accept_loop("imap", listener, limit, shutdown, |tcp, peer, sd| {
        let ctx = current.borrow().clone();
        // Counted from the moment of accept, before TLS and login.
        let slot = ctx.acquire_address(peer.ip());
        async move {
            match slot {
                Some(_slot) => session::run(ctx, tcp, peer, implicit, sd).await,
                None => session::refuse(ctx, tcp, peer, implicit).await,
            }
        }
    })
    .await
}

/// Is this peer allowed to log in without TLS (if configured)?
pub fn plaintext_ok(cfg: &ImapConfig, peer: &SocketAddr) -> bool {
    cfg.allow_plaintext_on_loopback && peer.ip().is_loopback()
}
