//! Typed settings: a TOML file plus `PECGATE_*` environment overrides.
//!
//! Loading has two steps. [`load`] deserialises (unknown keys, wrong types and
//! bad values are refused by serde, naming the key), then [`Config::validate`]
//! checks everything that needs more than one key or the filesystem and
//! returns *every* problem, each with the key that causes it, so an
//! administrator can fix a file in one go (`pecgate check-config`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod directory;
mod rules;

pub use directory::{ldap_authority, DirectoryConfig, DirectoryGroup};
pub use rules::{MatchConfig, OfficeConfig, RuleConfig, DATICERT_FIELDS};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    /// PEC mailboxes to archive, one `[[mailbox]]` table each.
    #[serde(default, rename = "mailbox")]
    pub mailboxes: Vec<MailboxConfig>,
    #[serde(default)]
    pub pec: PecConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// How the daemon runs campaigns.
    #[serde(default)]
    pub campaigns: CampaignsConfig,
    /// When the expiry run removes messages past their mailbox's
    /// `retention`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Time-stamping the audit chain's head with an RFC 3161 authority;
    /// absent means the chain is not anchored.
    #[serde(default)]
    pub anchor: Option<AnchorConfig>,
    /// The client-facing IMAP server; absent means no IMAP listener.
    #[serde(default)]
    pub imap: Option<ImapConfig>,
    /// Certificate and key for the client-facing listeners.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Gateway users, one `[[user]]` table each.
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
    /// Staff log in with their directory account (LDAP, Active Directory);
    /// absent means only `[[user]]` accounts.
    #[serde(default)]
    pub directory: Option<DirectoryConfig>,
    /// Mail clients that set themselves up from an address (served on the
    /// `[http]` listener); absent means none.
    #[serde(default)]
    pub autoconfig: Option<AutoconfigConfig>,
    /// Metrics, health checks and the read-only API; absent means no HTTP
    /// listener.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// The client-facing SMTP submission server; absent means none.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// Offices messages can be assigned to, one `[[office]]` table each.
    #[serde(default, rename = "office")]
    pub offices: Vec<OfficeConfig>,
    /// Routing rules for arriving certified messages, one `[[rule]]` each,
    /// tried in order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

/// The client-facing SMTP submission server (relay to the providers, no
/// queue).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Implicit-TLS listeners (`ip:port`), usually port 465.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Plain listeners upgraded with STARTTLS before AUTH, usually port 587.
    #[serde(default)]
    pub listen_starttls: Vec<String>,
    /// Allow AUTH without TLS from a loopback peer. Off: passwords never
    /// cross a socket in clear.
    #[serde(default)]
    pub allow_plaintext_on_loopback: bool,
    /// Name in the greeting and EHLO reply.
    #[serde(default = "default_smtp_hostname")]
    pub hostname: String,
    /// Largest message accepted. 50 MiB: above PEC providers' limits
    /// (30–100 MB including every recipient's copy), so the provider is the
    /// one that refuses, with its own words.
    #[serde(default = "default_smtp_max_size")]
    pub max_message_size: usize,
    /// Recipients per message; providers allow 50–500.
    #[serde(default = "default_smtp_max_rcpt")]
    pub max_recipients: usize,
}

fn default_smtp_hostname() -> String {
    "pecgate".into()
}
fn default_smtp_max_size() -> usize {
    50 * 1024 * 1024
}
fn default_smtp_max_rcpt() -> usize {
    100
}

/// The HTTP listener (`/metrics`, `/healthz`, `/readyz`, `/api/…`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `ip:port`. Loopback by default: the API's Basic passwords are
    /// accepted only from loopback peers (no TLS on this listener yet).
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2) with the `[tls]` certificate
    /// (reloaded on SIGHUP like IMAP's). With TLS the JSON API accepts
    /// credentials from any address; without it, from loopback only.
    #[serde(default)]
    pub tls: bool,
    /// Credentials `/metrics` requires (absent: none), as Prometheus'
    /// `authorization` (bearer) or `basic_auth` blocks send them.
    #[serde(default)]
    pub metrics_auth: Option<MetricsAuth>,
    /// API tokens (`pecgate token create`), as hashes; default
    /// `api-tokens.json` beside the configuration file.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
}

/// `[autoconfig]`: the documents mail clients fetch to set themselves up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoconfigConfig {
    /// The mail domains of the addresses people type (`comune.example.it`).
    pub domains: Vec<String>,
    /// The host name clients connect to: the name the `[tls]` certificate
    /// is for (one name for every domain; a per-domain name the
    /// certificate does not cover gives certificate errors).
    pub host: String,
    /// How an address becomes a login: `local-part` (`mario.rossi@…` →
    /// `mario.rossi`, the default) or `address` (the whole address: with
    /// `[directory]`, a `user_filter` that also matches the mail
    /// attribute, e.g. `(|(sAMAccountName={login})(mail={login}))`).
    #[serde(default)]
    pub login: LoginForm,
    /// The account's name in the client (default: "PEC <domain>").
    #[serde(default)]
    pub display_name: Option<String>,
    /// Ports as clients reach them, when a firewall maps them (default:
    /// the listeners' own ports).
    #[serde(default)]
    pub imap_port: Option<u16>,
    #[serde(default)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub https_port: Option<u16>,
}

/// `[autoconfig] login`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LoginForm {
    #[default]
    LocalPart,
    Address,
}

/// `[http] metrics_auth`: a bearer token, or a user name and password.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsAuth {
    /// A file holding the token (`Authorization: Bearer TOKEN`).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic credentials: the user name …
    #[serde(default)]
    pub username: Option<String>,
    /// … and a file holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl MetricsAuth {
    /// What a request must carry: the bearer token, or the Basic pair.
    pub fn load(&self) -> Result<(Option<String>, Option<(String, String)>), String> {
        let read = |p: &PathBuf| -> Result<String, String> {
            let s = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let s = s.trim_end_matches(['\r', '\n']).to_string();
            if s.is_empty() {
                return Err(format!("{} is empty", p.display()));
            }
            Ok(s)
        };
        match (&self.bearer_token_file, &self.username, &self.password_file) {
            (Some(t), None, None) => Ok((Some(read(t)?), None)),
            (None, Some(u), Some(p)) if !u.is_empty() && !u.contains(':') => Ok((None, Some((u.clone(), read(p)?)))),
            _ => Err("give either bearer_token_file, or username (without ':') and password_file".into()),
        }
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:9177".into()
}

