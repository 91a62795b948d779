//! Continuous offload from a real provider (a throwaway Dovecot): every
//! message ends in the archive byte-identical, the provider ends empty, and
//! nothing is duplicated or lost across runs, crashes and provider faults.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::gateway::{archived_hashes, mailbox_toml, Gateway, FAST_UPSTREAM};
use support::{make_message, sha256_hex, Dovecot, DovecotOptions, Msg, UserSpec};

const USER: &str = "protocollo@pec.example.it";
const PASS: &str = "provider-secret-7";
const WAIT: Duration = Duration::from_secs(120);

fn provider(opts: DovecotOptions) -> Dovecot {
    Dovecot::start(opts.user(UserSpec::new(USER, PASS).quota(2 * 1024 * 1024 * 1024, 1_000_000)))
}

/// Sizes from 1 KB to 5 MB: mostly small, some large, as in a real PEC box.
fn varied_size(i: usize) -> usize {
    match i % 100 {
        0 => 5 * 1024 * 1024,
        10 | 50 => 1024 * 1024,
        n if n % 10 == 0 => 200 * 1024,
        n => 1024 + (n * 997 % 30) * 1024,
    }
}

fn total_on_disk(g: &Gateway) -> BTreeMap<String, usize> {
    let s = g.open_store();
    let h = archived_hashes(&s, "protocollo");
    s.close().unwrap();
    h
}

