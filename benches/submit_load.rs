//! Submission load: throughput and latency of sending PEC through pecgate
//! (SMTP over TLS with AUTH, relayed synchronously to the provider, the
//! sent copy archived and audited before the 250) against submitting the
//! same messages straight to the provider (the simulator's SMTP), in the
//! same run, against the same simulator.
//!
//! It starts `pecgate demo` (the PEC provider simulator and a gateway
//! configured against it, on loopback), reads the addresses and passwords
//! from `<data-dir>/demo.json` and `demo-secrets.json`, then for each
//! target: M concurrent clients, each with one SMTP session, submit N
//! messages in all (after a warm-up), timing each from MAIL FROM to the
//! final reply of DATA. Phases alternate (pecgate, direct, pecgate,
//! direct) so that slow drifts of the machine's load hit both; after each
//! one it waits until the demo process is idle again (the simulator's
//! receipts and the gateway's pull of them are done), and reports the
//! demo process's CPU time per message over the phase and that aftermath.
//! Both paths carry the same aftermath (three signed provider messages per
//! submission, pulled and archived by the gateway); the difference is what
//! pecgate's submission path costs.
//!
//! `cargo bench --bench submit_load`; scale with SUBMIT_LOAD_MESSAGES (N per
//! phase, 400), SUBMIT_LOAD_CLIENTS (M, 8), SUBMIT_LOAD_SIZE (bytes of body,
//! 10000); SUBMIT_LOAD_RECONNECT=1 opens a new session (TLS, AUTH) per
//! message, as mail clients that send one message at a time do.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_send::smtp::message::Message;
use mail_send::SmtpClientBuilder;

const DOMAIN: &str = "pec.demo.test";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn base_port() -> u16 {
    for _ in 0..100 {
        let base = 20000 + (rand::random::<u16>() % 30000);
        if [143u16, 465, 587, 993].iter().all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range");
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    port: u16,
    /// CA file for implicit TLS; `None`: plain (the simulator).
    ca: Option<PathBuf>,
    user: String,
    password: String,
}

fn message(i: usize, size: usize, tag: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Protocollo <protocollo@{DOMAIN}>\r\nTo: ufficio.legale@{DOMAIN}\r\nSubject: carico {tag} {i}\r\n\
         Message-ID: <load.{tag}.{i}.{}@bench.test>\r\nDate: {}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n",
        std::process::id(),
        chrono::Utc::now().to_rfc2822()
    )
    .into_bytes();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    // mail-send adds the final CRLF before the dot.
    m.truncate(m.len() - 2);
    m
}

enum Session {
    Tls(Box<mail_send::SmtpClient<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
    Plain(mail_send::SmtpClient<tokio::net::TcpStream>),
}

async fn connect(t: &Target) -> Session {
    match &t.ca {
        Some(ca) => {
            let tls = pecgate::tls::client_config(Some(ca)).expect("TLS client configuration");
            let c = SmtpClientBuilder::new_with_tls_connector("127.0.0.1", t.port, tokio_rustls::TlsConnector::from(tls))
                .credentials((t.user.as_str(), t.password.as_str()))
                .timeout(Duration::from_secs(60))
                .connect()
                .await
                .unwrap_or_else(|e| panic!("{}: connect: {e}", t.name));
            // mail-send writes the end of DATA as a small separate segment:
            // without this, Nagle holds it for the server's delayed ACK
            // (~40 ms on Linux), which would be measured as latency.
            let _ = c.stream.get_ref().0.set_nodelay(true);
            Session::Tls(Box::new(c))
        }
        None => {
            let tls = pecgate::tls::client_config(None).expect("TLS client configuration");
            let c = SmtpClientBuilder::new_with_tls_connector("127.0.0.1", t.port, tokio_rustls::TlsConnector::from(tls))
                .implicit_tls(false)
                .credentials((t.user.as_str(), t.password.as_str()))
                .timeout(Duration::from_secs(60))
                .connect_plain()
                .await
                .unwrap_or_else(|e| panic!("{}: connect: {e}", t.name));
            let _ = c.stream.set_nodelay(true);
            Session::Plain(c)
        }
    }
}

async fn send(s: &mut Session, body: &[u8]) -> Result<(), mail_send::Error> {
    let from = format!("protocollo@{DOMAIN}");
    let to = format!("ufficio.legale@{DOMAIN}");
    let msg = Message::new(from.as_str(), [to.as_str()], body);
    match s {
        Session::Tls(c) => c.send(msg).await.map(drop),
        Session::Plain(c) => c.send(msg).await.map(drop),
    }
}

async fn quit(s: Session) {
    let _ = match s {
        Session::Tls(c) => c.quit().await,
        Session::Plain(c) => c.quit().await,
    };
}

struct Figures {
    msgs_per_s: f64,
    lat: Vec<Duration>,
    /// CPU seconds the demo process (simulator and gateway) spent on the
    /// phase, its aftermath included (receipts, the gateway's pull).
    cpu_s: f64,
}

/// CPU time (user + system) of `pid` so far, in seconds (/proc counts in
/// USER_HZ, 100 per second on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // After `pid (comm) `: state is field 0, utime 11, stime 12.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// Wait until the process has been nearly idle (< 5 % of a core) for
/// half a second, at most `max`: the receipts and the gateway's pull that
/// follow a phase are done.
async fn settle(pid: u32, max: Duration) {
    let end = Instant::now() + max;
    // The simulator waits `receipt_delay` (2 s in the demo) before the
    // delivery receipts.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    while Instant::now() < end {
        let c0 = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if cpu_seconds(pid) - c0 < 0.025 {
            return;
        }
    }
}