/// How pecgate talks to providers (all mailboxes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Longest wait for one provider response. Two minutes tolerates a slow
    /// provider sending a large message.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// First retry delay after a failure; it doubles (with jitter) up to
    /// `max_backoff`. A refused login waits at least 8 × `min_backoff`, so a
    /// wrong password never hammers the provider (which may lock the account).
    #[serde(default = "default_min_backoff", with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Cluster: how long a node's hold on a provider mailbox's poller lasts
    /// without renewal (renewed every third of it). A node that stops
    /// loses its mailboxes to another node within this plus a third.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            timeout: default_timeout(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
            lease: default_lease(),
        }
    }
}

fn default_lease() -> Duration {
    Duration::from_secs(20)
}

fn default_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_min_backoff() -> Duration {
    Duration::from_secs(2)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Where blobs, the journal and the index live. One directory per gateway.
    /// With `backend = "cluster"`: `index_dir` (what the node derives).
    #[serde(default)]
    pub data_dir: PathBuf,
    /// `local` (default: everything in `data_dir`, one machine) or
    /// `cluster` (several nodes: the journal in PostgreSQL, the blobs in
    /// an S3-compatible bucket, each node's index in `index_dir`).
    #[serde(default)]
    pub backend: Backend,
    /// cluster: a libpq connection string or URL, e.g.
    /// `postgresql://pecgate@db1,db2/pecgate?target_session_attrs=read-write`.
    #[serde(default)]
    pub postgres: Option<String>,
    /// cluster: CA certificates (PEM) trusted for the PostgreSQL server's
    /// certificate, besides the system's. TLS is used when the server
    /// offers it (`sslmode=prefer`, the default) or always
    /// (`sslmode=require` in `postgres`); the certificate is always
    /// checked, its name included.
    #[serde(default)]
    pub postgres_ca: Option<PathBuf>,
    /// cluster: this node's client certificate and its key (PEM files),
    /// presented when PostgreSQL asks for one (`hostssl … cert` in
    /// pg_hba.conf: the certificate's CN is the role). Both or neither.
    #[serde(default)]
    pub postgres_cert: Option<PathBuf>,
    #[serde(default)]
    pub postgres_key: Option<PathBuf>,
    /// cluster: a connection string for the one LISTEN connection, straight
    /// to PostgreSQL, when `postgres` goes through PgBouncer in transaction
    /// mode (which cannot carry LISTEN). Unset: `postgres`. The same TLS
    /// settings apply.
    #[serde(default)]
    pub postgres_listen: Option<String>,
    /// cluster: this node's name, unique among the nodes.
    #[serde(default)]
    pub node: Option<String>,
    /// cluster: this node's derived index and journal mirror (deleting it
    /// rebuilds it from PostgreSQL).
    #[serde(default)]
    pub index_dir: Option<PathBuf>,
    /// cluster: the bucket holding the blobs.
    #[serde(default)]
    pub blobs: Option<BucketConfig>,
    /// How long archived messages are kept, for every mailbox that does not
    /// set its own `retention` ("10y": civil-law record keeping; providers
    /// keep only 30 months of logs). Absent: kept for ever.
    #[serde(default, with = "humantime_serde::option")]
    pub retention: Option<Duration>,
    /// Journal segments roll over past this size. 64 MiB keeps each segment
    /// quick to verify and copy, and a million-message archive in ~100 files.
    #[serde(default = "default_segment_bytes")]
    pub journal_segment_bytes: u64,
    /// Memory (bytes) the index may use to cache its pages (and a quarter
    /// of it for the derived cache). The default, 32 MiB, serves a
    /// million-message mailbox (its index is ≈ 300 MB on disk; SELECT and
    /// FETCH read ranges of it in order, and the kernel caches the file).
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
    /// cluster: the most (bytes) this node keeps of blob copies in its
    /// `index_dir` (`blob-cache/`), so that the messages its clients and
    /// its full-text indexer read lately need no round trip to the bucket.
    /// Default 1 GiB; 0: none.
    #[serde(default = "default_blob_cache_bytes")]
    pub blob_cache_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Cluster,
}

