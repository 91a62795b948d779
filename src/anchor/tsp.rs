//! RFC 3161 time-stamp protocol: the request pecgate sends and the checks
//! on the reply. No I/O: [`super::client`] posts the bytes.
//!
//! What is time-stamped is a journal record's hash (the SHA-256 of its
//! body, see `store::journal`), given to the TSA as the message imprint.
//! Since every record's hash covers the previous record's, one token
//! proves the whole chain up to that record existed at `genTime`, and an
//! auditor checks it with `openssl ts -verify -digest <record hash> -in
//! <token> -CAfile <TSA CA>` and nothing of pecgate.

use chrono::{DateTime, Utc};
use der::asn1::{Any, Int, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509PurposeId, X509};
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

/// id-sha256 (NIST).
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// id-ct-TSTInfo (RFC 3161).
const TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// Replies larger than this are not tokens (a token with its certificate
/// chain is a few KB).
pub const MAX_REPLY: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TspError {
    #[error("not a time-stamp reply: {0}")]
    Malformed(String),
    #[error("the TSA refused the request (status {status}{text})")]
    Refused { status: u8, text: String },
    #[error("the token's signature does not verify against the configured CA: {0}")]
    BadSignature(String),
    #[error("the token time-stamps {found}, not {expected}")]
    WrongImprint { expected: String, found: String },
    #[error("the token's nonce is not the request's: a replayed or misrouted reply")]
    WrongNonce,
    #[error("{0}")]
    Invalid(String),
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The time-stamped digest (hex).
    pub digest: String,
    pub gen_time: DateTime<Utc>,
    /// The token's serial number (hex), as the TSA numbers them.
    pub serial: String,
    /// The policy the TSA stamped under.
    pub policy: String,
}

/// A DER `TimeStampReq` for the SHA-256 digest `digest` (32 bytes), asking
/// for the TSA's certificate in the reply.
pub fn request(digest: &[u8], nonce: u64, policy: Option<&str>) -> Result<Vec<u8>, TspError> {
    if digest.len() != 32 {
        return Err(TspError::Invalid(format!("a SHA-256 digest has 32 bytes, not {}", digest.len())));
    }
    let policy = match policy {
        Some(p) => Some(ObjectIdentifier::new(p).map_err(|e| TspError::Invalid(format!("policy {p:?}: {e}")))?),
        None => None,
    };
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint(digest)?,
        req_policy: policy,
        nonce: Some(int(nonce)?),
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(|e| TspError::Invalid(format!("encoding the request: {e}")))
}

fn imprint(digest: &[u8]) -> Result<MessageImprint, TspError> {
    Ok(MessageImprint {
        hash_algorithm: spki::AlgorithmIdentifier { oid: SHA256, parameters: Some(Any::null()) },
        hashed_message: OctetString::new(digest).map_err(|e| TspError::Invalid(e.to_string()))?,
    })
}

/// A positive INTEGER from `n` (a leading zero byte when the high bit is set).
fn int(n: u64) -> Result<Int, TspError> {
    let b = n.to_be_bytes();
    let start = b.iter().position(|x| *x != 0).unwrap_or(7);
    let mut v = Vec::with_capacity(9);
    if b[start] & 0x80 != 0 {
        v.push(0);
    }
    v.extend_from_slice(&b[start..]);
    Int::new(&v).map_err(|e| TspError::Invalid(e.to_string()))
}

/// The token (a CMS `ContentInfo`, DER) inside a reply, once the reply
/// says it was granted.
pub fn token_of(reply: &[u8]) -> Result<Vec<u8>, TspError> {
    if reply.len() > MAX_REPLY {
        return Err(TspError::Malformed(format!("{} bytes", reply.len())));
    }
    let resp = TimeStampResp::from_der(reply).map_err(|e| TspError::Malformed(e.to_string()))?;
    let status = resp.status.status as u8;
    if status > 1 {
        let text = resp.status.status_string.as_ref().map(|t| format!(": {t:?}")).unwrap_or_default();
        return Err(TspError::Refused { status, text });
    }
    let token = resp.time_stamp_token.ok_or_else(|| TspError::Malformed("granted, but no token".into()))?;
    token.to_der().map_err(|e| TspError::Malformed(e.to_string()))
}

