//! Full-text search end to end, with real peers: certified envelopes on a
//! Dovecot provider (the words in the original inside `postacert.eml`, a
//! PDF attachment, a signed `.pdf.p7m`, hostile PDFs), archived by
//! `pecgate serve`, found through `pecgate search` (the HTTP API) and IMAP
//! `SEARCH BODY`/`TEXT` from Python's imaplib; permissions; a reindex
//! from nothing gives the same answers.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, Stream};
use serde_json::Value;
use support::gateway::{mailbox_toml, tail, Gateway, FAST_UPSTREAM};
use support::{free_port, pecgate_bin, Dovecot, DovecotOptions, Imap, UserSpec};

const PROT: &str = "protocollo@pec.comune.example.it";
const LEGAL: &str = "legale@pec.comune.example.it";
const PASS: &str = "pw-dovecot";
const PW: &str = "Gw-pass-1";

/// A PDF whose pages say `pages` (each a line of text), or whose one page
/// inflates to `bomb` bytes.
fn pdf(pages: &[String], bomb: usize) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" });
    let resources = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font } });
    let mut kids = Vec::new();
    let mut contents: Vec<Vec<u8>> = pages
        .iter()
        .map(|text| {
            Content {
                operations: vec![
                    Operation::new("BT", vec![]),
                    Operation::new("Tf", vec!["F1".into(), 12.into()]),
                    Operation::new("Td", vec![72.into(), 712.into()]),
                    Operation::new("Tj", vec![Object::string_literal(text.as_str())]),
                    Operation::new("ET", vec![]),
                ],
            }
            .encode()
            .unwrap()
        })
        .collect();
    if bomb > 0 {
        contents.push(b"BT ET\n".repeat(bomb / 6));
    }
    for c in contents {
        let mut s = Stream::new(dictionary! {}, c);
        s.compress().unwrap();
        let content = doc.add_object(s);
        kids.push(doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content }).into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// A CAdES-style `.p7m`: `content` inside a PKCS#7 signed-data (DER).
fn p7m(pki: &pecgate::sim::pki::Pki, content: &[u8]) -> Vec<u8> {
    use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
    let extra = openssl::stack::Stack::new().unwrap();
    Pkcs7::sign(&pki.signer.cert, &pki.signer.key, &extra, content, Pkcs7Flags::BINARY).unwrap().to_der().unwrap()
}

/// An original message: `text`, and attachments (name, bytes).
fn original(n: u32, subject: &str, text: &str, attachments: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut m = format!(
        "Message-ID: <orig-{n}@ditta.example.it>\r\nDate: Thu, 26 Nov 2026 09:00:00 +0100\r\nFrom: Ditta Rossi <rossi@pec.ditta.example.it>\r\n\
         To: <{PROT}>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"orig\"\r\n\r\n\
         --orig\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
    );
    for (name, bytes) in attachments {
        m += &format!(
            "--orig\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            openssl::base64::encode_block(bytes)
        );
    }
    m += "--orig--\r\n";
    m.into_bytes()
}

/// The certified envelope the sender's provider delivers around `original`.
fn envelope(pki: &pecgate::sim::pki::Pki, n: u32, subject: &str, original: Vec<u8>) -> Vec<u8> {
    use pecgate::sim::build::{build, Notice, Provider, Submission};
    let sub = Submission {
        sender: "rossi@pec.ditta.example.it".into(),
        recipients: vec![(PROT.into(), true)],
        original,
        subject: subject.into(),
        msgid: format!("<orig-{n}@ditta.example.it>"),
        identificativo: format!("opec-ft-{n}@pec.ditta.example.it"),
        at: chrono::Utc::now(),
    };
    let provider = Provider { address: "posta-certificata@pec.ditta.example.it".into(), name: "Gestore di test".into() };
    build(pki, &provider, &sub, &Notice::Envelope, chrono::Utc::now()).expect("envelope")
}

struct Env {
    _dv: Dovecot,
    gw: Gateway,
    imap_port: u16,
    ca: PathBuf,
}

impl Env {
    fn search(&self, user: &str, args: &[&str]) -> Output {
        Command::new(pecgate_bin())
            .arg("search")
            .args(args)
            .args(["--config", self.gw.config_path.to_str().unwrap(), "--user", user])
            .env("PECGATE_PASSWORD", PW)
            .output()
            .expect("pecgate search")
    }

    /// `pecgate search --json`: the hits' (folder, subject).
    fn hits(&self, user: &str, args: &[&str]) -> Vec<(String, String)> {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.search(user, &a);
        assert!(out.status.success(), "{args:?}: {}\n{}", String::from_utf8_lossy(&out.stderr), tail(&self.gw.log(), 20));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["hits"].as_array().unwrap().iter().map(|h| (h["folder"].as_str().unwrap().to_string(), h["subject"].as_str().unwrap().to_string())).collect()
    }

