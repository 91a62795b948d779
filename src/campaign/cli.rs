//! `pecgate campaign …`: the command line over the running daemon's HTTP
//! API (the daemon is never stopped to run a campaign). It logs in as a
//! gateway user (`--user`, the password from `PECGATE_PASSWORD` or asked
//! for), uploads the files it is given and prints what the daemon answers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Subcommand)]
pub enum CampaignCmd {
    /// Create a campaign: one certified notice per row of the recipients'
    /// CSV (`;` or `,`, UTF-8 or Windows-1252), rendered from the template
    /// (a `Subject:` line, a blank line, the text with `{{column}}`
    /// placeholders; optionally `--- html ---` and an HTML version). Every
    /// row is checked first; with any bad row nothing is queued (each is
    /// listed with its line), unless --skip-invalid.
    Create {
        #[command(flatten)]
        conn: Conn,
        /// The mailbox (alias) the notices are sent from.
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        recipients: PathBuf,
        #[arg(long)]
        template: PathBuf,
        /// A file attached to every notice (repeat for more).
        #[arg(long = "attach")]
        attach: Vec<PathBuf>,
        /// The column holding each recipient's own attachments (paths,
        /// `|`-separated, relative to the CSV's directory).
        #[arg(long)]
        attachment_column: Option<String>,
        /// The column with the PEC address (default: pec, email, indirizzo…).
        #[arg(long)]
        address_column: Option<String>,
        /// The column that identifies a row in the report (default: the first other column).
        #[arg(long)]
        key_column: Option<String>,
        /// When every notice must be delivered (2027-01-31 or RFC 3339).
        #[arg(long)]
        deadline: Option<String>,
        /// Queue the valid rows; write the others to --rejected.
        #[arg(long)]
        skip_invalid: bool,
        /// Where --skip-invalid writes the rejected rows (CSV).
        #[arg(long, default_value = "rejected.csv")]
        rejected: PathBuf,
        /// Start sending at once.
        #[arg(long)]
        start: bool,
    },
    /// The campaigns of the mailboxes you may send from.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Counts by state, rate, ETA and deadline risk.
    Status {
        #[command(flatten)]
        conn: Conn,
        id: String,
        /// Print again every 10 seconds until nothing is waiting.
        #[arg(long)]
        follow: bool,
    },
    /// Start sending.
    Start {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    Pause {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    Resume {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Stop for good: queued notices are never sent.
    Cancel {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Decide an ambiguous notice (the provider may or may not have it):
    /// --resend, or --sent when you know it went out.
    Resolve {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        notice: u32,
        #[arg(long, conflicts_with = "sent", required_unless_present = "sent")]
        resend: bool,
        #[arg(long)]
        sent: bool,
    },
    /// The evidence for one recipient: the notice as sent and the
    /// provider's signed receipts about it, as .eml files, with their
    /// SHA-256 in SHA256SUMS (`sha256sum -c SHA256SUMS` checks them).
    Evidence {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        recipient: String,
        /// The directory to write (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// One row per recipient: state, provider id, accepted and delivered
    /// times (the delivery receipt's time is the legal notification),
    /// failure as the provider wrote it, SHA-256 of the notice.
    Report {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl", "html"])]
        format: String,
        /// Only the recipients who need registered mail (failed, or not
        /// delivered by the deadline), as their original CSV rows.
        #[arg(long)]
        fallback: bool,
        #[arg(long)]
        deadline: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// How to reach the daemon.
#[derive(clap::Args)]
pub struct Conn {
    #[arg(long, short, env = "PECGATE_CONFIG")]
    config: PathBuf,
    /// The gateway user (the password from PECGATE_PASSWORD, else asked for).
    #[arg(long, env = "PECGATE_USER")]
    user: String,
}

impl Conn {
    pub(crate) fn new(config: PathBuf, user: String) -> Conn {
        Conn { config, user }
    }
}

pub(crate) struct Client {
    addr: String,
    auth: String,
    /// `[http] tls = true`: HTTPS, accepting exactly the `[tls]`
    /// certificate (the daemon's own, on this host).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<Client> {
        let cfg = crate::daemon::load_config(&conn.config)?;
        let Some(http) = cfg.http else {
            bail!(
                "{}: the daemon's HTTP API is off; add [http] listen = \"127.0.0.1:9180\" and restart it",
                conn.config.display()
            )
        };
        let password = match std::env::var("PECGATE_PASSWORD") {
            Ok(p) => p,
            Err(_) => rpassword::prompt_password(format!("password for {}: ", conn.user))?,
        };
        let auth = openssl::base64::encode_block(format!("{}:{password}", conn.user).as_bytes());
        let tls = match (http.tls, &cfg.tls) {
            (true, Some(t)) => Some(crate::tls::client_config_pinned(&t.cert)?),
            (true, None) => bail!("[http] tls = true needs [tls]"),
            (false, _) => None,
        };
        // A listener on every address is reached on loopback.
        let addr = match http.listen.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_unspecified() => {
                let ip: std::net::IpAddr =
                    if a.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
                std::net::SocketAddr::new(ip, a.port()).to_string()
            }
            _ => http.listen,
        };
        Ok(Client { addr, auth: format!("Basic {auth}"), tls })
    }

    /// A connection to the daemon's API, for one request or several in a
    /// row (HTTP/1.1 keep-alive: one TLS handshake for many uploads).
    async fn connect(&self) -> anyhow::Result<Link> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("cannot reach the daemon's API at {} (is pecgate serve running?)", self.addr))?;
        let send = match &self.tls {
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(
                    self.addr
                        .rsplit_once(':')
                        .map(|(h, _)| h.trim_matches(['[', ']']))
                        .unwrap_or("localhost")
                        .to_string(),
                )
                .unwrap_or_else(|_| rustls::pki_types::ServerName::try_from("localhost").expect("a valid name"));
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("HTTPS handshake with the daemon at {}", self.addr))?;
                let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                send
            }
            None => {
                let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                send
            }
        };
        Ok(Link { send })
    }

    async fn call(&self, method: &str, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
        self.connect().await?.call(self, method, path, body).await
    }

    /// A JSON call; an error status becomes an error with the daemon's words.
    pub(crate) async fn json(&self, method: &str, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let (status, b) = self.call(method, path, body).await?;
        answer(status, &b)
    }

    async fn upload(&self, path: &Path) -> anyhow::Result<String> {
        Ok(self.upload_all(vec![path.to_path_buf()]).await?.pop().unwrap_or_default())
    }

    /// Upload `paths` (a campaign's per-recipient attachments: tens of
    /// thousands) on [`UPLOADERS`] connections at once, each kept for
    /// its share; their hashes, in order. While one upload waits for the
    /// daemon's fsync, others travel.
    async fn upload_all(&self, paths: Vec<PathBuf>) -> anyhow::Result<Vec<String>> {
        let queue = std::sync::Mutex::new(paths.iter().enumerate());
        let worker = || async {
            let mut link: Option<Link> = None;
            let mut done = Vec::new();
            loop {
                let Some((i, path)) = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next() else {
                    return anyhow::Ok(done);
                };
                let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let l = match &mut link {
                    Some(l) => l,
                    None => link.insert(self.connect().await?),
                };
                let (status, b) = l
                    .call(self, "POST", "/api/uploads", bytes)
                    .await
                    .with_context(|| format!("uploading {}", path.display()))?;
                let v = answer(status, &b).with_context(|| format!("uploading {}", path.display()))?;
                done.push((i, v["sha256"].as_str().unwrap_or_default().to_string()));
            }
        };
        let parts = futures::future::try_join_all((0..UPLOADERS.min(paths.len().max(1))).map(|_| worker())).await?;
        let mut all: Vec<(usize, String)> = parts.into_iter().flatten().collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, h)| h).collect())
    }
}

