#![allow(clippy::unwrap_used)]
//! Key Protect KMIP adapters end to end, on the real `keyfort server --dev` binary: an adapter
//! on a root key, a client certificate (signed by the dev CA) registered to it over
//! `/api/v2/kmip_adapters/{id}/certificates`, a KMIP client connecting with that certificate and
//! creating and reading a key, the key listed in `kmip_objects`, and the client refused once its
//! certificate is deleted; such a key is not a Key Protect key (`/api/v2/keys` neither lists,
//! counts nor finds it).

mod common;

use std::path::Path;

use common::kmip::{Kmip, st};
use common::{Server, Value};
use keyfort_kmip::message::Struct;
use keyfort_kmip::ttlv::{Item, Tag, Value as V};
use keyfort_kmip::{Operation, ResultReason, ResultStatus};
use serde_json::json;

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

    /// `HEAD /api/v2/keys`: the status and the `Key-Total` header.
    fn key_total(&self) -> (u16, Option<u64>) {
        self.rt.block_on(async {
            let resp = self
                .http
                .head(format!("{}/api/v2/keys", self.base))
                .bearer_auth(&self.token)
                .header("Bluemix-Instance", &self.instance)
                .send()
                .await
                .unwrap();
            let total = resp
                .headers()
                .get("key-total")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            (resp.status().as_u16(), total)
        })
    }
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
/// Get of `uid` succeeds with a 32-byte key.
fn assert_gets_aes_256(kmip: &Kmip, uid: &str) {
    let (status, _, payload) = outcome(&kmip.call(&request(
        Operation::GET,
        vec![Item::new(
            Tag::UNIQUE_IDENTIFIER,
            V::TextString(uid.to_owned()),
        )],
    )));
    assert_eq!(status, ResultStatus::SUCCESS.0);
    assert_eq!(key_material(&payload).map(|m| m.len()), Some(32));
}

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
    assert_gets_aes_256(&kmip, &uid);

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

