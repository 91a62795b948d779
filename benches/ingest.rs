//! Ingest throughput: pecgate pulling a mailbox from a local Dovecot into its
//! archive (fsync on), against mbsync pulling the same mailbox into a
//! Maildir (its default: fsync on), in the same run.
//!
//!     cargo bench --bench ingest            # 2,000 messages, ~120 MB
//!     PECGATE_BENCH_MESSAGES=500 cargo bench --bench ingest
//!
//! The default mix is mostly small messages (issue 2), and pecgate runs
//! with offload `never` (the same work as mbsync). `PECGATE_BENCH_MIX=
//! loguniform` (issue 14) is 1,000 messages of sizes log-uniform between
//! 2 KiB and 2 MiB (a fixed seed: every run loads the same ≈ 300 MB), and
//! pecgate also deletes each message from the provider once archived
//! (offload `after-archive`), which mbsync does not.
//!
//! Other knobs:
//!
//! * `PECGATE_BENCH_RUNS=3`: repeat the whole round (fresh Dovecot each
//!   time) and print every round;
//! * `PECGATE_BENCH_SKIP_MBSYNC=1`: pecgate only (for profiling);
//! * `PECGATE_BENCH_ATTACH='strace -c -f -o /tmp/s.txt -p {pid}'`: start
//!   this command against pecgate's pid once it is spawned and stop it
//!   (SIGINT) when the last message is in; `perf record -g -p {pid}` works
//!   the same way;
//! * `PECGATE_BENCH_WARM_BLOB_DIRS=1`: create the archive's 65,536 blob
//!   directories (`blobs/xx/yy`) before pecgate starts, as in an archive
//!   that already holds a few hundred thousand messages: a fresh one pays
//!   a `mkdir` and a directory fsync for nearly every blob;
//! * `PECGATE_BENCH_STORE_ONLY=1`: no IMAP at all, only the archive's
//!   blob writes of the same messages (`Store::put_blob`, 64 at a time as
//!   the upstream sync does), in this process: the floor under pecgate's
//!   time that the store sets;
//! * `PECGATE_BENCH_LOG=/tmp/pecgate.log`: keep pecgate's log (debug, with
//!   timestamps) of the last round there;
//! * `PECGATE_BENCH_FS=host`: write the Maildir and the archive where
//!   the machine's temporary files go, instead of on a fresh file system.
//!
//! Where both tools write. By default (as root, with `mkfs.ext4` and
//! `losetup`) the bench makes a fresh ext4 file system with the Debian
//! defaults (a journal) in a sparse file in the temporary directory, on a loop device
//! doing direct I/O (an fsync reaches the disk below), and both the
//! Maildir and the archive go there; it is removed at the end. The
//! provider's mail (Dovecot's) goes on tmpfs: it stands for a remote
//! server, whose files, fsyncs and deletes (pecgate's offload) are not
//! this disk's work. Without that, on a host file system shared with other
//! work, what the machine did in the last minutes moved the result: on
//! ext4 without a journal, each new inode is looked for past those freed
//! in the last one to six minutes, which cost whichever tool ran after a
//! removal up to a fifth of its CPU (BENCHMARKS.md).
//!
//! Prints one line per tool and the ratio; BENCHMARKS.md records the result.

mod ingest_mix;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ingest_mix::{size_small, sizes_loguniform};
use support::gateway::{mailbox_toml, Gateway};
use support::{make_message, Dovecot, DovecotOptions, UserSpec};

const USER: &str = "bench@pec.example.it";
const PASS: &str = "bench-secret";

