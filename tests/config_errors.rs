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

#[test]
fn environment_overrides_the_file() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("pecgate.toml");
    std::fs::write(&path, good(d.path())).unwrap();
    let out = Command::new(pecgate_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("PECGATE_STORE__DATA_DIR", "/srv/elsewhere")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("data in /srv/elsewhere"), "{text}");
}

/// `PECGATE_CONFIG` names the file (the command line reads it) and other
/// `PECGATE_*` variables without a key path are not configuration: they
/// must not make the file "unknown field".
#[test]
fn unrelated_pecgate_variables_are_not_configuration() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("pecgate.toml");
    std::fs::write(&path, good(d.path())).unwrap();
    let out = Command::new(pecgate_bin())
        .arg("check-config")
        .env("PECGATE_CONFIG", &path)
        .env("PECGATE_GIT_COMMIT", "abc1234")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
}

#[test]
fn hash_password_gives_a_verifiable_argon2id_string() {
    use std::io::Write;
    let mut child = Command::new(pecgate_bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(pecgate::auth::verify_password("correct horse", hash));
    assert!(!pecgate::auth::verify_password("correct horse\n", hash), "the newline is not part of the password");
}

#[test]
fn pec_inspect_reports_kind_reference_and_signature() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pec");
    let out = Command::new(pecgate_bin())
        .args(["pec", "inspect", "--json", "--trust-store"])
        .arg(dir.join("test-provider-ca.pem"))
        .arg(dir.join("05-errore-consegna.eml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["classification"]["kind"]["type"], "errore-consegna", "{v:#}");
    assert_eq!(v["refers_to"], "<20261125101455.ABC123@client.comune.example.it>", "{v:#}");
    assert!(v["signature"].to_string().to_lowercase().contains("valid"), "{v:#}");
    // Without a trust store the text output says the signature was not checked.
    let out = Command::new(pecgate_bin()).args(["pec", "inspect"]).arg(dir.join("02-accettazione.eml")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("accettazione") && text.contains("not checked"), "{text}");
    // A file that is not there is a clear error.
    let out = Command::new(pecgate_bin()).args(["pec", "inspect", "/nonexistent.eml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.eml"));
}

/// The shipped example stays loadable: its only problems are the files and
/// secrets an administrator must supply.
#[test]
fn example_configuration_is_valid_but_for_site_files() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pecgate.example.toml");
    let cfg = pecgate::config::load(&path).expect("the example parses");
    assert!(cfg.mailboxes.len() >= 2);
    for p in cfg.validate() {
        let site = p.key.ends_with("password_file") || p.key.ends_with("password_hash") || p.key.starts_with("tls.");
        assert!(site, "unexpected problem in the example: {p}");
    }
}

/// The example's `[directory]` block, uncommented, is valid as written
/// but for the site's files (the names are the interface administrators
/// write).
#[test]
fn example_directory_block_is_valid_but_for_site_files() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pecgate.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("# [directory]\n").expect("a [directory] block in the example");
    let mut out = text[..start].to_string();
    let mut blocks = 0;
    for line in text[start..].lines() {
        match line.strip_prefix("# ") {
            Some(l) if !l.starts_with("# ") => out.push_str(l),
            Some(_) => {}
            None if line == "#" => {}
            None => {
                out.push_str(&text[start..][text[start..].find(line).unwrap()..]);
                break;
            }
        }
        if line.starts_with("# [") {
            blocks += 1;
        }
        out.push('\n');
    }
    assert_eq!(blocks, 3, "[directory] and two [[directory.group]]");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pecgate.toml");
    std::fs::write(&p, &out).unwrap();
    let cfg = pecgate::config::load(&p).expect("the uncommented example parses");
    let d = cfg.directory.as_ref().expect("[directory]");
    assert_eq!(d.groups.len(), 2);
    assert!(d.user_filter.contains("{login}") && d.cache == std::time::Duration::from_secs(300));
    for p in cfg.validate() {
        let site = p.key.ends_with("password_file")
            || p.key.ends_with("password_hash")
            || p.key.starts_with("tls.")
            || p.key == "directory.ca";
        assert!(site, "unexpected problem in the example's [directory]: {p}");
    }
}