#[test]
fn offload_1000_messages_byte_identical_then_nothing_more() {
    let dv = provider(DovecotOptions::new());
    let imap = dv.imap(USER);
    let msgs: Vec<Vec<u8>> = (0..1000).map(|i| make_message(i, varied_size(i))).collect();
    let expected: BTreeSet<String> = msgs.iter().map(|m| sha256_hex(m)).collect();
    assert_eq!(expected.len(), 1000);
    imap.append("INBOX", msgs.iter().map(|m| m.as_slice()));
    assert_eq!(imap.count("INBOX"), 1000);

    let mut g = Gateway::new(&format!("{FAST_UPSTREAM}{}", mailbox_toml("protocollo", USER, PASS, dv.port, "")));
    g.start();
    let st = g.wait_mailbox("protocollo", WAIT, "1000 archived and none left on the provider", |s| {
        s["archived_total"] == 1000 && s["on_provider"] == 0
    });
    assert_eq!(st["state"], "idle");
    assert_eq!(imap.count("INBOX"), 0, "the provider INBOX ends empty");
    assert_eq!(g.stop(), Some(0), "clean exit on SIGTERM");

    // Every appended message is in the archive exactly once, byte-identical:
    // the blob named by the hash of what was appended holds those bytes.
    let archived = total_on_disk(&g);
    assert_eq!(archived.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(archived.values().all(|n| *n == 1));
    let s = g.open_store();
    for m in msgs.iter().step_by(37) {
        assert_eq!(&s.get_blob(&sha256_hex(m)).unwrap(), m);
    }
    s.close().unwrap();
    drop(s); // releases the index lock for the CLI below
    // The index's lock goes with the last handle (the writer thread's
    // too); on a loaded machine that can take a moment.
    let mut check = g.cli(&["store", "check", "--deep"]);
    for _ in 0..20 {
        if check.status.success() || !String::from_utf8_lossy(&check.stderr).contains("in use by another pecgate process") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        check = g.cli(&["store", "check", "--deep"]);
    }
    assert!(check.status.success(), "{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));

    // A second run adds nothing.
    let journal_before = std::fs::read_to_string(g.journal_dir().join("000001.log")).unwrap().lines().count();
    g.start();
    g.wait_pass("protocollo", WAIT);
    g.stop();
    assert_eq!(total_on_disk(&g).len(), 1000);
    let journal_after = std::fs::read_to_string(g.journal_dir().join("000001.log")).unwrap().lines().count();
    assert_eq!(journal_before, journal_after, "a second run records nothing new");

    // `pecgate status` reports what the archive holds.
    let out = g.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mailboxes"][0]["archived_total"], 1000);
    assert_eq!(v["mailboxes"][0]["on_provider"], 0);
}

/// Kill -9 at random instants during the offload, at least 20 times. After
/// every kill each message is on the provider, in the archive, or both;
/// at the end each is archived exactly once and the provider is empty.
#[test]
fn crash_safety_kill9_during_offload() {
    let dv = provider(DovecotOptions::new());
    let imap = dv.imap(USER);
    let mut all: BTreeSet<String> = BTreeSet::new();
    let mut next = 0usize;
    let mut add = |n: usize, all: &mut BTreeSet<String>| {
        let batch: Vec<Vec<u8>> = (next..next + n).map(|i| make_message(i, 20_000 + (i * 7919) % 60_000)).collect();
        next += n;
        all.extend(batch.iter().map(|m| sha256_hex(m)));
        imap.append("INBOX", batch.iter().map(|m| m.as_slice()));
    };
    add(500, &mut all);

    let mut g = Gateway::new(&format!("{FAST_UPSTREAM}{}", mailbox_toml("protocollo", USER, PASS, dv.port, "")));
    let mut kills = 0;
    let mut rng_state = 0x2545F4914F6CDD1Du64;
    let mut rand = move |n: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state % n
    };
    while kills < 24 {
        // Keep the offload busy so the kills land during it.
        if imap.count("INBOX") < 100 {
            add(120, &mut all);
        }
        g.start();
        std::thread::sleep(Duration::from_millis(30 + rand(400)));
        g.kill9();
        kills += 1;

        // No message may be in neither place.
        let on_provider: BTreeSet<String> = imap.sha256s("INBOX").into_iter().map(|(_, h)| h).collect();
        let archived = total_on_disk(&g);
        assert!(archived.values().all(|n| *n == 1), "kill {kills}: a message was archived twice");
        let lost: Vec<&String> = all.iter().filter(|h| !on_provider.contains(*h) && !archived.contains_key(*h)).collect();
        assert!(lost.is_empty(), "kill {kills}: {} messages in neither place: {lost:?}", lost.len());
        let unknown: Vec<&String> = archived.keys().filter(|h| !all.contains(*h)).collect();
        assert!(unknown.is_empty(), "kill {kills}: archive holds messages never sent: {unknown:?}");
    }

    g.start();
    let total = all.len();
    g.wait_mailbox("protocollo", WAIT, "everything archived and offloaded", |s| {
        s["archived_total"] == total && s["on_provider"] == 0
    });
    g.stop();
    assert_eq!(imap.count("INBOX"), 0);
    let archived = total_on_disk(&g);
    assert_eq!(archived.keys().cloned().collect::<BTreeSet<_>>(), all);
    assert!(archived.values().all(|n| *n == 1));
    let v = g.cli(&["audit", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let c = g.cli(&["store", "check", "--deep"]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
}

#[test]
fn keep_days_leaves_younger_messages_on_the_provider() {
    let dv = provider(DovecotOptions::new());
    let imap = dv.imap(USER);
    let now = chrono::Utc::now().timestamp();
    let old: Vec<Msg> = (0..10).map(|i| Msg::new(make_message(i, 2000)).dated(now - 10 * 86400)).collect();
    let young: Vec<Msg> = (10..15).map(|i| Msg::new(make_message(i, 2000)).dated(now - 2 * 86400)).collect();
    let young_hashes: BTreeSet<String> = young.iter().map(|m| sha256_hex(&m.bytes)).collect();
    imap.append("INBOX", old.into_iter().chain(young));

    let mut g = Gateway::new(&format!(
        "{FAST_UPSTREAM}{}",
        mailbox_toml("protocollo", USER, PASS, dv.port, "offload = { mode = \"keep-days\", days = 7 }")
    ));
    g.start();
    g.wait_mailbox("protocollo", WAIT, "15 archived, 5 left", |s| s["archived_total"] == 15 && s["on_provider"] == 5);
    g.stop();
    let left: BTreeSet<String> = imap.sha256s("INBOX").into_iter().map(|(_, h)| h).collect();
    assert_eq!(left, young_hashes, "exactly the messages younger than 7 days stay");
    assert_eq!(total_on_disk(&g).len(), 15);
}

#[test]
fn quota_policy_brings_usage_under_low_water_oldest_first() {
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new(USER, PASS).quota(1024 * 1024, 100_000)));
    let imap = dv.imap(USER);
    let now = chrono::Utc::now().timestamp();
    // 18 × 50 KB ≈ 880 KB of 1 MB: above the 80 % high-water mark.
    let msgs: Vec<Msg> = (0..18).map(|i| Msg::new(make_message(i, 50_000)).dated(now - (100 - i as i64) * 3600)).collect();
    let hashes: Vec<String> = msgs.iter().map(|m| sha256_hex(&m.bytes)).collect();
    imap.append("INBOX", msgs);
    let before = imap.quota("INBOX").storage.expect("quota reported");
    assert!(before.used as f64 / before.limit as f64 > 0.8, "{before:?}");

    let mut g = Gateway::new(&format!(
        "{FAST_UPSTREAM}{}",
        mailbox_toml("protocollo", USER, PASS, dv.port, "offload = { mode = \"quota\", high_water = 0.8, low_water = 0.5 }")
    ));
    g.start();
    // The pass is complete when on_provider is set (the quota gauge is
    // updated a moment earlier, during the pass).
    let st = g.wait_mailbox("protocollo", WAIT, "usage under low water", |s| {
        s["archived_total"] == 18
            && s["on_provider"].is_u64()
            && s["quota"]["storage_used_bytes"].as_f64().zip(s["quota"]["storage_limit_bytes"].as_f64()).is_some_and(|(u, l)| u / l < 0.5)
    });
    g.stop();
    let after = imap.quota("INBOX").storage.unwrap();
    assert!((after.used as f64) < 0.5 * after.limit as f64, "Dovecot reports {after:?}");
    // The messages left are the newest ones, and every deleted one is archived.
    let left: BTreeSet<String> = imap.sha256s("INBOX").into_iter().map(|(_, h)| h).collect();
    assert!(!left.is_empty(), "the quota policy deletes only down to the low-water mark");
    let k = hashes.len() - left.len();
    assert_eq!(left, hashes[k..].iter().cloned().collect::<BTreeSet<_>>(), "oldest first");
    assert_eq!(total_on_disk(&g).len(), 18);
    assert_eq!(st["on_provider"], left.len());
}

#[test]
fn wrong_password_is_reported_and_retried_with_backoff() {
    let dv = provider(DovecotOptions::new());
    dv.imap(USER).append("INBOX", [make_message(1, 1000)]);
    let mut g = Gateway::new(&format!(
        "{FAST_UPSTREAM}{}",
        mailbox_toml("protocollo", USER, "not-the-password", dv.port, "")
    ));
    g.start();
    let st = g.wait_mailbox("protocollo", WAIT, "two failed logins", |s| s["consecutive_failures"].as_u64() >= Some(2));
    assert_eq!(st["last_error_reason"], "login");
    assert!(st["last_error"].as_str().unwrap().contains("login refused"), "{st}");
    assert!(g.is_running(), "no crash loop: the daemon stays up");
    // Back-off: a refused login waits at least 8 × min_backoff (1.6 s) before
    // retrying, so in 3 s there is at most one more attempt.
    let n = st["consecutive_failures"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let n2 = g.mailbox_status("protocollo").unwrap()["consecutive_failures"].as_u64().unwrap();
    assert!(n2 <= n + 2, "retries too fast: {n} -> {n2} in 3 s");
    let out = g.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("login refused"), "status shows the error:\n{text}");
    g.stop();
    let log = g.log();
    assert!(log.contains("login refused"), "the log says what happened");
    assert!(!log.contains("not-the-password"), "provider passwords never appear in logs");
    assert_eq!(dv.imap(USER).count("INBOX"), 1, "nothing deleted");
}

#[test]
fn provider_killed_and_restarted_mid_sync_loses_nothing() {
    let mut dv = provider(DovecotOptions::new());
    let imap = dv.imap(USER);
    let msgs: Vec<Vec<u8>> = (0..400).map(|i| make_message(i, 30_000)).collect();
    let all: BTreeSet<String> = msgs.iter().map(|m| sha256_hex(m)).collect();
    imap.append("INBOX", msgs.iter().map(|m| m.as_slice()));
    let mut g = Gateway::new(&format!("{FAST_UPSTREAM}{}", mailbox_toml("protocollo", USER, PASS, dv.port, "")));
    g.start();
    g.wait_mailbox("protocollo", WAIT, "some archived", |s| s["archived_this_run"].as_u64() > Some(0));
    dv.kill();
    g.wait_mailbox("protocollo", WAIT, "the failure seen", |s| s["state"] == "error");
    std::thread::sleep(Duration::from_millis(500));
    dv.start_again();
    g.wait_mailbox("protocollo", WAIT, "all archived", |s| s["archived_total"] == 400 && s["on_provider"] == 0);
    g.stop();
    assert_eq!(dv.imap(USER).count("INBOX"), 0);
    let archived = total_on_disk(&g);
    assert_eq!(archived.keys().cloned().collect::<BTreeSet<_>>(), all);
}

#[test]
fn uidvalidity_change_duplicates_nothing_and_loses_nothing() {
    let dv = provider(DovecotOptions::new());
    let imap = dv.imap(USER);
    let msgs: Vec<Vec<u8>> = (0..30).map(|i| make_message(i, 3000)).collect();
    imap.append("INBOX", msgs.iter().map(|m| m.as_slice()));
    // Archive only, so the messages stay on the provider.
    let never = mailbox_toml("protocollo", USER, PASS, dv.port, "offload = { mode = \"never\" }");
    let mut g = Gateway::new(&format!("{FAST_UPSTREAM}{never}"));
    g.start();
    g.wait_mailbox("protocollo", WAIT, "30 archived", |s| s["archived_total"] == 30 && s["on_provider"] == 30);
    g.stop();

    dv.bump_uidvalidity(USER, "INBOX");
    imap.append("INBOX", [make_message(100, 3000)]);
    g.start();
    g.wait_mailbox("protocollo", WAIT, "the new message archived", |s| s["archived_total"] == 31);
    g.wait_pass("protocollo", WAIT);
    g.stop();
    let archived = total_on_disk(&g);
    assert_eq!(archived.len(), 31, "nothing duplicated");
    assert!(archived.values().all(|n| *n == 1));
    assert!(g.log().contains("UIDVALIDITY changed"));

    // Now offload: every message (known by hash under the new UIDVALIDITY)
    // is deleted from the provider.
    g.write_config(&format!("{FAST_UPSTREAM}{}", mailbox_toml("protocollo", USER, PASS, dv.port, "")));
    g.start();
    g.wait_mailbox("protocollo", WAIT, "provider empty", |s| s["on_provider"] == 0);
    g.stop();
    assert_eq!(imap.count("INBOX"), 0);
    assert_eq!(total_on_disk(&g).len(), 31);
}

fn offload_with_hidden_capability(hide: &[&str]) {
    let dv = provider(DovecotOptions::new().capabilities(support::capabilities_without(hide)));
    let imap = dv.imap(USER);
    let caps = imap.capabilities();
    for h in hide {
        assert!(!caps.iter().any(|c| c.eq_ignore_ascii_case(h)), "{h} still offered: {caps:?}");
    }
    imap.append("INBOX", (0..20).map(|i| make_message(i, 2000)));
    let mut g = Gateway::new(&format!("{FAST_UPSTREAM}{}", mailbox_toml("protocollo", USER, PASS, dv.port, "")));
    g.start();
    let st = g.wait_mailbox("protocollo", WAIT, "20 archived", |s| s["archived_total"] == 20 && s["on_provider"] == 0);
    for h in hide {
        assert_eq!(st["capabilities"][h.to_ascii_lowercase()], false, "{st}");
    }
    // New mail is picked up later (by polling when there is no IDLE).
    imap.append("INBOX", [make_message(99, 2000)]);
    // `on_provider` is counted at the end of a pass and `archived_total` as
    // each message is archived: the late message is archived before the
    // same pass deletes it, so wait for the pass to end ("idle") too.
    g.wait_mailbox("protocollo", WAIT, "the late message archived and deleted", |s| {
        s["archived_total"] == 21 && s["on_provider"] == 0 && s["state"] == "idle"
    });
    g.stop();
    assert_eq!(imap.count("INBOX"), 0);
}

#[test]
fn provider_without_idle() {
    offload_with_hidden_capability(&["IDLE"]);
}

#[test]
fn provider_without_uidplus() {
    offload_with_hidden_capability(&["UIDPLUS"]);
}

#[test]
fn audit_verify_passes_and_detects_one_changed_byte() {
    let dv = provider(DovecotOptions::new());
    dv.imap(USER).append("INBOX", (0..10).map(|i| make_message(i, 1500)));
    let mut g = Gateway::new(&format!("{FAST_UPSTREAM}{}", mailbox_toml("protocollo", USER, PASS, dv.port, "")));
    g.start();
    g.wait_mailbox("protocollo", WAIT, "10 archived", |s| s["archived_total"] == 10 && s["on_provider"] == 0);
    g.stop();
    let ok = g.cli(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(ok.status.success(), "{text}");
    assert!(text.contains("audit chain OK"), "{text}");

    let path = g.journal_dir().join("000001.log");
    let original = std::fs::read(&path).unwrap();
    let lines: Vec<&[u8]> = original.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 12, "archive and delete records for 10 messages");
    let archive_records = lines.iter().filter(|l| String::from_utf8_lossy(l).contains("\"op\":\"archive\"")).count();
    let delete_records = String::from_utf8_lossy(&original).matches("\"op\":\"provider-delete\"").count();
    assert_eq!(archive_records, 10, "one record per archived message");
    assert!(delete_records >= 1, "deletions at the provider are recorded");

    // Change one byte in each of several records, one at a time: verify
    // fails and names that record.
    for target in [1usize, 5, lines.len()] {
        let mut bytes = original.clone();
        let start: usize = lines[..target - 1].iter().map(|l| l.len() + 1).sum();
        let line = String::from_utf8_lossy(lines[target - 1]).to_string();
        let off = start + line.find("\"actor\":\"").unwrap() + 9;
        bytes[off] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let bad = g.cli(&["audit", "verify"]);
        let text = String::from_utf8_lossy(&bad.stdout).to_string();
        assert_eq!(bad.status.code(), Some(1), "{text}");
        assert!(text.contains(&format!("BROKEN at record {target} ")), "record {target}: {text}");
    }
    // Removing a record is detected at the record after it.
    let mut without: Vec<u8> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i != 3 {
            without.extend_from_slice(l);
            without.push(b'\n');
        }
    }
    std::fs::write(&path, &without).unwrap();
    let bad = g.cli(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&bad.stdout).to_string();
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(text.contains("BROKEN at record 4 "), "{text}");
    std::fs::write(&path, &original).unwrap();
    assert!(g.cli(&["audit", "verify"]).status.success());
}

/// The provider over TLS, as real PEC providers are reached: implicit TLS
/// (993-style) and STARTTLS, trusting the provider's certificate through
/// `ca_file`; and a certificate nobody trusts is refused.
#[test]
fn provider_over_implicit_tls_and_starttls() {
    let mut dv = provider(DovecotOptions::new().tls(true));
    let imap = dv.imap(USER);
    imap.append("INBOX", (0..5).map(|i| make_message(i, 2000)));
    // Like a real provider: a server certificate issued by a CA (rustls, as
    // it should, refuses a self-signed certificate used as its own anchor).
    let ca = issue_server_certificate(&dv.cert_path.clone().expect("TLS certificate"));
    dv.stop();
    dv.start_again();
    let tls_port = dv.tls_port.expect("TLS port");
    let mb = |alias: &str, port: u16, mode: &str, ca_line: &str| {
        format!(
            "[[mailbox]]\nalias = \"{alias}\"\naddress = \"{USER}\"\nusername = \"{USER}\"\npassword = \"{PASS}\"\n\
             imap = {{ host = \"127.0.0.1\", port = {port}, tls = \"{mode}\" }}\n{ca_line}\noffload = {{ mode = \"never\" }}\npoll_interval = \"1s\"\n"
        )
    };
    let ca_line = format!("ca_file = \"{}\"", ca.display());
    let mut g = Gateway::new(&format!(
        "{FAST_UPSTREAM}{}{}{}",
        mb("implicit", tls_port, "implicit", &ca_line),
        mb("starttls", dv.port, "starttls", &ca_line),
        mb("untrusted", tls_port, "implicit", "")
    ));
    g.start();
    g.wait_mailbox("implicit", WAIT, "archived over implicit TLS", |s| s["archived_total"] == 5);
    g.wait_mailbox("starttls", WAIT, "archived over STARTTLS", |s| s["archived_total"] == 5);
    let st = g.wait_mailbox("untrusted", WAIT, "untrusted certificate refused", |s| s["last_error_reason"] == "tls");
    assert_eq!(st["archived_total"], 0);
    g.stop();
}

/// Make a CA and a server certificate for 127.0.0.1 signed by it; write the
/// server certificate and key over Dovecot's (`cert.pem`/`key.pem` beside
/// `cert_path`). Returns the CA file.
fn issue_server_certificate(cert_path: &std::path::Path) -> std::path::PathBuf {
    let dir = cert_path.parent().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=pecgate test provider CA"]);
    run(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf"]);
    dir.join("ca.pem")
}
