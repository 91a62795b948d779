//! What bulk "campaigns" of certified notices are tested against: a
//! provider that limits how fast one sender may submit, thousands of
//! recipients on other providers whose fate is scripted by address, a
//! connection that closes right after the `250` (did it send or not?), and
//! a record of everything the simulator accepted or refused, for tests that
//! check "each notice exactly once".
//!
//! Everything here is off unless the simulator's configuration says
//! otherwise; the pure parts (patterns, validation, the sliding windows)
//! are tested in `tests.rs` without a network.
//!
//! ```toml
//! sender_limit = { per_minute = 6, per_hour = 0, per_day = 0 }
//! drop_after_accept = 0.0
//! record = "/tmp/sim-record.jsonl"
//!
//! [[remote]]
//! domain = "cittadini.sim"
//! pec = true
//! [[remote.rule]]
//! pattern = "pieno*"
//! outcome = "full"
//! delay = "2s"
//! [[remote.rule]]
//! pattern = "*"
//! outcome = "delivered"
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The keys of the simulator's configuration that belong to [`Campaign`]
/// (the rest is [`super::SimConfig`]).
pub const KEYS: [&str; 4] = ["sender_limit", "remote", "drop_after_accept", "record"];

/// The campaign part of `sim-provider`'s configuration (TOML, top level
/// beside [`super::SimConfig`]'s keys). Every default keeps the simulator
/// as it was without them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// Submissions one authenticated sender may make, like InfoCert
    /// Legalmail's "Class Of Service": over the limit, `MAIL FROM` is
    /// refused with `550 5.7.1 <addr>: "Class Of Service" - Too much
    /// traffic from this sender`. Absent: unlimited.
    #[serde(default)]
    pub sender_limit: SenderLimit,
    /// Recipient domains of other providers (no simulated mailbox): what
    /// happens to each recipient is scripted by its address.
    #[serde(default, rename = "remote")]
    pub remotes: Vec<RemoteDomain>,
    /// Fraction (0..1) of accepted submissions after whose `250` the
    /// connection is closed at once, without waiting for `QUIT`: the
    /// submission is processed as usual, but the client cannot tell
    /// whether it was sent. 0: never.
    #[serde(default)]
    pub drop_after_accept: f64,
    /// Append one JSON line per accepted submission (written before its
    /// `250`) and per refusal to this file; see [`Recorder`]. Absent: no
    /// record.
    #[serde(default)]
    pub record: Option<PathBuf>,
}

/// `sender_limit`: accepted submissions per authenticated sender within
/// the last minute, hour and day (sliding windows). 0: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderLimit {
    #[serde(default)]
    pub per_minute: u32,
    #[serde(default)]
    pub per_hour: u32,
    #[serde(default)]
    pub per_day: u32,
}

/// `[[remote]]`: a recipient domain of another provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteDomain {
    /// The domain (not one of the simulator's own `domains`).
    pub domain: String,
    /// `true`: a PEC domain, its recipients are certified and get the
    /// outcome of their rule. `false`: ordinary e-mail: as a real provider
    /// does for non-certified recipients, the sender gets the acceptance
    /// receipt only, never a delivery receipt or error (rules may then only
    /// set `drop`).
    #[serde(default = "yes")]
    pub pec: bool,
    /// `[[remote.rule]]`, tried in order: the first whose pattern matches
    /// decides. An address no rule matches is delivered (after the
    /// simulator's `receipt_delay`).
    #[serde(default, rename = "rule")]
    pub rules: Vec<RemoteRuleConfig>,
}

fn yes() -> bool {
    true
}

/// `[[remote.rule]]`: the outcome for the addresses a pattern matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteRuleConfig {
    /// A glob: `*` any run of characters, `?` one character, anything else
    /// itself (ASCII case-insensitive). Without `@` it is matched against
    /// the recipient's local part (`pieno*`), with `@` against the whole
    /// address (`*.rossi@cittadini.sim`).
    pub pattern: String,
    /// `delivered` (delivery receipt), `full` (non-delivery notice "5.2.2 -
    /// Casella piena"), `unknown` (non-delivery notice "5.1.1 - Utente non
    /// riconosciuto"), `late` (no delivery receipt; the non-delivery
    /// warning `preavviso-errore-consegna` instead), `full-once` (full the
    /// first time an address is sent to, delivered after: the citizen
    /// emptied the mailbox). Default `delivered`.
    #[serde(default)]
    pub outcome: Option<String>,
    /// Wait before that receipt (humantime, e.g. `"2s"`); default the
    /// simulator's `receipt_delay`.
    #[serde(default, with = "humantime_serde")]
    pub delay: Option<Duration>,
    /// Close the connection right after the `250` to DATA (see
    /// `drop_after_accept`) when a submission has a recipient this rule
    /// decides; the submission is processed as usual.
    #[serde(default)]
    pub drop: bool,
    /// Wait this long before the `250` to DATA (humantime; a slow
    /// provider) when a submission has a recipient this rule decides; the
    /// submission is recorded and processed as usual.
    #[serde(default, with = "humantime_serde")]
    pub hold: Option<Duration>,
}

