//! Shared setup for the IMAP end-to-end tests: a data directory filled
//! through the store's library API (no provider), a TLS certificate made
//! with the `openssl` CLI, a config, and a running `pecgate serve`.
#![allow(dead_code)]

#[path = "../support/selfsigned.rs"]
pub mod selfsigned;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pecgate::store::{Audit, BlobRef, Change, Store, StoreOptions};

pub const PASSWORD: &str = "pw-Secret-1";

pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub starttls_port: Option<u16>,
    pub child: Child,
    /// Raw messages archived before start, in prot/INBOX UID order.
    pub inbox: Vec<Vec<u8>>,
    pub blobs: Vec<BlobRef>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

pub fn message(i: usize) -> Vec<u8> {
    format!(
        "From: Ufficio {i} <mittente{i}@pec.example.it>\r\nTo: protocollo@pec.comune.example.it\r\nSubject: Notifica numero {i}\r\nDate: Mon, 3 Mar 2025 10:0{i}:00 +0100\r\nMessage-ID: <m{i}@pec.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTesto del messaggio {i} parola{i}\r\n--b{i}\r\nContent-Type: application/xml; name=daticert.xml\r\nContent-Transfer-Encoding: base64\r\n\r\nPHBvc3RhY2VydC8+\r\n--b{i}--\r\n"
    )
    .into_bytes()
}

fn user(name: &str, grants: &str, default: &str) -> String {
    let hash = pecgate::auth::hash_password(PASSWORD).expect("hash");
    format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"{default}\"\ngrants = {{ {grants} }}\n\n")
}

/// `[[user]]` blocks (for [`Setup::extra_config`]): each `(name, grants)`
/// with [`PASSWORD`] and `prot` as default mailbox, `grants` the TOML
/// inside `grants = { ... }` (e.g. `prot = ["read"], tributi = ["read"]`).
pub fn users(list: &[(&str, &str)]) -> String {
    let hash = pecgate::auth::hash_password(PASSWORD).expect("hash");
    list.iter()
        .map(|(name, grants)| format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"prot\"\ngrants = {{ {grants} }}\n\n"))
        .collect()
}

/// What a test gateway holds and how it is configured.
#[derive(Default)]
pub struct Setup {
    /// Plain messages archived in prot/INBOX.
    pub inbox: usize,
    /// Also listen for STARTTLS (its port is `Gateway::starttls_port`).
    pub starttls: bool,
    /// Archive the PEC fixture ([`SENT_A`], [`SENT_B`], [`SENT_C`] in
    /// prot/Sent, the receipts of A where they belong).
    pub pec: bool,
    /// Extra TOML appended to the configuration (e.g. a `[pec]` section).
    pub extra_config: String,
    /// Extra lines of the `[imap]` section (e.g. `quota_kib = 10`).
    pub imap_config: String,
    /// Pad each INBOX message's text with about this many bytes (0: none),
    /// see [`padded_message`].
    pub pad: usize,
    /// Archive this many more small messages ([`bulk_message`]) in
    /// prot/INBOX after the others, in batches (load tools: a 100k folder).
    pub bulk: usize,
    /// Messages (raw, internal date) archived in prot/INBOX after the
    /// `inbox` ones, in this order (e.g. the SORT and THREAD fixture).
    pub dated: Vec<(Vec<u8>, chrono::DateTime<chrono::Utc>)>,
}

/// A small message for bulk folders: 1,000 senders, subjects numbered,
/// internal dates one minute apart going back from now (see
/// [`bulk_date`]).
pub fn bulk_message(i: usize) -> Vec<u8> {
    format!(
        "From: Mittente {s} <mittente{s}@pec.example.it>\r\nTo: protocollo@pec.comune.example.it\r\nSubject: Pratica {i}\r\nMessage-ID: <bulk{i}@pec.example.it>\r\n\r\nTesto della pratica {i}\r\n",
        s = i % 1000
    )
    .into_bytes()
}

/// Internal date of bulk message `i` (of `n`): the last is the newest.
pub fn bulk_date(i: usize, n: usize) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::minutes((n - i) as i64)
}

async fn archive_bulk(store: &Store, n: usize) {
    const BATCH: usize = 1000;
    let t0 = Instant::now();
    let mut i = 1;
    while i <= n {
        let end = (i + BATCH).min(n + 1);
        // Blob writes (each fsynced) in parallel, then one group commit.
        let mut puts = tokio::task::JoinSet::new();
        for k in i..end {
            let st = store.clone();
            puts.spawn(async move { (k, st.put_blob(bulk_message(k)).await.expect("blob")) });
        }
        let mut blobs = Vec::new();
        while let Some(r) = puts.join_next().await {
            blobs.push(r.expect("blob task"));
        }
        blobs.sort_by_key(|(k, _)| *k);
        let entries = blobs
            .into_iter()
            .map(|(k, blob)| {
                (
                    Audit::system("test", "archive"),
                    Change::Archive {
                        mailbox: "prot".into(),
                        folder: "INBOX".into(),
                        blob,
                        internal_date: bulk_date(k, n),
                        flags: vec![],
                        provider: None,
                        pec: None,
                        handling: None,
                    },
                )
            })
            .collect();
        store.commit_batch(entries).await.expect("commit batch");
        i = end;
    }
    eprintln!("bulk: {n} messages archived in {:.1} s", t0.elapsed().as_secs_f64());
}

