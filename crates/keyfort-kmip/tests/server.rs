#![allow(clippy::unwrap_used)]
//! The listener in-process on port 0: silent clients are dropped after the handshake or idle
//! timeout, the connection limit holds, a client without a certificate is refused by the
//! handshake, and shutdown stops the listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyfort_core::{CoreConfig, Keyfort, TokenSigner};
use keyfort_kmip::server::{ServerSettings, serve, tls_config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Pki {
    dir: tempfile::TempDir,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test KMIP CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client.signed_by(&client_key, &issuer).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
    std::fs::write(
        dir.path().join("server-key.pem"),
        server_key.serialize_pem(),
    )
    .unwrap();
    Pki {
        dir,
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    pki: Pki,
}

async fn start(settings: ServerSettings) -> Running {
    let pki = pki();
    let d = pki.dir.path();
    let tls = tls_config(
        &d.join("server.pem"),
        &d.join("server-key.pem"),
        &d.join("ca.pem"),
    )
    .unwrap();
    let store = keyfort_store::sqlite::SqliteStore::open(&d.join("db.sqlite"))
        .await
        .unwrap();
    let core = Keyfort::open(
        Arc::new(store),
        CoreConfig::new(Duration::from_secs(60), TokenSigner::generate().unwrap()),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, tls, core, settings, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
        pki,
    }
}

fn quick() -> ServerSettings {
    ServerSettings {
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        io_timeout: Duration::from_millis(300),
        ..ServerSettings::default()
    }
}

/// Waits for the server to close `s`; how long it took.
async fn closed_after<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open"),
        }
    }
}

fn client_tls(pki: &Pki, with_cert: bool) -> Arc<rustls::ClientConfig> {
    client_tls_versions(pki, with_cert, rustls::DEFAULT_VERSIONS)
}

fn client_tls_versions(
    pki: &Pki,
    with_cert: bool,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.dir.path().join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(if with_cert {
        let chain = CertificateDer::pem_slice_iter(pki.client_cert.as_bytes())
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes()).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    })
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_timeouts() {
    let server = start(quick()).await;
    // No ClientHello at all: the handshake timeout.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let waited = closed_after(&mut tcp).await;
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // A completed handshake and then silence: the idle timeout.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_tls(&server.pki, true))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let waited = closed_after(&mut tls).await;
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // Half a frame header, then silence: the read timeout.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_tls(&server.pki, true))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(&[0x42, 0x00, 0x78]).await.unwrap();
    tls.flush().await.unwrap();
    let waited = closed_after(&mut tls).await;
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_by_the_handshake() {
    let server = start(quick()).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let connected = tokio_rustls::TlsConnector::from(client_tls(&server.pki, false))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    if let Ok(mut tls) = connected {
        // TLS 1.3: the refusal arrives after the client's Finished.
        let _ = tls.write_all(&[0x42, 0x00, 0x78, 0x01, 0, 0, 0, 0]).await;
        let mut buf = [0u8; 8];
        let read = tls.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

#[tokio::test]
async fn the_connection_limit_holds_and_shutdown_stops_the_listener() {
    let mut server = start(ServerSettings {
        max_connections: 1,
        handshake_timeout: Duration::from_secs(10),
        ..ServerSettings::default()
    })
    .await;
    let _holder = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    let waited = closed_after(&mut over).await;
    assert!(waited < Duration::from_secs(2), "{waited:?}");

    server.stop.take().map(|s| s.send(()));
    let result = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_get_kmip_answers() {
    let server = start(quick()).await;
    // DiscoverVersions, KMIP 1.1: from a client the server has not registered, the answer is a
    // KMIP refusal (Authentication Not Successful), which proves the TLS session carried TTLV.
    use keyfort_kmip::{Item, Tag, Value};
    let st = |tag, items| Item::new(tag, Value::Structure(items));
    let bytes = keyfort_kmip::encode(&st(
        Tag::REQUEST_MESSAGE,
        vec![
            st(
                Tag::REQUEST_HEADER,
                vec![
                    st(
                        Tag::PROTOCOL_VERSION,
                        vec![
                            Item::new(Tag::PROTOCOL_VERSION_MAJOR, Value::Integer(1)),
                            Item::new(Tag::PROTOCOL_VERSION_MINOR, Value::Integer(1)),
                        ],
                    ),
                    Item::new(Tag::BATCH_COUNT, Value::Integer(1)),
                ],
            ),
            st(
                Tag::BATCH_ITEM,
                vec![Item::new(Tag::OPERATION, Value::Enumeration(0x1E))],
            ),
        ],
    ));
    // Each version twice with one client configuration: the second connection resumes the TLS
    // session (vCenter's connection per operation skips the full handshake) and still carries
    // the client certificate the server identifies the caller by.
    let runs = [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ]
    .into_iter()
    .flat_map(|(version, negotiated)| {
        let config = client_tls_versions(&server.pki, true, &[version]);
        [
            (config.clone(), negotiated, rustls::HandshakeKind::Full),
            (config, negotiated, rustls::HandshakeKind::Resumed),
        ]
    });
    for (config, negotiated, kind) in runs {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(negotiated));
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(kind),
            "{negotiated:?}"
        );
        tls.write_all(&bytes).await.unwrap();
        let mut header = [0u8; 8];
        tls.read_exact(&mut header).await.unwrap();
        let len = keyfort_kmip::frame_len(&header).unwrap();
        let mut message = header.to_vec();
        message.resize(len, 0);
        tls.read_exact(&mut message[8..]).await.unwrap();
        let item = keyfort_kmip::decode(&message, &keyfort_kmip::Limits::default()).unwrap();
        let text = format!("{item:?}");
        assert!(text.contains("ResponseMessage"), "{text}");
        // Result Reason 3: Authentication Not Successful.
        assert!(
            text.contains("Tag(0x42007E ResultReason), value: Enumeration(3)"),
            "{text}"
        );
    }
}
