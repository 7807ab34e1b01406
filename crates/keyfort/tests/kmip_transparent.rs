#![allow(clippy::unwrap_used)]
//! Register in the Transparent Key Formats (KMIP 1.4 §2.1.7, KMIP 2.1 §2.1.7) end to end: the
//! real `keyfort server --dev` binary over mutual TLS with the dev client certificate, in KMIP
//! 1.4 and 2.1. Each registered key is read back in its Transparent format and in PKCS #8 /
//! X.509 / PKCS #1 / Raw (compared with encodings this test builds itself from the components),
//! and used: sign with the private key, verify with the public key, encrypt/decrypt and MAC.
//! Inconsistent or malformed components are refused and register nothing.

mod common;

use common::kmip::{RSA_PRIVATE_COMPONENTS, en, int, st, text};
use common::{Server, der};
use keyfort_crypto::ec::{Curve, SignatureFormat, SigningKey};
use keyfort_crypto::rsa::{KeySize, PrivateKey};
use keyfort_kmip::message::Struct;
use keyfort_kmip::ttlv::{BigInt, Item, Tag, Value as V};
use keyfort_kmip::{Operation, ResultReason, ResultStatus};

// Key Format Types (KMIP 1.4 §9.1.3.2.3).
const RAW: u32 = 0x01;
const PKCS_1: u32 = 0x03;
const PKCS_8: u32 = 0x04;
const X_509: u32 = 0x05;
const T_SYMMETRIC: u32 = 0x07;
const T_RSA_PRIVATE: u32 = 0x0A;
const T_RSA_PUBLIC: u32 = 0x0B;
const T_ECDSA_PRIVATE: u32 = 0x0E;
const T_ECDSA_PUBLIC: u32 = 0x0F;
const T_ECDH_PRIVATE: u32 = 0x10;
const T_ECDH_PUBLIC: u32 = 0x11;
const T_EC_PRIVATE: u32 = 0x14;
const T_EC_PUBLIC: u32 = 0x15;
// Object Types.
const SYMMETRIC_KEY: u32 = 2;
const PUBLIC_KEY: u32 = 3;
const PRIVATE_KEY: u32 = 4;
// Cryptographic Algorithms.
const AES: u32 = 3;
const RSA: u32 = 4;
const HMAC_SHA256: u32 = 9;
const EC: u32 = 0x1A;
// Recommended Curves.
const P_256: u32 = 7;
const P_384: u32 = 0x0A;
const P_521: u32 = 0x0D;

/// The dev client in one protocol version: one operation per message on a new connection.
struct Kmip {
    client: common::kmip::Kmip,
    version: (i32, i32),
}

impl Kmip {
    fn dev(server: &Server, version: (i32, i32)) -> Kmip {
        Kmip {
            client: common::kmip::Kmip::dev(server),
            version,
        }
    }

    fn v2(&self) -> bool {
        self.version.0 >= 2
    }

    /// One operation in its own message on a new connection; the only batch item.
    fn call(&self, op: Operation, payload: Vec<Item>) -> Item {
        let message = st(
            Tag::REQUEST_MESSAGE,
            vec![
                st(
                    Tag::REQUEST_HEADER,
                    vec![
                        st(
                            Tag::PROTOCOL_VERSION,
                            vec![
                                int(Tag::PROTOCOL_VERSION_MAJOR, self.version.0),
                                int(Tag::PROTOCOL_VERSION_MINOR, self.version.1),
                            ],
                        ),
                        int(Tag::BATCH_COUNT, 1),
                    ],
                ),
                st(
                    Tag::BATCH_ITEM,
                    vec![en(Tag::OPERATION, op.0), st(Tag::REQUEST_PAYLOAD, payload)],
                ),
            ],
        );
        let resp = self.client.call(&message);
        let items: Vec<Item> = Struct::of(&resp)
            .unwrap()
            .all(Tag::BATCH_ITEM)
            .cloned()
            .collect();
        assert_eq!(items.len(), 1, "{resp:?}");
        items.into_iter().next().unwrap()
    }

    /// The payload of a successful operation.
    fn ok(&self, op: Operation, payload: Vec<Item>) -> Vec<Item> {
        let item = self.call(op, payload);
        let s = Struct::of(&item).unwrap();
        assert_eq!(
            s.enumeration(Tag::RESULT_STATUS).unwrap(),
            ResultStatus::SUCCESS.0,
            "{op:?} in {:?}: {item:?}",
            self.version
        );
        match &s.get(Tag::RESPONSE_PAYLOAD).unwrap().value {
            V::Structure(c) => c.clone(),
            _ => panic!("payload"),
        }
    }

