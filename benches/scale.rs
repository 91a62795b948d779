//! Ten-year scale (issue 14): one mailbox whose INBOX holds N small
//! messages archived through the store API, then `pecgate serve` over
//! loopback TLS, and the same messages in a Dovecot Maildir, measured with
//! the same IMAP client.
//!
//!     cargo bench --bench scale                          # N = 1,000,000
//!     SCALE_MESSAGES=20000 cargo bench --bench scale     # a quick run
//!
//! A million on the 2-core development machine: the fill ≈ 9 min (archive
//! 6 min, Maildir 3 min; once, then cached), each run ≈ 13 min (most of
//! it `rebuild-index`, the second put_blob pass, the 100 sessions' SELECTs
//! and Dovecot's first SEARCH, which reads every message). Disk: ≈ 4 GB
//! for the blobs and as much for the Maildir (a block per small file),
//! plus the journal, and the run's index (≈ 3 GB) while it runs.
//!
//! What it reports, against the issue's targets:
//!
//! * the index on disk (bytes and bytes per message; blobs and journal
//!   beside it), as archiving leaves it;
//! * `pecgate store rebuild-index`: time and messages/s;
//! * `serve` started until the IMAP greeting arrives over TLS;
//! * SELECT INBOX cold (the first after start) and warm (again); `FETCH`
//!   of the last 50 `(FLAGS ENVELOPE)`; `UID SEARCH SUBJECT` of a word one
//!   message has in its subject, twice;
//! * the daemon's VmRSS with one session selected, and with 100 sessions
//!   that each SELECTed INBOX; then the first session's NOOP after another
//!   flagged a message (the refresh of the list after one change);
//! * the same session against Dovecot twice: its first session ever
//!   (Dovecot builds its index and caches), and again after a restart
//!   (index and caches on disk; the column compared with pecgate, whose
//!   index is on disk before `serve` starts).
//!
//! Filling a million messages takes minutes, so the filled data is cached
//! in `SCALE_CACHE` (default `/var/tmp/pecgate-scale`: Dovecot's
//! unprivileged user must reach the Maildir, and `/root` is 0700), in
//! `scale-<N>-v<FILL_VERSION>/`:
//!
//! ```text
//! archive/blobs/    the blobs, as put_blob wrote them
//! archive/journal/  the journal, as commit_batch wrote it
//! fill.json         how long the fill took, and the sizes then
//! maildir/          the same messages for Dovecot (cur/, owned by its user)
//! maildir.json      how long writing the Maildir took
//! ```
//!
//! The cache holds only the evidence (blobs and journal), never an index:
//! each run copies the journal into a fresh data directory (its `blobs/` a
//! symbolic link to the cached one, which nothing writes), lets
//! `pecgate store rebuild-index` build the index with the code under test,
//! and then puts every message's bytes again through `Store::put_blob`
//! (they are all there, so nothing is written but what archiving derives
//! from the bytes, e.g. the header fields SEARCH reads): the index ends as
//! archiving would have left it, whatever its format is today.
//!
//! Environment: SCALE_MESSAGES (N, default 1,000,000; 2,000 without
//! `--bench`, as under `cargo test --benches`), SCALE_CACHE, SCALE_REFILL=1
//! (fill again: archive and Maildir), SCALE_DOVECOT=0 (pecgate only),
//! SCALE_COLD_STARTS (5: pecgate started and Dovecot restarted this many
//! times in all, a cold SELECT after each, their medians compared),
//! SCALE_DERIVE=0 (skip the second put_blob pass: the first SEARCH then
//! derives the header fields from the blobs), SCALE_SESSIONS (100),
//! SCALE_RSS_LIMIT_MIB (8192: stop opening sessions past it, so that a
//! regression cannot take the machine's memory), SCALE_KEEP=1 (keep the
//! run's directory), SCALE_CONVERT=1 (after the run, the header-field
//! cache put back in format 5 and its conversion at the next open timed:
//! an upgrade's first start).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use pecgate::store::{Audit, Change, Store, StoreOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Bump when [`message`] or the layout of the cache changes: a cache of an
/// older version is not used.
const FILL_VERSION: u32 = 1;
const MAILBOX: &str = "protocollo";
const ADDRESS: &str = "protocollo@pec.comune.example.it";
const USER: &str = "mario";
const PASSWORD: &str = "pw-Scale-1";
/// In the subject of one message only ([`unique_index`]): SEARCH's hit.
const UNIQUE: &str = "Ornitorinco";
/// Messages per `commit_batch` while filling (one fsync each).
const FILL_BATCH: usize = 5000;
/// `put_blob`s in flight while filling: each fsyncs its file and
/// directory, and the file system's journal commits many at once.
const FILL_CONCURRENCY: usize = 256;
/// Pause before each command of the session script but the first SELECT
/// (see [`session_script`]).
const PAUSE: Duration = Duration::from_millis(1100);
/// Deadline for one IMAP command (a regression should fail, not hang).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0") | Ok("false") | Ok("no") => false,
        Ok(_) => true,
        Err(_) => default,
    }
}

/// SCALE_CONVERT=1: the run's header-field cache put back the way a
/// pecgate before format 6 left it (kind `f5`, no common values), then
/// the time of the next open, which converts it (and packs the file), as
/// the first start after an upgrade does.
fn upgrade_from_format_5(data: &Path, config: &Path) {
    use redb::{ReadableDatabase, ReadableTable};
    type Def = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;
    const DERIVED: Def = redb::TableDefinition::new("derived");
    const DERIVED_META: Def = redb::TableDefinition::new("derived_meta");
    let t0 = Instant::now();
    let db = redb::Database::create(data.join("derived.redb")).expect("open derived.redb");
    let (mut common, mut entries) = (Vec::new(), Vec::new());
    {
        let tx = db.begin_read().expect("read");
        for kv in tx.open_table(DERIVED).expect("table").iter().expect("iter") {
            let (k, v) = kv.expect("entry");
            let (k, v) = (k.value().to_vec(), v.value().to_vec());
            if let Some(n) = k.strip_prefix(b"c\0") {
                let n = u32::from_be_bytes(n.try_into().expect("a number")) as usize;
                common.resize(common.len().max(n + 1), None);
                common[n] = Some(Arc::<str>::from(String::from_utf8(v).expect("text")));
            } else if k.starts_with(b"f6\0") {
                entries.push((k, v));
            }
        }
    }
    let tx = db.begin_write().expect("write");
    {
        let mut t = tx.open_table(DERIVED).expect("table");
        t.retain(|_, _| false).expect("empty it");
        for (k, v) in &entries {
            let old = pecgate::store::fields::as_format_5(v, &common).expect("a format-6 value");
            t.insert([b"f5\0".as_slice(), &k[3..]].concat().as_slice(), old.as_slice()).expect("insert");
        }
        tx.open_table(DERIVED_META).expect("meta").insert(b"format".as_slice(), 5u32.to_be_bytes().as_slice()).expect("format");
    }
    tx.commit().expect("commit");
    drop(db);
    let before = std::fs::metadata(data.join("derived.redb")).map(|m| m.len()).unwrap_or(0);
    println!(
        "pecgate: the cache put back in format 5: {} entries, {} common values expanded, {:.1} MB, in {}",
        entries.len(),
        common.len(),
        before as f64 / 1e6,
        fmt_d(t0.elapsed())
    );
    let t0 = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["store", "stats", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .output()
        .expect("run store stats");
    let took = t0.elapsed();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && log.contains("is converted"), "the conversion did not run: {log}");
    let after = std::fs::metadata(data.join("derived.redb")).map(|m| m.len()).unwrap_or(0);
    println!(
        "pecgate: the first open after the upgrade (format 5 converted, derived.redb packed): {} ({:.1} -> {:.1} MB)",
        fmt_d(took),
        before as f64 / 1e6,
        after as f64 / 1e6
    );
}

