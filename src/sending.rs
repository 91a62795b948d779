//! Sending limits per mailbox: how many messages its provider accepts per
//! minute, hour and day ([`SendingLimits`]), kept for everything relayed
//! through the mailbox, client submissions and campaigns alike. A provider
//! over its limit refuses with a 5xx (InfoCert: `550 … "Class Of Service" -
//! Too much traffic from this sender`), which would fail a certified notice
//! for good: the gateway keeps under the limit itself and tells a client
//! when to come back instead.
//!
//! The windows slide: a send counts against a limit for exactly the
//! window's length after it. They are kept in memory; after a restart the
//! sends found in the archive are counted again ([`Limiter::seed`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::SendingLimits;
use crate::store::{Store, StoreError};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// A send counts this much longer than its window: the provider counts
/// from when it accepted the message, a little after the gateway's count
/// (measured: the 4th of 3 a minute, sent 60 s after the 1st by the
/// gateway's clock, was 1 ms early by the provider's and refused).
const MARGIN: Duration = Duration::from_secs(2);

/// The sends of every mailbox within the longest window, by alias.
#[derive(Default)]
pub struct Limiter {
    sends: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// A send refused for now: the earliest moment it would fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub wait: Duration,
    /// The limit that is full (`per_minute`, `per_hour`, `per_day`) and its
    /// value.
    pub limit: (&'static str, u32),
}

impl Wait {
    /// A reply text: which limit, and when to retry.
    pub fn describe(&self, alias: &str) -> String {
        let secs = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        let at = chrono::Utc::now() + chrono::Duration::seconds(secs as i64);
        format!(
            "sending limit of mailbox {alias} reached ({} {}): try again in {secs} s (after {} UTC)",
            self.limit.1,
            self.limit.0.replace('_', " "),
            at.format("%H:%M:%S")
        )
    }
}

fn windows(l: &SendingLimits) -> impl Iterator<Item = (&'static str, u32, Duration)> {
    [("per_minute", l.per_minute, MINUTE), ("per_hour", l.per_hour, HOUR), ("per_day", l.per_day, DAY)]
        .into_iter()
        .filter_map(|(name, n, w)| n.map(|n| (name, n, w)))
}

/// How long until one more send fits in `sends` (sorted, oldest first).
fn wait_in(sends: &VecDeque<Instant>, l: &SendingLimits, now: Instant) -> Option<Wait> {
    let mut worst: Option<Wait> = None;
    for (name, n, window) in windows(l) {
        let window = window + MARGIN;
        let inside = sends.iter().rev().take_while(|&&t| now.saturating_duration_since(t) < window).count();
        if inside < n as usize {
            continue;
        }
        // The send that must leave the window before one more fits.
        let leaving = sends[sends.len() - n as usize];
        let wait = (leaving + window).saturating_duration_since(now);
        if worst.is_none_or(|w| wait > w.wait) {
            worst = Some(Wait { wait, limit: (name, n) });
        }
    }
    worst
}

impl Limiter {
    /// Count one send of `alias` now if it fits, else say how long to wait.
    pub fn try_acquire(&self, alias: &str, l: &SendingLimits, now: Instant) -> Result<(), Wait> {
        let mut all = self.sends.lock().unwrap_or_else(|e| e.into_inner());
        let sends = all.entry(alias.to_string()).or_default();
        while sends.front().is_some_and(|&t| now.saturating_duration_since(t) >= DAY + MARGIN) {
            sends.pop_front();
        }
        if let Some(w) = wait_in(sends, l, now) {
            return Err(w);
        }
        if windows(l).next().is_some() {
            sends.push_back(now);
        }
        Ok(())
    }

    /// [`Limiter::try_acquire`] against every node's sends: on one machine
    /// this process's count is the whole count; with several nodes the
    /// sends are counted in PostgreSQL ([`Store::count_send`]), so client
    /// submissions through any node and the campaign sender share the
    /// provider's limits as on one machine. This process's count follows
    /// (a campaign's ETA, the metrics).
    pub async fn try_acquire_shared(
        &self,
        store: &Store,
        alias: &str,
        l: &SendingLimits,
    ) -> Result<Result<(), Wait>, StoreError> {
        if windows(l).next().is_none() {
            return Ok(Ok(()));
        }
        let now = Instant::now();
        let check = |ages: &[Duration]| {
            let sends: VecDeque<Instant> = ages.iter().filter_map(|a| now.checked_sub(*a)).collect();
            wait_in(&sends, l, now).map_or(Ok(()), Err)
        };
        match store.count_send(alias, DAY + MARGIN, check).await? {
            None => Ok(self.try_acquire(alias, l, now)),
            Some((verdict, ages)) => {
                let mut all = self.sends.lock().unwrap_or_else(|e| e.into_inner());
                let sends = all.entry(alias.to_string()).or_default();
                sends.clear();
                sends.extend(ages.iter().filter_map(|a| now.checked_sub(*a)));
                if verdict.is_ok() {
                    sends.push_back(now);
                }
                Ok(verdict)
            }
        }
    }

