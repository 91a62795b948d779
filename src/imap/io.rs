//! The connection's I/O: imap-next's `Stream` + `Server`, with bounded
//! output. Responses are enqueued in windows; [`Io::drain`] waits until the
//! last one has gone to the socket before more are produced, so a client
//! that does not read cannot make the server buffer a whole folder.
//! Commands that arrive while draining are kept in a bounded queue.

use std::collections::VecDeque;

use imap_next::imap_types::response::{Data, Status};
use imap_next::server::{Error as ServerError, Event, ResponseHandle, Server};
use imap_next::stream::{Error as StreamError, Stream};

/// Responses enqueued before the session waits for them to be written.
/// HYPOTHESIS: 64 FETCH responses of ordinary messages (< 1 MB each) bound
/// a session's output buffer to tens of MB in the worst case.
pub const WINDOW: usize = 64;
/// Commands a client may pipeline while the server is still answering.
/// Past this the client gets BYE (like Aerogramme's "Too fast").
pub const MAX_PENDING: usize = 256;

pub type Next = Result<Event, StreamError<ServerError>>;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("connection closed")]
    Closed,
    #[error("connection error: {0}")]
    Stream(String),
    #[error("client pipelines too many commands")]
    TooFast,
}

pub struct Io {
    pub stream: Stream,
    pub server: Server,
    pending: VecDeque<Next>,
    outstanding: usize,
    last: Option<ResponseHandle>,
}

impl Io {
    pub fn new(stream: Stream, server: Server) -> Io {
        Io {
            stream,
            server,
            pending: VecDeque::new(),
            outstanding: 0,
            last: None,
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

    /// The next event: one queued while draining, else from the network.
    /// A `ResponseSent` for the last enqueued response clears it: a later
    /// [`Io::drain`] must not wait for a response that has already gone
    /// (it would wait forever, with the client's next command — an IDLE
    /// DONE — queued behind it).
    pub async fn next(&mut self) -> Next {
        let ev = match self.pending.pop_front() {
            Some(e) => e,
            None => self.stream.next(&mut self.server).await,
        };
        if let Ok(Event::ResponseSent { handle, .. }) = &ev {
            if self.last.as_ref() == Some(handle) {
                self.last = None;
                self.outstanding = 0;
            }
        }
        ev
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Wait until every enqueued response is written to the socket.
    pub async fn drain(&mut self) -> Result<(), IoError> {
        if let Some(last) = self.last.take() {
            loop {
                match self.stream.next(&mut self.server).await {
                    Ok(Event::ResponseSent { handle, .. }) if handle == last => break,
                    Ok(Event::ResponseSent { .. }) => {}
                    Err(StreamError::Closed) => return Err(IoError::Closed),
                    Err(StreamError::Io(e)) => return Err(IoError::Stream(e.to_string())),
                    Err(StreamError::Tls(e)) => return Err(IoError::Stream(e.to_string())),
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
        self.stream
            .flush()
            .await
            .map_err(|e| IoError::Stream(e.to_string()))
    }

    /// Drain if a window's worth of responses is waiting.
    pub async fn maybe_drain(&mut self) -> Result<(), IoError> {
        if self.outstanding >= WINDOW {
            self.drain().await?;
        }
        Ok(())
    }
}
