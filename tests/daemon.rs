//! The daemon as systemd runs it: readiness over `NOTIFY_SOCKET`, SIGHUP
//! reload (a new mailbox is picked up; an invalid file is refused and the old
//! configuration kept), JSON logs, clean exit on SIGTERM.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::gateway::{mailbox_toml, Gateway, FAST_UPSTREAM};
use support::{make_message, pecgate_bin, Dovecot, DovecotOptions, UserSpec};

#[test]
fn notify_socket_gets_ready_and_stopping() {
    let d = tempfile::tempdir().unwrap();
    let sock_path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let cfg = d.path().join("pecgate.toml");
    std::fs::write(&cfg, format!("[store]\ndata_dir = \"{}\"\n", d.path().join("data").display())).unwrap();
    let child = Command::new(pecgate_bin())
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a readiness notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let n = sock.recv(&mut buf).expect("a stopping notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.trim().is_empty());
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    assert!(log.contains("archive closed"));
}

#[test]
fn sighup_reloads_mailboxes_and_refuses_a_bad_file() {
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new("a@pec.example.it", "pa")).user(UserSpec::new("b@pec.example.it", "pb")));
    dv.imap("a@pec.example.it").append("INBOX", (0..3).map(|i| make_message(i, 1000)));
    dv.imap("b@pec.example.it").append("INBOX", (10..15).map(|i| make_message(i, 1000)));
    let one = format!("{FAST_UPSTREAM}{}", mailbox_toml("alpha", "a@pec.example.it", "pa", dv.port, ""));
    let mut g = Gateway::new(&one);
    g.start();
    g.wait_mailbox("alpha", Duration::from_secs(60), "alpha archived", |s| s["archived_total"] == 3);

    // A broken file: refused, the daemon keeps running with the old one.
    std::fs::write(&g.config_path, "[store]\ndata_dir = 42\n").unwrap();
    g.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !g.log().contains("new configuration refused") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", g.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(g.is_running());

    // A second mailbox added: picked up without a restart.
    g.write_config(&format!("{one}{}", mailbox_toml("beta", "b@pec.example.it", "pb", dv.port, "")));
    g.signal("HUP");
    g.wait_mailbox("beta", Duration::from_secs(60), "beta archived after reload", |s| s["archived_total"] == 5);
    assert_eq!(g.mailbox_status("alpha").unwrap()["archived_total"], 3);
    assert_eq!(g.stop(), Some(0));
    assert_eq!(dv.imap("b@pec.example.it").count("INBOX"), 0);
}
