//! The process-wide counters and gauges that protocol code bumps (open
//! sessions, commands, submissions, throttled logins): a small registry
//! below everything else, so `auth`, `imap` and `smtp` can count without
//! depending on [`crate::metrics`], which reads the store, the journal and
//! the status board. Depends on nothing of pecgate; `metrics` adds these to
//! every scrape.
//!
//! Everything else is computed when scraped (see `metrics`).

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// Outcomes of [`smtp_submissions`].
pub const SMTP_OUTCOMES: [&str; 4] = ["accepted", "temporary", "rejected", "refused"];

/// Open client IMAP sessions (process-wide). Protocol code increments it
/// when a session starts and decrements it when the session ends.
pub fn imap_sessions_open() -> &'static IntGauge {
    static G: OnceLock<IntGauge> = OnceLock::new();
    G.get_or_init(|| {
        IntGauge::new("pecgate_imap_sessions_open", "Client IMAP sessions currently open.")
            .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}"))
    })
}

/// Journal records the full-text index has not read yet (the indexer sets
/// it each pass; 0 when caught up).
pub fn fulltext_backlog() -> &'static IntGauge {
    static G: OnceLock<IntGauge> = OnceLock::new();
    G.get_or_init(|| {
        IntGauge::new("pecgate_fulltext_backlog_records", "Journal records the full-text index has not read yet.")
            .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}"))
    })
}

/// Messages in the full-text index.
pub fn fulltext_documents() -> &'static IntGauge {
    static G: OnceLock<IntGauge> = OnceLock::new();
    G.get_or_init(|| {
        IntGauge::new("pecgate_fulltext_documents", "Messages in the full-text index (one per mailbox holding them).")
            .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}"))
    })
}

/// Open client SMTP submission connections (process-wide), from accept
/// to close. The SMTP server holds an [`SmtpSessionGuard`] per
/// connection.
pub fn smtp_sessions_open() -> &'static IntGauge {
    static G: OnceLock<IntGauge> = OnceLock::new();
    G.get_or_init(|| {
        IntGauge::new("pecgate_smtp_sessions_open", "Client SMTP submission connections currently open.")
            .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}"))
    })
}

/// One open SMTP connection in [`smtp_sessions_open`]; dropping it
/// (however the connection task ends) releases it.
pub struct SmtpSessionGuard(());

impl SmtpSessionGuard {
    pub fn new() -> SmtpSessionGuard {
        smtp_sessions_open().inc();
        SmtpSessionGuard(())
    }
}

impl Default for SmtpSessionGuard {
    fn default() -> Self {
        SmtpSessionGuard::new()
    }
}

impl Drop for SmtpSessionGuard {
    fn drop(&mut self) {
        smtp_sessions_open().dec();
    }
}

/// Submissions by outcome: `accepted` (the provider took it),
/// `temporary` (provider unreachable, slow or 4xx: the client got 451),
/// `rejected` (the provider answered 5xx), `refused` (pecgate itself
/// refused it: no send right, unknown sender, forged From). Every
/// outcome series exists from the start, at zero.
pub fn smtp_submissions() -> &'static IntCounterVec {
    static C: OnceLock<IntCounterVec> = OnceLock::new();
    C.get_or_init(|| {
        let c = IntCounterVec::new(
            Opts::new(
                "pecgate_smtp_submissions_total",
                "SMTP submissions by outcome (accepted, temporary, rejected by the provider, refused by pecgate).",
            ),
            &["outcome"],
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}"));
        for o in SMTP_OUTCOMES {
            c.with_label_values(&[o]);
        }
        c
    })
}

/// Client commands by protocol and name (`protocol="imap"`,
/// `command="FETCH"`). Protocol code increments it per command.
pub fn commands() -> &'static IntCounterVec {
    static C: OnceLock<IntCounterVec> = OnceLock::new();
    C.get_or_init(|| {
        IntCounterVec::new(
            Opts::new("pecgate_client_commands_total", "Client commands received, by protocol and command name."),
            &["protocol", "command"],
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}"))
    })
}

/// Logins that were made to wait because of earlier failures for the
/// same user name or source address (password guessing slows down).
pub fn throttled_logins() -> &'static IntCounter {
    static C: OnceLock<IntCounter> = OnceLock::new();
    C.get_or_init(|| {
        IntCounter::new(
            "pecgate_throttled_logins_total",
            "Login attempts delayed by the throttle after earlier failures.",
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}"))
    })
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("static metric name is valid: {e}"))
}

/// The anchoring task's state (`anchor::run`).
pub struct AnchorMetrics {
    pub failures: IntCounter,
    pub last_success: IntGauge,
    pub anchored: IntGauge,
    pub unanchored: IntGauge,
}

