//! One IMAP session: a task `select!`ing the client's next command, store
//! notices (for IDLE) and shutdown, over the protocol [`State`].
//!
//! The loop is thin: it reads an event, asks the permission table
//! ([`permission::check`]) what the command needs, hands it to the
//! handler of the current state (`command/*.rs`), and applies the
//! [`Transition`] the handler returns. What the client sent that cannot be
//! parsed gets a tagged `BAD` when its tag can be read (RFC 3501 §7.1: a
//! client waits for its tag), an untagged one otherwise; a line or a
//! literal past its limit gets `* BAD` and the connection is closed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Tag, Text, Vec1};
use imap_next::imap_types::response::{Code, CommandContinuationRequest, Greeting, GreetingKind, Status, StatusKind};
use imap_next::server::{Error as ServerError, Event, Options, Server};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tokio_rustls::TlsAcceptor;

use super::command::{anonymous, anystate, authenticated, selected, Conn, State, Transition};
use super::extended::CatPart;
use super::io::{Io, IoError, Limits, Transport};
use super::permission::{self, Denied};
use super::respond::*;
use super::Ctx;
use crate::auth::Right;
use crate::store::{Audit, Notice};

/// Before login, a client has this long per command (RFC 3501 allows a
/// short pre-auth timer; one minute is generous for a human typing).
const PREAUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Protocol errors tolerated before the connection is dropped.
const MAX_BAD: u32 = 20;

enum Flow {
    Continue,
    StartTls,
    Logout,
}

struct Session {
    conn: Conn,
    state: State,
    idle_tag: Option<Tag<'static>>,
    auth_tag: Option<Tag<'static>>,
    bad: u32,
    /// Who logged in (for the logout record, written whatever the state
    /// is when the connection ends).
    logged_in: Option<String>,
    /// NOTIFY SET (RFC 5465), until NOTIFY NONE or the end of the session.
    notify: Option<super::notify::Notify>,
    /// Per folder covered by `notify`, what it was last told to be (or was
    /// when NOTIFY was set): a change of it is told as a `* STATUS`.
    told: HashMap<String, super::view::Counts>,
}

fn server_options(ctx: &Ctx) -> Options {
    let mut o = Options::default();
    o.max_literal_size = ctx.cfg.max_literal_size;
    // Room for the command line around the largest literal (64 KiB, as
    // Dovecot and imap-next's default).
    o.max_command_size = ctx.cfg.max_literal_size.saturating_add(64 * 1024);
    o
}

fn preauth_limits(ctx: &Ctx) -> Limits {
    Limits { authenticated: false, max_literal: ctx.cfg.max_literal_size.into() }
}

/// Serve one TCP connection to the end. Never panics on client input;
/// errors end the session and are logged here.
pub async fn run(ctx: Arc<Ctx>, tcp: TcpStream, peer: SocketAddr, implicit: bool, shutdown: watch::Receiver<bool>) {
    let transport = if implicit {
        match handshake(&ctx, tcp).await {
            Some(s) => s,
            None => return,
        }
    } else {
        Transport::Plain(tcp)
    };
    serve_transport(ctx, transport, peer, implicit, !implicit, shutdown).await
}

