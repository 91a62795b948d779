//! pecgate: a mail gateway for Italian certified email (PEC).
//!
//! Each module has one job (see ARCHITECTURE.md):
//!
//! * [`config`]: typed settings from TOML plus `PECGATE_*` overrides, with
//!   validation that names the key of every problem.
//! * [`store`]: the archive, and the only code that touches disk: blobs
//!   (content-addressed raw messages), the journal (hash-chained records),
//!   the index (redb) derived from the journal.
//! * [`audit`]: checking and reading the audit chain.
//! * [`pec`]: pure functions over PEC messages: classification, daticert.xml,
//!   unwrapping, signature check, receipt reconciliation. No I/O.
//! * [`upstream`]: one task per PEC mailbox pulling messages from the
//!   provider over IMAP into the archive, then offloading them.
//! * [`imap`]: the client-facing IMAP server (per-user folder tree over the
//!   store, permissions, audit of every login, select and read).
//! * [`smtp`]: the client-facing SMTP submission server (relay through the
//!   provider, copy into Sent, audit).
//! * [`sim`]: a PEC provider simulator for tests and the demo.
//! * [`daemon`]: `serve`: runs the tasks, signals, systemd readiness.
//! * [`metrics`], [`http`]: Prometheus metrics computed at scrape time, and
//!   the HTTP listener for them, health checks and a read-only JSON API;
//!   [`counters`]: the few counters protocol code bumps itself.
//! * [`demo`]: `pecgate demo`, a throw-away complete installation.
#![forbid(unsafe_code)]

pub mod anchor;
pub mod apitoken;
pub mod audit;
pub mod autoconfig;
pub mod background;
pub mod auth;
pub mod bytes;
pub mod campaign;
pub mod cli;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod demo;
pub mod directory;
pub mod export;
pub mod fulltext;
pub mod handling;
pub mod heap;
pub mod http;
pub mod lease;
pub mod imap;
pub mod listener;
pub mod metrics;
pub mod pec;
pub mod retention;
pub mod sending;
pub mod sim;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod upstream;
