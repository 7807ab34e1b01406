#![allow(clippy::unwrap_used)]
//! A new key's attributes are its template plus the ones the service adds (usages, class, key
//! type, LOCAL, ...), and a blob holds at most `MAX_ATTRS` of them. A template that leaves no
//! room for the added ones is refused with CKR_TEMPLATE_INCONSISTENT: the service never answers
//! with a blob that no later call could open.

mod common;

use common::*;
use keyfort_grpc::attrs::MAX_ATTRS;
use keyfort_grpc::proto;

const CKA_VALUE_LEN: u64 = 0x161;
const CKA_EC_PARAMS: u64 = 0x180;
const CKM_AES_KEY_GEN: u64 = 0x1080;
const CKM_AES_ECB: u64 = 0x1081;
const CKM_EC_KEY_PAIR_GEN: u64 = 0x1040;
const CKR_TEMPLATE_INCONSISTENT: u64 = 0xD1;
const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// What the service adds to an AES key's template: seven usages, EXTRACTABLE, SENSITIVE,
/// MODIFIABLE, CLASS, KEY_TYPE, LOCAL, NEVER_EXTRACTABLE, ALWAYS_SENSITIVE, KEY_GEN_MECHANISM.
const AES_ADDED: usize = 16;

/// `extra` vendor attributes after the ones given.
fn padded(
    given: &[(u64, proto::AttributeValue)],
    extra: usize,
) -> std::collections::HashMap<u64, proto::AttributeValue> {
    let mut t = given.to_vec();
    t.extend((0..extra as u64).map(|i| (0x8100_0000 + i, b(b"v"))));
    template(&t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_leaving_no_room_for_the_added_attributes_are_refused() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let given = [(CKA_VALUE_LEN, int(32))];

    // The fullest template that still fits: the key is made and its blob opens.
    let fits = MAX_ATTRS - AES_ADDED - given.len();
    let key = c
        .generate_key(proto::GenerateKeyRequest {
            mech: mech(CKM_AES_KEY_GEN),
            template: padded(&given, fits),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.key.as_ref().unwrap().attributes.len(), MAX_ATTRS);
    let ciphered = c
        .encrypt_single(proto::EncryptSingleRequest {
            key_bytes: Vec::new(),
            mech: mech(CKM_AES_ECB),
            plain: vec![0; 16],
            key: kb(&key.key_bytes),
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    assert_eq!(ciphered.len(), 16);

    // One more, and the largest template accepted at all: refused, no blob made.
    for extra in [fits + 1, MAX_ATTRS - given.len()] {
        let r = c
            .generate_key(proto::GenerateKeyRequest {
                mech: mech(CKM_AES_KEY_GEN),
                template: padded(&given, extra),
            })
            .await;
        assert_eq!(
            ckr(r),
            CKR_TEMPLATE_INCONSISTENT,
            "{extra} extra attributes"
        );
    }

    // The same for the halves of a key pair.
    let curve = [(CKA_EC_PARAMS, b(P256))];
    let r = c
        .generate_key_pair(proto::GenerateKeyPairRequest {
            mech: mech(CKM_EC_KEY_PAIR_GEN),
            priv_key_template: padded(&[], MAX_ATTRS),
            pub_key_template: template(&curve),
        })
        .await;
    assert_eq!(ckr(r), CKR_TEMPLATE_INCONSISTENT);
    let r = c
        .generate_key_pair(proto::GenerateKeyPairRequest {
            mech: mech(CKM_EC_KEY_PAIR_GEN),
            priv_key_template: template(&curve),
            pub_key_template: padded(&curve, MAX_ATTRS - 1),
        })
        .await;
    assert_eq!(ckr(r), CKR_TEMPLATE_INCONSISTENT);
}
