//! The accept loop shared by the client-facing listeners (IMAP, SMTP):
//! a connection permit moved into each session task, back-off when
//! `accept` fails (out of file descriptors and the like), and on shutdown a
//! short drain before the remaining sessions are aborted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Accept on `listener` until `shutdown` turns true, running
/// `session(tcp, peer, shutdown)` in its own task for each connection while
/// holding one of `limit`'s permits. `proto` names the listener in logs.
pub async fn accept_loop<F, Fut>(
    proto: &'static str,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    session: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut sessions = JoinSet::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(100);
                // Request/response protocols: without TCP_NODELAY, the last
                // small segment of a reply waits for the ACK of the one
                // before it, which the client delays (40 ms on Linux), so
                // every IMAP command answered in more than one write took
                // ≥ 40 ms (benches/handling_load.rs).
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, proto, "TCP_NODELAY");
                }
                let fut = session(tcp, peer, shutdown.clone());
                sessions.spawn(async move {
                    fut.await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Back off 0.1 s to 6.4 s rather than spin.
                tracing::warn!(error = %e, proto, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(6400));
            }
        }
        while sessions.try_join_next().is_some() {}
    }
    // Sessions see the same shutdown signal and say goodbye; give them a moment.
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        sessions.abort_all();
    }
}
