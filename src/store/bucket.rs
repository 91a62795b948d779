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
    /// This node's copies of the blobs it read or wrote lately.
    cache: Option<BlobCache>,
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
            cache: None,
        })
    }

    /// Keep copies of the blobs this node reads and writes in `dir`, at
    /// most `max_bytes` of them (0: none).
    pub fn with_cache(mut self, dir: &std::path::Path, max_bytes: u64) -> io::Result<Bucket> {
        self.cache = if max_bytes == 0 { None } else { Some(BlobCache::open(dir, max_bytes)?) };
        Ok(self)
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
        if let Some(c) = &self.cache {
            c.put(&hash, bytes);
        }
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
        if let Some(b) = self.cache.as_ref().and_then(|c| c.get(hash)) {
            return Ok(b);
        }
        let store = self.store.clone();
        let path = ObjectPath::from(key(hash));
        let bytes = self.run(async move {
            let got = store.get(&path).await.map_err(from_store)?;
            got.bytes().await.map(|b| b.to_vec()).map_err(from_store)
        })??;
        // Only what is what it is named is kept (the caller sees the rest).
        if let Some(c) = &self.cache {
            crate::counters::cluster().blob_cache.with_label_values(&["miss"]).inc();
            if sha256_hex(&bytes) == hash {
                c.put(hash, &bytes);
            }
        }
        Ok(bytes)
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

/// A node's copies of blobs (in its `index_dir`): a bucket GET is a round
/// trip per message, which FETCH and the full-text indexer would pay for
/// every message they read. A blob never changes, so a copy is never
/// stale; each is checked against its hash when it is read (a copy is
/// written without fsync: a crash may leave it torn), and the oldest
/// copies go once the cache is over its size. Derived: deleting the
/// directory loses nothing.
pub struct BlobCache {
    dir: std::path::PathBuf,
    max: u64,
    used: std::sync::atomic::AtomicU64,
    evicting: std::sync::Mutex<()>,
}

impl BlobCache {
    pub fn open(dir: &std::path::Path, max: u64) -> io::Result<BlobCache> {
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        std::fs::create_dir_all(dir.join("tmp"))?;
        let used: u64 = Self::files(dir).iter().map(|f| f.2).sum();
        Ok(BlobCache { dir: dir.to_path_buf(), max, used: used.into(), evicting: Default::default() })
    }

    fn path(&self, hash: &str) -> std::path::PathBuf {
        self.dir.join(hash.get(..2).unwrap_or("xx")).join(format!("{hash}.eml"))
    }

    /// Every copy: (modified, path, size).
    fn files(dir: &std::path::Path) -> Vec<(std::time::SystemTime, std::path::PathBuf, u64)> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if sub.file_name() == "tmp" {
                continue;
            }
            for f in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                if let Ok(m) = f.metadata() {
                    out.push((m.modified().unwrap_or(std::time::UNIX_EPOCH), f.path(), m.len()));
                }
            }
        }
        out
    }

    /// The copy of `hash`, if there is a good one.
    pub fn get(&self, hash: &str) -> Option<Vec<u8>> {
        use std::sync::atomic::Ordering;
        let p = self.path(hash);
        let b = std::fs::read(&p).ok()?;
        if sha256_hex(&b) == hash {
            crate::counters::cluster().blob_cache.with_label_values(&["hit"]).inc();
            return Some(b);
        }
        tracing::warn!(path = %p.display(), "a blob's cached copy does not match its hash: removed");
        if std::fs::remove_file(&p).is_ok() {
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(b.len() as u64)));
        }
        None
    }

    /// Keep a copy of `bytes` (named `hash`); a failure only costs speed.
    pub fn put(&self, hash: &str, bytes: &[u8]) {
        use std::sync::atomic::Ordering;
        let dest = self.path(hash);
        if bytes.len() as u64 > self.max / 4 || dest.exists() {
            return;
        }
        let tmp = self.dir.join("tmp").join(format!("{hash}.{}", rand::random::<u64>()));
        let done = std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::create_dir_all(dest.parent().unwrap_or(&self.dir)))
            .and_then(|()| std::fs::rename(&tmp, &dest));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(error = %e, "cannot keep a copy of a blob");
            return;
        }
        if self.used.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64 > self.max {
            self.evict();
        }
    }

    /// The oldest copies removed, down to three quarters of the size.
    fn evict(&self) {
        use std::sync::atomic::Ordering;
        let Ok(_one) = self.evicting.try_lock() else { return };
        let mut files = Self::files(&self.dir);
        files.sort();
        let mut used: u64 = files.iter().map(|f| f.2).sum();
        for (_, path, len) in files {
            if used <= self.max / 4 * 3 {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                used -= len;
            }
        }
        self.used.store(used, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blob_cache_keeps_good_copies_and_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let c = BlobCache::open(d.path(), 40_000).unwrap();
        let blob = |i: u8| vec![i; 5_000];
        for i in 0..6u8 {
            c.put(&sha256_hex(&blob(i)), &blob(i));
            // Distinct modification times, for the order of eviction.
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        for i in 0..6u8 {
            assert_eq!(c.get(&sha256_hex(&blob(i))), Some(blob(i)), "copy {i}");
        }
        // A torn copy is not handed out, and goes.
        let h = sha256_hex(&blob(0));
        std::fs::write(c.path(&h), b"torn").unwrap();
        assert_eq!(c.get(&h), None);
        assert!(!c.path(&h).exists());
        // Over its size, the oldest copies go first (down to 3/4 of it).
        for i in 10..14u8 {
            c.put(&sha256_hex(&blob(i)), &blob(i));
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        let kept: Vec<u8> = (1..6).chain(10..14).filter(|i| c.get(&sha256_hex(&blob(*i))).is_some()).collect();
        assert!(kept.ends_with(&[10, 11, 12, 13]) && !kept.contains(&1), "kept {kept:?}");
        assert!(kept.len() * 5_000 <= 40_000, "kept {kept:?}");
        // Reopened, it knows what it holds; a blob over a quarter of it is not kept.
        let c = BlobCache::open(d.path(), 40_000).unwrap();
        assert_eq!(c.used.load(std::sync::atomic::Ordering::Relaxed), kept.len() as u64 * 5_000);
        let big = vec![7u8; 20_000];
        c.put(&sha256_hex(&big), &big);
        assert_eq!(c.get(&sha256_hex(&big)), None);
    }
}