    /// The Result Reason of a failed operation.
    fn fails(&self, op: Operation, payload: Vec<Item>) -> u32 {
        let item = self.call(op, payload);
        let s = Struct::of(&item).unwrap();
        assert_eq!(
            s.enumeration(Tag::RESULT_STATUS).unwrap(),
            ResultStatus::OPERATION_FAILED.0,
            "{op:?} should fail in {:?}: {item:?}",
            self.version
        );
        s.enumeration(Tag::RESULT_REASON).unwrap()
    }

    /// Register with a usage mask, the object in a Key Block of `format`.
    fn register_payload(&self, object_type: u32, format: u32, material: V, mask: i32) -> Vec<Item> {
        let object_tag = match object_type {
            SYMMETRIC_KEY => Tag::SYMMETRIC_KEY,
            PUBLIC_KEY => Tag::PUBLIC_KEY,
            _ => Tag::PRIVATE_KEY,
        };
        let attributes = if self.v2() {
            st(
                Tag::ATTRIBUTES,
                vec![int(Tag::CRYPTOGRAPHIC_USAGE_MASK, mask)],
            )
        } else {
            st(
                Tag::TEMPLATE_ATTRIBUTE,
                vec![st(
                    Tag::ATTRIBUTE,
                    vec![
                        text(Tag::ATTRIBUTE_NAME, "Cryptographic Usage Mask"),
                        int(Tag::ATTRIBUTE_VALUE, mask),
                    ],
                )],
            )
        };
        vec![
            en(Tag::OBJECT_TYPE, object_type),
            attributes,
            st(
                object_tag,
                vec![st(
                    Tag::KEY_BLOCK,
                    vec![
                        en(Tag::KEY_FORMAT_TYPE, format),
                        st(Tag::KEY_VALUE, vec![Item::new(Tag::KEY_MATERIAL, material)]),
                    ],
                )],
            ),
        ]
    }

    fn register(&self, object_type: u32, format: u32, material: V, mask: i32) -> String {
        let p = self.ok(
            Operation::REGISTER,
            self.register_payload(object_type, format, material, mask),
        );
        let id = uid_of(&p);
        self.ok(Operation::ACTIVATE, vec![uid(&id)]);
        id
    }

    /// Get in `format`: the Key Material and the Key Block's algorithm and length.
    fn get(&self, id: &str, format: u32) -> (V, u32, i32) {
        let p = self.ok(
            Operation::GET,
            vec![uid(id), en(Tag::KEY_FORMAT_TYPE, format)],
        );
        let s = Struct {
            tag: Tag::RESPONSE_PAYLOAD,
            items: &p,
        };
        let object = [Tag::SYMMETRIC_KEY, Tag::PUBLIC_KEY, Tag::PRIVATE_KEY]
            .into_iter()
            .find_map(|t| s.child(t).unwrap())
            .unwrap();
        let block = object.child(Tag::KEY_BLOCK).unwrap().unwrap();
        assert_eq!(block.enumeration(Tag::KEY_FORMAT_TYPE).unwrap(), format);
        let value = block.child(Tag::KEY_VALUE).unwrap().unwrap();
        (
            value.get(Tag::KEY_MATERIAL).unwrap().value.clone(),
            block.enumeration(Tag::CRYPTOGRAPHIC_ALGORITHM).unwrap(),
            block.integer(Tag::CRYPTOGRAPHIC_LENGTH).unwrap(),
        )
    }

    fn get_bytes(&self, id: &str, format: u32) -> Vec<u8> {
        match self.get(id, format).0 {
            V::ByteString(b) => b,
            other => panic!("{other:?}"),
        }
    }

    /// Every object id the client sees (Locate with no criteria).
    fn all_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .ok(Operation::LOCATE, vec![])
            .iter()
            .filter(|i| i.tag == Tag::UNIQUE_IDENTIFIER)
            .map(|i| match &i.value {
                V::TextString(s) => s.clone(),
                _ => panic!("uid"),
            })
            .collect();
        ids.sort();
        ids
    }

    /// Sign with `private`, check with `public` over KMIP; the signature.
    fn sign_and_verify(&self, private: &str, public: &str, data: &[u8]) -> Vec<u8> {
        let p = self.ok(
            Operation::SIGN,
            vec![
                uid(private),
                Item::new(Tag::DATA, V::ByteString(data.to_vec())),
            ],
        );
        let signature = bytes_of(&p, Tag::SIGNATURE_DATA);
        let verify = |data: &[u8]| {
            let p = self.ok(
                Operation::SIGNATURE_VERIFY,
                vec![
                    uid(public),
                    Item::new(Tag::DATA, V::ByteString(data.to_vec())),
                    Item::new(Tag::SIGNATURE_DATA, V::ByteString(signature.clone())),
                ],
            );
            let s = Struct {
                tag: Tag::RESPONSE_PAYLOAD,
                items: &p,
            };
            s.enumeration(Tag::VALIDITY_INDICATOR).unwrap()
        };
        assert_eq!(verify(data), 1, "Valid");
        assert_eq!(verify(b"other data"), 2, "Invalid");
        signature
    }
}