impl Figures {
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.lat.len() as f64 * p) as usize).min(self.lat.len().saturating_sub(1));
        self.lat.get(i).copied().unwrap_or_default()
    }
}

/// `total` messages from `clients` concurrent sessions; per-message
/// latency (with `reconnect`, including connect, TLS and AUTH).
async fn load(t: &Target, clients: usize, total: usize, size: usize, reconnect: bool, tag: &str, pid: u32) -> Figures {
    let cpu0 = cpu_seconds(pid);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (t, next, tag) = (t.clone(), next.clone(), tag.to_string());
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut session = if reconnect { None } else { Some(connect(&t).await) };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let body = message(i, size, &tag);
                let start = Instant::now();
                let mut s = match session.take() {
                    Some(s) => s,
                    None => connect(&t).await,
                };
                send(&mut s, &body).await.unwrap_or_else(|e| panic!("{}: message {i}: {e}", t.name));
                lat.push(start.elapsed());
                if reconnect {
                    quit(s).await;
                } else {
                    session = Some(s);
                }
            }
            if let Some(s) = session {
                quit(s).await;
            }
            lat
        });
    }
    let mut lat = Vec::with_capacity(total);
    while let Some(j) = set.join_next().await {
        lat.extend(j.expect("client task"));
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(lat.len(), total, "{}: messages sent", t.name);
    lat.sort();
    settle(pid, Duration::from_secs(60)).await;
    Figures { msgs_per_s: total as f64 / secs, lat, cpu_s: cpu_seconds(pid) - cpu0 }
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).expect("JSON")
}

fn main() {
    let total = env("SUBMIT_LOAD_MESSAGES", 400);
    let clients = env("SUBMIT_LOAD_CLIENTS", 8);
    let size = env("SUBMIT_LOAD_SIZE", 10_000);
    let reconnect = env("SUBMIT_LOAD_RECONNECT", 0) == 1;
    println!("submit_load: messages={total} per phase, clients={clients}, size={size}, reconnect={reconnect}");

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo");
    let base = base_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["demo", "--data-dir"])
        .arg(&data)
        .args(["--base-port", &base.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("err.txt")).expect("log file"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start pecgate demo");
    let mut demo = Demo(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !data.join("demo.json").exists() {
        assert!(demo.0.try_wait().expect("wait").is_none(), "demo exited: {}", std::fs::read_to_string(dir.path().join("err.txt")).unwrap_or_default());
        assert!(Instant::now() < deadline, "no demo.json");
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = read_json(&data.join("demo.json"));
    let secrets = read_json(&data.join("demo-secrets.json"));
    let via = Target {
        name: "pecgate",
        port: info["smtp"]["port_tls"].as_u64().expect("smtp port") as u16,
        ca: Some(PathBuf::from(info["ca_file"].as_str().expect("ca file"))),
        user: "mario".into(),
        password: secrets["users"]["mario"].as_str().expect("mario's password").into(),
    };
    let sim_addr: std::net::SocketAddr = info["simulated_provider"]["smtp"].as_str().expect("sim smtp").parse().expect("sim address");
    let direct = Target {
        name: "direct",
        port: sim_addr.port(),
        ca: None,
        user: format!("protocollo@{DOMAIN}"),
        password: secrets["provider"]["protocollo"].as_str().expect("provider password").into(),
    };

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pid = demo.0.id();
    let half = total / 2;
    let (p, d) = rt.block_on(async {
        // Warm-up (TLS, page cache, the welcome PEC's receipts).
        load(&via, 2, 20, size, reconnect, "warm-p", pid).await;
        load(&direct, 2, 20, size, reconnect, "warm-d", pid).await;
        let mut p = Vec::new();
        let mut d = Vec::new();
        for round in 0..2 {
            p.push(load(&via, clients, half, size, reconnect, &format!("p{round}"), pid).await);
            d.push(load(&direct, clients, half, size, reconnect, &format!("d{round}"), pid).await);
        }
        (p, d)
    });
    let merge = |v: Vec<Figures>| {
        let rate = v.len() as f64 / v.iter().map(|f| 1.0 / f.msgs_per_s).sum::<f64>();
        let cpu_s = v.iter().map(|f| f.cpu_s).sum();
        let mut lat: Vec<Duration> = v.into_iter().flat_map(|f| f.lat).collect();
        lat.sort();
        Figures { msgs_per_s: rate, lat, cpu_s }
    };
    let (p, d) = (merge(p), merge(d));
    println!("{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}", "target", "msg/s", "p50", "p95", "p99", "max", "CPU ms/msg");
    for (name, f) in [("pecgate", &p), ("direct", &d)] {
        println!(
            "{name:<8} {:>10.1} {:>10.2?} {:>10.2?} {:>10.2?} {:>10.2?} {:>12.1}",
            f.msgs_per_s,
            f.pct(0.50),
            f.pct(0.95),
            f.pct(0.99),
            f.lat.last().copied().unwrap_or_default(),
            f.cpu_s * 1000.0 / (2 * half) as f64
        );
    }
    println!(
        "added by pecgate: p50 +{:.2?}, p95 +{:.2?}; throughput pecgate/direct {:.2}",
        p.pct(0.50).saturating_sub(d.pct(0.50)),
        p.pct(0.95).saturating_sub(d.pct(0.95)),
        p.msgs_per_s / d.msgs_per_s
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the end: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    drop(demo);
}
