#![allow(clippy::unwrap_used)]
//! The KMIP door end to end: the real `keyfort server --dev` binary, mutual TLS with the dev
//! client certificate, the vSphere sequence (KMIP 1.1, a new connection per operation, 8-byte
//! batch ids, batched Add Attribute), malformed TTLV, unknown and unregistered certificates, and
//! `keyfort kmip client add|list|remove`.

mod common;

use common::kmip::{Kmip, RSA_PRIVATE_COMPONENTS, en, int, read_message, secret_data, st, text};
use common::{Server, Value, der};
use keyfort_kmip::message::Struct;
use keyfort_kmip::ttlv::{Item, Tag, Value as V, encode};
use keyfort_kmip::{Operation, ResultReason, ResultStatus};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;

/// The dev CA's names (`crates/keyfort/src/tls.rs`).
const DEV_CA_COMMON_NAME: &str = "Keyfort dev CA";
const DEV_ORGANIZATION: &str = "Keyfort (development only)";

fn version(major: i32, minor: i32) -> Item {
    st(
        Tag::PROTOCOL_VERSION,
        vec![
            int(Tag::PROTOCOL_VERSION_MAJOR, major),
            int(Tag::PROTOCOL_VERSION_MINOR, minor),
        ],
    )
}

/// vCenter's batch item ids: "QLKC" + a counter, 8 bytes.
fn qlkc(n: u8) -> Vec<u8> {
    vec![b'Q', b'L', b'K', b'C', n, 0, 0, 0]
}

/// A request message; each item is (operation, batch id, payload children).
fn request(
    ver: (i32, i32),
    header_extra: Vec<Item>,
    items: Vec<(Operation, Option<Vec<u8>>, Vec<Item>)>,
) -> Item {
    let count = i32::try_from(items.len()).unwrap();
    let mut header = vec![version(ver.0, ver.1)];
    header.extend(header_extra);
    header.push(int(Tag::BATCH_COUNT, count));
    let mut children = vec![st(Tag::REQUEST_HEADER, header)];
    for (op, id, payload) in items {
        let mut item = vec![en(Tag::OPERATION, op.0)];
        if let Some(id) = id {
            item.push(Item::new(Tag::UNIQUE_BATCH_ITEM_ID, V::ByteString(id)));
        }
        item.push(st(Tag::REQUEST_PAYLOAD, payload));
        children.push(st(Tag::BATCH_ITEM, item));
    }
    st(Tag::REQUEST_MESSAGE, children)
}

fn one(op: Operation, id: Option<Vec<u8>>, payload: Vec<Item>) -> Item {
    request((1, 1), vec![], vec![(op, id, payload)])
}

/// The batch items of a response.
fn items(resp: &Item) -> Vec<&Item> {
    assert_eq!(resp.tag, Tag::RESPONSE_MESSAGE);
    Struct::of(resp).unwrap().all(Tag::BATCH_ITEM).collect()
}

fn header_version(resp: &Item) -> (i32, i32) {
    let h = Struct::of(resp)
        .unwrap()
        .child(Tag::RESPONSE_HEADER)
        .unwrap()
        .unwrap();
    let v = h.child(Tag::PROTOCOL_VERSION).unwrap().unwrap();
    (
        v.integer(Tag::PROTOCOL_VERSION_MAJOR).unwrap(),
        v.integer(Tag::PROTOCOL_VERSION_MINOR).unwrap(),
    )
}

fn status(item: &Item) -> (u32, Option<u32>) {
    let s = Struct::of(item).unwrap();
    (
        s.enumeration(Tag::RESULT_STATUS).unwrap(),
        s.opt_enumeration(Tag::RESULT_REASON).unwrap(),
    )
}

/// The payload of the only batch item, which must have succeeded.
fn ok_payload(resp: &Item) -> Vec<Item> {
    let all = items(resp);
    assert_eq!(all.len(), 1, "{resp:?}");
    payload(all[0])
}

fn payload(item: &Item) -> Vec<Item> {
    assert_eq!(status(item), (ResultStatus::SUCCESS.0, None), "{item:?}");
    match &Struct::of(item)
        .unwrap()
        .get(Tag::RESPONSE_PAYLOAD)
        .unwrap()
        .value
    {
        V::Structure(c) => c.clone(),
        _ => panic!("payload"),
    }
}