/// Serve a session over any transport (an in-memory pipe in tests and
/// fuzzing): `tls` says whether it counts as encrypted.
pub async fn serve_transport(
    ctx: Arc<Ctx>,
    transport: Transport,
    peer: SocketAddr,
    tls: bool,
    starttls_listener: bool,
    shutdown: watch::Receiver<bool>,
) {
    let mut s = Session {
        conn: Conn { ctx: ctx.clone(), peer, tls, starttls_listener },
        state: State::NotAuthenticated,
        idle_tag: None,
        auth_tag: None,
        bad: 0,
        logged_in: None,
        notify: None,
        told: HashMap::new(),
    };
    let caps = anystate::capabilities(&s.conn, false);
    let greeting = Greeting {
        kind: GreetingKind::Ok,
        code: Vec1::try_from(caps).ok().map(Code::Capability),
        text: text("pecgate IMAP ready"),
    };
    let mut io = Io::new(transport, Server::new(server_options(&ctx), greeting), preauth_limits(&ctx));
    loop {
        match s.serve(&mut io, shutdown.clone()).await {
            Ok(Flow::StartTls) => {
                let _ = io.drain().await;
                let Transport::Plain(tcp) = io.into_transport() else { break };
                let Some(tls) = handshake(&ctx, tcp).await else { break };
                s.conn.tls = true;
                // A fresh protocol state after STARTTLS: anything the client
                // pipelined in clear is discarded (no command injection).
                let mut server = Server::new(server_options(&ctx), unused_greeting());
                // The greeting is not sent again after STARTTLS: consume it.
                discard_greeting(&mut server);
                io = Io::new(tls, server, preauth_limits(&ctx));
            }
            Ok(Flow::Logout) | Ok(Flow::Continue) => break,
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "IMAP session ended");
                break;
            }
        }
    }
    if let Some(name) = &s.logged_in {
        s.conn.audit_only(Audit::user(name, s.conn.source(), "imap", "logout")).await;
    }
}

/// Answer a connection over `max_sessions_per_address` with a BYE
/// greeting (after the TLS handshake on an implicit-TLS listener, so the
/// client can read it) and close it.
pub async fn refuse(ctx: Arc<Ctx>, tcp: TcpStream, peer: SocketAddr, implicit: bool) {
    tracing::warn!(peer = %peer, limit = ctx.cfg.max_sessions_per_address, "IMAP connection refused: too many from this address");
    let transport = if implicit {
        match handshake(&ctx, tcp).await {
            Some(s) => s,
            None => return,
        }
    } else {
        Transport::Plain(tcp)
    };
    let greeting = Greeting {
        kind: GreetingKind::Bye,
        code: Some(other_code("LIMIT")),
        text: text("too many connections from your address; close some and retry"),
    };
    let mut io = Io::new(transport, Server::new(server_options(&ctx), greeting), preauth_limits(&ctx));
    let sent = async {
        loop {
            match io.next().await {
                Ok(Event::GreetingSent { .. }) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let _ = io.flush().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), sent).await;
}

fn unused_greeting() -> Greeting<'static> {
    Greeting { kind: GreetingKind::Ok, code: None, text: Text::unvalidated("ready") }
}

fn discard_greeting(server: &mut Server) {
    use imap_next::State as _;
    for _ in 0..4 {
        match server.next() {
            Err(imap_next::Interrupt::Io(imap_next::Io::Output(_))) => continue,
            Ok(Event::GreetingSent { .. }) => break,
            _ => break,
        }
    }
}

