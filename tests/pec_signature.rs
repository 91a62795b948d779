//! S/MIME verification: a test CA and provider certificate are generated
//! here with the openssl crate, envelopes are re-signed with them, and the
//! four outcomes (Valid, Invalid, UnknownSigner, NotSigned) are each provoked
//! on purpose. The shared samples must verify against the shared CA, and the
//! `openssl` command line is used as an independent oracle.

mod pec_common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Name, X509};
use pec_common::*;
use pecgate::pec::signature::{verify_at, TrustStore};
use pecgate::pec::{verify, SignatureStatus};

struct Identity {
    cert: X509,
    key: PKey<Private>,
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn name(cn: &str) -> X509Name {
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_text("C", "IT").unwrap();
    n.append_entry_by_text("O", "Test PEC").unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    n.build()
}

/// A certificate for `cn`, self-signed (CA) or issued by `issuer`.
fn issue(cn: &str, issuer: Option<&Identity>, serial: u32) -> Identity {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now_unix() - 86_400).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::from_unix(now_unix() + 86_400 * 365).unwrap()).unwrap();
    b.set_pubkey(&key).unwrap();
    match issuer {
        None => {
            b.set_issuer_name(&name(cn)).unwrap();
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().unwrap())
                .unwrap();
            b.sign(&key, MessageDigest::sha256()).unwrap();
        }
        Some(ca) => {
            b.set_issuer_name(ca.cert.subject_name()).unwrap();
            b.append_extension(BasicConstraints::new().build().unwrap()).unwrap();
            b.append_extension(KeyUsage::new().digital_signature().non_repudiation().build().unwrap())
                .unwrap();
            b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
                .unwrap();
            let san = SubjectAlternativeName::new()
                .email(cn)
                .build(&b.x509v3_context(Some(&ca.cert), None))
                .unwrap();
            b.append_extension(san).unwrap();
            b.sign(&ca.key, MessageDigest::sha256()).unwrap();
        }
    }
    Identity { cert: b.build(), key }
}

struct Pki {
    ca: Identity,
    provider: Identity,
    rogue: Identity,
}

/// Generated once: RSA key generation dominates the test time.
fn pki() -> &'static Pki {
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(make_pki)
}

fn make_pki() -> Pki {
    let ca = issue("Test PEC CA", None, 1);
    let provider = issue("posta-certificata@pec.test.it", Some(&ca), 2);
    let rogue_ca = issue("Rogue CA", None, 3);
    let rogue = issue("posta-certificata@pec.rogue.it", Some(&rogue_ca), 4);
    Pki { ca, provider, rogue }
}

fn pem(certs: &[&X509]) -> Vec<u8> {
    certs.iter().flat_map(|c| c.to_pem().unwrap()).collect()
}

/// The signed first part of a sample (between the outer boundaries).
fn signed_part(raw: &[u8]) -> (String, String, String) {
    let t = text(raw);
    let open = "--=_pec_outer_3c9\r\n";
    let start = t.find(open).unwrap() + open.len();
    let end = t.find("\r\n--=_pec_outer_3c9\r\nContent-Type: application/pkcs7-signature").unwrap();
    (t[..start].to_string(), t[start..end].to_string(), t[end..].to_string())
}

