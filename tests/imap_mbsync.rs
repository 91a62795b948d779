//! mbsync (isync) against `pecgate serve` over TLS: it syncs every folder
//! of a user into a local Maildir, byte-identical to the archive's blobs;
//! a second run transfers nothing; flags travel both ways.

mod imap_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use imap_support::{start_with, Gateway, Setup, PASSWORD};

/// Run mbsync on every channel; `-Dn` makes it print the IMAP traffic.
fn mbsync(gw: &Gateway, rc: &Path) -> String {
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(rc)
        .args(["-a", "-V", "-Dn"])
        .output()
        .expect("run mbsync (Debian package isync)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "mbsync failed:\n{text}\nserver log:\n{}",
        gw.log()
    );
    text
}

/// Every message file under `root` (Maildir `cur` and `new`), by path.
fn maildir_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.parent()
                    .and_then(|x| x.file_name())
                    .and_then(|x| x.to_str()),
                Some("cur" | "new")
            ) {
                out.insert(p.clone(), std::fs::read(&p).expect("read message"));
            }
        }
    }
    out
}

/// Every blob under `root`, with CRLF turned to LF.
fn blob_set(root: &Path) -> std::collections::HashSet<Vec<u8>> {
    let mut out = std::collections::HashSet::new();
    for p in maildir_like(root) {
        let b = std::fs::read(&p).expect("blob");
        let mut v = Vec::with_capacity(b.len());
        for (i, c) in b.iter().enumerate() {
            if !(*c == b'\r' && b.get(i + 1) == Some(&b'\n')) {
                v.push(*c);
            }
        }
        out.insert(v);
    }
    out
}

/// Every `.eml` file under `root`.
fn maildir_like(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "eml") {
                out.push(p);
            }
        }
    }
    out
}

