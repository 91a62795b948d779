//! Blobs in an S3-compatible bucket (`[store] backend = "cluster"`).
//!
//! The same contract as the blob files of one machine ([`super::blobs`]):
//! an object named by its SHA-256, never overwritten. Each PUT carries
//! `x-amz-checksum-sha256` (the server verifies the bytes it received) and
//! `If-None-Match: *` (an object already there is the same bytes: already
//! archived); a HEAD then reads the object back, so the record naming it
//! is committed only once the bucket has it at the right size.
//!
//! The store's API is synchronous where it reads blobs (the IMAP and
//! export code calls it from blocking tasks and worker threads alike), so
//! the bucket's client runs on a small runtime of its own and callers wait
//! for its answer: no `block_on` inside somebody else's runtime.

use std::future::Future;
use std::io;
use std::sync::Arc;

use futures::TryStreamExt;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::blobs::{sha256_hex, valid_hash, BlobRef};

/// Where the bucket is and how to sign for it.
#[derive(Debug, Clone)]
pub struct BucketConfig {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    rt: Option<tokio::runtime::Runtime>,
    name: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("name", &self.name).finish()
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which a runtime
        // context (a test's, the daemon's) forbids: let them go instead.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn from_store(e: object_store::Error) -> io::Error {
    if !matches!(e, object_store::Error::NotFound { .. }) {
        crate::counters::cluster().errors.with_label_values(&["bucket"]).inc();
    }
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        e => io::Error::other(e.to_string()),
    }
}

impl Bucket {
    pub fn open(cfg: &BucketConfig) -> io::Result<Bucket> {
        // reqwest takes rustls's process-wide provider: ring, as everywhere
        // in pecgate (already installed is fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = AmazonS3Builder::new()
            // First: these options replace the whole set, `allow_http`
            // included (which the builder keeps among them).
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60))
                    .with_pool_idle_timeout(Duration::from_secs(20)),
            )
            .with_endpoint(&cfg.endpoint)
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key)
            .with_secret_access_key(&cfg.secret_key)
            .with_allow_http(cfg.endpoint.starts_with("http://"))
            // Path-style URLs: what on-premises stores (MinIO, Ceph RGW,
            // Garage) answer without a wildcard DNS name per bucket.
            .with_virtual_hosted_style_request(false)
            .with_checksum_algorithm(Checksum::SHA256)
            // Bounded: a bucket that does not answer makes the write fail
            // within about half a minute (the poller retries later and the
            // provider keeps the message), never hang a shutdown.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 4,
                retry_timeout: Duration::from_secs(20),
            })
            .build()
            .map_err(other)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pecgate-bucket")
            .enable_all()
            .build()?;
        Ok(Bucket {
            store: Arc::new(store),
            rt: Some(rt),
            name: format!("s3 bucket {} at {}", cfg.bucket, cfg.endpoint),
        })
    }

    /// What error messages call it.
    pub fn describe(&self, hash: &str) -> String {
        format!("{}: {}", self.name, key(hash))
    }

    /// Run `fut` on the bucket's runtime and wait for it (from any thread).
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> io::Result<T> {
        let rt = self.rt.as_ref().ok_or_else(|| other("the bucket client is closed"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| other("the bucket client stopped"))
    }

    /// Store `bytes` under their hash; already there (the same size) is
    /// success. Returns once a HEAD shows the object.
    pub fn put(&self, bytes: &[u8]) -> io::Result<BlobRef> {
        let hash = sha256_hex(bytes);
        let r = BlobRef { hash: hash.clone(), size: bytes.len() as u64 };
        let store = self.store.clone();
        let payload = PutPayload::from(bytes.to_vec());
        let path = ObjectPath::from(key(&hash));
        let size = r.size;
        self.run(async move {
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match store.put_opts(&path, payload, opts).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(from_store(e)),
            }
            let meta = store.head(&path).await.map_err(from_store)?;
            if meta.size != size {
                return Err(other(format!(
                    "object {path} holds {} bytes instead of {size}: the bucket is damaged, run `pecgate store check`",
                    meta.size
                )));
            }
            Ok(())
        })??;
        Ok(r)
    }

    pub fn size(&self, hash: &str) -> io::Result<u64> {
        check(hash)?;
        let store = self.store.clone();
        let path = ObjectPath::from(key(hash));
        self.run(async move { store.head(&path).await.map(|m| m.size).map_err(from_store) })?
    }

    pub fn get(&self, hash: &str) -> io::Result<Vec<u8>> {
        check(hash)?;
        let store = self.store.clone();
        let path = ObjectPath::from(key(hash));
        self.run(async move {
            let got = store.get(&path).await.map_err(from_store)?;
            got.bytes().await.map(|b| b.to_vec()).map_err(from_store)
        })?
    }

    /// Delete objects whose retention ended; gone already is no error.
    pub fn remove_many(&self, hashes: &[String]) -> Vec<(String, io::Error)> {
        let mut failed = Vec::new();
        for h in hashes {
            if let Err(e) = check(h) {
                failed.push((h.clone(), e));
                continue;
            }
            let store = self.store.clone();
            let path = ObjectPath::from(key(h));
            let r = self.run(async move {
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(from_store(e)),
                }
            });
            if let Err(e) = r.and_then(|r| r) {
                failed.push((h.clone(), e));
            }
        }
        failed
    }

    /// Every blob hash in the bucket.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let store = self.store.clone();
        self.run(async move {
            let prefix = ObjectPath::from(PREFIX);
            let all: Vec<_> = store.list(Some(&prefix)).try_collect().await.map_err(from_store)?;
            Ok(all
                .into_iter()
                .filter_map(|m| m.location.filename().and_then(|f| f.strip_suffix(".eml")).map(str::to_string))
                .filter(|h| valid_hash(h))
                .collect())
        })?
    }
}

const PREFIX: &str = "blobs";

/// `blobs/ab/cd/abcd….eml`: the layout of the files on one machine, so a
/// bucket and a data directory's `blobs/` copy into each other as they are.
fn key(hash: &str) -> String {
    let h = |a: usize, b: usize| hash.get(a..b).unwrap_or("");
    format!("{PREFIX}/{}/{}/{hash}.eml", h(0, 2), h(2, 4))
}

fn check(hash: &str) -> io::Result<()> {
    if valid_hash(hash) {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "not a SHA-256 hex digest"))
    }
}
