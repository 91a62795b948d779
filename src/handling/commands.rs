//! `pecgate rules test|apply` and `pecgate handling report`: the command
//! line side of handling (the rest of this module is pure; this file reads
//! files, the journal and the archive).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};

use super::register::{self, Register, Row};
use super::rules::{Facts, Rules};
use super::{Action, Transition};
use crate::config::Config;
use crate::store::{Audit, Change, FlagOp, JournalReader, Store};

/// Which rule matches `file` and why, for each mailbox (or one).
pub fn rules_test(cfg: &Config, file: &Path, mailbox: Option<&str>) -> anyhow::Result<String> {
    let raw = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let rules = Rules::compile(cfg);
    let facts = Facts::of(&raw);
    let mut out = String::new();
    let _ = writeln!(out, "{}: {}", file.display(), facts.kind);
    let _ = writeln!(out, "  from: {}", facts.from.as_deref().unwrap_or("(none)"));
    let _ = writeln!(out, "  to: {}", if facts.to.is_empty() { "(none)".into() } else { facts.to.join(", ") });
    let _ = writeln!(out, "  subject: {}", facts.subject.as_deref().unwrap_or("(none)"));
    if !facts.attachment_names.is_empty() {
        let _ = writeln!(out, "  attachments: {}", facts.attachment_names.join(", "));
    }
    let mailboxes: Vec<String> = match mailbox {
        Some(m) if cfg.mailbox(m).is_some() => vec![m.to_string()],
        Some(m) => bail!("no mailbox with alias {m:?} in the configuration"),
        None => cfg.mailboxes.iter().map(|m| m.alias.clone()).collect(),
    };
    let kind = crate::pec::classify(&raw).kind;
    for m in mailboxes {
        let _ = writeln!(out, "\nmailbox {m}:");
        if !rules.tracks(&m, &kind) {
            let _ = writeln!(out, "  a {kind} message is not tracked for handling in this mailbox (only certified messages{})",
                if kind == crate::pec::PecKind::Anomalia { "; set handle_anomalies = true for anomaly envelopes" } else { "" });
            continue;
        }
        let mut first = None;
        for v in rules.explain(&m, &facts) {
            let mark = if v.matched { "MATCH" } else { "no" };
            let _ = writeln!(out, "  rule {:?}: {mark}", v.rule);
            for (cond, pattern, ok, value) in &v.conditions {
                let _ = writeln!(out, "    {} {cond} ~ {pattern:?} (on {value:?})", if *ok { "✓" } else { "✗" });
            }
            if v.matched && first.is_none() {
                first = Some(v.rule.clone());
            }
        }
        let d = rules.route(&m, &facts, Utc::now());
        let target = d
            .routing
            .office
            .as_deref()
            .map(|o| format!("office {o}"))
            .or(d.routing.person.as_deref().map(|p| format!("user {p}")))
            .unwrap_or_else(|| "nobody (new, for anyone with the mailbox)".into());
        let why = match &first {
            Some(r) => format!("rule {r:?} (the first that matches)"),
            None => "no rule matches: the mailbox's default".into(),
        };
        let _ = writeln!(out, "  => {why}: assign to {target}");
        if !d.keywords.is_empty() {
            let _ = writeln!(out, "     keywords: {}", d.keywords.join(" "));
        }
        if let Some(due) = d.routing.due {
            let _ = writeln!(out, "     due: {} (if it arrived now)", due.format("%Y-%m-%d %H:%M UTC"));
        }
    }
    Ok(out)
}

/// What `rules apply` did (or would do).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// Messages looked at (INBOX, trackable kinds).
    pub examined: u64,
    /// Not tracked before: now tracked.
    pub opened: u64,
    /// Still new: now assigned by a rule or the default.
    pub assigned: u64,
    /// Left alone (already assigned, taken or done; or nothing to assign).
    pub unchanged: u64,
    /// Matches per rule name (`(default)` for the mailbox's default).
    pub by_rule: std::collections::BTreeMap<String, u64>,
}