    /// Wait until a send of `alias` fits, and count it, against every
    /// node's sends (see [`Limiter::try_acquire_shared`]); while PostgreSQL
    /// cannot be asked, nothing is sent.
    pub async fn acquire_shared(&self, store: &Store, alias: &str, l: &SendingLimits) {
        loop {
            match self.try_acquire_shared(store, alias, l).await {
                Ok(Ok(())) => return,
                Ok(Err(w)) => tokio::time::sleep(w.wait.max(Duration::from_millis(10))).await,
                Err(e) => {
                    tracing::warn!(mailbox = %alias, error = %e, "cannot count the mailbox's sends: waiting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// How long from `now` until a send of `alias` would fit (zero: now).
    pub fn next_free(&self, alias: &str, l: &SendingLimits, now: Instant) -> Duration {
        let all = self.sends.lock().unwrap_or_else(|e| e.into_inner());
        all.get(alias).and_then(|s| wait_in(s, l, now)).map(|w| w.wait).unwrap_or_default()
    }

    /// How long from `now` until `n` more sends of `alias` will have gone
    /// out, each as soon as the limits let it (the sends already counted
    /// included); `None` without rate limits. A campaign's ETA.
    pub fn time_for(&self, alias: &str, l: &SendingLimits, n: u64, now: Instant) -> Option<Duration> {
        let wins: Vec<(usize, Duration)> = windows(l).map(|(_, c, w)| (c as usize, w + MARGIN)).collect();
        let keep = wins.iter().map(|w| w.0).max()?;
        let mut times: VecDeque<Instant> = {
            let all = self.sends.lock().unwrap_or_else(|e| e.into_inner());
            all.get(alias).map(|s| s.iter().skip(s.len().saturating_sub(keep)).copied().collect()).unwrap_or_default()
        };
        let mut last = now;
        for _ in 0..n {
            let mut t = now;
            for &(c, w) in &wins {
                if times.len() >= c {
                    t = t.max(times[times.len() - c] + w);
                }
            }
            times.push_back(t);
            if times.len() > keep {
                times.pop_front();
            }
            last = t;
        }
        Some(last.saturating_duration_since(now))
    }

    /// Count sends that happened before this process started, `ago` each
    /// (from the archive), so a restart does not reopen the windows.
    pub fn seed(&self, alias: &str, ago: impl IntoIterator<Item = Duration>, now: Instant) {
        let mut all = self.sends.lock().unwrap_or_else(|e| e.into_inner());
        let sends = all.entry(alias.to_string()).or_default();
        let mut past: Vec<Instant> = ago.into_iter().filter(|d| *d < DAY).filter_map(|d| now.checked_sub(d)).collect();
        past.extend(sends.drain(..));
        past.sort_unstable();
        sends.extend(past);
    }
}

/// Checks of one message against the limits that do not depend on time:
/// recipients, and size counted once per recipient. The reply on failure.
pub fn check_message(alias: &str, l: &SendingLimits, size: usize, recipients: usize) -> Result<(), String> {
    if let Some(max) = l.max_recipients {
        if recipients > max {
            return Err(format!(
                "452 4.5.3 Too many recipients: mailbox {alias} sends to at most {max} per message\r\n"
            ));
        }
    }
    if let Some(max) = l.max_message_bytes {
        let total = size as u64 * recipients.max(1) as u64;
        if total > max {
            return Err(format!(
                "552 5.3.4 Message too big for mailbox {alias}: {size} bytes × {recipients} recipient(s) = {total} bytes, the provider accepts {max}\r\n"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_minute(n: u32) -> SendingLimits {
        SendingLimits { per_minute: Some(n), ..Default::default() }
    }

    #[test]
    fn six_a_minute_then_the_oldest_must_leave_the_window() {
        let (l, lim, t0) = (per_minute(6), Limiter::default(), Instant::now());
        for i in 0..6 {
            lim.try_acquire("p", &l, t0 + Duration::from_secs(i * 5)).unwrap();
        }
        let w = lim.try_acquire("p", &l, t0 + Duration::from_secs(30)).unwrap_err();
        assert_eq!(w.wait, Duration::from_secs(30) + MARGIN, "the first send (t0) leaves at t0+60 (and the margin)");
        assert_eq!(w.limit, ("per_minute", 6));
        assert!(lim.try_acquire("p", &l, t0 + Duration::from_secs(60)).is_err(), "not before the margin");
        lim.try_acquire("p", &l, t0 + Duration::from_secs(60) + MARGIN).unwrap();
        assert!(lim.try_acquire("p", &l, t0 + Duration::from_secs(63)).is_err(), "t0+5 still inside");
        lim.try_acquire("other", &l, t0 + Duration::from_secs(63)).unwrap();
    }

    #[test]
    fn the_longest_full_window_decides() {
        let l = SendingLimits { per_minute: Some(10), per_hour: Some(3), ..Default::default() };
        let (lim, t0) = (Limiter::default(), Instant::now());
        for i in 0..3 {
            lim.try_acquire("p", &l, t0 + Duration::from_secs(i)).unwrap();
        }
        let w = lim.try_acquire("p", &l, t0 + Duration::from_secs(120)).unwrap_err();
        assert_eq!(w.limit, ("per_hour", 3));
        assert_eq!(w.wait, Duration::from_secs(3600 - 120) + MARGIN);
        assert!(w.describe("p").contains("3 per hour"), "{}", w.describe("p"));
    }

    #[test]
    fn no_limits_count_nothing() {
        let (lim, t0) = (Limiter::default(), Instant::now());
        for _ in 0..1000 {
            lim.try_acquire("p", &SendingLimits::default(), t0).unwrap();
        }
        assert!(lim.sends.lock().unwrap()["p"].is_empty());
    }

    #[test]
    fn seeded_sends_count_after_a_restart() {
        let (l, lim) = (per_minute(2), Limiter::default());
        let now = Instant::now() + DAY;
        lim.seed("p", [Duration::from_secs(10), Duration::from_secs(50), Duration::from_secs(90_000)], now);
        let w = lim.try_acquire("p", &l, now).unwrap_err();
        assert_eq!(w.wait, Duration::from_secs(10) + MARGIN, "the send 50 s ago leaves in 10 s");
        assert_eq!(lim.next_free("p", &l, now), Duration::from_secs(10) + MARGIN);
    }

    #[test]
    fn time_for_follows_the_windows_as_the_sender_will() {
        let (l, lim, t0) = (per_minute(6), Limiter::default(), Instant::now());
        assert_eq!(lim.time_for("p", &SendingLimits::default(), 10, t0), None);
        assert_eq!(lim.time_for("p", &l, 6, t0), Some(Duration::ZERO), "six at once");
        assert_eq!(lim.time_for("p", &l, 13, t0), Some(2 * (MINUTE + MARGIN)), "then six a window");
        for _ in 0..6 {
            lim.try_acquire("p", &l, t0).unwrap();
        }
        // Six gone at t0: the next seven go at t0+62 (six) and t0+124.
        assert_eq!(
            lim.time_for("p", &l, 7, t0 + Duration::from_secs(10)),
            Some(2 * (MINUTE + MARGIN) - Duration::from_secs(10))
        );
        let both = SendingLimits { per_minute: Some(6), per_hour: Some(8), ..Default::default() };
        assert_eq!(lim.time_for("p", &both, 3, t0), Some(HOUR + MARGIN), "the hour's 8 are used after two more");
    }

    #[test]
    fn recipients_and_size_counted_per_recipient() {
        let l = SendingLimits { max_recipients: Some(500), max_message_bytes: Some(100_000_000), ..Default::default() };
        assert!(check_message("p", &l, 1000, 500).is_ok());
        assert!(check_message("p", &l, 1000, 501).unwrap_err().starts_with("452 4.5.3"));
        assert!(check_message("p", &l, 40_000_000, 2).is_ok());
        let e = check_message("p", &l, 40_000_000, 3).unwrap_err();
        assert!(e.starts_with("552 5.3.4") && e.contains("120000000"), "{e}");
    }
}
