//! `pecgate demo` started as a user would; the settings it prints (and
//! writes to demo.json) must work with swaks and mbsync as given.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn base_port() -> u16 {
    for _ in 0..100 {
        let base = 20000 + (rand::random::<u16>() % 30000);
        let free = [143u16, 465, 587, 993].iter().all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port range");
}

fn files_under(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

#[test]
fn demo_settings_work_with_swaks_and_mbsync() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let base = base_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["demo", "--data-dir"])
        .arg(&data)
        .args(["--base-port", &base.to_string()])
        .stdout(std::fs::File::create(dir.path().join("out.txt")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err.txt")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut demo = Demo(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let info: serde_json::Value = loop {
        if let Ok(b) = std::fs::read(data.join("demo.json")) {
            break serde_json::from_slice(&b).unwrap();
        }
        assert!(demo.0.try_wait().unwrap().is_none(), "demo exited: {}", std::fs::read_to_string(dir.path().join("err.txt")).unwrap());
        assert!(Instant::now() < deadline, "no demo.json");
        std::thread::sleep(Duration::from_millis(100));
    };
    let printed = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let pw = info["users"][0]["password"].as_str().unwrap().to_string();
    let smtps = info["smtp"]["port_tls"].as_u64().unwrap().to_string();
    assert!(printed.contains(&pw) && printed.contains(&smtps), "{printed}");

    // swaks, exactly as printed.
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{smtps}"), "--tls-on-connect", "--auth", "PLAIN", "--auth-user", "mario"])
        .args(["--auth-password", &pw, "--from", "protocollo@pec.demo.test", "--to", "ufficio.legale@pec.demo.test"])
        .args(["--header", "Subject: Prova PEC"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("250 2.0.0 Accepted by the PEC provider"), "{text}");

    // mbsync with the printed configuration: the welcome PEC's Sent copy and
    // receipts arrive (wait for the receipts to be archived first).
    let local = dir.path().join("mail");
    let rc = dir.path().join("mbsyncrc");
    // The printed block, with its maildir moved into the test's directory.
    let block: Vec<&str> = printed
        .lines()
        .skip_while(|l| !l.starts_with("mbsync"))
        .skip(1)
        .take_while(|l| !l.starts_with("(end of"))
        .map(str::trim)
        .collect();
    assert!(block.len() > 10, "{printed}");
    let rc_text = block.join("\n").replace("~/pecgate-mail", &local.display().to_string());
    assert!(rc_text.contains(&pw));
    std::fs::write(&rc, format!("{rc_text}\n")).unwrap();
    std::fs::create_dir_all(&local).unwrap(); // the printed `mkdir -p`
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("mbsync").arg("-c").arg(&rc).arg("-a").output().unwrap();
        assert!(out.status.success(), "mbsync: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let files = files_under(&local);
        let sent = files.iter().filter(|f| f.contains("protocollo/Sent/")).count();
        let receipts = files.iter().filter(|f| f.contains("protocollo/Receipts/")).count();
        // Welcome + swaks: two sent, each with acceptance + delivery receipt.
        if sent >= 2 && receipts >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "mbsync got {files:?}\n{}", std::fs::read_to_string(dir.path().join("err.txt")).unwrap());
        std::thread::sleep(Duration::from_secs(1));
    }

    // Ctrl-C stops everything cleanly.
    let _ = Command::new("kill").args(["-INT", &demo.0.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}\n{}", std::fs::read_to_string(dir.path().join("err.txt")).unwrap());
}