// ---------------------------------------------------------------------------
// The messages

/// splitmix64: the same stream for message `i` in every run, so the
/// archive, the Maildir and the second put_blob pass see the same bytes.
struct Rng(u64);

impl Rng {
    fn new(i: usize) -> Rng {
        Rng((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5ca1_ab1e)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// One item of a `|`-separated list.
    fn pick(&mut self, list: &'static str) -> &'static str {
        let k = self.below(list.split('|').count());
        list.split('|').nth(k).unwrap_or_default()
    }
}

// Word lists, `|`-separated (one line each, whatever the formatter does
// to arrays).
const NAMES: &str = "Mario|Giulia|Luca|Francesca|Marco|Chiara|Andrea|Sara|Paolo|Elena|Giorgio|Anna|Stefano|Laura|Davide|Silvia";
const SURNAMES: &str = "Rossi|Bianchi|Russo|Ferrari|Esposito|Romano|Colombo|Ricci|Marino|Greco|Bruno|Gallo|Conti|De Luca|Costa|Giordano";
const DOMAINS: &str = "pec.comune.roma.example.it|pec.ordineavvocati.example.it|legalmail.example.it|pec.aruba.example.it|pec.agenziaentrate.example.it|pec.inps.example.it|pec.regione.example.it|pec.impresa.example.it";
const KINDS: &str = "Richiesta|Comunicazione|Notifica|Sollecito|Istanza|Fattura|Verbale|Convocazione|Determina|Avviso";
const TOPICS: &str = "accesso agli atti|rimborso TARI|permesso di costruire|certificato di residenza|pagamento sanzione|ricorso amministrativo|gara di appalto|variazione anagrafica|concessione suolo pubblico|contributo economico|segnalazione guasto|convenzione";
const WORDS: &str = "si|comunica|che|la|pratica|in|oggetto|risulta|ancora|sospesa|per|mancanza|della|documentazione|richiesta|con|nota|del|protocollo|generale|ufficio|entro|giorni|dalla|presente|allegato|modulo|firmato|digitalmente|ai|sensi|decreto|legislativo|termine|istanza|cittadino|servizio|tributi|comune|dirigente";

/// Which message (1-based) has [`UNIQUE`] in its subject: the middle one.
fn unique_index(n: usize) -> usize {
    n.div_ceil(2)
}

/// Internal date of message `i` of `n`: ten years from 2016-01-04, evenly
/// spread (the last is the newest).
fn date_of(i: usize, n: usize) -> DateTime<Utc> {
    let start = Utc
        .with_ymd_and_hms(2016, 1, 4, 8, 0, 0)
        .single()
        .expect("start date");
    let span = 3652 * 86_400i64;
    start + chrono::Duration::seconds(span * i as i64 / n.max(1) as i64)
}

/// Message `i` (1-based) of `n`: ≈ 500 B–2 KB, a distinct subject ("Kind
/// n. i/year - topic"), one of 32,768 senders; every tenth looks like a PEC
/// transport envelope (From "Per conto di", `X-Trasporto`).
fn message(i: usize, n: usize) -> Vec<u8> {
    let mut r = Rng::new(i);
    let at = date_of(i, n);
    let local = at.with_timezone(&chrono::FixedOffset::east_opt(3600).expect("offset"));
    let (name, surname, domain) = (r.pick(NAMES), r.pick(SURNAMES), r.pick(DOMAINS));
    let sender = format!(
        "{}.{}{}@{domain}",
        name.to_lowercase(),
        surname.to_lowercase().replace(' ', ""),
        r.below(16)
    );
    let topic = if i == unique_index(n) {
        format!("{UNIQUE} smarrito nel parco")
    } else {
        r.pick(TOPICS).to_string()
    };
    let subject = format!("{} n. {i}/{} - {topic}", r.pick(KINDS), local.format("%Y"));
    let pec = i.is_multiple_of(10);
    let mut m = String::with_capacity(2048);
    if pec {
        let _ = write!(
            m,
            "From: \"Per conto di: {sender}\" <posta-certificata@{domain}>\r\nReply-To: {sender}\r\nSubject: POSTA CERTIFICATA: {subject}\r\nX-Trasporto: posta-certificata\r\nX-Riferimento-Message-ID: <orig{i}@{domain}>\r\n"
        );
    } else {
        let _ = write!(
            m,
            "From: {name} {surname} <{sender}>\r\nSubject: {subject}\r\n"
        );
    }
    let _ = write!(
        m,
        "To: {ADDRESS}\r\nDate: {}\r\nMessage-ID: <scale{i}.{:08x}@{domain}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGentile ufficio,\r\n",
        local.to_rfc2822(),
        r.next() as u32
    );
    // Mostly 500 B–1.5 KB, one in eight up to 2 KB.
    let size = if r.below(8) == 0 {
        1500 + r.below(500)
    } else {
        500 + r.below(1000)
    };
    let mut line = String::new();
    while m.len() + line.len() + 40 < size {
        let w = r.pick(WORDS);
        if line.len() + w.len() > 72 {
            m.push_str(&line);
            m.push_str("\r\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        m.push_str(&line);
        m.push_str("\r\n");
    }
    let _ = write!(m, "\r\nCordiali saluti\r\n{name} {surname}\r\n");
    m.into_bytes()
}

// ---------------------------------------------------------------------------
// Sizes on disk

#[derive(Default, Clone, Copy)]
struct Du {
    /// Sum of file lengths.
    bytes: u64,
    /// Blocks the files take (st_blocks × 512).
    allocated: u64,
    files: u64,
}

/// Files under `path` (symbolic links not followed).
/// The index in a data directory, whichever form this code keeps it in:
/// `index.redb` and `derived.redb` (redb), or `index/` (sled, before).
fn index_du(data: &Path) -> Du {
    let mut d = Du::default();
    for p in ["index", "index.redb", "derived.redb"] {
        let x = du(&data.join(p));
        d.bytes += x.bytes;
        d.allocated += x.allocated;
        d.files += x.files;
    }
    d
}

fn du(path: &Path) -> Du {
    let mut d = Du::default();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() {
            d.bytes += meta.len();
            d.allocated += meta.blocks() * 512;
            d.files += 1;
        }
    }
    d
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn fmt_d(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// The median of `ds`, then every one: "0.5 ms (0.4 ms, 0.5 ms, 0.9 ms)".
fn fmt_all(ds: &[Duration]) -> String {
    let all: Vec<String> = ds.iter().map(|d| fmt_d(*d)).collect();
    format!("median {} ({})", fmt_d(median(ds)), all.join(", "))
}

fn median(ds: &[Duration]) -> Duration {
    let mut v = ds.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------
// Fill (cached)

/// The cache of one size: see the module doc.
struct Cache {
    dir: PathBuf,
    n: usize,
}

impl Cache {
    fn archive(&self) -> PathBuf {
        self.dir.join("archive")
    }
    fn maildir(&self) -> PathBuf {
        self.dir.join("maildir")
    }
    fn fill_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(self.dir.join("fill.json")).ok()?).ok()
    }
    fn maildir_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(self.dir.join("maildir.json")).ok()?).ok()
    }

    /// Fill the archive unless the cache has it; returns fill.json.
    fn ensure_archive(&self, rt: &tokio::runtime::Runtime) -> serde_json::Value {
        if let Some(v) = self.fill_json() {
            println!(
                "archive: cached in {} (filled {})",
                self.dir.display(),
                v["when"].as_str().unwrap_or("?")
            );
            return v;
        }
        std::fs::create_dir_all(&self.dir).expect("create the cache directory");
        let partial = self.dir.join("archive.partial");
        let _ = std::fs::remove_dir_all(&partial);
        let n = self.n;
        println!(
            "archive: filling {n} messages into {} (fill version {FILL_VERSION})",
            partial.display()
        );
        let t0 = Instant::now();
        let (index_at_fill, blob_bytes) = rt.block_on(fill_archive(&partial, n));
        let took = t0.elapsed();
        let rate = n as f64 / took.as_secs_f64();
        println!(
            "archive: {n} messages archived in {:.1} s ({rate:.0} msg/s)",
            took.as_secs_f64()
        );
        // The index is not kept (each run builds its own); its size as
        // this code left it is worth a line.
        for p in ["index.redb", "derived.redb"] {
            let _ = std::fs::remove_file(partial.join(p));
        }
        let _ = std::fs::remove_dir_all(partial.join("index"));
        let _ = std::fs::remove_file(partial.join("status.json"));
        let blobs = du(&partial.join("blobs"));
        let journal = du(&partial.join("journal"));
        let v = serde_json::json!({
            "messages": n,
            "fill_version": FILL_VERSION,
            "when": Utc::now().to_rfc3339(),
            "commit": git_head(),
            "fill_seconds": took.as_secs_f64(),
            "fill_msg_per_s": rate,
            "message_bytes": blob_bytes,
            "index_bytes_at_fill": index_at_fill.bytes,
            "index_allocated_at_fill": index_at_fill.allocated,
            "blobs_bytes": blobs.bytes,
            "blobs_allocated": blobs.allocated,
            "blobs_files": blobs.files,
            "journal_bytes": journal.bytes,
            "journal_allocated": journal.allocated,
            "loadavg": loadavg(),
        });
        let _ = std::fs::remove_dir_all(self.archive());
        std::fs::rename(&partial, self.archive()).expect("rename the filled archive");
        std::fs::write(
            self.dir.join("fill.json"),
            serde_json::to_vec_pretty(&v).expect("json"),
        )
        .expect("write fill.json");
        v
    }

    /// Write the Maildir unless the cache has it; returns maildir.json.
    fn ensure_maildir(&self) -> serde_json::Value {
        if let Some(v) = self.maildir_json() {
            println!("maildir: cached in {}", self.maildir().display());
            return v;
        }
        let partial = self.dir.join("maildir.partial");
        let _ = std::fs::remove_dir_all(&partial);
        let n = self.n;
        let t0 = Instant::now();
        fill_maildir(&partial, n);
        let took = t0.elapsed();
        println!(
            "maildir: {n} messages written in {:.1} s",
            took.as_secs_f64()
        );
        let d = du(&partial);
        let v = serde_json::json!({
            "messages": n,
            "fill_version": FILL_VERSION,
            "when": Utc::now().to_rfc3339(),
            "write_seconds": took.as_secs_f64(),
            "bytes": d.bytes,
            "allocated": d.allocated,
        });
        let _ = std::fs::remove_dir_all(self.maildir());
        std::fs::rename(&partial, self.maildir()).expect("rename the Maildir");
        std::fs::write(
            self.dir.join("maildir.json"),
            serde_json::to_vec_pretty(&v).expect("json"),
        )
        .expect("write maildir.json");
        v
    }
}

fn git_head() -> String {
    Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Archive messages 1..=n into protocollo/INBOX: blobs `FILL_CONCURRENCY`
/// at a time, one `commit_batch` per `FILL_BATCH` (the commit of a batch
/// overlaps the blobs of the next). Returns the index's size as this code
/// left it and the messages' bytes.
async fn fill_archive(data: &Path, n: usize) -> (Du, u64) {
    let (store, _) = Store::open(data, StoreOptions::default()).expect("open store");
    let t0 = Instant::now();
    let mut pending: Option<tokio::task::JoinHandle<()>> = None;
    let mut bytes = 0u64;
    let mut start = 1;
    while start <= n {
        let end = (start + FILL_BATCH).min(n + 1);
        let blobs: Vec<_> = futures::stream::iter(start..end)
            .map(|i| {
                let store = store.clone();
                async move {
                    let raw = message(i, n);
                    (store.put_blob(raw).await.expect("put_blob"), date_of(i, n))
                }
            })
            .buffered(FILL_CONCURRENCY)
            .collect()
            .await;
        let entries: Vec<_> = blobs
            .into_iter()
            .map(|(blob, at)| {
                bytes += blob.size;
                (
                    Audit::system("scale", "archive"),
                    Change::Archive {
                        mailbox: MAILBOX.into(),
                        folder: "INBOX".into(),
                        blob,
                        internal_date: at,
                        flags: vec![],
                        provider: None,
                        pec: None,
                        handling: None,
                    },
                )
            })
            .collect();
        if let Some(p) = pending.take() {
            p.await.expect("commit task");
        }
        let st = store.clone();
        pending = Some(tokio::spawn(async move {
            let done = st.commit_batch(entries).await.expect("commit_batch");
            assert!(
                done.iter().all(|c| matches!(
                    &c.event,
                    pecgate::store::Event::Archived {
                        duplicate: false,
                        ..
                    }
                )),
                "every message is new"
            );
        }));
        let s = t0.elapsed().as_secs_f64();
        eprint!(
            "\rarchived {}/{n} ({:.0} msg/s)   ",
            end - 1,
            (end - 1) as f64 / s
        );
        start = end;
    }
    if let Some(p) = pending {
        p.await.expect("commit task");
    }
    eprintln!();
    store.flush_index().await.expect("flush index");
    store.close().expect("close store");
    drop(store);
    (index_du(data), bytes)
}

/// The uid and gid Dovecot's mail processes run as (see tests/support:
/// `dovecot` when we are root, else ourselves).
fn mail_owner() -> (u32, u32) {
    let me = std::fs::metadata("/proc/self").expect("stat /proc/self");
    if me.uid() != 0 {
        return (me.uid(), me.gid());
    }
    let id = |a: &str| {
        let o = Command::new("id")
            .args([a, "dovecot"])
            .output()
            .expect("id dovecot");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .expect("the dovecot user (dovecot-core installed?)")
    };
    (id("-u"), id("-g"))
}

/// Messages 1..=n as a Maildir INBOX: files in `cur/` named as Dovecot
/// names them (`<time>.M<i>P0.scale,S=<size>:2,`, time = the internal
/// date, so Dovecot numbers them in the archive's order), mtime = the
/// internal date, owned by Dovecot's mail user. Written by 4 threads, no
/// fsync (a cache, rebuilt on loss).
fn fill_maildir(maildir: &Path, n: usize) {
    let (uid, gid) = mail_owner();
    for d in ["", "cur", "new", "tmp"] {
        let p = maildir.join(d);
        std::fs::create_dir_all(&p).expect("mkdir maildir");
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown maildir");
    }
    let cur = maildir.join("cur");
    let done = std::sync::atomic::AtomicUsize::new(0);
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (cur, done) = (&cur, &done);
            s.spawn(move || {
                for i in (1 + t..=n).step_by(threads) {
                    let raw = message(i, n);
                    let at = date_of(i, n);
                    let path = cur.join(format!(
                        "{}.M{i}P0.scale,S={}:2,",
                        at.timestamp(),
                        raw.len()
                    ));
                    let f = std::fs::File::create(&path).expect("create message file");
                    std::io::Write::write_all(&mut &f, &raw).expect("write message file");
                    f.set_modified(std::time::SystemTime::from(at))
                        .expect("mtime");
                    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                        .expect("chown message file");
                    let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if k.is_multiple_of(10_000) {
                        eprint!("\rmaildir: {k}/{n}   ");
                    }
                }
            });
        }
    });
    eprintln!();
}

// ---------------------------------------------------------------------------
// The IMAP client (the same for both servers)

fn tls_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.expect("PEM certificate")).expect("add CA");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A minimal IMAP client: LOGIN, SELECT, FETCH, SEARCH.
struct Client {
    io: BufReader<TlsStream<TcpStream>>,
    tag: u32,
}