fn uid(s: &str) -> Item {
    text(Tag::UNIQUE_IDENTIFIER, s)
}

fn uid_of(p: &[Item]) -> String {
    p.iter()
        .find_map(|i| match &i.value {
            V::TextString(s) if i.tag == Tag::UNIQUE_IDENTIFIER => Some(s.clone()),
            _ => None,
        })
        .unwrap()
}

fn bytes_of(p: &[Item], tag: Tag) -> Vec<u8> {
    Struct {
        tag: Tag::RESPONSE_PAYLOAD,
        items: p,
    }
    .bytes(tag)
    .unwrap()
    .to_vec()
}

/// An unsigned big-endian number as a KMIP Big Integer (a zero sign byte first).
fn big(tag: Tag, unsigned: &[u8]) -> Item {
    let mut v = vec![0];
    v.extend_from_slice(unsigned);
    Item::new(tag, V::BigInteger(BigInt::from_be_bytes(&v)))
}

fn strip(b: &[u8]) -> Vec<u8> {
    b.iter().copied().skip_while(|x| *x == 0).collect()
}

/// The Big Integers of a Transparent structure, by tag, as unsigned minimal bytes.
fn numbers(value: &V) -> Vec<(Tag, Vec<u8>)> {
    let V::Structure(items) = value else {
        panic!("transparent key material: {value:?}")
    };
    items
        .iter()
        .filter_map(|i| match &i.value {
            V::BigInteger(b) => Some((i.tag, strip(b.as_bytes()))),
            _ => None,
        })
        .collect()
}

fn number(value: &V, tag: Tag) -> Vec<u8> {
    numbers(value)
        .into_iter()
        .find(|(t, _)| *t == tag)
        .unwrap()
        .1
}

// --- DER built by the test itself, independently of the server's encoders. ---

/// A DER INTEGER of an unsigned number.
fn der_uint(unsigned: &[u8]) -> Vec<u8> {
    let mut v = strip(unsigned);
    if v.first().is_none_or(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    der(0x02, &v)
}

/// (tag, content, rest) of one DER TLV.
fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
    let (len, rest) = if b[1] < 0x80 {
        (usize::from(b[1]), &b[2..])
    } else {
        let n = usize::from(b[1] & 0x7f);
        let len = b[2..2 + n]
            .iter()
            .fold(0usize, |a, x| (a << 8) | usize::from(*x));
        (len, &b[2 + n..])
    };
    (b[0], &rest[..len], &rest[len..])
}

const RSA_ALGORITHM_ID: [u8; 15] = [
    0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// The RSA components (n, e, d, p, q, dP, dQ, qInv) of a PKCS #8 key, unsigned.
fn rsa_components(pkcs8: &[u8]) -> Vec<Vec<u8>> {
    let (_, body, _) = tlv(pkcs8);
    let (_, _, rest) = tlv(body);
    let (_, _, rest) = tlv(rest);
    let (_, pkcs1, _) = tlv(rest);
    let (_, mut body, _) = tlv(pkcs1);
    let mut out = Vec::new();
    while !body.is_empty() {
        let (_, int, rest) = tlv(body);
        out.push(strip(int));
        body = rest;
    }
    out.remove(0);
    out
}

fn rsa_pkcs1_private(c: &[Vec<u8>]) -> Vec<u8> {
    let mut body = der(0x02, &[0]);
    for x in c {
        body.extend(der_uint(x));
    }
    der(0x30, &body)
}

fn rsa_pkcs1_public(n: &[u8], e: &[u8]) -> Vec<u8> {
    der(0x30, &[der_uint(n), der_uint(e)].concat())
}

fn rsa_pkcs8(c: &[Vec<u8>]) -> Vec<u8> {
    der(
        0x30,
        &[
            der(0x02, &[0]),
            RSA_ALGORITHM_ID.to_vec(),
            der(0x04, &rsa_pkcs1_private(c)),
        ]
        .concat(),
    )
}

fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut bits = vec![0];
    bits.extend(rsa_pkcs1_public(n, e));
    der(
        0x30,
        &[RSA_ALGORITHM_ID.to_vec(), der(0x03, &bits)].concat(),
    )
}

fn curve_oid(curve: Curve) -> Vec<u8> {
    match curve {
        Curve::P256 => der(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]),
        Curve::P384 => der(0x06, &[0x2B, 0x81, 0x04, 0x00, 0x22]),
        _ => der(0x06, &[0x2B, 0x81, 0x04, 0x00, 0x23]),
    }
}

fn ec_spki(curve: Curve, point: &[u8]) -> Vec<u8> {
    let algorithm = der(
        0x30,
        &[
            der(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]),
            curve_oid(curve),
        ]
        .concat(),
    );
    let mut bits = vec![0];
    bits.extend_from_slice(point);
    der(0x30, &[algorithm, der(0x03, &bits)].concat())
}

