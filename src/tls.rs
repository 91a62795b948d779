//! TLS configuration (rustls on `ring`) shared by every connection.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |message: String| TlsError::File { path: path.display().to_string(), message };
    let bytes = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err("contains no PEM certificate".into()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let file_err = |message: String| TlsError::File { path: path.display().to_string(), message };
    let bytes = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
    // The first PKCS#8, PKCS#1 or SEC1 key, as rustls-pemfile's private_key did.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => file_err("contains no PEM private key".into()),
        e => file_err(format!("not a PEM key file: {e}")),
    })
}

/// A client configuration trusting the system roots plus `extra_ca`.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with_identity(extra_ca, None)
}

/// A client certificate chain and its key, checked to belong together
/// (what [`client_config_with_identity`] presents).
pub fn client_identity(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::sign::CertifiedKey>, rustls::Error> {
    Ok(Arc::new(rustls::sign::CertifiedKey::from_der(certs, key, &provider())?))
}

/// [`client_config`] that presents `identity` to a server that asks for a
/// client certificate (PostgreSQL's `cert` authentication).
pub fn client_config_with_identity(
    extra_ca: Option<&Path>,
    identity: Option<Arc<rustls::sign::CertifiedKey>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    // Missing or partly unreadable system roots are not fatal: the provider's
    // CA may come from `ca_file`.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = extra_ca {
        for cert in load_certs(ca)? {
            roots.add(cert)?;
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let cfg = match identity {
        Some(id) => builder.with_client_cert_resolver(Arc::new(Identity(id))),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The one client certificate, whatever CAs the server names.
#[derive(Debug)]
struct Identity(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Identity {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client configuration that accepts exactly the server certificate in
/// `cert` (its first, end-entity, certificate) whatever name it is for:
/// the command line talking to its own daemon's HTTPS listener on this
/// host, which presents the `[tls]` certificate made for the public name.
pub fn client_config_pinned(cert: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let pinned = load_certs(cert)?.into_iter().next().ok_or_else(|| TlsError::File {
        path: cert.display().to_string(),
        message: "contains no PEM certificate".into(),
    })?;
    let verifier = Arc::new(Pinned { cert: pinned, provider: provider() });
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the server's certificate is not the configured [tls] cert".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The DNS names (and IP addresses, as text) the first certificate in
/// `cert` is for: its subject alternative names, else its common name.
pub fn certificate_names(cert: &Path) -> Result<Vec<String>, TlsError> {
    let pem =
        std::fs::read(cert).map_err(|e| TlsError::File { path: cert.display().to_string(), message: e.to_string() })?;
    let x = openssl::x509::X509::from_pem(&pem)
        .map_err(|e| TlsError::File { path: cert.display().to_string(), message: e.to_string() })?;
    let mut names: Vec<String> = Vec::new();
    if let Some(sans) = x.subject_alt_names() {
        for n in sans.iter() {
            if let Some(d) = n.dnsname() {
                names.push(d.to_ascii_lowercase());
            } else if let Some(ip) = n.ipaddress() {
                match ip.len() {
                    4 => names.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()),
                    16 => {
                        let b: [u8; 16] = ip.try_into().unwrap_or([0; 16]);
                        names.push(std::net::Ipv6Addr::from(b).to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    if names.is_empty() {
        for e in x.subject_name().entries_by_nid(openssl::nid::Nid::COMMONNAME) {
            if let Ok(s) = e.data().to_string() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// Does the certificate name `pattern` (`*.example.it` wildcards: one
/// label) cover `host`?
pub fn name_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host.split_once('.').is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

/// A server configuration from a certificate chain and key (PEM files).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    Ok(Arc::new(cfg))
}

/// The server certificate and key, replaceable while running (SIGHUP):
/// every listener's [`ServerConfig`] resolves through it, so handshakes
/// after a [`ReloadableCert::reload`] present the new certificate while
/// connections already established keep theirs.
#[derive(Debug)]
pub struct ReloadableCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

fn certified_key(cert: &Path, key: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let ck = rustls::sign::CertifiedKey::from_der(load_certs(cert)?, load_key(key)?, &provider()).map_err(|e| {
        TlsError::File { path: format!("{} / {}", cert.display(), key.display()), message: e.to_string() }
    })?;
    Ok(Arc::new(ck))
}

impl ReloadableCert {
    /// Load (and check: the key must match the certificate) `cert` and `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadableCert>, TlsError> {
        Ok(Arc::new(ReloadableCert { current: std::sync::RwLock::new(certified_key(cert, key)?) }))
    }

    /// Replace the certificate and key; on any error the old pair stays.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let ck = certified_key(cert, key)?;
        match self.current.write() {
            Ok(mut g) => *g = ck,
            Err(poisoned) => *poisoned.into_inner() = ck,
        }
        Ok(())
    }

    /// A server configuration presenting whatever pair is current.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        self.server_config_alpn(&[])
    }

    /// [`ReloadableCert::server_config`] offering these ALPN protocols
    /// (the HTTP listener: `h2`, `http/1.1`).
    pub fn server_config_alpn(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: TlsError) -> String {
        match e {
            TlsError::File { message, .. } => message,
            other => panic!("not a file error: {other}"),
        }
    }

    /// The PEM forms an operator may hand us load, and each wrong file says
    /// what is wrong with it.
    #[test]
    fn pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
        let pkcs1 =
            openssl::pkey::PKey::private_key_from_pem(&c.key).unwrap().rsa().unwrap().private_key_to_pem().unwrap();
        assert!(String::from_utf8_lossy(&pkcs1).contains("BEGIN RSA PRIVATE KEY"));
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let chain = write("chain.pem", &c.chain);
        let pkcs8 = write("key.pem", &c.key);
        let pkcs1 = write("rsa-key.pem", &pkcs1);
        // Text around the PEM blocks (as `openssl x509 -text` leaves) is skipped.
        let noisy = write("noisy.pem", &[b"Certificate:\n  Data: ...\n".as_slice(), &c.chain].concat());
        let empty = write("empty.pem", b"");
        let broken = write("broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n");

        assert_eq!(load_certs(&chain).unwrap().len(), 2);
        assert_eq!(load_certs(&noisy).unwrap().len(), 2);
        assert!(matches!(load_key(&pkcs8).unwrap(), PrivateKeyDer::Pkcs8(_)));
        assert!(matches!(load_key(&pkcs1).unwrap(), PrivateKeyDer::Pkcs1(_)));
        ReloadableCert::load(&chain, &pkcs8).unwrap();
        ReloadableCert::load(&chain, &pkcs1).unwrap();
        server_config(&chain, &pkcs8).unwrap();
        client_config(Some(&chain)).unwrap();

        assert_eq!(message(load_certs(&pkcs8).unwrap_err()), "contains no PEM certificate");
        assert_eq!(message(load_certs(&empty).unwrap_err()), "contains no PEM certificate");
        assert_eq!(message(load_key(&chain).unwrap_err()), "contains no PEM private key");
        assert_eq!(message(load_key(&empty).unwrap_err()), "contains no PEM private key");
        assert!(message(load_certs(&broken).unwrap_err()).starts_with("not a PEM certificate file: "));
        assert!(message(load_key(&dir.path().join("missing.pem")).unwrap_err()).contains("No such file"));
        // A key that does not match the certificate is refused.
        let other = crate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
        let other_key = write("other-key.pem", &other.key);
        assert!(ReloadableCert::load(&chain, &other_key).is_err());
    }
}