async fn handshake(ctx: &Ctx, tcp: TcpStream) -> Option<Transport> {
    let acceptor = TlsAcceptor::from(ctx.tls.clone());
    match tokio::time::timeout(super::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(Transport::Tls(Box::new(tls))),
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

/// The tag at the start of bytes the parser could not take, if it is one
/// (RFC 3501: `tag = 1*<any ASTRING-CHAR except "+">`).
pub fn readable_tag(bytes: &[u8]) -> Option<Tag<'static>> {
    let end = bytes.iter().position(|b| *b == b' ').filter(|n| *n > 0 && *n <= 64)?;
    let t = std::str::from_utf8(&bytes[..end]).ok()?;
    Tag::try_from(t.to_string()).ok()
}

/// The command name after the tag, for the BAD text (letters only).
fn command_word(bytes: &[u8]) -> Option<String> {
    let rest = &bytes[bytes.iter().position(|b| *b == b' ')? + 1..];
    let word: String = rest.iter().take_while(|b| b.is_ascii_alphabetic()).take(20).map(|b| *b as char).collect();
    (!word.is_empty()).then(|| word.to_ascii_uppercase())
}

/// NOTIFY for folders other than the selected one (RFC 5465 §5): each
/// folder `nt` covers that `notice` may have changed (`None`: every one)
/// is counted again, and a change of what its events cover is told as a
/// `* STATUS` (`always`: told whatever it was, NOTIFY SET STATUS). Says
/// whether something was sent.
fn notify_others(
    nt: &super::notify::Notify,
    state: &State,
    told: &mut HashMap<String, super::view::Counts>,
    io: &mut Io,
    notice: Option<&Notice>,
    always: bool,
) -> bool {
    let (user, selected) = match state {
        State::Authenticated(u) => (u, None),
        State::Selected(u, s) => (u, Some(s.folder.name.as_str())),
        _ => return false,
    };
    let mut sent = false;
    let tree = user.view.tree();
    // Read only for a SUBSCRIBED group (RFC 5465 §6).
    let subs = nt.uses_subscribed().then(|| {
        let choices = user.view.store.subscriptions(&user.view.user.name).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "NOTIFY: cannot read the subscriptions");
            Vec::new()
        });
        super::subscriptions::Subscriptions::new(&tree, choices)
    });
    for f in tree.iter().filter_map(|e| e.folder.as_ref()) {
        if selected == Some(f.name.as_str()) {
            continue;
        }
        let Some(events) = nt.other(&f, subs.as_ref().is_some_and(|s| s.is_subscribed(&f.name))) else { continue };
        let touched = notice.is_none_or(|n| {
            n.mailbox == f.mailbox
                && (n.folder.as_str() == f.source() || f.shows_sent() || f.trash || f.handling.is_some())
        });
        if !touched {
            continue;
        }
        let Ok(now) = user.view.counts(&f) else { continue };
        let news = match told.get(&f.name) {
            Some(was) => super::notify::changed(events, was, &now),
            None => notice.is_some(),
        };
        if always || news {
            let items = super::notify::items(events, &now);
            io.data(imap_next::imap_types::response::Data::Status { mailbox: mbox(&f.name), items: items.into() });
            sent = true;
        }
        told.insert(f.name.clone(), now);
    }
    sent
}