/// What one command brought back.
#[derive(Default)]
struct Reply {
    exists: Option<usize>,
    fetches: usize,
    /// The numbers of the `* SEARCH` line.
    search: Option<Vec<u32>>,
}

impl Client {
    /// Connect, handshake, read the greeting. Err while nothing listens.
    async fn connect(port: u16, tls: Arc<rustls::ClientConfig>) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let stream = TlsConnector::from(tls).connect(name, tcp).await?;
        let mut c = Client {
            io: BufReader::with_capacity(256 * 1024, stream),
            tag: 0,
        };
        let mut greeting = String::new();
        c.io.read_line(&mut greeting).await?;
        assert!(greeting.starts_with("* OK"), "greeting: {greeting:?}");
        Ok(c)
    }

    async fn cmd(&mut self, text: &str) -> Reply {
        match tokio::time::timeout(COMMAND_TIMEOUT, self.run(text)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("{text}: {e}"),
            Err(_) => panic!("{text}: no answer in {COMMAND_TIMEOUT:?}"),
        }
    }

    /// One command, timed from sending it to its tagged OK.
    async fn timed(&mut self, text: &str) -> (Duration, Reply) {
        let t = Instant::now();
        let r = self.cmd(text).await;
        (t.elapsed(), r)
    }

    async fn run(&mut self, text: &str) -> Result<Reply, String> {
        self.tag += 1;
        let tag = format!("a{} ", self.tag);
        let io = self.io.get_mut();
        io.write_all(format!("{tag}{text}\r\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        io.flush().await.map_err(|e| format!("flush: {e}"))?;
        let mut r = Reply::default();
        let mut l = String::new();
        let mut skip = Vec::new();
        loop {
            l.clear();
            let n = self
                .io
                .read_line(&mut l)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            if let Some(rest) = l.strip_prefix(&tag) {
                return if rest.starts_with("OK") {
                    Ok(r)
                } else {
                    Err(rest.trim_end().into())
                };
            }
            if let Some(rest) = l.strip_prefix("* ") {
                if rest.contains(" FETCH (") {
                    r.fetches += 1;
                } else if let Some(e) = rest.strip_suffix(" EXISTS\r\n") {
                    r.exists = e.parse().ok();
                } else if let Some(s) = rest.strip_prefix("SEARCH") {
                    r.search = Some(
                        s.split_whitespace()
                            .filter_map(|v| v.parse().ok())
                            .collect(),
                    );
                }
            }
            // A literal ends the line: `{N}`; its bytes follow, then the
            // rest of the response.
            if let Some(len) = l
                .trim_end()
                .strip_suffix('}')
                .and_then(|s| s.rsplit_once('{'))
                .and_then(|(_, v)| v.parse::<usize>().ok())
            {
                skip.resize(len, 0);
                self.io
                    .read_exact(&mut skip)
                    .await
                    .map_err(|e| format!("literal: {e}"))?;
            }
        }
    }
}

/// What one server did with the session script.
#[derive(Default, Clone)]
struct Script {
    login: Duration,
    select_cold: Duration,
    select_warm: Duration,
    fetch50: Duration,
    search_first: Duration,
    search_second: Duration,
}

/// LOGIN, SELECT INBOX twice (checked to hold `n`), FETCH the last 50
/// (FLAGS ENVELOPE), UID SEARCH SUBJECT [`UNIQUE`] twice (one hit).
///
/// Every command after the first SELECT waits [`PAUSE`] first: pecgate
/// reuses a folder's list read in the same second at the same store
/// generation (`src/imap/shared.rs`), and the refresh after a command
/// reads that list too. Without the pause a command following a fast one
/// would measure that reuse (a FETCH right after a 0.5 s SELECT took
/// 2.4 ms at 200,000 messages, one after a 4 s SELECT 2.8 s at a million),
/// so each command is measured on its own, as a client that comes back
/// later sees it.
async fn session_script(
    c: &mut Client,
    user: &str,
    password: &str,
    n: usize,
    name: &str,
) -> Script {
    let mut s = Script::default();
    (s.login, _) = c.timed(&format!("LOGIN {user} \"{password}\"")).await;
    let (d, r) = c.timed("SELECT INBOX").await;
    assert_eq!(r.exists, Some(n), "{name}: SELECT INBOX: EXISTS");
    s.select_cold = d;
    println!("{name}: SELECT INBOX (cold) {}", fmt_d(d));
    tokio::time::sleep(PAUSE).await;
    let (d, r) = c.timed("SELECT INBOX").await;
    assert_eq!(r.exists, Some(n), "{name}: SELECT INBOX again: EXISTS");
    s.select_warm = d;
    println!("{name}: SELECT INBOX (warm) {}", fmt_d(d));
    let first = n.saturating_sub(49).max(1);
    tokio::time::sleep(PAUSE).await;
    let (d, r) = c
        .timed(&format!("FETCH {first}:{n} (FLAGS ENVELOPE)"))
        .await;
    assert_eq!(r.fetches, n + 1 - first, "{name}: FETCH lines");
    s.fetch50 = d;
    println!("{name}: FETCH {first}:{n} (FLAGS ENVELOPE) {}", fmt_d(d));
    for k in 0..2 {
        tokio::time::sleep(PAUSE).await;
        let (d, r) = c.timed(&format!("UID SEARCH SUBJECT {UNIQUE}")).await;
        let hits = r.search.unwrap_or_default();
        assert_eq!(
            hits.len(),
            1,
            "{name}: UID SEARCH SUBJECT {UNIQUE}: {hits:?}"
        );
        println!(
            "{name}: UID SEARCH SUBJECT {UNIQUE} ({}) {} -> UID {}",
            ["first", "second"][k],
            fmt_d(d),
            hits[0]
        );
        if k == 0 {
            s.search_first = d;
        } else {
            s.search_second = d;
        }
    }
    s
}

// ---------------------------------------------------------------------------
// pecgate

struct PecgateFigures {
    index_rebuilt: Du,
    index: Du,
    index_after_run: Du,
    /// After the second `put_blob` pass, before the store closed.
    index_open: Option<Du>,
    journal_after_run: Du,
    rebuild: Duration,
    rebuild_records: u64,
    derive: Option<Duration>,
    start_to_greeting: Duration,
    script: Script,
    /// The cold SELECT after each start (the script's first).
    colds: Vec<Duration>,
    rss_one: u64,
    rss_many: u64,
    sessions_opened: usize,
    select_many_p50: Duration,
    select_many_max: Duration,
    hwm: u64,
    noop_after_change: Duration,
}

fn write_config(
    dir: &Path,
    data: &Path,
    port: u16,
    chain: &Path,
    key: &Path,
    sessions: usize,
) -> PathBuf {
    let hash = pecgate::auth::hash_password(PASSWORD).expect("hash");
    let room = sessions + 16;
    let text = format!(
        "[store]\ndata_dir = \"{}\"\n\n\
         [[mailbox]]\nalias = \"{MAILBOX}\"\naddress = \"{ADDRESS}\"\nusername = \"u\"\npassword = \"p\"\n\
         imap = {{ host = \"127.0.0.1\", port = 9, tls = \"none\" }}\noffload = {{ mode = \"never\" }}\npoll_interval = \"1h\"\n\n\
         [imap]\nlisten = [\"127.0.0.1:{port}\"]\nmax_sessions_per_user = {room}\nmax_sessions_per_address = {room}\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[user]]\nname = \"{USER}\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"{MAILBOX}\"\ngrants = {{ {MAILBOX} = [\"read\", \"triage\"] }}\n",
        data.display(),
        chain.display(),
        key.display(),
    );
    let config = dir.join("pecgate.toml");
    std::fs::write(&config, text).expect("write config");
    config
}

/// A fresh data directory from the cache: the journal copied, `blobs` a
/// symbolic link to the cached blobs (nothing here writes a blob).
fn fresh_data(cache: &Cache, data: &Path) {
    let src = cache.archive();
    std::fs::create_dir_all(data.join("journal")).expect("mkdir journal");
    for e in std::fs::read_dir(src.join("journal"))
        .expect("read the cached journal")
        .flatten()
    {
        std::fs::copy(e.path(), data.join("journal").join(e.file_name()))
            .expect("copy a journal segment");
    }
    std::os::unix::fs::symlink(src.join("blobs"), data.join("blobs")).expect("link blobs");
}

/// Put every message's bytes again (they are all stored: nothing is
/// written but what archiving derives from them). Returns how long.
/// The second `put_blob` pass: how long it took, and the index's files
/// while the store was still open (before the close packs them).
fn derive_again(rt: &tokio::runtime::Runtime, data: &Path, n: usize) -> (Duration, Du) {
    rt.block_on(async {
        let (store, _) = Store::open(data, StoreOptions::default()).expect("open store");
        let t0 = Instant::now();
        let mut puts = futures::stream::iter(1..=n)
            .map(|i| {
                let store = store.clone();
                async move { store.put_blob(message(i, n)).await.expect("put_blob again") }
            })
            .buffer_unordered(8);
        let mut k = 0usize;
        while puts.next().await.is_some() {
            k += 1;
            if k.is_multiple_of(20_000) {
                eprint!("\rput_blob again: {k}/{n}   ");
            }
        }
        eprintln!();
        drop(puts);
        let took = t0.elapsed();
        store.flush_index().await.expect("flush index");
        let open = index_du(data);
        store.close().expect("close store");
        drop(store);
        (took, open)
    })
}

fn run_pecgate(
    cache: &Cache,
    rt: &tokio::runtime::Runtime,
    run: &Path,
    tls: &TlsFiles,
) -> PecgateFigures {
    let n = cache.n;
    let sessions = env("SCALE_SESSIONS", 100).max(1);
    let rss_limit_kib = env("SCALE_RSS_LIMIT_MIB", 8192) as u64 * 1024;
    let data = run.join("data");
    fresh_data(cache, &data);
    let port = support::free_port();
    let config = write_config(run, &data, port, &tls.chain, &tls.key, sessions);

    // 1. rebuild-index with the code under test.
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["store", "rebuild-index", "--config"])
        .arg(&config)
        .output()
        .expect("run pecgate store rebuild-index");
    let rebuild = t0.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rebuild-index: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuild_records = text
        .split_whitespace()
        .find_map(|w| w.parse::<u64>().ok())
        .unwrap_or(0);
    let index_rebuilt = index_du(&data);
    println!(
        "pecgate: store rebuild-index: {} ({rebuild_records} records, {:.0} msg/s); index {}",
        fmt_d(rebuild),
        n as f64 / rebuild.as_secs_f64(),
        mb(index_rebuilt.bytes)
    );

    // 2. What archiving derives from the bytes, derived again.
    let derived = flag("SCALE_DERIVE", true).then(|| derive_again(rt, &data, n));
    let (derive, index_open) = (derived.map(|d| d.0), derived.map(|d| d.1));
    let index = index_du(&data);
    if let Some(d) = derive {
        println!(
            "pecgate: put_blob of every message again: {}; index {}",
            fmt_d(d),
            mb(index.bytes)
        );
    }

    // 3. serve: until the greeting arrives over TLS.
    let log = run.join("serve.log");
    let t0 = Instant::now();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start pecgate serve");
    let pid = child.id();
    let cfg = tls_config(&std::fs::read(&tls.ca).expect("read CA"));
    let (start_to_greeting, mut first) = rt.block_on(async {
        loop {
            if let Ok(c) = Client::connect(port, cfg.clone()).await {
                return (t0.elapsed(), c);
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "pecgate serve exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(600),
                "pecgate serve did not greet in 600 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    println!(
        "pecgate: serve started, IMAP greeting after {}",
        fmt_d(start_to_greeting)
    );

    // 4. One session, then many.
    let script = rt.block_on(session_script(&mut first, USER, PASSWORD, n, "pecgate"));
    std::thread::sleep(Duration::from_secs(1));
    let rss_one = proc_status_kib(pid, "VmRSS");
    println!("pecgate: VmRSS with one session selected: {}", mib(rss_one));
    let conc = 2;
    let (others, lat) = rt.block_on(async {
        let mut others = Vec::new();
        let mut lat = Vec::new();
        while others.len() + 1 < sessions {
            let k = (sessions - 1 - others.len()).min(conc);
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..k {
                let cfg = cfg.clone();
                set.spawn(async move {
                    let mut c = Client::connect(port, cfg).await.expect("connect");
                    c.cmd(&format!("LOGIN {USER} \"{PASSWORD}\"")).await;
                    let (d, r) = c.timed("SELECT INBOX").await;
                    assert_eq!(r.exists, Some(n), "SELECT INBOX: EXISTS");
                    (c, d)
                });
            }
            while let Some(j) = set.join_next().await {
                let (c, d) = j.expect("session task");
                others.push(c);
                lat.push(d);
            }
            let rss = proc_status_kib(pid, "VmRSS");
            if (others.len() + 1) / 10 != (others.len() + 1 - k) / 10 {
                eprintln!(
                    "pecgate: {} sessions selected, VmRSS {}",
                    others.len() + 1,
                    mib(rss)
                );
            }
            if rss > rss_limit_kib {
                println!(
                    "pecgate: VmRSS {} is past SCALE_RSS_LIMIT_MIB: no more sessions",
                    mib(rss)
                );
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        (others, lat)
    });
    let rss_many = proc_status_kib(pid, "VmRSS");
    let hwm = proc_status_kib(pid, "VmHWM");
    let sessions_opened = others.len() + 1;
    // Another session flags a message; the first, selected all along,
    // learns of it at its next command: the refresh of a million-message
    // list after one change (brought up to date from the writer's
    // changes, not read again).
    let mut others = others;
    let (noop_after_change, noop_again) = rt.block_on(async {
        let Some(flagger) = others.first_mut() else { return Default::default() };
        flagger.cmd(&format!("STORE {n} +FLAGS (\\Flagged)")).await;
        tokio::time::sleep(PAUSE).await;
        let (d, r) = first.timed("NOOP").await;
        assert_eq!(r.fetches, 1, "NOOP after another session's STORE: one FETCH");
        tokio::time::sleep(PAUSE).await;
        let (again, _) = first.timed("NOOP").await;
        (d, again)
    });
    println!(
        "pecgate: NOOP after another session's STORE on message {n}: {} (the next NOOP {})",
        fmt_d(noop_after_change),
        fmt_d(noop_again)
    );
    let mut sorted = lat.clone();
    sorted.sort();
    let select_many_p50 = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let select_many_max = sorted.last().copied().unwrap_or_default();
    println!(
        "pecgate: VmRSS with {sessions_opened} sessions selected: {} (peak {}); their SELECTs p50 {}, max {}",
        mib(rss_many),
        mib(hwm),
        fmt_d(select_many_p50),
        fmt_d(select_many_max)
    );
    drop(others);
    drop(first);

    // 5. Stop; the index as the run left it.
    // SAFETY: a plain syscall on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while matches!(child.try_wait(), Ok(None)) {
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let index_after_run = index_du(&data);
    let journal_after_run = du(&data.join("journal"));
    // Where the index's bytes are, table by table (packed at the stop).
    match Command::new(env!("CARGO_BIN_EXE_pecgate")).args(["store", "stats", "--config"]).arg(&config).output() {
        Ok(o) if o.status.success() => print!("pecgate: store stats after the run:\n{}", String::from_utf8_lossy(&o.stdout)),
        Ok(o) => println!("pecgate: store stats failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("pecgate: store stats did not run: {e}"),
    }
    // 6. The cold SELECT again, after more starts (one sample a start).
    let mut colds = vec![script.select_cold];
    for _ in 1..env("SCALE_COLD_STARTS", 5) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pecgate serve");
        let d = rt.block_on(async {
            let t0 = Instant::now();
            let mut c = loop {
                if let Ok(c) = Client::connect(port, cfg.clone()).await {
                    break c;
                }
                assert!(t0.elapsed() < Duration::from_secs(600), "pecgate serve did not greet in 600 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            c.cmd(&format!("LOGIN {USER} \"{PASSWORD}\"")).await;
            let (d, r) = c.timed("SELECT INBOX").await;
            assert_eq!(r.exists, Some(n), "SELECT INBOX: EXISTS");
            d
        });
        colds.push(d);
        // SAFETY: a plain syscall on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    println!("pecgate: SELECT INBOX (cold), one a start: {}", fmt_all(&colds));
    if flag("SCALE_CONVERT", false) {
        upgrade_from_format_5(&data, &config);
    }
    PecgateFigures {
        colds,
        index_rebuilt,
        index,
        index_after_run,
        index_open,
        journal_after_run,
        rebuild,
        rebuild_records,
        derive,
        start_to_greeting,
        script,
        rss_one,
        rss_many,
        sessions_opened,
        select_many_p50,
        select_many_max,
        hwm,
        noop_after_change,
    }
}

// ---------------------------------------------------------------------------
// Dovecot

struct DovecotFigures {
    /// The first session ever: Dovecot builds its index and caches.
    first_ever: Script,
    /// The cold SELECT after each restart (the first: `after_restart`'s).
    colds: Vec<Duration>,
    /// The same script after a restart, index and caches on disk: the
    /// column compared with pecgate.
    after_restart: Script,
    imap_rss: u64,
    index: Du,
}

/// VmRSS of the `imap` processes in process group `pgid` (Dovecot's
/// master and its children).
fn group_imap_rss(pgid: u32) -> u64 {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let pgrp = stat[close + 1..]
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse::<u32>().ok());
        if pgrp == Some(pgid) && &stat[open + 1..close] == "imap" {
            total += proc_status_kib(pid, "VmRSS");
        }
    }
    total
}

fn run_dovecot(cache: &Cache, rt: &tokio::runtime::Runtime, tls: &TlsFiles) -> DovecotFigures {
    let n = cache.n;
    // Index and control files (dovecot-uidlist) in this run's home, the
    // Maildir itself shared with later runs: each run's first SELECT is
    // Dovecot's first ever.
    let mut dv = support::Dovecot::start(
        support::DovecotOptions::new().user(support::UserSpec::new("bench", "pw-bench")).tls(true).extra_config(&format!(
            "ssl_cert = <{}\nssl_key = <{}\nmail_location = maildir:{}:INDEX=~/index:CONTROL=~/control\n\
             # 256 MB (the default) kills the imap process indexing a million messages\ndefault_vsz_limit = 4G\n",
            tls.chain.display(),
            tls.key.display(),
            cache.maildir().display()
        )),
    );
    let home = dv.dir().join("home/bench");
    let (uid, gid) = mail_owner();
    std::fs::create_dir_all(&home).expect("mkdir home");
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).expect("chown home");
    let port = dv.tls_port.expect("dovecot tls port");
    let cfg = tls_config(&std::fs::read(&tls.ca).expect("read CA"));
    let script = |name: &'static str| {
        let cfg = cfg.clone();
        async move {
            let mut c = Client::connect(port, cfg)
                .await
                .expect("connect to dovecot");
            let s = session_script(&mut c, "bench", "pw-bench", n, name).await;
            (c, s)
        }
    };
    let (c, first_ever) = rt.block_on(script("dovecot, first session ever"));
    drop(c);
    dv.stop();
    let index = du(&home);
    dv.start_again();
    let pgid = dv.pid().expect("dovecot pid");
    let (c, after_restart) = rt.block_on(script("dovecot, after a restart"));
    std::thread::sleep(Duration::from_secs(1));
    let imap_rss = group_imap_rss(pgid);
    println!(
        "dovecot: VmRSS of its imap process with one session selected: {}",
        mib(imap_rss)
    );
    drop(c);
    // The cold SELECT again, after more restarts (one sample a start).
    let mut colds = vec![after_restart.select_cold];
    for _ in 1..env("SCALE_COLD_STARTS", 5) {
        dv.stop();
        dv.start_again();
        let d = rt.block_on(async {
            let mut c = Client::connect(port, cfg.clone()).await.expect("connect to dovecot");
            c.cmd("LOGIN bench \"pw-bench\"").await;
            let (d, r) = c.timed("SELECT INBOX").await;
            assert_eq!(r.exists, Some(n), "dovecot: SELECT INBOX: EXISTS");
            d
        });
        colds.push(d);
    }
    println!("dovecot: SELECT INBOX (cold), one a restart: {}", fmt_all(&colds));
    DovecotFigures {
        colds,
        first_ever,
        after_restart,
        imap_rss,
        index,
    }
}

// ---------------------------------------------------------------------------

struct TlsFiles {
    ca: PathBuf,
    chain: PathBuf,
    key: PathBuf,
}

fn tls_files(dir: &Path) -> TlsFiles {
    let cert = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").expect("certificate");
    let f = TlsFiles {
        ca: dir.join("ca.pem"),
        chain: dir.join("chain.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&f.ca, &cert.ca).expect("write ca");
    std::fs::write(&f.chain, &cert.chain).expect("write chain");
    std::fs::write(&f.key, &cert.key).expect("write key");
    f
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n = env("SCALE_MESSAGES", if benching { 1_000_000 } else { 2_000 }).max(1);
    let with_dovecot = flag("SCALE_DOVECOT", true);
    let root = std::env::var_os("SCALE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/pecgate-scale"));
    let cache = Cache {
        dir: root.join(format!("scale-{n}-v{FILL_VERSION}")),
        n,
    };
    println!(
        "scale: messages={n} commit={} cache={} (load average {})",
        git_head(),
        cache.dir.display(),
        loadavg()
    );
    if flag("SCALE_REFILL", false) {
        let _ = std::fs::remove_dir_all(&cache.dir);
    }
    // Traversable by Dovecot's user.
    std::fs::create_dir_all(&cache.dir).expect("create the cache");
    for d in [&root, &cache.dir] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod cache");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t_all = Instant::now();
    let fill = cache.ensure_archive(&rt);
    let maildir = with_dovecot.then(|| cache.ensure_maildir());

    let run = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&root)
        .expect("run directory");
    let tls = tls_files(run.path());
    let t_run = Instant::now();
    let p = run_pecgate(&cache, &rt, run.path(), &tls);
    let d = with_dovecot.then(|| run_dovecot(&cache, &rt, &tls));
    let run_time = t_run.elapsed();

    // The table.
    let f = |k: &str| fill[k].as_u64().unwrap_or(0);
    let per = |b: u64| b as f64 / n as f64;
    let s = &p.script;
    let dv =
        |g: &dyn Fn(&DovecotFigures) -> String| d.as_ref().map(g).unwrap_or_else(|| "—".into());
    let under = |ours: Duration, limit: f64, theirs: Option<Duration>| {
        ours.as_secs_f64() < limit && theirs.is_none_or(|t| ours <= t)
    };
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut row = |a: &str, b: String, c: String, t: &str, m: &str| {
        rows.push([a.into(), b, c, t.into(), m.into()])
    };
    row(
        "index on disk (as archiving leaves it)",
        format!("{} ({:.0} B/msg)", mb(p.index.bytes), per(p.index.bytes)),
        dv(&|d| format!("{} ({:.0} B/msg)", mb(d.index.bytes), per(d.index.bytes))),
        "≤ 400 B/msg",
        met(per(p.index.bytes) <= 400.0),
    );
    row(
        "blobs / journal on disk",
        format!(
            "{} ({} allocated) / {}",
            mb(f("blobs_bytes")),
            mb(f("blobs_allocated")),
            mb(f("journal_bytes"))
        ),
        maildir
            .as_ref()
            .map(|m| {
                format!(
                    "Maildir {} ({} allocated)",
                    mb(m["bytes"].as_u64().unwrap_or(0)),
                    mb(m["allocated"].as_u64().unwrap_or(0))
                )
            })
            .unwrap_or_else(|| "—".into()),
        "",
        "",
    );
    row(
        "`serve` start until the IMAP greeting (TLS)",
        fmt_d(p.start_to_greeting),
        "—".into(),
        "< 2 s",
        met(p.start_to_greeting.as_secs_f64() < 2.0),
    );
    row(
        "SELECT INBOX, cold (first after start)",
        fmt_d(s.select_cold),
        dv(&|d| fmt_d(d.after_restart.select_cold)),
        "< 0.5 s, ≤ Dovecot",
        met(under(
            s.select_cold,
            0.5,
            d.as_ref().map(|d| d.after_restart.select_cold),
        )),
    );
    row(
        &format!("SELECT INBOX, cold: median of {} starts", p.colds.len()),
        fmt_d(median(&p.colds)),
        dv(&|d| fmt_d(median(&d.colds))),
        "≤ Dovecot",
        met(under(median(&p.colds), 0.5, d.as_ref().map(|d| median(&d.colds)))),
    );
    row(
        "SELECT INBOX, warm (again, 1 s later)",
        fmt_d(s.select_warm),
        dv(&|d| fmt_d(d.after_restart.select_warm)),
        "< 0.5 s, ≤ Dovecot",
        met(under(
            s.select_warm,
            0.5,
            d.as_ref().map(|d| d.after_restart.select_warm),
        )),
    );
    row(
        "FETCH last 50 (FLAGS ENVELOPE)",
        fmt_d(s.fetch50),
        dv(&|d| fmt_d(d.after_restart.fetch50)),
        "< 50 ms",
        met(s.fetch50.as_secs_f64() < 0.05),
    );
    row(
        "UID SEARCH SUBJECT (1 hit), first",
        fmt_d(s.search_first),
        dv(&|d| fmt_d(d.after_restart.search_first)),
        "< 1 s",
        met(s.search_first.as_secs_f64() < 1.0),
    );
    row(
        "UID SEARCH SUBJECT (1 hit), second",
        fmt_d(s.search_second),
        dv(&|d| fmt_d(d.after_restart.search_second)),
        "< 1 s",
        met(s.search_second.as_secs_f64() < 1.0),
    );
    row(
        "Dovecot's first session ever (it builds its index): SELECT, again, FETCH 50, SEARCH ×2",
        "—".into(),
        dv(&|d| {
            let f = &d.first_ever;
            format!(
                "{}, {}, {}, {} / {}",
                fmt_d(f.select_cold),
                fmt_d(f.select_warm),
                fmt_d(f.fetch50),
                fmt_d(f.search_first),
                fmt_d(f.search_second)
            )
        }),
        "",
        "",
    );
    row(
        "RSS, one session selected",
        mib(p.rss_one),
        dv(&|d| format!("{} (its imap process)", mib(d.imap_rss))),
        "< 400 MiB",
        met(p.rss_one < 400 * 1024),
    );
    row(
        "NOOP after another session flagged a message (the refresh)",
        fmt_d(p.noop_after_change),
        "—".into(),
        "",
        "",
    );
    row(
        &format!("RSS, {} sessions selected", p.sessions_opened),
        mib(p.rss_many),
        "—".into(),
        "< 600 MiB (100 sessions)",
        met(p.rss_many < 600 * 1024 && p.sessions_opened >= 100),
    );
    let rebuild_rate = n as f64 / p.rebuild.as_secs_f64();
    row(
        "`store rebuild-index`",
        format!("{} ({rebuild_rate:.0} msg/s)", fmt_d(p.rebuild)),
        "—".into(),
        "≥ 50,000 msg/s",
        met(rebuild_rate >= 50_000.0),
    );
    row(
        "fill through the store API",
        format!(
            "{:.0} s ({:.0} msg/s{})",
            fill["fill_seconds"].as_f64().unwrap_or(0.0),
            fill["fill_msg_per_s"].as_f64().unwrap_or(0.0),
            if fill["commit"] == git_head() {
                ""
            } else {
                ", cached"
            }
        ),
        maildir
            .as_ref()
            .map(|m| {
                format!(
                    "Maildir written in {:.0} s",
                    m["write_seconds"].as_f64().unwrap_or(0.0)
                )
            })
            .unwrap_or_else(|| "—".into()),
        "",
        "",
    );
    println!();
    println!(
        "Ten-year scale, {n} messages in one INBOX (commit {}, load average {})",
        git_head(),
        loadavg()
    );
    println!();
    println!("| row | pecgate | Dovecot | target | |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
    }
    println!();
    println!(
        "pecgate index: {} after rebuild-index, {} after put_blob again{}{}, {} after the run (journal {} then); at fill time (commit {}) {}",
        mb(p.index_rebuilt.bytes),
        mb(p.index.bytes),
        p.derive.map(|d| format!(" ({})", fmt_d(d))).unwrap_or_else(|| " (skipped)".into()),
        p.index_open.map(|d| format!(", {} ({:.0} B/msg) before that store closed", mb(d.bytes), per(d.bytes))).unwrap_or_default(),
        mb(p.index_after_run.bytes),
        mb(p.journal_after_run.bytes),
        fill["commit"].as_str().unwrap_or("?"),
        mb(f("index_bytes_at_fill"))
    );
    println!(
        "pecgate: rebuild-index applied {} journal records; login {}; {} more sessions' SELECT p50 {}, max {}; VmHWM {}",
        p.rebuild_records,
        fmt_d(s.login),
        p.sessions_opened - 1,
        fmt_d(p.select_many_p50),
        fmt_d(p.select_many_max),
        mib(p.hwm)
    );
    println!(
        "messages: {} bytes ({:.0} B/msg); run (without the fill) {:.0} s, all {:.0} s",
        f("message_bytes"),
        per(f("message_bytes")),
        run_time.as_secs_f64(),
        t_all.elapsed().as_secs_f64()
    );
    if flag("SCALE_KEEP", false) {
        println!("run directory kept: {}", run.keep().display());
    }
}
