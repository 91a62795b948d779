//! API tokens for applications (the billing or fines software that creates
//! campaigns): `Authorization: Bearer pgt_…` on the HTTP API, acting as a
//! gateway user with that user's grants.
//!
//! Kept in `[http] tokens_file` (default `api-tokens.json` beside the
//! configuration file) as SHA-256 hashes only: a token is 32 random bytes,
//! shown once by `pecgate token create`, so a hash without a salt or a slow
//! function cannot be reversed. Revoking marks the entry; the daemon reads
//! the file again whenever it changes, so a revocation applies to the next
//! request. Every use is audited under the token's name.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// What every token starts with (so a leaked one is recognisable).
pub const PREFIX: &str = "pgt_";

/// One token as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub user: String,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub tokens: Vec<Entry>,
}

/// Why a bearer token was not accepted (said to the client as 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown token")]
    Unknown,
    #[error("token {0:?} was revoked")]
    Revoked(String),
    #[error("token {0:?} has expired")]
    Expired(String),
    #[error("the tokens file cannot be read: {0}")]
    Unreadable(String),
}

pub fn hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// The tokens file of a configuration.
pub fn path_for(cfg: &crate::config::Config, config_path: &Path) -> PathBuf {
    cfg.http
        .as_ref()
        .and_then(|h| h.tokens_file.clone())
        .unwrap_or_else(|| config_path.parent().unwrap_or_else(|| Path::new(".")).join("api-tokens.json"))
}

fn read(path: &Path) -> Result<File, TokenError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| TokenError::Unreadable(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(TokenError::Unreadable(format!("{}: {e}", path.display()))),
    }
}

/// The daemon's view of the file, read again when its modification time
/// or size changes.
pub struct Tokens {
    path: PathBuf,
    cached: Mutex<Option<((SystemTime, u64), File)>>,
}

impl Tokens {
    pub fn new(path: PathBuf) -> Tokens {
        Tokens { path, cached: Mutex::new(None) }
    }