/// What a remote PEC recipient's provider does with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivery receipt (`avvenuta-consegna`).
    Delivered,
    /// Non-delivery notice "5.2.2 - Casella piena".
    Full,
    /// Non-delivery notice "5.1.1 - Utente non riconosciuto".
    Unknown,
    /// No delivery receipt; a non-delivery warning (`preavviso-errore-consegna`).
    Late,
    /// `Full` for an address's first submission, `Delivered` after
    /// (decided by [`Script::route`]: never in a [`Dest`]).
    FullOnce,
}

impl Outcome {
    const ALL: [Outcome; 5] = [Outcome::Delivered, Outcome::Full, Outcome::Unknown, Outcome::Late, Outcome::FullOnce];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Full => "full",
            Outcome::Unknown => "unknown",
            Outcome::Late => "late",
            Outcome::FullOnce => "full-once",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Where one recipient of a submission stands, as the record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// On one of the simulator's own `domains`: today's behaviour (its
    /// simulated mailbox, or 5.1.1 when it has none).
    Own,
    /// Not certified: the simulator's remote with `pec = false`, or any
    /// other domain. Acceptance receipt only.
    NotPec,
    /// On a remote PEC domain: the outcome its rule scripts, after `delay`
    /// (`None`: the simulator's `receipt_delay`).
    Remote { outcome: Outcome, delay: Option<Duration> },
}

impl Dest {
    /// The name in the record's `outcomes`.
    pub fn label(&self) -> &'static str {
        match self {
            Dest::Own => "own-mailbox",
            Dest::NotPec => "not-pec",
            Dest::Remote { outcome, .. } => outcome.as_str(),
        }
    }

    /// Is the recipient certified (`destinatari tipo="certificato"`)?
    pub fn certified(&self) -> bool {
        !matches!(self, Dest::NotPec)
    }
}

/// A validated `[[remote.rule]]`.
#[derive(Debug, Clone)]
struct Rule {
    /// Lower case.
    pattern: String,
    /// The pattern holds `@`: matched against the whole address.
    whole_address: bool,
    outcome: Outcome,
    delay: Option<Duration>,
    drop: bool,
    hold: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Remote {
    /// Lower case.
    domain: String,
    pec: bool,
    rules: Vec<Rule>,
}

/// The campaign settings, validated: what the simulator runs with.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub sender_limit: SenderLimit,
    remotes: Vec<Remote>,
    pub drop_after_accept: f64,
    pub record: Option<PathBuf>,
    /// The addresses a `full-once` rule has answered full (lower case).
    full_once: Arc<Mutex<HashSet<String>>>,
}

/// Does `text` match the glob `pattern` (`*`, `?`; ASCII case-insensitive)?
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and where in `text` it started matching: on a
    // mismatch, let it take one more character and try again.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Why `pattern` is not a usable rule pattern for `domain`, if it is not.
fn check_pattern(pattern: &str, domain: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("is empty (use \"*\" for every address)".into());
    }
    if let Some(c) = pattern.chars().find(|c| c.is_whitespace() || c.is_control() || "[]{}\\<>\",;".contains(*c)) {
        return Err(format!("{c:?} is not allowed: only `*`, `?` and address characters"));
    }
    match pattern.split_once('@') {
        None => Ok(()),
        Some((_, d)) if d.contains('@') => Err("holds more than one `@`".into()),
        Some(("", _)) => Err("has nothing before `@`".into()),
        Some((_, d)) if !glob_match(d, domain) => Err(format!("can never match an address of {domain}")),
        Some(_) => Ok(()),
    }
}

