#![allow(clippy::unwrap_used)]
//! The KMIP door's refusals end to end, on the real `keyfort server --dev` binary over mutual
//! TLS: what a key's Cryptographic Usage Mask, Extractable and Sensitive attributes forbid, what
//! each client role may not do (every item of a batch included), that a client removed or
//! demoted while its connection stays open loses its rights on that connection at once, and
//! that oversized or hostile input gets a KMIP error without effect.

mod common;

use std::path::Path;

use common::Server;
use common::kmip::{Kmip, en, int, read_message, secret_data, st, text};
use keyfort_kmip::message::Struct;
use keyfort_kmip::ttlv::{Item, Tag, Value as V, encode};
use keyfort_kmip::{Operation, ResultReason, ResultStatus};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;

/// The dev CA's names (`crates/keyfort/src/tls.rs`).
const DEV_CA_COMMON_NAME: &str = "Keyfort dev CA";
const DEV_ORGANIZATION: &str = "Keyfort (development only)";

// Cryptographic Usage Mask bits (KMIP 1.4 §9.1.3.3.1).
const SIGN: i32 = 0x01;
const VERIFY: i32 = 0x02;
const ENCRYPT: i32 = 0x04;
const DECRYPT: i32 = 0x08;
const WRAP_KEY: i32 = 0x10;
const MAC_GENERATE: i32 = 0x80;
const MAC_VERIFY: i32 = 0x100;

/// A request message in `version` with one batch item per `(operation, payload)`.
fn message(version: (i32, i32), items: Vec<(Operation, Vec<Item>)>) -> Item {
    let mut children = vec![st(
        Tag::REQUEST_HEADER,
        vec![
            st(
                Tag::PROTOCOL_VERSION,
                vec![
                    int(Tag::PROTOCOL_VERSION_MAJOR, version.0),
                    int(Tag::PROTOCOL_VERSION_MINOR, version.1),
                ],
            ),
            int(Tag::BATCH_COUNT, i32::try_from(items.len()).unwrap()),
        ],
    )];
    for (op, payload) in items {
        children.push(st(
            Tag::BATCH_ITEM,
            vec![en(Tag::OPERATION, op.0), st(Tag::REQUEST_PAYLOAD, payload)],
        ));
    }
    st(Tag::REQUEST_MESSAGE, children)
}

/// `(status, reason, payload)` of each batch item of a response.
fn outcomes(resp: &Item) -> Vec<(u32, Option<u32>, Vec<Item>)> {
    Struct::of(resp)
        .unwrap()
        .all(Tag::BATCH_ITEM)
        .map(|item| {
            let s = Struct::of(item).unwrap();
            let payload = match s.get(Tag::RESPONSE_PAYLOAD).map(|p| &p.value) {
                Some(V::Structure(c)) => c.clone(),
                _ => Vec::new(),
            };
            (
                s.enumeration(Tag::RESULT_STATUS).unwrap(),
                s.opt_enumeration(Tag::RESULT_REASON).unwrap(),
                payload,
            )
        })
        .collect()
}

/// A client in one protocol version, one message per connection.
struct Client {
    kmip: Kmip,
    version: (i32, i32),
}

impl Client {
    fn call(&self, op: Operation, payload: Vec<Item>) -> (u32, Option<u32>, Vec<Item>) {
        let resp = self.kmip.call(&message(self.version, vec![(op, payload)]));
        let mut all = outcomes(&resp);
        assert_eq!(all.len(), 1, "{resp:?}");
        all.pop().unwrap()
    }

    fn ok(&self, op: Operation, payload: Vec<Item>) -> Vec<Item> {
        let (status, reason, payload) = self.call(op, payload);
        assert_eq!(
            (status, reason),
            (ResultStatus::SUCCESS.0, None),
            "{op:?} in {:?}",
            self.version
        );
        payload
    }

    fn fails(&self, op: Operation, payload: Vec<Item>) -> u32 {
        let (status, reason, payload) = self.call(op, payload);
        assert_eq!(
            status,
            ResultStatus::OPERATION_FAILED.0,
            "{op:?} in {:?} should fail: {payload:?}",
            self.version
        );
        reason.unwrap()
    }

    /// The template of attributes in this version's encoding; each is (name, value).
    fn template(&self, attributes: &[(&str, V)]) -> Item {
        if self.version.0 >= 2 {
            st(
                Tag::ATTRIBUTES,
                attributes
                    .iter()
                    .map(|(name, value)| Item::new(tag_of(name), value.clone()))
                    .collect(),
            )
        } else {
            st(
                Tag::TEMPLATE_ATTRIBUTE,
                attributes.iter().map(|(n, v)| attr(n, v.clone())).collect(),
            )
        }
    }

    /// Creates a symmetric key of `algorithm` with `mask` and extra attributes, and activates it.
    fn key(&self, algorithm: u32, bits: i32, mask: i32, extra: &[(&str, V)]) -> String {
        let mut attributes = vec![
            ("Cryptographic Algorithm", V::Enumeration(algorithm)),
            ("Cryptographic Length", V::Integer(bits)),
            ("Cryptographic Usage Mask", V::Integer(mask)),
        ];
        attributes.extend(extra.iter().cloned());
        let id = uid_of(&self.ok(
            Operation::CREATE,
            vec![en(Tag::OBJECT_TYPE, 2), self.template(&attributes)],
        ));
        self.ok(Operation::ACTIVATE, vec![uid(&id)]);
        id
    }

