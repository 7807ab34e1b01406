//! TLS material: the dev CA and its certificates (rcgen on aws-lc-rs), and loading PEM files into
//! a `rustls::ServerConfig` offering HTTP/2 and HTTP/1.1 by ALPN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// The DNS names and addresses in the dev server certificate.
pub const DEV_SERVER_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
const DEV_CA_COMMON_NAME: &str = "Keyfort dev CA";
const DEV_ORGANIZATION: &str = "Keyfort (development only)";
const DEV_CLIENT_COMMON_NAME: &str = "keyfort-dev-client";
const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 1825;

/// A certificate and its private key, both PEM.
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// The CA's subject and key usages. Rebuilt identically when a leaf is reissued from the CA's
/// saved key, so the leaf's issuer name matches the saved CA certificate.
fn dev_ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(DEV_CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, DEV_ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    // An hour of slack for clocks that disagree a little.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// A new self-signed dev CA (ECDSA P-256).
pub fn generate_dev_ca() -> Result<CertAndKey, TlsError> {
    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut params = dev_ca_params();
    set_validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// A server certificate for `localhost`, `127.0.0.1` and `::1` (serverAuth), issued by the dev CA
/// whose private key is `ca_key_pem`.
pub fn issue_dev_server_cert(ca_key_pem: &str) -> Result<CertAndKey, TlsError> {
    let sans: Vec<String> = DEV_SERVER_SANS.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).map_err(TlsError::Generate)?;
    params.distinguished_name = distinguished_name("localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue_leaf(params, ca_key_pem)
}

/// A client certificate (clientAuth), for KMIP clients, issued by the dev CA.
pub fn issue_dev_client_cert(ca_key_pem: &str) -> Result<CertAndKey, TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(DEV_CLIENT_COMMON_NAME);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue_leaf(params, ca_key_pem)
}

fn issue_leaf(mut params: CertificateParams, ca_key_pem: &str) -> Result<CertAndKey, TlsError> {
    set_validity(&mut params, LEAF_VALIDITY_DAYS);
    params.use_authority_key_identifier_extension = true;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(TlsError::Generate)?;
    let issuer = Issuer::new(dev_ca_params(), ca_key);
    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(TlsError::Generate)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// The crypto provider of every TLS endpoint in Keyfort: aws-lc-rs, never `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads a PEM certificate chain (leaf first) and private key into a server configuration that
/// offers `h2` and `http/1.1`.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCert {
            path: cert_file.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_file.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::ReadKey {
        path: key_file.to_path_buf(),
        source,
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|source| TlsError::Config {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts only the CA certificates in `ca_file`.
#[cfg(test)]
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCert {
            path: ca_file.to_path_buf(),
            source,
        })?;
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::Config {
            cert_file: ca_file.to_path_buf(),
            key_file: PathBuf::new(),
            source,
        })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            cert_file: ca_file.to_path_buf(),
            key_file: PathBuf::new(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS material that cannot be generated or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot generate a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("cannot read TLS certificate {}", path.display())]
    ReadCert {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read TLS private key {}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot use TLS certificate {} with key {}", cert_file.display(), key_file.display())]
    Config {
        cert_file: PathBuf,
        key_file: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::server::WebPkiClientVerifier;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    struct Material {
        _dir: tempfile::TempDir,
        ca: PathBuf,
        server_cert: PathBuf,
        server_key: PathBuf,
        client: CertAndKey,
        ca_key: Zeroizing<String>,
    }

    fn material() -> Material {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ca = generate_dev_ca().unwrap_or_else(|e| panic!("{e}"));
        let server = issue_dev_server_cert(&ca.key_pem).unwrap_or_else(|e| panic!("{e}"));
        let client = issue_dev_client_cert(&ca.key_pem).unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, data: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap_or_else(|e| panic!("{e}"));
            p
        };
        Material {
            ca: write("ca.pem", &ca.cert_pem),
            server_cert: write("server.pem", &server.cert_pem),
            server_key: write("server-key.pem", &server.key_pem),
            client,
            ca_key: ca.key_pem,
            _dir: dir,
        }
    }

    /// One TLS handshake over a real socket; returns the negotiated ALPN protocol.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &'static str,
    ) -> Result<Option<Vec<u8>>, std::io::Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(&buf).await?;
            tls.shutdown().await?;
            Ok::<_, std::io::Error>(())
        });
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let server_name = ServerName::try_from(name).map_err(std::io::Error::other)?;
        let mut tls = TlsConnector::from(client).connect(server_name, tcp).await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        server_task.await.map_err(std::io::Error::other)??;
        Ok(alpn)
    }

    #[tokio::test]
    async fn dev_server_cert_verifies_for_every_san() {
        let m = material();
        let server = server_config(&m.server_cert, &m.server_key).unwrap_or_else(|e| panic!("{e}"));
        let client = client_config(&m.ca).unwrap_or_else(|e| panic!("{e}"));
        for name in ["localhost", "127.0.0.1", "::1"] {
            let alpn = handshake(server.clone(), client.clone(), name)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        }
    }

    #[tokio::test]
    async fn other_names_and_other_cas_are_rejected() {
        let m = material();
        let server = server_config(&m.server_cert, &m.server_key).unwrap_or_else(|e| panic!("{e}"));
        let client = client_config(&m.ca).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            handshake(server.clone(), client, "example.com")
                .await
                .is_err()
        );

        let other = material();
        let other_client = client_config(&other.ca).unwrap_or_else(|e| panic!("{e}"));
        assert!(handshake(server, other_client, "localhost").await.is_err());
    }

    #[tokio::test]
    async fn leaf_reissued_from_saved_ca_key_still_chains() {
        let m = material();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let again = issue_dev_server_cert(&m.ca_key).unwrap_or_else(|e| panic!("{e}"));
        let cert = dir.path().join("s.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, &again.cert_pem).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&key, again.key_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let server = server_config(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
        let client = client_config(&m.ca).unwrap_or_else(|e| panic!("{e}"));
        assert!(handshake(server, client, "localhost").await.is_ok());
    }

    #[tokio::test]
    async fn client_cert_is_accepted_for_client_auth() {
        let m = material();
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(&m.ca).unwrap_or_else(|e| panic!("{e}"));
        roots.add(ca).unwrap_or_else(|e| panic!("{e}"));
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider())
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
        let server_certs = CertificateDer::pem_file_iter(&m.server_cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .unwrap_or_else(|e| panic!("{e}"));
        let server_key =
            PrivateKeyDer::from_pem_file(&m.server_key).unwrap_or_else(|e| panic!("{e}"));
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_client_cert_verifier(verifier)
            .with_single_cert(server_certs, server_key)
            .unwrap_or_else(|e| panic!("{e}"));
        let client_cert = CertificateDer::from_pem_slice(m.client.cert_pem.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let client_key = PrivateKeyDer::from_pem_slice(m.client.key_pem.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![client_cert], client_key)
            .unwrap_or_else(|e| panic!("{e}"));
        let result = handshake(Arc::new(server), Arc::new(client), "localhost").await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn missing_and_mismatched_files_give_clear_errors() {
        let m = material();
        let err = server_config(Path::new("/nonexistent/tls.crt"), &m.server_key)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(err, "cannot read TLS certificate /nonexistent/tls.crt");

        // The CA certificate with the server's key: the pair does not match.
        let err = server_config(&m.ca, &m.server_key);
        assert!(
            matches!(err, Err(TlsError::Config { .. })),
            "{:?}",
            err.err()
        );

        let err = server_config(&m.server_key, &m.server_key);
        assert!(
            matches!(err, Err(TlsError::NoCertificate { .. })),
            "{:?}",
            err.err()
        );
    }
}