    fn imap(&self, user: &str) -> Imap {
        Imap { host: "127.0.0.1".into(), port: self.imap_port, user: user.into(), password: PW.into(), tls_ca: Some(self.ca.clone()) }
    }
}

/// Every query the test asks, with what each user finds: the answers a
/// reindex must give again.
const QUERIES: [&str; 8] = ["solleciti", "perche", "raccomand", "demolizione", "determina", "riservato", "sollecito pagamento", "ordinanza"];

fn answers(env: &Env) -> Vec<Vec<(String, String)>> {
    QUERIES.iter().map(|q| env.hits("mario", &[q])).collect()
}

#[test]
fn words_inside_envelopes_pdfs_and_p7m_are_found_by_those_who_may_read_them() {
    let dv = Dovecot::start(DovecotOptions::new().user(UserSpec::new(PROT, PASS)).user(UserSpec::new(LEGAL, PASS)));
    let pki = pecgate::sim::pki::Pki::generate("posta-certificata@pec.ditta.example.it").expect("pki");
    let many: Vec<String> = (1..=300).map(|i| if i == 300 { "pagina trecento ordinanza".into() } else { format!("Pagina {i} ordinanza") }).collect();
    let messages = [
        // 1: the words only in the original inside postacert.eml.
        envelope(&pki, 1, "Comunicazione", original(1, "Comunicazione", "Secondo sollecito di pagamento, perché la fattura è scaduta.", &[])),
        // 2: only in a PDF attachment.
        envelope(&pki, 2, "Trasmissione atti", original(2, "Trasmissione atti", "In allegato.", &[("atto.pdf", pdf(&["Notifica con raccomandata di demolizione".into()], 0))])),
        // 3: only in the PDF inside a signed .pdf.p7m.
        envelope(&pki, 3, "Atto firmato", original(3, "Atto firmato", "Firmato digitalmente.", &[("provvedimento.pdf.p7m", p7m(&pki, &pdf(&["Determina dirigenziale 15".into()], 0)))])),
        // 4: hostile: a page inflating to 64 MB, and 300 pages (only the
        // first 200 read): skipped in part, logged, still archived.
        envelope(&pki, 4, "Allegati pesanti", original(4, "Allegati pesanti", "Vedi allegati.", &[("bomba.pdf", pdf(&[], 64 << 20)), ("lungo.pdf", pdf(&many, 0))])),
    ];
    dv.imap(PROT).append("INBOX", messages.iter().cloned());
    dv.imap(LEGAL).append("INBOX", [envelope(&pki, 5, "Parere", original(5, "Parere", "Documento riservato dell'avvocatura.", &[]))]);

    let (imap_port, http_port) = (free_port(), free_port());
    let tmp = tempfile::tempdir().unwrap().keep();
    let cert = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
    let (ca, chain, key) = (tmp.join("ca.pem"), tmp.join("chain.pem"), tmp.join("key.pem"));
    std::fs::write(&ca, &cert.ca).unwrap();
    std::fs::write(&chain, &cert.chain).unwrap();
    std::fs::write(&key, &cert.key).unwrap();
    let hash = pecgate::auth::hash_password(PW).unwrap();
    let user = |name: &str, grants: &str| format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ngrants = {{ {grants} }}\n\n");
    let body = format!(
        "{FAST_UPSTREAM}[imap]\nlisten = [\"127.0.0.1:{imap_port}\"]\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n{}{}{}{}",
        chain.display(),
        key.display(),
        mailbox_toml("protocollo", PROT, PASS, dv.port, "offload = { mode = \"never\" }"),
        mailbox_toml("legale", LEGAL, PASS, dv.port, "offload = { mode = \"never\" }"),
        user("mario", "protocollo = [\"read\"], legale = [\"read\"]"),
        user("anna", "protocollo = [\"read\"]"),
    );
    let mut gw = Gateway::new(&body);
    gw.start();
    gw.wait_mailbox("protocollo", Duration::from_secs(90), "4 archived", |s| s["archived_total"].as_u64() == Some(4));
    gw.wait_mailbox("legale", Duration::from_secs(90), "1 archived", |s| s["archived_total"].as_u64() == Some(1));
    let env = Env { _dv: dv, gw, imap_port, ca };
    // The indexer follows the archive by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every message, not only the first found: the indexer commits per pass,
    // and a pass may hold only some of the five (one mailbox's, say).
    let documents = || {
        let m = support::http_get(http_port, "/metrics", None);
        support::sample(&m, "pecgate_fulltext_documents", &[]).unwrap_or(0.0)
    };
    while env.hits("mario", &["riservato"]).is_empty() || documents() < 5.0 {
        assert!(Instant::now() < deadline, "not indexed:\n{}", tail(&env.gw.log(), 40));
        std::thread::sleep(Duration::from_millis(300));
    }
    let inbox = |subject: &str| vec![("protocollo/INBOX".to_string(), format!("POSTA CERTIFICATA: {subject}"))];
    // Italian analysis: plural for singular, no accent for an accent, a
    // prefix; words only in the original, only in a PDF, only in a .p7m.
    assert_eq!(env.hits("mario", &["solleciti"]), inbox("Comunicazione"));
    assert_eq!(env.hits("mario", &["perche"]), inbox("Comunicazione"));
    assert_eq!(env.hits("mario", &["sollecito pagamento"]), inbox("Comunicazione"), "every word, stop words aside");
    assert_eq!(env.hits("mario", &["raccomand"]), inbox("Trasmissione atti"));
    assert_eq!(env.hits("mario", &["demolizione"]), inbox("Trasmissione atti"));
    assert_eq!(env.hits("mario", &["determina"]), inbox("Atto firmato"));
    // The hostile message: archived, its long PDF read up to the limit,
    // its bomb left out, both logged.
    assert_eq!(env.hits("mario", &["ordinanza"]), inbox("Allegati pesanti"));
    assert!(env.hits("mario", &["trecento"]).is_empty(), "page 300 is past the 200-page limit");
    let log = env.gw.log();
    assert!(log.contains("full-text: attachments left out of the index") && log.contains("bomba.pdf"), "{}", tail(&log, 40));
    assert!(log.contains("only the first 200 read"), "{}", tail(&log, 40));
    // Permissions: anna reads protocollo only.
    assert_eq!(env.hits("mario", &["riservato"]), vec![("legale/INBOX".to_string(), "POSTA CERTIFICATA: Parere".to_string())]);
    assert!(env.hits("anna", &["riservato"]).is_empty(), "anna may not read legale");
    let refused = env.search("anna", &["riservato", "--mailbox", "legale"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("may not read mailbox legale"), "{refused:?}");
    assert!(env.hits("anna", &["solleciti", "--kind", "certified"]).len() == 1 && env.hits("anna", &["solleciti", "--kind", "receipt"]).is_empty());
    // The human output: folder, subject, snippet with the word marked.
    let text = String::from_utf8(env.search("anna", &["solleciti"]).stdout).unwrap();
    assert!(text.contains("protocollo/INBOX") && text.contains("[sollecito]"), "{text}");
    // IMAP SEARCH through imaplib: BODY and TEXT from the index, header
    // keys exact as before.
    let imap = env.imap("mario");
    let uids = imap.uids("protocollo/INBOX");
    assert_eq!(uids.len(), 4);
    assert_eq!(imap.search("protocollo/INBOX", &["BODY", "solleciti"]), vec![uids[0]]);
    assert_eq!(imap.search("protocollo/INBOX", &["BODY", "demolizione"]), vec![uids[1]]);
    assert_eq!(imap.search("protocollo/INBOX", &["TEXT", "determina"]), vec![uids[2]]);
    assert_eq!(imap.search("protocollo/INBOX", &["OR", "BODY", "determina", "BODY", "raccomand"]), vec![uids[1], uids[2]]);
    assert_eq!(imap.search("protocollo/INBOX", &["NOT", "BODY", "ordinanza"]), vec![uids[0], uids[1], uids[2]]);
    assert!(imap.search("protocollo/INBOX", &["BODY", "riservato"]).is_empty(), "another mailbox's words");
    assert_eq!(imap.search("protocollo/INBOX", &["SUBJECT", "Atto firmato"]), vec![uids[2]]);
    // A string of stop words is matched as a substring, as before.
    assert_eq!(imap.search("protocollo/INBOX", &["BODY", "di"]).len(), 4);

    // Reindex from nothing: the same answers.
    let before = answers(&env);
    let mut gw = env.gw;
    assert_eq!(gw.stop(), Some(0));
    let index_dir = gw.data_dir.join("fulltext-v3");
    assert!(index_dir.is_dir());
    std::fs::remove_dir_all(&index_dir).unwrap();
    let out = Command::new(pecgate_bin()).args(["search", "reindex", "--config", gw.config_path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reindexed: 5 messages"), "{}", String::from_utf8_lossy(&out.stderr));
    gw.start();
    support::sim::wait_port(http_port, &gw.log_path);
    let env = Env { _dv: env._dv, gw, imap_port, ca: env.ca };
    assert_eq!(answers(&env), before);
    // The daemon holds the index: a reindex meanwhile is refused, plainly.
    let out = Command::new(pecgate_bin()).args(["search", "reindex", "--config", env.gw.config_path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success(), "reindex beside the daemon must be refused");
}
