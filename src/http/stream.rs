//! A response body written by blocking code as it is produced (a campaign's
//! report: about 20 MB of CSV at 48,397 rows). The writer hands over
//! 64 KiB chunks through a channel of four: the daemon holds a few chunks,
//! never the whole answer, and a slow client slows the writer down instead
//! of filling memory.
//!
//! An error before the first chunk is the caller's to answer with a status;
//! after it, the body is cut: the client sees a response that did not end
//! (no last chunk in HTTP/1.1, a reset stream in HTTP/2), never a short one
//! that looks whole.

use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// How much the writer gathers before handing it over.
const CHUNK: usize = 64 * 1024;
/// Chunks handed over and not yet sent.
const IN_FLIGHT: usize = 4;

/// Why a streamed answer could not be written.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The body: the first chunk (already received), then the rest.
pub struct Chunks {
    first: Option<Bytes>,
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// The writer's end. Writing after the client went away fails
/// (`BrokenPipe`), which stops the producer.
pub struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn hand_over(&mut self) -> io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hand_over()
    }
}

/// Run `produce` on a blocking thread, writing into the body it returns.
/// Waits for the first chunk: if `produce` fails before writing one, its
/// error is returned instead.
pub async fn spawn<F>(what: &'static str, produce: F) -> Result<Chunks, String>
where
    F: FnOnce(&mut ChunkWriter) -> Result<(), Failure> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter { tx, buf: Vec::with_capacity(CHUNK) };
        // A panic must not end the body as if it were whole.
        let done = catch_unwind(AssertUnwindSafe(|| produce(&mut w).and_then(|()| Ok(w.flush()?))))
            .unwrap_or_else(|_| Err(format!("{what}: the writer panicked").into()));
        if let Err(e) = done {
            let gone = e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe);
            if gone {
                tracing::debug!(what, "the client went away before the end of the answer");
            } else {
                tracing::warn!(what, error = %e, "answer cut short");
                let _ = w.tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    match rx.recv().await {
        Some(Ok(first)) => Ok(Chunks { first: Some(first), rx }),
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(Chunks { first: None, rx }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_long_answer_arrives_whole_in_chunks() {
        let body = spawn("test", |w| {
            for i in 0..100_000u32 {
                writeln!(w, "row {i}")?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let got = body.collect().await.unwrap().to_bytes();
        let want: String = (0..100_000u32).map(|i| format!("row {i}\n")).collect();
        assert_eq!(got, want.as_bytes());
    }

    #[tokio::test]
    async fn an_error_before_the_first_chunk_is_the_answer() {
        match spawn("test", |w| {
            w.write_all(b"partial")?;
            Err("no such list".into())
        })
        .await
        {
            Err(e) => assert!(e.contains("no such list"), "{e}"),
            Ok(_) => panic!("a failed answer started"),
        }
    }

    #[tokio::test]
    async fn an_error_after_the_first_chunk_cuts_the_body() {
        let body = spawn("test", |w| {
            w.write_all(&vec![b'x'; 3 * CHUNK])?;
            Err("the store failed".into())
        })
        .await
        .unwrap();
        let e = body.collect().await.err().expect("a cut body is an error, not a short answer");
        assert!(e.to_string().contains("the store failed"), "{e}");
    }

    #[tokio::test]
    async fn a_panic_cuts_the_body() {
        let body = spawn("test", |w| {
            w.write_all(&vec![b'x'; 2 * CHUNK])?;
            panic!("bug");
        })
        .await
        .unwrap();
        assert!(body.collect().await.is_err(), "a panic must not look like the end");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_stops_the_writer() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let body = spawn("test", move |w| {
            let mut written = 0usize;
            let r = (|| -> io::Result<()> {
                loop {
                    w.write_all(&[b'x'; 1024])?;
                    written += 1024;
                }
            })();
            done_tx.send((written, r.err().map(|e| e.kind()))).unwrap();
            Ok(())
        })
        .await
        .unwrap();
        drop(body);
        let (written, kind) = tokio::task::spawn_blocking(move || done_rx.recv().unwrap()).await.unwrap();
        assert_eq!(kind, Some(io::ErrorKind::BrokenPipe));
        assert!(written <= (IN_FLIGHT + 2) * CHUNK, "the writer ran ahead: {written} bytes");
    }
}
