//! The connection's I/O: the socket (plain, TLS, or an in-memory pipe for
//! tests and fuzzing) driving imap-next's sans-I/O [`Server`].
//!
//! Why not imap-next's own `Stream`: it decrypts TLS 128 bytes at a time
//! and opens a tracing span per read, and it hands every byte to the parser
//! before anyone can look at it. Here the socket is read in chunks of up to
//! 16 KiB into a buffer on the stack (an idle session holds no read
//! buffer), and each chunk goes through the [`Scanner`] first: a line or a
//! literal past its limit stops the connection before more is read.
//!
//! Output is bounded: responses are enqueued in windows, and [`Io::drain`]
//! waits until the last one is encoded and written before more are
//! produced, so a client that does not read cannot make the server buffer a
//! whole folder. Commands that arrive meanwhile wait in a bounded queue.
//! While output is pending the socket is read at the same time (a client
//! that writes without reading must not deadlock against a server that
//! writes without reading), into a bounded buffer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use imap_next::imap_types::response::{Data, Status};
use imap_next::server::{Error as ServerError, Event, ResponseHandle, Server};
use imap_next::{Interrupt, State as _};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::scan::{Exceeded, Scanner};

/// Responses enqueued before the session waits for them to be written.
/// HYPOTHESIS: 64 FETCH responses of ordinary messages (< 1 MB each) bound
/// a session's output buffer to tens of MB in the worst case.
pub const WINDOW: usize = 64;
/// Commands a client may pipeline while the server is still answering.
/// Past this the client gets BYE (like Aerogramme's "Too fast").
pub const MAX_PENDING: usize = 256;
/// One read from the socket: a TLS record holds at most 16 KiB, and the
/// buffer lives on the stack of each poll (not in the idle session).
const READ_CHUNK: usize = 16 * 1024;
/// Bytes read (while writing) and not yet handed to the parser; past this
/// the socket is not read until the parser has taken them.
const MAX_UNPARSED: usize = 256 * 1024;

pub type Next = Result<Event, IoError>;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("connection closed")]
    Closed,
    #[error("connection error: {0}")]
    Stream(String),
    #[error("client pipelines too many commands")]
    TooFast,
    /// The client passed a limit on what it may send (answer BAD, close).
    #[error("{0}")]
    Exceeded(Exceeded),
    /// imap-next could not parse what the client sent (the session answers
    /// BAD and goes on).
    #[error("protocol error")]
    Protocol(ServerError),
}

/// What the session talks over.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// An in-memory pipe: unit tests and fuzzing drive a whole session
    /// without a socket.
    Memory(DuplexStream),
}

