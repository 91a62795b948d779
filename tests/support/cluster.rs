//! The cluster backend's peers, started on loopback with a throwaway
//! configuration: PostgreSQL 15 from Debian's packages (`initdb`, `pg_ctl`
//! as the `postgres` user when the tests run as root) and `s3s-fs`, an
//! S3 server on a directory that verifies checksums and conditional
//! writes (`cargo install s3s-fs --version 0.14.1 --features binary`,
//! which `scripts/test` does). A missing peer fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `cmd` run as the `postgres` user when the tests run as root (PostgreSQL
/// refuses root), as is otherwise.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
    /// Serving TLS with this certificate and key (files in `data`).
    tls: bool,
    /// Asking clients for a certificate signed by `root.crt` (in `data`),
    /// and TCP connections authenticated by it alone.
    client_certs: bool,
}

impl Postgres {
    /// A fresh cluster with a `pecgate` database owned by the `pecgate`
    /// role (trust authentication on loopback).
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("pecgate-pg").tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        if is_root() {
            // initdb and the server run as postgres: the directory must be
            // theirs (a temp dir is root's, mode 0700).
            let st = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
            assert!(st.success(), "chown postgres {}", dir.path().display());
        }
        let out = as_postgres(&Path::new(PG_BIN).join("initdb"))
            .args(["-A", "trust", "-U", "pecgate", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap_or_else(|e| panic!("run {PG_BIN}/initdb (apt-get install postgresql-15): {e}"));
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres { dir, port: free_port(), data, log, tls: false, client_certs: false };
        pg.pg_ctl(&["start", "-w", "-t", "60"]);
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "pecgate",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE pecgate",
            ])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "create database: {}", String::from_utf8_lossy(&out.stderr));
        pg
    }

    /// Serve TLS (as well as plain connections) with `cert` and `key`,
    /// from a restart on.
    pub fn enable_tls(&mut self, cert: &Path, key: &Path) {
        for (from, to, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
            let dest = self.data.join(to);
            std::fs::copy(from, &dest).expect("copy the certificate into the data directory");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).expect("chmod");
            if is_root() {
                let st = Command::new("chown").arg("postgres:postgres").arg(&dest).status().expect("chown");
                assert!(st.success());
            }
        }
        self.tls = true;
        self.pg_ctl(&["restart", "-w", "-t", "60"]);
    }

    /// Require a client certificate signed by `ca` on every TCP connection
    /// (`hostssl all all 127.0.0.1/32 cert`: the certificate's CN is the
    /// role, so `pecgate`), from a restart on. Needs [`Postgres::enable_tls`]
    /// first. [`Postgres::sql`] goes through the Unix socket from then on.
    pub fn require_client_certs(&mut self, ca: &Path) {
        assert!(self.tls, "enable_tls first");
        let dest = self.data.join("root.crt");
        std::fs::copy(ca, &dest).expect("copy the CA into the data directory");
        // pg_hba.conf is postgres's: writing it keeps its owner.
        std::fs::write(self.data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 cert\n")
            .expect("write pg_hba.conf");
        if is_root() {
            let st = Command::new("chown").arg("postgres:postgres").arg(&dest).status().expect("chown");
            assert!(st.success());
        }
        self.client_certs = true;
        self.pg_ctl(&["restart", "-w", "-t", "60"]);
    }

    fn pg_ctl(&mut self, args: &[&str]) {
        let mut opts =
            format!("-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on", self.port, self.dir.path().display());
        if self.tls {
            opts += " -c ssl=on";
        }
        if self.client_certs {
            opts += " -c ssl_ca_file=root.crt";
        }
        let out = as_postgres(&Path::new(PG_BIN).join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-o", &opts])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// `pg_ctl restart -m immediate`: a crash of the database.
    pub fn restart_immediate(&mut self) {
        self.pg_ctl(&["restart", "-m", "immediate", "-w", "-t", "60"]);
    }

    pub fn url(&self) -> String {
        format!("postgresql://pecgate@127.0.0.1:{}/pecgate", self.port)
    }

    /// The directory of the server's Unix socket (`host=` for libpq).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run one SQL statement with psql; its output (unaligned, tuples only).
    pub fn sql(&self, sql: &str) -> String {
        let host = if self.client_certs { self.socket_dir().display().to_string() } else { "127.0.0.1".into() };
        let out = Command::new("psql")
            .args(["-h", &host, "-p", &self.port.to_string(), "-U", "pecgate", "-d", "pecgate", "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&Path::new(PG_BIN).join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate"])
            .output();
    }
}

/// PgBouncer 1.18+ (Debian package `pgbouncer`, run as `postgres` when the
/// tests run as root) in transaction pooling mode in front of a
/// [`Postgres`]: database `pecgate`, trust authentication, `pecgate` an
/// admin of its console (database `pgbouncer`). It reaches PostgreSQL
/// through the Unix socket, so in `pg_stat_activity` its server
/// connections have no client address and direct ones have 127.0.0.1.
/// A missing binary fails the test.
pub struct PgBouncer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pid: Option<u32>,
}

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

impl PgBouncer {
    pub fn start(pg: &Postgres) -> PgBouncer {
        let dir = tempfile::Builder::new().prefix("pecgate-pgbouncer").tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("userlist.txt"), "\"pecgate\" \"\"\n").expect("userlist");
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\npecgate = host={} port={} dbname=pecgate user=pecgate\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {d}/userlist.txt\nadmin_users = pecgate\n\
                 pool_mode = transaction\nmax_client_conn = 200\ndefault_pool_size = 20\nstats_period = 1\n\
                 logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n",
                pg.socket_dir().display(),
                pg.port
            ),
        )
        .expect("pgbouncer.ini");
        if is_root() {
            let st = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
            assert!(st.success(), "chown postgres {}", dir.path().display());
        }
        // -d: it detaches, and its pid file says which process to stop.
        let out = as_postgres(Path::new(PGBOUNCER))
            .arg("-d")
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {PGBOUNCER} (apt-get install pgbouncer; scripts/test does): {e}"));
        let mut b = PgBouncer { dir, port, pid: None };
        assert!(
            out.status.success(),
            "pgbouncer: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            b.log()
        );
        let t0 = Instant::now();
        while b.pid.is_none() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "pgbouncer did not listen: {}", b.log());
            std::thread::sleep(Duration::from_millis(50));
            b.pid =
                std::fs::read_to_string(b.dir.path().join("pgbouncer.pid")).ok().and_then(|s| s.trim().parse().ok());
        }
        b
    }

    /// Through PgBouncer to the `pecgate` database.
    pub fn url(&self) -> String {
        format!("postgresql://pecgate@127.0.0.1:{}/pecgate", self.port)
    }

    /// A `SHOW …` on the admin console: each row as column name → value.
    pub fn show(&self, what: &str) -> Vec<std::collections::HashMap<String, String>> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "pecgate", "-d", "pgbouncer", "-A", "-c"])
            .arg(format!("SHOW {what}"))
            .output()
            .expect("run psql");
        assert!(out.status.success(), "SHOW {what}: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut lines = text.lines();
        let head: Vec<String> = lines.next().unwrap_or_default().split('|').map(str::to_string).collect();
        lines
            .filter(|l| l.contains('|'))
            .map(|l| head.iter().cloned().zip(l.split('|').map(str::to_string)).collect())
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
}

