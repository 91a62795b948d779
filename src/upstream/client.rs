//! A small IMAP client for talking to PEC providers, on imap-next.
//!
//! imap-next does the wire format (imap-codec) and the literal/IDLE flows;
//! this adds connection setup (implicit TLS, STARTTLS, or plain on
//! loopback), tags, per-step timeouts, and "run a command, collect its
//! untagged data, fail on NO/BAD".

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use imap_next::client::{Client, Event, Options};
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::TagGenerator;
use imap_next::imap_types::response::{Code, Data, Status, StatusKind};
use imap_next::stream::{self, Stream};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, TlsStream};

use crate::config::TlsMode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS with {host}: {message}")]
    Tls { host: String, message: String },
    #[error("timed out waiting for the provider ({0})")]
    Timeout(&'static str),
    #[error("connection closed by the provider")]
    Closed,
    #[error("IMAP protocol error: {0}")]
    Protocol(String),
    /// The provider answered NO or BAD.
    #[error("provider refused {command}: {text}")]
    Refused { command: &'static str, text: String },
    #[error("login refused by the provider: {0}")]
    LoginRefused(String),
}

impl<E: std::fmt::Display> From<stream::Error<E>> for ClientError {
    fn from(e: stream::Error<E>) -> Self {
        match e {
            stream::Error::Closed => ClientError::Closed,
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

pub struct ImapClient {
    stream: Stream,
    client: Client,
    tags: TagGenerator,
    /// Capabilities, upper case.
    pub caps: HashSet<String>,
    /// Longest wait for any single step (a response, a fetched message).
    pub timeout: Duration,
}

fn client_options(discard_greeting: bool) -> Options {
    let mut o = Options::default();
    // Providers are not all strict about CRLF.
    o.crlf_relaxed = true;
    // HYPOTHESIS: PEC messages are at most ~100 MB (providers' limits are
    // 30–100 MB); a FETCH response carrying one must fit.
    o.max_response_size = 150 * 1024 * 1024;
    o.discard_greeting = discard_greeting;
    o
}

async fn timed<T>(
    d: Duration,
    what: &'static str,
    f: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(d, f).await.map_err(|_| ClientError::Timeout(what))?
}

impl ImapClient {
    /// Connect and read the greeting (and, for STARTTLS, upgrade).
    pub async fn connect(
        host: &str,
        port: u16,
        mode: TlsMode,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<ImapClient, ClientError> {
        let addr = format!("{host}:{port}");
        let tcp = timed(timeout, "connect", async {
            TcpStream::connect((host, port)).await.map_err(|source| ClientError::Connect { addr: addr.clone(), source })
        })
        .await?;
        let _ = tcp.set_nodelay(true);
        let handshake = |tcp: TcpStream| {
            let tls = tls.clone();
            async move {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| ClientError::Tls { host: host.into(), message: e.to_string() })?;
                let s = timed(timeout, "TLS handshake", async {
                    TlsConnector::from(tls)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| ClientError::Tls { host: host.into(), message: e.to_string() })
                })
                .await?;
                Ok::<_, ClientError>(Stream::tls(TlsStream::Client(s)))
            }
        };
        let stream = match mode {
            TlsMode::Implicit => handshake(tcp).await?,
            TlsMode::None | TlsMode::Starttls => Stream::insecure(tcp),
        };
        let mut c = ImapClient {
            stream,
            client: Client::new(client_options(false)),
            tags: TagGenerator::new(),
            caps: HashSet::new(),
            timeout,
        };
        c.greeting().await?;
        if mode == TlsMode::Starttls {
            c.run("STARTTLS", CommandBody::StartTLS).await?;
            let tcp: TcpStream = c.stream.into();
            c.stream = handshake(tcp).await?;
            c.client = Client::new(client_options(true));
            c.caps.clear();
        }
        Ok(c)
    }

    async fn greeting(&mut self) -> Result<(), ClientError> {
        let t = self.timeout;
        let ev = timed(t, "greeting", async { Ok(self.stream.next(&mut self.client).await?) }).await?;
        match ev {
            Event::GreetingReceived { greeting } => {
                if let Some(Code::Capability(caps)) = &greeting.code {
                    self.caps = caps.as_ref().iter().map(|c| c.to_string().to_ascii_uppercase()).collect();
                }
                Ok(())
            }
            other => Err(ClientError::Protocol(format!("expected a greeting, got {other:?}"))),
        }
    }

    pub fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    /// Send one command and collect the untagged data until its tagged
    /// status. NO/BAD becomes [`ClientError::Refused`].
    pub async fn run(&mut self, name: &'static str, body: CommandBody<'static>) -> Result<Vec<Data<'static>>, ClientError> {
        Ok(self.run_codes(name, body).await?.0)
    }

    /// Like [`run`](Self::run), also returning the response codes of
    /// untagged status responses (`* OK [UIDVALIDITY 42]`).
    pub async fn run_codes(
        &mut self,
        name: &'static str,
        body: CommandBody<'static>,
    ) -> Result<(Vec<Data<'static>>, Vec<Code<'static>>), ClientError> {
        let tag = self.tags.generate();
        self.client.enqueue_command(Command { tag: tag.clone(), body });
        let mut data = Vec::new();
        let mut codes = Vec::new();
        loop {
            let t = self.timeout;
            let ev = timed(t, name, async { Ok(self.stream.next(&mut self.client).await?) }).await?;
            match ev {
                Event::DataReceived { data: d } => data.push(d),
                Event::StatusReceived { status: Status::Untagged(body) } => codes.extend(body.code),
                Event::StatusReceived { status: Status::Tagged(tagged) } if tagged.tag == tag => {
                    return match tagged.body.kind {
                        StatusKind::Ok => Ok((data, codes)),
                        _ => Err(ClientError::Refused { command: name, text: tagged.body.text.to_string() }),
                    };
                }
                Event::StatusReceived { status: Status::Bye(_) } => return Err(ClientError::Closed),
                Event::CommandRejected { status, .. } => {
                    return Err(ClientError::Refused { command: name, text: format!("{status:?}") })
                }
                _ => {}
            }
        }
    }

    pub async fn capability(&mut self) -> Result<(), ClientError> {
        let data = self.run("CAPABILITY", CommandBody::Capability).await?;
        for d in data {
            if let Data::Capability(caps) = d {
                self.caps = caps.as_ref().iter().map(|c| c.to_string().to_ascii_uppercase()).collect();
            }
        }
        Ok(())
    }

    /// LOGIN; the password never reaches a log (imap-types keeps it in a
    /// `Secret`).
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        let body = CommandBody::login(user.to_string(), password.to_string())
            .map_err(|_| ClientError::Protocol("user name or password cannot be sent over IMAP".into()))?;
        match self.run("LOGIN", body).await {
            Err(ClientError::Refused { text, .. }) => Err(ClientError::LoginRefused(text)),
            r => r.map(|_| ()),
        }
    }

    /// IDLE until the server reports something, `max` passes, or `stop`
    /// completes. Returns true if the server reported a change.
    pub async fn idle(&mut self, max: Duration, stop: impl Future<Output = ()>) -> Result<bool, ClientError> {
        let tag = self.tags.generate();
        self.client.enqueue_command(Command { tag: tag.clone(), body: CommandBody::Idle });
        // Wait for the continuation.
        loop {
            let t = self.timeout;
            match timed(t, "IDLE", async { Ok(self.stream.next(&mut self.client).await?) }).await? {
                Event::IdleAccepted { .. } => break,
                Event::IdleRejected { status, .. } => {
                    return Err(ClientError::Refused { command: "IDLE", text: format!("{status:?}") })
                }
                Event::StatusReceived { status: Status::Bye(_) } => return Err(ClientError::Closed),
                _ => {}
            }
        }
        let mut changed = false;
        tokio::pin!(stop);
        let sleep = tokio::time::sleep(max);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                ev = self.stream.next(&mut self.client) => match ev? {
                    Event::DataReceived { data: Data::Exists(_) | Data::Expunge(_) | Data::Recent(_) | Data::Fetch { .. } } => {
                        changed = true;
                        break;
                    }
                    Event::StatusReceived { status: Status::Bye(_) } => return Err(ClientError::Closed),
                    _ => {}
                },
                _ = &mut sleep => break,
                _ = &mut stop => break,
            }
        }
        self.client.set_idle_done();
        loop {
            let t = self.timeout;
            match timed(t, "IDLE DONE", async { Ok(self.stream.next(&mut self.client).await?) }).await? {
                Event::StatusReceived { status: Status::Tagged(tagged) } if tagged.tag == tag => return Ok(changed),
                Event::StatusReceived { status: Status::Bye(_) } => return Err(ClientError::Closed),
                _ => {}
            }
        }
    }

    pub async fn logout(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.run("LOGOUT", CommandBody::Logout)).await;
    }
}
