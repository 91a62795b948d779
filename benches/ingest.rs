//! Ingest throughput: pecgate pulling a mailbox from a local Dovecot into its
//! archive (fsync on), against mbsync pulling the same mailbox into a
//! Maildir (its default: fsync on), in the same run.
//!
//!     cargo bench --bench ingest            # 2,000 messages, ~110 MB
//!     PECGATE_BENCH_MESSAGES=500 cargo bench --bench ingest
//!
//! Prints one line per tool and the ratio; BENCHMARKS.md records the result.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::gateway::{mailbox_toml, Gateway};
use support::{make_message, Dovecot, DovecotOptions, UserSpec};

const USER: &str = "bench@pec.example.it";
const PASS: &str = "bench-secret";

fn size(i: usize) -> usize {
    // The same mix as the offload test: mostly small, some large.
    match i % 100 {
        0 => 2 * 1024 * 1024,
        n if n % 10 == 0 => 200 * 1024,
        n => 2 * 1024 + (n * 997 % 40) * 1024,
    }
}

fn report(name: &str, n: usize, bytes: usize, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    println!(
        "{name:<28} {n} messages, {:.1} MB in {:.2} s: {:.0} messages/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        s,
        n as f64 / s,
        bytes as f64 / 1e6 / s
    );
    n as f64 / s
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing:
    // run a tiny smoke round then.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("PECGATE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 2000 } else { 50 });
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new(USER, PASS).quota(8 << 30, 10_000_000)));
    let msgs: Vec<Vec<u8>> = (0..n).map(|i| make_message(i, size(i))).collect();
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    dv.imap(USER).append("INBOX", msgs.iter().map(|m| m.as_slice()));

    // mbsync into a Maildir.
    let tmp = tempfile::tempdir().unwrap();
    let maildir = tmp.path().join("Maildir");
    std::fs::create_dir_all(&maildir).unwrap();
    let rc = tmp.path().join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount bench\nHost 127.0.0.1\nPort {}\nUser {USER}\nPass {PASS}\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount bench\n\n\
             MaildirStore local\nPath {}/\nInbox {}/INBOX\n\n\
             Channel pull\nFar :remote:\nNear :local:\nPatterns INBOX\nSync Pull\nCreate Near\nSyncState *\n",
            dv.port,
            maildir.display(),
            maildir.display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = Command::new("mbsync").arg("-c").arg(&rc).arg("-a").output().expect("mbsync (Debian package isync)");
    let mbsync_time = t.elapsed();
    assert!(out.status.success(), "mbsync failed: {}", String::from_utf8_lossy(&out.stderr));
    let got = std::fs::read_dir(maildir.join("INBOX/cur")).map(|d| d.count()).unwrap_or(0)
        + std::fs::read_dir(maildir.join("INBOX/new")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(got, n, "mbsync pulled every message");
    let mb = report("mbsync -> Maildir", n, bytes, mbsync_time);

    // pecgate into its archive (offload "never": the same work as mbsync).
    let mut g = Gateway::new(&mailbox_toml("bench", USER, PASS, dv.port, "offload = { mode = \"never\" }"));
    let t = Instant::now();
    g.start();
    g.wait_mailbox("bench", Duration::from_secs(600), "all archived", |s| s["archived_total"] == n);
    let pg_time = t.elapsed();
    g.stop();
    let pg = report("pecgate -> archive", n, bytes, pg_time);
    println!("ratio pecgate/mbsync (messages/s): {:.2}", pg / mb);
}