    /// An active RSA-2048 key pair; (private, public).
    fn rsa_pair(&self, private_mask: i32, public_mask: i32) -> (String, String) {
        let template = |tag: Tag, mask: i32| {
            let mut t = self.template(&[
                ("Cryptographic Algorithm", V::Enumeration(4)),
                ("Cryptographic Length", V::Integer(2048)),
                ("Cryptographic Usage Mask", V::Integer(mask)),
            ]);
            t.tag = tag;
            t
        };
        let (private_tag, public_tag) = if self.version.0 >= 2 {
            (Tag::PRIVATE_KEY_ATTRIBUTES, Tag::PUBLIC_KEY_ATTRIBUTES)
        } else {
            (
                Tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
                Tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
            )
        };
        let p = self.ok(
            Operation::CREATE_KEY_PAIR,
            vec![
                template(private_tag, private_mask),
                template(public_tag, public_mask),
            ],
        );
        let s = Struct {
            tag: Tag::RESPONSE_PAYLOAD,
            items: &p,
        };
        let private = s
            .text(Tag::PRIVATE_KEY_UNIQUE_IDENTIFIER)
            .unwrap()
            .to_owned();
        let public = s
            .text(Tag::PUBLIC_KEY_UNIQUE_IDENTIFIER)
            .unwrap()
            .to_owned();
        self.ok(Operation::ACTIVATE, vec![uid(&private)]);
        self.ok(Operation::ACTIVATE, vec![uid(&public)]);
        (private, public)
    }
}

fn tag_of(name: &str) -> Tag {
    match name {
        "Cryptographic Algorithm" => Tag::CRYPTOGRAPHIC_ALGORITHM,
        "Cryptographic Length" => Tag::CRYPTOGRAPHIC_LENGTH,
        "Cryptographic Usage Mask" => Tag::CRYPTOGRAPHIC_USAGE_MASK,
        "Extractable" => Tag::EXTRACTABLE,
        "Sensitive" => Tag::SENSITIVE,
        other => panic!("no tag for {other}"),
    }
}

