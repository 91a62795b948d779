//! Work only one node may do at a time (several nodes on one archive):
//! a campaign sender per mailbox, the retention expiry, anchoring. On one
//! machine every lease is granted at once, so the job simply runs.
//!
//! [`leased`] waits for the lease (standing by while another node holds
//! it), takes in the shared journal so the job starts from its
//! predecessor's state, runs the job, renews the lease every third of its
//! length, and stops the job when the lease is lost or the daemon stops.
//! The job's commits carry the lease ([`Fence`]): once another node has
//! taken it over they are refused by the store, so a node paused past its
//! lease cannot act on stale state (a notice sent twice).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::cluster::Fence;
use crate::store::Store;

/// Run `job` whenever this node holds lease `name`, until `stop`. The job
/// gets the fence for its commits and a receiver that turns true when it
/// must end (the daemon stops or the lease was lost).
pub async fn leased<F, Fut>(store: Store, name: String, ttl: Duration, mut stop: watch::Receiver<bool>, job: F)
where
    F: Fn(Fence, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut standing_by = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let fence = match store.acquire_lease(&name, ttl).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                if !standing_by {
                    tracing::info!(lease = %name, "another node does this work: standing by");
                    standing_by = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(ttl / 3) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "cannot take the lease");
                tokio::select! {
                    _ = tokio::time::sleep(ttl / 3) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if standing_by || fence.epoch > 0 {
            tracing::info!(lease = %name, epoch = fence.epoch, "this node now does this work");
        }
        standing_by = false;
        if let Err(e) = store.sync_shared().await {
            tracing::warn!(lease = %name, error = %e, "cannot read the shared journal");
        }
        let (end_tx, end_rx) = watch::channel(false);
        let keeper = {
            let (store, fence, name, mut stop) = (store.clone(), fence.clone(), name.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(ttl / 3) => {}
                        _ = stop.changed() => {
                            let _ = end_tx.send(true);
                            return;
                        }
                    }
                    match store.renew_lease(&fence, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(lease = %name, epoch = fence.epoch, "lost the lease: another node does this work now");
                            let _ = end_tx.send(true);
                            return;
                        }
                        Err(e) => tracing::warn!(lease = %name, error = %e, "cannot renew the lease"),
                    }
                }
            })
        };
        let ended = end_rx.clone();
        job(fence.clone(), end_rx).await;
        keeper.abort();
        if *stop.borrow() {
            store.release_lease(&fence).await;
            return;
        }
        if !*ended.borrow() {
            // The job returned by itself: not at once again.
            tokio::select! {
                _ = tokio::time::sleep(ttl / 3) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
