//! A small IMAP client for talking to PEC providers, on imap-codec.
//!
//! imap-codec encodes the commands and decodes the responses; this adds
//! connection setup (implicit TLS, STARTTLS, or plain on loopback), tags,
//! per-step timeouts, synchronizing literals and IDLE, and "run a command,
//! collect its untagged data, fail on NO/BAD". [`Framer`] cuts the byte
//! stream into whole responses.
//!
//! Why neither imap-next's `Stream` nor its `Client` (issue 14): `Stream`
//! reads the socket into a `BytesMut` that it empties after every read, so
//! each read gets the 64 bytes it reserved at first: 4.3 million
//! `recvfrom` calls for 276 MB, each inside a tracing span at INFO level.
//! Driving `Client` with large reads fixes that, but its `Fragmentizer`
//! then moves every byte through a `VecDeque` one at a time (3.5 ns a byte,
//! against 0.8 for decoding it): the largest cost of pulling 2 MB messages.
//! [`Conn`] reads up to [`READ_CHUNK`] at a time, the framer copies the
//! bytes once, and each whole response is decoded once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{LiteralMode, Tag, TagGenerator};
use imap_codec::imap_types::response::{Code, Data, Greeting, GreetingKind, Response, Status, StatusKind};
use imap_codec::imap_types::IntoStatic;
use imap_codec::{CommandCodec, GreetingCodec, ResponseCodec};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::frame::Framer;
use crate::config::TlsMode;

/// One read from the socket. A FETCH of a 2 MB message takes some 30
/// reads; the buffer lives as long as the connection (one per provider
/// mailbox).
const READ_CHUNK: usize = 64 * 1024;

/// HYPOTHESIS: PEC messages are at most ~100 MB (providers' limits are
/// 30–100 MB); a FETCH response carrying one must fit.
const MAX_RESPONSE: usize = 150 * 1024 * 1024;

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

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            // A TLS connection cut without close_notify: closed, as for TCP.
            io::ErrorKind::UnexpectedEof => ClientError::Closed,
            _ => ClientError::Protocol(e.to_string()),
        }
    }
}

/// What the client talks over.
enum Transport {
    Plain(TcpStream),
    /// rustls reads the socket at most 4 KiB at a time; the `BufReader`
    /// below it makes those [`READ_CHUNK`] reads.
    Tls(Box<TlsStream<BufReader<TcpStream>>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The socket: bytes out, whole responses in.
struct Conn {
    transport: Transport,
    /// Reused for every read; its bytes go to the framer at once.
    read_buf: Box<[u8]>,
    framer: Framer,
    /// Encoded commands not yet written.
    out: Vec<u8>,
    /// Written but maybe still buffered (TLS): flush before waiting.
    unflushed: bool,
    /// Messages of the current command's FETCH responses, by message
    /// number, taken out of their responses before decoding
    /// ([`frame::split_fetch_body`]): their `BODY[]` decodes empty.
    bodies: HashMap<u32, Vec<u8>>,
}

impl Conn {
    fn new(transport: Transport) -> Conn {
        Conn {
            transport,
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            framer: Framer::new(MAX_RESPONSE),
            out: Vec::new(),
            unflushed: false,
            bodies: HashMap::new(),
        }
    }

    /// Queue bytes to write; they go out while the next response is
    /// awaited.
    fn send(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// The length of the next whole response at the head of the framer.
    /// Cancel-safe (IDLE `select!`s on it): bytes read are given to the
    /// framer in the same poll that read them.
    async fn frame(&mut self) -> Result<usize, ClientError> {
        loop {
            if let Some(n) = self.framer.complete().map_err(|e| ClientError::Protocol(e.to_string()))? {
                return Ok(n);
            }
            let n = poll_fn(|cx| self.poll_pump(cx)).await?;
            self.framer.push(&self.read_buf[..n]);
        }
    }

    async fn greeting(&mut self) -> Result<Greeting<'static>, ClientError> {
        let n = self.frame().await?;
        let g =
            decode_whole(&GreetingCodec::default(), &self.framer.bytes()[..n], "greeting").map(IntoStatic::into_static);
        self.framer.consume(n);
        g
    }

    async fn response(&mut self) -> Result<Response<'static>, ClientError> {
        let n = self.frame().await?;
        let whole = &self.framer.bytes()[..n];
        let split = super::frame::split_fetch_body(whole);
        let bytes = split.as_ref().map_or(whole, |(small, _, _)| small.as_slice());
        let r = decode_whole(&ResponseCodec::default(), bytes, "response").map(IntoStatic::into_static);
        if let (Ok(_), Some((_, seq, body))) = (&r, split) {
            self.bodies.insert(seq, whole[body].to_vec());
        }
        self.framer.consume(n);
        r
    }

    /// Write what is pending and read at the same time (a provider that
    /// writes without reading must not deadlock against us); ready with the
    /// number of bytes read once something was read.
    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ClientError>> {
        let mut written = 0;
        while written < self.out.len() {
            match Pin::new(&mut self.transport).poll_write(cx, &self.out[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ClientError::Closed)),
                Poll::Ready(Ok(n)) => {
                    written += n;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => break,
            }
        }
        self.out.drain(..written);
        if self.out.is_empty() && self.unflushed {
            match Pin::new(&mut self.transport).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
        }
        let mut buf = ReadBuf::new(&mut self.read_buf);
        match Pin::new(&mut self.transport).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Err(ClientError::Closed)),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Decode `bytes`, a whole response as framed: anything imap-codec does not
/// take entirely is malformed. The error names the size, not the bytes
/// (they may be a message's).
fn decode_whole<'a, C: Decoder>(codec: &C, bytes: &'a [u8], what: &str) -> Result<C::Message<'a>, ClientError> {
    match codec.decode(bytes) {
        Ok(([], m)) => Ok(m),
        _ => Err(ClientError::Protocol(format!("malformed {what} ({} bytes)", bytes.len()))),
    }
}

