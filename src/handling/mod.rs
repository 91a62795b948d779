//! Handling: read is not handled. Each incoming certified message goes
//! `new` → `assigned` (to an office or a person) → `taken` (in charge, by one
//! person) → `done`; `reopen` brings it back. Routing rules assign it on
//! arrival ([`rules`]); people move it on from their mail client (IMAP
//! folders and keywords); every step is a journal record, so the state is
//! rebuilt from the journal like everything else in the index.
//!
//! This module is pure (the state machine [`Handling`], the routing rules,
//! the register's arithmetic) but for [`commands`], the command line's
//! side. The store applies transitions; the IMAP server offers them as
//! folders.

pub mod commands;
pub mod register;
pub mod rules;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a message is in its handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    New,
    Assigned,
    Taken,
    Done,
}

impl State {
    pub const ALL: [State; 4] = [State::New, State::Assigned, State::Taken, State::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::Assigned => "assigned",
            State::Taken => "taken",
            State::Done => "done",
        }
    }

    /// One byte for index keys.
    pub fn code(self) -> u8 {
        match self {
            State::New => b'n',
            State::Assigned => b'a',
            State::Taken => b't',
            State::Done => b'd',
        }
    }

    /// The keyword a client sees for this state.
    pub fn keyword(self) -> &'static str {
        match self {
            State::New => KW_NEW,
            State::Assigned => KW_ASSIGNED,
            State::Taken => KW_TAKEN,
            State::Done => KW_DONE,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const KW_NEW: &str = "$PecNew";
pub const KW_ASSIGNED: &str = "$PecAssigned";
pub const KW_TAKEN: &str = "$PecTaken";
pub const KW_DONE: &str = "$PecDone";
/// Past its deadline and not done (also used for sent messages without a
/// delivery receipt in time).
pub const KW_OVERDUE: &str = "$PecOverdue";

/// The handling keywords a client may set or clear (the others are
/// computed).
pub fn is_settable_keyword(flag: &str) -> bool {
    flag.eq_ignore_ascii_case(KW_TAKEN) || flag.eq_ignore_ascii_case(KW_DONE)
}

/// What somebody (or a rule) does to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Start tracking a message (rules, on arrival or `rules apply`).
    Open,
    /// Assign to an office or a person.
    Assign,
    /// Take in charge.
    Take,
    /// Complete.
    Done,
    /// Back to be handled: a done message, or a taken one given up.
    Reopen,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open => "open",
            Action::Assign => "assign",
            Action::Take => "take",
            Action::Done => "done",
            Action::Reopen => "reopen",
        }
    }
}

/// What the routing rules decided for a message on arrival.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
}

/// A transition request: the action, by whom, and its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub action: Action,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// Set by `Open` (and a rule re-run): the rule and deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Transition {
    pub fn new(action: Action, actor: &str) -> Transition {
        Transition { action, actor: actor.into(), office: None, person: None, rule: None, due: None, note: None }
    }
}

/// Why a transition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("already taken in charge by {0}")]
    TakenBy(String),
    #[error("already done (by {0}); reopen it first")]
    AlreadyDone(String),
    #[error("not a message whose handling is tracked")]
    NotTracked,
}

/// The handling of one message: its state and the history that the register
/// reports (the last assignment, taking and completion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handling {
    pub state: State,
    /// Its UID in the handling views: a per-mailbox counter renewed at
    /// every transition, so a message entering a view always comes after
    /// everything a client has seen there (IMAP UIDs only grow).
    #[serde(default)]
    pub vuid: u32,
    /// When handling started (the message's arrival in the archive).
    pub arrived: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
}

impl Handling {
    /// A message starting its handling at `at` with what the rules decided.
    pub fn open(routing: &Routing, actor: &str, at: DateTime<Utc>) -> Handling {
        let assigned = routing.office.is_some() || routing.person.is_some();
        Handling {
            state: if assigned { State::Assigned } else { State::New },
            vuid: 0,
            arrived: at,
            rule: routing.rule.clone(),
            office: routing.office.clone(),
            person: routing.person.clone(),
            assigned_by: assigned.then(|| actor.to_string()),
            assigned_at: assigned.then_some(at),
            taken_by: None,
            taken_at: None,
            done_by: None,
            done_at: None,
            due: routing.due,
        }
    }