/// `[store.blobs]`: an S3-compatible bucket (MinIO, Ceph RGW, Garage, AWS
/// S3; it must verify `x-amz-checksum-sha256` and honour `If-None-Match: *`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// `https://s3.comune.local` (`http://` only on loopback, for tests).
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// Files holding the access key and the secret key (mode 0600).
    pub access_key_file: PathBuf,
    pub secret_key_file: PathBuf,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl StoreConfig {
    /// What the store needs to open a cluster node (keys read from their
    /// files); `None` for the local backend.
    pub fn cluster_options(&self) -> Result<Option<crate::store::cluster::ClusterOptions>, String> {
        if self.backend != Backend::Cluster {
            return Ok(None);
        }
        let b = self.blobs.as_ref().ok_or("store.blobs: required with backend = \"cluster\"")?;
        let read = |p: &Path| {
            std::fs::read_to_string(p).map(|s| s.trim().to_string()).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        Ok(Some(crate::store::cluster::ClusterOptions {
            postgres: self.postgres.clone().ok_or("store.postgres: required with backend = \"cluster\"")?,
            postgres_listen: self.postgres_listen.clone(),
            postgres_ca: self.postgres_ca.clone(),
            postgres_cert: self.postgres_cert.clone(),
            postgres_key: self.postgres_key.clone(),
            node: self.node.clone().ok_or("store.node: required with backend = \"cluster\"")?,
            bucket: crate::store::bucket::BucketConfig {
                endpoint: b.endpoint.clone(),
                bucket: b.bucket.clone(),
                region: b.region.clone(),
                access_key: read(&b.access_key_file)?,
                secret_key: read(&b.secret_key_file)?,
            },
        }))
    }
}

fn default_cache_capacity() -> usize {
    crate::store::StoreOptions::default().index_cache_bytes
}

fn default_blob_cache_bytes() -> u64 {
    crate::store::BLOB_CACHE_BYTES
}

fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PecConfig {
    /// PEM bundle of the providers' certificates (AgID's list) used to check
    /// the S/MIME signature of envelopes and receipts.
    pub trust_store: Option<PathBuf>,
    /// A certified recipient without a delivery receipt after this long is
    /// "overdue". 24 h is the regulatory maximum before a non-delivery notice.
    #[serde(default, with = "humantime_serde::option")]
    pub overdue_after: Option<Duration>,
}

/// `[campaigns]`: how the daemon sends campaigns' notices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignsConfig {
    /// A notice whose provider dialogue broke after it started (or that
    /// was mid-dialogue when pecgate stopped) may have been sent: it waits
    /// this long for the provider's acceptance receipt to settle it, then
    /// becomes "ambiguous".
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle_after: Duration,
    /// Resend ambiguous notices by themselves (the recipient may get two);
    /// otherwise an administrator decides (`pecgate campaign resolve`).
    #[serde(default)]
    pub resend_ambiguous: bool,
    /// Attempts at a notice the provider keeps answering 4xx (or cannot be
    /// reached for) before it fails.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// A notice the provider accepted whose delivery failed because the
    /// recipient's mailbox was full is sent once more, as a new message,
    /// this long after the failure (as Italy's notification platform does:
    /// 7 days). `"0s"`: never.
    #[serde(default = "default_retry_full", with = "humantime_serde")]
    pub retry_full_after: Duration,
}

impl Default for CampaignsConfig {
    fn default() -> Self {
        CampaignsConfig {
            settle_after: default_settle(),
            resend_ambiguous: false,
            max_attempts: default_attempts(),
            retry_full_after: default_retry_full(),
        }
    }
}

fn default_retry_full() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_settle() -> Duration {
    Duration::from_secs(3600)
}
fn default_attempts() -> u32 {
    20
}

/// `[retention]`: the daemon's expiry run. Nothing is ever removed from a
/// mailbox without `retention` set on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Time between expiry runs (the first runs a minute after start).
    #[serde(default = "default_expiry_every", with = "humantime_serde")]
    pub every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { every: default_expiry_every() }
    }
}

fn default_expiry_every() -> Duration {
    Duration::from_secs(86_400)
}

/// `[anchor]`: an RFC 3161 time-stamping authority that certifies, every
/// `every_records` records or `every` (whichever comes first, and only when
/// there are new records), that the journal's chain head existed then. A
/// journal cut after an anchored record then fails `audit verify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorConfig {
    /// The TSA's URL (`http://` or `https://`; RFC 3161 over HTTP, POST of
    /// `application/timestamp-query`).
    pub url: String,
    /// PEM certificates the TSA's tokens must chain to (its root CA; the
    /// signing certificate must be for time stamping). Also the trust for
    /// an `https://` URL, beside the system roots.
    pub ca_file: PathBuf,
    /// A file holding `user:password` for HTTP basic authentication, if
    /// the TSA asks for it (most commercial ones do).
    pub credentials_file: Option<PathBuf>,
    /// The TSA policy OID to ask for (default: the TSA's own).
    pub policy: Option<String>,
    #[serde(default = "default_anchor_records")]
    pub every_records: u64,
    #[serde(default = "default_anchor_every", with = "humantime_serde")]
    pub every: Duration,
    /// How long one request may take.
    #[serde(default = "default_anchor_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_anchor_records() -> u64 {
    10_000
}
fn default_anchor_every() -> Duration {
    Duration::from_secs(3600)
}
fn default_anchor_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One PEC mailbox at a provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxConfig {
    /// Short name: the folder subtree users see (`alias/INBOX`) and the label
    /// on metrics and logs.
    pub alias: String,
    /// The certified address.
    pub address: String,
    /// Login at the provider; usually the address itself.
    pub username: String,
    /// Discouraged: the password in clear in the configuration file.
    pub password: Option<String>,
    /// A file holding the provider password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    pub imap: Endpoint,
    pub smtp: Option<Endpoint>,
    /// Extra trust anchor (PEM) for the provider's TLS certificates, added to
    /// the system roots.
    pub ca_file: Option<PathBuf>,
    /// Provider folders to pull.
    #[serde(default = "default_folders")]
    pub folders: Vec<String>,
    /// The provider folder holding messages sent from the provider's
    /// webmail (e.g. "Sent" or "Posta inviata"). Messages pulled from it
    /// are filed in `Sent` and reconciled with their receipts. It must also
    /// be listed in `folders`.
    pub sent_folder: Option<String>,
    #[serde(default)]
    pub offload: Offload,
    /// How often to look for new mail when the provider has no IDLE. One
    /// minute is gentle on providers and quick enough for certified mail.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Handling: the office (or user) arriving certified messages go to when
    /// no `[[rule]]` matches. Absent: they wait as `new` for anyone.
    pub default_office: Option<String>,
    /// Handling: the deadline of messages whose rule sets none (e.g. "30d").
    #[serde(default, with = "humantime_serde::option")]
    pub default_due: Option<Duration>,
    /// Handling: track anomaly envelopes (ordinary mail that reached the PEC
    /// mailbox) like certified messages; they are then filed in INBOX.
    #[serde(default)]
    pub handle_anomalies: bool,
    /// What the provider accepts from this mailbox, applied to everything
    /// relayed through it (client submissions and campaigns alike).
    #[serde(default)]
    pub sending: SendingLimits,
    /// How long messages are kept from the day they entered the archive
    /// ("10y"); then the expiry run removes those no legal hold covers.
    /// Absent: `[store] retention`, and without that, kept for ever. Use
    /// [`Config::retention_of`] for the one that applies.
    #[serde(default, with = "humantime_serde::option")]
    pub retention: Option<Duration>,
}

