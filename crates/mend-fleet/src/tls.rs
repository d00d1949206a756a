//! TLS to etcd: the rustls client made from `[fleet]`'s PEM files (the CA that signs etcd's certificate,
//! the only roots trusted; an optional client certificate for etcd's `--client-cert-auth`; an optional
//! server name checked instead of each endpoint's host). rustls with the `ring` provider, TLS 1.2 and 1.3.
//!
//! The files are read once, when the fleet starts: a file that cannot be read or holds no usable PEM
//! stops mend at start with an error naming the key and the file, not at the first call to etcd.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mend_config::FleetTls;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a TLS file of `[fleet]` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file cannot be read.
    #[error("[fleet] {key} {}: cannot be read", path.display())]
    Read {
        /// The key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what its key needs (no PEM certificate, no PEM private key, a broken PEM section,
    /// a certificate rustls refuses).
    #[error("[fleet] {key} {}: {problem}", path.display())]
    Content {
        /// The key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The client certificate and key do not make an identity (the key is not the certificate's).
    #[error("[fleet] cert_file {} and key_file {}: not a certificate and its key", cert.display(), key.display())]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The TLS provider has no protocol version in common with rustls's safe defaults (a build problem).
    #[error("the TLS provider (ring) cannot make a TLS 1.2 or 1.3 client")]
    Provider(#[source] rustls::Error),
    /// `server_name` is not a DNS name or an IP address.
    #[error("[fleet] server_name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
}

/// What a TLS connection to etcd is made with.
pub(crate) struct TlsClient {
    /// The rustls connector (roots, client identity).
    pub(crate) connector: tokio_rustls::TlsConnector,
    /// The name etcd's certificate must carry instead of the endpoint's host, if set.
    pub(crate) server_name: Option<ServerName<'static>>,
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read { key, path: path.to_path_buf(), source })
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(key, path)?;
    let content = |problem: String| TlsFileError::Content { key, path: path.to_path_buf(), problem };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| content(format!("not valid PEM ({error})")))?;
    if certificates.is_empty() {
        return Err(content("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned()));
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsFileError::Content {
        key: "key_file",
        path: path.to_path_buf(),
        problem: match error {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (PKCS#8, PKCS#1 or SEC1: -----BEGIN PRIVATE KEY-----)".to_owned()
            }
            error => format!("not valid PEM ({error})"),
        },
    })
}

impl TlsClient {
    /// Reads `tls`'s files into a client.
    pub(crate) fn new(tls: &FleetTls) -> Result<Self, TlsFileError> {
        // ring on purpose (aws-lc-rs, rustls's post-quantum default, needs cmake and a long C build); its
        // deprecation only says it offers no post-quantum key exchange.
        #[expect(deprecated, reason = "ring is chosen for its build; see above")]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for (idx, certificate) in certificates("ca_file", &tls.ca_file)?.into_iter().enumerate() {
            roots.add(certificate).map_err(|error| TlsFileError::Content {
                key: "ca_file",
                path: tls.ca_file.clone(),
                problem: format!("certificate {} is not usable as a CA certificate ({error})", idx + 1),
            })?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsFileError::Provider)?
            .with_root_certificates(roots);
        let config = match &tls.identity {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let chain = certificates("cert_file", cert_file)?;
                let key = private_key(key_file)?;
                builder.with_client_auth_cert(chain, key).map_err(|source| TlsFileError::Identity {
                    cert: cert_file.clone(),
                    key: key_file.clone(),
                    source,
                })?
            }
        };
        let server_name = match &tls.server_name {
            None => None,
            Some(name) => Some(
                ServerName::try_from(name.as_str()).map_err(|_| TlsFileError::ServerName(name.clone()))?.to_owned(),
            ),
        };
        Ok(Self { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name })
    }
}
