//! End to end sending: swaks (a real SMTP client) submits through pecgate
//! over TLS, pecgate relays to the PEC provider simulator (`pecgate
//! sim-provider`), which delivers envelopes and receipts into mailboxes on a
//! throwaway Dovecot; pecgate's upstream archives them and reconciliation
//! ends delivered or failed. Also: permissions, forged From, provider down,
//! protocol abuse.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use pecgate::pec::reconcile::{Overall, RecipientStatus};
use support::gateway::{mailbox_toml, tail, Gateway, FAST_UPSTREAM};
use support::sim::{wait_port, Sim};
use support::{free_port, Dovecot, DovecotOptions, UserSpec};

const PW: &str = "Gw-pass-1";
const PROT: &str = "prot@pec.sim.test";
const LEGAL: &str = "legal@pec.sim.test";
/// A simulated mailbox at its quota (`quota_messages = 0`).
const FULL: &str = "full@pec.sim.test";

struct Env {
    _dv: Dovecot,
    sim: Sim,
    gw: Gateway,
    smtps: u16,
    submission: u16,
    _tmp: tempfile::TempDir,
}

fn user(name: &str, grants: &str) -> String {
    let hash = pecgate::auth::hash_password(PW).unwrap();
    format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ngrants = {{ {grants} }}\n\n")
}

fn setup() -> Env {
    setup_with("")
}

/// `prot_extra`: more settings of the `prot` mailbox (e.g. its `sending`).
fn setup_with(prot_extra: &str) -> Env {
    let dv = Dovecot::start(
        DovecotOptions::new()
            .user(UserSpec::new("prot", "imap-prot"))
            .user(UserSpec::new("legal", "imap-legal"))
            .user(UserSpec::new("full", "imap-full")),
    );
    let tmp = tempfile::tempdir().unwrap();
    let gw_dir = tmp.path().to_path_buf();
    let sim_port = free_port();
    let pki = gw_dir.join("sim-pki");
    let sim_cfg = gw_dir.join("sim.toml");
    let mb = |addr: &str, user: &str, pw: &str| support::sim::mailbox_config(addr, user, pw, dv.port);
    std::fs::write(
        &sim_cfg,
        format!(
            "listen = \"127.0.0.1:{sim_port}\"\ndomains = [\"pec.sim.test\"]\npki_dir = \"{}\"\n{}{}{}quota_messages = 0\n",
            pki.display(),
            mb(PROT, "prot", "imap-prot"),
            mb(LEGAL, "legal", "imap-legal"),
            mb(FULL, "full", "imap-full"),
        ),
    )
    .unwrap();
    let mut sim = Sim { child: None, config: sim_cfg, log: gw_dir.join("sim.log"), port: sim_port };
    sim.start();
    assert!(pki.join("ca.pem").exists());

    // TLS for the gateway's listeners.
    let c = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
    std::fs::write(gw_dir.join("ca.pem"), c.ca).unwrap();
    std::fs::write(gw_dir.join("cert.pem"), c.chain).unwrap();
    std::fs::write(gw_dir.join("key.pem"), c.key).unwrap();
    let (smtps, submission) = (free_port(), free_port());
    let mailbox = |alias: &str, addr: &str, user: &str, pw: &str| {
        mailbox_toml(alias, user, pw, dv.port, &format!("smtp = {{ host = \"127.0.0.1\", port = {sim_port}, tls = \"none\" }}\n"))
            .replace(&format!("address = \"{user}\""), &format!("address = \"{addr}\""))
    };
    let body = format!(
        "{FAST_UPSTREAM}[pec]\ntrust_store = \"{pki}/ca.pem\"\n\n[tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\n\
         [smtp]\nlisten = [\"127.0.0.1:{smtps}\"]\nlisten_starttls = [\"127.0.0.1:{submission}\"]\nmax_message_size = 1048576\nmax_recipients = 3\n\n{}{}{}{}",
        mailbox("prot", PROT, "prot", "imap-prot") + prot_extra,
        mailbox("legal", LEGAL, "legal", "imap-legal"),
        user("mario", "prot = [\"read\", \"send\"], legal = [\"read\"]"),
        user("anna", "legal = [\"read\"]"),
        pki = pki.display(),
        d = gw_dir.display(),
    );
    let mut gw = Gateway::new(&body);
    gw.start();
    wait_port(smtps, &gw.log_path);
    wait_port(submission, &gw.log_path);
    Env { _dv: dv, sim, gw, smtps, submission, _tmp: tmp }
}

struct Swaks {
    ok: bool,
    out: String,
}

fn swaks(port: u16, tls: &str, user: &str, from: &str, to: &str, extra: &[&str]) -> Swaks {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), tls])
        .args(["--auth", "PLAIN", "--auth-user", user, "--auth-password", PW])
        .args(["--from", from, "--to", to, "--timeout", "60"])
        .args(extra)
        .output()
        .expect("swaks is installed");
    Swaks {
        ok: out.status.success(),
        out: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    }
}

