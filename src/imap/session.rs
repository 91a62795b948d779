//! One IMAP session: a task `select!`ing the client's next command, store
//! notices (for IDLE) and shutdown.
//!
//! States: not authenticated → authenticated → selected (→ logout). Every
//! command is dispatched by state; commands that change shared state need a
//! [`Grant`], which only [`Session::grant`] makes after checking the user's
//! rights on the selected mailbox, so a handler cannot forget the check.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{AString, Atom, IString, QuotedChar, Tag, Text, Vec1};
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::extensions::namespace::Namespace;
use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_next::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_next::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_next::imap_types::flag::{
    Flag, FlagFetch, FlagNameAttribute, FlagPerm, StoreResponse, StoreType,
};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::response::{
    Bye, Capability, Code, CodeOther, CommandContinuationRequest, Data, Greeting, Status,
    StatusBody, StatusKind, Tagged,
};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::SequenceSet;
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};
use imap_next::server::{Error as ServerError, Event, Options, Server};
use imap_next::stream::{Error as StreamError, Stream};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tokio_rustls::{TlsAcceptor, TlsStream};

use super::io::{Io, IoError};
use super::view::{is_pec_keyword, Folder, View, ViewError, PEC_KEYWORDS};
use super::shared::{self, Entries};
use super::{fetch, search, Ctx, SessionGuard};
use crate::auth::{Right, User};
use crate::handling::{self, Refusal, Transition, ViewKind};
use crate::store::{Audit, BlobRef, Change, Event as StoreEvent, FlagOp, MessageMeta, Notice};

/// Before login, a client has this long per command (RFC 3501 allows a
/// short pre-auth timer; one minute is generous for a human typing).
const PREAUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages per FETCH batch (each batch is drained before the next).
const FETCH_BATCH: usize = 16;
/// Protocol errors tolerated before the connection is dropped.
const MAX_BAD: u32 = 20;

/// Proof that dispatch checked a right on the selected mailbox.
struct Grant(());

struct Selected {
    folder: Folder,
    /// SELECT (not EXAMINE) by a user holding triage or delete.
    writable: bool,
    /// (uid, meta) in sequence order; shared with other sessions that
    /// see the same (see `imap::shared`), copied when this one diverges.
    msgs: Arc<Entries>,
    seen: HashSet<u32>,
}

impl Selected {
    /// The UIDs in the store folder behind the selected one (a handling
    /// view numbers INBOX messages its own way).
    fn source_uids(&self, uids: &[u32]) -> Vec<u32> {
        if self.folder.handling.is_none() {
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
    fn hashes(&self, uids: &[u32]) -> Vec<String> {
        uids.iter()
            .filter_map(|u| {
                let i = self.msgs.binary_search_by_key(u, |m| m.0).ok()?;
                Some(self.msgs[i].1.hash.clone())
            })
            .collect()
    }

    /// The audit's folder for operations on the selected messages: the
    /// store folder they are in (with [`Selected::source_uids`]).
    fn audit_folder(&self) -> &str {
        match self.folder.handling {
            Some(_) => self.folder.source(),
            None => self.folder.audit_name(),
        }
    }
}

enum Flow {
    Continue,
    StartTls,
    Logout,
}

struct Session {
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    tls: bool,
    /// A STARTTLS listener (advertise STARTTLS until TLS is on).
    starttls_listener: bool,
    user: Option<(View, SessionGuard)>,
    selected: Option<Selected>,
    idle_tag: Option<Tag<'static>>,
    auth_tag: Option<Tag<'static>>,
    bad: u32,
}

/// The handling keywords FLAGS names in INBOX and the handling views.
const HANDLING_KEYWORDS: [&str; 5] = [
    handling::KW_NEW,
    handling::KW_ASSIGNED,
    handling::KW_TAKEN,
    handling::KW_DONE,
    handling::KW_OVERDUE,
];

fn text(s: impl Into<String>) -> Text<'static> {
    let s: String = s.into();
    Text::try_from(s).unwrap_or_else(|_| Text::unvalidated("error"))
}

fn tagged(
    tag: Tag<'static>,
    kind: StatusKind,
    code: Option<Code<'static>>,
    t: &str,
) -> Status<'static> {
    Status::Tagged(Tagged {
        tag,
        body: StatusBody {
            kind,
            code,
            text: text(t),
        },
    })
}

