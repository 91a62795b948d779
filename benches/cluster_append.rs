//! The cluster backend's journal append rate (issue 21): writers commit
//! small records (an audit record each, what a login or a read costs, and
//! a flag change) through `N` nodes sharing one PostgreSQL, one chain, the
//! nodes being `Store`s in this process with their own index directories
//! (a node's writer thread, PostgreSQL connection and LISTEN as in
//! `serve`). Against the same work on one node and on the local backend.
//!
//!     cargo bench --bench cluster_append
//!
//! Environment: CLUSTER_WRITERS (concurrent writers per node, default 16),
//! CLUSTER_SECS (seconds per run, default 10). PostgreSQL 15 and s3s-fs
//! as for tests/cluster.rs (scripts/test installs them).

#[path = "../tests/support/cluster.rs"]
#[allow(dead_code)]
mod cluster_support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use cluster_support::{Postgres, S3};
use pecgate::store::{Audit, Change, Store, StoreOptions};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `writers` tasks per store commit one audit record at a time for
/// `secs`; returns records per second and the median and p99 commit time.
async fn run(stores: &[Store], writers: u64, secs: u64) -> (f64, Duration, Duration) {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in stores.iter().enumerate() {
        for w in 0..writers {
            let s = s.clone();
            tasks.spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let a = Audit::system("bench", "select").mailbox("bench").folder(&format!("n{i}w{w}"));
                    s.commit(a, Change::None).await.expect("commit");
                    lat.push(t.elapsed());
                }
                lat
            });
        }
    }
    let t0 = Instant::now();
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("writer"));
    }
    let elapsed = t0.elapsed().as_secs_f64().max(secs as f64);
    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    (all.len() as f64 / elapsed, pct(0.5), pct(0.99))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let writers = env("CLUSTER_WRITERS", 16);
    let secs = env("CLUSTER_SECS", 10);
    let _ = free_port;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    println!("journal appends, {writers} writers per node, {secs} s each, one audit record per commit");
    println!("{:<28} {:>12} {:>10} {:>10}", "backend", "records/s", "p50", "p99");
    rt.block_on(async {
        let (local, _) = Store::open(&dir.path().join("local"), StoreOptions::default()).expect("local store");
        let (r, p50, p99) = run(std::slice::from_ref(&local), writers, secs).await;
        println!("{:<28} {:>12.0} {:>10.2?} {:>10.2?}", "local (fsync per batch)", r, p50, p99);
        local.close().expect("close");
    });
    let pg = Postgres::start();
    let s3 = S3::start();
    for nodes in [1usize, 3] {
        rt.block_on(async {
            let stores: Vec<Store> = (0..nodes)
                .map(|i| {
                    let name = format!("n{nodes}-{i}");
                    Store::open(&dir.path().join(&name), s3.store_options(&pg, &name)).expect("cluster store").0
                })
                .collect();
            let (r, p50, p99) = run(&stores, writers, secs).await;
            println!(
                "{:<28} {:>12.0} {:>10.2?} {:>10.2?}",
                format!("cluster, {nodes} node(s), one chain"),
                r,
                p50,
                p99
            );
            for s in stores {
                s.close().expect("close");
            }
        });
    }
    let rows = pg.sql("SELECT count(*) FROM pecgate_journal");
    println!("shared journal rows: {rows}");
}