fn attr(name: &str, value: V) -> Item {
    st(
        Tag::ATTRIBUTE,
        vec![
            text(Tag::ATTRIBUTE_NAME, name),
            Item::new(Tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

fn uid(s: &str) -> Item {
    text(Tag::UNIQUE_IDENTIFIER, s)
}

fn data(bytes: &[u8]) -> Item {
    Item::new(Tag::DATA, V::ByteString(bytes.to_vec()))
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

fn wrapping_spec(kek: &str) -> Item {
    st(
        Tag::KEY_WRAPPING_SPECIFICATION,
        vec![
            en(Tag::WRAPPING_METHOD, 1),
            st(
                Tag::ENCRYPTION_KEY_INFORMATION,
                vec![
                    uid(kek),
                    st(
                        Tag::CRYPTOGRAPHIC_PARAMETERS,
                        vec![en(Tag::BLOCK_CIPHER_MODE, 0x0D)],
                    ),
                ],
            ),
        ],
    )
}

/// The Key Material of a Get response, whatever the object type.
fn material(payload: &[Item]) -> V {
    let s = Struct {
        tag: Tag::RESPONSE_PAYLOAD,
        items: payload,
    };
    let object = [Tag::SYMMETRIC_KEY, Tag::PRIVATE_KEY, Tag::PUBLIC_KEY]
        .into_iter()
        .find_map(|t| s.child(t).unwrap())
        .unwrap();
    let block = object.child(Tag::KEY_BLOCK).unwrap().unwrap();
    match &block.get(Tag::KEY_VALUE).unwrap().value {
        V::Structure(_) => block
            .child(Tag::KEY_VALUE)
            .unwrap()
            .unwrap()
            .get(Tag::KEY_MATERIAL)
            .unwrap()
            .value
            .clone(),
        wrapped => wrapped.clone(),
    }
}

/// A client certificate signed by the dev CA: (certificate PEM, key PEM, PEM file).
fn dev_signed_certificate(tmp: &Path, name: &str) -> (String, String, std::path::PathBuf) {
    let ca_key_pem = std::fs::read_to_string(tmp.join("data/tls/ca-key.pem")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, DEV_ORGANIZATION);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEV_CA_COMMON_NAME);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_owned());
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let file = tmp.join(format!("{name}.pem"));
    std::fs::write(&file, cert.pem()).unwrap();
    (cert.pem(), key.serialize_pem(), file)
}

/// A client registered with `role` on the dev instance; (client, fingerprint).
fn client_with_role(server: &Server, tmp: &Path, name: &str, role: &str) -> (Client, String) {
    let instance = server.dev["instance_id"].as_str().unwrap().to_owned();
    let (cert, key, file) = dev_signed_certificate(tmp, name);
    let added = server.json(&[
        "kmip",
        "client",
        "add",
        "--cert",
        file.to_str().unwrap(),
        "--instance",
        &instance,
        "--role",
        role,
    ]);
    assert_eq!(added["role"], role, "{added}");
    let client = Client {
        kmip: Kmip::new(server, cert.as_bytes(), key.as_bytes()),
        version: (1, 4),
    };
    (client, added["fingerprint"].as_str().unwrap().to_owned())
}

#[test]
fn the_usage_mask_limits_what_a_key_may_do() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-mask", &[]);
    for version in [(1, 4), (2, 1)] {
        let c = Client {
            kmip: Kmip::dev(&server),
            version,
        };
        let refused = if version.0 >= 2 {
            ResultReason::INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK.0
        } else {
            ResultReason::INVALID_FIELD.0
        };

        // An AES key that may only decrypt: Encrypt is refused, Decrypt is not.
        let decrypt_only = c.key(3, 256, DECRYPT, &[]);
        let both = c.key(3, 256, ENCRYPT | DECRYPT, &[]);
        assert_eq!(
            c.fails(
                Operation::ENCRYPT,
                vec![uid(&decrypt_only), data(b"secret")]
            ),
            refused
        );
        let p = c.ok(Operation::ENCRYPT, vec![uid(&both), data(b"secret")]);
        let s = Struct {
            tag: Tag::RESPONSE_PAYLOAD,
            items: &p,
        };
        let ciphertext = s.bytes(Tag::DATA).unwrap().to_vec();
        let iv = s.bytes(Tag::IV_COUNTER_NONCE).unwrap().to_vec();
        let mut decrypt = vec![
            Item::new(Tag::DATA, V::ByteString(ciphertext)),
            Item::new(Tag::IV_COUNTER_NONCE, V::ByteString(iv)),
        ];
        if let Some(tag) = s.opt_bytes(Tag::AUTHENTICATED_ENCRYPTION_TAG).unwrap() {
            decrypt.push(Item::new(
                Tag::AUTHENTICATED_ENCRYPTION_TAG,
                V::ByteString(tag.to_vec()),
            ));
        }
        let with = |id: &str| {
            let mut p = vec![uid(id)];
            p.extend(decrypt.iter().cloned());
            p
        };
        c.ok(Operation::DECRYPT, with(&both));
        // An encrypt-only key does not decrypt.
        let encrypt_only = c.key(3, 256, ENCRYPT, &[]);
        assert_eq!(c.fails(Operation::DECRYPT, with(&encrypt_only)), refused);

        // MAC: an HMAC key without MAC Generate, and an AES key (no MAC bits) used as one.
        let verify_only = c.key(9, 256, MAC_VERIFY, &[]);
        assert_eq!(
            c.fails(Operation::MAC, vec![uid(&verify_only), data(b"m")]),
            refused
        );
        assert_eq!(
            c.fails(
                Operation::MAC,
                vec![
                    uid(&both),
                    data(b"m"),
                    st(
                        Tag::CRYPTOGRAPHIC_PARAMETERS,
                        vec![en(Tag::CRYPTOGRAPHIC_ALGORITHM, 9)],
                    ),
                ],
            ),
            refused
        );
        // A mask naming none of the key's possible uses limits nothing: PyKMIP registers with
        // a mask of 0, and creates HMAC keys with Encrypt | Decrypt.
        let unmasked = c.key(3, 256, 0, &[]);
        c.ok(Operation::ENCRYPT, vec![uid(&unmasked), data(b"secret")]);
        let pykmip_hmac = c.key(9, 256, ENCRYPT | DECRYPT, &[]);
        c.ok(Operation::MAC, vec![uid(&pykmip_hmac), data(b"m")]);
        let mac_key = c.key(9, 256, MAC_GENERATE, &[]);
        let p = c.ok(Operation::MAC, vec![uid(&mac_key), data(b"m")]);
        let mac = Struct {
            tag: Tag::RESPONSE_PAYLOAD,
            items: &p,
        }
        .bytes(Tag::MAC_DATA)
        .unwrap()
        .to_vec();
        let mac_verify = |id: &str| {
            vec![
                uid(id),
                data(b"m"),
                Item::new(Tag::MAC_DATA, V::ByteString(mac.clone())),
            ]
        };
        assert_eq!(
            c.fails(Operation::MAC_VERIFY, mac_verify(&mac_key)),
            refused
        );

        // Sign and verify with keys that may, then with a private key that may only decrypt
        // and a public key that may only encrypt.
        let (private, public) = c.rsa_pair(SIGN, VERIFY);
        let p = c.ok(Operation::SIGN, vec![uid(&private), data(b"doc")]);
        let signature = Struct {
            tag: Tag::RESPONSE_PAYLOAD,
            items: &p,
        }
        .bytes(Tag::SIGNATURE_DATA)
        .unwrap()
        .to_vec();
        let verify = |id: &str| {
            vec![
                uid(id),
                data(b"doc"),
                Item::new(Tag::SIGNATURE_DATA, V::ByteString(signature.clone())),
            ]
        };
        c.ok(Operation::SIGNATURE_VERIFY, verify(&public));
        let (private, public) = c.rsa_pair(DECRYPT, ENCRYPT);
        assert_eq!(
            c.fails(Operation::SIGN, vec![uid(&private), data(b"doc")]),
            refused
        );
        assert_eq!(
            c.fails(Operation::SIGNATURE_VERIFY, verify(&public)),
            refused
        );

        // Get wrapped with a key that may not wrap keys; with one that may, it works.
        let dek = c.key(3, 128, ENCRYPT | DECRYPT, &[]);
        assert_eq!(
            c.fails(Operation::GET, vec![uid(&dek), wrapping_spec(&both)]),
            refused
        );
        let kek = c.key(3, 256, WRAP_KEY, &[]);
        c.ok(Operation::GET, vec![uid(&dek), wrapping_spec(&kek)]);
        // A public key, even one that may wrap keys, is no AES key wrapping key.
        let (_, public) = c.rsa_pair(SIGN, VERIFY | WRAP_KEY);
        assert_eq!(
            c.fails(Operation::GET, vec![uid(&dek), wrapping_spec(&public)]),
            ResultReason::INVALID_FIELD.0
        );
    }
}

#[test]
fn non_extractable_and_sensitive_keys_do_not_leave_in_the_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-extract", &[]);
    for version in [(1, 4), (2, 1)] {
        let c = Client {
            kmip: Kmip::dev(&server),
            version,
        };
        let kek = c.key(3, 256, WRAP_KEY, &[]);

        // Extractable false: neither in the clear nor wrapped, nor by Export.
        let kept = c.key(
            3,
            256,
            ENCRYPT | DECRYPT,
            &[("Extractable", V::Boolean(false))],
        );
        assert_eq!(
            c.fails(Operation::GET, vec![uid(&kept)]),
            ResultReason::NOT_EXTRACTABLE.0
        );
        assert_eq!(
            c.fails(Operation::GET, vec![uid(&kept), wrapping_spec(&kek)]),
            ResultReason::NOT_EXTRACTABLE.0
        );
        if version.0 >= 2 {
            assert_eq!(
                c.fails(Operation::EXPORT, vec![uid(&kept)]),
                ResultReason::NOT_EXTRACTABLE.0
            );
        }
        // It is still used inside the server.
        c.ok(Operation::ENCRYPT, vec![uid(&kept), data(b"in place")]);
        // Extractable goes from true to false only, Sensitive from false to true only.
        let modify = |id: &str, name: &str, value: bool| {
            if version.0 >= 2 {
                c.call(
                    Operation::SET_ATTRIBUTE,
                    vec![
                        uid(id),
                        st(
                            Tag::NEW_ATTRIBUTE,
                            vec![Item::new(tag_of(name), V::Boolean(value))],
                        ),
                    ],
                )
            } else {
                c.call(
                    Operation::MODIFY_ATTRIBUTE,
                    vec![uid(id), attr(name, V::Boolean(value))],
                )
            }
        };
        let delete = |id: &str, name: &str| {
            c.call(
                Operation::DELETE_ATTRIBUTE,
                vec![uid(id), text(Tag::ATTRIBUTE_NAME, name)],
            )
        };
        let denied = (
            ResultStatus::OPERATION_FAILED.0,
            Some(ResultReason::PERMISSION_DENIED.0),
        );
        let (status, reason, _) = modify(&kept, "Extractable", true);
        assert_eq!((status, reason), denied);
        if version.0 < 2 {
            let (status, reason, _) = delete(&kept, "Extractable");
            assert_eq!((status, reason), denied);
        }
        assert_eq!(
            c.fails(Operation::GET, vec![uid(&kept)]),
            ResultReason::NOT_EXTRACTABLE.0
        );

        // Sensitive true: only wrapped.
        let sensitive = c.key(
            3,
            256,
            ENCRYPT | DECRYPT,
            &[("Sensitive", V::Boolean(true))],
        );
        assert_eq!(
            c.fails(Operation::GET, vec![uid(&sensitive)]),
            ResultReason::SENSITIVE.0
        );
        if version.0 >= 2 {
            assert_eq!(
                c.fails(Operation::EXPORT, vec![uid(&sensitive)]),
                ResultReason::SENSITIVE.0
            );
        }
        let (status, reason, _) = modify(&sensitive, "Sensitive", false);
        assert_eq!((status, reason), denied);
        if version.0 < 2 {
            let (status, reason, _) = delete(&sensitive, "Sensitive");
            assert_eq!((status, reason), denied);
        }
        assert_eq!(
            c.fails(Operation::GET, vec![uid(&sensitive)]),
            ResultReason::SENSITIVE.0
        );
        let p = c.ok(Operation::GET, vec![uid(&sensitive), wrapping_spec(&kek)]);
        assert!(matches!(material(&p), V::ByteString(b) if b.len() > 32));

        // Extractable true and Sensitive false change nothing.
        let open = c.key(
            3,
            256,
            ENCRYPT,
            &[
                ("Extractable", V::Boolean(true)),
                ("Sensitive", V::Boolean(false)),
            ],
        );
        let p = c.ok(Operation::GET, vec![uid(&open)]);
        assert!(matches!(material(&p), V::ByteString(b) if b.len() == 32));
        // And the way to protect a key stays open.
        let (status, _, _) = modify(&open, "Sensitive", true);
        assert_eq!(status, ResultStatus::SUCCESS.0);
        let (status, _, _) = modify(&open, "Extractable", false);
        assert_eq!(status, ResultStatus::SUCCESS.0);
        assert_eq!(
            c.fails(Operation::GET, vec![uid(&open)]),
            ResultReason::NOT_EXTRACTABLE.0
        );
    }
}

/// One TLS connection kept open across requests.
struct Connection {
    rt: tokio::runtime::Runtime,
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl Connection {
    fn open(kmip: &Kmip) -> Connection {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stream = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(kmip.addr).await.unwrap();
            TlsConnector::from(kmip.tls.clone())
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        });
        Connection { rt, stream }
    }

    /// The outcome of one operation, or `None` when the server closed the connection.
    fn call(&mut self, op: Operation, payload: Vec<Item>) -> Option<(u32, Option<u32>)> {
        let bytes = encode(&message((1, 4), vec![(op, payload)]));
        let stream = &mut self.stream;
        let resp = self.rt.block_on(async {
            stream.write_all(&bytes).await.ok()?;
            stream.flush().await.ok()?;
            read_message(stream).await
        })?;
        let (status, reason, _) = outcomes(&resp).pop().unwrap();
        Some((status, reason))
    }
}

