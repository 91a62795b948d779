//! `pecgate export verify`: a package checked on its own. Every file
//! against `SHA256SUMS` and `index.xml` (none missing, none extra), the
//! audit records' own hashes and their links where consecutive, each
//! message named by an `archived` record, and the anchor token against
//! its record's hash.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use super::package::Source;
use super::xml::indexed_files;
use crate::store::{decode_line, Event};

/// What a good package holds.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: usize,
    pub messages: usize,
    pub records: usize,
    /// The anchored record's seq and the token's time, when there is one.
    pub anchor: Option<(u64, chrono::DateTime<chrono::Utc>, bool)>,
    /// SHA-256 of index.xml.
    pub package: String,
    /// Every record the package carries: (seq, hash, the file it is in).
    pub hashes: Vec<(u64, String, String)>,
}

/// The first problem found, naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct Bad {
    pub file: String,
    pub reason: String,
}

fn bad(file: &str, reason: impl Into<String>) -> Bad {
    Bad { file: file.to_string(), reason: reason.into() }
}

const MAX_SMALL: usize = 256 << 20;

pub fn verify(path: &Path) -> Result<Report, Bad> {
    let top = path.display().to_string();
    let mut src = Source::open(path).map_err(|e| bad(&top, e))?;
    let files = src.files().map_err(|e| bad(&top, e))?;
    // SHA256SUMS: every other file, once.
    if !files.iter().any(|f| f == "SHA256SUMS") {
        return Err(bad("SHA256SUMS", "missing"));
    }
    let sums_text = src.read("SHA256SUMS", MAX_SMALL).map_err(|e| bad("SHA256SUMS", e))?;
    let sums_text = String::from_utf8(sums_text).map_err(|_| bad("SHA256SUMS", "not UTF-8"))?;
    let mut sums: BTreeMap<String, String> = BTreeMap::new();
    for (i, line) in sums_text.lines().enumerate() {
        let (h, name) = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .ok_or_else(|| bad("SHA256SUMS", format!("line {}: not `<sha256>  <file>`", i + 1)))?;
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("SHA256SUMS", format!("line {}: not a SHA-256", i + 1)));
        }
        if sums.insert(name.to_string(), h.to_ascii_lowercase()).is_some() {
            return Err(bad("SHA256SUMS", format!("line {}: {name} listed twice", i + 1)));
        }
    }
    let present: BTreeSet<&str> = files.iter().map(String::as_str).filter(|f| *f != "SHA256SUMS").collect();
    let listed: BTreeSet<&str> = sums.keys().map(String::as_str).collect();
    if let Some(f) = listed.difference(&present).next() {
        return Err(bad(f, "listed in SHA256SUMS but missing from the package"));
    }
    if let Some(f) = present.difference(&listed).next() {
        return Err(bad(f, "in the package but not listed in SHA256SUMS"));
    }
    // index.xml: the same files (but itself) with the same hashes.
    if !sums.contains_key("index.xml") {
        return Err(bad("index.xml", "missing"));
    }
    let index = src.read("index.xml", MAX_SMALL).map_err(|e| bad("index.xml", e))?;
    let indexed = indexed_files(&index).map_err(|e| bad("index.xml", e))?;
    let mut seen = HashSet::new();
    for f in &indexed {
        if f.function != "SHA-256" {
            return Err(bad("index.xml", format!("{}: hash function {:?}, not SHA-256", f.path, f.function)));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(bad("index.xml", format!("{} listed twice", f.path)));
        }
        match sums.get(&f.path) {
            None => return Err(bad(&f.path, "listed in index.xml but not in SHA256SUMS")),
            Some(h) if !h.eq_ignore_ascii_case(&f.hash) => {
                return Err(bad(&f.path, "index.xml and SHA256SUMS give different SHA-256"));
            }
            _ => {}
        }
    }
    if let Some(f) = sums.keys().find(|f| *f != "index.xml" && !seen.contains(f.as_str())) {
        return Err(bad(f, "in SHA256SUMS but not in index.xml"));
    }
    // Every file's bytes.
    for (name, want) in &sums {
        let got = src.sha256(name).map_err(|e| bad(name, e))?;
        if &got != want {
            return Err(bad(name, format!("SHA-256 is {got}, SHA256SUMS says {want}: the file was changed")));
        }
    }
    // Each metadata file describes the message beside it.
    for name in sums.keys().filter(|f| f.starts_with("documents/") && f.ends_with(".xml")) {
        let xml = src.read(name, MAX_SMALL).map_err(|e| bad(name, e))?;
        let (doc, hash) = super::xml::metadata_binding(&xml).map_err(|e| bad(name, e))?;
        let expected = if name.ends_with("/metadata.xml") {
            format!("{}message.eml", name.trim_end_matches("metadata.xml"))
        } else {
            format!("{}.eml", name.trim_end_matches(".xml"))
        };
        if doc != expected {
            return Err(bad(name, format!("describes {doc}, not {expected}")));
        }
        if sums.get(&doc) != Some(&hash) {
            return Err(bad(name, format!("gives {doc} the SHA-256 {hash}, which is not the file's")));
        }
    }
    // The audit records: each line's own hash, links where consecutive.
    let mut archived: HashSet<String> = HashSet::new();
    let mut records = 0;
    let mut hashes = Vec::new();
    if sums.contains_key("audit/records.jsonl") {
        let text = src.read("audit/records.jsonl", 1 << 30).map_err(|e| bad("audit/records.jsonl", e))?;
        let text = String::from_utf8(text).map_err(|_| bad("audit/records.jsonl", "not UTF-8"))?;
        let mut prev: Option<(u64, String)> = None;
        for (i, line) in text.lines().enumerate() {
            let (rec, hash) =
                decode_line(line).map_err(|e| bad("audit/records.jsonl", format!("line {}: {e}", i + 1)))?;
            if let Some((pseq, phash)) = &prev {
                if rec.seq <= *pseq {
                    return Err(bad("audit/records.jsonl", format!("line {}: record {} after {pseq}", i + 1, rec.seq)));
                }
                if rec.seq == pseq + 1 && &rec.prev != phash {
                    return Err(bad(
                        "audit/records.jsonl",
                        format!("line {}: record {} does not chain to record {pseq}", i + 1, rec.seq),
                    ));
                }
            }
            if let Event::Archived { hash: h, .. } = &rec.event {
                archived.insert(h.clone());
            }
            hashes.push((rec.seq, hash.clone(), "audit/records.jsonl".to_string()));
            prev = Some((rec.seq, hash));
            records += 1;
        }
    }
    // Every message is one the records archived.
    let mut messages = 0;
    for (name, h) in &sums {
        if name.starts_with("documents/") && name.ends_with(".eml") {
            messages += 1;
            if !archived.contains(h) {
                return Err(bad(name, "no archived record in audit/records.jsonl names this message"));
            }
        }
    }
    // The anchor.
    let mut anchor = None;
    let tokens: Vec<&String> = sums.keys().filter(|f| f.starts_with("audit/anchor-") && f.ends_with(".tsr")).collect();
    if tokens.len() > 1 {
        return Err(bad(tokens[1], "more than one anchor token"));
    }
    if let Some(tsr) = tokens.first() {
        let base = tsr.trim_end_matches(".tsr");
        let seq: u64 =
            base.trim_start_matches("audit/anchor-").parse().map_err(|_| bad(tsr, "not named anchor-<seq>.tsr"))?;
        let lines_name = format!("{base}.jsonl");
        if !sums.contains_key(&lines_name) {
            return Err(bad(&lines_name, "missing (the anchored record)"));
        }
        let text = src.read(&lines_name, MAX_SMALL).map_err(|e| bad(&lines_name, e))?;
        let text = String::from_utf8(text).map_err(|_| bad(&lines_name, "not UTF-8"))?;
        let token = src.read(tsr, crate::anchor::tsp::MAX_REPLY).map_err(|e| bad(tsr, e))?;
        let mut digest = None;
        for (i, line) in text.lines().enumerate() {
            let (rec, hash) = decode_line(line).map_err(|e| bad(&lines_name, format!("line {}: {e}", i + 1)))?;
            hashes.push((rec.seq, hash.clone(), lines_name.clone()));
            if rec.seq == seq {
                digest = Some(hash);
            } else if let Event::Anchored { seq: s, hash: h, token_sha256, .. } = &rec.event {
                if *s != seq || Some(h) != digest.as_ref() {
                    return Err(bad(&lines_name, format!("line {}: an anchored record about another record", i + 1)));
                }
                if token_sha256 != &crate::store::blobs::sha256_hex(&token) {
                    return Err(bad(tsr, "not the token the anchored record names (its SHA-256 differs)"));
                }
            }
        }
        let digest = digest.ok_or_else(|| bad(&lines_name, format!("record {seq} is not in it")))?;
        let d = hex::decode(&digest).map_err(|_| bad(&lines_name, "a record hash that is not hex"))?;
        let (time, checked) = if sums.contains_key("audit/tsa-ca.pem") {
            let ca = src.read("audit/tsa-ca.pem", MAX_SMALL).map_err(|e| bad("audit/tsa-ca.pem", e))?;
            let st = crate::anchor::tsp::verify(&token, &ca, &d, None).map_err(|e| bad(tsr, e.to_string()))?;
            (st.gen_time, true)
        } else {
            let (stamped, time) = crate::anchor::tsp::unverified(&token).map_err(|e| bad(tsr, e.to_string()))?;
            if stamped != d {
                return Err(bad(tsr, format!("it stamps {}, not record {seq}'s hash {digest}", hex::encode(stamped))));
            }
            (time, false)
        };
        anchor = Some((seq, time, checked));
    }
    Ok(Report { files: files.len(), messages, records, anchor, package: sums["index.xml"].clone(), hashes })
}

