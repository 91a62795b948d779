//! Unwrapping a PEC envelope or receipt into its parts: the original message
//! (`postacert.eml`), the `daticert.xml` and the provider's human text.
//!
//! The original is returned byte-for-byte as it sits in the envelope after
//! transfer decoding (no charset conversion, no line-ending change), because
//! it is the legal object: its hash must match what the provider certified,
//! and users must be able to open exactly what was sent.

use serde::{Deserialize, Serialize};

use super::{mime, PecError};
use mail_parser::{Message, MimeHeaders};

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
    let top = mime::Entity::parse(raw);
    if !top.has_headers() {
        return Err(PecError::NotAMessage { len: raw.len() });
    }
    let leaves = mime::leaves(&top);
    let parts = mime::find_pec_parts(&leaves);
    if parts.postacert.is_none() && parts.daticert.is_none() {
        return Err(PecError::NoPecParts);
    }
    let decoded = |idx: Option<usize>| idx.and_then(|i| leaves.get(i)).map(|p| p.decoded().into_owned());
    let original = decoded(parts.postacert);
    // The human text is charset-decoded (it is for reading); the part is
    // parsed on its own so nothing else of the message is decoded.
    let text = parts
        .text
        .or(parts.html)
        .and_then(|i| leaves.get(i))
        .and_then(|p| mime::parse(p.raw))
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()));
    let attachments = original
        .as_deref()
        .and_then(mime::parse)
        .map(|m| list_attachments(&m))
        .unwrap_or_default();
    Ok(Unwrapped {
        original,
        daticert: decoded(parts.daticert),
        text,
        attachments,
    })
}

/// The attachments of a message, as `mail-parser` sees them (named parts and
/// non-text bodies, not the main text).
fn list_attachments(msg: &Message<'_>) -> Vec<AttachmentInfo> {
    msg.attachments()
        .map(|p| AttachmentInfo {
            name: p
                .attachment_name()
                .map(|n| n.trim().trim_matches('"').trim().to_string())
                .filter(|n| !n.is_empty()),
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
