//! Handling at scale (issue 8's performance section): a mailbox whose INBOX
//! holds N certified envelopes, filled through the store API, every one
//! tracked for handling; then
//!
//! 1. `pecgate rules apply --dry-run --json` over it, timed as a process
//!    (messages/s), twice: with all N still `new` (every message's blob is
//!    read and the rules run on it) and after N − K are marked `done` (what
//!    a working mailbox looks like: only the K new ones are routed);
//! 2. `pecgate serve` over loopback TLS: SELECT + `FETCH 1:* (UID FLAGS)` of
//!    `prot/To handle` (K messages) against the same on `prot/INBOX` (N
//!    messages), alternating, R times each: median and p90, and the ratio.
//!    Target: opening the view costs no more than opening INBOX.
//!
//! `cargo bench --bench handling_load`; scale with HANDLING_LOAD_MESSAGES
//! (N, 100000), HANDLING_LOAD_NEW (K, N/20), HANDLING_LOAD_REPS (R, 15);
//! HANDLING_LOAD_TMP puts the data directory elsewhere than the system's
//! temporary directory (e.g. /dev/shm to spare the disk the N blob fsyncs);
//! with HANDLING_LOAD_KEEP set, the directory (data, pecgate.toml) is kept.

#[path = "bench_client/mod.rs"]
mod bench_client;
#[path = "../tests/imap_support/mod.rs"]
mod imap_support;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bench_client::{loadavg, ms, pct, Client};
use chrono::Utc;
use futures::StreamExt;
use pecgate::handling::{Action, Routing, Transition};
use pecgate::store::{Audit, Change, Store, StoreOptions};

const ADDRESS: &str = "protocollo@pec.comune.example.it";
const MAILBOX: &str = "prot";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A certified envelope to the benchmark's mailbox.
fn envelope(pki: &pecgate::sim::pki::Pki, sender: &str, subject: &str, n: u32) -> Vec<u8> {
    support::certified_envelope(pki, sender, ADDRESS, subject, n)
}

/// Envelope `i`: one of the templates with a header of its own in front,
/// so that every blob is distinct (the archive de-duplicates by hash).
fn variant(templates: &[Vec<u8>], i: usize) -> Vec<u8> {
    let t = &templates[i % templates.len()];
    let mut raw = format!("X-Bench-Seq: {i}\r\n").into_bytes();
    raw.extend_from_slice(t);
    raw
}

/// Archive `n` tracked certified messages in prot/INBOX, all `new`.
/// Returns their blob hashes, in UID order.
fn archive(data: &Path, n: usize) -> Vec<String> {
    let pki = pecgate::sim::pki::Pki::generate("posta-certificata@pec.mittente.example.it").expect("pki");
    let templates: [Vec<u8>; TEMPLATES] = [
        envelope(&pki, "vigili@pec.polizia.example.it", "Verbale di accertamento n. 123/2026", 1),
        envelope(&pki, "cittadino@pec.example.org", "Richiesta certificato di residenza", 2),
        envelope(&pki, "ufficio@pec.fornitore.example.it", "Fattura n. 42 del 2026", 3),
        envelope(&pki, "vigili@pec.polizia.example.it", "Sanzione amministrativa n. 77/2026", 4),
    ];
    let first = pecgate::upstream::filing::file(&variant(&templates, 0), false, Utc::now(), None);
    assert_eq!(first.folder, "INBOX", "a certified envelope is filed in INBOX");
    println!("envelope size: {} bytes", variant(&templates, 0).len());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (store, _) = Store::open(data, StoreOptions::default()).expect("open store");
        let mut hashes = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let end = (start + CHUNK).min(n);
            // Blobs: written (each fsynced) 32 at a time.
            let blobs: Vec<_> = futures::stream::iter(start..end)
                .map(|i| {
                    let store = store.clone();
                    let raw = variant(&templates, i);
                    async move {
                        let at = Utc::now();
                        let filing = pecgate::upstream::filing::file(&raw, false, at, None);
                        let blob = store.put_blob(raw).await.expect("blob");
                        (blob, filing, at)
                    }
                })
                .buffered(32)
                .collect()
                .await;
            let entries = blobs
                .into_iter()
                .map(|(blob, filing, at)| {
                    hashes.push(blob.hash.clone());
                    (
                        Audit::system("bench", "archive"),
                        Change::Archive {
                            mailbox: MAILBOX.into(),
                            folder: filing.folder,
                            blob,
                            internal_date: at,
                            flags: vec![],
                            provider: None,
                            pec: Some(filing.meta.into()),
                            // As if no rule existed yet when they arrived:
                            // tracked, new, for anyone with the mailbox.
                            handling: Some(Routing::default()),
                        },
                    )
                })
                .collect();
            let done = store.commit_batch(entries).await.expect("archive batch");
            assert!(done.iter().all(|c| matches!(&c.event, pecgate::store::Event::Archived { duplicate: false, .. })));
            start = end;
            eprint!("\rarchived {end}/{n}");
        }
        eprintln!();
        store.close().expect("close store");
        hashes
    })
}