fn journal(gw: &Gateway) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(gw.journal_dir()).unwrap() {
        s.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    s
}

fn wait_archived(gw: &mut Gateway, alias: &str, n: u64) {
    gw.wait_mailbox(alias, Duration::from_secs(60), &format!("{alias}: {n} messages archived"), |s| {
        s["archived_total"].as_u64().unwrap_or(0) >= n && s["on_provider"].as_u64() == Some(0)
    });
}

#[test]
fn sent_pec_is_relayed_archived_and_reconciled() {
    let mut env = setup();
    let good = swaks(env.smtps, "--tls-on-connect", "mario", PROT, LEGAL, &["--header", "Message-Id: <t1@pecgate.test>", "--header", "Subject: Prova consegna"]);
    assert!(good.ok, "{}\n{}\n{}", good.out, tail(&env.gw.log(), 30), env.sim.log());
    assert!(good.out.contains("250 2.0.0 Accepted by the PEC provider"), "{}", good.out);
    let bad = swaks(env.submission, "--tls", "mario", PROT, "nobody@pec.sim.test", &["--header", "Message-Id: <t2@pecgate.test>"]);
    assert!(bad.ok, "{}", bad.out);
    // prot: 2 sent copies + 2 acceptances + 1 delivery + 1 failure; legal: the envelope.
    wait_archived(&mut env.gw, "prot", 6);
    wait_archived(&mut env.gw, "legal", 1);
    assert_eq!(env.gw.stop(), Some(0));
    let store = env.gw.open_store();
    let sent = store.messages("prot", "Sent").unwrap();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let t1 = store.sent_state("prot", "<t1@pecgate.test>").unwrap().expect("t1 reconciled");
    let now = chrono::Utc::now();
    assert_eq!(t1.overall(), Overall::Accepted);
    assert_eq!(t1.statuses(now).get(LEGAL), Some(&RecipientStatus::Delivered), "{t1:#?}");
    let t2 = store.sent_state("prot", "<t2@pecgate.test>").unwrap().expect("t2 reconciled");
    assert_eq!(t2.statuses(now).get("nobody@pec.sim.test"), Some(&RecipientStatus::DeliveryFailed), "{t2:#?}");
    // The envelope in legal carries, byte for byte, the copy archived in prot/Sent.
    let (_, env_meta) = store.messages("legal", "INBOX").unwrap().into_iter().next().expect("envelope");
    let original = pecgate::pec::unwrap_envelope(&store.get_blob(&env_meta.hash).unwrap()).unwrap().original.unwrap();
    let sent_hashes: Vec<String> = sent.iter().map(|(_, m)| m.hash.clone()).collect();
    let sent_copy = store.get_blob(&store.messages("prot", "Sent").unwrap().iter().find(|(_, m)| String::from_utf8_lossy(&store.get_blob(&m.hash).unwrap()).contains("<t1@pecgate.test>")).unwrap().1.hash).unwrap();
    assert_eq!(String::from_utf8_lossy(&original), String::from_utf8_lossy(&sent_copy), "postacert.eml differs from the Sent copy");
    assert!(sent_hashes.contains(&support::sha256_hex(&original)));
    // Every attempt is audited.
    let j = journal(&env.gw);
    assert!(j.contains("\"op\":\"send\"") && j.contains("<t1@pecgate.test>") && j.contains("nobody@pec.sim.test"));
    // A client APPENDing the same bytes to Sent does not duplicate: the archive dedupes by hash.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let blob = rt.block_on(store.put_blob(store.get_blob(&sent_hashes[0]).unwrap())).unwrap();
    let c = rt
        .block_on(store.commit(
            pecgate::store::Audit::system("test", "append"),
            pecgate::store::Change::Archive {
                mailbox: "prot".into(),
                folder: "Sent".into(),
                blob,
                internal_date: now,
                flags: vec![],
                provider: None,
                pec: None,
                handling: None,
            },
        ))
        .unwrap();
    assert!(matches!(c.event, pecgate::store::Event::Archived { duplicate: true, .. }), "{:?}", c.event);
    assert_eq!(store.messages("prot", "Sent").unwrap().len(), 2);
}

