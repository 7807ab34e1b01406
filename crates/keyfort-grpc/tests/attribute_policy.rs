#![allow(clippy::unwrap_used)]
//! The PKCS#11 attribute policy of keys, enforced on every operation over the real service:
//! usage flags in every form of every operation, CKA_WRAP_WITH_TRUSTED, restrictions the service
//! cannot honour refused rather than ignored, attributes fixed at creation, key-value attributes
//! never taken from templates; blobs and states of one kind refused where another is expected;
//! mechanism parameters and key sizes out of range (AES-CTR counter bits among them); imported
//! public keys checked.

mod common;

use common::*;
use keyfort_grpc::proto;

const CKA_CLASS: u64 = 0x0;
const CKA_TRUSTED: u64 = 0x86;
const CKA_KEY_TYPE: u64 = 0x100;
const CKA_ENCRYPT: u64 = 0x104;
const CKA_DECRYPT: u64 = 0x105;
const CKA_WRAP: u64 = 0x106;
const CKA_UNWRAP: u64 = 0x107;
const CKA_SIGN: u64 = 0x108;
const CKA_VERIFY: u64 = 0x10A;
const CKA_DERIVE: u64 = 0x10C;
const CKA_VALUE_LEN: u64 = 0x161;
const CKA_EC_PARAMS: u64 = 0x180;
const CKA_EC_POINT: u64 = 0x181;
const CKA_MODULUS_BITS: u64 = 0x121;
const CKA_PUBLIC_EXPONENT: u64 = 0x122;
const CKA_WRAP_WITH_TRUSTED: u64 = 0x210;
const CKA_WRAP_TEMPLATE: u64 = 0x4000_0211;
const CKA_UNWRAP_TEMPLATE: u64 = 0x4000_0212;
const CKA_DERIVE_TEMPLATE: u64 = 0x4000_0213;
const CKA_ALLOWED_MECHANISMS: u64 = 0x4000_0600;
const CKO_SECRET_KEY: i64 = 4;
const CKK_AES: i64 = 0x1F;
const CKK_GENERIC_SECRET: i64 = 0x10;

const CKM_AES_KEY_GEN: u64 = 0x1080;
const CKM_AES_CBC_PAD: u64 = 0x1085;
const CKM_AES_CTR: u64 = 0x1086;
const CKM_AES_GCM: u64 = 0x1087;
const CKM_GENERIC_SECRET_KEY_GEN: u64 = 0x350;
const CKM_RSA_PKCS_KEY_PAIR_GEN: u64 = 0x0;
const CKM_AES_KEY_WRAP: u64 = 0x2109;
const CKM_EC_KEY_PAIR_GEN: u64 = 0x1040;
const CKM_ECDSA_SHA256: u64 = 0x1044;
const CKM_ECDH1_DERIVE: u64 = 0x1050;
const CKM_SHA256_HMAC: u64 = 0x251;
const CKM_IBM_TRANSPORTKEY: u64 = 0x8002_0005;

const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
const SECP256K1: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x0A];

const CKR_ATTRIBUTE_READ_ONLY: u64 = 0x10;
const CKR_ATTRIBUTE_TYPE_INVALID: u64 = 0x12;
const CKR_ARGUMENTS_BAD: u64 = 0x07;
const CKR_ATTRIBUTE_VALUE_INVALID: u64 = 0x13;
const CKR_KEY_SIZE_RANGE: u64 = 0x62;
const CKR_DATA_LEN_RANGE: u64 = 0x21;
const CKR_ENCRYPTED_DATA_LEN_RANGE: u64 = 0x41;
const CKR_MECHANISM_INVALID: u64 = 0x70;
const CKR_MECHANISM_PARAM_INVALID: u64 = 0x71;
const CKR_TEMPLATE_INCONSISTENT: u64 = 0xD1;
const CKR_KEY_TYPE_INCONSISTENT: u64 = 0x63;
const CKR_KEY_FUNCTION_NOT_PERMITTED: u64 = 0x68;
const CKR_KEY_NOT_WRAPPABLE: u64 = 0x69;
const CKR_OPERATION_NOT_INITIALIZED: u64 = 0x91;
const CKR_SAVED_STATE_INVALID: u64 = 0x160;
const CKR_WRAPPED_KEY_INVALID: u64 = 0x110;
const CKR_IBM_BLOB_ERROR: u64 = 0x8001_0004;
const CKR_IBM_WKID_MISMATCH: u64 = 0x8001_0001;

async fn aes(c: &mut Client, extra: &[(u64, proto::AttributeValue)]) -> Vec<u8> {
    let mut t = vec![(CKA_VALUE_LEN, int(32))];
    t.extend_from_slice(extra);
    c.generate_key(proto::GenerateKeyRequest {
        mech: mech(CKM_AES_KEY_GEN),
        template: template(&t),
    })
    .await
    .unwrap()
    .into_inner()
    .key_bytes
}

fn gen_aes(extra: &[(u64, proto::AttributeValue)]) -> proto::GenerateKeyRequest {
    let mut t = vec![(CKA_VALUE_LEN, int(32))];
    t.extend_from_slice(extra);
    proto::GenerateKeyRequest {
        mech: mech(CKM_AES_KEY_GEN),
        template: template(&t),
    }
}

/// A P-256 pair with extra attributes on each side; returns (private, public).
async fn p256(
    c: &mut Client,
    private: &[(u64, proto::AttributeValue)],
    public: &[(u64, proto::AttributeValue)],
) -> (Vec<u8>, Vec<u8>) {
    let mut p = vec![(CKA_EC_PARAMS, b(P256))];
    p.extend_from_slice(public);
    let r = c
        .generate_key_pair(proto::GenerateKeyPairRequest {
            mech: mech(CKM_EC_KEY_PAIR_GEN),
            pub_key_template: template(&p),
            priv_key_template: template(private),
        })
        .await
        .unwrap()
        .into_inner();
    (r.priv_key_bytes, r.pub_key_bytes)
}

fn cbc() -> Option<proto::Mechanism> {
    mech_b(CKM_AES_CBC_PAD, &[7; 16])
}

fn aes_template() -> std::collections::HashMap<u64, proto::AttributeValue> {
    template(&[
        (CKA_CLASS, int(CKO_SECRET_KEY)),
        (CKA_KEY_TYPE, int(CKK_AES)),
        (CKA_VALUE_LEN, int(32)),
    ])
}

