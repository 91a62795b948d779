//! Legal conservation end to end, with real peers: a Dovecot provider,
//! `pecgate serve`, a real RFC 3161 time-stamping authority (`openssl ts
//! -reply` behind an HTTP responder), the `pecgate` CLI and Python's
//! imaplib.
//!
//! - Anchoring: the chain head is time-stamped; `audit verify` checks every
//!   token and `openssl ts -verify` alone agrees; a journal cut after an
//!   anchored record, an altered or a missing token fail verification,
//!   naming the record; a TSA outage is counted and logged, and anchoring
//!   resumes after it.
//! - Retention and legal holds: messages past retention are removed except
//!   those held (by hash, by search, a whole mailbox); IMAP no longer lists
//!   them; their blobs are gone; every step is in the journal; `store
//!   rebuild-index` gives the same index.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::gateway::{mailbox_toml, tail, Gateway, FAST_UPSTREAM};
use support::tsa::Tsa;
use support::{free_port, http_get, pecgate_bin, sample, Dovecot, DovecotOptions, Imap, UserSpec};

const PROT: &str = "protocollo@pec.comune.example.it";
const LEGAL: &str = "legale@pec.comune.example.it";
const PASS: &str = "pw-dovecot";
const PW: &str = "Gw-pass-1";

/// A plain message `i` whose body says `words`.
fn message(i: usize, words: &str) -> Vec<u8> {
    format!(
        "From: Mittente {i} <mittente{i}@pec.example.it>\r\nTo: {PROT}\r\nSubject: Pratica {i}\r\n\
         Date: Mon, 2 Nov 2026 10:{i:02}:00 +0100\r\nMessage-ID: <cons-{i}@pec.example.it>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{words}\r\n"
    )
    .into_bytes()
}

fn sha(b: &[u8]) -> String {
    support::sha256_hex(b)
}

