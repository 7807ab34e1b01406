//! The KMIP door of `keyfort server`: the `[kmip]` settings, the listener's TLS material, and
//! the dev client certificate registered to the dev instance.
//!
//! ```toml
//! kmip_addr = "0.0.0.0:5696"
//! [kmip]
//! enabled = true                         # default: on with --dev, off otherwise
//! client_ca_file = "/etc/keyfort/kmip-clients-ca.pem"   # required outside --dev
//! cert_file = "/etc/keyfort/tls/kmip.pem"   # default: [tls] cert_file / key_file
//! key_file = "/etc/keyfort/tls/kmip-key.pem"
//! max_connections = 1024
//! idle_timeout_secs = 120
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keyfort_core::Keyfort;
use keyfort_kmip::server::{self, ServerSettings, TlsSetupError};
use serde::Deserialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::dev::DevTlsFiles;

/// `[kmip]` as written in the config file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmipSection {
    pub enabled: Option<bool>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub idle_timeout_secs: Option<u64>,
}

/// The KMIP listener cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmipError {
    #[error("[kmip] needs {0} outside --dev")]
    Missing(&'static str),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot listen for KMIP on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the dev client certificate {}", path.display())]
    DevCert { path: PathBuf },
    #[error("cannot register the dev KMIP client")]
    Core(#[from] keyfort_core::CoreError),
}

/// Starts the KMIP listener if enabled; returns its bound address and task.
pub async fn start(
    config: &Config,
    dev_files: Option<&DevTlsFiles>,
    core: Keyfort,
    stop: watch::Receiver<bool>,
) -> Result<Option<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)>, KmipError> {
    let section = &config.kmip;
    if !section.enabled.unwrap_or(config.dev) {
        return Ok(None);
    }
    let (cert, key, ca) = match dev_files {
        Some(f) => (
            section
                .cert_file
                .clone()
                .unwrap_or_else(|| f.server_cert.clone()),
            section
                .key_file
                .clone()
                .unwrap_or_else(|| f.server_key.clone()),
            section
                .client_ca_file
                .clone()
                .unwrap_or_else(|| f.ca_cert.clone()),
        ),
        None => {
            let tls = config.tls.as_ref();
            (
                section
                    .cert_file
                    .clone()
                    .or_else(|| tls.map(|t| t.cert_file.clone()))
                    .ok_or(KmipError::Missing("cert_file"))?,
                section
                    .key_file
                    .clone()
                    .or_else(|| tls.map(|t| t.key_file.clone()))
                    .ok_or(KmipError::Missing("key_file"))?,
                section
                    .client_ca_file
                    .clone()
                    .ok_or(KmipError::Missing("client_ca_file"))?,
            )
        }
    };
    let tls = server::tls_config(&cert, &key, &ca)?;
    let listener = tokio::net::TcpListener::bind(config.kmip_addr)
        .await
        .map_err(|source| KmipError::Bind {
            addr: config.kmip_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| KmipError::Bind {
        addr: config.kmip_addr,
        source,
    })?;
    let mut settings = ServerSettings::default();
    if let Some(n) = section.max_connections {
        settings.max_connections = n.max(1);
    }
    if let Some(s) = section.idle_timeout_secs {
        settings.idle_timeout = Duration::from_secs(s.max(1));
    }
    tracing::info!(%addr, "keyfort listening (KMIP, mutual TLS)");
    let task = tokio::spawn(server::serve(listener, tls, core, settings, stopped(stop)));
    Ok(Some((addr, task)))
}

/// Registers the dev client certificate (clientAuth) to the dev instance, as Manager.
pub async fn register_dev_client(
    core: &Keyfort,
    files: &DevTlsFiles,
    instance_id: &str,
) -> Result<(), KmipError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der =
        CertificateDer::from_pem_file(&files.client_cert).map_err(|_| KmipError::DevCert {
            path: files.client_cert.clone(),
        })?;
    let client = core
        .register_dev_kmip_client(der.as_ref(), instance_id)
        .await?;
    tracing::info!(fingerprint = %client.fingerprint, "dev KMIP client registered");
    Ok(())
}

/// Completes when `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