#[test]
fn a_full_recipient_mailbox_refuses_delivery() {
    let mut env = setup();
    let r = swaks(env.smtps, "--tls-on-connect", "mario", PROT, FULL, &["--header", "Message-Id: <full@pecgate.test>"]);
    assert!(r.ok, "{}", r.out);
    // The sent copy, its acceptance and the non-delivery notice.
    wait_archived(&mut env.gw, "prot", 3);
    assert_eq!(env.gw.stop(), Some(0));
    let store = env.gw.open_store();
    let st = store.sent_state("prot", "<full@pecgate.test>").unwrap().expect("reconciled");
    assert_eq!(st.statuses(chrono::Utc::now()).get(FULL), Some(&RecipientStatus::DeliveryFailed), "{st:#?}");
    let notice = store
        .messages("prot", "Anomalies")
        .unwrap()
        .into_iter()
        .chain(store.messages("prot", "Receipts").unwrap())
        .map(|(_, m)| String::from_utf8_lossy(&store.get_blob(&m.hash).unwrap()).into_owned())
        .find(|b| b.contains("AVVISO DI MANCATA CONSEGNA"))
        .expect("a non-delivery notice");
    let d = pecgate::pec::classify(notice.as_bytes()).daticert.expect("daticert");
    assert!(d.errore_esteso.as_deref().is_some_and(|e| e.contains("5.2.2")), "{d:?}");
    assert!(env.sim.log().contains("recipient mailbox full"), "{}", env.sim.log());
}

#[test]
fn no_send_right_or_forged_from_is_refused_and_reaches_nothing() {
    let env = setup();
    // mario holds only read on legal.
    let r = swaks(env.smtps, "--tls-on-connect", "mario", LEGAL, PROT, &[]);
    assert!(!r.ok && r.out.contains("550 5.7.1"), "{}", r.out);
    // anna holds no send anywhere.
    let r = swaks(env.smtps, "--tls-on-connect", "anna", PROT, LEGAL, &[]);
    assert!(!r.ok && r.out.contains("550 5.7.1"), "{}", r.out);
    // Envelope sender allowed, header From forged.
    let r = swaks(env.smtps, "--tls-on-connect", "mario", PROT, LEGAL, &["--header", "From: <legal@pec.sim.test>"]);
    assert!(!r.ok && r.out.contains("550 5.7.1 Header From"), "{}", r.out);
    // Wrong password.
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", env.smtps), "--tls-on-connect", "--auth", "PLAIN"])
        .args(["--auth-user", "mario", "--auth-password", "wrong", "--from", PROT, "--to", LEGAL])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("535 5.7.8"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!env.sim.log().contains("accettazione"), "the provider got something:\n{}", env.sim.log());
    // Each refused attempt is on the audit record, with who and why.
    let j = journal(&env.gw);
    assert_eq!(j.matches("refused by pecgate").count(), 3, "{j}");
    assert!(j.contains("may not send from <legal@pec.sim.test>") && j.contains("\"actor\":\"anna\""), "{j}");
}

#[test]
fn provider_down_gives_451_and_archives_nothing_then_retry_goes_through_once() {
    let mut env = setup();
    env.sim.stop();
    let r = swaks(env.smtps, "--tls-on-connect", "mario", PROT, LEGAL, &["--header", "Message-Id: <down@pecgate.test>"]);
    assert!(!r.ok && r.out.contains("451 4.4.1"), "{}", r.out);
    env.sim.start();
    let r = swaks(env.smtps, "--tls-on-connect", "mario", PROT, LEGAL, &["--header", "Message-Id: <down@pecgate.test>"]);
    assert!(r.ok, "{}", r.out);
    wait_archived(&mut env.gw, "prot", 3);
    assert_eq!(env.gw.stop(), Some(0));
    let j = journal(&env.gw);
    assert!(j.contains("failed temporarily"), "no audit of the failed attempt");
    let store = env.gw.open_store();
    assert_eq!(store.messages("prot", "Sent").unwrap().len(), 1);
    let st = store.sent_state("prot", "<down@pecgate.test>").unwrap().expect("reconciled");
    assert_eq!(st.statuses(chrono::Utc::now()).get(LEGAL), Some(&RecipientStatus::Delivered));
    assert_eq!(env.sim.log().matches(" accettazione").count(), 1, "{}", env.sim.log());
}

#[test]
fn the_mailbox_sending_limits_defer_refuse_and_say_when_to_retry() {
    let env = setup_with("sending = { per_minute = 2, max_recipients = 2, max_message_bytes = 150000 }\n");
    // Three recipients where the provider takes two: the third RCPT gets
    // 452, the message goes to the other two (the first of two a minute).
    let r = swaks(env.smtps, "--tls-on-connect", "mario", PROT, &format!("{LEGAL},{FULL},x@pec.sim.test"), &[]);
    assert!(r.out.contains("452 4.5.3 Too many recipients: mailbox prot sends to at most 2"), "{}", r.out);
    assert!(r.out.contains("250 2.0.0 Accepted by the PEC provider"), "{}", r.out);
    // 100 KB to two recipients is 200 KB at the provider: 552, nothing relayed.
    let body = "x".repeat(100 * 1024);
    let r = swaks(env.smtps, "--tls-on-connect", "mario", PROT, &format!("{LEGAL},{FULL}"), &["--body", &body]);
    assert!(!r.ok && r.out.contains("552 5.3.4 Message too big for mailbox prot"), "{}", r.out);
    // Two a minute: the third is deferred with when to come back.
    let r = swaks(env.smtps, "--tls-on-connect", "mario", PROT, LEGAL, &["--header", "Message-Id: <rate1@pecgate.test>"]);
    assert!(r.ok, "{}", r.out);
    let r = swaks(env.smtps, "--tls-on-connect", "mario", PROT, LEGAL, &["--header", "Message-Id: <rate2@pecgate.test>"]);
    assert!(!r.ok && r.out.contains("451 4.7.0 sending limit of mailbox prot reached (2 per minute): try again in"), "{}", r.out);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.sim.log().matches(" accettazione").count(), 2, "{}", env.sim.log());
    let j = journal(&env.gw);
    assert!(j.contains("deferred by pecgate: sending limit") && j.contains("<rate2@pecgate.test>"), "{j}");
}

