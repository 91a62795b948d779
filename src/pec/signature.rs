//! Verification of the provider's S/MIME signature on PEC envelopes and
//! receipts.
//!
//! Every provider message is `multipart/signed` with a detached CMS/PKCS#7
//! `SignedData` (`application/pkcs7-signature` or the older
//! `application/x-pkcs7-signature`). We verify the signature over the first
//! part **exactly as it appears in the message** (only line endings are
//! canonicalised to CRLF, as RFC 8551 §3.1.1 requires of signed content, so a
//! message stored with Unix line endings still verifies), then check that the
//! signer chains to a certificate in the administrator's trust store (the
//! providers' certificates from AgID's IGPEC list, or their CAs).
//!
//! Two failures are kept apart because they mean different things to an
//! auditor: [`SignatureStatus::Invalid`] (the bytes were altered after
//! signing, or the signature is broken) and [`SignatureStatus::UnknownSigner`]
//! (the bytes are intact but signed by someone we do not trust).

use std::borrow::Cow;

use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509PurposeId, X509Ref, X509};
use serde::{Deserialize, Serialize};

use super::mime;

/// Errors building a [`TrustStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustStoreError {
    /// The PEM could not be parsed.
    #[error("trust store is not a readable PEM certificate bundle: {0}")]
    Pem(#[source] openssl::error::ErrorStack),
    /// The PEM parsed but holds no certificate.
    #[error("trust store PEM bundle contains no certificates (expected the PEC providers' certificates or CAs)")]
    Empty,
    /// OpenSSL refused to build the store.
    #[error("cannot build the certificate store: {0}")]
    Store(#[source] openssl::error::ErrorStack),
    /// The verification time cannot be represented.
    #[error("verification time {0} is out of range")]
    Time(i64),
}

/// The certificates whose signatures we accept: PEC providers' signing
/// certificates and/or the CAs that issue them.
///
/// Any certificate in the bundle is a trust anchor, including a provider's
/// leaf certificate on its own (partial-chain verification), because AgID's
/// list publishes the providers' certificates rather than their roots.
pub struct TrustStore {
    certs: Vec<X509>,
    store: X509Store,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore").field("certificates", &self.certs.len()).finish()
    }
}

impl TrustStore {
    /// Loads a PEM bundle (one or more `CERTIFICATE` blocks).
    pub fn from_pem(pem: &[u8]) -> Result<TrustStore, TrustStoreError> {
        let certs = X509::stack_from_pem(pem).map_err(TrustStoreError::Pem)?;
        if certs.is_empty() {
            return Err(TrustStoreError::Empty);
        }
        let store = build_store(&certs, None)?;
        Ok(TrustStore { certs, store })
    }

    /// Number of certificates loaded.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Always false: an empty bundle is refused by [`TrustStore::from_pem`].
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

fn build_store(certs: &[X509], at_unix: Option<i64>) -> Result<X509Store, TrustStoreError> {
    let mut builder = X509StoreBuilder::new().map_err(TrustStoreError::Store)?;
    for cert in certs {
        builder.add_cert(cert.clone()).map_err(TrustStoreError::Store)?;
    }
    // A provider's own certificate is a valid anchor (see TrustStore doc).
    builder.set_flags(X509VerifyFlags::PARTIAL_CHAIN).map_err(TrustStoreError::Store)?;
    // Provider certificates in the wild do not all carry the S/MIME key
    // usages OpenSSL's default purpose demands; the trust decision is the
    // store's membership, as with `openssl smime -verify -purpose any`.
    builder.set_purpose(X509PurposeId::ANY).map_err(TrustStoreError::Store)?;
    if let Some(at) = at_unix {
        let mut param = X509VerifyParam::new().map_err(TrustStoreError::Store)?;
        param.set_time(libc::time_t::try_from(at).map_err(|_| TrustStoreError::Time(at))?);
        builder.set_param(&param).map_err(TrustStoreError::Store)?;
    }
    Ok(builder.build())
}

/// Outcome of signature verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SignatureStatus {
    /// Signature intact and the signer chains to the trust store.
    Valid {
        /// Signer's subject, e.g. `CN=posta-certificata@pec.example.it, O=…`.
        signer: String,
    },
    /// The signature does not verify: content altered, or the signature
    /// structure is broken or uses a refused algorithm (MD5).
    Invalid {
        /// What failed, in words.
        reason: String,
    },
    /// The content matches the signature, but the signer is not trusted
    /// (not in the store, not chaining to it, or its certificate is not
    /// valid at the verification time).
    UnknownSigner {
        /// Signer's subject.
        signer: String,
    },
    /// The message carries no S/MIME signature.
    NotSigned,
}

