//! The handling register: one row per tracked message — received, sender,
//! subject, rule, assigned to/when, taken by/when, done by/when, how long it
//! waited and how long handling took, deadline met or missed — and a
//! summary per office. Public offices must keep such a register of requests
//! with the times of taking in charge and of completion.
//!
//! Pure: built from journal records ([`Register::apply`], for `pecgate
//! handling report`, which reads the journal and so runs beside the daemon)
//! or from index entries ([`Row::new`], for the JSON API).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Handling, State};
use crate::pec::meta::{PecMeta, StoredPec};
use crate::store::{Event, Record};

/// One message of the register.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub mailbox: String,
    pub hash: String,
    pub received: DateTime<Utc>,
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub state: State,
    pub rule: Option<String>,
    pub office: Option<String>,
    pub person: Option<String>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub taken_by: Option<String>,
    pub taken_at: Option<DateTime<Utc>>,
    pub done_by: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
    /// Seconds from arrival to taken in charge (to now if still waiting).
    pub waiting_seconds: i64,
    /// Seconds from taken in charge to done (to now if still open).
    pub handling_seconds: Option<i64>,
    pub due: Option<DateTime<Utc>>,
    /// `met`, `missed`, `overdue` (open and past due), `open` or `none`.
    pub deadline: &'static str,
}

/// The original sender and subject of an archived message, from its PEC
/// metadata (daticert first, else the envelope's subject).
pub fn sender_subject(meta: Option<&PecMeta>) -> (Option<String>, Option<String>) {
    let d = meta.and_then(|m| m.classification.daticert.as_ref());
    let sender = d.and_then(|d| d.mittente.clone());
    let subject = d.and_then(|d| d.oggetto.clone()).or_else(|| {
        meta.and_then(|m| m.classification.subject.clone())
            .map(|s| s.strip_prefix("POSTA CERTIFICATA:").map(|x| x.trim().to_string()).unwrap_or(s))
    });
    (sender, subject)
}

type Who = (Option<String>, Option<String>);

impl Row {
    pub fn new(mailbox: &str, hash: &str, h: &Handling, who: &Who, now: DateTime<Utc>) -> Row {
        let (sender, subject) = who.clone();
        let secs = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_seconds().max(0);
        let deadline = match (h.due, h.done_at) {
            (None, _) => "none",
            (Some(due), Some(done)) if done <= due => "met",
            (Some(_), Some(_)) => "missed",
            (Some(due), None) if due < now => "overdue",
            (Some(_), None) => "open",
        };
        Row {
            mailbox: mailbox.to_string(),
            hash: hash.to_string(),
            received: h.arrived,
            sender,
            subject,
            state: h.state,
            rule: h.rule.clone(),
            office: h.office.clone(),
            person: h.person.clone(),
            assigned_at: h.assigned_at,
            taken_by: h.taken_by.clone(),
            taken_at: h.taken_at,
            done_by: h.done_by.clone(),
            done_at: h.done_at,
            waiting_seconds: secs(h.arrived, h.taken_at.unwrap_or(now)),
            handling_seconds: h.taken_at.map(|t| secs(t, h.done_at.unwrap_or(now))),
            due: h.due,
            deadline,
        }
    }
}

/// Replays journal records into every tracked message's handling (the same
/// transitions the index applies).
#[derive(Debug, Default)]
pub struct Register {
    /// (mailbox, hash) → (handling, sender and subject)
    entries: BTreeMap<(String, String), (Handling, Who)>,
    /// Sender and subject of certified messages not tracked (yet): `rules
    /// apply` may start tracking them.
    untracked: BTreeMap<(String, String), Who>,
    /// Arrival order.
    order: Vec<(String, String)>,
}