/// Send lines on a plain connection, read one reply per expected code.
fn expect_replies(stream: &mut TcpStream, input: &[u8], codes: &[&str]) -> Vec<String> {
    stream.write_all(input).unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut got = Vec::new();
    for want in codes {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).unwrap() > 0, "closed; got {got:?}");
            reply.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') || line.len() < 4 {
                break;
            }
        }
        assert!(reply.starts_with(want), "wanted {want}, got {reply:?} (after {got:?})");
        got.push(reply);
    }
    got
}

#[test]
fn protocol_abuse_gets_clear_codes() {
    let env = setup();
    let mut s = TcpStream::connect(("127.0.0.1", env.submission)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    expect_replies(&mut s, b"", &["220"]);
    let ehlo = expect_replies(&mut s, b"EHLO abuse\r\n", &["250"]);
    assert!(ehlo[0].contains("STARTTLS") && !ehlo[0].contains("AUTH"), "{ehlo:?}");
    expect_replies(
        &mut s,
        b"AUTH PLAIN AG1hcmlvAEd3LXBhc3MtMQ==\r\nMAIL FROM:<prot@pec.sim.test>\r\nDATA\r\nRCPT TO:<a@b.c>\r\nFOO bar\r\nMAIL FROM:<<<\r\n",
        &["538", "530", "503", "503", "500", "501"],
    );
    // A pipelining flood of NOOPs is answered in order.
    let flood = "NOOP\r\n".repeat(500);
    let replies = expect_replies(&mut s, flood.as_bytes(), &["250"; 500]);
    assert_eq!(replies.len(), 500);
    // An overlong line.
    let mut long = vec![b'X'; 10_000];
    long.extend_from_slice(b"\r\n");
    expect_replies(&mut s, &long, &["500"]);
    expect_replies(&mut s, b"QUIT\r\n", &["221"]);

    // Oversized message and bare LF, authenticated on loopback over TLS (swaks).
    let big_file = env.gw.path().join("big.txt");
    std::fs::write(&big_file, "x".repeat(1_200_000)).unwrap();
    let r = swaks(env.smtps, "--tls-on-connect", "mario", PROT, LEGAL, &["--body", &format!("@{}", big_file.display())]);
    assert!(!r.ok && r.out.contains("552 5.3.4"), "{}", &r.out[r.out.len().saturating_sub(2000)..]);
    // Still serving after all that.
    let mut s = TcpStream::connect(("127.0.0.1", env.submission)).unwrap();
    let mut b = [0u8; 3];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"220");
    assert!(env.gw.log().find("panicked").is_none(), "{}", env.gw.log());
}

#[test]
fn simulator_answers_a_forged_submission_with_non_accettazione() {
    let mut env = setup();
    // Straight to the simulated provider (as a webmail or a misconfigured
    // client would), with a From that is not the account.
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", env.sim.port), "--auth", "PLAIN"])
        .args(["--auth-user", PROT, "--auth-password", "imap-prot", "--from", PROT, "--to", LEGAL])
        .args(["--header", "From: <legal@pec.sim.test>", "--header", "Message-Id: <forged@pecgate.test>"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    wait_archived(&mut env.gw, "prot", 1);
    assert_eq!(env.gw.stop(), Some(0));
    let store = env.gw.open_store();
    let anomalies = store.messages("prot", "Anomalies").unwrap();
    assert_eq!(anomalies.len(), 1, "{:?}", store.folders("prot").unwrap());
    let c = pecgate::pec::classify(&store.get_blob(&anomalies[0].1.hash).unwrap());
    assert_eq!(c.kind, pecgate::pec::PecKind::NonAccettazione);
    assert_eq!(c.original_message_id.as_deref(), Some("<forged@pecgate.test>"));
    assert!(store.messages("legal", "INBOX").unwrap_or_default().is_empty(), "a refused submission must not be delivered");
}
