//! Where a package's files go and come from: a directory or a ZIP file.
//! Writing stages the package beside its destination and renames it into
//! place once every file is durable, so a package under its name is whole.
//! Reading (for `export verify`) takes either form, refusing names that
//! would leave the package.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A writer that hashes what passes through it.
/// (Not hashing when the caller already knows the hash: a blob checked
/// against its name as it was read.)
pub struct Hashing<W> {
    inner: W,
    hash: Result<Sha256, String>,
    pub bytes: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W, known: Option<&str>) -> Self {
        let hash = match known {
            Some(h) => Err(h.to_string()),
            None => Ok(Sha256::new()),
        };
        Hashing { inner, hash, bytes: 0 }
    }

    pub fn finish(self) -> (W, String) {
        let h = match self.hash {
            Ok(h) => hex::encode(h.finalize()),
            Err(known) => known,
        };
        (self.inner, h)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Ok(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A package being written.
pub enum Sink {
    Dir { staging: PathBuf, dest: PathBuf },
    Zip { writer: Box<zip::ZipWriter<BufWriter<File>>>, staging: PathBuf, dest: PathBuf },
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Sink {
    /// A package at `dest`: a ZIP file if it ends in `.zip`, else a
    /// directory, which must not exist or be empty. Nothing is at `dest`
    /// until [`Sink::finish`].
    pub fn create(dest: &Path) -> io::Result<Sink> {
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| other(format!("{} names no file", dest.display())))?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let staging = parent.join(format!(".{name}.{}.partial", rand::random::<u32>()));
        if name.to_ascii_lowercase().ends_with(".zip") {
            if dest.exists() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists: not overwritten", dest.display()),
                ));
            }
            let f = File::create(&staging)?;
            let writer = zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, f));
            Ok(Sink::Zip { writer: Box::new(writer), staging, dest: dest.to_path_buf() })
        } else {
            if dest.exists() && (!dest.is_dir() || fs::read_dir(dest)?.next().is_some()) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not an empty directory: not overwritten", dest.display()),
                ));
            }
            fs::create_dir_all(&staging)?;
            Ok(Sink::Dir { staging, dest: dest.to_path_buf() })
        }
    }

    /// Add the file `path` (relative, `/`-separated), its content written
    /// by `fill`; returns its SHA-256 (hex) and size. `compress`: deflate
    /// it in a ZIP (messages are stored as they are).
    pub fn add(
        &mut self,
        path: &str,
        compress: bool,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<(String, u64)> {
        self.add_with(path, compress, None, fill)
    }

    /// Add bytes whose SHA-256 the caller has checked (`sha256`).
    pub fn add_checked(&mut self, path: &str, bytes: &[u8], sha256: &str) -> io::Result<(String, u64)> {
        self.add_with(path, false, Some(sha256), |w| w.write_all(bytes))
    }

    fn add_with(
        &mut self,
        path: &str,
        compress: bool,
        known: Option<&str>,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<(String, u64)> {
        match self {
            Sink::Dir { staging, .. } => {
                let p = staging.join(path);
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mut w = Hashing::new(BufWriter::with_capacity(256 * 1024, File::create(&p)?), known);
                fill(&mut w)?;
                let n = w.bytes;
                let (bw, hash) = w.finish();
                // Made durable all at once by `finish` (syncfs).
                bw.into_inner().map_err(|e| e.into_error())?;
                Ok((hash, n))
            }
            Sink::Zip { writer, .. } => {
                let method = if compress { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
                let opts = zip::write::SimpleFileOptions::default().compression_method(method).large_file(true);
                writer.start_file(path, opts).map_err(other)?;
                let mut w = Hashing::new(&mut **writer, known);
                fill(&mut w)?;
                let n = w.bytes;
                let (_, hash) = w.finish();
                Ok((hash, n))
            }
        }
    }

    /// Make the package durable and move it to its name.
    pub fn finish(self) -> io::Result<PathBuf> {
        match self {
            Sink::Dir { staging, dest } => {
                sync_tree(&staging)?;
                if dest.is_dir() {
                    fs::remove_dir(&dest)?; // empty, checked at the start
                }
                fs::rename(&staging, &dest)?;
                sync_parent(&dest)?;
                Ok(dest)
            }
            Sink::Zip { writer, staging, dest } => {
                let bw = writer.finish().map_err(other)?;
                let f = bw.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                if dest.exists() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} appeared meanwhile", dest.display()),
                    ));
                }
                fs::rename(&staging, &dest)?;
                sync_parent(&dest)?;
                Ok(dest)
            }
        }
    }

    /// Remove what was written (after a failure).
    pub fn abandon(self) {
        match self {
            Sink::Dir { staging, .. } => {
                let _ = fs::remove_dir_all(staging);
            }
            Sink::Zip { staging, .. } => {
                let _ = fs::remove_file(staging);
            }
        }
    }
}

