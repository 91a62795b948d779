//! IMAP load: N concurrent sessions over loopback TLS against `pecgate
//! serve` (archive of M messages filled through the store API) and against
//! a Dovecot holding the same messages: FETCH of full messages (messages/s,
//! MB/s) and SEARCH latency, side by side with the ratio; then pecgate's
//! RSS with K idle sessions.
//!
//! `cargo bench --bench imap_load`; scale with IMAP_LOAD_SESSIONS (N, 8),
//! IMAP_LOAD_MESSAGES (M, 200), IMAP_LOAD_SIZE (bytes per message, 20000),
//! IMAP_LOAD_ROUNDS (full-folder FETCHes per session, 3),
//! IMAP_LOAD_SEARCHES (per session, 20), IMAP_LOAD_IDLE (K, 200).
//!
//! Two more modes (`IMAP_LOAD_MODE`), pecgate only:
//! * `idle`: RSS as idle sessions are opened, measured at each count of
//!   IMAP_LOAD_IDLE_STEPS (default `0,1000,10000`); IMAP_LOAD_IDLE_SELECT=0
//!   leaves them logged in without a selected folder;
//!   IMAP_LOAD_IDLE_RESELECT=N then SELECTs N times from one more session
//!   (memory churn, as opposed to per-session memory). Raise `ulimit -n`
//!   above the largest step first.
//! * `wake`: IMAP_LOAD_WAKE_SESSIONS (1,000) sessions IDLE on a
//!   200-message INBOX; another session toggles `\Flagged` on one message
//!   IMAP_LOAD_WAKE_ROUNDS (5) times; the time until every idling session
//!   has received the FETCH (the snapshot refresh storm one change causes).
//! * `search`: SEARCH, SORT and THREAD latency on a folder of
//!   IMAP_LOAD_BULK (100,000) small messages archived through the store
//!   API: SEARCH SUBJECT, FROM, UNSEEN, SINCE, SORT by date, subject and
//!   sender, THREAD REFERENCES and ORDEREDSUBJECT, each
//!   IMAP_LOAD_SEARCHES times from one session; then the same against
//!   a Dovecot holding the same messages (a Maildir with the same dates).