fn create_payload() -> Vec<Item> {
    vec![
        en(Tag::OBJECT_TYPE, 2),
        st(
            Tag::TEMPLATE_ATTRIBUTE,
            vec![
                attr("Cryptographic Algorithm", V::Enumeration(3)),
                attr("Cryptographic Length", V::Integer(128)),
            ],
        ),
    ]
}

#[test]
fn a_removed_or_demoted_client_loses_its_rights_on_an_open_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-session", &[]);
    let instance = server.dev["instance_id"].as_str().unwrap().to_owned();
    let success = Some((ResultStatus::SUCCESS.0, None));

    // A Writer, removed while its connection is open.
    let (writer, fingerprint) = client_with_role(&server, tmp.path(), "writer", "Writer");
    let mut conn = Connection::open(&writer.kmip);
    assert_eq!(conn.call(Operation::CREATE, create_payload()), success);
    let out = server.cli(&["kmip", "client", "remove", &fingerprint]);
    assert!(out.status.success(), "{out:?}");
    // Within the server's caller cache lifetime (5 s), as for API keys.
    std::thread::sleep(std::time::Duration::from_millis(5_500));
    let after = conn.call(Operation::CREATE, create_payload());
    assert!(
        after.is_none()
            || after
                == Some((
                    ResultStatus::OPERATION_FAILED.0,
                    Some(ResultReason::AUTHENTICATION_NOT_SUCCESSFUL.0)
                )),
        "{after:?}"
    );

    // A Writer demoted to Reader while its connection is open.
    let (writer, _) = client_with_role(&server, tmp.path(), "demoted", "Writer");
    let mut conn = Connection::open(&writer.kmip);
    assert_eq!(conn.call(Operation::CREATE, create_payload()), success);
    let pem = std::fs::read_to_string(tmp.path().join("demoted.pem")).unwrap();
    let (code, body) = server.api().post(
        "/api/keyfort/v1/kmip/clients",
        &serde_json::json!({"certificate": pem, "instance": instance, "role": "Reader"}),
    );
    assert_eq!(code, 201, "{body}");
    std::thread::sleep(std::time::Duration::from_millis(5_500));
    assert_eq!(
        conn.call(Operation::CREATE, create_payload()),
        Some((
            ResultStatus::OPERATION_FAILED.0,
            Some(ResultReason::PERMISSION_DENIED.0)
        ))
    );
    assert_eq!(conn.call(Operation::LOCATE, vec![]), success);
}

