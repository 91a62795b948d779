//! The retention expiry run over a million-message mailbox (issue 17:
//! "the expiry run over 1,000,000 messages < 60 s").
//!
//!     SCALE_MESSAGES=1000000 cargo bench --bench expiry
//!
//! It uses the archive the scale bench fills and caches (`cargo bench
//! --bench scale` first; see benches/scale.rs): a fresh data directory
//! gets a copy of the cached journal and a hard-linked copy of the cached
//! blobs (so deleting expired blobs leaves the cache whole), `pecgate store
//! rebuild-index` builds the index, and then, through the store API as the
//! daemon does it:
//!
//! 1. the plan with a retention nothing has reached yet (`10y`): the cost
//!    of the daily run on an archive with nothing to remove;
//! 2. with one legal hold on 1,000 messages, the run with a retention
//!    everything has passed (`1s`): every message but the held ones is
//!    removed (journal records, index entries, blob files);
//! 3. `pecgate store rebuild-index` again, and the index compared with the
//!    one the run left.
//!
//! Environment: SCALE_MESSAGES (default 1,000,000; 20,000 without
//! `--bench`), SCALE_CACHE (default /var/tmp/pecgate-scale).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use pecgate::store::{Audit, Change, Event, Store, StoreOptions};

const MAILBOX: &str = "protocollo";

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("SCALE_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(if benching {
        1_000_000
    } else {
        20_000
    });
    let root =
        std::env::var_os("SCALE_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp/pecgate-scale"));
    let cache = root.join(format!("scale-{n}-v1")).join("archive");
    assert!(
        cache.join("journal").is_dir() && cache.join("blobs").is_dir(),
        "no cached archive of {n} messages in {}: run `SCALE_MESSAGES={n} SCALE_DOVECOT=0 cargo bench --bench scale` first",
        cache.display()
    );
    let run = tempfile::Builder::new().prefix("expiry-").tempdir_in(&root).expect("run dir");
    let data = run.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    println!("expiry: messages={n} commit={} cache={}", git_head(), cache.display());

    let t = Instant::now();
    sh(Command::new("cp").arg("-a").arg(cache.join("journal")).arg(data.join("journal")));
    sh(Command::new("cp").arg("-al").arg(cache.join("blobs")).arg(data.join("blobs")));
    println!("copy (journal) and hard links (blobs): {:.1} s", t.elapsed().as_secs_f64());
    let config = run.path().join("pecgate.toml");
    let write_config = |retention: &str| {
        std::fs::write(
            &config,
            format!(
                "[store]\ndata_dir = \"{}\"\n\n[[mailbox]]\nalias = \"{MAILBOX}\"\naddress = \"protocollo@pec.comune.example.it\"\n\
                 username = \"x\"\npassword = \"x\"\nimap = {{ host = \"127.0.0.1\", port = 1, tls = \"none\" }}\n\
                 retention = \"{retention}\"\n",
                data.display()
            ),
        )
        .unwrap()
    };
    write_config("10y");
    let rebuild = || {
        let t = Instant::now();
        sh(Command::new(env!("CARGO_BIN_EXE_pecgate")).args(["store", "rebuild-index", "--config"]).arg(&config));
        t.elapsed()
    };
    let r1 = rebuild();
    println!("rebuild-index: {:.1} s", r1.as_secs_f64());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, _) = Store::open(&data, StoreOptions::default()).expect("open");
    let cfg = pecgate::daemon::load_config(&config).expect("config");

    // 1. Nothing to remove: the plan is the whole run.
    let t = Instant::now();
    let outcome = rt.block_on(pecgate::retention::run(&store, &cfg, Utc::now())).expect("run");
    let idle = t.elapsed();
    assert_eq!(outcome[0].messages, 0);
    println!("run with nothing past retention (10y): {:.2} s", idle.as_secs_f64());

    // 2. A hold on 1,000 messages, then everything else expires.
    let mut held = Vec::new();
    store
        .archived_before(MAILBOX, Utc::now(), |it, _| {
            if held.len() < 1000 {
                held.push(it.hash)
            }
        })
        .unwrap();
    let ev = Event::HoldPlaced {
        mailbox: MAILBOX.into(),
        whole: false,
        hashes: held.clone(),
        reason: "bench".into(),
        query: None,
    };
    rt.block_on(store.commit(Audit::system("bench", "hold-place"), Change::Conservation(ev))).expect("hold");
    write_config("1s");
    let cfg = pecgate::daemon::load_config(&config).expect("config");
    let t = Instant::now();
    let outcome = rt.block_on(pecgate::retention::run(&store, &cfg, Utc::now())).expect("run");
    let full = t.elapsed();
    let o = &outcome[0];
    println!(
        "run removing {} messages ({} places, {} records; {} held): {:.1} s ({:.0} messages/s)",
        o.messages,
        o.places,
        o.records,
        o.held,
        full.as_secs_f64(),
        o.messages as f64 / full.as_secs_f64()
    );
    assert_eq!(o.held, 1000);
    assert_eq!(o.messages + 1000, n, "every message but the held ones");
    let blobs_left = count_files(&data.join("blobs"));
    println!("blob files left: {blobs_left}");
    let dump = store.index_dump().unwrap();
    store.close().unwrap();
    drop(store);

    // 3. The index rebuilt from the journal agrees.
    let r2 = rebuild();
    let (store, _) = Store::open(&data, StoreOptions::default()).expect("open");
    assert!(store.index_dump().unwrap() == dump, "rebuild-index disagrees with the expiry run");
    store.close().unwrap();
    println!("rebuild-index after: {:.1} s; index identical", r2.as_secs_f64());
    println!();
    println!("| what | {n} messages | target |");
    println!("|---|---|---|");
    println!("| expiry run, nothing past retention | {} | < 60 s |", secs(idle));
    println!("| expiry run removing {} (1,000 held) | {} | < 60 s |", o.messages, secs(full));
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn count_files(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_files(&p);
        } else {
            n += 1;
        }
    }
    n
}

fn sh(c: &mut Command) {
    let out = c.output().expect("run");
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn git_head() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