/// Re-signs the content of a sample with `who`, as a provider would.
fn resign(raw: &[u8], who: &Identity, protocol: &str) -> Vec<u8> {
    let (head, content, _) = signed_part(raw);
    let p7 = Pkcs7::sign(
        &who.cert,
        &who.key,
        &Stack::new().unwrap(),
        content.as_bytes(),
        Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY,
    )
    .unwrap();
    let b64 = openssl::base64::encode_block(&p7.to_der().unwrap());
    let lines: Vec<&str> = b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    let head = head.replace("application/pkcs7-signature", protocol);
    format!(
        "{head}{content}\r\n--=_pec_outer_3c9\r\nContent-Type: {protocol}; name=\"smime.p7s\"\r\n\
         Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n\
         {}\r\n\r\n--=_pec_outer_3c9--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

fn shared_trust() -> TrustStore {
    TrustStore::from_pem(&sample("test-provider-ca.pem")).unwrap()
}

#[test]
fn shared_samples_are_valid_with_the_shared_ca() {
    let trust = shared_trust();
    for name in SAMPLES {
        match verify(&sample(name), &trust) {
            SignatureStatus::Valid { signer } => {
                assert!(signer.contains("posta-certificata@pec.example.it"), "{name}: {signer}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn shared_samples_valid_with_unix_line_endings() {
    let trust = shared_trust();
    for name in SAMPLES {
        assert!(verify(&to_lf(&sample(name)), &trust).is_valid(), "{name}");
    }
}

#[test]
fn openssl_cli_agrees_on_the_shared_sample() {
    let out = Command::new("openssl")
        .args(["smime", "-verify", "-purpose", "any", "-out", "/dev/null", "-in"])
        .arg(data_path("03-avvenuta-consegna-completa.eml"))
        .arg("-CAfile")
        .arg(data_path("test-provider-ca.pem"))
        .output()
        .expect("openssl CLI is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn generated_pki_valid_invalid_unknown_notsigned() {
    let pki = pki();
    let trust = TrustStore::from_pem(&pem(&[&pki.ca.cert])).unwrap();
    let raw = sample("02-accettazione.eml");

    // Valid, with both protocol spellings.
    for protocol in ["application/pkcs7-signature", "application/x-pkcs7-signature"] {
        let signed = resign(&raw, &pki.provider, protocol);
        match verify(&signed, &trust) {
            SignatureStatus::Valid { signer } => assert!(signer.contains("pec.test.it"), "{signer}"),
            other => panic!("{protocol}: {other:?}"),
        }
    }

    // One flipped byte in the signed content: Invalid (tampered).
    let signed = resign(&raw, &pki.provider, "application/pkcs7-signature");
    let (head, content, tail) = signed_part(&signed);
    let flipped = content.replacen("sistema di posta", "sistema di posTa", 1);
    assert_ne!(flipped, content);
    let tampered = format!("{head}{flipped}{tail}");
    match verify(tampered.as_bytes(), &trust) {
        SignatureStatus::Invalid { reason } => assert!(reason.contains("does not match"), "{reason}"),
        other => panic!("tampered: {other:?}"),
    }
    // A flipped byte inside the base64 daticert too.
    let pos = content.find("PD94bWwg").unwrap();
    let mut bytes = signed.clone();
    bytes[head.len() + pos] ^= 0x01;
    assert!(matches!(verify(&bytes, &trust), SignatureStatus::Invalid { .. }));

    // Intact, but signed by a CA we do not trust: UnknownSigner.
    let rogue = resign(&raw, &pki.rogue, "application/pkcs7-signature");
    match verify(&rogue, &trust) {
        SignatureStatus::UnknownSigner { signer } => assert!(signer.contains("pec.rogue.it"), "{signer}"),
        other => panic!("rogue: {other:?}"),
    }
    // The shared samples are not signed by our generated CA either.
    assert!(matches!(
        verify(&sample("05-errore-consegna.eml"), &trust),
        SignatureStatus::UnknownSigner { .. }
    ));

    // Not signed at all.
    let plain = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
    assert_eq!(verify(plain, &trust), SignatureStatus::NotSigned);
    let (_, content, _) = signed_part(&raw);
    let unsigned = format!("From: posta-certificata@pec.test.it\r\nSubject: ACCETTAZIONE: x\r\nMIME-Version: 1.0\r\n{content}");
    assert_eq!(verify(unsigned.as_bytes(), &trust), SignatureStatus::NotSigned);
}

#[test]
fn provider_leaf_alone_is_a_trust_anchor() {
    let pki = pki();
    let trust = TrustStore::from_pem(&pem(&[&pki.provider.cert])).unwrap();
    let signed = resign(&sample("02-accettazione.eml"), &pki.provider, "application/pkcs7-signature");
    assert!(verify(&signed, &trust).is_valid());
    // A bundle with several providers' certificates trusts each of them.
    let both = TrustStore::from_pem(&pem(&[&pki.rogue.cert, &pki.provider.cert])).unwrap();
    assert_eq!(both.len(), 2);
    assert!(verify(&signed, &both).is_valid());
}

#[test]
fn verification_time_is_honoured() {
    let pki = pki();
    let trust = TrustStore::from_pem(&pem(&[&pki.ca.cert])).unwrap();
    let signed = resign(&sample("02-accettazione.eml"), &pki.provider, "application/pkcs7-signature");
    let now = chrono::Utc::now();
    assert!(verify_at(&signed, &trust, now).is_valid());
    // Before the certificate existed: the signer is not trusted then.
    let long_ago = now - chrono::Duration::days(3650);
    assert!(matches!(
        verify_at(&signed, &trust, long_ago),
        SignatureStatus::UnknownSigner { .. }
    ));
}

#[test]
fn openssl_cli_signed_message_verifies_and_md5_is_refused() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let content = dir.path().join("content.txt");
    std::fs::write(&cert, pki.provider.cert.to_pem().unwrap()).unwrap();
    std::fs::write(&key, pki.provider.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let (_, inner, _) = signed_part(&sample("02-accettazione.eml"));
    std::fs::write(&content, inner).unwrap();
    let trust = TrustStore::from_pem(&pem(&[&pki.ca.cert])).unwrap();
    for (md, expect_valid) in [("sha256", true), ("md5", false)] {
        let out = dir.path().join(format!("{md}.eml"));
        let status = Command::new("openssl")
            .args(["smime", "-sign", "-md", md, "-in"])
            .arg(&content)
            .arg("-signer")
            .arg(&cert)
            .arg("-inkey")
            .arg(&key)
            .arg("-out")
            .arg(&out)
            .status()
            .expect("openssl CLI is installed");
        assert!(status.success(), "openssl smime -sign -md {md}");
        let result = verify(&std::fs::read(&out).unwrap(), &trust);
        if expect_valid {
            assert!(result.is_valid(), "{md}: {result:?}");
        } else {
            match result {
                SignatureStatus::Invalid { reason } => assert!(reason.contains("MD5"), "{reason}"),
                other => panic!("{md}: {other:?}"),
            }
        }
    }
}

#[test]
fn broken_signatures_are_invalid_not_panics() {
    let trust = shared_trust();
    let raw = text(&sample("02-accettazione.eml"));
    // Garbage instead of the PKCS#7 blob.
    let start = raw.find("MIIGsgYJ").unwrap();
    let broken = format!("{}AAAAAAAA{}", &raw[..start], &raw[start + 8..]);
    assert!(matches!(verify(broken.as_bytes(), &trust), SignatureStatus::Invalid { .. }));
    // No signature part.
    let cut = raw.find("\r\n--=_pec_outer_3c9\r\nContent-Type: application/pkcs7-signature").unwrap();
    let truncated = &raw[..cut];
    assert!(matches!(verify(truncated.as_bytes(), &trust), SignatureStatus::Invalid { .. }));
    // Unknown protocol.
    let other = raw.replacen("protocol=\"application/pkcs7-signature\"", "protocol=\"application/pgp-signature\"", 1);
    assert!(matches!(verify(other.as_bytes(), &trust), SignatureStatus::Invalid { .. }));
}

#[test]
fn trust_store_errors() {
    assert!(TrustStore::from_pem(b"not a pem").is_err());
    assert!(TrustStore::from_pem(b"").is_err());
    let err = TrustStore::from_pem(b"").unwrap_err().to_string();
    assert!(err.contains("no certificates") || err.contains("PEM"), "{err}");
}