fn ok(tag: Tag<'static>, t: &str) -> Status<'static> {
    tagged(tag, StatusKind::Ok, None, t)
}

fn no(tag: Tag<'static>, t: &str) -> Status<'static> {
    tagged(tag, StatusKind::No, None, t)
}

fn bad(tag: Tag<'static>, t: &str) -> Status<'static> {
    tagged(tag, StatusKind::Bad, None, t)
}

fn other_code(c: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(c.as_bytes()))
}

fn noperm(tag: Tag<'static>, t: &str) -> Status<'static> {
    tagged(tag, StatusKind::No, Some(other_code("NOPERM")), t)
}

fn serverbug(tag: Tag<'static>, e: &dyn std::fmt::Display) -> Status<'static> {
    tracing::error!(error = %e, "IMAP command failed on the server side");
    tagged(
        tag,
        StatusKind::No,
        Some(other_code("SERVERBUG")),
        "internal error; the administrator can see the log",
    )
}

fn untagged(kind: StatusKind, code: Option<Code<'static>>, t: &str) -> Status<'static> {
    Status::Untagged(StatusBody {
        kind,
        code,
        text: text(t),
    })
}

fn bye(t: &str) -> Status<'static> {
    Status::Bye(Bye {
        code: None,
        text: text(t),
    })
}

fn cap(s: &'static str) -> Capability<'static> {
    match Atom::try_from(s) {
        Ok(a) => Capability::from(a),
        Err(_) => Capability::Imap4Rev1,
    }
}

fn mailbox_name(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

fn flag_string(f: &Flag<'_>) -> String {
    f.to_string()
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn server_options(ctx: &Ctx) -> Options {
    let mut o = Options::default();
    o.max_literal_size = ctx.cfg.max_literal_size;
    // Room for the command line around the largest literal (64 KiB, as
    // Dovecot and imap-next's default).
    o.max_command_size = ctx.cfg.max_literal_size.saturating_add(64 * 1024);
    o
}

/// Serve one connection to the end. Never panics on client input; errors
/// end the session and are logged here.
pub async fn run(
    ctx: Arc<Ctx>,
    tcp: TcpStream,
    peer: SocketAddr,
    implicit: bool,
    shutdown: watch::Receiver<bool>,
) {
    let stream = if implicit {
        match handshake(&ctx, tcp).await {
            Some(s) => s,
            None => return,
        }
    } else {
        Stream::insecure(tcp)
    };
    let mut s = Session {
        ctx: ctx.clone(),
        peer,
        tls: implicit,
        starttls_listener: !implicit,
        user: None,
        selected: None,
        idle_tag: None,
        auth_tag: None,
        bad: 0,
    };
    let caps = s.capabilities();
    let greeting = Greeting {
        kind: imap_next::imap_types::response::GreetingKind::Ok,
        code: Vec1::try_from(caps).ok().map(Code::Capability),
        text: text("pecgate IMAP ready"),
    };
    let mut io = Io::new(stream, Server::new(server_options(&ctx), greeting));
    loop {
        match s.serve(&mut io, shutdown.clone()).await {
            Ok(Flow::StartTls) => {
                let _ = io.drain().await;
                let tcp = TcpStream::from(io.stream);
                let Some(stream) = handshake(&ctx, tcp).await else {
                    break;
                };
                s.tls = true;
                // A fresh protocol state after STARTTLS: anything the client
                // pipelined in clear is discarded (no command injection).
                let mut server = Server::new(
                    server_options(&ctx),
                    Greeting::ok(None, "unused").unwrap_or_else(|_| unreachable_greeting()),
                );
                // The greeting is not sent again after STARTTLS: consume it.
                discard_greeting(&mut server);
                io = Io::new(stream, server);
            }
            Ok(Flow::Logout) | Ok(Flow::Continue) => break,
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "IMAP session ended");
                break;
            }
        }
    }
    if let Some((view, _)) = &s.user {
        s.audit_only(Audit::user(
            &view.user.name,
            Some(peer.to_string()),
            "imap",
            "logout",
        ))
        .await;
    }
}

/// Answer a connection over `max_sessions_per_address` with a BYE
/// greeting (after the TLS handshake on an implicit-TLS listener, so the
/// client can read it) and close it.
pub async fn refuse(ctx: Arc<Ctx>, tcp: TcpStream, peer: SocketAddr, implicit: bool) {
    tracing::warn!(peer = %peer, limit = ctx.cfg.max_sessions_per_address, "IMAP connection refused: too many from this address");
    let stream = if implicit {
        match handshake(&ctx, tcp).await {
            Some(s) => s,
            None => return,
        }
    } else {
        Stream::insecure(tcp)
    };
    let greeting = Greeting {
        kind: imap_next::imap_types::response::GreetingKind::Bye,
        code: Some(other_code("LIMIT")),
        text: text("too many connections from your address; close some and retry"),
    };
    let mut io = Io::new(stream, Server::new(server_options(&ctx), greeting));
    let sent = async {
        loop {
            match io.stream.next(&mut io.server).await {
                Ok(Event::GreetingSent { .. }) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let _ = io.stream.flush().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), sent).await;
}

fn unreachable_greeting() -> Greeting<'static> {
    Greeting {
        kind: imap_next::imap_types::response::GreetingKind::Ok,
        code: None,
        text: Text::unvalidated("ready"),
    }
}

fn discard_greeting(server: &mut Server) {
    use imap_next::State;
    for _ in 0..4 {
        match server.next() {
            Err(imap_next::Interrupt::Io(imap_next::Io::Output(_))) => continue,
            Ok(Event::GreetingSent { .. }) => break,
            _ => break,
        }
    }
}

async fn handshake(ctx: &Ctx, tcp: TcpStream) -> Option<Stream> {
    let acceptor = TlsAcceptor::from(ctx.tls.clone());
    // imap-next hands each encoded response to rustls in one write_all; with
    // rustls's default 64 KiB limit on unsent TLS records, any response
    // larger than that (a message over 64 KiB, a SEARCH with ~10,000 hits)
    // failed with "failed to write whole buffer" and dropped the client.
    // Output stays bounded by the session's response windows (io.rs).
    let accept = acceptor.accept_with(tcp, |conn| conn.set_buffer_limit(None));
    match tokio::time::timeout(super::HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(tls)) => Some(Stream::tls(TlsStream::Server(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "IMAP TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("IMAP TLS handshake timed out");
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("idle too long")]
    Timeout,
}

impl From<StreamError<ServerError>> for SessionError {
    fn from(e: StreamError<ServerError>) -> Self {
        match e {
            StreamError::Closed => SessionError::Io(IoError::Closed),
            other => SessionError::Io(IoError::Stream(other.to_string())),
        }
    }
}

impl Session {
    fn may_login(&self) -> bool {
        self.tls || super::plaintext_ok(&self.ctx.cfg, &self.peer)
    }

    fn capabilities(&self) -> Vec<Capability<'static>> {
        let mut c = vec![
            Capability::Imap4Rev1,
            Capability::LiteralPlus,
            Capability::SaslIr,
        ];
        if self.user.is_none() {
            if self.may_login() {
                c.push(Capability::Auth(AuthMechanism::Plain));
            } else {
                c.push(Capability::LoginDisabled);
            }
            if !self.tls && self.starttls_listener {
                c.push(Capability::StartTls);
            }
        }
        c.extend([
            Capability::Id,
            Capability::Enable,
            Capability::Idle,
            Capability::Namespace,
            Capability::UidPlus,
            Capability::Move,
            Capability::Unselect,
            cap("SPECIAL-USE"),
            cap("CHILDREN"),
            Capability::Quota,
            Capability::QuotaRes(Resource::Storage),
        ]);
        c
    }

    fn source(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    fn audit(&self, op: &str) -> Audit {
        let name = self
            .user
            .as_ref()
            .map(|(v, _)| v.user.name.clone())
            .unwrap_or_else(|| "anonymous".into());
        Audit::user(&name, self.source(), "imap", op)
    }

    /// Record an audit-only event; a failure is logged (the store latches
    /// and refuses writes, which the next changing command reports).
    async fn audit_only(&self, a: Audit) -> bool {
        match self.ctx.store.commit(a, Change::None).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit record failed");
                false
            }
        }
    }

    /// Commit one change with its audit record (actor, source, mailbox,
    /// folder, UIDs).
    async fn record(
        &self,
        op: &str,
        mailbox: &str,
        folder: &str,
        uids: Vec<u32>,
        change: Change,
    ) -> Result<(), crate::store::StoreError> {
        let a = self.audit(op).mailbox(mailbox).folder(folder).uids(uids);
        self.ctx.store.commit(a, change).await.map(|_| ())
    }

    async fn serve(
        &mut self,
        io: &mut Io,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Flow, SessionError> {
        let mut notices = self.ctx.store.subscribe();
        loop {
            let limit = if self.user.is_some() {
                self.ctx.cfg.idle_timeout
            } else {
                PREAUTH_TIMEOUT
            };
            enum Got {
                Ev(super::io::Next),
                Notice(Result<Notice, broadcast::error::RecvError>),
                Shutdown,
                Timeout,
            }
            let got = if io.has_pending() {
                Got::Ev(io.next().await)
            } else {
                tokio::select! {
                    ev = io.next() => Got::Ev(ev),
                    n = notices.recv() => Got::Notice(n),
                    _ = shutdown.changed() => Got::Shutdown,
                    _ = tokio::time::sleep(limit) => Got::Timeout,
                }
            };
            match got {
                Got::Shutdown => {
                    io.status(bye("pecgate is shutting down"));
                    let _ = io.drain().await;
                    return Ok(Flow::Logout);
                }
                Got::Timeout => {
                    io.status(bye("autologout: idle for too long"));
                    let _ = io.drain().await;
                    return Err(SessionError::Timeout);
                }
                Got::Notice(n) => {
                    let relevant = match (&n, &self.selected) {
                        // Sent and Undelivered also change when a receipt
                        // arrives in another folder of the mailbox.
                        (Ok(n), Some(sel)) => {
                            n.mailbox == sel.folder.mailbox
                                && (n.folder.as_str() == sel.folder.source()
                                    || sel.folder.shows_sent())
                        }
                        (Err(broadcast::error::RecvError::Lagged(_)), Some(_)) => true,
                        _ => false,
                    };
                    if relevant && self.idle_tag.is_some() {
                        self.refresh(io, true, &HashSet::new());
                        io.drain().await?;
                    }
                    if let Err(broadcast::error::RecvError::Closed) = n {
                        notices = self.ctx.store.subscribe();
                    }
                }
                Got::Ev(ev) => match ev {
                    Ok(event) => {
                        // Boxed: a command's state lives on the heap only
                        // while it runs; the session's own future (kept
                        // by every idle connection) stays small.
                        let flow = Box::pin(self.event(io, event)).await?;
                        if !matches!(flow, Flow::Continue) {
                            io.drain().await?;
                            return Ok(flow);
                        }
                        io.maybe_drain().await?;
                    }
                    Err(StreamError::State(e)) => {
                        self.bad += 1;
                        let msg = match e {
                            ServerError::LiteralTooLong { .. } => None,
                            ServerError::CommandTooLong { .. } => Some("command too long"),
                            ServerError::ExpectedCrlfGotLf { .. } => {
                                Some("lines must end with CRLF")
                            }
                            ServerError::MalformedMessage { .. } => Some("malformed command"),
                        };
                        if let Some(m) = msg {
                            io.status(untagged(StatusKind::Bad, None, m));
                        }
                        if self.bad > MAX_BAD {
                            io.status(bye("too many protocol errors"));
                            let _ = io.drain().await;
                            return Ok(Flow::Logout);
                        }
                        io.maybe_drain().await?;
                    }
                    Err(e) => return Err(e.into()),
                },
            }
        }
    }

    async fn event(&mut self, io: &mut Io, event: Event) -> Result<Flow, SessionError> {
        match event {
            Event::GreetingSent { .. } | Event::ResponseSent { .. } => Ok(Flow::Continue),
            Event::CommandReceived { command } => self.command(io, command).await,
            Event::CommandAuthenticateReceived {
                command_authenticate: ca,
            } => {
                let tag = ca.tag;
                let st = if self.user.is_some() {
                    Some(bad(tag, "already authenticated"))
                } else if !self.may_login() {
                    Some(tagged(
                        tag,
                        StatusKind::No,
                        Some(other_code("PRIVACYREQUIRED")),
                        "use TLS first",
                    ))
                } else if ca.mechanism != AuthMechanism::Plain {
                    Some(no(tag, "only AUTHENTICATE PLAIN is supported"))
                } else if let Some(ir) = ca.initial_response {
                    Some(self.plain(tag, ir.declassify()).await)
                } else {
                    self.auth_tag = Some(tag);
                    match io
                        .server
                        .authenticate_continue(CommandContinuationRequest::base64(Vec::<u8>::new()))
                    {
                        Ok(h) => io.note_handle(h),
                        Err(_) => {
                            return Err(SessionError::Io(IoError::Stream(
                                "authenticate state".into(),
                            )))
                        }
                    }
                    None
                };
                if let Some(st) = st {
                    if let Ok(h) = io.server.authenticate_finish(st) {
                        io.note_handle(h);
                    }
                }
                Ok(Flow::Continue)
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                let tag = self
                    .auth_tag
                    .take()
                    .unwrap_or_else(|| Tag::unvalidated("*"));
                let st = match authenticate_data {
                    AuthenticateData::Cancel => bad(tag, "authentication cancelled"),
                    AuthenticateData::Continue(data) => self.plain(tag, data.declassify()).await,
                };
                if let Ok(h) = io.server.authenticate_finish(st) {
                    io.note_handle(h);
                }
                Ok(Flow::Continue)
            }
            Event::IdleCommandReceived { tag } => {
                if self.selected.is_none() {
                    if let Ok(h) = io.server.idle_reject(no(tag, "select a folder first")) {
                        io.note_handle(h);
                    }
                    return Ok(Flow::Continue);
                }
                let cont = CommandContinuationRequest::basic(None, "idling")
                    .unwrap_or_else(|_| CommandContinuationRequest::base64(Vec::<u8>::new()));
                if let Ok(h) = io.server.idle_accept(cont) {
                    io.note_handle(h);
                    self.idle_tag = Some(tag);
                    self.refresh(io, true, &HashSet::new());
                }
                Ok(Flow::Continue)
            }
            Event::IdleDoneReceived => {
                if let Some(tag) = self.idle_tag.take() {
                    io.status(ok(tag, "IDLE done"));
                }
                Ok(Flow::Continue)
            }
        }
    }

    /// SASL PLAIN: `authzid NUL authcid NUL password`.
    async fn plain(&mut self, tag: Tag<'static>, data: &[u8]) -> Status<'static> {
        let parts: Vec<&[u8]> = data.split(|b| *b == 0).collect();
        let [authz, authc, pw] = parts.as_slice() else {
            return bad(tag, "malformed PLAIN response");
        };
        if !authz.is_empty() && authz != authc {
            return no(
                tag,
                "[AUTHENTICATIONFAILED] authorization identity not allowed",
            );
        }
        let (Ok(user), Ok(pw)) = (std::str::from_utf8(authc), std::str::from_utf8(pw)) else {
            return tagged(
                tag,
                StatusKind::No,
                Some(other_code("AUTHENTICATIONFAILED")),
                "authentication failed",
            );
        };
        self.login(tag, user.to_string(), pw.to_string()).await
    }

    async fn login(
        &mut self,
        tag: Tag<'static>,
        name: String,
        password: String,
    ) -> Status<'static> {
        let failed = || {
            tagged(
                tag.clone(),
                StatusKind::No,
                Some(other_code("AUTHENTICATIONFAILED")),
                "authentication failed",
            )
        };
        match self.ctx.auth.login(&name, &password, self.peer.ip()).await {
            Ok(user) => {
                let Some(guard) = self.ctx.acquire(&user.name) else {
                    return tagged(
                        tag,
                        StatusKind::No,
                        Some(other_code("LIMIT")),
                        "too many sessions for this user",
                    );
                };
                let a = Audit::user(&user.name, self.source(), "imap", "login");
                let view = self.new_view(user);
                self.user = Some((view, guard));
                if !self.audit_only(a).await {
                    self.user = None;
                    return tagged(
                        tag,
                        StatusKind::No,
                        Some(other_code("UNAVAILABLE")),
                        "the archive refuses writes",
                    );
                }
                let caps = Vec1::try_from(self.capabilities())
                    .ok()
                    .map(Code::Capability);
                tagged(tag, StatusKind::Ok, caps, "logged in")
            }
            Err(e) => {
                let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
                let reason = match &e {
                    crate::auth::AuthError::Rejected => "failed".to_string(),
                    other => other.to_string(),
                };
                self.audit_only(
                    Audit::user(&shown, self.source(), "imap", "login").outcome(reason),
                )
                .await;
                failed()
            }
        }
    }

    /// Apply a reload of the users (SIGHUP) to this session before a
    /// command: a removed user, or one who lost `read` on the selected
    /// mailbox, gets BYE (false: end the session); changed grants apply
    /// from this command on (a folder selected read-write stays so only
    /// while the user still holds the right each command checks).
    fn resync_user(&mut self, io: &mut Io) -> bool {
        let Some((view, _)) = &self.user else {
            return true;
        };
        match self.ctx.auth.user(&view.user.name) {
            None => {
                io.status(bye("your account was removed; logging out"));
                false
            }
            Some(u) if *u == *view.user => true,
            Some(u) => {
                let lost = self
                    .selected
                    .as_ref()
                    .is_some_and(|sel| !u.may(&sel.folder.mailbox, Right::Read));
                if lost {
                    io.status(bye(
                        "your access to the selected mailbox was withdrawn; logging out",
                    ));
                    return false;
                }
                tracing::info!(user = %u.name, "IMAP session picks up changed grants");
                let fresh = self.new_view(u);
                if let Some((v, _)) = self.user.as_mut() {
                    *v = fresh;
                }
                true
            }
        }
    }

    async fn command(&mut self, io: &mut Io, cmd: Command<'static>) -> Result<Flow, SessionError> {
        let tag = cmd.tag;
        let name = cmd.body.name();
        tracing::debug!(command = name, peer = %self.peer, "IMAP command");
        crate::metrics::Metrics::commands().with_label_values(&["imap", name]).inc();
        if !self.resync_user(io) {
            return Ok(Flow::Logout);
        }
        // Commands valid in every state.
        match cmd.body {
            CommandBody::Capability => {
                if let Ok(c) = Vec1::try_from(self.capabilities()) {
                    io.data(Data::Capability(c));
                }
                io.status(ok(tag, "CAPABILITY done"));
                Ok(Flow::Continue)
            }
            CommandBody::Noop | CommandBody::Check => {
                self.refresh(io, true, &HashSet::new());
                io.status(ok(tag, "done"));
                Ok(Flow::Continue)
            }
            CommandBody::Logout => {
                io.status(bye("logging out"));
                io.status(ok(tag, "LOGOUT done"));
                Ok(Flow::Logout)
            }
            CommandBody::Id { .. } => {
                let params = vec![
                    (istr("name"), fetch::nstr(Some(b"pecgate"))),
                    (
                        istr("version"),
                        fetch::nstr(Some(env!("CARGO_PKG_VERSION").as_bytes())),
                    ),
                ];
                io.data(Data::Id {
                    parameters: Some(params),
                });
                io.status(ok(tag, "ID done"));
                Ok(Flow::Continue)
            }
            body => {
                if self.user.is_none() {
                    return Ok(self.not_authenticated(io, tag, body).await);
                }
                self.authenticated(io, tag, body).await?;
                Ok(Flow::Continue)
            }
        }
    }

    async fn not_authenticated(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        body: CommandBody<'static>,
    ) -> Flow {
        match body {
            CommandBody::StartTLS => {
                if self.tls || !self.starttls_listener {
                    io.status(bad(tag, "TLS is already active"));
                    Flow::Continue
                } else {
                    io.status(ok(tag, "begin TLS negotiation now"));
                    Flow::StartTls
                }
            }
            CommandBody::Login { username, password } => {
                if !self.may_login() {
                    io.status(tagged(
                        tag,
                        StatusKind::No,
                        Some(other_code("PRIVACYREQUIRED")),
                        "use TLS first (LOGINDISABLED)",
                    ));
                    return Flow::Continue;
                }
                let u = String::from_utf8_lossy(username.as_ref()).into_owned();
                let p = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                let st = self.login(tag, u, p).await;
                io.status(st);
                Flow::Continue
            }
            _ => {
                io.status(bad(tag, "log in first"));
                Flow::Continue
            }
        }
    }

    /// What `user` sees, with the server's settings.
    fn new_view(&self, user: Arc<User>) -> View {
        View::new(user, self.ctx.store.clone())
            .with_overdue_after(self.ctx.overdue_after)
            .with_rules(self.ctx.rules())
            .with_shared(self.ctx.metas.clone())
    }

    fn view(&self) -> Option<View> {
        self.user.as_ref().map(|(v, _)| v.clone())
    }

    /// The only way to a [`Grant`]: the selected folder is writable and the
    /// user holds `right` on its mailbox.
    fn grant(&self, right: Right) -> Result<Grant, &'static str> {
        let Some(sel) = &self.selected else {
            return Err("no folder selected");
        };
        let Some(view) = self.view() else {
            return Err("not logged in");
        };
        if !sel.writable {
            return Err("the folder is read-only");
        }
        if !view.may(&sel.folder, right) {
            return Err("not permitted on this mailbox");
        }
        Ok(Grant(()))
    }

    async fn authenticated(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        body: CommandBody<'static>,
    ) -> Result<(), SessionError> {
        let Some(view) = self.view() else {
            return Ok(());
        };
        match body {
            CommandBody::StartTLS => io.status(bad(tag, "already authenticated")),
            CommandBody::Login { .. } | CommandBody::Authenticate { .. } => {
                io.status(bad(tag, "already authenticated"))
            }
            CommandBody::Enable { .. } => {
                io.data(Data::Enabled {
                    capabilities: vec![],
                });
                io.status(ok(tag, "ENABLE done"));
            }
            CommandBody::Namespace => {
                let personal = vec![Namespace::new(istr(""), QuotedChar::try_from('/').ok())];
                io.data(Data::Namespace {
                    personal,
                    other: vec![],
                    shared: vec![],
                });
                io.status(ok(tag, "NAMESPACE done"));
            }
            CommandBody::Select { mailbox, .. } => {
                self.select(io, tag, &view, &mailbox, true).await
            }
            CommandBody::Examine { mailbox, .. } => {
                self.select(io, tag, &view, &mailbox, false).await
            }
            CommandBody::Create { .. }
            | CommandBody::Delete { .. }
            | CommandBody::Rename { .. } => io.status(tagged(
                tag,
                StatusKind::No,
                Some(other_code("CANNOT")),
                "the PEC folder tree is fixed by the gateway",
            )),
            CommandBody::GetQuotaRoot { mailbox } => {
                let name = mailbox_name(&mailbox);
                match view.resolve(&name) {
                    Err(_) => io.status(no(tag, "no such folder")),
                    Ok(f) => {
                        let limited = self.ctx.cfg.quota_kib.is_some();
                        io.data(Data::QuotaRoot {
                            mailbox: mbox(&f.name),
                            roots: if limited { vec![istr_a(&f.mailbox)] } else { vec![] },
                        });
                        if limited {
                            self.quota(io, &view, &f.mailbox);
                        }
                        io.status(ok(tag, "GETQUOTAROOT done"));
                    }
                }
            }
            CommandBody::GetQuota { root } => {
                let root = String::from_utf8_lossy(root.as_ref()).into_owned();
                if self.ctx.cfg.quota_kib.is_some() && view.is_parent(&root) {
                    self.quota(io, &view, &root);
                    io.status(ok(tag, "GETQUOTA done"));
                } else {
                    io.status(tagged(
                        tag,
                        StatusKind::No,
                        Some(other_code("NONEXISTENT")),
                        "no such quota root",
                    ));
                }
            }
            CommandBody::SetQuota { .. } => io.status(noperm(
                tag,
                "the archive's quota is set in the gateway's configuration",
            )),
            CommandBody::Subscribe { mailbox } | CommandBody::Unsubscribe { mailbox } => {
                match view.resolve(&mailbox_name(&mailbox)) {
                    Ok(_) => io.status(ok(tag, "done (every folder is subscribed)")),
                    Err(_) => io.status(no(tag, "no such folder")),
                }
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(io, tag, &view, &reference, &mailbox_wildcard, false),
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(io, tag, &view, &reference, &mailbox_wildcard, true),
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(io, tag, &view, &mailbox, &item_names),
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let bytes = match message {
                    LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                    LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
                };
                let date = date.map(|d| d.as_ref().with_timezone(&Utc));
                let st = self.append(tag, &view, &mailbox, &flags, date, bytes).await;
                io.status(st);
                self.refresh(io, true, &HashSet::new());
            }
            CommandBody::Unselect | CommandBody::Close => {
                if self.selected.take().is_some() {
                    io.status(ok(tag, "no folder selected now"));
                } else {
                    io.status(bad(tag, "no folder selected"));
                }
            }
            body if self.selected.is_none() => {
                let _ = body;
                io.status(bad(tag, "select a folder first"));
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                self.fetch(io, tag, &view, &sequence_set, macro_or_item_names, uid)
                    .await?
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                let only_seen = flags.iter().all(|f| matches!(f, Flag::Seen));
                let grant = self.grant(if only_seen {
                    Right::Read
                } else {
                    Right::Triage
                });
                match grant {
                    Err(why) => io.status(noperm(tag, why)),
                    Ok(g) => {
                        self.store(
                            io,
                            tag,
                            &view,
                            g,
                            &sequence_set,
                            kind,
                            response,
                            &flags,
                            uid,
                        )
                        .await
                    }
                }
            }
            CommandBody::Search { criteria, uid, .. } => {
                self.search(io, tag, &view, criteria.as_ref(), uid).await
            }
            CommandBody::Expunge => match self.grant(Right::Delete) {
                Err(why) => io.status(noperm(tag, why)),
                Ok(g) => self.expunge(io, tag, g, None).await,
            },
            CommandBody::ExpungeUid { sequence_set } => match self.grant(Right::Delete) {
                Err(why) => io.status(noperm(tag, why)),
                Ok(g) => self.expunge(io, tag, g, Some(sequence_set)).await,
            },
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy(io, tag, &view, &sequence_set, &mailbox, uid)
                    .await
            }
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => match self.grant(Right::Triage) {
                Err(why) => io.status(noperm(tag, why)),
                Ok(g) => {
                    self.r#move(io, tag, &view, g, &sequence_set, &mailbox, uid)
                        .await
                }
            },
            _ => io.status(bad(tag, "command not supported")),
        }
        Ok(())
    }

    async fn select(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        view: &View,
        mailbox: &Mailbox<'_>,
        rw: bool,
    ) {
        self.selected = None;
        let name = mailbox_name(mailbox);
        let folder = match view.resolve(&name) {
            Ok(f) => f,
            Err(_) => return io.status(no(tag, "no such folder")),
        };
        let (counts, snap) = match view.open(&folder) {
            Ok(x) => x,
            Err(e) => return io.status(serverbug(tag, &e)),
        };
        let writable = rw
            && folder.writable_source().is_some()
            && (view.may(&folder, Right::Triage) || view.may(&folder, Right::Delete));
        let a = self
            .audit(if rw { "select" } else { "examine" })
            .mailbox(&folder.mailbox);
        let a = a.folder(folder.audit_name());
        if !self.audit_only(a).await {
            return io.status(tagged(
                tag,
                StatusKind::No,
                Some(other_code("UNAVAILABLE")),
                "the archive refuses writes",
            ));
        }
        let (msgs, seen) = snap;
        let flags: Vec<Flag<'static>> = vec![
            Flag::Answered,
            Flag::Flagged,
            Flag::Deleted,
            Flag::Seen,
            Flag::Draft,
        ];
        // FLAGS names the computed $Pec* keywords where they occur;
        // PERMANENTFLAGS does not (clients cannot change them).
        let mut defined = flags.clone();
        if folder.shows_sent() {
            defined.extend(PEC_KEYWORDS.iter().filter_map(|k| Flag::try_from(*k).ok()));
        }
        let tracks = folder.source() == super::view::INBOX;
        if tracks {
            defined.extend(HANDLING_KEYWORDS.iter().filter_map(|k| Flag::try_from(*k).ok()));
        }
        io.data(Data::Flags(defined));
        let mut perm: Vec<FlagPerm<'static>> = if writable {
            flags.into_iter().map(FlagPerm::Flag).collect()
        } else {
            vec![]
        };
        if writable && tracks && view.may(&folder, Right::Triage) {
            // Setting these takes in charge or completes (see STORE).
            perm.extend(
                [handling::KW_TAKEN, handling::KW_DONE]
                    .iter()
                    .filter_map(|k| Flag::try_from(*k).ok())
                    .map(FlagPerm::Flag),
            );
        }
        if writable {
            perm.push(FlagPerm::Asterisk);
        }
        io.status(untagged(
            StatusKind::Ok,
            Some(Code::PermanentFlags(perm)),
            "flags",
        ));
        io.data(Data::Exists(u32::try_from(msgs.len()).unwrap_or(u32::MAX)));
        io.data(Data::Recent(0));
        if let Some(pos) = msgs.iter().position(|(u, _)| !seen.contains(u)) {
            io.status(untagged(
                StatusKind::Ok,
                Some(Code::Unseen(nz(pos as u32 + 1))),
                "first unseen",
            ));
        }
        io.status(untagged(
            StatusKind::Ok,
            Some(Code::UidValidity(nz(counts.uidvalidity))),
            "UIDs valid",
        ));
        io.status(untagged(
            StatusKind::Ok,
            Some(Code::UidNext(nz(counts.uidnext))),
            "next UID",
        ));
        // No HIGHESTMODSEQ: CONDSTORE is not advertised (RFC 7162 §3.1.2.1
        // lets only CONDSTORE servers send it).
        let code = if writable {
            Code::ReadWrite
        } else {
            Code::ReadOnly
        };
        self.selected = Some(Selected {
            folder,
            writable,
            msgs,
            seen,
        });
        io.status(tagged(
            tag,
            StatusKind::Ok,
            Some(code),
            if rw { "SELECT done" } else { "EXAMINE done" },
        ));
    }

    fn list(
        &self,
        io: &mut Io,
        tag: Tag<'static>,
        view: &View,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) {
        let pat: Vec<u8> = match pattern {
            ListMailbox::Token(t) => t.as_ref().to_vec(),
            ListMailbox::String(s) => s.as_ref().to_vec(),
        };
        let refname = match reference {
            Mailbox::Inbox => "INBOX".to_string(),
            Mailbox::Other(_) => mailbox_name(reference),
        };
        if pat.is_empty() {
            if !lsub {
                io.data(Data::List {
                    items: vec![FlagNameAttribute::Noselect],
                    delimiter: QuotedChar::try_from('/').ok(),
                    mailbox: mbox(""),
                });
            }
            return io.status(ok(tag, "LIST done"));
        }
        let mut full = refname.into_bytes();
        full.extend_from_slice(&pat);
        for e in view.tree() {
            let name_for_match = if e.name == "INBOX" {
                b"INBOX".to_vec()
            } else {
                e.name.as_bytes().to_vec()
            };
            let full_norm = if full.eq_ignore_ascii_case(b"inbox") {
                b"INBOX".to_vec()
            } else {
                full.clone()
            };
            if !super::view::pattern_matches(&full_norm, &name_for_match) {
                continue;
            }
            let mut items = Vec::new();
            match &e.folder {
                None => {
                    items.push(FlagNameAttribute::Noselect);
                    items.extend(attr("HasChildren"));
                }
                Some(f) => {
                    items.extend(attr("HasNoChildren"));
                    if let Some(su) = f.special_use {
                        items.extend(attr(su));
                    }
                }
            }
            let m = mbox(&e.name);
            if lsub {
                io.data(Data::Lsub {
                    items,
                    delimiter: QuotedChar::try_from('/').ok(),
                    mailbox: m,
                });
            } else {
                io.data(Data::List {
                    items,
                    delimiter: QuotedChar::try_from('/').ok(),
                    mailbox: m,
                });
            }
        }
        io.status(ok(tag, if lsub { "LSUB done" } else { "LIST done" }));
    }

    /// `* QUOTA root (STORAGE used limit)` for PEC mailbox `root`: its
    /// archive's size in KiB (rounded up) against `imap.quota_kib`.
    fn quota(&self, io: &mut Io, view: &View, root: &str) {
        let Some(limit) = self.ctx.cfg.quota_kib else {
            return;
        };
        let used = match view.store.mailbox_totals(root) {
            Ok((_, bytes)) => bytes.div_ceil(1024),
            Err(e) => {
                tracing::error!(error = %e, mailbox = root, "archive size for QUOTA");
                return;
            }
        };
        if let Ok(quotas) = Vec1::try_from(vec![QuotaGet::new(Resource::Storage, used, limit)]) {
            io.data(Data::Quota {
                root: istr_a(root),
                quotas,
            });
        }
    }

    fn status(
        &self,
        io: &mut Io,
        tag: Tag<'static>,
        view: &View,
        mailbox: &Mailbox<'_>,
        names: &[StatusDataItemName],
    ) {
        let name = mailbox_name(mailbox);
        let folder = match view.resolve(&name) {
            Ok(f) => f,
            Err(_) => return io.status(no(tag, "no such folder")),
        };
        let c = match view.counts(&folder) {
            Ok(c) => c,
            Err(e) => return io.status(serverbug(tag, &e)),
        };
        let items: Vec<StatusDataItem> = names
            .iter()
            .filter_map(|n| match n {
                StatusDataItemName::Messages => Some(StatusDataItem::Messages(c.exists)),
                StatusDataItemName::Recent => Some(StatusDataItem::Recent(0)),
                StatusDataItemName::UidNext => Some(StatusDataItem::UidNext(nz(c.uidnext))),
                StatusDataItemName::UidValidity => {
                    Some(StatusDataItem::UidValidity(nz(c.uidvalidity)))
                }
                StatusDataItemName::Unseen => Some(StatusDataItem::Unseen(c.unseen)),
                StatusDataItemName::HighestModSeq => {
                    Some(StatusDataItem::HighestModSeq(c.highest_modseq))
                }
                _ => None,
            })
            .collect();
        io.data(Data::Status {
            mailbox: mbox(&folder.name),
            items: items.into(),
        });
        io.status(ok(tag, "STATUS done"));
    }

    async fn append(
        &mut self,
        tag: Tag<'static>,
        view: &View,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<DateTime<Utc>>,
        bytes: Vec<u8>,
    ) -> Status<'static> {
        let folder = match view.resolve(&mailbox_name(mailbox)) {
            Ok(f) => f,
            Err(_) => return no(tag, "no such folder"),
        };
        if folder.store_folder != Some("Sent") {
            return noperm(
                tag,
                "messages can be appended only to a mailbox's Sent folder",
            );
        }
        if !view.may(&folder, Right::Send) {
            return noperm(tag, "not permitted to send from this mailbox");
        }
        let blob: BlobRef = match self.ctx.store.put_blob(bytes).await {
            Ok(b) => b,
            Err(e) => return serverbug(tag, &e),
        };
        let shared: Vec<String> = flags
            .iter()
            .map(flag_string)
            .filter(|f| !f.eq_ignore_ascii_case("\\Seen") && !is_pec_keyword(f))
            .collect();
        let audit = self.audit("append").mailbox(&folder.mailbox).folder("Sent");
        let change = Change::Archive {
            mailbox: folder.mailbox.clone(),
            folder: "Sent".into(),
            blob,
            internal_date: date.unwrap_or_else(Utc::now),
            flags: shared,
            provider: None,
            pec: None,
            handling: None,
        };
        let committed = match self.ctx.store.commit(audit, change).await {
            Ok(c) => c,
            Err(e) => return serverbug(tag, &e),
        };
        let StoreEvent::Archived {
            uid,
            duplicate,
            folder: where_,
            ..
        } = committed.event
        else {
            return ok(tag, "APPEND done");
        };
        if flags.iter().any(|f| matches!(f, Flag::Seen)) {
            let ch = Change::SetSeen {
                user: view.user.name.clone(),
                mailbox: folder.mailbox.clone(),
                folder: where_.clone(),
                uids: vec![uid],
                seen: true,
            };
            if let Err(e) = self
                .ctx
                .store
                .commit(
                    self.audit("store-seen")
                        .mailbox(&folder.mailbox)
                        .folder(&where_),
                    ch,
                )
                .await
            {
                return serverbug(tag, &e);
            }
        }
        if duplicate {
            return ok(tag, "APPEND done (the archive already holds this message)");
        }
        let uv = self
            .ctx
            .store
            .folder(&folder.mailbox, "Sent")
            .ok()
            .flatten()
            .map(|s| s.uidvalidity)
            .unwrap_or(1);
        tagged(
            tag,
            StatusKind::Ok,
            Some(Code::AppendUid {
                uid_validity: nz(uv),
                uid: nz(uid),
            }),
            "APPEND done",
        )
    }

    /// Bring the selected folder's snapshot up to date, telling the client:
    /// EXPUNGE (only if `expunge` is allowed now), EXISTS, and FETCH FLAGS
    /// for messages whose flags changed (except those in `quiet`).
    fn refresh(&mut self, io: &mut Io, expunge: bool, quiet: &HashSet<u32>) {
        let Some(view) = self.view() else { return };
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        let (new, seen) = match view.snapshot(&sel.folder) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "refreshing the selected folder");
                return;
            }
        };
        if Arc::ptr_eq(&sel.msgs, &new) {
            // The very list this session holds (the usual case when a
            // change elsewhere woke it): only this user's \Seen can differ.
            if seen != sel.seen {
                for (i, (uid, meta)) in sel.msgs.iter().enumerate() {
                    let is_seen = seen.contains(uid);
                    if sel.seen.contains(uid) != is_seen && !quiet.contains(uid) {
                        flags_update(io, i, *uid, meta, is_seen);
                    }
                }
            }
            sel.seen = seen;
            return;
        }
        let new_map: std::collections::HashMap<u32, &Arc<MessageMeta>> =
            new.iter().map(|(u, m)| (*u, m)).collect();
        let msgs = Arc::make_mut(&mut sel.msgs);
        if expunge {
            let mut i = msgs.len();
            while i > 0 {
                i -= 1;
                if !new_map.contains_key(&msgs[i].0) {
                    msgs.remove(i);
                    io.data(Data::Expunge(nz(i as u32 + 1)));
                }
            }
        }
        for (i, (uid, meta)) in msgs.iter_mut().enumerate() {
            let Some(m) = new_map.get(uid) else { continue };
            let was_seen = sel.seen.contains(uid);
            let is_seen = seen.contains(uid);
            if m.flags != meta.flags || was_seen != is_seen {
                *meta = Arc::clone(m);
                if !quiet.contains(uid) {
                    flags_update(io, i, *uid, meta, is_seen);
                }
            }
        }
        let last = msgs.last().map(|m| m.0).unwrap_or(0);
        let before = msgs.len();
        msgs.extend(new.iter().filter(|(u, _)| *u > last).cloned());
        if msgs.len() != before {
            io.data(Data::Exists(
                u32::try_from(msgs.len()).unwrap_or(u32::MAX),
            ));
        }
        // Back to the shared list when this session shows what it holds.
        if shared::same(msgs, &new) {
            sel.msgs = new;
        }
        sel.seen = seen;
    }

    /// (seq, uid) of the messages a sequence set names.
    fn targets(&self, set: &SequenceSet, uid: bool) -> Vec<(u32, u32)> {
        let Some(sel) = &self.selected else {
            return vec![];
        };
        let max_seq = u32::try_from(sel.msgs.len()).unwrap_or(u32::MAX);
        let max_uid = sel.msgs.last().map(|m| m.0).unwrap_or(0);
        sel.msgs
            .iter()
            .enumerate()
            .map(|(i, (u, _))| (i as u32 + 1, *u))
            .filter(|(s, u)| {
                if uid {
                    search::in_set(set, *u, max_uid)
                } else {
                    search::in_set(set, *s, max_seq)
                }
            })
            .collect()
    }

    async fn fetch(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        view: &View,
        set: &SequenceSet,
        items: MacroOrMessageDataItemNames<'static>,
        uid: bool,
    ) -> Result<(), SessionError> {
        let mut names: Vec<MessageDataItemName<'static>> = match items {
            MacroOrMessageDataItemNames::Macro(m) => m
                .expand()
                .into_iter()
                .map(|n| imap_next::imap_types::ToStatic::to_static(&n))
                .collect(),
            MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
        };
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        let targets = self.targets(set, uid);
        let reads_body = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::BodyExt { .. }
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Text
                    | MessageDataItemName::Binary { .. }
            )
        });
        let sets_seen = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::BodyExt { peek: false, .. }
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Text
                    | MessageDataItemName::Binary { peek: false, .. }
            )
        });
        let Some(sel) = &self.selected else {
            return Ok(());
        };
        let (mailbox, sfolder, writable) = (
            sel.folder.mailbox.clone(),
            sel.folder.writable_source(),
            sel.writable,
        );
        let uids: Vec<u32> = targets.iter().map(|t| t.1).collect();
        // Reading is recorded (durably) before any byte is sent.
        if reads_body && !uids.is_empty() {
            let a = self
                .audit("read")
                .mailbox(&mailbox)
                .folder(sel.audit_folder())
                .uids(sel.source_uids(&uids));
            if !self.audit_only(a).await {
                io.status(tagged(
                    tag,
                    StatusKind::No,
                    Some(other_code("UNAVAILABLE")),
                    "the archive refuses writes",
                ));
                return Ok(());
            }
        }
        let mut newly_seen = HashSet::new();
        if sets_seen && writable {
            if let Some(f) = sfolder {
                let unseen: Vec<u32> = uids
                    .iter()
                    .copied()
                    .filter(|u| !sel.seen.contains(u))
                    .collect();
                if !unseen.is_empty() {
                    let ch = Change::SetSeen {
                        user: view.user.name.clone(),
                        mailbox: mailbox.clone(),
                        folder: f.into(),
                        uids: sel.source_uids(&unseen),
                        seen: true,
                    };
                    if let Err(e) = self
                        .ctx
                        .store
                        .commit(self.audit("store-seen").mailbox(&mailbox).folder(f), ch)
                        .await
                    {
                        io.status(serverbug(tag, &e));
                        return Ok(());
                    }
                    newly_seen.extend(unseen);
                }
            }
        }
        if let Some(sel) = self.selected.as_mut() {
            sel.seen.extend(newly_seen.iter().copied());
        }
        let mut failed = 0usize;
        for chunk in targets.chunks(FETCH_BATCH) {
            for (seq, u) in chunk {
                let Some(sel) = &self.selected else { break };
                let Some((_, meta)) = sel.msgs.get(*seq as usize - 1) else {
                    continue;
                };
                let meta = meta.clone();
                let seen = sel.seen.contains(u);
                let needs_raw = names.iter().any(|n| {
                    !matches!(
                        n,
                        MessageDataItemName::Uid
                            | MessageDataItemName::Flags
                            | MessageDataItemName::InternalDate
                            | MessageDataItemName::Rfc822Size
                            | MessageDataItemName::ModSeq
                    )
                });
                let raw = if needs_raw {
                    let store = self.ctx.store.clone();
                    let hash = meta.hash.clone();
                    match tokio::task::spawn_blocking(move || store.get_blob(&hash)).await {
                        Ok(Ok(b)) => Some(b),
                        _ => {
                            failed += 1;
                            continue;
                        }
                    }
                } else {
                    None
                };
                let items = message_items(
                    &names,
                    *u,
                    &meta,
                    seen,
                    newly_seen.contains(u),
                    raw.as_deref(),
                );
                if let Ok(items) = Vec1::try_from(items) {
                    io.data(Data::Fetch {
                        seq: nz(*seq),
                        items,
                    });
                }
            }
            io.drain().await?;
        }
        self.refresh(io, uid, &newly_seen);
        if failed > 0 {
            io.status(tagged(
                tag,
                StatusKind::No,
                Some(other_code("SERVERBUG")),
                "some messages could not be read from the archive",
            ));
        } else {
            io.status(ok(tag, "FETCH done"));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        view: &View,
        _grant: Grant,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) {
        let targets = self.targets(set, uid);
        let Some(sel) = &self.selected else { return };
        let Some(sfolder) = sel.folder.writable_source() else {
            return io.status(ok(tag, "STORE done"));
        };
        let mailbox = sel.folder.mailbox.clone();
        let shown: Vec<u32> = targets.iter().map(|t| t.1).collect();
        let uids = sel.source_uids(&shown);
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        let mut strs: Vec<String> = flags.iter().map(flag_string).collect();
        // $PecTaken / $PecDone set or cleared: a handling transition, the
        // same as dropping the message into Mine / Done / To handle.
        if sfolder == super::view::INBOX && strs.iter().any(|f| handling::is_settable_keyword(f)) {
            let has = |k: &str| strs.iter().any(|f| f.eq_ignore_ascii_case(k));
            let action = match op {
                FlagOp::Add | FlagOp::Replace if has(handling::KW_DONE) => Some(handling::Action::Done),
                FlagOp::Add | FlagOp::Replace => Some(handling::Action::Take),
                FlagOp::Remove => Some(handling::Action::Reopen),
            };
            strs.retain(|f| !handling::is_settable_keyword(f));
            if let Some(action) = action {
                let t = Transition::new(action, &view.user.name);
                let hashes = sel.hashes(&shown);
                let (folder, mb) = (sel.folder.clone(), mailbox.clone());
                if let Err(refusal) = self.transition(&folder, &mb, uids.clone(), hashes, t).await {
                    return io.status(refusal(tag));
                }
            }
            if op == FlagOp::Replace {
                // The other flags as written (computed keywords dropped).
                strs.retain(|f| !is_pec_keyword(f));
            }
        }
        if strs.iter().any(|f| is_pec_keyword(f)) {
            if op != FlagOp::Replace {
                return io.status(tagged(
                    tag,
                    StatusKind::No,
                    Some(other_code("CANNOT")),
                    "$Pec* keywords show the PEC delivery and handling state; only the gateway sets them (but $PecTaken and $PecDone in INBOX and the handling views)",
                ));
            }
            // A client that writes back every flag it saw: the computed
            // keywords stay what the receipts say.
            strs.retain(|f| !is_pec_keyword(f));
        }
        let has_seen = flags.iter().any(|f| matches!(f, Flag::Seen));
        let shared: Vec<String> = strs
            .iter()
            .filter(|f| !f.eq_ignore_ascii_case("\\Seen"))
            .cloned()
            .collect();
        let mut batch = Vec::new();
        if !uids.is_empty() && (!shared.is_empty() || op == FlagOp::Replace) {
            if !view.may(&sel.folder, Right::Triage) {
                return io.status(noperm(tag, "not permitted to change shared flags"));
            }
            let a = self
                .audit("store")
                .mailbox(&mailbox)
                .folder(sfolder)
                .uids(uids.clone());
            batch.push((
                a,
                Change::SetFlags {
                    mailbox: mailbox.clone(),
                    folder: sfolder.into(),
                    uids: uids.clone(),
                    op,
                    flags: shared,
                },
            ));
        }
        let seen_to = match (op, has_seen) {
            (FlagOp::Add, true) => Some(true),
            (FlagOp::Remove, true) => Some(false),
            (FlagOp::Replace, s) => Some(s),
            _ => None,
        };
        if let (Some(seen), false) = (seen_to, uids.is_empty()) {
            let a = self
                .audit("store-seen")
                .mailbox(&mailbox)
                .folder(sfolder)
                .uids(uids.clone());
            batch.push((
                a,
                Change::SetSeen {
                    user: view.user.name.clone(),
                    mailbox: mailbox.clone(),
                    folder: sfolder.into(),
                    uids: uids.clone(),
                    seen,
                },
            ));
        }
        if !batch.is_empty() {
            if let Err(e) = self.ctx.store.commit_batch(batch).await {
                return io.status(serverbug(tag, &e));
            }
        }
        let quiet: HashSet<u32> = if matches!(response, StoreResponse::Silent) {
            shown.iter().copied().collect()
        } else {
            HashSet::new()
        };
        self.refresh(io, false, &quiet);
        io.status(ok(tag, "STORE done"));
    }

    async fn search(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        _view: &View,
        keys: &[SearchKey<'static>],
        uid: bool,
    ) {
        let Some(sel) = &self.selected else { return };
        // One blocking task for the whole folder: the keys may read the
        // store for every message.
        let (store, msgs, seen, keys) = (self.ctx.store.clone(), sel.msgs.clone(), sel.seen.clone(), keys.to_vec());
        let hits = match tokio::task::spawn_blocking(move || search::run(&store, &msgs, &seen, &keys, uid)).await {
            Ok(h) => h,
            Err(e) => return io.status(serverbug(tag, &e)),
        };
        let hits = hits.into_iter().map(nz).collect();
        io.data(Data::Search(hits, None));
        io.status(ok(tag, "SEARCH done"));
    }

    async fn expunge(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        _grant: Grant,
        set: Option<SequenceSet>,
    ) {
        let Some(sel) = &self.selected else { return };
        let Some(sfolder) = sel.folder.store_folder else {
            return io.status(ok(tag, "EXPUNGE done"));
        };
        let max_uid = sel.msgs.last().map(|m| m.0).unwrap_or(0);
        let uids: Vec<u32> = sel
            .msgs
            .iter()
            .filter(|(_, m)| m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")))
            .filter(|(u, _)| set.as_ref().is_none_or(|s| search::in_set(s, *u, max_uid)))
            .map(|(u, _)| *u)
            .collect();
        if !uids.is_empty() {
            let mailbox = sel.folder.mailbox.clone();
            let ch = Change::Hide {
                mailbox: mailbox.clone(),
                folder: sfolder.into(),
                uids: uids.clone(),
            };
            if let Err(e) = self.record("expunge", &mailbox, sfolder, uids, ch).await {
                return io.status(serverbug(tag, &e));
            }
        }
        self.refresh(io, true, &HashSet::new());
        io.status(ok(tag, "EXPUNGE done"));
    }

    /// The start COPY and MOVE share: resolve the target folder, and into
    /// a handling view, perform the transition (`moving` or not, it is the
    /// same gesture). `None`: answered already (refused, or done);
    /// otherwise the target and the (seq, uid) pairs named by `set`.
    #[allow(clippy::too_many_arguments)]
    async fn transfer_target(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        view: &View,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        moving: bool,
    ) -> Option<(Tag<'static>, Folder, Vec<(u32, u32)>)> {
        let target = match copy_target(view, mailbox) {
            Ok(f) => f,
            Err(refusal) => {
                io.status(refusal(tag));
                return None;
            }
        };
        if target.handling.is_some() {
            self.drop_into_view(io, tag, view, set, uid, &target, moving).await;
            return None;
        }
        let targets = self.targets(set, uid);
        Some((tag, target, targets))
    }

    /// COPY (and UID COPY), conservatively:
    ///
    /// * Within one PEC mailbox: `NO [CANNOT]`. The archive holds each
    ///   message once per mailbox (content-addressed evidence, de-duplicated
    ///   by hash), so a second folder of the same mailbox cannot hold it
    ///   too; refiling is MOVE.
    /// * Into another PEC mailbox: allowed into the folder of the same kind
    ///   (INBOX → INBOX, Receipts → Receipts, Anomalies → Anomalies) to a
    ///   user holding `triage` on the target, e.g. handing a received PEC to
    ///   another office with its signed envelope intact. The copy shares the
    ///   blob and keeps shared flags and PEC metadata; the audit record names
    ///   the source mailbox, folder and UIDs, the archived event the target.
    ///   A message the target already holds is not filed twice (COPYUID
    ///   names the UID it has).
    /// * Never into `Sent` (a copy would claim the target mailbox sent it
    ///   and feed its delivery-state reconciliation) nor into a virtual
    ///   folder, nor across kinds (a receipt in another INBOX would misfile
    ///   it): `NO [CANNOT]` saying why.
    async fn copy(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        view: &View,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
    ) {
        let cannot = |tag, t: &str| tagged(tag, StatusKind::No, Some(other_code("CANNOT")), t);
        let Some((tag, target, targets)) = self.transfer_target(io, tag, view, set, mailbox, uid, false).await else { return };
        let Some(sel) = &self.selected else { return };
        let from = sel.folder.source();
        if target.mailbox == sel.folder.mailbox {
            return io.status(cannot(
                tag,
                "this PEC mailbox already holds these messages: the archive keeps each message once per mailbox; use MOVE to refile",
            ));
        }
        let Some(to) = target.store_folder else {
            return io.status(cannot(tag, "virtual folders cannot hold copied messages"));
        };
        if to == super::view::SENT {
            return io.status(cannot(
                tag,
                "Sent holds only what its own mailbox sent; a copy cannot go there",
            ));
        }
        if to != from {
            return io.status(cannot(
                tag,
                "across PEC mailboxes a message is copied only into the folder of the same kind (INBOX to INBOX, Receipts to Receipts, Anomalies to Anomalies)",
            ));
        }
        if !view.may(&target, Right::Triage) {
            return io.status(noperm(tag, "not permitted on the target mailbox"));
        }
        let by_uid: std::collections::HashMap<u32, &MessageMeta> =
            sel.msgs.iter().map(|(u, m)| (*u, &**m)).collect();
        let src_mailbox = sel.folder.mailbox.clone();
        let mut src_uids = Vec::new();
        let mut batch = Vec::new();
        for (_, u) in &targets {
            let Some(m) = by_uid.get(u) else { continue };
            src_uids.push(*u);
            let a = self
                .audit("copy")
                .mailbox(&src_mailbox)
                .folder(from)
                .uids(sel.source_uids(&[*u]));
            let ch = Change::Archive {
                mailbox: target.mailbox.clone(),
                folder: to.to_string(),
                blob: BlobRef {
                    hash: m.hash.clone(),
                    size: m.size,
                },
                internal_date: m.internal_date,
                flags: m
                    .flags
                    .iter()
                    .filter(|f| !is_pec_keyword(f))
                    .cloned()
                    .collect(),
                provider: None,
                // Session snapshots carry no PEC metadata (view::snapshot_at).
                pec: match &m.pec {
                    Some(p) => Some(p.clone()),
                    None => sel
                        .source_uids(&[*u])
                        .first()
                        .and_then(|su| self.ctx.store.message(&src_mailbox, from, *su).ok().flatten())
                        .and_then(|x| x.pec),
                },
                handling: None,
            };
            batch.push((a, ch));
        }
        if batch.is_empty() {
            return io.status(ok(tag, "COPY done (no messages)"));
        }
        let committed = match self.ctx.store.commit_batch(batch).await {
            Ok(c) => c,
            Err(e) => return io.status(serverbug(tag, &e)),
        };
        let mut pairs = Vec::new();
        for (su, c) in src_uids.iter().zip(&committed) {
            if let StoreEvent::Archived { uid, .. } = &c.event {
                pairs.push((*su, *uid));
            }
        }
        let uv = self
            .ctx
            .store
            .folder(&target.mailbox, to)
            .ok()
            .flatten()
            .map(|s| s.uidvalidity)
            .unwrap_or(1);
        let code = uid_set(pairs.iter().map(|p| p.0))
            .zip(uid_set(pairs.iter().map(|p| p.1)))
            .map(|(source, destination)| Code::CopyUid {
                uid_validity: nz(uv),
                source,
                destination,
            });
        io.status(tagged(tag, StatusKind::Ok, code, "COPY done"));
    }

    #[allow(clippy::too_many_arguments)]
    async fn r#move(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        view: &View,
        _grant: Grant,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
    ) {
        let Some((tag, target, targets)) = self.transfer_target(io, tag, view, set, mailbox, uid, true).await else { return };
        let Some(sel) = &self.selected else { return };
        let (Some(from), Some(to)) = (sel.folder.writable_source(), target.store_folder) else {
            return io.status(tagged(
                tag,
                StatusKind::No,
                Some(other_code("CANNOT")),
                "virtual folders cannot hold moved messages",
            ));
        };
        if target.mailbox != sel.folder.mailbox {
            return io.status(tagged(
                tag,
                StatusKind::No,
                Some(other_code("CANNOT")),
                "messages move only between folders of one PEC mailbox",
            ));
        }
        if from == to {
            return io.status(tagged(
                tag,
                StatusKind::No,
                Some(other_code("CANNOT")),
                if sel.folder.handling.is_some() {
                    "the messages of a handling view are in INBOX already; to change their handling, move them into To handle, Mine, Offices/<office> or Done"
                } else {
                    "source and target are the same folder"
                },
            ));
        }
        let uids: Vec<u32> = sel.source_uids(&targets.iter().map(|t| t.1).collect::<Vec<_>>());
        if !uids.is_empty() {
            let mb = sel.folder.mailbox.clone();
            let ch = Change::Move {
                mailbox: mb.clone(),
                from: from.into(),
                to: to.into(),
                uids: uids.clone(),
            };
            if let Err(e) = self.record("move", &mb, from, uids, ch).await {
                return io.status(serverbug(tag, &e));
            }
        }
        self.refresh(io, true, &HashSet::new());
        io.status(ok(tag, "MOVE done"));
    }
}

