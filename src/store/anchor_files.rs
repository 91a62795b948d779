//! Time-stamp tokens beside the journal: `anchors/<seq>.tsr`, each the
//! whole DER reply of an RFC 3161 authority for the chain head at record
//! `seq` (`openssl ts -reply -in FILE -text` shows it). Plain files, like
//! the journal, so an auditor needs nothing of pecgate to check them.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::blobs::sync_dir;

/// The file name of the token for record `seq`.
pub fn name(seq: u64) -> String {
    format!("{seq:012}.tsr")
}

/// Write a token durably; returns its name relative to the data directory.
pub fn put(dir: &Path, seq: u64, der: &[u8]) -> io::Result<String> {
    fs::create_dir_all(dir)?;
    let file = name(seq);
    let tmp = dir.join(format!(".{file}.{}.tmp", rand::random::<u64>()));
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(der)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(&file))?;
        sync_dir(dir)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map(|()| format!("anchors/{file}"))
}

/// Every token file: (seq from its name, name relative to the data
/// directory), in seq order. Files not named like a token are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let n = e?.file_name().to_string_lossy().into_owned();
        if let Some(seq) = n.strip_suffix(".tsr").filter(|s| !s.starts_with('.')).and_then(|s| s.parse::<u64>().ok()) {
            out.push((seq, format!("anchors/{n}")));
        }
    }
    out.sort();
    Ok(out)
}

/// Read a token by the name an `Anchored` record gives (`anchors/…`);
/// any other name is refused (a record cannot point outside the folder).
pub fn read(data_dir: &Path, name: &str) -> io::Result<Vec<u8>> {
    let file = name
        .strip_prefix("anchors/")
        .filter(|f| !f.is_empty() && !f.contains('/') && !f.contains('\\') && !f.starts_with('.'))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a token name")))?;
    fs::read(data_dir.join("anchors").join(file))
}