pub fn anchor() -> &'static AnchorMetrics {
    static M: OnceLock<AnchorMetrics> = OnceLock::new();
    M.get_or_init(|| AnchorMetrics {
        failures: IntCounter::new(
            "pecgate_anchor_failures_total",
            "Attempts to time-stamp the audit chain's head that failed (TSA unreachable, refused, or a token that does not verify).",
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}")),
        last_success: gauge(
            "pecgate_anchor_last_success_timestamp_seconds",
            "When the audit chain was last anchored by the time-stamping authority (Unix time; 0: not since start).",
        ),
        anchored: gauge("pecgate_anchor_record", "The journal record last anchored by this process (0: none since start)."),
        unanchored: gauge(
            "pecgate_anchor_unanchored_records",
            "Journal records after the last anchored one (a cut among them would not be detected yet).",
        ),
    })
}

/// The expiry run's results (`retention::run`).
pub struct RetentionMetrics {
    pub expired: IntCounterVec,
    pub last_run: IntGauge,
    pub held: IntGaugeVec,
}

pub fn retention() -> &'static RetentionMetrics {
    static M: OnceLock<RetentionMetrics> = OnceLock::new();
    M.get_or_init(|| RetentionMetrics {
        expired: IntCounterVec::new(
            Opts::new("pecgate_retention_expired_messages_total", "Messages removed by the expiry run, by mailbox."),
            &["mailbox"],
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}")),
        last_run: gauge(
            "pecgate_retention_last_run_timestamp_seconds",
            "When the expiry run last completed (Unix time; 0: not since start).",
        ),
        held: IntGaugeVec::new(
            Opts::new(
                "pecgate_retention_held_messages",
                "Messages past their retention kept by a legal hold, by mailbox, as of the last expiry run.",
            ),
            &["mailbox"],
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}")),
    })
}

/// Directory logins and the directory's health (`auth`, `directory`).
pub struct DirectoryMetrics {
    /// 1 while the last conversation with the directory succeeded, 0 after
    /// one failed (unreachable, TLS, timeout, service account refused).
    pub up: IntGauge,
    /// Directory logins by result: `ok` (bound as the user), `cached` (a
    /// login verified within `[directory] cache`), `rejected`,
    /// `unavailable`.
    pub logins: IntCounterVec,
    /// Failed conversations with the directory (logins and checks).
    pub errors: IntCounter,
    /// Set when a `[directory]` is configured: the series above are
    /// exported only then (an unconfigured directory is not "down").
    pub configured: std::sync::atomic::AtomicBool,
}

pub const DIRECTORY_RESULTS: [&str; 4] = ["ok", "cached", "rejected", "unavailable"];

pub fn directory() -> &'static DirectoryMetrics {
    static M: OnceLock<DirectoryMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let logins = IntCounterVec::new(
            Opts::new("pecgate_directory_logins_total", "Logins of directory users, by result."),
            &["result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}"));
        for r in DIRECTORY_RESULTS {
            logins.with_label_values(&[r]);
        }
        DirectoryMetrics {
            up: gauge(
                "pecgate_directory_up",
                "1 if the last conversation with the LDAP directory succeeded, 0 if it failed (directory users cannot log in).",
            ),
            logins,
            errors: IntCounter::new(
                "pecgate_directory_errors_total",
                "Conversations with the LDAP directory that failed (unreachable, TLS, timeout, service account refused).",
            )
            .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}")),
            configured: std::sync::atomic::AtomicBool::new(false),
        }
    })
}

/// Several nodes on one archive (`[store] backend = "cluster"`).
pub struct ClusterMetrics {
    /// Records of the shared journal this node's index has not taken in.
    pub lag_records: IntGauge,
    /// How long it has been behind (0: caught up at the last check).
    pub lag_seconds: IntGauge,
    /// Failed calls, by system (`postgres`, `bucket`).
    pub errors: IntCounterVec,
    /// 1 while this node holds the mailbox's lease (polls it).
    pub lease_held: IntGaugeVec,
    /// Blob reads, by where they were found (`hit`: this node's copy;
    /// `miss`: the bucket).
    pub blob_cache: IntCounterVec,
}

pub fn cluster() -> &'static ClusterMetrics {
    static M: OnceLock<ClusterMetrics> = OnceLock::new();
    M.get_or_init(|| ClusterMetrics {
        lag_records: gauge(
            "pecgate_cluster_index_lag_records",
            "Records of the shared journal (PostgreSQL) this node's index has not taken in yet.",
        ),
        lag_seconds: gauge(
            "pecgate_cluster_index_lag_seconds",
            "How long this node's index has been behind the shared journal (0: caught up at the last check, every second).",
        ),
        errors: IntCounterVec::new(
            Opts::new("pecgate_cluster_errors_total", "Failed calls to the shared archive, by system (postgres, bucket)."),
            &["system"],
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}")),
        lease_held: IntGaugeVec::new(
            Opts::new("pecgate_cluster_lease_held", "1 while this node holds the mailbox's lease and polls its provider."),
            &["mailbox"],
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}")),
        blob_cache: IntCounterVec::new(
            Opts::new(
                "pecgate_cluster_blob_reads_total",
                "Blob reads on this node, by where the blob was found (hit: the node's own copy; miss: the bucket).",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric name is valid: {e}")),
    })
}
