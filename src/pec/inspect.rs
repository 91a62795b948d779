//! One message, everything the PEC module can say about it: the report
//! behind `pecgate pec inspect FILE.eml [--json] [--trust-store PEM]`.

use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::classify::{classify, Classification};
use super::envelope::{unwrap_envelope, AttachmentInfo};
use super::signature::{verify, SignatureStatus, TrustStore};

/// The inspection report (serialised as the CLI's `--json` output).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Inspection {
    /// Size of the input in bytes.
    pub size: usize,
    /// SHA-256 of the input, hex: ties the report to the archived bytes.
    pub sha256: String,
    /// The classification.
    pub classification: Classification,
    /// Signature status; `None` when no trust store was given.
    pub signature: Option<SignatureStatus>,
    /// For a receipt: the Message-ID of the sent message it is about.
    pub refers_to: Option<String>,
    /// Size of the embedded original (`postacert.eml`), if any.
    pub original_size: Option<usize>,
    /// Attachments of the embedded original.
    pub original_attachments: Vec<AttachmentInfo>,
}

/// Inspects one raw message; verifies the signature when `trust` is given.
pub fn inspect(raw: &[u8], trust: Option<&TrustStore>) -> Inspection {
    let classification = classify(raw);
    let unwrapped = unwrap_envelope(raw).ok();
    Inspection {
        size: raw.len(),
        sha256: hex::encode(Sha256::digest(raw)),
        refers_to: classification
            .is_receipt()
            .then(|| classification.original_message_id.clone())
            .flatten(),
        signature: trust.map(|t| verify(raw, t)),
        original_size: unwrapped.as_ref().and_then(|u| u.original.as_ref().map(Vec::len)),
        original_attachments: unwrapped.map(|u| u.attachments).unwrap_or_default(),
        classification,
    }
}

/// Renders an inspection for a human, one fact per line.
pub fn render_text(i: &Inspection) -> String {
    let c = &i.classification;
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(out, "kind:            {} (folder: {:?})", c.kind, c.folder());
    let _ = writeln!(out, "size:            {} bytes, sha256 {}", i.size, i.sha256);
    line(&mut out, "subject", c.subject.as_deref());
    line(&mut out, "message-id", c.message_id.as_deref());
    if c.is_receipt() {
        line(&mut out, "refers to", i.refers_to.as_deref().or(Some("(unknown)")));
    } else {
        line(&mut out, "original msgid", c.original_message_id.as_deref());
    }
    line(&mut out, "identificativo", c.identificativo.as_deref());
    let signature = match &i.signature {
        None => "not checked (no trust store given)".to_string(),
        Some(SignatureStatus::Valid { signer }) => format!("VALID, signed by {signer}"),
        Some(SignatureStatus::Invalid { reason }) => format!("INVALID: {reason}"),
        Some(SignatureStatus::UnknownSigner { signer }) => format!("UNKNOWN SIGNER (not in trust store): {signer}"),
        Some(SignatureStatus::NotSigned) => "not signed".to_string(),
    };
    let _ = writeln!(out, "signature:       {signature}");
    if let Some(d) = &c.daticert {
        let _ = writeln!(out, "daticert:");
        let _ = writeln!(
            out,
            "  tipo:          {}{}",
            d.tipo,
            d.errore.as_ref().map(|e| format!(" (errore: {e})")).unwrap_or_default()
        );
        line(&mut out, "  mittente", d.mittente.as_deref());
        for dest in &d.destinatari {
            let _ = writeln!(out, "  destinatario:  {} [{}]", dest.address, dest.tipo.as_str());
        }
        line(&mut out, "  oggetto", d.oggetto.as_deref());
        line(&mut out, "  gestore", d.gestore_emittente.as_deref());
        line(&mut out, "  data", d.data.map(|t| t.to_rfc3339()).as_deref());
        line(&mut out, "  msgid", d.msgid.as_deref());
        line(&mut out, "  ricevuta", d.ricevuta.map(|f| f.as_str()));
        line(&mut out, "  consegna", d.consegna.as_deref());
        line(&mut out, "  errore-esteso", d.errore_esteso.as_deref());
        if d.malformed {
            let _ = writeln!(out, "  MALFORMED (recovered)");
        }
    }
    line(&mut out, "daticert error", c.daticert_error.as_deref());
    if let Some(size) = i.original_size {
        let _ = writeln!(out, "original:        {size} bytes");
        for a in &i.original_attachments {
            let _ = writeln!(
                out,
                "  attachment:    {} ({}, {} bytes)",
                a.name.as_deref().unwrap_or("(unnamed)"),
                a.content_type,
                a.size
            );
        }
    }
    for d in &c.disagreements {
        let _ = writeln!(out, "DISAGREEMENT:    {d}");
    }
    for w in &c.warnings {
        let _ = writeln!(out, "warning:         {w}");
    }
    out
}

/// Appends `label: value` when there is a value.
fn line(out: &mut String, label: &str, value: Option<&str>) {
    if let Some(v) = value {
        let _ = writeln!(out, "{:<17}{v}", format!("{label}:"));
    }
}