/// [`message`] `i` with about `pad` more bytes of text (76-column lines).
pub fn padded_message(i: usize, pad: usize) -> Vec<u8> {
    if pad == 0 {
        return message(i);
    }
    let line = format!("{:<74}\r\n", format!("riga di riempimento del messaggio {i}"));
    let fill = line.repeat(pad.div_ceil(line.len()));
    let text = String::from_utf8(message(i)).unwrap_or_default();
    let mark = format!("parola{i}\r\n");
    text.replacen(&mark, &format!("{mark}{fill}"), 1).into_bytes()
}

/// Original Message-ID of the sample submission (tests/data/pec).
pub const SAMPLE_MID: &str = "<20261125101455.ABC123@client.comune.example.it>";

/// The sample submission: receipts say accepted, delivered to
/// ufficio.legale, failed for amministrazione, info@ditta.example.com is
/// not certified.
pub fn sent_a() -> Vec<u8> {
    format!("From: protocollo@pec.comune.example.it\r\nTo: ufficio.legale@pec.ditta.example.it, amministrazione@pec.altra.example.it\r\nCc: info@ditta.example.com\r\nSubject: Sollecito di pagamento n. 42/2026 - fattura idrica\r\nDate: Wed, 25 Nov 2026 10:14:55 +0100\r\nMessage-ID: {SAMPLE_MID}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSi sollecita il pagamento.\r\n").into_bytes()
}

/// Sent two hours ago, no receipt: overdue when `overdue_after` < 2 h.
pub fn sent_b() -> Vec<u8> {
    b"From: protocollo@pec.comune.example.it\r\nTo: ufficio.legale@pec.ditta.example.it\r\nSubject: Seconda comunicazione\r\nMessage-ID: <b-overdue@client.comune.example.it>\r\n\r\nTesto B\r\n".to_vec()
}

/// Sent just now, no receipt yet: pending, not undelivered.
pub fn sent_c() -> Vec<u8> {
    b"From: protocollo@pec.comune.example.it\r\nTo: ufficio.legale@pec.ditta.example.it\r\nSubject: Terza comunicazione\r\nMessage-ID: <c-pending@client.comune.example.it>\r\n\r\nTesto C\r\n".to_vec()
}

/// The sample receipts of [`sent_a`].
pub const RECEIPTS: [&str; 3] = [
    "02-accettazione.eml",
    "03-avvenuta-consegna-completa.eml",
    "05-errore-consegna.eml",
];

/// Archive one message as the upstream filing would (classified with
/// `pec::classify`; a sent copy carries `SentInfo`).
async fn archive_pec(
    store: &Store,
    raw: Vec<u8>,
    from_sent: bool,
    at: chrono::DateTime<chrono::Utc>,
) {
    let filing = pecgate::upstream::filing::file(&raw, from_sent, at, None);
    let blob = store.put_blob(raw).await.expect("blob");
    store
        .commit(
            Audit::system("test", "archive"),
            Change::Archive {
                mailbox: "prot".into(),
                folder: filing.folder,
                blob,
                internal_date: at,
                flags: vec![],
                provider: None,
                pec: Some(filing.meta.into()),
                handling: None,
            },
        )
        .await
        .expect("commit");
}

/// Archive `n` messages into prot/INBOX, write cert and config, start the
/// daemon and wait until the IMAPS port accepts.
pub fn start(n: usize, starttls_port: bool) -> Gateway {
    start_with(Setup {
        inbox: n,
        starttls: starttls_port,
        ..Setup::default()
    })
}

