//! What the load tools that drive `pecgate serve` over IMAP share: a
//! minimal TLS client (one command at a time, literals read and counted)
//! and the percentile, millisecond and load-average helpers.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A minimal IMAP client over TLS: LOGIN, SELECT, SEARCH, FETCH, APPEND,
/// IDLE.
pub struct Client {
    io: BufReader<TlsStream<TcpStream>>,
    tag: u32,
}

/// What one command brought back.
#[derive(Default)]
pub struct Reply {
    pub exists: Option<usize>,
    /// FETCH responses.
    pub fetches: usize,
    /// Numbers in the SEARCH response.
    pub found: usize,
    pub literal_bytes: usize,
}

impl Client {
    pub async fn connect(port: u16, ca: &Path) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).expect("read CA");
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.expect("PEM certificate")).expect("add CA");
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let tls = TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.expect("TLS handshake");
        let mut c = Client { io: BufReader::with_capacity(256 * 1024, tls), tag: 0 };
        let mut greeting = String::new();
        c.io.read_line(&mut greeting).await.expect("greeting");
        assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
        c
    }

    pub async fn cmd(&mut self, text: &str) -> Reply {
        self.tag += 1;
        let tag = format!("a{} ", self.tag);
        self.io.get_mut().write_all(format!("{tag}{text}\r\n").as_bytes()).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
        let mut r = Reply::default();
        let mut l = String::new();
        loop {
            l.clear();
            let n = self.io.read_line(&mut l).await.expect("read");
            assert!(n > 0, "server closed during {text}");
            if let Some(rest) = l.strip_prefix(&tag) {
                assert!(rest.starts_with("OK"), "{text}: {rest}");
                return r;
            }
            if let Some(open) = l.trim_end().strip_suffix('}').and_then(|s| s.rfind('{').map(|i| &s[i + 1..])) {
                if let Ok(len) = open.parse::<usize>() {
                    let mut buf = vec![0; len];
                    self.io.read_exact(&mut buf).await.expect("literal");
                    r.literal_bytes += len;
                    if l.starts_with("* ") && l.contains(" FETCH (") {
                        r.fetches += 1;
                    }
                    continue;
                }
            }
            if let Some(rest) = l.strip_prefix("* SEARCH") {
                r.found = rest.split_whitespace().count();
            } else if let Some(rest) = l.strip_prefix("* ") {
                if rest.contains(" FETCH (") {
                    r.fetches += 1;
                } else if let Some(e) = rest.strip_suffix(" EXISTS\r\n") {
                    r.exists = e.parse().ok();
                }
            }
        }
    }
}

impl Client {
    /// `APPEND folder {n}` with `msg` as its literal.
    pub async fn append(&mut self, folder: &str, msg: &[u8]) {
        self.tag += 1;
        let tag = format!("a{} ", self.tag);
        self.send(format!("{tag}APPEND {folder} {{{}}}\r\n", msg.len()).as_bytes()).await;
        self.until("APPEND", |l| l.starts_with('+').then_some(())).await;
        self.send(&[msg, b"\r\n"].concat()).await;
        let rest = self.until("APPEND", |l| l.strip_prefix(&tag).map(str::to_string)).await;
        assert!(rest.starts_with("OK"), "APPEND {folder}: {rest}");
    }

    /// `IDLE`, until the server's continuation.
    pub async fn idle(&mut self) {
        self.tag += 1;
        self.send(format!("a{} IDLE\r\n", self.tag).as_bytes()).await;
        self.until("IDLE", |l| l.starts_with('+').then_some(())).await;
    }

    /// While idling: the next `* N EXISTS`.
    pub async fn next_exists(&mut self) -> usize {
        self.until("IDLE", |l| l.strip_prefix("* ")?.strip_suffix(" EXISTS\r\n")?.parse().ok()).await
    }

    async fn send(&mut self, bytes: &[u8]) {
        let w = self.io.get_mut();
        w.write_all(bytes).await.expect("write");
        w.flush().await.expect("flush");
    }

    /// Lines until `wanted` makes something of one.
    async fn until<T>(&mut self, during: &str, mut wanted: impl FnMut(&str) -> Option<T>) -> T {
        let mut l = String::new();
        loop {
            l.clear();
            assert!(self.io.read_line(&mut l).await.expect("read") > 0, "server closed during {during}");
            if let Some(t) = wanted(&l) {
                return t;
            }
        }
    }
}

pub fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or_default()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