    fn is_assigned(&self) -> bool {
        self.office.is_some() || self.person.is_some()
    }

    /// Is `t` allowed on a message in this state? `Ok(false)`: allowed but
    /// changes nothing (taking what one already holds).
    pub fn check(current: Option<&Handling>, t: &Transition) -> Result<bool, Refusal> {
        let Some(h) = current else {
            return if t.action == Action::Open { Ok(true) } else { Err(Refusal::NotTracked) };
        };
        let by_other = |who: &Option<String>| who.as_deref().is_some_and(|w| w != t.actor);
        match t.action {
            // Re-running rules over a message only touches still-new ones.
            Action::Open => Ok(h.state == State::New && (t.office.is_some() || t.person.is_some())),
            Action::Assign => Ok(h.state != State::Assigned || h.office != t.office || h.person != t.person),
            Action::Take => match h.state {
                State::Taken if by_other(&h.taken_by) => Err(Refusal::TakenBy(h.taken_by.clone().unwrap_or_default())),
                State::Taken => Ok(false),
                State::Done => Err(Refusal::AlreadyDone(h.done_by.clone().unwrap_or_default())),
                _ => Ok(true),
            },
            Action::Done => match h.state {
                State::Taken if by_other(&h.taken_by) => Err(Refusal::TakenBy(h.taken_by.clone().unwrap_or_default())),
                State::Done => Ok(false),
                _ => Ok(true),
            },
            Action::Reopen => match h.state {
                State::Taken if by_other(&h.taken_by) => Err(Refusal::TakenBy(h.taken_by.clone().unwrap_or_default())),
                State::Taken | State::Done => Ok(true),
                _ => Ok(false),
            },
        }
    }

    /// The state after `t` at `at` (already checked; applying it again
    /// gives the same result, so a journal replay is exact).
    pub fn apply(current: Option<&Handling>, t: &Transition, at: DateTime<Utc>) -> Handling {
        let mut h = match current {
            Some(h) => h.clone(),
            None => Handling::open(&Routing::default(), &t.actor, at),
        };
        match t.action {
            Action::Open => {
                if current.is_none() || h.state == State::New {
                    let routing = Routing { rule: t.rule.clone(), office: t.office.clone(), person: t.person.clone(), due: t.due };
                    let arrived = h.arrived;
                    h = Handling::open(&routing, &t.actor, at);
                    h.arrived = arrived;
                }
            }
            Action::Assign => {
                h.office = t.office.clone();
                h.person = t.person.clone();
                h.assigned_by = Some(t.actor.clone());
                h.assigned_at = Some(at);
                h.taken_by = None;
                h.taken_at = None;
                h.done_by = None;
                h.done_at = None;
                h.state = if h.is_assigned() { State::Assigned } else { State::New };
            }
            Action::Take => {
                if h.state != State::Taken {
                    h.state = State::Taken;
                    h.taken_by = Some(t.actor.clone());
                    h.taken_at = Some(at);
                }
            }
            Action::Done => {
                if h.state != State::Done {
                    if h.taken_by.is_none() {
                        // Completed without an explicit take: the same
                        // person took it in charge at that moment.
                        h.taken_by = Some(t.actor.clone());
                        h.taken_at = Some(at);
                    }
                    h.state = State::Done;
                    h.done_by = Some(t.actor.clone());
                    h.done_at = Some(at);
                }
            }
            Action::Reopen => {
                if matches!(h.state, State::Taken | State::Done) {
                    h.taken_by = None;
                    h.taken_at = None;
                    h.done_by = None;
                    h.done_at = None;
                    h.state = if h.is_assigned() { State::Assigned } else { State::New };
                }
            }
        }
        h
    }

