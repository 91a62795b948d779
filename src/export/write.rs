//! Writing a package: each document's original `.eml`, its receipts and a
//! metadata file per message (the AgID guidelines' Allegato 5 names), the
//! audit records and the newest anchor, `index.xml` (UNI 11386 SInCRO v2
//! shape), `README.txt` and `SHA256SUMS`.

use std::io;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

use super::package::Sink;
use super::plan::{Document, Item, Plan};
use super::xml::Xml;
use crate::pec::signature::{SignatureStatus, TrustStore};
use crate::pec::PecKind;
use crate::store::{BlobReader, JournalReader};

/// SInCRO v2's namespace.
pub const SINCRO_NS: &str = "http://www.uni.com/U3011/sincro-v2/";
/// The namespace of the per-message metadata files.
pub const METADATA_NS: &str = "urn:pecgate:conservazione:metadati:1";

/// What the export needs besides the plan.
pub struct Options<'a> {
    /// Check signatures again now (at the message's date) against this.
    pub trust: Option<&'a TrustStore>,
    /// The TSA's CA (`[anchor] ca_file`), put in the package.
    pub tsa_ca: Option<Vec<u8>>,
    /// The mailbox's PEC address (the holder).
    pub address: String,
    /// Who made the package (the submitter).
    pub submitter: String,
    pub created: DateTime<Utc>,
    /// Limited by --from/--to.
    pub partial: bool,
    /// The dates asked, for the description.
    pub dates: (Option<String>, Option<String>),
}

/// One file of the package as listed in `index.xml` and `SHA256SUMS`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub format: &'static str,
    pub ext: &'static str,
    pub group: String,
}