#[test]
fn roles_limit_every_operation_and_every_batch_item() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-roles", &[]);
    let manager = Client {
        kmip: Kmip::dev(&server),
        version: (1, 4),
    };
    let (reader, _) = client_with_role(&server, tmp.path(), "reader", "Reader");
    let (reader_plus, _) = client_with_role(&server, tmp.path(), "readerplus", "ReaderPlus");
    let (writer, _) = client_with_role(&server, tmp.path(), "writer", "Writer");
    let denied = ResultReason::PERMISSION_DENIED.0;
    let active = manager.key(3, 256, ENCRYPT | DECRYPT, &[]);
    let pre_active = uid_of(&manager.ok(Operation::CREATE, create_payload()));
    let count = || {
        manager
            .ok(Operation::LOCATE, vec![])
            .iter()
            .filter(|i| i.tag == Tag::UNIQUE_IDENTIFIER)
            .count()
    };
    let before = count();
    let revoke = |id: &str| {
        vec![
            uid(id),
            st(
                Tag::REVOCATION_REASON,
                vec![en(Tag::REVOCATION_REASON_CODE, 5)],
            ),
        ]
    };
    let register = vec![en(Tag::OBJECT_TYPE, 7), secret_data(&[7; 16])];
    let x_attr = |id: &str| vec![uid(id), attr("x-owner", V::TextString("me".into()))];

    // Reader and ReaderPlus: none of the changes; Reader does not read material either.
    for c in [&reader, &reader_plus] {
        assert_eq!(c.fails(Operation::CREATE, create_payload()), denied);
        assert_eq!(c.fails(Operation::REGISTER, register.clone()), denied);
        assert_eq!(c.fails(Operation::ACTIVATE, vec![uid(&pre_active)]), denied);
        assert_eq!(c.fails(Operation::REVOKE, revoke(&active)), denied);
        assert_eq!(c.fails(Operation::DESTROY, vec![uid(&pre_active)]), denied);
        assert_eq!(c.fails(Operation::ADD_ATTRIBUTE, x_attr(&active)), denied);
        assert_eq!(c.fails(Operation::RE_KEY, vec![uid(&active)]), denied);
        // Reading and using are theirs.
        c.ok(Operation::GET_ATTRIBUTES, vec![uid(&active)]);
        c.ok(Operation::CHECK, vec![uid(&active)]);
        c.ok(Operation::ENCRYPT, vec![uid(&active), data(b"x")]);
    }
    assert_eq!(reader.fails(Operation::GET, vec![uid(&active)]), denied);
    reader_plus.ok(Operation::GET, vec![uid(&active)]);

    // Writer: creates and re-keys no object it may not link; manages nothing.
    writer.ok(Operation::CREATE, create_payload());
    assert_eq!(
        writer.fails(Operation::ACTIVATE, vec![uid(&pre_active)]),
        denied
    );
    assert_eq!(writer.fails(Operation::REVOKE, revoke(&active)), denied);
    assert_eq!(
        writer.fails(Operation::DESTROY, vec![uid(&pre_active)]),
        denied
    );
    assert_eq!(
        writer.fails(Operation::ADD_ATTRIBUTE, x_attr(&active)),
        denied
    );
    assert_eq!(
        writer.fails(
            Operation::MODIFY_ATTRIBUTE,
            vec![
                uid(&active),
                attr("Cryptographic Usage Mask", V::Integer(0x7FFF))
            ]
        ),
        denied
    );
    assert_eq!(
        writer.fails(
            Operation::DELETE_ATTRIBUTE,
            vec![
                uid(&active),
                text(Tag::ATTRIBUTE_NAME, "Cryptographic Usage Mask")
            ]
        ),
        denied
    );
    let created = count();
    assert_eq!(created, before + 1);
    // A refused Re-key leaves no new object behind.
    assert_eq!(writer.fails(Operation::RE_KEY, vec![uid(&active)]), denied);
    assert_eq!(count(), created);

    // In a batch, every item is checked, not the first only; the ID Placeholder of an item
    // the client may run gives no right on the next.
    let resp = reader.kmip.call(&message(
        (1, 4),
        vec![
            (Operation::LOCATE, vec![]),
            (Operation::CHECK, vec![uid(&pre_active)]),
            (Operation::ACTIVATE, vec![]),
            (Operation::DESTROY, vec![]),
        ],
    ));
    let all = outcomes(&resp);
    assert_eq!(all.len(), 3, "{resp:?}");
    assert_eq!(all[1].0, ResultStatus::SUCCESS.0);
    assert_eq!(
        (all[2].0, all[2].1),
        (ResultStatus::OPERATION_FAILED.0, Some(denied))
    );
    let state = manager.ok(
        Operation::GET_ATTRIBUTES,
        vec![uid(&pre_active), text(Tag::ATTRIBUTE_NAME, "State")],
    );
    assert!(format!("{state:?}").contains("Enumeration(1)"), "{state:?}");
    assert_eq!(count(), created);
}

