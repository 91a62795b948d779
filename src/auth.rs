//! Gateway users: passwords (argon2id), grants per mailbox, login throttling.
//!
//! One [`Authenticator`] serves every listener (like Postfix's `anvil`), so a
//! guesser cannot get more tries by opening more connections or switching
//! protocol. Unknown users and wrong passwords get the same answer after the
//! same work (a dummy hash as dear as the configured ones is verified), so
//! user names cannot be probed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::config::UserConfig;
use crate::directory::{self, DirError, Directory};

/// An argon2id PHC string (`$argon2id$v=19$m=…`) for `password`, with a
/// random salt and the crate's default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

/// Does `password` match the PHC string `hash`? A malformed hash never
/// matches.
type VerifyJob = (String, String, tokio::sync::oneshot::Sender<bool>);

/// How long a password-check thread keeps its work area (argon2id's
/// memory cost, 19 MiB by default) after its last check: a burst of logins
/// reuses it, and an idle daemon does not keep 19 MiB per core (it was a
/// fifth of the memory budget of a daemon sending a campaign).
const KEEP_WORK_AREA: std::time::Duration = std::time::Duration::from_secs(10);

/// Password checks run on a few long-lived threads (one per core), not on
/// tokio's blocking pool, each with one argon2 work area it reuses. An
/// argon2id check needs its memory cost (19 MiB by default) for tens of
/// milliseconds of CPU; allocated afresh per check on the blocking pool's
/// threads, glibc kept the freed areas in its per-thread arenas and logins
/// left hundreds of MiB to over a GiB resident (BENCHMARKS.md). Here the
/// memory is bounded by the thread count, and more checks than cores at
/// once would only have queued for CPU anyway. An idle thread frees its
/// area after [`KEEP_WORK_AREA`].
fn verify_pool() -> &'static std::sync::mpsc::SyncSender<VerifyJob> {
    static POOL: std::sync::OnceLock<std::sync::mpsc::SyncSender<VerifyJob>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<VerifyJob>(1024);
        let rx = Arc::new(Mutex::new(rx));
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("pecgate-argon2-{i}")).spawn(move || {
                let mut memory: Vec<argon2::Block> = Vec::new();
                loop {
                    // The lock is let go between waits, so that every
                    // thread in turn finds itself idle and frees its area.
                    let job = match rx.lock() {
                        Ok(r) => r.recv_timeout(KEEP_WORK_AREA),
                        Err(_) => return,
                    };
                    let (pw, hash, reply) = match job {
                        Ok(job) => job,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            memory = Vec::new();
                            continue;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    };
                    let _ = reply.send(verify_with_memory(&pw, &hash, &mut memory));
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        tx
    })
}

/// [`verify_password`] on the password-check threads.
async fn verify_on_pool(password: String, hash: String) -> Result<bool, AuthError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let gone = || AuthError::Internal("password-check threads are gone".into());
    match verify_pool().try_send((password, hash, reply)) {
        Ok(()) => {}
        // The queue is bounded: past 1024 waiting checks, wait for room
        // without holding a runtime thread.
        Err(std::sync::mpsc::TrySendError::Full(job)) => {
            let pool = verify_pool().clone();
            tokio::task::spawn_blocking(move || pool.send(job))
                .await
                .map_err(|e| AuthError::Internal(e.to_string()))?
                .map_err(|_| gone())?;
        }
        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(gone()),
    }
    answer.await.map_err(|_| AuthError::Internal("password check abandoned".into()))
}