/// A good package against the archive's journal: an `exported` record
/// names it (its `index.xml` SHA-256), and every record it carries is the
/// journal's record of that seq. Returns the `exported` record's seq.
pub fn against_journal(journal: &crate::store::JournalReader, r: &Report) -> Result<u64, Bad> {
    let want: std::collections::HashMap<u64, (&str, &str)> =
        r.hashes.iter().map(|(s, h, f)| (*s, (h.as_str(), f.as_str()))).collect();
    let mut found = 0usize;
    let mut exported = None;
    let mut first_bad: Option<Bad> = None;
    crate::audit::scan(
        journal,
        |_, _| {},
        |f| {
            if let Some((h, file)) = want.get(&f.record.seq) {
                found += 1;
                if *h != f.hash && first_bad.is_none() {
                    first_bad = Some(bad(
                        file,
                        format!("record {} is not the journal's record {}", f.record.seq, f.record.seq),
                    ));
                }
            }
            if let Event::Exported { package, .. } = &f.record.event {
                if *package == r.package && exported.is_none() {
                    exported = Some(f.record.seq);
                }
            }
            Ok(())
        },
    )
    .map_err(|e| bad("journal", e.to_string()))?;
    if let Some(b) = first_bad {
        return Err(b);
    }
    if found < want.len() {
        return Err(bad("audit/records.jsonl", "carries records the journal does not have"));
    }
    exported.ok_or_else(|| {
        bad("index.xml", format!("no exported record of the journal names this package (SHA-256 {})", r.package))
    })
}
