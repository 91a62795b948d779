//! The IMAP commands, one file per protocol state (RFC 3501 §3), the way
//! Aerogramme splits them:
//!
//! * [`anystate`]: CAPABILITY, NOOP, LOGOUT, ID — valid in every state.
//! * [`anonymous`]: not authenticated: STARTTLS, LOGIN, AUTHENTICATE.
//! * [`authenticated`]: SELECT/EXAMINE, LIST, STATUS, APPEND, …
//! * [`selected`]: FETCH, STORE, SEARCH, SORT, THREAD, EXPUNGE, CLOSE,
//!   and the refresh that tells the client what changed.
//! * [`transfer`]: COPY and MOVE (between folders, mailboxes, handling
//!   views and Trash).
//!
//! Each handler borrows only what its state has ([`Conn`] always, an
//! [`Authed`] user after login, a [`Selected`] folder after SELECT), writes
//! its responses, and returns the [`Transition`] to the next state.
//! Handlers that change state take a [`permission::Allowed`], which only
//! dispatch gets from the permission table.

pub mod anonymous;
pub mod anystate;
pub mod authenticated;
pub mod folders;
pub mod selected;
pub mod transfer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::shared::Entries;
use super::view::{Folder, View};
use super::{permission, Ctx, SessionGuard};
use crate::store::{Audit, Change};

/// What every state has: the server's context and the connection.
pub struct Conn {
    pub ctx: Arc<Ctx>,
    pub peer: SocketAddr,
    pub tls: bool,
    /// A STARTTLS listener (advertise STARTTLS until TLS is on).
    pub starttls_listener: bool,
}

impl Conn {
    /// May a client log in over this connection (TLS, or plaintext allowed
    /// on loopback)?
    pub fn may_login(&self) -> bool {
        self.tls || super::plaintext_ok(&self.ctx.cfg, &self.peer)
    }

    pub fn source(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    /// Record an audit-only event; a failure is logged (the store latches
    /// and refuses writes, which the next changing command reports).
    /// [`Conn::audit_only`] without waiting for the record's fsync
    /// ([`crate::store::Store::record_soon`]): for what discloses no
    /// message content.
    pub fn audit_soon(&self, a: Audit) -> bool {
        match self.ctx.store.record_soon(a) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit record failed");
                false
            }
        }
    }

    pub async fn audit_only(&self, a: Audit) -> bool {
        match self.ctx.store.commit(a, Change::None).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit record failed");
                false
            }
        }
    }
}

/// A logged-in user: what they see, and their session slot.
pub struct Authed {
    pub view: View,
    pub _guard: SessionGuard,
    /// Extensions the client turned on.
    pub enabled: Enabled,
}

/// RFC 7162's CONDSTORE and QRESYNC as this connection uses them:
/// CONDSTORE is on from ENABLE or the first command that uses a MODSEQ
/// (SELECT (CONDSTORE), FETCH MODSEQ or CHANGEDSINCE, STORE
/// UNCHANGEDSINCE, SEARCH MODSEQ), and from then on every FETCH of FLAGS
/// says the MODSEQ too; QRESYNC only from ENABLE, and it turns EXPUNGE
/// into VANISHED.
#[derive(Default)]
pub struct Enabled {
    condstore: AtomicBool,
    qresync: AtomicBool,
}

impl Enabled {
    pub fn condstore(&self) -> bool {
        self.condstore.load(Ordering::Relaxed)
    }

    pub fn qresync(&self) -> bool {
        self.qresync.load(Ordering::Relaxed)
    }

    pub fn set_condstore(&self) {
        self.condstore.store(true, Ordering::Relaxed);
    }

    /// QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
    pub fn set_qresync(&self) {
        self.set_condstore();
        self.qresync.store(true, Ordering::Relaxed);
    }
}

impl Authed {
    /// An audit record of `op` by this user from this connection.
    pub fn audit(&self, conn: &Conn, op: &str) -> Audit {
        Audit::user(&self.view.user.name, conn.source(), "imap", op)
    }

    /// Commit one change with its audit record (actor, source, mailbox,
    /// folder, UIDs).
    pub async fn record(
        &self,
        conn: &Conn,
        op: &str,
        mailbox: &str,
        folder: &str,
        uids: Vec<u32>,
        change: Change,
    ) -> Result<(), crate::store::StoreError> {
        let a = self.audit(conn, op).mailbox(mailbox).folder(folder).uids(uids);
        conn.ctx.store.commit(a, change).await.map(|_| ())
    }
}

