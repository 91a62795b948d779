//! Staff logins against the organisation's directory (Active Directory or
//! any LDAP server): search-then-bind with a service account, grants from
//! the groups a user is a member of (`[[directory.group]]`), added to the
//! `[[user]]` entry of the same name if there is one.
//!
//! pecgate never stores a directory password: `auth` remembers a verified
//! login for `[directory] cache` as a salted hash in memory, and checks the
//! users it has seen again as often (`Authenticator::check_directory_users`),
//! so a disabled or deleted account, or one removed from a group, loses
//! that access within that time.

pub mod cli;
mod ldap;

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::{Right, User};
use crate::config::{DirectoryConfig, DirectoryGroup, UserConfig};

/// Why a directory login did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    /// The directory answered: no such user, or a wrong password.
    #[error("unknown user or wrong password")]
    Rejected,
    /// The directory could not be asked (down, TLS, timeout, service
    /// account refused): never reported to a client as a wrong password.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}

/// A user's entry as the directory gave it: the DN, and which configured
/// groups (indexes into `[[directory.group]]`) list it as a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub dn: String,
    /// The entry's own login name (the filter's login attribute, e.g.
    /// `uid`), when the filter names one and the entry has it: a person
    /// logging in by another form (their address) is the same user.
    pub login: Option<String>,
    pub groups: Vec<usize>,
}

impl Found {
    /// The gateway user name: the entry's login, else the name typed.
    pub fn user_name(&self, typed: &str) -> String {
        self.login.as_deref().map(user_name).unwrap_or_else(|| user_name(typed))
    }
}

/// The directory as configured, ready to be asked.
pub struct Directory {
    cfg: DirectoryConfig,
    target: ldap::Target,
    bind_password: String,
}

/// The longest login name sent to the directory.
const MAX_LOGIN: usize = 256;

impl Directory {
    /// From validated configuration: reads the service account's password
    /// and the CA file.
    pub fn new(cfg: &DirectoryConfig) -> anyhow::Result<Directory> {
        let bind_password = std::fs::read_to_string(&cfg.bind_password_file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", cfg.bind_password_file.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        anyhow::ensure!(!bind_password.is_empty(), "{} is empty", cfg.bind_password_file.display());
        let tls = crate::tls::client_config(cfg.ca.as_deref())?;
        let target = ldap::Target { url: cfg.url.clone(), starttls: cfg.starttls, tls, timeout: cfg.timeout };
        Ok(Directory { cfg: cfg.clone(), target, bind_password })
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.cfg
    }

    /// A connection bound as the service account.
    async fn service(&self) -> Result<ldap::Conn, DirError> {
        let mut c = ldap::Conn::open(&self.target).await?;
        if !c.bind(&self.cfg.bind_dn, &self.bind_password).await? {
            c.close().await;
            return Err(DirError::Unavailable(format!(
                "the service account {} was refused (check bind_dn and bind_password_file)",
                self.cfg.bind_dn
            )));
        }
        Ok(c)
    }

    async fn lookup(&self, c: &mut ldap::Conn, login: &str) -> Result<Option<Found>, DirError> {
        if !plausible_login(login) {
            return Ok(None);
        }
        let filter = ldap::user_filter(&self.cfg.user_filter, login);
        let attr = ldap::login_attribute(&self.cfg.user_filter);
        let Some((dn, own)) = c.find(&self.cfg.user_base, &filter, attr).await? else { return Ok(None) };
        let mut groups = Vec::new();
        for (i, g) in self.cfg.groups.iter().enumerate() {
            if c.is_member(&g.dn, &dn).await? {
                groups.push(i);
            }
        }
        Ok(Some(Found { dn, login: own, groups }))
    }

    /// Search-then-bind: the service account finds the entry and its
    /// groups, then the password is checked by binding as that entry.
    pub async fn login(&self, login: &str, password: &str) -> Result<Found, DirError> {
        // Refused before anything is asked: an empty password would be an
        // unauthenticated bind, which succeeds.
        if password.is_empty() || password.len() > 1024 || !plausible_login(login) {
            return Err(DirError::Rejected);
        }
        let mut c = self.service().await?;
        let found = self.lookup(&mut c, login).await;
        let found = match found {
            Ok(Some(f)) => f,
            Ok(None) => {
                c.close().await;
                return Err(DirError::Rejected);
            }
            Err(e) => return Err(e),
        };
        let ok = c.bind(&found.dn, password).await;
        c.close().await;
        if ok? {
            Ok(found)
        } else {
            Err(DirError::Rejected)
        }
    }

    /// The entries of `logins` as the directory has them now (None: not
    /// found any more), on one connection (the periodic check).
    pub async fn find_all(&self, logins: &[String]) -> Result<Vec<Option<Found>>, DirError> {
        let mut c = self.service().await?;
        let mut out = Vec::with_capacity(logins.len());
        for l in logins {
            out.push(self.lookup(&mut c, l).await?);
        }
        c.close().await;
        Ok(out)
    }

    /// One user's entry (for `pecgate users show`).
    pub async fn find(&self, login: &str) -> Result<Option<Found>, DirError> {
        Ok(self.find_all(&[login.to_string()]).await?.pop().flatten())
    }
}

/// A login name worth asking the directory about: not empty, not too long,
/// no control characters (the filter escaping takes care of the rest).
fn plausible_login(login: &str) -> bool {
    !login.is_empty() && login.len() <= MAX_LOGIN && !login.chars().any(char::is_control)
}

/// The gateway name of a directory login: directory names match without
/// regard to case (uid, sAMAccountName), so one person is one user.
pub fn user_name(login: &str) -> String {
    login.trim().to_lowercase()
}

/// Where one of a user's grants, roles or default mailbox comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Group(String),
    LocalUser(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Group(dn) => write!(f, "group {dn}"),
            Source::LocalUser(name) => write!(f, "[[user]] {name}"),
        }
    }
}