impl Campaign {
    /// Validate against the simulator's own `domains`. The message names
    /// the configuration key at fault.
    pub fn compile(&self, own_domains: &[String]) -> Result<Script, String> {
        if !(0.0..=1.0).contains(&self.drop_after_accept) {
            return Err("drop_after_accept: must be between 0 and 1".into());
        }
        let mut remotes: Vec<Remote> = Vec::new();
        for (i, r) in self.remotes.iter().enumerate() {
            let domain = r.domain.trim().to_ascii_lowercase();
            let at = format!("remote[{i}] ({:?})", r.domain);
            if domain.is_empty() || domain.contains(|c: char| c == '@' || c.is_whitespace()) {
                return Err(format!("{at}: domain: not a domain name"));
            }
            if own_domains.iter().any(|d| d.eq_ignore_ascii_case(&domain)) {
                return Err(format!("{at}: domain: is one of the simulator's own domains"));
            }
            if remotes.iter().any(|o| o.domain == domain) {
                return Err(format!("{at}: domain: given twice"));
            }
            let mut rules = Vec::new();
            for (j, rule) in r.rules.iter().enumerate() {
                let at = format!("{at}: rule[{j}] ({:?})", rule.pattern);
                check_pattern(&rule.pattern, &domain).map_err(|e| format!("{at}: pattern: {e}"))?;
                let outcome = match rule.outcome.as_deref() {
                    None => Outcome::Delivered,
                    Some(o) => Outcome::parse(o).ok_or_else(|| {
                        let names: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
                        let hint = if o == "drop" { " (to close the connection, write drop = true)" } else { "" };
                        format!("{at}: outcome: {o:?} is not one of {}{hint}", names.join(", "))
                    })?,
                };
                if !r.pec && (outcome != Outcome::Delivered || rule.delay.is_some()) {
                    return Err(format!(
                        "{at}: outcome/delay: {domain} has pec = false: its recipients get no delivery receipt, so a rule may only set drop"
                    ));
                }
                rules.push(Rule {
                    pattern: rule.pattern.to_ascii_lowercase(),
                    whole_address: rule.pattern.contains('@'),
                    outcome,
                    delay: rule.delay,
                    drop: rule.drop,
                    hold: rule.hold,
                });
            }
            remotes.push(Remote { domain, pec: r.pec, rules });
        }
        Ok(Script {
            sender_limit: self.sender_limit,
            remotes,
            drop_after_accept: self.drop_after_accept,
            record: self.record.clone(),
            full_once: Arc::default(),
        })
    }
}

impl Script {
    /// The remote domain of `address` and the first of its rules that
    /// matches it. `None`: not a remote domain's address.
    fn rule(&self, address: &str) -> Option<(&Remote, Option<&Rule>)> {
        let (local, domain) = address.rsplit_once('@')?;
        let remote = self.remotes.iter().find(|r| r.domain.eq_ignore_ascii_case(domain))?;
        let rule = remote.rules.iter().find(|r| glob_match(&r.pattern, if r.whole_address { address } else { local }));
        Some((remote, rule))
    }

    /// How long the rule deciding `address` holds the `250` to DATA.
    pub fn hold(&self, address: &str) -> Option<Duration> {
        self.rule(address)?.1.and_then(|r| r.hold)
    }

    /// A recipient on a remote domain: what happens to it, and whether its
    /// rule closes the connection after the `250`. `None`: not a remote
    /// domain's address.
    pub fn route(&self, address: &str) -> Option<(Dest, bool)> {
        let (remote, rule) = self.rule(address)?;
        let drop = rule.is_some_and(|r| r.drop);
        if !remote.pec {
            return Some((Dest::NotPec, drop));
        }
        let dest = match rule {
            Some(r) if r.outcome == Outcome::FullOnce => {
                let first = self.full_once.lock().unwrap_or_else(|e| e.into_inner()).insert(address.to_ascii_lowercase());
                Dest::Remote { outcome: if first { Outcome::Full } else { Outcome::Delivered }, delay: r.delay }
            }
            Some(r) => Dest::Remote { outcome: r.outcome, delay: r.delay },
            None => Dest::Remote { outcome: Outcome::Delivered, delay: None },
        };
        Some((dest, drop))
    }
}

