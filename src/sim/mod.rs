//! A PEC provider simulator (`pecgate sim-provider`), for tests and the demo.
//!
//! It behaves like a provider towards a gateway: accepts submissions over
//! SMTP with AUTH (plain listener, meant for loopback), answers the sender
//! with an acceptance receipt (or non-acceptance when the submission is bad,
//! e.g. `From` is not the authenticated account), wraps the original in a
//! signed transport envelope for each certified recipient and puts it in the
//! recipient's mailbox, then sends the sender a delivery receipt (complete
//! form) or a non-delivery notice. The mailboxes are served over IMAP, so
//! pecgate syncs them exactly as it would a real provider's, in one of two
//! ways:
//!
//! * with `[mailstore]` (what `pecgate demo` uses): the simulator keeps them
//!   itself, in a pecgate archive of its own served by pecgate's IMAP
//!   server code ([`mailstore`]); nothing else to install;
//! * without it: they live on a real IMAP server (Dovecot, in the tests)
//!   and the simulator fills them with IMAP APPEND ([`deliver`]).
//!
//! * [`pki`]: the CA and signing certificate (kept on disk across restarts).
//! * [`build`]: the provider messages (pure).
//! * [`deliver`]: IMAP APPEND into a mailbox on a real IMAP server.
//! * [`mailstore`]: the simulator's own mailboxes and their IMAP server.
//! * [`campaign`]: what bulk campaigns are tested against: per-sender rate
//!   limits, recipients on other providers with scripted outcomes, the
//!   connection closed right after `250`, a record of what was done.
//! * this file: configuration, the SMTP listener and what happens to a
//!   submission.

pub mod build;
pub mod campaign;
pub mod deliver;
pub mod mailstore;
pub mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::smtp::wire::{Body, Line, Wire};
use build::{Notice, Provider, Submission};
use campaign::{Counters, Dest, Outcome, RateLimiter, Recorder, Script};
use pki::Pki;

/// A simulator's whole configuration: the provider ([`SimConfig`], all
/// `pecgate demo` sets in code) and the campaign behaviour
/// ([`campaign::Campaign`], validated), which is off unless the
/// configuration file asks for it.
#[derive(Debug, Clone)]
pub struct SimSettings {
    pub provider: SimConfig,
    pub script: Script,
}

impl From<SimConfig> for SimSettings {
    fn from(provider: SimConfig) -> SimSettings {
        SimSettings { provider, script: Script::default() }
    }
}

/// `sim-provider` configuration (TOML). The same file may also hold,
/// at its top level, the keys of [`campaign::Campaign`] (rate limits,
/// remote domains, drops, the record); [`SimConfig::load`] reads both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// SMTP submission listener, `ip:port` (plain: keep it on loopback).
    pub listen: String,
    /// Domains this provider serves: recipients there are certified, and
    /// unknown ones get a non-delivery notice.
    pub domains: Vec<String>,
    /// Where the CA and signing keys are kept; `ca.pem` there is the trust
    /// store to give pecgate (`pec.trust_store`).
    pub pki_dir: PathBuf,
    /// Name in daticert `gestore-emittente`.
    #[serde(default = "default_name")]
    pub provider_name: String,
    /// Wait before sending delivery receipts (real providers take seconds
    /// to minutes).
    #[serde(default, with = "humantime_serde")]
    pub receipt_delay: Duration,
    /// Fraction (0..1) of certified deliveries that fail at random.
    #[serde(default)]
    pub failure_rate: f64,
    /// Largest message accepted.
    #[serde(default = "default_max_size")]
    pub max_message_size: usize,
    #[serde(default, rename = "mailbox")]
    pub mailboxes: Vec<SimMailbox>,
    /// Keep the mailboxes in the simulator's own archive and serve them
    /// over IMAP; without it they are APPENDed to `imap_host:imap_port`.
    #[serde(default)]
    pub mailstore: Option<mailstore::MailStoreConfig>,
}

fn default_name() -> String {
    "pecgate simulated PEC provider".into()
}
fn default_max_size() -> usize {
    50 * 1024 * 1024
}

