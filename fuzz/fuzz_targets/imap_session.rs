//! pecgate's IMAP session (src/imap/session.rs, with io.rs, scan.rs, the
//! command handlers, the permission table, FETCH/SEARCH, the views) fed
//! arbitrary client bytes, before and after login, over the in-memory
//! transport `imap::io::Transport::Memory`, against a real `Store` holding
//! a few archived messages (plain ones, a PEC with its metadata and
//! handling, receipts, an anomaly, a sent copy) in two mailboxes.
//!
//! Input: byte 0 = options, byte 1 = chunk size (0: all at once), the rest
//! = what the client sends, written in chunks of that size with the
//! session running between them; then the client closes its side and
//! reads until the session ends. Options:
//!
//! * bit 0: post-auth: the harness sends `0 LOGIN <user> <password>`
//!   first (a valid login, unless bits 1-2 make login refused in clear);
//! * bit 1: a clear connection on a STARTTLS listener (else implicit TLS);
//! * bit 2: `allow_plaintext_on_loopback` (the peer is 127.0.0.1);
//! * bits 3-4: which user the harness logs in (mario: read, triage, send,
//!   delete on `prot`, read on `tributi`, member of office `segreteria`;
//!   anna: read, triage; ro: read; del: read, delete);
//! * bit 5: a 16 KiB quota (else none);
//! * bit 6: the server shuts down (SIGTERM) once the input is written.
//!
//! Checked beyond "no panic" (the session task's `JoinHandle` is not a
//! panic either): the session ends once the client has closed (it never
//! waits for its idle timer: see "Time" below), its output ends with CRLF,
//! and it is bounded relative to the input and the store.
//!
//! Time: the runtime's clock is paused (tokio `start_paused`), so the
//! login throttle's waits (0.5 s doubling to 16 s after failed logins,
//! src/auth.rs `delay_for`) pass at once instead of making every input with
//! two wrong passwords slow. The session's own timers then fire as soon as
//! nothing else can run, so a session that did not notice the client close
//! would end by "autologout" at once: that is caught from its output's
//! last line (a response to a command never ends that way). A
//! session that never ends hangs the input: libFuzzer's `-timeout` (10 s in
//! scripts/fuzz) reports it.
//!
//! Cost per input is kept small: users' hashes are cheap argon2id (m=8,
//! t=1, p=1), and with them the authenticator's dummy hash for unknown
//! names; a fresh `Authenticator` (and `Ctx`) per input, so one input's
//! failed logins do not throttle the next; one runtime and one store
//! (on /dev/shm where there is one: fsyncs are free there), the store made
//! anew every `GENERATION` inputs so that APPENDs cannot grow it without
//! bound (messages an input EXPUNGEd or moved come back then too).
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use libfuzzer_sys::fuzz_target;
use pecgate::config::{Config, ImapConfig, UserConfig};
use pecgate::handling::rules::{LiveRules, Rules};
use pecgate::handling::Routing;
use pecgate::imap::io::Transport;
use pecgate::imap::session::serve_transport;
use pecgate::imap::Ctx;
use pecgate::store::{Audit, Change, Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Inputs served by one store before it is made anew.
const GENERATION: u64 = 1000;
const PASSWORD: &str = "pw-Secret-1";
const USERS: [&str; 4] = ["mario", "anna", "ro", "del"];
/// Small, so that "literal too big" and APPENDLIMIT are reachable with the
/// fuzzer's input sizes (scripts/fuzz: 8 KiB); pre-login literals are
/// limited to 4 KiB by src/imap/scan.rs whatever this is.
const MAX_LITERAL: u32 = 2048;
/// The session's last words when its idle timer fires (src/imap/session.rs).
const AUTOLOGOUT: &[u8] = b"* BYE autologout: idle for too long\r\n";
/// The end of the output kept for the checks.
const TAIL: usize = 256;

static SAMPLES: [&[u8]; 5] = [
    include_bytes!("../../tests/data/pec/01-posta-certificata.eml"),
    include_bytes!("../../tests/data/pec/02-accettazione.eml"),
    include_bytes!("../../tests/data/pec/03-avvenuta-consegna-completa.eml"),
    include_bytes!("../../tests/data/pec/05-errore-consegna.eml"),
    include_bytes!("../../tests/data/pec/08-anomalia.eml"),
];

fn plain_message(i: usize) -> Vec<u8> {
    format!(
        "From: mittente{i}@pec.example.it\r\nTo: protocollo@pec.example.it\r\nSubject: Notifica {i}\r\n\
         Date: Tue, 25 Nov 2026 10:1{i}:00 +0100\r\nMessage-ID: <m{i}@example.it>\r\n\
         Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: text/plain\r\n\r\nTesto {i}\r\n\
         --b{i}\r\nContent-Type: application/pdf; name=\"a{i}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b{i}--\r\n"
    )
    .into_bytes()
}

/// What stays for the whole process: the runtime, TLS, users and rules,
/// the store of the current generation.
struct Harness {
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    tls: Arc<rustls::ServerConfig>,
    users: Vec<UserConfig>,
    rules: LiveRules,
    imap: ImapConfig,
    store: Option<(Store, PathBuf)>,
    /// Inputs run on the current store, and an upper bound of the bytes
    /// of every message in it (those archived at the start plus every
    /// input since, since APPENDs can only add what inputs carried).
    runs: u64,
    store_bytes: usize,
}

/// `PECGATE_FUZZ_SHOW=1`: print what the server sends (to replay one
/// input: `imap_session FILE`).
static SHOW: LazyLock<bool> = LazyLock::new(|| std::env::var_os("PECGATE_FUZZ_SHOW").is_some_and(|v| v == "1"));

static HARNESS: LazyLock<Mutex<Harness>> = LazyLock::new(|| Mutex::new(Harness::new()));

/// A cheap argon2id PHC string (m=8 KiB, t=1, p=1): a login costs
/// microseconds, not the default 19 MiB and tens of milliseconds.
fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(8, 1, 1, None).expect("argon2 params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .expect("argon2 hash")
        .to_string()
}

/// Where the process keeps its files: tmpfs if there is one. Directories
/// left by earlier runs (libFuzzer exits without running destructors) are
/// removed when their process is gone.
fn work_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("pecgate-fuzz-imap-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = base.join(format!("pecgate-fuzz-imap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work directory");
    dir
}

impl Harness {
    fn new() -> Harness {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
        let dir = work_dir();
        let cert = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").expect("cert");
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.chain).expect("write cert");
        std::fs::write(&k, cert.key).expect("write key");
        let tls = pecgate::tls::server_config(&c, &k).expect("tls");
        let hash = cheap_hash(PASSWORD);
        let user = |name: &str, grants: &[(&str, &[&str])]| UserConfig {
            name: name.into(),
            password_hash: hash.clone(),
            default_mailbox: Some("prot".into()),
            grants: grants
                .iter()
                .map(|(m, rs)| (m.to_string(), rs.iter().map(|r| r.to_string()).collect()))
                .collect::<BTreeMap<_, _>>(),
            roles: vec![],
        };
        let users = vec![
            user("mario", &[("prot", &["read", "triage", "send", "delete"]), ("tributi", &["read"])]),
            user("anna", &[("prot", &["read", "triage"])]),
            user("ro", &[("prot", &["read"])]),
            user("del", &[("prot", &["read", "delete"])]),
        ];
        // Offices and rules as the configuration file gives them (the
        // views Mine, To handle, Offices/<name>, Done).
        let toml = r#"
            [store]
            data_dir = "/nonexistent"
            [[office]]
            name = "segreteria"
            members = ["mario", "anna"]
            [[office]]
            name = "anagrafe"
            members = ["mario"]
            [[rule]]
            mailbox = "prot"
            name = "notifiche"
            match = { subject = "(?i)notifica" }
            assign = "anagrafe"
            keywords = ["$Notifica"]
        "#;
        let cfg: Config = pecgate::config::from_toml_str(toml, Path::new("fuzz.toml")).expect("fuzz configuration");
        let rules = LiveRules::new(Rules::compile(&cfg));
        let imap: ImapConfig = serde_json::from_value(serde_json::json!({
            "listen": ["127.0.0.1:0"],
            "max_literal_size": MAX_LITERAL,
        }))
        .expect("imap config");
        Harness { rt, dir, tls, users, rules, imap, store: None, runs: 0, store_bytes: 0 }
    }

    /// The store for this input: made anew every `GENERATION` inputs.
    fn store(&mut self) -> Store {
        if self.runs >= GENERATION {
            if let Some((old, path)) = self.store.take() {
                let _ = old.close();
                drop(old);
                let _ = std::fs::remove_dir_all(path);
            }
            self.runs = 0;
        }
        self.runs += 1;
        if self.store.is_none() {
            let path = self.dir.join(format!("store-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())));
            let (store, _) = Store::open(&path, StoreOptions::default()).expect("store");
            self.store_bytes = self.rt.block_on(fill(&store));
            self.store = Some((store, path));
        }
        self.store.as_ref().expect("store").0.clone()
    }
}

/// Archive the messages every generation starts with; returns their bytes.
async fn fill(store: &Store) -> usize {
    let date = chrono::DateTime::from_timestamp(1_764_000_000, 0).expect("date");
    let mut msgs: Vec<(&str, Vec<u8>, bool)> = (1..=3).map(|i| ("prot", plain_message(i), false)).collect();
    msgs.extend(SAMPLES.iter().map(|m| ("prot", m.to_vec(), false)));
    // Our own copy of a sent message (reconciled with the receipts above
    // when their references match, in Sent either way).
    msgs.push(("prot", plain_message(4), true));
    msgs.push(("tributi", plain_message(5), false));
    let mut bytes = 0;
    let mut batch = Vec::new();
    for (n, (mailbox, raw, from_sent)) in msgs.into_iter().enumerate() {
        bytes += raw.len();
        let filing = pecgate::upstream::filing::file(&raw, from_sent, date, None);
        let is_pec = filing.meta.classification.kind != pecgate::pec::PecKind::Plain;
        // The certified message and one plain one are tracked for
        // handling, one of them assigned to an office.
        let handling = match n {
            0 => Some(Routing::default()),
            3 => Some(Routing { office: Some("segreteria".into()), ..Routing::default() }),
            _ => None,
        };
        let blob = store.put_blob(raw).await.expect("blob");
        let change = Change::Archive {
            mailbox: mailbox.into(),
            folder: filing.folder,
            blob,
            internal_date: date,
            flags: if n == 1 { vec!["\\Seen".into(), "$Etichetta".into()] } else { vec![] },
            provider: None,
            pec: is_pec.then(|| filing.meta.into()),
            handling,
        };
        batch.push((Audit::system("fuzz", "archive").mailbox(mailbox), change));
    }
    store.commit_batch(batch).await.expect("archive");
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else { return };
    let Some((&chunk, input)) = rest.split_first() else { return };
    let mut guard = HARNESS.lock().unwrap_or_else(|p| p.into_inner());
    let h = &mut *guard;
    let store = h.store();
    h.store_bytes += input.len();

    let tls = opts & 2 == 0;
    let mut imap = h.imap.clone();
    imap.allow_plaintext_on_loopback = opts & 4 != 0;
    imap.quota_kib = (opts & 32 != 0).then_some(16);
    let ctx = Arc::new(Ctx {
        cfg: imap,
        tls: h.tls.clone(),
        store,
        fulltext: None,
        auth: Arc::new(pecgate::auth::Authenticator::new(&h.users)),
        sessions: Default::default(),
        addresses: Default::default(),
        overdue_after: None,
        rules: h.rules.clone(),
        metas: Default::default(),
        mailbox_addresses: Arc::new(HashMap::from([
            ("prot".to_string(), "protocollo@pec.example.it".to_string()),
            ("tributi".to_string(), "tributi@pec.example.it".to_string()),
        ])),
        recent: Default::default(),
    });
    let mut sent = Vec::with_capacity(input.len() + 40);
    if opts & 1 != 0 {
        let user = USERS[usize::from((opts >> 3) & 3)];
        sent.extend_from_slice(format!("0 LOGIN {user} {PASSWORD}\r\n").as_bytes());
    }
    sent.extend_from_slice(input);
    let chunk = if chunk == 0 { sent.len().max(1) } else { usize::from(chunk) };
    let shutdown = opts & 64 != 0;

    let (out_len, tail) = h.rt.block_on(async move {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("address");
        let session = tokio::spawn(serve_transport(ctx, Transport::Memory(server), peer, tls, !tls, stop_rx));
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async move {
            for piece in sent.chunks(chunk) {
                if wr.write_all(piece).await.is_err() {
                    break; // the session has ended
                }
                tokio::task::yield_now().await;
            }
            if shutdown {
                let _ = stop.send(true);
            }
            let _ = wr.shutdown().await;
            stop // kept until the session ends: a dropped sender is no signal
        };
        let read = async move {
            // How much came, and its last bytes.
            let (mut len, mut tail) = (0usize, Vec::new());
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        len += n;
                        if *SHOW {
                            eprint!("{}", String::from_utf8_lossy(&buf[..n]));
                        }
                        tail.extend_from_slice(&buf[..n]);
                        tail.drain(..tail.len().saturating_sub(TAIL));
                    }
                }
            }
            (len, tail)
        };
        let (stop, got) = tokio::join!(write, read);
        match session.await {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("session task failed: {e}"),
        }
        drop(stop);
        got
    });

    // The greeting at least, and whole lines only.
    assert!(out_len > 0, "no greeting");
    assert!(tail.ends_with(b"\r\n"), "output does not end with CRLF ({out_len} bytes): …{:?}", String::from_utf8_lossy(&tail));
    assert!(!tail.ends_with(AUTOLOGOUT), "the session waited for its idle timer instead of seeing the client close");
    // Each command can at most return every message of the store a few
    // times over (FETCH BODY[] BODY[] …: each item costs the client 7
    // bytes or more), plus its own status lines.
    let bound = 64 * 1024 + input.len() * (h.store_bytes + 1024);
    assert!(out_len <= bound, "{out_len} bytes out for {} in (store {} bytes)", input.len(), h.store_bytes);
});
