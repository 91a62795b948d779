//! Campaign load (issue 15): one campaign of N certified notices, each with
//! its own ~200 KB PDF, through the real daemon over loopback.
//!
//! It starts the PEC provider simulator (`pecgate sim-provider`, its own
//! `[mailstore]`, no rate limit, every recipient on a remote PEC domain
//! whose outcome is scripted: delivered, and 2 % each "full" and
//! "unknown") and `pecgate serve` (mailbox `prot`, sending unlimited; a
//! second mailbox `eta` limited to 6 a minute), as separate processes, so
//! the daemon's CPU and memory are its own. Then, each timed:
//!
//! 1. `pecgate campaign create` (uploads, validation, rendering, queueing;
//!    not started): its wall time;
//! 2. `campaign start` until nothing is queued or submitting: wall time and
//!    the daemon's CPU (utime + stime from `/proc/PID/stat`) per notice;
//! 3. the daemon's peak RSS (`VmRSS` every 200 ms) over the whole run;
//! 4. from the last notice accepted until every row is final (delivered or
//!    failed), and the receipts the report names;
//! 5. `campaign report` of the whole campaign (CSV, then JSON lines);
//! 6. the ETA `campaign status` gives right after starting a small campaign
//!    on the limited mailbox, against when its last notice went out.
//!
//! Each figure is printed as `key=value` (machine-parsable) and as a line
//! for people.
//!
//! `cargo bench --bench campaign_load` (builds the release binary). Knobs:
//! CAMPAIGN_LOAD_NOTICES (48397), CAMPAIGN_LOAD_PDF_BYTES (204800),
//! CAMPAIGN_LOAD_CACHE_BYTES (the index cache, `[store] cache_capacity`),
//! CAMPAIGN_LOAD_ETA (1; 0 skips phase 6), CAMPAIGN_LOAD_ETA_NOTICES (13),
//! CAMPAIGN_LOAD_KEEP=1 (keep the data under
//! /var/tmp/pecgate-campaign-bench/), CAMPAIGN_LOAD_MIN_FREE_GB (default:
//! the estimate of what the run writes, see `disk_needed`),
//! CAMPAIGN_LOAD_ATTACH (a command run once sending has gone on for 5 s,
//! `{pid}` replaced by the daemon's, stopped with SIGINT after
//! CAMPAIGN_LOAD_ATTACH_SECS, 20: e.g. `strace -c -f -o /tmp/s.txt -p {pid}`
//! or `perf record -g -o /tmp/perf.data -p {pid}`; with
//! CAMPAIGN_LOAD_ATTACH_PHASE=create, 5 s into `campaign create` instead).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::Value;

const ROOT: &str = "/var/tmp/pecgate-campaign-bench";
const PW: &str = "Bench-pass-1";
const PROT: &str = "prot@pec.sim.test";
const ETA_MB: &str = "eta@pec.sim.test";
const REMOTE: &str = "cittadini.sim";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pecgate")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