/// PKCS #8 (RFC 5208) of an EC key: the curve in the AlgorithmIdentifier, and an RFC 5915
/// `ECPrivateKey` with the fixed-length scalar and the public point, without parameters.
fn ec_pkcs8(curve: Curve, d: &[u8], q: &[u8]) -> Vec<u8> {
    let mut scalar = vec![0u8; curve.order_len() - d.len()];
    scalar.extend_from_slice(d);
    let mut point = vec![0];
    point.extend_from_slice(q);
    let ec_private_key = der(
        0x30,
        &[
            der(0x02, &[1]),
            der(0x04, &scalar),
            der(0xA1, &der(0x03, &point)),
        ]
        .concat(),
    );
    let algorithm = der(
        0x30,
        &[
            der(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]),
            curve_oid(curve),
        ]
        .concat(),
    );
    der(
        0x30,
        &[der(0x02, &[0]), algorithm, der(0x04, &ec_private_key)].concat(),
    )
}

/// The private scalar of an EC PKCS #8 key (RFC 5915 `privateKey`), unsigned minimal.
fn ec_scalar(pkcs8: &[u8]) -> Vec<u8> {
    let (_, body, _) = tlv(pkcs8);
    let (_, _, rest) = tlv(body);
    let (_, _, rest) = tlv(rest);
    let (_, ec_private_key, _) = tlv(rest);
    let (_, body, _) = tlv(ec_private_key);
    let (_, _, rest) = tlv(body);
    let (_, scalar, _) = tlv(rest);
    strip(scalar)
}

fn curve_bits(c: Curve) -> i32 {
    match c {
        Curve::P256 => 256,
        Curve::P384 => 384,
        _ => 521,
    }
}

fn rsa_private_material(c: &[Vec<u8>], present: &[Tag]) -> V {
    let tags = RSA_PRIVATE_COMPONENTS;
    // KMIP's order: Modulus, Private Exponent, Public Exponent, P, Q, …
    let order = [0, 2, 1, 3, 4, 5, 6, 7];
    V::Structure(
        order
            .iter()
            .filter(|i| present.contains(&tags[**i]))
            .map(|i| big(tags[*i], &c[*i]))
            .collect(),
    )
}

fn ec_private_material(curve: u32, d: &[u8]) -> V {
    V::Structure(vec![en(Tag::RECOMMENDED_CURVE, curve), big(Tag::D, d)])
}

fn ec_public_material(curve: u32, q: &[u8]) -> V {
    V::Structure(vec![
        en(Tag::RECOMMENDED_CURVE, curve),
        Item::new(Tag::Q_STRING, V::ByteString(q.to_vec())),
    ])
}

/// Adds `extra` to the Key Block of a Register payload built by `register_payload`.
fn in_block(mut p: Vec<Item>, extra: Vec<Item>) -> Vec<Item> {
    let Some(Item {
        value: V::Structure(object),
        ..
    }) = p.last_mut()
    else {
        panic!("object")
    };
    let Some(Item {
        value: V::Structure(block),
        ..
    }) = object.first_mut()
    else {
        panic!("key block")
    };
    block.extend(extra);
    p
}

