//! A self-signed RSA certificate for 127.0.0.1, made with the `openssl`
//! CLI: what the tests' TLS listeners serve. Shared by `support` and
//! `imap_support` (included by path there).

use std::path::Path;
use std::process::Command;

/// Write a certificate (`CN=127.0.0.1`, `subjectAltName=IP:127.0.0.1`,
/// two days) and its key to `cert` and `key`, replacing what is there.
pub fn certificate(cert: &Path, key: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
}