/// Does message `i` stay new? One run of four consecutive messages (one of
/// each template) in every `keep` runs, so the new ones are spread over
/// INBOX and mixed.
fn stays_new(i: usize, keep: usize) -> bool {
    (i / TEMPLATES).is_multiple_of(keep)
}

/// Envelope templates (see [`archive`]).
const TEMPLATES: usize = 4;

/// Mark done (as mario) every message that does not [`stays_new`].
fn mark_done(data: &Path, hashes: &[String], keep: usize) -> usize {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (store, _) = Store::open(data, StoreOptions::default()).expect("open store");
        let to_done: Vec<String> =
            hashes.iter().enumerate().filter(|(i, _)| !stays_new(*i, keep)).map(|(_, h)| h.clone()).collect();
        for (k, part) in to_done.chunks(CHUNK).enumerate() {
            let entries = part
                .chunks(500)
                .map(|hs| {
                    (
                        Audit::system("bench", "done"),
                        Change::Handle {
                            mailbox: MAILBOX.into(),
                            hashes: hs.to_vec(),
                            transition: Transition::new(Action::Done, "mario"),
                        },
                    )
                })
                .collect();
            store.commit_batch(entries).await.expect("done batch");
            eprint!("\rdone {}/{}", ((k + 1) * CHUNK).min(to_done.len()), to_done.len());
        }
        eprintln!();
        store.close().expect("close store");
        to_done.len()
    })
}

/// Messages per commit_batch.
const CHUNK: usize = 5_000;