fn users() -> String {
    let hash = pecgate::auth::hash_password(PW).unwrap();
    let user = |name: &str, roles: &str| {
        format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\nroles = [{roles}]\n\
             grants = {{ protocollo = [\"read\"], legale = [\"read\"] }}\n\n"
        )
    };
    format!("{}{}", user("archivista", "\"hold\""), user("anna", ""))
}

/// `pecgate <args> --config … --user <user>` with the password in the environment.
fn cli_as(gw: &Gateway, user: &str, args: &[&str]) -> Output {
    Command::new(pecgate_bin())
        .args(args)
        .args(["--config", gw.config_path.to_str().unwrap(), "--user", user])
        .env("PECGATE_PASSWORD", PW)
        .output()
        .expect("run pecgate")
}

fn ok(out: Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn json(out: Output, what: &str) -> Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

fn wait_until(what: &str, gw: &Gateway, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}\n{}", tail(&gw.log(), 40));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tokens(gw: &Gateway) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(gw.data_dir.join("anchors"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "tsr")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// (seq, hash, line) of every journal record, in order.
fn records(gw: &Gateway) -> Vec<(u64, String, String)> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(gw.journal_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let mut out = Vec::new();
    for s in segs {
        for line in std::fs::read_to_string(&s).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            out.push((v["seq"].as_u64().unwrap(), v["hash"].as_str().unwrap().to_string(), line.to_string()));
        }
    }
    out
}

fn verify(gw: &Gateway) -> (bool, String, Value) {
    let out = gw.cli(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let j = gw.cli(&["audit", "verify", "--json"]);
    let v: Value = serde_json::from_slice(&j.stdout).unwrap_or(Value::Null);
    (out.status.success(), text, v)
}

/// `openssl ts -verify` alone: the token stamps `digest` and chains to `ca`.
fn openssl_verifies(token: &Path, digest: &str, ca: &Path) -> bool {
    let out = Command::new("openssl")
        .args(["ts", "-verify", "-digest", digest, "-in"])
        .arg(token)
        .arg("-CAfile")
        .arg(ca)
        .output()
        .expect("openssl ts -verify");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verification: OK")
}

#[test]
fn the_chain_is_anchored_and_a_cut_after_an_anchor_is_detected() {
    let tsa = Tsa::start();
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new(PROT, PASS)));
    dv.imap(PROT).append("INBOX", (1..=10).map(|i| message(i, "Prima parte")));
    let http = free_port();
    let body = format!(
        "{FAST_UPSTREAM}[http]\nlisten = \"127.0.0.1:{http}\"\n\n{}\n{}",
        tsa.anchor_toml(5, "1h"),
        mailbox_toml("protocollo", PROT, PASS, dv.port, "offload = { mode = \"never\" }"),
    );
    let mut gw = Gateway::new(&body);
    gw.start();
    gw.wait_mailbox("protocollo", Duration::from_secs(60), "10 archived", |s| s["archived_total"].as_u64() == Some(10));
    // The first anchor comes at once (nothing was anchored yet), the next
    // after 5 more records.
    wait_until("the first anchor", &gw, Duration::from_secs(30), || tokens(&gw).len() == 1);
    dv.imap(PROT).append("INBOX", (11..=20).map(|i| message(i, "Seconda parte")));
    gw.wait_mailbox("protocollo", Duration::from_secs(60), "20 archived", |s| s["archived_total"].as_u64() == Some(20));
    wait_until("two anchors", &gw, Duration::from_secs(30), || tokens(&gw).len() == 2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tokens(&gw).len(), 2, "only the anchor's own record since: nothing to anchor");
    let m = http_get(http, "/metrics", None);
    assert!(sample(&m, "pecgate_anchor_record", &[]).unwrap_or(0.0) > 0.0, "{m}");
    assert_eq!(sample(&m, "pecgate_anchor_failures_total", &[]), Some(0.0));

    // A TSA outage: counted, logged, and anchoring resumes after it.
    tsa.set_failing(true);
    let served = tsa.served();
    dv.imap(PROT).append("INBOX", (21..=30).map(|i| message(i, "Terza parte")));
    wait_until("a failed anchor", &gw, Duration::from_secs(30), || {
        sample(&http_get(http, "/metrics", None), "pecgate_anchor_failures_total", &[]).unwrap_or(0.0) >= 1.0
    });
    assert!(gw.log().contains("anchoring the audit chain failed"), "{}", tail(&gw.log(), 20));
    assert_eq!(tsa.served(), served);
    tsa.set_failing(false);
    let before = tokens(&gw).len();
    wait_until("anchoring to resume (backoff 10 s)", &gw, Duration::from_secs(40), || tokens(&gw).len() > before);
    assert_eq!(gw.stop(), Some(0));

    // Verified by pecgate, and by openssl alone.
    let (good, text, v) = verify(&gw);
    assert!(good && text.contains("anchors OK"), "{text}");
    let recs = records(&gw);
    let newest = v["anchors"]["newest_record"].as_u64().unwrap();
    assert_eq!(v["anchors"]["tokens"].as_u64(), Some(tokens(&gw).len() as u64));
    for t in tokens(&gw) {
        let seq: u64 = t.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let (_, hash, _) = &recs[seq as usize - 1];
        assert!(openssl_verifies(&t, hash, &tsa.ca()), "openssl ts -verify {}", t.display());
        assert!(!openssl_verifies(&t, &recs[0].1, &tsa.ca()), "a token must not verify another record");
    }
    // The reply parser on hostile bytes: every truncation and a flipped
    // byte in each position of a real token answer an error, never a panic.
    let t = tokens(&gw)[0].clone();
    let der = std::fs::read(&t).unwrap();
    let seq: usize = t.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let digest = hex::decode(&recs[seq - 1].1).unwrap();
    let ca = std::fs::read(tsa.ca()).unwrap();
    assert!(pecgate::anchor::tsp::verify(&der, &ca, &digest, None).is_ok());
    for cut in 0..der.len() {
        assert!(pecgate::anchor::tsp::verify(&der[..cut], &ca, &digest, None).is_err(), "cut at {cut}");
    }
    for i in 0..der.len() {
        let mut bad = der.clone();
        bad[i] ^= 0x5a;
        // Some bytes (e.g. inside an unsigned attribute) change nothing a
        // check covers; none may panic, and none may stamp another digest.
        if let Ok(s) = pecgate::anchor::tsp::verify(&bad, &ca, &digest, None) {
            assert_eq!(s.digest, hex::encode(&digest));
        }
    }
    // Each token is named by an `anchored` record with its SHA-256.
    let named: BTreeSet<u64> = recs
        .iter()
        .filter_map(|(_, _, l)| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"]["type"] == "anchored")
        .map(|v| v["event"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(named.len(), tokens(&gw).len(), "{named:?}");

    // Cut the journal's tail from the newest anchored record on: the chain
    // itself still verifies, the anchor names the missing record.
    let segs = |gw: &Gateway| {
        let mut s: Vec<PathBuf> = std::fs::read_dir(gw.journal_dir()).unwrap().map(|e| e.unwrap().path()).collect();
        s.sort();
        s
    };
    let backup = gw.path().join("journal.bak");
    Command::new("cp").arg("-a").arg(gw.journal_dir()).arg(&backup).status().unwrap();
    let last = segs(&gw).pop().unwrap();
    let kept: String = std::fs::read_to_string(&last)
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap() < newest)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&last, kept).unwrap();
    let (good, text, v) = verify(&gw);
    assert!(!good, "a cut journal must fail: {text}");
    assert!(v["broken"].is_null(), "the chain up to the cut is intact: {v}");
    let why = v["anchors"]["broken"].as_str().unwrap();
    assert!(why.contains(&format!("record {newest} was anchored")), "{why}");
    assert!(text.contains("anchors FAIL") && text.contains(&format!("record {newest}")), "{text}");

    // Back to the whole journal: an altered token, then a missing one.
    std::fs::remove_dir_all(gw.journal_dir()).unwrap();
    Command::new("cp").arg("-a").arg(&backup).arg(gw.journal_dir()).status().unwrap();
    assert!(verify(&gw).0);
    let t = tokens(&gw)[0].clone();
    let orig = std::fs::read(&t).unwrap();
    let mut bad = orig.clone();
    let n = bad.len();
    bad[n - 40] ^= 1;
    std::fs::write(&t, &bad).unwrap();
    let (good, text, _) = verify(&gw);
    assert!(!good && text.contains("altered"), "{text}");
    std::fs::remove_file(&t).unwrap();
    let (good, text, _) = verify(&gw);
    assert!(!good && text.contains(t.file_name().unwrap().to_str().unwrap()), "{text}");
    std::fs::write(&t, &orig).unwrap();
    assert!(verify(&gw).0);
}

#[test]
fn retention_removes_only_expired_messages_not_on_hold() {
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new(PROT, PASS)).user(UserSpec::new(LEGAL, PASS)));
    let prot: Vec<Vec<u8>> = vec![
        message(1, "Causa civile: atto di citazione"),
        message(2, "Contratto di fornitura Rossi, prima parte"),
        message(3, "Contratto di fornitura Rossi, seconda parte"),
        message(4, "Comunicazione qualsiasi"),
        message(5, "Altra comunicazione"),
        message(6, "Ultima comunicazione"),
    ];
    dv.imap(PROT).append("INBOX", prot.iter().cloned());
    dv.imap(LEGAL).append("INBOX", [message(7, "Parere legale"), message(8, "Altro parere")]);
    let (http, imap_port) = (free_port(), free_port());
    let tmp = tempfile::tempdir().unwrap();
    let cert = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
    let (ca, chain, key) = (tmp.path().join("ca.pem"), tmp.path().join("chain.pem"), tmp.path().join("key.pem"));
    std::fs::write(&ca, &cert.ca).unwrap();
    std::fs::write(&chain, &cert.chain).unwrap();
    std::fs::write(&key, &cert.key).unwrap();
    // Retention of one second: everything is past it at once. The expiry
    // runs hourly (the first after a minute) until the holds are placed.
    let config = |every: &str| {
        format!(
            "{FAST_UPSTREAM}[http]\nlisten = \"127.0.0.1:{http}\"\n\n[imap]\nlisten = [\"127.0.0.1:{imap_port}\"]\n\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[retention]\nevery = \"{every}\"\n\n{}{}{}",
            chain.display(),
            key.display(),
            mailbox_toml("protocollo", PROT, PASS, dv.port, "offload = { mode = \"never\" }\nretention = \"1s\""),
            mailbox_toml("legale", LEGAL, PASS, dv.port, "offload = { mode = \"never\" }\nretention = \"1s\""),
            users()
        )
    };
    let mut gw = Gateway::new(&config("1h"));
    gw.start();
    gw.wait_mailbox("protocollo", Duration::from_secs(60), "6 archived", |s| s["archived_total"].as_u64() == Some(6));
    gw.wait_mailbox("legale", Duration::from_secs(60), "2 archived", |s| s["archived_total"].as_u64() == Some(2));
    std::thread::sleep(Duration::from_millis(1100));

    // The plan: everything would go.
    let plan = |gw: &Gateway, mailbox: &str| {
        let v =
            json(cli_as(gw, "archivista", &["retention", "plan", "--json", "--mailbox", mailbox]), "retention plan");
        v[0].clone()
    };
    let p = plan(&gw, "protocollo");
    assert_eq!((p["messages"].as_u64(), p["held"].as_u64()), (Some(6), Some(0)), "{p}");
    let text = ok(cli_as(&gw, "archivista", &["retention", "plan"]), "plan");
    assert!(text.contains("protocollo: retention 1s") && text.contains("6 messages"), "{text}");

    // Holds: one message by hash, the hits of a search, a whole mailbox.
    let hold = |args: &[&str]| {
        let mut a = vec!["hold", "add"];
        a.extend_from_slice(args);
        cli_as(&gw, "archivista", &a)
    };
    let h1 = sha(&prot[0]);
    let text =
        ok(hold(&["--mailbox", "protocollo", "--message", &h1, "--reason", "Causa civile 123/2026"]), "hold by hash");
    assert!(text.contains("legal hold") && text.contains("1 messages"), "{text}");
    wait_until("the full-text index", &gw, Duration::from_secs(30), || {
        let out = cli_as(&gw, "anna", &["search", "fornitura", "--json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).unwrap()["hits"].as_array().unwrap().len() == 2
    });
    let text = ok(
        hold(&["--mailbox", "protocollo", "--search", "fornitura Rossi", "--reason", "Contenzioso Rossi"]),
        "hold by search",
    );
    assert!(text.contains("2 messages"), "{text}");
    ok(hold(&["--mailbox", "legale", "--all", "--reason", "Ispezione"]), "hold on a mailbox");
    // One more, released again.
    ok(hold(&["--mailbox", "protocollo", "--message", &sha(&prot[3]), "--reason", "per errore"]), "hold 4");
    let out = cli_as(&gw, "anna", &["hold", "list"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("neither the hold nor the audit role"),
        "{out:?}"
    );
    let listed = json(cli_as(&gw, "archivista", &["hold", "list", "--json"]), "hold list");
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    let wrong =
        listed.as_array().unwrap().iter().find(|h| h["reason"] == "per errore").unwrap()["id"].as_u64().unwrap();
    ok(cli_as(&gw, "archivista", &["hold", "remove", &wrong.to_string(), "--reason", "posta per errore"]), "release");
    let listed = json(cli_as(&gw, "archivista", &["hold", "list", "--json"]), "hold list");
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    // Without the hold role: refused, nothing placed; bad requests too.
    let out = cli_as(&gw, "anna", &["hold", "add", "--mailbox", "protocollo", "--all", "--reason", "x"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("may not place legal holds"),
        "{out:?}"
    );
    let out = hold(&["--mailbox", "protocollo", "--message", &"0".repeat(64), "--reason", "x"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("holds no message"), "{out:?}");
    let out = hold(&["--mailbox", "protocollo", "--all", "--search", "x", "--reason", "x"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exactly one"), "{out:?}");
    assert_eq!(json(cli_as(&gw, "archivista", &["hold", "list", "--json"]), "hold list").as_array().unwrap().len(), 3);

    let p = plan(&gw, "protocollo");
    assert_eq!((p["messages"].as_u64(), p["held"].as_u64()), (Some(3), Some(3)), "{p}");
    let gone: BTreeSet<String> =
        p["items"].as_array().unwrap().iter().map(|i| i["hash"].as_str().unwrap().to_string()).collect();
    let expect_gone: BTreeSet<String> = [&prot[3], &prot[4], &prot[5]].iter().map(|m| sha(m)).collect();
    assert_eq!(gone, expect_gone);
    let p = plan(&gw, "legale");
    assert_eq!(p["messages"].as_u64(), Some(0), "{p}");
    assert!(p["whole_hold"].is_u64(), "{p}");

    // Expiry every second from now on (a SIGHUP restarts it).
    gw.write_config(&config("1s"));
    gw.signal("HUP");
    wait_until("the expiry run", &gw, Duration::from_secs(30), || gw.log().contains("retention: expiry run"));
    wait_until("nothing left to expire", &gw, Duration::from_secs(30), || plan(&gw, "protocollo")["messages"] == 0);
    let m = http_get(http, "/metrics", None);
    assert_eq!(sample(&m, "pecgate_retention_expired_messages_total", &["protocollo"]), Some(3.0), "{m}");
    assert_eq!(sample(&m, "pecgate_retention_held_messages", &["protocollo"]), Some(3.0));

    // IMAP lists only what was held.
    let imap = Imap {
        host: "127.0.0.1".into(),
        port: imap_port,
        user: "anna".into(),
        password: PW.into(),
        tls_ca: Some(ca.clone()),
    };
    let uids = imap.uids("protocollo/INBOX");
    assert_eq!(uids.len(), 3, "{uids:?}");
    let bodies: BTreeSet<String> = uids.iter().map(|u| sha(&imap.fetch("protocollo/INBOX", *u))).collect();
    let held: BTreeSet<String> = prot[..3].iter().map(|m| sha(m)).collect();
    assert_eq!(bodies, held);
    assert_eq!(imap.uids("legale/INBOX").len(), 2, "a mailbox on hold keeps everything");
    // The full-text index forgets them too.
    wait_until("search to forget", &gw, Duration::from_secs(20), || {
        let out = cli_as(&gw, "anna", &["search", "qualsiasi", "--json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).unwrap()["hits"].as_array().unwrap().is_empty()
    });
    assert_eq!(gw.stop(), Some(0));

    // The blobs: the expired ones are gone from disk, the held ones stay.
    let store = gw.open_store();
    for m in &prot[..3] {
        assert!(store.get_blob(&sha(m)).is_ok());
    }
    for m in &prot[3..] {
        assert!(store.get_blob(&sha(m)).is_err(), "an expired blob is removed");
    }
    let before = store.index_dump().unwrap();
    store.close().unwrap();
    drop(store);
    // The journal accounts for every removal (hash, folder, reason) and
    // every hold, with who placed it.
    let recs = records(&gw);
    let expired: BTreeSet<String> = recs
        .iter()
        .filter_map(|(_, _, l)| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"]["type"] == "expired")
        .flat_map(|v| {
            assert!(v["event"]["reason"].as_str().unwrap().contains("retention 1s ended"), "{v}");
            v["event"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    assert_eq!(i["folder"], "INBOX");
                    i["hash"].as_str().unwrap().to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(expired, expect_gone);
    let q = ok(gw.cli(&["audit", "query", "--op", "hold-place", "--format", "jsonl"]), "audit query");
    assert_eq!(q.lines().count(), 4, "{q}");
    assert!(q.lines().all(|l| l.contains("\"actor\":\"archivista\"")), "{q}");
    assert!(verify(&gw).0);
    // Rebuilt from the journal alone: the same index.
    ok(gw.cli(&["store", "rebuild-index"]), "rebuild-index");
    let store = gw.open_store();
    assert_eq!(store.index_dump().unwrap(), before, "rebuild-index must agree with the expiry");
    store.close().unwrap();
    drop(store);
    let check = gw.cli(&["store", "check"]);
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // Where the index's space goes, table by table.
    let stats = json(gw.cli(&["store", "stats", "--json"]), "store stats");
    let msgs = before.iter().filter(|(t, _, _)| t == "msgs").count() as u64;
    let table = |name: &str| stats["tables"].as_array().unwrap().iter().find(|t| t["table"] == name).cloned();
    assert_eq!(table("msgs").unwrap()["entries"], msgs, "{stats:#}");
    assert!(table("msgs").unwrap()["stored"].as_u64().unwrap() > 0, "{stats:#}");
    assert_eq!(table("derived").unwrap()["file"], "derived.redb", "{stats:#}");
    assert_eq!(stats["messages"], msgs);
    assert!(stats["files_bytes"].as_u64().unwrap() > 0, "{stats:#}");
    let text = ok(gw.cli(&["store", "stats"]), "store stats");
    assert!(text.contains("bytes per message") && text.contains("hashes"), "{text}");
}