/// [`verify_password`] with a caller-kept work area (grown as the hash's
/// memory cost needs, then reused).
fn verify_with_memory(password: &str, hash: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let mut check = || -> Option<bool> {
        let h = PasswordHash::new(hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(h.algorithm).ok()?;
        let version = h.version.map(argon2::Version::try_from).transpose().ok()?.unwrap_or_default();
        let params = argon2::Params::try_from(&h).ok()?;
        let expected = h.hash?;
        let mut salt = [0u8; 64];
        let salt = h.salt?.decode_b64(&mut salt).ok()?;
        let blocks = params.block_count();
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
            .ok()?;
        // password_hash's Output compares in constant time.
        Some(argon2::password_hash::Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok()).unwrap_or(false)
}

/// What a user may do in one mailbox (DESIGN.md "Permissions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Right {
    /// See and open messages.
    Read,
    /// Flags, keywords, move between the mailbox's folders.
    Triage,
    /// Send from the mailbox's address (and APPEND to its Sent).
    Send,
    /// Hide messages from folders (EXPUNGE).
    Delete,
}

impl Right {
    pub fn parse(s: &str) -> Option<Right> {
        match s {
            "read" => Some(Right::Read),
            "triage" => Some(Right::Triage),
            "send" => Some(Right::Send),
            "delete" => Some(Right::Delete),
            _ => None,
        }
    }
}

/// A gateway user as the servers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Mailbox whose INBOX is the IMAP `INBOX`.
    pub default_mailbox: Option<String>,
    /// Mailbox alias → rights. A mailbox with no `read` is not shown at all.
    pub grants: BTreeMap<String, BTreeSet<Right>>,
    pub roles: BTreeSet<String>,
    /// The directory entry a directory user logged in as (`[directory]`);
    /// `None` for a local `[[user]]` account.
    pub dn: Option<String>,
}

impl User {
    /// Every right on the user's own private store (Drafts, Templates);
    /// on PEC mailboxes, what the grants say.
    pub fn may(&self, mailbox: &str, right: Right) -> bool {
        mailbox.strip_prefix('~') == Some(self.name.as_str())
            || self.grants.get(mailbox).is_some_and(|r| r.contains(&right))
    }

    /// The store name of the user's private folders (Drafts, Templates):
    /// not a PEC mailbox (aliases never start with `~`), never synced
    /// with a provider, and nobody else's to see.
    pub fn private_mailbox(&self) -> String {
        format!("~{}", self.name)
    }

    /// Mailboxes the user can see (holds `read` on), in name order.
    pub fn visible_mailboxes(&self) -> Vec<&str> {
        self.grants.iter().filter(|(_, r)| r.contains(&Right::Read)).map(|(m, _)| m.as_str()).collect()
    }
}

/// Why a login failed. The client only ever sees one generic message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("unknown user or wrong password")]
    Rejected,
    /// The directory could not check the password (down, TLS, timeout):
    /// clients get "unavailable" (IMAP `NO [UNAVAILABLE]`, SMTP 454, HTTP
    /// 503) naming the cause, never "wrong password".
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    #[error("password check failed: {0}")]
    Internal(String),
}

/// Failures remembered per key (user name, source address).
#[derive(Debug, Default)]
struct Throttle {
    failures: HashMap<String, (u32, Instant)>,
}

/// Failures are forgotten this long after the last one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// HYPOTHESIS: 100k remembered keys (a few MB) outlast any realistic attack
/// window; past it the table is pruned of expired entries, then cleared.
const MAX_KEYS: usize = 100_000;

/// The wait before answering a login after `failures` recent failures:
/// none for the first, then 0.5 s doubling up to 16 s.
pub fn delay_for(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => Duration::from_millis(500u64.saturating_mul(1u64 << (n - 1).min(5))),
    }
}

impl Throttle {
    fn count(&mut self, key: &str, now: Instant) -> u32 {
        match self.failures.get(key) {
            Some((n, at)) if now.duration_since(*at) < FORGET_AFTER => *n,
            Some(_) => {
                self.failures.remove(key);
                0
            }
            None => 0,
        }
    }

    fn fail(&mut self, key: String, now: Instant) {
        if self.failures.len() >= MAX_KEYS {
            self.failures.retain(|_, (_, at)| now.duration_since(*at) < FORGET_AFTER);
            if self.failures.len() >= MAX_KEYS {
                self.failures.clear();
            }
        }
        let e = self.failures.entry(key).or_insert((0, now));
        e.0 = e.0.saturating_add(1);
        e.1 = now;
    }
}