impl Session {
    /// COPY or MOVE into a handling view: the transition the view means
    /// (`Mine` takes, `Done` completes, `Offices/<name>` assigns, `To
    /// handle` reopens) on INBOX messages of the same mailbox. The messages
    /// stay in INBOX; after a MOVE they leave the selected view if they no
    /// longer belong there.
    #[allow(clippy::too_many_arguments)]
    async fn drop_into_view(
        &mut self,
        io: &mut Io,
        tag: Tag<'static>,
        view: &View,
        set: &SequenceSet,
        uid: bool,
        target: &Folder,
        is_move: bool,
    ) {
        let cannot = |tag, t: &str| tagged(tag, StatusKind::No, Some(other_code("CANNOT")), t);
        let Some(kind) = target.handling.clone() else { return };
        let targets = self.targets(set, uid);
        let Some(sel) = &self.selected else { return };
        if sel.folder.mailbox != target.mailbox || sel.folder.source() != super::view::INBOX {
            return io.status(cannot(
                tag,
                "only messages of the same PEC mailbox's INBOX (or its handling views) have a handling state",
            ));
        }
        if !view.may(target, Right::Triage) {
            return io.status(noperm(tag, "changing the handling of messages needs triage on this mailbox"));
        }
        let shown: Vec<u32> = targets.iter().map(|t| t.1).collect();
        let uids = sel.source_uids(&shown);
        let hashes = sel.hashes(&shown);
        if hashes.is_empty() {
            return io.status(ok(tag, "done (no messages)"));
        }
        let t = kind.transition(&view.user.name);
        let (folder, mailbox) = (sel.folder.clone(), sel.folder.mailbox.clone());
        if let Err(refusal) = self.transition(&folder, &mailbox, uids, hashes, t).await {
            return io.status(refusal(tag));
        }
        self.refresh(io, is_move, &HashSet::new());
        io.status(ok(tag, &format!("{} done: {}", if is_move { "MOVE" } else { "COPY" }, kind_done(&kind))));
    }

