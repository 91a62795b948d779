//! Campaigns end to end, with real peers: `pecgate serve` sends a campaign
//! created with `pecgate campaign create` (the command line over the
//! daemon's HTTP API) through the PEC provider simulator (`pecgate
//! sim-provider`, its own mailboxes, recipients on a remote domain whose
//! fate is scripted by address), pulls the receipts back over the
//! simulator's IMAP, and reports per recipient. The simulator's record
//! says what it received: each notice exactly once.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::gateway::{Gateway, FAST_UPSTREAM};
use support::sim::{wait_port, Sim, REMOTES};
use support::{free_port, pecgate_bin};

const PW: &str = "Gw-pass-1";
const PROT: &str = "prot@pec.sim.test";

struct Env {
    sim: Sim,
    gw: Gateway,
    record: PathBuf,
    dir: tempfile::TempDir,
    /// The gateway's IMAP listener.
    imap_port: u16,
}

/// The simulator (`sim_extra`: more of its top-level keys) and the gateway
/// (`sending`: the prot mailbox's limits), started.
fn setup(sim_extra: &str, sending: &str, gw_extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (smtp_port, imap_port, http_port, gw_imap) = (free_port(), free_port(), free_port(), free_port());
    let record = dir.path().join("record.jsonl");
    let sim_cfg = dir.path().join("sim.toml");
    std::fs::write(
        &sim_cfg,
        format!(
            "listen = \"127.0.0.1:{smtp_port}\"\ndomains = [\"pec.sim.test\"]\npki_dir = \"{pki}\"\nrecord = \"{rec}\"\n{sim_extra}\n\
             [mailstore]\ndata_dir = \"{store}\"\nimap_listen = \"127.0.0.1:{imap_port}\"\n\
             [[mailbox]]\naddress = \"{PROT}\"\npassword = \"pw\"\nimap_user = \"prot\"\nimap_password = \"pw\"\n{REMOTES}",
            pki = dir.path().join("pki").display(),
            rec = record.display(),
            store = dir.path().join("store").display(),
        ),
    )
    .unwrap();
    let mut sim = Sim { child: None, config: sim_cfg, log: dir.path().join("sim.log"), port: smtp_port };
    sim.start();
    wait_port(imap_port, &sim.log);
    let hash = pecgate::auth::hash_password(PW).unwrap();
    let body = format!(
        "{FAST_UPSTREAM}[pec]\ntrust_store = \"{pki}/ca.pem\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n[tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\n[imap]\nlisten = [\"127.0.0.1:{gw_imap}\"]\n\n{gw_extra}\n\
         [[mailbox]]\nalias = \"prot\"\naddress = \"{PROT}\"\nusername = \"prot\"\npassword = \"pw\"\n\
         imap = {{ host = \"127.0.0.1\", port = {imap_port}, tls = \"none\" }}\n\
         smtp = {{ host = \"127.0.0.1\", port = {smtp_port}, tls = \"none\" }}\npoll_interval = \"1s\"\n{sending}\n\
         [[user]]\nname = \"mario\"\npassword_hash = \"{hash}\"\ngrants = {{ prot = [\"read\", \"send\"] }}\n\n\
         [[user]]\nname = \"anna\"\npassword_hash = \"{hash}\"\ngrants = {{ prot = [\"read\"] }}\n",
        pki = dir.path().join("pki").display(),
        d = dir.path().display(),
    );
    // The gateway's IMAP over TLS, a certificate for 127.0.0.1.
    let c = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
    std::fs::write(dir.path().join("ca.pem"), c.ca).unwrap();
    std::fs::write(dir.path().join("cert.pem"), c.chain).unwrap();
    std::fs::write(dir.path().join("key.pem"), c.key).unwrap();
    let mut gw = Gateway::new(&body);
    gw.start();
    wait_port(http_port, &gw.log_path);
    Env { sim, gw, record, dir, imap_port: gw_imap }
}