/// Re-run the rules over `mailbox`'s archived INBOX messages that are not
/// tracked yet or still `new`. With `dry_run`, nothing is written.
pub async fn rules_apply(
    cfg: &Config,
    store: &Store,
    mailbox: &str,
    dry_run: bool,
    progress: impl Fn(u64, u64),
) -> anyhow::Result<ApplyReport> {
    if cfg.mailbox(mailbox).is_none() {
        bail!("no mailbox with alias {mailbox:?} in the configuration");
    }
    let rules = Rules::compile(cfg);
    let msgs = store.messages(mailbox, "INBOX")?;
    let total = msgs.len() as u64;
    let mut rep = ApplyReport::default();
    let mut batch = Vec::new();
    let actor = std::env::var("USER").map(|u| format!("cli:{u}")).unwrap_or_else(|_| "cli".into());
    for (i, (uid, m)) in msgs.iter().enumerate() {
        progress(i as u64 + 1, total);
        let kind = m.pec_meta().map(|p| p.classification.kind).unwrap_or_default();
        if !rules.tracks(mailbox, &kind) {
            continue;
        }
        rep.examined += 1;
        let current = store.handling(mailbox, &m.hash)?;
        if current.as_ref().is_some_and(|h| h.state != super::State::New) {
            rep.unchanged += 1;
            continue;
        }
        let raw = store.get_blob(&m.hash)?;
        let d = rules.route(mailbox, &Facts::of(&raw), m.archived);
        let assigns = d.routing.office.is_some() || d.routing.person.is_some();
        if current.is_some() && !assigns {
            rep.unchanged += 1;
            continue;
        }
        *rep.by_rule.entry(d.routing.rule.clone().unwrap_or_else(|| "(default)".into())).or_default() += 1;
        if current.is_none() {
            rep.opened += 1;
        } else {
            rep.assigned += 1;
        }
        if dry_run {
            continue;
        }
        let t = Transition {
            office: d.routing.office.clone(),
            person: d.routing.person.clone(),
            rule: d.routing.rule.clone(),
            due: d.routing.due,
            ..Transition::new(Action::Open, &actor)
        };
        let a = Audit::user(&actor, None, "cli", "rules-apply").mailbox(mailbox).folder("INBOX").uids(vec![*uid]);
        batch.push((a.clone(), Change::Handle { mailbox: mailbox.to_string(), hashes: vec![m.hash.clone()], transition: t }));
        if !d.keywords.is_empty() {
            batch.push((
                a,
                Change::SetFlags {
                    mailbox: mailbox.to_string(),
                    folder: "INBOX".into(),
                    uids: vec![*uid],
                    op: FlagOp::Add,
                    flags: d.keywords.clone(),
                },
            ));
        }
        if batch.len() >= 256 {
            store.commit_batch(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.commit_batch(batch).await?;
    }
    Ok(rep)
}

/// Filters of `handling report`.
#[derive(Debug, Default, Clone)]
pub struct ReportFilter {
    pub mailbox: Option<String>,
    pub office: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl ReportFilter {
    pub fn keep(&self, r: &Row) -> bool {
        self.mailbox.as_ref().is_none_or(|m| *m == r.mailbox)
            && self.office.as_ref().is_none_or(|o| o == register::row_office(r))
            && self.since.is_none_or(|s| r.received >= s)
            && self.until.is_none_or(|u| r.received < u)
    }
}

/// The register from the journal of the archive in `data_dir`, read-only
/// (so it runs beside the daemon).
pub fn report_rows(data_dir: &Path, filter: &ReportFilter, now: DateTime<Utc>) -> anyhow::Result<Vec<Row>> {
    let journal = JournalReader::open_read_only(data_dir);
    let mut reg = Register::default();
    for rec in journal.records()? {
        reg.apply(&rec?);
    }
    Ok(reg.rows(now, |r| filter.keep(r)))
}
