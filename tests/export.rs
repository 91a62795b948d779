//! Submission packages for conservation, end to end with real peers: a
//! 1,000-message mailbox on Dovecot (plus certified envelopes, a sent
//! message and its signed receipts) archived by `pecgate serve`, the chain
//! anchored by a real RFC 3161 TSA; `pecgate export` beside the running
//! daemon, checked with `sha256sum -c` and `openssl ts -verify` alone and
//! with `pecgate export verify`; one changed byte anywhere detected;
//! `--since-last` holding exactly the new messages; a ZIP round trip with
//! the daemon stopped; broken packages answered with errors.
//!
//! `cargo test --release --test export -- --ignored --nocapture
//! export_throughput` is the throughput benchmark (BENCHMARKS.md).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::gateway::{mailbox_toml, tail, Gateway, FAST_UPSTREAM};
use support::tsa::Tsa;
use support::{free_port, make_message, pecgate_bin, Dovecot, DovecotOptions, UserSpec};

const PROT: &str = "protocollo@pec.comune.example.it";
const PASS: &str = "pw-dovecot";
const PW: &str = "Gw-pass-1";
const SENT_ID: &str = "<inviato-1@comune.example.it>";

fn run(args: &[&str]) -> Output {
    Command::new(pecgate_bin()).args(args).env("PECGATE_PASSWORD", PW).output().expect("run pecgate")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn export(gw: &Gateway, extra: &[&str]) -> Output {
    let mut a = vec!["export", "--config", gw.config_path.to_str().unwrap(), "--mailbox", "protocollo"];
    a.extend_from_slice(extra);
    run(&a)
}

fn verify(p: &Path) -> Output {
    run(&["export", "verify", p.to_str().unwrap()])
}

/// The SHA-256 of every `.eml` in a package directory.
fn eml_hashes(dir: &Path) -> BTreeSet<String> {
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    sums.lines().filter(|l| l.ends_with(".eml")).map(|l| l[..64].to_string()).collect()
}

/// The hashes the journal archived for `protocollo` (not duplicates).
fn archived(gw: &Gateway) -> BTreeSet<String> {
    let j = pecgate::store::JournalReader::open_read_only(&gw.data_dir);
    let mut out = BTreeSet::new();
    for r in j.records().unwrap() {
        if let pecgate::store::Event::Archived { mailbox, hash, duplicate: false, .. } = r.unwrap().event {
            if mailbox == "protocollo" {
                out.insert(hash);
            }
        }
    }
    out
}

/// The last record's seq and the newest anchored seq.
fn head_and_anchor(gw: &Gateway) -> (u64, u64) {
    let j = pecgate::store::JournalReader::open_read_only(&gw.data_dir);
    let (mut head, mut anchored) = (0, 0);
    for r in j.records().unwrap() {
        let r = r.unwrap();
        head = r.seq;
        if let pecgate::store::Event::Anchored { seq, .. } = r.event {
            anchored = seq;
        }
    }
    (head, anchored)
}

fn sha256sum_c(dir: &Path) -> Output {
    Command::new("sha256sum").args(["--quiet", "-c", "SHA256SUMS"]).current_dir(dir).output().expect("sha256sum")
}

/// What README.txt says, with the tools it names: the anchored record's
/// hash recomputed from its line with sed and sha256sum, then the token
/// checked with openssl against it.
fn openssl_verify(dir: &Path) -> (String, Output) {
    let jsonl = std::fs::read_dir(dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("anchor-") && n.ends_with(".jsonl"))
        .expect("an anchor in the package");
    let base = jsonl.trim_end_matches(".jsonl");
    let sh = |cmd: &str| {
        let o = Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let computed =
        sh(&format!("sed -n 1p audit/{jsonl} | sed 's/,\"hash\":\"[0-9a-f]*\"}}$/}}/' | tr -d '\\n' | sha256sum"));
    let computed = computed.split_whitespace().next().unwrap().to_string();
    let stated = sh(&format!("sed -n 1p audit/{jsonl} | grep -o '\"hash\":\"[0-9a-f]*\"}}$'"));
    assert_eq!(stated.trim(), format!("\"hash\":\"{computed}\"}}"), "the anchored record's line hashes to its hash");
    let o = Command::new("openssl")
        .args([
            "ts",
            "-verify",
            "-digest",
            &computed,
            "-in",
            &format!("audit/{base}.tsr"),
            "-CAfile",
            "audit/tsa-ca.pem",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    (computed, o)
}

fn copy_dir(from: &Path, to: &Path) {
    let o = Command::new("cp").arg("-r").arg(from).arg(to).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// After a file's hash changed from `old` to `new`: SHA256SUMS and
/// index.xml made to agree, as a forger would.
fn fix_lists(dir: &Path, old: &str, new: &str) {
    let idx = std::fs::read_to_string(dir.join("index.xml")).unwrap().replace(old, new);
    std::fs::write(dir.join("index.xml"), &idx).unwrap();
    let ih = support::sha256_hex(idx.as_bytes());
    let sums: String = std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap()
        .replace(old, new)
        .lines()
        .map(|l| if l.ends_with("  index.xml") { format!("{ih}  index.xml\n") } else { format!("{l}\n") })
        .collect();
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

/// Flip one byte of `file` (in the middle) in a copy of the package;
/// `export verify` must fail naming it, and `sha256sum -c` too.
fn tamper(pkg: &Path, work: &Path, file: &str) {
    let copy = work.join(format!("tampered-{}", file.replace('/', "_")));
    copy_dir(pkg, &copy);
    let p = copy.join(file);
    let mut b = std::fs::read(&p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(&p, &b).unwrap();
    let v = verify(&copy);
    assert_eq!(v.status.code(), Some(1), "{file}: {}", text(&v));
    assert!(String::from_utf8_lossy(&v.stderr).contains(file), "names {file}: {}", text(&v));
    assert!(!sha256sum_c(&copy).status.success(), "sha256sum -c catches {file}");
}

fn receipt(pki: &pecgate::sim::pki::Pki, notice: pecgate::sim::build::Notice, n: u32) -> Vec<u8> {
    use pecgate::sim::build::{build, Provider, Submission};
    let original = format!(
        "Message-ID: {SENT_ID}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0100\r\nFrom: <{PROT}>\r\nTo: <rossi@pec.ditta.example.it>\r\n\
         Subject: Richiesta documenti\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSi richiedono i documenti.\r\n"
    );
    let sub = Submission {
        sender: PROT.into(),
        recipients: vec![("rossi@pec.ditta.example.it".into(), true)],
        original: original.into_bytes(),
        subject: "Richiesta documenti".into(),
        msgid: SENT_ID.into(),
        identificativo: format!("opec-sent-1-{n}@pec.comune.example.it"),
        at: chrono::Utc::now(),
    };
    let provider =
        Provider { address: "posta-certificata@pec.comune.example.it".into(), name: "Gestore di test".into() };
    build(pki, &provider, &sub, &notice, chrono::Utc::now()).expect("receipt")
}

#[test]
fn a_mailbox_exported_verifies_with_sha256sum_and_openssl_and_since_last_holds_exactly_the_new_mail() {
    let started = Instant::now();
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new(PROT, PASS)));
    let pki = pecgate::sim::pki::Pki::generate("posta-certificata@pec.mittente.example.it").expect("pki");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("provider-ca.pem"), pki.ca.cert.to_pem().unwrap()).unwrap();
    let imap = dv.imap(PROT);
    // 1,000 plain messages, 3 certified envelopes, 2 receipts about our
    // sent message, and the sent message in the provider's Sent folder.
    let mut inbox: Vec<Vec<u8>> = (0..1000).map(|i| make_message(i, 1500 + (i * 37) % 3000)).collect();
    for n in 1..=3 {
        inbox.push(support::certified_envelope(
            &pki,
            "rossi@pec.mittente.example.it",
            PROT,
            &format!("Pratica {n}"),
            n,
        ));
    }
    use pecgate::sim::build::Notice;
    inbox.push(receipt(&pki, Notice::Accettazione, 1));
    inbox.push(receipt(&pki, Notice::Consegna { recipient: "rossi@pec.ditta.example.it".into() }, 2));
    imap.append("INBOX", inbox);
    imap.create("Sent");
    let sent = format!(
        "Message-ID: {SENT_ID}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0100\r\nFrom: <{PROT}>\r\nTo: <rossi@pec.ditta.example.it>\r\n\
         Subject: Richiesta documenti\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSi richiedono i documenti.\r\n"
    );
    imap.append("Sent", [sent.into_bytes()]);
    let total = 1006;

    let tsa = Tsa::start();
    let http_port = free_port();
    let hash = pecgate::auth::hash_password(PW).unwrap();
    let body = format!(
        "{FAST_UPSTREAM}[pec]\ntrust_store = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n{}\n{}\
         [[user]]\nname = \"revisore\"\npassword_hash = \"{hash}\"\ngrants = {{ protocollo = [\"read\"] }}\nroles = [\"audit\"]\n\n\
         [[user]]\nname = \"mario\"\npassword_hash = \"{hash}\"\ngrants = {{ protocollo = [\"read\"] }}\n",
        w.join("provider-ca.pem").display(),
        tsa.anchor_toml(50, "1s"),
        mailbox_toml("protocollo", PROT, PASS, dv.port, "folders = [\"INBOX\", \"Sent\"]\nsent_folder = \"Sent\"\noffload = { mode = \"never\" }"),
    );
    let mut gw = Gateway::new(&body);
    gw.start();
    gw.wait_mailbox("protocollo", Duration::from_secs(60), "all archived", |s| {
        s["archived_total"].as_u64() == Some(total)
    });
    // An anchor at or after the last archived record.
    let deadline = Instant::now() + Duration::from_secs(60);
    let last_archive = {
        let j = pecgate::store::JournalReader::open_read_only(&gw.data_dir);
        j.records()
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|r| matches!(r.event, pecgate::store::Event::Archived { .. }))
            .map(|r| r.seq)
            .max()
            .unwrap()
    };
    // Preferably one covering every message (anchoring follows within a
    // second); on a loaded machine the TSA may time out and the daemon
    // back off, and any anchor will do: the package carries the newest.
    let soon = Instant::now() + Duration::from_secs(10);
    loop {
        let anchored = head_and_anchor(&gw).1;
        if anchored >= last_archive || (anchored > 0 && Instant::now() > soon) {
            break;
        }
        assert!(Instant::now() < deadline, "no anchor at all\n{}", tail(&gw.log(), 30));
        std::thread::sleep(Duration::from_millis(200));
    }

    // Beside the running daemon: a user without the audit role may not
    // record it (and nothing is left behind); the auditor may.
    let pkg1 = w.join("pkg1");
    let o = export(&gw, &["--since-last", "--out", pkg1.to_str().unwrap(), "--user", "mario"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("role audit"), "{}", text(&o));
    let unrecorded = w.join("unrecorded");
    std::fs::rename(&pkg1, &unrecorded).unwrap();
    let o = export(&gw, &["--since-last", "--out", pkg1.to_str().unwrap(), "--user", "revisore"]);
    assert!(o.status.success(), "{}\n{}", text(&o), tail(&gw.log(), 20));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("exported {total} messages")), "{}", text(&o));
    let all = archived(&gw);
    assert_eq!(all.len() as u64, total);
    assert_eq!(eml_hashes(&pkg1), all, "every archived message, as its original bytes");

    // The endpoint refuses what would export messages twice or a mailbox
    // it does not know; a malformed record changes nothing.
    let post = |json: &str| {
        let o = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-u",
                &format!("revisore:{PW}"),
                "-X",
                "POST",
                "--data",
                json,
            ])
            .arg(format!("http://127.0.0.1:{http_port}/api/exports"))
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let pkg = "0".repeat(64);
    assert_eq!(
        post(&format!(
            "{{\"mailbox\":\"protocollo\",\"first_seq\":5,\"last_seq\":9,\"messages\":1,\"package\":\"{pkg}\"}}"
        )),
        "409"
    );
    assert_eq!(
        post(&format!("{{\"mailbox\":\"altro\",\"first_seq\":1,\"last_seq\":9,\"messages\":1,\"package\":\"{pkg}\"}}")),
        "404"
    );
    assert_eq!(
        post("{\"mailbox\":\"protocollo\",\"first_seq\":9,\"last_seq\":1,\"messages\":1,\"package\":\"x\"}"),
        "400"
    );
    assert_eq!(post("not json"), "400");

    // sha256sum and openssl alone.
    let s = sha256sum_c(&pkg1);
    assert!(s.status.success(), "{}", text(&s));
    let (digest, o) = openssl_verify(&pkg1);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Verification: OK"),
        "{digest}: {}",
        text(&o)
    );
    let v = verify(&pkg1);
    assert!(v.status.success(), "{}", text(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("token verified"), "{}", text(&v));
    // Against the archive: the journal recorded this package, not the
    // one whose recording was refused.
    let config = gw.config_path.to_str().unwrap();
    let v = run(&["export", "verify", pkg1.to_str().unwrap(), "--config", config]);
    assert!(
        v.status.success() && String::from_utf8_lossy(&v.stdout).contains("recorded: journal record"),
        "{}",
        text(&v)
    );
    let v = run(&["export", "verify", unrecorded.to_str().unwrap(), "--config", config]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(String::from_utf8_lossy(&v.stderr).contains("no exported record"), "{}", text(&v));

    // The sent message with its receipts; the envelopes' metadata.
    let docs: Vec<PathBuf> = std::fs::read_dir(pkg1.join("documents")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(docs.len() as u64, total - 2, "the two receipts sit with their sent message");
    let with_receipts: Vec<&PathBuf> = docs.iter().filter(|d| d.join("receipts").is_dir()).collect();
    assert_eq!(with_receipts.len(), 1);
    let meta = std::fs::read_to_string(with_receipts[0].join("metadata.xml")).unwrap();
    assert!(
        meta.contains("<TipologiaDiFlusso>U</TipologiaDiFlusso>")
            && meta.contains("Tipo=\"accettazione\"")
            && meta.contains("Tipo=\"avvenuta-consegna\""),
        "{meta}"
    );
    let mut receipts: Vec<String> = std::fs::read_dir(with_receipts[0].join("receipts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    receipts.sort();
    assert_eq!(receipts.len(), 4, "{receipts:?}");
    let envelope_meta: Vec<String> = docs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("metadata.xml")).unwrap())
        .filter(|m| m.contains("<TipologiaDocumentale>posta-certificata</TipologiaDocumentale>"))
        .collect();
    assert_eq!(envelope_meta.len(), 3);
    for m in &envelope_meta {
        assert!(m.contains("<EsitoVerifica Momento=\"esportazione\">valida</EsitoVerifica>"), "{m}");
        assert!(
            m.contains("rossi@pec.mittente.example.it")
                && m.contains(PROT)
                && m.contains("<ImprontaCrittografica Algoritmo=\"SHA-256\""),
            "{m}"
        );
        assert!(m.contains("<DataRegistrazione Fonte=\"daticert\">"), "{m}");
    }
    let index = std::fs::read_to_string(pkg1.join("index.xml")).unwrap();
    assert!(
        index.contains("<PIndex xmlns=\"http://www.uni.com/U3011/sincro-v2/\"")
            && index.contains("role=\"Submitter\"")
            && index.contains("<Hash function=\"SHA-256\"")
    );

    // One changed byte anywhere is found.
    let some_eml = docs[500].join("message.eml");
    let rel = |p: &Path| p.strip_prefix(&pkg1).unwrap().to_string_lossy().into_owned();
    for f in [rel(&some_eml), rel(&docs[7].join("metadata.xml")), "index.xml".into(), "audit/records.jsonl".into()] {
        tamper(&pkg1, w, &f);
    }
    // A record changed and both lists fixed up to match: its own hash
    // still gives it away.
    let forged = w.join("forged");
    copy_dir(&pkg1, &forged);
    let rec = forged.join("audit/records.jsonl");
    let old = std::fs::read(&rec).unwrap();
    let new = String::from_utf8(old.clone())
        .unwrap()
        .replacen("\"actor\":\"system\"", "\"actor\":\"sistema\"", 1)
        .into_bytes();
    assert_ne!(old, new);
    std::fs::write(&rec, &new).unwrap();
    fix_lists(&forged, &support::sha256_hex(&old), &support::sha256_hex(&new));
    assert!(sha256sum_c(&forged).status.success(), "the lists were fixed up");
    let v = verify(&forged);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("audit/records.jsonl")
            && String::from_utf8_lossy(&v.stderr).contains("hash"),
        "{}",
        text(&v)
    );
    // One document's metadata put in place of another's, the lists fixed
    // up: it describes another message.
    let swapped = w.join("swapped");
    copy_dir(&pkg1, &swapped);
    let (a, b) = (swapped.join(rel(&docs[3].join("metadata.xml"))), swapped.join(rel(&docs[4].join("metadata.xml"))));
    let (ha, hb) = (support::sha256_hex(&std::fs::read(&a).unwrap()), support::sha256_hex(&std::fs::read(&b).unwrap()));
    std::fs::copy(&b, &a).unwrap();
    fix_lists(&swapped, &ha, &hb);
    assert!(sha256sum_c(&swapped).status.success(), "the lists were fixed up");
    let v = verify(&swapped);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(String::from_utf8_lossy(&v.stderr).contains(&rel(&docs[3].join("metadata.xml"))), "{}", text(&v));
    // A file added, a file removed.
    let extra = w.join("extra");
    copy_dir(&pkg1, &extra);
    std::fs::write(extra.join("documents/nota.txt"), "x").unwrap();
    assert!(String::from_utf8_lossy(&verify(&extra).stderr).contains("documents/nota.txt"));
    std::fs::remove_file(extra.join("documents/nota.txt")).unwrap();
    std::fs::remove_file(extra.join(rel(&some_eml))).unwrap();
    assert!(String::from_utf8_lossy(&verify(&extra).stderr).contains(&rel(&some_eml)));

    // New mail: the next --since-last holds exactly it. A late receipt
    // about the sent message exported before is a document of its own
    // that names it.
    let sent_hash = support::sha256_hex(&std::fs::read(with_receipts[0].join("message.eml")).unwrap());
    let late = receipt(
        &pki,
        Notice::PreavvisoErroreConsegna {
            recipient: "rossi@pec.ditta.example.it".into(),
            reason: "nessuna risposta".into(),
        },
        3,
    );
    imap.append("INBOX", (2000..2040).map(|i| make_message(i, 4000)).chain([late]));
    gw.wait_mailbox("protocollo", Duration::from_secs(30), "the new mail archived", |s| {
        s["archived_total"].as_u64() == Some(total + 41)
    });
    let pkg2 = w.join("pkg2");
    let o = export(&gw, &["--since-last", "--out", pkg2.to_str().unwrap(), "--user", "revisore"]);
    assert!(o.status.success(), "{}", text(&o));
    let now = archived(&gw);
    let new: BTreeSet<String> = now.difference(&all).cloned().collect();
    assert_eq!(new.len(), 41);
    assert_eq!(eml_hashes(&pkg2), new, "exactly the new messages");
    let linked: Vec<String> = std::fs::read_dir(pkg2.join("documents"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path().join("metadata.xml")).unwrap())
        .filter(|m| m.contains("<TipologiaDocumentale>preavviso-errore-consegna</TipologiaDocumentale>"))
        .collect();
    assert_eq!(linked.len(), 1);
    assert!(linked[0].contains(&format!("<RiferitoA Algoritmo=\"SHA-256\">{sent_hash}</RiferitoA>")), "{}", linked[0]);
    assert!(verify(&pkg2).status.success() && sha256sum_c(&pkg2).status.success());
    // Nothing new: said plainly, nothing written, nothing recorded.
    let data_dir = gw.data_dir.clone();
    let exported_records = || {
        let j = pecgate::store::JournalReader::open_read_only(&data_dir);
        j.records()
            .unwrap()
            .filter(|r| matches!(r.as_ref().unwrap().event, pecgate::store::Event::Exported { .. }))
            .count()
    };
    assert_eq!(exported_records(), 2);
    let pkg3 = w.join("pkg3");
    let o = export(&gw, &["--since-last", "--out", pkg3.to_str().unwrap(), "--user", "revisore"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("nothing to export"), "{}", text(&o));
    assert!(!pkg3.exists());
    assert_eq!(exported_records(), 2);

    // The daemon stopped: the export is recorded by the store itself. A
    // whole export as ZIP; a partial one (--from/--to) does not move
    // --since-last.
    assert_eq!(gw.stop(), Some(0));
    let zip = w.join("tutto.zip");
    let o = export(&gw, &["--out", zip.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let v = verify(&zip);
    assert!(v.status.success(), "{}", text(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains(&format!("{} messages", total + 41)), "{}", text(&v));
    // Extracted (Python's zipfile, no pecgate), it checks like a directory.
    let unz = w.join("unzipped");
    let o = Command::new(support::python()).args(["-m", "zipfile", "-e"]).arg(&zip).arg(&unz).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(sha256sum_c(&unz).status.success());
    assert!(openssl_verify(&unz).1.status.success());
    assert_eq!(eml_hashes(&unz), now);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let part = w.join("part");
    let o = export(&gw, &["--from", &today, "--to", &today, "--out", part.to_str().unwrap()]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("partial"), "{}", text(&o));
    assert_eq!(eml_hashes(&part), now);
    assert_eq!(exported_records(), 4);
    let o = export(&gw, &["--since-last", "--out", w.join("pkg4").to_str().unwrap()]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("nothing to export"), "{}", text(&o));
    // An existing non-empty directory is refused.
    let o = export(&gw, &["--out", pkg1.to_str().unwrap()]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not an empty directory"),
        "{}",
        text(&o)
    );
    // `audit verify` still passes with the export records in the chain.
    let o = gw.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));

    // Broken packages: errors, never a panic.
    let bytes = std::fs::read(&zip).unwrap();
    let cut = w.join("cut.zip");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = w.join("garbage.zip");
    std::fs::write(&garbage, b"PK\x03\x04 not really a zip").unwrap();
    let empty = w.join("empty");
    std::fs::create_dir(&empty).unwrap();
    for p in [&cut, &garbage, &empty, &w.join("missing")] {
        let v = verify(p);
        assert_eq!(v.status.code(), Some(1), "{}: {}", p.display(), text(&v));
        assert!(!String::from_utf8_lossy(&v.stderr).contains("panicked"), "{}", text(&v));
    }
    eprintln!("export test: {:.1} s", started.elapsed().as_secs_f64());
}

/// The throughput benchmark: 2,000 messages of 20 KB to 2 MB (≈ 1 GB)
/// stored through the store's API, then `pecgate export` into a directory
/// and into a ZIP; prints MB/s (BENCHMARKS.md).
#[test]
#[ignore]
fn export_throughput() {
    let n: usize = std::env::var("EXPORT_BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let gw = Gateway::new(&mailbox_toml("protocollo", PROT, PASS, 1, ""));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = gw.open_store();
    let mut bytes = 0u64;
    let mut batch = Vec::new();
    for i in 0..n {
        // 20 KB .. 2 MB, spread evenly.
        let size = 20_000 + (i * 7919) % 1_980_000;
        let m = make_message(i, size);
        bytes += m.len() as u64;
        batch.push(m);
        if batch.len() == 50 || i + 1 == n {
            let ms = std::mem::take(&mut batch);
            rt.block_on(async {
                let mut entries = Vec::new();
                for m in ms {
                    let now = chrono::Utc::now();
                    let filing = pecgate::upstream::filing::file(&m, false, now, None);
                    let blob = store.put_blob(m).await.unwrap();
                    let change = pecgate::store::Change::Archive {
                        mailbox: "protocollo".into(),
                        folder: filing.folder,
                        blob,
                        internal_date: now,
                        flags: Vec::new(),
                        provider: None,
                        pec: Some(filing.meta.into()),
                        handling: None,
                    };
                    entries.push((pecgate::store::Audit::system("upstream", "archive").mailbox("protocollo"), change));
                }
                store.commit_batch(entries).await.unwrap();
            });
        }
    }
    store.close().unwrap();
    drop(store);
    eprintln!("archived {n} messages, {:.0} MB", bytes as f64 / 1e6);
    for out in ["bench-dir", "bench.zip"] {
        let p = gw.path().join(out);
        let t = Instant::now();
        let o = Command::new(pecgate_bin())
            .args([
                "export",
                "--config",
                gw.config_path.to_str().unwrap(),
                "--mailbox",
                "protocollo",
                "--out",
                p.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "{out}: {:.0} MB in {secs:.2} s = {:.0} MB/s (whole command)\n  {}",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs,
            String::from_utf8_lossy(&o.stdout).trim()
        );
        let t = Instant::now();
        let v = verify(&p);
        assert!(v.status.success(), "{}", text(&v));
        eprintln!("  export verify: {:.2} s", t.elapsed().as_secs_f64());
        if let Ok(keep) = std::env::var("EXPORT_BENCH_KEEP") {
            copy_dir(&p, &Path::new(&keep).join(out));
        }
    }
}