/// A directory user's effective access and where each part comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub user: User,
    pub rights: BTreeMap<(String, Right), BTreeSet<Source>>,
    pub roles: BTreeMap<String, BTreeSet<Source>>,
    pub default_from: Option<Source>,
}

fn rights_of(list: &[String]) -> impl Iterator<Item = Right> + '_ {
    list.iter().filter_map(|r| Right::parse(r))
}

/// The union of the user's groups' grants and roles and those of the
/// `[[user]]` of the same name (`extra`); the default mailbox from the
/// `[[user]]` entry, else the first group (in configuration order) that
/// names one.
pub fn effective(name: &str, found: &Found, groups: &[DirectoryGroup], extra: Option<&UserConfig>) -> Effective {
    let mut rights: BTreeMap<(String, Right), BTreeSet<Source>> = BTreeMap::new();
    let mut roles: BTreeMap<String, BTreeSet<Source>> = BTreeMap::new();
    let mut default: Option<(String, Source)> = None;
    let mut add = |grants: &BTreeMap<String, Vec<String>>, role_list: &[String], src: &Source| {
        for (mb, list) in grants {
            for r in rights_of(list) {
                rights.entry((mb.clone(), r)).or_default().insert(src.clone());
            }
        }
        for r in role_list {
            roles.entry(r.clone()).or_default().insert(src.clone());
        }
    };
    for &i in &found.groups {
        let Some(g) = groups.get(i) else { continue };
        let src = Source::Group(g.dn.clone());
        add(&g.grants, &g.roles, &src);
        if default.is_none() {
            default = g.default_mailbox.clone().map(|m| (m, src));
        }
    }
    if let Some(u) = extra {
        let src = Source::LocalUser(u.name.clone());
        add(&u.grants, &u.roles, &src);
        if let Some(m) = &u.default_mailbox {
            default = Some((m.clone(), src));
        }
    }
    let mut grants: BTreeMap<String, BTreeSet<Right>> = BTreeMap::new();
    for (mb, r) in rights.keys() {
        grants.entry(mb.clone()).or_default().insert(*r);
    }
    // A default mailbox the user cannot read is no INBOX.
    let default = default.filter(|(m, _)| grants.get(m).is_some_and(|r| r.contains(&Right::Read)));
    let user = User {
        name: name.to_string(),
        default_mailbox: default.as_ref().map(|(m, _)| m.clone()),
        grants,
        roles: roles.keys().cloned().collect(),
        dn: Some(found.dn.clone()),
    };
    Effective { user, rights, roles, default_from: default.map(|(_, s)| s) }
}

/// What `pecgate users show` prints for a directory user.
pub fn describe(e: &Effective) -> String {
    let mut out = format!("user {}\n  directory entry: {}\n", e.user.name, e.user.dn.as_deref().unwrap_or("-"));
    describe_access(
        &mut out,
        e.rights.iter().map(|((m, r), s)| (m.as_str(), *r, s)),
        &e.roles,
        &e.default_from,
        &e.user,
    );
    out
}

