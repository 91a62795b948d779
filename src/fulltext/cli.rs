//! `pecgate search`: find messages by their words, over the daemon's HTTP
//! API as a gateway user (only the mailboxes they may read); `pecgate
//! search reindex`: rebuild the full-text index from the archive (the
//! daemon stopped: it holds the index while it runs).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::campaign::cli::{Client, Conn};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SearchCmd {
    #[command(subcommand)]
    pub action: Option<SearchAction>,
    #[command(flatten)]
    pub find: Find,
}

#[derive(clap::Subcommand)]
pub enum SearchAction {
    /// Rebuild the full-text index from the archived messages (stop
    /// `pecgate serve` first; it indexes by itself while it runs). The
    /// index is derived: deleting it and reindexing gives the same results.
    Reindex {
        #[arg(long, short, env = "PECGATE_CONFIG")]
        config: PathBuf,
    },
}

/// Words to find (Italian analysis: `solleciti` finds `sollecito`,
/// `perche` finds `perché`; each word matches the start of a word), in
/// subjects, senders, recipients, texts, the original message inside a
/// certified envelope, PDF and `.p7m` attachments and `daticert.xml`.
#[derive(clap::Args)]
pub struct Find {
    /// The words; every one must be there.
    pub query: Option<String>,
    /// The daemon's configuration (where its HTTP API listens).
    #[arg(long, short, env = "PECGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The gateway user (the password from PECGATE_PASSWORD, else asked for).
    #[arg(long, env = "PECGATE_USER")]
    pub user: Option<String>,
    /// Only this mailbox (alias).
    #[arg(long)]
    pub mailbox: Option<String>,
    /// Only messages whose sender has these words.
    #[arg(long)]
    pub from: Option<String>,
    /// Only messages from this day on (YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Certified envelopes, receipts, anomalies (errors, non-acceptances,
    /// virus notices), messages sent through the gateway, or plain mail.
    #[arg(long, value_parser = super::api::KINDS)]
    pub kind: Option<String>,
    /// Sent messages in this delivery state.
    #[arg(long, value_parser = super::api::STATES)]
    pub state: Option<String>,
    /// At most this many hits, best first (the API allows 1,000).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// The answer as JSON (one object, `hits` ranked).
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: SearchCmd) -> anyhow::Result<ExitCode> {
    match cmd.action {
        Some(SearchAction::Reindex { config }) => reindex(&config),
        None => tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(find(cmd.find)),
    }
}

fn reindex(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = crate::daemon::load_config(config)?;
    let store = crate::daemon::open_store(&cfg)?;
    let ft = super::FullText::open(&cfg.store.data_dir, true)?;
    ft.clear()?;
    let total = store.applied_seq()?;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} journal records, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let limits = super::extract::Limits::default();
    let started = std::time::Instant::now();
    let mut documents = 0;
    let mut journal = store.journal();
    loop {
        let p = super::indexer::pass(&store, &ft, &mut journal, 20_000, &limits, &mut |_, _| {}, &|| false).map_err(anyhow::Error::msg)?;
        documents += p.documents;
        bar.set_position(p.seq);
        if p.records == 0 {
            break;
        }
    }
    bar.finish_and_clear();
    store.close()?;
    eprintln!(
        "reindexed: {documents} messages from {total} journal records in {:.1} s; index {}",
        started.elapsed().as_secs_f64(),
        ft.dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn find(f: Find) -> anyhow::Result<ExitCode> {
    let Some(query) = f.query.clone() else { anyhow::bail!("give the words to find, or `reindex` (see pecgate search --help)") };
    let Some(config) = f.config.clone() else { anyhow::bail!("--config (or PECGATE_CONFIG): the daemon's configuration file") };
    let Some(user) = f.user.clone() else { anyhow::bail!("--user (or PECGATE_USER): the gateway user to search as") };
    let c = Client::new(&Conn::new(config, user))?;
    let mut q = vec![("q", query.clone()), ("limit", f.limit.to_string())];
    for (k, v) in [("mailbox", &f.mailbox), ("from", &f.from), ("since", &f.since), ("kind", &f.kind), ("state", &f.state)] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    let query: String = q.iter().map(|(k, v)| format!("{k}={}", crate::campaign::cli::encode(v))).collect::<Vec<_>>().join("&");
    let v = c.json("GET", &format!("/api/search?{query}"), Vec::new()).await.context("searching")?;
    if f.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let hits = v["hits"].as_array().cloned().unwrap_or_default();
    if hits.is_empty() {
        eprintln!("nothing found for {query:?}");
        return Ok(ExitCode::from(1));
    }
    for h in &hits {
        let s = |k: &str| h[k].as_str().unwrap_or_default().to_string();
        let state = h["state"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).unwrap_or_default();
        println!("{}  {} UID {}  [{}{}]", s("date").get(..10).unwrap_or_default(), s("folder"), h["uid"], s("kind"), if state.is_empty() { String::new() } else { format!(" {state}") });
        println!("    {}  —  {}", s("subject"), s("from"));
        println!("    {}", s("snippet"));
    }
    Ok(ExitCode::SUCCESS)
}
