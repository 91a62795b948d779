//! TLS configuration (rustls on `ring`) shared by every connection.

use std::path::Path;
use std::sync::Arc;

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
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
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
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| file_err(format!("not a PEM key file: {e}")))?
        .ok_or_else(|| file_err("contains no PEM private key".into()))
}

/// A client configuration trusting the system roots plus `extra_ca`.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
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
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
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
    let ck = rustls::sign::CertifiedKey::from_der(load_certs(cert)?, load_key(key)?, &provider())
        .map_err(|e| TlsError::File { path: format!("{} / {}", cert.display(), key.display()), message: e.to_string() })?;
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
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
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
