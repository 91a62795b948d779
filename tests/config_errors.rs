//! Each kind of configuration mistake gets a one-line error from
//! `pecgate check-config` naming the key that causes it, and a non-zero
//! exit; `serve` refuses to start with the same message.

mod support;

use std::process::Command;

use support::pecgate_bin;

fn good(dir: &std::path::Path) -> String {
    let pw = dir.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    format!(
        r#"[store]
data_dir = "{data}"

[[mailbox]]
alias = "protocollo"
address = "protocollo@pec.example.it"
username = "protocollo@pec.example.it"
password_file = "{pw}"
imap = {{ host = "imaps.pec.example.it", port = 993, tls = "implicit" }}

[[mailbox]]
alias = "tributi"
address = "tributi@pec.example.it"
username = "tributi@pec.example.it"
password_file = "{pw}"
imap = {{ host = "127.0.0.1", port = 1143, tls = "none" }}
"#,
        data = dir.join("data").display(),
        pw = pw.display()
    )
}

fn check(dir: &std::path::Path, text: &str) -> (bool, Vec<String>) {
    let path = dir.join("pecgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(pecgate_bin()).args(["check-config", "--config"]).arg(&path).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    (out.status.success(), lines)
}

fn assert_one_error(dir: &std::path::Path, text: &str, key: &str) {
    let (ok, lines) = check(dir, text);
    assert!(!ok, "accepted a bad configuration (expected an error about {key})");
    assert_eq!(lines.len(), 1, "one line expected for {key}, got {lines:#?}");
    assert!(lines[0].contains(key), "the error names {key}: {}", lines[0]);
}

#[test]
fn every_mistake_names_its_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let base = good(dir);
    let (ok, lines) = check(dir, &base);
    assert!(ok, "{lines:?}");
    assert!(lines[0].ends_with(&format!("OK (2 mailboxes, data in {})", dir.join("data").display())), "{lines:?}");

    // Missing file.
    let out = Command::new(pecgate_bin()).args(["check-config", "--config", "/nonexistent/pecgate.toml"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("/nonexistent/pecgate.toml") && text.contains("No such file"), "{text}");

    // Unknown key.
    assert_one_error(dir, &base.replace("alias = \"tributi\"", "alias = \"tributi\"\nfolder = [\"INBOX\"]"), "unknown field `folder`");
    assert_one_error(dir, &format!("{base}\n[stoer]\nx = 1\n"), "unknown field `stoer`");
    // Bad port.
    assert_one_error(dir, &base.replace("port = 993", "port = 99999"), "mailbox[0].imap.port");
    assert_one_error(dir, &base.replace("port = 993", "port = 0"), "mailbox[0].imap.port");
    // Plain text to a public host.
    assert_one_error(dir, &base.replace("tls = \"implicit\"", "tls = \"none\""), "mailbox[0].imap.tls");
    // Duplicate alias.
    assert_one_error(dir, &base.replace("alias = \"tributi\"", "alias = \"protocollo\""), "mailbox[1].alias");
    // Unreadable password file (a directory cannot be read, even by root).
    assert_one_error(
        dir,
        &base.replacen(&dir.join("pw").display().to_string(), &dir.display().to_string(), 1),
        "mailbox[0].password_file",
    );
    assert_one_error(
        dir,
        &base.replacen(&dir.join("pw").display().to_string(), "/nonexistent/secret", 1),
        "mailbox[0].password_file",
    );
    // Bad offload policy and durations.
    assert_one_error(
        dir,
        &base.replace("tls = \"none\" }", "tls = \"none\" }\noffload = { mode = \"quota\", high_water = 0.4, low_water = 0.6 }"),
        "mailbox[1].offload",
    );
    assert_one_error(dir, &base.replace("tls = \"none\" }", "tls = \"none\" }\npoll_interval = \"soon\""), "mailbox[1].poll_interval");

    // Several problems: every one reported, one per line.
    let (ok, lines) = check(
        dir,
        &base.replace("port = 993", "port = 0").replace("alias = \"tributi\"", "alias = \"protocollo\""),
    );
    assert!(!ok);
    assert_eq!(lines.len(), 2, "{lines:#?}");

    // serve refuses to start with the same message.
    let path = dir.join("pecgate.toml");
    std::fs::write(&path, base.replace("alias = \"tributi\"", "alias = \"protocollo\"")).unwrap();
    let out = Command::new(pecgate_bin()).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mailbox[1].alias"), "{err}");
    assert!(!dir.join("data").exists(), "nothing is created from a bad configuration");
}
