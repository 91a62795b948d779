//! Putting a message into a simulated mailbox: IMAP LOGIN + APPEND to the
//! mailbox's real IMAP server (Dovecot in tests and in the demo), so pecgate
//! syncs it exactly as it would from a real provider.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::SimMailbox;

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("IMAP {host}:{port}: {source}")]
    Io { host: String, port: u16, source: std::io::Error },
    #[error("IMAP {host}:{port}: {what}: {reply}")]
    Refused { host: String, port: u16, what: &'static str, reply: String },
    #[error("IMAP {host}:{port}: no answer within {0:?}", TIMEOUT)]
    Timeout { host: String, port: u16 },
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// An IMAP quoted string (the credentials are configuration, not input,
/// but quote them properly anyway).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// APPEND `msg` to the INBOX of `mb`.
pub async fn append(mb: &SimMailbox, msg: &[u8]) -> Result<(), DeliverError> {
    let (host, port) = (mb.imap_host.clone(), mb.imap_port);
    match tokio::time::timeout(TIMEOUT, append_inner(mb, msg)).await {
        Ok(r) => r,
        Err(_) => Err(DeliverError::Timeout { host, port }),
    }
}

/// Messages in the INBOX of `mb` (IMAP STATUS).
pub async fn inbox_count(mb: &SimMailbox) -> Result<u64, DeliverError> {
    let (host, port) = (mb.imap_host.clone(), mb.imap_port);
    match tokio::time::timeout(TIMEOUT, session(mb, None)).await {
        Ok(r) => r.map(|n| n.unwrap_or(0)),
        Err(_) => Err(DeliverError::Timeout { host, port }),
    }
}

async fn append_inner(mb: &SimMailbox, msg: &[u8]) -> Result<(), DeliverError> {
    session(mb, Some(msg)).await.map(|_| ())
}

/// LOGIN, then APPEND `msg` to INBOX, or (without one) count INBOX's
/// messages with STATUS.
async fn session(mb: &SimMailbox, msg: Option<&[u8]>) -> Result<Option<u64>, DeliverError> {
    let (host, port) = (mb.imap_host.clone(), mb.imap_port);
    let io = |source| DeliverError::Io { host: host.clone(), port, source };
    let tcp = TcpStream::connect((mb.imap_host.as_str(), mb.imap_port)).await.map_err(io)?;
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    // Read lines until one starts with `prefix`; return it.
    async fn until(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, line: &mut String, prefix: &str) -> std::io::Result<String> {
        loop {
            line.clear();
            if r.read_line(line).await? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            if line.starts_with(prefix) {
                return Ok(line.trim_end().to_string());
            }
        }
    }
    until(&mut r, &mut line, "* ").await.map_err(io)?;
    let login = format!("a LOGIN {} {}\r\n", quoted(&mb.imap_user), quoted(&mb.imap_password));
    w.write_all(login.as_bytes()).await.map_err(io)?;
    let reply = until(&mut r, &mut line, "a ").await.map_err(io)?;
    let refused = |what, reply: String| DeliverError::Refused { host: host.clone(), port, what, reply };
    if !reply.starts_with("a OK") {
        return Err(refused("LOGIN", reply));
    }
    let Some(msg) = msg else {
        w.write_all(b"s STATUS INBOX (MESSAGES)\r\n").await.map_err(io)?;
        let data = until(&mut r, &mut line, "* STATUS").await.map_err(io)?;
        let n = data
            .rsplit("MESSAGES")
            .next()
            .and_then(|t| t.trim().trim_end_matches(')').trim().parse().ok())
            .ok_or_else(|| refused("STATUS", data.clone()))?;
        let _ = w.write_all(b"c LOGOUT\r\n").await;
        return Ok(Some(n));
    };
    w.write_all(format!("b APPEND INBOX {{{}}}\r\n", msg.len()).as_bytes()).await.map_err(io)?;
    let cont = until(&mut r, &mut line, "").await.map_err(io)?;
    if !cont.starts_with('+') {
        return Err(refused("APPEND", cont));
    }
    w.write_all(msg).await.map_err(io)?;
    w.write_all(b"\r\n").await.map_err(io)?;
    let reply = until(&mut r, &mut line, "b ").await.map_err(io)?;
    if !reply.starts_with("b OK") {
        return Err(refused("APPEND", reply));
    }
    let _ = w.write_all(b"c LOGOUT\r\n").await;
    Ok(None)
}
