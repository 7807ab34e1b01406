#![allow(clippy::unwrap_used)]
//! The GREP11-compatible service end to end: a tonic client generated from our proto, over TLS,
//! against a real server, in both request generations (plain `bytes` keys and `KeyBlob`s).

mod common;

use common::*;
use keyfort_grpc::proto;

// PKCS#11 values used below.
const CKA_CLASS: u64 = 0x0;
const CKA_LABEL: u64 = 0x3;
const CKA_KEY_TYPE: u64 = 0x100;
const CKA_ENCRYPT: u64 = 0x104;
const CKA_SIGN: u64 = 0x108;
const CKA_MODULUS_BITS: u64 = 0x121;
const CKA_PUBLIC_EXPONENT: u64 = 0x122;
const CKA_VALUE_LEN: u64 = 0x161;
const CKA_EXTRACTABLE: u64 = 0x162;
const CKA_EC_PARAMS: u64 = 0x180;
const CKA_EC_POINT: u64 = 0x181;
const CKA_PARAMETER_SET: u64 = 0x61D;
const CKO_PRIVATE_KEY: i64 = 3;
const CKO_SECRET_KEY: i64 = 4;
const CKK_EC: i64 = 3;
const CKK_AES: i64 = 0x1F;
const CKK_GENERIC_SECRET: i64 = 0x10;

const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
const P521: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x23];
const SECP256K1: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x0A];
const ED25519: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];

const CKR_KEY_FUNCTION_NOT_PERMITTED: u64 = 0x68;
const CKR_KEY_UNEXTRACTABLE: u64 = 0x6A;
const CKR_MECHANISM_INVALID: u64 = 0x70;
const CKR_SIGNATURE_INVALID: u64 = 0xC0;
const CKR_KEY_SIZE_RANGE: u64 = 0x62;
const CKR_IBM_WKID_MISMATCH: u64 = 0x8001_0001;
const CKR_IBM_BLOB_ERROR: u64 = 0x8001_0004;
const CKR_IBM_WK_NOT_INITIALIZED: u64 = 0x8001_0009;
const CKR_IBM_GREP11_NOT_AUTHENTICATED: u64 = 0x8004_0001;

/// Generates an AES key; returns (raw blob, check sum, KeyBlob).
async fn aes_key(
    c: &mut Client,
    len: i64,
    extra: &[(u64, proto::AttributeValue)],
) -> (Vec<u8>, Vec<u8>) {
    let mut t = vec![(CKA_VALUE_LEN, int(len)), (CKA_LABEL, b(b"test"))];
    t.extend_from_slice(extra);
    let r = c
        .generate_key(proto::GenerateKeyRequest {
            mech: mech(0x1080),
            template: template(&t),
        })
        .await
        .unwrap()
        .into_inner();
    // Both forms are filled and agree.
    assert_eq!(r.key.as_ref().unwrap().key_blobs[0], r.key_bytes);
    assert_eq!(r.check_sum.len(), 3);
    (r.key_bytes, r.check_sum)
}