fn failure(resp: &Item) -> u32 {
    let all = items(resp);
    let (s, reason) = status(all[0]);
    assert_eq!(s, ResultStatus::OPERATION_FAILED.0, "{resp:?}");
    reason.unwrap()
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

fn attr(name: &str, value: V) -> Item {
    st(
        Tag::ATTRIBUTE,
        vec![
            text(Tag::ATTRIBUTE_NAME, name),
            Item::new(Tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

/// `(name, value)` of the Attribute structures in a payload.
fn attrs(payload: &[Item]) -> Vec<(String, V)> {
    payload
        .iter()
        .filter(|i| i.tag == Tag::ATTRIBUTE)
        .map(|a| {
            let s = Struct::of(a).unwrap();
            (
                s.text(Tag::ATTRIBUTE_NAME).unwrap().to_owned(),
                s.get(Tag::ATTRIBUTE_VALUE).unwrap().value.clone(),
            )
        })
        .collect()
}

/// DiscoverVersions as vCenter sends it, written out by hand from the TTLV layout (KMIP 1.4
/// §9.1): header with version 1.1 and Batch Count 1, one batch item with id "QLKC\x01\0\0\0".
const DISCOVER_VERSIONS_V11: &str = concat!(
    "42007801",
    "00000070",
    "42007701",
    "00000038",
    "42006901",
    "00000020",
    "42006A02",
    "00000004",
    "00000001",
    "00000000",
    "42006B02",
    "00000004",
    "00000001",
    "00000000",
    "42000D02",
    "00000004",
    "00000001",
    "00000000",
    "42000F01",
    "00000028",
    "42005C05",
    "00000004",
    "0000001E",
    "00000000",
    "42009308",
    "00000008",
    "514C4B4301000000",
    "42007901",
    "00000000",
);

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn vsphere_profile_one_connection_per_operation() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-vsphere", &[]);
    let kmip = Kmip::dev(&server);

    // DiscoverVersions, byte for byte as written out above (and as our encoder writes it).
    let bytes = hex_bytes(DISCOVER_VERSIONS_V11);
    assert_eq!(
        encode(&one(Operation::DISCOVER_VERSIONS, Some(qlkc(1)), vec![])),
        bytes
    );
    let resp = kmip.raw(&bytes).unwrap();
    assert_eq!(header_version(&resp), (1, 1));
    let item = items(&resp)[0];
    let s = Struct::of(item).unwrap();
    assert_eq!(
        s.bytes(Tag::UNIQUE_BATCH_ITEM_ID).unwrap(),
        qlkc(1).as_slice()
    );
    let versions: Vec<(i32, i32)> = payload(item)
        .iter()
        .map(|v| {
            let v = Struct::of(v).unwrap();
            (
                v.integer(Tag::PROTOCOL_VERSION_MAJOR).unwrap(),
                v.integer(Tag::PROTOCOL_VERSION_MINOR).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [(2, 1), (2, 0), (1, 4), (1, 3), (1, 2), (1, 1), (1, 0)]
    );
    // ... and without a batch item id (vCenter sometimes omits it).
    let resp = kmip.call(&one(Operation::DISCOVER_VERSIONS, None, vec![]));
    assert!(
        Struct::of(items(&resp)[0])
            .unwrap()
            .get(Tag::UNIQUE_BATCH_ITEM_ID)
            .is_none()
    );
    assert_eq!(ok_payload(&resp).len(), 7);

    // Query: server information.
    let resp = kmip.call(&one(
        Operation::QUERY,
        Some(qlkc(2)),
        vec![en(Tag::QUERY_FUNCTION, 3)],
    ));
    let p = ok_payload(&resp);
    let vendor = Struct {
        tag: Tag::RESPONSE_PAYLOAD,
        items: &p,
    }
    .text(Tag::VENDOR_IDENTIFICATION)
    .unwrap()
    .to_owned();
    assert!(vendor.starts_with("Keyfort"), "{vendor}");

    // Create AES-256, Encrypt|Decrypt, no Name.
    let resp = kmip.call(&one(
        Operation::CREATE,
        Some(qlkc(3)),
        vec![
            en(Tag::OBJECT_TYPE, 2),
            st(
                Tag::TEMPLATE_ATTRIBUTE,
                vec![
                    attr("Cryptographic Algorithm", V::Enumeration(3)),
                    attr("Cryptographic Usage Mask", V::Integer(12)),
                    attr("Cryptographic Length", V::Integer(256)),
                ],
            ),
        ],
    ));
    assert_eq!(header_version(&resp), (1, 1));
    let p = ok_payload(&resp);
    assert_eq!(p[0], en(Tag::OBJECT_TYPE, 2));
    let uid = uid_of(&p);

    // The tag check: one GetAttributes per name; absent ones answer no attribute.
    let tags = [
        "x-Product_Version",
        "x-Vendor",
        "x-Product",
        "x-Identifier",
        "x-Component",
        "x-Name",
    ];
    for (n, name) in tags.iter().enumerate() {
        let resp = kmip.call(&one(
            Operation::GET_ATTRIBUTES,
            Some(qlkc(10 + u8::try_from(n).unwrap())),
            vec![
                text(Tag::UNIQUE_IDENTIFIER, &uid),
                text(Tag::ATTRIBUTE_NAME, name),
            ],
        ));
        let p = ok_payload(&resp);
        assert_eq!(uid_of(&p), uid);
        assert!(attrs(&p).is_empty(), "{name}: {p:?}");
    }
    let resp = kmip.call(&one(
        Operation::GET_ATTRIBUTES,
        Some(qlkc(20)),
        vec![
            text(Tag::UNIQUE_IDENTIFIER, &uid),
            text(Tag::ATTRIBUTE_NAME, "State"),
        ],
    ));
    assert_eq!(
        attrs(&ok_payload(&resp)),
        [("State".to_owned(), V::Enumeration(1))]
    );

    // Tagging: AddAttribute x 3 in one message, twice; every batch id echoed.
    let values = [
        ("x-Product_Version", "7.0.3 build-19480866"),
        ("x-Vendor", "VMware, Inc."),
        ("x-Product", "VMware vSphere"),
        ("x-Identifier", "564d7a2c-1c5e-4a9f-8d3e-0123456789ab"),
        ("x-Component", "Virtual Machine"),
        ("x-Name", "vm-01"),
    ];
    for (batch, chunk) in values.chunks(3).enumerate() {
        let ids: Vec<Vec<u8>> = (0..3)
            .map(|i| qlkc(30 + u8::try_from(batch * 3 + i).unwrap()))
            .collect();
        let resp = kmip.call(&request(
            (1, 1),
            vec![],
            chunk
                .iter()
                .zip(&ids)
                .map(|((name, value), id)| {
                    (
                        Operation::ADD_ATTRIBUTE,
                        Some(id.clone()),
                        vec![
                            text(Tag::UNIQUE_IDENTIFIER, &uid),
                            attr(name, V::TextString((*value).to_owned())),
                        ],
                    )
                })
                .collect(),
        ));
        let answered = items(&resp);
        assert_eq!(answered.len(), 3);
        for (item, id) in answered.iter().zip(&ids) {
            assert_eq!(
                Struct::of(item)
                    .unwrap()
                    .bytes(Tag::UNIQUE_BATCH_ITEM_ID)
                    .unwrap(),
                id.as_slice()
            );
            payload(item);
        }
    }
    for (name, value) in values {
        let resp = kmip.call(&one(
            Operation::GET_ATTRIBUTES,
            Some(qlkc(40)),
            vec![
                text(Tag::UNIQUE_IDENTIFIER, &uid),
                text(Tag::ATTRIBUTE_NAME, name),
            ],
        ));
        assert_eq!(
            attrs(&ok_payload(&resp)),
            [(name.to_owned(), V::TextString(value.to_owned()))]
        );
    }

    // Get: Raw, 32 bytes of AES-256 (while pre-active, as vCenter does).
    let resp = kmip.call(&one(
        Operation::GET,
        Some(qlkc(41)),
        vec![text(Tag::UNIQUE_IDENTIFIER, &uid)],
    ));
    let p = ok_payload(&resp);
    let p = Struct {
        tag: Tag::RESPONSE_PAYLOAD,
        items: &p,
    };
    assert_eq!(p.enumeration(Tag::OBJECT_TYPE).unwrap(), 2);
    let block = p
        .child(Tag::SYMMETRIC_KEY)
        .unwrap()
        .unwrap()
        .child(Tag::KEY_BLOCK)
        .unwrap()
        .unwrap();
    assert_eq!(block.enumeration(Tag::KEY_FORMAT_TYPE).unwrap(), 1);
    assert_eq!(block.enumeration(Tag::CRYPTOGRAPHIC_ALGORITHM).unwrap(), 3);
    assert_eq!(block.integer(Tag::CRYPTOGRAPHIC_LENGTH).unwrap(), 256);
    let material = block
        .child(Tag::KEY_VALUE)
        .unwrap()
        .unwrap()
        .bytes(Tag::KEY_MATERIAL)
        .unwrap()
        .to_vec();
    assert_eq!(material.len(), 32);

    // Activate, then the state is Active.
    let resp = kmip.call(&one(
        Operation::ACTIVATE,
        Some(qlkc(42)),
        vec![text(Tag::UNIQUE_IDENTIFIER, &uid)],
    ));
    assert_eq!(uid_of(&ok_payload(&resp)), uid);
    let resp = kmip.call(&one(
        Operation::GET_ATTRIBUTES,
        Some(qlkc(43)),
        vec![
            text(Tag::UNIQUE_IDENTIFIER, &uid),
            text(Tag::ATTRIBUTE_NAME, "State"),
        ],
    ));
    assert_eq!(
        attrs(&ok_payload(&resp)),
        [("State".to_owned(), V::Enumeration(2))]
    );

    // The custom attributes are Locate-able.
    let resp = kmip.call(&one(
        Operation::LOCATE,
        Some(qlkc(44)),
        vec![attr(
            "x-Identifier",
            V::TextString("564d7a2c-1c5e-4a9f-8d3e-0123456789ab".into()),
        )],
    ));
    let p = ok_payload(&resp);
    let found: Vec<&Item> = p
        .iter()
        .filter(|i| i.tag == Tag::UNIQUE_IDENTIFIER)
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(uid_of(&p), uid);

    // Same core: the key is in the admin listing, and its audit trail names the KMIP client.
    let api = server.api();
    let instance = server.dev["instance_id"].as_str().unwrap();
    let (code, key) = api.call(
        reqwest::Method::GET,
        &format!("/api/keyfort/v1/instances/{instance}/keys/{uid}"),
        None,
    );
    assert_eq!(code, 200, "{key}");
    assert_eq!(key["id"], Value::String(uid.clone()));
    let (code, audit) = api.call(
        reqwest::Method::GET,
        &format!("/api/keyfort/v1/instances/{instance}/audit?limit=1000"),
        None,
    );
    assert_eq!(code, 200, "{audit}");
    let events = audit["events"].as_array().unwrap();
    let created = events
        .iter()
        .find(|e| e["action"] == "key.create" && e["target"] == Value::String(uid.clone()))
        .unwrap_or_else(|| panic!("no key.create event for {uid}: {audit}"));
    assert!(
        created["actor"]
            .as_str()
            .unwrap()
            .starts_with("kmip-client:"),
        "{created}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "key.activate" && e["target"] == Value::String(uid.clone()))
    );
}

#[test]
fn malformed_ttlv_gets_an_error_response_or_a_closed_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-malformed", &[]);
    let kmip = Kmip::dev(&server);
    let invalid_message = ResultReason::INVALID_MESSAGE.0;

    // An undefined item type in the header: the frame cannot be delimited, the connection closes.
    assert!(
        kmip.raw(&[0x42, 0x00, 0x78, 0xEE, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])
            .is_none()
    );
    // A frame larger than the 1 MiB limit: closed before anything is allocated.
    assert!(
        kmip.raw(&[0x42, 0x00, 0x78, 0x01, 0x7F, 0xFF, 0xFF, 0xF8])
            .is_none()
    );
    // A well-framed item that is not a Request Message.
    let resp = kmip.raw(&encode(&int(Tag::BATCH_COUNT, 1))).unwrap();
    assert_eq!(failure(&resp), invalid_message);
    // A Structure whose child overruns it.
    let mut bytes = encode(&one(Operation::DISCOVER_VERSIONS, None, vec![]));
    bytes[15] = 0xFF; // the Request Header's length
    let resp = kmip.raw(&bytes).unwrap();
    assert_eq!(failure(&resp), invalid_message);
    // Non-zero padding.
    let mut bytes = encode(&one(Operation::DISCOVER_VERSIONS, None, vec![]));
    let pad = 8 + 8 + 8 + 8 + 16 + 4; // the padding of Protocol Version Major
    bytes[pad] = 1;
    assert_eq!(failure(&kmip.raw(&bytes).unwrap()), invalid_message);
    // Batch Count that does not match.
    let mut msg = one(Operation::DISCOVER_VERSIONS, None, vec![]);
    if let V::Structure(c) = &mut msg.value {
        c.push(c[1].clone());
    }
    assert_eq!(failure(&kmip.call(&msg)), invalid_message);
    // A protocol version the server does not speak.
    let resp = kmip.call(&request(
        (3, 0),
        vec![],
        vec![(Operation::DISCOVER_VERSIONS, None, vec![])],
    ));
    assert_eq!(failure(&resp), ResultReason::OPERATION_NOT_SUPPORTED.0);
    // An operation the server does not implement, and a wrong field type.
    let resp = kmip.call(&one(
        Operation::ARCHIVE,
        None,
        vec![text(Tag::UNIQUE_IDENTIFIER, "x")],
    ));
    assert_eq!(failure(&resp), ResultReason::OPERATION_NOT_SUPPORTED.0);
    let resp = kmip.call(&one(
        Operation::GET,
        None,
        vec![int(Tag::UNIQUE_IDENTIFIER, 7)],
    ));
    assert_eq!(failure(&resp), ResultReason::INVALID_FIELD.0);
    let resp = kmip.call(&one(
        Operation::GET,
        None,
        vec![text(
            Tag::UNIQUE_IDENTIFIER,
            "00000000-0000-4000-8000-000000000000",
        )],
    ));
    assert_eq!(failure(&resp), ResultReason::ITEM_NOT_FOUND.0);

    // Batch Error Continuation Option: Continue runs every item; Stop (the default) stops.
    let batch = |continuation: Option<u32>| {
        let header = continuation
            .map(|c| vec![en(Tag::BATCH_ERROR_CONTINUATION_OPTION, c)])
            .unwrap_or_default();
        request(
            (1, 2),
            header,
            vec![
                (
                    Operation::GET,
                    Some(vec![1]),
                    vec![text(Tag::UNIQUE_IDENTIFIER, "missing")],
                ),
                (Operation::DISCOVER_VERSIONS, Some(vec![2]), vec![]),
            ],
        )
    };
    let resp = kmip.call(&batch(Some(1)));
    let answered = items(&resp);
    assert_eq!(answered.len(), 2);
    assert_eq!(status(answered[0]).0, ResultStatus::OPERATION_FAILED.0);
    payload(answered[1]);
    let resp = kmip.call(&batch(None));
    assert_eq!(items(&resp).len(), 1);

    // Many requests on one connection, and the server is still well.
    let answers = kmip.rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(kmip.addr).await.unwrap();
        let mut tls = TlsConnector::from(kmip.tls.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut n = 0;
        for _ in 0..20 {
            tls.write_all(&encode(&one(Operation::DISCOVER_VERSIONS, None, vec![])))
                .await
                .unwrap();
            let resp = read_message(&mut tls).await.unwrap();
            assert_eq!(ok_payload(&resp).len(), 7);
            n += 1;
        }
        n
    });
    assert_eq!(answers, 20);
}

#[test]
fn client_certificates_unknown_unregistered_registered_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-clients", &[]);
    let instance = server.dev["instance_id"].as_str().unwrap().to_owned();
    let discover = one(Operation::DISCOVER_VERSIONS, None, vec![]);
    let create = one(
        Operation::CREATE,
        None,
        vec![
            en(Tag::OBJECT_TYPE, 2),
            st(
                Tag::TEMPLATE_ATTRIBUTE,
                vec![
                    attr("Cryptographic Algorithm", V::Enumeration(3)),
                    attr("Cryptographic Length", V::Integer(128)),
                ],
            ),
        ],
    );

    // A certificate from another CA: refused by the TLS handshake, no KMIP answer at all.
    let other_ca = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = params.self_signed(&other_ca).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let issuer = rcgen::Issuer::new(params, &other_ca);
    let stranger = leaf.clone().signed_by(&leaf_key, &issuer).unwrap();
    let kmip = Kmip::new(
        &server,
        stranger.pem().as_bytes(),
        leaf_key.serialize_pem().as_bytes(),
    );
    assert!(kmip.raw(&encode(&discover)).is_none());
    drop(other);

    // A certificate from the dev CA that is not registered: Authentication Not Successful.
    let ca_key_pem = std::fs::read_to_string(tmp.path().join("data/tls/ca-key.pem")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).unwrap();
    // The dev CA's subject, as `keyfort server --dev` writes it (src/tls.rs).
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, DEV_ORGANIZATION);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEV_CA_COMMON_NAME);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let dev_issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let app_key = rcgen::KeyPair::generate().unwrap();
    let app = leaf.signed_by(&app_key, &dev_issuer).unwrap();
    let app_pem = tmp.path().join("app.pem");
    std::fs::write(&app_pem, app.pem()).unwrap();
    let kmip = Kmip::new(
        &server,
        app.pem().as_bytes(),
        app_key.serialize_pem().as_bytes(),
    );
    assert_eq!(
        failure(&kmip.call(&discover)),
        ResultReason::AUTHENTICATION_NOT_SUCCESSFUL.0
    );

    // Registered as Reader through the CLI: it may discover and locate, not create.
    let added = server.json(&[
        "kmip",
        "client",
        "add",
        "--cert",
        app_pem.to_str().unwrap(),
        "--instance",
        &instance,
        "--role",
        "Reader",
    ]);
    assert_eq!(added["role"], "Reader");
    let fingerprint = added["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 64);
    assert_eq!(ok_payload(&kmip.call(&discover)).len(), 7);
    assert_eq!(
        failure(&kmip.call(&create)),
        ResultReason::PERMISSION_DENIED.0
    );
    ok_payload(&kmip.call(&one(Operation::LOCATE, None, vec![])));
    let listed = server.json(&["kmip", "client", "list"]);
    assert!(listed.to_string().contains(&fingerprint), "{listed}");

    // Promoted to Writer through the admin API: now it creates.
    let (code, body) = server.api().post(
        "/api/keyfort/v1/kmip/clients",
        &serde_json::json!({"certificate": app.pem(), "instance": instance, "role": "Writer"}),
    );
    assert_eq!(code, 201, "{body}");
    ok_payload(&kmip.call(&create));

    // Removed: refused again.
    let out = server.cli(&["kmip", "client", "remove", &fingerprint]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        failure(&kmip.call(&discover)),
        ResultReason::AUTHENTICATION_NOT_SUCCESSFUL.0
    );
}

fn payload_struct(p: &[Item]) -> Struct<'_> {
    Struct {
        tag: Tag::RESPONSE_PAYLOAD,
        items: p,
    }
}

fn key_material(p: &[Item], object: Tag) -> (u32, V) {
    let block = payload_struct(p)
        .child(object)
        .unwrap()
        .unwrap()
        .child(Tag::KEY_BLOCK)
        .unwrap()
        .unwrap();
    let format = block.enumeration(Tag::KEY_FORMAT_TYPE).unwrap();
    let value = match block.get(Tag::KEY_VALUE).unwrap() {
        Item {
            value: V::Structure(c),
            ..
        } => c[0].value.clone(),
        other => other.value.clone(),
    };
    (format, value)
}

#[test]
fn operations_in_kmip_1_4_and_2_1() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-ops", &[]);
    let kmip = Kmip::dev(&server);
    let v14 =
        |op: Operation, payload: Vec<Item>| request((1, 4), vec![], vec![(op, None, payload)]);
    let v21 =
        |op: Operation, payload: Vec<Item>| request((2, 1), vec![], vec![(op, None, payload)]);
    let uid = |s: &str| text(Tag::UNIQUE_IDENTIFIER, s);

    // KMIP 2.1: Create with an Attributes structure, answered in 2.1.
    let resp = kmip.call(&v21(
        Operation::CREATE,
        vec![
            en(Tag::OBJECT_TYPE, 2),
            st(
                Tag::ATTRIBUTES,
                vec![
                    en(Tag::CRYPTOGRAPHIC_ALGORITHM, 3),
                    int(Tag::CRYPTOGRAPHIC_LENGTH, 128),
                    int(Tag::CRYPTOGRAPHIC_USAGE_MASK, 0x0C | 0x10),
                ],
            ),
        ],
    ));
    assert_eq!(header_version(&resp), (2, 1));
    let kek = uid_of(&ok_payload(&resp));
    // Set Attribute (2.x only) and Get Attributes by Attribute Reference.
    let resp = kmip.call(&v21(
        Operation::SET_ATTRIBUTE,
        vec![
            uid(&kek),
            st(
                Tag::NEW_ATTRIBUTE,
                vec![text(Tag::CONTACT_INFORMATION, "ops@example.com")],
            ),
        ],
    ));
    ok_payload(&resp);
    let resp = kmip.call(&v14(
        Operation::SET_ATTRIBUTE,
        vec![
            uid(&kek),
            st(
                Tag::NEW_ATTRIBUTE,
                vec![text(Tag::CONTACT_INFORMATION, "x")],
            ),
        ],
    ));
    assert_eq!(failure(&resp), ResultReason::OPERATION_NOT_SUPPORTED.0);
    let resp = kmip.call(&v21(
        Operation::GET_ATTRIBUTES,
        vec![
            uid(&kek),
            en(Tag::ATTRIBUTE_REFERENCE, Tag::CONTACT_INFORMATION.value()),
            en(Tag::ATTRIBUTE_REFERENCE, Tag::CRYPTOGRAPHIC_LENGTH.value()),
        ],
    ));
    let p = ok_payload(&resp);
    let attributes = payload_struct(&p).child(Tag::ATTRIBUTES).unwrap().unwrap();
    assert_eq!(
        attributes.text(Tag::CONTACT_INFORMATION).unwrap(),
        "ops@example.com"
    );
    assert_eq!(attributes.integer(Tag::CRYPTOGRAPHIC_LENGTH).unwrap(), 128);
    let resp = kmip.call(&v21(Operation::GET_ATTRIBUTE_LIST, vec![uid(&kek)]));
    let p = ok_payload(&resp);
    assert!(
        p.contains(&en(Tag::ATTRIBUTE_REFERENCE, Tag::STATE.value())),
        "{p:?}"
    );
    // A read-only attribute cannot be set.
    let resp = kmip.call(&v21(
        Operation::SET_ATTRIBUTE,
        vec![uid(&kek), st(Tag::NEW_ATTRIBUTE, vec![en(Tag::STATE, 2)])],
    ));
    assert_eq!(failure(&resp), ResultReason::ATTRIBUTE_READ_ONLY.0);

    // Modify and delete a custom attribute (1.4).
    for (op, a) in [
        (Operation::ADD_ATTRIBUTE, "first"),
        (Operation::MODIFY_ATTRIBUTE, "second"),
    ] {
        let resp = kmip.call(&v14(
            op,
            vec![uid(&kek), attr("x-Owner", V::TextString(a.into()))],
        ));
        ok_payload(&resp);
    }
    let resp = kmip.call(&v14(
        Operation::GET_ATTRIBUTES,
        vec![uid(&kek), text(Tag::ATTRIBUTE_NAME, "x-Owner")],
    ));
    assert_eq!(
        attrs(&ok_payload(&resp)),
        [("x-Owner".to_owned(), V::TextString("second".into()))]
    );
    let resp = kmip.call(&v14(
        Operation::DELETE_ATTRIBUTE,
        vec![uid(&kek), text(Tag::ATTRIBUTE_NAME, "x-Owner")],
    ));
    ok_payload(&resp);
    let resp = kmip.call(&v14(
        Operation::DELETE_ATTRIBUTE,
        vec![uid(&kek), text(Tag::ATTRIBUTE_NAME, "x-Owner")],
    ));
    assert_eq!(failure(&resp), ResultReason::ITEM_NOT_FOUND.0);

    // Create + Activate in one batch through the ID Placeholder; Encrypt in 1.4 returns the tag.
    let resp = kmip.call(&request(
        (1, 4),
        vec![],
        vec![
            (
                Operation::CREATE,
                Some(vec![1]),
                vec![
                    en(Tag::OBJECT_TYPE, 2),
                    st(
                        Tag::TEMPLATE_ATTRIBUTE,
                        vec![
                            attr("Cryptographic Algorithm", V::Enumeration(3)),
                            attr("Cryptographic Length", V::Integer(256)),
                        ],
                    ),
                ],
            ),
            (Operation::ACTIVATE, Some(vec![2]), vec![]),
        ],
    ));
    let answered = items(&resp);
    let dek = uid_of(&payload(answered[0]));
    assert_eq!(uid_of(&payload(answered[1])), dek);
    let resp = kmip.call(&v14(
        Operation::ENCRYPT,
        vec![
            uid(&dek),
            st(
                Tag::CRYPTOGRAPHIC_PARAMETERS,
                vec![en(Tag::BLOCK_CIPHER_MODE, 9)],
            ),
            Item::new(Tag::DATA, V::ByteString(b"sixteen byte msg".to_vec())),
            Item::new(
                Tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA,
                V::ByteString(b"aad".to_vec()),
            ),
        ],
    ));
    let p = ok_payload(&resp);
    let p = payload_struct(&p);
    let ct = p.bytes(Tag::DATA).unwrap().to_vec();
    let iv = p.bytes(Tag::IV_COUNTER_NONCE).unwrap().to_vec();
    let tag = p.bytes(Tag::AUTHENTICATED_ENCRYPTION_TAG).unwrap().to_vec();
    assert_eq!((ct.len(), iv.len(), tag.len()), (16, 12, 16));
    let decrypt = |aad: &[u8]| {
        kmip.call(&v14(
            Operation::DECRYPT,
            vec![
                uid(&dek),
                st(
                    Tag::CRYPTOGRAPHIC_PARAMETERS,
                    vec![en(Tag::BLOCK_CIPHER_MODE, 9)],
                ),
                Item::new(Tag::DATA, V::ByteString(ct.clone())),
                Item::new(Tag::IV_COUNTER_NONCE, V::ByteString(iv.clone())),
                Item::new(
                    Tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA,
                    V::ByteString(aad.to_vec()),
                ),
                Item::new(
                    Tag::AUTHENTICATED_ENCRYPTION_TAG,
                    V::ByteString(tag.clone()),
                ),
            ],
        ))
    };
    let p = ok_payload(&decrypt(b"aad"));
    assert_eq!(
        payload_struct(&p).bytes(Tag::DATA).unwrap(),
        b"sixteen byte msg"
    );
    assert_eq!(
        failure(&decrypt(b"other")),
        ResultReason::CRYPTOGRAPHIC_FAILURE.0
    );

    // Get with a Key Wrapping Specification: the DEK wrapped by the KEK (RFC 3394).
    let resp = kmip.call(&v14(Operation::ACTIVATE, vec![uid(&kek)]));
    ok_payload(&resp);
    let raw_dek = key_material(
        &ok_payload(&kmip.call(&v14(Operation::GET, vec![uid(&dek)]))),
        Tag::SYMMETRIC_KEY,
    )
    .1;
    let raw_kek = key_material(
        &ok_payload(&kmip.call(&v14(Operation::GET, vec![uid(&kek)]))),
        Tag::SYMMETRIC_KEY,
    )
    .1;
    let (V::ByteString(raw_dek), V::ByteString(raw_kek)) = (raw_dek, raw_kek) else {
        panic!("raw keys");
    };
    let resp = kmip.call(&v14(
        Operation::GET,
        vec![
            uid(&dek),
            st(
                Tag::KEY_WRAPPING_SPECIFICATION,
                vec![
                    en(Tag::WRAPPING_METHOD, 1),
                    st(
                        Tag::ENCRYPTION_KEY_INFORMATION,
                        vec![
                            uid(&kek),
                            st(
                                Tag::CRYPTOGRAPHIC_PARAMETERS,
                                vec![en(Tag::BLOCK_CIPHER_MODE, 0x0D)],
                            ),
                        ],
                    ),
                    en(Tag::ENCODING_OPTION, 1),
                ],
            ),
        ],
    ));
    let p = ok_payload(&resp);
    let (format, wrapped) = key_material(&p, Tag::SYMMETRIC_KEY);
    assert_eq!(format, 1);
    let V::ByteString(wrapped) = wrapped else {
        panic!("wrapped key value")
    };
    assert_eq!(wrapped.len(), 40);
    let unwrapped = keyfort_crypto::aes::key_unwrap(&raw_kek, &wrapped).unwrap();
    assert_eq!(unwrapped.as_slice(), raw_dek.as_slice());

    // Transparent Symmetric Key format, and a format that does not fit.
    let resp = kmip.call(&v14(
        Operation::GET,
        vec![uid(&dek), en(Tag::KEY_FORMAT_TYPE, 7)],
    ));
    let (format, value) = key_material(&ok_payload(&resp), Tag::SYMMETRIC_KEY);
    assert_eq!(format, 7);
    assert_eq!(
        value,
        V::Structure(vec![Item::new(Tag::KEY, V::ByteString(raw_dek.clone()))])
    );
    let resp = kmip.call(&v14(
        Operation::GET,
        vec![uid(&dek), en(Tag::KEY_FORMAT_TYPE, 3)],
    ));
    assert_eq!(
        failure(&resp),
        ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED.0
    );

    // Key pairs: PKCS#8 and PKCS#1 private keys, PKCS#1 and X.509 public keys.
    let resp = kmip.call(&v14(
        Operation::CREATE_KEY_PAIR,
        vec![st(
            Tag::COMMON_TEMPLATE_ATTRIBUTE,
            vec![
                attr("Cryptographic Algorithm", V::Enumeration(4)),
                attr("Cryptographic Length", V::Integer(2048)),
            ],
        )],
    ));
    let p = ok_payload(&resp);
    let p = payload_struct(&p);
    let private = p
        .text(Tag::PRIVATE_KEY_UNIQUE_IDENTIFIER)
        .unwrap()
        .to_owned();
    let public = p
        .text(Tag::PUBLIC_KEY_UNIQUE_IDENTIFIER)
        .unwrap()
        .to_owned();
    let get = |id: &str, format: u32, object: Tag| {
        let resp = kmip.call(&v14(
            Operation::GET,
            vec![uid(id), en(Tag::KEY_FORMAT_TYPE, format)],
        ));
        match key_material(&ok_payload(&resp), object) {
            (f, V::ByteString(b)) if f == format => b,
            other => panic!("{other:?}"),
        }
    };
    let pkcs8 = get(&private, 4, Tag::PRIVATE_KEY);
    let pkcs1 = get(&private, 3, Tag::PRIVATE_KEY);
    assert!(
        pkcs8.windows(pkcs1.len()).any(|w| w == pkcs1.as_slice()),
        "PKCS#1 inside PKCS#8"
    );
    let spki = get(&public, 5, Tag::PUBLIC_KEY);
    let rsa_public = get(&public, 3, Tag::PUBLIC_KEY);
    assert!(spki.ends_with(&rsa_public));
    let signer = keyfort_crypto::rsa::PrivateKey::from_pkcs8(&pkcs8).unwrap();
    assert_eq!(signer.public_key().to_spki_der(), spki.as_slice());

    // Re-key: a new active key, linked both ways.
    let resp = kmip.call(&v14(Operation::RE_KEY, vec![uid(&dek)]));
    let new = uid_of(&ok_payload(&resp));
    assert_ne!(new, dek);
    let resp = kmip.call(&v14(
        Operation::GET_ATTRIBUTES,
        vec![
            uid(&new),
            text(Tag::ATTRIBUTE_NAME, "State"),
            text(Tag::ATTRIBUTE_NAME, "Link"),
        ],
    ));
    let a = attrs(&ok_payload(&resp));
    assert!(
        a.contains(&("State".to_owned(), V::Enumeration(2))),
        "{a:?}"
    );
    assert!(format!("{a:?}").contains(&dek));

    // Check against the usage mask; RNG Retrieve; Query lists the operations.
    let check = |mask: i32| {
        kmip.call(&v14(
            Operation::CHECK,
            vec![uid(&kek), int(Tag::CRYPTOGRAPHIC_USAGE_MASK, mask)],
        ))
    };
    ok_payload(&check(0x04));
    assert_eq!(failure(&check(0x01)), ResultReason::INVALID_FIELD.0);
    let resp = kmip.call(&v14(
        Operation::RNG_RETRIEVE,
        vec![int(Tag::DATA_LENGTH, 48)],
    ));
    assert_eq!(
        payload_struct(&ok_payload(&resp))
            .bytes(Tag::DATA)
            .unwrap()
            .len(),
        48
    );
    let resp = kmip.call(&v14(Operation::QUERY, vec![en(Tag::QUERY_FUNCTION, 1)]));
    let ops = ok_payload(&resp);
    assert!(ops.contains(&en(Tag::OPERATION, Operation::MAC_VERIFY.0)));
    assert!(!ops.contains(&en(Tag::OPERATION, Operation::SET_ATTRIBUTE.0)));

    // Locate with Maximum Items and Offset Items; Located Items counts every match.
    let resp = kmip.call(&v14(
        Operation::LOCATE,
        vec![
            int(Tag::MAXIMUM_ITEMS, 1),
            int(Tag::OFFSET_ITEMS, 1),
            attr("Object Type", V::Enumeration(2)),
        ],
    ));
    let p = ok_payload(&resp);
    assert_eq!(payload_struct(&p).integer(Tag::LOCATED_ITEMS).unwrap(), 3);
    assert_eq!(
        p.iter().filter(|i| i.tag == Tag::UNIQUE_IDENTIFIER).count(),
        1
    );

    // An active key cannot be destroyed before it is revoked (KMIP 1.4 §4.21).
    let resp = kmip.call(&v14(Operation::DESTROY, vec![uid(&kek)]));
    assert_eq!(failure(&resp), ResultReason::ILLEGAL_OPERATION.0);
    let resp = kmip.call(&v14(
        Operation::REVOKE,
        vec![
            uid(&kek),
            st(
                Tag::REVOCATION_REASON,
                vec![en(Tag::REVOCATION_REASON_CODE, 2)],
            ),
        ],
    ));
    ok_payload(&resp);
    let resp = kmip.call(&v14(
        Operation::GET_ATTRIBUTES,
        vec![uid(&kek), text(Tag::ATTRIBUTE_NAME, "State")],
    ));
    assert_eq!(
        attrs(&ok_payload(&resp)),
        [("State".to_owned(), V::Enumeration(4))]
    );
    ok_payload(&kmip.call(&v14(Operation::DESTROY, vec![uid(&kek)])));
    let resp = kmip.call(&v21(
        Operation::GET_ATTRIBUTES,
        vec![uid(&kek), en(Tag::ATTRIBUTE_REFERENCE, Tag::STATE.value())],
    ));
    let p = ok_payload(&resp);
    let attributes = payload_struct(&p).child(Tag::ATTRIBUTES).unwrap().unwrap();
    assert_eq!(attributes.enumeration(Tag::STATE).unwrap(), 6);

    // Import with the client's identifier, then Export with the attributes (2.x only).
    let imported = "6f1c0a5e-3b7d-4c2a-9e8f-0123456789ab";
    let material = vec![0x5A; 32];
    let import = v21(
        Operation::IMPORT,
        vec![
            uid(imported),
            en(Tag::OBJECT_TYPE, 2),
            st(
                Tag::ATTRIBUTES,
                vec![text(Tag::CONTACT_INFORMATION, "importer")],
            ),
            st(
                Tag::SYMMETRIC_KEY,
                vec![st(
                    Tag::KEY_BLOCK,
                    vec![
                        en(Tag::KEY_FORMAT_TYPE, 1),
                        st(
                            Tag::KEY_VALUE,
                            vec![Item::new(
                                Tag::KEY_MATERIAL,
                                V::ByteString(material.clone()),
                            )],
                        ),
                        en(Tag::CRYPTOGRAPHIC_ALGORITHM, 3),
                        int(Tag::CRYPTOGRAPHIC_LENGTH, 256),
                    ],
                )],
            ),
        ],
    );
    assert_eq!(uid_of(&ok_payload(&kmip.call(&import))), imported);
    assert_eq!(
        failure(&kmip.call(&import)),
        ResultReason::OBJECT_ALREADY_EXISTS.0
    );
    let resp = kmip.call(&v21(Operation::EXPORT, vec![uid(imported)]));
    let p = ok_payload(&resp);
    let exported = payload_struct(&p).child(Tag::ATTRIBUTES).unwrap().unwrap();
    assert_eq!(exported.text(Tag::CONTACT_INFORMATION).unwrap(), "importer");
    assert_eq!(exported.enumeration(Tag::STATE).unwrap(), 1);
    assert_eq!(
        key_material(&p, Tag::SYMMETRIC_KEY),
        (1, V::ByteString(material))
    );
    let resp = kmip.call(&v14(Operation::EXPORT, vec![uid(imported)]));
    assert_eq!(failure(&resp), ResultReason::OPERATION_NOT_SUPPORTED.0);
}

