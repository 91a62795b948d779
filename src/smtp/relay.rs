//! The effects of a submission: relay through the mailbox's provider
//! synchronously (no queue: the client gets 250 only after the provider
//! accepted, so a message is never "sent" in the client's eyes but stuck in
//! the gateway), then archive the exact bytes in the mailbox's `Sent` with
//! the data reconciliation needs, and audit the attempt whatever happened.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use mail_send::SmtpClientBuilder;

use super::session::{RelayOutcome, Submission};
use crate::config::{MailboxConfig, TlsMode};
use crate::pec::meta::{PecMeta, SentInfo};
use crate::store::{Audit, Change, Store};

/// How long a provider TLS configuration is reused. Building one reads and
/// parses every system root certificate (milliseconds of CPU, which was
/// most of the CPU a relayed submission cost); reusing it for a minute
/// still picks up a changed `ca_file` or system bundle soon.
const TLS_CONFIG_TTL: Duration = Duration::from_secs(60);

type TlsCache = Mutex<HashMap<Option<PathBuf>, (Instant, Arc<rustls::ClientConfig>)>>;

/// The client TLS configuration trusting the system roots plus `ca_file`.
fn provider_tls(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, crate::tls::TlsError> {
    static CACHE: OnceLock<TlsCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = ca_file.map(|p| p.to_path_buf());
    if let Some((at, cfg)) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        if at.elapsed() < TLS_CONFIG_TTL {
            return Ok(cfg);
        }
    }
    let cfg = crate::tls::client_config(ca_file)?;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, (Instant::now(), cfg.clone()));
    }
    Ok(cfg)
}

/// How one provider dialogue ended, as far as the gateway can know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The provider answered 250 to the message: its reply.
    Accepted(String),
    /// It refused the message for good (5xx).
    Refused { code: u16, text: String },
    /// Nothing was handed over (no connection, login or TLS failed), or it
    /// answered 4xx (or over its rate limit): safe to try again.
    NotSent(String),
    /// The dialogue broke after it had started (connection lost, no
    /// answer in time): the provider may have taken the message. Only its
    /// receipts can tell.
    Uncertain(String),
}

/// One dialogue with the provider of `mb`: `body` from `from` to `rcpts`.
pub async fn send(mb: &MailboxConfig, from: &str, rcpts: &[String], body: &[u8], timeout: Duration) -> Sent {
    let password = match mb.read_password() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(mailbox = %mb.alias, error = %e, "cannot read the provider password");
            return Sent::NotSent("the gateway cannot read this mailbox's provider password".into());
        }
    };
    let Some(ep) = &mb.smtp else {
        return Sent::Refused {
            code: 550,
            text: format!("mailbox {} has no provider SMTP endpoint configured", mb.alias),
        };
    };
    let tls = match provider_tls(mb.ca_file.as_deref()) {
        Ok(t) => t,
        Err(e) => return Sent::NotSent(format!("TLS trust for the provider: {e}")),
    };
    let builder =
        SmtpClientBuilder::new_with_tls_connector(ep.host.clone(), ep.port, tokio_rustls::TlsConnector::from(tls))
            .implicit_tls(ep.tls == TlsMode::Implicit)
            .credentials((mb.username.clone(), password))
            .helo_host("pecgate")
            .timeout(timeout);
    // mail-send always ends DATA with CRLF.CRLF, adding a line break of its
    // own: hand it the body without its final CRLF so the provider receives
    // (and certifies) exactly the bytes we archive.
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    let limit = timeout + Duration::from_secs(5);
    // No Nagle: mail-send writes the final `.` of DATA as a small segment
    // of its own, which Nagle would hold until the provider's delayed ACK
    // (40 ms on Linux) on every message. QUIT is not waited for: the
    // provider's answer to DATA is all the client waits on.
    let result = match ep.tls {
        TlsMode::None => match tokio::time::timeout(limit, builder.connect_plain()).await {
            Err(_) => return Sent::NotSent("the provider did not answer in time".into()),
            Ok(Err(e)) => return not_sent(e),
            Ok(Ok(mut c)) => {
                let _ = c.stream.set_nodelay(true);
                let r = tokio::time::timeout(limit, transmit(&mut c, from, rcpts, body)).await;
                tokio::spawn(async move { c.quit().await });
                r
            }
        },
        _ => match tokio::time::timeout(limit, builder.connect()).await {
            Err(_) => return Sent::NotSent("the provider did not answer in time".into()),
            Ok(Err(e)) => return not_sent(e),
            Ok(Ok(mut c)) => {
                let _ = c.stream.get_ref().0.set_nodelay(true);
                let r = tokio::time::timeout(limit, transmit(&mut c, from, rcpts, body)).await;
                tokio::spawn(async move { c.quit().await });
                r
            }
        },
    };
    match result {
        Err(_) => Sent::Uncertain("the provider stopped answering during the dialogue".into()),
        Ok(Ok((code, text))) => Sent::Accepted(format!("{code} {text}")),
        Ok(Err(mail_send::Error::UnexpectedReply(r)))
            if (500..600).contains(&r.code) && !is_rate_limited(&r.message) =>
        {
            Sent::Refused { code: r.code, text: r.message }
        }
        Ok(Err(mail_send::Error::UnexpectedReply(r))) => Sent::NotSent(format!("{} {}", r.code, r.message)),
        Ok(Err(e)) => Sent::Uncertain(e.to_string()),
    }
}

