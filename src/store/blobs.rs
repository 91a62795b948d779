//! Raw messages as immutable files named by their SHA-256.
//!
//! `blobs/ab/cd/abcd….eml`, byte-for-byte as received. A blob is written to
//! `blobs/tmp/`, fsynced, renamed into place, and the directory fsynced, so
//! after a crash a blob is either whole under its name or absent (a leftover
//! temporary file is removed on the next open). A blob already under its
//! name (the same bytes stored again) has its directory fsynced before
//! `put` returns: it may be another write's, not yet durable.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A stored blob: its hash (lower-case hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub hash: String,
    pub size: u64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where the blobs are: files in the data directory (one machine), or an
/// S3-compatible bucket (`[store] backend = "cluster"`). The same contract
/// either way: content-addressed, written once, durable before `put`
/// returns.
#[derive(Debug, Clone)]
pub enum Blobs {
    Files(FileBlobs),
    Bucket(std::sync::Arc<super::bucket::Bucket>),
}

impl Blobs {
    pub fn put(&self, bytes: &[u8]) -> io::Result<BlobRef> {
        match self {
            Blobs::Files(f) => f.put(bytes),
            Blobs::Bucket(b) => b.put(bytes),
        }
    }

    pub fn size(&self, hash: &str) -> io::Result<u64> {
        match self {
            Blobs::Files(f) => f.size(hash),
            Blobs::Bucket(b) => b.size(hash),
        }
    }

    pub fn get(&self, hash: &str) -> io::Result<Vec<u8>> {
        match self {
            Blobs::Files(f) => f.get(hash),
            Blobs::Bucket(b) => b.get(hash),
        }
    }

    pub fn remove_many(&self, hashes: &[String]) -> Vec<(String, io::Error)> {
        match self {
            Blobs::Files(f) => f.remove_many(hashes),
            Blobs::Bucket(b) => b.remove_many(hashes),
        }
    }

    pub fn list(&self) -> io::Result<Vec<String>> {
        match self {
            Blobs::Files(f) => f.list(),
            Blobs::Bucket(b) => b.list(),
        }
    }

    /// Where blob `hash` is, for error messages (a path or an object name).
    pub fn path(&self, hash: &str) -> PathBuf {
        match self {
            Blobs::Files(f) => f.path(hash),
            Blobs::Bucket(b) => PathBuf::from(b.describe(hash)),
        }
    }
}

/// Blob files under the data directory's `blobs/`.
#[derive(Debug, Clone)]
pub struct FileBlobs {
    root: PathBuf,
    /// The shard directories (`aa/bb`) known to exist, a bit each: a put
    /// looks its directory up once, not at every blob.
    known_dirs: Arc<KnownDirs>,
}

/// 65,536 bits, one per shard directory.
#[derive(Debug)]
struct KnownDirs(Vec<AtomicU64>);

impl KnownDirs {
    fn new() -> KnownDirs {
        KnownDirs((0..1024).map(|_| AtomicU64::new(0)).collect())
    }

    /// The shard of a blob hash (its first four hex digits).
    fn shard(hash: &str) -> Option<usize> {
        hash.get(..4).and_then(|h| u16::from_str_radix(h, 16).ok()).map(usize::from)
    }

    fn has(&self, shard: usize) -> bool {
        self.0[shard / 64].load(Ordering::Relaxed) & (1 << (shard % 64)) != 0
    }

    fn set(&self, shard: usize) {
        self.0[shard / 64].fetch_or(1 << (shard % 64), Ordering::Relaxed);
    }
}