/// `sender_limit` at work: the times of each sender's accepted submissions
/// over the longest configured window.
///
/// HYPOTHESIS: like a provider's per-sender class of service, the count is
/// of accepted submissions and is checked at `MAIL FROM`; two sessions of
/// one sender past `MAIL FROM` at the same moment can both still be
/// accepted (one over the limit at most per extra session).
pub struct RateLimiter {
    /// (window, limit, name) for each limit that is not 0.
    windows: Vec<(Duration, u32, &'static str)>,
    /// Sender (lower case) → when its submissions were accepted, oldest
    /// first, none older than the longest window.
    seen: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(l: &SenderLimit) -> RateLimiter {
        let all = [
            (Duration::from_secs(60), l.per_minute, "minute"),
            (Duration::from_secs(3600), l.per_hour, "hour"),
            (Duration::from_secs(86400), l.per_day, "day"),
        ];
        RateLimiter { windows: all.into_iter().filter(|w| w.1 > 0).collect(), seen: Mutex::default() }
    }

    fn longest(&self) -> Duration {
        self.windows.iter().map(|w| w.0).max().unwrap_or_default()
    }

    /// `None` if `sender` may submit at `now`; else the name of the window
    /// (`minute`, `hour`, `day`) it has used up.
    pub fn over(&self, sender: &str, now: Instant) -> Option<&'static str> {
        if self.windows.is_empty() {
            return None;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let times = seen.get_mut(&sender.to_ascii_lowercase())?;
        let longest = self.longest();
        while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= longest) {
            times.pop_front();
        }
        self.windows
            .iter()
            .find(|(window, limit, _)| {
                times.iter().filter(|t| now.saturating_duration_since(**t) < *window).count() >= *limit as usize
            })
            .map(|w| w.2)
    }

    /// `sender` had a submission accepted at `now`.
    pub fn note(&self, sender: &str, now: Instant) {
        if self.windows.is_empty() {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.entry(sender.to_ascii_lowercase()).or_default().push_back(now);
    }
}

/// The reply refusing a sender over its limit, in InfoCert Legalmail's words.
pub fn too_much_traffic(mail_from: &str) -> String {
    format!("550 5.7.1 <{mail_from}>: \"Class Of Service\" - Too much traffic from this sender\r\n")
}

/// `record`: the JSON-lines file of what the simulator did. Each line is
/// written with one `write` on a file opened for appending, under a mutex,
/// so lines stay whole with any number of sessions.
///
/// * accepted submission: `{"id", "at", "sender", "message_id", "recipients",
///   "outcomes": {address: "delivered|full|unknown|late|not-pec|own-mailbox"},
///   "dropped"}`, plus `"non_accettazione": reason` when the provider will
///   answer with a non-acceptance (then `outcomes` is empty: nothing goes to
///   the recipients);
/// * refusal: `{"refused": "rate", "sender", "at"}`.
pub struct Recorder {
    path: PathBuf,
    file: Mutex<File>,
}

impl Recorder {
    pub fn open(path: &Path) -> std::io::Result<Recorder> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Recorder { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `line` (a JSON object) and a newline.
    pub fn write(&self, line: &serde_json::Value) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&bytes)?;
        file.flush()
    }
}

/// What the simulator did since it started, for the log.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub non_accettazione: AtomicU64,
    pub refused_rate: AtomicU64,
    pub dropped: AtomicU64,
    pub own_mailbox: AtomicU64,
    pub not_pec: AtomicU64,
    pub delivered: AtomicU64,
    pub full: AtomicU64,
    pub unknown: AtomicU64,
    pub late: AtomicU64,
}

impl Counters {
    pub fn count(&self, dest: &Dest) {
        let c = match dest {
            Dest::Own => &self.own_mailbox,
            Dest::NotPec => &self.not_pec,
            Dest::Remote { outcome: Outcome::Delivered, .. } => &self.delivered,
            Dest::Remote { outcome: Outcome::Full | Outcome::FullOnce, .. } => &self.full,
            Dest::Remote { outcome: Outcome::Unknown, .. } => &self.unknown,
            Dest::Remote { outcome: Outcome::Late, .. } => &self.late,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Log the totals (one line, one field each).
    pub fn log(&self, what: &str) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            accepted = g(&self.accepted),
            non_accettazione = g(&self.non_accettazione),
            refused_rate = g(&self.refused_rate),
            dropped = g(&self.dropped),
            own_mailbox = g(&self.own_mailbox),
            not_pec = g(&self.not_pec),
            delivered = g(&self.delivered),
            full = g(&self.full),
            unknown = g(&self.unknown),
            late = g(&self.late),
            "simulator counters ({what})"
        );
    }
}