impl Transport {
    /// Acknowledge what the client sent at once rather than after the
    /// kernel's delayed-ACK timer (Linux `TCP_QUICKACK`, which lasts
    /// until the kernel turns it off again). Called when a read ends in
    /// the middle of a command: a client that wrote a literal and then
    /// its closing CRLF separately (Python's imaplib does) holds the CRLF
    /// under Nagle's algorithm until its literal is acknowledged, so
    /// every APPEND would wait 40 ms (BENCHMARKS.md, APPEND).
    fn ack_now(&self) {
        #[cfg(target_os = "linux")]
        {
            let tcp = match self {
                Transport::Plain(s) => s,
                Transport::Tls(s) => s.get_ref().0,
                Transport::Memory(_) => return,
            };
            let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The input limits in force (they change at login).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub authenticated: bool,
    pub max_literal: u64,
}

pub struct Io {
    pub transport: Transport,
    pub server: Server,
    pub limits: Limits,
    scanner: Scanner,
    /// Read from the socket, scanned, not yet given to the parser.
    unparsed: BytesMut,
    /// Encoded responses not yet written.
    out: BytesMut,
    /// Written but maybe still buffered (TLS): flush before waiting.
    unflushed: bool,
    pending: VecDeque<Next>,
    outstanding: usize,
    last: Option<ResponseHandle>,
    /// The socket said end of stream (or a limit was passed): reported
    /// once the parser has used up what came before.
    eof: Option<IoError>,
}

impl Io {
    pub fn new(transport: Transport, server: Server, limits: Limits) -> Io {
        Io {
            transport,
            server,
            limits,
            scanner: Scanner::new(),
            unparsed: BytesMut::new(),
            out: BytesMut::new(),
            unflushed: false,
            pending: VecDeque::new(),
            outstanding: 0,
            last: None,
            eof: None,
        }
    }

    pub fn data(&mut self, d: Data<'static>) {
        self.last = Some(self.server.enqueue_data(d));
        self.outstanding += 1;
    }

    pub fn status(&mut self, s: Status<'static>) {
        self.last = Some(self.server.enqueue_status(s));
        self.outstanding += 1;
    }

    pub fn note_handle(&mut self, h: ResponseHandle) {
        self.last = Some(h);
        self.outstanding += 1;
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next event: one queued while draining, else from the network.
    /// A `ResponseSent` for the last enqueued response clears it: a later
    /// [`Io::drain`] must not wait for a response that has already gone
    /// (it would wait forever, with the client's next command — an IDLE
    /// DONE — queued behind it).
    pub async fn next(&mut self) -> Next {
        let ev = match self.pending.pop_front() {
            Some(e) => e,
            None => self.next_event().await,
        };
        if let Ok(Event::ResponseSent { handle, .. }) = &ev {
            if self.last.as_ref() == Some(handle) {
                self.last = None;
                self.outstanding = 0;
            }
        }
        ev
    }

    /// Run the parser until it has an event, reading (and writing) the
    /// socket as it needs.
    async fn next_event(&mut self) -> Next {
        loop {
            if !self.unparsed.is_empty() {
                self.server.enqueue_input(&self.unparsed);
                self.unparsed.clear();
            }
            match self.server.next() {
                Ok(ev) => return Ok(ev),
                Err(Interrupt::Io(imap_next::Io::Output(bytes))) => {
                    self.out.extend_from_slice(&bytes);
                    continue;
                }
                Err(Interrupt::Io(imap_next::Io::NeedMoreInput)) => {}
                Err(Interrupt::Error(e)) => return Err(IoError::Protocol(e)),
            }
            if let Some(e) = self.eof.take() {
                return Err(e);
            }
            self.pump(true).await?;
        }
    }

    /// Write what is pending and read: returns once something was read
    /// (`until_read`) or, otherwise, once everything is written.
    async fn pump(&mut self, until_read: bool) -> Result<(), IoError> {
        poll_fn(|cx| self.poll_pump(cx, until_read)).await
    }

    fn poll_pump(&mut self, cx: &mut Context<'_>, until_read: bool) -> Poll<Result<(), IoError>> {
        loop {
            while !self.out.is_empty() {
                match Pin::new(&mut self.transport).poll_write(cx, &self.out) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(IoError::Closed)),
                    Poll::Ready(Ok(n)) => {
                        self.out.advance(n);
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(IoError::Stream(e.to_string()))),
                    Poll::Pending => break,
                }
            }
            if self.out.is_empty() && self.unflushed {
                match Pin::new(&mut self.transport).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(IoError::Stream(e.to_string()))),
                    Poll::Pending => {}
                }
            }
            let written = self.out.is_empty() && !self.unflushed;
            if !until_read && written {
                return Poll::Ready(Ok(()));
            }
            if self.eof.is_some() || self.unparsed.len() >= MAX_UNPARSED {
                // Nothing more to read now: wait for the writes.
                return if until_read { Poll::Ready(Ok(())) } else { Poll::Pending };
            }
            let mut storage = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut storage);
            match Pin::new(&mut self.transport).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let got = buf.filled();
                    if got.is_empty() {
                        self.eof = Some(IoError::Closed);
                    } else if let Err(e) =
                        self.scanner.feed(got, self.limits.authenticated, self.limits.max_literal)
                    {
                        // What came before the offending bytes is still
                        // parsed (and answered); then the session ends.
                        self.eof = Some(IoError::Exceeded(e));
                    } else {
                        self.unparsed.extend_from_slice(got);
                        if self.scanner.mid_command() {
                            self.transport.ack_now();
                        }
                    }
                    if until_read {
                        return Poll::Ready(Ok(()));
                    }
                    // Writing: go on while the socket takes bytes.
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(IoError::Stream(e.to_string()))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Wait until every enqueued response is written to the socket.
    pub async fn drain(&mut self) -> Result<(), IoError> {
        if let Some(last) = self.last.take() {
            loop {
                match self.next_event().await {
                    Ok(Event::ResponseSent { handle, .. }) if handle == last => break,
                    Ok(Event::ResponseSent { .. }) => {}
                    Err(IoError::Closed) => return Err(IoError::Closed),
                    Err(IoError::Stream(e)) => return Err(IoError::Stream(e)),
                    other => {
                        if self.pending.len() >= MAX_PENDING {
                            return Err(IoError::TooFast);
                        }
                        self.pending.push_back(other);
                    }
                }
            }
        }
        self.outstanding = 0;
        self.flush().await
    }

