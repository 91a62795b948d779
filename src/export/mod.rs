//! Submission packages for conservation (issue 17): `pecgate export`
//! writes a mailbox's archived messages with their receipts, metadata,
//! audit records and newest anchor token into a directory or a ZIP file
//! that an auditor checks with `sha256sum` and `openssl` alone;
//! `pecgate export verify` checks one.
//!
//! It reads the journal and the blobs read-only (`JournalReader`,
//! `BlobReader`), so it runs beside the daemon; the `exported` record that
//! makes `--since-last` continue where the last export stopped is
//! committed by the store directly when the daemon is stopped, or posted
//! to the daemon's `POST /api/exports` when it runs.
//!
//! - `plan`: what the package holds, from one pass over the journal.
//! - `write`: the files (metadata, `index.xml`, `README.txt`, `SHA256SUMS`).
//! - `package`: directory or ZIP, staged and renamed into place.
//! - `verify`: the checks of `export verify`.
//! - `api`: the daemon's endpoint.
//!
//! The layout is described in `docs/conservation.md`.

pub mod api;
pub mod package;
pub mod plan;
pub mod verify;
pub mod write;
pub mod xml;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::store::{BlobReader, JournalReader, StoreError};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExportCmd {
    #[command(subcommand)]
    pub action: Option<ExportAction>,
    #[command(flatten)]
    pub make: Make,
}

