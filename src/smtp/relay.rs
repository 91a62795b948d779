//! The effects of a submission: relay through the mailbox's provider
//! synchronously (no queue: the client gets 250 only after the provider
//! accepted, so a message is never "sent" in the client's eyes but stuck in
//! the gateway), then archive the exact bytes in the mailbox's `Sent` with
//! the data reconciliation needs, and audit the attempt whatever happened.

use std::time::Duration;

use chrono::Utc;
use mail_send::smtp::message::Message;
use mail_send::SmtpClientBuilder;

use super::session::{RelayOutcome, Submission};
use crate::config::{MailboxConfig, TlsMode};
use crate::pec::meta::{PecMeta, SentInfo};
use crate::store::{Audit, Change, Store};

/// Send `sub` through the provider of `mb`.
pub async fn relay(mb: &MailboxConfig, sub: &Submission, timeout: Duration) -> RelayOutcome {
    let password = match mb.read_password() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(mailbox = %mb.alias, error = %e, "cannot read the provider password");
            return RelayOutcome::Temporary("the gateway cannot read this mailbox's provider password".into());
        }
    };
    let Some(ep) = &mb.smtp else {
        return RelayOutcome::Permanent { code: 550, text: format!("mailbox {} has no provider SMTP endpoint configured", mb.alias) };
    };
    let tls = match crate::tls::client_config(mb.ca_file.as_deref()) {
        Ok(t) => t,
        Err(e) => return RelayOutcome::Temporary(format!("TLS trust for the provider: {e}")),
    };
    let builder = SmtpClientBuilder::new_with_tls_connector(ep.host.clone(), ep.port, tokio_rustls::TlsConnector::from(tls))
        .implicit_tls(ep.tls == TlsMode::Implicit)
        .credentials((mb.username.clone(), password))
        .helo_host("pecgate")
        .timeout(timeout);
    // mail-send always ends DATA with CRLF.CRLF, adding a line break of its
    // own: hand it the body without its final CRLF so the provider receives
    // (and certifies) exactly the bytes we archive.
    let body = sub.data.strip_suffix(b"\r\n").unwrap_or(&sub.data);
    let message = Message::new(sub.from.as_str(), sub.rcpts.iter().map(String::as_str), body);
    let result = tokio::time::timeout(timeout + Duration::from_secs(5), async {
        match ep.tls {
            TlsMode::None => match builder.connect_plain().await {
                Ok(mut c) => {
                    let r = c.send(message).await;
                    let _ = c.quit().await;
                    r
                }
                Err(e) => Err(e),
            },
            _ => match builder.connect().await {
                Ok(mut c) => {
                    let r = c.send(message).await;
                    let _ = c.quit().await;
                    r
                }
                Err(e) => Err(e),
            },
        }
    })
    .await;
    match result {
        Err(_) => RelayOutcome::Temporary("the provider did not answer in time".into()),
        Ok(Ok(resp)) => RelayOutcome::Accepted(format!("{} {}", resp.code, resp.message)),
        Ok(Err(e)) => classify_error(e),
    }
}

fn classify_error(e: mail_send::Error) -> RelayOutcome {
    match e {
        mail_send::Error::UnexpectedReply(r) if (500..600).contains(&r.code) => {
            RelayOutcome::Permanent { code: r.code, text: r.message }
        }
        mail_send::Error::UnexpectedReply(r) => RelayOutcome::Temporary(format!("{} {}", r.code, r.message)),
        // A refused provider login is the gateway's configuration problem,
        // not the message's: temporary, so nothing is lost while it is fixed.
        mail_send::Error::AuthenticationFailed(r) => {
            tracing::error!(code = r.code, "the provider refused the mailbox's SMTP credentials");
            RelayOutcome::Temporary("the provider refused the gateway's login for this mailbox".into())
        }
        other => RelayOutcome::Temporary(other.to_string()),
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
        let now = Utc::now();
        let meta = PecMeta {
            classification: crate::pec::classify(&sub.data),
            signature: None,
            sent: Some(SentInfo { key: sub.message_id.clone(), recipients: sub.rcpts.clone(), at: now }),
        };
        let pec = serde_json::to_value(meta).map_err(|e| e.to_string())?;
        let archive = Audit::user(&sub.user, Some(source.to_string()), "smtp", "archive-sent")
            .mailbox(&sub.mailbox)
            .folder("Sent")
            .message_id(Some(sub.message_id.clone()));
        entries.push((
            archive,
            Change::Archive {
                mailbox: sub.mailbox.clone(),
                folder: "Sent".into(),
                blob,
                internal_date: now,
                flags: Vec::new(),
                provider: None,
                pec: Some(pec),
                handling: None,
            },
        ));
    }
    store.commit_batch(entries).await.map(|_| ()).map_err(|e| e.to_string())
}