fn v14(op: Operation, payload: Vec<Item>) -> Item {
    request((1, 4), vec![], vec![(op, None, payload)])
}

fn v21(op: Operation, payload: Vec<Item>) -> Item {
    request((2, 1), vec![], vec![(op, None, payload)])
}

fn uid(s: &str) -> Item {
    text(Tag::UNIQUE_IDENTIFIER, s)
}

/// A KMIP 2.x Vendor Attribute (KMIP 2.0 §4.53): `Attribute {Vendor Identification, Attribute
/// Name, Attribute Value}`, or without the value an Attribute Reference.
fn vendor(tag: Tag, name: &str, value: Option<&str>) -> Item {
    let mut c = vec![
        text(Tag::VENDOR_IDENTIFICATION, "x"),
        text(Tag::ATTRIBUTE_NAME, name),
    ];
    if let Some(v) = value {
        c.push(text(Tag::ATTRIBUTE_VALUE, v));
    }
    st(tag, c)
}

fn symmetric_attributes(extra: Vec<Item>) -> Item {
    let mut c = vec![
        en(Tag::CRYPTOGRAPHIC_ALGORITHM, 3),
        int(Tag::CRYPTOGRAPHIC_LENGTH, 256),
    ];
    c.extend(extra);
    st(Tag::ATTRIBUTES, c)
}

