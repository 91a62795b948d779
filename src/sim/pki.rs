//! The simulator's throw-away PKI: a CA and a provider signing certificate,
//! generated at start with the openssl crate. The CA's PEM is what pecgate
//! gets as `pec.trust_store`, exactly like AgID's list in production.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Name, X509};

/// A certificate and its key.
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// The simulated provider's CA and signing identity.
pub struct Pki {
    pub ca: Identity,
    pub signer: Identity,
}

fn name(o: &str, cn: &str) -> Result<X509Name, ErrorStack> {
    let mut n = X509Name::builder()?;
    n.append_entry_by_text("C", "IT")?;
    n.append_entry_by_text("O", o)?;
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

/// A certificate valid from yesterday for ten years (RSA 2048, SHA-256: what
/// real providers use), self-signed when `issuer` is `None`.
fn issue(cn: &str, issuer: Option<&Identity>, server_san: Option<&str>) -> Result<Identity, ErrorStack> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    let subject = name("pecgate simulated PEC provider", cn)?;
    b.set_subject_name(&subject)?;
    let now = chrono::Utc::now().timestamp();
    let (from, until) = (Asn1Time::from_unix(now - 86_400)?, Asn1Time::from_unix(now + 86_400 * 3650)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    b.set_pubkey(&key)?;
    match issuer {
        None => {
            b.set_issuer_name(&subject)?;
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
            b.sign(&key, MessageDigest::sha256())?;
        }
        Some(ca) => {
            b.set_issuer_name(ca.cert.subject_name())?;
            b.append_extension(BasicConstraints::new().build()?)?;
            let mut ku = KeyUsage::new();
            ku.digital_signature().non_repudiation();
            if server_san.is_some() {
                ku.key_encipherment();
            }
            b.append_extension(ku.build()?)?;
            let mut eku = ExtendedKeyUsage::new();
            eku.email_protection();
            if server_san.is_some() {
                eku.server_auth();
            }
            b.append_extension(eku.build()?)?;
            let mut san = SubjectAlternativeName::new();
            match server_san {
                Some(ip) => san.ip(ip),
                None => san.email(cn),
            };
            let san = san.build(&b.x509v3_context(Some(&ca.cert), None))?;
            b.append_extension(san)?;
            b.sign(&ca.key, MessageDigest::sha256())?;
        }
    }
    Ok(Identity { cert: b.build(), key })
}

impl Pki {
    /// A fresh CA and a signer named after the provider's certified address.
    pub fn generate(signer_address: &str) -> Result<Pki, ErrorStack> {
        let ca = issue("pecgate simulator CA", None, None)?;
        let signer = issue(signer_address, Some(&ca), None)?;
        Ok(Pki { ca, signer })
    }

    pub fn ca_pem(&self) -> Result<Vec<u8>, ErrorStack> {
        self.ca.cert.to_pem()
    }

    /// Detached CMS signature over `content` (base64, 76 columns, CRLF).
    pub fn sign_detached(&self, content: &[u8]) -> Result<String, ErrorStack> {
        let extra: Stack<X509> = Stack::new()?;
        let p7 = Pkcs7::sign(
            &self.signer.cert,
            &self.signer.key,
            &extra,
            content,
            Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY,
        )?;
        Ok(base64_lines(&p7.to_der()?))
    }
}

/// PEM files of a TLS server identity.
pub struct ServerCert {
    /// The CA to give clients.
    pub ca: Vec<u8>,
    /// Leaf then CA.
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
}

/// A TLS server certificate for an IP address (e.g. 127.0.0.1), issued by a
/// fresh CA. The demo's listeners use it; clients are given the CA file.
pub fn server_cert_for_ip(ip: &str) -> Result<ServerCert, ErrorStack> {
    let ca = issue("pecgate demo CA", None, None)?;
    let leaf = issue(ip, Some(&ca), Some(ip))?;
    let mut chain = leaf.cert.to_pem()?;
    chain.extend(ca.cert.to_pem()?);
    Ok(ServerCert { ca: ca.cert.to_pem()?, chain, key: leaf.key.private_key_to_pem_pkcs8()? })
}

/// Base64 in 76-column lines joined by CRLF (RFC 2045).
pub fn base64_lines(bytes: &[u8]) -> String {
    let b64 = openssl::base64::encode_block(bytes);
    b64.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Errors keeping the PKI on disk.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("generating or reading certificates: {0}")]
    Openssl(#[from] ErrorStack),
}

impl Pki {
    /// The PKI kept in `dir` (`ca.pem`, `ca-key.pem`, `signer.pem`,
    /// `signer-key.pem`), generated on first use. Keeping it lets the
    /// simulator restart (a "provider outage" in tests) without changing
    /// the CA the gateway already trusts.
    pub fn load_or_generate(dir: &std::path::Path, signer_address: &str) -> Result<Pki, PkiError> {
        let io = |path: std::path::PathBuf| move |source| PkiError::Io { path, source };
        let files = ["ca.pem", "ca-key.pem", "signer.pem", "signer-key.pem"].map(|f| dir.join(f));
        if files.iter().all(|f| f.exists()) {
            let read = |i: usize| std::fs::read(&files[i]).map_err(io(files[i].clone()));
            let ident = |c: Vec<u8>, k: Vec<u8>| -> Result<Identity, PkiError> {
                Ok(Identity { cert: X509::from_pem(&c)?, key: PKey::private_key_from_pem(&k)? })
            };
            return Ok(Pki { ca: ident(read(0)?, read(1)?)?, signer: ident(read(2)?, read(3)?)? });
        }
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let pki = Pki::generate(signer_address)?;
        let contents = [
            pki.ca.cert.to_pem()?,
            pki.ca.key.private_key_to_pem_pkcs8()?,
            pki.signer.cert.to_pem()?,
            pki.signer.key.private_key_to_pem_pkcs8()?,
        ];
        for (f, c) in files.iter().zip(contents) {
            std::fs::write(f, c).map_err(io(f.clone()))?;
        }
        Ok(pki)
    }
}