/// The answer to a command refused by the permission table.
fn denied(tag: Tag<'static>, d: Denied) -> Status<'static> {
    match d {
        Denied::NoPerm(why) => noperm(tag, &why),
        Denied::NoSuchFolder => tagged(tag, StatusKind::No, Some(Code::TryCreate), "no such folder"),
        Denied::ReadOnly(why) => no(tag, why),
    }
}

impl Session {
    async fn serve(&mut self, io: &mut Io, mut shutdown: watch::Receiver<bool>) -> Result<Flow, SessionError> {
        let mut notices = self.conn.ctx.store.subscribe();
        // Users changed (a reload, a directory check): re-check ours now,
        // not only at the next command (an IDLE session sends none).
        let mut users = self.conn.ctx.auth.subscribe();
        // The autologout counts from the last thing that happened other
        // than a keep-alive (which must not keep a session alive forever).
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let limit = if self.state.user().is_some() { self.conn.ctx.cfg.idle_timeout } else { PREAUTH_TIMEOUT };
            let keepalive = self.conn.ctx.cfg.idle_keepalive;
            enum Got {
                Ev(super::io::Next),
                Notice(Result<Notice, broadcast::error::RecvError>),
                Users,
                Keepalive,
                Shutdown,
                Timeout,
            }
            let got = if io.has_pending() {
                Got::Ev(io.next().await)
            } else {
                tokio::select! {
                    ev = io.next() => Got::Ev(ev),
                    n = notices.recv() => Got::Notice(n),
                    Ok(()) = users.changed() => Got::Users,
                    _ = tokio::time::sleep(keepalive), if self.idle_tag.is_some() && !keepalive.is_zero() => Got::Keepalive,
                    _ = shutdown.changed() => Got::Shutdown,
                    _ = tokio::time::sleep_until(quiet_since + limit) => Got::Timeout,
                }
            };
            if !matches!(got, Got::Keepalive) {
                quiet_since = tokio::time::Instant::now();
            }
            match got {
                Got::Shutdown => {
                    io.status(bye("pecgate is shutting down"));
                    let _ = io.drain().await;
                    return Ok(Flow::Logout);
                }
                Got::Keepalive => {
                    io.status(untagged(StatusKind::Ok, None, "still here"));
                    io.drain().await?;
                }
                Got::Users => {
                    if !self.resync_user(io) {
                        let _ = io.drain().await;
                        return Ok(Flow::Logout);
                    }
                }
                Got::Timeout => {
                    io.status(bye("autologout: idle for too long"));
                    let _ = io.drain().await;
                    return Err(SessionError::Timeout);
                }
                Got::Notice(n) => {
                    let notify_selected = self.notify.as_ref().and_then(|nt| nt.selected());
                    if let State::Selected(user, sel) = &mut self.state {
                        let relevant = match &n {
                            // Sent and Undelivered also change when a receipt
                            // arrives in another folder of the mailbox; Trash
                            // with any folder of it.
                            Ok(n) => {
                                n.mailbox == sel.folder.mailbox
                                    && (n.folder.as_str() == sel.folder.source()
                                        || sel.folder.shows_sent()
                                        || sel.folder.trash)
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => true,
                            Err(_) => false,
                        };
                        if relevant && self.idle_tag.is_some() {
                            selected::refresh(user, sel, io, true, &HashSet::new());
                            io.drain().await?;
                        } else if let (true, Some((_, delayed))) = (relevant, notify_selected) {
                            // NOTIFY SELECTED: told now, as in IDLE; with
                            // SELECTED-DELAYED, EXPUNGE waits for a command.
                            selected::refresh(user, sel, io, !delayed, &HashSet::new());
                            io.drain().await?;
                        }
                    }
                    if let Some(nt) = &self.notify {
                        if notify_others(nt, &self.state, &mut self.told, io, n.as_ref().ok(), false) {
                            io.drain().await?;
                        }
                    }
                    if let Err(broadcast::error::RecvError::Closed) = n {
                        notices = self.conn.ctx.store.subscribe();
                    }
                }
                Got::Ev(Ok(event)) => {
                    // Boxed: a command's state lives on the heap only
                    // while it runs; the session's own future (kept by
                    // every idle connection) stays small.
                    let flow = Box::pin(self.event(io, event)).await?;
                    if !matches!(flow, Flow::Continue) {
                        io.drain().await?;
                        return Ok(flow);
                    }
                    io.maybe_drain().await?;
                }
                Got::Ev(Err(IoError::Protocol(e))) => {
                    // A form of an extension imap-codec does not parse?
                    let ext = match &e {
                        ServerError::MalformedMessage { discarded_bytes } => {
                            super::extended::parse(discarded_bytes.declassify())
                        }
                        _ => None,
                    };
                    if let Some(ext) = ext {
                        Box::pin(self.extended(io, ext)).await?;
                        io.maybe_drain().await?;
                        continue;
                    }
                    self.bad += 1;
                    self.protocol_error(io, e);
                    if self.bad > MAX_BAD {
                        io.status(bye("too many protocol errors"));
                        let _ = io.drain().await;
                        return Ok(Flow::Logout);
                    }
                    io.maybe_drain().await?;
                }
                Got::Ev(Err(IoError::Exceeded(e))) => {
                    tracing::info!(peer = %self.conn.peer, error = %e, "IMAP client passed a limit: closing");
                    let code = match e {
                        super::scan::Exceeded::Line => "",
                        super::scan::Exceeded::Literal { .. } => "[TOOBIG] ",
                    };
                    let _ = io.drain().await;
                    let _ =
                        io.write_raw(format!("* BAD {code}{e}\r\n* BYE closing the connection\r\n").as_bytes()).await;
                    return Ok(Flow::Logout);
                }
                Got::Ev(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// A command of an extension imap-codec does not parse (see
    /// `imap::extended`): ESEARCH's `SEARCH RETURN (...)`.
    async fn extended(&mut self, io: &mut Io, ext: super::extended::Extended) -> Result<(), SessionError> {
        use super::extended::Extended;
        let name = match &ext {
            Extended::List(_) => "LIST",
            Extended::Append { .. } | Extended::Catenate { .. } => "APPEND",
            Extended::Sort { .. } => "SORT",
            Extended::CancelUpdate { .. } => "CANCELUPDATE",
            Extended::Notify { .. } => "NOTIFY",
            _ => "SEARCH",
        };
        crate::metrics::Metrics::commands().with_label_values(&["imap", name]).inc();
        if !self.resync_user(io) {
            return Ok(());
        }
        match ext {
            Extended::Refused { tag, why } => match Tag::try_from(tag) {
                Ok(tag) => io.status(bad(tag, why)),
                Err(_) => io.status(untagged(StatusKind::Bad, None, why)),
            },
            Extended::Notify { tag, set } => {
                let Ok(t) = Tag::try_from(tag.clone()) else {
                    io.status(untagged(StatusKind::Bad, None, "unreadable tag"));
                    return Ok(());
                };
                if self.state.user().is_none() {
                    io.status(bad(t, "log in first"));
                    return Ok(());
                }
                match set {
                    Err(super::notify::Refusal::Bad(why)) => io.status(bad(t, why)),
                    Err(super::notify::Refusal::BadEvent(ev)) => io.raw(
                        format!(
                            "{tag} NO [BADEVENT ({})] the event {ev} is not offered\r\n",
                            super::notify::OFFERED.join(" ")
                        )
                        .as_bytes(),
                    ),
                    Ok(None) => {
                        self.notify = None;
                        self.told.clear();
                        io.status(ok(t, "NOTIFY NONE done"));
                    }
                    Ok(Some(nt)) => {
                        self.told.clear();
                        notify_others(&nt, &self.state, &mut self.told, io, None, nt.status);
                        self.notify = Some(nt);
                        io.status(ok(t, "NOTIFY SET done"));
                    }
                }
            }
            Extended::Append { tag, appends } => {
                let Ok(tag) = Tag::try_from(tag) else {
                    io.status(untagged(StatusKind::Bad, None, "unreadable tag"));
                    return Ok(());
                };
                self.append_all(io, tag, appends).await;
            }
            Extended::Catenate { tag, mailbox, messages } => {
                let Ok(t) = Tag::try_from(tag.clone()) else {
                    io.status(untagged(StatusKind::Bad, None, "unreadable tag"));
                    return Ok(());
                };
                let (user, sel) = match &self.state {
                    State::Authenticated(user) => (user, None),
                    State::Selected(user, sel) => (user, Some(&**sel)),
                    _ => {
                        io.status(bad(t, "log in first"));
                        return Ok(());
                    }
                };
                // The target first: a folder that is not there is TRYCREATE
                // whatever the URLs say (RFC 4469 §5, as Dovecot).
                let probe =
                    messages.first().and_then(|m| super::extended::append_command(tag.as_bytes(), &mailbox, m, b"x"));
                let Some(probe) = probe else {
                    io.status(bad(t, "APPEND CATENATE: flags or date not understood"));
                    return Ok(());
                };
                if let Err(d) = permission::check(&user.view, sel, &probe.body) {
                    io.status(denied(t, d));
                    return Ok(());
                }
                let max = usize::try_from(self.conn.ctx.cfg.max_literal_size).unwrap_or(usize::MAX);
                let mut appends = Vec::new();
                for m in &messages {
                    let mut bytes = Vec::new();
                    for part in &m.parts {
                        match part {
                            CatPart::Text(text) => bytes.extend_from_slice(text),
                            CatPart::Url(url) => match super::catenate::resolve(&self.conn, user, url).await {
                                Some(b) => bytes.extend_from_slice(&b),
                                None => {
                                    let url = url.replace('\\', "\\\\").replace('"', "\\\"");
                                    io.raw(
                                        format!(
                                            "{tag} NO [BADURL \"{url}\"] the URL names no message part you may read here (nothing was appended)\r\n"
                                        )
                                        .as_bytes(),
                                    );
                                    return Ok(());
                                }
                            },
                        }
                        if bytes.len() > max {
                            io.status(no_code(t, "TOOBIG", "the message put together is larger than APPENDLIMIT"));
                            return Ok(());
                        }
                    }
                    match super::extended::append_command(tag.as_bytes(), &mailbox, m, &bytes) {
                        Some(c) => appends.push(c),
                        None => {
                            io.status(bad(t, "APPEND CATENATE: the message put together cannot be appended"));
                            return Ok(());
                        }
                    }
                }
                self.append_all(io, t, appends).await;
            }
            Extended::List(list) => match (&self.state, Tag::try_from(list.tag.clone())) {
                (State::Authenticated(user) | State::Selected(user, _), Ok(tag)) => {
                    authenticated::list_extended(io, tag, &user.view, &list)
                }
                (_, Ok(tag)) => io.status(bad(tag, "log in first")),
                (_, Err(_)) => io.status(untagged(StatusKind::Bad, None, "unreadable tag")),
            },
            Extended::Search { command, ret } => {
                let (tag, body) = (command.tag, command.body);
                let CommandBody::Search { criteria, uid, .. } = &body else { return Ok(()) };
                match &mut self.state {
                    State::Selected(user, sel) => match permission::check(&user.view, Some(sel), &body) {
                        Err(d) => io.status(denied(tag, d)),
                        Ok(_) => {
                            selected::search(&self.conn, user, sel, io, tag, criteria.as_ref(), *uid, Some(ret)).await?
                        }
                    },
                    State::NotAuthenticated | State::Logout => io.status(bad(tag, "log in first")),
                    State::Authenticated(_) => io.status(bad(tag, "SEARCH needs a selected folder; SELECT one first")),
                }
            }
            Extended::Sort { command, ret } => {
                let (tag, body) = (command.tag, command.body);
                let CommandBody::Sort { sort_criteria, charset, search_criteria, uid } = &body else { return Ok(()) };
                match &mut self.state {
                    State::Selected(user, sel) => match permission::check(&user.view, Some(sel), &body) {
                        Err(d) => io.status(denied(tag, d)),
                        Ok(_) => {
                            let (criteria, keys) = (sort_criteria.as_ref(), search_criteria.as_ref());
                            selected::sort(&self.conn, sel, io, tag, criteria, charset, keys, *uid, Some(ret)).await
                        }
                    },
                    State::NotAuthenticated | State::Logout => io.status(bad(tag, "log in first")),
                    State::Authenticated(_) => io.status(bad(tag, "SORT needs a selected folder; SELECT one first")),
                }
            }
            Extended::CancelUpdate { tag, tags } => {
                let Ok(tag) = Tag::try_from(tag) else {
                    io.status(untagged(StatusKind::Bad, None, "unreadable tag"));
                    return Ok(());
                };
                match &mut self.state {
                    State::Selected(_, sel) => {
                        // RFC 5267 §4.3: a tag that names no context is an error.
                        match tags.iter().find(|t| !sel.contexts.iter().any(|c| &c.tag == *t)) {
                            Some(t) => io.status(bad(tag, &format!("no search is kept up to date under tag {t}"))),
                            None => {
                                sel.contexts.retain(|c| !tags.contains(&c.tag));
                                io.status(ok(tag, "CANCELUPDATE done"));
                            }
                        }
                    }
                    State::NotAuthenticated | State::Logout => io.status(bad(tag, "log in first")),
                    State::Authenticated(_) => io.status(bad(tag, "no folder is selected, so no search is kept")),
                }
            }
        }
        Ok(())
    }

    /// APPEND of one message or more (MULTIAPPEND, CATENATE): each
    /// checked by the permission table, then stored together.
    async fn append_all(&mut self, io: &mut Io, tag: Tag<'static>, appends: Vec<Command<'static>>) {
        let (user, sel) = match &mut self.state {
            State::Authenticated(user) => (user, None),
            State::Selected(user, sel) => (user, Some(sel)),
            _ => return io.status(bad(tag, "log in first")),
        };
        let mut items = Vec::new();
        for c in appends {
            match permission::check(&user.view, sel.as_deref().map(|s| &**s), &c.body) {
                Ok(Some(allowed)) => items.push((c.body, allowed)),
                Ok(None) => return io.status(no_code(tag, "SERVERBUG", "permission not checked; refused")),
                Err(d) => return io.status(denied(tag, d)),
            }
        }
        let st = authenticated::multiappend(&self.conn, user, tag, items).await;
        if let Some(sel) = sel {
            // EXISTS before the tagged OK (RFC 3501 §6.3.11).
            selected::refresh(user, sel, io, true, &HashSet::new());
        }
        io.status(st);
    }

    /// Answer what the parser refused: tagged when the tag can be read.
    fn protocol_error(&mut self, io: &mut Io, e: ServerError) {
        let (bytes, what) = match &e {
            // The parser answered a too-large synchronising literal itself.
            ServerError::LiteralTooLong { .. } => return,
            ServerError::CommandTooLong { discarded_bytes } => (discarded_bytes.declassify(), "command too long"),
            ServerError::ExpectedCrlfGotLf { discarded_bytes } => {
                (discarded_bytes.declassify(), "lines must end with CRLF")
            }
            ServerError::MalformedMessage { discarded_bytes } => (discarded_bytes.declassify(), "invalid syntax"),
        };
        let msg = match command_word(bytes) {
            Some(w) => format!("{w}: {what}"),
            None => what.to_string(),
        };
        match readable_tag(bytes) {
            Some(tag) => io.status(tagged(tag, StatusKind::Bad, Some(other_code("PARSE")), &msg)),
            None => io.status(untagged(StatusKind::Bad, Some(other_code("PARSE")), &msg)),
        }
    }

    async fn event(&mut self, io: &mut Io, event: Event) -> Result<Flow, SessionError> {
        match event {
            Event::GreetingSent { .. } | Event::ResponseSent { .. } => Ok(Flow::Continue),
            Event::CommandReceived { command } => self.command(io, command).await,
            Event::CommandAuthenticateReceived { command_authenticate: ca } => {
                let tag = ca.tag;
                let answer = if self.state.user().is_some() {
                    Some((bad(tag, "already authenticated"), Transition::None))
                } else if !self.conn.may_login() {
                    Some((no_code(tag, "PRIVACYREQUIRED", "use TLS first"), Transition::None))
                } else if ca.mechanism != AuthMechanism::Plain {
                    Some((no(tag, "only AUTHENTICATE PLAIN is supported"), Transition::None))
                } else if let Some(ir) = ca.initial_response {
                    Some(anonymous::plain(&self.conn, tag, ir.declassify()).await)
                } else {
                    self.auth_tag = Some(tag);
                    match io.server.authenticate_continue(CommandContinuationRequest::base64(Vec::<u8>::new())) {
                        Ok(h) => io.note_handle(h),
                        Err(_) => return Err(SessionError::Io(IoError::Stream("authenticate state".into()))),
                    }
                    None
                };
                if let Some((st, t)) = answer {
                    if let Ok(h) = io.server.authenticate_finish(st) {
                        io.note_handle(h);
                    }
                    self.apply(io, t);
                }
                Ok(Flow::Continue)
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                let tag = self.auth_tag.take().unwrap_or_else(|| Tag::unvalidated("*"));
                let (st, t) = match authenticate_data {
                    AuthenticateData::Cancel => (bad(tag, "authentication cancelled"), Transition::None),
                    AuthenticateData::Continue(data) => anonymous::plain(&self.conn, tag, data.declassify()).await,
                };
                if let Ok(h) = io.server.authenticate_finish(st) {
                    io.note_handle(h);
                }
                self.apply(io, t);
                Ok(Flow::Continue)
            }
            Event::IdleCommandReceived { tag } => {
                let State::Selected(user, sel) = &mut self.state else {
                    if let Ok(h) = io.server.idle_reject(no(tag, "select a folder first")) {
                        io.note_handle(h);
                    }
                    return Ok(Flow::Continue);
                };
                let cont = CommandContinuationRequest::basic(None, "idling")
                    .unwrap_or_else(|_| CommandContinuationRequest::base64(Vec::<u8>::new()));
                if let Ok(h) = io.server.idle_accept(cont) {
                    io.note_handle(h);
                    self.idle_tag = Some(tag);
                    selected::refresh(user, sel, io, true, &HashSet::new());
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

    /// Move to the state a handler asked for.
    fn apply(&mut self, io: &mut Io, t: Transition) -> Flow {
        let flow = match &t {
            Transition::StartTls => Flow::StartTls,
            Transition::Logout => Flow::Logout,
            Transition::Authenticate(a) => {
                // Literals up to APPENDLIMIT from now on.
                io.limits.authenticated = true;
                self.logged_in = Some(a.view.user.name.clone());
                Flow::Continue
            }
            _ => Flow::Continue,
        };
        let state = std::mem::replace(&mut self.state, State::Logout);
        self.state = state.apply(t);
        flow
    }

    /// Apply a reload of the users (SIGHUP) to this session before a
    /// command: a removed user, or one who lost `read` on the selected
    /// mailbox, gets BYE (false: end the session); changed grants apply
    /// from this command on.
    fn resync_user(&mut self, io: &mut Io) -> bool {
        let (user, sel) = match &mut self.state {
            State::Authenticated(u) => (u, None),
            State::Selected(u, s) => (u, Some(&**s)),
            _ => return true,
        };
        match self.conn.ctx.auth.user(&user.view.user.name) {
            None => {
                io.status(bye("your account was removed or disabled; logging out"));
                false
            }
            Some(u) if *u == *user.view.user => true,
            Some(u) => {
                if sel.is_some_and(|sel| !u.may(&sel.folder.mailbox, Right::Read)) {
                    io.status(bye("your access to the selected mailbox was withdrawn; logging out"));
                    return false;
                }
                tracing::info!(user = %u.name, "IMAP session picks up changed grants");
                user.view = anonymous::new_view(&self.conn, u);
                true
            }
        }
    }

    async fn command(&mut self, io: &mut Io, cmd: Command<'static>) -> Result<Flow, SessionError> {
        let (tag, body) = (cmd.tag, cmd.body);
        let name = body.name();
        tracing::debug!(command = name, peer = %self.conn.peer, "IMAP command");
        crate::metrics::Metrics::commands().with_label_values(&["imap", name]).inc();
        if !self.resync_user(io) {
            return Ok(Flow::Logout);
        }
        let conn = &self.conn;
        let t = match body {
            // Valid in every state.
            CommandBody::Capability => anystate::capability(conn, &self.state, io, tag),
            CommandBody::Noop | CommandBody::Check => {
                if let State::Selected(user, sel) = &mut self.state {
                    selected::refresh(user, sel, io, true, &HashSet::new());
                }
                io.status(ok(tag, "done"));
                Transition::None
            }
            CommandBody::Logout => anystate::logout(io, tag),
            CommandBody::Id { .. } => anystate::id(io, tag),
            body => match &mut self.state {
                State::NotAuthenticated => anonymous::handle(conn, io, tag, body).await,
                State::Authenticated(user) => match permission::check(&user.view, None, &body) {
                    Err(d) => {
                        io.status(denied(tag, d));
                        Transition::None
                    }
                    Ok(allowed) => authenticated::handle(conn, user, io, tag, body, allowed).await,
                },
                State::Selected(user, sel) => match permission::check(&user.view, Some(sel), &body) {
                    Err(d) => {
                        io.status(denied(tag, d));
                        Transition::None
                    }
                    Ok(allowed) if selected::is_selected_command(&body) => {
                        selected::handle(conn, user, sel, io, tag, body, allowed).await?
                    }
                    Ok(allowed) if authenticated::changes_selected(&body) => {
                        // APPEND into the selected folder: EXISTS before
                        // the tagged OK (RFC 3501 §6.3.11).
                        let st = authenticated::append_command(conn, user, tag, body, allowed).await;
                        selected::refresh(user, sel, io, true, &HashSet::new());
                        io.status(st);
                        Transition::None
                    }
                    Ok(allowed) => {
                        if matches!(body, CommandBody::Select { .. } | CommandBody::Examine { .. }) {
                            // RFC 7162 §3.2.11: the folder selected until now
                            // is closed before anything of the new one.
                            io.status(untagged(StatusKind::Ok, Some(Code::Closed), "previous folder closed"));
                        }
                        authenticated::handle(conn, user, io, tag, body, allowed).await
                    }
                },
                State::Logout => Transition::Logout,
            },
        };
        Ok(self.apply(io, t))
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
