//! Gateway users: passwords (argon2id), grants per mailbox, login throttling.
//!
//! One [`Authenticator`] serves every listener (like Postfix's `anvil`), so a
//! guesser cannot get more tries by opening more connections or switching
//! protocol. Unknown users and wrong passwords get the same answer after the
//! same work (a dummy hash is verified), so user names cannot be probed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::config::UserConfig;

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
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
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
}

impl User {
    pub fn may(&self, mailbox: &str, right: Right) -> bool {
        self.grants.get(mailbox).is_some_and(|r| r.contains(&right))
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
    /// Verified when the user is unknown, so both cases cost the same.
    dummy_hash: String,
}

/// User name → (password hash, user).
type UserTable = HashMap<String, (String, Arc<User>)>;

/// Unknown rights are dropped here; `Config::validate` has already refused them.
fn table(users: &[UserConfig]) -> UserTable {
    let mut map = HashMap::new();
    for u in users {
        let grants = u
            .grants
            .iter()
            .map(|(m, rs)| (m.clone(), rs.iter().filter_map(|r| Right::parse(r)).collect()))
            .collect();
        let user = User {
            name: u.name.clone(),
            default_mailbox: u.default_mailbox.clone(),
            grants,
            roles: u.roles.iter().cloned().collect(),
        };
        map.insert(u.name.clone(), (u.password_hash.clone(), Arc::new(user)));
    }
    map
}

impl Authenticator {
    /// Build from validated configuration.
    pub fn new(users: &[UserConfig]) -> Authenticator {
        let dummy_hash = hash_password("pecgate-dummy").unwrap_or_default();
        Authenticator { users: RwLock::new(Arc::new(table(users))), throttle: Mutex::new(Throttle::default()), dummy_hash }
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
        self.current().get(name).map(|(_, u)| u.clone())
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
            crate::metrics::Metrics::throttled_logins().inc();
            tokio::time::sleep(wait).await;
        }
        let (hash, user) = match self.current().get(name) {
            Some((h, u)) => (h.clone(), Some(u.clone())),
            None => (self.dummy_hash.clone(), None),
        };
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let mut t = self.throttle.lock().map_err(|_| AuthError::Internal("throttle lock poisoned".into()))?;
        match (ok, user) {
            (true, Some(u)) => {
                t.failures.remove(&ukey);
                Ok(u)
            }
            _ => {
                let now = Instant::now();
                t.fail(ukey, now);
                t.fail(ikey, now);
                Err(AuthError::Rejected)
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
}