/// Users, their hashes and the shared login throttle.
///
/// The user table can be replaced while running ([`Authenticator::reload`],
/// on SIGHUP); the throttle survives a reload, so a guesser gains nothing
/// from an operator's reload.
pub struct Authenticator {
    users: RwLock<Arc<UserTable>>,
    throttle: Mutex<Throttle>,
    /// Verified when the user is unknown, so both cases cost the same
    /// ([`dummy_hash`]); replaced with the users.
    dummy_hash: RwLock<String>,
    /// Recently verified logins, so a client (or a tool making one API
    /// request per file) that logs in again and again costs one argon2
    /// verification per [`VERIFIED_FOR`], not one per login: user name →
    /// (SHA-256 of a per-process salt, the password and the configured
    /// hash; when). Memory only; a changed password or hash, or a removed
    /// user, no longer matches.
    verified: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    salt: [u8; 32],
    /// The directory, when `[directory]` is configured (replaced on
    /// SIGHUP), with the `[[user]]` entries without a password: extra
    /// grants for the directory user of that name.
    directory: RwLock<Option<Arc<DirectoryUsers>>>,
    /// Bumped whenever users may have changed (a reload, a directory check
    /// that withdrew or changed someone's access): IMAP sessions, idle
    /// ones too, re-check their user at once.
    changed: tokio::sync::watch::Sender<u64>,
}

/// The directory and the directory users seen since it was configured.
struct DirectoryUsers {
    dir: Directory,
    /// Lower-cased name → extra grants (`[[user]]` without a password).
    extras: HashMap<String, UserConfig>,
    /// Directory users who logged in: their effective access, their
    /// verified login (salted hash of the password, when), last use.
    seen: Mutex<HashMap<String, SeenUser>>,
}

struct SeenUser {
    user: Arc<User>,
    verified: Option<([u8; 32], Instant)>,
    used: Instant,
}

impl SeenUser {
    /// The same access, without the remembered password.
    fn forgotten(&self) -> SeenUser {
        SeenUser { user: self.user.clone(), verified: None, used: self.used }
    }
}

/// A directory user not used for this long is forgotten (the next login
/// asks the directory again).
const FORGET_SEEN_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long a verified login is remembered.
pub const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// User name → (password hash, user).
type UserTable = HashMap<String, (String, Arc<User>)>;

/// The hash an unknown user's password is checked against, made with the
/// parameters of the dearest configured hash (argon2's defaults if none
/// parses): refusing an unknown name then costs what refusing a wrong
/// password does whatever parameters the configured hashes were made with
/// (`hash-password` uses the defaults, hashes made elsewhere may not; with
/// a fixed default-cost dummy, names of users with cheaper or dearer hashes
/// could be told from unknown ones by the time of the answer).
fn dummy_hash(users: &[UserConfig]) -> String {
    let dearest = users
        .iter()
        .filter_map(|u| {
            let h = PasswordHash::new(&u.password_hash).ok()?;
            let algorithm = argon2::Algorithm::try_from(h.algorithm).ok()?;
            let version = h.version.map(argon2::Version::try_from).transpose().ok()?.unwrap_or_default();
            Some(Argon2::new(algorithm, version, argon2::Params::try_from(&h).ok()?))
        })
        .max_by_key(|a| u64::from(a.params().m_cost()).saturating_mul(u64::from(a.params().t_cost())));
    let salt = SaltString::generate(&mut OsRng);
    dearest.unwrap_or_default().hash_password(b"pecgate-dummy", &salt).map(|h| h.to_string()).unwrap_or_default()
}

/// Local accounts (those with a password hash). Unknown rights are dropped
/// here; `Config::validate` has already refused them.
fn table(users: &[UserConfig]) -> UserTable {
    let mut map = HashMap::new();
    for u in users.iter().filter(|u| !u.password_hash.is_empty()) {
        let grants =
            u.grants.iter().map(|(m, rs)| (m.clone(), rs.iter().filter_map(|r| Right::parse(r)).collect())).collect();
        let user = User {
            name: u.name.clone(),
            default_mailbox: u.default_mailbox.clone(),
            grants,
            roles: u.roles.iter().cloned().collect(),
            dn: None,
        };
        map.insert(u.name.clone(), (u.password_hash.clone(), Arc::new(user)));
    }
    map
}

