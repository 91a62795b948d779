//! The `[directory]` table: staff log in with their directory account
//! (Active Directory or any LDAP server), search-then-bind, grants from
//! group membership. What is done with it is `crate::directory`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, RIGHTS, ROLES};

/// `[directory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls = true`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before anything is sent.
    #[serde(default)]
    pub starttls: bool,
    /// PEM certificates the server's certificate must chain to (the
    /// domain's CA), beside the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The service account that searches users and groups.
    pub bind_dn: String,
    /// A file holding the service account's password (one line; the
    /// trailing newline is not part of it).
    pub bind_password_file: PathBuf,
    /// Where users are searched (subtree).
    pub user_base: String,
    /// The search for a login name: `{login}` is replaced by the name,
    /// escaped as RFC 4515 says. AD: `(&(objectClass=user)(sAMAccountName={login}))`;
    /// OpenLDAP: `(uid={login})`. Make it leave out disabled accounts (AD:
    /// `(!(userAccountControl:1.2.840.113556.1.4.803:=2))`): an account the
    /// search no longer finds loses its access within `cache`.
    pub user_filter: String,
    /// How long a verified login is remembered (in memory, hashed) and how
    /// often the users seen are checked again; "0s" checks every login.
    #[serde(default = "default_cache", with = "humantime_serde")]
    pub cache: Duration,
    /// How long one directory operation (connect, bind, search) may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Groups and what their members get, one `[[directory.group]]` each.
    #[serde(default, rename = "group")]
    pub groups: Vec<DirectoryGroup>,
}

/// `[[directory.group]]`: members of the group `dn` get `grants` and `roles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryGroup {
    pub dn: String,
    /// Mailbox alias → rights, as in `[[user]]`.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The mailbox whose INBOX is the IMAP `INBOX` for members (the first
    /// group of a user, in this file's order, that names one decides).
    #[serde(default)]
    pub default_mailbox: Option<String>,
}

/// The host and port of an `ldap://` or `ldaps://` URL (default ports
/// 389 and 636); None if it has no host or a bad port.
pub fn ldap_authority(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "ldaps" => 636,
        "ldap" => 389,
        _ => return None,
    };
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok().filter(|p| *p > 0)?,
        None => default,
    };
    Some((host.to_string(), port))
}

fn default_cache() -> Duration {
    Duration::from_secs(300)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Problems of `[directory]`, each with its key.
pub(super) fn validate(cfg: &Config, push: &mut impl FnMut(String, String)) {
    let Some(d) = &cfg.directory else {
        if let Some((i, u)) = cfg.users.iter().enumerate().find(|(_, u)| u.password_hash.is_empty()) {
            push(
                format!("user[{i}].password_hash"),
                format!("missing: {:?} has no password and there is no [directory] to check one", u.name),
            );
        }
        return;
    };
    if ldap_authority(&d.url).is_none() && d.url.contains("://") {
        push("directory.url".into(), format!("{:?} has no host, or a bad port", d.url));
    }
    match d.url.split_once("://") {
        Some(("ldaps", rest)) if !rest.is_empty() => {
            if d.starttls {
                push("directory.starttls".into(), "ldaps:// is TLS already; starttls is for ldap:// URLs".into());
            }
        }
        Some(("ldap", rest)) if !rest.is_empty() => {
            if !d.starttls {
                push(
                    "directory.url".into(),
                    "ldap:// would send passwords in clear: use ldaps://, or set starttls = true".into(),
                );
            }
        }
        _ => push("directory.url".into(), format!("{:?} is not an ldaps:// or ldap:// URL", d.url)),
    }
    if let Some(ca) = &d.ca {
        if let Err(e) = std::fs::File::open(ca) {
            push("directory.ca".into(), format!("cannot read {}: {e}", ca.display()));
        }
    }
    if d.bind_dn.trim().is_empty() {
        push("directory.bind_dn".into(), "must not be empty (a service account searches the users)".into());
    }
    match std::fs::read_to_string(&d.bind_password_file) {
        Err(e) => {
            push("directory.bind_password_file".into(), format!("cannot read {}: {e}", d.bind_password_file.display()))
        }
        // An empty password would be an unauthenticated bind (RFC 4513
        // 5.1.2), which servers accept and which proves nothing.
        Ok(s) if s.trim_end_matches(['\r', '\n']).is_empty() => push(
            "directory.bind_password_file".into(),
            format!("{} is empty: an empty password is an anonymous bind", d.bind_password_file.display()),
        ),
        Ok(_) => {}
    }
    if d.user_base.trim().is_empty() {
        push("directory.user_base".into(), "must not be empty".into());
    }
    if !d.user_filter.contains("{login}") {
        push("directory.user_filter".into(), "must contain {login} (where the login name goes)".into());
    } else if ldap3::parse_filter(d.user_filter.replace("{login}", "x")).is_err() {
        push(
            "directory.user_filter".into(),
            format!("{:?} is not an LDAP filter (RFC 4515), e.g. (uid={{login}})", d.user_filter),
        );
    }
    if d.timeout < Duration::from_secs(1) {
        push("directory.timeout".into(), "must be at least 1s".into());
    }
    for (i, g) in d.groups.iter().enumerate() {
        let k = |field: &str| format!("directory.group[{i}].{field}");
        if g.dn.trim().is_empty() {
            push(k("dn"), "must not be empty".into());
        }
        for (alias, rights) in &g.grants {
            if cfg.mailbox(alias).is_none() {
                push(k(&format!("grants.{alias}")), format!("no [[mailbox]] has alias {alias:?}"));
            }
            for r in rights {
                if !RIGHTS.contains(&r.as_str()) {
                    push(
                        k(&format!("grants.{alias}")),
                        format!("unknown right {r:?} (rights are {})", RIGHTS.join(", ")),
                    );
                }
            }
        }
        for r in &g.roles {
            if !ROLES.contains(&r.as_str()) {
                push(k("roles"), format!("unknown role {r:?} (roles are {})", ROLES.join(", ")));
            }
        }
        if let Some(m) = &g.default_mailbox {
            if !g.grants.get(m).is_some_and(|r| r.iter().any(|x| x == "read")) {
                push(k("default_mailbox"), format!("{m:?} is not granted \"read\" by this group"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ldap_authority;

    #[test]
    fn ldap_urls() {
        assert_eq!(ldap_authority("ldaps://dc1.comune.local"), Some(("dc1.comune.local".into(), 636)));
        assert_eq!(ldap_authority("ldap://10.0.0.5:3389/"), Some(("10.0.0.5".into(), 3389)));
        assert_eq!(ldap_authority("ldaps://[::1]:1636"), Some(("::1".into(), 1636)));
        for bad in ["ldaps://", "ldaps:///", "ldap://h:0", "ldap://h:x", "http://h", "ldaps://:636"] {
            assert_eq!(ldap_authority(bad), None, "{bad}");
        }
    }
}
