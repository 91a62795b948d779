//! One submission session as a pure state machine: bytes in, [`Action`]s
//! out. The I/O driver ([`super::server`]) writes replies and performs the
//! three effects a session cannot do itself (TLS handshake, password check,
//! relay), then feeds their results back. Everything else (which commands
//! are allowed when, who may send from which address, limits) is decided
//! here, so it is tested without sockets.

use std::collections::HashMap;
use std::sync::Arc;

use smtp_proto::{Error as ProtoError, Request, AUTH_LOGIN, AUTH_PLAIN};

use super::wire::{Body, Line, Wire};
use crate::auth::{Right, User};
use crate::config::SendingLimits;

/// Settings a session needs.
#[derive(Debug, Clone)]
pub struct Limits {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Offer STARTTLS (a plain listener meant to be upgraded).
    pub starttls: bool,
    /// AUTH allowed without TLS (loopback peer and configured so).
    pub plaintext_ok: bool,
    /// `(alias, address)` of every PEC mailbox that can send.
    pub mailboxes: Arc<Vec<(String, String)>>,
    /// Mailboxes' sending limits by alias (absent: none). The rate limits
    /// are the driver's to apply ([`crate::sending::Limiter`]); recipients
    /// and size are checked here.
    pub sending: Arc<HashMap<String, SendingLimits>>,
}

/// A message ready to be relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub user: String,
    pub mailbox: String,
    pub from: String,
    pub rcpts: Vec<String>,
    /// Exactly the bytes to send (and archive).
    pub data: Vec<u8>,
    /// Normalised Message-ID of `data`.
    pub message_id: String,
}

/// A submission the gateway itself refused (permission, forged From): the
/// driver audits it, since every attempt to send must be on record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub user: String,
    pub mailbox: Option<String>,
    pub from: String,
    pub rcpts: Vec<String>,
    pub message_id: Option<String>,
    pub size: usize,
    pub reason: String,
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Reply(String),
    /// Write this reply, then perform the TLS handshake and call
    /// [`Session::tls_started`].
    StartTls(String),
    /// Check this password, then call [`Session::login_result`].
    Login { user: String, password: String },
    /// Relay, archive, audit; then call [`Session::relay_result`].
    Relay(Submission),
    /// Write this reply and close the connection.
    Close(String),
    /// Audit this refusal, then write the reply.
    Refused(Refusal, String),
}

/// How a relay attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayOutcome {
    Accepted(String),
    /// The provider could not be reached, timed out or answered 4xx.
    Temporary(String),
    /// The provider refused the message (5xx): its text.
    Permanent { code: u16, text: String },
}

enum AuthWait {
    Plain,
    LoginUser,
    LoginPass(String),
}

/// Errors tolerated before the connection is closed.
const MAX_ERRORS: u32 = 20;

pub struct Session {
    limits: Limits,
    wire: Wire,
    tls: bool,
    greeted: bool,
    user: Option<Arc<User>>,
    auth: Option<AuthWait>,
    mail: Option<(String, String)>,
    rcpts: Vec<String>,
    /// Waiting for the driver's result of Login or Relay.
    waiting: bool,
    errors: u32,
    closed: bool,
}

fn reply(s: impl Into<String>) -> Option<Action> {
    Some(Action::Reply(s.into()))
}