/// One simulated PEC mailbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMailbox {
    /// The certified address (also the SMTP AUTH login).
    pub address: String,
    /// SMTP AUTH password.
    pub password: String,
    /// The IMAP server holding the mailbox (ignored with `[mailstore]`).
    #[serde(default = "loopback")]
    pub imap_host: String,
    #[serde(default)]
    pub imap_port: u16,
    /// The mailbox's IMAP login: on `imap_host`, or on the simulator's own
    /// IMAP server with `[mailstore]` (where it is also the mailbox's name).
    pub imap_user: String,
    pub imap_password: String,
    /// Simulate a full mailbox: while it holds this many messages (in its
    /// INBOX), certified deliveries to it fail with a non-delivery notice
    /// ("5.2.2 - Casella piena"). Counted in the simulator's own store, or
    /// with IMAP STATUS on the mailbox's server.
    #[serde(default)]
    pub quota_messages: Option<u64>,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

impl SimConfig {
    /// Read a configuration file: the provider's settings (this struct)
    /// and, beside them at the top level, the campaign's
    /// ([`campaign::KEYS`]).
    pub fn load(path: &Path) -> Result<SimSettings, SimError> {
        let err = |message: String| SimError::Config { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let top: config::Map<String, config::Value> = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| err(e.to_string()))?;
        // Two structs, each refusing unknown keys: split the top level.
        let (campaign, provider): (config::Map<_, _>, config::Map<_, _>) =
            top.into_iter().partition(|(k, _)| campaign::KEYS.contains(&k.as_str()));
        let c: SimConfig = config::Value::from(provider).try_deserialize().map_err(|e| err(e.to_string()))?;
        let campaign: campaign::Campaign =
            config::Value::from(campaign).try_deserialize().map_err(|e| err(e.to_string()))?;
        if c.domains.is_empty() {
            return Err(err("domains: name at least one simulated domain".into()));
        }
        if !(0.0..=1.0).contains(&c.failure_rate) {
            return Err(err("failure_rate: must be between 0 and 1".into()));
        }
        if c.mailstore.is_none() {
            if let Some(m) = c.mailboxes.iter().find(|m| m.imap_port == 0) {
                return Err(err(format!(
                    "mailbox {}: imap_port: name the IMAP server holding it, or give the simulator a [mailstore]",
                    m.address
                )));
            }
        }
        let mut users: Vec<&str> = c.mailboxes.iter().map(|m| m.imap_user.as_str()).collect();
        users.sort_unstable();
        if let Some(w) = users.windows(2).find(|w| w[0] == w[1]) {
            return Err(err(format!("mailbox: imap_user {:?} is used twice", w[0])));
        }
        let script = campaign.compile(&c.domains).map_err(err)?;
        Ok(SimSettings { provider: c, script })
    }

    /// The provider's own certified address.
    pub fn provider_address(&self) -> String {
        format!("posta-certificata@{}", self.domains.first().map(String::as_str).unwrap_or("pec.sim"))
    }

    fn mailbox(&self, address: &str) -> Option<&SimMailbox> {
        self.mailboxes.iter().find(|m| m.address.eq_ignore_ascii_case(address))
    }