fn symmetric(kmip: &Kmip) {
    // AES-256: Transparent Symmetric Key in, the same Key and Raw bytes out, GCM round trip.
    let key = keyfort_crypto::rng::random_bytes(32).unwrap().to_vec();
    let material = V::Structure(vec![Item::new(Tag::KEY, V::ByteString(key.clone()))]);
    let id = uid_of(&kmip.ok(
        Operation::REGISTER,
        in_block(
            kmip.register_payload(SYMMETRIC_KEY, T_SYMMETRIC, material.clone(), 12),
            vec![
                en(Tag::CRYPTOGRAPHIC_ALGORITHM, AES),
                int(Tag::CRYPTOGRAPHIC_LENGTH, 256),
            ],
        ),
    ));
    kmip.ok(Operation::ACTIVATE, vec![uid(&id)]);
    assert_eq!(kmip.get(&id, T_SYMMETRIC), (material, AES, 256));
    assert_eq!(kmip.get_bytes(&id, RAW), key);
    let gcm = || {
        st(
            Tag::CRYPTOGRAPHIC_PARAMETERS,
            vec![en(Tag::BLOCK_CIPHER_MODE, 9)],
        )
    };
    let p = kmip.ok(
        Operation::ENCRYPT,
        vec![
            uid(&id),
            gcm(),
            Item::new(Tag::DATA, V::ByteString(b"transparent data".to_vec())),
        ],
    );
    let ct = bytes_of(&p, Tag::DATA);
    let iv = bytes_of(&p, Tag::IV_COUNTER_NONCE);
    let tag = bytes_of(&p, Tag::AUTHENTICATED_ENCRYPTION_TAG);
    // The ciphertext is AES-GCM under exactly the registered key.
    let mut sealed = ct.clone();
    sealed.extend_from_slice(&tag);
    assert_eq!(
        keyfort_crypto::aes::gcm_decrypt(&key, &iv, b"", &sealed)
            .unwrap()
            .as_slice(),
        b"transparent data"
    );
    let p = kmip.ok(
        Operation::DECRYPT,
        vec![
            uid(&id),
            gcm(),
            Item::new(Tag::DATA, V::ByteString(ct)),
            Item::new(Tag::IV_COUNTER_NONCE, V::ByteString(iv)),
            Item::new(Tag::AUTHENTICATED_ENCRYPTION_TAG, V::ByteString(tag)),
        ],
    );
    assert_eq!(bytes_of(&p, Tag::DATA), b"transparent data");

    // HMAC-SHA256: MAC over KMIP equals the MAC of the registered bytes.
    let mac_key = keyfort_crypto::rng::random_bytes(32).unwrap().to_vec();
    let p = in_block(
        kmip.register_payload(
            SYMMETRIC_KEY,
            T_SYMMETRIC,
            V::Structure(vec![Item::new(Tag::KEY, V::ByteString(mac_key.clone()))]),
            0x80 | 0x100,
        ),
        vec![en(Tag::CRYPTOGRAPHIC_ALGORITHM, HMAC_SHA256)],
    );
    let mac_id = uid_of(&kmip.ok(Operation::REGISTER, p));
    kmip.ok(Operation::ACTIVATE, vec![uid(&mac_id)]);
    let p = kmip.ok(
        Operation::MAC,
        vec![
            uid(&mac_id),
            Item::new(Tag::DATA, V::ByteString(b"mac me".to_vec())),
        ],
    );
    assert_eq!(
        bytes_of(&p, Tag::MAC_DATA),
        keyfort_crypto::hmac::sign(keyfort_crypto::hmac::Algorithm::Sha256, &mac_key, b"mac me")
    );
}

fn rsa(kmip: &Kmip, source: &PrivateKey) {
    let c = rsa_components(&source.to_pkcs8());
    let (n, e) = (&c[0], &c[1]);
    let private = kmip.register(
        PRIVATE_KEY,
        T_RSA_PRIVATE,
        rsa_private_material(&c, &RSA_PRIVATE_COMPONENTS),
        1,
    );
    let public = kmip.register(
        PUBLIC_KEY,
        T_RSA_PUBLIC,
        V::Structure(vec![big(Tag::MODULUS, n), big(Tag::PUBLIC_EXPONENT, e)]),
        2,
    );
    // Transparent back: the same eight components.
    let (transparent, alg, bits) = kmip.get(&private, T_RSA_PRIVATE);
    assert_eq!((alg, bits), (RSA, 2048));
    let tags = RSA_PRIVATE_COMPONENTS;
    for (i, tag) in tags.iter().enumerate() {
        assert_eq!(number(&transparent, *tag), c[i], "{tag:?}");
    }
    let (public_transparent, alg, bits) = kmip.get(&public, T_RSA_PUBLIC);
    assert_eq!((alg, bits), (RSA, 2048));
    assert_eq!(
        numbers(&public_transparent),
        vec![(Tag::MODULUS, n.clone()), (Tag::PUBLIC_EXPONENT, e.clone())]
    );
    // The other formats are the encodings built here from the same components.
    assert_eq!(kmip.get_bytes(&private, PKCS_8), rsa_pkcs8(&c));
    assert_eq!(kmip.get_bytes(&private, PKCS_1), rsa_pkcs1_private(&c));
    assert_eq!(kmip.get_bytes(&public, X_509), rsa_spki(n, e));
    assert_eq!(kmip.get_bytes(&public, PKCS_1), rsa_pkcs1_public(n, e));
    // Sign with the registered private key, verify with the registered public key, and with
    // the original key outside the server (RSASSA-PKCS1-v1_5 SHA-256, the default).
    let signature = kmip.sign_and_verify(&private, &public, b"signed over KMIP");
    source
        .public_key()
        .verify(
            keyfort_crypto::rsa::SignatureScheme::Pkcs1v15(keyfort_crypto::rsa::Hash::Sha256),
            b"signed over KMIP",
            &signature,
        )
        .unwrap();

    // Partial components: (n, e, d) — the primes are recovered; (n, e, p, q) and (n, e, dP,
    // dQ) — the exponents are computed. Each gives the same key.
    let same_primes = |t: &V| {
        let mut got = [number(t, Tag::P), number(t, Tag::Q)];
        got.sort();
        let mut want = [c[3].clone(), c[4].clone()];
        want.sort();
        assert_eq!(got, want);
    };
    for present in [
        &[Tag::MODULUS, Tag::PUBLIC_EXPONENT, Tag::PRIVATE_EXPONENT][..],
        &[Tag::MODULUS, Tag::PRIVATE_EXPONENT][..],
        &[Tag::MODULUS, Tag::PUBLIC_EXPONENT, Tag::P, Tag::Q][..],
        &[
            Tag::MODULUS,
            Tag::PUBLIC_EXPONENT,
            Tag::PRIME_EXPONENT_P,
            Tag::PRIME_EXPONENT_Q,
        ][..],
        &[Tag::MODULUS, Tag::PUBLIC_EXPONENT, Tag::PRIME_EXPONENT_Q][..],
        &[
            Tag::MODULUS,
            Tag::PUBLIC_EXPONENT,
            Tag::PRIVATE_EXPONENT,
            Tag::CRT_COEFFICIENT,
        ][..],
    ] {
        let id = kmip.register(
            PRIVATE_KEY,
            T_RSA_PRIVATE,
            rsa_private_material(&c, present),
            1,
        );
        let (t, _, _) = kmip.get(&id, T_RSA_PRIVATE);
        assert_eq!(number(&t, Tag::MODULUS), *n, "{present:?}");
        assert_eq!(number(&t, Tag::PUBLIC_EXPONENT), *e, "{present:?}");
        same_primes(&t);
        if present.contains(&Tag::PRIVATE_EXPONENT) {
            assert_eq!(number(&t, Tag::PRIVATE_EXPONENT), c[2]);
        }
        kmip.sign_and_verify(&id, &public, present.len().to_string().as_bytes());
    }
}