/// The Attributes structure of a 2.x Get Attributes answer.
fn v2_attributes(p: &[Item]) -> Vec<Item> {
    match &payload_struct(p).get(Tag::ATTRIBUTES).unwrap().value {
        V::Structure(c) => c.clone(),
        _ => panic!("Attributes"),
    }
}

fn located(p: &[Item]) -> Vec<String> {
    p.iter()
        .filter(|i| i.tag == Tag::UNIQUE_IDENTIFIER)
        .map(|i| match &i.value {
            V::TextString(s) => s.clone(),
            _ => panic!("uid"),
        })
        .collect()
}

#[test]
fn custom_attributes_as_kmip_2_vendor_attributes_and_1_x_custom_attributes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-vendor", &[]);
    let kmip = Kmip::dev(&server);

    // Create (2.1) with a Vendor Attribute among the Attributes.
    let resp = kmip.call(&v21(
        Operation::CREATE,
        vec![
            en(Tag::OBJECT_TYPE, 2),
            symmetric_attributes(vec![vendor(Tag::ATTRIBUTE, "Owner", Some("alice-7f3"))]),
        ],
    ));
    let key = uid_of(&ok_payload(&resp));
    // Add Attribute (2.1): New Attribute holding a Vendor Attribute.
    let resp = kmip.call(&v21(
        Operation::ADD_ATTRIBUTE,
        vec![
            uid(&key),
            st(
                Tag::NEW_ATTRIBUTE,
                vec![vendor(Tag::ATTRIBUTE, "Product", Some("VMware vSphere"))],
            ),
        ],
    ));
    assert_eq!(ok_payload(&resp), vec![uid(&key)]);
    // Get Attributes (2.1) by vendor Attribute Reference: answered as Vendor Attributes.
    let resp = kmip.call(&v21(
        Operation::GET_ATTRIBUTES,
        vec![
            uid(&key),
            vendor(Tag::ATTRIBUTE_REFERENCE, "Product", None),
            vendor(Tag::ATTRIBUTE_REFERENCE, "Owner", None),
        ],
    ));
    let got = v2_attributes(&ok_payload(&resp));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&vendor(Tag::ATTRIBUTE, "Product", Some("VMware vSphere"))));
    assert!(got.contains(&vendor(Tag::ATTRIBUTE, "Owner", Some("alice-7f3"))));
    // The same attributes are the 1.x custom attributes x-Product and x-Owner.
    let resp = kmip.call(&v14(
        Operation::GET_ATTRIBUTES,
        vec![
            uid(&key),
            text(Tag::ATTRIBUTE_NAME, "x-Product"),
            text(Tag::ATTRIBUTE_NAME, "x-Owner"),
        ],
    ));
    let a = attrs(&ok_payload(&resp));
    assert!(a.contains(&("x-Product".into(), V::TextString("VMware vSphere".into()))));
    assert!(a.contains(&("x-Owner".into(), V::TextString("alice-7f3".into()))));
    // A custom attribute added in 1.4 reads back as a Vendor Attribute in 2.1.
    let resp = kmip.call(&v14(
        Operation::ADD_ATTRIBUTE,
        vec![
            uid(&key),
            attr("x-Component", V::TextString("ESXi Server".into())),
        ],
    ));
    ok_payload(&resp);
    let resp = kmip.call(&v21(
        Operation::GET_ATTRIBUTES,
        vec![
            uid(&key),
            vendor(Tag::ATTRIBUTE_REFERENCE, "Component", None),
        ],
    ));
    assert_eq!(
        v2_attributes(&ok_payload(&resp)),
        vec![vendor(Tag::ATTRIBUTE, "Component", Some("ESXi Server"))]
    );
    // All attributes (2.1, no reference) include the vendor ones; the attribute list names them.
    let resp = kmip.call(&v21(Operation::GET_ATTRIBUTES, vec![uid(&key)]));
    let all = v2_attributes(&ok_payload(&resp));
    assert!(all.contains(&vendor(Tag::ATTRIBUTE, "Owner", Some("alice-7f3"))));
    assert!(all.iter().any(|i| i.tag == Tag::STATE));
    let resp = kmip.call(&v21(Operation::GET_ATTRIBUTE_LIST, vec![uid(&key)]));
    let list = ok_payload(&resp);
    assert!(list.contains(&vendor(Tag::ATTRIBUTE_REFERENCE, "Product", None)));
    assert!(list.contains(&en(Tag::ATTRIBUTE_REFERENCE, Tag::STATE.value())));

    // Set Attribute and Modify Attribute (Current / New Attribute) of a vendor attribute.
    let resp = kmip.call(&v21(
        Operation::SET_ATTRIBUTE,
        vec![
            uid(&key),
            st(
                Tag::NEW_ATTRIBUTE,
                vec![vendor(Tag::ATTRIBUTE, "Product", Some("VMware ESXi"))],
            ),
        ],
    ));
    ok_payload(&resp);
    let resp = kmip.call(&v21(
        Operation::MODIFY_ATTRIBUTE,
        vec![
            uid(&key),
            st(
                Tag::CURRENT_ATTRIBUTE,
                vec![vendor(Tag::ATTRIBUTE, "Product", Some("VMware ESXi"))],
            ),
            st(
                Tag::NEW_ATTRIBUTE,
                vec![vendor(Tag::ATTRIBUTE, "Product", Some("VMware vSAN"))],
            ),
        ],
    ));
    ok_payload(&resp);
    let resp = kmip.call(&v14(
        Operation::GET_ATTRIBUTES,
        vec![uid(&key), text(Tag::ATTRIBUTE_NAME, "x-Product")],
    ));
    assert_eq!(
        attrs(&ok_payload(&resp)),
        [("x-Product".to_owned(), V::TextString("VMware vSAN".into()))]
    );
    // Modify with a Current Attribute that does not match changes nothing.
    let resp = kmip.call(&v21(
        Operation::MODIFY_ATTRIBUTE,
        vec![
            uid(&key),
            st(
                Tag::CURRENT_ATTRIBUTE,
                vec![vendor(Tag::ATTRIBUTE, "Product", Some("no such value"))],
            ),
            st(
                Tag::NEW_ATTRIBUTE,
                vec![vendor(Tag::ATTRIBUTE, "Product", Some("other"))],
            ),
        ],
    ));
    assert_eq!(failure(&resp), ResultReason::ITEM_NOT_FOUND.0);

    // Locate by a vendor attribute (2.1) and by the custom attribute (1.4): only this key.
    let other = uid_of(&ok_payload(&kmip.call(&v21(
        Operation::CREATE,
        vec![
            en(Tag::OBJECT_TYPE, 2),
            symmetric_attributes(vec![vendor(Tag::ATTRIBUTE, "Owner", Some("bob-7f3"))]),
        ],
    ))));
    let resp = kmip.call(&v21(
        Operation::LOCATE,
        vec![st(
            Tag::ATTRIBUTES,
            vec![vendor(Tag::ATTRIBUTE, "Owner", Some("alice-7f3"))],
        )],
    ));
    assert_eq!(located(&ok_payload(&resp)), [key.as_str()]);
    let resp = kmip.call(&v14(
        Operation::LOCATE,
        vec![attr("x-Owner", V::TextString("bob-7f3".into()))],
    ));
    assert_eq!(located(&ok_payload(&resp)), [other]);

    // Delete Attribute (2.1) by Attribute Reference and by Current Attribute.
    let resp = kmip.call(&v21(
        Operation::DELETE_ATTRIBUTE,
        vec![uid(&key), vendor(Tag::ATTRIBUTE_REFERENCE, "Owner", None)],
    ));
    ok_payload(&resp);
    let resp = kmip.call(&v21(
        Operation::DELETE_ATTRIBUTE,
        vec![
            uid(&key),
            st(
                Tag::CURRENT_ATTRIBUTE,
                vec![vendor(Tag::ATTRIBUTE, "Product", Some("VMware vSAN"))],
            ),
        ],
    ));
    ok_payload(&resp);
    let resp = kmip.call(&v21(
        Operation::GET_ATTRIBUTES,
        vec![
            uid(&key),
            vendor(Tag::ATTRIBUTE_REFERENCE, "Owner", None),
            vendor(Tag::ATTRIBUTE_REFERENCE, "Product", None),
            vendor(Tag::ATTRIBUTE_REFERENCE, "Component", None),
        ],
    ));
    assert_eq!(
        v2_attributes(&ok_payload(&resp)),
        vec![vendor(Tag::ATTRIBUTE, "Component", Some("ESXi Server"))]
    );
    let resp = kmip.call(&v21(
        Operation::DELETE_ATTRIBUTE,
        vec![uid(&key), vendor(Tag::ATTRIBUTE_REFERENCE, "Owner", None)],
    ));
    assert_eq!(failure(&resp), ResultReason::ITEM_NOT_FOUND.0);

    // Another vendor's attributes are not kept.
    let resp = kmip.call(&v21(
        Operation::ADD_ATTRIBUTE,
        vec![
            uid(&key),
            st(
                Tag::NEW_ATTRIBUTE,
                vec![st(
                    Tag::ATTRIBUTE,
                    vec![
                        text(Tag::VENDOR_IDENTIFICATION, "acme"),
                        text(Tag::ATTRIBUTE_NAME, "Colour"),
                        text(Tag::ATTRIBUTE_VALUE, "blue"),
                    ],
                )],
            ),
        ],
    ));
    assert_eq!(failure(&resp), ResultReason::UNSUPPORTED_ATTRIBUTE.0);
}