#[derive(Clone, Copy, PartialEq)]
enum Mix {
    /// Issue 2: mostly 2–40 KB, every tenth 200 KB, every hundredth 2 MB.
    Small,
    /// Issue 14: log-uniform between 2 KiB and 2 MiB.
    LogUniform,
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

/// CPU time (user, system) of the children waited for so far: the
/// difference around a tool's run is its own, whatever else the machine
/// is doing.
fn children_cpu() -> (f64, f64) {
    rusage(libc::RUSAGE_CHILDREN)
}

/// This process's own CPU time (user, system).
fn self_cpu() -> (f64, f64) {
    rusage(libc::RUSAGE_SELF)
}

fn rusage(who: libc::c_int) -> (f64, f64) {
    // SAFETY: rusage is plain integers (all zeroes is a valid value), and
    // getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

fn report_cpu(name: &str, before: (f64, f64)) {
    let after = children_cpu();
    println!("{name:<28} CPU: {:.2} s user, {:.2} s system", after.0 - before.0, after.1 - before.1);
}

/// `PECGATE_BENCH_ATTACH` started against `pid`.
fn attach(pid: u32) -> Option<Child> {
    let cmd = std::env::var("PECGATE_BENCH_ATTACH").ok().filter(|c| !c.is_empty())?;
    let cmd = cmd.replace("{pid}", &pid.to_string());
    let child = Command::new("sh").arg("-c").arg(format!("exec {cmd}")).spawn().expect("start PECGATE_BENCH_ATTACH");
    // Let strace/perf attach before the first FETCH.
    std::thread::sleep(Duration::from_millis(300));
    Some(child)
}

fn detach(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
        let _ = c.wait();
    }
}

/// One round: mbsync, then pecgate, on the same messages. Every directory
/// it made is handed to `keep`, to be removed after the last round: on
/// this machine's ext4 (no journal), every new inode is looked for past
/// the ones freed in the last minutes, and removing a round's 1,000
/// messages just before the next tool ran cost that tool a fifth of its
/// CPU (`find_get_block_common`, `recently_deleted` in a profile).
fn round(mix: Mix, n: usize, skip_mbsync: bool, keep: &mut Vec<tempfile::TempDir>) {
    let mut dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new(USER, PASS).quota(8 << 30, 10_000_000)));
    let sizes: Vec<usize> = match mix {
        Mix::Small => (0..n).map(size_small).collect(),
        Mix::LogUniform => sizes_loguniform(n),
    };
    let bytes: usize = sizes.iter().sum();
    // Generated lazily: 300 MB need not sit in memory at once.
    dv.imap(USER).append("INBOX", sizes.iter().enumerate().map(|(i, s)| make_message(i, *s)));

    // mbsync into a Maildir.
    let mut mb = None;
    if !skip_mbsync {
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
        let cpu = children_cpu();
        let t = Instant::now();
        let out = Command::new("mbsync").arg("-c").arg(&rc).arg("-a").output().expect("mbsync (Debian package isync)");
        let mbsync_time = t.elapsed();
        assert!(out.status.success(), "mbsync failed: {}", String::from_utf8_lossy(&out.stderr));
        let got = std::fs::read_dir(maildir.join("INBOX/cur")).map(|d| d.count()).unwrap_or(0)
            + std::fs::read_dir(maildir.join("INBOX/new")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(got, n, "mbsync pulled every message");
        mb = Some((report("mbsync -> Maildir", n, bytes, mbsync_time), mbsync_time));
        report_cpu("mbsync -> Maildir", cpu);
        keep.push(tmp);
    }

    // pecgate into its archive.
    let offload = match mix {
        // The same work as mbsync.
        Mix::Small => "offload = { mode = \"never\" }",
        // Issue 14: the provider delete included.
        Mix::LogUniform => "offload = { mode = \"after-archive\" }",
    };
    let mut g = Gateway::new(&mailbox_toml("bench", USER, PASS, dv.port, offload));
    if std::env::var("PECGATE_BENCH_WARM_BLOB_DIRS").is_ok_and(|v| !v.is_empty() && v != "0") {
        for a in 0..256 {
            for b in 0..256 {
                std::fs::create_dir_all(g.data_dir.join(format!("blobs/{a:02x}/{b:02x}"))).unwrap();
            }
        }
    }
    let cpu = children_cpu();
    let t = Instant::now();
    g.start();
    let tracer = attach(g.pid().expect("pecgate pid"));
    let delete = mix == Mix::LogUniform;
    let what = if delete { "all archived and deleted" } else { "all archived" };
    g.wait_mailbox("bench", Duration::from_secs(900), what, |s| {
        s["archived_total"] == n && (!delete || s["deleted_this_run"] == n)
    });
    let pg_time = t.elapsed();
    detach(tracer);
    g.stop();
    if let Some(path) = std::env::var_os("PECGATE_BENCH_LOG") {
        std::fs::copy(&g.log_path, path).expect("copy pecgate's log");
    }
    let name = if delete { "pecgate -> archive + delete" } else { "pecgate -> archive" };
    let pg = report(name, n, bytes, pg_time);
    report_cpu(name, cpu);
    if let Some((mb, mb_time)) = mb {
        println!(
            "ratio pecgate/mbsync (messages/s): {:.2}   (times: mbsync {:.2} s, pecgate {:.2} s)",
            pg / mb,
            mb_time.as_secs_f64(),
            pg_time.as_secs_f64()
        );
    }
    keep.extend(dv.take_dir());
    keep.push(std::mem::replace(&mut g.dir, tempfile::tempdir().expect("tempdir")));
}