/// The ids of a Key Protect key collection.
fn resource_ids(body: &Value) -> Vec<String> {
    body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn adapter_objects_are_not_key_protect_keys() {
    use reqwest::Method;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, tmp.path(), "kmip-adapter-objects", &[]);
    let kp = Kp::new(&server);

    // Two real keys: the adapter's root key and a standard key.
    let mut real = Vec::new();
    for (name, extractable) in [("crk", false), ("standard", true)] {
        let (code, body) = kp.call(
            Method::POST,
            "/api/v2/keys",
            Some(&collection(
                "key",
                json!({"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": extractable}),
            )),
        );
        assert_eq!(code, 201, "{body}");
        real.push(body["resources"][0]["id"].as_str().unwrap().to_owned());
    }
    let (code, body) = kp.call(Method::GET, "/api/v2/keys?totalCount=true", None);
    assert_eq!(code, 200, "{body}");
    let keys_before = body["metadata"]["totalCount"].as_u64().unwrap();
    assert!(keys_before >= 2, "{body}");
    assert_eq!(kp.key_total(), (200, Some(keys_before)));

    // An adapter on the root key, a certificate, and two objects its KMIP client creates (one
    // activated, one pre-active).
    let (code, body) = kp.call(
        Method::POST,
        "/api/v2/kmip_adapters",
        Some(&collection(
            "kmip_adapter",
            json!({"profile": "native_1.0", "profile_data": {"crk_id": real[0]}, "name": "array"}),
        )),
    );
    assert_eq!(code, 201, "{body}");
    let adapter = body["resources"][0]["id"].as_str().unwrap().to_owned();
    let (cert_pem, key_pem) = dev_client_certificate(&data);
    let (code, body) = kp.call(
        Method::POST,
        &format!("/api/v2/kmip_adapters/{adapter}/certificates"),
        Some(&collection(
            "kmip_client_certificate",
            json!({"certificate": cert_pem, "name": "array-node-1"}),
        )),
    );
    assert_eq!(code, 201, "{body}");
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
                    // The name of a real key, for the search below.
                    attr(
                        "Name",
                        V::Structure(vec![
                            Item::new(Tag::NAME_VALUE, V::TextString("standard".to_owned())),
                            Item::new(Tag::NAME_TYPE, V::Enumeration(1)),
                        ]),
                    ),
                ],
            ),
        ],
    );
    let mut objects = Vec::new();
    for _ in 0..2 {
        let (status, reason, payload) = outcome(&kmip.call(&create));
        assert_eq!((status, reason), (ResultStatus::SUCCESS.0, None));
        objects.push(uid_of(&payload));
    }
    let activate = request(
        Operation::ACTIVATE,
        vec![Item::new(
            Tag::UNIQUE_IDENTIFIER,
            V::TextString(objects[0].clone()),
        )],
    );
    let (status, reason, _) = outcome(&kmip.call(&activate));
    assert_eq!((status, reason), (ResultStatus::SUCCESS.0, None));

    // The adapter lists its objects.
    let (code, body) = kp.call(
        Method::GET,
        &format!("/api/v2/kmip_adapters/{adapter}/kmip_objects?totalCount=true"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["totalCount"], 2, "{body}");
    let mut listed = resource_ids(&body);
    listed.sort();
    let mut want = objects.clone();
    want.sort();
    assert_eq!(listed, want);

    // The Key Protect key listing, its count, its paging and its search do not.
    let (code, body) = kp.call(
        Method::GET,
        "/api/v2/keys?totalCount=true&state=0,1,2,3,5",
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["totalCount"], keys_before, "{body}");
    let ids = resource_ids(&body);
    assert_eq!(ids.len() as u64, keys_before);
    assert!(real.iter().all(|k| ids.contains(k)), "{body}");
    assert!(objects.iter().all(|o| !ids.contains(o)), "{body}");
    assert_eq!(kp.key_total(), (200, Some(keys_before)));
    let mut paged = Vec::new();
    for offset in 0..keys_before + 1 {
        let (code, body) = kp.call(
            Method::GET,
            &format!("/api/v2/keys?limit=1&offset={offset}&totalCount=true"),
            None,
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["metadata"]["totalCount"], keys_before, "{body}");
        paged.extend(resource_ids(&body));
    }
    assert_eq!(paged.len() as u64, keys_before);
    assert!(objects.iter().all(|o| !paged.contains(o)));
    for search in [objects[0].clone(), "standard".to_owned()] {
        let (code, body) = kp.call(
            Method::GET,
            &format!("/api/v2/keys?search={search}&totalCount=true"),
            None,
        );
        assert_eq!(code, 200, "{body}");
        let found = resource_ids(&body);
        assert!(objects.iter().all(|o| !found.contains(o)), "{body}");
    }

    // By id, an object answers as an unknown key would, whatever the request.
    let unknown = "0b9f6a8e-7a4c-4f55-9d2e-1f0c2b3a4d5e";
    for id in [objects[0].as_str(), objects[1].as_str(), unknown] {
        for (method, path, body) in [
            (Method::GET, format!("/api/v2/keys/{id}"), None),
            (Method::GET, format!("/api/v2/keys/{id}/metadata"), None),
            (Method::GET, format!("/api/v2/keys/{id}/versions"), None),
            (Method::GET, format!("/api/v2/keys/{id}/policies"), None),
            (
                Method::GET,
                format!("/api/v2/keys/{id}/registrations"),
                None,
            ),
            (
                Method::POST,
                format!("/api/v2/keys/{id}/actions/wrap"),
                Some(json!({})),
            ),
            (
                Method::POST,
                format!("/api/v2/keys/{id}/actions/disable"),
                None,
            ),
            (
                Method::POST,
                format!("/api/v2/keys/{id}/actions/rotate"),
                None,
            ),
            (
                Method::POST,
                format!("/api/v2/keys/{id}/aliases/an-alias"),
                None,
            ),
            (
                Method::PATCH,
                format!("/api/v2/keys/{id}"),
                Some(json!({"keyRingID": "default"})),
            ),
            (
                Method::DELETE,
                format!("/api/v2/keys/{id}?force=true"),
                None,
            ),
        ] {
            let (code, answer) = kp.call(method.clone(), &path, body.as_ref());
            assert_eq!(code, 404, "{method} {path}: {answer}");
            assert_eq!(
                answer["resources"][0]["reasons"][0]["code"], "KEY_NOT_FOUND_ERR",
                "{method} {path}: {answer}"
            );
        }
    }
    // Nor is it a root key for another adapter.
    let (code, body) = kp.call(
        Method::POST,
        "/api/v2/kmip_adapters",
        Some(&collection(
            "kmip_adapter",
            json!({"profile": "native_1.0", "profile_data": {"crk_id": objects[0]}, "name": "other"}),
        )),
    );
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        body["resources"][0]["reasons"][0]["code"], "NATIVE_CRK_ID_NOT_FOUND_ERR",
        "{body}"
    );

    // Nothing changed: the adapter's client still reaches its objects, active and usable.
    for object in &objects {
        assert_gets_aes_256(&kmip, object);
    }
    let (code, body) = kp.call(
        Method::GET,
        &format!(
            "/api/v2/kmip_adapters/{adapter}/kmip_objects/{}",
            objects[0]
        ),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["resources"][0]["state"], 2, "{body}");
}