/// Generates a key pair; returns (private blob, public blob).
async fn key_pair(
    c: &mut Client,
    m: u64,
    public: &[(u64, proto::AttributeValue)],
) -> (Vec<u8>, Vec<u8>) {
    let r = c
        .generate_key_pair(proto::GenerateKeyPairRequest {
            mech: mech(m),
            pub_key_template: template(public),
            priv_key_template: template(&[(CKA_SIGN, tf(true))]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.priv_key.as_ref().unwrap().key_blobs[0], r.priv_key_bytes);
    assert_eq!(r.pub_key.as_ref().unwrap().key_blobs[0], r.pub_key_bytes);
    (r.priv_key_bytes, r.pub_key_bytes)
}

async fn sign_single(
    c: &mut Client,
    m: Option<proto::Mechanism>,
    key: &[u8],
    data: &[u8],
    old: bool,
) -> Vec<u8> {
    let mut req = proto::SignSingleRequest {
        mech: m,
        data: data.to_vec(),
        ..Default::default()
    };
    if old {
        req.priv_key_bytes = key.to_vec();
    } else {
        req.priv_key = kb(key);
    }
    c.sign_single(req).await.unwrap().into_inner().signature
}

async fn verify_single(
    c: &mut Client,
    m: Option<proto::Mechanism>,
    key: &[u8],
    data: &[u8],
    sig: &[u8],
    old: bool,
) -> Result<tonic::Response<proto::VerifySingleResponse>, tonic::Status> {
    let mut req = proto::VerifySingleRequest {
        mech: m,
        data: data.to_vec(),
        signature: sig.to_vec(),
        ..Default::default()
    };
    if old {
        req.pub_key_bytes = key.to_vec();
    } else {
        req.pub_key = kb(key);
    }
    c.verify_single(req).await
}

/// Sign and verify in all three flows (single, Init+Sign, Init+Update…+Final) and both
/// generations; a changed message fails with CKR_SIGNATURE_INVALID.
async fn sign_verify_all_forms(
    c: &mut Client,
    m: Option<proto::Mechanism>,
    private: &[u8],
    public: &[u8],
) -> Vec<u8> {
    let data = b"the quick brown fox jumps over the lazy dog".to_vec();
    for old in [false, true] {
        let sig = sign_single(c, m.clone(), private, &data, old).await;
        verify_single(c, m.clone(), public, &data, &sig, old)
            .await
            .unwrap();
        let bad = verify_single(c, m.clone(), public, b"another message", &sig, old).await;
        assert_eq!(ckr(bad), CKR_SIGNATURE_INVALID);
    }
    // Init + Sign / Verify (old-generation key field in SignInit, new in VerifyInit).
    let st = c
        .sign_init(proto::SignInitRequest {
            mech: m.clone(),
            priv_key_bytes: private.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let sig = c
        .sign(proto::SignRequest {
            state: st,
            data: data.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .signature;
    let st = c
        .verify_init(proto::VerifyInitRequest {
            mech: m.clone(),
            pub_key: kb(public),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    c.verify(proto::VerifyRequest {
        state: st.clone(),
        data: data.clone(),
        signature: sig.clone(),
    })
    .await
    .unwrap();
    // Multi-part.
    let mut st = c
        .sign_init(proto::SignInitRequest {
            mech: m.clone(),
            priv_key: kb(private),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    for chunk in data.chunks(10) {
        st = c
            .sign_update(proto::SignUpdateRequest {
                state: st,
                data: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .state;
    }
    let sig2 = c
        .sign_final(proto::SignFinalRequest { state: st })
        .await
        .unwrap()
        .into_inner()
        .signature;
    let mut st = c
        .verify_init(proto::VerifyInitRequest {
            mech: m.clone(),
            pub_key_bytes: public.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    for chunk in data.chunks(7) {
        st = c
            .verify_update(proto::VerifyUpdateRequest {
                state: st,
                data: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .state;
    }
    c.verify_final(proto::VerifyFinalRequest {
        state: st.clone(),
        signature: sig2.clone(),
    })
    .await
    .unwrap();
    let mut wrong = sig2.clone();
    wrong[3] ^= 1;
    assert_eq!(
        ckr(c
            .verify_final(proto::VerifyFinalRequest {
                state: st,
                signature: wrong
            })
            .await),
        CKR_SIGNATURE_INVALID
    );
    sig
}

/// Encrypt / decrypt in every flow and both generations; returns one ciphertext.
async fn encrypt_decrypt_all_forms(
    c: &mut Client,
    m: Option<proto::Mechanism>,
    enc_key: &[u8],
    dec_key: &[u8],
    data: &[u8],
    multipart: bool,
) {
    for old in [false, true] {
        let mut req = proto::EncryptSingleRequest {
            mech: m.clone(),
            plain: data.to_vec(),
            ..Default::default()
        };
        let mut dreq = proto::DecryptSingleRequest {
            mech: m.clone(),
            ..Default::default()
        };
        if old {
            req.key_bytes = enc_key.to_vec();
            dreq.key_bytes = dec_key.to_vec();
        } else {
            req.key = kb(enc_key);
            dreq.key = kb(dec_key);
        }
        let ct = c.encrypt_single(req).await.unwrap().into_inner().ciphered;
        assert_ne!(ct, data);
        dreq.ciphered = ct;
        assert_eq!(
            c.decrypt_single(dreq).await.unwrap().into_inner().plain,
            data
        );
    }
    // Init + Encrypt / Decrypt.
    let st = c
        .encrypt_init(proto::EncryptInitRequest {
            mech: m.clone(),
            key_bytes: enc_key.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let ct = c
        .encrypt(proto::EncryptRequest {
            state: st,
            plain: data.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    let st = c
        .decrypt_init(proto::DecryptInitRequest {
            mech: m.clone(),
            key: kb(dec_key),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    assert_eq!(
        c.decrypt(proto::DecryptRequest {
            state: st,
            ciphered: ct
        })
        .await
        .unwrap()
        .into_inner()
        .plain,
        data
    );
    if !multipart {
        return;
    }
    let mut st = c
        .encrypt_init(proto::EncryptInitRequest {
            mech: m.clone(),
            key: kb(enc_key),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let mut ct = Vec::new();
    for chunk in data.chunks(5) {
        let r = c
            .encrypt_update(proto::EncryptUpdateRequest {
                state: st,
                plain: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        st = r.state;
        ct.extend_from_slice(&r.ciphered);
    }
    ct.extend(
        c.encrypt_final(proto::EncryptFinalRequest { state: st })
            .await
            .unwrap()
            .into_inner()
            .ciphered,
    );
    let mut st = c
        .decrypt_init(proto::DecryptInitRequest {
            mech: m.clone(),
            key_bytes: dec_key.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let mut plain = Vec::new();
    for chunk in ct.chunks(9) {
        let r = c
            .decrypt_update(proto::DecryptUpdateRequest {
                state: st,
                ciphered: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        st = r.state;
        plain.extend_from_slice(&r.plain);
    }
    plain.extend(
        c.decrypt_final(proto::DecryptFinalRequest { state: st })
            .await
            .unwrap()
            .into_inner()
            .plain,
    );
    assert_eq!(plain, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_digest_and_mechanisms() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let r = c
        .generate_random(proto::GenerateRandomRequest { len: 4096 })
        .await
        .unwrap()
        .into_inner()
        .rnd;
    let r2 = c
        .generate_random(proto::GenerateRandomRequest { len: 4096 })
        .await
        .unwrap()
        .into_inner()
        .rnd;
    assert_eq!(r.len(), 4096);
    assert_ne!(r, r2);

    // SHA-256("abc"), FIPS 180-4 example.
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let single = c
        .digest_single(proto::DigestSingleRequest {
            mech: mech(0x250),
            data: b"abc".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .digest;
    assert_eq!(hex(&single), abc);
    let mut st = c
        .digest_init(proto::DigestInitRequest { mech: mech(0x250) })
        .await
        .unwrap()
        .into_inner()
        .state;
    for part in [&b"a"[..], b"b", b"c"] {
        st = c
            .digest_update(proto::DigestUpdateRequest {
                state: st,
                data: part.to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .state;
    }
    assert_eq!(
        hex(&c
            .digest_final(proto::DigestFinalRequest { state: st })
            .await
            .unwrap()
            .into_inner()
            .digest),
        abc
    );
    let st = c
        .digest_init(proto::DigestInitRequest { mech: mech(0x250) })
        .await
        .unwrap()
        .into_inner()
        .state;
    assert_eq!(
        hex(&c
            .digest(proto::DigestRequest {
                state: st,
                data: b"abc".to_vec()
            })
            .await
            .unwrap()
            .into_inner()
            .digest),
        abc
    );
    // SHA3-256("abc") through the IBM mechanism number (FIPS 202 example).
    let sha3 = c
        .digest_single(proto::DigestSingleRequest {
            mech: mech(0x8001_0002),
            data: b"abc".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .digest;
    assert_eq!(
        hex(&sha3),
        "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
    );
    assert_eq!(
        ckr(c
            .digest_single(proto::DigestSingleRequest {
                mech: mech(0x220_0000),
                data: vec![]
            })
            .await),
        CKR_MECHANISM_INVALID
    );

    let list = c
        .get_mechanism_list(proto::GetMechanismListRequest {})
        .await
        .unwrap()
        .into_inner()
        .mechs;
    for m in [
        0x1080u64,
        0x1085,
        0x1087,
        0x0,
        0x9,
        0x43,
        0x1040,
        0x1041,
        0x1050,
        0x1D,
        0x17,
        0x8001_001C,
    ] {
        assert!(list.contains(&m), "{m:#x} not listed");
        let info = c
            .get_mechanism_info(proto::GetMechanismInfoRequest { mech: m })
            .await
            .unwrap()
            .into_inner()
            .mech_info
            .unwrap();
        assert!(info.flags != 0);
    }
    let aes = c
        .get_mechanism_info(proto::GetMechanismInfoRequest { mech: 0x1080 })
        .await
        .unwrap()
        .into_inner()
        .mech_info
        .unwrap();
    assert_eq!((aes.min_key_size, aes.max_key_size), (16, 32));
    assert_eq!(
        ckr(c
            .get_mechanism_info(proto::GetMechanismInfoRequest { mech: 0x8001_0031 })
            .await),
        CKR_MECHANISM_INVALID
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes_keys_all_modes_and_forms() {
    let server = Server::start().await;
    let mut c = server.client().await;
    for len in [16, 24, 32] {
        let (key, kcv) = aes_key(&mut c, len, &[]).await;
        // The check value is AES-ECB(key, 0¹⁶)[..3]: recompute it through the service.
        let zero = c
            .encrypt_single(proto::EncryptSingleRequest {
                mech: mech(0x1081),
                key: kb(&key),
                plain: vec![0; 16],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .ciphered;
        assert_eq!(kcv, zero[..3]);
        let data: Vec<u8> = (0..100u8).collect();
        encrypt_decrypt_all_forms(&mut c, mech_b(0x1085, &[7; 16]), &key, &key, &data, true).await;
        encrypt_decrypt_all_forms(&mut c, mech_b(0x1087, &[1; 12]), &key, &key, &data, true).await;
        encrypt_decrypt_all_forms(&mut c, mech_b(0x1086, &[2; 16]), &key, &key, &data, true).await;
        encrypt_decrypt_all_forms(
            &mut c,
            mech_b(0x1082, &[3; 16]),
            &key,
            &key,
            &data[..96],
            true,
        )
        .await;
        encrypt_decrypt_all_forms(&mut c, mech(0x1081), &key, &key, &data[..96], true).await;
    }
    // Block modes stream: an update returns every whole block it can (CBC-PAD decryption keeps
    // its last block for the final call).
    let (key, _) = aes_key(&mut c, 32, &[]).await;
    let st = c
        .encrypt_init(proto::EncryptInitRequest {
            mech: mech_b(0x1085, &[8; 16]),
            key: kb(&key),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let r = c
        .encrypt_update(proto::EncryptUpdateRequest {
            state: st,
            plain: vec![1; 40],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.ciphered.len(), 32);
    let last = c
        .encrypt_final(proto::EncryptFinalRequest { state: r.state })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    assert_eq!(last.len(), 16);
    let whole = c
        .encrypt_single(proto::EncryptSingleRequest {
            mech: mech_b(0x1085, &[8; 16]),
            key: kb(&key),
            plain: vec![1; 40],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    assert_eq!([r.ciphered, last].concat(), whole);
    let st = c
        .decrypt_init(proto::DecryptInitRequest {
            mech: mech_b(0x1085, &[8; 16]),
            key: kb(&key),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let r = c
        .decrypt_update(proto::DecryptUpdateRequest {
            state: st,
            ciphered: whole,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.plain, vec![1; 32]);
    let last = c
        .decrypt_final(proto::DecryptFinalRequest { state: r.state })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(last, vec![1; 8]);
    assert_eq!(
        ckr(c
            .generate_key(proto::GenerateKeyRequest {
                mech: mech(0x1080),
                template: template(&[(CKA_VALUE_LEN, int(20))])
            })
            .await),
        CKR_KEY_SIZE_RANGE
    );
    // A key without CKA_ENCRYPT refuses to encrypt.
    let (no_enc, _) = aes_key(&mut c, 32, &[(CKA_ENCRYPT, tf(false))]).await;
    assert_eq!(
        ckr(c
            .encrypt_single(proto::EncryptSingleRequest {
                mech: mech_b(0x1085, &[0; 16]),
                key: kb(&no_enc),
                plain: vec![1],
                ..Default::default()
            })
            .await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    // GCM tampering is detected.
    let (key, _) = aes_key(&mut c, 32, &[]).await;
    let mut ct = c
        .encrypt_single(proto::EncryptSingleRequest {
            mech: mech_b(0x1087, &[9; 12]),
            key: kb(&key),
            plain: b"secret".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    ct[0] ^= 1;
    assert_eq!(
        ckr(c
            .decrypt_single(proto::DecryptSingleRequest {
                mech: mech_b(0x1087, &[9; 12]),
                key: kb(&key),
                ciphered: ct,
                ..Default::default()
            })
            .await),
        0x40
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_with_aes_and_generic_secret_keys() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let (aes, _) = aes_key(&mut c, 32, &[]).await;
    let generic = c
        .generate_key(proto::GenerateKeyRequest {
            mech: mech(0x350),
            template: template(&[
                (CKA_VALUE_LEN, int(64)),
                (CKA_KEY_TYPE, int(CKK_GENERIC_SECRET)),
            ]),
        })
        .await
        .unwrap()
        .into_inner()
        .key_bytes;
    for key in [&aes, &generic] {
        for m in [0x251u64, 0x261, 0x271] {
            let tag = sign_verify_all_forms(&mut c, mech(m), key, key).await;
            assert_eq!(
                tag.len(),
                match m {
                    0x251 => 32,
                    0x261 => 48,
                    _ => 64,
                }
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_sign_verify_encrypt_decrypt() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let (private, public) = key_pair(
        &mut c,
        0x0,
        &[
            (CKA_MODULUS_BITS, int(2048)),
            (CKA_PUBLIC_EXPONENT, int(65537)),
        ],
    )
    .await;
    // The public key blob starts with a plain SPKI that a DER parser reads on its own.
    assert_eq!(public[0], 0x30);
    for m in [
        mech(0x40),
        mech(0x41),
        mech(0x42),
        pss(0x43, 0x250, 2, 32),
        pss(0x45, 0x270, 4, 64),
    ] {
        let sig = sign_verify_all_forms(&mut c, m, &private, &public).await;
        assert_eq!(sig.len(), 256);
    }
    // CKM_RSA_PKCS signs a caller's DigestInfo; CKM_RSA_PKCS_PSS a caller's digest.
    let digest = [0x5a; 32];
    let sig = sign_single(&mut c, pss(0xD, 0x250, 2, 32), &private, &digest, false).await;
    verify_single(&mut c, pss(0xD, 0x250, 2, 32), &public, &digest, &sig, true)
        .await
        .unwrap();
    let sig = sign_single(&mut c, mech(0x1), &private, b"raw digest info", true).await;
    verify_single(&mut c, mech(0x1), &public, b"raw digest info", &sig, false)
        .await
        .unwrap();
    // OAEP and PKCS#1 v1.5 encryption with the public key, decryption with the private key.
    encrypt_decrypt_all_forms(
        &mut c,
        oaep(0x250, 2),
        &public,
        &private,
        b"a data key",
        false,
    )
    .await;
    encrypt_decrypt_all_forms(
        &mut c,
        oaep(0x220, 1),
        &public,
        &private,
        b"a data key",
        false,
    )
    .await;
    encrypt_decrypt_all_forms(&mut c, mech(0x1), &public, &private, b"a data key", false).await;
    // A 1024-bit modulus is refused.
    assert_eq!(
        ckr(c
            .generate_key_pair(proto::GenerateKeyPairRequest {
                mech: mech(0x0),
                pub_key_template: template(&[(CKA_MODULUS_BITS, int(1024))]),
                ..Default::default()
            })
            .await),
        CKR_KEY_SIZE_RANGE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_eddsa_and_ml_dsa_keys() {
    let server = Server::start().await;
    let mut c = server.client().await;
    for (curve, half) in [(P256, 32), (P384, 48), (P521, 66), (SECP256K1, 32)] {
        let (private, public) = key_pair(&mut c, 0x1040, &[(CKA_EC_PARAMS, b(curve))]).await;
        for m in [0x1044u64, 0x1045, 0x1046, 0x8001_0009] {
            let sig = sign_verify_all_forms(&mut c, mech(m), &private, &public).await;
            assert_eq!(sig.len(), 2 * half, "ECDSA signatures are raw r ‖ s");
        }
        // CKM_ECDSA signs the data as given.
        let sig = sign_single(
            &mut c,
            mech(0x1041),
            &private,
            b"28-byte string to be signed.",
            false,
        )
        .await;
        verify_single(
            &mut c,
            mech(0x1041),
            &public,
            b"28-byte string to be signed.",
            &sig,
            true,
        )
        .await
        .unwrap();
        // CKA_EC_POINT of the public key is the DER OCTET STRING of the point in the SPKI.
        let attrs = c
            .get_attribute_value(proto::GetAttributeValueRequest {
                object: public.clone(),
                attributes_bytes: [(CKA_EC_POINT, vec![])].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let point = &attrs.attributes_bytes[&CKA_EC_POINT];
        assert_eq!(point[0], 0x04);
    }
    let (private, public) = key_pair(&mut c, 0x1040, &[(CKA_EC_PARAMS, b(ED25519))]).await;
    let sig = sign_verify_all_forms(&mut c, mech(0x8001_001C), &private, &public).await;
    assert_eq!(sig.len(), 64);
    let (private, public) = key_pair(&mut c, 0x1055, &[]).await;
    sign_verify_all_forms(&mut c, mech(0x1057), &private, &public).await;
    for (set, len) in [(1, 2420), (2, 3309), (3, 4627)] {
        let (private, public) = key_pair(&mut c, 0x1C, &[(CKA_PARAMETER_SET, int(set))]).await;
        let sig = sign_verify_all_forms(&mut c, mech(0x1D), &private, &public).await;
        assert_eq!(sig.len(), len);
    }
    // A key pair's private key cannot verify and its public key cannot sign.
    let (private, public) = key_pair(&mut c, 0x1040, &[(CKA_EC_PARAMS, b(P256))]).await;
    let r = c
        .sign_single(proto::SignSingleRequest {
            mech: mech(0x1044),
            priv_key: kb(&public),
            data: vec![1],
            ..Default::default()
        })
        .await;
    assert!(r.is_err());
    let r = verify_single(&mut c, mech(0x1044), &private, b"x", &[0; 64], false).await;
    assert!(r.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_unwrap_between_key_types_and_derive() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let (kek, _) = aes_key(&mut c, 32, &[]).await;
    let (data_key, kcv) = aes_key(&mut c, 16, &[]).await;

    // AES key under AES KW and KWP, both generations; the unwrapped key decrypts what the
    // original encrypted and has the same check value.
    for (m, old) in [(0x2109u64, false), (0x210B, true)] {
        let mut req = proto::WrapKeyRequest {
            mech: mech(m),
            ..Default::default()
        };
        if old {
            req.key_bytes = data_key.clone();
            req.ke_k_bytes = kek.clone();
        } else {
            req.key = kb(&data_key);
            req.ke_k = kb(&kek);
        }
        let wrapped = c.wrap_key(req).await.unwrap().into_inner().wrapped;
        let mut ureq = proto::UnwrapKeyRequest {
            mech: mech(m),
            wrapped,
            template: template(&[
                (CKA_CLASS, int(CKO_SECRET_KEY)),
                (CKA_KEY_TYPE, int(CKK_AES)),
                (CKA_VALUE_LEN, int(16)),
            ]),
            ..Default::default()
        };
        if old {
            ureq.ke_k_bytes = kek.clone();
        } else {
            ureq.ke_k = kb(&kek);
        }
        let un = c.unwrap_key(ureq).await.unwrap().into_inner();
        assert_eq!(un.check_sum[..3], kcv[..]);
        assert_eq!(un.check_sum[3..], [0, 0, 0, 128]);
        let ct = c
            .encrypt_single(proto::EncryptSingleRequest {
                mech: mech_b(0x1085, &[0; 16]),
                key: kb(&data_key),
                plain: b"hello".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .ciphered;
        let pt = c
            .decrypt_single(proto::DecryptSingleRequest {
                mech: mech_b(0x1085, &[0; 16]),
                key_bytes: un.unwrapped_bytes,
                ciphered: ct,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .plain;
        assert_eq!(pt, b"hello");
    }

    // AES key under an RSA public key (OAEP), unwrapped with the private key.
    let (rsa_priv, rsa_pub) = key_pair(&mut c, 0x0, &[(CKA_MODULUS_BITS, int(2048))]).await;
    let wrapped = c
        .wrap_key(proto::WrapKeyRequest {
            mech: oaep(0x250, 2),
            key: kb(&data_key),
            ke_k: kb(&rsa_pub),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .wrapped;
    assert_eq!(wrapped.len(), 256);
    let un = c
        .unwrap_key(proto::UnwrapKeyRequest {
            mech: oaep(0x250, 2),
            wrapped,
            ke_k: kb(&rsa_priv),
            template: template(&[
                (CKA_CLASS, int(CKO_SECRET_KEY)),
                (CKA_KEY_TYPE, int(CKK_AES)),
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(un.check_sum[..3], kcv[..]);

    // Export of an EC private key (AES-CBC-PAD of PKCS #8), decrypted by the client, then
    // imported again: the imported key signs what the original public key verifies.
    let (ec_priv, ec_pub) = key_pair(&mut c, 0x1040, &[(CKA_EC_PARAMS, b(P256))]).await;
    let iv = [4u8; 16];
    let wrapped = c
        .wrap_key(proto::WrapKeyRequest {
            mech: mech_b(0x1085, &iv),
            key: kb(&ec_priv),
            ke_k: kb(&kek),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .wrapped;
    let pkcs8 = c
        .decrypt_single(proto::DecryptSingleRequest {
            mech: mech_b(0x1085, &iv),
            key: kb(&kek),
            ciphered: wrapped.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(pkcs8[0], 0x30, "PKCS #8 DER");
    let imported = c
        .unwrap_key(proto::UnwrapKeyRequest {
            mech: mech_b(0x1085, &iv),
            wrapped,
            ke_k_bytes: kek.clone(),
            template: template(&[
                (CKA_CLASS, int(CKO_PRIVATE_KEY)),
                (CKA_KEY_TYPE, int(CKK_EC)),
                (CKA_EC_PARAMS, b(P256)),
                (CKA_SIGN, tf(true)),
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .unwrapped_bytes;
    let sig = sign_single(&mut c, mech(0x1044), &imported, b"imported", false).await;
    verify_single(&mut c, mech(0x1044), &ec_pub, b"imported", &sig, false)
        .await
        .unwrap();

    // Public key import through CKM_IBM_TRANSPORTKEY: the SPKI part of a public blob.
    let spki_len = 2
        + usize::from(ec_pub[1] & 0x7f)
        + if ec_pub[1] & 0x80 != 0 {
            usize::from(ec_pub[2])
        } else {
            0
        };
    let spki_len = if ec_pub[1] < 0x80 {
        2 + usize::from(ec_pub[1])
    } else {
        spki_len
    };
    let spki = ec_pub[..spki_len].to_vec();
    let reimported = c
        .unwrap_key(proto::UnwrapKeyRequest {
            mech: mech(0x8002_0005),
            wrapped: spki,
            ke_k: kb(&kek),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .unwrapped_bytes;
    verify_single(&mut c, mech(0x1044), &reimported, b"imported", &sig, true)
        .await
        .unwrap();

    // A non-extractable key cannot be wrapped.
    let (locked, _) = aes_key(&mut c, 32, &[(CKA_EXTRACTABLE, tf(false))]).await;
    assert_eq!(
        ckr(c
            .wrap_key(proto::WrapKeyRequest {
                mech: mech(0x2109),
                key: kb(&locked),
                ke_k: kb(&kek),
                ..Default::default()
            })
            .await),
        CKR_KEY_UNEXTRACTABLE
    );

    // ECDH: each side derives from its private key and the other's point; the AES keys match.
    let (a_priv, a_pub) = key_pair(&mut c, 0x1040, &[(CKA_EC_PARAMS, b(P384))]).await;
    let (b_priv, b_pub) = key_pair(&mut c, 0x1040, &[(CKA_EC_PARAMS, b(P384))]).await;
    let c2 = c.clone();
    let point = |public: Vec<u8>| {
        let mut c = c2.clone();
        async move {
            let attrs = c
                .get_attribute_value(proto::GetAttributeValueRequest {
                    object: public,
                    attributes_bytes: [(CKA_EC_POINT, vec![])].into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let der = attrs.attributes_bytes[&CKA_EC_POINT].clone();
            der[2..].to_vec()
        }
    };
    let derive = |base: Vec<u8>, peer: Vec<u8>, old: bool| {
        let mut c = c2.clone();
        async move {
            let mut req = proto::DeriveKeyRequest {
                mech: Some(proto::Mechanism {
                    mechanism: 0x1050,
                    parameter: Some(proto::mechanism::Parameter::Ecdh1DeriveParameter(
                        proto::Ecdh1DeriveParm {
                            kdf: 6,
                            shared_data: b"ctx".to_vec(),
                            public_data: peer,
                        },
                    )),
                }),
                template: template(&[
                    (CKA_CLASS, int(CKO_SECRET_KEY)),
                    (CKA_KEY_TYPE, int(CKK_AES)),
                    (CKA_VALUE_LEN, int(32)),
                ]),
                ..Default::default()
            };
            if old {
                req.base_key_bytes = base;
            } else {
                req.base_key = kb(&base);
            }
            c.derive_key(req).await.unwrap().into_inner()
        }
    };
    let ka = derive(a_priv, point(b_pub).await, false).await;
    let kb_ = derive(b_priv, point(a_pub).await, true).await;
    assert_eq!(ka.check_sum, kb_.check_sum);
    assert_eq!(ka.new_key.unwrap().key_blobs[0], ka.new_key_bytes);

    // ML-KEM: encapsulate to the public key, decapsulate with the private key.
    let (kem_priv, kem_pub) = key_pair(&mut c, 0xF, &[(CKA_PARAMETER_SET, int(2))]).await;
    let kem = |mode: i32, ct: Vec<u8>| proto::Mechanism {
        mechanism: 0x17,
        parameter: Some(proto::mechanism::Parameter::KyberKemParameter(
            proto::KyberKemParm {
                mode,
                cipher_text: ct,
                ..Default::default()
            },
        )),
    };
    let t = template(&[
        (CKA_CLASS, int(CKO_SECRET_KEY)),
        (CKA_KEY_TYPE, int(CKK_AES)),
        (CKA_VALUE_LEN, int(32)),
    ]);
    let enc = c
        .derive_key(proto::DeriveKeyRequest {
            mech: Some(kem(1, vec![])),
            base_key: kb(&kem_pub),
            template: t.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enc.check_sum.len(), 7 + 1088);
    let dec = c
        .derive_key(proto::DeriveKeyRequest {
            mech: Some(kem(2, enc.check_sum[7..].to_vec())),
            base_key_bytes: kem_priv,
            template: t,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dec.check_sum[..7], enc.check_sum[..7]);
    // Reencrypt from the encapsulated key to the decapsulated one without exposing plaintext.
    let ct = c
        .encrypt_single(proto::EncryptSingleRequest {
            mech: mech_b(0x1087, &[5; 12]),
            key: kb(&enc.new_key_bytes),
            plain: b"moved".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    let re = c
        .reencrypt_single(proto::ReencryptSingleRequest {
            dec_mech: mech_b(0x1087, &[5; 12]),
            enc_mech: mech_b(0x1085, &[6; 16]),
            ciphered: ct,
            dec_key: kb(&dec.new_key_bytes),
            enc_key: kb(&kek),
        })
        .await
        .unwrap()
        .into_inner()
        .reciphered;
    let pt = c
        .decrypt_single(proto::DecryptSingleRequest {
            mech: mech_b(0x1085, &[6; 16]),
            key: kb(&kek),
            ciphered: re,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(pt, b"moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_are_bound_and_editable_by_the_rules() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let (key, _) = aes_key(&mut c, 32, &[]).await;
    let got = c
        .get_attribute_value(proto::GetAttributeValueRequest {
            object: key.clone(),
            attributes: template(&[(CKA_LABEL, b(b"")), (CKA_VALUE_LEN, int(0))]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.attributes_bytes[&CKA_LABEL], b"test");
    assert_eq!(got.attributes_bytes[&CKA_VALUE_LEN], 32i64.to_be_bytes());
    assert!(
        c.get_attribute_value(proto::GetAttributeValueRequest {
            object: key.clone(),
            attributes_bytes: [(0x11, vec![])].into(),
            ..Default::default()
        })
        .await
        .is_err()
    );
    // Turn encryption off: the new blob refuses to encrypt, the old one still works.
    let edited = c
        .set_attribute_value(proto::SetAttributeValueRequest {
            object: key.clone(),
            attributes: template(&[(CKA_ENCRYPT, tf(false)), (CKA_LABEL, b(b"renamed"))]),
        })
        .await
        .unwrap()
        .into_inner()
        .object;
    let enc = |k: Vec<u8>| proto::EncryptSingleRequest {
        mech: mech_b(0x1085, &[0; 16]),
        key_bytes: k,
        plain: vec![1, 2, 3],
        ..Default::default()
    };
    assert_eq!(
        ckr(c.encrypt_single(enc(edited.clone())).await),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    c.encrypt_single(enc(key.clone())).await.unwrap();
    // Read-only attributes stay read-only; extractable cannot come back.
    assert!(
        c.set_attribute_value(proto::SetAttributeValueRequest {
            object: key.clone(),
            attributes: template(&[(CKA_VALUE_LEN, int(16))])
        })
        .await
        .is_err()
    );
    let locked = c
        .set_attribute_value(proto::SetAttributeValueRequest {
            object: key.clone(),
            attributes: template(&[(CKA_EXTRACTABLE, tf(false))]),
        })
        .await
        .unwrap()
        .into_inner()
        .object;
    assert!(
        c.set_attribute_value(proto::SetAttributeValueRequest {
            object: locked,
            attributes: template(&[(CKA_EXTRACTABLE, tf(true))])
        })
        .await
        .is_err()
    );
    // Editing the clear attributes inside the blob breaks its seal.
    let pos = edited.windows(7).position(|w| w == b"renamed").unwrap();
    let mut forged = edited.clone();
    forged[pos] = b'R';
    assert_eq!(ckr(c.encrypt_single(enc(forged)).await), CKR_IBM_BLOB_ERROR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_foreign_and_sealed_blobs_are_refused() {
    let server = Server::start().await;
    let other = Server::start().await;
    let mut c = server.client().await;
    let mut o = other.client().await;
    let (key, _) = aes_key(&mut c, 32, &[]).await;
    let (ec_priv, ec_pub) = key_pair(&mut c, 0x1040, &[(CKA_EC_PARAMS, b(P256))]).await;
    let (foreign, _) = aes_key(&mut o, 32, &[]).await;
    let enc = |k: Vec<u8>| proto::EncryptSingleRequest {
        mech: mech_b(0x1085, &[0; 16]),
        key: kb(&k),
        plain: vec![1, 2, 3],
        ..Default::default()
    };

    // Every single-byte change of the blob is refused, and never crashes the server.
    for i in (0..key.len()).step_by(7) {
        let mut t = key.clone();
        t[i] ^= 0x01;
        let code = ckr(c.encrypt_single(enc(t)).await);
        assert!(
            [CKR_IBM_BLOB_ERROR, CKR_IBM_WKID_MISMATCH].contains(&code),
            "byte {i}: {code:#x}"
        );
    }
    let mut t = key.clone();
    let last = t.len() - 1;
    t[last] ^= 0x80;
    assert_eq!(ckr(c.encrypt_single(enc(t)).await), CKR_IBM_BLOB_ERROR);
    assert_eq!(
        ckr(c.encrypt_single(enc(key[..key.len() - 1].to_vec())).await),
        CKR_IBM_BLOB_ERROR
    );
    assert_eq!(
        ckr(c.encrypt_single(enc(b"not a blob".to_vec())).await),
        CKR_IBM_BLOB_ERROR
    );
    // The MAC of a public key blob covers its SPKI.
    let mut t = ec_pub.clone();
    t[40] ^= 1;
    assert_eq!(
        ckr(verify_single(&mut c, mech(0x1044), &t, b"x", &[0; 64], false).await),
        CKR_IBM_BLOB_ERROR
    );
    // A tampered state blob is refused.
    let mut st = c
        .sign_init(proto::SignInitRequest {
            mech: mech(0x1044),
            priv_key: kb(&ec_priv),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let n = st.len() - 3;
    st[n] ^= 1;
    assert_eq!(
        ckr(c
            .sign_update(proto::SignUpdateRequest {
                state: st,
                data: vec![1]
            })
            .await),
        CKR_IBM_BLOB_ERROR
    );

    // Blobs of another instance (another master key) are refused both ways.
    assert_eq!(
        ckr(c.encrypt_single(enc(foreign.clone())).await),
        CKR_IBM_WKID_MISMATCH
    );
    assert_eq!(
        ckr(o.encrypt_single(enc(key.clone())).await),
        CKR_IBM_WKID_MISMATCH
    );

    // No token, a bad token: not authenticated.
    let mut anon = server.client_as(None, None).await;
    let status = anon
        .generate_random(proto::GenerateRandomRequest { len: 8 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        keyfort_grpc::grep11_error(&status).unwrap().code,
        CKR_IBM_GREP11_NOT_AUTHENTICATED
    );
    let mut forged = server
        .client_as(Some(format!("{}x", server.token)), None)
        .await;
    assert_eq!(
        ckr(forged.encrypt_single(enc(key.clone())).await),
        CKR_IBM_GREP11_NOT_AUTHENTICATED
    );
    // The other server's token is not valid here.
    let mut stranger = server.client_as(Some(other.token.clone()), None).await;
    assert_eq!(
        ckr(stranger.encrypt_single(enc(key.clone())).await),
        CKR_IBM_GREP11_NOT_AUTHENTICATED
    );
    // The instance header works too.
    let mut named = server
        .client_as(Some(server.token.clone()), Some(server.instance_id.clone()))
        .await;
    named.encrypt_single(enc(key.clone())).await.unwrap();

    // A sealed instance refuses every key operation with CKR_IBM_WK_NOT_INITIALIZED.
    server
        .core
        .seal_instance(&server.admin, &server.instance_id)
        .await
        .unwrap();
    let status = named.encrypt_single(enc(key.clone())).await.unwrap_err();
    let e = keyfort_grpc::grep11_error(&status).unwrap();
    assert_eq!(e.code, CKR_IBM_WK_NOT_INITIALIZED);
    assert!(e.retry);
    assert_eq!(
        ckr(named
            .generate_key(proto::GenerateKeyRequest {
                mech: mech(0x1080),
                template: template(&[(CKA_VALUE_LEN, int(16))])
            })
            .await),
        CKR_IBM_WK_NOT_INITIALIZED
    );
    // Without the header, a deployment administrator must name the instance now.
    assert_eq!(ckr(c.encrypt_single(enc(key.clone())).await), 0x7);
}