impl Register {
    pub fn apply(&mut self, r: &Record) {
        match &r.event {
            Event::Archived { mailbox, hash, duplicate: false, pec, handling: Some(routing), .. } => {
                let k = (mailbox.clone(), hash.clone());
                if !self.entries.contains_key(&k) {
                    self.order.push(k.clone());
                }
                let meta = pec.as_ref().and_then(StoredPec::meta);
                self.entries.insert(k, (Handling::open(routing, "system", r.time), sender_subject(meta)));
            }
            Event::Handled { mailbox, transition, items } => {
                for i in items {
                    let k = (mailbox.clone(), i.hash.clone());
                    let cur = self.entries.get(&k).map(|e| e.0.clone());
                    let h = Handling::apply(cur.as_ref(), transition, r.time);
                    match self.entries.get_mut(&k) {
                        Some(e) => e.0 = h,
                        None => {
                            // Tracked after the fact (`rules apply`): the
                            // metadata comes from its Archived record.
                            let who = self.untracked.remove(&k).unwrap_or_default();
                            self.order.push(k.clone());
                            self.entries.insert(k, (h, who));
                        }
                    }
                }
            }
            Event::Archived { mailbox, hash, duplicate: false, pec: Some(p), folder, .. } if folder == "INBOX" => {
                // Not tracked (yet): keep who and what in case `rules apply`
                // starts tracking it later.
                self.untracked.insert((mailbox.clone(), hash.clone()), sender_subject(p.meta()));
            }
            _ => {}
        }
    }

    /// The rows, in arrival order, that pass `keep`.
    pub fn rows(&self, now: DateTime<Utc>, keep: impl Fn(&Row) -> bool) -> Vec<Row> {
        self.order
            .iter()
            .filter_map(|k| {
                let (h, who) = self.entries.get(k)?;
                Some(Row::new(&k.0, &k.1, h, who, now))
            })
            .filter(|r| keep(r))
            .collect()
    }
}

/// Per-office figures of the register.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfficeSummary {
    pub mailbox: String,
    pub office: String,
    pub messages: usize,
    pub done: usize,
    pub overdue: usize,
    pub deadline_missed: usize,
    pub take_median_seconds: Option<i64>,
    pub take_p90_seconds: Option<i64>,
    pub done_median_seconds: Option<i64>,
    pub done_p90_seconds: Option<i64>,
}

/// The `q`-quantile (nearest rank) of `v`.
fn quantile(v: &mut [i64], q: f64) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

pub fn summary(rows: &[Row]) -> Vec<OfficeSummary> {
    let mut groups: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        let office = r.office.clone().unwrap_or_else(|| "none".into());
        groups.entry((r.mailbox.clone(), office)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((mailbox, office), rs)| {
            let mut take: Vec<i64> = rs.iter().filter(|r| r.taken_at.is_some()).map(|r| r.waiting_seconds).collect();
            let mut done: Vec<i64> = rs
                .iter()
                .filter_map(|r| r.done_at.map(|d| (d - r.received).num_seconds().max(0)))
                .collect();
            OfficeSummary {
                mailbox,
                office,
                messages: rs.len(),
                done: rs.iter().filter(|r| r.state == State::Done).count(),
                overdue: rs.iter().filter(|r| r.deadline == "overdue").count(),
                deadline_missed: rs.iter().filter(|r| r.deadline == "missed").count(),
                take_median_seconds: quantile(&mut take, 0.5),
                take_p90_seconds: quantile(&mut take, 0.9),
                done_median_seconds: quantile(&mut done, 0.5),
                done_p90_seconds: quantile(&mut done, 0.9),
            }
        })
        .collect()
}