#[test]
fn the_attributes_of_an_object_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-bounds", &[]);
    let c = Client {
        kmip: Kmip::dev(&server),
        version: (1, 4),
    };
    let big = "v".repeat(200 * 1024);
    let id = uid_of(&c.ok(Operation::CREATE, create_payload()));

    // One large value, or many values, in Create or in Add Attribute: refused, and nothing
    // is stored.
    let mut oversized = create_payload();
    if let V::Structure(t) = &mut oversized[1].value {
        t.push(attr("x-big", V::TextString(big.clone())));
    }
    assert_eq!(
        c.fails(Operation::CREATE, oversized),
        ResultReason::INVALID_FIELD.0
    );
    let mut many = create_payload();
    if let V::Structure(t) = &mut many[1].value {
        t.extend((0..200).map(|i| attr("x-many", V::TextString(format!("{i}")))));
    }
    assert_eq!(
        c.fails(Operation::CREATE, many),
        ResultReason::INVALID_FIELD.0
    );
    let mut added = 0;
    for _ in 0..20 {
        let (status, _, _) = c.call(
            Operation::ADD_ATTRIBUTE,
            vec![
                uid(&id),
                attr("x-big", V::TextString("w".repeat(40 * 1024))),
            ],
        );
        if status != ResultStatus::SUCCESS.0 {
            break;
        }
        added += 1;
    }
    assert!(added < 20, "an object took 20 values of 40 KiB");
    let p = c.ok(Operation::GET_ATTRIBUTES, vec![uid(&id)]);
    assert!(encode(&st(Tag::RESPONSE_PAYLOAD, p)).len() < 128 * 1024);

    // Hostile framing and values get a KMIP error, not a crash: a 100 KB Unique Identifier,
    // Locate with Maximum Items 0 and a huge offset, negative numbers.
    let long = "u".repeat(100 * 1024);
    assert_eq!(
        c.fails(Operation::GET, vec![uid(&long)]),
        ResultReason::ITEM_NOT_FOUND.0
    );
    let p = c.ok(Operation::LOCATE, vec![int(Tag::MAXIMUM_ITEMS, 0)]);
    assert!(!p.iter().any(|i| i.tag == Tag::UNIQUE_IDENTIFIER));
    let p = c.ok(Operation::LOCATE, vec![int(Tag::OFFSET_ITEMS, i32::MAX)]);
    assert!(!p.iter().any(|i| i.tag == Tag::UNIQUE_IDENTIFIER));
    assert_eq!(
        c.fails(Operation::LOCATE, vec![int(Tag::MAXIMUM_ITEMS, -1)]),
        ResultReason::INVALID_FIELD.0
    );
    assert_eq!(
        c.fails(
            Operation::RNG_RETRIEVE,
            vec![int(Tag::DATA_LENGTH, i32::MIN)]
        ),
        ResultReason::INVALID_FIELD.0
    );
    assert_eq!(
        c.fails(
            Operation::RNG_RETRIEVE,
            vec![int(Tag::DATA_LENGTH, i32::MAX)]
        ),
        ResultReason::INVALID_FIELD.0
    );
    // 17 nested Structures, and a Batch Count that does not match: Invalid Message.
    let mut nested = st(Tag::ATTRIBUTE_VALUE, vec![]);
    for _ in 0..17 {
        nested = st(Tag::ATTRIBUTE_VALUE, vec![nested]);
    }
    let resp = c
        .kmip
        .call(&message((1, 4), vec![(Operation::LOCATE, vec![nested])]));
    assert_eq!(outcomes(&resp)[0].1, Some(ResultReason::INVALID_MESSAGE.0));
    // The server still answers.
    c.ok(Operation::GET_ATTRIBUTES, vec![uid(&id)]);
}

#[test]
fn the_lifecycle_state_limits_use_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-states", &[]);
    let c = Client {
        kmip: Kmip::dev(&server),
        version: (1, 4),
    };
    let illegal = ResultReason::ILLEGAL_OPERATION.0;
    let revoke = |id: &str, code: u32| {
        c.ok(
            Operation::REVOKE,
            vec![
                uid(id),
                st(
                    Tag::REVOCATION_REASON,
                    vec![en(Tag::REVOCATION_REASON_CODE, code)],
                ),
            ],
        );
    };
    let mask = ENCRYPT | DECRYPT | MAC_GENERATE;
    let create = |algorithm: u32| {
        uid_of(&c.ok(
            Operation::CREATE,
            vec![
                en(Tag::OBJECT_TYPE, 2),
                c.template(&[
                    ("Cryptographic Algorithm", V::Enumeration(algorithm)),
                    ("Cryptographic Length", V::Integer(256)),
                    ("Cryptographic Usage Mask", V::Integer(mask)),
                ]),
            ],
        ))
    };

    // Pre-active: no use, but Get (KMIP 1.4 §3.22: the key may be distributed).
    let pre_active = create(3);
    assert_eq!(
        c.fails(Operation::ENCRYPT, vec![uid(&pre_active), data(b"x")]),
        illegal
    );
    c.ok(Operation::GET, vec![uid(&pre_active)]);

    // Active: encrypts. Deactivated (revoked, reason Superseded): decrypts what
    // it encrypted, encrypts no more, and is never activated again.
    let key = create(3);
    c.ok(Operation::ACTIVATE, vec![uid(&key)]);
    let p = c.ok(Operation::ENCRYPT, vec![uid(&key), data(b"kept")]);
    let mut decrypt = vec![uid(&key)];
    decrypt.extend(
        p.iter()
            .filter(|i| i.tag != Tag::UNIQUE_IDENTIFIER)
            .cloned(),
    );
    revoke(&key, 5);
    assert_eq!(
        c.fails(Operation::ENCRYPT, vec![uid(&key), data(b"x")]),
        illegal
    );
    let p = c.ok(Operation::DECRYPT, decrypt.clone());
    assert_eq!(
        Struct {
            tag: Tag::RESPONSE_PAYLOAD,
            items: &p
        }
        .bytes(Tag::DATA)
        .unwrap(),
        b"kept"
    );
    assert_eq!(c.fails(Operation::ACTIVATE, vec![uid(&key)]), illegal);

    // Compromised: no encryption, no MAC, no export, no activation.
    let compromised = create(9);
    c.ok(Operation::ACTIVATE, vec![uid(&compromised)]);
    revoke(&compromised, 2);
    assert_eq!(
        c.fails(Operation::MAC, vec![uid(&compromised), data(b"x")]),
        illegal
    );
    assert_eq!(c.fails(Operation::GET, vec![uid(&compromised)]), illegal);
    assert_eq!(
        c.fails(Operation::ACTIVATE, vec![uid(&compromised)]),
        illegal
    );

    // Destroyed: no material at all, in any way.
    c.ok(Operation::DESTROY, vec![uid(&key)]);
    assert_eq!(c.fails(Operation::GET, vec![uid(&key)]), illegal);
    assert_eq!(c.fails(Operation::DECRYPT, decrypt), illegal);
    let kek = c.key(3, 256, WRAP_KEY, &[]);
    assert_eq!(
        c.fails(Operation::GET, vec![uid(&key), wrapping_spec(&kek)]),
        illegal
    );
    assert_eq!(c.fails(Operation::ACTIVATE, vec![uid(&key)]), illegal);
    // A revoked wrapping key wraps nothing.
    let dek = c.key(3, 128, ENCRYPT, &[]);
    revoke(&kek, 5);
    assert_eq!(
        c.fails(Operation::GET, vec![uid(&dek), wrapping_spec(&kek)]),
        illegal
    );
}