/// A mailbox's sending limits (`sending = { per_minute = 6, … }`), as its
/// provider enforces them: InfoCert Legalmail accepts 6 messages a minute and
/// refuses more with a 5xx; Aruba at most 500 recipients and 100 MB per
/// message, the size counted once per recipient. Absent = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendingLimits {
    /// Messages per sliding minute.
    pub per_minute: Option<u32>,
    /// Messages per sliding hour.
    pub per_hour: Option<u32>,
    /// Messages per sliding 24 hours.
    pub per_day: Option<u32>,
    /// Recipients of one message.
    pub max_recipients: Option<usize>,
    /// A message's size times its recipients, in bytes (what the provider
    /// counts).
    pub max_message_bytes: Option<u64>,
}

fn default_folders() -> Vec<String> {
    vec!["INBOX".to_string()]
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub tls: TlsMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465). The default: PEC
    /// providers all offer it.
    #[default]
    Implicit,
    /// Plain connection upgraded with STARTTLS before login.
    Starttls,
    /// No encryption: refused unless the host is a loopback address (tests,
    /// a local simulator).
    None,
}

/// When archived messages are removed from the provider.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Offload {
    /// Delete from the provider as soon as the message is safely archived.
    /// The default: the provider mailbox never fills.
    #[default]
    AfterArchive,
    /// Keep the last `days` days on the provider (for webmail users).
    KeepDays { days: u32 },
    /// Delete oldest archived messages first whenever quota use exceeds
    /// `high_water` (a fraction), until it is below `low_water`.
    Quota { high_water: f64, low_water: f64 },
    /// Never delete (archive only). For a trial period next to other clients.
    Never,
}

impl fmt::Display for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offload::AfterArchive => write!(f, "after-archive"),
            Offload::KeepDays { days } => write!(f, "keep-days ({days} days)"),
            Offload::Quota { high_water, low_water } => {
                write!(f, "quota (high {high_water}, low {low_water})")
            }
            Offload::Never => write!(f, "never"),
        }
    }
}

/// A configuration problem, with the key that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Loading failed before validation could run (file missing, TOML syntax,
/// unknown key, wrong type).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read configuration file: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Read `path` (TOML) and apply `PECGATE_*` environment overrides
/// (`PECGATE_STORE__DATA_DIR=/srv/pecgate` sets `store.data_dir`).
pub fn load(path: &Path) -> Result<Config, LoadError> {
    // Read it ourselves first: the config crate's "not found" message does
    // not say which file, and an unreadable file deserves its own error.
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_toml_str(&text, path)
}

/// Like [`load`], from text already read (`path` only names it in errors).
pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, LoadError> {
    let parse = |e: config::ConfigError| LoadError::Parse {
        path: path.to_path_buf(),
        message: one_line(&e.to_string()),
    };
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("PECGATE")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides(std::env::vars()))),
        )
        .build()
        .map_err(parse)?;
    let mut cfg = built.try_deserialize::<Config>().map_err(parse)?;
    if cfg.store.backend == Backend::Cluster && cfg.store.data_dir.as_os_str().is_empty() {
        // A node's data directory is its index directory: what it derives.
        cfg.store.data_dir = cfg.store.index_dir.clone().unwrap_or_default();
    }
    Ok(cfg)
}

/// The environment variables that override configuration keys: `PECGATE_`
/// plus a key path with `__` between levels. Every top-level key is a table
/// (`store`, `imap`, …), so a real override always has a `__`; variables
/// without one (`PECGATE_CONFIG`, the command line's own, or
/// `PECGATE_GIT_COMMIT` from a build) are not configuration and must not
/// make the daemon refuse its file as an unknown key.
fn overrides(vars: impl Iterator<Item = (String, String)>) -> config::Map<String, String> {
    vars.filter(|(k, _)| k.strip_prefix("PECGATE_").is_some_and(|rest| rest.contains("__")))
        .collect()
}

/// The config crate's message on one line, with its key paths written the
/// way the file is (`mailbox[0].imap.port`, not `mailbox[0]imap.port`).
fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(joined.len());
    let mut chars = joined.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|n| n.is_ascii_alphabetic()) {
            out.push('.');
        }
    }
    out
}

impl Config {
    /// Every problem that deserialisation could not see, each naming its key.
    /// Empty means the configuration can be served.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |key: String, message: String| problems.push(Problem { key, message });

        if self.store.backend == Backend::Cluster {
            for (key, missing) in [
                ("store.postgres", self.store.postgres.is_none()),
                ("store.node", self.store.node.as_deref().is_none_or(str::is_empty)),
                ("store.index_dir", self.store.index_dir.is_none()),
                ("store.blobs", self.store.blobs.is_none()),
            ] {
                if missing {
                    push(key.into(), "required with backend = \"cluster\"".into());
                }
            }
            if let Err((key, e)) = crate::store::cluster::client_identity(
                self.store.postgres_cert.as_deref(),
                self.store.postgres_key.as_deref(),
            ) {
                push(key.into(), e);
            }
            if let Some(b) = &self.store.blobs {
                for (key, p) in [("store.blobs.access_key_file", &b.access_key_file), ("store.blobs.secret_key_file", &b.secret_key_file)] {
                    if let Err(e) = std::fs::read(p) {
                        push(key.into(), format!("cannot read {}: {e}", p.display()));
                    }
                }
                if !(b.endpoint.starts_with("https://") || b.endpoint.starts_with("http://127.") || b.endpoint.starts_with("http://[::1]") || b.endpoint.starts_with("http://localhost")) {
                    push("store.blobs.endpoint".into(), format!("must be an https:// URL (http:// only on loopback): {}", b.endpoint));
                }
            }
        }
        if self.store.data_dir.as_os_str().is_empty() {
            push("store.data_dir".into(), "must not be empty".into());
        } else if !self.store.data_dir.is_absolute() {
            push(
                "store.data_dir".into(),
                format!(
                    "must be an absolute path (got {:?}): the daemon's working directory is not fixed",
                    self.store.data_dir
                ),
            );
        }
        if self.store.journal_segment_bytes < 64 * 1024 {
            push("store.journal_segment_bytes".into(), "must be at least 65536".into());
        }
        if let Some(ts) = &self.pec.trust_store {
            if let Err(e) = std::fs::File::open(ts) {
                push("pec.trust_store".into(), format!("cannot read {}: {e}", ts.display()));
            }
        }

