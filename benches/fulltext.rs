//! The full-text index on its own, with realistic mail: N messages of
//! ≈ 20 KB of Italian administrative prose (a fixed vocabulary of ≈ 2,000
//! words, Zipf-like, so common words are common and rare ones rare; one
//! message in a thousand carries the word searched for), extracted and
//! indexed as the daemon's indexer does (`fulltext::extract` and the
//! analysis on `indexer::Workers`, a thread per core, 256 messages at a
//! time, then `FullText::add_prepared` in order, a commit per 20,000;
//! the messages of each 20,000 are made before the clock starts), then one-word and two-word IMAP
//! BODY queries (`imap_matches`, what SEARCH BODY asks) and a ranked
//! `search`. Prints messages per second, the index's size against the
//! messages' bytes, the process's CPU time, and query latencies (median
//! of 20 after a warm-up).
//!
//! ```text
//! FULLTEXT_MESSAGES=100000 cargo bench --bench fulltext
//! ```
//! `FULLTEXT_DIR` keeps the index there (default: a temporary directory);
//! `FULLTEXT_REUSE=1` then times the queries on the index already there.
//! `FULLTEXT_MAILDIR=DIR` writes the same messages as a Maildir instead
//! (`DIR/cur/…`) and indexes nothing: what `benches/fulltext-dovecot.sh`
//! gives Dovecot with fts-xapian, side by side.

#[path = "fulltext_support/mod.rs"]
mod messages;

use std::time::Instant;

use messages::{message, Rng, SEED};

use pecgate::fulltext::extract::{extract, Limits};
use pecgate::fulltext::indexer::{Workers, BATCH};
use pecgate::fulltext::{Doc, Filter, FullText};

fn main() {
    let n: usize = std::env::var("FULLTEXT_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    if let Ok(maildir) = std::env::var("FULLTEXT_MAILDIR") {
        let cur = std::path::Path::new(&maildir).join("cur");
        for d in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(std::path::Path::new(&maildir).join(d)).unwrap();
        }
        let mut r = Rng(SEED);
        for i in 0..n {
            let raw = message(i, &mut r);
            std::fs::write(cur.join(format!("{}.{i}.bench,S={}:2,S", 1_700_000_000 + i, raw.len())), raw).unwrap();
        }
        println!("wrote {n} messages to {maildir}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var("FULLTEXT_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| tmp.path().to_path_buf());
    let ft = FullText::open(&dir, true).unwrap();
    // FULLTEXT_REUSE=1 with FULLTEXT_DIR: time the queries on the index
    // a previous run left there (a million messages take ten minutes).
    let reuse = std::env::var("FULLTEXT_REUSE").is_ok_and(|v| v == "1") && ft.documents() > 0;
    if reuse {
        println!("reusing the index in {} ({} documents)", dir.display(), ft.documents());
    } else {
        ft.clear().unwrap();
    }
    let n = if reuse { 0 } else { n };
    let mut r = Rng(SEED);
    let limits = Limits::default();
    let mut workers = Workers::new();
    let (mut secs, mut making, mut bytes, mut done) = (0f64, 0f64, 0u64, 0usize);
    let cpu0 = cpu_seconds();
    while done < n {
        // The next 20,000 messages, made (and hashed) before the clock starts.
        let t = Instant::now();
        let raws: Vec<(Vec<u8>, String)> = (done..n.min(done + 20_000))
            .map(|i| {
                use sha2::Digest;
                let raw = message(i, &mut r);
                let hash = hex::encode(sha2::Sha256::digest(&raw));
                (raw, hash)
            })
            .collect();
        making += t.elapsed().as_secs_f64();
        bytes += raws.iter().map(|(raw, _)| raw.len() as u64).sum::<u64>();
        let t = Instant::now();
        let make = |(raw, hash): &(Vec<u8>, String)| {
            let text = extract(raw, &limits);
            Some(Doc {
                mailbox: "protocollo".into(),
                hash: hash.clone(),
                date: chrono::Utc::now(),
                kind: "certified",
                text,
            })
        };
        for batch in raws.chunks(BATCH) {
            for p in workers.prepare(&ft, batch, &make).into_iter().flatten() {
                ft.add_prepared(p).unwrap();
            }
        }
        done += raws.len();
        ft.commit(done as u64).unwrap();
        secs += t.elapsed().as_secs_f64();
        eprintln!("{done} indexed, {:.0}/s (load average {})", done as f64 / secs, loadavg());
    }
    let cpu = cpu_seconds() - cpu0;
    println!("(making the messages took {making:.1} s, not counted; the process used {cpu:.1} s of CPU in all, making included)");
    let size: u64 = walk(ft.dir());
    if !reuse {
        println!(
            "indexed {n} messages ({:.1} MB) in {secs:.1} s: {:.0} messages/s",
            bytes as f64 / 1e6,
            n as f64 / secs
        );
        println!(
            "index {:.1} MB = {:.1} % of the messages' bytes",
            size as f64 / 1e6,
            100.0 * size as f64 / bytes as f64
        );
    }
    println!("load average {}", loadavg());
    let time = |what: &str, f: &dyn Fn() -> usize| {
        f();
        let mut ms: Vec<f64> = (0..20)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        println!("{what}: {} hits, median {:.2} ms, max {:.2} ms", f(), ms[10], ms[19]);
    };
    time("BODY raccomandata (rare)", &|| ft.imap_matches("protocollo", "raccomandata", false).unwrap().unwrap().len());
    time("BODY sollecito (common stem)", &|| ft.imap_matches("protocollo", "sollecito", false).unwrap().unwrap().len());
    time("BODY raccom (prefix)", &|| ft.imap_matches("protocollo", "raccom", false).unwrap().unwrap().len());
    time("BODY raccomandata urgente", &|| {
        ft.imap_matches("protocollo", "raccomandata urgente", false).unwrap().unwrap().len()
    });
    time("search raccomandata, top 20", &|| {
        ft.search(&["protocollo".into()], "raccomandata", &Filter::default(), 20).unwrap().len()
    });
}

fn walk(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| if e.path().is_dir() { walk(&e.path()) } else { e.metadata().map(|m| m.len()).unwrap_or(0) })
                .sum()
        })
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The process's user + system CPU time so far (/proc/self/stat, in clock
/// ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}