    /// Record a handling transition (refused ones are audited too). The
    /// error is the tagged answer to give.
    async fn transition(
        &self,
        folder: &Folder,
        mailbox: &str,
        uids: Vec<u32>,
        hashes: Vec<String>,
        t: Transition,
    ) -> Result<(), Box<dyn FnOnce(Tag<'static>) -> Status<'static> + Send>> {
        let op = t.action.as_str();
        let a = self.audit(op).mailbox(mailbox).folder(folder.source()).uids(uids);
        let ch = Change::Handle { mailbox: mailbox.to_string(), hashes, transition: t };
        // The store's writer decides, against the state at commit time
        // (two simultaneous takes: one wins, the other is refused here).
        match self.ctx.store.commit(a.clone(), ch).await {
            Ok(_) => Ok(()),
            Err(crate::store::StoreError::Refused(r)) => {
                let (code, why) = match r {
                    Refusal::NotTracked => (
                        "CANNOT",
                        "not all of these messages have a handling state (only certified messages received in INBOX do)".to_string(),
                    ),
                    r => ("INUSE", r.to_string()),
                };
                self.audit_only(a.outcome(format!("refused: {why}"))).await;
                Err(Box::new(move |tag| tagged(tag, StatusKind::No, Some(other_code(code)), &why)))
            }
            Err(e) => {
                let msg = e.to_string();
                Err(Box::new(move |tag| serverbug(tag, &msg)))
            }
        }
    }
}

fn kind_done(kind: &ViewKind) -> String {
    match kind {
        ViewKind::ToHandle => "reopened".into(),
        ViewKind::Mine => "taken in charge".into(),
        ViewKind::Office(o) => format!("assigned to {o}"),
        ViewKind::Done => "completed".into(),
    }
}

/// UIDs in the given order as a UID set (one element each, so that
/// COPYUID's source and destination sets correspond in order).
/// The target folder of COPY or MOVE. A folder the user cannot see answers
/// `NO [TRYCREATE]`, exactly like one that does not exist.
fn copy_target(view: &View, mailbox: &Mailbox<'_>) -> Result<Folder, impl FnOnce(Tag<'static>) -> Status<'static>> {
    view.resolve(&mailbox_name(mailbox)).map_err(|e| {
        move |tag| match e {
            ViewError::NotFound => tagged(tag, StatusKind::No, Some(Code::TryCreate), "no such folder"),
            e => serverbug(tag, &e),
        }
    })
}