/// The archive's blob writes alone: `n` messages of the mix through
/// `Store::put_blob`, 64 in flight (upstream's BLOB_WRITERS).
fn store_only(mix: Mix, n: usize, warm: bool) {
    let sizes: Vec<usize> = match mix {
        Mix::Small => (0..n).map(size_small).collect(),
        Mix::LogUniform => sizes_loguniform(n),
    };
    let bytes: usize = sizes.iter().sum();
    let msgs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, s)| make_message(i, *s)).collect();
    let dir = tempfile::tempdir().unwrap();
    if warm {
        for a in 0..256 {
            for b in 0..256 {
                std::fs::create_dir_all(dir.path().join(format!("blobs/{a:02x}/{b:02x}"))).unwrap();
            }
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, _) = pecgate::store::Store::open(dir.path(), Default::default()).unwrap();
    let cpu = self_cpu();
    let t = Instant::now();
    rt.block_on(async {
        let mut writing: std::collections::VecDeque<tokio::task::JoinHandle<Result<_, pecgate::store::StoreError>>> =
            std::collections::VecDeque::new();
        for m in msgs {
            if writing.len() >= 64 {
                writing.pop_front().unwrap().await.unwrap().unwrap();
            }
            let store = store.clone();
            writing.push_back(tokio::spawn(async move { store.put_blob(m).await }));
        }
        for w in writing {
            w.await.unwrap().unwrap();
        }
    });
    let d = t.elapsed();
    let after = self_cpu();
    report("Store::put_blob x n", n, bytes, d);
    println!("{:<28} CPU: {:.2} s user, {:.2} s system", "Store::put_blob x n", after.0 - cpu.0, after.1 - cpu.1);
}

/// A fresh ext4 file system on a loop device (see the module doc),
/// unmounted and removed when dropped.
struct FreshFs {
    image: std::path::PathBuf,
    mount: std::path::PathBuf,
    device: String,
}

impl FreshFs {
    /// `None` (and why, printed) where it cannot be made here.
    fn make() -> Option<FreshFs> {
        let run = |cmd: &str, args: &[&str]| -> Result<String, String> {
            let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
            match out.status.success() {
                true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
                false => Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())),
            }
        };
        let base = std::env::temp_dir().join(format!("pecgate-bench-fs-{}", std::process::id()));
        let (image, mount) = (base.with_extension("img"), base.clone());
        let made = (|| -> Result<String, String> {
            std::fs::File::create(&image).and_then(|f| f.set_len(16 << 30)).map_err(|e| format!("image: {e}"))?;
            run("mkfs.ext4", &["-q", "-F", &image.to_string_lossy()])?;
            let device = run("losetup", &["--direct-io=on", "--find", "--show", &image.to_string_lossy()])?;
            std::fs::create_dir_all(&mount).map_err(|e| format!("mount point: {e}"))?;
            if let Err(e) = run("mount", &[&device, &mount.to_string_lossy()]) {
                let _ = run("losetup", &["-d", &device]);
                return Err(e);
            }
            Ok(device)
        })();
        match made {
            Ok(device) => {
                let fs = FreshFs { image, mount, device };
                // Dovecot's users and mbsync write below it too.
                let _ = Command::new("chmod").arg("1777").arg(&fs.mount).status();
                Some(fs)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&image);
                let _ = std::fs::remove_dir(&mount);
                println!("no fresh file system ({e}): writing to {}", std::env::temp_dir().display());
                None
            }
        }
    }
}

impl Drop for FreshFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing:
    // run a tiny smoke round then.
    let benching = std::env::args().any(|a| a == "--bench");
    let mix = match std::env::var("PECGATE_BENCH_MIX").as_deref() {
        Ok("loguniform") => Mix::LogUniform,
        Ok("") | Ok("small") | Err(_) => Mix::Small,
        Ok(other) => panic!("PECGATE_BENCH_MIX={other}: expected `small` or `loguniform`"),
    };
    let full = match mix {
        Mix::Small => 2000,
        Mix::LogUniform => 1000,
    };
    let n: usize = std::env::var("PECGATE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { full } else { 50 });
    let runs: usize = std::env::var("PECGATE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
    // The provider's mail on tmpfs, both tools' on a fresh file system
    // (see the module doc). Dropped last: after the directories in `keep`.
    let fresh = match std::env::var("PECGATE_BENCH_FS").as_deref() {
        Ok("host") => None,
        _ if !benching => None,
        _ => FreshFs::make(),
    };
    if let Some(fs) = &fresh {
        let (device, mount) = (&fs.device, fs.mount.display());
        println!("writing to a fresh ext4 file system on {device} (direct I/O), mounted on {mount}");
        std::env::set_var("TMPDIR", &fs.mount);
    }
    if std::env::var_os("PECGATE_TEST_TMPDIR").is_none() && std::path::Path::new("/dev/shm").is_dir() {
        std::env::set_var("PECGATE_TEST_TMPDIR", "/dev/shm");
    }
    let mut keep = Vec::new();
    for r in 0..runs {
        if runs > 1 {
            println!("-- round {} of {runs}", r + 1);
        }
        if flag("PECGATE_BENCH_STORE_ONLY") {
            store_only(mix, n, flag("PECGATE_BENCH_WARM_BLOB_DIRS"));
        } else {
            round(mix, n, flag("PECGATE_BENCH_SKIP_MBSYNC"), &mut keep);
        }
    }
}
