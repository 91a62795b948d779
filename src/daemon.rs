//! `pecgate serve`: the long-running daemon.
//!
//! Runs one upstream task per mailbox, tells systemd when it is ready,
//! reloads the configuration on SIGHUP (keeping the old one if the new one
//! is invalid), and on SIGTERM lets every task finish the write it is doing
//! before closing the archive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{self, Config};
use crate::store::{Store, StoreOptions};
use crate::upstream::{MailboxTask, StatusBoard, SyncOptions};

/// Load and validate, turning problems into one error listing them all.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    let cfg = config::load(path)?;
    let problems = cfg.validate();
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|p| format!("{}: {p}", path.display())).collect();
        bail!("invalid configuration:\n{}", lines.join("\n"));
    }
    Ok(cfg)
}

pub fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let (store, report) = Store::open(
        &cfg.store.data_dir,
        StoreOptions {
            journal_segment_bytes: cfg.store.journal_segment_bytes,
            index_cache_bytes: cfg.store.cache_capacity,
            cluster: cfg.store.cluster_options().map_err(anyhow::Error::msg)?,
            blob_cache_bytes: cfg.store.blob_cache_bytes,
        },
    )
    .with_context(|| format!("opening the archive in {}", cfg.store.data_dir.display()))?;
    tracing::info!(
        data_dir = %cfg.store.data_dir.display(),
        removed_tmp_files = report.removed_tmp_files,
        journal_truncated_bytes = report.journal_truncated_bytes,
        replayed_records = report.replayed_records,
        rebuilt_index = report.rebuilt_index,
        "archive open"
    );
    Ok(store)
}

/// The mailbox tasks of one configuration generation.
struct Generation {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

fn start_generation(cfg: &Config, store: &Store, board: &StatusBoard, sh: &Shared) -> anyhow::Result<Generation> {
    let rules = &sh.rules;
    let (stop, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let opts = SyncOptions {
        timeout: cfg.upstream.timeout,
        min_backoff: cfg.upstream.min_backoff,
        max_backoff: cfg.upstream.max_backoff,
        lease: cfg.upstream.lease,
        ..SyncOptions::default()
    };
    let trust = match &cfg.pec.trust_store {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("pec.trust_store {}", path.display()))?;
            let ts = crate::pec::signature::TrustStore::from_pem(&pem)
                .with_context(|| format!("pec.trust_store {}", path.display()))?;
            Some(std::sync::Arc::new(ts))
        }
        None => None,
    };
    let rules = rules.current();
    let share = std::sync::Arc::new(crate::upstream::share::Share::new(cfg.mailboxes.len()));
    for m in &cfg.mailboxes {
        let tls = crate::tls::client_config(m.ca_file.as_deref())
            .with_context(|| format!("mailbox {}: TLS trust", m.alias))?;
        let task = MailboxTask {
            cfg: m.clone(),
            store: store.clone(),
            board: board.clone(),
            tls,
            opts: opts.clone(),
            shutdown: rx.clone(),
            trust: trust.clone(),
            rules: rules.clone(),
            fence: None,
            share: share.clone(),
            give_up: None,
        };
        tasks.spawn(task.run());
    }
    let sender = crate::campaign::run::Sender {
        store: store.clone(),
        limiter: sh.limiter.clone(),
        cfg: cfg.campaigns.clone(),
        timeout: cfg.upstream.timeout,
        wake: sh.wake.clone(),
        fence: None,
    };
    // Once-per-archive work, each under a lease (several nodes: one node
    // does it; one machine: at once): each mailbox's campaign sending, the
    // expiry run and anchoring the chain.
    let ttl = cfg.upstream.lease;
    for m in cfg.mailboxes.iter().filter(|m| m.smtp.is_some()) {
        let (sender, m) = (sender.clone(), m.clone());
        tasks.spawn(crate::lease::leased(
            store.clone(),
            format!("campaigns:{}", m.alias),
            ttl,
            rx.clone(),
            move |fence, end| {
                let mut s = sender.clone();
                s.fence = Some(fence);
                s.run(m.clone(), end)
            },
        ));
    }
    // Only with a retention to apply: a job that returns at once would
    // take its lease again (a new epoch, a log line) every third of it.
    if cfg.mailboxes.iter().any(|m| cfg.retention_of(m).is_some()) {
        let (st, c) = (store.clone(), cfg.clone());
        tasks.spawn(crate::lease::leased(store.clone(), "retention".into(), ttl, rx.clone(), move |_, end| {
            crate::retention::task(st.clone(), c.clone(), end)
        }));
    }
    if let Some(a) = &cfg.anchor {
        let (st, a) = (store.clone(), a.clone());
        tasks.spawn(crate::lease::leased(store.clone(), "anchor".into(), ttl, rx.clone(), move |_, end| {
            crate::anchor::run(st.clone(), a.clone(), end)
        }));
    }
    Ok(Generation { stop, tasks })
}

