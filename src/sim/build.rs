//! Building the provider's messages: transport envelope, acceptance and
//! non-acceptance, delivery receipt (complete form), non-delivery warning
//! and notice.
//! Pure functions over the submission, signed with the simulator's PKI; the
//! layout follows PEC-SPEC.md (and the shared samples in `tests/data/pec`).

use chrono::{DateTime, Utc};
use openssl::error::ErrorStack;

use super::pki::{base64_lines, Pki};

/// One accepted submission, as the provider saw it.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The authenticated sender (certified address).
    pub sender: String,
    /// `(address, certified)`: certified recipients are on a simulated
    /// domain; the others are ordinary mail (`esterno`).
    pub recipients: Vec<(String, bool)>,
    /// The message exactly as submitted.
    pub original: Vec<u8>,
    pub subject: String,
    /// Original Message-ID with angle brackets.
    pub msgid: String,
    /// The provider's identifier of this submission.
    pub identificativo: String,
    pub at: DateTime<Utc>,
}

/// Which message to build.
#[derive(Debug, Clone)]
pub enum Notice {
    Accettazione,
    NonAccettazione { reason: String },
    /// The transport envelope for the certified recipients.
    Envelope,
    /// Delivery receipt (complete form) about one recipient.
    Consegna { recipient: String },
    /// Non-delivery notice about one recipient.
    ErroreConsegna { recipient: String, reason: String },
    /// Non-delivery warning about one recipient: no delivery receipt from
    /// its provider within the time limit (PEC-SPEC.md: 12 hours; the
    /// definitive notice follows at 24). Not final: a delivery receipt may
    /// still come.
    PreavvisoErroreConsegna { recipient: String, reason: String },
}

/// The provider's identity in its messages.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Certified address that signs and sends, `posta-certificata@…`.
    pub address: String,
    /// `gestore-emittente` in daticert.
    pub name: String,
}

/// Escape text for XML element content and attribute values.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A header value, RFC 2047-encoded when not plain ASCII.
fn header_text(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.is_ascii() {
        clean
    } else {
        format!("=?utf-8?B?{}?=", openssl::base64::encode_block(clean.as_bytes()))
    }
}

/// `at`: the event's time (the provider certifies when it accepted, delivered
/// or gave up, not when the message was submitted).
fn daticert(p: &Provider, s: &Submission, at: DateTime<Utc>, tipo: &str, errore: &str, extra: &str) -> String {
    let mut dest = String::new();
    for (a, cert) in &s.recipients {
        let t = if *cert { "certificato" } else { "esterno" };
        dest.push_str(&format!("<destinatari tipo=\"{t}\">{}</destinatari>", xml(a)));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<postacert tipo=\"{tipo}\" errore=\"{errore}\">\r\n\
         <intestazione><mittente>{from}</mittente>{dest}<risposte>{from}</risposte><oggetto>{subj}</oggetto></intestazione>\r\n\
         <dati><gestore-emittente>{gestore}</gestore-emittente><data zona=\"+0000\"><giorno>{day}</giorno><ora>{time}</ora></data>\r\n\
         <identificativo>{id}</identificativo><msgid>{msgid}</msgid>\r\n{extra}</dati></postacert>\r\n",
        from = xml(&s.sender),
        subj = xml(&s.subject),
        gestore = xml(&p.name),
        day = at.format("%d/%m/%Y"),
        time = at.format("%H:%M:%S"),
        id = xml(&s.identificativo),
        msgid = xml(&s.msgid),
    )
}

