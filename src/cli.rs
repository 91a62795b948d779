//! The `pecgate` command line.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::{audit, config, daemon, store};

#[derive(Parser)]
#[command(
    name = "pecgate",
    version,
    about = "Mail gateway for Italian certified email (PEC)",
    long_about = "pecgate sits between ordinary mail clients and PEC providers. It moves every \
message off the provider into a durable, hash-chained archive (so provider mailboxes never fill), \
keeps an audit trail of every operation, and serves the archive to staff with their own logins.\n\n\
Start with `pecgate check-config --config /etc/pecgate/pecgate.toml`, then \
`pecgate serve --config /etc/pecgate/pecgate.toml` (or the systemd unit)."
)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway: sync every configured mailbox into the archive.
    Serve {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file; print every problem with its key.
    CheckConfig {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
    },
    /// Hash a password for a gateway user (argon2id PHC string).
    ///
    /// Reads the password from standard input when it is not a terminal,
    /// otherwise prompts for it twice.
    HashPassword,
    /// Per mailbox: archived messages, last sync, messages on the provider,
    /// quota, last error.
    Status {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The audit chain.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// The archive itself.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Several nodes on one archive (`[store] backend = "cluster"`).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Run a simulated PEC provider (SMTP submission, signed receipts and
    /// envelopes, delivered into mailboxes it serves itself with
    /// `[mailstore]`, or by IMAP APPEND into a real IMAP server). For tests
    /// and trials; never for real mail.
    SimProvider {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Try pecgate in one command, nothing to install: a simulated PEC
    /// provider (its mailboxes in a store of its own, served over IMAP on
    /// loopback), the gateway with two mailboxes and two users, self-signed
    /// TLS; prints how to connect Thunderbird, mbsync and swaks.
    Demo {
        /// Keep everything here (default: a temporary directory removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listeners on base+993 (IMAPS), +143 (IMAP), +465 (SMTPS), +587 (submission).
        #[arg(long, default_value_t = 10000)]
        base_port: u16,
    },
    /// PEC messages.
    #[command(subcommand)]
    Pec(PecCmd),
    /// Routing rules: which office or person an arriving certified message
    /// is assigned to (`[[rule]]`, `[[office]]` in the configuration).
    #[command(subcommand)]
    Rules(RulesCmd),
    /// The handling of incoming certified messages (new, assigned, taken,
    /// done).
    #[command(subcommand)]
    Handling(HandlingCmd),
    /// Campaigns: thousands of individual certified notices from one
    /// mailbox, sent by the running daemon at the mailbox's rate, each
    /// tracked to its delivery receipt (talks to the daemon's HTTP API).
    #[command(subcommand)]
    Campaign(crate::campaign::cli::CampaignCmd),
    /// Full-text search across the mailboxes you may read (the daemon's
    /// HTTP API), ranked, with a snippet and the folder to look in; or
    /// `search reindex` to rebuild the index.
    Search(crate::fulltext::cli::SearchCmd),
    /// Legal holds: messages (by hash or search) or whole mailboxes that
    /// retention never removes while the hold stands (the daemon's API,
    /// role `hold`).
    #[command(subcommand)]
    Hold(crate::retention::cli::HoldCmd),
    /// Retention: what the next expiry run would remove (`plan`).
    #[command(subcommand)]
    Retention(crate::retention::cli::RetentionCmd),
    /// Submission package for conservation: a mailbox's messages with
    /// their receipts, metadata, audit records and newest anchor token
    /// (directory or .zip), checkable with sha256sum and openssl alone;
    /// or `export verify PATH` to check one.
    Export(crate::export::ExportCmd),
    /// Users: `users show NAME` prints what a user may do and where each
    /// grant comes from (a directory group, a `[[user]]` entry).
    #[command(subcommand)]
    Users(crate::directory::cli::UsersCmd),
    /// Mail clients that set themselves up: `autoconfig dns` prints the DNS
    /// records that point them at pecgate.
    #[command(subcommand)]
    Autoconfig(crate::autoconfig::cli::AutoconfigCmd),
    /// API tokens for applications (`Authorization: Bearer`): create (shown
    /// once, stored hashed), list, revoke.
    #[command(subcommand)]
    Token(crate::apitoken::TokenCmd),
    /// Write the man pages (pecgate.1 and one per command) into DIR, from
    /// this command line's own definition (the Debian package ships them).
    #[command(hide = true)]
    Man {
        #[arg(long)]
        out: PathBuf,
    },
}

/// `pecgate man`: `pecgate.1`, and `pecgate-COMMAND.1` for each command
/// (and `pecgate-COMMAND-SUB.1` for their subcommands).
fn write_man_pages(out: &std::path::Path) -> anyhow::Result<usize> {
    use clap::CommandFactory;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    fn render(cmd: clap::Command, name: String, out: &std::path::Path, n: &mut usize) -> anyhow::Result<()> {
        let cmd = cmd.name(name.clone());
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
        std::fs::write(out.join(format!("{name}.1")), buf)?;
        *n += 1;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            render(sub.clone(), format!("{name}-{}", sub.get_name()), out, n)?;
        }
        Ok(())
    }
    let mut n = 0;
    render(Cli::command(), "pecgate".into(), out, &mut n)?;
    Ok(n)
}

#[derive(Subcommand)]
pub enum RulesCmd {
    /// Show which rule matches a message and why, condition by condition,
    /// and what it would be assigned to.
    Test {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        /// The message as received (.eml: the provider's envelope).
        file: PathBuf,
        /// Only this mailbox's rules (default: every mailbox).
        #[arg(long)]
        mailbox: Option<String>,
    },
    /// Re-run the rules over a mailbox's archived INBOX messages that are
    /// still new (or not tracked yet, e.g. archived before handling
    /// existed): after adding or fixing a rule. It opens the archive, so
    /// the daemon must be stopped first (`systemctl stop pecgate`), also
    /// for --dry-run.
    Apply {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        mailbox: String,
        /// Count what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum HandlingCmd {
    /// The handling register: one row per message (received, sender,
    /// subject, rule, assigned/taken/done by whom and when, waiting and
    /// handling times, deadline met or missed) and a summary per office.
    /// Read from the journal: runs beside the daemon. Times are RFC 3339
    /// or YYYY-MM-DD (UTC); --since inclusive, --until exclusive, on the
    /// time received.
    Report {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        mailbox: Option<String>,
        /// An office name, or `none` for messages not assigned to one.
        #[arg(long)]
        office: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
        /// Judge deadlines and waiting times as of this time (default: now).
        #[arg(long)]
        now: Option<String>,
    },
}

/// How `handling report` prints the register.
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Jsonl,
    Html,
}

#[derive(Subcommand)]
pub enum PecCmd {
    /// Show what pecgate understands of one message: kind, daticert.xml
    /// fields, signature status, and for a receipt the message it refers to.
    Inspect {
        /// The message (.eml, raw RFC 5322 bytes).
        file: PathBuf,
        /// Check the signature against this PEM bundle of provider
        /// certificates (default: `pec.trust_store` of --config, if given).
        #[arg(long)]
        trust_store: Option<PathBuf>,
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Walk the whole chain; report the first broken record. Exit status 1
    /// if the chain is broken.
    Verify {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Records matching every given filter, in journal order. Times are
    /// RFC 3339 (`2024-05-01T09:00:00+02:00`) or `YYYY-MM-DD` (midnight
    /// UTC); `--since` is inclusive, `--until` exclusive.
    Query {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        /// Actor: a gateway user name, or `system`.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        mailbox: Option<String>,
        /// Operation: `login`, `archive`, `provider-delete`, `select`, …
        #[arg(long)]
        op: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
    },
    /// Write the records of a time range, verbatim, with the chain hashes at
    /// both ends, so an auditor can verify the excerpt on its own
    /// (`pecgate audit verify-export FILE`).
    Export {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check an export file: every record's hash and the chain between the
    /// hashes in its header. Exit status 1 if it does not verify.
    VerifyExport { file: PathBuf },
}

/// How `audit query` prints records.
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line (the record plus its hash).
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// The shared journal's head, each node and how far behind it its
    /// index is, and who holds each lease (who polls each provider
    /// mailbox). Reads PostgreSQL only: runs beside the daemons.
    Status {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Check that every indexed message has its blob (with --deep, that
    /// every blob still matches its hash). Exit status 1 on problems.
    Check {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        deep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the index from the journal alone (the daemon must be stopped).
    RebuildIndex {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
    },
    /// Pack the index files (index.redb, derived.redb) into as few pages as
    /// they need (the daemon must be stopped). The daemon does this itself
    /// when it stops, up to 2 GiB of index; larger ones are packed here.
    Compact {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
    },
    /// What the index holds, table by table: entries, the bytes of their
    /// keys and values, redb's bookkeeping and the unused part of its
    /// pages; and the index files' size per archived message (the daemon
    /// must be stopped).
    Stats {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Copy the archive of one machine (`--from`: a configuration with the
    /// local backend) into a cluster (`--to`: one with `backend =
    /// "cluster"`): every blob into the bucket, read back against its hash
    /// first, then the journal into PostgreSQL, each record checked against
    /// the chain. Or the other way (`--from` a cluster node's
    /// configuration, `--to` a local one): every blob and time-stamp token
    /// from the bucket and the journal from PostgreSQL into the data
    /// directory, each checked the same way; the index is built at the end.
    /// Resumable: run it again after an interruption; what the destination
    /// holds is checked, not copied again. Stop the daemon (or every node)
    /// that writes the source first.
    Migrate {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // imap-next opens an INFO span for every fragment its parser reads or
    // its encoder writes (every read of an IMAP session, every part of a
    // FETCH response), and the fmt layer allocates and formats each one;
    // they carry nothing pecgate's own logs lack, and at TRACE they would
    // log wire bytes (a LOGIN's password among them). Off unless RUST_LOG
    // names imap_next (issue 14).
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("imap_next")) {
        if let Ok(quiet) = "imap_next=warn".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pecgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Serve { config } => {
            let rt = runtime()?;
            let r = rt.block_on(daemon::serve(config));
            // The archive is closed by now; a blocking task still running
            // (a full-text pass over a large batch: derived data, redone
            // at the next start) must not keep the process from exiting.
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            r?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => Ok(check_config(&config)),
        Command::HashPassword => {
            let pw = read_password()?;
            println!("{}", crate::auth::hash_password(&pw)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config, json } => status(&config, json),
        Command::Audit(AuditCmd::Verify { config, json }) => {
            let cfg = daemon::load_config(&config)?;
            let journal = store::JournalReader::open_read_only(&cfg.store.data_dir);
            let (mut anchors, files) = crate::anchor::Collector::new(&journal)?;
            let v = audit::verify_collecting(&journal, &mut |r, h| anchors.see(r, h))?;
            let ca = match &cfg.anchor {
                Some(a) => {
                    Some(std::fs::read(&a.ca_file).with_context(|| format!("anchor.ca_file {}", a.ca_file.display()))?)
                }
                None => None,
            };
            // A cluster node that did not anchor reads the tokens from the bucket.
            let cluster = cfg.store.cluster_options().map_err(anyhow::Error::msg)?;
            let bucket = match &cluster {
                Some(c) => Some(store::BlobReader::open(&cfg.store.data_dir, Some(c))?),
                None => None,
            };
            let a = anchors.check(&journal, bucket.as_ref(), &files, v.records, ca.as_deref());
            let ok = v.broken.is_none() && a.broken.is_none();
            if json {
                let mut out = serde_json::to_value(&v)?;
                out["anchors"] = serde_json::to_value(&a)?;
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                if let Some(b) = &v.broken {
                    println!("audit chain BROKEN at {b}");
                    println!("{} records before it verify; chain head before the break: {}", v.records, v.head);
                } else {
                    println!("audit chain OK: {} records in {} segments; head {}", v.records, v.segments, v.head);
                }
                match (&a.broken, a.newest_record) {
                    (Some(b), _) => println!("anchors FAIL: {b}"),
                    (None, Some(n)) => println!(
                        "anchors OK: {} tokens; newest anchored record {n}, time-stamped {}; {} records after it not yet anchored",
                        a.tokens,
                        a.newest_time.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        a.unanchored_records
                    ),
                    (None, None) => println!("anchors: none (the chain has never been time-stamped: a cut at its end would not be detected)"),
                }
                if let Some(u) = &a.unchecked {
                    println!("note: {u}");
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Audit(AuditCmd::Query { config, user, mailbox, op, since, until, format }) => {
            let cfg = daemon::load_config(&config)?;
            let filter = audit::Filter {
                user,
                mailbox,
                op,
                since: since.as_deref().map(audit::parse_time).transpose()?,
                until: until.as_deref().map(audit::parse_time).transpose()?,
            };
            let bar = progress_bar(JOURNAL_PROGRESS);
            let journal = store::JournalReader::open_read_only(&cfg.store.data_dir);
            let found = audit::query(&journal, &filter, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            print_records(&found, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCmd::Export { config, since, until, out }) => {
            let cfg = daemon::load_config(&config)?;
            let since = since.as_deref().map(audit::parse_time).transpose()?;
            let until = until.as_deref().map(audit::parse_time).transpose()?;
            let file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let bar = progress_bar(JOURNAL_PROGRESS);
            let journal = store::JournalReader::open_read_only(&cfg.store.data_dir);
            let h = audit::export(&journal, since, until, &mut w, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            println!(
                "{} records (seq {}..{}) written to {}; chain from {} to {}",
                h.records,
                h.first_seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                h.last_seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                out.display(),
                h.prev_hash,
                h.last_hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCmd::VerifyExport { file }) => match audit::verify_export(&file) {
            Ok(h) => {
                println!("export OK: {} records; chain from {} to {}", h.records, h.prev_hash, h.last_hash);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("export does NOT verify: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Store(StoreCmd::Check { config, deep, json }) => {
            let cfg = daemon::load_config(&config)?;
            let s = daemon::open_store(&cfg)?;
            let rep = s.check(deep)?;
            s.close()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!(
                    "{} messages indexed, {} blobs ({} not referenced by the index), {} temporary files",
                    rep.messages, rep.blobs, rep.unreferenced_blobs, rep.tmp_files
                );
                for p in &rep.problems {
                    println!("PROBLEM: {p}");
                }
                if rep.problems.is_empty() {
                    println!("archive OK{}", if deep { " (every blob re-hashed)" } else { "" });
                }
            }
            Ok(if rep.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Cluster(ClusterCmd::Status { config, json }) => {
            let cfg = daemon::load_config(&config)?;
            let Some(opts) = cfg.store.cluster_options().map_err(anyhow::Error::msg)? else {
                anyhow::bail!("{}: [store] backend is not \"cluster\"", config.display());
            };
            let st = runtime()?.block_on(store::cluster::status(&opts)).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", st.table());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { data_dir, base_port } => {
            crate::demo::run(data_dir, base_port)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SimProvider { config } => {
            let cfg = crate::sim::SimConfig::load(&config)?;
            runtime()?.block_on(crate::sim::run(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        cmd @ (Command::Rules(_) | Command::Handling(_)) => handling_command(cmd),
        Command::Campaign(c) => crate::campaign::cli::run(c),
        Command::Search(c) => crate::fulltext::cli::run(c),
        Command::Hold(c) => crate::retention::cli::run_hold(c),
        Command::Retention(c) => crate::retention::cli::run_retention(c),
        Command::Export(c) => crate::export::run(c),
        Command::Users(c) => crate::directory::cli::run(c),
        Command::Autoconfig(c) => crate::autoconfig::cli::run(c),
        Command::Token(c) => crate::apitoken::run(c),
        Command::Man { out } => {
            let n = write_man_pages(&out)?;
            eprintln!("{n} man pages written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Pec(PecCmd::Inspect { file, trust_store, config, json }) => {
            let raw = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let trust_path = match (trust_store, config) {
                (Some(t), _) => Some(t),
                (None, Some(c)) => daemon::load_config(&c)?.pec.trust_store,
                (None, None) => None,
            };
            let trust = match &trust_path {
                Some(p) => {
                    let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                    Some(
                        crate::pec::signature::TrustStore::from_pem(&pem)
                            .with_context(|| format!("{}", p.display()))?,
                    )
                }
                None => None,
            };
            let report = crate::pec::inspect::inspect(&raw, trust.as_ref());
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::pec::inspect::render_text(&report));
                if trust.is_none() {
                    println!("(signature not checked against a trust store: pass --trust-store PEM)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Store(StoreCmd::Migrate { from, to, json }) => {
            let src = daemon::load_config(&from)?;
            let dst = daemon::load_config(&to)?;
            if let (Some(opts), crate::config::Backend::Local) =
                (src.store.cluster_options().map_err(anyhow::Error::msg)?, dst.store.backend)
            {
                return migrate_from_cluster(&opts, &dst, json);
            }
            if src.store.backend != crate::config::Backend::Local {
                anyhow::bail!("--from {}: [store] backend must be \"local\" (a data directory)", from.display());
            }
            let Some(opts) = dst.store.cluster_options().map_err(anyhow::Error::msg)? else {
                anyhow::bail!("--to {}: [store] backend must be \"cluster\"", to.display());
            };
            let what = format!("{} into the cluster", src.store.data_dir.display());
            migrating(&what, json, |progress| store::migrate::to_cluster(&src.store.data_dir, &opts, progress))
        }
        Command::Store(StoreCmd::Compact { config }) => {
            let cfg = daemon::load_config(&config)?;
            let started = std::time::Instant::now();
            let (before, after) = store::compact_index(&cfg.store.data_dir)?;
            let mb = |b: u64| b as f64 / 1e6;
            println!(
                "index files packed: {:.1} MB -> {:.1} MB in {:.1} s",
                mb(before),
                mb(after),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Store(StoreCmd::Stats { config, json }) => {
            let cfg = daemon::load_config(&config)?;
            let (tables, files) = store::index_stats(&cfg.store.data_dir)?;
            let messages = tables.iter().find(|t| t.table == "msgs").map_or(0, |t| t.entries);
            let per_message = (messages > 0).then(|| files as f64 / messages as f64);
            if json {
                let v = serde_json::json!({ "tables": tables, "files_bytes": files, "messages": messages,
                    "bytes_per_message": per_message });
                println!("{v:#}");
                return Ok(ExitCode::SUCCESS);
            }
            let mb = |b: u64| b as f64 / 1e6;
            println!(
                "{:<13} {:<13} {:>11} {:>10} {:>10} {:>10} {:>8}",
                "file", "table", "entries", "data MB", "meta MB", "unused MB", "B/entry"
            );
            for t in &tables {
                let each = (t.stored + t.metadata + t.fragmented).checked_div(t.entries).unwrap_or(0);
                println!(
                    "{:<13} {:<13} {:>11} {:>10.1} {:>10.1} {:>10.1} {:>8}",
                    t.file,
                    t.table,
                    t.entries,
                    mb(t.stored),
                    mb(t.metadata),
                    mb(t.fragmented),
                    each
                );
            }
            match per_message {
                Some(b) => println!("index files: {:.1} MB, {b:.0} bytes per message ({messages} messages)", mb(files)),
                None => println!("index files: {:.1} MB, no messages", mb(files)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Store(StoreCmd::RebuildIndex { config }) => {
            let cfg = daemon::load_config(&config)?;
            let bar = progress_bar(JOURNAL_PROGRESS);
            let started = std::time::Instant::now();
            let n = store::rebuild_index(&cfg.store.data_dir, &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "index rebuilt from {n} journal records in {secs:.1} s ({:.0} records/s)",
                n as f64 / secs.max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A progress bar on standard error, shown only on a terminal (hidden for
/// scripts and tests) and only for runs long enough to need it.
fn handling_command(cmd: Command) -> anyhow::Result<ExitCode> {
    use crate::handling::commands;
    match cmd {
        Command::Rules(RulesCmd::Test { config, file, mailbox }) => {
            let cfg = daemon::load_config(&config)?;
            print!("{}", commands::rules_test(&cfg, &file, mailbox.as_deref())?);
        }
        Command::Rules(RulesCmd::Apply { config, mailbox, dry_run, json }) => {
            let cfg = daemon::load_config(&config)?;
            let s = daemon::open_store(&cfg)?;
            let bar = progress_bar(MESSAGE_PROGRESS);
            let rep = runtime()?.block_on(commands::rules_apply(&cfg, &s, &mailbox, dry_run, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            }));
            bar.finish_and_clear();
            s.close()?;
            let rep = rep?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                println!(
                    "{mailbox}: {} certified messages examined; {} {} tracked, {} {} assigned, {} unchanged",
                    rep.examined,
                    rep.opened,
                    if dry_run { "would be newly" } else { "newly" },
                    rep.assigned,
                    if dry_run { "would be" } else { "now" },
                    rep.unchanged
                );
                for (rule, n) in &rep.by_rule {
                    println!("  {rule}: {n}");
                }
            }
        }
        Command::Handling(HandlingCmd::Report { config, mailbox, office, since, until, format, now }) => {
            let cfg = daemon::load_config(&config)?;
            let filter = commands::ReportFilter {
                mailbox,
                office,
                since: since.as_deref().map(audit::parse_time).transpose()?,
                until: until.as_deref().map(audit::parse_time).transpose()?,
            };
            let now = match now {
                Some(t) => audit::parse_time(&t)?,
                None => crate::handling::now(),
            };
            let rows = commands::report_rows(&cfg.store.data_dir, &filter, now)?;
            let f = match format {
                ReportFormat::Table => "table",
                ReportFormat::Csv => "csv",
                ReportFormat::Jsonl => "jsonl",
                ReportFormat::Html => "html",
            };
            print!("{}", crate::handling::register::render(&rows, f).map_err(anyhow::Error::msg)?);
        }
        _ => unreachable!("handling_command called with another command"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress through the journal (bytes).
const JOURNAL_PROGRESS: &str = "{bar:40} {bytes}/{total_bytes} of the journal ({eta})";

/// Progress through the messages of a mailbox.
const MESSAGE_PROGRESS: &str = "{bar:40} {pos}/{len} messages ({eta})";

/// A progress bar drawn with `template` on a terminal, nothing otherwise
/// (indicatif's default style if the template does not parse: see the test).
fn progress_bar(template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

const AUDIT_COLUMNS: [&str; 11] =
    ["seq", "time", "actor", "source", "proto", "op", "mailbox", "folder", "uids", "outcome", "hash"];

fn record_fields(f: &audit::Found) -> [String; 11] {
    let r = &f.record;
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    [
        r.seq.to_string(),
        r.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        r.actor.clone(),
        opt(&r.source),
        r.proto.clone(),
        r.op.clone(),
        opt(&r.mailbox.clone().or_else(|| r.event.mailbox().map(str::to_string))),
        opt(&r.folder),
        r.uids.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(" "),
        r.outcome.clone(),
        f.hash.clone(),
    ]
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn print_records(found: &[audit::Found], format: QueryFormat) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        QueryFormat::Jsonl => {
            for f in found {
                let mut v = serde_json::to_value(&f.record)?;
                v["hash"] = f.hash.clone().into();
                writeln!(out, "{v}")?;
            }
        }
        QueryFormat::Csv => {
            write!(out, "{}\r\n", AUDIT_COLUMNS.join(","))?;
            for f in found {
                let row: Vec<String> = record_fields(f).iter().map(|s| csv_field(s)).collect();
                write!(out, "{}\r\n", row.join(","))?;
            }
        }
        QueryFormat::Table => {
            // The hash is long and for machines; the table leaves it out.
            let rows: Vec<[String; 11]> = found.iter().map(record_fields).collect();
            let mut width = AUDIT_COLUMNS.map(str::len);
            for r in &rows {
                for (w, c) in width.iter_mut().zip(r.iter()) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: Vec<&str>| {
                cells.iter().zip(width.iter()).take(10).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ")
            };
            writeln!(out, "{}", line(AUDIT_COLUMNS.to_vec()).trim_end())?;
            for r in &rows {
                writeln!(out, "{}", line(r.iter().map(String::as_str).collect()).trim_end())?;
            }
            writeln!(out, "{} records", rows.len())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn check_config(path: &Path) -> ExitCode {
    match config::load(path) {
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
        Ok(cfg) => {
            let problems = cfg.validate();
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            if problems.is_empty() {
                println!(
                    "{}: OK ({} mailboxes, data in {})",
                    path.display(),
                    cfg.mailboxes.len(),
                    cfg.store.data_dir.display()
                );
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password: ")?;
        let b = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(a == b, "the two passwords differ");
        anyhow::ensure!(!a.is_empty(), "empty password");
        Ok(a)
    } else {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        let pw = s.trim_end_matches(['\r', '\n']).to_string();
        anyhow::ensure!(!pw.is_empty(), "empty password on standard input");
        Ok(pw)
    }
}

/// `store migrate` from a cluster into the data directory of `dst`.
fn migrate_from_cluster(
    from: &store::cluster::ClusterOptions,
    dst: &crate::config::Config,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let dir = &dst.store.data_dir;
    // Not while a daemon has it open (the store's lock says so).
    daemon::open_store(dst)?.close()?;
    let what = format!("the cluster into {}", dir.display());
    let done = migrating(&what, json, |progress| {
        store::migrate::from_cluster(from, dir, dst.store.journal_segment_bytes, progress)
    })?;
    // The index, from the journal just copied (and a check that it opens).
    daemon::open_store(dst)?.close()?;
    Ok(done)
}

/// Run a migration with a progress bar, and say what it did.
fn migrating(
    what: &str,
    json: bool,
    run: impl FnOnce(&mut dyn FnMut(&str, u64, u64)) -> Result<store::migrate::Migrated, String>,
) -> anyhow::Result<ExitCode> {
    let bar = progress_bar("{msg} [{bar:40}] {pos}/{len} ({eta})");
    let started = std::time::Instant::now();
    let m = run(&mut |step, done, total| {
        bar.set_message(step.to_string());
        bar.set_length(total.max(done));
        bar.set_position(done);
    })
    .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        println!(
            "migrated {what} in {:.1} s: blobs {} copied, {} already there; journal records {} copied, {} already there",
            started.elapsed().as_secs_f64(),
            m.blobs_copied,
            m.blobs_present,
            m.records_copied,
            m.records_present
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn status(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = daemon::load_config(config)?;
    let dir = &cfg.store.data_dir;
    let live = store::read_status_file(dir);
    // The daemon holds the store; if it is not running, count from the index.
    let daemon_pid = live.as_ref().and_then(|v| v["pid"].as_u64());
    let running = daemon_pid.map(|p| Path::new(&format!("/proc/{p}")).exists()).unwrap_or(false);
    let mut rows = Vec::new();
    let offline = if running {
        None
    } else {
        match store::Store::open(dir, store::StoreOptions::default()) {
            Ok((s, _)) => Some(s),
            Err(store::StoreError::Locked(_)) => None,
            Err(e) => return Err(e).context("opening the archive"),
        }
    };
    for m in &cfg.mailboxes {
        let mut row = live
            .as_ref()
            .and_then(|v| v["mailboxes"].as_array())
            .and_then(|a| a.iter().find(|x| x["alias"] == m.alias.as_str()).cloned())
            .unwrap_or_else(|| serde_json::json!({"alias": m.alias, "address": m.address, "state": "never synced"}));
        if let Some(s) = &offline {
            let (n, b) = s.mailbox_totals(&m.alias)?;
            row["archived_total"] = n.into();
            row["archived_total_bytes"] = b.into();
            if !running && live.is_some() {
                row["state"] = "not running".into();
            }
        }
        rows.push(row);
    }
    if let Some(s) = offline {
        s.close()?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "daemon_running": running, "mailboxes": rows }))?
        );
    } else {
        println!("pecgate {}", if running { "is running" } else { "is not running" });
        for r in &rows {
            let s = |k: &str| r[k].as_str().map(str::to_string);
            let n = |k: &str| r[k].as_u64();
            println!("\n{} <{}>", s("alias").unwrap_or_default(), s("address").unwrap_or_default());
            println!("  state:             {}", s("state").unwrap_or_default());
            println!(
                "  archived:          {} messages, {} bytes",
                n("archived_total").unwrap_or(0),
                n("archived_total_bytes").unwrap_or(0)
            );
            println!("  last sync:         {}", s("last_success").unwrap_or_else(|| "never".into()));
            println!(
                "  on the provider:   {}",
                n("on_provider").map(|v| v.to_string()).unwrap_or_else(|| "unknown".into())
            );
            let q = &r["quota"];
            let quota = match (q["storage_used_bytes"].as_u64(), q["storage_limit_bytes"].as_u64()) {
                (Some(u), Some(l)) => {
                    format!("{u} of {l} bytes ({:.0}%)", if l > 0 { u as f64 * 100.0 / l as f64 } else { 0.0 })
                }
                _ => "unknown (provider does not report QUOTA)".into(),
            };
            println!("  provider quota:    {quota}");
            if let (Some(u), Some(l)) = (q["messages_used"].as_u64(), q["messages_limit"].as_u64()) {
                println!("                     {u} of {l} messages");
            }
            if let Some(e) = s("last_error") {
                println!(
                    "  last error:        {} ({}; {} consecutive failures)",
                    e,
                    s("last_error_at").unwrap_or_default(),
                    n("consecutive_failures").unwrap_or(0)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `progress_bar` falls back to indicatif's default style when a template
    /// does not parse, so a template broken by an indicatif upgrade would go
    /// unnoticed but for this.
    #[test]
    fn progress_templates_parse() {
        for template in [JOURNAL_PROGRESS, MESSAGE_PROGRESS] {
            assert!(indicatif::ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