    /// Write out everything encoded so far.
    pub async fn flush(&mut self) -> Result<(), IoError> {
        // The parser may hold encoded output not yet handed over.
        loop {
            match self.server.next() {
                Err(Interrupt::Io(imap_next::Io::Output(bytes))) => self.out.extend_from_slice(&bytes),
                Ok(ev) => {
                    if self.pending.len() >= MAX_PENDING {
                        return Err(IoError::TooFast);
                    }
                    self.pending.push_back(Ok(ev));
                }
                Err(Interrupt::Io(imap_next::Io::NeedMoreInput)) => break,
                Err(Interrupt::Error(e)) => {
                    self.pending.push_back(Err(IoError::Protocol(e)));
                    break;
                }
            }
        }
        self.pump(false).await
    }

    /// Drain if a window's worth of responses is waiting.
    pub async fn maybe_drain(&mut self) -> Result<(), IoError> {
        if self.outstanding >= WINDOW {
            self.drain().await?;
        }
        Ok(())
    }

    /// Write `bytes` as they are (a response the parser cannot encode, such
    /// as the last words before closing on a limit) and flush.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.raw(bytes);
        self.pump(false).await
    }

    /// Queue `bytes` as they are after every response enqueued so far (a
    /// response imap-types cannot say: ESEARCH, a partial BINARY's
    /// origin), without waiting: written with what follows.
    pub fn raw(&mut self, bytes: &[u8]) {
        // The parser's encoded output first: the order is the client's.
        loop {
            match self.server.next() {
                Err(Interrupt::Io(imap_next::Io::Output(b))) => self.out.extend_from_slice(&b),
                Ok(ev) => {
                    // The last response is handed over: a drain must not
                    // wait for an event that is now in `pending`.
                    let sent = match &ev {
                        Event::ResponseSent { handle, .. } => {
                            if self.last.as_ref() == Some(handle) {
                                self.last = None;
                                self.outstanding = 0;
                            }
                            true
                        }
                        _ => false,
                    };
                    self.pending.push_back(Ok(ev));
                    // imap-next hands over every output before it reads
                    // input: past a command read, nothing more of ours is
                    // waiting, and no further command is read ahead.
                    if !sent {
                        break;
                    }
                }
                Err(Interrupt::Io(imap_next::Io::NeedMoreInput)) => break,
                Err(Interrupt::Error(e)) => {
                    self.pending.push_back(Err(IoError::Protocol(e)));
                    break;
                }
            }
        }
        self.out.extend_from_slice(bytes);
    }

    /// Take the transport back (STARTTLS), dropping whatever the client
    /// pipelined: it must not be read as if it came over TLS.
    pub fn into_transport(self) -> Transport {
        self.transport
    }
}