/// The selected folder.
pub struct Selected {
    pub folder: Folder,
    /// SELECT (not EXAMINE) of a folder that can change: every user may
    /// at least store their own `\Seen`; what else is checked per command.
    pub writable: bool,
    /// (uid, meta) in sequence order; shared with other sessions that
    /// see the same (see `imap::shared`), copied when this one diverges.
    pub msgs: Arc<Entries>,
    /// The messages this user has seen (shared with the SEARCHes running
    /// on it, not copied for each).
    pub seen: Arc<super::uidset::UidSet>,
    /// The flags and keywords last announced in `* FLAGS`: a keyword a
    /// message gets that is not among them is announced before the
    /// message's FETCH shows it (RFC 3501 §7.2.6).
    pub defined: Vec<String>,
    /// `defined` holds the keywords of the newest messages only (SELECT
    /// answered before a large folder's list was whole): the rest are
    /// announced once it is.
    pub keywords_pending: bool,
    /// Messages this session is the first to see (`\\Recent`).
    pub recent: super::recent::Recent,
    /// The store's generation read before `msgs` was (see
    /// `selected::refresh`).
    pub generation: u64,
    /// The folder keeps MODSEQs (not a virtual one: RFC 7162 NOMODSEQ).
    pub modseq: bool,
    /// `SEARCH`/`SORT RETURN (UPDATE)` results kept up to date (RFC 5267
    /// §4), at most `context::MAX_CONTEXTS`; they end with the selection.
    pub contexts: Vec<super::context::UpdateContext>,
}

impl Selected {
    /// The MODSEQ to show with a message's flags: only to a client that
    /// enabled CONDSTORE, in a folder that keeps them.
    pub fn show_modseq(&self, user: &Authed, m: &super::shared::Msg) -> Option<u64> {
        (self.modseq && user.enabled.condstore()).then_some(m.modseq)
    }
}

impl Selected {
    /// The UIDs in the store folder behind the selected one (a handling
    /// view or Trash numbers messages its own way).
    pub fn source_uids(&self, uids: &[u32]) -> Vec<u32> {
        if self.folder.handling.is_none() && !self.folder.trash {
            return uids.to_vec();
        }
        uids.iter()
            .filter_map(|u| {
                let i = self.msgs.binary_search_by_key(u, |m| m.0).ok()?;
                self.msgs[i].1.source_uid
            })
            .collect()
    }

    /// The blob hashes of the messages shown as `uids` (UIDs of this
    /// folder, in `msgs`' order: a binary search each, not a scan).
    pub fn hashes(&self, uids: &[u32]) -> Vec<String> {
        uids.iter()
            .filter_map(|u| {
                let i = self.msgs.binary_search_by_key(u, |m| m.0).ok()?;
                Some(self.msgs[i].1.hash.hex())
            })
            .collect()
    }

    /// The audit's folder for operations on the selected messages: the
    /// store folder they are in (with [`Selected::source_uids`]).
    pub fn audit_folder(&self) -> &str {
        match self.folder.handling {
            Some(_) => self.folder.source(),
            None => self.folder.audit_name(),
        }
    }
}

/// The protocol state (RFC 3501 §3).
pub enum State {
    NotAuthenticated,
    Authenticated(Box<Authed>),
    Selected(Box<Authed>, Box<Selected>),
    Logout,
}

/// What a handler asks of the state.
pub enum Transition {
    /// Stay.
    None,
    /// Logged in.
    Authenticate(Box<Authed>),
    /// A folder is selected (replacing any other).
    Select(Box<Selected>),
    /// No folder selected any more (CLOSE, UNSELECT, a failed SELECT).
    Unselect,
    /// Upgrade the connection to TLS (after the tagged OK is written).
    StartTls,
    Logout,
}

impl State {
    /// The state after `t`. Transitions that do not fit the state (a
    /// handler of one state cannot return another's) leave it unchanged.
    pub fn apply(self, t: Transition) -> State {
        match (self, t) {
            (s, Transition::None | Transition::StartTls) => s,
            (_, Transition::Logout) => State::Logout,
            (State::NotAuthenticated, Transition::Authenticate(a)) => State::Authenticated(a),
            (State::Authenticated(a) | State::Selected(a, _), Transition::Select(s)) => State::Selected(a, s),
            (State::Selected(a, _), Transition::Unselect) => State::Authenticated(a),
            (s, _) => s,
        }
    }

    pub fn user(&self) -> Option<&Authed> {
        match self {
            State::Authenticated(a) | State::Selected(a, _) => Some(a),
            _ => None,
        }
    }
}

pub use permission::Allowed;
