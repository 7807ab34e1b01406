//! The node-to-node channel: an unsealed node hands an instance's master key to its peers, and a
//! seal requested on one node seals the others (ARCHITECTURE "Several nodes").
//!
//! Every connection is TLS 1.3 (rustls, aws-lc-rs) with certificates on both sides that must
//! chain to the cluster CA (`[cluster] ca_file`); nothing else is accepted, in either direction.
//! A connection carries one request and one answer, each a frame: a 4-byte big-endian length
//! (at most [`MAX_FRAME`]) and a JSON object.
//!
//! - `unsealed {instance, version, key}`: "I unsealed this instance; here is its current master
//!   key". Sent to every peer when an instance becomes unsealed here, or its master key version
//!   changes (a rotation). The receiver unseals only if the version and the key's check value are
//!   the ones stored for the instance.
//! - `fetch {instance}`: "hand me its master key if you hold it". Sent by a starting node for
//!   every initialized instance it has not unsealed.
//! - `sealed {instance}`: an administrator sealed the instance on the sender; the receiver seals
//!   it too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroizing;

use keyfort_core::Keyfort;

/// Largest frame either side reads.
const MAX_FRAME: usize = 16 * 1024;
/// Connecting, the TLS handshake, and one exchange, each at most this long.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often this node looks for instances it unsealed (or whose key it rotated) since.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// `[cluster]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Where this node accepts its peers.
    pub listen: SocketAddr,
    /// The cluster CA (PEM): every node's certificate must chain to it.
    pub ca_file: PathBuf,
    /// This node's certificate chain (PEM), valid for TLS server and client authentication, with
    /// the names or addresses its peers dial.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The other nodes, `host:port`.
    #[serde(default)]
    pub peers: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Unsealed {
        instance: String,
        version: u32,
        key: Zeroizing<String>,
    },
    Fetch {
        instance: String,
    },
    Sealed {
        instance: String,
    },
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Answer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<Zeroizing<String>>,
}

/// The channel's TLS configurations and peers.
#[derive(Clone)]
pub struct Peers {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    peers: Vec<String>,
}

impl Peers {
    /// Loads the CA, certificate and key; binds the listener.
    pub async fn open(section: &ClusterSection) -> Result<(Peers, TcpListener), PeerError> {
        let roots = Arc::new(roots(&section.ca_file)?);
        let certs = certs(&section.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&section.key_file).map_err(|e| PeerError::Pem {
            path: section.key_file.clone(),
            detail: e.to_string(),
        })?;
        let provider = crate::tls::provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PeerError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PeerError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let listener =
            TcpListener::bind(section.listen)
                .await
                .map_err(|source| PeerError::Bind {
                    addr: section.listen,
                    source,
                })?;
        Ok((
            Peers {
                server: Arc::new(server),
                client: Arc::new(client),
                peers: section.peers.clone(),
            },
            listener,
        ))
    }

    /// Serves peers, hands unsealed instances to them and propagates seals, forever.
    pub fn spawn(self, listener: TcpListener, core: Keyfort) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.clone());
        let serving = core.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, from)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, core) = (acceptor.clone(), serving.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_one(acceptor, tcp, &core).await {
                        tracing::warn!(peer = %from, error = %e, "node-to-node request refused");
                    }
                });
            }
        });
        let seals = core.requested_seals();
        tokio::spawn(self.clone().forward_seals(seals));
        tokio::spawn(self.watch_unseals(core));
    }

    /// Asks the peers for the master key of every initialized instance not unsealed here (a node
    /// starting after its peers were unsealed).
    pub async fn fetch_all(&self, core: &Keyfort) {
        let Ok(ids) = core.initialized_instance_ids().await else {
            return;
        };
        let here: Vec<String> = core.unsealed_here().into_iter().map(|(id, _)| id).collect();
        for id in ids.into_iter().filter(|id| !here.contains(id)) {
            for peer in &self.peers {
                let answer = self
                    .ask(
                        peer,
                        &Request::Fetch {
                            instance: id.clone(),
                        },
                    )
                    .await;
                let (Some(version), Some(key)) = (
                    answer.as_ref().ok().and_then(|a| a.version),
                    answer.ok().and_then(|a| a.key),
                ) else {
                    continue;
                };
                let Ok(bytes) = hex::decode(key.as_bytes()).map(Zeroizing::new) else {
                    continue;
                };
                match core.import_master_key(&id, version, &bytes).await {
                    Ok(_) => {
                        tracing::info!(instance = %id, peer = %peer, "instance unsealed from a peer");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(instance = %id, peer = %peer, error = %e, "a peer's master key was refused")
                    }
                }
            }
        }
    }

    async fn forward_seals(self, mut seals: tokio::sync::broadcast::Receiver<String>) {
        loop {
            let instance = match seals.recv().await {
                Ok(id) => id,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "seals not forwarded to peers");
                    continue;
                }
                Err(_) => return,
            };
            for peer in &self.peers {
                let request = Request::Sealed {
                    instance: instance.clone(),
                };
                if let Err(e) = self.ask(peer, &request).await {
                    tracing::warn!(peer = %peer, instance = %instance, error = %e, "cannot tell a peer to seal");
                }
            }
        }
    }

    async fn watch_unseals(self, core: Keyfort) {
        let mut known: Vec<(String, u32)> = core.unsealed_here();
        // What this node holds at start it got from its own unseal (HSM, dev key) or from a
        // peer: offer it once.
        let mut fresh = known.clone();
        loop {
            for (instance, version) in fresh {
                let Some((v, key)) = core.export_master_key(&instance) else {
                    continue;
                };
                if v != version {
                    continue;
                }
                let request = Request::Unsealed {
                    instance: instance.clone(),
                    version,
                    key: Zeroizing::new(hex::encode(key.as_slice())),
                };
                for peer in &self.peers {
                    match self.ask(peer, &request).await {
                        Ok(a) if a.ok => {}
                        Ok(_) => {
                            tracing::warn!(peer = %peer, instance = %instance, "a peer refused the master key")
                        }
                        Err(e) => {
                            tracing::warn!(peer = %peer, instance = %instance, error = %e, "cannot hand the master key to a peer")
                        }
                    }
                }
            }
            tokio::time::sleep(WATCH_EVERY).await;
            let now = core.unsealed_here();
            fresh = now.iter().filter(|p| !known.contains(p)).cloned().collect();
            known = now;
        }
    }

    async fn ask(&self, peer: &str, request: &Request) -> Result<Answer, PeerError> {
        let host = peer
            .rsplit_once(':')
            .map_or(peer, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| PeerError::Tls(format!("invalid peer name {host}")))?;
        let exchange = async {
            let tcp = TcpStream::connect(peer).await.map_err(PeerError::Io)?;
            let connector = tokio_rustls::TlsConnector::from(self.client.clone());
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| PeerError::Tls(e.to_string()))?;
            write_frame(&mut tls, request).await?;
            let answer = read_frame(&mut tls).await?;
            let _ = tls.shutdown().await;
            Ok(answer)
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| PeerError::Timeout)?
    }
}

