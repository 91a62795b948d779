//! `pecgate demo` started as a user would, on a machine with nothing else
//! installed: it runs with an empty PATH and an empty environment, and no
//! Dovecot (nor any other process) is started by it. The settings it prints
//! (and writes to demo.json) must work with swaks, an IMAP client (Python
//! imaplib, verifying the certificate with the printed CA file) and mbsync
//! (the printed configuration, run as printed).

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

/// Processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid …; comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(head.to_string());
        }
    }
    out
}

#[test]
fn demo_settings_work_with_swaks_and_imap() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let base = base_port();
    // Nothing on PATH, no environment: the demo needs no installed program.
    let empty_path = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .env_clear()
        .env("PATH", &empty_path)
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
    // No child process at all (the simulated provider's mailboxes are in
    // pecgate's own store, under <data-dir>/provider/, served by pecgate's
    // IMAP code): in particular no dovecot.
    let children = children_of(demo.0.id());
    assert!(children.is_empty(), "the demo started processes: {children:?}");
    assert!(data.join("provider/mailboxes/archive/journal").is_dir(), "no provider mailbox store");
    assert!(info["simulated_provider"]["imap"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{info}");
    let pw = info["users"][0]["password"].as_str().unwrap().to_string();
    let smtps = info["smtp"]["port_tls"].as_u64().unwrap().to_string();
    assert!(printed.contains(&pw) && printed.contains(&smtps), "{printed}");

    // The HTTPS listener with autoconfig for the staff's domain: the URL
    // printed and in demo.json answers Thunderbird's document (the
    // certificate verified with the printed CA file).
    let http = info["http"]["port"].as_u64().expect("demo.json: http.port");
    assert_eq!(info["http"]["tls"], true);
    let url = info["http"]["autoconfig"].as_str().unwrap();
    assert!(url.starts_with(&format!("https://127.0.0.1:{http}/")) && printed.contains(url), "{url}\n{printed}");
    let out = Command::new("python3")
        .args(["-c", "import ssl,sys,urllib.request as u; print(u.urlopen(sys.argv[1], context=ssl.create_default_context(cafile=sys.argv[2])).read().decode())", url])
        .arg(info["ca_file"].as_str().unwrap())
        .output()
        .unwrap();
    let doc = String::from_utf8_lossy(&out.stdout);
    assert!(doc.contains("<username>mario</username>") && doc.contains(&format!("<port>{}</port>", info["imap"]["port_tls"])), "{doc}{}", String::from_utf8_lossy(&out.stderr));

    // swaks, exactly as printed.
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{smtps}"), "--tls-on-connect", "--auth", "PLAIN", "--auth-user", "mario"])
        .args(["--auth-password", &pw, "--from", "protocollo@pec.demo.test", "--to", "ufficio.legale@pec.demo.test"])
        .args(["--header", "Subject: Prova PEC"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("250 2.0.0 Accepted by the PEC provider"), "{text}");

    // IMAP over TLS with the printed port, user and CA file (Python
    // imaplib verifies the certificate): the welcome PEC and the swaks one
    // are in protocollo/Sent, their acceptance and delivery receipts in
    // protocollo/Receipts.
    let script = r#"
import imaplib, ssl, sys, time
port, pw, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for _ in range(60):
    m = imaplib.IMAP4_SSL('127.0.0.1', port, ssl_context=ssl.create_default_context(cafile=ca))
    m.login('mario', pw)
    n = [int(m.select(f)[1][0]) for f in ('protocollo/Sent', 'protocollo/Receipts', 'legale/INBOX')]
    m.logout()
    if n[0] >= 2 and n[1] >= 4 and n[2] >= 2:
        print('ok', n); sys.exit(0)
    time.sleep(1)
print('incomplete', n); sys.exit(1)
"#;
    let out = Command::new("python3")
        .args(["-c", script, &info["imap"]["port_tls"].to_string(), &pw, info["ca_file"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("err.txt")).unwrap()
    );

    // mbsync, exactly as printed: the printed configuration is the file
    // the printed command names; it fetches every folder of mario's,
    // nested ones included, with the welcome PEC in protocollo/Sent and
    // its envelope in legale/INBOX.
    let rc = data.join("mbsyncrc");
    let rc_text = std::fs::read_to_string(&rc).unwrap();
    let block = printed
        .split("----- mbsyncrc -----\n")
        .nth(1)
        .and_then(|r| r.split("----- end -----").next())
        .unwrap_or_else(|| panic!("no mbsync configuration printed:\n{printed}"));
    assert_eq!(block, rc_text, "printed mbsync configuration differs from {}", rc.display());
    let command = format!("mbsync -c {} -a", rc.display());
    assert!(printed.contains(&command) && info["mbsync"]["command"] == command.as_str(), "{printed}\n{info}");
    for (key, want) in [("SSLType", "IMAPS"), ("SubFolders", "Verbatim"), ("SyncState", "*"), ("Port", info["imap"]["port_tls"].to_string().as_str())] {
        assert!(block.lines().any(|l| l == format!("{key} {want}")), "{key} {want} missing:\n{block}");
    }
    let out = Command::new("mbsync").args(["-c"]).arg(&rc).arg("-a").output().expect("run mbsync (Debian package isync)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mbsync failed:\n{text}\n{}", std::fs::read_to_string(dir.path().join("err.txt")).unwrap());
    let maildir = std::path::PathBuf::from(info["mbsync"]["maildir"].as_str().unwrap());
    let holds = |folder: &str, needle: &str| {
        ["cur", "new"].iter().any(|sub| {
            std::fs::read_dir(maildir.join(folder).join(sub))
                .map(|d| d.flatten().any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(needle))))
                .unwrap_or(false)
        })
    };
    assert!(holds("protocollo/Sent", "Subject: Benvenuto in pecgate"), "welcome PEC not in protocollo/Sent:\n{text}");
    assert!(holds("legale/INBOX", "POSTA CERTIFICATA: Benvenuto in pecgate"), "welcome envelope not in legale/INBOX:\n{text}");
    assert!(maildir.join("legale/Anomalies/cur").is_dir(), "nested folder legale/Anomalies not created:\n{text}");

    // Offloaded: the gateway expunged everything it archived from the
    // simulated provider's mailboxes (pecgate's IMAP server there, one
    // login per mailbox), so they are empty over IMAP.
    let secrets: serde_json::Value = serde_json::from_slice(&std::fs::read(data.join("demo-secrets.json")).unwrap()).unwrap();
    let provider = info["simulated_provider"]["imap"].as_str().unwrap().to_string();
    let script = r#"
import imaplib, sys, time
host, port = sys.argv[1].rsplit(':', 1)
for _ in range(60):
    n = []
    for user, pw in zip(sys.argv[2::2], sys.argv[3::2]):
        m = imaplib.IMAP4(host, int(port))
        m.login(user, pw)
        n.append(int(m.select('INBOX')[1][0]))
        m.logout()
    if n == [0] * len(n):
        print('empty'); sys.exit(0)
    time.sleep(1)
print('left on the provider', n); sys.exit(1)
"#;
    let out = Command::new("python3")
        .args(["-c", script, &provider])
        .args(["protocollo", secrets["provider"]["protocollo"].as_str().unwrap()])
        .args(["legale", secrets["provider"]["legale"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("err.txt")).unwrap()
    );

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