pub struct ImapClient {
    conn: Conn,
    tags: TagGenerator,
    /// Capabilities, upper case.
    pub caps: HashSet<String>,
    /// Longest wait for any single step (a response, a fetched message).
    pub timeout: Duration,
}

async fn timed<T>(
    d: Duration,
    what: &'static str,
    f: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(d, f).await.map_err(|_| ClientError::Timeout(what))?
}

/// What is left of a command to send: a synchronizing literal waits for
/// the provider's continuation request.
struct Outgoing {
    fragments: VecDeque<Fragment>,
}

impl Outgoing {
    fn new(tag: Tag<'static>, body: CommandBody<'static>) -> Outgoing {
        Outgoing { fragments: CommandCodec::default().encode(&Command { tag, body }).collect() }
    }

    /// Queue everything up to the next synchronizing literal.
    fn send_ready(&mut self, conn: &mut Conn) {
        while let Some(f) = self.fragments.pop_front() {
            match f {
                Fragment::Line { data } | Fragment::Literal { data, mode: LiteralMode::NonSync } => conn.send(&data),
                Fragment::Literal { data, mode: LiteralMode::Sync } => {
                    self.fragments.push_front(Fragment::Literal { data, mode: LiteralMode::Sync });
                    return;
                }
            }
        }
    }

    /// The continuation request came: send the literal and what follows.
    fn continue_with(&mut self, conn: &mut Conn) {
        if let Some(Fragment::Literal { data, .. }) = self.fragments.pop_front() {
            conn.send(&data);
        }
        self.send_ready(conn);
    }