fn uid_set(uids: impl Iterator<Item = u32>) -> Option<UidSet> {
    let v: Vec<UidElement> = uids
        .filter_map(NonZeroU32::new)
        .map(UidElement::Single)
        .collect();
    Vec1::try_from(v).ok().map(UidSet)
}

/// A quota root name as an astring (mailbox aliases are plain words).
fn istr_a(s: &str) -> AString<'static> {
    AString::try_from(s.to_string()).unwrap_or_else(|_| AString::String(istr(s)))
}

fn istr(s: &str) -> IString<'static> {
    fetch::istr(s.as_bytes())
}

fn mbox(name: &str) -> Mailbox<'static> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Mailbox::Inbox;
    }
    match AString::try_from(name.to_string()) {
        Ok(a) => Mailbox::from(a),
        Err(_) => Mailbox::Inbox,
    }
}

fn attr(name: &str) -> Option<FlagNameAttribute<'static>> {
    Atom::try_from(name.to_string())
        .ok()
        .map(FlagNameAttribute::from)
}

/// An unsolicited `* n FETCH (UID u FLAGS (...))` for the message at index
/// `i` of the selected folder.
fn flags_update(io: &mut Io, i: usize, uid: u32, meta: &MessageMeta, seen: bool) {
    let items = vec![MessageDataItem::Uid(nz(uid)), MessageDataItem::Flags(flags_of(meta, seen))];
    if let Ok(items) = Vec1::try_from(items) {
        io.data(Data::Fetch { seq: nz(u32::try_from(i + 1).unwrap_or(u32::MAX)), items });
    }
}