/// The Result Reason and Result Message of a failed single-item response.
fn refusal(resp: &Item) -> (Option<u32>, String) {
    let s = Struct::of(resp).unwrap();
    let item = s.child(Tag::BATCH_ITEM).unwrap().unwrap();
    assert_eq!(
        item.enumeration(Tag::RESULT_STATUS).unwrap(),
        ResultStatus::OPERATION_FAILED.0,
        "{resp:?}"
    );
    (
        item.opt_enumeration(Tag::RESULT_REASON).unwrap(),
        item.opt_text(Tag::RESULT_MESSAGE)
            .unwrap()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn another_instance_s_objects_are_out_of_reach_and_indistinguishable_from_none() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-isolation", &[]);
    // A second instance with one custodian, and a Manager client on it.
    let cust = tmp.path().join("custodian");
    std::fs::write(tmp.path().join("pass"), "a passphrase\n").unwrap();
    server.json_anon(&[
        "custodian",
        "keygen",
        "--out",
        cust.to_str().unwrap(),
        "--passphrase-file",
        tmp.path().join("pass").to_str().unwrap(),
        "--kdf-test-params",
    ]);
    let other = server.json(&["instance", "create", "other"]);
    let other = other["id"].as_str().unwrap().to_owned();
    server.json(&[
        "instance",
        "init",
        &other,
        "--custodians",
        &format!("{}.pub", cust.display()),
        "--threshold",
        "1",
        "--out-dir",
        tmp.path().to_str().unwrap(),
    ]);
    let (cert, key, file) = dev_signed_certificate(tmp.path(), "other");
    server.json(&[
        "kmip",
        "client",
        "add",
        "--cert",
        file.to_str().unwrap(),
        "--instance",
        &other,
        "--role",
        "Manager",
    ]);
    let b = Client {
        kmip: Kmip::new(&server, cert.as_bytes(), key.as_bytes()),
        version: (1, 4),
    };
    let theirs = b.key(3, 256, ENCRYPT | DECRYPT | WRAP_KEY, &[]);
    let their_pre_active = uid_of(&b.ok(Operation::CREATE, create_payload()));

    // The dev client, on the dev instance.
    let a = Client {
        kmip: Kmip::dev(&server),
        version: (1, 4),
    };
    let mine = a.key(3, 256, ENCRYPT | DECRYPT | WRAP_KEY, &[]);
    let nobody = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let revoke = st(
        Tag::REVOCATION_REASON,
        vec![en(Tag::REVOCATION_REASON_CODE, 2)],
    );
    type Payload = fn(&str) -> Vec<Item>;
    let attempts: Vec<(Operation, Payload)> = vec![
        (Operation::GET, |id| vec![uid(id)]),
        (Operation::GET_ATTRIBUTES, |id| vec![uid(id)]),
        (Operation::GET_ATTRIBUTE_LIST, |id| vec![uid(id)]),
        (Operation::CHECK, |id| vec![uid(id)]),
        (Operation::ENCRYPT, |id| vec![uid(id), data(b"x")]),
        (Operation::ACTIVATE, |id| vec![uid(id)]),
        (Operation::DESTROY, |id| vec![uid(id)]),
        (Operation::RE_KEY, |id| vec![uid(id)]),
        (Operation::ADD_ATTRIBUTE, |id| {
            vec![uid(id), attr("x-a", V::TextString("b".into()))]
        }),
    ];
    for (op, payload) in attempts {
        for target in [&theirs, &their_pre_active] {
            let (reason, msg) =
                refusal(&a.kmip.call(&message((1, 4), vec![(op, payload(target))])));
            let (none_reason, none_message) =
                refusal(&a.kmip.call(&message((1, 4), vec![(op, payload(nobody))])));
            assert_eq!(reason, Some(ResultReason::ITEM_NOT_FOUND.0), "{op:?}");
            assert_eq!(reason, none_reason, "{op:?}");
            assert_eq!(msg.replace(target.as_str(), nobody), none_message, "{op:?}");
        }
    }
    let (reason, _) = refusal(&a.kmip.call(&message(
        (1, 4),
        vec![(Operation::REVOKE, vec![uid(&theirs), revoke])],
    )));
    assert_eq!(reason, Some(ResultReason::ITEM_NOT_FOUND.0));
    // Their key wraps nothing of ours.
    let (reason, _) = refusal(&a.kmip.call(&message(
        (1, 4),
        vec![(Operation::GET, vec![uid(&mine), wrapping_spec(&theirs)])],
    )));
    assert_eq!(reason, Some(ResultReason::ITEM_NOT_FOUND.0));
    // Locate does not list them.
    let listed = a.ok(Operation::LOCATE, vec![]);
    assert!(!format!("{listed:?}").contains(&theirs));
    // Nothing changed on their side.
    let p = b.ok(
        Operation::GET_ATTRIBUTES,
        vec![uid(&their_pre_active), text(Tag::ATTRIBUTE_NAME, "State")],
    );
    assert!(format!("{p:?}").contains("Enumeration(1)"), "{p:?}");
    b.ok(Operation::ENCRYPT, vec![uid(&theirs), data(b"still mine")]);
}

#[test]
fn a_response_too_large_leaves_nothing_done() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-maxsize", &[]);
    let c = Client {
        kmip: Kmip::dev(&server),
        version: (1, 4),
    };
    let count = || {
        c.ok(Operation::LOCATE, vec![])
            .iter()
            .filter(|i| i.tag == Tag::UNIQUE_IDENTIFIER)
            .count()
    };
    let key = c.key(3, 256, ENCRYPT, &[]);
    let before = count();
    let with_max = |max: i32, items: Vec<(Operation, Vec<Item>)>| {
        let mut m = message((1, 4), items);
        if let V::Structure(children) = &mut m.value
            && let V::Structure(header) = &mut children[0].value
        {
            header.insert(1, int(Tag::MAXIMUM_RESPONSE_SIZE, max));
        }
        outcomes(&c.kmip.call(&m))
    };
    let too_large = Some(ResultReason::RESPONSE_TOO_LARGE.0);

    // Create, Add Attribute and Revoke in a message whose answer may not exceed 64 bytes:
    // every item is refused and none of them took effect.
    let all = with_max(
        64,
        vec![
            (Operation::CREATE, create_payload()),
            (
                Operation::ADD_ATTRIBUTE,
                vec![uid(&key), attr("x-tag", V::TextString("t".into()))],
            ),
            (
                Operation::REVOKE,
                vec![
                    uid(&key),
                    st(
                        Tag::REVOCATION_REASON,
                        vec![en(Tag::REVOCATION_REASON_CODE, 5)],
                    ),
                ],
            ),
        ],
    );
    assert_eq!(all.len(), 3);
    assert!(
        all.iter()
            .all(|(s, r, _)| *s == ResultStatus::OPERATION_FAILED.0 && *r == too_large)
    );
    assert_eq!(count(), before);
    let attributes = c.ok(Operation::GET_ATTRIBUTES, vec![uid(&key)]);
    let shown = format!("{attributes:?}");
    assert!(!shown.contains("x-tag"), "{shown}");
    c.ok(Operation::ENCRYPT, vec![uid(&key), data(b"still active")]);

    // A size the answer fits: done.
    let all = with_max(4096, vec![(Operation::CREATE, create_payload())]);
    assert_eq!(all[0].0, ResultStatus::SUCCESS.0);
    assert_eq!(count(), before + 1);
}