impl Generation {
    /// Ask every task to stop after its current step and wait for them.
    async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("some mailbox tasks did not stop in time; aborting them");
            self.tasks.abort_all();
        }
    }
}

/// What `serve` keeps of the IMAP server: its stop signal, its tasks, and
/// where a SIGHUP publishes a new context (limits, users, TLS).
type ImapHandle = (watch::Sender<bool>, JoinSet<()>, Option<watch::Sender<Arc<crate::imap::Ctx>>>);

/// What the client-facing listeners share and a SIGHUP replaces in place:
/// the users (one login throttle for IMAP, SMTP and the HTTP API), the TLS
/// certificate, and the offices and rules (compiled once, for the mailbox
/// tasks and the IMAP sessions alike).
struct Shared {
    auth: Arc<crate::auth::Authenticator>,
    rules: crate::handling::rules::LiveRules,
    cert: Option<Arc<crate::tls::ReloadableCert>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The mailboxes' sends against their sending limits, for SMTP
    /// submissions and campaigns alike.
    limiter: Arc<crate::sending::Limiter>,
    /// The full-text index (`None` if it could not be opened: SEARCH
    /// then reads the messages).
    fulltext: Option<Arc<crate::fulltext::FullText>>,
    /// Wakes the campaign senders (a campaign started, resumed, resolved).
    wake: Arc<tokio::sync::Notify>,
}

fn shared(cfg: &Config) -> anyhow::Result<Shared> {
    let auth = Arc::new(crate::auth::Authenticator::new(&cfg.users));
    if let Some(d) = &cfg.directory {
        let dir = crate::directory::Directory::new(d).context("[directory]")?;
        auth.set_directory(Some(dir), &cfg.users);
        tracing::info!(url = %d.url, groups = d.groups.len(), cache = ?d.cache, "directory logins on");
    }
    let (cert, tls) = match &cfg.tls {
        Some(files) => {
            let cert = crate::tls::ReloadableCert::load(&files.cert, &files.key).context("TLS certificate")?;
            let tls = cert.server_config().context("TLS configuration")?;
            (Some(cert), Some(tls))
        }
        None => (None, None),
    };
    let rules = crate::handling::rules::LiveRules::new(crate::handling::rules::Rules::compile(cfg));
    Ok(Shared { auth, rules, cert, tls, limiter: Default::default(), wake: Default::default(), fulltext: None })
}

fn imap_ctx(
    imap: &crate::config::ImapConfig,
    cfg: &Config,
    sh: &Shared,
    store: &Store,
    old: Option<&crate::imap::Ctx>,
) -> anyhow::Result<crate::imap::Ctx> {
    Ok(crate::imap::Ctx {
        cfg: imap.clone(),
        tls: sh.tls.clone().context("[imap] needs [tls]")?,
        store: store.clone(),
        fulltext: sh.fulltext.clone(),
        auth: sh.auth.clone(),
        sessions: old.map(|o| o.sessions.clone()).unwrap_or_default(),
        addresses: old.map(|o| o.addresses.clone()).unwrap_or_default(),
        metas: old.map(|o| o.metas.clone()).unwrap_or_default(),
        overdue_after: cfg.pec.overdue_after,
        rules: sh.rules.clone(),
        recent: old.map(|o| o.recent.clone()).unwrap_or_default(),
        mailbox_addresses: Arc::new(cfg.mailboxes.iter().map(|m| (m.alias.clone(), m.address.clone())).collect()),
    })
}