/// `pecgate rules apply --dry-run --json`: (wall time, its report).
fn dry_run(config: &Path) -> (Duration, serde_json::Value) {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["rules", "apply", "--config"])
        .arg(config)
        .args(["--mailbox", MAILBOX, "--dry-run", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pecgate rules apply");
    let took = t0.elapsed();
    assert!(out.status.success(), "rules apply: {}", String::from_utf8_lossy(&out.stderr));
    (took, serde_json::from_slice(&out.stdout).expect("rules apply --json"))
}

/// One opening of `folder`: (SELECT, FETCH) latencies.
async fn open(c: &mut Client, folder: &str, expect: usize) -> (Duration, Duration) {
    let t0 = Instant::now();
    let r = c.cmd(&format!("SELECT \"{folder}\"")).await;
    let select = t0.elapsed();
    assert_eq!(r.exists, Some(expect), "{folder}: EXISTS");
    let t1 = Instant::now();
    let r = c.cmd("FETCH 1:* (UID FLAGS)").await;
    let fetch = t1.elapsed();
    assert_eq!(r.fetches, expect, "{folder}: FETCH lines");
    (select, fetch)
}


fn main() {
    let n = env("HANDLING_LOAD_MESSAGES", 100_000);
    let new = env("HANDLING_LOAD_NEW", n / 20).clamp(1, n);
    let reps = env("HANDLING_LOAD_REPS", 15).max(1);
    let keep = (n / new).max(1);
    let new = (0..n).filter(|i| stays_new(*i, keep)).count();
    println!("handling_load: messages={n} new={new} reps={reps} (load average {})", loadavg());

    let dir = match std::env::var_os("HANDLING_LOAD_TMP") {
        Some(p) => tempfile::tempdir_in(p),
        None => tempfile::tempdir(),
    }
    .expect("tempdir");
    if std::env::var_os("HANDLING_LOAD_KEEP").is_some() {
        // Kept for a look afterwards (`pecgate serve --config DIR/pecgate.toml`).
        println!("data directory kept: {}", dir.path().display());
    }
    let data = dir.path().join("data");
    // Configuration: two offices, two rules and a default office.
    let cert = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").expect("cert");
    let (ca, chain, key) = (dir.path().join("ca.pem"), dir.path().join("chain.pem"), dir.path().join("key.pem"));
    std::fs::write(&ca, &cert.ca).expect("write ca");
    std::fs::write(&chain, &cert.chain).expect("write chain");
    std::fs::write(&key, &cert.key).expect("write key");
    let port = imap_support::free_port();
    let hash = pecgate::auth::hash_password(imap_support::PASSWORD).expect("hash");
    let text = format!(
        "[store]\ndata_dir = \"{}\"\n\n\
         [[mailbox]]\nalias = \"{MAILBOX}\"\naddress = \"{ADDRESS}\"\nusername = \"u\"\npassword = \"p\"\n\
         imap = {{ host = \"127.0.0.1\", port = 9, tls = \"none\" }}\noffload = {{ mode = \"never\" }}\npoll_interval = \"1h\"\n\
         default_office = \"anagrafe\"\ndefault_due = \"60d\"\n\n\
         [imap]\nlisten = [\"127.0.0.1:{port}\"]\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[user]]\nname = \"mario\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"{MAILBOX}\"\ngrants = {{ {MAILBOX} = [\"read\", \"triage\"] }}\n\n\
         [[office]]\nname = \"tributi\"\nmembers = [\"mario\"]\n\n\
         [[office]]\nname = \"anagrafe\"\nmembers = []\n\n\
         [[rule]]\nmailbox = \"{MAILBOX}\"\nname = \"multe\"\n\
         match = {{ from_domain = \"pec.polizia.example.it\", subject = \"(?i)verbale|sanzione\" }}\n\
         assign = \"tributi\"\nkeywords = [\"$Multe\"]\ndue = \"30d\"\n\n\
         [[rule]]\nmailbox = \"{MAILBOX}\"\nname = \"fatture\"\n\
         match = {{ subject = \"(?i)fattura\", body = \"(?i)testo del messaggio\" }}\n\
         assign = \"tributi\"\n",
        data.display(),
        chain.display(),
        key.display(),
    );
    let config = dir.path().join("pecgate.toml");
    std::fs::write(&config, text).expect("write config");

    let t0 = Instant::now();
    let hashes = archive(&data, n);
    let fill_time = t0.elapsed();
    println!(
        "filled: {n} messages archived and tracked (new) in {:.1} s ({:.0}/s)",
        fill_time.as_secs_f64(),
        n as f64 / fill_time.as_secs_f64()
    );

    // 1. rules apply --dry-run: all new, then with N - K done.
    let apply = |label: &str, routed_expected: usize| {
        let (took, rep) = dry_run(&config);
        let examined = rep["examined"].as_u64().unwrap_or(0);
        let routed = rep["opened"].as_u64().unwrap_or(0) + rep["assigned"].as_u64().unwrap_or(0);
        assert_eq!(examined, n as u64, "rules apply examined: {rep}");
        assert_eq!(routed, routed_expected as u64, "rules apply routed: {rep}");
        println!(
            "rules apply --dry-run, {label}: {n} messages examined, {routed} routed {} in {:.2} s: {:.0} messages/s",
            rep["by_rule"],
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
    };
    apply("all new", n);
    let t1 = Instant::now();
    let done = mark_done(&data, &hashes, keep);
    assert_eq!(done, n - new);
    println!("{done} marked done in {:.1} s", t1.elapsed().as_secs_f64());
    apply(&format!("{new} new, {done} done"), new);

    // 2. pecgate serve: SELECT + FETCH FLAGS of To handle and of INBOX.
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start pecgate serve");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("pecgate serve exited early ({st}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "pecgate serve did not listen in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let view = format!("{MAILBOX}/To handle");
    let inbox = format!("{MAILBOX}/INBOX");
    let (v, i) = rt.block_on(async {
        let mut c = Client::connect(port, &ca).await;
        c.cmd(&format!("LOGIN mario \"{}\"", imap_support::PASSWORD)).await;
        // Warm both once.
        open(&mut c, &view, new).await;
        open(&mut c, &inbox, n).await;
        let (mut v, mut i) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            v.push(open(&mut c, &view, new).await);
            i.push(open(&mut c, &inbox, n).await);
        }
        c.cmd("LOGOUT").await;
        (v, i)
    });
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "{:<16} {:>8} {:>12} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "folder", "messages", "SELECT p50", "SELECT p90", "FETCH p50", "FETCH p90", "SELECT+FETCH p50", "SELECT+FETCH p90"
    );
    let mut p50 = Vec::new();
    for (name, count, lat) in [(&view, new, &v), (&inbox, n, &i)] {
        let sel: Vec<Duration> = lat.iter().map(|l| l.0).collect();
        let fet: Vec<Duration> = lat.iter().map(|l| l.1).collect();
        let tot: Vec<Duration> = lat.iter().map(|l| l.0 + l.1).collect();
        println!(
            "{name:<16} {count:>8} {:>10.1}ms {:>10.1}ms {:>10.1}ms {:>10.1}ms {:>14.1}ms {:>14.1}ms",
            ms(pct(&sel, 0.5)),
            ms(pct(&sel, 0.9)),
            ms(pct(&fet, 0.5)),
            ms(pct(&fet, 0.9)),
            ms(pct(&tot, 0.5)),
            ms(pct(&tot, 0.9))
        );
        p50.push(pct(&tot, 0.5));
    }
    println!(
        "ratio To handle / INBOX, SELECT+FETCH p50: {:.3} (target <= 1) (load average {})",
        p50[0].as_secs_f64() / p50[1].as_secs_f64().max(1e-9),
        loadavg()
    );
    if std::env::var_os("HANDLING_LOAD_KEEP").is_some() {
        let _ = dir.keep();
    }
}