fn sync_parent(p: &Path) -> io::Result<()> {
    let parent = match p.parent() {
        Some(x) if !x.as_os_str().is_empty() => x,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Make the whole tree durable: every file and directory fsynced once all
/// are written, 16 at a time. Concurrent fsyncs share the file system's
/// journal commits (ext4, xfs), where one after another each waits for
/// its own: thousands of files in a few commits instead of thousands.
fn sync_tree(dir: &Path) -> io::Result<()> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    list_tree(dir, &mut files, &mut dirs)?;
    const THREADS: usize = 16;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let first_error: std::sync::Mutex<Option<io::Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..THREADS.min(files.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = files.get(i) else { return };
                if let Err(e) = File::open(p).and_then(|f| f.sync_all()) {
                    if let Ok(mut slot) = first_error.lock() {
                        slot.get_or_insert(io::Error::new(e.kind(), format!("{}: {e}", p.display())));
                    }
                    return;
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    // Directories after their entries, deepest first.
    for d in dirs.iter().rev() {
        File::open(d)?.sync_all()?;
    }
    Ok(())
}

fn list_tree(dir: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) -> io::Result<()> {
    dirs.push(dir.to_path_buf());
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            list_tree(&e.path(), files, dirs)?;
        } else {
            files.push(e.path());
        }
    }
    Ok(())
}

/// A package being read.
pub enum Source {
    Dir(PathBuf),
    Zip(Box<zip::ZipArchive<File>>),
}

/// Is `name` a plain relative path inside the package?
fn safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Source {
    pub fn open(path: &Path) -> Result<Source, String> {
        let md = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if md.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let z = zip::ZipArchive::new(f)
            .map_err(|e| format!("{}: neither a package directory nor a readable ZIP file ({e})", path.display()))?;
        Ok(Source::Zip(Box::new(z)))
    }

    /// Every file's name (relative, `/`-separated), sorted. A name that
    /// would leave the package is an error.
    pub fn files(&mut self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        match self {
            Source::Dir(root) => walk(root, root, &mut out).map_err(|e| format!("{}: {e}", root.display()))?,
            Source::Zip(z) => {
                for i in 0..z.len() {
                    let f = z.by_index_raw(i).map_err(|e| format!("ZIP entry {i}: {e}"))?;
                    if f.is_dir() {
                        continue;
                    }
                    let name = f.name().map_err(|e| format!("ZIP entry {i}: {e}"))?.to_string();
                    if !safe(&name) {
                        return Err(format!("{name:?}: a file name outside the package"));
                    }
                    out.push(name);
                }
            }
        }
        out.sort();
        let n = out.len();
        out.dedup();
        if out.len() != n {
            return Err("the package holds a file name twice".into());
        }
        Ok(out)
    }

    /// Stream a file to `each` chunk by chunk.
    pub fn read_with(&mut self, name: &str, each: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        if !safe(name) {
            return Err(format!("{name:?}: a file name outside the package"));
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut pump = |r: &mut dyn Read| -> io::Result<()> {
            loop {
                let k = r.read(&mut buf)?;
                if k == 0 {
                    return Ok(());
                }
                each(&buf[..k]);
            }
        };
        match self {
            Source::Dir(root) => {
                let mut f = File::open(root.join(name)).map_err(|e| format!("{name}: {e}"))?;
                pump(&mut f).map_err(|e| format!("{name}: {e}"))
            }
            Source::Zip(z) => {
                let mut f = z.by_name(name).map_err(|e| format!("{name}: {e}"))?;
                pump(&mut f).map_err(|e| format!("{name}: {e}"))
            }
        }
    }

    /// A whole (small) file.
    pub fn read(&mut self, name: &str, max: usize) -> Result<Vec<u8>, String> {
        let mut v = Vec::new();
        let mut over = false;
        self.read_with(name, &mut |b| {
            if v.len() + b.len() > max {
                over = true;
            } else {
                v.extend_from_slice(b);
            }
        })?;
        if over {
            return Err(format!("{name}: larger than {max} bytes"));
        }
        Ok(v)
    }

    /// A file's SHA-256 (hex).
    pub fn sha256(&mut self, name: &str) -> Result<String, String> {
        let mut h = Sha256::new();
        self.read_with(name, &mut |b| h.update(b))?;
        Ok(hex::encode(h.finalize()))
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            walk(root, &e.path(), out)?;
        } else {
            let rel = e.path().strip_prefix(root).map_err(other)?.to_string_lossy().replace('\\', "/");
            out.push(rel);
        }
    }
    Ok(())
}