fn ec(kmip: &Kmip, curve: Curve, kmip_curve: u32, private_format: u32, public_format: u32) {
    let source = SigningKey::generate(curve).unwrap();
    let d = ec_scalar(&source.to_pkcs8());
    let q = source.public_key().to_vec();
    let private = kmip.register(
        PRIVATE_KEY,
        private_format,
        ec_private_material(kmip_curve, &d),
        1,
    );
    let public = kmip.register(
        PUBLIC_KEY,
        public_format,
        ec_public_material(kmip_curve, &q),
        2,
    );
    let (t, alg, bits) = kmip.get(&private, private_format);
    assert_eq!((alg, bits), (EC, curve_bits(curve)));
    assert_eq!(number(&t, Tag::D), d);
    let (t, _, _) = kmip.get(&public, public_format);
    assert_eq!(t, ec_public_material(kmip_curve, &q));
    // PKCS #8 of the private key is the source key's (scalar, curve and derived public point);
    // X.509 of the public key is built here from the point; Raw is the point.
    let pkcs8 = kmip.get_bytes(&private, PKCS_8);
    assert_eq!(pkcs8.as_slice(), source.to_pkcs8().as_slice());
    assert_eq!(pkcs8, ec_pkcs8(curve, &d, &q));
    assert_eq!(kmip.get_bytes(&public, X_509), ec_spki(curve, &q));
    assert_eq!(kmip.get_bytes(&public, RAW), q);
    let signature = kmip.sign_and_verify(&private, &public, b"ecdsa over KMIP");
    let verified = [SignatureFormat::Der, SignatureFormat::Fixed]
        .into_iter()
        .any(|f| {
            keyfort_crypto::ec::verify(
                curve,
                &q,
                keyfort_crypto::digest::Algorithm::Sha256,
                f,
                b"ecdsa over KMIP",
                &signature,
            )
            .is_ok()
        });
    assert!(verified, "the source public key verifies the signature");
    // A compressed Q String is the same key, kept (and given back) uncompressed.
    let half = (q.len() - 1) / 2;
    let mut compressed = vec![2 | (q[q.len() - 1] & 1)];
    compressed.extend_from_slice(&q[1..=half]);
    let from_compressed = kmip.register(
        PUBLIC_KEY,
        public_format,
        ec_public_material(kmip_curve, &compressed),
        2,
    );
    assert_eq!(kmip.get_bytes(&from_compressed, RAW), q);
    kmip.sign_and_verify(&private, &from_compressed, b"compressed point");
}