/// The grants, roles and default mailbox lines shared by directory and
/// local users.
pub fn describe_access<'a>(
    out: &mut String,
    rights: impl Iterator<Item = (&'a str, Right, &'a BTreeSet<Source>)>,
    roles: &BTreeMap<String, BTreeSet<Source>>,
    default_from: &Option<Source>,
    user: &User,
) {
    let join = |s: &BTreeSet<Source>| s.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; ");
    let mut any = false;
    for (m, r, s) in rights {
        if !any {
            out.push_str("  grants:\n");
            any = true;
        }
        out.push_str(&format!("    {m:<16} {:<7} from {}\n", right_name(r), join(s)));
    }
    if !any {
        out.push_str("  grants: none (the user sees no mailbox)\n");
    }
    for (role, s) in roles {
        out.push_str(&format!("  role {role} from {}\n", join(s)));
    }
    match (&user.default_mailbox, default_from) {
        (Some(m), Some(s)) => out.push_str(&format!("  INBOX: {m} (from {s})\n")),
        (Some(m), None) => out.push_str(&format!("  INBOX: {m}\n")),
        (None, _) => out.push_str("  INBOX: none (no default mailbox)\n"),
    }
}

pub fn right_name(r: Right) -> &'static str {
    match r {
        Right::Read => "read",
        Right::Triage => "triage",
        Right::Send => "send",
        Right::Delete => "delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(dn: &str, grants: &[(&str, &[&str])], default: Option<&str>) -> DirectoryGroup {
        DirectoryGroup {
            dn: dn.into(),
            grants: grants.iter().map(|(m, r)| (m.to_string(), r.iter().map(|x| x.to_string()).collect())).collect(),
            roles: vec![],
            default_mailbox: default.map(str::to_string),
        }
    }

    #[test]
    fn grants_are_the_union_of_groups_and_the_local_entry_with_their_sources() {
        let groups = vec![
            group("cn=prot", &[("protocollo", &["read", "triage"])], Some("protocollo")),
            group("cn=ragioneria", &[("ragioneria", &["read"]), ("protocollo", &["read"])], None),
            group("cn=other", &[("other", &["read"])], None),
        ];
        let extra = UserConfig {
            name: "mario".into(),
            password_hash: String::new(),
            default_mailbox: None,
            grants: BTreeMap::from([("protocollo".into(), vec!["send".into()])]),
            roles: vec!["audit".into()],
        };
        let found = Found { dn: "uid=mario,ou=people".into(), login: Some("Mario".into()), groups: vec![0, 1] };
        assert_eq!(found.user_name("mario@comune.example.it"), "mario");
        let e = effective("mario", &found, &groups, Some(&extra));
        let u = &e.user;
        assert!(
            u.may("protocollo", Right::Read) && u.may("protocollo", Right::Triage) && u.may("protocollo", Right::Send)
        );
        assert!(u.may("ragioneria", Right::Read) && !u.may("other", Right::Read));
        assert_eq!(u.default_mailbox.as_deref(), Some("protocollo"));
        assert_eq!(u.roles, BTreeSet::from(["audit".to_string()]));
        assert_eq!(u.dn.as_deref(), Some("uid=mario,ou=people"));
        assert_eq!(
            e.rights[&("protocollo".to_string(), Right::Read)],
            BTreeSet::from([Source::Group("cn=prot".into()), Source::Group("cn=ragioneria".into())])
        );
        assert_eq!(
            e.rights[&("protocollo".to_string(), Right::Send)],
            BTreeSet::from([Source::LocalUser("mario".into())])
        );
        let text = describe(&e);
        assert!(text.contains("protocollo       send    from [[user]] mario"), "{text}");
        assert!(text.contains("INBOX: protocollo (from group cn=prot)"), "{text}");
        // No group: no grants, no INBOX.
        let none = effective("mario", &Found { dn: "x".into(), login: None, groups: vec![] }, &groups, None);
        assert!(none.user.grants.is_empty() && none.user.default_mailbox.is_none());
    }

    #[test]
    fn implausible_logins_are_not_sent() {
        assert!(plausible_login("mario.rossi"));
        assert!(!plausible_login(""));
        assert!(!plausible_login("a\nb"));
        assert!(!plausible_login(&"x".repeat(300)));
        assert_eq!(user_name(" Mario.Rossi "), "mario.rossi");
    }
}
