//! `pecgate users show NAME`: a user's effective grants and roles, and
//! where each comes from (a directory group, a `[[user]]` entry), as the
//! daemon would compute them at that user's next login.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::{describe, describe_access, effective, user_name, Directory, Source};
use crate::auth::Right;
use crate::config::{Config, UserConfig};

#[derive(Subcommand)]
pub enum UsersCmd {
    /// What NAME may do, and why: each grant and role with the directory
    /// group or `[[user]]` entry it comes from. A directory user is looked
    /// up now with the service account (no password needed).
    Show {
        #[arg(long, env = "PECGATE_CONFIG", default_value = "/etc/pecgate/pecgate.toml")]
        config: PathBuf,
        name: String,
    },
}

pub fn run(cmd: UsersCmd) -> anyhow::Result<ExitCode> {
    let UsersCmd::Show { config, name } = cmd;
    let cfg = crate::daemon::load_config(&config)?;
    if let Some(u) = cfg.users.iter().find(|u| u.name == name && !u.password_hash.is_empty()) {
        print!("{}", local(u));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(dcfg) = &cfg.directory else {
        eprintln!("no user {name:?}: no [[user]] with a password has that name, and there is no [directory]");
        return Ok(ExitCode::from(1));
    };
    let dir = Directory::new(dcfg).context("[directory]")?;
    let login = user_name(&name);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let found = rt.block_on(dir.find(&login)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(found) = found else {
        eprintln!(
            "no user {login:?} in the directory (the search {} under {} finds no entry, or several)",
            dcfg.user_filter, dcfg.user_base
        );
        return Ok(ExitCode::from(1));
    };
    let login = found.user_name(&login);
    let e = effective(&login, &found, &dcfg.groups, extra(&cfg, &login));
    print!("{}", describe(&e));
    Ok(ExitCode::SUCCESS)
}

fn extra<'a>(cfg: &'a Config, login: &str) -> Option<&'a UserConfig> {
    cfg.users.iter().find(|u| u.password_hash.is_empty() && user_name(&u.name) == login)
}

fn local(u: &UserConfig) -> String {
    let src = BTreeSet::from([Source::LocalUser(u.name.clone())]);
    let mut rights: BTreeMap<(String, Right), BTreeSet<Source>> = BTreeMap::new();
    let mut grants: BTreeMap<String, BTreeSet<Right>> = BTreeMap::new();
    for (m, list) in &u.grants {
        for r in list.iter().filter_map(|r| Right::parse(r)) {
            rights.insert((m.clone(), r), src.clone());
            grants.entry(m.clone()).or_default().insert(r);
        }
    }
    let roles = u.roles.iter().map(|r| (r.clone(), src.clone())).collect();
    let user = crate::auth::User {
        name: u.name.clone(),
        default_mailbox: u.default_mailbox.clone(),
        grants,
        roles: u.roles.iter().cloned().collect(),
        dn: None,
    };
    let mut out = format!("user {}\n  local account ([[user]] with a password; the directory is not asked)\n", u.name);
    let default_from = u.default_mailbox.as_ref().map(|_| Source::LocalUser(u.name.clone()));
    describe_access(&mut out, rights.iter().map(|((m, r), s)| (m.as_str(), *r, s)), &roles, &default_from, &user);
    out
}
