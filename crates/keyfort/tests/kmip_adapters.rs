#![allow(clippy::unwrap_used)]
//! Key Protect KMIP adapters end to end, on the real `keyfort server --dev` binary: an adapter
//! on a root key, a client certificate (signed by the dev CA) registered to it over
//! `/api/v2/kmip_adapters/{id}/certificates`, a KMIP client connecting with that certificate and
//! creating and reading a key, the key listed in `kmip_objects`, and the client refused once its
//! certificate is deleted.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::{Server, Value};
use keyfort_kmip::message::Struct;
use keyfort_kmip::ttlv::{HEADER_LEN, Item, Limits, Tag, Value as V, decode, encode, frame_len};
use keyfort_kmip::{Operation, ResultReason, ResultStatus};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// The dev CA's names (`crates/keyfort/src/tls.rs`).
const DEV_CA_COMMON_NAME: &str = "Keyfort dev CA";
const DEV_ORGANIZATION: &str = "Keyfort (development only)";

/// The Key Protect door as the SDKs call it: bearer token and `Bluemix-Instance`.
struct Kp {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    token: String,
    instance: String,
}

impl Kp {
    fn new(server: &Server) -> Kp {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pem = std::fs::read(server.dev["ca_cert"].as_str().unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .build()
            .unwrap();
        let base = server.addr();
        let api_key = server.dev["api_key"].as_str().unwrap().to_owned();
        let token: Value = rt.block_on(async {
            http.post(format!("{base}/identity/token"))
                .form(&[
                    ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                    ("apikey", api_key.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        Kp {
            rt,
            http,
            base,
            token: token["access_token"].as_str().unwrap().to_owned(),
            instance: server.dev["instance_id"].as_str().unwrap().to_owned(),
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .header("Bluemix-Instance", &self.instance);
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }
}

/// A KMIP client over mutual TLS, a new connection per message.
struct Kmip {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    rt: tokio::runtime::Runtime,
}

impl Kmip {
    fn new(server: &Server, cert_pem: &[u8], key_pem: &[u8]) -> Kmip {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let ca = Path::new(server.dev["ca_cert"].as_str().unwrap());
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        Kmip {
            addr: server.dev["kmip_addr"].as_str().unwrap().parse().unwrap(),
            tls: Arc::new(tls),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn call(&self, message: &Item) -> Item {
        self.rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let mut tls = TlsConnector::from(self.tls.clone())
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            tls.write_all(&encode(message)).await.unwrap();
            tls.flush().await.unwrap();
            let mut header = [0u8; HEADER_LEN];
            tls.read_exact(&mut header).await.unwrap();
            let len = frame_len(&header).unwrap();
            let mut buf = vec![0u8; len];
            buf[..HEADER_LEN].copy_from_slice(&header);
            tls.read_exact(&mut buf[HEADER_LEN..]).await.unwrap();
            decode(&buf, &Limits::default()).unwrap()
        })
    }
}

fn st(tag: Tag, items: Vec<Item>) -> Item {
    Item::new(tag, V::Structure(items))
}

/// A KMIP 1.4 request with one batch item.
fn request(op: Operation, payload: Vec<Item>) -> Item {
    let header = st(
        Tag::REQUEST_HEADER,
        vec![
            st(
                Tag::PROTOCOL_VERSION,
                vec![
                    Item::new(Tag::PROTOCOL_VERSION_MAJOR, V::Integer(1)),
                    Item::new(Tag::PROTOCOL_VERSION_MINOR, V::Integer(4)),
                ],
            ),
            Item::new(Tag::BATCH_COUNT, V::Integer(1)),
        ],
    );
    let item = st(
        Tag::BATCH_ITEM,
        vec![
            Item::new(Tag::OPERATION, V::Enumeration(op.0)),
            st(Tag::REQUEST_PAYLOAD, payload),
        ],
    );
    st(Tag::REQUEST_MESSAGE, vec![header, item])
}

fn attr(name: &str, value: V) -> Item {
    st(
        Tag::ATTRIBUTE,
        vec![
            Item::new(Tag::ATTRIBUTE_NAME, V::TextString(name.to_owned())),
            Item::new(Tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

/// The result status and reason of the only batch item, and its payload.
fn outcome(resp: &Item) -> (u32, Option<u32>, Vec<Item>) {
    let msg = Struct::of(resp).unwrap();
    let items: Vec<&Item> = msg.all(Tag::BATCH_ITEM).collect();
    assert_eq!(items.len(), 1, "{resp:?}");
    let s = Struct::of(items[0]).unwrap();
    let payload = match s.get(Tag::RESPONSE_PAYLOAD).map(|p| &p.value) {
        Some(V::Structure(c)) => c.clone(),
        _ => Vec::new(),
    };
    (
        s.enumeration(Tag::RESULT_STATUS).unwrap(),
        s.opt_enumeration(Tag::RESULT_REASON).unwrap(),
        payload,
    )
}

fn uid_of(payload: &[Item]) -> String {
    payload
        .iter()
        .find_map(|i| match &i.value {
            V::TextString(s) if i.tag == Tag::UNIQUE_IDENTIFIER => Some(s.clone()),
            _ => None,
        })
        .unwrap()
}

/// The first Key Material byte string anywhere under `items`.
fn key_material(items: &[Item]) -> Option<Vec<u8>> {
    items.iter().find_map(|i| match &i.value {
        V::ByteString(b) if i.tag == Tag::KEY_MATERIAL => Some(b.clone()),
        V::Structure(c) => key_material(c),
        _ => None,
    })
}

/// A client certificate (and its key, PEM) signed by the server's dev CA.
fn dev_client_certificate(data: &Path) -> (String, String) {
    let ca_key_pem = std::fs::read_to_string(data.join("tls/ca-key.pem")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::OrganizationName, DEV_ORGANIZATION);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, DEV_CA_COMMON_NAME);
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "storage array");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn collection(kind: &str, resource: Value) -> Value {
    json!({"metadata": {"collectionType": format!("application/vnd.ibm.kms.{kind}+json"), "collectionTotal": 1}, "resources": [resource]})
}

#[test]
fn adapter_certificate_connects_creates_lists_and_is_revoked() {
    use reqwest::Method;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, tmp.path(), "kmip-adapters", &[]);
    let kp = Kp::new(&server);

    // A root key and an adapter on it.
    let (code, body) = kp.call(
        Method::POST,
        "/api/v2/keys",
        Some(&collection(
            "key",
            json!({"type": "application/vnd.ibm.kms.key+json", "name": "crk", "extractable": false}),
        )),
    );
    assert_eq!(code, 201, "{body}");
    let crk = body["resources"][0]["id"].as_str().unwrap().to_owned();
    let (code, body) = kp.call(
        Method::POST,
        "/api/v2/kmip_adapters",
        Some(&collection(
            "kmip_adapter",
            json!({"profile": "native_1.0", "profile_data": {"crk_id": crk}, "name": "array"}),
        )),
    );
    assert_eq!(code, 201, "{body}");
    let adapter = body["resources"][0]["id"].as_str().unwrap().to_owned();

    // A client certificate: before it is registered, the KMIP server refuses its holder.
    let (cert_pem, key_pem) = dev_client_certificate(&data);
    let kmip = Kmip::new(&server, cert_pem.as_bytes(), key_pem.as_bytes());
    let create = request(
        Operation::CREATE,
        vec![
            Item::new(Tag::OBJECT_TYPE, V::Enumeration(2)),
            st(
                Tag::TEMPLATE_ATTRIBUTE,
                vec![
                    attr("Cryptographic Algorithm", V::Enumeration(3)),
                    attr("Cryptographic Length", V::Integer(256)),
                    attr("Cryptographic Usage Mask", V::Integer(12)),
                ],
            ),
        ],
    );
    let (status, reason, _) = outcome(&kmip.call(&create));
    assert_eq!(status, ResultStatus::OPERATION_FAILED.0);
    assert_eq!(reason, Some(ResultReason::AUTHENTICATION_NOT_SUCCESSFUL.0));

    let (code, body) = kp.call(
        Method::POST,
        &format!("/api/v2/kmip_adapters/{adapter}/certificates"),
        Some(&collection(
            "kmip_client_certificate",
            json!({"certificate": cert_pem, "name": "array-node-1"}),
        )),
    );
    assert_eq!(code, 201, "{body}");
    let cert = body["resources"][0]["id"].as_str().unwrap().to_owned();

    // Registered: the client creates a key over KMIP and reads it back.
    let (status, reason, payload) = outcome(&kmip.call(&create));
    assert_eq!((status, reason), (ResultStatus::SUCCESS.0, None));
    let uid = uid_of(&payload);
    let (status, _, payload) = outcome(&kmip.call(&request(
        Operation::GET,
        vec![Item::new(
            Tag::UNIQUE_IDENTIFIER,
            V::TextString(uid.clone()),
        )],
    )));
    assert_eq!(status, ResultStatus::SUCCESS.0);
    assert_eq!(key_material(&payload).map(|m| m.len()), Some(32));

    // A key of the instance outside the adapter does not exist for its client: neither Get nor
    // the crypto operations (which take keys from the key cache) reach it.
    let (code, body) = kp.call(
        Method::POST,
        "/api/v2/keys",
        Some(&collection(
            "key",
            json!({"type": "application/vnd.ibm.kms.key+json", "name": "outside", "extractable": true}),
        )),
    );
    assert_eq!(code, 201, "{body}");
    let outside = body["resources"][0]["id"].as_str().unwrap().to_owned();
    for op in [
        request(
            Operation::GET,
            vec![Item::new(
                Tag::UNIQUE_IDENTIFIER,
                V::TextString(outside.clone()),
            )],
        ),
        request(
            Operation::ENCRYPT,
            vec![
                Item::new(Tag::UNIQUE_IDENTIFIER, V::TextString(outside.clone())),
                Item::new(Tag::DATA, V::ByteString(vec![1; 16])),
            ],
        ),
    ] {
        let (status, reason, _) = outcome(&kmip.call(&op));
        assert_eq!(status, ResultStatus::OPERATION_FAILED.0);
        assert_eq!(reason, Some(ResultReason::ITEM_NOT_FOUND.0));
    }

    // The key is the adapter's object, created by that certificate.
    let (code, body) = kp.call(
        Method::GET,
        &format!("/api/v2/kmip_adapters/{adapter}/kmip_objects?totalCount=true"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["totalCount"], 1, "{body}");
    let object = &body["resources"][0];
    assert_eq!(object["id"], uid.as_str());
    assert_eq!(object["kmip_object_type"], 2);
    // KMIP Create without an activation date: Pre-Active.
    assert_eq!(object["state"], 1);
    assert_eq!(object["created_by_kmip_client_cert_id"], cert.as_str());
    let (code, _) = kp.call(
        Method::GET,
        &format!("/api/v2/kmip_adapters/{adapter}/kmip_objects/{uid}"),
        None,
    );
    assert_eq!(code, 200);

    // Deleting the certificate refuses the client's next connection.
    let (code, body) = kp.call(
        Method::DELETE,
        &format!("/api/v2/kmip_adapters/{adapter}/certificates/{cert}"),
        None,
    );
    assert_eq!(code, 204, "{body}");
    let (status, reason, _) = outcome(&kmip.call(&create));
    assert_eq!(status, ResultStatus::OPERATION_FAILED.0);
    assert_eq!(reason, Some(ResultReason::AUTHENTICATION_NOT_SUCCESSFUL.0));

    // Deleting the object destroys it (KMIP state Destroyed); then the adapter may go.
    let (code, body) = kp.call(
        Method::DELETE,
        &format!("/api/v2/kmip_adapters/{adapter}/kmip_objects/{uid}"),
        None,
    );
    assert_eq!(code, 204, "{body}");
    let (_, body) = kp.call(
        Method::GET,
        &format!("/api/v2/kmip_adapters/{adapter}/kmip_objects/{uid}"),
        None,
    );
    assert_eq!(body["resources"][0]["state"], 5, "{body}");
    let (code, body) = kp.call(
        Method::DELETE,
        &format!("/api/v2/kmip_adapters/{adapter}"),
        None,
    );
    assert_eq!(code, 204, "{body}");
}