/// Build and sign one provider message. `now` is its Date.
pub fn build(pki: &Pki, p: &Provider, s: &Submission, notice: &Notice, now: DateTime<Utc>) -> Result<Vec<u8>, ErrorStack> {
    let subj = &s.subject;
    let id = &s.identificativo;
    let date = now.to_rfc2822();
    let all: Vec<&str> = s.recipients.iter().map(|r| r.0.as_str()).collect();
    // (headers after Date/From/To, human text, daticert, carries original)
    let (from, to, kind_headers, text, dc, with_original) = match notice {
        Notice::Accettazione => (
            p.address.clone(),
            s.sender.clone(),
            format!("Subject: {}\r\nMessage-ID: <accettazione-{id}>\r\nX-Ricevuta: accettazione\r\n", header_text(&format!("ACCETTAZIONE: {subj}"))),
            format!("Ricevuta di accettazione: il messaggio \"{subj}\" inviato da \"{}\" e' stato accettato dal sistema ed inoltrato.", s.sender),
            daticert(p, s, now, "accettazione", "nessuno", ""),
            false,
        ),
        Notice::NonAccettazione { reason } => (
            p.address.clone(),
            s.sender.clone(),
            format!(
                "Subject: {}\r\nMessage-ID: <non-accettazione-{id}>\r\nX-Ricevuta: non-accettazione\r\n",
                header_text(&format!("AVVISO DI NON ACCETTAZIONE: {subj}"))
            ),
            format!("Avviso di non accettazione: il messaggio \"{subj}\" non e' stato accettato: {reason}"),
            daticert(p, s, now, "non-accettazione", "altro", &format!("<errore-esteso>{}</errore-esteso>\r\n", xml(reason))),
            false,
        ),
        Notice::Envelope => (
            format!("\"Per conto di: {}\" <{}>", s.sender, p.address),
            all.join(", "),
            format!(
                "Subject: {}\r\nMessage-ID: <{id}>\r\nX-Trasporto: posta-certificata\r\nReply-To: {}\r\n",
                header_text(&format!("POSTA CERTIFICATA: {subj}")),
                s.sender
            ),
            format!(
                "Messaggio di posta certificata: il messaggio \"{subj}\" e' stato inviato da \"{}\" indirizzato a: {}.",
                s.sender,
                all.join(", ")
            ),
            daticert(p, s, now, "posta-certificata", "nessuno", ""),
            true,
        ),
        Notice::Consegna { recipient } => (
            p.address.clone(),
            s.sender.clone(),
            format!(
                "Subject: {}\r\nMessage-ID: <consegna-{}-{id}>\r\nX-Ricevuta: avvenuta-consegna\r\nX-TipoRicevuta: completa\r\n",
                header_text(&format!("CONSEGNA: {subj}")),
                hex::encode(&sha256(recipient.as_bytes())[..6])
            ),
            format!("Ricevuta di avvenuta consegna: il messaggio \"{subj}\" e' stato consegnato nella casella di destinazione {recipient}."),
            daticert(
                p,
                s,
                now,
                "avvenuta-consegna",
                "nessuno",
                &format!("<ricevuta tipo=\"completa\"/>\r\n<consegna>{}</consegna>\r\n", xml(recipient)),
            ),
            true,
        ),
        Notice::ErroreConsegna { recipient, reason } => (
            p.address.clone(),
            s.sender.clone(),
            format!(
                "Subject: {}\r\nMessage-ID: <errore-{}-{id}>\r\nX-Ricevuta: errore-consegna\r\n",
                header_text(&format!("AVVISO DI MANCATA CONSEGNA: {subj}")),
                hex::encode(&sha256(recipient.as_bytes())[..6])
            ),
            format!("Avviso di mancata consegna: il messaggio \"{subj}\" non e' stato consegnato a {recipient}: {reason}"),
            daticert(
                p,
                s,
                now,
                "errore-consegna",
                "no-dest",
                &format!("<consegna>{}</consegna>\r\n<errore-esteso>{}</errore-esteso>\r\n", xml(recipient), xml(reason)),
            ),
            false,
        ),
        // Layout as the shared sample `06-preavviso-errore-consegna.eml`:
        // `errore="altro"`, `consegna` and `errore-esteso`, no original.
        Notice::PreavvisoErroreConsegna { recipient, reason } => (
            p.address.clone(),
            s.sender.clone(),
            format!(
                "Subject: {}\r\nMessage-ID: <preavviso-{}-{id}>\r\nX-Ricevuta: preavviso-errore-consegna\r\n",
                header_text(&format!("AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: {subj}")),
                hex::encode(&sha256(recipient.as_bytes())[..6])
            ),
            format!(
                "Avviso di mancata consegna per superamento del tempo massimo: il messaggio \"{subj}\" non risulta ancora consegnato a {recipient}: {reason}"
            ),
            daticert(
                p,
                s,
                now,
                "preavviso-errore-consegna",
                "altro",
                &format!("<consegna>{}</consegna>\r\n<errore-esteso>{}</errore-esteso>\r\n", xml(recipient), xml(reason)),
            ),
            false,
        ),
    };
    let mut inner = Vec::new();
    inner.extend_from_slice(
        b"Content-Type: multipart/mixed; boundary=\"=_sim_inner\"\r\n\r\nThis is a multi-part message in MIME format.\r\n--=_sim_inner\r\n\
          Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    inner.extend_from_slice(text.as_bytes());
    inner.extend_from_slice(b"\r\n\r\n");
    if with_original {
        inner.extend_from_slice(
            b"--=_sim_inner\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n",
        );
        inner.extend_from_slice(&s.original);
        inner.extend_from_slice(b"\r\n");
    }
    inner.extend_from_slice(
        b"--=_sim_inner\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\
          Content-Disposition: inline; filename=\"daticert.xml\"\r\n\r\n",
    );
    inner.extend_from_slice(base64_lines(dc.as_bytes()).as_bytes());
    inner.extend_from_slice(b"\r\n\r\n--=_sim_inner--\r\n");
    let signature = pki.sign_detached(&inner)?;

    let mut out = format!(
        "Return-Path: <{addr}>\r\nDate: {date}\r\nFrom: {from}\r\nTo: {to}\r\n{kind_headers}X-Riferimento-Message-ID: {msgid}\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"=_sim_outer\"\r\n\r\n\
         This is an S/MIME signed message\r\n--=_sim_outer\r\n",
        addr = p.address,
        msgid = s.msgid,
    )
    .into_bytes();
    out.extend_from_slice(&inner);
    out.extend_from_slice(
        b"\r\n--=_sim_outer\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\
          Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n",
    );
    out.extend_from_slice(signature.as_bytes());
    out.extend_from_slice(b"\r\n\r\n--=_sim_outer--\r\n");
    Ok(out)
}

fn sha256(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}