#[path = "../tests/imap_support/mod.rs"]
mod imap_support;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Trusts exactly the certificate in `pem` (the test certificates are
/// self-signed CA certificates, which webpki refuses as end entities).
#[derive(Debug)]
struct Pinned(Vec<u8>, Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.0.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

fn pinned(pem: &Path) -> Arc<rustls::ClientConfig> {
    let bytes = std::fs::read(pem).expect("read certificate");
    let cert = CertificateDer::from_pem_slice(&bytes).expect("a PEM certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(cert.as_ref().to_vec(), provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A minimal IMAP client: enough for LOGIN, SELECT, FETCH and SEARCH.
struct Client {
    io: BufReader<TlsStream<TcpStream>>,
    tag: u32,
}

/// What one command brought back.
struct Reply {
    literal_bytes: usize,
    literals: usize,
    untagged: Vec<String>,
}

impl Client {
    async fn connect(port: u16, ca: &Path) -> Client {
        let cfg = pinned(ca);
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let tls = TlsConnector::from(cfg).connect(name, tcp).await.expect("TLS handshake");
        let mut c = Client { io: BufReader::new(tls), tag: 0 };
        let mut greeting = String::new();
        c.io.read_line(&mut greeting).await.expect("greeting");
        assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
        c
    }

    async fn cmd(&mut self, text: &str) -> Reply {
        match self.try_cmd(text).await {
            Ok(r) => r,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    async fn try_cmd(&mut self, text: &str) -> Result<Reply, String> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        let line = format!("{tag} {text}\r\n");
        self.io.get_mut().write_all(line.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        self.io.get_mut().flush().await.map_err(|e| format!("flush: {e}"))?;
        let mut r = Reply { literal_bytes: 0, literals: 0, untagged: vec![] };
        let mut buf = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.io.read_line(&mut l).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                if !rest.starts_with("OK") {
                    return Err(rest.trim_end().to_string());
                }
                return Ok(r);
            }
            // A literal: `{N}` at the end of the line.
            if let Some(open) = l.trim_end().strip_suffix('}').and_then(|s| s.rfind('{').map(|i| &s[i + 1..])) {
                if let Ok(len) = open.trim_end_matches('+').parse::<usize>() {
                    buf.resize(len, 0);
                    self.io.read_exact(&mut buf).await.map_err(|e| format!("literal: {e}"))?;
                    r.literal_bytes += len;
                    r.literals += 1;
                    continue;
                }
            }
            if l.starts_with("* ") && r.untagged.len() < 16 {
                r.untagged.push(l);
            }
        }
    }
}

struct Target {
    name: &'static str,
    port: u16,
    ca: std::path::PathBuf,
    user: String,
    password: String,
}

struct Figures {
    msgs_per_s: f64,
    mb_per_s: f64,
    search_p50: Duration,
    search_p95: Duration,
}

async fn load(t: &Target, sessions: usize, rounds: usize, searches: usize, messages: usize) -> Figures {
    let mut clients = Vec::new();
    for _ in 0..sessions {
        let mut c = Client::connect(t.port, &t.ca).await;
        c.cmd(&format!("LOGIN {} \"{}\"", t.user, t.password)).await;
        let r = c.cmd("SELECT INBOX").await;
        let exists = r.untagged.iter().find_map(|l| l.strip_suffix(" EXISTS\r\n").and_then(|s| s[2..].parse::<usize>().ok()));
        assert_eq!(exists, Some(messages), "{}: INBOX holds {exists:?}", t.name);
        clients.push(c);
    }
    // FETCH: every session fetches the whole folder `rounds` times.
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut c in clients {
        set.spawn(async move {
            let (mut n, mut bytes) = (0, 0);
            for _ in 0..rounds {
                let r = c.cmd("UID FETCH 1:* (BODY.PEEK[])").await;
                n += r.literals;
                bytes += r.literal_bytes;
            }
            (c, n, bytes)
        });
    }
    let (mut clients, mut n, mut bytes) = (Vec::new(), 0usize, 0usize);
    while let Some(j) = set.join_next().await {
        let (c, k, b) = j.expect("fetch task");
        clients.push(c);
        n += k;
        bytes += b;
    }
    let fetch_time = t0.elapsed().as_secs_f64();
    assert_eq!(n, sessions * rounds * messages, "{}: messages fetched", t.name);
    // SEARCH: a body word of one message (a full-text scan).
    let mut set = tokio::task::JoinSet::new();
    for (k, mut c) in clients.into_iter().enumerate() {
        set.spawn(async move {
            let mut lat = Vec::new();
            for s in 0..searches {
                let i = (k * searches + s) % messages + 1;
                let t = Instant::now();
                let r = c.cmd(&format!("UID SEARCH BODY parola{i}")).await;
                lat.push(t.elapsed());
                assert!(r.untagged.iter().any(|l| l.starts_with("* SEARCH ")), "search reply");
            }
            c.cmd("LOGOUT").await;
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(j) = set.join_next().await {
        lat.extend(j.expect("search task"));
    }
    lat.sort();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default();
    Figures {
        msgs_per_s: n as f64 / fetch_time,
        mb_per_s: bytes as f64 / fetch_time / 1e6,
        search_p50: pct(0.50),
        search_p95: pct(0.95),
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn steps() -> Vec<usize> {
    std::env::var("IMAP_LOAD_IDLE_STEPS")
        .unwrap_or_else(|_| "0,1000,10000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// RSS as idle sessions are opened, at each step.
fn idle_mode() {
    let messages = env("IMAP_LOAD_MESSAGES", 200);
    let select = env("IMAP_LOAD_IDLE_SELECT", 1) == 1;
    let steps = steps();
    let max = steps.iter().copied().max().unwrap_or(0);
    let conc = env("IMAP_LOAD_CONNECT_CONCURRENCY", 8).max(1);
    println!("imap_load idle: messages={messages} select={select} steps={steps:?} connect_concurrency={conc}");
    let gw = imap_support::start_with(imap_support::Setup { inbox: messages, imap_config: room_for(max), ..imap_support::Setup::default() });
    let pid = gw.child.id();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (port, ca) = (gw.port, gw.cert());
    let mut clients: Vec<Client> = Vec::new();
    let base = vm_rss_kib(pid);
    println!("{:>8} {:>12} {:>16}", "sessions", "VmRSS KiB", "KiB/session");
    for &target in &steps {
        let t0 = Instant::now();
        while clients.len() < target {
            let n = (target - clients.len()).min(conc * 16);
            let ca = ca.clone();
            let batch: Vec<Client> = rt.block_on(async move {
                let mut set = tokio::task::JoinSet::new();
                for k in 0..conc.min(n) {
                    let ca = ca.clone();
                    let share = n / conc.min(n) + usize::from(k < n % conc.min(n));
                    set.spawn(async move {
                        let mut v = Vec::new();
                        for _ in 0..share {
                            let mut c = Client::connect(port, &ca).await;
                            c.cmd(&format!("LOGIN mario \"{}\"", imap_support::PASSWORD)).await;
                            if select {
                                c.cmd("SELECT INBOX").await;
                            }
                            v.push(c);
                        }
                        v
                    });
                }
                let mut all = Vec::new();
                while let Some(j) = set.join_next().await {
                    all.extend(j.expect("connect task"));
                }
                all
            });
            clients.extend(batch);
        }
        std::thread::sleep(Duration::from_secs(2));
        let rss = vm_rss_kib(pid);
        let per = if target > 0 { rss.saturating_sub(base) as f64 / target as f64 } else { 0.0 };
        println!("{target:>8} {rss:>12} {per:>16.1}   (opened in {:.1} s)", t0.elapsed().as_secs_f64());
    }
    // Still serving with all of them open.
    let reselect = env("IMAP_LOAD_IDLE_RESELECT", 0);
    rt.block_on(async {
        let mut c = Client::connect(port, &ca).await;
        c.cmd(&format!("LOGIN mario \"{}\"", imap_support::PASSWORD)).await;
        c.cmd("NOOP").await;
        // Churn, not sessions: one session selecting again and again.
        for _ in 0..reselect {
            c.cmd("SELECT INBOX").await;
        }
    });
    if reselect > 0 {
        std::thread::sleep(Duration::from_secs(2));
        println!("after {reselect} SELECTs by one session: VmRSS {} KiB", vm_rss_kib(pid));
    }
    drop(clients);
}

/// `[imap]` limits that let one user open `sessions` sessions (and a few
/// more) from loopback.
fn room_for(sessions: usize) -> String {
    let limit = sessions + 16;
    format!("max_sessions_per_user = {limit}\nmax_sessions_per_address = {limit}\n")
}

/// How long one change takes to reach many IDLE sessions.
fn wake_mode() {
    let n = env("IMAP_LOAD_WAKE_SESSIONS", 1000);
    let rounds = env("IMAP_LOAD_WAKE_ROUNDS", 5);
    let messages = env("IMAP_LOAD_MESSAGES", 200);
    println!("imap_load wake: sessions={n} messages={messages} rounds={rounds}");
    let gw = imap_support::start_with(imap_support::Setup { inbox: messages, imap_config: room_for(n), ..imap_support::Setup::default() });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (port, ca) = (gw.port, gw.cert());
    rt.block_on(async move {
        // Open the sessions 8 at a time; each ends in IDLE on INBOX.
        let mut idlers = Vec::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(8));
        let mut opened = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (ca, sem) = (ca.clone(), sem.clone());
            opened.spawn(async move {
                let _p = sem.acquire_owned().await.expect("semaphore");
                let mut c = Client::connect(port, &ca).await;
                c.cmd(&format!("LOGIN mario \"{}\"", imap_support::PASSWORD)).await;
                c.cmd("SELECT INBOX").await;
                c.io.get_mut().write_all(b"i IDLE\r\n").await.expect("IDLE");
                c.io.get_mut().flush().await.expect("flush");
                let mut l = String::new();
                c.io.read_line(&mut l).await.expect("continuation");
                assert!(l.starts_with('+'), "IDLE: {l}");
                c
            });
        }
        while let Some(c) = opened.join_next().await {
            idlers.push(c.expect("open"));
        }
        println!("{n} sessions idling on INBOX");
        let mut trigger = Client::connect(port, &ca).await;
        trigger.cmd(&format!("LOGIN mario \"{}\"", imap_support::PASSWORD)).await;
        trigger.cmd("SELECT INBOX").await;
        println!("{:>6} {:>12} {:>12} {:>12}", "round", "first", "median", "last");
        for round in 0..rounds {
            // Each idler waits for its next FETCH line in its own task.
            let mut waits = tokio::task::JoinSet::new();
            for mut c in idlers.drain(..) {
                waits.spawn(async move {
                    loop {
                        let mut l = String::new();
                        let k = c.io.read_line(&mut l).await.expect("read");
                        assert!(k > 0, "connection closed");
                        if l.contains(" FETCH ") {
                            return (Instant::now(), c);
                        }
                    }
                });
            }
            let op = if round % 2 == 0 { "+FLAGS" } else { "-FLAGS" };
            let t0 = Instant::now();
            trigger.cmd(&format!("STORE 1 {op} (\\Flagged)")).await;
            let mut lat = Vec::new();
            while let Some(r) = waits.join_next().await {
                let (t, c) = r.expect("wait");
                lat.push(t.duration_since(t0));
                idlers.push(c);
            }
            lat.sort();
            println!("{round:>6} {:>12.2?} {:>12.2?} {:>12.2?}", lat[0], lat[lat.len() / 2], lat[lat.len() - 1]);
        }
    });
}

/// SEARCH, SORT and THREAD latency on a large folder, pecgate and Dovecot
/// side by side.
fn search_mode() {
    let bulk = env("IMAP_LOAD_BULK", 100_000);
    let searches = env("IMAP_LOAD_SEARCHES", 5);
    println!("imap_load search: bulk={bulk} searches={searches}");
    let t0 = Instant::now();
    let gw = imap_support::start_with(imap_support::Setup { bulk, ..imap_support::Setup::default() });
    println!("pecgate: archive filled and daemon up in {:.1} s", t0.elapsed().as_secs_f64());
    let pid = gw.child.id();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let since = imap_support::bulk_date(bulk - 60, bulk).format("%d-%b-%Y").to_string();
    let queries: Vec<(String, String)> = vec![
        ("SUBJECT (one match)".into(), format!("UID SEARCH SUBJECT \"Pratica {}\"", bulk / 2)),
        ("FROM (1/1000)".into(), "UID SEARCH FROM mittente7@pec.example.it".into()),
        ("SINCE (today)".into(), format!("UID SEARCH SINCE {since}")),
        ("UID range + FLAGGED".into(), "UID SEARCH UID 1000:2000 FLAGGED".into()),
        ("UNSEEN (all)".into(), "UID SEARCH UNSEEN".into()),
        ("SORT REVERSE DATE (all)".into(), "UID SORT (REVERSE DATE) UTF-8 ALL".into()),
        ("SORT SUBJECT (all)".into(), "UID SORT (SUBJECT) UTF-8 ALL".into()),
        ("SORT FROM (1/1000)".into(), "UID SORT (FROM) UTF-8 FROM mittente7@pec.example.it".into()),
        ("THREAD REFERENCES (all)".into(), "UID THREAD REFERENCES UTF-8 ALL".into()),
        ("THREAD ORDEREDSUBJ (all)".into(), "UID THREAD ORDEREDSUBJECT UTF-8 ALL".into()),
    ];
    let pec = Target { name: "pecgate", port: gw.port, ca: gw.cert(), user: "mario".into(), password: imap_support::PASSWORD.into() };
    let p = rt.block_on(search_queries(&pec, &queries, searches, bulk));
    println!("pecgate VmRSS after the searches: {} KiB", vm_rss_kib(pid));

    // The same messages, with the same internal dates, in a Dovecot
    // Maildir written directly (APPENDing 100,000 messages takes longer
    // than the whole run); Dovecot indexes them at the first SELECT.
    let dv = support::Dovecot::start(
        support::DovecotOptions::new()
            .user(support::UserSpec::new("bench", "pw-bench"))
            .tls(true)
            .extra_config(&format!("ssl_cert = <{}\nssl_key = <{}", gw.cert().display(), gw.dir.path().join("key.pem").display())),
    );
    let t0 = Instant::now();
    fill_maildir(&dv.maildir("bench"), bulk);
    println!("dovecot: Maildir of {bulk} messages written in {:.1} s", t0.elapsed().as_secs_f64());
    let dov = Target { name: "dovecot", port: dv.tls_port.expect("dovecot tls port"), ca: gw.cert(), user: "bench".into(), password: "pw-bench".into() };
    let d = rt.block_on(search_queries(&dov, &queries, searches, bulk));
    println!("median latency, pecgate/dovecot (>1: pecgate slower):");
    for ((name, pm), (_, dm)) in p.iter().zip(&d) {
        println!("  {name:<24} {:.2}", pm.as_secs_f64() / dm.as_secs_f64().max(1e-9));
    }
}

/// Log in, SELECT INBOX (timed, checked to hold `bulk` messages), run each
/// query `searches` times; print first/min/median/max and return the
/// medians.
async fn search_queries(t: &Target, queries: &[(String, String)], searches: usize, bulk: usize) -> Vec<(String, Duration)> {
    let mut c = Client::connect(t.port, &t.ca).await;
    c.cmd(&format!("LOGIN {} \"{}\"", t.user, t.password)).await;
    let t0 = Instant::now();
    let r = c.cmd("SELECT INBOX").await;
    let exists = r.untagged.iter().find_map(|l| l.strip_suffix(" EXISTS\r\n").and_then(|s| s[2..].parse::<usize>().ok()));
    assert_eq!(exists, Some(bulk), "{}: INBOX holds every message", t.name);
    println!("{}: SELECT of {bulk} messages: {:.2?}", t.name, t0.elapsed());
    // `first` is the cold one (pecgate: header keys read the search fields
    // cached when each message was archived; Dovecot: its index and
    // cache files are built as the first queries ask).
    println!("{:<8} {:<24} {:>10} {:>10} {:>10} {:>10} {:>8}", "server", "query", "first", "min", "median", "max", "hits");
    let mut medians = Vec::new();
    for (name, q) in queries {
        let mut lat = Vec::new();
        let mut hits = 0;
        for _ in 0..searches {
            let t1 = Instant::now();
            match c.try_cmd(q).await {
                Ok(r) => {
                    let answer = ["* SEARCH", "* SORT", "* THREAD"];
                    let line = r
                        .untagged
                        .iter()
                        .find(|l| answer.iter().any(|a| l.starts_with(a)))
                        .unwrap_or_else(|| panic!("{}: {q}: no SEARCH, SORT or THREAD", t.name));
                    // Messages named (a THREAD's too).
                    hits = line.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).count();
                }
                Err(e) => panic!("{}: {q} failed after {:.2?}: {e}", t.name, t1.elapsed()),
            }
            lat.push(t1.elapsed());
        }
        let first = lat[0];
        lat.sort();
        let med = lat[lat.len() / 2];
        println!("{:<8} {name:<24} {first:>10.2?} {:>10.2?} {med:>10.2?} {:>10.2?} {hits:>8}", t.name, lat[0], lat[lat.len() - 1]);
        medians.push((name.clone(), med));
    }
    medians
}

/// Write `bulk_message(1..=n)` into a Maildir's `cur/` with the internal
/// dates pecgate's archive has (file mtimes), owned like its parent.
fn fill_maildir(maildir: &Path, n: usize) {
    use std::os::unix::fs::MetadataExt;
    let home = maildir.parent().and_then(Path::parent).expect("maildir under home");
    let owner = std::fs::metadata(home).expect("home");
    let chown = |p: &Path| std::os::unix::fs::chown(p, Some(owner.uid()), Some(owner.gid())).expect("chown");
    let user_home = maildir.parent().expect("user home");
    for d in [user_home.to_path_buf(), maildir.to_path_buf(), maildir.join("cur"), maildir.join("new"), maildir.join("tmp")] {
        std::fs::create_dir_all(&d).expect("mkdir");
        chown(&d);
    }
    for i in 1..=n {
        let date = imap_support::bulk_date(i, n);
        let path = maildir.join("cur").join(format!("{}.b{i}.bench:2,", date.timestamp()));
        std::fs::write(&path, imap_support::bulk_message(i)).expect("write message");
        let f = std::fs::File::options().write(true).open(&path).expect("open");
        f.set_modified(std::time::SystemTime::from(date)).expect("mtime");
        chown(&path);
    }
}

fn main() {
    match std::env::var("IMAP_LOAD_MODE").as_deref() {
        Ok("idle") => return idle_mode(),
        Ok("search") => return search_mode(),
        Ok("wake") => return wake_mode(),
        _ => {}
    }
    let sessions = env("IMAP_LOAD_SESSIONS", 8);
    let messages = env("IMAP_LOAD_MESSAGES", 200);
    let size = env("IMAP_LOAD_SIZE", 20_000);
    let rounds = env("IMAP_LOAD_ROUNDS", 3);
    let searches = env("IMAP_LOAD_SEARCHES", 20);
    let idle = env("IMAP_LOAD_IDLE", 200);
    println!("imap_load: sessions={sessions} messages={messages} size={size} rounds={rounds} searches={searches} idle={idle}");

    let gw = imap_support::start_with(imap_support::Setup {
        inbox: messages,
        pad: size,
        imap_config: room_for(sessions + idle),
        ..imap_support::Setup::default()
    });
    let raw: Vec<Vec<u8>> = (1..=messages).map(|i| imap_support::padded_message(i, size)).collect();
    let dv = support::Dovecot::start(
        // The gateway's certificate (rustls refuses Dovecot harness's own,
        // a CA certificate used as an end entity).
        support::DovecotOptions::new()
            .user(support::UserSpec::new("bench", "pw-bench"))
            .tls(true)
            .extra_config(&format!(
                "ssl_cert = <{}\nssl_key = <{}",
                gw.cert().display(),
                gw.dir.path().join("key.pem").display()
            )),
    );
    let t0 = Instant::now();
    dv.imap("bench").append("INBOX", raw.iter().map(|m| m.as_slice()));
    println!("dovecot filled with {messages} messages in {:.1} s", t0.elapsed().as_secs_f64());

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pec = Target { name: "pecgate", port: gw.port, ca: gw.cert(), user: "mario".into(), password: imap_support::PASSWORD.into() };
    let dov = Target {
        name: "dovecot",
        port: dv.tls_port.expect("dovecot tls port"),
        ca: gw.cert(),
        user: "bench".into(),
        password: "pw-bench".into(),
    };
    let (p, d) = rt.block_on(async {
        // Warm both (page cache, index) once, then measure.
        load(&pec, 1, 1, 1, messages).await;
        load(&dov, 1, 1, 1, messages).await;
        (load(&pec, sessions, rounds, searches, messages).await, load(&dov, sessions, rounds, searches, messages).await)
    });
    println!("{:<8} {:>12} {:>10} {:>14} {:>14}", "server", "FETCH msg/s", "MB/s", "SEARCH p50", "SEARCH p95");
    for (name, f) in [("pecgate", &p), ("dovecot", &d)] {
        println!("{name:<8} {:>12.0} {:>10.1} {:>14.2?} {:>14.2?}", f.msgs_per_s, f.mb_per_s, f.search_p50, f.search_p95);
    }
    println!(
        "ratio pecgate/dovecot: FETCH {:.2}x, SEARCH p50 {:.2}x (latency; >1 is slower)",
        p.msgs_per_s / d.msgs_per_s,
        p.search_p50.as_secs_f64() / d.search_p50.as_secs_f64().max(1e-9)
    );

    // RSS with K idle, logged-in sessions.
    let pid = gw.child.id();
    let before = vm_rss_kib(pid);
    let idle_clients = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..idle {
            let mut c = Client::connect(pec.port, &pec.ca).await;
            c.cmd(&format!("LOGIN {} \"{}\"", pec.user, pec.password)).await;
            c.cmd("SELECT INBOX").await;
            v.push(c);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        v
    });
    let after = vm_rss_kib(pid);
    println!(
        "pecgate VmRSS: {before} KiB before, {after} KiB with {idle} idle sessions ({:.1} KiB per session)",
        (after.saturating_sub(before)) as f64 / idle.max(1) as f64
    );
    drop(idle_clients);
}
