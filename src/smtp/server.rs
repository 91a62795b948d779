//! Listeners and the thin I/O driver around [`Session`]: read, feed, carry
//! out actions (write, TLS handshake, password check, relay), repeat.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::relay;
use super::session::{Action, Limits, Session};
use crate::auth::Authenticator;
use crate::config::{MailboxConfig, SmtpConfig};
use crate::counters::{self, SmtpSessionGuard};
use crate::store::{Audit, Change, Store};

/// HYPOTHESIS: submissions are short-lived; 1024 concurrent connections
/// are far above what an organisation's staff send at once.
const MAX_CONNECTIONS: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// RFC 5321 §4.5.3.2: servers wait at least 5 minutes for a command.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Stop reading while this much pipelined input is unprocessed.
const MAX_PENDING: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// What every SMTP session shares.
pub struct Ctx {
    pub cfg: SmtpConfig,
    pub tls: Arc<rustls::ServerConfig>,
    pub store: Store,
    pub auth: Arc<Authenticator>,
    /// Mailboxes by alias (those with a provider SMTP endpoint can send).
    pub mailboxes: HashMap<String, MailboxConfig>,
    /// Longest wait for the provider.
    pub timeout: Duration,
    /// The mailboxes' sends, shared with campaigns.
    pub limiter: Arc<crate::sending::Limiter>,
}

impl Ctx {
    fn limits(&self, starttls: bool, peer: &SocketAddr) -> Limits {
        let mut boxes: Vec<(String, String)> =
            self.mailboxes.values().filter(|m| m.smtp.is_some()).map(|m| (m.alias.clone(), m.address.clone())).collect();
        boxes.sort();
        Limits {
            hostname: self.cfg.hostname.clone(),
            max_message_size: self.cfg.max_message_size,
            max_recipients: self.cfg.max_recipients,
            starttls,
            plaintext_ok: self.cfg.allow_plaintext_on_loopback && peer.ip().is_loopback(),
            mailboxes: Arc::new(boxes),
            sending: Arc::new(self.mailboxes.values().map(|m| (m.alias.clone(), m.sending)).collect()),
        }
    }
}

/// Bind every listener, then serve until `shutdown` turns true.
pub async fn start(ctx: Arc<Ctx>, shutdown: watch::Receiver<bool>) -> Result<JoinSet<()>, SmtpError> {
    let mut tasks = JoinSet::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let addrs = ctx
        .cfg
        .listen
        .iter()
        .map(|a| (a.clone(), true))
        .chain(ctx.cfg.listen_starttls.iter().map(|a| (a.clone(), false)));
    for (addr, implicit) in addrs {
        let listener =
            TcpListener::bind(&addr).await.map_err(|source| SmtpError::Bind { addr: addr.clone(), source })?;
        tracing::info!(%addr, implicit_tls = implicit, "SMTP submission listening");
        tasks.spawn(accept_loop(listener, implicit, ctx.clone(), limit.clone(), shutdown.clone()));
    }
    Ok(tasks)
}

async fn accept_loop(
    listener: TcpListener,
    implicit: bool,
    ctx: Arc<Ctx>,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    crate::listener::accept_loop("smtp", listener, limit, shutdown, |tcp, peer, sd| {
        connection(ctx.clone(), tcp, peer, implicit, sd)
    })
    .await
}

/// How driving a stream ended.
enum End {
    Closed,
    /// STARTTLS accepted: hand the plain stream over for the handshake.
    StartTls,
}