fn undo_header() -> Vec<Item> {
    vec![en(
        Tag::BATCH_ERROR_CONTINUATION_OPTION,
        keyfort_kmip::BatchErrorContinuationOption::UNDO.0,
    )]
}

fn x_attribute(kmip: &Kmip, key: &str, name: &str) -> Vec<(String, V)> {
    let resp = kmip.call(&v14(
        Operation::GET_ATTRIBUTES,
        vec![uid(key), text(Tag::ATTRIBUTE_NAME, name)],
    ));
    attrs(&ok_payload(&resp))
}

#[test]
fn batch_undo_reverts_the_items_before_the_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-undo", &[]);
    let kmip = Kmip::dev(&server);
    let create = |name: &str| {
        vec![
            en(Tag::OBJECT_TYPE, 2),
            st(
                Tag::TEMPLATE_ATTRIBUTE,
                vec![
                    attr("Cryptographic Algorithm", V::Enumeration(3)),
                    attr("Cryptographic Length", V::Integer(256)),
                    attr(
                        "Name",
                        V::Structure(vec![text(Tag::NAME_VALUE, name), en(Tag::NAME_TYPE, 1)]),
                    ),
                ],
            ),
        ]
    };
    let existing = uid_of(&ok_payload(
        &kmip.call(&v14(Operation::CREATE, create("undo-existing"))),
    ));
    ok_payload(&kmip.call(&v14(
        Operation::ADD_ATTRIBUTE,
        vec![
            uid(&existing),
            attr("x-Stage", V::TextString("before".into())),
        ],
    )));
    let missing = "0b6f4c4e-9d2a-4c1b-8f00-000000000000";
    let batch = |header: Vec<Item>| {
        request(
            (1, 4),
            header,
            vec![
                (
                    Operation::MODIFY_ATTRIBUTE,
                    Some(vec![1]),
                    vec![
                        uid(&existing),
                        attr("x-Stage", V::TextString("during".into())),
                    ],
                ),
                (
                    Operation::ADD_ATTRIBUTE,
                    Some(vec![2]),
                    vec![
                        uid(&existing),
                        attr("x-Batch", V::TextString("added".into())),
                    ],
                ),
                (Operation::CREATE, Some(vec![3]), create("undo-created")),
                (
                    Operation::ADD_ATTRIBUTE,
                    Some(vec![4]),
                    vec![attr("x-Stage", V::TextString("new".into()))],
                ),
                (Operation::RE_KEY, Some(vec![5]), vec![uid(&existing)]),
                (Operation::GET, Some(vec![6]), vec![uid(missing)]),
                (Operation::ACTIVATE, Some(vec![7]), vec![uid(&existing)]),
            ],
        )
    };
    let resp = kmip.call(&batch(undo_header()));
    let answered = items(&resp);
    assert_eq!(answered.len(), 6, "{resp:?}");
    for (n, item) in answered[..5].iter().enumerate() {
        let s = Struct::of(item).unwrap();
        assert_eq!(
            status(item),
            (ResultStatus::OPERATION_UNDONE.0, None),
            "{item:?}"
        );
        assert_eq!(
            s.bytes(Tag::UNIQUE_BATCH_ITEM_ID).unwrap(),
            [u8::try_from(n + 1).unwrap()]
        );
        assert!(s.get(Tag::RESPONSE_PAYLOAD).is_none());
    }
    assert_eq!(
        status(answered[5]),
        (
            ResultStatus::OPERATION_FAILED.0,
            Some(ResultReason::ITEM_NOT_FOUND.0)
        )
    );
    // Every effect is gone: the attribute has its old value, the added one is absent, the
    // created and re-keyed keys do not exist and the existing key has no link to a replacement;
    // the item after the failure (Activate) did not run.
    assert!(x_attribute(&kmip, &existing, "Link").is_empty());
    let resp = kmip.call(&v14(
        Operation::LOCATE,
        vec![attr("Object Type", V::Enumeration(2))],
    ));
    assert_eq!(located(&ok_payload(&resp)), [existing.as_str()]);
    assert_eq!(
        x_attribute(&kmip, &existing, "x-Stage"),
        [("x-Stage".to_owned(), V::TextString("before".into()))]
    );
    assert!(x_attribute(&kmip, &existing, "x-Batch").is_empty());
    let by_name = |name: &str| {
        located(&ok_payload(&kmip.call(&v14(
            Operation::LOCATE,
            vec![attr(
                "Name",
                V::Structure(vec![text(Tag::NAME_VALUE, name), en(Tag::NAME_TYPE, 1)]),
            )],
        ))))
    };
    assert!(by_name("undo-created").is_empty());
    assert_eq!(by_name("undo-existing"), [existing.as_str()]);
    assert_eq!(
        x_attribute(&kmip, &existing, "State"),
        [("State".to_owned(), V::Enumeration(1))]
    );

    // The same batch with Stop keeps what ran before the failure.
    let resp = kmip.call(&batch(vec![en(
        Tag::BATCH_ERROR_CONTINUATION_OPTION,
        keyfort_kmip::BatchErrorContinuationOption::STOP.0,
    )]));
    let answered = items(&resp);
    assert_eq!(answered.len(), 6);
    assert_eq!(x_attribute(&kmip, &existing, "Link").len(), 1);
    let created = uid_of(&payload(answered[2]));
    assert_eq!(by_name("undo-created"), [created.as_str()]);
    assert_eq!(
        x_attribute(&kmip, &existing, "x-Stage"),
        [("x-Stage".to_owned(), V::TextString("during".into()))]
    );
    assert_eq!(
        x_attribute(&kmip, &created, "x-Stage"),
        [("x-Stage".to_owned(), V::TextString("new".into()))]
    );

    // A 2.1 Undo batch undoes a key pair and a vendor attribute the same way.
    let resp = kmip.call(&request(
        (2, 1),
        undo_header(),
        vec![
            (
                Operation::CREATE_KEY_PAIR,
                None,
                vec![st(
                    Tag::COMMON_ATTRIBUTES,
                    vec![
                        en(Tag::CRYPTOGRAPHIC_ALGORITHM, 0x1A),
                        int(Tag::CRYPTOGRAPHIC_LENGTH, 256),
                        st(
                            Tag::NAME,
                            vec![text(Tag::NAME_VALUE, "undo-pair"), en(Tag::NAME_TYPE, 1)],
                        ),
                    ],
                )],
            ),
            (
                Operation::SET_ATTRIBUTE,
                None,
                vec![
                    uid(&existing),
                    st(
                        Tag::NEW_ATTRIBUTE,
                        vec![vendor(Tag::ATTRIBUTE, "Stage", Some("v2"))],
                    ),
                ],
            ),
            (Operation::GET, None, vec![uid(missing)]),
        ],
    ));
    let answered = items(&resp);
    assert_eq!(status(answered[0]).0, ResultStatus::OPERATION_UNDONE.0);
    assert_eq!(status(answered[1]).0, ResultStatus::OPERATION_UNDONE.0);
    assert_eq!(status(answered[2]).0, ResultStatus::OPERATION_FAILED.0);
    assert!(by_name("undo-pair").is_empty());
    assert_eq!(
        x_attribute(&kmip, &existing, "x-Stage"),
        [("x-Stage".to_owned(), V::TextString("during".into()))]
    );

    // Activate, Revoke and Destroy are undone: the objects get their states (and dates) back.
    let resp = kmip.call(&request(
        (1, 4),
        undo_header(),
        vec![
            (Operation::ACTIVATE, Some(vec![1]), vec![uid(&existing)]),
            (Operation::GET, Some(vec![2]), vec![uid(missing)]),
        ],
    ));
    let answered = items(&resp);
    assert_eq!(
        status(answered[0]),
        (ResultStatus::OPERATION_UNDONE.0, None)
    );
    assert_eq!(status(answered[1]).0, ResultStatus::OPERATION_FAILED.0);
    assert_eq!(
        x_attribute(&kmip, &existing, "State"),
        [("State".to_owned(), V::Enumeration(1))]
    );
    assert!(x_attribute(&kmip, &existing, "Activation Date").is_empty());
    let active = uid_of(&ok_payload(
        &kmip.call(&v14(Operation::CREATE, create("undo-active"))),
    ));
    ok_payload(&kmip.call(&v14(Operation::ACTIVATE, vec![uid(&active)])));
    let activated = x_attribute(&kmip, &active, "Activation Date");
    assert_eq!(activated.len(), 1);
    let resp = kmip.call(&request(
        (1, 4),
        undo_header(),
        vec![
            (
                Operation::REVOKE,
                None,
                vec![
                    uid(&active),
                    st(
                        Tag::REVOCATION_REASON,
                        vec![en(Tag::REVOCATION_REASON_CODE, 5)],
                    ),
                ],
            ),
            (Operation::DESTROY, None, vec![uid(&active)]),
            (Operation::GET, None, vec![uid(missing)]),
        ],
    ));
    let answered = items(&resp);
    assert_eq!(status(answered[0]).0, ResultStatus::OPERATION_UNDONE.0);
    assert_eq!(status(answered[1]).0, ResultStatus::OPERATION_UNDONE.0);
    assert_eq!(status(answered[2]).0, ResultStatus::OPERATION_FAILED.0);
    assert_eq!(
        x_attribute(&kmip, &active, "State"),
        [("State".to_owned(), V::Enumeration(2))]
    );
    assert_eq!(x_attribute(&kmip, &active, "Activation Date"), activated);
    assert!(x_attribute(&kmip, &active, "Deactivation Date").is_empty());
    assert!(x_attribute(&kmip, &active, "Destroy Date").is_empty());
    // Still usable: it encrypts.
    ok_payload(&kmip.call(&v14(
        Operation::ENCRYPT,
        vec![
            uid(&active),
            st(
                Tag::CRYPTOGRAPHIC_PARAMETERS,
                vec![en(Tag::BLOCK_CIPHER_MODE, 9)],
            ),
            Item::new(Tag::DATA, V::ByteString(b"still active".to_vec())),
        ],
    )));

    // Import replacing an object cannot be undone: it may only come last, otherwise nothing
    // runs.
    let resp = kmip.call(&request(
        (2, 1),
        undo_header(),
        vec![
            (
                Operation::IMPORT,
                None,
                vec![
                    uid(&active),
                    en(Tag::OBJECT_TYPE, 2),
                    Item::new(Tag::REPLACE_EXISTING, V::Boolean(true)),
                    st(Tag::ATTRIBUTES, vec![]),
                    symmetric_object(&[0x33; 32]),
                ],
            ),
            (Operation::GET, None, vec![uid(missing)]),
        ],
    ));
    for item in items(&resp) {
        assert_eq!(
            status(item),
            (
                ResultStatus::OPERATION_FAILED.0,
                Some(ResultReason::FEATURE_NOT_SUPPORTED.0)
            )
        );
    }
    assert_eq!(
        x_attribute(&kmip, &active, "State"),
        [("State".to_owned(), V::Enumeration(2))]
    );
    // Query Capabilities (1.4) says Undo and Continue are supported.
    let resp = kmip.call(&v14(Operation::QUERY, vec![en(Tag::QUERY_FUNCTION, 0x0B)]));
    let p = ok_payload(&resp);
    let capabilities = payload_struct(&p)
        .child(Tag::CAPABILITY_INFORMATION)
        .unwrap()
        .unwrap();
    assert_eq!(
        capabilities.opt_bool(Tag::BATCH_UNDO_CAPABILITY).unwrap(),
        Some(true)
    );
    assert_eq!(
        capabilities
            .opt_bool(Tag::BATCH_CONTINUE_CAPABILITY)
            .unwrap(),
        Some(true)
    );
    // Last, it runs; an Undo batch that succeeds is answered as usual.
    let resp = kmip.call(&request(
        (1, 4),
        undo_header(),
        vec![
            (Operation::GET_ATTRIBUTES, None, vec![uid(&existing)]),
            (Operation::ACTIVATE, None, vec![uid(&existing)]),
        ],
    ));
    for item in items(&resp) {
        payload(item);
    }
}

