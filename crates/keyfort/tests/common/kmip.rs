//! A KMIP client over mutual TLS for the end-to-end tests, and TTLV item builders.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use keyfort_kmip::ttlv::{HEADER_LEN, Item, Limits, Tag, Value as V, decode, encode, frame_len};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::Server;

/// A KMIP client over mutual TLS; `call` opens a new connection per message (as vCenter does).
pub struct Kmip {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    pub rt: tokio::runtime::Runtime,
}

pub fn client_config(ca: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

impl Kmip {
    pub fn new(server: &Server, cert_pem: &[u8], key_pem: &[u8]) -> Kmip {
        let ca = server.dev["ca_cert"].as_str().unwrap();
        Kmip {
            addr: server.dev["kmip_addr"].as_str().unwrap().parse().unwrap(),
            tls: client_config(Path::new(ca), cert_pem, key_pem),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    pub fn dev(server: &Server) -> Kmip {
        let cert = std::fs::read(server.dev["client_cert"].as_str().unwrap()).unwrap();
        let key = std::fs::read(server.dev["client_key"].as_str().unwrap()).unwrap();
        Kmip::new(server, &cert, &key)
    }

    /// Sends raw bytes on a new connection; the response message, or `None` if the server
    /// closed the connection (or the handshake failed) without one.
    pub fn raw(&self, bytes: &[u8]) -> Option<Item> {
        self.rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let connector = TlsConnector::from(self.tls.clone());
            let mut tls = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .ok()?;
            tls.write_all(bytes).await.ok()?;
            tls.flush().await.ok()?;
            read_message(&mut tls).await
        })
    }

    pub fn call(&self, message: &Item) -> Item {
        self.raw(&encode(message)).expect("a response message")
    }
}

pub async fn read_message<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Item> {
    let mut header = [0u8; HEADER_LEN];
    s.read_exact(&mut header).await.ok()?;
    let len = frame_len(&header)?;
    let mut buf = vec![0u8; len];
    buf[..HEADER_LEN].copy_from_slice(&header);
    s.read_exact(&mut buf[HEADER_LEN..]).await.ok()?;
    Some(decode(&buf, &Limits::default()).unwrap())
}

/// The Transparent RSA Private Key's Big Integers in PKCS #1 order (n, e, d, p, q, dP, dQ,
/// qInv).
#[allow(dead_code)]
pub const RSA_PRIVATE_COMPONENTS: [Tag; 8] = [
    Tag::MODULUS,
    Tag::PUBLIC_EXPONENT,
    Tag::PRIVATE_EXPONENT,
    Tag::P,
    Tag::Q,
    Tag::PRIME_EXPONENT_P,
    Tag::PRIME_EXPONENT_Q,
    Tag::CRT_COEFFICIENT,
];

pub fn st(tag: Tag, items: Vec<Item>) -> Item {
    Item::new(tag, V::Structure(items))
}

pub fn text(tag: Tag, s: &str) -> Item {
    Item::new(tag, V::TextString(s.to_owned()))
}

pub fn int(tag: Tag, v: i32) -> Item {
    Item::new(tag, V::Integer(v))
}

pub fn en(tag: Tag, v: u32) -> Item {
    Item::new(tag, V::Enumeration(v))
}

/// A Secret Data object (password) holding `material` as an opaque key value.
pub fn secret_data(material: &[u8]) -> Item {
    st(
        Tag::SECRET_DATA,
        vec![
            en(Tag::SECRET_DATA_TYPE, 1),
            st(
                Tag::KEY_BLOCK,
                vec![
                    en(Tag::KEY_FORMAT_TYPE, 2),
                    st(
                        Tag::KEY_VALUE,
                        vec![Item::new(
                            Tag::KEY_MATERIAL,
                            V::ByteString(material.to_vec()),
                        )],
                    ),
                ],
            ),
        ],
    )
}
