//! The PEC provider simulator (`pecgate sim-provider`) as a child process,
//! for tests that send: started and stopped at will, its log kept.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pecgate_bin;

/// The simulator's remote domains for the campaign tests, and what they
/// do to each recipient: `cittadini.sim` answers by the address's prefix
/// (`pieno*` a full mailbox, `ignoto*` an unknown address, `taglia*` the
/// connection dropped right after the 250, `svuota*` full once then
/// delivered, `lento*` delivered with the 250 to DATA held 8 s, anything
/// else delivered); `posta.example` is not PEC.
pub const REMOTES: &str = r#"
[[remote]]
domain = "cittadini.sim"
[[remote.rule]]
pattern = "pieno*"
outcome = "full"
[[remote.rule]]
pattern = "ignoto*"
outcome = "unknown"
[[remote.rule]]
pattern = "taglia*"
drop = true
[[remote.rule]]
pattern = "svuota*"
outcome = "full-once"
[[remote.rule]]
pattern = "lento*"
hold = "8s"
[[remote.rule]]
pattern = "*"
outcome = "delivered"

[[remote]]
domain = "posta.example"
pec = false
"#;

pub struct Sim {
    pub child: Option<Child>,
    pub config: PathBuf,
    pub log: PathBuf,
    pub port: u16,
}

impl Sim {
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(pecgate_bin())
            .args(["sim-provider", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sim-provider");
        self.child = Some(child);
        wait_port(self.port, &self.log);
    }
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait (30 s at most) until something listens on 127.0.0.1:`port`; the
/// panic shows `log`.
/// A `[[mailbox]]` of the simulator's configuration: PEC address `addr`
/// (SMTP password `pw`) whose messages go to Dovecot user `user` (IMAP
/// password `pw` too) on `imap_port`.
pub fn mailbox_config(addr: &str, user: &str, pw: &str, imap_port: u16) -> String {
    format!(
        "[[mailbox]]\naddress = \"{addr}\"\npassword = \"{pw}\"\nimap_host = \"127.0.0.1\"\nimap_port = {imap_port}\nimap_user = \"{user}\"\nimap_password = \"{pw}\"\n"
    )
}

pub fn wait_port(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "port {port} never opened\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
