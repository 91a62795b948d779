//! Directory logins against a local slapd (OpenLDAP from Debian's
//! packages, LDAPS on loopback, the same throwaway setup as
//! tests/directory.rs):
//!
//! - cold: `[directory] cache = "0s"`, so every login is a TLS connection,
//!   the service account's bind, the user search, one `member` test per
//!   configured group and the bind as the user; p50/p99 one at a time, and
//!   logins per second with 16 at once;
//! - cached: logins verified within `cache` (the salted fingerprint in
//!   memory), logins per second with 16 at once.
//!
//! It calls `Authenticator::login` itself, the function IMAP, SMTP and the
//! API call, so the figures leave out the client's own TLS handshake.
//!
//!     cargo bench --bench directory [-- COLD_LOGINS CACHED_LOGINS]
//!
//! Figures: BENCHMARKS.md "Directory logins".

#[path = "../tests/support/slapd.rs"]
mod slapd;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pecgate::auth::Authenticator;
use pecgate::config::{DirectoryConfig, DirectoryGroup};
use pecgate::directory::Directory;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const USERS: usize = 50;

fn config(s: &slapd::Slapd, cache: Duration) -> DirectoryConfig {
    let pw = s.dir.path().join("bind-password");
    std::fs::write(&pw, slapd::SVC_PW).unwrap();
    DirectoryConfig {
        url: s.ldaps_url(),
        starttls: false,
        ca: Some(s.ca()),
        bind_dn: slapd::SVC_DN.into(),
        bind_password_file: pw,
        user_base: slapd::PEOPLE.into(),
        user_filter: "(&(objectClass=inetOrgPerson)(uid={login}))".into(),
        cache,
        timeout: Duration::from_secs(10),
        groups: ["PEC-Protocollo", "PEC-Tributi"]
            .iter()
            .map(|g| DirectoryGroup {
                dn: slapd::group(g),
                grants: [("prot".to_string(), vec!["read".to_string()])].into(),
                roles: vec![],
                default_mailbox: None,
            })
            .collect(),
    }
}

fn auth(s: &slapd::Slapd, cache: Duration) -> Arc<Authenticator> {
    let a = Arc::new(Authenticator::new(&[]));
    a.set_directory(Some(Directory::new(&config(s, cache)).unwrap()), &[]);
    a
}

fn uid(i: usize) -> String {
    format!("u{i:03}")
}

/// `n` logins by `tasks` tasks at once (user i % USERS, each from its own
/// address so the throttle never delays); the latencies, sorted.
async fn run(a: &Arc<Authenticator>, n: usize, tasks: usize) -> (Duration, Vec<Duration>) {
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let a = a.clone();
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut i = t;
            while i < n {
                let u = uid(i % USERS);
                let ip: IpAddr = format!("127.1.{}.{}", t, i % 250 + 1).parse().unwrap();
                let s = Instant::now();
                a.login(&u, &format!("{u}-Pw"), ip).await.expect("login");
                lat.push(s.elapsed());
                i += tasks;
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    all.sort();
    (t0.elapsed(), all)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let cold_n = args.first().copied().unwrap_or(2_000);
    let cached_n = args.get(1).copied().unwrap_or(200_000);
    let names: Vec<String> = (0..USERS).map(uid).collect();
    let passwords: Vec<String> = names.iter().map(|u| format!("{u}-Pw")).collect();
    let people: Vec<slapd::Person> =
        names.iter().zip(&passwords).map(|(u, p)| slapd::Person { uid: u, password: p, disabled: false }).collect();
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = slapd::Slapd::start(&people, &[("PEC-Protocollo", &members), ("PEC-Tributi", &members[..10])]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cold = auth(&s, Duration::ZERO);
        // Warm slapd's caches.
        run(&cold, 100, 4).await;
        let (_, lat) = run(&cold, cold_n / 2, 1).await;
        println!(
            "cold, one at a time: {} logins, p50 {:.2} ms, p99 {:.2} ms",
            lat.len(),
            pct(&lat, 0.50),
            pct(&lat, 0.99)
        );
        let (el, lat) = run(&cold, cold_n, 16).await;
        println!(
            "cold, 16 at once: {} logins in {:.2} s = {:.0} logins/s (p50 {:.2} ms, p99 {:.2} ms)",
            lat.len(),
            el.as_secs_f64(),
            lat.len() as f64 / el.as_secs_f64(),
            pct(&lat, 0.50),
            pct(&lat, 0.99)
        );
        let cached = auth(&s, Duration::from_secs(300));
        run(&cached, USERS, 1).await;
        let (el, lat) = run(&cached, cached_n, 16).await;
        println!(
            "cached, 16 at once: {} logins in {:.2} s = {:.0} logins/s (p50 {:.3} ms, p99 {:.3} ms)",
            lat.len(),
            el.as_secs_f64(),
            lat.len() as f64 / el.as_secs_f64(),
            pct(&lat, 0.50),
            pct(&lat, 0.99)
        );
    });
}