/// A client-supplied value as it may appear in a reply: at most `max`
/// characters, control characters replaced by `?`. A bare CR or LF inside a
/// header or command value would otherwise end the reply line early and let
/// the client's bytes pose as another reply line (found by the
/// `smtp_session` fuzz target: `From: a@b\rc` came back in the 550).
fn echo(s: &str, max: usize) -> String {
    s.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn b64(s: &str) -> Option<Vec<u8>> {
    openssl::base64::decode_block(s.trim()).ok()
}

impl Session {
    /// A new session; `tls` is true on implicit-TLS listeners.
    pub fn new(limits: Limits, tls: bool) -> Session {
        Session {
            limits,
            wire: Wire::default(),
            tls,
            greeted: false,
            user: None,
            auth: None,
            mail: None,
            rcpts: Vec::new(),
            waiting: false,
            errors: 0,
            closed: false,
        }
    }

    pub fn greeting(&self) -> String {
        format!("220 {} ESMTP pecgate PEC submission\r\n", self.limits.hostname)
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.name.as_str())
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.wire.push(bytes);
    }

    /// Bytes received and not yet consumed (the driver stops reading while
    /// this is large, so a pipelining client cannot grow it without bound).
    pub fn pending(&self) -> usize {
        self.wire.pending()
    }

    /// The next action, or `None` when more input (or a pending result) is
    /// needed.
    pub fn step(&mut self) -> Option<Action> {
        if self.waiting || self.closed {
            return None;
        }
        if self.wire.in_data() {
            return match self.wire.next_body()? {
                Body::BareLf => {
                    self.closed = true;
                    Some(Action::Close("521 5.5.2 Bare <LF> received in message: lines must end with <CR><LF>\r\n".into()))
                }
                Body::TooBig { size } => {
                    self.reset();
                    reply(format!(
                        "552 5.3.4 Message too big ({size} bytes; the limit is {} bytes)\r\n",
                        self.limits.max_message_size
                    ))
                }
                Body::Complete(data) => self.submit(data),
            };
        }
        let line = match self.wire.next_line()? {
            Line::TooLong => return self.error("500 5.5.6 Line too long\r\n"),
            Line::Command(l) => l,
        };
        if let Some(wait) = self.auth.take() {
            return self.auth_continue(wait, &line);
        }
        let mut with_crlf = line;
        with_crlf.extend_from_slice(b"\r\n");
        match Request::parse(&mut with_crlf.iter()) {
            Ok(req) => self.command(req),
            Err(e) => self.error(&match e {
                ProtoError::UnknownCommand => "500 5.5.2 Syntax error, command unrecognized\r\n".into(),
                ProtoError::InvalidSenderAddress => "501 5.1.7 Invalid sender address\r\n".into(),
                ProtoError::InvalidRecipientAddress => "501 5.1.3 Invalid recipient address\r\n".into(),
                ProtoError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}\r\n"),
                ProtoError::InvalidParameter { param } => format!("501 5.5.4 Invalid parameter {param}\r\n"),
                ProtoError::UnsupportedParameter { param } => {
                    format!("555 5.5.4 Unsupported parameter {}\r\n", echo(&param, 40))
                }
                _ => "500 5.5.2 Syntax error\r\n".into(),
            }),
        }
    }

    fn error(&mut self, text: &str) -> Option<Action> {
        self.errors += 1;
        if self.errors > MAX_ERRORS {
            self.closed = true;
            return Some(Action::Close("421 4.7.0 Too many errors, closing the connection\r\n".into()));
        }
        reply(text)
    }

    fn reset(&mut self) {
        self.mail = None;
        self.rcpts.clear();
    }

    fn may_auth(&self) -> bool {
        self.tls || self.limits.plaintext_ok
    }

    fn ehlo(&self, host: &str) -> String {
        let mut caps = vec![
            format!("{} Hello {}", self.limits.hostname, echo(host, 64)),
            format!("SIZE {}", self.limits.max_message_size),
            "8BITMIME".into(),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.limits.starttls && !self.tls {
            caps.push("STARTTLS".into());
        }
        if self.may_auth() {
            caps.push("AUTH PLAIN LOGIN".into());
        }
        let n = caps.len();
        caps.iter()
            .enumerate()
            .map(|(i, c)| format!("250{}{c}\r\n", if i + 1 == n { ' ' } else { '-' }))
            .collect()
    }

    fn command(&mut self, req: Request<String>) -> Option<Action> {
        crate::counters::commands().with_label_values(&["smtp", command_name(&req)]).inc();
        match req {
            Request::Ehlo { host } | Request::Lhlo { host } => {
                self.greeted = true;
                self.reset();
                reply(self.ehlo(&host))
            }
            Request::Helo { host } => {
                self.greeted = true;
                self.reset();
                reply(format!("250 {} Hello {}\r\n", self.limits.hostname, echo(&host, 64)))
            }
            Request::StartTls if self.tls => self.error("503 5.5.1 TLS already active\r\n"),
            Request::StartTls if !self.limits.starttls => self.error("502 5.5.1 STARTTLS not offered here\r\n"),
            Request::StartTls => {
                // Anything pipelined after STARTTLS was sent in clear: drop it.
                self.wire.clear();
                Some(Action::StartTls("220 2.0.0 Ready to start TLS\r\n".into()))
            }
            Request::Auth { .. } if !self.may_auth() => {
                self.error("538 5.7.11 Encryption required: use STARTTLS (or port 465) before AUTH\r\n")
            }
            Request::Auth { .. } if self.user.is_some() => self.error("503 5.5.1 Already authenticated\r\n"),
            Request::Auth { .. } if self.mail.is_some() => self.error("503 5.5.1 AUTH not allowed during a mail transaction\r\n"),
            Request::Auth { mechanism, initial_response } => {
                let ir = (!initial_response.is_empty()).then_some(initial_response);
                match mechanism {
                    AUTH_PLAIN => match ir {
                        Some(ir) if ir == "=" => self.auth_continue(AuthWait::Plain, b""),
                        Some(ir) => self.auth_continue(AuthWait::Plain, ir.as_bytes()),
                        None => {
                            self.auth = Some(AuthWait::Plain);
                            reply("334 \r\n")
                        }
                    },
                    AUTH_LOGIN => match ir {
                        Some(ir) => self.auth_continue(AuthWait::LoginUser, ir.as_bytes()),
                        None => {
                            self.auth = Some(AuthWait::LoginUser);
                            reply("334 VXNlcm5hbWU6\r\n")
                        }
                    },
                    _ => self.error("504 5.5.4 Unrecognized authentication mechanism (use PLAIN or LOGIN)\r\n"),
                }
            }
            Request::Mail { .. } if !self.greeted => self.error("503 5.5.1 Send EHLO first\r\n"),
            Request::Mail { .. } if self.user.is_none() => self.error("530 5.7.0 Authentication required\r\n"),
            Request::Mail { .. } if self.mail.is_some() => self.error("503 5.5.1 Sender already specified\r\n"),
            Request::Mail { from } => self.mail_from(&from.address, from.size),
            Request::Rcpt { .. } if self.mail.is_none() => self.error("503 5.5.1 Need MAIL before RCPT\r\n"),
            Request::Rcpt { to } => {
                if !to.address.contains('@') {
                    return self.error("501 5.1.3 Recipient must be a full e-mail address\r\n");
                }
                if self.rcpts.len() >= self.limits.max_recipients {
                    return reply(format!("452 4.5.3 Too many recipients (at most {} per message)\r\n", self.limits.max_recipients));
                }
                if let Some((alias, _)) = &self.mail {
                    let l = self.limits.sending.get(alias).copied().unwrap_or_default();
                    if let Err(r) = crate::sending::check_message(alias, &l, 0, self.rcpts.len() + 1) {
                        return reply(r);
                    }
                }
                self.rcpts.push(to.address);
                reply("250 2.1.5 Recipient ok\r\n")
            }
            Request::Data if self.mail.is_none() => self.error("503 5.5.1 Need MAIL before DATA\r\n"),
            Request::Data if self.rcpts.is_empty() => self.error("554 5.5.1 No valid recipients\r\n"),
            Request::Data => {
                self.wire.start_data(self.limits.max_message_size);
                reply("354 End data with <CR><LF>.<CR><LF>\r\n")
            }
            Request::Bdat { .. } => self.error("502 5.5.1 CHUNKING not offered: use DATA\r\n"),
            Request::Rset => {
                self.reset();
                reply("250 2.0.0 Ok\r\n")
            }
            Request::Noop { .. } => reply("250 2.0.0 Ok\r\n"),
            Request::Vrfy { .. } => reply("252 2.5.0 Cannot verify; send and see\r\n"),
            Request::Help { .. } => reply("214 2.0.0 See https://www.rfc-editor.org/rfc/rfc6409\r\n"),
            Request::Quit => {
                self.closed = true;
                Some(Action::Close("221 2.0.0 Bye\r\n".into()))
            }
            Request::Expn { .. } | Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.error("502 5.5.1 Command not implemented\r\n")
            }
        }
    }

    fn mail_from(&mut self, address: &str, size: usize) -> Option<Action> {
        let Some(user) = self.user.clone() else { return self.error("530 5.7.0 Authentication required\r\n") };
        let found = self.limits.mailboxes.iter().find(|(_, a)| a.eq_ignore_ascii_case(address)).cloned();
        let refuse = |s: &mut Session, mailbox: Option<String>, text: String| {
            s.error(&text).map(|a| match a {
                Action::Reply(r) => Action::Refused(
                    Refusal {
                        user: user.name.clone(),
                        mailbox,
                        from: address.to_string(),
                        rcpts: Vec::new(),
                        message_id: None,
                        size,
                        reason: text.trim_end().to_string(),
                    },
                    r,
                ),
                other => other,
            })
        };
        let Some((alias, addr)) = found else {
            let text = format!("550 5.7.1 <{}> is not a PEC mailbox of this gateway\r\n", echo(address, 256));
            return refuse(self, None, text);
        };
        if !user.may(&alias, Right::Send) {
            let text = format!("550 5.7.1 User {} may not send from <{addr}>\r\n", user.name);
            return refuse(self, Some(alias), text);
        }
        if size > self.limits.max_message_size {
            return reply(format!("552 5.3.4 Message size exceeds the limit of {} bytes\r\n", self.limits.max_message_size));
        }
        let l = self.limits.sending.get(&alias).copied().unwrap_or_default();
        if let Err(r) = crate::sending::check_message(&alias, &l, size, 1) {
            return reply(r);
        }
        self.mail = Some((alias, addr));
        reply("250 2.1.0 Sender ok\r\n")
    }

    fn auth_continue(&mut self, wait: AuthWait, line: &[u8]) -> Option<Action> {
        if line == b"*" {
            return self.error("501 5.0.0 Authentication cancelled\r\n");
        }
        let Some(decoded) = std::str::from_utf8(line).ok().and_then(b64) else {
            return self.error("501 5.5.2 Cannot decode the base64 response\r\n");
        };
        match wait {
            AuthWait::Plain => {
                let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
                match parts.as_slice() {
                    [authz, u, p] if authz.is_empty() || authz == u => {
                        self.login(String::from_utf8_lossy(u).into_owned(), String::from_utf8_lossy(p).into_owned())
                    }
                    _ => self.error("501 5.5.2 Malformed PLAIN response\r\n"),
                }
            }
            AuthWait::LoginUser => {
                self.auth = Some(AuthWait::LoginPass(String::from_utf8_lossy(&decoded).into_owned()));
                reply("334 UGFzc3dvcmQ6\r\n")
            }
            AuthWait::LoginPass(u) => self.login(u, String::from_utf8_lossy(&decoded).into_owned()),
        }
    }

    fn login(&mut self, user: String, password: String) -> Option<Action> {
        self.waiting = true;
        Some(Action::Login { user, password })
    }

    /// The password check ended.
    pub fn login_result(&mut self, user: Option<Arc<User>>) -> String {
        self.waiting = false;
        match user {
            Some(u) => {
                self.user = Some(u);
                "235 2.7.0 Authentication successful\r\n".into()
            }
            None => {
                self.errors += 1;
                "535 5.7.8 Authentication credentials invalid\r\n".into()
            }
        }
    }

    /// The password could not be checked (the directory is unavailable):
    /// a temporary failure naming the cause (RFC 4954), never "invalid
    /// credentials", and not counted as a client error.
    pub fn login_unavailable(&mut self, why: &str) -> String {
        self.waiting = false;
        let why: String = why.chars().filter(|c| !c.is_control()).take(200).collect();
        format!("454 4.7.0 Temporary authentication failure: directory unavailable: {why}\r\n")
    }

    /// The TLS handshake succeeded: the client must greet again.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.greeted = false;
        self.reset();
        self.wire.clear();
    }

    fn submit(&mut self, mut data: Vec<u8>) -> Option<Action> {
        let (Some((alias, addr)), Some(user)) = (self.mail.clone(), self.user.clone()) else {
            self.reset();
            return self.error("503 5.5.1 No transaction\r\n");
        };
        let rcpts = std::mem::take(&mut self.rcpts);
        self.mail = None;
        let l = self.limits.sending.get(&alias).copied().unwrap_or_default();
        if let Err(r) = crate::sending::check_message(&alias, &l, data.len(), rcpts.len()) {
            return reply(r);
        }
        let Some(headers) = mail_parser::MessageParser::default().parse_headers(&data) else {
            return self.error("554 5.6.0 The message has no readable header\r\n");
        };
        let froms: Vec<String> = headers
            .from()
            .map(|a| a.iter().filter_map(|a| a.address()).map(str::to_string).collect())
            .unwrap_or_default();
        if froms.len() != 1 || !froms[0].eq_ignore_ascii_case(&addr) {
            let text = format!(
                "550 5.7.1 Header From ({}) must be exactly the sender <{addr}>\r\n",
                if froms.is_empty() {
                    "missing".to_string()
                } else {
                    froms.iter().take(8).map(|f| echo(f, 256)).collect::<Vec<_>>().join(", ")
                }
            );
            let refusal = Refusal {
                user: user.name.clone(),
                mailbox: Some(alias),
                from: addr,
                rcpts,
                message_id: headers.message_id().and_then(crate::pec::normalize_message_id),
                size: data.len(),
                reason: text.trim_end().to_string(),
            };
            return self.error(&text).map(|a| match a {
                Action::Reply(r) => Action::Refused(refusal, r),
                other => other,
            });
        }
        // Receipts are matched to the sent copy by Message-ID: make sure
        // there is one (the bytes archived are the bytes sent, so adding it
        // here keeps the evidence consistent).
        let message_id = match headers.message_id().and_then(crate::pec::normalize_message_id) {
            Some(id) => id,
            None => {
                let id = format!("<{}.{}@{}>", chrono::Utc::now().format("%Y%m%d%H%M%S%f"), rand::random::<u32>(), self.limits.hostname);
                let mut with = format!("Message-ID: {id}\r\n").into_bytes();
                with.append(&mut data);
                data = with;
                id
            }
        };
        self.waiting = true;
        Some(Action::Relay(Submission { user: user.name.clone(), mailbox: alias, from: addr, rcpts, data, message_id }))
    }

    /// The message was not relayed because the mailbox's sending limit is
    /// reached: `reason` says until when.
    pub fn deferred(&mut self, reason: &str) -> String {
        self.waiting = false;
        format!("451 4.7.0 {}\r\n", reason.replace(['\r', '\n'], " "))
    }

    /// The relay ended.
    pub fn relay_result(&mut self, outcome: &RelayOutcome) -> String {
        self.waiting = false;
        let clean = |s: &str| s.replace(['\r', '\n'], " ").chars().take(400).collect::<String>();
        match outcome {
            RelayOutcome::Accepted(t) => format!("250 2.0.0 Accepted by the PEC provider: {}\r\n", clean(t)),
            RelayOutcome::Temporary(t) => format!("451 4.4.1 PEC provider unavailable, try again later: {}\r\n", clean(t)),
            RelayOutcome::Permanent { code, text } => {
                let code = if (500..600).contains(code) { *code } else { 554 };
                format!("{code} 5.0.0 Refused by the PEC provider: {}\r\n", clean(text))
            }
        }
    }
}

/// The command's verb, for `pecgate_client_commands_total{protocol="smtp"}`.
fn command_name(req: &Request<String>) -> &'static str {
    match req {
        Request::Ehlo { .. } => "EHLO",
        Request::Lhlo { .. } => "LHLO",
        Request::Helo { .. } => "HELO",
        Request::StartTls => "STARTTLS",
        Request::Auth { .. } => "AUTH",
        Request::Mail { .. } => "MAIL",
        Request::Rcpt { .. } => "RCPT",
        Request::Data => "DATA",
        Request::Bdat { .. } => "BDAT",
        Request::Rset => "RSET",
        Request::Noop { .. } => "NOOP",
        Request::Vrfy { .. } => "VRFY",
        Request::Help { .. } => "HELP",
        Request::Quit => "QUIT",
        Request::Expn { .. } => "EXPN",
        Request::Etrn { .. } => "ETRN",
        Request::Atrn { .. } => "ATRN",
        Request::Burl { .. } => "BURL",
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
