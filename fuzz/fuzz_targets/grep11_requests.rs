//! Beyond blobs, a GREP11 client sends mechanisms with their parameters, attribute templates and
//! DER (curve OIDs, SPKIs, wrapped PKCS #8 keys, ECDH peer points); our code reads them after
//! prost has decoded the message. None of those readers may panic, whatever the bytes, and:
//! a template that is accepted encodes back to itself (response map and canonical blob encoding),
//! so does every attribute set a new key gets from it; a mechanism survives the operation state
//! it is kept in; what the DER readers accept re-encodes to what they read; an unwrapped private
//! key or imported public key re-reads from its own encoding.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use keyfort_crypto::ec::{AgreementCurve, AgreementKey};
use keyfort_crypto::rsa;
use keyfort_grpc::attrs::{Attr, Attrs, MAX_ATTRS};
use keyfort_grpc::blob::{self, Private, Public};
use keyfort_grpc::ck::{attr, mech as m, obj};
use keyfort_grpc::der;
use keyfort_grpc::mech::{self, Mech};
use keyfort_grpc::proto::{self, mechanism::Parameter};
use keyfort_grpc::service::{key_attrs, secret_len};
use keyfort_grpc::state::{Op, State};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// One fixed key per ECDH curve (the peer point is what the client controls).
fn agreement_keys() -> &'static [AgreementKey; 3] {
    static KEYS: OnceLock<[AgreementKey; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            AgreementCurve::P256,
            AgreementCurve::P384,
            AgreementCurve::P521,
        ]
        .map(|c| AgreementKey::generate(c).expect("CSPRNG available"))
    })
}

/// The mechanism of a request: parsed, kept in a state blob, re-parsed.
fn mechanism(mech: Option<&proto::Mechanism>) {
    let Some(mech) = mech else {
        assert!(Mech::parse(None).is_err());
        return;
    };
    let _ = mech::info(mech.mechanism);
    let Ok(parsed) = Mech::parse(Some(mech)) else {
        return;
    };
    let shown = format!("{parsed:?}");
    for op in [Op::Digest, Op::Encrypt, Op::Decrypt, Op::Sign, Op::Verify] {
        let state = State::new(op, mech.clone(), b"key".to_vec());
        let again = State::decode(&state.encode(), op).expect("state round trip");
        assert_eq!(again.mech, *mech);
        let reparsed = Mech::parse(Some(&again.mech)).expect("kept mechanism parses");
        assert_eq!(format!("{reparsed:?}"), shown);
    }
    // EncryptUpdate writes the next IV or counter block back as the parameter.
    let chained = match &parsed {
        Mech::AesCbc { iv, .. } => Some(iv.to_vec()),
        Mech::AesCtr { counter } => Some(counter.to_vec()),
        _ => None,
    };
    if let Some(param) = chained {
        let next = proto::Mechanism {
            mechanism: mech.mechanism,
            parameter: Some(Parameter::ParameterB(param)),
        };
        let reparsed = Mech::parse(Some(&next)).expect("chained mechanism parses");
        assert_eq!(format!("{reparsed:?}"), shown);
    }
}

/// A request template: accepted ones round-trip and answer every typed reader.
fn template(map: &HashMap<u64, proto::AttributeValue>) -> Option<Attrs> {
    let t = Attrs::from_proto(map).ok()?;
    assert!(t.0.len() <= MAX_ATTRS);
    assert_eq!(Attrs::from_proto(&t.to_proto()).expect("map round trip"), t);
    assert_eq!(Attrs::decode(&t.encode()).as_ref(), Some(&t));
    for (k, v) in &t.0 {
        let _ = (t.bool(*k), t.flag(*k, true), t.int(*k), t.bytes(*k));
        let raw = Attrs::raw_bytes(v);
        if let Attr::Bytes(b) = v {
            assert_eq!(&raw, b);
        }
    }
    Some(t)
}

/// The attributes a new key gets from a template can be sealed in a blob and read back.
fn new_key_attrs(t: &Attrs, class: i64, key_types: &[i64]) {
    for &kt in key_types {
        for local in [false, true] {
            if let Ok(a) = key_attrs(t, class, kt, local) {
                assert_eq!(a.get(attr::CLASS), Some(&Attr::Int(class)));
                assert_eq!(a.get(attr::KEY_TYPE), Some(&Attr::Int(kt)));
                if a.0.len() <= MAX_ATTRS {
                    assert_eq!(Attrs::decode(&a.encode()).as_ref(), Some(&a));
                }
            }
        }
    }
}

/// The key length a secret key template asks for.
fn secret_lengths(t: &Attrs) {
    for kt in [obj::CKK_AES, obj::CKK_GENERIC_SECRET, obj::CKK_RSA] {
        for default in [None, Some(16), Some(32), Some(66)] {
            if let Ok(len) = secret_len(kt, t, default) {
                assert!((16..=512).contains(&len));
            }
        }
    }
}

/// The readers key pair generation applies to its templates.
fn key_pair_readers(t: &Attrs) {
    if let Ok(Some(bits)) = t.int(attr::MODULUS_BITS) {
        let _ = rsa::KeySize::from_bits(usize::try_from(bits).unwrap_or(0));
    }
    let _ = t.int(attr::PUBLIC_EXPONENT);
    if let Ok(Some(oid)) = t.bytes(attr::EC_PARAMS) {
        if let Some(curve) = der::curve_of(oid) {
            assert_eq!(der::curve_oid(curve), oid);
        }
    }
    let _ = blob::ml_dsa_set(t);
    let _ = blob::ml_kem_set(t);
}

/// A private key unwrapped from client bytes re-reads from the encoding its blob seals.
fn unwrapped_private(t: &Attrs, plain: &[u8]) {
    let Ok(key) = Private::from_bytes(t, plain) else {
        return;
    };
    let bytes = key.to_bytes().expect("encodes");
    assert!(Private::from_bytes(t, &bytes).is_ok());
}