fn refusals(kmip: &Kmip, source: &PrivateKey) {
    let before = kmip.all_ids();
    let c = rsa_components(&source.to_pkcs8());
    let refused = |object_type: u32, format: u32, material: V| {
        kmip.fails(
            Operation::REGISTER,
            kmip.register_payload(object_type, format, material, 1),
        )
    };
    let invalid_field = ResultReason::INVALID_FIELD.0;

    // RSA: a private exponent that does not match, with and without the primes.
    let mut bad = c.clone();
    let last = bad[2].len() - 1;
    bad[2][last] ^= 0x02;
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_RSA_PRIVATE,
            rsa_private_material(&bad, &RSA_PRIVATE_COMPONENTS)
        ),
        invalid_field
    );
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_RSA_PRIVATE,
            rsa_private_material(
                &bad,
                &[Tag::MODULUS, Tag::PUBLIC_EXPONENT, Tag::PRIVATE_EXPONENT]
            )
        ),
        invalid_field
    );
    // A CRT coefficient of another key, primes that are not n's factors.
    let mut bad = c.clone();
    bad[7] = c[6].clone();
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_RSA_PRIVATE,
            rsa_private_material(&bad, &RSA_PRIVATE_COMPONENTS)
        ),
        invalid_field
    );
    let mut bad = c.clone();
    bad[3] = c[4].clone();
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_RSA_PRIVATE,
            rsa_private_material(&bad, &[Tag::MODULUS, Tag::PUBLIC_EXPONENT, Tag::P, Tag::Q])
        ),
        invalid_field
    );
    // Missing: the modulus; everything private.
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_RSA_PRIVATE,
            rsa_private_material(&c, &[Tag::PUBLIC_EXPONENT, Tag::PRIVATE_EXPONENT])
        ),
        ResultReason::MISSING_DATA.0
    );
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_RSA_PRIVATE,
            rsa_private_material(&c, &[Tag::MODULUS, Tag::PUBLIC_EXPONENT])
        ),
        ResultReason::MISSING_DATA.0
    );
    assert_eq!(
        refused(
            PUBLIC_KEY,
            T_RSA_PUBLIC,
            V::Structure(vec![big(Tag::MODULUS, &c[0])])
        ),
        ResultReason::MISSING_DATA.0
    );
    // A negative modulus; a modulus too short.
    assert_eq!(
        refused(
            PUBLIC_KEY,
            T_RSA_PUBLIC,
            V::Structure(vec![
                Item::new(Tag::MODULUS, V::BigInteger(BigInt::from_be_bytes(&c[0]))),
                big(Tag::PUBLIC_EXPONENT, &c[1]),
            ])
        ),
        invalid_field
    );
    assert_eq!(
        refused(
            PUBLIC_KEY,
            T_RSA_PUBLIC,
            V::Structure(vec![
                big(Tag::MODULUS, &c[0][..64]),
                big(Tag::PUBLIC_EXPONENT, &c[1]),
            ])
        ),
        invalid_field
    );
    // Key Material that is not a structure.
    assert_eq!(
        refused(PUBLIC_KEY, T_RSA_PUBLIC, V::ByteString(vec![1, 2, 3])),
        ResultReason::INVALID_MESSAGE.0
    );

    // EC: a point off the curve; a P-256 point named P-384; a scalar beyond the order; an
    // unsupported curve; no D.
    let ec_key = SigningKey::generate(Curve::P256).unwrap();
    let mut off = ec_key.public_key().to_vec();
    let last = off.len() - 1;
    off[last] ^= 0x01;
    assert_eq!(
        refused(PUBLIC_KEY, T_EC_PUBLIC, ec_public_material(P_256, &off)),
        invalid_field
    );
    assert_eq!(
        refused(
            PUBLIC_KEY,
            T_EC_PUBLIC,
            ec_public_material(P_384, ec_key.public_key())
        ),
        invalid_field
    );
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_EC_PRIVATE,
            ec_private_material(P_256, &[0xFF; 32])
        ),
        invalid_field
    );
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_EC_PRIVATE,
            ec_private_material(P_256, &[0x01; 48])
        ),
        invalid_field
    );
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_EC_PRIVATE,
            ec_private_material(0x01, &[0x01; 21])
        ),
        invalid_field
    );
    assert_eq!(
        refused(
            PRIVATE_KEY,
            T_EC_PRIVATE,
            V::Structure(vec![en(Tag::RECOMMENDED_CURVE, P_256)])
        ),
        ResultReason::MISSING_DATA.0
    );
    // A Key Block whose algorithm contradicts the format.
    let p = in_block(
        kmip.register_payload(
            PUBLIC_KEY,
            T_EC_PUBLIC,
            ec_public_material(P_256, ec_key.public_key()),
            2,
        ),
        vec![en(Tag::CRYPTOGRAPHIC_ALGORITHM, RSA)],
    );
    assert_eq!(kmip.fails(Operation::REGISTER, p), invalid_field);

    // A Key Block length that contradicts the key.
    let p = in_block(
        kmip.register_payload(
            PUBLIC_KEY,
            T_RSA_PUBLIC,
            V::Structure(vec![
                big(Tag::MODULUS, &c[0]),
                big(Tag::PUBLIC_EXPONENT, &c[1]),
            ]),
            2,
        ),
        vec![
            en(Tag::CRYPTOGRAPHIC_ALGORITHM, RSA),
            int(Tag::CRYPTOGRAPHIC_LENGTH, 3072),
        ],
    );
    assert_eq!(kmip.fails(Operation::REGISTER, p), invalid_field);

    // The deprecated ECDSA/ECDH formats are KMIP 1.x only.
    if kmip.v2() {
        assert_eq!(
            refused(
                PUBLIC_KEY,
                T_ECDSA_PUBLIC,
                ec_public_material(P_256, ec_key.public_key())
            ),
            ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED.0
        );
    }
    assert_eq!(
        kmip.all_ids(),
        before,
        "refused registrations stored nothing"
    );
}