impl FileBlobs {
    /// Open (creating) `root`, removing temporary files a crash left behind.
    /// Returns how many were removed.
    pub fn open(root: &Path) -> io::Result<(FileBlobs, usize)> {
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)?;
        let mut removed = 0;
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            fs::remove_file(entry.path())?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&tmp)?;
        }
        Ok((FileBlobs { root: root.to_path_buf(), known_dirs: Arc::new(KnownDirs::new()) }, removed))
    }

    pub fn path(&self, hash: &str) -> PathBuf {
        let (a, b) = (&hash[0..2.min(hash.len())], &hash[2.min(hash.len())..4.min(hash.len())]);
        self.root.join(a).join(b).join(format!("{hash}.eml"))
    }

    /// Store `bytes` durably; returns its reference. Storing the same bytes
    /// twice writes them once.
    pub fn put(&self, bytes: &[u8]) -> io::Result<BlobRef> {
        let hash = sha256_hex(bytes);
        let r = BlobRef { hash: hash.clone(), size: bytes.len() as u64 };
        let dest = self.path(&hash);
        if let Ok(meta) = fs::metadata(&dest) {
            if meta.len() == r.size {
                // Present is not yet durable: another write of the same
                // bytes may be between its rename and its directory's
                // fsync, or a process killed there left it. Made durable
                // before the caller references it (rare: equal bytes).
                sync_dir(dest.parent().ok_or_else(|| io::Error::other("blob path has no parent"))?)?;
                return Ok(r);
            }
            // A blob of the wrong size under a content address can only be
            // damage: keep it for inspection, never overwrite evidence.
            return Err(io::Error::other(format!(
                "blob {} exists with size {} instead of {}: the archive is damaged, run `pecgate store check`",
                dest.display(),
                meta.len(),
                r.size
            )));
        }
        let tmp = self.root.join("tmp").join(format!("{hash}.{}.tmp", rand::random::<u64>()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            let dir = dest.parent().ok_or_else(|| io::Error::other("blob path has no parent"))?;
            let shard = KnownDirs::shard(&hash);
            if !shard.is_some_and(|s| self.known_dirs.has(s)) {
                ensure_dir(dir)?;
            }
            match fs::rename(&tmp, &dest) {
                // Its directory went away under the daemon: made again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && tmp.exists() => {
                    ensure_dir(dir)?;
                    fs::rename(&tmp, &dest)?;
                }
                r => r?,
            }
            if let Some(s) = shard {
                self.known_dirs.set(s);
            }
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| r)
    }

    /// The size of a stored blob, without reading it.
    pub fn size(&self, hash: &str) -> io::Result<u64> {
        if !valid_hash(hash) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a blob hash"));
        }
        Ok(std::fs::metadata(self.path(hash))?.len())
    }

    pub fn get(&self, hash: &str) -> io::Result<Vec<u8>> {
        if !valid_hash(hash) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a SHA-256 hex digest"));
        }
        fs::read(self.path(hash))
    }

    /// Delete blobs (their retention ended: see `Event::Expired`) and make
    /// the removals durable with one `syncfs` of the blob file system
    /// (rather than a directory fsync per blob: a million removals would
    /// be a million fsyncs). Already gone is not an error. Returns the
    /// hashes that could not be removed, with why.
    pub fn remove_many(&self, hashes: &[String]) -> Vec<(String, io::Error)> {
        let mut failed = Vec::new();
        for h in hashes {
            if !valid_hash(h) {
                failed.push((h.clone(), io::Error::new(io::ErrorKind::InvalidInput, "not a SHA-256 hex digest")));
                continue;
            }
            match fs::remove_file(self.path(h)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => failed.push((h.clone(), e)),
            }
        }
        if let Err(e) = File::open(&self.root).and_then(|d| syncfs(&d)) {
            failed.push((String::new(), e));
        }
        failed
    }

    /// Every blob hash on disk (for integrity checks).
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for a in fs::read_dir(&self.root)? {
            let a = a?;
            if a.file_name() == "tmp" || !a.file_type()?.is_dir() {
                continue;
            }
            for b in fs::read_dir(a.path())? {
                let b = b?;
                if !b.file_type()?.is_dir() {
                    continue;
                }
                for f in fs::read_dir(b.path())? {
                    let name = f?.file_name();
                    if let Some(h) = name.to_str().and_then(|n| n.strip_suffix(".eml")) {
                        out.push(h.to_string());
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Blobs read-only, beside a running daemon (conservation exports): bytes
/// by hash, never paths. Each read checks the bytes against their name, so
/// a damaged blob is an error rather than exported evidence.
#[derive(Debug, Clone)]
pub struct BlobReader {
    blobs: Blobs,
}

impl BlobReader {
    /// The blobs of the archive in `data_dir`; nothing is read yet.
    pub fn open_read_only(data_dir: &Path) -> BlobReader {
        BlobReader {
            blobs: Blobs::Files(FileBlobs { root: data_dir.join("blobs"), known_dirs: Arc::new(KnownDirs::new()) }),
        }
    }

    /// The blobs of an archive as its configuration says: files in
    /// `data_dir`, or a cluster's bucket.
    pub fn open(data_dir: &Path, cluster: Option<&super::cluster::ClusterOptions>) -> io::Result<BlobReader> {
        match cluster {
            None => Ok(BlobReader::open_read_only(data_dir)),
            Some(c) => {
                Ok(BlobReader { blobs: Blobs::Bucket(std::sync::Arc::new(super::bucket::Bucket::open(&c.bucket)?)) })
            }
        }
    }

    /// Are the blobs in a cluster's bucket?
    pub fn is_bucket(&self) -> bool {
        matches!(self.blobs, Blobs::Bucket(_))
    }

    /// The blob's bytes, checked against its hash.
    pub fn get(&self, hash: &str) -> io::Result<Vec<u8>> {
        let bytes = self.blobs.get(hash)?;
        if sha256_hex(&bytes) != hash {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {hash} does not hash to its name: the archive is damaged, run `pecgate store check`"),
            ));
        }
        Ok(bytes)
    }

    /// Its size, without reading it.
    pub fn size(&self, hash: &str) -> io::Result<u64> {
        self.blobs.size(hash)
    }

    /// Stream the blob to `out`, checking its hash at the end (an error
    /// then: what was written is not the evidence). Returns the bytes copied.
    pub fn copy_to(&self, hash: &str, out: &mut dyn Write) -> io::Result<u64> {
        if !valid_hash(hash) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a SHA-256 hex digest"));
        }
        let files = match &self.blobs {
            Blobs::Files(f) => f,
            Blobs::Bucket(_) => {
                // One GET (the bucket's client has no streaming read here).
                let bytes = self.get(hash)?;
                out.write_all(&bytes)?;
                return Ok(bytes.len() as u64);
            }
        };
        let mut f = File::open(files.path(hash))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let k = io::Read::read(&mut f, &mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            out.write_all(&buf[..k])?;
            n += k as u64;
        }
        if hex::encode(h.finalize()) != hash {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {hash} does not hash to its name: the archive is damaged, run `pecgate store check`"),
            ));
        }
        Ok(n)
    }
}

