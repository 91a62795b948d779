//! Italian certified email (PEC): recognise, parse, unwrap, verify and
//! reconcile provider messages.
//!
//! This module does **no I/O**: every entry point takes the raw bytes of one
//! message (`&[u8]`) and returns plain values, so the daemon, the CLI and the
//! tests share exactly the same logic and the module can be fuzzed in
//! isolation. Nothing here reads the clock either: callers pass `now`.
//!
//! One job per submodule:
//! - [`classify`]: which PEC message is this (envelope, receipt, anomaly,
//!   plain mail), from headers, subject and `daticert.xml`, reporting where
//!   those signals disagree instead of guessing silently.
//! - [`daticert`]: a bounded, hostile-input-safe parser for `daticert.xml`,
//!   with recovery for a known provider defect (unescaped `<…>` in `msgid`).
//! - [`envelope`]: unwrapping of envelopes and receipts into the original
//!   message (`postacert.eml`, byte-exact), `daticert.xml` and the human text.
//! - [`signature`]: S/MIME (CMS/PKCS#7) verification of the provider's
//!   detached signature against an administrator-maintained trust store.
//! - [`reconcile`]: a pure, order-independent state machine folding receipts
//!   into the per-message delivery state and its IMAP keywords.
//! - [`inspect`]: everything above, for one message, as a serialisable report
//!   and a human-readable text.
//!
//! The formats are described in `PEC-SPEC.md` (DM 2 November 2005 technical
//! rules). Provider output varies, so every parser here is lenient where the
//! deviation is known and harmless, and strict where leniency would let a
//! forged or hostile message through.

pub mod classify;
pub mod daticert;
pub mod envelope;
pub mod inspect;
pub mod meta;
mod mime;
pub use mime::{parse_full, Parsed};
pub(crate) use mime::{base64_alphabet, decode_base64_joined, leaves, Entity};
pub mod reconcile;
pub mod signature;

pub use classify::{classify, Classification, PecFolder, PecKind, ReceiptForm};
pub use daticert::{Daticert, DaticertError};
pub use envelope::{unwrap_envelope, AttachmentInfo, Unwrapped};
pub use inspect::{inspect, render_text, Inspection};
pub use signature::{verify, SignatureStatus, TrustStore};

/// The keywords that show a sent message's PEC delivery state (see
/// [`reconcile::SentMessage::keywords`]). The gateway computes them;
/// clients can neither set nor clear them.
pub const PEC_KEYWORDS: [&str; 7] = [
    "$PecAccepted",
    "$PecNotAccepted",
    "$PecDelivered",
    "$PecPartiallyDelivered",
    "$PecFailed",
    "$PecOverdue",
    "$PecWarned",
];

/// Is `flag` one of the gateway's computed `$Pec*` keywords (the delivery
/// state's above, and the handling state's)? The whole `$Pec` prefix is
/// the gateway's own.
pub fn is_pec_keyword(flag: &str) -> bool {
    flag.len() > 4 && flag.as_bytes()[..4].eq_ignore_ascii_case(b"$pec")
}

/// Errors of the PEC module's fallible operations on a whole message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PecError {
    /// The input could not be read as an RFC 5322 message at all.
    #[error("not an email message: no RFC 5322 header block could be parsed ({len} bytes)")]
    NotAMessage {
        /// Size of the rejected input, for the log line.
        len: usize,
    },
    /// The message parsed, but carries none of the parts a PEC envelope or
    /// receipt has (`postacert.eml`, `daticert.xml`).
    #[error(
        "not a PEC envelope or receipt: no postacert.eml or daticert.xml part found \
         (is this plain mail, or a provider using unknown attachment names?)"
    )]
    NoPecParts,
}

/// Normalises a Message-ID for comparison and storage.
///
/// PEC correlates receipts with the sent message through the original
/// Message-ID, which arrives in three places written by three different
/// programs (the client's header, `X-Riferimento-Message-ID`, daticert
/// `msgid`). They differ in white space (folding), in angle brackets (none,
/// one pair, or doubled by a provider that escapes them twice) and in trailing
/// comments. The normal form is: no white space, exactly one pair of angle
/// brackets. The local part is kept case-sensitive, as RFC 5322 requires.
/// Returns `None` when nothing identifying is left.
pub fn normalize_message_id(raw: &str) -> Option<String> {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = match compact.find('<') {
        Some(start) => {
            let after = &compact[start + 1..];
            match after.find('>') {
                Some(end) => &after[..end],
                None => after,
            }
        }
        None => compact.as_str(),
    };
    let inner = inner.trim_matches(|c| c == '<' || c == '>');
    if inner.is_empty() {
        None
    } else {
        Some(format!("<{inner}>"))
    }
}

/// Normalises an email address for matching recipients across receipts:
/// trimmed, angle brackets removed, ASCII-lowercased.
///
/// HYPOTHESIS: PEC providers treat addresses case-insensitively (they are
/// mailbox logins); daticert `consegna` and `destinatari` of the same
/// submission have been seen with different case.
pub fn normalize_address(raw: &str) -> String {
    raw.trim()
        .trim_matches(|c| c == '<' || c == '>')
        .trim()
        .to_ascii_lowercase()
}

/// The normalised Message-ID in a message's header, if it has one.
pub fn header_message_id(raw: &[u8]) -> Option<String> {
    let m = mail_parser::MessageParser::new().parse_headers(raw)?;
    normalize_message_id(m.message_id()?)
}

/// The (first) address in a message's `From`, as written.
pub fn header_from_address(raw: &[u8]) -> Option<String> {
    let m = mail_parser::MessageParser::new().parse_headers(raw)?;
    m.from()?.first()?.address().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_forms() {
        assert_eq!(normalize_message_id("<a@b>").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_message_id("a@b").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_message_id(" <a@\r\n b> ").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_message_id("<<a@b>>").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_message_id("<a@b> (comment)").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_message_id("<>"), None);
        assert_eq!(normalize_message_id("   "), None);
    }

    #[test]
    fn header_fields_for_append() {
        let raw = b"From: Protocollo <Protocollo@PEC.example.it>\r\nMessage-ID: <x1@client>\r\n\r\nbody\r\n";
        assert_eq!(header_message_id(raw).as_deref(), Some("<x1@client>"));
        assert_eq!(header_from_address(raw).map(|a| normalize_address(&a)).as_deref(), Some("protocollo@pec.example.it"));
        assert_eq!(header_from_address(b"Subject: none\r\n\r\n"), None);
        assert_eq!(header_message_id(b"\xff\xfe"), None);
    }
}