/// Import (KMIP 2.0 §6.1.28) reads objects as Register does: a Transparent RSA private key
/// under the client's own UUID.
fn import(kmip: &Kmip, source: &PrivateKey) {
    let c = rsa_components(&source.to_pkcs8());
    let id = "6f1b6a53-3b0c-4c53-9a58-2d1f0b9e7c41";
    let mut payload = vec![uid(id)];
    payload.extend(kmip.register_payload(
        PRIVATE_KEY,
        T_RSA_PRIVATE,
        rsa_private_material(
            &c,
            &[Tag::MODULUS, Tag::PUBLIC_EXPONENT, Tag::PRIVATE_EXPONENT],
        ),
        1,
    ));
    let p = kmip.ok(Operation::IMPORT, payload);
    assert_eq!(uid_of(&p), id);
    let (t, alg, bits) = kmip.get(id, T_RSA_PRIVATE);
    assert_eq!((alg, bits), (RSA, 2048));
    assert_eq!(number(&t, Tag::PRIVATE_EXPONENT), c[2]);
    let mut primes = [number(&t, Tag::P), number(&t, Tag::Q)];
    primes.sort();
    let mut want = [c[3].clone(), c[4].clone()];
    want.sort();
    assert_eq!(primes, want);
    // The recovered primes are ordered p > q.
    assert!(number(&t, Tag::P) > number(&t, Tag::Q));
}

#[test]
fn register_transparent_keys_in_kmip_1_4_and_2_1() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        tmp.path(),
        "kmip-register-transparent",
        &[],
    );
    let source = PrivateKey::generate(KeySize::Rsa2048).unwrap();
    for version in [(1, 4), (2, 1)] {
        let kmip = Kmip::dev(&server, version);
        symmetric(&kmip);
        rsa(&kmip, &source);
        if kmip.v2() {
            ec(&kmip, Curve::P256, P_256, T_EC_PRIVATE, T_EC_PUBLIC);
            ec(&kmip, Curve::P521, P_521, T_EC_PRIVATE, T_EC_PUBLIC);
        } else {
            ec(&kmip, Curve::P256, P_256, T_ECDSA_PRIVATE, T_ECDSA_PUBLIC);
            ec(&kmip, Curve::P384, P_384, T_ECDH_PRIVATE, T_ECDH_PUBLIC);
            ec(&kmip, Curve::P384, P_384, T_EC_PRIVATE, T_EC_PUBLIC);
        }
        refusals(&kmip, &source);
        if kmip.v2() {
            import(&kmip, &source);
        }
    }
    // Transparent EC came with KMIP 1.3: a 1.2 client gets Key Format Type Not Supported.
    let kmip = Kmip::dev(&server, (1, 2));
    let ec_key = SigningKey::generate(Curve::P256).unwrap();
    let p = kmip.register_payload(
        PUBLIC_KEY,
        T_EC_PUBLIC,
        ec_public_material(P_256, ec_key.public_key()),
        2,
    );
    assert_eq!(
        kmip.fails(Operation::REGISTER, p),
        ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED.0
    );
    let id = kmip.register(
        PUBLIC_KEY,
        T_ECDSA_PUBLIC,
        ec_public_material(P_256, ec_key.public_key()),
        2,
    );
    assert_eq!(kmip.get_bytes(&id, RAW), ec_key.public_key());
}

/// An EC public key registered in Raw form (its SEC 1 point) with no Cryptographic Length: the
/// point's length names its curve once the point is checked on it, so the key can be used.
#[test]
fn a_raw_ec_public_key_without_a_length_takes_its_curve_from_its_point() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "kmip-raw-ec", &[]);
    let kmip = Kmip::dev(&server, (1, 4));
    for (curve, bits) in [(Curve::P256, 256), (Curve::P384, 384), (Curve::P521, 521)] {
        let key = SigningKey::generate(curve).unwrap();
        let p = in_block(
            kmip.register_payload(PUBLIC_KEY, RAW, V::ByteString(key.public_key().to_vec()), 2),
            vec![en(Tag::CRYPTOGRAPHIC_ALGORITHM, EC)],
        );
        let id = uid_of(&kmip.ok(Operation::REGISTER, p));
        let (material, algorithm, length) = kmip.get(&id, RAW);
        assert_eq!(material, V::ByteString(key.public_key().to_vec()));
        assert_eq!((algorithm, length), (EC, bits));
    }
}