pub fn valid_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Create `dir` and its missing parents, fsyncing each parent whose entries
/// changed, so the new directory survives a power cut.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
        match fs::create_dir(dir) {
            Ok(()) => sync_dir(parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_dedup_and_tmp_cleanup() {
        let d = tempfile::tempdir().unwrap();
        let (b, removed) = FileBlobs::open(d.path()).unwrap();
        assert_eq!(removed, 0);
        let r = b.put(b"hello").unwrap();
        assert_eq!(r.hash, sha256_hex(b"hello"));
        assert_eq!(b.get(&r.hash).unwrap(), b"hello");
        assert_eq!(b.put(b"hello").unwrap(), r);
        assert_eq!(b.list().unwrap(), vec![r.hash.clone()]);
        fs::write(d.path().join("tmp/x.tmp"), b"partial").unwrap();
        let (_, removed) = FileBlobs::open(d.path()).unwrap();
        assert_eq!(removed, 1);
        assert!(b.get("../../etc/passwd").is_err());
    }

    #[test]
    fn a_shard_directory_removed_under_a_running_store_is_made_again() {
        let d = tempfile::tempdir().unwrap();
        let (b, _) = FileBlobs::open(d.path()).unwrap();
        let r = b.put(b"one").unwrap();
        // Another blob of the same shard, after its directory (known to
        // exist) was removed.
        let other = (0u32..).map(|i| format!("two {i}")).find(|s| sha256_hex(s.as_bytes())[..4] == r.hash[..4]);
        fs::remove_dir_all(d.path().join(&r.hash[..2])).unwrap();
        let two = other.unwrap();
        let r2 = b.put(two.as_bytes()).unwrap();
        assert_eq!(b.get(&r2.hash).unwrap(), two.as_bytes());
        assert!(fs::read_dir(d.path().join("tmp")).unwrap().next().is_none(), "no temporary file left");
    }
}

/// `syncfs(2)` on the file system holding `f`.
fn syncfs(f: &File) -> io::Result<()> {
    rustix::fs::syncfs(f).map_err(io::Error::from)
}