#[test]
fn a_non_extractable_kmip_key_does_not_leave_through_another_door() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-doors", &[]);
    let instance = server.dev["instance_id"].as_str().unwrap().to_owned();
    let c = Client {
        kmip: Kmip::dev(&server),
        version: (1, 4),
    };
    let kept = c.key(
        3,
        256,
        ENCRYPT | DECRYPT,
        &[("Extractable", V::Boolean(false))],
    );
    assert_eq!(
        c.fails(Operation::GET, vec![uid(&kept)]),
        ResultReason::NOT_EXTRACTABLE.0
    );
    let out = server.cli(&["key", "material", &kept, "--instance", &instance]);
    assert!(
        !out.status.success(),
        "the material left through the Key Protect door: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Sensitive: KMIP gives it only wrapped, so the doors that only give it in the clear refuse.
    let sensitive = c.key(
        3,
        256,
        ENCRYPT | DECRYPT,
        &[("Sensitive", V::Boolean(true))],
    );
    let out = server.cli(&["key", "material", &sensitive, "--instance", &instance]);
    assert!(
        !out.status.success(),
        "a sensitive key's material left in the clear: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An ordinary KMIP key still leaves through both doors.
    let open = c.key(3, 256, ENCRYPT | DECRYPT, &[]);
    let out = server.cli(&["key", "material", &open, "--instance", &instance]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn import_does_not_replace_material_that_never_left_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-replace", &[]);
    let instance = server.dev["instance_id"].as_str().unwrap().to_owned();
    let c = Client {
        kmip: Kmip::dev(&server),
        version: (2, 1),
    };
    // A Key Protect root key and a DEK wrapped with it.
    let root = server.json(&["key", "create", "--name", "root", "--instance", &instance]);
    assert_eq!(root["extractable"], false);
    let root = root["id"].as_str().unwrap().to_owned();
    let wrapped = server.json(&["key", "wrap", &root, "--instance", &instance]);
    let ciphertext = wrapped["ciphertext"].as_str().unwrap().to_owned();
    // A KMIP key created Extractable false.
    let kept = c.key(
        3,
        256,
        ENCRYPT | DECRYPT,
        &[("Extractable", V::Boolean(false))],
    );
    let replacement = |id: &str| {
        vec![
            uid(id),
            en(Tag::OBJECT_TYPE, 2),
            Item::new(Tag::REPLACE_EXISTING, V::Boolean(true)),
            st(Tag::ATTRIBUTES, vec![]),
            st(
                Tag::SYMMETRIC_KEY,
                vec![st(
                    Tag::KEY_BLOCK,
                    vec![
                        en(Tag::KEY_FORMAT_TYPE, 1),
                        st(
                            Tag::KEY_VALUE,
                            vec![Item::new(Tag::KEY_MATERIAL, V::ByteString(vec![0x11; 32]))],
                        ),
                        en(Tag::CRYPTOGRAPHIC_ALGORITHM, 3),
                        int(Tag::CRYPTOGRAPHIC_LENGTH, 256),
                    ],
                )],
            ),
        ]
    };
    for id in [&root, &kept] {
        assert_eq!(
            c.fails(Operation::IMPORT, replacement(id)),
            ResultReason::PERMISSION_DENIED.0,
            "{id}"
        );
    }
    // The root key is still the same: it unwraps what it wrapped.
    let unwrapped = server.json(&[
        "key",
        "unwrap",
        &root,
        "--instance",
        &instance,
        "--ciphertext",
        &ciphertext,
    ]);
    assert!(unwrapped["plaintext"].is_string(), "{unwrapped}");
    c.ok(Operation::ENCRYPT, vec![uid(&kept), data(b"still here")]);
    // An object whose material may leave is still replaced.
    let plain = c.key(3, 256, ENCRYPT, &[]);
    c.ok(Operation::IMPORT, replacement(&plain));
}