fn flags_of(meta: &MessageMeta, seen: bool) -> Vec<FlagFetch<'static>> {
    let mut out: Vec<FlagFetch<'static>> = meta
        .flags
        .iter()
        .filter_map(|f| {
            Flag::try_from(f.as_str())
                .ok()
                .map(|f| FlagFetch::Flag(imap_next::imap_types::ToStatic::to_static(&f)))
        })
        .collect();
    if seen {
        out.push(FlagFetch::Flag(Flag::Seen));
    }
    out
}

fn message_items(
    names: &[MessageDataItemName<'static>],
    uid: u32,
    meta: &MessageMeta,
    seen: bool,
    newly_seen: bool,
    raw: Option<&[u8]>,
) -> Vec<MessageDataItem<'static>> {
    let parsed = raw.and_then(fetch::parse);
    let mut out = Vec::new();
    let mut flags_sent = false;
    for n in names {
        let item = match n {
            MessageDataItemName::Uid => MessageDataItem::Uid(nz(uid)),
            MessageDataItemName::Flags => {
                flags_sent = true;
                MessageDataItem::Flags(flags_of(meta, seen))
            }
            MessageDataItemName::InternalDate => {
                let d = meta.internal_date.fixed_offset();
                MessageDataItem::InternalDate(
                    imap_next::imap_types::datetime::DateTime::unvalidated(d),
                )
            }
            MessageDataItemName::Rfc822Size => {
                MessageDataItem::Rfc822Size(u32::try_from(meta.size).unwrap_or(u32::MAX))
            }
            MessageDataItemName::ModSeq => {
                MessageDataItem::ModSeq(NonZeroU64::new(meta.modseq).unwrap_or(NonZeroU64::MIN))
            }
            MessageDataItemName::Envelope => {
                MessageDataItem::Envelope(fetch::envelope(parsed.as_ref()))
            }
            MessageDataItemName::Body => MessageDataItem::Body(fetch::body_structure(
                raw.unwrap_or_default(),
                parsed.as_ref(),
            )),
            MessageDataItemName::BodyStructure => MessageDataItem::BodyStructure(
                fetch::body_structure(raw.unwrap_or_default(), parsed.as_ref()),
            ),
            MessageDataItemName::Rfc822 => {
                MessageDataItem::Rfc822(fetch::literal(raw.unwrap_or_default().to_vec()))
            }
            MessageDataItemName::Rfc822Header => {
                let r = raw.unwrap_or_default();
                MessageDataItem::Rfc822Header(fetch::literal(r[..fetch::header_end(r)].to_vec()))
            }
            MessageDataItemName::Rfc822Text => {
                let r = raw.unwrap_or_default();
                MessageDataItem::Rfc822Text(fetch::literal(r[fetch::header_end(r)..].to_vec()))
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let bytes = fetch::partial(
                    fetch::section(raw.unwrap_or_default(), section.as_ref()),
                    *partial,
                );
                MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin: partial.map(|p| p.0),
                    data: fetch::literal(bytes),
                }
            }
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => continue,
        };
        out.push(item);
    }
    if newly_seen && !flags_sent {
        out.push(MessageDataItem::Flags(flags_of(meta, true)));
    }
    out
}