impl Entry {
    /// A file written to the package: its path, (SHA-256, size) as the sink
    /// gave them, its format and extension, its `FileGroup`.
    fn new(
        path: String,
        (sha256, size): (String, u64),
        format: &'static str,
        ext: &'static str,
        group: String,
    ) -> Entry {
        Entry { path, sha256, size, format, ext, group }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// SHA-256 of `index.xml`: the package's fingerprint in the journal.
    pub package: String,
    pub files: usize,
    pub bytes: u64,
}

/// The facts of one message its metadata file states.
struct Facts {
    kind: String,
    flow: &'static str,
    date: String,
    date_source: &'static str,
    sender: Option<String>,
    recipients: Vec<String>,
    subject: Option<String>,
    attachments: usize,
    message_id: Option<String>,
    identificativo: Option<String>,
    signature: Option<SignatureStatus>,
    signature_when: &'static str,
}

fn rfc3339(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn facts(item: &Item, raw: &[u8], trust: Option<&TrustStore>) -> Facts {
    let parsed = crate::pec::parse_full(raw);
    let cls = item.pec.as_ref().map(|p| &p.classification);
    let kind = cls.map(|c| c.kind).unwrap_or(PecKind::Plain);
    let daticert = cls.and_then(|c| c.daticert.as_ref());
    let header_addrs = |m: &mail_parser::Message| -> Vec<String> {
        let mut v = Vec::new();
        for list in [m.to(), m.cc()].into_iter().flatten() {
            v.extend(list.iter().filter_map(|a| a.address()).map(str::to_string));
        }
        v
    };
    let header_from =
        |m: &mail_parser::Message| m.from().and_then(|f| f.first()).and_then(|a| a.address()).map(str::to_string);
    let (date, date_source) = match (daticert.and_then(|d| d.data), parsed.as_deref().and_then(|m| m.date())) {
        (Some(d), _) => (rfc3339(d), "daticert"),
        (None, Some(d)) => (d.to_rfc3339(), "Date"),
        _ => (item.internal_date.to_rfc3339_opts(SecondsFormat::Secs, true), "archivio"),
    };
    // The certified values (inside the provider's signature) first.
    let sender = daticert.and_then(|d| d.mittente.clone()).or_else(|| parsed.as_deref().and_then(header_from));
    let mut recipients: Vec<String> =
        daticert.map(|d| d.destinatari.iter().map(|x| x.address.clone()).collect()).unwrap_or_default();
    if recipients.is_empty() {
        recipients = parsed.as_deref().map(header_addrs).unwrap_or_default();
    }
    let subject = daticert
        .and_then(|d| d.oggetto.clone())
        .or_else(|| cls.and_then(|c| c.subject.clone()))
        .or_else(|| parsed.as_deref().and_then(|m| m.subject()).map(str::to_string));
    let attachments = match kind {
        PecKind::PostaCertificata => match crate::pec::unwrap_envelope(raw) {
            Ok(u) => u.attachments.len(),
            Err(_) => parsed.as_deref().map(|m| m.attachment_count()).unwrap_or(0),
        },
        _ => parsed.as_deref().map(|m| m.attachment_count()).unwrap_or(0),
    };
    let (signature, signature_when) = match trust {
        Some(t) => {
            let at = DateTime::parse_from_rfc3339(&date).map(|d| d.with_timezone(&Utc)).unwrap_or(item.internal_date);
            (Some(crate::pec::signature::verify_at(raw, t, at)), "esportazione")
        }
        None => (item.pec.as_ref().and_then(|p| p.signature.clone()), "archiviazione"),
    };
    let kind = match kind {
        PecKind::Plain => "posta-ordinaria".to_string(),
        k => k.as_str().to_string(),
    };
    Facts {
        kind,
        flow: if item.sent_key().is_some() || item.folder == "Sent" { "U" } else { "E" },
        date,
        date_source,
        sender,
        recipients,
        subject,
        attachments,
        message_id: cls.and_then(|c| c.message_id.clone()),
        identificativo: cls.and_then(|c| c.identificativo.clone()),
        signature,
        signature_when,
    }
}

/// A message's metadata file.
fn metadata(
    item: &Item,
    f: &Facts,
    name: &str,
    mailbox: &str,
    address: &str,
    receipts: &[(String, String, String)],
    linked: Option<&str>,
) -> String {
    let mut x = Xml::new();
    x.open("DocumentoInformatico", &[("xmlns", METADATA_NS)]);
    x.open("IdDoc", &[]);
    x.leaf("ImprontaCrittografica", &[("Algoritmo", "SHA-256"), ("Codifica", "hex")], &item.hash);
    x.leaf("Identificativo", &[], &format!("sha256:{}", item.hash));
    x.close();
    x.leaf("ModalitaDiFormazione", &[], "b");
    x.leaf("TipologiaDocumentale", &[], &f.kind);
    x.open("DatiDiRegistrazione", &[]);
    x.leaf("TipologiaDiFlusso", &[], f.flow);
    x.leaf("TipoRegistro", &[], "Nessuno");
    x.leaf("DataRegistrazione", &[("Fonte", f.date_source)], &f.date);
    x.close();
    x.open("Soggetti", &[]);
    if let Some(s) = &f.sender {
        x.open("Ruolo", &[]).leaf("TipoRuolo", &[], "Mittente").leaf("IndirizziDigitaliDiRiferimento", &[], s).close();
    }
    for r in &f.recipients {
        x.open("Ruolo", &[])
            .leaf("TipoRuolo", &[], "Destinatario")
            .leaf("IndirizziDigitaliDiRiferimento", &[], r)
            .close();
    }
    x.open("Ruolo", &[])
        .leaf("TipoRuolo", &[], "Produttore")
        .leaf("IndirizziDigitaliDiRiferimento", &[], address)
        .close();
    x.close();
    x.open("ChiaveDescrittiva", &[]);
    x.leaf("Oggetto", &[], f.subject.as_deref().unwrap_or(""));
    x.close();
    x.open("Allegati", &[]).leaf("NumeroAllegati", &[], &f.attachments.to_string()).close();
    x.open("IdentificativoDelFormato", &[])
        .leaf("Formato", &[], "message/rfc822")
        .leaf("Estensione", &[], "eml")
        .close();
    x.open("Verifica", &[]);
    let (signed, result, who) = match &f.signature {
        Some(SignatureStatus::Valid { signer }) => ("true", "valida", Some(signer.as_str())),
        Some(SignatureStatus::Invalid { reason }) => ("true", "non-valida", Some(reason.as_str())),
        Some(SignatureStatus::UnknownSigner { signer }) => {
            ("true", "firmatario-non-attendibile", Some(signer.as_str()))
        }
        Some(SignatureStatus::NotSigned) => ("false", "non-firmato", None),
        None => ("false", "non-verificata", None),
    };
    x.leaf("SigillatoElettronicamente", &[], signed);
    x.leaf("FirmatoDigitalmente", &[], "false");
    // When it was checked (none when it never was).
    let when = [("Momento", f.signature_when)];
    x.leaf("EsitoVerifica", if f.signature.is_some() { &when[..] } else { &[] }, result);
    x.opt("Dettaglio", who);
    x.close();
    x.leaf("NomeDelDocumento", &[], name);
    x.open("PEC", &[]);
    x.leaf("Casella", &[], mailbox);
    x.leaf("Cartella", &[], &item.folder);
    x.opt("MessageID", f.message_id.as_deref());
    x.opt("IdentificativoGestore", f.identificativo.as_deref());
    x.leaf("DataArchiviazione", &[], &item.archived.to_rfc3339_opts(SecondsFormat::Micros, true));
    x.leaf("RecordGiornale", &[], &item.seq.to_string());
    x.leaf("Dimensione", &[], &item.size.to_string());
    if let Some(l) = linked {
        x.leaf("RiferitoA", &[("Algoritmo", "SHA-256")], l);
    }
    if !receipts.is_empty() {
        x.open("Ricevute", &[]);
        for (path, kind, hash) in receipts {
            x.leaf(
                "Ricevuta",
                &[("Tipo", kind.as_str()), ("File", path.as_str()), ("ImprontaCrittografica", hash.as_str())],
                "",
            );
        }
        x.close();
    }
    x.close();
    x.finish()
}

fn io_ctx(what: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Write the package for `plan` into `sink`; `progress` gets the message
/// bytes written so far. The sink is finished by the caller.
pub fn write(
    plan: &Plan,
    blobs: &BlobReader,
    journal: &JournalReader,
    sink: &mut Sink,
    opts: &Options,
    mut progress: impl FnMut(u64),
) -> io::Result<Written> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut done = 0u64;
    for (n, doc) in plan.documents.iter().enumerate() {
        let dir = format!("documents/{:06}", n + 1);
        write_document(doc, &dir, plan, blobs, sink, opts, &mut entries)?;
        done += doc.item.size + doc.receipts.iter().map(|r| r.size).sum::<u64>();
        progress(done);
    }
    // The audit records, verbatim.
    if !plan.records.is_empty() {
        let (sha, size) = sink.add("audit/records.jsonl", true, |w| {
            for l in &plan.records {
                w.write_all(l.as_bytes())?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        entries.push(Entry::new(
            "audit/records.jsonl".into(),
            (sha, size),
            "application/jsonl",
            "jsonl",
            "audit".into(),
        ));
    }
    if let Some(a) = &plan.anchor {
        let bucket = blobs.is_bucket().then_some(blobs);
        let token = crate::anchor::token_bytes(journal, bucket, &a.token_name, &a.token_sha256)
            .map_err(io_ctx(&format!("anchor token {}", a.token_name)))?;
        let base = format!("audit/anchor-{:012}", a.seq);
        let (sha, size) = sink.add(&format!("{base}.tsr"), false, |w| w.write_all(&token))?;
        entries.push(Entry::new(
            format!("{base}.tsr"),
            (sha, size),
            "application/timestamp-reply",
            "tsr",
            "audit".into(),
        ));
        let (sha, size) = sink.add(&format!("{base}.jsonl"), true, |w| {
            for l in &a.lines {
                w.write_all(l.as_bytes())?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        entries.push(Entry::new(format!("{base}.jsonl"), (sha, size), "application/jsonl", "jsonl", "audit".into()));
    }
    if let Some(ca) = &opts.tsa_ca {
        let (sha, size) = sink.add("audit/tsa-ca.pem", true, |w| w.write_all(ca))?;
        entries.push(Entry::new(
            "audit/tsa-ca.pem".into(),
            (sha, size),
            "application/x-pem-file",
            "pem",
            "audit".into(),
        ));
    }
    let readme = readme(plan, opts);
    let (sha, size) = sink.add("README.txt", true, |w| w.write_all(readme.as_bytes()))?;
    entries.push(Entry::new("README.txt".into(), (sha, size), "text/plain", "txt", "package".into()));
    let index = index_xml(plan, opts, &entries);
    let (package, size) = sink.add("index.xml", true, |w| w.write_all(index.as_bytes()))?;
    entries.push(Entry {
        path: "index.xml".into(),
        sha256: package.clone(),
        size,
        format: "application/xml",
        ext: "xml",
        group: "package".into(),
    });
    let sums: String = entries.iter().map(|e| format!("{}  {}\n", e.sha256, e.path)).collect();
    sink.add("SHA256SUMS", true, |w| w.write_all(sums.as_bytes()))?;
    Ok(Written {
        package,
        files: entries.len() + 1,
        bytes: entries.iter().map(|e| e.size).sum::<u64>() + sums.len() as u64,
    })
}

fn write_document(
    doc: &Document,
    dir: &str,
    plan: &Plan,
    blobs: &BlobReader,
    sink: &mut Sink,
    opts: &Options,
    entries: &mut Vec<Entry>,
) -> io::Result<()> {
    let group = dir.to_string();
    // Receipts first: the document's metadata lists them.
    let mut listed = Vec::new();
    for (k, r) in doc.receipts.iter().enumerate() {
        let raw = blobs.get(&r.hash).map_err(io_ctx(&format!("message {}", r.hash)))?;
        let f = facts(r, &raw, opts.trust);
        let base = format!("{dir}/receipts/{:02}-{}", k + 1, f.kind);
        let eml = format!("{base}.eml");
        let (sha, size) = sink.add_checked(&eml, &raw, &r.hash)?;
        entries.push(Entry::new(eml.clone(), (sha, size), "message/rfc822", "eml", group.clone()));
        let meta = metadata(r, &f, &eml, &plan.mailbox, &opts.address, &[], Some(&doc.item.hash));
        let (sha, size) = sink.add(&format!("{base}.xml"), true, |w| w.write_all(meta.as_bytes()))?;
        entries.push(Entry::new(format!("{base}.xml"), (sha, size), "application/xml", "xml", group.clone()));
        listed.push((eml, f.kind, r.hash.clone()));
    }
    let item = &doc.item;
    let raw = blobs.get(&item.hash).map_err(io_ctx(&format!("message {}", item.hash)))?;
    let f = facts(item, &raw, opts.trust);
    let eml = format!("{dir}/message.eml");
    let (sha, size) = sink.add_checked(&eml, &raw, &item.hash)?;
    entries.push(Entry::new(eml.clone(), (sha, size), "message/rfc822", "eml", group.clone()));
    let meta = metadata(item, &f, &eml, &plan.mailbox, &opts.address, &listed, doc.linked.as_deref());
    let path = format!("{dir}/metadata.xml");
    let (sha, size) = sink.add(&path, true, |w| w.write_all(meta.as_bytes()))?;
    entries.push(Entry { path, sha256: sha, size, format: "application/xml", ext: "xml", group });
    Ok(())
}

/// `index.xml`, shaped on UNI 11386:2020 (SInCRO v2).
fn index_xml(plan: &Plan, opts: &Options, entries: &[Entry]) -> String {
    let id = format!("pecgate-export-{}-{}-{}", plan.mailbox, plan.first_seq(), plan.head);
    let created = opts.created.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut x = Xml::new();
    x.open("PIndex", &[("xmlns", SINCRO_NS), ("version", "2.0")]);
    x.open("SelfDescription", &[]);
    x.leaf("ID", &[("scheme", "local")], &id);
    x.open("CreatingApplication", &[]);
    x.leaf("Name", &[], "pecgate").leaf("Version", &[], env!("CARGO_PKG_VERSION")).leaf("Producer", &[], "pecgate");
    x.close();
    x.open("MoreInfo", &[("XMLScheme", METADATA_NS)]);
    x.open("EmbeddedMetadata", &[]);
    x.leaf("Casella", &[], &plan.mailbox);
    x.leaf("Indirizzo", &[], &opts.address);
    x.leaf("PrimoRecord", &[], &plan.first_seq().to_string());
    x.leaf("UltimoRecord", &[], &plan.head.to_string());
    x.leaf("Messaggi", &[], &plan.messages().to_string());
    x.leaf("Documenti", &[], &plan.documents.len().to_string());
    x.leaf("Parziale", &[], if opts.partial { "true" } else { "false" });
    x.opt("Dal", opts.dates.0.as_deref());
    x.opt("Al", opts.dates.1.as_deref());
    x.close();
    x.close();
    x.close();
    x.open("PVolume", &[]);
    x.leaf("ID", &[("scheme", "local")], &format!("{id}-v1"));
    let mut i = 0;
    while i < entries.len() {
        let g = &entries[i].group;
        x.open("FileGroup", &[]);
        x.leaf("Label", &[], g);
        while i < entries.len() && &entries[i].group == g {
            let e = &entries[i];
            x.open("File", &[("encoding", "binary"), ("extension", e.ext), ("format", e.format)]);
            x.leaf("ID", &[("scheme", "local")], &format!("f{}", i + 1));
            x.leaf("Path", &[], &e.path);
            x.leaf("Hash", &[("function", "SHA-256"), ("encoding", "hex")], &e.sha256);
            x.close();
            i += 1;
        }
        x.close();
    }
    x.close();
    x.open("Process", &[]);
    x.open("Agent", &[("type", "person"), ("role", "Submitter")]);
    x.open("AgentName", &[]).leaf("FormalName", &[], &opts.submitter).close();
    x.close();
    x.open("Agent", &[("type", "organization"), ("role", "Holder")]);
    x.open("AgentName", &[]).leaf("FormalName", &[], &opts.address).close();
    x.leaf("Agent_ID", &[("scheme", "PEC")], &opts.address);
    x.close();
    x.open("TimeReference", &[]);
    x.leaf("TimeInfo", &[], &created);
    if let Some(a) = &plan.anchor {
        x.leaf("AttachedTimeStamp", &[("normal", "true")], &format!("audit/anchor-{:012}.tsr", a.seq));
    }
    x.close();
    x.leaf(
        "LawAndRegulations",
        &[],
        "Linee guida AgID sulla formazione, gestione e conservazione dei documenti informatici (2021), Allegato 5",
    );
    x.close();
    x.finish()
}

fn readme(plan: &Plan, opts: &Options) -> String {
    let mut s = format!(
        "pecgate — pacchetto di versamento / submission package\n\n\
         Casella / mailbox: {} <{}>\n\
         Record del giornale / journal records: {}..={}\n\
         Messaggi / messages: {} ({} documenti / documents)\n\
         Creato / created: {}{}\n\n",
        plan.mailbox,
        opts.address,
        plan.first_seq(),
        plan.head,
        plan.messages(),
        plan.documents.len(),
        opts.created.to_rfc3339_opts(SecondsFormat::Secs, true),
        if opts.partial { "\nParziale (--from/--to) / partial" } else { "" }
    );
    s += "CONTENUTO / LAYOUT\n\
          documents/NNNNNN/message.eml        il messaggio originale, byte per byte / the original message, byte for byte\n\
          documents/NNNNNN/metadata.xml       i metadati (Linee guida AgID, Allegato 5) / its metadata\n\
          documents/NNNNNN/receipts/*.eml     le ricevute del messaggio inviato (e i loro .xml) / the sent message's receipts\n\
          audit/records.jsonl                 i record del giornale su questi messaggi, identici / the journal records about them, verbatim\n\
          audit/anchor-*.tsr, *.jsonl         la marca temporale RFC 3161 più recente e il record marcato / the newest RFC 3161 token and its record\n\
          audit/tsa-ca.pem                    la CA dell'autorità di marcatura (se configurata) / the TSA's CA (when configured)\n\
          index.xml                           indice UNI 11386 (SInCRO v2) con lo SHA-256 di ogni file / index with every file's SHA-256\n\
          SHA256SUMS                          lo SHA-256 di ogni altro file / every other file's SHA-256\n\n";
    s += "VERIFICA / HOW TO VERIFY (sha256sum e openssl soltanto / only)\n\n\
          1. Integrità di ogni file / every file intact (in questa cartella; uno .zip va prima estratto /\n\
          \x20  in this directory; a .zip is extracted first):\n\n\
          \x20     sha256sum -c SHA256SUMS\n\n\
          \x20  Ogni .eml si chiama nel giornale con il suo SHA-256 (record \"archived\", campo \"hash\").\n\
          \x20  Each .eml's SHA-256 is its name in the journal (the \"archived\" record's \"hash\").\n\n\
          2. Ogni record del giornale / each journal record: il suo hash è lo SHA-256 della riga senza\n\
          \x20  ,\"hash\":\"…\" / its hash is the SHA-256 of the line without ,\"hash\":\"…\":\n\n\
          \x20     sed -n 1p audit/records.jsonl | sed 's/,\"hash\":\"[0-9a-f]*\"}$/}/' | tr -d '\\n' | sha256sum\n\
          \x20     sed -n 1p audit/records.jsonl | grep -o '\"hash\":\"[0-9a-f]*\"}$'\n\n\
          \x20  I due valori coincidono; \"prev\" di un record è l'hash del precedente nella catena.\n\
          \x20  The two agree; a record's \"prev\" is the hash of the one before it in the chain.\n\n";
    match &plan.anchor {
        Some(a) => {
            let base = format!("audit/anchor-{:012}", a.seq);
            let ca = if opts.tsa_ca.is_some() { "audit/tsa-ca.pem" } else { "<CA dell'autorità / the TSA's CA>" };
            s += &format!(
                "3. Marca temporale / time stamp: il token {base}.tsr marca l'hash del record {seq}\n\
                 \x20  (prima riga di {base}.jsonl), che concatena tutti i record precedenti.\n\
                 \x20  The token {base}.tsr stamps the hash of record {seq} (first line of {base}.jsonl),\n\
                 \x20  which chains every record before it.\n\n\
                 \x20     sed -n 1p {base}.jsonl | sed 's/,\"hash\":\"[0-9a-f]*\"}}$/}}/' | tr -d '\\n' | sha256sum\n\
                 \x20     openssl ts -verify -digest {hash} -in {base}.tsr -CAfile {ca}\n\n\
                 \x20  Il primo comando stampa {hash}; il secondo risponde \"Verification: OK\".\n\
                 \x20  The first command prints {hash}; the second answers \"Verification: OK\".\n\
                 \x20  openssl ts -reply -in {base}.tsr -text  mostra la data / shows the time.\n\n",
                seq = a.seq,
                hash = a.hash,
            );
        }
        None => s += "3. Nessuna marca temporale nel giornale / no time stamp in the journal yet.\n\n",
    }
    s += "4. Con pecgate / with pecgate:  pecgate export verify <questa cartella o .zip / this directory or .zip>\n";
    s
}
