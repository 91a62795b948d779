//! The journal in PostgreSQL, for several pecgate nodes sharing one archive
//! (`[store] backend = "cluster"`).
//!
//! PostgreSQL holds the truth: `pecgate_journal` has one row per record,
//! its canonical line exactly as a journal segment file would hold it (so
//! the hash chain, `audit verify` and exports are unchanged), and
//! `pecgate_chain` one row with the chain's head. Every writer locks that
//! row first (`SELECT … FOR UPDATE`): the lock orders the chain across
//! nodes (a sequence could not: it has gaps), and while a node holds it,
//! it first takes in the records other nodes committed, so the UIDs,
//! UIDVALIDITYs and MODSEQs it assigns follow from the whole archive. The
//! records, the new head and a `NOTIFY` go in the same transaction.
//!
//! Each node keeps what it derives: the index, as on one machine, and a
//! mirror of the journal as segment files beside it (each line checked
//! against the chain as it is copied), which every reader of the journal
//! (audit, exports, anchoring, full-text indexing) reads as it reads one
//! machine's. Both can be deleted: they are fetched and rebuilt from
//! PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

/// How every connection to PostgreSQL is made: rustls on ring, the
/// server's certificate checked against the system roots and
/// `[store] postgres_ca`, this node's `postgres_cert` presented when the
/// server asks for one (TLS when the URL's `sslmode` asks for it or the
/// server offers it).
pub type Tls = tokio_postgres_rustls::MakeRustlsConnect;

pub fn tls(opts: &ClusterOptions) -> Result<Tls, String> {
    let identity = client_identity(opts.postgres_cert.as_deref(), opts.postgres_key.as_deref())
        .map_err(|(key, e)| format!("{key}: {e}"))?;
    let cfg = crate::tls::client_config_with_identity(opts.postgres_ca.as_deref(), identity)
        .map_err(|e| format!("store.postgres_ca: {e}"))?;
    Ok(Tls::new((*cfg).clone()))
}

/// The client certificate (`[store] postgres_cert`) and its key
/// (`postgres_key`), both or neither; an error names the key at fault
/// (`check-config` reports it as such) and the file.
pub fn client_identity(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<Option<Arc<rustls::sign::CertifiedKey>>, (&'static str, String)> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err((
                "store.postgres_key",
                "required with store.postgres_cert (the client certificate's key)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "store.postgres_cert",
                "required with store.postgres_key (the key's client certificate)".into(),
            ))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let certs = crate::tls::load_certs(cert).map_err(|e| ("store.postgres_cert", e.to_string()))?;
    let k = crate::tls::load_key(key).map_err(|e| ("store.postgres_key", e.to_string()))?;
    crate::tls::client_identity(certs, k).map(Some).map_err(|e| {
        ("store.postgres_key", format!("{}: not usable with the certificate in {}: {e}", key.display(), cert.display()))
    })
}

/// How a node reaches the shared archive.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A libpq connection string or URL (several hosts and
    /// `target_session_attrs=read-write` allowed).
    pub postgres: String,
    /// Where the one LISTEN connection goes when `postgres` cannot carry
    /// it (PgBouncer in transaction mode): straight to PostgreSQL. `None`:
    /// `postgres`.
    pub postgres_listen: Option<String>,
    /// CA certificates trusted for the server's, besides the system's.
    pub postgres_ca: Option<std::path::PathBuf>,
    /// This node's client certificate and its key (PEM), presented when
    /// the server asks (`cert` authentication); both or neither.
    pub postgres_cert: Option<std::path::PathBuf>,
    pub postgres_key: Option<std::path::PathBuf>,
    /// This node's name, unique in the cluster.
    pub node: String,
    pub bucket: super::bucket::BucketConfig,
}

impl ClusterOptions {
    /// The LISTEN connection's address: `postgres_listen`, else `postgres`.
    pub fn listen_url(&self) -> &str {
        self.postgres_listen.as_deref().unwrap_or(&self.postgres)
    }
}

/// A runtime of the store's own for the PostgreSQL client: the writer is
/// a plain thread and waits on it; dropping it never blocks.
pub struct Rt(Option<tokio::runtime::Runtime>);