#[derive(clap::Subcommand)]
pub enum ExportAction {
    /// Check a package (directory or .zip): every file against SHA256SUMS
    /// and index.xml, none missing or extra, the audit records' hashes and
    /// links, every message named by an archived record, the anchor token
    /// against its record. Exit 1 naming the first bad file.
    Verify {
        path: PathBuf,
        /// Also check the package against this archive's journal: an
        /// `exported` record names it, and its audit records are the
        /// journal's.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Write a submission package of one mailbox (see docs/conservation.md).
#[derive(clap::Args)]
pub struct Make {
    #[arg(long, short, env = "PECGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The mailbox (alias).
    #[arg(long)]
    pub mailbox: Option<String>,
    /// Only messages archived from this day on (YYYY-MM-DD, UTC). A
    /// --from/--to export is partial: --since-last does not count it.
    #[arg(long)]
    pub from: Option<String>,
    /// Only messages archived up to this day, included (YYYY-MM-DD, UTC).
    #[arg(long)]
    pub to: Option<String>,
    /// Exactly the messages the previous export did not hold (the
    /// journal records where it stopped). Without it and without
    /// --from/--to: every message of the mailbox.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub since_last: bool,
    /// A directory (created; an existing one must be empty) or FILE.zip.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The gateway user recording the export through the daemon's API
    /// when it runs (role audit; the password from PECGATE_PASSWORD, else
    /// asked for).
    #[arg(long, env = "PECGATE_USER")]
    pub user: Option<String>,
}

pub fn run(cmd: ExportCmd) -> anyhow::Result<ExitCode> {
    match cmd.action {
        Some(ExportAction::Verify { path, config }) => verify_cmd(&path, config.as_deref()),
        None => make(cmd.make),
    }
}

fn verify_cmd(path: &Path, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let r = match verify::verify(path) {
        Ok(r) => r,
        Err(b) => {
            eprintln!("pecgate export verify: {b}");
            return Ok(ExitCode::from(1));
        }
    };
    let anchor = match r.anchor {
        Some((seq, time, true)) => {
            format!("; anchor: record {seq} time-stamped at {time}, token verified against the package's TSA CA")
        }
        Some((seq, time, false)) => {
            format!("; anchor: record {seq} time-stamped at {time} (no TSA CA in the package: its signature is not checked)")
        }
        None => "; no anchor token".into(),
    };
    println!(
        "package OK: {} files, {} messages, {} audit records{anchor}; index.xml SHA-256 {}",
        r.files, r.messages, r.records, r.package
    );
    if let Some(c) = config {
        let cfg = crate::daemon::load_config(c)?;
        let journal = JournalReader::open_read_only(&cfg.store.data_dir);
        match verify::against_journal(&journal, &r) {
            Ok(seq) => println!(
                "recorded: journal record {seq} names this package, and its {} records are the journal's",
                r.hashes.len()
            ),
            Err(b) => {
                eprintln!("pecgate export verify: {b}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bar(template: &str, len: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn day(s: &str, what: &str) -> anyhow::Result<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").with_context(|| format!("{what} {s:?}: not a YYYY-MM-DD date"))
}

/// Where the `exported` record goes.
enum Recorder {
    Store(crate::store::Store),
    Daemon(crate::campaign::cli::Client),
}

fn make(m: Make) -> anyhow::Result<ExitCode> {
    let Some(config) = m.config.clone() else { bail!("--config (or PECGATE_CONFIG): the daemon's configuration file") };
    let Some(alias) = m.mailbox.clone() else { bail!("--mailbox: the mailbox (alias) to export") };
    let Some(out) = m.out.clone() else { bail!("--out: the package's directory or FILE.zip") };
    let cfg = crate::daemon::load_config(&config)?;
    let Some(mcfg) = cfg.mailboxes.iter().find(|x| x.alias == alias) else {
        bail!("no mailbox {alias:?} in {}", config.display())
    };
    let partial = m.from.is_some() || m.to.is_some();
    let range = if m.since_last {
        plan::Range::SinceLast
    } else if partial {
        let since = m.from.as_deref().map(|s| day(s, "--from")).transpose()?;
        let until = m.to.as_deref().map(|s| day(s, "--to")).transpose()?;
        let midnight = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        plan::Range::Dates {
            since: since.and_then(midnight),
            until: until.and_then(|d| d.succ_opt()).and_then(midnight),
        }
    } else {
        plan::Range::All
    };
    let trust = match &cfg.pec.trust_store {
        Some(p) => {
            let pem = std::fs::read(p).with_context(|| format!("pec.trust_store {}", p.display()))?;
            Some(
                crate::pec::signature::TrustStore::from_pem(&pem)
                    .with_context(|| format!("pec.trust_store {}", p.display()))?,
            )
        }
        None => None,
    };
    let tsa_ca = match &cfg.anchor {
        Some(a) => Some(std::fs::read(&a.ca_file).with_context(|| format!("anchor.ca_file {}", a.ca_file.display()))?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _guard = rt.enter();
    // Who records the export: the store itself if the daemon is stopped
    // (it is then held until the export is recorded), else the daemon.
    let recorder = match crate::daemon::open_store(&cfg) {
        Ok(s) => Recorder::Store(s),
        Err(e) if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Locked(_))) => {
            let Some(user) = m.user.clone() else {
                bail!("the daemon is running: give --user (or PECGATE_USER), a gateway user with the audit role, to record the export through its API")
            };
            Recorder::Daemon(crate::campaign::cli::Client::new(&crate::campaign::cli::Conn::new(config.clone(), user))?)
        }
        Err(e) => return Err(e),
    };
    let submitter = m.user.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cli".into());
    let journal = JournalReader::open_read_only(&cfg.store.data_dir);
    let jbar = bar("{bar:40} {bytes}/{total_bytes} of the journal ({eta})", 0);
    let plan = plan::plan(&journal, &alias, range, |done, total| {
        jbar.set_length(total);
        jbar.set_position(done);
    })?;
    jbar.finish_and_clear();
    if plan.documents.is_empty() {
        println!(
            "nothing to export: {alias} has no message {} (journal records {}..={}); no package written, nothing recorded",
            if m.since_last { "archived since the last export" } else { "in that range" },
            plan.first_seq(),
            plan.head
        );
        if let Recorder::Store(s) = recorder {
            s.close()?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let cluster = cfg.store.cluster_options().map_err(anyhow::Error::msg)?;
    let blobs = BlobReader::open(&cfg.store.data_dir, cluster.as_ref()).context("opening the archive's blobs")?;
    let opts = write::Options {
        trust: trust.as_ref(),
        tsa_ca,
        address: mcfg.address.clone(),
        submitter: submitter.clone(),
        created: chrono::Utc::now(),
        partial,
        dates: (m.from.clone(), m.to.clone()),
    };
    let total = plan.bytes();
    let pbar = bar("{bar:40} {bytes}/{total_bytes} of messages, {bytes_per_sec}, ETA {eta}", total);
    let mut sink = package::Sink::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let written = match write::write(&plan, &blobs, &journal, &mut sink, &opts, |d| pbar.set_position(d)) {
        Ok(w) => w,
        Err(e) => {
            sink.abandon();
            return Err(anyhow::Error::new(e).context(format!("writing {}", out.display())));
        }
    };
    let path = sink.finish().with_context(|| format!("finishing {}", out.display()))?;
    pbar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let rec = api::Exported {
        mailbox: alias.clone(),
        first_seq: plan.first_seq(),
        last_seq: plan.head,
        messages: plan.messages(),
        package: written.package.clone(),
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        partial,
    };
    let recorded = match recorder {
        Recorder::Store(s) => {
            let r = rt.block_on(api::record(&s, &submitter, None, "cli", rec)).map_err(anyhow::Error::from);
            s.close()?;
            r
        }
        Recorder::Daemon(c) => rt
            .block_on(c.json("POST", "/api/exports", serde_json::to_vec(&rec)?))
            .map(|v| v["record"].as_u64().unwrap_or(0)),
    };
    println!(
        "exported {} messages ({} documents, {:.1} MB) of {alias}, journal records {}..={}, to {} in {:.1} s ({:.0} MB/s); index.xml SHA-256 {}",
        plan.messages(),
        plan.documents.len(),
        total as f64 / 1e6,
        plan.first_seq(),
        plan.head,
        path.display(),
        secs,
        total as f64 / 1e6 / secs.max(1e-9),
        written.package
    );
    match recorded {
        Ok(seq) => {
            println!(
                "recorded as journal record {seq}{}",
                if partial { " (partial: --since-last does not count it)" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "pecgate export: the package is complete but the export was not recorded: {e:#}\n\
                 (the next --since-last export will hold these messages again)"
            );
            Ok(ExitCode::from(2))
        }
    }
}