/// Start the IMAP listeners if `[imap]` is configured. A SIGHUP publishes
/// a new context: new connections get the new limits, open sessions keep
/// theirs; the users, the certificate, the offices and the rules change
/// for everyone at once.
/// Listener addresses are read once (restart to change them).
async fn start_imap(cfg: &Config, sh: &Shared, store: &Store) -> anyhow::Result<ImapHandle> {
    let (stop, rx) = watch::channel(false);
    let Some(imap) = &cfg.imap else { return Ok((stop, JoinSet::new(), None)) };
    let ctx = Arc::new(imap_ctx(imap, cfg, sh, store, None)?);
    let (tx, current) = watch::channel(ctx);
    let tasks = crate::imap::start_reloadable(current, rx).await?;
    Ok((stop, tasks, Some(tx)))
}

/// Start the SMTP submission listeners if `[smtp]` is configured (its
/// settings and mailboxes are read once; users and certificate are shared
/// and follow a SIGHUP).
async fn start_smtp(cfg: &Config, sh: &Shared, store: &Store) -> anyhow::Result<(watch::Sender<bool>, JoinSet<()>)> {
    let (stop, rx) = watch::channel(false);
    let Some(smtp) = &cfg.smtp else { return Ok((stop, JoinSet::new())) };
    let ctx = Arc::new(crate::smtp::Ctx {
        cfg: smtp.clone(),
        tls: sh.tls.clone().context("[smtp] needs [tls]")?,
        store: store.clone(),
        auth: sh.auth.clone(),
        mailboxes: cfg.mailboxes.iter().map(|m| (m.alias.clone(), m.clone())).collect(),
        timeout: cfg.upstream.timeout,
        limiter: sh.limiter.clone(),
    });
    let tasks = crate::smtp::start(ctx, rx).await?;
    Ok((stop, tasks))
}