    fn simulated(&self, address: &str) -> bool {
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

struct Sim {
    cfg: SimConfig,
    pki: Pki,
    provider: Provider,
    counter: AtomicU64,
    /// The simulator's own mailboxes (`[mailstore]`), else `None`: APPEND
    /// to the mailboxes' IMAP server.
    own: Option<mailstore::MailStore>,
    /// The campaign behaviour (all off by default).
    script: Script,
    rate: RateLimiter,
    record: Option<Recorder>,
    counters: Counters,
}

/// A running simulator.
pub struct Running {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    /// The simulator's own IMAP server (with `[mailstore]`).
    pub imap_addr: Option<SocketAddr>,
    /// Ends after shutdown, once the listeners (and, with `[mailstore]`,
    /// the IMAP sessions) are done and the mailboxes' archive is closed.
    pub task: tokio::task::JoinHandle<()>,
}

/// Bind, load or create the PKI, and serve until `shutdown` turns true.
pub async fn start(settings: impl Into<SimSettings>, shutdown: watch::Receiver<bool>) -> Result<Running, SimError> {
    let SimSettings { provider: cfg, script } = settings.into();
    let record = match &script.record {
        Some(path) => Some(
            Recorder::open(path)
                .map_err(|e| SimError::Config { path: path.clone(), message: format!("record: {e}") })?,
        ),
        None => None,
    };
    let (dir, signer) = (cfg.pki_dir.clone(), cfg.provider_address());
    let pki = tokio::task::spawn_blocking(move || Pki::load_or_generate(&dir, &signer))
        .await
        .map_err(|e| SimError::Config { path: cfg.pki_dir.clone(), message: e.to_string() })??;
    // Bind after the PKI exists: an open port means the CA file is there.
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| SimError::Bind { addr: cfg.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind { addr: cfg.listen.clone(), source })?;
    let own = match &cfg.mailstore {
        Some(m) => Some(mailstore::MailStore::start(m, &cfg.mailboxes, shutdown.clone()).await?),
        None => None,
    };
    let imap_addr = own.as_ref().map(|o| o.imap_addr);
    let provider = Provider { address: cfg.provider_address(), name: cfg.provider_name.clone() };
    let ca_file = cfg.pki_dir.join("ca.pem");
    tracing::info!(%addr, ca = %ca_file.display(), domains = ?cfg.domains, "PEC provider simulator listening");
    if let Some(r) = &record {
        tracing::info!(file = %r.path().display(), "recording accepted and refused submissions");
    }
    let rate = RateLimiter::new(&script.sender_limit);
    let counters = Counters::default();
    let sim = Arc::new(Sim { cfg, pki, provider, counter: AtomicU64::new(0), own, script, rate, record, counters });
    let task = tokio::spawn(async move {
        accept_loop(listener, sim.clone(), shutdown).await;
        sim.counters.log("shutdown");
        // Submissions still being processed hold the other references;
        // the archive closes when they are done.
        if let Some(own) = Arc::into_inner(sim).and_then(|s| s.own) {
            own.close().await;
        }
    });
    Ok(Running { addr, ca_file, imap_addr, task })
}

async fn accept_loop(listener: TcpListener, sim: Arc<Sim>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((tcp, _)) => { tokio::spawn(session(sim.clone(), tcp)); }
                Err(e) => { tracing::warn!(error = %e, "simulator accept"); tokio::time::sleep(Duration::from_millis(200)).await; }
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// SMTP state of one simulator connection.
#[derive(Default)]
struct SimSession {
    user: Option<String>,
    from: Option<String>,
    rcpts: Vec<String>,
}

enum AuthStep {
    LoginUser,
    LoginPass(String),
    Plain,
}

fn decode_b64(s: &[u8]) -> Option<Vec<u8>> {
    openssl::base64::decode_block(std::str::from_utf8(s).ok()?.trim()).ok()
}

async fn session(sim: Arc<Sim>, mut tcp: TcpStream) {
    let mut wire = Wire::default();
    let mut st = SimSession::default();
    let mut auth: Option<AuthStep> = None;
    let domain = sim.cfg.domains.first().cloned().unwrap_or_default();
    let mut out = format!("220 {domain} simulated PEC provider ESMTP\r\n").into_bytes();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !out.is_empty() {
            if tcp.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        let n = match tokio::time::timeout(Duration::from_secs(300), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        wire.push(&buf[..n]);
        loop {
            if wire.in_data() {
                match wire.next_body() {
                    None => break,
                    Some(Body::BareLf) => {
                        let _ = tcp.write_all(b"521 5.5.2 bare LF in message\r\n").await;
                        return;
                    }
                    Some(Body::TooBig { .. }) => out.extend_from_slice(b"552 5.3.4 message too big\r\n"),
                    Some(Body::Complete(body)) => {
                        let (user, from, rcpts) = (st.user.clone().unwrap_or_default(), st.from.take(), std::mem::take(&mut st.rcpts));
                        let id = sim.next_id();
                        let plan = sim.plan(user, &from.unwrap_or_default(), rcpts, &body, id.clone());
                        // The record is written before the 250 can be:
                        // whatever the client saw accepted is in it.
                        if let Err(e) = sim.accepted(&plan) {
                            tracing::error!(error = %e, %id, "cannot record the submission: refused");
                            out.extend_from_slice(b"451 4.3.0 cannot record the submission, try again\r\n");
                            continue;
                        }
                        if let Some(hold) = plan.hold {
                            tracing::info!(%id, ?hold, "holding the 250 (hold)");
                            if tcp.write_all(&std::mem::take(&mut out)).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(hold).await;
                        }
                        out.extend_from_slice(format!("250 2.0.0 Ok: queued as {id}\r\n").as_bytes());
                        let drop = plan.drop;
                        tokio::spawn(process(sim.clone(), plan, body));
                        if drop {
                            // The ambiguous case: the 250 leaves, then the
                            // connection closes without waiting for QUIT.
                            tracing::info!(%id, "closing the connection right after 250 (drop)");
                            let _ = tcp.write_all(&out).await;
                            let _ = tcp.shutdown().await;
                            return;
                        }
                    }
                }
                continue;
            }
            let line = match wire.next_line() {
                None => break,
                Some(Line::TooLong) => {
                    out.extend_from_slice(b"500 5.5.6 line too long\r\n");
                    continue;
                }
                Some(Line::Command(l)) => l,
            };
            if let Some(step) = auth.take() {
                let reply = sim.auth_step(step, &line, &mut auth, &mut st);
                out.extend_from_slice(reply.as_bytes());
                continue;
            }
            let reply = sim.command(&line, &mut st, &mut auth, &mut wire);
            let quit = reply.starts_with("221");
            out.extend_from_slice(reply.as_bytes());
            if quit {
                let _ = tcp.write_all(&out).await;
                return;
            }
        }
    }
}

impl Sim {
    fn next_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let domain = self.cfg.domains.first().map(String::as_str).unwrap_or("pec.sim");
        format!("opec-sim.{}.{}.{n}@{domain}", Utc::now().format("%Y%m%d%H%M%S"), std::process::id())
    }

    /// The mailbox's address if `user` (its address, or its IMAP login as
    /// providers also accept) and `pass` match.
    fn check_password(&self, user: &str, pass: &str) -> Option<String> {
        self.cfg
            .mailboxes
            .iter()
            .find(|m| m.address.eq_ignore_ascii_case(user) || m.imap_user == user)
            .filter(|m| m.password == pass)
            .map(|m| m.address.clone())
    }

    fn finish_plain(&self, decoded: &[u8], st: &mut SimSession) -> String {
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        if let [_, u, p] = parts.as_slice() {
            let (u, p) = (String::from_utf8_lossy(u), String::from_utf8_lossy(p));
            if let Some(address) = self.check_password(&u, &p) {
                st.user = Some(address);
                return "235 2.7.0 Authentication successful\r\n".into();
            }
        }
        "535 5.7.8 Authentication credentials invalid\r\n".into()
    }

    fn auth_step(&self, step: AuthStep, line: &[u8], auth: &mut Option<AuthStep>, st: &mut SimSession) -> String {
        if line == b"*" {
            return "501 5.0.0 Authentication cancelled\r\n".into();
        }
        let Some(decoded) = decode_b64(line) else { return "501 5.5.2 bad base64\r\n".into() };
        match step {
            AuthStep::Plain => self.finish_plain(&decoded, st),
            AuthStep::LoginUser => {
                *auth = Some(AuthStep::LoginPass(String::from_utf8_lossy(&decoded).into_owned()));
                "334 UGFzc3dvcmQ6\r\n".into()
            }
            AuthStep::LoginPass(u) => {
                if let Some(address) = self.check_password(&u, &String::from_utf8_lossy(&decoded)) {
                    st.user = Some(address);
                    "235 2.7.0 Authentication successful\r\n".into()
                } else {
                    "535 5.7.8 Authentication credentials invalid\r\n".into()
                }
            }
        }
    }

    fn command(&self, line: &[u8], st: &mut SimSession, auth: &mut Option<AuthStep>, wire: &mut Wire) -> String {
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => format!(
                "250-{} simulated PEC provider\r\n250-AUTH PLAIN LOGIN\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
                self.cfg.domains.first().map(String::as_str).unwrap_or("sim"),
                self.cfg.max_message_size
            ),
            "AUTH" => {
                let mech = words.next().unwrap_or("").to_ascii_uppercase();
                match (mech.as_str(), words.next()) {
                    ("PLAIN", Some(ir)) => match decode_b64(ir.as_bytes()) {
                        Some(d) => self.finish_plain(&d, st),
                        None => "501 5.5.2 bad base64\r\n".into(),
                    },
                    ("PLAIN", None) => {
                        *auth = Some(AuthStep::Plain);
                        "334 \r\n".into()
                    }
                    ("LOGIN", _) => {
                        *auth = Some(AuthStep::LoginUser);
                        "334 VXNlcm5hbWU6\r\n".into()
                    }
                    _ => "504 5.5.4 unsupported mechanism\r\n".into(),
                }
            }
            "MAIL" if st.user.is_none() => "530 5.7.0 Authentication required\r\n".into(),
            "MAIL" => match angle(&text) {
                Some(a) if self.over_limit(st.user.as_deref().unwrap_or_default()) => {
                    st.from = None;
                    st.rcpts.clear();
                    campaign::too_much_traffic(&a)
                }
                Some(a) => {
                    st.from = Some(a);
                    st.rcpts.clear();
                    "250 2.1.0 Ok\r\n".into()
                }
                None => "501 5.1.7 bad sender address syntax\r\n".into(),
            },
            "RCPT" if st.from.is_none() => "503 5.5.1 MAIL first\r\n".into(),
            "RCPT" => match angle(&text) {
                Some(a) => {
                    st.rcpts.push(a);
                    "250 2.1.5 Ok\r\n".into()
                }
                None => "501 5.1.3 bad recipient address syntax\r\n".into(),
            },
            "DATA" if st.rcpts.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
            "DATA" => {
                wire.start_data(self.cfg.max_message_size);
                "354 End data with <CR><LF>.<CR><LF>\r\n".into()
            }
            "RSET" => {
                st.from = None;
                st.rcpts.clear();
                "250 2.0.0 Ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 Ok\r\n".into(),
            "QUIT" => "221 2.0.0 Bye\r\n".into(),
            _ => "502 5.5.2 command not recognised\r\n".into(),
        }
    }
}

/// The address between angle brackets of `MAIL FROM:<a>` / `RCPT TO:<a>`.
fn angle(cmd: &str) -> Option<String> {
    let start = cmd.find('<')? + 1;
    let end = start + cmd[start..].find('>')?;
    let a = cmd[start..end].trim();
    (a.contains('@') && !a.contains(char::is_whitespace)).then(|| a.to_string())
}

/// What the simulator will do with one submission, decided before its
/// `250` so that the record can say it.
struct Plan {
    /// The provider's identifier (`identificativo`).
    id: String,
    /// The authenticated sender.
    user: String,
    rcpts: Vec<(String, Dest)>,
    subject: String,
    /// Message-ID for the receipts, with angle brackets: the submission's,
    /// else the provider's identifier.
    msgid: String,
    /// The submission's own Message-ID, normalised (for the record).
    message_id: Option<String>,
    /// Why the provider will answer with a non-acceptance, if it will.
    non_accettazione: Option<String>,
    /// Close the connection right after the `250`.
    drop: bool,
    /// Wait before the `250` (a rule's `hold`).
    hold: Option<Duration>,
}

impl Sim {
    fn plan(&self, user: String, mail_from: &str, rcpts: Vec<String>, body: &[u8], id: String) -> Plan {
        let parsed = mail_parser::MessageParser::default().parse_headers(body);
        let header_from = parsed
            .as_ref()
            .and_then(|m| m.from())
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string)
            .unwrap_or_default();
        let subject = parsed.as_ref().and_then(|m| m.subject()).unwrap_or("").to_string();
        let header_msgid = parsed.as_ref().and_then(|m| m.message_id()).map(|m| format!("<{m}>"));
        let non_accettazione = if !header_from.eq_ignore_ascii_case(&user) {
            Some(format!("Il mittente ({header_from}) non corrisponde al titolare della casella ({user})"))
        } else if !mail_from.eq_ignore_ascii_case(&user) {
            Some(format!("Il mittente della busta ({mail_from}) non corrisponde al titolare della casella ({user})"))
        } else {
            None
        };
        let mut drop = false;
        let rcpts: Vec<(String, Dest)> = rcpts
            .into_iter()
            .map(|r| {
                let dest = if self.cfg.simulated(&r) {
                    Dest::Own
                } else if let Some((dest, d)) = self.script.route(&r) {
                    drop |= d;
                    dest
                } else {
                    Dest::NotPec
                };
                (r, dest)
            })
            .collect();
        let a = self.script.drop_after_accept;
        drop |= a > 0.0 && rand::random::<f64>() < a;
        let hold = rcpts.iter().filter_map(|(r, _)| self.script.hold(r)).max();
        Plan {
            hold,
            user,
            rcpts,
            subject,
            message_id: header_msgid.as_deref().and_then(crate::pec::normalize_message_id),
            msgid: header_msgid.unwrap_or_else(|| format!("<{id}>")),
            non_accettazione,
            drop,
            id,
        }
    }

    /// Whether the authenticated `user` is over its `sender_limit` (then
    /// the refusal is counted and recorded).
    fn over_limit(&self, user: &str) -> bool {
        let Some(window) = self.rate.over(user, Instant::now()) else { return false };
        let refused = self.counters.refused_rate.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(sender = %user, %window, refused_rate = refused, "sender over its limit: Too much traffic");
        if let Some(r) = &self.record {
            let line = serde_json::json!({ "refused": "rate", "sender": user, "at": Utc::now().to_rfc3339() });
            if let Err(e) = r.write(&line) {
                tracing::error!(error = %e, file = %r.path().display(), "cannot record a refusal");
            }
        }
        true
    }

    /// `plan` is about to be answered `250`: record it (the error means
    /// the record could not be written), count it against its sender's
    /// limit and in the counters.
    fn accepted(&self, plan: &Plan) -> std::io::Result<()> {
        if let Some(r) = &self.record {
            let outcomes: serde_json::Map<String, serde_json::Value> = match plan.non_accettazione {
                Some(_) => Default::default(),
                None => plan.rcpts.iter().map(|(a, d)| (a.clone(), d.label().into())).collect(),
            };
            let mut line = serde_json::json!({
                "id": plan.id,
                "at": Utc::now().to_rfc3339(),
                "sender": plan.user,
                "message_id": plan.message_id,
                "recipients": plan.rcpts.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
                "outcomes": outcomes,
                "dropped": plan.drop,
            });
            if let Some(reason) = &plan.non_accettazione {
                line["non_accettazione"] = reason.as_str().into();
            }
            r.write(&line)?;
        }
        self.rate.note(&plan.user, Instant::now());
        let c = &self.counters;
        c.accepted.fetch_add(1, Ordering::Relaxed);
        if plan.drop {
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
        match plan.non_accettazione {
            Some(_) => {
                c.non_accettazione.fetch_add(1, Ordering::Relaxed);
            }
            None => plan.rcpts.iter().for_each(|(_, d)| c.count(d)),
        }
        c.log("accepted");
        Ok(())
    }
}

/// What happens to a submission after the SMTP transaction: receipts,
/// envelopes, delivery receipts.
async fn process(sim: Arc<Sim>, plan: Plan, body: Vec<u8>) {
    let Plan { id, user, rcpts, subject, msgid, non_accettazione, .. } = plan;
    let sub = Submission {
        sender: user.clone(),
        recipients: rcpts.iter().map(|(r, d)| (r.clone(), d.certified())).collect(),
        original: body,
        subject,
        msgid,
        identificativo: id.clone(),
        at: Utc::now(),
    };
    let Some(sender_box) = sim.cfg.mailbox(&user).cloned() else {
        tracing::warn!(%user, "sender has no simulated mailbox: receipts dropped");
        return;
    };
    if let Some(reason) = non_accettazione {
        tracing::info!(%id, %reason, "non-accettazione");
        sim.send(&sender_box, &sub, Notice::NonAccettazione { reason }).await;
        return;
    }
    let addresses: Vec<&str> = rcpts.iter().map(|r| r.0.as_str()).collect();
    tracing::info!(%id, sender = %user, recipients = ?addresses, "accettazione");
    sim.send(&sender_box, &sub, Notice::Accettazione).await;
    // (wait after acceptance, what to send), in recipient order.
    let mut later: Vec<(Duration, Notice)> = Vec::new();
    for (rcpt, dest) in &rcpts {
        let recipient = rcpt.clone();
        let (delay, notice) = match *dest {
            Dest::NotPec => continue,
            Dest::Own => {
                let notice = match sim.own_delivery(rcpt, &sub).await {
                    Ok(()) => Notice::Consegna { recipient },
                    Err(reason) => Notice::ErroreConsegna { recipient, reason },
                };
                (sim.cfg.receipt_delay, notice)
            }
            // Another provider's recipient: no envelope to keep anywhere,
            // only the scripted receipt for the sender.
            Dest::Remote { outcome, delay } => {
                let notice = match outcome {
                    Outcome::Delivered => Notice::Consegna { recipient },
                    Outcome::Full | Outcome::FullOnce => Notice::ErroreConsegna { recipient, reason: "5.2.2 - Casella piena".into() },
                    Outcome::Unknown => {
                        Notice::ErroreConsegna { recipient, reason: "5.1.1 - Utente non riconosciuto".into() }
                    }
                    Outcome::Late => Notice::PreavvisoErroreConsegna {
                        recipient,
                        reason: "Nessuna ricevuta dal gestore del destinatario entro 12 ore".into(),
                    },
                };
                (delay.unwrap_or(sim.cfg.receipt_delay), notice)
            }
        };
        later.push((delay, notice));
    }
    // Stable: the same delay keeps recipient order.
    later.sort_by_key(|l| l.0);
    let mut waited = Duration::ZERO;
    for (delay, notice) in later {
        if delay > waited {
            tokio::time::sleep(delay - waited).await;
            waited = delay;
        }
        sim.send(&sender_box, &sub, notice).await;
    }
}

impl Sim {
    /// Deliver the envelope to `rcpt` on one of the simulator's own
    /// domains; `Err` is the non-delivery reason.
    async fn own_delivery(&self, rcpt: &str, sub: &Submission) -> Result<(), String> {
        let fail_random = self.cfg.failure_rate > 0.0 && rand::random::<f64>() < self.cfg.failure_rate;
        match self.cfg.mailbox(rcpt) {
            None => Err("5.1.1 - Utente non riconosciuto".to_string()),
            Some(_) if fail_random => Err("4.4.7 - Consegna non riuscita (guasto simulato)".to_string()),
            Some(mb) => match self.is_full(mb).await {
                Ok(true) => {
                    tracing::info!(%rcpt, quota = ?mb.quota_messages, "recipient mailbox full: delivery refused");
                    Err("5.2.2 - Casella piena".to_string())
                }
                Err(e) => {
                    tracing::warn!(error = %e, %rcpt, "cannot count the recipient's messages");
                    Err("5.2.0 - Casella non raggiungibile".to_string())
                }
                Ok(false) => match build::build(&self.pki, &self.provider, sub, &Notice::Envelope, Utc::now()) {
                    Ok(env) => self.deliver(mb, env).await.map_err(|e| {
                        tracing::warn!(error = %e, %rcpt, "envelope delivery failed");
                        "5.2.0 - Casella non raggiungibile".to_string()
                    }),
                    Err(e) => Err(format!("5.3.0 - {e}")),
                },
            },
        }
    }
}

impl Sim {
    async fn send(&self, to: &SimMailbox, sub: &Submission, notice: Notice) {
        match build::build(&self.pki, &self.provider, sub, &notice, Utc::now()) {
            Ok(msg) => {
                if let Err(e) = self.deliver(to, msg).await {
                    tracing::error!(error = %e, mailbox = %to.address, "cannot deliver a receipt");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot build a receipt"),
        }
    }
}

impl Sim {
    /// Put `msg` in the INBOX of `to`: the simulator's own mailbox, or an
    /// APPEND to its IMAP server.
    /// Is `mb` at its simulated quota?
    async fn is_full(&self, mb: &SimMailbox) -> Result<bool, String> {
        let Some(limit) = mb.quota_messages else { return Ok(false) };
        let n = match &self.own {
            Some(own) => own.inbox_count(&mb.address).map_err(|e| e.to_string())?,
            None => deliver::inbox_count(mb).await.map_err(|e| e.to_string())?,
        };
        Ok(n >= limit)
    }

    async fn deliver(&self, to: &SimMailbox, msg: Vec<u8>) -> Result<(), String> {
        match &self.own {
            Some(own) => own.deliver(&to.address, msg).await.map_err(|e| e.to_string()),
            None => deliver::append(to, &msg).await.map_err(|e| e.to_string()),
        }
    }
}

/// `pecgate sim-provider`: run until SIGINT/SIGTERM.
pub async fn run(cfg: impl Into<SimSettings>) -> Result<(), SimError> {
    let (stop, rx) = watch::channel(false);
    let running = start(cfg, rx).await?;
    println!("simulator listening on {} (CA: {})", running.addr, running.ca_file.display());
    if let Some(a) = running.imap_addr {
        println!("simulated mailboxes served over IMAP on {a}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| SimError::Bind { addr: "signal".into(), source })?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop.send(true);
    let _ = running.task.await;
    Ok(())
}

#[cfg(test)]
mod tests;
