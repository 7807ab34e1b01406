//! The KMIP listener: TTLV over mutual TLS (rustls, TLS 1.2 and 1.3). Every connection must
//! present a client certificate that chains to the configured CA; its SHA-256 fingerprint names
//! the caller (`keyfort_core::kmip_clients`). Frames are read with [`crate::ttlv::frame_len`]
//! and bounded before any allocation; handshake, idle and read timeouts and a connection limit
//! keep silent or slow clients from holding resources. Many requests per connection and one
//! connection per request both work.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyfort_core::{CoreError, Keyfort};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::handler::{self, Peer};
use crate::ttlv::{HEADER_LEN, Limits, frame_len};

/// Settings of the listener.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub limits: Limits,
    /// Most connections open at once; more are closed at accept.
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// How long a connection may wait between requests.
    pub idle_timeout: Duration,
    /// How long a started request may take to arrive, and a response to be written.
    pub io_timeout: Duration,
    /// How long a connection's identity is trusted before the next request looks it up again,
    /// so that a client removed or given another role loses its rights on connections it keeps
    /// open (as the core's caller cache does for API keys).
    pub session_recheck: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            io_timeout: Duration::from_secs(30),
            session_recheck: Duration::from_secs(5),
        }
    }
}

/// Serves KMIP on `listener` until `shutdown` completes; open connections are closed then.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    core: Keyfort,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let settings = Arc::new(settings);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "KMIP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "KMIP connection limit reached; closing the connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let core = core.clone();
        let settings = settings.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = connection(tcp, peer, acceptor, core, &settings) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "KMIP connection ended");
                    }
                }
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
    let _ = stop_tx.send(true);
    Ok(())
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    core: Keyfort,
    settings: &ServerSettings,
) -> io::Result<()> {
    let mut stream = tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| timed_out("TLS handshake"))??;
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no client certificate"))?;
    let mut session = identify(&core, &cert, peer).await?;
    let mut identified = tokio::time::Instant::now();
    let mut header = [0u8; HEADER_LEN];
    loop {
        match tokio::time::timeout(settings.idle_timeout, stream.read_exact(&mut header[..1])).await
        {
            Err(_) => return Err(timed_out("idle connection")),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r.map(|_| ())?,
        }
        let request = tokio::time::timeout(settings.io_timeout, async {
            stream.read_exact(&mut header[1..]).await?;
            let len = frame_len(&header)
                .filter(|l| *l <= settings.limits.max_message)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unusable or oversized TTLV frame",
                    )
                })?;
            let mut buf = vec![0u8; len];
            buf[..HEADER_LEN].copy_from_slice(&header);
            stream.read_exact(&mut buf[HEADER_LEN..]).await?;
            Ok::<_, io::Error>(buf)
        })
        .await
        .map_err(|_| timed_out("request read"))??;
        if session.is_some() && identified.elapsed() >= settings.session_recheck {
            session = identify(&core, &cert, peer).await?;
            identified = tokio::time::Instant::now();
        }
        let peer_identity = match &session {
            Some(s) => Peer::Client(s),
            None => Peer::Unregistered,
        };
        let response = handler::handle(&core, peer_identity, &request, &settings.limits).await;
        tokio::time::timeout(settings.io_timeout, async {
            stream.write_all(&response).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| timed_out("response write"))??;
        if session.is_none() {
            // One refusal, then the connection is closed.
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

/// The session of a client certificate; `None` when it is not (or no longer) registered.
async fn identify(
    core: &Keyfort,
    cert: &[u8],
    peer: SocketAddr,
) -> io::Result<Option<keyfort_core::KmipSession>> {
    match core.kmip_session(cert, Some(peer)).await {
        Ok(s) => Ok(Some(s)),
        Err(CoreError::Unauthenticated(reason)) => {
            tracing::info!(%peer, %reason, "KMIP client refused");
            Ok(None)
        }
        Err(CoreError::Forbidden { .. }) => {
            tracing::info!(%peer, "KMIP client refused: the instance's allowedIP policy does not allow its address");
            Ok(None)
        }
        Err(e) => Err(io::Error::other(e)),
    }
}

/// TLS material for the listener that cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate in {}", path.display())]
    Empty { path: PathBuf },
    #[error("unusable KMIP TLS configuration")]
    Config(#[source] rustls::Error),
    #[error("unusable client CA {}", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsSetupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The listener's TLS configuration: the server's certificate chain and key, TLS 1.2 and 1.3
/// with aws-lc-rs, and a client certificate REQUIRED that chains to a CA in `client_ca`.
pub fn tls_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsSetupError::Read {
        path: key_file.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(client_ca)? {
        roots.add(ca).map_err(TlsSetupError::Config)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|source| TlsSetupError::ClientCa {
            path: client_ca.to_path_buf(),
            source,
        })?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsSetupError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsSetupError::Config)?;
    Ok(Arc::new(config))
}