/// MAIL FROM, RCPT TO and DATA for `body` (without its final CRLF), as
/// mail-send's `send` does, but with the body dot-stuffed by a search for
/// dots rather than mail-send's byte-at-a-time loop: that loop was 8 % of
/// the daemon's CPU while a campaign sent 275 KB notices.
async fn transmit<T>(
    c: &mut mail_send::SmtpClient<T>,
    from: &str,
    rcpts: &[String],
    body: &[u8],
) -> mail_send::Result<(u16, String)>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use mail_send::smtp::AssertReply;
    use tokio::io::AsyncWriteExt;
    let none = mail_send::smtp::message::Parameters::default();
    c.mail_from(from, &none).await?;
    for r in rcpts {
        c.rcpt_to(r, &none).await?;
    }
    c.cmd(b"DATA\r\n").await?.assert_code(354)?;
    c.stream.write_all(&dot_stuffed(body)).await?;
    c.stream.write_all(b"\r\n.\r\n").await?;
    c.stream.flush().await?;
    let r = c.read().await?.into_positive_completion()?;
    Ok((r.code, r.message))
}

/// `body` with a dot added before every dot that starts a line (RFC 5321
/// §4.5.2), a line starting after a CR or an LF as mail-send reckons it.
fn dot_stuffed(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let starts_line = |i: usize| i == 0 || matches!(body[i - 1], b'\n' | b'\r');
    crate::bytes::insert_before(body, memchr::memchr_iter(b'.', body).filter(|&i| starts_line(i)), b'.')
}

/// A failure to connect or log in: nothing was handed over.
fn not_sent(e: mail_send::Error) -> Sent {
    match e {
        // A refused provider login is the gateway's configuration problem,
        // not the message's: temporary, so nothing is lost while it is fixed.
        mail_send::Error::AuthenticationFailed(r) => {
            tracing::error!(code = r.code, "the provider refused the mailbox's SMTP credentials");
            Sent::NotSent("the provider refused the gateway's login for this mailbox".into())
        }
        other => Sent::NotSent(other.to_string()),
    }
}

/// Send `sub` through the provider of `mb` (a client's submission: it
/// retries whatever was not definitely accepted or refused).
pub async fn relay(mb: &MailboxConfig, sub: &Submission, timeout: Duration) -> RelayOutcome {
    match send(mb, &sub.from, &sub.rcpts, &sub.data, timeout).await {
        Sent::Accepted(r) => RelayOutcome::Accepted(r),
        Sent::Refused { code, text } => RelayOutcome::Permanent { code, text },
        Sent::NotSent(t) | Sent::Uncertain(t) => RelayOutcome::Temporary(t),
    }
}

/// Does a provider's refusal say the sender is over its rate limit?
pub fn is_rate_limited(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("too much traffic") || t.contains("class of service") || t.contains("rate limit")
}

/// Filing what the provider accepted in the mailbox's `Sent`, with what
/// reconciliation needs (its Message-ID, recipients, when).
pub fn sent_copy(
    mailbox: &str,
    blob: crate::store::BlobRef,
    data: &[u8],
    message_id: &str,
    rcpts: &[String],
) -> Change {
    let now = Utc::now();
    let meta = PecMeta {
        classification: crate::pec::classify(data),
        signature: None,
        sent: Some(SentInfo { key: message_id.to_string(), recipients: rcpts.to_vec(), at: now }),
    };
    Change::Archive {
        mailbox: mailbox.to_string(),
        folder: "Sent".into(),
        blob,
        internal_date: now,
        flags: Vec::new(),
        provider: None,
        pec: Some(meta.into()),
        handling: None,
    }
}

/// Audit the attempt and, when the provider accepted, archive the sent copy
/// into `Sent` so reconciliation starts. Returns an error text when the
/// archive could not be written (the message is sent anyway).
pub async fn record(store: &Store, sub: &Submission, source: &str, outcome: &RelayOutcome) -> Result<(), String> {
    let detail = format!(
        "from <{}> to {} ({} bytes)",
        sub.from,
        sub.rcpts.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(" "),
        sub.data.len()
    );
    let result = match outcome {
        RelayOutcome::Accepted(t) => format!("ok: provider accepted ({t}); {detail}"),
        RelayOutcome::Temporary(t) => format!("failed temporarily: {t}; {detail}"),
        RelayOutcome::Permanent { code, text } => format!("refused by the provider: {code} {text}; {detail}"),
    };
    let audit = Audit::user(&sub.user, Some(source.to_string()), "smtp", "send")
        .mailbox(&sub.mailbox)
        .message_id(Some(sub.message_id.clone()))
        .outcome(result);
    let mut entries = vec![(audit, Change::None)];
    if matches!(outcome, RelayOutcome::Accepted(_)) {
        let blob = store.put_blob(sub.data.clone()).await.map_err(|e| e.to_string())?;
        let archive = Audit::user(&sub.user, Some(source.to_string()), "smtp", "archive-sent")
            .mailbox(&sub.mailbox)
            .folder("Sent")
            .message_id(Some(sub.message_id.clone()));
        entries.push((archive, sent_copy(&sub.mailbox, blob, &sub.data, &sub.message_id, &sub.rcpts)));
    }
    store.commit_batch(entries).await.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::dot_stuffed;

    #[test]
    fn a_dot_that_starts_a_line_is_doubled() {
        assert_eq!(&*dot_stuffed(b"nessun punto qui"), b"nessun punto qui");
        assert_eq!(&*dot_stuffed(b"a.b\r\n.\r\n..x\r\nfine."), b"a.b\r\n..\r\n...x\r\nfine.");
        assert_eq!(&*dot_stuffed(b".inizio\r.cr\n.lf"), b"..inizio\r..cr\n..lf");
    }
}