impl Rt {
    pub fn new(name: &str) -> std::io::Result<Arc<Rt>> {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(name).enable_all().build()?;
        Ok(Arc::new(Rt(Some(rt))))
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().map(|r| r.handle()).unwrap_or_else(|| unreachable!("runtime taken only in drop"))
    }

    /// Wait for `fut` on this runtime, from a thread outside any runtime
    /// (the writer) or inside one (a task, a test), alike.
    pub fn wait<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| "the PostgreSQL client stopped".to_string())
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pecgate_journal (
    seq  BIGINT PRIMARY KEY,
    line TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pecgate_chain (
    id   INT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pecgate_nodes (
    node       TEXT PRIMARY KEY,
    applied    BIGINT NOT NULL DEFAULT 0,
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pecgate_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT,
    epoch      BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS pecgate_sends (
    mailbox TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS pecgate_sends_by_mailbox ON pecgate_sends (mailbox, at);
CREATE TABLE IF NOT EXISTS pecgate_claims (
    campaign   TEXT NOT NULL,
    notice     INT NOT NULL,
    node       TEXT,
    epoch      BIGINT,
    claimed_at TIMESTAMPTZ,
    PRIMARY KEY (campaign, notice)
);
";

/// The channel a commit notifies (a wake-up hint for the other nodes).
pub const CHANNEL: &str = "pecgate_journal";

/// How long a statement may take before the store calls the database
/// unavailable.
const TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(url: &str, tls: Tls) -> Result<Client, String> {
    let (client, conn) = tokio::time::timeout(TIMEOUT, tokio_postgres::connect(url, tls))
        .await
        .map_err(|_| "connecting to PostgreSQL timed out".to_string())?
        .map_err(|e| format!("connecting to PostgreSQL: {}", refused_cert(with_causes(&e))))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// `e` and, when the server's TLS alert says it refused our client
/// certificate (TLS 1.3 sends it after the handshake, so tokio-postgres
/// reports it as a communication error), what to check.
fn refused_cert(e: String) -> String {
    let refused = ["UnknownCA", "BadCertificate", "CertificateRequired", "CertificateExpired", "CertificateUnknown"]
        .iter()
        .any(|a| e.contains(&format!("received fatal alert: {a}")));
    if refused {
        e + " (PostgreSQL refused this node's client certificate: is store.postgres_cert signed by a CA in its \
             ssl_ca_file, and valid?)"
    } else {
        e
    }
}

/// One statement, unnamed and in one round trip (`query_typed`): named
/// prepared statements do not survive PgBouncer in transaction mode, which
/// may hand each statement outside a transaction to another server
/// connection. For the same reason nothing on the writer's and the pool's
/// connections sets session state: `SET LOCAL` and
/// `pg_advisory_xact_lock` only, inside a transaction, no temporary
/// tables, no session advisory locks.
async fn q(c: &Client, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Vec<Row>, String> {
    c.query_typed(sql, params).await.map_err(pg)
}

fn pg(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("PostgreSQL: {}: {}", d.code().code(), d.message()),
        None => format!("PostgreSQL: {}", with_causes(&e)),
    }
}

/// An error and what caused it ("error performing TLS handshake: invalid
/// peer certificate: UnknownIssuer"): tokio-postgres's own text names only
/// the step that failed.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out += &format!(": {c}");
        cause = c.source();
    }
    out
}

/// The writer's connection: one transaction at a time, under the chain
/// head's lock.
pub struct Link {
    rt: Arc<Rt>,
    url: String,
    tls: Tls,
    client: Option<Arc<Client>>,
    in_txn: bool,
}

impl Link {
    /// Connect and create the tables if this is the first node ever.
    pub fn open(rt: Arc<Rt>, opts: &ClusterOptions, genesis: &str) -> Result<Link, String> {
        let mut link = Link { rt, url: opts.postgres.clone(), tls: tls(opts)?, client: None, in_txn: false };
        let c = link.client()?;
        let genesis = genesis.to_string();
        link.rt.wait(async move {
            // Two nodes starting at once: one creates, the other waits.
            // `IF NOT EXISTS` on tables that exist is a NOTICE each, which
            // tokio-postgres logs at INFO on every start and CLI command.
            c.batch_execute(
                "BEGIN; SET LOCAL client_min_messages = warning; SELECT pg_advisory_xact_lock(7262746174650001);",
            )
            .await
            .map_err(pg)?;
            c.batch_execute(SCHEMA).await.map_err(pg)?;
            q(
                &c,
                "INSERT INTO pecgate_chain (id, seq, hash) VALUES (1, 0, $1) ON CONFLICT (id) DO NOTHING",
                &[(&genesis, Type::TEXT)],
            )
            .await?;
            c.batch_execute("COMMIT").await.map_err(pg)
        })??;
        Ok(link)
    }

    fn client(&mut self) -> Result<Arc<Client>, String> {
        if let Some(c) = &self.client {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        self.client = None;
        self.in_txn = false;
        let (url, tls) = (self.url.clone(), self.tls.clone());
        let c = Arc::new(self.rt.wait(async move { connect(&url, tls).await })??);
        self.client = Some(c.clone());
        Ok(c)
    }

    fn run<T: Send + 'static, F>(&mut self, f: impl FnOnce(Arc<Client>) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        let c = self.client()?;
        let fut = f(c);
        let r = self.rt.wait(async move {
            tokio::time::timeout(TIMEOUT, fut).await.unwrap_or_else(|_| Err("PostgreSQL did not answer in time".into()))
        })?;
        if r.is_err() {
            crate::counters::cluster().errors.with_label_values(&["postgres"]).inc();
            // A failed statement aborts the transaction, and a connection
            // that timed out is in an unknown state: start afresh.
            self.client = None;
            self.in_txn = false;
        }
        r
    }

    /// The chain head as committed: (seq, hash).
    pub fn head(&mut self) -> Result<(u64, String), String> {
        self.run(|c| async move {
            let rows = q(&c, "SELECT seq, hash FROM pecgate_chain WHERE id = 1", &[]).await?;
            let row = rows.first().ok_or("PostgreSQL: no chain head row")?;
            Ok((row.get::<_, i64>(0) as u64, row.get::<_, String>(1)))
        })
    }

    /// Up to `limit` records after `after`, in order, without a lock (a
    /// node catching up).
    pub fn read_after(&mut self, after: u64, limit: i64) -> Result<Vec<(u64, String)>, String> {
        self.run(move |c| async move {
            let rows = q(
                &c,
                "SELECT seq, line FROM pecgate_journal WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[(&(after as i64), Type::INT8), (&limit, Type::INT8)],
            )
            .await?;
            Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1))).collect())
        })
    }

    /// Begin a write: lock the chain head and return the records committed
    /// after `after` (what this node has not taken in yet).
    pub fn begin(&mut self, after: u64) -> Result<Vec<(u64, String)>, String> {
        if self.in_txn {
            self.rollback();
        }
        let r = self.run(move |c| async move {
            // BEGIN and the lock in one round trip: both requests are sent
            // before either answer is read (tokio-postgres pipelines
            // requests polled together).
            let (begun, head) = futures::join!(
                c.batch_execute("BEGIN"),
                q(&c, "SELECT seq FROM pecgate_chain WHERE id = 1 FOR UPDATE", &[])
            );
            begun.map_err(pg)?;
            let head = head?.first().ok_or("PostgreSQL: no chain head row")?.get::<_, i64>(0) as u64;
            if head <= after {
                return Ok(Vec::new());
            }
            let rows = q(
                &c,
                "SELECT seq, line FROM pecgate_journal WHERE seq > $1 ORDER BY seq",
                &[(&(after as i64), Type::INT8)],
            )
            .await?;
            Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1))).collect())
        })?;
        self.in_txn = true;
        Ok(r)
    }

    /// Insert `lines` (seq, line), move the head to the last one (`head`:
    /// its seq and hash), notify, commit. An error leaves the outcome
    /// unknown when it came at the commit itself: the caller's next
    /// [`Link::begin`] reads back whatever did commit.
    pub fn commit(&mut self, lines: &[(u64, String)], head: (u64, String)) -> Result<(), String> {
        if !self.in_txn {
            return Err("no transaction to commit".into());
        }
        let seqs: Vec<i64> = lines.iter().map(|l| l.0 as i64).collect();
        let texts: Vec<String> = lines.iter().map(|l| l.1.clone()).collect();
        let r = self.run(move |c| async move {
            if seqs.is_empty() {
                return c.batch_execute("COMMIT").await.map_err(pg);
            }
            // The lines, the head and the notification in one statement
            // (data-modifying WITH clauses always run to completion), and
            // COMMIT sent with it: one round trip. Should the statement
            // fail, the transaction is aborted and that COMMIT rolls it
            // back; the statement's error is the answer.
            let (seq, channel, notice) = (head.0 as i64, CHANNEL.to_string(), head.0.to_string());
            let params: [(&(dyn ToSql + Sync), Type); 6] = [
                (&seqs, Type::INT8_ARRAY),
                (&texts, Type::TEXT_ARRAY),
                (&seq, Type::INT8),
                (&head.1, Type::TEXT),
                (&channel, Type::TEXT),
                (&notice, Type::TEXT),
            ];
            let (written, committed) = futures::join!(
                q(
                    &c,
                    "WITH lines AS (INSERT INTO pecgate_journal (seq, line) \
                        SELECT * FROM UNNEST($1::int8[], $2::text[])), \
                     head AS (UPDATE pecgate_chain SET seq = $3, hash = $4 WHERE id = 1) \
                     SELECT pg_notify($5, $6)",
                    &params,
                ),
                c.batch_execute("COMMIT")
            );
            written?;
            committed.map_err(pg)
        });
        self.in_txn = false;
        r
    }

    pub fn rollback(&mut self) {
        if self.in_txn {
            self.in_txn = false;
            let _ = self.run(|c| async move { c.batch_execute("ROLLBACK").await.map_err(pg) });
        }
    }

    /// Note how far this node has applied the journal (`cluster status`).
    pub fn report_applied(&mut self, node: &str, applied: u64) -> Result<(), String> {
        let node = node.to_string();
        self.run(move |c| async move {
            q(
                &c,
                "INSERT INTO pecgate_nodes (node, applied, seen_at) VALUES ($1, $2, now())
                 ON CONFLICT (node) DO UPDATE SET applied = EXCLUDED.applied, seen_at = now()",
                &[(&node, Type::TEXT), (&(applied as i64), Type::INT8)],
            )
            .await
            .map(|_| ())
        })
    }
}