/// The TSTInfo inside a token, unverified (to learn its time first).
fn tst_info(token: &[u8]) -> Result<TstInfo, TspError> {
    let bad = |e: der::Error| TspError::Malformed(format!("token: {e}"));
    let ci = cms::content_info::ContentInfo::from_der(token).map_err(bad)?;
    let sd = cms::signed_data::SignedData::from_der(&ci.content.to_der().map_err(bad)?).map_err(bad)?;
    if sd.encap_content_info.econtent_type != TST_INFO {
        return Err(TspError::Malformed("the token does not carry a TSTInfo".into()));
    }
    let content = sd.encap_content_info.econtent.ok_or_else(|| TspError::Malformed("empty token".into()))?;
    TstInfo::from_der(content.value()).map_err(bad)
}

/// The digest a reply stamps and its time, without checking the
/// signature (when no CA is at hand).
pub fn unverified(reply: &[u8]) -> Result<(Vec<u8>, DateTime<Utc>), TspError> {
    let info = tst_info(&token_of(reply)?)?;
    Ok((info.message_imprint.hashed_message.as_bytes().to_vec(), DateTime::from(info.gen_time.to_system_time())))
}

/// Check a TSA reply (the whole DER `TimeStampResp`, as kept beside the
/// journal): the signature chains to `ca_pem` with a certificate for time
/// stamping, valid at the token's time; the token stamps `digest`; and,
/// when given, it carries the request's nonce.
pub fn verify(reply: &[u8], ca_pem: &[u8], digest: &[u8], nonce: Option<u64>) -> Result<Stamp, TspError> {
    let token = token_of(reply)?;
    let info = tst_info(&token)?;
    let gen_time: DateTime<Utc> = DateTime::from(info.gen_time.to_system_time());
    let found = info.message_imprint.hashed_message.as_bytes();
    if info.message_imprint.hash_algorithm.oid != SHA256 || found != digest {
        return Err(TspError::WrongImprint { expected: hex::encode(digest), found: hex::encode(found) });
    }
    if let Some(n) = nonce {
        if info.nonce.as_ref().map(|x| x.as_bytes()) != Some(int(n)?.as_bytes()) {
            return Err(TspError::WrongNonce);
        }
    }
    let sig = |e: openssl::error::ErrorStack| TspError::BadSignature(e.to_string());
    let mut store = X509StoreBuilder::new().map_err(sig)?;
    let certs = X509::stack_from_pem(ca_pem).map_err(sig)?;
    if certs.is_empty() {
        return Err(TspError::BadSignature("no certificate in the CA file".into()));
    }
    for c in certs {
        store.add_cert(c).map_err(sig)?;
    }
    store.set_purpose(X509PurposeId::TIMESTAMP_SIGN).map_err(sig)?;
    // Valid when it was stamped: a token stays evidence after the TSA's
    // certificate expires.
    let mut param = X509VerifyParam::new().map_err(sig)?;
    param.set_time(gen_time.timestamp() as libc::time_t);
    store.set_param(&param).map_err(sig)?;
    let store = store.build();
    let mut cms = CmsContentInfo::from_der(&token).map_err(sig)?;
    cms.verify(None, Some(&store), None, None, CMSOptions::BINARY).map_err(sig)?;
    Ok(Stamp {
        digest: hex::encode(digest),
        gen_time,
        serial: hex::encode(info.serial_number.as_bytes()),
        policy: info.policy.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_der_with_the_digest_and_nonce() {
        let d = [7u8; 32];
        let r = request(&d, 0x8000_0000_0000_0001, Some("1.2.3.4")).unwrap();
        let back = TimeStampReq::from_der(&r).unwrap();
        assert_eq!(back.message_imprint.hashed_message.as_bytes(), &d);
        assert_eq!(back.nonce.unwrap().as_bytes(), &[0, 0x80, 0, 0, 0, 0, 0, 0, 1]);
        assert!(back.cert_req);
        assert_eq!(back.req_policy.unwrap().to_string(), "1.2.3.4");
        assert!(request(&d[..31], 1, None).is_err());
        assert!(request(&d, 1, Some("not an oid")).is_err());
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        for bad in
            [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", b"\x30\x80\x00\x00", &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]]
        {
            assert!(matches!(token_of(bad), Err(TspError::Malformed(_))), "{bad:?}");
            assert!(verify(bad, b"", &[0; 32], None).is_err());
        }
        assert!(matches!(token_of(&vec![0x30; MAX_REPLY + 1]), Err(TspError::Malformed(_))));
    }

    #[test]
    fn a_refusal_is_reported_with_its_status() {
        // TimeStampResp { status { rejection(2) } }
        let r = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x02];
        assert!(matches!(token_of(&r), Err(TspError::Refused { status: 2, .. })));
    }
}