fn wait_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what}: port {port} never opened\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process stopped (SIGTERM, then SIGKILL after 60 s) when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, args: &[&str], log: &Path) -> Proc {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        // CAMPAIGN_LOAD_WRAP (e.g. `heaptrack -o /tmp/ht`): the daemon run
        // under a tool; its CPU and RSS figures are then the tool's.
        let wrap = std::env::var("CAMPAIGN_LOAD_WRAP").ok().filter(|w| !w.is_empty() && name == "serve");
        let mut cmd = match &wrap {
            Some(w) => {
                let mut words = w.split_whitespace();
                let mut c = Command::new(words.next().unwrap_or_default());
                c.args(words).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start pecgate {name}: {e}"));
        Proc { child, name }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // What a wrapper started first (a daemon under heaptrack once
        // outlived the bench), then the process itself.
        let pid = self.child.id().to_string();
        let _ = Command::new("pkill").args(["-TERM", "-P", &pid]).status();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop within 60 s of SIGTERM: killed", self.name);
        let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time (user + system) of `pid` so far, in seconds (USER_HZ = 100).
fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// CPU time of `pid` so far, in seconds: (user, system). System time
/// includes the kernel's page-cache reclaim done on the daemon's behalf,
/// which moves from run to run with what else the disk is doing.
fn cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // After `pid (comm) `: state is field 0, utime 11, stime 12.
    (f.get(11).copied().unwrap_or(0) as f64 / 100.0, f.get(12).copied().unwrap_or(0) as f64 / 100.0)
}

/// One unlabelled metric's value from the daemon's `/metrics`.
fn metric(port: u16, name: &str) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn rss_kib(pid: u32) -> Option<u64> {
    rss_parts(pid).map(|r| r.0)
}

/// (VmRSS, RssAnon, RssFile) in KiB: RssFile counts the pages of mapped
/// files (the program, the full-text index's segments) that are resident,
/// page cache the kernel can drop; RssAnon is the daemon's own memory.
fn rss_parts(pid: u32) -> Option<(u64, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:").unwrap_or(0), field("RssFile:").unwrap_or(0)))
}

/// VmRSS (and its parts) of the daemon every 200 ms, kept with the time it
/// was read.
struct RssSampler {
    samples: Arc<Mutex<Vec<(Instant, (u64, u64, u64))>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some(kib) = rss_parts(pid) {
                    s.lock().unwrap().push((Instant::now(), kib));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        RssSampler { samples, stop, thread: Some(thread) }
    }

    /// The largest sample between `from` and `to` (KiB).
    /// (A window shorter than the period gets the next sample.)
    fn max(&self, from: Instant, to: Instant) -> u64 {
        self.peak(from, to).0
    }

    /// The sample with the largest VmRSS between `from` and `to`, as
    /// (VmRSS, RssAnon, RssFile) KiB.
    fn peak(&self, from: Instant, to: Instant) -> (u64, u64, u64) {
        let to = to.max(from + Duration::from_millis(250));
        let samples = self.samples.lock().unwrap();
        samples.iter().filter(|(t, _)| *t >= from && *t <= to).map(|(_, k)| *k).max().unwrap_or_default()
    }

    /// The largest RssAnon between `from` and `to` (KiB).
    fn max_anon(&self, from: Instant, to: Instant) -> u64 {
        let samples = self.samples.lock().unwrap();
        samples.iter().filter(|(t, _)| *t >= from && *t <= to).map(|(_, k)| k.1).max().unwrap_or(0)
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Free bytes where the data goes (`df`).
fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(dir).output().expect("run df");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0)
}

/// What the run writes, in bytes, per notice of `pdf` bytes: the PDF
/// itself (input) and its upload (a blob), the rendered notice (base64:
/// 4/3 plus line breaks, ≈ 1.37×), and the delivery receipt ("completa":
/// it carries the whole notice) twice, once in the simulator's archive and
/// once in pecgate's; plus 1 GB for the rest.
fn disk_needed(notices: usize, pdf: usize) -> u64 {
    (notices as f64 * pdf as f64 * (1.0 + 1.0 + 3.0 * 1.37)) as u64 + 1_000_000_000
}

/// A one-page PDF as an office's software makes them: a line of text (the
/// notice's number, which full-text search then finds) and an image of
/// pseudo-random bytes (xorshift seeded by `seed`, so that it does not
/// compress) filling it to `size`, with a correct cross-reference table.
fn write_pdf(path: &Path, size: usize, seed: u64) {
    let content = format!("BT /F1 12 Tf 72 770 Td (Verbale n. {seed} - notifica di violazione) Tj ET\nq 400 0 0 300 72 400 cm /Im1 Do Q\n");
    let fixed = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> \
         /XObject << /Im1 6 0 R >> >> /Contents 5 0 R >>"
            .to_string(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
    ];
    let mut buf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in fixed.iter().enumerate() {
        offsets.push(buf.len());
        buf.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    // What is left for the image once the table and trailer are written.
    let image = size.saturating_sub(buf.len() + 400).max(64);
    offsets.push(buf.len());
    buf.extend_from_slice(
        format!(
            "6 0 obj\n<< /Type /XObject /Subtype /Image /Width {image} /Height 1 /ColorSpace /DeviceGray \
             /BitsPerComponent 8 /Length {image} >>\nstream\n"
        )
        .as_bytes(),
    );
    let end = buf.len() + image;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while buf.len() < end {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(end);
    buf.extend_from_slice(b"\nendstream\nendobj\n");
    let xref = buf.len();
    buf.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", offsets.len() + 1).as_bytes());
    for o in &offsets {
        buf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    buf.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", offsets.len() + 1).as_bytes(),
    );
    std::fs::write(path, buf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Recipient `i`: 2 % "full" (5.2.2), 2 % "unknown" (5.1.1), the rest delivered.
fn recipient(i: usize) -> (String, &'static str) {
    match i % 50 {
        0 => (format!("pieno{i}@{REMOTE}"), "failed"),
        1 => (format!("ignoto{i}@{REMOTE}"), "failed"),
        _ => (format!("cittadino.{i}@{REMOTE}"), "delivered"),
    }
}

const TEMPLATE: &str = "Subject: Verbale n. {{verbale}} - notifica\n\nGentile {{nome}},\n\
     le notifichiamo il verbale {{verbale}} di {{importo}} euro, allegato.\n\nDistinti saluti\n";

struct Bench {
    dir: PathBuf,
    config: PathBuf,
    record: PathBuf,
    gw_log: PathBuf,
    sim_log: PathBuf,
}

impl Bench {
    fn campaign(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("campaign")
            .args(args)
            .args(["--config", self.config.to_str().unwrap(), "--user", "mario"])
            .env("PECGATE_PASSWORD", PW)
            .output()
            .expect("run pecgate campaign")
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.campaign(args);
        assert!(
            out.status.success(),
            "pecgate campaign {args:?}: {}{}\n--- gateway log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.gw_log, 30)
        );
        out
    }

    fn status(&self, id: &str) -> Value {
        serde_json::from_slice(&self.ok(&["status", id]).stdout).expect("status JSON")
    }

    /// The campaign's rows as JSON lines.
    fn report_jsonl(&self, id: &str) -> Vec<Value> {
        let out = self.ok(&["report", id, "--format", "jsonl"]);
        out.stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }
}

fn tail(p: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn created_id(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).expect("campaign <id> created").to_string()
}

fn count(st: &Value, states: &[&str]) -> u64 {
    states.iter().map(|s| st["states"][s].as_u64().unwrap_or(0)).sum()
}

const OPEN: [&str; 5] = ["queued", "submitting", "retrying", "accepted", "acceptance-receipt"];

/// Lines appended to the simulator's record since `pos` (it only grows).
fn record_lines(path: &Path, pos: &mut u64, lines: &mut u64) {
    let Ok(mut f) = std::fs::File::open(path) else { return };
    if f.seek(SeekFrom::Start(*pos)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_ok() {
        // Only whole lines: a line being written is counted next time.
        if let Some(last) = buf.iter().rposition(|b| *b == b'\n') {
            *lines += buf[..=last].iter().filter(|b| **b == b'\n').count() as u64;
            *pos += last as u64 + 1;
        }
    }
}

fn systime(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

/// A profiler attached to the daemon (CAMPAIGN_LOAD_ATTACH), stopped with
/// SIGINT.
fn attach(cmd: &str, pid: u32, secs: u64) -> std::thread::JoinHandle<()> {
    let cmd = cmd.replace("{pid}", &pid.to_string());
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        eprintln!("attaching: {cmd} (for {secs} s)");
        let mut c = match Command::new("sh").arg("-c").arg(format!("exec {cmd}")).stdin(Stdio::null()).spawn() {
            Ok(c) => c,
            Err(e) => return eprintln!("attach: {e}"),
        };
        std::thread::sleep(Duration::from_secs(secs));
        let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
        let _ = c.wait();
    })
}

fn figure(key: &str, value: impl std::fmt::Display, human: String) {
    println!("{key}={value}");
    println!("  {human}");
}

fn main() {
    let n = env("CAMPAIGN_LOAD_NOTICES", 48397);
    let pdf = env("CAMPAIGN_LOAD_PDF_BYTES", 204_800);
    let eta_on = env("CAMPAIGN_LOAD_ETA", 1) != 0;
    let eta_n = env("CAMPAIGN_LOAD_ETA_NOTICES", 13);
    let keep = env("CAMPAIGN_LOAD_KEEP", 0) == 1;
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "campaign_load: notices={n} pdf_bytes={pdf} eta_phase={eta_on} eta_notices={eta_n} load_average={}",
        load()
    );

    std::fs::create_dir_all(ROOT).unwrap_or_else(|e| panic!("{ROOT}: {e}"));
    let free = free_bytes(Path::new(ROOT));
    let need = std::env::var("CAMPAIGN_LOAD_MIN_FREE_GB")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|g| (g * 1e9) as u64)
        .unwrap_or_else(|| disk_needed(n, pdf));
    if free < need {
        eprintln!(
            "campaign_load: {:.1} GB free under {ROOT}, this run needs about {:.1} GB \
             ({n} notices of {pdf} bytes: the PDFs, their uploads, the rendered notices and the \
             \"completa\" delivery receipts in the simulator and in pecgate); free space or lower \
             CAMPAIGN_LOAD_NOTICES (CAMPAIGN_LOAD_MIN_FREE_GB overrides the check)",
            free as f64 / 1e9,
            need as f64 / 1e9
        );
        std::process::exit(2);
    }
    println!("disk: {:.1} GB free, about {:.1} GB needed", free as f64 / 1e9, need as f64 / 1e9);
    let dir = PathBuf::from(format!("{ROOT}/run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("input/p")).expect("input dir");

    // The inputs: the recipients' CSV, the template, one PDF per row.
    let t = Instant::now();
    let mut csv = String::from("verbale;nome;pec;importo;allegato\r\n");
    for i in 0..n {
        let (to, _) = recipient(i);
        csv += &format!("V-{i:05};\"Rossi; Mario {i}\";{to};{},00;p/{i:05}.pdf\r\n", 100 + i % 900);
        write_pdf(&dir.join(format!("input/p/{i:05}.pdf")), pdf, i as u64 + 1);
    }
    std::fs::write(dir.join("input/destinatari.csv"), &csv).unwrap();
    std::fs::write(dir.join("input/avviso.txt"), TEMPLATE).unwrap();
    println!("inputs written in {:.1?}", t.elapsed());

    // The simulator: no rate limit, its own mailboxes, scripted remotes.
    let (smtp_port, imap_port, http_port) = (free_port(), free_port(), free_port());
    let record = dir.join("record.jsonl");
    let pki = dir.join("pki");
    let sim_cfg = dir.join("sim.toml");
    std::fs::write(
        &sim_cfg,
        format!(
            "listen = \"127.0.0.1:{smtp_port}\"\ndomains = [\"pec.sim.test\"]\npki_dir = \"{pki}\"\nrecord = \"{rec}\"\n\
             receipt_delay = \"2s\"\n\n\
             [mailstore]\ndata_dir = \"{store}\"\nimap_listen = \"127.0.0.1:{imap_port}\"\n\n\
             [[mailbox]]\naddress = \"{PROT}\"\npassword = \"pw\"\nimap_user = \"prot\"\nimap_password = \"pw\"\n\n\
             [[mailbox]]\naddress = \"{ETA_MB}\"\npassword = \"pw\"\nimap_user = \"eta\"\nimap_password = \"pw\"\n\n\
             [[remote]]\ndomain = \"{REMOTE}\"\n\
             [[remote.rule]]\npattern = \"pieno*\"\noutcome = \"full\"\n\
             [[remote.rule]]\npattern = \"ignoto*\"\noutcome = \"unknown\"\n\
             [[remote.rule]]\npattern = \"*\"\noutcome = \"delivered\"\n",
            pki = pki.display(),
            rec = record.display(),
            store = dir.join("sim-store").display(),
        ),
    )
    .unwrap();
    let sim_log = dir.join("sim.log");
    let mut sim = Proc::spawn("sim-provider", &["sim-provider", "--config", sim_cfg.to_str().unwrap()], &sim_log);
    wait_port(smtp_port, "sim-provider", &sim_log);
    wait_port(imap_port, "sim-provider", &sim_log);

    // The gateway: prot unlimited, eta at 6 a minute.
    let hash = pecgate::auth::hash_password(PW).expect("hash");
    let config = dir.join("pecgate.toml");
    let mailbox = |alias: &str, addr: &str, sending: &str| {
        format!(
            "[[mailbox]]\nalias = \"{alias}\"\naddress = \"{addr}\"\nusername = \"{alias}\"\npassword = \"pw\"\n\
             imap = {{ host = \"127.0.0.1\", port = {imap_port}, tls = \"none\" }}\n\
             smtp = {{ host = \"127.0.0.1\", port = {smtp_port}, tls = \"none\" }}\npoll_interval = \"1s\"\n{sending}\n\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "[store]\ndata_dir = \"{data}\"\n{cache}\n\
             [upstream]\ntimeout = \"10s\"\nmin_backoff = \"200ms\"\nmax_backoff = \"2s\"\n\n\
             [pec]\ntrust_store = \"{pki}/ca.pem\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n{}{}\
             [[user]]\nname = \"mario\"\npassword_hash = \"{hash}\"\ngrants = {{ prot = [\"read\", \"send\"], eta = [\"read\", \"send\"] }}\n",
            mailbox("prot", PROT, ""),
            mailbox("eta", ETA_MB, "sending = { per_minute = 6 }"),
            data = dir.join("gw-data").display(),
            cache = std::env::var("CAMPAIGN_LOAD_CACHE_BYTES").map(|b| format!("cache_capacity = {b}\n")).unwrap_or_default(),
            pki = pki.display(),
        ),
    )
    .unwrap();
    let gw_log = dir.join("pecgate.log");
    let mut gw = Proc::spawn("serve", &["serve", "--config", config.to_str().unwrap()], &gw_log);
    wait_port(http_port, "pecgate serve", &gw_log);
    let pid = gw.pid();
    let mut rss = RssSampler::start(pid);
    let b = Bench { dir: dir.clone(), config: config.clone(), record: record.clone(), gw_log: gw_log.clone(), sim_log };
    // Let the first sync passes (empty mailboxes) settle.
    std::thread::sleep(Duration::from_secs(3));
    let t_begin = Instant::now();

    let attach_cmd = std::env::var("CAMPAIGN_LOAD_ATTACH").ok().filter(|c| !c.is_empty());
    let attach_phase = std::env::var("CAMPAIGN_LOAD_ATTACH_PHASE").unwrap_or_else(|_| "send".into());
    let attach_secs = env("CAMPAIGN_LOAD_ATTACH_SECS", 20) as u64;
    let mut profiler = None;

    // (1) Validate, render, queue.
    if attach_phase == "create" {
        profiler = attach_cmd.as_deref().map(|c| attach(c, pid, attach_secs));
    }
    let cpu_c0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let csv_path = b.dir.join("input/destinatari.csv");
    let out = b.ok(&[
        "create",
        "--mailbox",
        "prot",
        "--name",
        "Carico",
        "--recipients",
        csv_path.to_str().unwrap(),
        "--template",
        b.dir.join("input/avviso.txt").to_str().unwrap(),
        "--attachment-column",
        "allegato",
    ]);
    let create_s = t0.elapsed().as_secs_f64();
    let create_cpu = cpu_seconds(pid) - cpu_c0;
    let t_created = Instant::now();
    let id = created_id(&out);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    figure(
        "create_wall_s",
        format!("{create_s:.2}"),
        format!(
            "validate+render+queue (campaign create, {n} notices, uploads included): {create_s:.1} s \
             ({:.2} ms/notice; daemon CPU {create_cpu:.1} s); target < 60 s",
            create_s * 1000.0 / n as f64
        ),
    );
    println!("create_daemon_cpu_s={create_cpu:.2}");
    // The notices just stored are indexed for full-text search after
    // `create` answers: let that finish, so that sending's CPU is
    // sending's (and say what indexing the notices cost).
    let t_idx = Instant::now();
    let cpu_i0 = cpu_seconds(pid);
    loop {
        match metric(http_port, "pecgate_fulltext_backlog_records") {
            Some(v) if v < 1.0 => break,
            _ if t_idx.elapsed() > Duration::from_secs(600) => panic!("the full-text backlog did not drain in 600 s"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    let (idx_s, idx_cpu) = (t_idx.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu_i0);
    figure(
        "create_index_tail_s",
        format!("{idx_s:.2}"),
        format!(
            "full-text indexing of the notices still going when `create` answered: {idx_s:.1} s more, daemon CPU \
             {idx_cpu:.1} s; create and indexing together {:.2} ms CPU/notice",
            (create_cpu + idx_cpu) * 1000.0 / n as f64
        ),
    );

    // (2) Sending.
    let cpu0 = cpu_seconds(pid);
    let split0 = cpu_split(pid);
    let t0 = Instant::now();
    b.ok(&["start", &id]);
    if attach_phase == "send" {
        profiler = attach_cmd.as_deref().map(|c| attach(c, pid, attach_secs));
    }
    // The simulator's record has a line per accepted submission: read it
    // (cheap, off the daemon) until every notice is there, then ask the
    // daemon (each status call reads every notice's state).
    let (mut pos, mut lines, mut last_print) = (0u64, 0u64, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(600 + n as u64);
    while lines < n as u64 {
        assert!(
            Instant::now() < deadline,
            "sending stalled at {lines}/{n}\n{}\n--- simulator ---\n{}",
            tail(&b.gw_log, 30),
            tail(&b.sim_log, 20)
        );
        std::thread::sleep(Duration::from_millis(250));
        record_lines(&b.record, &mut pos, &mut lines);
        if last_print.elapsed() > Duration::from_secs(30) {
            last_print = Instant::now();
            eprintln!(
                "  … {lines}/{n} accepted by the provider after {:.0} s ({:.1}/s), daemon CPU {:.1} s, RSS {} MiB",
                t0.elapsed().as_secs_f64(),
                lines as f64 / t0.elapsed().as_secs_f64(),
                cpu_seconds(pid) - cpu0,
                rss_kib(pid).unwrap_or(0) / 1024
            );
        }
    }
    let provider_s = t0.elapsed().as_secs_f64();
    let cpu_provider = cpu_seconds(pid) - cpu0;
    let mut status_calls = Vec::new();
    let send_split;
    let (send_s, cpu_send) = loop {
        let c = Instant::now();
        let st = b.status(&id);
        status_calls.push(c.elapsed().as_secs_f64());
        if count(&st, &["queued", "submitting", "retrying"]) == 0 {
            let split = cpu_split(pid);
            send_split = (split.0 - split0.0, split.1 - split0.1);
            break (t0.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu0);
        }
        assert!(Instant::now() < deadline, "sending not finished: {st}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let t_sent = Instant::now();
    figure(
        "send_wall_s",
        format!("{send_s:.2}"),
        format!(
            "sending: {send_s:.1} s from campaign start until nothing queued/submitting ({:.1} notices/s; \
             the provider had all {n} after {provider_s:.1} s)",
            n as f64 / send_s
        ),
    );
    figure(
        "send_cpu_ms_per_notice",
        format!("{:.3}", cpu_send * 1000.0 / n as f64),
        format!(
            "daemon CPU while sending: {cpu_send:.1} s, {:.2} ms/notice ({:.2} ms/notice until the provider had \
             them all, before any status call); receipts pulled meanwhile included; target < 5 ms",
            cpu_send * 1000.0 / n as f64,
            cpu_provider * 1000.0 / n as f64
        ),
    );
    figure(
        "send_user_ms_per_notice",
        format!("{:.3}", send_split.0 * 1000.0 / n as f64),
        format!(
            "  of which user {:.2} ms/notice, system {:.2} ms/notice",
            send_split.0 * 1000.0 / n as f64,
            send_split.1 * 1000.0 / n as f64
        ),
    );
    println!("send_system_ms_per_notice={:.3}", send_split.1 * 1000.0 / n as f64);

    // (4) Reconciliation.
    let final_wall;
    loop {
        let c = Instant::now();
        let st = b.status(&id);
        let took = c.elapsed();
        status_calls.push(took.as_secs_f64());
        if count(&st, &OPEN) == 0 {
            final_wall = SystemTime::now();
            break;
        }
        assert!(Instant::now() < deadline, "receipts not reconciled: {st}\n{}", tail(&b.gw_log, 30));
        // Not more than a fifth of the daemon's time on status calls.
        std::thread::sleep((took * 4).max(Duration::from_millis(500)));
    }
    let t_final = Instant::now();
    let cpu_final = cpu_seconds(pid) - cpu0;
    let max_status = status_calls.iter().cloned().fold(0.0, f64::max);
    println!(
        "status_calls={} status_call_max_s={max_status:.3} status_call_mean_s={:.3}",
        status_calls.len(),
        status_calls.iter().sum::<f64>() / status_calls.len() as f64
    );

    // (5) The report, whole campaign.
    let report_csv = b.dir.join("report.csv");
    let t0r = Instant::now();
    b.ok(&["report", &id, "--out", report_csv.to_str().unwrap()]);
    let report_s = t0r.elapsed().as_secs_f64();
    let t0r = Instant::now();
    let rows = b.report_jsonl(&id);
    let report_jsonl_s = t0r.elapsed().as_secs_f64();
    let t_reported = Instant::now();
    assert_eq!(rows.len(), n, "report rows");
    let mut states = std::collections::BTreeMap::new();
    let (mut receipts, mut last_accepted, mut wrong) = (0usize, None::<DateTime<Utc>>, 0usize);
    for (i, r) in rows.iter().enumerate() {
        let state = r["state"].as_str().unwrap_or("?").to_string();
        if state != recipient(i).1 {
            wrong += 1;
        }
        *states.entry(state).or_insert(0u64) += 1;
        receipts += r["receipts"].as_array().map_or(0, Vec::len);
        if let Some(t) = time_of(&r["accepted_at"]) {
            last_accepted = Some(last_accepted.map_or(t, |l| l.max(t)));
        }
    }
    let lag = last_accepted.map(|l| (systime(final_wall) - l).num_milliseconds() as f64 / 1000.0).unwrap_or(f64::NAN);
    figure(
        "reconcile_lag_s",
        format!("{lag:.2}"),
        format!(
            "reconciliation: every row final {lag:.1} s after the last notice was accepted \
             (status polled every ≥ 0.5 s; {:.1} s after nothing was queued); states {states:?}; \
             {wrong} rows not what the simulator scripted",
            (t_final - t_sent).as_secs_f64()
        ),
    );
    figure(
        "receipts_reconciled",
        receipts,
        format!("receipts the report names: {receipts} ({:.2} per notice; 2 expected)", receipts as f64 / n as f64),
    );
    println!("run_cpu_ms_per_notice={:.3}", cpu_final * 1000.0 / n as f64);
    println!(
        "  daemon CPU from start until every row final: {cpu_final:.1} s, {:.2} ms/notice",
        cpu_final * 1000.0 / n as f64
    );
    figure(
        "report_wall_s",
        format!("{report_s:.2}"),
        format!(
            "campaign report (CSV, {n} rows, {} bytes): {report_s:.2} s (JSON lines: {report_jsonl_s:.2} s); \
             target < 10 s",
            std::fs::metadata(&report_csv).map(|m| m.len()).unwrap_or(0)
        ),
    );
    println!("report_jsonl_wall_s={report_jsonl_s:.2}");
    // The PDFs' text is searchable: the word is only in them.
    let found = Command::new(bin())
        .args(["search", "--config", b.config.to_str().unwrap(), "--user", "mario", "--json", "--limit", "5"])
        .arg("violazione")
        .env("PECGATE_PASSWORD", PW)
        .output()
        .expect("run pecgate search");
    let hits: Value = serde_json::from_slice(&found.stdout).unwrap_or_else(|e| {
        panic!(
            "pecgate search: {e}: {}{}",
            String::from_utf8_lossy(&found.stdout),
            String::from_utf8_lossy(&found.stderr)
        )
    });
    let hits = hits["hits"].as_array().map_or(0, Vec::len);
    assert!(hits > 0, "no notice's PDF text was found by full-text search");
    println!("  full-text: a word of the PDFs' text finds {hits} messages (at most 5 asked)");
    if let Some(p) = profiler {
        let _ = p.join();
    }

    std::thread::sleep(Duration::from_millis(300));
    let peak = rss.max(t_begin, Instant::now());
    figure(
        "peak_rss_mib",
        format!("{:.1}", peak as f64 / 1024.0),
        format!(
            "daemon peak RSS: {:.1} MiB (create {:.1}, sending {:.1}, reconciliation {:.1}, report {:.1}); target < 200 MiB",
            peak as f64 / 1024.0,
            rss.max(t_begin, t_created) as f64 / 1024.0,
            rss.max(t_created, t_sent) as f64 / 1024.0,
            rss.max(t_sent, t_final) as f64 / 1024.0,
            rss.max(t_final, t_reported) as f64 / 1024.0
        ),
    );
    let (_, anon, file) = rss.peak(t_begin, Instant::now());
    let anon_max = rss.max_anon(t_begin, Instant::now());
    figure(
        "peak_rss_anon_mib",
        format!("{:.1}", anon_max as f64 / 1024.0),
        format!(
            "  at the peak: {:.1} MiB the daemon's own (RssAnon), {:.1} MiB mapped files (RssFile: the program, \
             the full-text segments); largest RssAnon {:.1} MiB",
            anon as f64 / 1024.0,
            file as f64 / 1024.0,
            anon_max as f64 / 1024.0
        ),
    );
    // (6) ETA on the limited mailbox.
    if eta_on {
        let mut csv = String::from("verbale;nome;pec;importo\r\n");
        for i in 0..eta_n {
            csv += &format!("E-{i:03};Bianchi {i};eta.{i}@{REMOTE};{},00\r\n", 10 + i);
        }
        let p = b.dir.join("input/eta.csv");
        std::fs::write(&p, csv).unwrap();
        let out = b.ok(&[
            "create",
            "--mailbox",
            "eta",
            "--name",
            "ETA",
            "--recipients",
            p.to_str().unwrap(),
            "--template",
            b.dir.join("input/avviso.txt").to_str().unwrap(),
        ]);
        let eid = created_id(&out);
        let started = SystemTime::now();
        b.ok(&["start", &eid]);
        let asked = SystemTime::now();
        let st = b.status(&eid);
        let answered = SystemTime::now();
        let eta = time_of(&st["eta"]).expect("an ETA");
        let waiting_then = st["waiting"].as_u64().unwrap_or(0);
        println!("  status right after start: waiting {waiting_then}, eta {eta}, states {}", st["states"]);
        let deadline = Instant::now() + Duration::from_secs(120 + 20 * eta_n as u64);
        loop {
            let st = b.status(&eid);
            if st["waiting"].as_u64() == Some(0) {
                break;
            }
            assert!(Instant::now() < deadline, "the ETA campaign did not finish: {st}");
            std::thread::sleep(Duration::from_millis(500));
        }
        let rows = b.report_jsonl(&eid);
        let done = rows.iter().filter_map(|r| time_of(&r["accepted_at"])).max().expect("accepted notices");
        // The ETA's clock: the status call (midway between asking and the answer).
        let at = systime(asked) + (systime(answered) - systime(asked)) / 2;
        let predicted = (eta - at).num_milliseconds() as f64 / 1000.0;
        let actual = (done - at).num_milliseconds() as f64 / 1000.0;
        let from_start = (done - systime(started)).num_milliseconds() as f64 / 1000.0;
        let err = (actual - predicted) / predicted * 100.0;
        figure(
            "eta_error_pct",
            format!("{err:.2}"),
            format!(
                "ETA ({eta_n} notices at 6/min): predicted {predicted:.1} s after the status call, last notice \
                 accepted after {actual:.1} s ({from_start:.1} s after start): {err:+.2} %; target within 1 %"
            ),
        );
        println!("eta_predicted_s={predicted:.2}\neta_actual_s={actual:.2}\neta_waiting_at_status={waiting_then}");
    }

    rss.finish();
    let du = |p: &Path| {
        let o = Command::new("du").args(["-s", "-B1"]).arg(p).output().ok();
        o.and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    println!(
        "disk_gw_bytes={} disk_sim_bytes={} disk_input_bytes={}",
        du(&b.dir.join("gw-data")),
        du(&b.dir.join("sim-store")),
        du(&b.dir.join("input"))
    );
    println!("load average at the end: {}", load());

    gw.stop();
    sim.stop();
    let _ = std::io::stdout().flush();
    if keep {
        println!("kept: {}", b.dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&b.dir);
    }
}