    fn waiting(&self) -> bool {
        !self.fragments.is_empty()
    }
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
                        .connect(name, BufReader::with_capacity(READ_CHUNK, tcp))
                        .await
                        .map_err(|e| ClientError::Tls { host: host.into(), message: e.to_string() })
                })
                .await?;
                Ok::<_, ClientError>(Transport::Tls(Box::new(s)))
            }
        };
        let transport = match mode {
            TlsMode::Implicit => handshake(tcp).await?,
            TlsMode::None | TlsMode::Starttls => Transport::Plain(tcp),
        };
        let mut c = ImapClient { conn: Conn::new(transport), tags: TagGenerator::new(), caps: HashSet::new(), timeout };
        c.greeting().await?;
        if mode == TlsMode::Starttls {
            c.run("STARTTLS", CommandBody::StartTLS).await?;
            // Whatever the provider sent after its OK to STARTTLS is dropped
            // with the old framer: nothing sent in clear may be taken as a
            // response over TLS.
            let Transport::Plain(tcp) = c.conn.transport else {
                return Err(ClientError::Protocol("STARTTLS over TLS".into()));
            };
            c.conn = Conn::new(handshake(tcp).await?);
            c.caps.clear();
        }
        Ok(c)
    }

    async fn greeting(&mut self) -> Result<(), ClientError> {
        let greeting = timed(self.timeout, "greeting", self.conn.greeting()).await?;
        if greeting.kind == GreetingKind::Bye {
            return Err(ClientError::Closed);
        }
        if let Some(Code::Capability(caps)) = &greeting.code {
            self.caps = caps.as_ref().iter().map(|c| c.to_string().to_ascii_uppercase()).collect();
        }
        Ok(())
    }

    pub fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    /// Send one command and collect the untagged data until its tagged
    /// status. NO/BAD becomes [`ClientError::Refused`].
    pub async fn run(
        &mut self,
        name: &'static str,
        body: CommandBody<'static>,
    ) -> Result<Vec<Data<'static>>, ClientError> {
        Ok(self.run_codes(name, body).await?.0)
    }

    /// Like [`run`](Self::run), also returning the response codes of
    /// untagged status responses (`* OK [UIDVALIDITY 42]`).
    pub async fn run_codes(
        &mut self,
        name: &'static str,
        body: CommandBody<'static>,
    ) -> Result<(Vec<Data<'static>>, Vec<Code<'static>>), ClientError> {
        self.conn.bodies.clear();
        let tag = self.tags.generate();
        let mut cmd = Outgoing::new(tag.clone(), body);
        cmd.send_ready(&mut self.conn);
        let mut data = Vec::new();
        let mut codes = Vec::new();
        loop {
            match timed(self.timeout, name, self.conn.response()).await? {
                Response::Data(d) => data.push(d),
                Response::Status(Status::Untagged(body)) => codes.extend(body.code),
                Response::Status(Status::Tagged(tagged)) if tagged.tag == tag => {
                    return match tagged.body.kind {
                        // An OK before all of a command was sent is no OK.
                        StatusKind::Ok if !cmd.waiting() => Ok((data, codes)),
                        _ => Err(ClientError::Refused { command: name, text: tagged.body.text.to_string() }),
                    };
                }
                Response::Status(Status::Bye(_)) => return Err(ClientError::Closed),
                Response::CommandContinuationRequest(_) if cmd.waiting() => cmd.continue_with(&mut self.conn),
                _ => {}
            }
        }
    }

    /// The message of the last command's FETCH response number `seq`, when
    /// it was taken out of the response (its `BODY[]` decoded empty).
    pub fn take_body(&mut self, seq: u32) -> Option<Vec<u8>> {
        self.conn.bodies.remove(&seq)
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
    /// `Secret`, and errors here never carry the bytes sent).
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
        Outgoing::new(tag.clone(), CommandBody::Idle).send_ready(&mut self.conn);
        // Wait for the continuation.
        loop {
            match timed(self.timeout, "IDLE", self.conn.response()).await? {
                Response::CommandContinuationRequest(_) => break,
                Response::Status(Status::Tagged(tagged)) if tagged.tag == tag => {
                    return Err(ClientError::Refused { command: "IDLE", text: tagged.body.text.to_string() })
                }
                Response::Status(Status::Bye(_)) => return Err(ClientError::Closed),
                _ => {}
            }
        }
        let mut changed = false;
        tokio::pin!(stop);
        let sleep = tokio::time::sleep(max);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                r = self.conn.response() => match r? {
                    Response::Data(Data::Exists(_) | Data::Expunge(_) | Data::Recent(_) | Data::Fetch { .. }) => {
                        changed = true;
                        break;
                    }
                    Response::Status(Status::Bye(_)) => return Err(ClientError::Closed),
                    _ => {}
                },
                _ = &mut sleep => break,
                _ = &mut stop => break,
            }
        }
        self.conn.send(b"DONE\r\n");
        loop {
            match timed(self.timeout, "IDLE DONE", self.conn.response()).await? {
                Response::Status(Status::Tagged(tagged)) if tagged.tag == tag => return Ok(changed),
                Response::Status(Status::Bye(_)) => return Err(ClientError::Closed),
                _ => {}
            }
        }
    }

    pub async fn logout(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.run("LOGOUT", CommandBody::Logout)).await;
    }
}