/// Listen for other nodes' commits and call `wake` at each, and at least
/// once a second whatever happens (a lost notification, a LISTEN
/// connection that died: the node still catches up).
///
/// `url` is [`ClusterOptions::listen_url`]: this is the one connection
/// that keeps session state (LISTEN, `application_name`), so it must be a
/// session of its own on the server, never one PgBouncer shares out per
/// transaction.
pub fn spawn_listener(
    rt: &Rt,
    url: String,
    tls: Tls,
    applied: Arc<std::sync::atomic::AtomicU64>,
    wake: impl Fn() -> bool + Send + 'static,
) {
    rt.handle().spawn(async move {
        let mut behind_since: Option<std::time::Instant> = None;
        loop {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
            let listening = async {
                let (client, mut conn) = tokio_postgres::connect(&url, tls.clone()).await.map_err(pg)?;
                let feed = tx.clone();
                tokio::spawn(async move {
                    let mut msgs = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = futures::StreamExt::next(&mut msgs).await {
                        match m {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                let _ = feed.send(());
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                // Named, so an administrator (and a test) can find it in
                // pg_stat_activity.
                client
                    .batch_execute(&format!("SET application_name = 'pecgate-listener'; LISTEN {CHANNEL}"))
                    .await
                    .map_err(pg)?;
                Ok::<_, String>(client)
            };
            let client = match tokio::time::timeout(TIMEOUT, listening).await {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot LISTEN for other nodes' commits: polling every second");
                    None
                }
                Err(_) => None,
            };
            loop {
                tokio::select! {
                    _ = rx.recv() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if !wake() {
                    return;
                }
                let Some(c) = client.as_ref().filter(|c| !c.is_closed()) else { break };
                // The lag metrics: the head now against what the index had.
                let mine = applied.load(std::sync::atomic::Ordering::Acquire);
                match q(c, "SELECT seq FROM pecgate_chain WHERE id = 1", &[])
                    .await
                    .and_then(|r| r.into_iter().next().ok_or_else(|| "no chain head row".to_string()))
                {
                    Ok(row) => {
                        let lag = (row.get::<_, i64>(0) as u64).saturating_sub(mine);
                        let m = crate::counters::cluster();
                        m.lag_records.set(lag as i64);
                        behind_since = if lag == 0 { None } else { behind_since.or(Some(std::time::Instant::now())) };
                        m.lag_seconds.set(behind_since.map(|t| t.elapsed().as_secs() as i64).unwrap_or(0));
                    }
                    Err(_) => {
                        crate::counters::cluster().errors.with_label_values(&["postgres"]).inc();
                        break;
                    }
                }
            }
        }
    });
}

/// A lease held at an epoch: writes under it are refused once another
/// node has taken it (the epoch moved on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub node: String,
    pub epoch: u64,
}

impl Link {
    /// Whether `fence` still holds, the lease row locked (`FOR SHARE`) in
    /// the writer's transaction: no node can take the lease over until
    /// the batch is committed.
    pub fn holds(&mut self, fence: &Fence) -> Result<bool, String> {
        let f = fence.clone();
        self.run(move |c| async move {
            let rows = q(
                &c,
                "SELECT holder = $2 AND epoch = $3 AND expires_at > now() FROM pecgate_leases WHERE name = $1 FOR SHARE",
                &[(&f.name, Type::TEXT), (&f.node, Type::TEXT), (&(f.epoch as i64), Type::INT8)],
            )
            .await?;
            Ok(rows.first().is_some_and(|r| r.get::<_, Option<bool>>(0).unwrap_or(false)))
        })
    }
}

/// Leases over a connection pool (the daemon's runtime).
pub struct Leases {
    pool: deadpool_postgres::Pool,
    node: String,
}

impl Leases {
    pub fn new(opts: &ClusterOptions) -> Result<Leases, String> {
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(opts.postgres.clone());
        cfg.manager =
            Some(deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast });
        let pool = cfg
            .create_pool(Some(deadpool_postgres::Runtime::Tokio1), tls(opts)?)
            .map_err(|e| format!("PostgreSQL pool: {e}"))?;
        Ok(Leases { pool, node: opts.node.clone() })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, String> {
        tokio::time::timeout(TIMEOUT, self.pool.get())
            .await
            .map_err(|_| "PostgreSQL did not answer in time".to_string())?
            .map_err(|e| format!("PostgreSQL: {e}"))
    }

    /// Take `name` if nobody holds it, its holder let it expire, or this
    /// node held it (a restart): the epoch moves on every time, so writes
    /// under any earlier hold, this node's included, are refused from now
    /// on.
    pub async fn acquire(&self, name: &str, ttl: Duration) -> Result<Option<Fence>, String> {
        let c = self.client().await?;
        let ttl = ttl.as_secs_f64();
        let work = async {
            q(
                &c,
                "INSERT INTO pecgate_leases (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                &[(&name, Type::TEXT)],
            )
            .await?;
            let rows = q(
                &c,
                "UPDATE pecgate_leases SET
                     epoch = epoch + 1,
                     holder = $2,
                     expires_at = now() + make_interval(secs => $3)
                 WHERE name = $1 AND (holder IS NULL OR holder = $2 OR expires_at IS NULL OR expires_at < now())
                 RETURNING epoch",
                &[(&name, Type::TEXT), (&self.node, Type::TEXT), (&ttl, Type::FLOAT8)],
            )
            .await?;
            Ok(rows.first().map(|r| Fence {
                name: name.to_string(),
                node: self.node.clone(),
                epoch: r.get::<_, i64>(0) as u64,
            }))
        };
        tokio::time::timeout(TIMEOUT, work).await.unwrap_or_else(|_| Err("PostgreSQL did not answer in time".into()))
    }

    /// Extend a held lease; `false` if it is no longer this node's at this
    /// epoch, or expired (another node may have it or take it).
    pub async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<bool, String> {
        let c = self.client().await?;
        let ttl = ttl.as_secs_f64();
        let work = async {
            let rows = q(
                &c,
                "UPDATE pecgate_leases SET expires_at = now() + make_interval(secs => $4)
                 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now() RETURNING 1",
                &[
                    (&fence.name, Type::TEXT),
                    (&fence.node, Type::TEXT),
                    (&(fence.epoch as i64), Type::INT8),
                    (&ttl, Type::FLOAT8),
                ],
            )
            .await?;
            Ok(rows.len() == 1)
        };
        tokio::time::timeout(TIMEOUT, work).await.unwrap_or_else(|_| Err("PostgreSQL did not answer in time".into()))
    }

    /// How the leases named `prefix…` are spread: the nodes alive now
    /// (this one, and every other that reported its progress within
    /// `live`), the names of those this node holds unexpired, in order,
    /// and whether lease `name` is free (nobody holds it unexpired).
    pub async fn share(&self, prefix: &str, live: Duration, name: &str) -> Result<(u64, Vec<String>, bool), String> {
        let c = self.client().await?;
        let live = live.as_secs_f64();
        let work = async {
            let rows = q(
                &c,
                "SELECT
                     (SELECT count(*) FROM pecgate_nodes
                      WHERE node <> $1 AND seen_at > now() - make_interval(secs => $2)),
                     (SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM pecgate_leases
                      WHERE holder = $1 AND starts_with(name, $3) AND expires_at > now()),
                     NOT EXISTS (SELECT 1 FROM pecgate_leases
                                 WHERE name = $4 AND holder IS NOT NULL AND expires_at > now())",
                &[(&self.node, Type::TEXT), (&live, Type::FLOAT8), (&prefix, Type::TEXT), (&name, Type::TEXT)],
            )
            .await?;
            let r = rows.first().ok_or("PostgreSQL: no row")?;
            let others = r.get::<_, i64>(0).max(0) as u64;
            Ok((others + 1, r.get::<_, Vec<String>>(1), r.get::<_, bool>(2)))
        };
        tokio::time::timeout(TIMEOUT, work).await.unwrap_or_else(|_| Err("PostgreSQL did not answer in time".into()))
    }

    /// Claim campaign notice (`campaign`, `notice`) for one provider
    /// dialogue: its row locked `FOR UPDATE SKIP LOCKED` in a transaction
    /// kept open (on a connection of its own) until [`Claim::release`].
    /// `None` at once if another node's dialogue holds it: a node frozen
    /// mid-dialogue past its lease keeps its claim, so the node that took
    /// the sending over neither sends that notice again nor settles it as
    /// ambiguous meanwhile. A dead node's connection closes and frees it;
    /// one that stays idle in its transaction longer than `hold` is ended
    /// by PostgreSQL (`idle_in_transaction_session_timeout`).
    pub async fn claim(&self, fence: &Fence, campaign: &str, notice: u32, hold: Duration) -> Result<Option<Claim>, String> {
        let c = self.client().await?;
        let n = notice as i32;
        let work = async {
            q(
                &c,
                "INSERT INTO pecgate_claims (campaign, notice) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[(&campaign, Type::TEXT), (&n, Type::INT4)],
            )
            .await?;
            c.batch_execute(&format!(
                "BEGIN; SET LOCAL idle_in_transaction_session_timeout = {}",
                hold.as_millis().clamp(1000, i32::MAX as u128)
            ))
            .await
            .map_err(pg)?;
            // Locked only: a row updated in an open transaction would make
            // the other nodes' INSERT above wait for it.
            let rows = q(
                &c,
                "SELECT 1 FROM pecgate_claims WHERE campaign = $1 AND notice = $2 FOR UPDATE SKIP LOCKED",
                &[(&campaign, Type::TEXT), (&n, Type::INT4)],
            )
            .await?;
            Ok::<_, String>(rows.len() == 1)
        };
        let r = tokio::time::timeout(TIMEOUT, work).await;
        let mut claim = Claim { client: Some(c), campaign: campaign.to_string(), notice: n, fence: fence.clone() };
        match r {
            Ok(Ok(true)) => Ok(Some(claim)),
            Ok(Ok(false)) => {
                claim.end("ROLLBACK").await;
                Ok(None)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err("PostgreSQL did not answer in time".into()),
        }
    }

    /// One send through provider mailbox `alias`, if `check` lets it: every
    /// node's sends of the last `keep`, as ages (oldest first, by
    /// PostgreSQL's clock), under a transaction-level advisory lock on the
    /// mailbox (so two nodes never both take the last place; it works
    /// through PgBouncer in transaction mode), and the send recorded in the
    /// same transaction when `check` says yes. Returns `check`'s verdict
    /// and the ages it saw.
    pub async fn count_send<W>(
        &self,
        alias: &str,
        keep: Duration,
        check: impl FnOnce(&[Duration]) -> Result<(), W>,
    ) -> Result<(Result<(), W>, Vec<Duration>), String> {
        let mut c = self.client().await?;
        let keep = keep.as_secs_f64();
        let work = async {
            let t = c.transaction().await.map_err(pg)?;
            t.query_typed(
                "SELECT pg_advisory_xact_lock(hashtextextended('pecgate-sends:' || $1, 0))",
                &[(&alias, Type::TEXT)],
            )
            .await
            .map_err(pg)?;
            t.query_typed(
                "DELETE FROM pecgate_sends WHERE mailbox = $1 AND at < now() - make_interval(secs => $2)",
                &[(&alias, Type::TEXT), (&keep, Type::FLOAT8)],
            )
            .await
            .map_err(pg)?;
            let rows = t
                .query_typed(
                    "SELECT extract(epoch FROM now() - at)::float8 FROM pecgate_sends WHERE mailbox = $1 ORDER BY at",
                    &[(&alias, Type::TEXT)],
                )
                .await
                .map_err(pg)?;
            let ages: Vec<Duration> =
                rows.iter().map(|r| Duration::from_secs_f64(r.get::<_, f64>(0).max(0.0))).collect();
            let verdict = check(&ages);
            if verdict.is_ok() {
                t.query_typed("INSERT INTO pecgate_sends (mailbox, at) VALUES ($1, now())", &[(&alias, Type::TEXT)])
                    .await
                    .map_err(pg)?;
            }
            t.commit().await.map_err(pg)?;
            Ok((verdict, ages))
        };
        tokio::time::timeout(TIMEOUT, work).await.unwrap_or_else(|_| Err("PostgreSQL did not answer in time".into()))
    }

    pub async fn release(&self, fence: &Fence) {
        if let Ok(c) = self.client().await {
            let _ = tokio::time::timeout(
                TIMEOUT,
                q(
                    &c,
                    "UPDATE pecgate_leases SET expires_at = now() WHERE name = $1 AND holder = $2 AND epoch = $3",
                    &[(&fence.name, Type::TEXT), (&fence.node, Type::TEXT), (&(fence.epoch as i64), Type::INT8)],
                ),
            )
            .await;
        }
    }
}

/// A campaign notice claimed for one dialogue (see [`Leases::claim`]):
/// the row lock lives in a transaction on this connection. Dropped without
/// [`Claim::release`] (an error on the way), the connection is closed
/// rather than returned to the pool with its transaction open.
pub struct Claim {
    client: Option<deadpool_postgres::Object>,
    campaign: String,
    notice: i32,
    fence: Fence,
}

impl Claim {
    /// The dialogue is over and its outcome committed: note who had it
    /// (`pecgate_claims`: the last dialogue that finished) and let the row
    /// go.
    pub async fn release(mut self) {
        let Some(c) = self.client.take() else { return };
        let epoch = self.fence.epoch as i64;
        let done = async {
            q(
                &c,
                "UPDATE pecgate_claims SET node = $3, epoch = $4, claimed_at = now() WHERE campaign = $1 AND notice = $2",
                &[
                    (&self.campaign, Type::TEXT),
                    (&self.notice, Type::INT4),
                    (&self.fence.node, Type::TEXT),
                    (&epoch, Type::INT8),
                ],
            )
            .await?;
            c.batch_execute("COMMIT").await.map_err(pg)
        };
        if !matches!(tokio::time::timeout(TIMEOUT, done).await, Ok(Ok(()))) {
            // Ended by PostgreSQL (held past its hold) or gone: not back
            // into the pool.
            drop(deadpool_postgres::Object::take(c));
        }
    }

    async fn end(&mut self, how: &str) {
        if let Some(c) = self.client.take() {
            if !matches!(tokio::time::timeout(TIMEOUT, c.batch_execute(how)).await, Ok(Ok(()))) {
                drop(deadpool_postgres::Object::take(c));
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            drop(deadpool_postgres::Object::take(c));
        }
    }
}

/// What `pecgate cluster status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The shared journal's last record.
    pub head: u64,
    pub nodes: Vec<NodeStatus>,
    pub leases: Vec<LeaseStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub node: String,
    /// The last record its index took in.
    pub applied: u64,
    /// Records behind the head.
    pub lag: u64,
    /// Seconds since it last reported.
    pub seen_secs_ago: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseStatus {
    pub name: String,
    pub holder: Option<String>,
    pub epoch: u64,
    /// Seconds until it expires (negative: expired, nobody holds it).
    pub expires_in_secs: Option<f64>,
}

impl Status {
    pub fn table(&self) -> String {
        let mut out = format!("shared journal head: record {}\n\nnodes:\n", self.head);
        if self.nodes.is_empty() {
            out += "  (none has reported yet)\n";
        }
        for n in &self.nodes {
            out += &format!(
                "  {:<20} applied {:>10}  behind {:>8}  last seen {:.0} s ago\n",
                n.node, n.applied, n.lag, n.seen_secs_ago
            );
        }
        out += "\nleases:\n";
        if self.leases.is_empty() {
            out += "  (none)\n";
        }
        for l in &self.leases {
            let who = match (&l.holder, l.expires_in_secs) {
                (Some(h), Some(t)) if t > 0.0 => format!("held by {h} (epoch {}, {t:.0} s left)", l.epoch),
                (Some(h), _) => format!("FREE: expired (last {h}, epoch {})", l.epoch),
                (None, _) => "FREE".to_string(),
            };
            out += &format!("  {:<28} {who}\n", l.name);
        }
        out
    }
}

/// Read the cluster's state from PostgreSQL.
pub async fn status(opts: &ClusterOptions) -> Result<Status, String> {
    let c = connect(&opts.postgres, tls(opts)?).await?;
    let head = q(&c, "SELECT seq FROM pecgate_chain WHERE id = 1", &[]).await?;
    let head = head.first().ok_or("PostgreSQL: no chain head row")?.get::<_, i64>(0) as u64;
    let nodes = q(
        &c,
        "SELECT node, applied, extract(epoch FROM now() - seen_at)::float8 FROM pecgate_nodes ORDER BY node",
        &[],
    )
    .await?
    .iter()
    .map(|r| {
        let applied = r.get::<_, i64>(1) as u64;
        NodeStatus { node: r.get(0), applied, lag: head.saturating_sub(applied), seen_secs_ago: r.get(2) }
    })
    .collect();
    let leases = q(
        &c,
        "SELECT name, holder, epoch, extract(epoch FROM expires_at - now())::float8 FROM pecgate_leases ORDER BY name",
        &[],
    )
    .await?
    .iter()
    .map(|r| LeaseStatus {
        name: r.get(0),
        holder: r.get(1),
        epoch: r.get::<_, i64>(2) as u64,
        expires_in_secs: r.get(3),
    })
    .collect();
    Ok(Status { head, nodes, leases })
}