    /// The entry `token` belongs to, if it may be used now.
    pub fn check(&self, token: &str) -> Result<Entry, TokenError> {
        if !token.starts_with(PREFIX) || token.len() > 200 {
            return Err(TokenError::Unknown);
        }
        let stamp =
            std::fs::metadata(&self.path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut cached = self.cached.lock().map_err(|_| TokenError::Unreadable("lock poisoned".into()))?;
        let file = match (&*cached, stamp) {
            (Some((s, f)), Some(now)) if *s == now => f.clone(),
            (_, None) => File::default(),
            (_, Some(now)) => {
                let f = read(&self.path)?;
                *cached = Some((now, f.clone()));
                f
            }
        };
        drop(cached);
        let h = hash(token);
        let e = file
            .tokens
            .into_iter()
            .find(|e| openssl::memcmp::eq(e.sha256.as_bytes(), h.as_bytes()) && e.sha256.len() == h.len())
            .ok_or(TokenError::Unknown)?;
        if e.revoked.is_some() {
            return Err(TokenError::Revoked(e.name));
        }
        if e.expires.is_some_and(|x| x <= Utc::now()) {
            return Err(TokenError::Expired(e.name));
        }
        Ok(e)
    }
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token for an application acting as USER (with USER's
    /// grants): printed once, kept only as a hash. The daemon accepts it at
    /// once (`Authorization: Bearer …`).
    Create {
        #[arg(long, short, env = "PECGATE_CONFIG", default_value = "/etc/pecgate/pecgate.toml")]
        config: PathBuf,
        #[arg(long)]
        user: String,
        /// What it is for (`billing`): shown in every audit record of its use.
        #[arg(long)]
        name: String,
        /// Valid for this long (`90d`, `1y`); default: until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// The tokens, with their user, creation, expiry and revocation.
    List {
        #[arg(long, short, env = "PECGATE_CONFIG", default_value = "/etc/pecgate/pecgate.toml")]
        config: PathBuf,
    },
    /// Revoke a token by name: the next request with it gets 401.
    Revoke {
        #[arg(long, short, env = "PECGATE_CONFIG", default_value = "/etc/pecgate/pecgate.toml")]
        config: PathBuf,
        name: String,
    },
}

/// Write `file` to `path` atomically, readable by the owner and group of
/// the configuration file (the daemon's group), nobody else.
fn write(path: &Path, file: &File, config_path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(file)?)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640))?;
    if let Ok(meta) = std::fs::metadata(config_path) {
        use std::os::unix::fs::MetadataExt;
        // Best effort: only root may give the file away.
        let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

pub fn run(cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::Create { config, user, name, expires } => {
            let cfg = crate::daemon::load_config(&config)?;
            let path = path_for(&cfg, &config);
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                bail!("--name must be 1 to 64 characters without spaces");
            }
            let local = cfg.users.iter().any(|u| u.name == user && !u.password_hash.is_empty());
            if !local && cfg.directory.is_none() {
                bail!("no user {user:?} in {} (and no [directory])", config.display());
            }
            let mut file = read(&path)?;
            if file.tokens.iter().any(|t| t.name == name && t.revoked.is_none()) {
                bail!("a token named {name:?} exists; revoke it first or choose another name");
            }
            let token = format!("{PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
            let now = Utc::now();
            let expires = expires.map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
            file.tokens.push(Entry {
                name: name.clone(),
                user: user.clone(),
                sha256: hash(&token),
                created: now,
                expires,
                revoked: None,
            });
            write(&path, &file, &config)?;
            eprintln!(
                "token {name:?} for user {user} written to {} (as a hash){}. It is shown only now:",
                path.display(),
                expires.map(|e| format!(", valid until {e}")).unwrap_or_default()
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCmd::List { config } => {
            let cfg = crate::daemon::load_config(&config)?;
            let file = read(&path_for(&cfg, &config))?;
            for t in &file.tokens {
                let state = match (t.revoked, t.expires) {
                    (Some(r), _) => format!("revoked {r}"),
                    (None, Some(e)) if e <= Utc::now() => format!("expired {e}"),
                    (None, Some(e)) => format!("valid until {e}"),
                    (None, None) => "valid".into(),
                };
                println!("{:<20} user {:<16} created {}  {state}", t.name, t.user, t.created);
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCmd::Revoke { config, name } => {
            let cfg = crate::daemon::load_config(&config)?;
            let path = path_for(&cfg, &config);
            let mut file = read(&path)?;
            let mut found = false;
            for t in file.tokens.iter_mut().filter(|t| t.name == name && t.revoked.is_none()) {
                t.revoked = Some(Utc::now());
                found = true;
            }
            if !found {
                eprintln!("no valid token named {name:?} in {}", path.display());
                return Ok(ExitCode::from(1));
            }
            write(&path, &file, &config)?;
            eprintln!("token {name:?} revoked: the daemon refuses it from the next request");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let t = Tokens::new(path.clone());
        assert_eq!(t.check("pgt_abc"), Err(TokenError::Unknown), "no file: no tokens");
        let now = Utc::now();
        let entry = |name: &str, token: &str| Entry {
            name: name.into(),
            user: "mario".into(),
            sha256: hash(token),
            created: now,
            expires: None,
            revoked: None,
        };
        let mut f = File { tokens: vec![entry("billing", "pgt_one"), entry("old", "pgt_two")] };
        f.tokens[1].expires = Some(now - chrono::Duration::seconds(1));
        std::fs::write(&path, serde_json::to_vec(&f).unwrap()).unwrap();
        assert_eq!(t.check("pgt_one").unwrap().name, "billing");
        assert_eq!(t.check("pgt_two"), Err(TokenError::Expired("old".into())));
        assert_eq!(t.check("pgt_three"), Err(TokenError::Unknown));
        assert_eq!(t.check("one"), Err(TokenError::Unknown), "without the prefix");
        // Revoked in the file: refused at the next check (the file is read
        // again when it changes: another size here).
        f.tokens[0].revoked = Some(now);
        std::fs::write(&path, serde_json::to_vec_pretty(&f).unwrap()).unwrap();
        assert_eq!(t.check("pgt_one"), Err(TokenError::Revoked("billing".into())));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(t.check("pgt_one"), Err(TokenError::Unreadable(_))));
    }
}