async fn connection(ctx: Arc<Ctx>, tcp: TcpStream, peer: SocketAddr, implicit: bool, shutdown: watch::Receiver<bool>) {
    let _open = SmtpSessionGuard::new();
    let acceptor = TlsAcceptor::from(ctx.tls.clone());
    let mut session = Session::new(ctx.limits(!implicit, &peer), implicit);
    if implicit {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(mut tls)) => {
                let greeting = session.greeting();
                if tls.write_all(greeting.as_bytes()).await.is_ok() {
                    drive(&ctx, &mut session, &mut tls, peer, shutdown).await;
                }
            }
            _ => tracing::debug!(%peer, "SMTP TLS handshake failed"),
        }
        return;
    }
    let mut tcp = tcp;
    if tcp.write_all(session.greeting().as_bytes()).await.is_err() {
        return;
    }
    if let End::StartTls = drive(&ctx, &mut session, &mut tcp, peer, shutdown.clone()).await {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(mut tls)) => {
                session.tls_started();
                drive(&ctx, &mut session, &mut tls, peer, shutdown).await;
            }
            _ => tracing::debug!(%peer, "SMTP STARTTLS handshake failed"),
        }
    }
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Ctx,
    session: &mut Session,
    stream: &mut S,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    let source = peer.to_string();
    loop {
        let mut out = String::new();
        while let Some(action) = session.step() {
            match action {
                Action::Reply(r) => out.push_str(&r),
                Action::Close(r) => {
                    out.push_str(&r);
                    let _ = stream.write_all(out.as_bytes()).await;
                    let _ = stream.shutdown().await;
                    return End::Closed;
                }
                Action::StartTls(r) => {
                    out.push_str(&r);
                    if stream.write_all(out.as_bytes()).await.is_err() {
                        return End::Closed;
                    }
                    return End::StartTls;
                }
                Action::Refused(r, reply) => {
                    let outcome = format!(
                        "refused by pecgate: {}; from <{}> to {} ({} bytes)",
                        r.reason,
                        r.from,
                        r.rcpts.iter().map(|x| format!("<{x}>")).collect::<Vec<_>>().join(" "),
                        r.size
                    );
                    let mut audit = Audit::user(&r.user, Some(source.clone()), "smtp", "send")
                        .message_id(r.message_id.clone())
                        .outcome(outcome);
                    audit.mailbox = r.mailbox.clone();
                    if let Err(e) = ctx.store.commit(audit, Change::None).await {
                        tracing::error!(error = %e, "cannot audit a refused submission");
                    }
                    counters::smtp_submissions().with_label_values(&["refused"]).inc();
                    out.push_str(&reply);
                }
                Action::Login { user, password } => {
                    let result = ctx.auth.login(&user, &password, peer.ip()).await;
                    let (actor, dn, outcome) = match &result {
                        Ok(u) => (u.name.clone(), u.dn.clone(), "ok".to_string()),
                        Err(crate::auth::AuthError::Rejected) => (user.clone(), None, "rejected".to_string()),
                        Err(e) => (user.clone(), None, format!("failed: {e}")),
                    };
                    let audit =
                        Audit::user(&actor, Some(source.clone()), "smtp", "login").identity(dn.as_deref()).outcome(outcome);
                    if let Err(e) = ctx.store.commit(audit, Change::None).await {
                        tracing::error!(error = %e, "cannot audit an SMTP login");
                    }
                    let reply = match result {
                        Err(crate::auth::AuthError::Unavailable(why)) => session.login_unavailable(&why),
                        r => session.login_result(r.ok()),
                    };
                    out.push_str(&reply);
                }
                Action::Relay(sub) => {
                    // Write what is pending first: the relay can take a while.
                    if !out.is_empty() && stream.write_all(std::mem::take(&mut out).as_bytes()).await.is_err() {
                        return End::Closed;
                    }
                    let mb = ctx.mailboxes.get(&sub.mailbox);
                    let sending = mb.map(|m| m.sending).unwrap_or_default();
                    let counted = ctx.limiter.try_acquire_shared(&ctx.store, &sub.mailbox, &sending).await;
                    let refused = match counted {
                        Ok(Ok(())) => None,
                        Ok(Err(w)) => Some(w.describe(&sub.mailbox)),
                        Err(e) => {
                            tracing::warn!(mailbox = %sub.mailbox, error = %e, "cannot count the mailbox's sends");
                            Some(format!("the sends of mailbox {} cannot be counted now ({e}): try again later", sub.mailbox))
                        }
                    };
                    if let Some(reason) = refused {
                        tracing::info!(user = %sub.user, mailbox = %sub.mailbox, %reason, "SMTP submission deferred");
                        let audit = Audit::user(&sub.user, Some(source.clone()), "smtp", "send")
                            .mailbox(&sub.mailbox)
                            .message_id(Some(sub.message_id.clone()))
                            .outcome(format!("deferred by pecgate: {reason}"));
                        if let Err(e) = ctx.store.commit(audit, Change::None).await {
                            tracing::error!(error = %e, "cannot audit a deferred submission");
                        }
                        counters::smtp_submissions().with_label_values(&["deferred"]).inc();
                        out.push_str(&session.deferred(&reason));
                        continue;
                    }
                    let outcome = match mb {
                        Some(mb) => relay::relay(mb, &sub, ctx.timeout).await,
                        None => super::session::RelayOutcome::Temporary("mailbox no longer configured".into()),
                    };
                    tracing::info!(user = %sub.user, mailbox = %sub.mailbox, message_id = %sub.message_id, outcome = ?outcome, "SMTP submission");
                    let label = match &outcome {
                        super::session::RelayOutcome::Accepted(_) => "accepted",
                        super::session::RelayOutcome::Temporary(_) => "temporary",
                        super::session::RelayOutcome::Permanent { .. } => "rejected",
                    };
                    counters::smtp_submissions().with_label_values(&[label]).inc();
                    if let Err(e) = relay::record(&ctx.store, &sub, &source, &outcome).await {
                        tracing::error!(error = %e, message_id = %sub.message_id, "sent, but the archive/audit write failed");
                    }
                    out.push_str(&session.relay_result(&outcome));
                }
            }
        }
        if !out.is_empty() && stream.write_all(out.as_bytes()).await.is_err() {
            return End::Closed;
        }
        if session.pending() > MAX_PENDING {
            // Cannot happen with a bounded wire (lines and bodies are
            // consumed as they come), but never read more than we handle.
            return End::Closed;
        }
        let n = tokio::select! {
            r = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)) => match r {
                Ok(Ok(n)) if n > 0 => n,
                Ok(_) => return End::Closed,
                Err(_) => {
                    let _ = stream.write_all(b"421 4.4.2 Idle too long, closing\r\n").await;
                    return End::Closed;
                }
            },
            _ = shutdown.changed() => {
                let _ = stream.write_all(b"421 4.3.2 Service shutting down\r\n").await;
                return End::Closed;
            }
        };
        session.feed(&buf[..n]);
    }
}