        if self.upstream.min_backoff.is_zero() || self.upstream.min_backoff > self.upstream.max_backoff {
            push("upstream.min_backoff".into(), "must be more than 0 and at most upstream.max_backoff".into());
        }
        if self.upstream.timeout < Duration::from_secs(1) {
            push("upstream.timeout".into(), "must be at least 1s".into());
        }
        if self.retention.every < Duration::from_secs(1) {
            push("retention.every".into(), "must be at least 1s".into());
        }
        if let Some(a) = &self.anchor {
            if !(a.url.starts_with("http://") || a.url.starts_with("https://")) || a.url.parse::<hyper::Uri>().is_err() {
                push("anchor.url".into(), format!("{:?} is not an http:// or https:// URL", a.url));
            }
            if let Err(e) = std::fs::read(&a.ca_file) {
                push("anchor.ca_file".into(), format!("cannot read {}: {e}", a.ca_file.display()));
            }
            if let Some(f) = &a.credentials_file {
                match std::fs::read_to_string(f) {
                    Ok(c) if c.trim_end().contains(':') => {}
                    Ok(_) => push("anchor.credentials_file".into(), "must hold user:password".into()),
                    Err(e) => push("anchor.credentials_file".into(), format!("cannot read {}: {e}", f.display())),
                }
            }
            if a.every_records == 0 {
                push("anchor.every_records".into(), "must be at least 1".into());
            }
            if a.every < Duration::from_secs(1) || a.timeout < Duration::from_secs(1) {
                push("anchor.every".into(), "anchor.every and anchor.timeout must be at least 1s".into());
            }
            if let Some(p) = &a.policy {
                if p.split('.').count() < 2 || !p.split('.').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
                    push("anchor.policy".into(), format!("{p:?} is not an OID (dotted numbers)"));
                }
            }
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, m) in self.mailboxes.iter().enumerate() {
            let k = |field: &str| format!("mailbox[{i}].{field}");
            if m.alias.is_empty()
                || !m
                    .alias
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                push(
                    k("alias"),
                    format!(
                        "{:?} is not a valid alias: use letters, digits, '-', '_' or '.' (it becomes a folder name)",
                        m.alias
                    ),
                );
            }
            if let Some(first) = seen.insert(m.alias.as_str(), i) {
                push(
                    k("alias"),
                    format!("duplicate alias {:?} (also mailbox[{first}])", m.alias),
                );
            }
            if !m.address.contains('@') {
                push(k("address"), format!("{:?} is not an e-mail address", m.address));
            }
            if m.username.is_empty() {
                push(k("username"), "must not be empty".into());
            }
            match (&m.password, &m.password_file) {
                (Some(_), Some(_)) => push(
                    k("password_file"),
                    "set either password or password_file, not both".into(),
                ),
                (None, None) => push(
                    k("password_file"),
                    "missing: set password_file (or password)".into(),
                ),
                (None, Some(f)) => {
                    if let Err(e) = std::fs::read(f) {
                        push(k("password_file"), format!("cannot read {}: {e}", f.display()));
                    }
                }
                (Some(_), None) => {}
            }
            check_endpoint(&m.imap, &k("imap"), &mut push);
            if let Some(smtp) = &m.smtp {
                check_endpoint(smtp, &k("smtp"), &mut push);
            }
            if let Some(ca) = &m.ca_file {
                if let Err(e) = std::fs::read(ca) {
                    push(k("ca_file"), format!("cannot read {}: {e}", ca.display()));
                }
            }
            if let Some(sf) = &m.sent_folder {
                if !m.folders.contains(sf) {
                    push(k("sent_folder"), format!("{sf:?} is not one of the folders pulled (add it to folders)"));
                }
            }
            if m.folders.is_empty() {
                push(k("folders"), "must name at least one provider folder".into());
            }
            match m.offload {
                Offload::KeepDays { days } if days == 0 => push(
                    k("offload.days"),
                    "must be at least 1 (use mode = \"after-archive\" to delete at once)".into(),
                ),
                Offload::Quota { high_water, low_water }
                    if !(0.0 < low_water && low_water < high_water && high_water <= 1.0) =>
                {
                    push(
                        k("offload"),
                        format!(
                            "need 0 < low_water < high_water <= 1 (got low_water {low_water}, high_water {high_water})"
                        ),
                    )
                }
                _ => {}
            }
            if m.poll_interval < Duration::from_secs(1) {
                push(k("poll_interval"), "must be at least 1s".into());
            }
            let s = &m.sending;
            for (name, v) in [("per_minute", s.per_minute), ("per_hour", s.per_hour), ("per_day", s.per_day)] {
                if v == Some(0) {
                    push(k(&format!("sending.{name}")), "must be at least 1 (leave it out for no limit)".into());
                }
            }
            if s.max_recipients == Some(0) {
                push(k("sending.max_recipients"), "must be at least 1 (leave it out for no limit)".into());
            }
            if s.max_message_bytes == Some(0) {
                push(k("sending.max_message_bytes"), "must be more than 0 (leave it out for no limit)".into());
            }
        }
        self.validate_clients(&mut push);
        rules::validate(self, &mut push);
        directory::validate(self, &mut push);
        problems
    }

    pub fn mailbox(&self, alias: &str) -> Option<&MailboxConfig> {
        self.mailboxes.iter().find(|m| m.alias == alias)
    }
}