impl SignatureStatus {
    /// Its name as serialised (`status`): `valid`, `invalid`,
    /// `unknown-signer`, `not-signed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SignatureStatus::Valid { .. } => "valid",
            SignatureStatus::Invalid { .. } => "invalid",
            SignatureStatus::UnknownSigner { .. } => "unknown-signer",
            SignatureStatus::NotSigned => "not-signed",
        }
    }

    /// True only for [`SignatureStatus::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, SignatureStatus::Valid { .. })
    }
}

/// Verifies a message's signature at the current time (OpenSSL's clock).
pub fn verify(raw: &[u8], trust: &TrustStore) -> SignatureStatus {
    verify_with_store(raw, trust, &trust.store)
}

/// Verifies a message's signature with certificate validity checked at
/// `at` instead of now: a 10-year archive must be able to re-check a receipt
/// after the provider's certificate has expired, at the time it was signed.
pub fn verify_at(raw: &[u8], trust: &TrustStore, at: chrono::DateTime<chrono::Utc>) -> SignatureStatus {
    match build_store(&trust.certs, Some(at.timestamp())) {
        Ok(store) => verify_with_store(raw, trust, &store),
        Err(e) => SignatureStatus::Invalid { reason: format!("cannot prepare verification: {e}") },
    }
}

/// DER of the MD5 OIDs (1.2.840.113549.2.5 and md5WithRSAEncryption
/// 1.2.840.113549.1.1.4), refused wherever they appear in the signature.
const MD5_OIDS: [&[u8]; 2] = [
    &[0x06, 0x08, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x02, 0x05],
    &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x04],
];

/// What the signed structure of a message yields.
enum Signed<'a> {
    /// `multipart/signed`: the signed bytes and the detached signature.
    Detached { content: Cow<'a, [u8]>, signature: Vec<u8> },
    /// `application/pkcs7-mime` signed-data: content inside the signature.
    Opaque { signature: Vec<u8> },
}

fn is_pkcs7(ctype: &str, subtype: &str, want: &str) -> bool {
    ctype.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case(want)
            || subtype.strip_prefix("x-").is_some_and(|s| s.eq_ignore_ascii_case(want)))
}

/// Finds the signed content and signature, or explains why the message is
/// unsigned (`Ok(None)`) or unusably signed (`Err(reason)`).
///
/// The signed content is the first part of the `multipart/signed` exactly as
/// [`mime::split_multipart`] cuts it (RFC 1847: the line break before the
/// next delimiter is not part of the content).
fn extract(raw: &[u8]) -> Result<Option<Signed<'_>>, String> {
    let top = mime::Entity::parse(raw);
    if !top.has_headers() {
        return Ok(None);
    }
    let (ctype, subtype) = top.mime_type();
    if is_pkcs7(&ctype, &subtype, "pkcs7-mime") {
        let signature = top.decoded().into_owned();
        return Ok(Some(Signed::Opaque { signature }));
    }
    if !(ctype == "multipart" && subtype == "signed") {
        return Ok(None);
    }
    if let Some(protocol) = top.content_type_param("protocol") {
        let (ptype, psub) = protocol.split_once('/').unwrap_or((protocol, ""));
        if !is_pkcs7(ptype.trim(), psub.trim(), "pkcs7-signature") {
            return Err(format!("multipart/signed with unsupported protocol {protocol:?}"));
        }
    }
    let boundary = top.content_type_param("boundary").ok_or("multipart/signed without a boundary parameter")?;
    let parts = mime::split_multipart(top.body, boundary);
    let (Some(content), Some(sig_raw)) = (parts.first(), parts.get(1)) else {
        return Err("multipart/signed without both a content and a signature part".into());
    };
    let sig_part = mime::Entity::parse(sig_raw);
    let (sig_type, sig_subtype) = sig_part.mime_type();
    if !is_pkcs7(&sig_type, &sig_subtype, "pkcs7-signature") {
        return Err("second part of multipart/signed is not application/pkcs7-signature".into());
    }
    Ok(Some(Signed::Detached { content: to_crlf(content), signature: sig_part.decoded().into_owned() }))
}

