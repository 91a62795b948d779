//! Running the real `pecgate` binary in tests: a throwaway configuration and
//! data directory, `serve` started and stopped (or killed), its
//! `status.json` polled.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pecgate_bin;

pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    started_at: chrono::DateTime<chrono::Utc>,
    /// Extra configuration after `[store]` (mailboxes, upstream, …).
    body: String,
    /// Environment for `serve` (beyond the test's own).
    pub env: Vec<(String, String)>,
}

/// A `[[mailbox]]` table for a Dovecot user on loopback without TLS.
pub fn mailbox_toml(alias: &str, user: &str, password: &str, port: u16, extra: &str) -> String {
    format!(
        "[[mailbox]]\nalias = \"{alias}\"\naddress = \"{user}\"\nusername = \"{user}\"\npassword = \"{password}\"\n\
         imap = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\" }}\npoll_interval = \"1s\"\n{extra}\n"
    )
}

/// Fast retries so fault tests do not wait minutes.
pub const FAST_UPSTREAM: &str = "[upstream]\ntimeout = \"10s\"\nmin_backoff = \"200ms\"\nmax_backoff = \"2s\"\n";

impl Gateway {
    pub fn new(body: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let g = Gateway {
            config_path: dir.path().join("pecgate.toml"),
            log_path: dir.path().join("pecgate.log"),
            data_dir,
            dir,
            child: None,
            started_at: chrono::Utc::now(),
            body: body.to_string(),
            env: Vec::new(),
        };
        g.write_config(body);
        g
    }

    /// Replace the configuration (after `[store]`); takes effect at the next
    /// start or SIGHUP.
    pub fn write_config(&self, body: &str) {
        let text = format!("[store]\ndata_dir = \"{}\"\n\n{body}", self.data_dir.display());
        fs::write(&self.config_path, text).expect("write config");
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "gateway already running");
        // A stale status.json from an earlier run must not satisfy waits.
        let _ = fs::remove_file(self.data_dir.join("status.json"));
        self.started_at = chrono::Utc::now();
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let child = Command::new(pecgate_bin())
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info,pecgate=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pecgate serve");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// SIGKILL: a crash at an arbitrary instant.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("pecgate did not stop within 60 s of SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn status(&self) -> Option<Value> {
        let b = fs::read(self.data_dir.join("status.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }

    pub fn mailbox_status(&self, alias: &str) -> Option<Value> {
        self.status()?["mailboxes"].as_array()?.iter().find(|m| m["alias"] == alias).cloned()
    }

    /// Poll the status of `alias` until `pred` holds; panic (with the log)
    /// after `timeout`. Every 10 ms: benches time what they wait for.
    pub fn wait_mailbox(&mut self, alias: &str, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.mailbox_status(alias) {
                if pred(&s) {
                    return s;
                }
            }
            if !self.is_running() {
                panic!("pecgate exited while waiting for: {what}\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\nlast status: {:#}\nlog:\n{}",
                    self.mailbox_status(alias).unwrap_or(Value::Null),
                    tail(&self.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until a sync pass of `alias` completed since the last start.
    pub fn wait_pass(&mut self, alias: &str, timeout: Duration) -> Value {
        let since = self.started_at;
        self.wait_mailbox(alias, timeout, "a completed sync pass", |s| {
            s["last_success"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t > since)
        })
    }

    /// Run a `pecgate` subcommand with `--config` appended.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(pecgate_bin()).args(args).arg("--config").arg(&self.config_path).output().expect("run pecgate")
    }

    /// Open the archive from the test (the daemon must be stopped).
    pub fn open_store(&self) -> pecgate::store::Store {
        pecgate::store::Store::open(&self.data_dir, Default::default()).expect("open store").0
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Hashes of every message indexed in `mailbox` (all folders), with counts.
pub fn archived_hashes(store: &pecgate::store::Store, mailbox: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for (folder, _) in store.folders(mailbox).expect("folders") {
        for (_, m) in store.messages(mailbox, &folder).expect("messages") {
            *out.entry(m.hash).or_insert(0) += 1;
        }
    }
    out
}