/// Apply to the running listeners what a SIGHUP can change without a
/// restart, and say clearly what needs one.
fn reload_listeners(
    old: &Config,
    new: &Config,
    sh: &Shared,
    store: &Store,
    imap: Option<&watch::Sender<Arc<crate::imap::Ctx>>>,
) {
    sh.auth.reload(&new.users);
    tracing::info!(users = new.users.len(), "SIGHUP: users and grants reloaded (IMAP, SMTP, HTTP API)");
    match new.directory.as_ref().map(crate::directory::Directory::new).transpose() {
        Ok(dir) => {
            let on = dir.is_some();
            sh.auth.set_directory(dir, &new.users);
            if on {
                // The directory users seen keep their access until this
                // check recomputes it with the new groups.
                let auth = sh.auth.clone();
                tokio::spawn(async move { auth.check_directory_users().await });
                tracing::info!("SIGHUP: directory settings and groups reloaded");
            }
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: [directory] refused; keeping the old one"),
    }
    sh.rules.replace(crate::handling::rules::Rules::compile(new));
    tracing::info!(
        offices = new.offices.len(),
        rules = new.rules.len(),
        "SIGHUP: offices and rules reloaded (open IMAP sessions included)"
    );
    match (&sh.cert, &new.tls) {
        (Some(cert), Some(files)) => match cert.reload(&files.cert, &files.key) {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "SIGHUP: TLS certificate reloaded (new connections use it)")
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS certificate refused; keeping the old one"),
        },
        (None, Some(_)) => tracing::warn!("SIGHUP: [tls] was added; restart pecgate to use it"),
        (Some(_), None) => {
            tracing::warn!("SIGHUP: [tls] was removed; the listeners keep the old certificate until a restart")
        }
        (None, None) => {}
    }
    let restart = |what: &str| tracing::warn!("SIGHUP: {what} changed: restart pecgate to apply it");
    match (imap, &old.imap, &new.imap) {
        (Some(tx), Some(o), Some(n)) => {
            if o.listen != n.listen || o.listen_starttls != n.listen_starttls {
                restart("[imap] listen / listen_starttls");
            }
            let prev = tx.borrow().clone();
            match imap_ctx(n, new, sh, store, Some(&prev)) {
                Ok(ctx) => {
                    tx.send_replace(Arc::new(ctx));
                    tracing::info!(
                        max_sessions_per_user = n.max_sessions_per_user,
                        max_sessions_per_address = n.max_sessions_per_address,
                        "SIGHUP: IMAP limits reloaded (new connections; open sessions keep theirs)"
                    );
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: IMAP settings not applied"),
            }
        }
        (_, None, None) => {}
        _ => restart("[imap] (added or removed)"),
    }
    if format!("{:?}", old.smtp) != format!("{:?}", new.smtp) {
        restart("[smtp]");
    }
    let http = |c: &Config| c.http.as_ref().map(|h| (h.listen.clone(), h.tls, h.metrics_auth.clone()));
    if http(old) != http(new) {
        restart("[http] listen, tls or metrics_auth");
    }
    if crate::autoconfig::Offer::from_config(old) != crate::autoconfig::Offer::from_config(new) {
        restart("[autoconfig]");
    }
}

/// How much longer systemd is asked to wait for the start, and how often.
const START_EXTEND: Duration = Duration::from_secs(60);
const START_EXTEND_EVERY: Duration = Duration::from_secs(20);

/// While the daemon starts, asks systemd (`EXTEND_TIMEOUT_USEC`) every
/// [`START_EXTEND_EVERY`] to wait [`START_EXTEND`] more, until dropped.
/// Opening the archive can take minutes at ten million messages (a
/// journal replayed, an index rebuilt after an upgrade changed its
/// format, the header-field cache converted): past the unit's start
/// timeout (90 s by default) systemd would kill a start that is working
/// and begin it again, from scratch, for ever.
struct StartKeeper {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StartKeeper {
    fn start() -> StartKeeper {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return StartKeeper { stop: None, thread: None };
        }
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let usec = u32::try_from(START_EXTEND.as_micros()).unwrap_or(u32::MAX);
        let thread = std::thread::Builder::new()
            .name("pecgate-start".into())
            .spawn(move || loop {
                let _ = sd_notify::notify(
                    false,
                    &[
                        sd_notify::NotifyState::ExtendTimeoutUsec(usec),
                        sd_notify::NotifyState::Status("starting: opening the archive (see the log)"),
                    ],
                );
                if !matches!(rx.recv_timeout(START_EXTEND_EVERY), Err(std::sync::mpsc::RecvTimeoutError::Timeout)) {
                    break;
                }
            })
            .ok();
        StartKeeper { stop: Some(stop), thread }
    }
}

impl Drop for StartKeeper {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub async fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    let mut cfg = load_config(&config_path)?;
    crate::heap::spawn_trimmer();
    let starting = StartKeeper::start();
    let store = open_store(&cfg)?;
    let mailboxes = |c: &Config| c.mailboxes.iter().map(|m| (m.alias.clone(), m.address.clone())).collect::<Vec<_>>();
    let board = StatusBoard::new(store.clone(), &mailboxes(&cfg));
    let mut sh = shared(&cfg)?;
    // The full-text index beside the archive, following its journal.
    let (fulltext_stop, fulltext_rx) = watch::channel(false);
    // Opened from a background thread: the index writer's threads (and
    // its merges) inherit the lowest CPU priority.
    let dir = cfg.store.data_dir.clone();
    let opened = crate::background::run_blocking("fulltext-open", move || crate::fulltext::FullText::open(&dir, true))
        .map_err(crate::fulltext::FullTextError::Other)
        .and_then(|r| r);
    let fulltext_task = match opened {
        Ok(ft) => {
            let ft = Arc::new(ft);
            sh.fulltext = Some(ft.clone());
            tracing::info!(dir = %ft.dir().display(), documents = ft.documents(), indexed_seq = ft.indexed_seq(), "full-text index open");
            Some(tokio::spawn(crate::fulltext::indexer::run(store.clone(), ft, fulltext_rx)))
        }
        Err(e) => {
            tracing::error!(error = %e, "full-text index unavailable: SEARCH BODY/TEXT will read every message, /api/search is off");
            None
        }
    };
    let mut generation = start_generation(&cfg, &store, &board, &sh)?;
    let (imap_stop, mut imap_tasks, imap_ctx_tx) = start_imap(&cfg, &sh, &store).await?;
    {
        // The first SELECT of each folder then finds the index's pages on
        // its path in the cache (a few milliseconds for all folders).
        let store = store.clone();
        tokio::task::spawn_blocking(move || match store.warm_folders(crate::imap::shared::TAIL) {
            Ok(n) => tracing::debug!(folders = n, "index paths of the folders read"),
            Err(e) => tracing::warn!(error = %e, "reading the folders' index paths at start"),
        });
    }
    let (http_stop, http_rx) = watch::channel(false);
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(board.clone(), store.clone()));
    let sending = |c: &Config| c.mailboxes.iter().map(|m| (m.alias.clone(), m.sending)).collect();
    metrics.set_sending(sending(&cfg), sh.limiter.clone());
    let holds_api = Arc::new(crate::retention::api::HoldApi::new(store.clone(), sh.fulltext.clone(), &cfg));
    let http_task = match &cfg.http {
        Some(h) => {
            let state = crate::http::HttpState {
                metrics: metrics.clone(),
                auth: sh.auth.clone(),
                campaigns: Some(Arc::new(crate::campaign::api::Api {
                    store: store.clone(),
                    mailboxes: cfg.mailboxes.iter().map(|m| (m.alias.clone(), m.clone())).collect(),
                    limiter: sh.limiter.clone(),
                    wake: sh.wake.clone(),
                    overdue_after: cfg.pec.overdue_after,
                })),
                search: sh.fulltext.clone().map(|ft| {
                    Arc::new(crate::fulltext::api::SearchApi {
                        store: store.clone(),
                        ft,
                        overdue_after: cfg.pec.overdue_after,
                    })
                }),
                holds: Some(holds_api.clone()),
                exports: Some(Arc::new(crate::export::api::ExportApi {
                    store: store.clone(),
                    mailboxes: cfg.mailboxes.iter().map(|m| m.alias.clone()).collect(),
                })),
                tls: h.tls,
                metrics_bearer: None,
                metrics_basic: None,
                autoconfig: crate::autoconfig::Offer::from_config(&cfg).map(Arc::new),
                tokens: Some(Arc::new(crate::apitoken::Tokens::new(crate::apitoken::path_for(&cfg, &config_path)))),
            };
            let mut state = state;
            if let Some(m) = &h.metrics_auth {
                (state.metrics_bearer, state.metrics_basic) =
                    m.load().map_err(|e| anyhow::anyhow!("[http] metrics_auth: {e}"))?;
            }
            let tls = match (h.tls, &sh.cert) {
                (true, Some(cert)) => {
                    Some(cert.server_config_alpn(&[b"h2", b"http/1.1"]).context("HTTPS configuration")?)
                }
                (true, None) => anyhow::bail!("[http] tls = true needs [tls]"),
                (false, _) => None,
            };
            Some(crate::http::start(&h.listen, std::sync::Arc::new(state), http_rx, tls).await?)
        }
        None => None,
    };
    let (smtp_stop, mut smtp_tasks) = start_smtp(&cfg, &sh, &store).await?;
    // Directory users seen are checked again every `[directory] cache`.
    let (_directory_stop, directory_rx) = watch::channel(false);
    tokio::spawn(sh.auth.clone().run_directory_checks(directory_rx));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    drop(starting);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("serving")]);
    tracing::info!(mailboxes = cfg.mailboxes.len(), version = env!("CARGO_PKG_VERSION"), "pecgate serving");

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                match load_config(&config_path) {
                    Ok(new) if new.store.data_dir != cfg.store.data_dir => {
                        tracing::error!("SIGHUP: store.data_dir cannot change while running; keeping the old configuration (restart instead)");
                    }
                    Ok(new) => {
                        tracing::info!("SIGHUP: configuration reloaded; restarting mailbox tasks");
                        reload_listeners(&cfg, &new, &sh, &store, imap_ctx_tx.as_ref());
                        generation.stop(Duration::from_secs(30)).await;
                        holds_api.reload(&new);
                        cfg = new;
                        let new_board = StatusBoard::new(store.clone(), &mailboxes(&cfg));
                        generation = start_generation(&cfg, &store, &new_board, &sh)?;
                        metrics.set_board(new_board);
                        metrics.set_sending(sending(&cfg), sh.limiter.clone());
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: new configuration refused; keeping the old one"),
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = imap_stop.send(true);
    let _ = http_stop.send(true);
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = smtp_stop.send(true);
    let drain = async {
        while imap_tasks.join_next().await.is_some() {}
        while smtp_tasks.join_next().await.is_some() {}
    };
    if tokio::time::timeout(Duration::from_secs(15), drain).await.is_err() {
        imap_tasks.abort_all();
        smtp_tasks.abort_all();
    }
    generation.stop(Duration::from_secs(60)).await;
    let _ = fulltext_stop.send(true);
    if let Some(t) = fulltext_task {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    store.close()?;
    tracing::info!("archive closed; bye");
    Ok(())
}
