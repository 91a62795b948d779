//! The JSON API under load, over HTTPS and over plain HTTP side by side:
//! `pecgate serve` (the IMAP test fixture with the PEC sample messages in
//! prot/Sent) and 10 clients, each on its own keep-alive connection,
//! asking `GET /api/sent?mailbox=prot` with Basic credentials as fast as
//! the answers come, for SECONDS each way.
//!
//!     cargo bench --bench api_load [-- SECONDS]
//!
//! Figures: BENCHMARKS.md "API over TLS".

#[allow(dead_code)]
#[path = "../tests/imap_support/mod.rs"]
mod imap_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use imap_support::{start_with, Setup, PASSWORD};

const CLIENTS: usize = 10;

async fn client(
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    until: Instant,
    done: Arc<AtomicU64>,
    lat: Arc<std::sync::Mutex<Vec<Duration>>>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = format!("Basic {}", openssl::base64::encode_block(format!("mario:{PASSWORD}").as_bytes()));
    let mut send = match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let s = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.unwrap();
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            send
        }
        None => {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            send
        }
    };
    let mut mine = Vec::new();
    while Instant::now() < until {
        let req = Request::get("/api/sent?mailbox=prot")
            .header("host", "127.0.0.1")
            .header("authorization", &auth)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let t = Instant::now();
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty());
        mine.push(t.elapsed());
        done.fetch_add(1, Ordering::Relaxed);
    }
    lat.lock().unwrap().extend(mine);
}

fn run(tls: bool, secs: u64) {
    let port = imap_support::free_port();
    let extra = format!("[http]\nlisten = \"127.0.0.1:{port}\"\ntls = {tls}\n");
    let gw = start_with(Setup { inbox: 10, pec: true, extra_config: extra, ..Setup::default() });
    let cfg = tls.then(|| pecgate::tls::client_config_pinned(&gw.cert()).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Warm: the first login verifies the argon2 hash; the rest are
    // remembered (auth's VERIFIED_FOR).
    rt.block_on(client(port, cfg.clone(), Instant::now() + Duration::from_millis(300), done.clone(), lat.clone()));
    done.store(0, Ordering::Relaxed);
    lat.lock().unwrap().clear();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..CLIENTS {
            set.spawn(client(port, cfg.clone(), until, done.clone(), lat.clone()));
        }
        while set.join_next().await.is_some() {}
    });
    let el = t0.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap().clone();
    l.sort();
    let p = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "{}: {CLIENTS} clients, {} requests in {el:.1} s = {:.0} requests/s (p50 {:.2} ms, p99 {:.2} ms)",
        if tls { "HTTPS" } else { "HTTP " },
        l.len(),
        l.len() as f64 / el,
        p(0.5),
        p(0.99)
    );
    drop(gw);
}

fn main() {
    let secs = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10);
    run(false, secs);
    run(true, secs);
}
