//! Unwrapping a PEC envelope or receipt into its parts: the original message
//! (`postacert.eml`), the `daticert.xml` and the provider's human text.
//!
//! The original is returned byte-for-byte as it sits in the envelope after
//! transfer decoding (no charset conversion, no line-ending change), because
//! it is the legal object: its hash must match what the provider certified,
//! and users must be able to open exactly what was sent.

use serde::{Deserialize, Serialize};

use super::{mime, PecError};
use mail_parser::{Message, MimeHeaders, PartType};

/// One attachment of the original message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    /// File name as given (`Content-Disposition` or `Content-Type` name),
    /// `None` when the part has no name.
    pub name: Option<String>,
    /// MIME type, e.g. `application/pdf`.
    pub content_type: String,
    /// Size in bytes after transfer decoding.
    pub size: usize,
}

/// The parts of a PEC envelope or receipt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Unwrapped {
    /// The original message (`postacert.eml`), byte-exact; `None` for
    /// receipts that do not carry it (acceptance, sintetica delivery, …).
    pub original: Option<Vec<u8>>,
    /// The `daticert.xml` bytes as sent (transfer-decoded only).
    pub daticert: Option<Vec<u8>>,
    /// The provider's human-readable text (plain text part, or the HTML part
    /// when there is no plain one).
    pub text: Option<String>,
    /// Attachments of the original message (empty without an original).
    pub attachments: Vec<AttachmentInfo>,
}

/// Splits a PEC envelope or receipt into its parts.
///
/// Errors when the input is not a message, or when it has neither a
/// `postacert.eml` nor a `daticert.xml` (then it is not PEC at all).
pub fn unwrap_envelope(raw: &[u8]) -> Result<Unwrapped, PecError> {
    let msg = mime::parse(raw).ok_or(PecError::NotAMessage { len: raw.len() })?;
    let parts = mime::find_pec_parts(&msg);
    if parts.postacert.is_none() && parts.daticert.is_none() {
        return Err(PecError::NoPecParts);
    }
    let decoded = |idx: Option<usize>| {
        idx.and_then(|i| msg.parts.get(i))
            .map(|p| mime::transfer_decoded(&msg, p).into_owned())
    };
    let mut out = Unwrapped {
        original: decoded(parts.postacert),
        daticert: decoded(parts.daticert),
        text: parts
            .text
            .or(parts.html)
            .and_then(|i| msg.parts.get(i))
            .and_then(|p| p.text_contents())
            .map(str::to_string),
        attachments: Vec::new(),
    };
    out.attachments = match parts.postacert.and_then(|i| msg.parts.get(i)).map(|p| &p.body) {
        Some(PartType::Message(original)) => list_attachments(original),
        // postacert.eml not sent as message/rfc822 (e.g. octet-stream):
        // parse the bytes on their own to list the attachments.
        _ => out
            .original
            .as_deref()
            .and_then(mime::parse)
            .map(|nested| list_attachments(&nested))
            .unwrap_or_default(),
    };
    Ok(out)
}

/// The attachments of a message, as `mail-parser` sees them (named parts and
/// non-text bodies, not the main text).
fn list_attachments(msg: &Message<'_>) -> Vec<AttachmentInfo> {
    msg.attachments()
        .map(|p| AttachmentInfo {
            name: mime::part_name(p).map(str::to_string),
            content_type: p
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_ascii_lowercase(),
            size: p.contents().len(),
        })
        .collect()
}