fn server_flags(gw: &Gateway, folder: &str, uid: u32, change: &[&str]) -> String {
    let mut args = vec![folder.to_string(), uid.to_string()];
    args.extend(change.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = gw.python("flags.py", &args);
    assert!(ok, "flags.py: {out}{err}\n{}", gw.log());
    out.lines()
        .find_map(|l| l.strip_prefix("FLAGS "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn mbsync_syncs_every_folder_both_ways() {
    let gw = start_with(Setup {
        inbox: 3,
        pec: true,
        ..Setup::default()
    });
    let local = gw.dir.path().join("maildir");
    std::fs::create_dir_all(&local).expect("maildir root");
    let rc = gw.dir.path().join("mbsyncrc");
    let text = format!(
        "IMAPAccount pecgate\nHost 127.0.0.1\nPort {port}\nUser mario\nPass {PASSWORD}\nSSLType IMAPS\nCertificateFile {cert}\nAuthMechs LOGIN\n\nIMAPStore remote\nAccount pecgate\n\nMaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\nChannel pec\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\nSync All\nExpunge None\nSyncState *\n",
        port = gw.port,
        cert = gw.cert().display(),
        local = local.display(),
    );
    std::fs::write(&rc, text).expect("write mbsyncrc");

    let first = mbsync(&gw, &rc);
    let files = maildir_files(&local);
    // INBOX and prot/INBOX (the same 3), Sent (3 sent copies), Receipts and
    // Anomalies (the 3 receipts), Undelivered (the failed sample).
    let mut per_folder: BTreeMap<String, usize> = BTreeMap::new();
    for p in files.keys() {
        let rel = p.strip_prefix(&local).expect("under root");
        let folder = rel
            .parent()
            .and_then(Path::parent)
            .map(|f| f.display().to_string())
            .unwrap_or_default();
        *per_folder.entry(folder).or_default() += 1;
    }
    let inbox_like = per_folder.get("INBOX").copied().unwrap_or(0);
    assert_eq!(inbox_like, 3, "INBOX: {per_folder:?}\n{first}");
    assert_eq!(per_folder.get("prot/INBOX"), Some(&3), "{per_folder:?}");
    assert_eq!(per_folder.get("prot/Sent"), Some(&3), "{per_folder:?}");
    assert_eq!(
        per_folder.get("prot/Undelivered"),
        Some(&1),
        "{per_folder:?}"
    );
    let receipts = per_folder.get("prot/Receipts").copied().unwrap_or(0)
        + per_folder.get("prot/Anomalies").copied().unwrap_or(0);
    assert_eq!(receipts, 3, "{per_folder:?}");
    // The same bytes as the archive's blobs, up to what mbsync itself does
    // to a message it stores in a Maildir: CRLF becomes LF (Maildir's
    // convention) and it adds an `X-TUID:` header to find the message again.
    let blobs = blob_set(&gw.data().join("blobs"));
    for (p, bytes) in &files {
        let tuid = bytes
            .windows(8)
            .position(|w| w == b"\nX-TUID:")
            .map(|i| i + 1);
        let mut b = bytes.clone();
        if let Some(i) = tuid {
            let end = b[i..]
                .iter()
                .position(|c| *c == b'\n')
                .map(|e| i + e + 1)
                .unwrap_or(b.len());
            b.drain(i..end);
        }
        assert!(
            blobs.contains(&b),
            "{} is not an archived blob (modulo LF and X-TUID)",
            p.display()
        );
    }
    // A second run changes nothing.
    let second = mbsync(&gw, &rc);
    assert_eq!(
        maildir_files(&local),
        files,
        "second run changed the Maildir\n{second}"
    );
    assert!(
        first.contains("BODY.PEEK[]") && first.contains("LOGIN"),
        "mbsync -Dn shows no IMAP traffic:\n{first}"
    );
    // Commands mbsync sent (`>>> N CMD ...`), not capability names such
    // as APPENDLIMIT in the server's answers.
    let sent: Vec<&str> = second.lines().filter(|l| l.starts_with(">>> ")).collect();
    for cmd in ["BODY.PEEK[]", "STORE", "APPEND"] {
        assert!(!sent.iter().any(|l| l.contains(cmd)), "second run sent {cmd}:\n{second}");
    }

    // Maildir → server: flag the first prot/INBOX message locally.
    // (mbsync files unseen messages under new/, seen ones under cur/.)
    let mut names: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .flat_map(|d| std::fs::read_dir(local.join("prot/INBOX").join(d)).expect("maildir subdir"))
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    let victim = names.first().expect("a message").clone();
    let name = victim
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let (base, flags) = name.split_once(":2,").expect("maildir info suffix");
    assert!(!flags.contains('F'), "already flagged: {name}");
    let mut nf: Vec<char> = flags.chars().chain(['F']).collect();
    nf.sort();
    let dir = victim.parent().expect("maildir subdir");
    let flagged = dir.join(format!("{base}:2,{}", nf.into_iter().collect::<String>()));
    std::fs::rename(&victim, &flagged).expect("rename");
    let uid: u32 = base
        .split(",U=")
        .nth(1)
        .and_then(|u| u.split(',').next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(1);
    let third = mbsync(&gw, &rc);
    let f = server_flags(&gw, "prot/INBOX", uid, &[]);
    assert!(
        f.contains("\\Flagged"),
        "server did not get \\Flagged for UID {uid}: {f}\n{third}"
    );

    // Server → Maildir: mark prot/Sent UID 2 answered on the server.
    let f = server_flags(&gw, "prot/Sent", 2, &["+FLAGS", "\\Answered"]);
    assert!(f.contains("\\Answered"), "{f}");
    let fourth = mbsync(&gw, &rc);
    let sent: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|d| std::fs::read_dir(local.join("prot/Sent").join(d)).expect("maildir subdir"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let replied = sent
        .iter()
        .filter(|n| n.rsplit(":2,").next().is_some_and(|f| f.contains('R')))
        .count();
    assert_eq!(
        replied, 1,
        "\\Answered did not reach the Maildir: {sent:?}\n{fourth}"
    );
}
