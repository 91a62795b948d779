//! The full-text index on its own, with realistic mail: N messages of
//! ≈ 20 KB of Italian administrative prose (a fixed vocabulary of ≈ 2,000
//! words, Zipf-like, so common words are common and rare ones rare; one
//! message in a thousand carries the word searched for), extracted and
//! indexed as the daemon's indexer does (`fulltext::extract`, then
//! `FullText::add`, a commit per 20,000), then one-word and two-word IMAP
//! BODY queries (`imap_matches`, what SEARCH BODY asks) and a ranked
//! `search`. Prints messages per second, the index's size against the
//! messages' bytes, and query latencies (median of 20 after a warm-up).
//!
//! ```text
//! FULLTEXT_MESSAGES=100000 cargo bench --bench fulltext
//! ```
//! `FULLTEXT_DIR` keeps the index there (default: a temporary directory).
//! `FULLTEXT_MAILDIR=DIR` writes the same messages as a Maildir instead
//! (`DIR/cur/…`) and indexes nothing: what `benches/fulltext-dovecot.sh`
//! gives Dovecot with fts-xapian, side by side.

use std::time::Instant;

use pecgate::fulltext::extract::{extract, Limits};
use pecgate::fulltext::{Doc, Filter, FullText};

const STEMS: [&str; 40] = [
    "comun", "protocoll", "determin", "delibera", "pagament", "fattur", "contratt", "fornitur", "notific", "verbal",
    "sanzion", "ricors", "istanz", "certificat", "residenz", "tribut", "scadenz", "sollecit", "rimbors", "appalt",
    "progett", "lavor", "ufficio", "responsabil", "procediment", "document", "allegat", "dirigent", "sindac", "giunt",
    "consigl", "assessor", "bilanc", "contribut", "domand", "richiest", "autorizzazion", "permess", "ordinanz", "avvis",
];
const ENDINGS: [&str; 6] = ["o", "i", "a", "e", "azione", "amento"];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Zipf-like over 0..n.
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) - 1.0) as usize % n
    }
}

fn word(r: &mut Rng, vocabulary: usize) -> String {
    let k = r.zipf(vocabulary);
    let (stem, ending) = (STEMS[k % STEMS.len()], ENDINGS[(k / STEMS.len()) % ENDINGS.len()]);
    let n = k / (STEMS.len() * ENDINGS.len());
    if n == 0 {
        format!("{stem}{ending}")
    } else {
        format!("{stem}{ending}{n}")
    }
}

fn message(i: usize, r: &mut Rng) -> Vec<u8> {
    let mut body = String::with_capacity(21_000);
    while body.len() < 20_000 {
        for _ in 0..12 {
            body.push_str(&word(r, 2000));
            body.push(' ');
        }
        body.push_str(if i % 1000 == 7 && body.len() < 200 { "raccomandata urgente.\r\n" } else { "di la il per.\r\n" });
    }
    format!(
        "From: Ufficio {i} <ufficio{i}@pec.comune.example.it>\r\nTo: protocollo@pec.comune.example.it\r\n\
         Subject: Pratica n. {i} - {}\r\nMessage-ID: <{i}@bench>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        word(r, 2000)
    )
    .into_bytes()
}

fn main() {
    let n: usize = std::env::var("FULLTEXT_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    if let Ok(maildir) = std::env::var("FULLTEXT_MAILDIR") {
        let cur = std::path::Path::new(&maildir).join("cur");
        for d in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(std::path::Path::new(&maildir).join(d)).unwrap();
        }
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
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
    ft.clear().unwrap();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let limits = Limits::default();
    let (t0, mut bytes) = (Instant::now(), 0u64);
    let (mut making, mut extracting) = (0f64, 0f64);
    for i in 0..n {
        let t = Instant::now();
        let raw = message(i, &mut r);
        making += t.elapsed().as_secs_f64();
        bytes += raw.len() as u64;
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(&raw));
        let t = Instant::now();
        let text = extract(&raw, &limits);
        extracting += t.elapsed().as_secs_f64();
        let doc = Doc { mailbox: "protocollo".into(), hash, date: chrono::Utc::now(), kind: "certified", text };
        ft.add(&doc).unwrap();
        if (i + 1) % 20_000 == 0 {
            ft.commit((i + 1) as u64).unwrap();
            eprintln!("{} indexed, {:.0}/s", i + 1, (i + 1) as f64 / t0.elapsed().as_secs_f64());
        }
    }
    ft.commit(n as u64).unwrap();
    let secs = t0.elapsed().as_secs_f64() - making;
    println!("(making the messages took {making:.1} s, not counted; extracting their text {extracting:.1} s)");
    let size: u64 = walk(ft.dir());
    println!("indexed {n} messages ({:.1} MB) in {secs:.1} s: {:.0} messages/s", bytes as f64 / 1e6, n as f64 / secs);
    println!("index {:.1} MB = {:.1} % of the messages' bytes", size as f64 / 1e6, 100.0 * size as f64 / bytes as f64);
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
    time("BODY raccomandata urgente", &|| ft.imap_matches("protocollo", "raccomandata urgente", false).unwrap().unwrap().len());
    time("search raccomandata, top 20", &|| ft.search(&["protocollo".into()], "raccomandata", &Filter::default(), 20).unwrap().len());
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