async fn serve_one(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    core: &Keyfort,
) -> Result<(), PeerError> {
    let exchange = async {
        // The handshake fails unless the peer's certificate chains to the cluster CA.
        let mut tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let request: Request = read_frame(&mut tls).await?;
        let answer = handle(request, core).await;
        write_frame(&mut tls, &answer).await?;
        let _ = tls.shutdown().await;
        Ok(())
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| PeerError::Timeout)?
}

async fn handle(request: Request, core: &Keyfort) -> Answer {
    match request {
        Request::Unsealed {
            instance,
            version,
            key,
        } => {
            let Ok(bytes) = hex::decode(key.as_bytes()).map(Zeroizing::new) else {
                return Answer::default();
            };
            match core.import_master_key(&instance, version, &bytes).await {
                Ok(loaded) => {
                    if loaded {
                        tracing::info!(instance = %instance, "instance unsealed by a peer");
                    }
                    Answer {
                        ok: true,
                        ..Answer::default()
                    }
                }
                Err(e) => {
                    tracing::warn!(instance = %instance, error = %e, "master key from a peer refused");
                    Answer::default()
                }
            }
        }
        Request::Fetch { instance } => match core.export_master_key(&instance) {
            Some((version, key)) => Answer {
                ok: true,
                version: Some(version),
                key: Some(Zeroizing::new(hex::encode(key.as_slice()))),
            },
            None => Answer::default(),
        },
        Request::Sealed { instance } => {
            core.seal_here(&instance);
            Answer {
                ok: true,
                ..Answer::default()
            }
        }
    }
}

async fn write_frame<T: Serialize>(
    io: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> Result<(), PeerError> {
    let body = Zeroizing::new(serde_json::to_vec(value).map_err(|_| PeerError::Frame)?);
    let len = u32::try_from(body.len()).map_err(|_| PeerError::Frame)?;
    if body.len() > MAX_FRAME {
        return Err(PeerError::Frame);
    }
    io.write_all(&len.to_be_bytes())
        .await
        .map_err(PeerError::Io)?;
    io.write_all(&body).await.map_err(PeerError::Io)?;
    io.flush().await.map_err(PeerError::Io)
}

async fn read_frame<T: for<'de> Deserialize<'de>>(
    io: &mut (impl AsyncRead + Unpin),
) -> Result<T, PeerError> {
    let mut len = [0_u8; 4];
    io.read_exact(&mut len).await.map_err(PeerError::Io)?;
    let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| PeerError::Frame)?;
    if len > MAX_FRAME {
        return Err(PeerError::Frame);
    }
    let mut body = Zeroizing::new(vec![0_u8; len]);
    io.read_exact(&mut body).await.map_err(PeerError::Io)?;
    serde_json::from_slice(&body).map_err(|_| PeerError::Frame)
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PeerError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PeerError::Pem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PeerError::Pem {
            path: path.to_path_buf(),
            detail: "no certificate".to_owned(),
        });
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<RootCertStore, PeerError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|e| PeerError::Tls(e.to_string()))?;
    }
    Ok(roots)
}

/// The node-to-node channel cannot start, or one exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("cannot read {}: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("node-to-node TLS: {0}")]
    Tls(String),
    #[error("cannot listen for peers on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("node-to-node I/O")]
    Io(#[source] std::io::Error),
    #[error("malformed or oversized node-to-node frame")]
    Frame,
    #[error("node-to-node exchange timed out")]
    Timeout,
}