pub const S3_ACCESS_KEY: &str = "pecgate-test";
pub const S3_SECRET_KEY: &str = "pecgate-test-secret";
pub const BUCKET: &str = "pecgate-archive";

pub struct S3 {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

fn s3s_fs_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PECGATE_S3S_FS") {
        return PathBuf::from(p);
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    home.join("bin/s3s-fs")
}

impl S3 {
    /// s3s-fs on a fresh directory holding the bucket [`BUCKET`].
    pub fn start() -> S3 {
        let dir = tempfile::Builder::new().prefix("pecgate-s3").tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("root")).expect("s3 root");
        std::fs::create_dir(dir.path().join("root").join(BUCKET)).expect("bucket dir");
        let mut s = S3 { dir, port: free_port(), child: None };
        s.start_again();
        s
    }

    pub fn start_again(&mut self) {
        let bin = s3s_fs_bin();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("s3s.log")).expect("log");
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.dir.path().join("root"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {} (cargo install s3s-fs --version 0.14.1 --features binary): {e}", bin.display())
            });
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "s3s-fs did not listen: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The objects under the bucket, as s3s-fs keeps them (files).
    pub fn objects(&self) -> Vec<String> {
        let root = self.dir.path().join("root").join(BUCKET);
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&root) {
                    out.push(rel.display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3s.log")).unwrap_or_default()
    }

    /// The store options of node `node` on this bucket and `pg` (for
    /// `Store::open` straight from a test or a bench).
    pub fn store_options(&self, pg: &Postgres, node: &str) -> pecgate::store::StoreOptions {
        pecgate::store::StoreOptions {
            cluster: Some(pecgate::store::cluster::ClusterOptions {
                postgres: pg.url(),
                postgres_listen: None,
                postgres_ca: None,
                postgres_cert: None,
                postgres_key: None,
                node: node.into(),
                bucket: pecgate::store::bucket::BucketConfig {
                    endpoint: self.endpoint(),
                    bucket: BUCKET.into(),
                    region: "us-east-1".into(),
                    access_key: S3_ACCESS_KEY.into(),
                    secret_key: S3_SECRET_KEY.into(),
                },
            }),
            ..pecgate::store::StoreOptions::default()
        }
    }

    /// The `[store]` section of a node: `node` with its index in
    /// `index_dir`, keys written beside it.
    pub fn store_toml(&self, pg: &Postgres, node: &str, index_dir: &Path) -> String {
        let keys = index_dir.parent().expect("index dir parent");
        let (ak, sk) = (keys.join(format!("{node}-s3-access")), keys.join(format!("{node}-s3-secret")));
        std::fs::write(&ak, S3_ACCESS_KEY).expect("key file");
        std::fs::write(&sk, S3_SECRET_KEY).expect("key file");
        format!(
            "[store]\nbackend = \"cluster\"\npostgres = \"{}\"\nnode = \"{node}\"\nindex_dir = \"{}\"\n\n\
             [store.blobs]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\naccess_key_file = \"{}\"\nsecret_key_file = \"{}\"\n\n",
            pg.url(),
            index_dir.display(),
            self.endpoint(),
            ak.display(),
            sk.display()
        )
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `pecgate serve` node of a cluster on loopback: its `[store]` on a
/// PostgreSQL and a bucket, its own index directory and ports.
pub struct Node {
    pub name: String,
    pub index_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The IMAP listener (implicit TLS).
    pub port: u16,
    /// The HTTP listener (API, `/metrics`).
    pub http: u16,
    /// The running `serve`, if any.
    pub child: Option<Child>,
}

impl Node {
    /// Node `name` of the cluster on `pg` and `s3`: its `[store]`, then
    /// `body(imap_port, http_port)` (every other section).
    pub fn new(dir: &Path, name: &str, pg: &Postgres, s3: &S3, body: impl Fn(u16, u16) -> String) -> Node {
        let index_dir = dir.join(format!("node-{name}"));
        let (port, http) = (free_port(), free_port());
        let text = format!("{}{}", s3.store_toml(pg, name, &index_dir), body(port, http));
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).expect("write config");
        Node { name: name.into(), log: dir.join(format!("{name}.log")), index_dir, config, port, http, child: None }
    }

    /// Start `serve` and wait until it answers IMAP and HTTP.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pecgate serve");
        self.child = Some(child);
        let t0 = Instant::now();
        for port in [self.port, self.http] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                    panic!("node {} exited ({st}): {}", self.name, self.log());
                }
                assert!(t0.elapsed() < Duration::from_secs(60), "node {} did not listen: {}", self.name, self.log());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGTERM, and wait until it has stopped.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                assert!(t0.elapsed() < Duration::from_secs(60), "node {} did not stop: {}", self.name, self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: the node dies at whatever it was doing.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `pecgate ARGS --config` this node's configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_pecgate")).args(args).arg("--config").arg(&self.config).output().expect("run pecgate")
    }

    /// `/metrics`, as text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http)).expect("connect to /metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    /// The node's journal mirror, every segment in order.
    pub fn mirror(&self) -> String {
        let dir = self.index_dir.join("journal");
        let mut names: Vec<_> = std::fs::read_dir(&dir).expect("mirror").flatten().map(|e| e.path()).collect();
        names.sort();
        names.iter().map(|p| std::fs::read_to_string(p).expect("segment")).collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}
