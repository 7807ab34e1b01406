//! A real GREP11 server for the tests: an in-process core on SQLite, the gRPC router behind a
//! TLS accept loop on a loopback port, and a tonic client generated from our proto.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use keyfort_core::{Caller, CoreConfig, DevSetup, Keyfort, TokenSigner};
use keyfort_grpc::proto::crypto_client::CryptoClient;
use keyfort_grpc::proto::{self, attribute_value::OneAttr};
use keyfort_store::sqlite::SqliteStore;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub type Client = CryptoClient<InterceptedService<Channel, Auth>>;

pub struct Server {
    pub dir: tempfile::TempDir,
    pub core: Keyfort,
    pub admin: Arc<Caller>,
    pub token: String,
    pub instance_id: String,
    pub port: u16,
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Adds the bearer token and, when set, the instance header to every call.
#[derive(Clone)]
pub struct Auth {
    token: Option<String>,
    instance: Option<String>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        if let Some(i) = &self.instance {
            req.metadata_mut()
                .insert("bluemix-instance", i.parse().unwrap());
        }
        Ok(req)
    }
}

pub async fn open_core(dir: &std::path::Path, reseal_pause: Duration) -> Keyfort {
    let store = SqliteStore::open(&dir.join("keyfort.db")).await.unwrap();
    let signer = TokenSigner::load_or_create(&dir.join("token.key")).unwrap();
    let mut config = CoreConfig::new(Duration::from_secs(3600), signer);
    config.reseal_batch_size = 1;
    config.reseal_pause = reseal_pause;
    Keyfort::open(Arc::new(store), config).await.unwrap()
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(Duration::ZERO).await
    }

    /// Starts a server whose master key re-seal job pauses `reseal_pause` between keys.
    pub async fn start_with(reseal_pause: Duration) -> Server {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let core = open_core(dir.path(), reseal_pause).await;
        let boot = core
            .dev_bootstrap(DevSetup {
                master_key_file: dir.path().join("dev.key"),
                previous_api_key: None,
            })
            .await
            .unwrap();
        let token = core.exchange_api_key(&boot.api_key).await.unwrap().token;
        let admin = core.authenticate(&token).await.unwrap();

        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca_pem = cert.cert.pem();
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = keyfort_grpc::router(core.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // As the binary's accept loop does: no Nagle delay on small writes.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // As the binary's accept loop does: writes coalesced up to each flush.
                    let tls = keyfort_grpc::coalesce::Coalesced::new(tls);
                    let service = TowerToHyperService::new(app);
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Server {
            dir,
            core,
            admin,
            token,
            instance_id: boot.instance_id,
            port,
            ca_pem,
            task,
        }
    }

    pub async fn channel(&self) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://localhost:{}", self.port))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap()
    }

    /// A client with the administrator's token and no instance header.
    pub async fn client(&self) -> Client {
        self.client_as(Some(self.token.clone()), None).await
    }

    pub async fn client_as(&self, token: Option<String>, instance: Option<String>) -> Client {
        CryptoClient::with_interceptor(self.channel().await, Auth { token, instance })
    }
}

// ---- request helpers ------------------------------------------------------------------------

pub fn mech(m: u64) -> Option<proto::Mechanism> {
    Some(proto::Mechanism {
        mechanism: m,
        parameter: None,
    })
}

pub fn mech_b(m: u64, p: &[u8]) -> Option<proto::Mechanism> {
    Some(proto::Mechanism {
        mechanism: m,
        parameter: Some(proto::mechanism::Parameter::ParameterB(p.to_vec())),
    })
}

pub fn pss(m: u64, hash: u64, mgf: i32, salt: u64) -> Option<proto::Mechanism> {
    Some(proto::Mechanism {
        mechanism: m,
        parameter: Some(proto::mechanism::Parameter::RsapssParameter(
            proto::RsapssParm {
                hash_mech: hash,
                mgf,
                salt_byte_count: salt,
            },
        )),
    })
}

pub fn oaep(hash: u64, mgf: i32) -> Option<proto::Mechanism> {
    Some(proto::Mechanism {
        mechanism: 0x9,
        parameter: Some(proto::mechanism::Parameter::RsaoaepParameter(
            proto::RsaoaepParm {
                hash_mech: hash,
                mgf,
                encoding_parm_type: 0,
                encoding_parm: Vec::new(),
            },
        )),
    })
}

pub fn b(v: &[u8]) -> proto::AttributeValue {
    proto::AttributeValue {
        one_attr: Some(OneAttr::AttributeB(v.to_vec())),
    }
}

pub fn tf(v: bool) -> proto::AttributeValue {
    proto::AttributeValue {
        one_attr: Some(OneAttr::AttributeTf(v)),
    }
}

pub fn int(v: i64) -> proto::AttributeValue {
    proto::AttributeValue {
        one_attr: Some(OneAttr::AttributeI(v)),
    }
}

pub fn template(
    items: &[(u64, proto::AttributeValue)],
) -> std::collections::HashMap<u64, proto::AttributeValue> {
    items.iter().cloned().collect()
}

/// The current-generation `KeyBlob` form of a raw blob.
pub fn kb(raw: &[u8]) -> Option<proto::KeyBlob> {
    Some(proto::KeyBlob {
        key_blobs: vec![raw.to_vec()],
        ..Default::default()
    })
}

/// The `CK_RV` of a failed call (and checks the status shape: one Grep11Error detail, message
/// naming the code).
pub fn ckr<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> u64 {
    let status = r.expect_err("the call should have failed");
    let e = keyfort_grpc::grep11_error(&status)
        .unwrap_or_else(|| panic!("no Grep11Error detail in {status:?}"));
    assert!(status.message().starts_with("CKR_"), "{status:?}");
    e.code
}