impl Authenticator {
    /// Build from validated configuration.
    pub fn new(users: &[UserConfig]) -> Authenticator {
        Authenticator {
            users: RwLock::new(Arc::new(table(users))),
            throttle: Mutex::new(Throttle::default()),
            dummy_hash: RwLock::new(dummy_hash(users)),
            verified: Mutex::new(HashMap::new()),
            salt: rand::random(),
            directory: RwLock::new(None),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Use `dir` for the users that are not local accounts (`None`: no
    /// directory), with the `[[user]]` entries without a password as their
    /// extra grants. Called at start and on SIGHUP (then followed by
    /// [`Authenticator::check_directory_users`]); open sessions re-check
    /// their user.
    pub fn set_directory(&self, dir: Option<Directory>, users: &[UserConfig]) {
        let old = self.dir();
        let d = dir.map(|dir| {
            let extras = users
                .iter()
                .filter(|u| u.password_hash.is_empty())
                .map(|u| (directory::user_name(&u.name), u.clone()))
                .collect();
            // Users seen keep their access (and open sessions) until the
            // next check recomputes it; their remembered passwords go.
            let seen: HashMap<String, SeenUser> = old
                .as_ref()
                .and_then(|o| o.seen.lock().ok().map(|s| s.iter().map(|(k, v)| (k.clone(), v.forgotten())).collect()))
                .unwrap_or_default();
            Arc::new(DirectoryUsers { dir, extras, seen: Mutex::new(seen) })
        });
        crate::counters::directory().configured.store(d.is_some(), std::sync::atomic::Ordering::Relaxed);
        match self.directory.write() {
            Ok(mut g) => *g = d,
            Err(poisoned) => *poisoned.into_inner() = d,
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn dir(&self) -> Option<Arc<DirectoryUsers>> {
        match self.directory.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes whenever users may have changed (see the field).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn fingerprint(&self, password: &str, hash: &str) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.salt);
        h.update((password.len() as u64).to_be_bytes());
        h.update(password.as_bytes());
        h.update(hash.as_bytes());
        h.finalize().into()
    }

    /// Replace the users (SIGHUP). New logins see the new table at once;
    /// open sessions compare their user with [`Authenticator::user`] before
    /// each command (see `imap::session`).
    pub fn reload(&self, users: &[UserConfig]) {
        let t = Arc::new(table(users));
        match self.users.write() {
            Ok(mut g) => *g = t,
            Err(poisoned) => *poisoned.into_inner() = t,
        }
        let d = dummy_hash(users);
        match self.dummy_hash.write() {
            Ok(mut g) => *g = d,
            Err(poisoned) => *poisoned.into_inner() = d,
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn dummy(&self) -> String {
        match self.dummy_hash.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn current(&self) -> Arc<UserTable> {
        match self.users.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The user named `name` as currently configured, without checking a
    /// password (for tests and already-authenticated paths).
    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        if let Some((_, u)) = self.current().get(name) {
            return Some(u.clone());
        }
        let d = self.dir()?;
        let mut seen = d.seen.lock().ok()?;
        let s = seen.get_mut(name)?;
        s.used = Instant::now();
        Some(s.user.clone())
    }

    /// Check a password, waiting first according to recent failures for
    /// this user name and this source address.
    pub async fn login(&self, name: &str, password: &str, source: IpAddr) -> Result<Arc<User>, AuthError> {
        let (ukey, ikey) = (format!("u:{name}"), format!("ip:{source}"));
        let wait = {
            let mut t = self.throttle.lock().map_err(|_| AuthError::Internal("throttle lock poisoned".into()))?;
            let now = Instant::now();
            delay_for(t.count(&ukey, now).max(t.count(&ikey, now)))
        };
        if !wait.is_zero() {
            crate::counters::throttled_logins().inc();
            tokio::time::sleep(wait).await;
        }
        let local = self.current().get(name).cloned();
        let dir = if local.is_none() { self.dir() } else { None };
        let checked = match (local, dir) {
            (Some((hash, user)), _) => self.check_local(name, password, hash, Some(user)).await?,
            (None, Some(d)) => self.check_directory(&d, name, password).await?,
            (None, None) => self.check_local(name, password, self.dummy(), None).await?,
        };
        let mut t = self.throttle.lock().map_err(|_| AuthError::Internal("throttle lock poisoned".into()))?;
        match checked {
            Some(u) => {
                t.failures.remove(&ukey);
                Ok(u)
            }
            None => {
                let now = Instant::now();
                t.fail(ukey, now);
                t.fail(ikey, now);
                Err(AuthError::Rejected)
            }
        }
    }

    /// A local account's password (or, for an unknown name, the dummy
    /// hash, at the same cost): the user if it matches.
    async fn check_local(
        &self,
        name: &str,
        password: &str,
        hash: String,
        user: Option<Arc<User>>,
    ) -> Result<Option<Arc<User>>, AuthError> {
        let fp = self.fingerprint(password, &hash);
        let remembered = user.is_some()
            && self
                .verified
                .lock()
                .is_ok_and(|v| v.get(name).is_some_and(|(f, at)| *f == fp && at.elapsed() < VERIFIED_FOR));
        let ok = remembered || verify_on_pool(password.to_string(), hash).await?;
        let user = user.filter(|_| ok);
        if user.is_some() && !remembered {
            if let Ok(mut v) = self.verified.lock() {
                v.retain(|_, (_, at)| at.elapsed() < VERIFIED_FOR);
                v.insert(name.to_string(), (fp, Instant::now()));
            }
        }
        Ok(user)
    }

    /// A directory user's password: remembered within `[directory] cache`,
    /// otherwise search-then-bind. `Ok(None)`: the directory said no.
    async fn check_directory(
        &self,
        d: &DirectoryUsers,
        login: &str,
        password: &str,
    ) -> Result<Option<Arc<User>>, AuthError> {
        let name = directory::user_name(login);
        let fp = self.fingerprint(password, &name);
        let cache = d.dir.config().cache;
        let m = crate::counters::directory();
        if let Ok(mut seen) = d.seen.lock() {
            if let Some(s) = seen.get_mut(&name) {
                if s.verified.is_some_and(|(f, at)| f == fp && at.elapsed() < cache) {
                    s.used = Instant::now();
                    m.logins.with_label_values(&["cached"]).inc();
                    return Ok(Some(s.user.clone()));
                }
            }
        }
        match d.dir.login(&name, password).await {
            Ok(found) => {
                m.up.set(1);
                m.logins.with_label_values(&["ok"]).inc();
                // One person, one user, whichever form of their name they typed.
                let name = found.user_name(&name);
                let user =
                    Arc::new(directory::effective(&name, &found, &d.dir.config().groups, d.extras.get(&name)).user);
                let now = Instant::now();
                let verified = (!cache.is_zero()).then_some((fp, now));
                let changed = match d.seen.lock() {
                    Ok(mut seen) => {
                        seen.retain(|_, s| s.used.elapsed() < FORGET_SEEN_AFTER);
                        let seen_user = SeenUser { user: user.clone(), verified, used: now };
                        seen.insert(name, seen_user).is_some_and(|old| *old.user != *user)
                    }
                    Err(_) => false,
                };
                if changed {
                    self.changed.send_modify(|n| *n += 1);
                }
                Ok(Some(user))
            }
            Err(DirError::Rejected) => {
                m.up.set(1);
                m.logins.with_label_values(&["rejected"]).inc();
                Ok(None)
            }
            Err(DirError::Unavailable(why)) => {
                m.up.set(0);
                m.errors.inc();
                m.logins.with_label_values(&["unavailable"]).inc();
                tracing::warn!(user = %name, %why, "a directory login could not be checked");
                // Shown to clients in one protocol line.
                Err(AuthError::Unavailable(why.chars().filter(|c| !c.is_control()).take(200).collect()))
            }
        }
    }

    /// The user an API token acts as, without a password: a local account,
    /// or a directory user (looked up with the service account when not
    /// seen recently, and then checked like the others).
    pub async fn user_for_token(&self, name: &str) -> Result<Arc<User>, AuthError> {
        if let Some(u) = self.user(name) {
            return Ok(u);
        }
        let Some(d) = self.dir() else { return Err(AuthError::Rejected) };
        let name = directory::user_name(name);
        match d.dir.find(&name).await {
            Ok(Some(found)) => {
                let name = found.user_name(&name);
                let user =
                    Arc::new(directory::effective(&name, &found, &d.dir.config().groups, d.extras.get(&name)).user);
                if let Ok(mut seen) = d.seen.lock() {
                    seen.insert(name, SeenUser { user: user.clone(), verified: None, used: Instant::now() });
                }
                Ok(user)
            }
            Ok(None) | Err(DirError::Rejected) => Err(AuthError::Rejected),
            Err(DirError::Unavailable(why)) => Err(AuthError::Unavailable(why)),
        }
    }

    /// Ask the directory again about every directory user seen (the daemon
    /// does it every `[directory] cache`; with nobody seen, the service
    /// account's bind alone checks the directory): one no longer found (disabled,
    /// deleted) is forgotten and their open IMAP sessions end; changed
    /// group memberships apply at once. With the directory unreachable,
    /// access stays as last seen (and the metric says so).
    pub async fn check_directory_users(&self) {
        let Some(d) = self.dir() else { return };
        let names: Vec<String> = match d.seen.lock() {
            Ok(mut seen) => {
                seen.retain(|_, s| s.used.elapsed() < FORGET_SEEN_AFTER);
                seen.keys().cloned().collect()
            }
            Err(_) => return,
        };
        // With nobody to check, this is a probe (the service account's
        // bind), so the metric says whether the directory answers.
        let m = crate::counters::directory();
        let found = match d.dir.find_all(&names).await {
            Ok(f) => f,
            Err(e) => {
                m.up.set(0);
                m.errors.inc();
                tracing::warn!(error = %e, "checking directory users failed; their access stays as last seen");
                return;
            }
        };
        m.up.set(1);
        let mut changed = false;
        if let Ok(mut seen) = d.seen.lock() {
            for (name, f) in names.iter().zip(found) {
                match f {
                    None => {
                        if seen.remove(name).is_some() {
                            tracing::warn!(user = %name, "directory: account no longer found (disabled or deleted): access withdrawn");
                            changed = true;
                        }
                    }
                    Some(f) => {
                        let Some(s) = seen.get_mut(name) else { continue };
                        let e = directory::effective(name, &f, &d.dir.config().groups, d.extras.get(name));
                        if *s.user != e.user {
                            tracing::info!(user = %name, "directory: group membership changed; access updated");
                            s.user = Arc::new(e.user);
                            changed = true;
                        }
                    }
                }
            }
        }
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The daemon's task: [`Authenticator::check_directory_users`] every
    /// `[directory] cache` (every minute with `cache = "0s"`) until shutdown.
    pub async fn run_directory_checks(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let every = self
                .dir()
                .map(|d| d.dir.config().cache)
                .filter(|c| !c.is_zero())
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(every) => self.check_directory_users().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let h = super::hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let mut memory = Vec::new();
        for _ in 0..2 {
            assert!(verify_with_memory("s3cret", &h, &mut memory));
            assert!(!verify_with_memory("wrong", &h, &mut memory));
        }
        assert!(!verify_with_memory("s3cret-pw", "not a hash", &mut memory));
        assert!(super::verify_password("s3cret", &h));
        assert!(!super::verify_password("S3cret", &h));
        assert!(!super::verify_password("s3cret", "garbage"));
    }

    #[test]
    fn delays_grow_and_cap() {
        assert_eq!(delay_for(0), Duration::ZERO);
        assert_eq!(delay_for(1), Duration::from_millis(500));
        assert_eq!(delay_for(2), Duration::from_secs(1));
        assert_eq!(delay_for(6), Duration::from_secs(16));
        assert_eq!(delay_for(60), Duration::from_secs(16));
    }

    fn params_of(hash: &str) -> (u32, u32, u32) {
        let p = argon2::Params::try_from(&PasswordHash::new(hash).unwrap()).unwrap();
        (p.m_cost(), p.t_cost(), p.p_cost())
    }

    /// The dummy an unknown name is checked against costs what the dearest
    /// configured hash costs, not always argon2's defaults (a default-cost
    /// dummy answered unknown names slower than users with cheaper hashes,
    /// faster than users with dearer ones), and follows a reload.
    #[test]
    fn dummy_hash_costs_what_the_users_hashes_cost() {
        let with = |m, t| {
            let params = argon2::Params::new(m, t, 1, None).unwrap();
            let salt = SaltString::generate(&mut OsRng);
            let hash = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            UserConfig {
                name: format!("u{m}"),
                password_hash: hash,
                default_mailbox: None,
                grants: BTreeMap::new(),
                roles: vec![],
            }
        };
        let a = Authenticator::new(&[with(8, 1), with(16, 2), with(24, 1)]);
        assert_eq!(params_of(&a.dummy()), (16, 2, 1));
        let mut memory = Vec::new();
        assert!(verify_with_memory("pecgate-dummy", &a.dummy(), &mut memory));
        a.reload(&[with(8, 1)]);
        assert_eq!(params_of(&a.dummy()), (8, 1, 1));
        let defaults = argon2::Params::default();
        a.reload(&[]);
        assert_eq!(params_of(&a.dummy()), (defaults.m_cost(), defaults.t_cost(), defaults.p_cost()));
        let unparsable = UserConfig { password_hash: "not a hash".into(), ..with(8, 1) };
        assert_eq!(params_of(&dummy_hash(&[unparsable])), (defaults.m_cost(), defaults.t_cost(), defaults.p_cost()));
    }

    #[tokio::test]
    async fn unknown_user_and_wrong_password_look_alike() {
        let cfg = UserConfig {
            name: "mario".into(),
            password_hash: hash_password("pw").unwrap(),
            default_mailbox: Some("prot".into()),
            grants: BTreeMap::from([("prot".into(), vec!["read".into(), "triage".into()])]),
            roles: vec![],
        };
        let a = Authenticator::new(&[cfg]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let u = a.login("mario", "pw", ip).await.unwrap();
        assert!(u.may("prot", Right::Triage) && !u.may("prot", Right::Delete));
        let e1 = a.login("mario", "bad", ip).await.unwrap_err().to_string();
        let e2 = a.login("nobody", "pw", "192.0.2.2".parse().unwrap()).await.unwrap_err().to_string();
        assert_eq!(e1, e2);
    }

    #[tokio::test]
    async fn a_verified_login_is_remembered_until_the_password_or_user_changes() {
        let cfg = |pw: &str| UserConfig {
            name: "mario".into(),
            password_hash: hash_password(pw).unwrap(),
            default_mailbox: None,
            grants: BTreeMap::new(),
            roles: vec![],
        };
        let a = Authenticator::new(&[cfg("pw")]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        a.login("mario", "pw", ip).await.unwrap();
        let t = Instant::now();
        for _ in 0..50 {
            a.login("mario", "pw", ip).await.unwrap();
        }
        assert!(t.elapsed() < std::time::Duration::from_millis(200), "50 remembered logins took {:?}", t.elapsed());
        assert!(a.login("mario", "pwx", ip).await.is_err(), "another password is checked, and fails");
        a.reload(&[cfg("new")]);
        assert!(a.login("mario", "pw", ip).await.is_err(), "the old password after a change");
        a.login("mario", "new", ip).await.unwrap();
        a.reload(&[]);
        assert!(a.login("mario", "new", ip).await.is_err(), "a removed user");
    }
}