    /// Past its deadline at `now` and not done.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.state != State::Done && self.due.is_some_and(|d| d < now)
    }

    /// The computed keywords: the state's, and `$PecOverdue`.
    pub fn keywords(&self, now: DateTime<Utc>) -> Vec<&'static str> {
        let mut k = vec![self.state.keyword()];
        if self.is_overdue(now) {
            k.push(KW_OVERDUE);
        }
        k
    }

    /// Is the message for `user` (directly, or through one of `offices`)?
    pub fn is_for(&self, user: &str, offices: &[&str]) -> bool {
        self.person.as_deref() == Some(user) || self.office.as_deref().is_some_and(|o| offices.contains(&o))
    }
}

/// "Now" for deadlines and waiting times: the clock, moved by
/// `TEST_PECGATE_CLOCK_OFFSET` seconds when that variable is set (tests
/// make a message overdue without waiting 30 days; never set it in
/// production). Not `PECGATE_*`: those are configuration overrides.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    match std::env::var("TEST_PECGATE_CLOCK_OFFSET").ok().and_then(|v| v.trim().parse::<i64>().ok()) {
        Some(secs) => t + chrono::Duration::seconds(secs),
        None => t,
    }
}

/// The office label of a message (`none` when not assigned to an office).
pub fn office_label(h: &Handling) -> &str {
    h.office.as_deref().unwrap_or("none")
}

/// What the metrics show of one office (or `none`) of one mailbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OfficeStats {
    /// Messages by state, in [`State::ALL`] order.
    pub by_state: [u64; 4],
    /// Age in seconds of the oldest message not taken yet.
    pub oldest_waiting: f64,
    /// Past their deadline and not done.
    pub overdue: u64,
    /// Seconds from arrival to taken, of every taken message.
    pub to_take: Vec<f64>,
    /// Seconds from arrival to done, of every done message.
    pub to_done: Vec<f64>,
}

/// Per-office statistics of a mailbox's tracked messages at `now`.
pub fn stats<'a>(items: impl IntoIterator<Item = &'a Handling>, now: DateTime<Utc>) -> std::collections::BTreeMap<String, OfficeStats> {
    let secs = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds().max(0) as f64 / 1e3;
    let mut out: std::collections::BTreeMap<String, OfficeStats> = std::collections::BTreeMap::new();
    for h in items {
        let s = out.entry(office_label(h).to_string()).or_default();
        let i = State::ALL.iter().position(|x| *x == h.state).unwrap_or(0);
        s.by_state[i] += 1;
        if matches!(h.state, State::New | State::Assigned) {
            s.oldest_waiting = s.oldest_waiting.max(secs(h.arrived, now));
        }
        if h.is_overdue(now) {
            s.overdue += 1;
        }
        if let Some(t) = h.taken_at {
            s.to_take.push(secs(h.arrived, t));
        }
        if let Some(t) = h.done_at {
            s.to_done.push(secs(h.arrived, t));
        }
    }
    out
}

/// Which handling view a virtual folder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ViewKind {
    /// New, or assigned to me or my offices, and not taken.
    ToHandle,
    /// Taken by me, not done.
    Mine,
    /// Assigned to the office, not done.
    Office(String),
    Done,
}

impl ViewKind {
    /// IMAP leaf name under the mailbox alias.
    pub fn leaf(&self) -> String {
        match self {
            ViewKind::ToHandle => "To handle".into(),
            ViewKind::Mine => "Mine".into(),
            ViewKind::Office(o) => format!("Offices/{o}"),
            ViewKind::Done => "Done".into(),
        }
    }