fn check_endpoint(e: &Endpoint, key: &str, push: &mut impl FnMut(String, String)) {
    if e.host.is_empty() {
        push(format!("{key}.host"), "must not be empty".into());
    }
    if e.port == 0 {
        push(format!("{key}.port"), "must be between 1 and 65535".into());
    }
    if e.tls == TlsMode::None && !is_loopback_host(&e.host) {
        push(
            format!("{key}.tls"),
            format!(
                "\"none\" is refused for {:?}: passwords and certified mail would cross the network in clear; use \"implicit\" or \"starttls\" (\"none\" is allowed only for loopback hosts)",
                e.host
            ),
        );
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`. Names other than `localhost` are not
/// resolved: what a name points to can change.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

impl Config {
    /// The retention that applies to mailbox `m`: its own, else the
    /// store's; `None`: kept for ever.
    pub fn retention_of(&self, m: &MailboxConfig) -> Option<Duration> {
        m.retention.or(self.store.retention)
    }
}

impl MailboxConfig {
    /// The provider password, from `password` or `password_file`.
    pub fn read_password(&self) -> std::io::Result<String> {
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        let path = self.password_file.as_ref().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no password configured")
        })?;
        let text = std::fs::read_to_string(path)?;
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    }
}

/// The client-facing IMAP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// Implicit-TLS listeners (`ip:port`), usually port 993.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Plain listeners that must be upgraded with STARTTLS before login,
    /// usually port 143.
    #[serde(default)]
    pub listen_starttls: Vec<String>,
    /// Allow LOGIN/AUTHENTICATE without TLS from a loopback peer (a local
    /// webmail or a test). Off: passwords never cross a socket in clear.
    #[serde(default)]
    pub allow_plaintext_on_loopback: bool,
    /// Concurrent sessions per user. 50 covers a person with a desktop
    /// client (which opens one connection per folder), a phone and mbsync.
    #[serde(default = "default_max_sessions")]
    pub max_sessions_per_user: usize,
    /// Concurrent connections (logged in or not) from one source address.
    /// 100 lets an office behind one NAT address run a few dozen clients;
    /// past it a connection gets `BYE [LIMIT]`, so that one address cannot
    /// take every connection slot.
    #[serde(default = "default_max_per_address")]
    pub max_sessions_per_address: usize,
    /// A session idle this long is logged out. 30 minutes is RFC 3501's
    /// minimum autologout timer; IDLE clients re-issue IDLE before that.
    #[serde(default = "default_imap_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// During IDLE, an untagged `* OK` is sent this often, so phones and
    /// home routers do not drop a connection that looks silent (Dovecot's
    /// default: 2 minutes). "0s": never.
    #[serde(default = "default_idle_keepalive", with = "humantime_serde")]
    pub idle_keepalive: Duration,
    /// Largest literal (APPEND message) accepted. 50 MiB is above every PEC
    /// provider's message limit (30–50 MB) with room for base64.
    #[serde(default = "default_max_literal")]
    pub max_literal_size: u32,
    /// The STORAGE limit (KiB) the QUOTA extension reports for each PEC
    /// mailbox's archive. None: the archive has no limit, and GETQUOTAROOT
    /// names no quota root (RFC 9208's way of saying "unlimited").
    #[serde(default)]
    pub quota_kib: Option<u64>,
    /// SEARCH BODY and TEXT from the full-text index: each word as the
    /// start of a word, Italian analysis (`solleciti` finds `sollecito`),
    /// in milliseconds. `false`: exact substrings (RFC 3501), reading every
    /// message of the folder.
    #[serde(default = "yes")]
    pub fulltext_search: bool,
}

fn yes() -> bool {
    true
}

fn default_max_sessions() -> usize {
    50
}
fn default_max_per_address() -> usize {
    100
}
fn default_idle_keepalive() -> Duration {
    Duration::from_secs(120)
}

fn default_imap_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_max_literal() -> u32 {
    50 * 1024 * 1024
}

/// A certificate chain and its private key (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One gateway user: a person with their own password and grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// argon2id PHC string from `pecgate hash-password`: a local account,
    /// which logs in without the directory (break-glass). Empty or left out
    /// (only with `[directory]`): the directory user of this name, whose
    /// grants and roles here are added to those of their groups.
    #[serde(default)]
    pub password_hash: String,
    /// The mailbox whose INBOX is the IMAP `INBOX` (must be granted `read`).
    #[serde(default)]
    pub default_mailbox: Option<String>,
    /// Mailbox alias → rights (`read`, `triage`, `send`, `delete`).
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
    /// Global roles: `audit` (may query the audit log and see legal holds
    /// and the retention plan), `hold` (may place and release legal holds).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Rights a grant may name, see DESIGN.md "Permissions".
pub const RIGHTS: [&str; 4] = ["read", "triage", "send", "delete"];
/// Roles a user may hold.
pub const ROLES: [&str; 2] = ["audit", "hold"];

impl Config {
    fn validate_autoconfig(&self, a: &AutoconfigConfig, push: &mut impl FnMut(String, String)) {
        let name_ok = |d: &str| {
            !d.is_empty()
                && d.len() <= 253
                && d.split('.').count() >= 2
                && d.split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        if a.domains.is_empty() {
            push("autoconfig.domains".into(), "must name at least one mail domain".into());
        }
        for d in &a.domains {
            if !name_ok(d) {
                push("autoconfig.domains".into(), format!("{d:?} is not a domain name"));
            }
        }
        if !name_ok(&a.host) {
            push("autoconfig.host".into(), format!("{:?} is not a host name", a.host));
        }
        match &self.http {
            None => push("autoconfig".into(), "needs [http]: the documents are served on its listener".into()),
            Some(h) if !h.tls => push(
                "autoconfig".into(),
                "needs [http] tls = true: clients fetch the documents over HTTPS, and send passwords to what they say".into(),
            ),
            Some(_) => {}
        }
        if self.imap.is_none() && self.smtp.is_none() {
            push("autoconfig".into(), "nothing to offer: no [imap] and no [smtp]".into());
        }
        // The name clients are sent to must be one the certificate is for.
        if let Some(t) = &self.tls {
            if let Ok(names) = crate::tls::certificate_names(&t.cert) {
                if !names.iter().any(|n| crate::tls::name_matches(n, &a.host)) {
                    push(
                        "autoconfig.host".into(),
                        format!(
                            "the [tls] certificate is for {}, not {:?}: clients would show certificate errors",
                            names.join(", "),
                            a.host
                        ),
                    );
                }
            }
        }
    }
}

/// Every `listen`/`listen_starttls` entry of `section` must be `ip:port`.
fn check_listeners(section: &str, listen: &[String], starttls: &[String], push: &mut impl FnMut(String, String)) {
    for (field, list) in [("listen", listen), ("listen_starttls", starttls)] {
        for (i, a) in list.iter().enumerate() {
            if a.parse::<std::net::SocketAddr>().is_err() {
                push(format!("{section}.{field}[{i}]"), format!("{a:?} is not an ip:port address"));
            }
        }
    }
}

impl Config {
    fn validate_clients(&self, push: &mut impl FnMut(String, String)) {
        if let Some(imap) = &self.imap {
            check_listeners("imap", &imap.listen, &imap.listen_starttls, push);
            if imap.max_sessions_per_user == 0 {
                push("imap.max_sessions_per_user".into(), "must be at least 1".into());
            }
            if imap.max_sessions_per_address == 0 {
                push("imap.max_sessions_per_address".into(), "must be at least 1".into());
            }
            if imap.idle_timeout < Duration::from_secs(60) {
                push("imap.idle_timeout".into(), "must be at least 1m".into());
            }
            if imap.max_literal_size < 1024 * 1024 {
                push("imap.max_literal_size".into(), "must be at least 1048576".into());
            }
            match &self.tls {
                None => push("tls".into(), "missing: [imap] needs [tls] cert and key".into()),
                Some(t) => {
                    for (k, p) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
                        if let Err(e) = std::fs::File::open(p) {
                            push(k.into(), format!("cannot read {}: {e}", p.display()));
                        }
                    }
                }
            }
        }
        if let Some(http) = &self.http {
            if http.listen.parse::<std::net::SocketAddr>().is_err() {
                push("http.listen".into(), format!("{:?} is not an ip:port address", http.listen));
            }
            if http.tls && self.tls.is_none() {
                push("tls".into(), "missing: [http] tls = true needs [tls] cert and key".into());
            }
            if let Some(m) = &http.metrics_auth {
                if let Err(e) = m.load() {
                    push("http.metrics_auth".into(), e);
                }
            }
        }
        if let Some(a) = &self.autoconfig {
            self.validate_autoconfig(a, push);
        }
        if let Some(smtp) = &self.smtp {
            check_listeners("smtp", &smtp.listen, &smtp.listen_starttls, push);
            if smtp.max_message_size < 1024 * 1024 {
                push("smtp.max_message_size".into(), "must be at least 1048576".into());
            }
            if smtp.max_recipients == 0 {
                push("smtp.max_recipients".into(), "must be at least 1".into());
            }
            if self.tls.is_none() && self.imap.is_none() {
                push("tls".into(), "missing: [smtp] needs [tls] cert and key".into());
            }
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, u) in self.users.iter().enumerate() {
            let k = |field: &str| format!("user[{i}].{field}");
            if u.name.is_empty() || u.name.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\0') {
                push(k("name"), format!("{:?} is not a valid user name (no spaces or control characters)", u.name));
            }
            if let Some(first) = seen.insert(u.name.as_str(), i) {
                push(k("name"), format!("duplicate user {:?} (also user[{first}])", u.name));
            }
            if u.password_hash.is_empty() {
                // A directory user's extra grants: `directory::validate`
                // refuses it without a [directory].
            } else if argon2::password_hash::PasswordHash::new(&u.password_hash).is_err() {
                push(k("password_hash"), "not an argon2 PHC string: create one with `pecgate hash-password`".into());
            }
            for (alias, rights) in &u.grants {
                if self.mailbox(alias).is_none() {
                    push(format!("user[{i}].grants.{alias}"), format!("no [[mailbox]] has alias {alias:?}"));
                }
                for r in rights {
                    if !RIGHTS.contains(&r.as_str()) {
                        push(
                            format!("user[{i}].grants.{alias}"),
                            format!("unknown right {r:?} (rights are {})", RIGHTS.join(", ")),
                        );
                    }
                }
            }
            // (A directory user's default mailbox may be granted by a group.)
            if let Some(d) = u.default_mailbox.as_ref().filter(|_| !u.password_hash.is_empty()) {
                if !u.grants.get(d).is_some_and(|r| r.iter().any(|x| x == "read")) {
                    push(k("default_mailbox"), format!("{d:?} is not granted \"read\" to this user"));
                }
            }
            for r in &u.roles {
                if !ROLES.contains(&r.as_str()) {
                    push(k("roles"), format!("unknown role {r:?} (roles are {})", ROLES.join(", ")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, LoadError> {
        from_toml_str(text, Path::new("test.toml"))
    }

    const BASE: &str = r#"
[store]
data_dir = "/tmp/x"
[[mailbox]]
alias = "protocollo"
address = "protocollo@pec.example.it"
username = "protocollo@pec.example.it"
password = "secret"
imap = { host = "127.0.0.1", port = 993, tls = "none" }
"#;

    #[test]
    fn minimal_is_valid_with_defaults() {
        let c = parse(BASE).unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let m = &c.mailboxes[0];
        assert_eq!(m.folders, vec!["INBOX"]);
        assert_eq!(m.offload, Offload::AfterArchive);
        assert_eq!(m.poll_interval, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_names_it() {
        let e = parse(&format!("{BASE}\nfoo = 1\n")).unwrap_err().to_string();
        assert!(e.contains("foo"), "{e}");
    }

    #[test]
    fn bad_port_names_the_key() {
        let e = parse(&BASE.replace("port = 993", "port = 70000")).unwrap_err().to_string();
        assert!(e.contains("mailbox[0].imap.port"), "{e}");
    }

    #[test]
    fn tls_none_public_host_refused() {
        let c = parse(&BASE.replace("127.0.0.1", "imap.example.it")).unwrap();
        let p = c.validate();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "mailbox[0].imap.tls");
    }

    #[test]
    fn offload_modes_parse() {
        let c = parse(&format!(
            "{BASE}offload = {{ mode = \"quota\", high_water = 0.8, low_water = 0.5 }}\n"
        ))
        .unwrap();
        assert_eq!(c.mailboxes[0].offload, Offload::Quota { high_water: 0.8, low_water: 0.5 });
        let c = parse(&format!("{BASE}offload = {{ mode = \"keep-days\", days = 7 }}\n")).unwrap();
        assert_eq!(c.mailboxes[0].offload, Offload::KeepDays { days: 7 });
    }

    #[test]
    fn users_and_grants_are_checked_naming_keys() {
        let text = format!(
            "{BASE}\n[[user]]\nname = \"mario\"\npassword_hash = \"nope\"\ndefault_mailbox = \"tributi\"\ngrants = {{ protocollo = [\"read\", \"fly\"], tributi = [\"read\"] }}\nroles = [\"boss\"]\n"
        );
        let c = parse(&text).unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"user[0].password_hash".to_string()), "{keys:?}");
        assert!(keys.contains(&"user[0].grants.protocollo".to_string()), "{keys:?}");
        assert!(keys.contains(&"user[0].grants.tributi".to_string()), "{keys:?}");
        assert!(keys.contains(&"user[0].roles".to_string()), "{keys:?}");
    }

    /// `[store] postgres_cert` and `postgres_key`: both or neither, each
    /// problem named by its key, a key file that cannot be read or parsed
    /// named too.
    #[test]
    fn postgres_client_certificate_needs_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
        let (cert, key, junk) = (dir.path().join("c.pem"), dir.path().join("k.pem"), dir.path().join("junk.pem"));
        std::fs::write(&cert, &c.chain).unwrap();
        std::fs::write(&key, &c.key).unwrap();
        std::fs::write(&junk, b"not a key").unwrap();
        let problems = |extra: &str| {
            let text = BASE.replace(
                "[store]\n",
                &format!(
                    "[store]\nbackend = \"cluster\"\npostgres = \"postgresql://pecgate@db/pecgate\"\nnode = \"a\"\n\
                     index_dir = \"/tmp/x/i\"\n{extra}\n"
                ),
            );
            parse(&text)
                .unwrap()
                .validate()
                .into_iter()
                .filter(|p| p.key.starts_with("store.postgres"))
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        };
        let (cert, key, junk) = (cert.display(), key.display(), junk.display());
        assert_eq!(problems(&format!("postgres_cert = \"{cert}\"\npostgres_key = \"{key}\"")), Vec::<String>::new());
        assert_eq!(problems(""), Vec::<String>::new());
        let p = problems(&format!("postgres_cert = \"{cert}\""));
        assert!(p.len() == 1 && p[0].starts_with("store.postgres_key: required with store.postgres_cert"), "{p:?}");
        let p = problems(&format!("postgres_key = \"{key}\""));
        assert!(p.len() == 1 && p[0].starts_with("store.postgres_cert: required with store.postgres_key"), "{p:?}");
        let p = problems(&format!("postgres_cert = \"{cert}\"\npostgres_key = \"{junk}\""));
        assert!(p.len() == 1 && p[0].starts_with(&format!("store.postgres_key: {junk}: ")), "{p:?}");
        let p = problems(&format!("postgres_cert = \"{cert}\"\npostgres_key = \"{junk}.missing\""));
        assert!(p.len() == 1 && p[0].starts_with(&format!("store.postgres_key: {junk}.missing: ")), "{p:?}");
        // The key of another certificate.
        let other = crate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
        let other_key = dir.path().join("other.pem");
        std::fs::write(&other_key, &other.key).unwrap();
        let p = problems(&format!("postgres_cert = \"{cert}\"\npostgres_key = \"{}\"", other_key.display()));
        assert!(p.len() == 1 && p[0].contains("not usable with the certificate"), "{p:?}");
    }

    #[test]
    fn imap_needs_tls_and_addresses() {
        let c = parse(&format!("{BASE}\n[imap]\nlisten = [\"nowhere\"]\n")).unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["imap.listen[0]".to_string(), "tls".to_string()]);
    }

    #[test]
    fn smtp_needs_tls_addresses_and_sane_limits() {
        let c = parse(&format!("{BASE}\n[smtp]\nlisten = [\"nowhere\"]\nmax_recipients = 0\n")).unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["smtp.listen[0]".to_string(), "smtp.max_recipients".to_string(), "tls".to_string()]);
        let c = parse(&format!("{BASE}\n[smtp]\nlisten_starttls = [\"127.0.0.1:587\"]\n")).unwrap();
        let smtp = c.smtp.as_ref().unwrap();
        assert_eq!((smtp.max_message_size, smtp.max_recipients, smtp.allow_plaintext_on_loopback), (50 << 20, 100, false));
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("127.1.2.3"));
        assert!(is_loopback_host("::1"));
        assert!(is_loopback_host("[::1]"));
        assert!(is_loopback_host("LOCALHOST"));
        assert!(!is_loopback_host("10.0.0.1"));
        assert!(!is_loopback_host("localhost.example.it"));
    }
}
