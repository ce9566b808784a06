//! TLS for the doors: loads the configured PEM certificate and key into a
//! rustls server config (ring provider), and makes development certificates
//! (`esq certs dev`: a local CA and a server certificate it signs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

/// Installs ring as the process's one crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server TLS config both doors use, or `None` when TLS is not configured.
pub fn server_config(tls: &TlsConfig) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Ok(None);
    };
    install_crypto_provider();
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| TlsError::Config(format!("certificate and key do not fit: {err}")))?;
    Ok(Some(Arc::new(config)))
}

/// The PEM certificates in `path` (leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |message: String| TlsError::File {
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|err| file_error(format!("cannot read certificates: {err}")))?
        .collect::<Result<_, _>>()
        .map_err(|err| file_error(format!("not a PEM certificate: {err}")))?;
    if certs.is_empty() {
        return Err(file_error("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| TlsError::File {
        path: path.to_path_buf(),
        message: format!("not a PEM private key: {err}"),
    })
}

/// Files written by [`make_dev_certs`].
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Writes a development CA (`ca.crt`) and a server certificate for
/// `localhost` / `127.0.0.1` / `::1` signed by it (`server.crt`,
/// `server.key`) into `dir`. Never for production.
pub fn make_dev_certs(dir: &Path) -> Result<DevCerts, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let fail = |what: &str, err: rcgen::Error| TlsError::Config(format!("{what}: {err}"));

    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", e))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "esq development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| fail("CA certificate", e))?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(|e| fail("server key", e))?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(|e| fail("server", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "esq development server");
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .map_err(|e| fail("server certificate", e))?;

    std::fs::create_dir_all(dir).map_err(|err| TlsError::File {
        path: dir.to_path_buf(),
        message: err.to_string(),
    })?;
    let files = DevCerts {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    write_file(&files.ca_cert, &ca_cert.pem(), false)?;
    write_file(&files.server_cert, &server_cert.pem(), false)?;
    write_file(&files.server_key, &server_key.serialize_pem(), true)?;
    Ok(files)
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    let fail = |err: std::io::Error| TlsError::File {
        path: path.to_path_buf(),
        message: err.to_string(),
    };
    std::fs::write(path, contents).map_err(fail)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cert: &Path, key: &Path) -> TlsConfig {
        TlsConfig {
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
            required: true,
        }
    }

    #[test]
    fn dev_certificates_load_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = make_dev_certs(dir.path()).expect("dev certs");
        assert!(
            server_config(&config(&files.server_cert, &files.server_key))
                .expect("loads")
                .is_some()
        );

        let missing = dir.path().join("missing.crt");
        let error = server_config(&config(&missing, &files.server_key))
            .expect_err("missing file")
            .to_string();
        assert!(error.contains("missing.crt"), "{error}");

        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let error = server_config(&config(&garbage, &files.server_key))
            .expect_err("no certificate")
            .to_string();
        assert!(error.contains("garbage.crt"), "{error}");

        // The CA's certificate with the server's key: refused, not served.
        let error = server_config(&config(&files.ca_cert, &files.server_key))
            .expect_err("mismatched key")
            .to_string();
        assert!(error.contains("do not fit"), "{error}");
    }
}