/// `3d 4h`, `5h 12m`, `40s`.
pub fn human(secs: i64) -> String {
    let (d, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

const COLUMNS: [&str; 17] = [
    "mailbox", "received", "sender", "subject", "state", "rule", "office", "person", "assigned_at", "taken_by",
    "taken_at", "done_by", "done_at", "waiting", "handling", "due", "deadline",
];

fn t(v: &Option<DateTime<Utc>>) -> String {
    v.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

fn cells(r: &Row) -> [String; 17] {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        r.mailbox.clone(),
        t(&Some(r.received)),
        o(&r.sender),
        o(&r.subject),
        r.state.to_string(),
        o(&r.rule),
        o(&r.office),
        o(&r.person),
        t(&r.assigned_at),
        o(&r.taken_by),
        t(&r.taken_at),
        o(&r.done_by),
        t(&r.done_at),
        human(r.waiting_seconds),
        r.handling_seconds.map(human).unwrap_or_default(),
        t(&r.due),
        r.deadline.to_string(),
    ]
}

fn opt_h(v: Option<i64>) -> String {
    v.map(human).unwrap_or_else(|| "-".into())
}

fn summary_cells(s: &OfficeSummary) -> [String; 10] {
    [
        s.mailbox.clone(),
        s.office.clone(),
        s.messages.to_string(),
        s.done.to_string(),
        s.overdue.to_string(),
        s.deadline_missed.to_string(),
        opt_h(s.take_median_seconds),
        opt_h(s.take_p90_seconds),
        opt_h(s.done_median_seconds),
        opt_h(s.done_p90_seconds),
    ]
}

const SUMMARY_COLUMNS: [&str; 10] = [
    "mailbox", "office", "messages", "done", "overdue", "missed", "take p50", "take p90", "done p50", "done p90",
];

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count().min(40));
        }
    }
    let line = |out: &mut String, cs: &[String]| {
        let parts: Vec<String> = cs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c: String = if c.chars().count() > 40 { c.chars().take(39).chain(['…']).collect() } else { c.clone() };
                format!("{c:<width$}", width = w[i])
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(out, &head.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    for r in rows {
        line(out, r);
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The register in `format` (`table`, `csv`, `jsonl`, `html`).
pub fn render(rows: &[Row], format: &str) -> Result<String, String> {
    let sums = summary(rows);
    let mut out = String::new();
    match format {
        "table" => {
            let rs: Vec<Vec<String>> = rows.iter().map(|r| cells(r).to_vec()).collect();
            table(&mut out, &COLUMNS, &rs);
            out.push('\n');
            let ss: Vec<Vec<String>> = sums.iter().map(|s| summary_cells(s).to_vec()).collect();
            table(&mut out, &SUMMARY_COLUMNS, &ss);
        }
        "csv" => {
            let _ = writeln!(out, "{}", COLUMNS.join(","));
            for r in rows {
                let _ = writeln!(out, "{}", cells(r).iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
            }
        }
        "jsonl" => {
            for r in rows {
                let _ = writeln!(out, "{}", serde_json::json!({"type": "message", "row": r}));
            }
            for s in &sums {
                let _ = writeln!(out, "{}", serde_json::json!({"type": "office", "summary": s}));
            }
        }
        "html" => {
            out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Registro di gestione PEC</title>\n<style>table{border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #999;padding:2px 6px}.missed,.overdue{color:#b00}</style></head><body>\n<h1>Handling register</h1>\n<table>\n<tr>");
            for c in COLUMNS {
                let _ = write!(out, "<th>{c}</th>");
            }
            out.push_str("</tr>\n");
            for r in rows {
                let _ = write!(out, "<tr class=\"{}\">", r.deadline);
                for c in cells(r) {
                    let _ = write!(out, "<td>{}</td>", html_escape(&c));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n<h2>Per office</h2>\n<table>\n<tr>");
            for c in SUMMARY_COLUMNS {
                let _ = write!(out, "<th>{c}</th>");
            }
            out.push_str("</tr>\n");
            for s in &sums {
                out.push_str("<tr>");
                for c in summary_cells(s) {
                    let _ = write!(out, "<td>{}</td>", html_escape(&c));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n</body></html>\n");
        }
        other => return Err(format!("unknown format {other:?} (table, csv, jsonl, html)")),
    }
    Ok(out)
}

/// The office label a row counts under.
pub fn row_office(r: &Row) -> &str {
    r.office.as_deref().unwrap_or("none")
}