/// A public key imported as an SPKI re-reads from the SPKI its blob carries.
fn imported_public(spki: &[u8]) {
    let Ok(key) = Public::from_spki(spki) else {
        return;
    };
    let canonical = key.spki();
    let again = Public::from_spki(&canonical).expect("canonical SPKI parses");
    assert_eq!(again.spki(), canonical);
}

/// DER pieces: element reader, SPKI, PKCS #8 EC scalar.
fn der_pieces(bytes: &[u8]) {
    let mut b = bytes;
    loop {
        let before = b;
        let Some((tag, content, whole)) = der::read(&mut b) else {
            break;
        };
        assert_eq!(whole, &before[..before.len() - b.len()]);
        let encoded = der::tlv(tag, content);
        let mut e = encoded.as_slice();
        assert_eq!(der::read(&mut e), Some((tag, content, encoded.as_slice())));
        assert!(e.is_empty());
    }
    if let Some(p) = der::parse_spki(bytes) {
        let alg = [p.algorithm, p.parameters].concat();
        let encoded = der::spki(&alg, p.key);
        let q = der::parse_spki(&encoded).expect("SPKI round trip");
        assert_eq!(
            (q.algorithm, q.parameters, q.key),
            (p.algorithm, p.parameters, p.key)
        );
    }
    let _ = der::ec_private_scalar(bytes);
    imported_public(bytes);
}

/// ECDH: the peer's point (and KDF choice) come from the client.
fn ecdh(mech: Option<&proto::Mechanism>) {
    let peer = match mech.and_then(|m| m.parameter.as_ref()) {
        Some(Parameter::Ecdh1DeriveParameter(p)) => p.public_data.as_slice(),
        Some(Parameter::ParameterB(peer)) => peer.as_slice(),
        _ => return,
    };
    for key in agreement_keys() {
        if let Ok(z) = key.agree(peer) {
            assert!(!z.is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 12 {
        0 => {
            let Ok(r) = proto::GenerateKeyRequest::decode(bytes) else {
                return;
            };
            mechanism(r.mech.as_ref());
            if let Some(mut t) = template(&r.template) {
                secret_lengths(&t);
                let mechanism = r.mech.as_ref().map_or(m::AES_KEY_GEN, |m| m.mechanism);
                t.set(attr::KEY_GEN_MECHANISM, Attr::Int(mechanism as i64));
                new_key_attrs(
                    &t,
                    obj::CKO_SECRET_KEY,
                    &[obj::CKK_AES, obj::CKK_GENERIC_SECRET],
                );
            }
        }
        1 => {
            let Ok(r) = proto::GenerateKeyPairRequest::decode(bytes) else {
                return;
            };
            mechanism(r.mech.as_ref());
            let types = [obj::CKK_RSA, obj::CKK_EC, obj::CKK_ML_DSA, obj::CKK_ML_KEM];
            if let Some(t) = template(&r.priv_key_template) {
                key_pair_readers(&t);
                new_key_attrs(&t, obj::CKO_PRIVATE_KEY, &types);
            }
            if let Some(t) = template(&r.pub_key_template) {
                key_pair_readers(&t);
                new_key_attrs(&t, obj::CKO_PUBLIC_KEY, &types);
            }
        }
        2 => {
            if let Ok(r) = proto::EncryptSingleRequest::decode(bytes) {
                mechanism(r.mech.as_ref());
            }
        }
        3 => {
            if let Ok(r) = proto::SignSingleRequest::decode(bytes) {
                mechanism(r.mech.as_ref());
            }
        }
        4 => {
            if let Ok(r) = proto::VerifySingleRequest::decode(bytes) {
                mechanism(r.mech.as_ref());
            }
        }
        5 => {
            if let Ok(r) = proto::EncryptInitRequest::decode(bytes) {
                mechanism(r.mech.as_ref());
            }
        }
        6 => {
            if let Ok(r) = proto::ReencryptSingleRequest::decode(bytes) {
                mechanism(r.dec_mech.as_ref());
                mechanism(r.enc_mech.as_ref());
            }
        }
        7 => {
            let Ok(r) = proto::DeriveKeyRequest::decode(bytes) else {
                return;
            };
            mechanism(r.mech.as_ref());
            ecdh(r.mech.as_ref());
            if let Some(t) = template(&r.template) {
                secret_lengths(&t);
                let kt = t
                    .int(attr::KEY_TYPE)
                    .ok()
                    .flatten()
                    .map_or(obj::CKK_AES, |v| v as i64);
                new_key_attrs(&t, obj::CKO_SECRET_KEY, &[kt]);
            }
        }
        8 => {
            let Ok(r) = proto::UnwrapKeyRequest::decode(bytes) else {
                return;
            };
            mechanism(r.mech.as_ref());
            imported_public(&r.wrapped);
            if let Some(t) = template(&r.template) {
                let _ = (t.int(attr::CLASS), t.int(attr::KEY_TYPE));
                let mut secret = t.clone();
                secret.0.remove(&attr::VALUE_LEN);
                secret_lengths(&secret);
                unwrapped_private(&t, &r.wrapped);
                new_key_attrs(&t, obj::CKO_PUBLIC_KEY, &[obj::CKK_EC, obj::CKK_RSA]);
            }
        }
        9 => {
            if let Ok(r) = proto::WrapKeyRequest::decode(bytes) {
                mechanism(r.mech.as_ref());
            }
        }
        10 => {
            if let Ok(r) = proto::SetAttributeValueRequest::decode(bytes) {
                template(&r.attributes);
            }
        }
        _ => der_pieces(bytes),
    }
});
