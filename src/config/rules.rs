//! The `[[office]]` and `[[rule]]` tables: offices messages can be assigned
//! to and the routing rules, as settings, and their validation. What the
//! rules do with a message is `handling::rules`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::Config;
use crate::pec;

/// `[[office]]`: a group of users messages can be assigned to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfficeConfig {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// `[[rule]]`: when a message arriving in `mailbox` matches, assign it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub mailbox: String,
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: MatchConfig,
    /// An office or a user.
    pub assign: Option<String>,
    /// Keywords the message gets on arrival (e.g. `$Multe`).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Respond within (e.g. "30d").
    #[serde(default, with = "humantime_serde::option")]
    pub due: Option<Duration>,
}

/// The conditions of a rule; all given ones must hold. Regexes follow the
/// `regex` crate's syntax (`(?i)` for case-insensitive).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Regex on the original sender's address.
    pub from: Option<String>,
    /// The original sender's domain, exactly (case-insensitive).
    pub from_domain: Option<String>,
    /// Regex on any certified address the message was sent to.
    pub to: Option<String>,
    /// Regex on the original subject (without "POSTA CERTIFICATA:").
    pub subject: Option<String>,
    /// Regex on the original message's text.
    pub body: Option<String>,
    /// Regex on any attachment's file name.
    pub attachment_name: Option<String>,
    /// Regex on any attachment's MIME type (e.g. `^application/pdf$`).
    pub attachment_type: Option<String>,
    /// Regexes on `daticert.xml` fields (see [`DATICERT_FIELDS`]).
    #[serde(default)]
    pub daticert: BTreeMap<String, String>,
}

/// The `daticert.xml` fields a rule can match.
pub const DATICERT_FIELDS: [&str; 9] = [
    "tipo",
    "mittente",
    "destinatari",
    "risposte",
    "oggetto",
    "gestore-emittente",
    "identificativo",
    "msgid",
    "data",
];

/// Every configuration problem of offices and rules, as (key, message).
pub(super) fn validate(cfg: &Config, push: &mut impl FnMut(String, String)) {
    let users: HashSet<&str> = cfg.users.iter().map(|u| u.name.as_str()).collect();
    let mut offices: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, o) in cfg.offices.iter().enumerate() {
        let k = |f: &str| format!("office[{i}].{f}");
        if o.name.is_empty() || o.name.contains('/') || o.name.chars().any(|c| c.is_control()) {
            push(k("name"), format!("{:?} is not a valid office name (it becomes a folder name: no '/')", o.name));
        }
        if let Some(first) = offices.insert(o.name.as_str(), i) {
            push(k("name"), format!("duplicate office {:?} (also office[{first}])", o.name));
        }
        if users.contains(o.name.as_str()) {
            push(k("name"), format!("{:?} is also a user's name: an assignment to it would be ambiguous", o.name));
        }
        for (j, m) in o.members.iter().enumerate() {
            if !users.contains(m.as_str()) {
                push(format!("office[{i}].members[{j}]"), format!("no user {m:?}"));
            }
        }
    }
    let target_ok = |t: &str| offices.contains_key(t) || users.contains(t);
    for (i, m) in cfg.mailboxes.iter().enumerate() {
        if let Some(t) = &m.default_office {
            if !target_ok(t) {
                push(format!("mailbox[{i}].default_office"), format!("no office or user {t:?}"));
            }
        }
    }
    for (i, r) in cfg.rules.iter().enumerate() {
        let k = |f: &str| format!("rule[{i}].{f}");
        if cfg.mailbox(&r.mailbox).is_none() {
            push(k("mailbox"), format!("no mailbox with alias {:?}", r.mailbox));
        }
        if r.name.trim().is_empty() {
            push(k("name"), "must not be empty".into());
        }
        match &r.assign {
            Some(t) if !target_ok(t) => push(k("assign"), format!("no office or user {t:?}")),
            None if r.keywords.is_empty() && r.due.is_none() => {
                push(k("assign"), "missing: a rule must assign, add keywords or set a deadline".into())
            }
            _ => {}
        }
        for (j, kw) in r.keywords.iter().enumerate() {
            let atom = !kw.is_empty()
                && kw.bytes().all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
                && !kw.starts_with('\\');
            if !atom {
                push(format!("rule[{i}].keywords[{j}]"), format!("{kw:?} is not a valid IMAP keyword"));
            } else if pec::is_pec_keyword(kw) {
                push(format!("rule[{i}].keywords[{j}]"), format!("{kw:?}: $Pec* keywords are the gateway's own"));
            }
        }
        if r.due.is_some_and(|d| d.is_zero()) {
            push(k("due"), "must be more than 0".into());
        }
        let mc = &r.matches;
        for (f, v) in [
            ("from", &mc.from),
            ("to", &mc.to),
            ("subject", &mc.subject),
            ("body", &mc.body),
            ("attachment_name", &mc.attachment_name),
            ("attachment_type", &mc.attachment_type),
        ] {
            if let Some(re) = v {
                if let Err(e) = Regex::new(re) {
                    push(format!("rule[{i}].match.{f}"), format!("invalid regex: {}", one_line(&e.to_string())));
                }
            }
        }
        if let Some(d) = &mc.from_domain {
            if d.is_empty() || d.contains('@') {
                push(k("match.from_domain"), format!("{d:?} is not a domain"));
            }
        }
        for (f, re) in &mc.daticert {
            if !DATICERT_FIELDS.contains(&f.as_str()) {
                push(
                    format!("rule[{i}].match.daticert.{f}"),
                    format!("unknown daticert field (known: {})", DATICERT_FIELDS.join(", ")),
                );
            } else if let Err(e) = Regex::new(re) {
                push(format!("rule[{i}].match.daticert.{f}"), format!("invalid regex: {}", one_line(&e.to_string())));
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