impl Env {
    fn campaign(&self, user: &str, args: &[&str]) -> Output {
        Command::new(pecgate_bin())
            .arg("campaign")
            .args(args)
            .args(["--config", self.gw.config_path.to_str().unwrap(), "--user", user])
            .env("PECGATE_PASSWORD", PW)
            .output()
            .expect("run pecgate campaign")
    }

    /// The daemon's `/metrics`.
    fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let cfg = std::fs::read_to_string(&self.gw.config_path).unwrap();
        let addr = cfg.split("[http]\nlisten = \"").nth(1).unwrap().split('"').next().unwrap().to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
    }

    /// An IMAP client (imaplib) logged in to the gateway as `user`.
    fn imap(&self, user: &str) -> support::Imap {
        support::Imap { host: "127.0.0.1".into(), port: self.imap_port, user: user.into(), password: PW.into(), tls_ca: Some(self.dir.path().join("ca.pem")) }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Accepted submissions in the simulator's record, by Message-ID.
    fn received(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in std::fs::read_to_string(&self.record).unwrap_or_default().lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            if let Some(id) = v["message_id"].as_str() {
                *m.entry(id.to_string()).or_insert(0) += 1;
            }
        }
        m
    }

    fn status(&self, id: &str) -> Value {
        let out = self.campaign("mario", &["status", id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Wait until every notice is in a final state.
    fn wait_final(&mut self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status(id);
            let open: u64 = ["queued", "submitting", "retrying", "accepted", "acceptance-receipt"]
                .iter()
                .map(|s| st["states"][s].as_u64().unwrap_or(0))
                .sum();
            if open == 0 {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "campaign not settled: {st:#}\n{}\n{}",
                support::gateway::tail(&self.gw.log(), 40),
                support::gateway::tail(&self.sim.log(), 20)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn created_id(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text.split_whitespace().nth(1).expect("campaign <id> created").to_string()
}

/// The recipient of row `i` and what the simulator will do with it.
fn recipient(i: usize) -> (String, &'static str) {
    match i % 10 {
        0 => (format!("pieno{i}@cittadini.sim"), "failed"),
        1 => (format!("ignoto{i}@cittadini.sim"), "failed"),
        2 => (format!("taglia{i}@cittadini.sim"), "delivered"),
        3 => (format!("persona{i}@posta.example"), "not-certified"),
        _ => (format!("Cittadino.{i}@cittadini.sim"), "delivered"),
    }
}

fn csv_rows(n: usize) -> String {
    let mut csv = String::from("\u{feff}verbale;nome;pec;importo\r\n");
    for i in 0..n {
        let (to, _) = recipient(i);
        csv += &format!("V-{i:05};\"Rossi; Mario {i}\";{to};{},00\r\n", 100 + i);
    }
    csv
}

const TEMPLATE: &str = "Subject: Verbale n. {{verbale}} - notifica\n\nGentile {{nome}},\nle notifichiamo il verbale {{verbale}} di {{importo}} euro.\n";

fn report(env: &Env, id: &str, extra: &[&str]) -> Vec<BTreeMap<String, String>> {
    let mut args = vec!["report", id];
    args.extend_from_slice(extra);
    let out = env.campaign("mario", &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut r = csv::ReaderBuilder::new().delimiter(if extra.contains(&"--fallback") { b';' } else { b',' }).from_reader(out.stdout.as_slice());
    let headers = r.headers().unwrap().clone();
    r.records().map(|rec| headers.iter().zip(rec.unwrap().iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect()).collect()
}

fn mixed_campaign(n: usize) {
    let mut env = setup("", "sending = { per_minute = 6000, max_recipients = 500 }", "");
    let csv = env.write("destinatari.csv", csv_rows(n).as_bytes());
    let tpl = env.write("avviso.txt", TEMPLATE.as_bytes());
    let pdf = env.write("informativa.pdf", b"%PDF-1.4 informativa\n%%EOF\n");
    // anna may read the mailbox but not send: refused, nothing created.
    let out = env.campaign("anna", &["create", "--mailbox", "prot", "--name", "x", "--recipients", csv.to_str().unwrap(), "--template", tpl.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("may not send"), "{out:?}");
    let out = env.campaign(
        "mario",
        &["create", "--mailbox", "prot", "--name", "Verbali 2026", "--recipients", csv.to_str().unwrap()]
            .into_iter()
            .chain(["--template", tpl.to_str().unwrap(), "--attach", pdf.to_str().unwrap(), "--deadline", "2099-12-31", "--start"])
            .collect::<Vec<_>>(),
    );
    let id = created_id(&out);
    let t0 = Instant::now();
    let st = env.wait_final(&id, Duration::from_secs(60 + n as u64 / 10));
    eprintln!("{n} notices final in {:?}: {st}", t0.elapsed());
    let rows = report(&env, &id, &[]);
    assert_eq!(rows.len(), n);
    // Every row is what the simulator did to that recipient.
    for (i, r) in rows.iter().enumerate() {
        let (to, want) = recipient(i);
        assert_eq!(r["address"], to);
        assert_eq!(r["key"], format!("V-{i:05}"));
        assert_eq!(r["state"], want, "{r:?}");
        match want {
            "delivered" => assert!(!r["delivered_at"].is_empty() && !r["provider_id"].is_empty(), "{r:?}"),
            "failed" => assert!(r["failure"].contains(if i % 10 == 0 { "5.2.2" } else { "5.1.1" }), "{r:?}"),
            _ => {}
        }
        assert_eq!(r["attempts"], "1", "{r:?}");
        assert_eq!(r["notice_sha256"].len(), 64);
    }
    // Each notice reached the provider exactly once (the dropped
    // connections after 250 included: settled by receipts, not resent).
    let received = env.received();
    let ids: BTreeSet<&String> = rows.iter().map(|r| &r["message_id"]).collect();
    assert_eq!(ids.len(), n);
    for id in &ids {
        assert_eq!(received.get(*id), Some(&1), "{id} received {:?} times", received.get(*id));
    }
    assert_eq!(received.len(), n, "the simulator got something that is not a notice");
    // The fallback list: exactly the failed and non-certified rows, as
    // their original CSV lines plus state and reason.
    let fb = report(&env, &id, &["--fallback"]);
    let want: Vec<String> = (0..n).filter(|i| recipient(*i).1 != "delivered").map(|i| format!("V-{i:05}")).collect();
    assert_eq!(fb.iter().map(|r| r["verbale"].clone()).collect::<Vec<_>>(), want);
    assert!(fb.iter().all(|r| r["nome"].starts_with("Rossi; Mario") && !r["motivo"].is_empty()), "{fb:?}");
    // Nothing was delivered late against a deadline in the past: every
    // row is a fallback then.
    assert_eq!(report(&env, &id, &["--fallback", "--deadline", "2020-01-01"]).len(), n);
    // The HTML report: counts and one row per recipient, values escaped.
    let html = env.campaign("mario", &["report", &id, "--format", "html"]);
    assert!(html.status.success());
    let html = String::from_utf8(html.stdout).unwrap();
    assert_eq!(html.matches("<tr class=\"delivered\"><td>").count() - 1, rows.iter().filter(|r| r["state"] == "delivered").count(), "one per delivered row, plus the count's");
    assert!(html.contains("Verbali 2026") && html.contains("5.2.2") && !html.contains("<script"), "{html}");
    // The report is written as its rows are read: sent in chunks, never
    // built whole first (the daemon's memory stays flat at 48,397 rows),
    // and it ends with the last chunk (a cut one would not).
    let cfg = std::fs::read_to_string(&env.gw.config_path).unwrap();
    let port: u16 = cfg.split("[http]\nlisten = \"127.0.0.1:").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    let raw = support::http_get(port, &format!("/api/campaigns/{id}/report?format=jsonl"), Some(("mario", PW)));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("content-length"), "{head}");
    assert!(body.len() > 4 * 65536 && body.ends_with("\r\n0\r\n\r\n"), "{} bytes, ends {:?}", body.len(), &body[body.len().saturating_sub(20)..]);
    assert_eq!(body.matches("\"state\":").count(), n, "one JSON line per recipient");
    // Evidence for one delivered and one failed recipient: the notice and
    // the signed receipts, with their SHA-256 (as in the report).
    for (i, receipts) in [(4usize, ["accettazione.eml", "consegna.eml"]), (10, ["accettazione.eml", "errore-consegna.eml"])] {
        let dir = env.dir.path().join(format!("evidence-{i}"));
        let out = env.campaign("mario", &["evidence", &id, "--recipient", &rows[i]["address"], "--out", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let check = Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(&dir).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        assert!(sums.contains(&format!("{}  notice.eml", rows[i]["notice_sha256"])), "{sums}");
        for r in receipts {
            let line = sums.lines().find(|l| l.ends_with(r)).unwrap_or_else(|| panic!("no {r} in {sums}"));
            assert!(rows[i]["receipts_sha256"].contains(line.split(' ').next().unwrap()), "{line} vs {:?}", rows[i]);
            let c = pecgate::pec::classify(&std::fs::read(dir.join(r)).unwrap());
            assert!(c.kind.is_receipt(), "{r}: {:?}", c.kind);
            if r == "consegna.eml" {
                // The delivered time is the receipt's certified time.
                let at = c.daticert.and_then(|d| d.data).unwrap().with_timezone(&chrono::Utc);
                assert_eq!(rows[i]["delivered_at"], at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
        }
    }
    // IMAP: the campaign's folder holds each notice as rendered (UID =
    // its row), its state as keywords; read-only, for readers of the
    // mailbox too.
    let folder = "prot/Campaigns/Verbali 2026";
    assert!(env.imap("anna").list().iter().any(|f| f == folder), "{:?}", env.imap("anna").list());
    let imap = env.imap("mario");
    let flags = imap.flags(folder);
    assert_eq!(flags.len(), n);
    for (i, (uid, fl)) in flags.iter().enumerate() {
        assert_eq!(*uid as usize, i + 1);
        let want = match rows[i]["state"].as_str() {
            "delivered" => "$PecDelivered",
            "failed" => "$PecFailed",
            "not-certified" => "$PecNotCertified",
            other => panic!("row {i} is {other}"),
        };
        assert!(fl.iter().any(|f| f == want) && fl.iter().any(|f| f == "\\Seen"), "row {i} {}: {fl:?}", rows[i]["state"]);
    }
    for (uid, sha) in imap.sha256s(folder) {
        assert_eq!(sha, rows[uid as usize - 1]["notice_sha256"], "notice {uid} as fetched is the notice as sent");
    }
    let refused = imap.try_op("store_flags", serde_json::json!({ "folder": folder, "uids": [1], "flags": ["\\Flagged"], "add": true }));
    assert!(refused.is_err(), "a campaign's folder is read-only: {refused:?}");
    // Metrics: notices by state, dialogues, ETA; the dashboard's campaign
    // panels query only what is exported.
    let metrics = env.scrape();
    let series = |name: &str, state: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("campaign=\"{id}\"")) && l.contains(state))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let delivered = (0..n).filter(|i| recipient(*i).1 == "delivered").count() as f64;
    assert_eq!(series("pecgate_campaign_notices{", "state=\"delivered\""), Some(delivered), "{metrics}");
    assert_eq!(series("pecgate_campaign_notices{", "state=\"failed\""), Some((n / 5) as f64));
    assert_eq!(series("pecgate_campaign_dialogues_total{", ""), Some(n as f64));
    assert_eq!(series("pecgate_campaign_waiting{", ""), Some(0.0));
    assert_eq!(series("pecgate_campaign_running{", ""), Some(1.0));
    assert!(series("pecgate_campaign_eta_timestamp_seconds{", "").is_some());
    assert_eq!(series("pecgate_campaign_deadline_timestamp_seconds{", ""), Some(4102444799.0));
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana/pecgate.json")).unwrap()).unwrap();
    let used: Vec<String> = support::dashboard_metric_names(&dashboard).into_iter().filter(|m| m.starts_with("pecgate_campaign_")).collect();
    assert!(used.len() >= 4, "{used:?}");
    for m in used {
        assert!(metrics.contains(&format!("\n{m}{{")), "the dashboard queries {m}, not exported:\n{metrics}");
    }
    // Full-text search finds a notice by its words, in Sent, and filters
    // by what its receipts say.
    let search = |args: &[&str]| -> Vec<Value> {
        let out = Command::new(pecgate_bin())
            .arg("search")
            .args(args)
            .args(["--json", "--config", env.gw.config_path.to_str().unwrap(), "--user", "mario"])
            .env("PECGATE_PASSWORD", PW)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["hits"].as_array().unwrap().clone()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while search(&["00014"]).is_empty() {
        assert!(Instant::now() < deadline, "the notices are not in the full-text index");
        std::thread::sleep(Duration::from_millis(300));
    }
    let failed = search(&["00010", "--state", "failed", "--kind", "sent"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0]["folder"].as_str(), failed[0]["subject"].as_str()), (Some("prot/Sent"), Some("Verbale n. V-00010 - notifica")));
    assert!(search(&["00010", "--state", "delivered"]).is_empty());
    assert_eq!(search(&["00014", "--state", "delivered"]).len(), 1);
    // The evidence: the notice as sent is the archived blob, in Sent.
    assert_eq!(env.gw.stop(), Some(0));
    let store = env.gw.open_store();
    let sent = store.messages("prot", "Sent").unwrap();
    assert_eq!(sent.len(), n, "one sent copy per notice");
    let r0 = &rows[4];
    let bytes = store.get_blob(&r0["notice_sha256"]).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("Verbale n. V-00004") && text.contains("Rossi; Mario 4") && text.contains("informativa.pdf"), "{text}");
    assert_eq!(support::sha256_hex(&bytes), r0["notice_sha256"]);
    // Every step is on the audit chain.
    let j: String = std::fs::read_dir(env.gw.journal_dir()).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect();
    assert_eq!(j.matches("\"op\":\"notice-submitting\"").count(), n);
    assert!(j.contains("\"op\":\"campaign-create\"") && j.contains("\"op\":\"campaign-start\""));
}

#[test]
fn a_campaign_with_mixed_outcomes_is_reported_per_recipient_and_sent_once() {
    mixed_campaign(std::env::var("CAMPAIGN_NOTICES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000));
}

#[test]
fn a_full_mailbox_gets_the_notice_once_more_as_a_new_message() {
    let env = setup("", "sending = { per_minute = 6000 }", "[campaigns]\nretry_full_after = \"3s\"\n");
    let csv = "verbale;nome;pec;importo\nV-1;Uno;pieno1@cittadini.sim;1\nV-2;Due;svuota2@cittadini.sim;2\nV-3;Tre;ignoto3@cittadini.sim;3\nV-4;Quattro;Cittadino.4@cittadini.sim;4\n";
    let csv = env.write("d.csv", csv.as_bytes());
    let tpl = env.write("t.txt", TEMPLATE.as_bytes());
    let args = ["create", "--mailbox", "prot", "--name", "piene", "--recipients", csv.to_str().unwrap(), "--template", tpl.to_str().unwrap(), "--start"];
    let id = created_id(&env.campaign("mario", &args));
    // Until the emptied mailbox has the notice and the full one failed twice.
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let rows = report(&env, &id, &[]);
        if rows[1]["state"] == "delivered" && rows[0]["state"] == "failed" && rows[0]["attempts"] == "2" && rows[0]["receipts_sha256"].split(' ').count() == 4 {
            break rows;
        }
        assert!(Instant::now() < deadline, "not redelivered: {rows:#?}\n{}", support::gateway::tail(&env.gw.log(), 30));
        std::thread::sleep(Duration::from_millis(500));
    };
    let (full, emptied, unknown, fine) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    // Sent again as a new message, its own Message-ID; both sendings'
    // receipts (acceptance and delivery error, then acceptance and
    // delivery) are the row's evidence.
    assert!(emptied["message_id"].ends_with(".r1@pec.sim.test>") && emptied["attempts"] == "2", "{emptied:?}");
    assert_eq!(emptied["receipts_sha256"].split(' ').count(), 4, "{emptied:?}");
    assert!(full["failure"].contains("5.2.2") && full["message_id"].contains(".r1@"), "{full:?}");
    // Other failures and deliveries are never sent again.
    assert_eq!((unknown["state"].as_str(), unknown["attempts"].as_str()), ("failed", "1"), "{unknown:?}");
    assert_eq!((fine["state"].as_str(), fine["attempts"].as_str()), ("delivered", "1"), "{fine:?}");
    // Once: the mailbox still full after the retry gets nothing more.
    std::thread::sleep(Duration::from_secs(8));
    let received = env.received();
    assert_eq!(received.len(), 6, "{received:?}");
    assert!(received.values().all(|n| *n == 1), "{received:?}");
    assert_eq!(report(&env, &id, &[])[0]["attempts"], "2");
    // The evidence names each sending.
    let dir = env.dir.path().join("evidence-svuota");
    let out = env.campaign("mario", &["evidence", &id, "--recipient", "svuota2@cittadini.sim", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    for f in ["invio-1-notice.eml", "invio-1-accettazione.eml", "invio-1-errore-consegna.eml", "notice.eml", "accettazione.eml", "consegna.eml"] {
        assert!(sums.lines().any(|l| l.ends_with(&format!("  {f}"))), "{f} missing: {sums}");
    }
    let check = Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(&dir).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let again = std::fs::read_to_string(dir.join("notice.eml")).unwrap();
    let first = std::fs::read_to_string(dir.join("invio-1-notice.eml")).unwrap();
    assert!(again.contains(emptied["message_id"].as_str()) && !first.contains(emptied["message_id"].as_str()));
    assert_eq!(again.split("\r\n\r\n").nth(1), first.split("\r\n\r\n").nth(1), "the same notice text");
}

#[test]
fn bad_recipient_lists_give_each_row_and_queue_nothing() {
    let env = setup("", "sending = { max_message_bytes = 200000 }", "");
    let tpl = env.write("t.txt", TEMPLATE.as_bytes());
    let big = env.write("grande.pdf", &vec![b'x'; 300_000]);
    let create = |csv: &Path, extra: &[&str]| {
        let mut a = vec!["create", "--mailbox", "prot", "--name", "prova", "--recipients", csv.to_str().unwrap(), "--template", tpl.to_str().unwrap()];
        a.extend_from_slice(extra);
        env.campaign("mario", &a)
    };
    let err = |o: &Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // Header with `;`, rows with `,`: each row has the wrong field count.
    let csv = env.write("a.csv", b"verbale;nome;pec;importo\nV-1,Mario,a@cittadini.sim,10\nV-2,Anna,b@cittadini.sim,20\n");
    let o = create(&csv, &[]);
    assert!(!o.status.success() && err(&o).contains("line 2:") && err(&o).contains("line 3:"), "{}", err(&o));
    // Windows-1252 accents are read as such.
    let mut w = b"verbale;nome;pec;importo\nV-1;Citt\xe0 di Forl\xec;a@cittadini.sim;10\n".to_vec();
    w.extend_from_slice(b"V-2;Niccol\xf2;b@cittadini.sim;20\n");
    let csv = env.write("b.csv", &w);
    let o = create(&csv, &[]);
    assert!(o.status.success(), "{}", err(&o));
    // Missing column (no address), duplicate address, unknown placeholder.
    let csv = env.write("c.csv", b"verbale;nome;importo\nV-1;Mario;10\n");
    let o = create(&csv, &[]);
    assert!(!o.status.success() && err(&o).contains("address"), "{}", err(&o));
    let csv = env.write("d.csv", b"verbale;nome;pec;importo\nV-1;Mario;a@cittadini.sim;1\nV-2;Anna;A@Cittadini.sim;2\n");
    let o = create(&csv, &[]);
    assert!(!o.status.success() && err(&o).contains("line 3") && err(&o).contains("line 2"), "{}", err(&o));
    // A missing per-recipient attachment, and one over the mailbox's size.
    let csv = env.write("e.csv", b"verbale;nome;pec;importo;allegato\nV-1;Mario;a@cittadini.sim;1;manca.pdf\nV-2;Anna;b@cittadini.sim;2;grande.pdf\nV-3;Ugo;c@cittadini.sim;3;\n");
    let _ = big;
    let o = create(&csv, &["--attachment-column", "allegato"]);
    let e = err(&o);
    assert!(!o.status.success() && e.contains("line 2: attachment \"manca.pdf\"") && e.contains("line 3:") && e.contains("too big"), "{e}");
    // With --skip-invalid the good row is queued and the bad ones written out.
    let rejected = env.dir.path().join("scartati.csv");
    let o = create(&csv, &["--attachment-column", "allegato", "--skip-invalid", "--rejected", rejected.to_str().unwrap()]);
    assert!(o.status.success() && err(&o).contains("1 notices queued"), "{}", err(&o));
    let r = std::fs::read_to_string(&rejected).unwrap();
    assert!(r.contains("manca.pdf") && r.contains("grande.pdf") && !r.contains("V-3"), "{r}");
    // The notice queued is line 4's (the list read twice, the bad rows
    // passed over), and so is its fallback row (the list read a third time).
    let id = created_id(&o);
    let rows = report(&env, &id, &[]);
    let got: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r["line"].as_str(), r["address"].as_str(), r["key"].as_str())).collect();
    assert_eq!(got, [("4", "c@cittadini.sim", "V-3")]);
    let fb = report(&env, &id, &["--fallback", "--deadline", "2020-01-01"]);
    assert_eq!(fb.len(), 1, "{fb:?}");
    assert_eq!((fb[0]["verbale"].as_str(), fb[0]["nome"].as_str(), fb[0]["stato"].as_str()), ("V-3", "Ugo", "queued"));
    // An address column of another name, chosen: the fallback list reads
    // the list with the same choice.
    let csv = env.write("f.csv", b"verbale;nome;casella;importo\nV-9;Ugo;z@cittadini.sim;1\n");
    let o = create(&csv, &["--address-column", "casella"]);
    assert!(o.status.success(), "{}", err(&o));
    let fb = report(&env, &created_id(&o), &["--fallback", "--deadline", "2020-01-01"]);
    assert_eq!(fb.len(), 1, "{fb:?}");
    assert_eq!((fb[0]["verbale"].as_str(), fb[0]["casella"].as_str()), ("V-9", "z@cittadini.sim"));
    // Nothing was sent: no campaign was started.
    std::thread::sleep(Duration::from_millis(500));
    assert!(env.received().is_empty());
    let list = env.campaign("mario", &["list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 3, "the Windows-1252 one, the --skip-invalid one, the `casella` one");
}

#[test]
fn kill_9_at_random_moments_sends_each_notice_once_and_skips_none() {
    let n = 300;
    let mut env = setup("", "sending = { per_minute = 1200 }", "[campaigns]\nsettle_after = \"4s\"\n");
    let csv = env.write("destinatari.csv", csv_rows(n).as_bytes());
    let tpl = env.write("avviso.txt", TEMPLATE.as_bytes());
    let out = env.campaign(
        "mario",
        &["create", "--mailbox", "prot", "--name", "Kill", "--recipients", csv.to_str().unwrap(), "--template", tpl.to_str().unwrap(), "--start"],
    );
    let id = created_id(&out);
    let http = std::fs::read_to_string(&env.gw.config_path).unwrap();
    let http_port: u16 = http.split("listen = \"127.0.0.1:").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    for k in 0..25 {
        std::thread::sleep(Duration::from_millis(150 + (k * 37 % 200) as u64));
        env.gw.kill9();
        env.gw.start();
        wait_port(http_port, &env.gw.log_path);
    }
    // Ambiguous notices (killed after `submitting`, before the provider
    // had the message): the administrator resends those the provider
    // never got; one it got is settled by its receipts, never ambiguous.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = env.wait_final(&id, Duration::from_secs(120));
        let ambiguous = st["states"]["ambiguous"].as_u64().unwrap_or(0);
        if ambiguous == 0 {
            break;
        }
        let received = env.received();
        for r in report(&env, &id, &[]).iter().filter(|r| r["state"] == "ambiguous") {
            assert!(!received.contains_key(&r["message_id"]), "the provider has {r:?}, yet it is ambiguous");
            let o = env.campaign("mario", &["resolve", &id, "--notice", &r["n"], "--resend"]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        assert!(Instant::now() < deadline, "ambiguous notices do not settle");
    }
    let rows = report(&env, &id, &[]);
    let received = env.received();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["state"], recipient(i).1, "{r:?}");
        assert_eq!(received.get(&r["message_id"]), Some(&1), "{r:?} received {:?} times", received.get(&r["message_id"]));
    }
    assert_eq!(received.len(), n);
    let log = env.gw.log();
    assert!(log.matches("pecgate serving").count() >= 26, "the daemon was not restarted 25 times");
    let j: String = std::fs::read_dir(env.gw.journal_dir()).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect();
    eprintln!(
        "kill -9 x25: {} dialogues for {n} notices, {} settled by receipts, {} ambiguous, {} resolved",
        j.matches("\"op\":\"notice-submitting\"").count(),
        j.matches("settled by the provider's receipts").count(),
        j.matches("\"op\":\"notice-ambiguous\"").count(),
        j.matches("\"op\":\"campaign-resolve\"").count()
    );
}

#[test]
fn the_mailbox_rate_is_kept_so_the_provider_never_answers_too_much_traffic() {
    // The provider takes 3 a minute from a sender (InfoCert's answer
    // beyond); the mailbox is configured the same.
    let mut env = setup("sender_limit = { per_minute = 3 }", "sending = { per_minute = 3 }", "");
    let csv = env.write("d.csv", b"verbale;pec\nV-1;a1@cittadini.sim\nV-2;a2@cittadini.sim\nV-3;a3@cittadini.sim\nV-4;a4@cittadini.sim\n");
    let tpl = env.write("t.txt", b"Subject: Avviso {{verbale}}\n\nAvviso {{verbale}}.\n");
    let id = created_id(&env.campaign(
        "mario",
        &["create", "--mailbox", "prot", "--name", "Lento", "--recipients", csv.to_str().unwrap(), "--template", tpl.to_str().unwrap(), "--start"],
    ));
    std::thread::sleep(Duration::from_secs(3));
    let st = env.status(&id);
    assert_eq!(st["states"]["queued"], 1, "three sent at once, the fourth waits: {st}");
    assert_eq!(st["rate_per_minute"], 3.0);
    let eta = chrono::DateTime::parse_from_rfc3339(st["eta"].as_str().expect("an ETA")).unwrap();
    let st = env.wait_final(&id, Duration::from_secs(120));
    assert_eq!(st["states"]["delivered"], 4, "{st}");
    let lines: Vec<Value> = std::fs::read_to_string(&env.record).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().all(|l| l.get("refused").is_none()), "the provider refused: {lines:?}");
    let at = |l: &Value| chrono::DateTime::parse_from_rfc3339(l["at"].as_str().unwrap()).unwrap();
    let (first, fourth) = (at(&lines[0]), at(&lines[3]));
    assert!(fourth - first >= chrono::Duration::seconds(59), "the fourth went out {} after the first", fourth - first);
    // The ETA shown 3 s after the start was right within 1 % of the
    // campaign's length.
    let off = (fourth - eta).num_milliseconds().abs() as f64;
    let length = (fourth - first).num_milliseconds() as f64;
    assert!(off <= length / 100.0, "ETA {eta}, the last went out {fourth}: off by {off} ms of {length}");
    assert!(!env.sim.log().contains("Too much traffic"));
}