pub fn start_with(setup: Setup) -> Gateway {
    let n = setup.inbox;
    let starttls_port = setup.starttls;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (inbox, blobs) = rt.block_on(async {
        let (store, _) = Store::open(&data, StoreOptions::default()).expect("open store");
        let mut inbox = Vec::new();
        let mut blobs = Vec::new();
        for i in 1..=n {
            let raw = padded_message(i, setup.pad);
            let blob = store.put_blob(raw.clone()).await.expect("blob");
            store
                .commit(
                    Audit::system("test", "archive"),
                    Change::Archive {
                        mailbox: "prot".into(),
                        folder: "INBOX".into(),
                        blob: blob.clone(),
                        internal_date: chrono::Utc::now(),
                        flags: vec![],
                        provider: None,
                        pec: None,
                        handling: None,
                    },
                )
                .await
                .expect("commit");
            inbox.push(raw);
            blobs.push(blob);
        }
        for (raw, internal_date) in &setup.dated {
            let blob = store.put_blob(raw.clone()).await.expect("blob");
            store
                .commit(
                    Audit::system("test", "archive"),
                    Change::Archive {
                        mailbox: "prot".into(),
                        folder: "INBOX".into(),
                        blob,
                        internal_date: *internal_date,
                        flags: vec![],
                        provider: None,
                        pec: None,
                        handling: None,
                    },
                )
                .await
                .expect("commit");
        }
        let b = store
            .put_blob(b"Subject: tributi\r\n\r\nsecret\r\n".to_vec())
            .await
            .expect("blob");
        store
            .commit(
                Audit::system("test", "archive"),
                Change::Archive {
                    mailbox: "tributi".into(),
                    folder: "INBOX".into(),
                    blob: b,
                    internal_date: chrono::Utc::now(),
                    flags: vec![],
                    provider: None,
                    pec: None,
                    handling: None,
                },
            )
            .await
            .expect("commit");
        if setup.bulk > 0 {
            archive_bulk(&store, setup.bulk).await;
        }
        if setup.pec {
            let now = chrono::Utc::now();
            // Times relative to now, so that the states do not drift with
            // the calendar: with `overdue_after = "1h"` only B is overdue.
            let a_at = now - chrono::Duration::minutes(30);
            archive_pec(&store, sent_a(), true, a_at).await;
            archive_pec(&store, sent_b(), true, now - chrono::Duration::hours(2)).await;
            archive_pec(&store, sent_c(), true, now).await;
            let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pec");
            for f in RECEIPTS {
                let raw = std::fs::read(samples.join(f)).expect("sample receipt");
                archive_pec(&store, raw, false, a_at + chrono::Duration::minutes(1)).await;
            }
        }
        store.close().expect("close");
        (inbox, blobs)
    });
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    selfsigned::certificate(&cert, &key);
    let port = free_port();
    let starttls_port = starttls_port.then(free_port);
    let starttls = match starttls_port {
        Some(p) => format!("listen_starttls = [\"127.0.0.1:{p}\"]\n"),
        None => String::new(),
    };
    let mut text = format!(
        "[store]\ndata_dir = \"{}\"\n\n[[mailbox]]\nalias = \"prot\"\naddress = \"protocollo@pec.example.it\"\nusername = \"u\"\npassword = \"p\"\nimap = {{ host = \"127.0.0.1\", port = 9, tls = \"none\" }}\noffload = {{ mode = \"never\" }}\npoll_interval = \"1h\"\n\n[[mailbox]]\nalias = \"tributi\"\naddress = \"tributi@pec.example.it\"\nusername = \"u\"\npassword = \"p\"\nimap = {{ host = \"127.0.0.1\", port = 9, tls = \"none\" }}\noffload = {{ mode = \"never\" }}\npoll_interval = \"1h\"\n\n[imap]\nlisten = [\"127.0.0.1:{port}\"]\n{starttls}{}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n",
        data.display(),
        setup.imap_config,
        cert.display(),
        key.display()
    );
    text += &user(
        "mario",
        "prot = [\"read\", \"triage\", \"send\", \"delete\"]",
        "prot",
    );
    text += &user("anna", "prot = [\"read\", \"triage\"]", "prot");
    text += &user("ro", "prot = [\"read\"]", "prot");
    text += &user("luigi", "tributi = [\"read\"]", "tributi");
    text += &setup.extra_config;
    let config = dir.path().join("pecgate.toml");
    std::fs::write(&config, text).expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).expect("log file"))
        .spawn()
        .expect("start pecgate serve");
    let mut gw = Gateway {
        dir,
        config,
        port,
        starttls_port,
        child,
        inbox,
        blobs,
    };
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = gw.child.try_wait() {
            panic!("pecgate serve exited early ({st}): {}", gw.log());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "pecgate serve did not listen in 30 s: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    gw
}

impl Gateway {
    /// Start `pecgate serve` again on the same configuration and data
    /// (after [`Gateway::stop`], or a rebuilt index) and wait until it
    /// listens; its log goes on in the same file.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().append(true).open(self.dir.path().join("serve.log")).expect("log file");
        self.child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pecgate serve");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("pecgate serve exited early ({st}): {}", self.log());
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "pecgate serve did not listen in 30 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Run `tests/imap/<script>` with python3; returns (success, stdout, stderr).
    pub fn python(&self, script: &str, extra: &[&str]) -> (bool, String, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/imap")
            .join(script);
        let out = Command::new("python3")
            .arg(path)
            .arg(self.port.to_string())
            .arg(self.cert())
            .arg(self.data())
            .args(extra)
            .output()
            .expect("run python3");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Stop the daemon with SIGTERM and wait for it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