/// A key whose usage attribute is false is refused for that use in every form: single-part,
/// Init (so no state is ever issued), ReencryptSingle on either side, as wrapping, unwrapping and
/// base key, and for HMAC; the same key with the usage true does the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_attributes_are_enforced_in_every_form() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let full = aes(&mut c, &[]).await;
    let no_enc = aes(&mut c, &[(CKA_ENCRYPT, tf(false))]).await;
    let no_dec = aes(&mut c, &[(CKA_DECRYPT, tf(false))]).await;
    let no_wrap = aes(&mut c, &[(CKA_WRAP, tf(false))]).await;
    let no_unwrap = aes(&mut c, &[(CKA_UNWRAP, tf(false))]).await;
    let no_sign = aes(&mut c, &[(CKA_SIGN, tf(false))]).await;
    let no_verify = aes(&mut c, &[(CKA_VERIFY, tf(false))]).await;
    let ct = c
        .encrypt_single(proto::EncryptSingleRequest {
            mech: cbc(),
            key: kb(&full),
            plain: b"data".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;

    // Encrypt: single, Init, old-generation field; Decrypt likewise.
    let enc_single = |k: &[u8]| proto::EncryptSingleRequest {
        mech: cbc(),
        key: kb(k),
        plain: b"data".to_vec(),
        ..Default::default()
    };
    assert_eq!(
        ckr(c.encrypt_single(enc_single(&no_enc)).await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    c.encrypt_single(enc_single(&no_dec)).await.unwrap();
    for (key, old) in [(&no_enc, false), (&no_enc, true)] {
        let mut req = proto::EncryptInitRequest {
            mech: cbc(),
            ..Default::default()
        };
        if old {
            req.key_bytes = key.clone();
        } else {
            req.key = kb(key);
        }
        assert_eq!(
            ckr(c.encrypt_init(req).await),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
    }
    let dec_single = |k: &[u8]| proto::DecryptSingleRequest {
        mech: cbc(),
        key: kb(k),
        ciphered: ct.clone(),
        ..Default::default()
    };
    assert_eq!(
        ckr(c.decrypt_single(dec_single(&no_dec)).await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        ckr(c
            .decrypt_init(proto::DecryptInitRequest {
                mech: cbc(),
                key_bytes: no_dec.clone(),
                ..Default::default()
            })
            .await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );

    // ReencryptSingle: DECRYPT of the decrypting key, ENCRYPT of the encrypting key.
    let re = |dec: &[u8], enc: &[u8]| proto::ReencryptSingleRequest {
        dec_mech: cbc(),
        enc_mech: cbc(),
        ciphered: ct.clone(),
        dec_key: kb(dec),
        enc_key: kb(enc),
    };
    assert_eq!(
        ckr(c.reencrypt_single(re(&no_dec, &full)).await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        ckr(c.reencrypt_single(re(&full, &no_enc)).await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    c.reencrypt_single(re(&full, &full)).await.unwrap();

    // HMAC sign and verify, single and Init.
    let hmac = mech(CKM_SHA256_HMAC);
    let sign_single = |k: &[u8]| proto::SignSingleRequest {
        mech: hmac.clone(),
        priv_key: kb(k),
        data: b"m".to_vec(),
        ..Default::default()
    };
    let mac = c
        .sign_single(sign_single(&no_verify))
        .await
        .unwrap()
        .into_inner()
        .signature;
    assert_eq!(
        ckr(c.sign_single(sign_single(&no_sign)).await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        ckr(c
            .sign_init(proto::SignInitRequest {
                mech: hmac.clone(),
                priv_key: kb(&no_sign),
                ..Default::default()
            })
            .await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        ckr(c
            .verify_single(proto::VerifySingleRequest {
                mech: hmac.clone(),
                pub_key: kb(&no_verify),
                data: b"m".to_vec(),
                signature: mac.clone(),
                ..Default::default()
            })
            .await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        ckr(c
            .verify_init(proto::VerifyInitRequest {
                mech: hmac.clone(),
                pub_key_bytes: no_verify.clone(),
                ..Default::default()
            })
            .await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );

    // Asymmetric: a private key without CKA_SIGN, a public key without CKA_VERIFY.
    let (priv_ns, pub_nv) =
        p256(&mut c, &[(CKA_SIGN, tf(false))], &[(CKA_VERIFY, tf(false))]).await;
    assert_eq!(
        ckr(c
            .sign_single(proto::SignSingleRequest {
                mech: mech(CKM_ECDSA_SHA256),
                priv_key_bytes: priv_ns.clone(),
                data: b"m".to_vec(),
                ..Default::default()
            })
            .await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        ckr(c
            .verify_single(proto::VerifySingleRequest {
                mech: mech(CKM_ECDSA_SHA256),
                pub_key: kb(&pub_nv),
                data: b"m".to_vec(),
                signature: vec![1; 64],
                ..Default::default()
            })
            .await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );

    // Wrap: CKA_WRAP of the wrapping key; unwrap: CKA_UNWRAP of the unwrapping key.
    let wrap = |key: &[u8], kek: &[u8]| proto::WrapKeyRequest {
        mech: mech(CKM_AES_KEY_WRAP),
        key: kb(key),
        ke_k: kb(kek),
        ..Default::default()
    };
    assert_eq!(
        ckr(c.wrap_key(wrap(&full, &no_wrap)).await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    let wrapped = c
        .wrap_key(wrap(&no_wrap, &no_unwrap))
        .await
        .unwrap()
        .into_inner()
        .wrapped;
    let unwrap = |wrapped: &[u8], kek: &[u8]| proto::UnwrapKeyRequest {
        mech: mech(CKM_AES_KEY_WRAP),
        wrapped: wrapped.to_vec(),
        ke_k: kb(kek),
        template: aes_template(),
        ..Default::default()
    };
    assert_eq!(
        ckr(c.unwrap_key(unwrap(&wrapped, &no_unwrap)).await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    let wrapped = c
        .wrap_key(wrap(&no_wrap, &full))
        .await
        .unwrap()
        .into_inner()
        .wrapped;
    c.unwrap_key(unwrap(&wrapped, &full)).await.unwrap();

    // Derive: CKA_DERIVE of the base key.
    let (no_derive, _) = p256(&mut c, &[(CKA_DERIVE, tf(false))], &[]).await;
    let (base, _) = p256(&mut c, &[], &[]).await;
    let (_, peer) = p256(&mut c, &[], &[]).await;
    let point = c
        .get_attribute_value(proto::GetAttributeValueRequest {
            object: peer,
            attributes_bytes: [(0x181, vec![])].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attributes_bytes[&0x181][2..]
        .to_vec();
    let derive = |k: &[u8]| proto::DeriveKeyRequest {
        mech: mech_b(CKM_ECDH1_DERIVE, &point),
        base_key: kb(k),
        template: aes_template(),
        ..Default::default()
    };
    assert_eq!(
        ckr(c.derive_key(derive(&no_derive)).await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    c.derive_key(derive(&base)).await.unwrap();
}

/// Blobs and states are refused where another kind is expected: a state as a key, a key as a
/// state, a public key to sign, a secret key to ECDSA-sign, and a state of one operation to
/// continue another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_and_state_kinds_do_not_stand_in_for_each_other() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = aes(&mut c, &[]).await;
    let (private, public) = p256(&mut c, &[], &[(CKA_SIGN, tf(true))]).await;
    let enc_state = c
        .encrypt_init(proto::EncryptInitRequest {
            mech: cbc(),
            key: kb(&key),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;

    // A state blob is not a key.
    assert_eq!(
        ckr(c
            .encrypt_single(proto::EncryptSingleRequest {
                mech: cbc(),
                key: kb(&enc_state),
                plain: b"x".to_vec(),
                ..Default::default()
            })
            .await),
        CKR_IBM_BLOB_ERROR
    );
    assert_eq!(
        ckr(c
            .get_attribute_value(proto::GetAttributeValueRequest {
                object: enc_state.clone(),
                ..Default::default()
            })
            .await),
        CKR_IBM_BLOB_ERROR
    );
    // A key blob is not a state.
    for k in [&key, &private, &public] {
        assert_eq!(
            ckr(c
                .encrypt_update(proto::EncryptUpdateRequest {
                    state: k.clone(),
                    plain: vec![0; 16],
                })
                .await),
            CKR_SAVED_STATE_INVALID
        );
    }
    // An Encrypt state does not decrypt, sign or digest.
    assert_eq!(
        ckr(c
            .decrypt_update(proto::DecryptUpdateRequest {
                state: enc_state.clone(),
                ciphered: vec![0; 16],
            })
            .await),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        ckr(c
            .sign_final(proto::SignFinalRequest {
                state: enc_state.clone(),
            })
            .await),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        ckr(c
            .digest_final(proto::DigestFinalRequest {
                state: enc_state.clone(),
            })
            .await),
        CKR_OPERATION_NOT_INITIALIZED
    );
    // A state of another instance (another master key) is refused, as its keys are.
    let other = Server::start().await;
    let mut o = other.client().await;
    let foreign_key = aes(&mut o, &[]).await;
    let foreign = o
        .encrypt_init(proto::EncryptInitRequest {
            mech: cbc(),
            key: kb(&foreign_key),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    assert_eq!(
        ckr(c
            .encrypt_update(proto::EncryptUpdateRequest {
                state: foreign,
                plain: vec![0; 16],
            })
            .await),
        CKR_IBM_WKID_MISMATCH
    );
    assert_eq!(
        ckr(o
            .encrypt_final(proto::EncryptFinalRequest {
                state: enc_state.clone(),
            })
            .await),
        CKR_IBM_WKID_MISMATCH
    );
    // A public key (even one marked CKA_SIGN) does not sign; a secret key does not ECDSA-sign;
    // a private key does not verify.
    for k in [&public, &key] {
        assert_eq!(
            ckr(c
                .sign_single(proto::SignSingleRequest {
                    mech: mech(CKM_ECDSA_SHA256),
                    priv_key: kb(k),
                    data: b"m".to_vec(),
                    ..Default::default()
                })
                .await),
            CKR_KEY_TYPE_INCONSISTENT
        );
    }
    assert_eq!(
        ckr(c
            .verify_single(proto::VerifySingleRequest {
                mech: mech(CKM_ECDSA_SHA256),
                pub_key: kb(&private),
                data: b"m".to_vec(),
                signature: vec![1; 64],
                ..Default::default()
            })
            .await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
}

/// A key marked CKA_WRAP_WITH_TRUSTED is wrapped only by a trusted key; and no caller may mark
/// a key trusted (PKCS#11 reserves that to the security officer), so such a key is never
/// wrapped. Without the mark, the same wrap works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_with_trusted_keys_are_only_wrapped_by_trusted_keys() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let kek = aes(&mut c, &[]).await;
    let guarded = aes(&mut c, &[(CKA_WRAP_WITH_TRUSTED, tf(true))]).await;
    let plain = aes(&mut c, &[(CKA_WRAP_WITH_TRUSTED, tf(false))]).await;
    let wrap = |key: &[u8], kek: &[u8], old: bool| {
        let mut r = proto::WrapKeyRequest {
            mech: mech(CKM_AES_KEY_WRAP),
            ..Default::default()
        };
        if old {
            r.key_bytes = key.to_vec();
            r.ke_k_bytes = kek.to_vec();
        } else {
            r.key = kb(key);
            r.ke_k = kb(kek);
        }
        r
    };
    for old in [false, true] {
        assert_eq!(
            ckr(c.wrap_key(wrap(&guarded, &kek, old)).await),
            CKR_KEY_NOT_WRAPPABLE
        );
    }
    c.wrap_key(wrap(&plain, &kek, false)).await.unwrap();

    // Not under an imported public key either (CKM_RSA_PKCS / OAEP need no secret).
    let (_, public) = p256(&mut c, &[], &[]).await;
    let code = ckr(c.wrap_key(wrap(&guarded, &public, false)).await);
    assert_eq!(code, CKR_KEY_NOT_WRAPPABLE);

    // CKA_TRUSTED cannot be claimed: not by generation, key pair generation, unwrap, derive
    // or public key import; false is accepted.
    assert_eq!(
        ckr(c.generate_key(gen_aes(&[(CKA_TRUSTED, tf(true))])).await),
        CKR_ATTRIBUTE_READ_ONLY
    );
    c.generate_key(gen_aes(&[(CKA_TRUSTED, tf(false))]))
        .await
        .unwrap();
    assert_eq!(
        ckr(c
            .generate_key_pair(proto::GenerateKeyPairRequest {
                mech: mech(CKM_EC_KEY_PAIR_GEN),
                pub_key_template: template(&[(CKA_EC_PARAMS, b(P256)), (CKA_TRUSTED, tf(true))]),
                priv_key_template: template(&[]),
            })
            .await),
        CKR_ATTRIBUTE_READ_ONLY
    );
    let wrapped = c
        .wrap_key(wrap(&plain, &kek, false))
        .await
        .unwrap()
        .into_inner()
        .wrapped;
    let mut t = aes_template();
    t.insert(CKA_TRUSTED, tf(true));
    assert_eq!(
        ckr(c
            .unwrap_key(proto::UnwrapKeyRequest {
                mech: mech(CKM_AES_KEY_WRAP),
                wrapped,
                ke_k: kb(&kek),
                template: t.clone(),
                ..Default::default()
            })
            .await),
        CKR_ATTRIBUTE_READ_ONLY
    );
    let spki_len = 2 + usize::from(public[1]);
    assert_eq!(
        ckr(c
            .unwrap_key(proto::UnwrapKeyRequest {
                mech: mech(CKM_IBM_TRANSPORTKEY),
                wrapped: public[..spki_len].to_vec(),
                ke_k: kb(&kek),
                template: template(&[(CKA_TRUSTED, tf(true))]),
                ..Default::default()
            })
            .await),
        CKR_ATTRIBUTE_READ_ONLY
    );
    // Nor set afterwards.
    assert_eq!(
        ckr(c
            .set_attribute_value(proto::SetAttributeValueRequest {
                object: kek.clone(),
                attributes: template(&[(CKA_TRUSTED, tf(true))]),
            })
            .await),
        CKR_ATTRIBUTE_TYPE_INVALID
    );
}
/// Restrictions the service does not enforce (wrap, unwrap and derive templates, allowed
/// mechanisms) are refused when a key is made, rather than kept in the blob as if they held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unenforced_restrictions_are_refused_not_ignored() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let kek = aes(&mut c, &[]).await;
    for t in [
        CKA_WRAP_TEMPLATE,
        CKA_UNWRAP_TEMPLATE,
        CKA_DERIVE_TEMPLATE,
        CKA_ALLOWED_MECHANISMS,
    ] {
        // A CK_MECHANISM_TYPE array or a template: the bytes do not matter, the type does.
        let v = b(&0x1087u64.to_be_bytes());
        assert_eq!(
            ckr(c.generate_key(gen_aes(&[(t, v.clone())])).await),
            CKR_ATTRIBUTE_TYPE_INVALID,
            "{t:#x}"
        );
        let wrapped = c
            .wrap_key(proto::WrapKeyRequest {
                mech: mech(CKM_AES_KEY_WRAP),
                key: kb(&kek),
                ke_k: kb(&kek),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .wrapped;
        let mut ut = aes_template();
        ut.insert(t, v.clone());
        assert_eq!(
            ckr(c
                .unwrap_key(proto::UnwrapKeyRequest {
                    mech: mech(CKM_AES_KEY_WRAP),
                    wrapped,
                    ke_k: kb(&kek),
                    template: ut,
                    ..Default::default()
                })
                .await),
            CKR_ATTRIBUTE_TYPE_INVALID,
            "{t:#x}"
        );
        assert_eq!(
            ckr(c
                .generate_key_pair(proto::GenerateKeyPairRequest {
                    mech: mech(CKM_EC_KEY_PAIR_GEN),
                    pub_key_template: template(&[(CKA_EC_PARAMS, b(P256))]),
                    priv_key_template: template(&[(t, v)]),
                })
                .await),
            CKR_ATTRIBUTE_TYPE_INVALID,
            "{t:#x}"
        );
    }
}

fn key_gen(m: u64, t: &[(u64, proto::AttributeValue)]) -> proto::GenerateKeyRequest {
    proto::GenerateKeyRequest {
        mech: mech(m),
        template: template(t),
    }
}

fn rsa_gen(bits: i64, exponent: Option<i64>) -> proto::GenerateKeyPairRequest {
    let mut t = vec![(CKA_MODULUS_BITS, int(bits))];
    if let Some(e) = exponent {
        t.push((CKA_PUBLIC_EXPONENT, int(e)));
    }
    proto::GenerateKeyPairRequest {
        mech: mech(CKM_RSA_PKCS_KEY_PAIR_GEN),
        pub_key_template: template(&t),
        priv_key_template: template(&[]),
    }
}

/// Mechanism parameters and key sizes out of range are refused with the PKCS#11 code for each,
/// before any key is made or any data processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_parameters_and_sizes_are_refused() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = aes(&mut c, &[]).await;

    // Symmetric IVs and counter blocks of the wrong length.
    for (m, p) in [
        (CKM_AES_GCM, vec![]),
        (CKM_AES_GCM, vec![1; 13]),
        (CKM_AES_GCM, vec![1; 4096]),
        (CKM_AES_CBC_PAD, vec![]),
        (CKM_AES_CBC_PAD, vec![1; 15]),
        (CKM_AES_CTR, vec![1; 17]),
        (CKM_AES_CTR, vec![]),
    ] {
        let r = c
            .encrypt_single(proto::EncryptSingleRequest {
                mech: mech_b(m, &p),
                key: kb(&key),
                plain: vec![0; 32],
                ..Default::default()
            })
            .await;
        assert_eq!(ckr(r), CKR_MECHANISM_PARAM_INVALID, "{m:#x} {}", p.len());
        let r = c
            .encrypt_init(proto::EncryptInitRequest {
                mech: mech_b(m, &p),
                key: kb(&key),
                ..Default::default()
            })
            .await;
        assert_eq!(ckr(r), CKR_MECHANISM_PARAM_INVALID, "{m:#x} {}", p.len());
    }

    // Secret key sizes.
    for (m, len) in [
        (CKM_AES_KEY_GEN, 7),
        (CKM_AES_KEY_GEN, 0),
        (CKM_AES_KEY_GEN, i64::MAX),
        (CKM_GENERIC_SECRET_KEY_GEN, 0),
        (CKM_GENERIC_SECRET_KEY_GEN, 100_000),
    ] {
        assert_eq!(
            ckr(c
                .generate_key(key_gen(m, &[(CKA_VALUE_LEN, int(len))]))
                .await),
            CKR_KEY_SIZE_RANGE,
            "{m:#x} {len}"
        );
    }
    assert_eq!(
        ckr(c
            .generate_key(key_gen(CKM_AES_KEY_GEN, &[(CKA_VALUE_LEN, int(-16))]))
            .await),
        CKR_ATTRIBUTE_VALUE_INVALID
    );

    // RSA sizes and exponents; unknown curves.
    for bits in [0, 512, 1024, 100_000, i64::MAX] {
        assert_eq!(
            ckr(c.generate_key_pair(rsa_gen(bits, None)).await),
            CKR_KEY_SIZE_RANGE,
            "{bits}"
        );
    }
    assert_eq!(
        ckr(c.generate_key_pair(rsa_gen(2048, Some(3))).await),
        CKR_TEMPLATE_INCONSISTENT
    );
    assert_eq!(
        ckr(c
            .generate_key_pair(proto::GenerateKeyPairRequest {
                mech: mech(CKM_EC_KEY_PAIR_GEN),
                pub_key_template: template(&[(CKA_EC_PARAMS, b(&[0x06, 0x03, 1, 2, 3]))]),
                priv_key_template: template(&[]),
            })
            .await),
        CKR_ATTRIBUTE_VALUE_INVALID
    );

    // RSA padding parameters: OAEP with another MGF1 hash, PSS with a long or no salt.
    let (rsa_priv, rsa_pub) = {
        let r = c
            .generate_key_pair(rsa_gen(2048, Some(65537)))
            .await
            .unwrap()
            .into_inner();
        (r.priv_key_bytes, r.pub_key_bytes)
    };
    assert_eq!(
        ckr(c
            .encrypt_single(proto::EncryptSingleRequest {
                mech: oaep(0x250, 1),
                key: kb(&rsa_pub),
                plain: b"x".to_vec(),
                ..Default::default()
            })
            .await),
        CKR_MECHANISM_PARAM_INVALID
    );
    for salt in [0, 33, 1000, u64::MAX] {
        let r = c
            .sign_single(proto::SignSingleRequest {
                mech: pss(0x43, 0x250, 2, salt),
                priv_key: kb(&rsa_priv),
                data: b"m".to_vec(),
                ..Default::default()
            })
            .await;
        assert_eq!(ckr(r), CKR_MECHANISM_PARAM_INVALID, "salt {salt}");
    }

    // ECDH: the point at infinity, a point off the curve, a point of another curve, nothing;
    // derived lengths of zero, beyond the shared secret, and huge.
    let (base, _) = p256(&mut c, &[], &[]).await;
    let p384_point = {
        let r = c
            .generate_key_pair(proto::GenerateKeyPairRequest {
                mech: mech(CKM_EC_KEY_PAIR_GEN),
                pub_key_template: template(&[(CKA_EC_PARAMS, b(P384))]),
                priv_key_template: template(&[]),
            })
            .await
            .unwrap()
            .into_inner();
        c.get_attribute_value(proto::GetAttributeValueRequest {
            object: r.pub_key_bytes,
            attributes_bytes: [(CKA_EC_POINT, vec![])].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attributes_bytes[&CKA_EC_POINT][2..]
            .to_vec()
    };
    let mut off_curve = vec![4u8];
    off_curve.extend_from_slice(&[1; 64]);
    let derive = |point: &[u8], t: std::collections::HashMap<u64, proto::AttributeValue>| {
        proto::DeriveKeyRequest {
            mech: mech_b(CKM_ECDH1_DERIVE, point),
            base_key: kb(&base),
            template: t,
            ..Default::default()
        }
    };
    for point in [vec![0u8], off_curve.clone(), p384_point, vec![]] {
        assert_eq!(
            ckr(c.derive_key(derive(&point, aes_template())).await),
            CKR_MECHANISM_PARAM_INVALID,
            "{point:02x?}"
        );
    }
    let (_, peer) = p256(&mut c, &[], &[]).await;
    let point = c
        .get_attribute_value(proto::GetAttributeValueRequest {
            object: peer,
            attributes_bytes: [(CKA_EC_POINT, vec![])].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attributes_bytes[&CKA_EC_POINT][2..]
        .to_vec();
    for (kt, len) in [
        (CKK_AES, 0),
        (CKK_GENERIC_SECRET, 64),
        (CKK_GENERIC_SECRET, 100_000),
    ] {
        let t = template(&[
            (CKA_CLASS, int(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, int(kt)),
            (CKA_VALUE_LEN, int(len)),
        ]);
        assert_eq!(
            ckr(c.derive_key(derive(&point, t)).await),
            CKR_KEY_SIZE_RANGE,
            "{kt:#x} {len}"
        );
    }
    c.derive_key(derive(&point, aes_template())).await.unwrap();

    // Random: nothing, or more than one call may return.
    for len in [0, 1024 * 1024 + 1, u64::MAX] {
        assert_eq!(
            ckr(c
                .generate_random(proto::GenerateRandomRequest { len })
                .await),
            CKR_ARGUMENTS_BAD
        );
    }
}

/// AES-CTR with `CK_AES_CTR_PARAMS` (ulCounterBits ‖ cb): the counter is the low ulCounterBits
/// of the block and must not wrap into the nonce above it, or the keystream of another nonce
/// is reused. Data that would wrap it is refused (single-part and multi-part), and counter
/// widths of 0 or beyond 128 bits are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_counter_does_not_wrap_into_the_nonce() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = aes(&mut c, &[]).await;
    let nonce = [9u8; 12];
    let mut last = nonce.to_vec();
    last.extend_from_slice(&[0xFF; 4]);
    // CK_AES_CTR_PARAMS with a 32-bit counter at its last value, in either byte order of the
    // CK_ULONG.
    let params = |bits: [u8; 8]| [bits.as_slice(), &last].concat();
    let enc = |p: Vec<u8>, n: usize| proto::EncryptSingleRequest {
        mech: mech_b(CKM_AES_CTR, &p),
        key: kb(&key),
        plain: vec![0; n],
        ..Default::default()
    };
    for bits in [32u64.to_be_bytes(), 32u64.to_le_bytes()] {
        // One block fits: the counter's last value.
        let one = c
            .encrypt_single(enc(params(bits), 16))
            .await
            .unwrap()
            .into_inner()
            .ciphered;
        assert_eq!(one.len(), 16);
        // A second block would use nonce + 1 ‖ 0, another message's first keystream block.
        assert_eq!(
            ckr(c.encrypt_single(enc(params(bits), 17)).await),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(
            ckr(c
                .decrypt_single(proto::DecryptSingleRequest {
                    mech: mech_b(CKM_AES_CTR, &params(bits)),
                    key: kb(&key),
                    ciphered: vec![0; 32],
                    ..Default::default()
                })
                .await),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
        // Multi-part: the blocks of the updates and the final count together.
        let st = c
            .encrypt_init(proto::EncryptInitRequest {
                mech: mech_b(CKM_AES_CTR, &params(bits)),
                key: kb(&key),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .state;
        let u = c
            .encrypt_update(proto::EncryptUpdateRequest {
                state: st,
                plain: vec![0; 8],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(u.ciphered.is_empty());
        let u = c
            .encrypt_update(proto::EncryptUpdateRequest {
                state: u.state,
                plain: vec![0; 8],
            })
            .await;
        // The 16 buffered bytes would take the counter's last value: kept for the final call,
        // which gives them that value, or refuses if more data came.
        let st = u.unwrap().into_inner();
        assert!(st.ciphered.is_empty());
        let fin = c
            .encrypt_final(proto::EncryptFinalRequest {
                state: st.state.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .ciphered;
        assert_eq!(fin, one);
        assert_eq!(
            ckr(c
                .encrypt(proto::EncryptRequest {
                    state: st.state.clone(),
                    plain: vec![0; 1],
                })
                .await),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(
            ckr(c
                .encrypt_update(proto::EncryptUpdateRequest {
                    state: st.state,
                    plain: vec![0; 16],
                })
                .await),
            CKR_DATA_LEN_RANGE
        );
        // Updates well inside the counter carry it on as the single-part form does.
        let mut first = nonce.to_vec();
        first.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFC]);
        let p = [bits.as_slice(), &first].concat();
        let whole = c
            .encrypt_single(proto::EncryptSingleRequest {
                mech: mech_b(CKM_AES_CTR, &p),
                key: kb(&key),
                plain: vec![0; 64],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .ciphered;
        let st = c
            .encrypt_init(proto::EncryptInitRequest {
                mech: mech_b(CKM_AES_CTR, &p),
                key: kb(&key),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .state;
        let u = c
            .encrypt_update(proto::EncryptUpdateRequest {
                state: st,
                plain: vec![0; 40],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(u.ciphered, whole[..32]);
        let u2 = c
            .encrypt_update(proto::EncryptUpdateRequest {
                state: u.state,
                plain: vec![0; 24],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(u2.ciphered, whole[32..48]);
        let fin = c
            .encrypt_final(proto::EncryptFinalRequest { state: u2.state })
            .await
            .unwrap()
            .into_inner()
            .ciphered;
        assert_eq!(fin, whole[48..]);
    }
    // The full 128-bit counter does not wrap either.
    assert_eq!(
        ckr(c.encrypt_single(enc(vec![0xFF; 16], 17)).await),
        CKR_DATA_LEN_RANGE
    );
    c.encrypt_single(enc(vec![0xFF; 16], 16)).await.unwrap();
    for bits in [0u64, 129, 1 << 40] {
        assert_eq!(
            ckr(c.encrypt_single(enc(params(bits.to_be_bytes()), 16)).await),
            CKR_MECHANISM_PARAM_INVALID,
            "{bits}"
        );
    }
}

async fn attrs_of(c: &mut Client, key: &[u8]) -> std::collections::HashMap<u64, Vec<u8>> {
    c.get_attribute_value(proto::GetAttributeValueRequest {
        object: key.to_vec(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .attributes_bytes
}

/// SetAttributeValue: a sensitive key never becomes non-sensitive, a non-extractable key never
/// extractable, CKA_ALWAYS_SENSITIVE / CKA_NEVER_EXTRACTABLE / CKA_LOCAL and the attributes fixed
/// at creation never change, and a non-modifiable key changes nothing; the history attributes
/// follow the key's past, not the template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_attributes_stay_fixed() {
    const CKA_LABEL: u64 = 0x3;
    const CKA_VALUE: u64 = 0x11;
    const CKA_SENSITIVE: u64 = 0x103;
    const CKA_EXTRACTABLE: u64 = 0x162;
    const CKA_LOCAL: u64 = 0x163;
    const CKA_NEVER_EXTRACTABLE: u64 = 0x164;
    const CKA_ALWAYS_SENSITIVE: u64 = 0x165;
    const CKA_KEY_GEN_MECHANISM: u64 = 0x166;
    const CKA_MODIFIABLE: u64 = 0x170;
    let server = Server::start().await;
    let mut c = server.client().await;
    let set = |key: &[u8], t: &[(u64, proto::AttributeValue)]| proto::SetAttributeValueRequest {
        object: key.to_vec(),
        attributes: template(t),
    };

    // Generated sensitive and non-extractable; a template claiming otherwise about the past is
    // overruled.
    let locked = aes(
        &mut c,
        &[
            (CKA_EXTRACTABLE, tf(false)),
            (CKA_ALWAYS_SENSITIVE, tf(false)),
            (CKA_LOCAL, tf(false)),
        ],
    )
    .await;
    let a = attrs_of(&mut c, &locked).await;
    assert_eq!(a[&CKA_NEVER_EXTRACTABLE], [1]);
    assert_eq!(a[&CKA_ALWAYS_SENSITIVE], [1]);
    assert_eq!(a[&CKA_LOCAL], [1]);
    for (t, v) in [
        (CKA_SENSITIVE, tf(false)),
        (CKA_EXTRACTABLE, tf(true)),
        (CKA_EXTRACTABLE, int(1)),
        (CKA_EXTRACTABLE, b(&[1])),
        (CKA_NEVER_EXTRACTABLE, tf(false)),
        (CKA_ALWAYS_SENSITIVE, tf(false)),
        (CKA_LOCAL, tf(false)),
        (CKA_CLASS, int(2)),
        (CKA_KEY_TYPE, int(0x10)),
        (CKA_VALUE_LEN, int(16)),
        (CKA_VALUE, b(&[0; 32])),
        (CKA_EC_PARAMS, b(P256)),
        (CKA_MODULUS_BITS, int(2048)),
    ] {
        assert_eq!(
            ckr(c.set_attribute_value(set(&locked, &[(t, v.clone())])).await),
            CKR_ATTRIBUTE_READ_ONLY,
            "{t:#x} {v:?}"
        );
    }
    assert_eq!(
        ckr(c
            .set_attribute_value(set(&locked, &[(CKA_KEY_GEN_MECHANISM, int(0x350))]))
            .await),
        CKR_ATTRIBUTE_TYPE_INVALID
    );
    // Setting them to what they are already is no way around either rule.
    let same = c
        .set_attribute_value(set(
            &locked,
            &[(CKA_SENSITIVE, tf(true)), (CKA_EXTRACTABLE, tf(false))],
        ))
        .await
        .unwrap()
        .into_inner()
        .object;
    let a = attrs_of(&mut c, &same).await;
    assert_eq!(a[&CKA_NEVER_EXTRACTABLE], [1]);
    assert_eq!(a[&CKA_ALWAYS_SENSITIVE], [1]);

    // Extractable and non-sensitive at first: locking it later does not rewrite its history.
    let open = aes(&mut c, &[(CKA_SENSITIVE, tf(false))]).await;
    let later = c
        .set_attribute_value(set(
            &open,
            &[(CKA_SENSITIVE, tf(true)), (CKA_EXTRACTABLE, tf(false))],
        ))
        .await
        .unwrap()
        .into_inner()
        .object;
    let a = attrs_of(&mut c, &later).await;
    assert_eq!(a[&CKA_SENSITIVE], [1]);
    assert_eq!(a[&CKA_EXTRACTABLE], [0]);
    assert_eq!(a[&CKA_NEVER_EXTRACTABLE], [0]);
    assert_eq!(a[&CKA_ALWAYS_SENSITIVE], [0]);
    for (t, v) in [(CKA_SENSITIVE, tf(false)), (CKA_EXTRACTABLE, tf(true))] {
        assert_eq!(
            ckr(c.set_attribute_value(set(&later, &[(t, v)])).await),
            CKR_ATTRIBUTE_READ_ONLY
        );
    }
    // And a non-extractable key stays unwrappable.
    assert_eq!(
        ckr(c
            .wrap_key(proto::WrapKeyRequest {
                mech: mech(CKM_AES_KEY_WRAP),
                key: kb(&later),
                ke_k: kb(&open),
                ..Default::default()
            })
            .await),
        0x6A
    );

    // Unwrapped keys were never local, never always-sensitive, never never-extractable, even
    // when the template asks.
    let kek = aes(&mut c, &[]).await;
    let wrapped = c
        .wrap_key(proto::WrapKeyRequest {
            mech: mech(CKM_AES_KEY_WRAP),
            key: kb(&open),
            ke_k: kb(&kek),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .wrapped;
    let mut t = aes_template();
    for (k, v) in [
        (CKA_EXTRACTABLE, tf(false)),
        (CKA_NEVER_EXTRACTABLE, tf(true)),
        (CKA_ALWAYS_SENSITIVE, tf(true)),
        (CKA_LOCAL, tf(true)),
        (CKA_KEY_GEN_MECHANISM, int(CKM_AES_KEY_GEN as i64)),
    ] {
        t.insert(k, v);
    }
    let un = c
        .unwrap_key(proto::UnwrapKeyRequest {
            mech: mech(CKM_AES_KEY_WRAP),
            wrapped,
            ke_k: kb(&kek),
            template: t,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .unwrapped_bytes;
    let a = attrs_of(&mut c, &un).await;
    assert!(
        !a.contains_key(&CKA_KEY_GEN_MECHANISM),
        "not generated here"
    );
    assert_eq!(a[&CKA_EXTRACTABLE], [0]);
    assert_eq!(a[&CKA_NEVER_EXTRACTABLE], [0]);
    assert_eq!(a[&CKA_ALWAYS_SENSITIVE], [0]);
    assert_eq!(a[&CKA_LOCAL], [0]);

    // Not modifiable: nothing changes, not even the label, and it cannot be made modifiable.
    let frozen = aes(&mut c, &[(CKA_MODIFIABLE, tf(false))]).await;
    for (t, v) in [
        (CKA_LABEL, b(b"x")),
        (CKA_ENCRYPT, tf(false)),
        (CKA_MODIFIABLE, tf(true)),
    ] {
        assert_eq!(
            ckr(c.set_attribute_value(set(&frozen, &[(t, v)])).await),
            CKR_ATTRIBUTE_READ_ONLY
        );
    }
}

/// Public key import (`CKM_IBM_TRANSPORTKEY`) refuses a SubjectPublicKeyInfo whose key is not a
/// key of its type: an EC point off the curve or at infinity, an Ed25519 or ML-DSA key of the
/// wrong length. A valid one still imports and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_public_keys_are_checked() {
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
    const ML_DSA_65: &[u8] = &[
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12,
    ];
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 0x80 {
            out.push(n as u8);
        } else {
            out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(content);
        out
    }
    fn spki(alg: &[u8], key: &[u8]) -> Vec<u8> {
        let bits = [&[0u8][..], key].concat();
        tlv(0x30, &[tlv(0x30, alg), tlv(0x03, &bits)].concat())
    }
    let server = Server::start().await;
    let mut c = server.client().await;
    let kek = aes(&mut c, &[]).await;
    let import = |spki: Vec<u8>| proto::UnwrapKeyRequest {
        mech: mech(CKM_IBM_TRANSPORTKEY),
        wrapped: spki,
        ke_k: kb(&kek),
        ..Default::default()
    };
    let p256_alg = [EC_PUBLIC_KEY, P256].concat();
    let mut off_curve = vec![4u8];
    off_curve.extend_from_slice(&[1; 64]);
    for (what, s) in [
        ("off the curve", spki(&p256_alg, &off_curve)),
        ("infinity", spki(&p256_alg, &[0])),
        ("short point", spki(&p256_alg, &[4, 1, 2])),
        ("Ed25519 of 31 bytes", spki(ED25519, &[7; 31])),
        (
            "Ed25519 of 31 bytes, GREP11 shape",
            spki(&[EC_PUBLIC_KEY, ED25519].concat(), &[7; 31]),
        ),
        ("ML-DSA-65 of 100 bytes", spki(ML_DSA_65, &[7; 100])),
        (
            "secp256k1 short point",
            spki(&[EC_PUBLIC_KEY, SECP256K1].concat(), &[4; 33]),
        ),
        (
            "secp256k1 off the curve",
            spki(&[EC_PUBLIC_KEY, SECP256K1].concat(), &off_curve),
        ),
    ] {
        assert_eq!(
            ckr(c.unwrap_key(import(s)).await),
            CKR_WRAPPED_KEY_INVALID,
            "{what}"
        );
    }

    // Real keys import and verify what their private keys signed.
    for curve in [P256, SECP256K1] {
        let (private, public) = {
            let r = c
                .generate_key_pair(proto::GenerateKeyPairRequest {
                    mech: mech(CKM_EC_KEY_PAIR_GEN),
                    pub_key_template: template(&[(CKA_EC_PARAMS, b(curve))]),
                    priv_key_template: template(&[]),
                })
                .await
                .unwrap()
                .into_inner();
            (r.priv_key_bytes, r.pub_key_bytes)
        };
        let spki_len = 2 + usize::from(public[1]);
        let imported = c
            .unwrap_key(import(public[..spki_len].to_vec()))
            .await
            .unwrap()
            .into_inner()
            .unwrapped_bytes;
        assert_eq!(imported[..spki_len], public[..spki_len]);
        let sig = c
            .sign_single(proto::SignSingleRequest {
                mech: mech(CKM_ECDSA_SHA256),
                priv_key: kb(&private),
                data: b"m".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .signature;
        c.verify_single(proto::VerifySingleRequest {
            mech: mech(CKM_ECDSA_SHA256),
            pub_key: kb(&imported),
            data: b"m".to_vec(),
            signature: sig,
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// Attributes that describe a key's value (the RSA modulus and private components, the EC
/// point; the public exponent of a key not generated here) come from the key, never from a
/// template: a template's values for them are not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_attributes_are_not_taken_from_templates() {
    const CKA_MODULUS: u64 = 0x120;
    const CKA_PRIVATE_EXPONENT: u64 = 0x123;
    const CKA_PRIME_1: u64 = 0x124;
    const CKA_COEFFICIENT: u64 = 0x128;
    let server = Server::start().await;
    let mut c = server.client().await;
    let r = c
        .generate_key_pair(proto::GenerateKeyPairRequest {
            mech: mech(CKM_RSA_PKCS_KEY_PAIR_GEN),
            pub_key_template: template(&[
                (CKA_MODULUS_BITS, int(2048)),
                (CKA_MODULUS, b(&[0xAB; 256])),
                (CKA_EC_POINT, b(&[4, 1, 2])),
            ]),
            priv_key_template: template(&[
                (CKA_PRIVATE_EXPONENT, b(&[1])),
                (CKA_PRIME_1, b(&[3])),
                (CKA_COEFFICIENT, b(&[5])),
                (CKA_MODULUS, b(&[0xAB; 256])),
            ]),
        })
        .await
        .unwrap()
        .into_inner();
    for (blob, spoofed) in [
        (&r.pub_key_bytes, &[CKA_MODULUS, CKA_EC_POINT][..]),
        (
            &r.priv_key_bytes,
            &[
                CKA_PRIVATE_EXPONENT,
                CKA_PRIME_1,
                CKA_COEFFICIENT,
                CKA_MODULUS,
            ][..],
        ),
    ] {
        let all = c
            .get_attribute_value(proto::GetAttributeValueRequest {
                object: blob.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .attributes_bytes;
        for t in spoofed {
            assert!(!all.contains_key(t), "{t:#x} kept from the template");
        }
    }
    // Nor through unwrap (a secret key) or public key import.
    let kek = aes(&mut c, &[]).await;
    let wrapped = c
        .wrap_key(proto::WrapKeyRequest {
            mech: mech(CKM_AES_KEY_WRAP),
            key: kb(&kek),
            ke_k: kb(&kek),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .wrapped;
    let mut t = aes_template();
    t.insert(CKA_MODULUS, b(&[0xAB; 16]));
    let un = c
        .unwrap_key(proto::UnwrapKeyRequest {
            mech: mech(CKM_AES_KEY_WRAP),
            wrapped,
            ke_k: kb(&kek),
            template: t,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .unwrapped_bytes;
    let spki_len = 4 + usize::from(r.pub_key_bytes[2]) * 256 + usize::from(r.pub_key_bytes[3]);
    let imported = c
        .unwrap_key(proto::UnwrapKeyRequest {
            mech: mech(CKM_IBM_TRANSPORTKEY),
            wrapped: r.pub_key_bytes[..spki_len].to_vec(),
            ke_k: kb(&kek),
            template: template(&[
                (CKA_MODULUS, b(&[0xAB; 256])),
                (CKA_EC_POINT, b(&[4])),
                (CKA_PUBLIC_EXPONENT, int(3)),
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .unwrapped_bytes;
    for blob in [un, imported] {
        let all = c
            .get_attribute_value(proto::GetAttributeValueRequest {
                object: blob,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .attributes_bytes;
        assert!(!all.contains_key(&CKA_MODULUS));
        assert!(!all.contains_key(&CKA_EC_POINT));
        assert!(!all.contains_key(&CKA_PUBLIC_EXPONENT));
    }
}

/// An Init with a mechanism that does not serve its operation (as GetMechanismInfo says) is
/// refused at once, not at the final call.
#[tokio::test]
async fn init_refuses_a_mechanism_of_another_operation() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = aes(&mut c, &[]).await;
    let (private, public) = p256(&mut c, &[], &[(CKA_SIGN, tf(true))]).await;
    assert_eq!(
        ckr(c
            .encrypt_init(proto::EncryptInitRequest {
                mech: mech(CKM_SHA256_HMAC),
                key: kb(&key),
                ..Default::default()
            })
            .await),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        ckr(c
            .decrypt_init(proto::DecryptInitRequest {
                mech: mech(CKM_AES_KEY_WRAP),
                key: kb(&key),
                ..Default::default()
            })
            .await),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        ckr(c
            .sign_init(proto::SignInitRequest {
                mech: cbc(),
                priv_key: kb(&key),
                ..Default::default()
            })
            .await),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        ckr(c
            .verify_init(proto::VerifyInitRequest {
                mech: mech(CKM_ECDH1_DERIVE),
                pub_key: kb(&public),
                ..Default::default()
            })
            .await),
        CKR_MECHANISM_INVALID
    );
    // The right mechanisms still start.
    c.sign_init(proto::SignInitRequest {
        mech: mech(CKM_ECDSA_SHA256),
        priv_key: kb(&private),
        ..Default::default()
    })
    .await
    .unwrap();
    c.encrypt_init(proto::EncryptInitRequest {
        mech: cbc(),
        key: kb(&key),
        ..Default::default()
    })
    .await
    .unwrap();
}