/// How many uploads travel at once.
const UPLOADERS: usize = 4;

/// One connection to the daemon's API.
struct Link {
    send: hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
}

impl Link {
    async fn call(&mut self, c: &Client, method: &str, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &c.addr)
            .header("authorization", &c.auth)
            .body(Full::new(bytes::Bytes::from(body)))?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, body))
    }
}

/// The daemon's answer as JSON; an error status becomes an error with its words.
fn answer(status: u16, b: &[u8]) -> anyhow::Result<Value> {
    let v: Value = serde_json::from_slice(b).unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(b) }));
    if status >= 400 {
        bail!(Refused(status, v));
    }
    Ok(v)
}

/// Percent-encoding for a query string value.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The daemon said no: its status and answer.
#[derive(Debug)]
struct Refused(u16, Value);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.1["error"].as_str().unwrap_or("refused"), self.0)?;
        if let Some(rows) = self.1["rows"].as_array() {
            for r in rows {
                write!(f, "\n  line {}: {}", r["line"], r["reason"].as_str().unwrap_or(""))?;
            }
        }
        Ok(())
    }
}

/// The per-recipient attachment paths the CSV names (to upload them).
fn row_files(csv: &Path, column: &str, address: Option<&str>) -> anyhow::Result<HashMap<String, PathBuf>> {
    let bytes = std::fs::read(csv).with_context(|| format!("reading {}", csv.display()))?;
    let opts = super::input::InputOptions {
        address_column: address.map(str::to_string),
        key_column: None,
        attachment_column: Some(column.to_string()),
    };
    let list = super::input::read(&bytes, &opts).map_err(|e| anyhow::anyhow!("{}: {e}", csv.display()))?;
    let dir = csv.parent().unwrap_or(Path::new("."));
    let mut out = HashMap::new();
    for r in &list.rows {
        for p in &r.attachments {
            out.entry(p.clone()).or_insert_with(|| dir.join(p));
        }
    }
    Ok(out)
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn run(cmd: CampaignCmd) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: CampaignCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        CampaignCmd::Create {
            conn,
            mailbox,
            name,
            recipients,
            template,
            attach,
            attachment_column,
            address_column,
            key_column,
            deadline,
            skip_invalid,
            rejected,
            start,
        } => {
            let c = Client::new(&conn)?;
            let deadline =
                deadline.as_deref().map(super::api::parse_deadline).transpose().map_err(anyhow::Error::msg)?;
            let mut files = HashMap::new();
            let mut missing = Vec::new();
            if let Some(col) = &attachment_column {
                let mut found = Vec::new();
                for (written, path) in row_files(&recipients, col, address_column.as_deref())? {
                    match std::fs::metadata(&path) {
                        Ok(_) => found.push((written, path)),
                        // The daemon lists the rows whose file is missing.
                        Err(e) => missing.push(format!("{}: {e}", path.display())),
                    }
                }
                let (written, paths): (Vec<String>, Vec<PathBuf>) = found.into_iter().unzip();
                files.extend(written.into_iter().zip(c.upload_all(paths).await?));
            }
            let mut attachments = Vec::new();
            for a in &attach {
                let name = a.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                attachments.push((name, c.upload(a).await?));
            }
            let body = json!({
                "mailbox": mailbox, "name": name,
                "recipients": c.upload(&recipients).await?, "template": c.upload(&template).await?,
                "attachments": attachments, "files": files,
                "attachment_column": attachment_column, "address_column": address_column, "key_column": key_column,
                "deadline": deadline, "skip_invalid": skip_invalid, "start": start,
            });
            for m in &missing {
                eprintln!("cannot read an attachment: {m}");
            }
            match c.json("POST", "/api/campaigns", body.to_string().into_bytes()).await {
                Ok(v) => {
                    if let Some(csv) = v["rejected_csv"].as_str() {
                        std::fs::write(&rejected, csv).with_context(|| format!("writing {}", rejected.display()))?;
                        eprintln!(
                            "{} row(s) left out, written to {}",
                            v["rejected"].as_array().map_or(0, Vec::len),
                            rejected.display()
                        );
                    }
                    println!(
                        "campaign {} created: {} notices queued{}",
                        v["id"].as_str().unwrap_or("?"),
                        v["queued"],
                        if start { ", sending" } else { " (start it with `pecgate campaign start`)" }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        CampaignCmd::List { conn } => {
            let v = Client::new(&conn)?.json("GET", "/api/campaigns", Vec::new()).await?;
            for c in v["campaigns"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:<9} {:>7} notices  {}",
                    c["id"].as_str().unwrap_or(""),
                    c["mailbox"].as_str().unwrap_or(""),
                    c["status"].as_str().unwrap_or(""),
                    c["notices"],
                    c["name"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Status { conn, id, follow } => {
            let c = Client::new(&conn)?;
            loop {
                let v = c.json("GET", &format!("/api/campaigns/{id}"), Vec::new()).await?;
                print(&v);
                if !follow || v["waiting"].as_u64() == Some(0) {
                    return Ok(ExitCode::SUCCESS);
                }
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            }
        }
        CampaignCmd::Start { conn, id } => order(&conn, &id, "start").await,
        CampaignCmd::Pause { conn, id } => order(&conn, &id, "pause").await,
        CampaignCmd::Resume { conn, id } => order(&conn, &id, "resume").await,
        CampaignCmd::Cancel { conn, id } => order(&conn, &id, "cancel").await,
        CampaignCmd::Resolve { conn, id, notice, resend, .. } => {
            let body = json!({ "notice": notice, "action": if resend { "resend" } else { "sent" } });
            print(
                &Client::new(&conn)?
                    .json("POST", &format!("/api/campaigns/{id}/resolve"), body.to_string().into_bytes())
                    .await?,
            );
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Evidence { conn, id, recipient, out } => {
            let c = Client::new(&conn)?;
            let q = format!("/api/campaigns/{id}/evidence?recipient={}", recipient.replace('+', "%2B"));
            let v = c.json("GET", &q, Vec::new()).await?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut sums = String::new();
            for f in v["files"].as_array().into_iter().flatten() {
                let (name, sha) = (f["name"].as_str().unwrap_or("file.eml"), f["sha256"].as_str().unwrap_or(""));
                let bytes = openssl::base64::decode_block(f["eml"].as_str().unwrap_or(""))?;
                if crate::store::blobs::sha256_hex(&bytes) != sha {
                    bail!("{name}: the bytes received do not match their SHA-256 {sha}");
                }
                std::fs::write(out.join(name), &bytes).with_context(|| format!("writing {name}"))?;
                sums.push_str(&format!("{sha}  {name}\n"));
            }
            std::fs::write(out.join("SHA256SUMS"), &sums)?;
            print!("{sums}");
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Report { conn, id, format, fallback, deadline, out } => {
            let c = Client::new(&conn)?;
            let mut q = format!("/api/campaigns/{id}/report?format={format}");
            if fallback {
                q.push_str("&fallback=1");
            }
            if let Some(d) = deadline {
                let d = super::api::parse_deadline(&d).map_err(anyhow::Error::msg)?;
                q.push_str(&format!("&deadline={}", d.to_rfc3339().replace('+', "%2B")));
            }
            let (status, body) = c.call("GET", &q, Vec::new()).await?;
            if status >= 400 {
                bail!("{}", String::from_utf8_lossy(&body));
            }
            match out {
                Some(p) => std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&body)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn order(conn: &Conn, id: &str, what: &str) -> anyhow::Result<ExitCode> {
    let v = Client::new(conn)?.json("POST", &format!("/api/campaigns/{id}/{what}"), Vec::new()).await?;
    println!("campaign {id}: {}", v["status"].as_str().unwrap_or("?"));
    Ok(ExitCode::SUCCESS)
}