/// The Big Integers of a Transparent key structure, by tag, as minimal DER INTEGER contents.
fn big_integers(value: &V) -> Vec<(Tag, Vec<u8>)> {
    let V::Structure(items) = value else {
        panic!("transparent key material: {value:?}")
    };
    items
        .iter()
        .filter_map(|i| match &i.value {
            V::BigInteger(b) => {
                let bytes = b.as_bytes();
                // Strip sign-extension bytes beyond the one DER keeps.
                let mut start = 0;
                while start + 1 < bytes.len() && bytes[start] == 0 && bytes[start + 1] & 0x80 == 0 {
                    start += 1;
                }
                Some((i.tag, bytes[start..].to_vec()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn transparent_rsa_and_ec_keys_match_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        tmp.path(),
        "kmip-transparent",
        &[],
    );
    let kmip = Kmip::dev(&server);
    let pair = |alg: u32, bits: i32| {
        let resp = kmip.call(&v21(
            Operation::CREATE_KEY_PAIR,
            vec![st(
                Tag::COMMON_ATTRIBUTES,
                vec![
                    en(Tag::CRYPTOGRAPHIC_ALGORITHM, alg),
                    int(Tag::CRYPTOGRAPHIC_LENGTH, bits),
                ],
            )],
        ));
        let p = ok_payload(&resp);
        let p = payload_struct(&p);
        (
            p.text(Tag::PRIVATE_KEY_UNIQUE_IDENTIFIER)
                .unwrap()
                .to_owned(),
            p.text(Tag::PUBLIC_KEY_UNIQUE_IDENTIFIER)
                .unwrap()
                .to_owned(),
        )
    };
    let get = |message: Item, object: Tag, format: u32| -> V {
        let (f, v) = key_material(&ok_payload(&kmip.call(&message)), object);
        assert_eq!(f, format);
        v
    };
    let bytes = |v: V| match v {
        V::ByteString(b) => b,
        other => panic!("{other:?}"),
    };
    let with_format = |id: &str, format: u32| vec![uid(id), en(Tag::KEY_FORMAT_TYPE, format)];

    // RSA: the eight private components rebuild exactly the PKCS #1 key the server holds.
    let (private, public) = pair(4, 2048);
    let transparent = get(
        v21(Operation::GET, with_format(&private, 0x0A)),
        Tag::PRIVATE_KEY,
        0x0A,
    );
    let components = big_integers(&transparent);
    let order = RSA_PRIVATE_COMPONENTS;
    assert_eq!(components.len(), 8);
    let mut body = der(0x02, &[0]);
    for tag in order {
        let (_, int) = components.iter().find(|(t, _)| *t == tag).unwrap();
        body.extend(der(0x02, int));
    }
    let rebuilt = der(0x30, &body);
    let pkcs1 = bytes(get(
        v21(Operation::GET, with_format(&private, 3)),
        Tag::PRIVATE_KEY,
        3,
    ));
    assert_eq!(rebuilt, pkcs1);
    let pkcs8 = bytes(get(
        v21(Operation::GET, with_format(&private, 4)),
        Tag::PRIVATE_KEY,
        4,
    ));
    let key = keyfort_crypto::rsa::PrivateKey::from_pkcs8(&pkcs8).unwrap();
    let spki = bytes(get(
        v21(Operation::GET, with_format(&public, 5)),
        Tag::PUBLIC_KEY,
        5,
    ));
    assert_eq!(key.public_key().to_spki_der(), spki.as_slice());
    // The public components are the private key's modulus and exponent 65537.
    let public_components = big_integers(&get(
        v21(Operation::GET, with_format(&public, 0x0B)),
        Tag::PUBLIC_KEY,
        0x0B,
    ));
    assert_eq!(
        public_components,
        vec![
            components[0].clone(),
            (Tag::PUBLIC_EXPONENT, vec![0x01, 0x00, 0x01])
        ]
    );
    assert_eq!(
        components[0].1.len(),
        257,
        "2048-bit modulus with its sign byte"
    );
    // A Transparent RSA format does not fit an EC or symmetric key, nor the other half.
    let resp = kmip.call(&v21(Operation::GET, with_format(&public, 0x0A)));
    assert_eq!(
        failure(&resp),
        ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED.0
    );

    // EC P-256: D rebuilds a signing key whose public point is the Q String of the public key.
    let (private, public) = pair(0x1A, 256);
    let transparent = get(
        v21(Operation::GET, with_format(&private, 0x14)),
        Tag::PRIVATE_KEY,
        0x14,
    );
    let V::Structure(fields) = &transparent else {
        panic!("EC private key")
    };
    assert!(fields.contains(&en(
        Tag::RECOMMENDED_CURVE,
        keyfort_kmip::RecommendedCurve::P_256.0
    )));
    let (_, d) = big_integers(&transparent)
        .into_iter()
        .find(|(t, _)| *t == Tag::D)
        .unwrap();
    let d: Vec<u8> = d.into_iter().skip_while(|b| *b == 0).collect();
    let mut scalar = vec![0u8; 32 - d.len()];
    scalar.extend(d);
    let ec_private_key = der(0x30, &[der(0x02, &[1]), der(0x04, &scalar)].concat());
    let algorithm = der(
        0x30,
        &[
            der(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]),
            der(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]),
        ]
        .concat(),
    );
    let pkcs8 = der(
        0x30,
        &[der(0x02, &[0]), algorithm, der(0x04, &ec_private_key)].concat(),
    );
    let signer =
        keyfort_crypto::ec::SigningKey::from_pkcs8(keyfort_crypto::ec::Curve::P256, &pkcs8)
            .unwrap();
    let public_value = get(
        v21(Operation::GET, with_format(&public, 0x15)),
        Tag::PUBLIC_KEY,
        0x15,
    );
    let V::Structure(fields) = &public_value else {
        panic!("EC public key")
    };
    let q = fields
        .iter()
        .find(|i| i.tag == Tag::Q_STRING)
        .map(|i| bytes(i.value.clone()))
        .unwrap();
    assert_eq!(q.len(), 65);
    assert_eq!(signer.public_key(), q.as_slice());
    // KMIP 1.4 also answers the (deprecated) Transparent ECDSA formats; 2.x has them reserved,
    // and KMIP 1.2 predates Transparent EC.
    let ecdsa = get(
        v14(Operation::GET, with_format(&private, 0x0E)),
        Tag::PRIVATE_KEY,
        0x0E,
    );
    assert_eq!(ecdsa, transparent);
    let resp = kmip.call(&v21(Operation::GET, with_format(&private, 0x0E)));
    assert_eq!(
        failure(&resp),
        ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED.0
    );
    let resp = kmip.call(&request(
        (1, 2),
        vec![],
        vec![(Operation::GET, None, with_format(&public, 0x15))],
    ));
    assert_eq!(
        failure(&resp),
        ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED.0
    );
}

fn import(
    id: &str,
    replace: Option<bool>,
    object: Item,
    object_type: u32,
    extra: Vec<Item>,
) -> Item {
    let mut payload = vec![uid(id), en(Tag::OBJECT_TYPE, object_type)];
    if let Some(r) = replace {
        payload.push(Item::new(Tag::REPLACE_EXISTING, V::Boolean(r)));
    }
    payload.push(st(Tag::ATTRIBUTES, extra));
    payload.push(object);
    v21(Operation::IMPORT, payload)
}

fn symmetric_object(material: &[u8]) -> Item {
    st(
        Tag::SYMMETRIC_KEY,
        vec![st(
            Tag::KEY_BLOCK,
            vec![
                en(Tag::KEY_FORMAT_TYPE, 1),
                st(
                    Tag::KEY_VALUE,
                    vec![Item::new(
                        Tag::KEY_MATERIAL,
                        V::ByteString(material.to_vec()),
                    )],
                ),
                en(Tag::CRYPTOGRAPHIC_ALGORITHM, 3),
                int(
                    Tag::CRYPTOGRAPHIC_LENGTH,
                    i32::try_from(material.len() * 8).unwrap(),
                ),
            ],
        )],
    )
}

#[test]
fn import_with_replace_existing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-import", &[]);
    let kmip = Kmip::dev(&server);
    let id = "3c8e1d7a-52f4-4b0e-a1d9-7e6b5c4d3a21";
    let resp = kmip.call(&import(
        id,
        None,
        symmetric_object(&[0x11; 32]),
        2,
        vec![vendor(Tag::ATTRIBUTE, "Generation", Some("first"))],
    ));
    assert_eq!(uid_of(&ok_payload(&resp)), id);
    // Without Replace Existing (or with False) an existing object is not replaced.
    for replace in [None, Some(false)] {
        let resp = kmip.call(&import(
            id,
            replace,
            symmetric_object(&[0x22; 16]),
            2,
            vec![],
        ));
        assert_eq!(failure(&resp), ResultReason::OBJECT_ALREADY_EXISTS.0);
    }
    let material = |id: &str, object: Tag| {
        key_material(
            &ok_payload(&kmip.call(&v21(Operation::GET, vec![uid(id)]))),
            object,
        )
        .1
    };
    assert_eq!(
        material(id, Tag::SYMMETRIC_KEY),
        V::ByteString(vec![0x11; 32])
    );

    // With it, the object is replaced: new material, length and attributes, the old ones gone.
    let resp = kmip.call(&import(
        id,
        Some(true),
        symmetric_object(&[0x22; 16]),
        2,
        vec![text(Tag::CONTACT_INFORMATION, "second")],
    ));
    assert_eq!(uid_of(&ok_payload(&resp)), id);
    assert_eq!(
        material(id, Tag::SYMMETRIC_KEY),
        V::ByteString(vec![0x22; 16])
    );
    let resp = kmip.call(&v21(Operation::GET_ATTRIBUTES, vec![uid(id)]));
    let all = v2_attributes(&ok_payload(&resp));
    assert!(all.contains(&text(Tag::CONTACT_INFORMATION, "second")));
    assert!(all.contains(&int(Tag::CRYPTOGRAPHIC_LENGTH, 128)));
    assert!(!all.iter().any(|i| i.tag == Tag::ATTRIBUTE), "{all:?}");

    // A replacement may change the object's type.
    let secret = secret_data(b"s3cret");
    ok_payload(&kmip.call(&import(id, Some(true), secret, 7, vec![])));
    let resp = kmip.call(&v21(Operation::GET, vec![uid(id)]));
    let p = ok_payload(&resp);
    assert_eq!(payload_struct(&p).enumeration(Tag::OBJECT_TYPE).unwrap(), 7);
    assert_eq!(
        material(id, Tag::SECRET_DATA),
        V::ByteString(b"s3cret".to_vec())
    );
    let resp = kmip.call(&v14(
        Operation::LOCATE,
        vec![attr("Object Type", V::Enumeration(2))],
    ));
    assert!(!located(&ok_payload(&resp)).contains(&id.to_owned()));

    // Replace Existing for an id that does not exist imports it.
    let fresh = "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
    let resp = kmip.call(&import(
        fresh,
        Some(true),
        symmetric_object(&[0x33; 32]),
        2,
        vec![],
    ));
    assert_eq!(uid_of(&ok_payload(&resp)), fresh);
    assert_eq!(
        material(fresh, Tag::SYMMETRIC_KEY),
        V::ByteString(vec![0x33; 32])
    );
    // A replacement cannot be undone, so it may not precede other items of an Undo batch.
    let V::Structure(message) =
        import(fresh, Some(true), symmetric_object(&[0x44; 32]), 2, vec![]).value
    else {
        panic!()
    };
    let payload_of_import = Struct::of(&message[1])
        .unwrap()
        .get(Tag::REQUEST_PAYLOAD)
        .unwrap()
        .clone();
    let V::Structure(import_payload) = payload_of_import.value else {
        panic!()
    };
    let resp = kmip.call(&request(
        (2, 1),
        undo_header(),
        vec![
            (Operation::IMPORT, None, import_payload),
            (Operation::GET, None, vec![uid(fresh)]),
        ],
    ));
    assert!(items(&resp).iter().all(|i| status(i)
        == (
            ResultStatus::OPERATION_FAILED.0,
            Some(ResultReason::FEATURE_NOT_SUPPORTED.0)
        )));
    assert_eq!(
        material(fresh, Tag::SYMMETRIC_KEY),
        V::ByteString(vec![0x33; 32])
    );
}
