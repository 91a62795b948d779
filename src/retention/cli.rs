//! `pecgate hold …` and `pecgate retention plan`: through the daemon's
//! HTTP API as a gateway user (role `hold` to place and release holds;
//! `hold` or `audit` to list them and see the plan), so they work while
//! the daemon runs and every change is recorded with who made it.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::campaign::cli::{Client, Conn};

#[derive(Subcommand)]
pub enum HoldCmd {
    /// Place a legal hold: the messages it covers are never removed by
    /// retention while it stands. Give exactly one of --message (repeat
    /// it), --search or --all.
    Add {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        mailbox: String,
        /// Why (a court case, an inspection): recorded with the hold.
        #[arg(long)]
        reason: String,
        /// A message's SHA-256 (as `pecgate search --json` shows it).
        #[arg(long = "message", value_name = "SHA256")]
        messages: Vec<String>,
        /// Every message of the mailbox the full-text search finds now.
        #[arg(long)]
        search: Option<String>,
        /// Every message of the mailbox, present and future.
        #[arg(long)]
        all: bool,
    },
    /// Release a hold by its id (from `hold list`).
    Remove {
        #[command(flatten)]
        conn: Conn,
        id: u64,
        #[arg(long)]
        reason: String,
    },
    /// The holds standing.
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        mailbox: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum RetentionCmd {
    /// What the next expiry run would remove, per mailbox with a
    /// retention: messages past it, their size, what holds keep.
    Plan {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        mailbox: Option<String>,
        /// List at most this many messages per mailbox (the counts are
        /// always complete).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub fn run_hold(cmd: HoldCmd) -> anyhow::Result<ExitCode> {
    let rt = rt()?;
    match cmd {
        HoldCmd::Add { conn, mailbox, reason, messages, search, all } => {
            let c = Client::new(&conn)?;
            let body = json!({
                "mailbox": mailbox, "reason": reason, "messages": messages, "query": search, "whole": all,
            });
            let v = rt.block_on(c.json("POST", "/api/holds", body.to_string().into_bytes()))?;
            let what = if all {
                "every message, present and future".to_string()
            } else {
                format!("{} messages", v["messages"])
            };
            println!("legal hold {} placed on {mailbox}: {what}", v["id"]);
        }
        HoldCmd::Remove { conn, id, reason } => {
            let c = Client::new(&conn)?;
            let body = json!({ "reason": reason });
            let v = rt.block_on(c.json("POST", &format!("/api/holds/{id}/release"), body.to_string().into_bytes()))?;
            println!("legal hold {id} on {} released", v["mailbox"].as_str().unwrap_or("?"));
        }
        HoldCmd::List { conn, mailbox, json } => {
            let c = Client::new(&conn)?;
            let q = mailbox.map(|m| format!("?mailbox={}", crate::campaign::cli::encode(&m))).unwrap_or_default();
            let v = rt.block_on(c.json("GET", &format!("/api/holds{q}"), Vec::new()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["holds"])?);
            } else {
                print_holds(&v);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_holds(v: &Value) {
    let holds = v["holds"].as_array().cloned().unwrap_or_default();
    if holds.is_empty() {
        println!("no legal holds stand");
        return;
    }
    println!("{:>8}  {:<14} {:<25} {:<12} reason", "id", "mailbox", "placed", "covers");
    for h in holds {
        let covers = if h["whole"].as_bool() == Some(true) {
            "all".to_string()
        } else {
            format!("{} msgs", h["hashes"].as_array().map(Vec::len).unwrap_or(0))
        };
        println!(
            "{:>8}  {:<14} {:<25} {:<12} {}",
            h["id"],
            h["mailbox"].as_str().unwrap_or(""),
            h["placed"].as_str().unwrap_or(""),
            covers,
            h["reason"].as_str().unwrap_or("")
        );
    }
}

pub fn run_retention(cmd: RetentionCmd) -> anyhow::Result<ExitCode> {
    let RetentionCmd::Plan { conn, mailbox, limit, json } = cmd;
    let c = Client::new(&conn)?;
    let mut q = format!("/api/retention?limit={limit}");
    if let Some(m) = &mailbox {
        q.push_str(&format!("&mailbox={}", crate::campaign::cli::encode(m)));
    }
    let v = rt()?.block_on(c.json("GET", &q, Vec::new()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v["plans"])?);
        return Ok(ExitCode::SUCCESS);
    }
    for p in v["plans"].as_array().cloned().unwrap_or_default() {
        let m = p["mailbox"].as_str().unwrap_or("?");
        if p["retention"].is_null() {
            println!("{m}: no retention set: nothing is ever removed");
            continue;
        }
        println!(
            "{m}: retention {}, cutoff {}: {} messages ({} bytes, {} places) would be removed; {} kept by legal holds{}",
            p["retention"].as_str().unwrap_or(""),
            p["cutoff"].as_str().unwrap_or(""),
            p["messages"],
            p["bytes"],
            p["places"],
            p["held"],
            if p["whole_hold"].is_null() { String::new() } else { format!(" (hold {} covers the whole mailbox)", p["whole_hold"]) }
        );
        for i in p["items"].as_array().cloned().unwrap_or_default() {
            println!(
                "  {}  {}/{} uid {}{}  {}",
                i["archived"].as_str().unwrap_or(""),
                m,
                i["folder"].as_str().unwrap_or(""),
                i["uid"],
                if i["hidden"].as_bool() == Some(true) { " (Trash)" } else { "" },
                i["hash"].as_str().unwrap_or("")
            );
        }
        let total = p["items_total"].as_u64().unwrap_or(0);
        let shown = p["items"].as_array().map(Vec::len).unwrap_or(0) as u64;
        if total > shown {
            println!("  … and {} more (--limit, --json)", total - shown);
        }
    }
    Ok(ExitCode::SUCCESS)
}