/// Canonical form of signed text: every bare LF becomes CRLF. Line ends
/// are found with `memchr` (a receipt's signed content is the whole
/// notice, hundreds of KB, nearly all of it base64 lines).
fn to_crlf(content: &[u8]) -> Cow<'_, [u8]> {
    let bare = |i: usize| i == 0 || content[i - 1] != b'\r';
    crate::bytes::insert_before(content, memchr::memchr_iter(b'\n', content).filter(|&i| bare(i)), b'\r')
}

/// A one-line description of a certificate's subject.
fn describe(cert: &X509Ref) -> String {
    let parts: Vec<String> = cert
        .subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect();
    if parts.is_empty() {
        "(certificate without subject)".into()
    } else {
        parts.join(", ")
    }
}

fn first_error(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .map(|err| err.reason().unwrap_or("unknown OpenSSL error").to_string())
        .unwrap_or_else(|| "unknown OpenSSL error".into())
}

fn verify_with_store(raw: &[u8], trust: &TrustStore, store: &X509Store) -> SignatureStatus {
    let (content, signature) = match extract(raw) {
        Ok(None) => return SignatureStatus::NotSigned,
        Err(reason) => return SignatureStatus::Invalid { reason },
        Ok(Some(Signed::Detached { content, signature })) => (Some(content), signature),
        Ok(Some(Signed::Opaque { signature })) => (None, signature),
    };
    if MD5_OIDS.iter().any(|oid| signature.windows(oid.len()).any(|w| w == *oid)) {
        return SignatureStatus::Invalid { reason: "signature uses MD5, which is refused".into() };
    }
    let p7 = match Pkcs7::from_der(&signature) {
        Ok(p7) => p7,
        Err(e) => {
            return SignatureStatus::Invalid {
                reason: format!("signature is not a readable PKCS#7/CMS structure: {}", first_error(&e)),
            }
        }
    };
    // Signers are looked up among the certificates in the signature and,
    // failing that, in the trust store.
    let mut candidates = match Stack::new() {
        Ok(s) => s,
        Err(e) => return SignatureStatus::Invalid { reason: first_error(&e) },
    };
    for cert in &trust.certs {
        if candidates.push(cert.clone()).is_err() {
            break;
        }
    }
    let signer = match p7.signers(&candidates, Pkcs7Flags::empty()) {
        Ok(signers) => {
            let names: Vec<String> = signers.iter().map(describe).collect();
            if names.is_empty() {
                return SignatureStatus::Invalid { reason: "signature has no signer".into() };
            }
            names.join("; ")
        }
        Err(_) => {
            return SignatureStatus::UnknownSigner {
                signer: "(signer certificate neither in the signature nor in the trust store)".into(),
            }
        }
    };
    let content = content.as_deref();
    // Content and trust checked at once: a valid signature (nearly every
    // one) costs one pass over the content, which for a delivery receipt is
    // the whole notice it carries. Only when that fails is it told apart:
    // does the content match the signature at all?
    if p7.verify(&candidates, store, content, None, Pkcs7Flags::empty()).is_ok() {
        return SignatureStatus::Valid { signer };
    }
    match p7.verify(&candidates, store, content, None, Pkcs7Flags::NOVERIFY) {
        Ok(()) => SignatureStatus::UnknownSigner { signer },
        Err(e) => SignatureStatus::Invalid {
            reason: format!("content does not match the signature (altered after signing?): {}", first_error(&e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_canonicalisation() {
        assert_eq!(&*to_crlf(b"a\r\nb"), b"a\r\nb");
        assert_eq!(&*to_crlf(b"a\nb\n"), b"a\r\nb\r\n");
        assert_eq!(&*to_crlf(b"\na\r\n"), b"\r\na\r\n");
    }
}