    /// The states a message of this view can be in (the index is scanned
    /// by state).
    pub fn states(&self) -> &'static [State] {
        match self {
            ViewKind::ToHandle => &[State::New, State::Assigned],
            ViewKind::Mine => &[State::Taken],
            ViewKind::Office(_) => &[State::Assigned, State::Taken],
            ViewKind::Done => &[State::Done],
        }
    }

    /// Does `h` belong in this view for `user`, member of `offices`?
    pub fn shows(&self, h: &Handling, user: &str, offices: &[&str]) -> bool {
        match self {
            ViewKind::ToHandle => match h.state {
                State::New => !h.is_assigned() || h.is_for(user, offices),
                State::Assigned => h.is_for(user, offices),
                _ => false,
            },
            ViewKind::Mine => h.state == State::Taken && h.taken_by.as_deref() == Some(user),
            ViewKind::Office(o) => {
                matches!(h.state, State::Assigned | State::Taken) && h.office.as_deref() == Some(o.as_str())
            }
            ViewKind::Done => h.state == State::Done,
        }
    }

    /// The transition that dropping a message into this view means.
    pub fn transition(&self, actor: &str) -> Transition {
        match self {
            ViewKind::ToHandle => Transition::new(Action::Reopen, actor),
            ViewKind::Mine => Transition::new(Action::Take, actor),
            ViewKind::Office(o) => Transition { office: Some(o.clone()), ..Transition::new(Action::Assign, actor) },
            ViewKind::Done => Transition::new(Action::Done, actor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn assigned() -> Handling {
        Handling::open(&Routing { office: Some("tributi".into()), ..Default::default() }, "system", t0())
    }

    #[test]
    fn first_taker_wins() {
        let h = assigned();
        assert_eq!(h.state, State::Assigned);
        let take_a = Transition::new(Action::Take, "a");
        assert_eq!(Handling::check(Some(&h), &take_a), Ok(true));
        let h = Handling::apply(Some(&h), &take_a, t0());
        assert_eq!(h.taken_by.as_deref(), Some("a"));
        let take_b = Transition::new(Action::Take, "b");
        assert_eq!(Handling::check(Some(&h), &take_b), Err(Refusal::TakenBy("a".into())));
        assert_eq!(Handling::check(Some(&h), &take_a), Ok(false));
        assert!(Handling::check(Some(&h), &Transition::new(Action::Done, "b")).is_err());
    }

    #[test]
    fn done_and_reopen() {
        let h = Handling::apply(Some(&assigned()), &Transition::new(Action::Done, "a"), t0());
        assert_eq!((h.state, h.taken_by.as_deref(), h.done_by.as_deref()), (State::Done, Some("a"), Some("a")));
        assert!(matches!(Handling::check(Some(&h), &Transition::new(Action::Take, "b")), Err(Refusal::AlreadyDone(_))));
        let h = Handling::apply(Some(&h), &Transition::new(Action::Reopen, "b"), t0());
        assert_eq!(h.state, State::Assigned);
        assert!(h.done_by.is_none() && h.taken_by.is_none());
    }

    #[test]
    fn views() {
        let h = assigned();
        assert!(ViewKind::ToHandle.shows(&h, "a", &["tributi"]));
        assert!(!ViewKind::ToHandle.shows(&h, "c", &["anagrafe"]));
        let new = Handling::open(&Routing::default(), "system", t0());
        assert!(ViewKind::ToHandle.shows(&new, "c", &[]));
        let taken = Handling::apply(Some(&h), &Transition::new(Action::Take, "a"), t0());
        assert!(!ViewKind::ToHandle.shows(&taken, "a", &["tributi"]));
        assert!(ViewKind::Mine.shows(&taken, "a", &[]));
        assert!(!ViewKind::Mine.shows(&taken, "b", &[]));
        assert!(ViewKind::Office("tributi".into()).shows(&taken, "x", &[]));
    }

    #[test]
    fn overdue() {
        let mut h = assigned();
        h.due = Some(t0() + chrono::Duration::days(30));
        assert!(!h.is_overdue(t0() + chrono::Duration::days(29)));
        assert!(h.is_overdue(t0() + chrono::Duration::days(31)));
        assert!(h.keywords(t0() + chrono::Duration::days(31)).contains(&KW_OVERDUE));
        let done = Handling::apply(Some(&h), &Transition::new(Action::Done, "a"), t0());
        assert!(!done.is_overdue(t0() + chrono::Duration::days(31)));
    }
}
