//! The little DER the door needs: SubjectPublicKeyInfo for the public key blobs, curve and
//! algorithm OIDs, and the private scalar inside an EC PKCS #8 key (for ECDH). Parsing has
//! fixed limits (short lengths, at most three length bytes) and rejects trailing bytes.

use keyfort_crypto::ec::Curve;
use keyfort_crypto::pq::{MlDsa, MlKem};

use crate::attrs::take;

pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
pub const OID_P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
pub const OID_P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
pub const OID_P521: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x23];
pub const OID_SECP256K1: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x0A];
pub const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
const NIST_SIG: [u8; 10] = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03];
const NIST_KEM: [u8; 10] = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04];

/// The ECDSA curve of a DER OID (`CKA_EC_PARAMS`).
pub fn curve_of(oid: &[u8]) -> Option<Curve> {
    match oid {
        OID_P256 => Some(Curve::P256),
        OID_P384 => Some(Curve::P384),
        OID_P521 => Some(Curve::P521),
        OID_SECP256K1 => Some(Curve::Secp256k1),
        _ => None,
    }
}

/// The DER OID of a curve.
pub fn curve_oid(c: Curve) -> &'static [u8] {
    match c {
        Curve::P384 => OID_P384,
        Curve::P521 => OID_P521,
        Curve::Secp256k1 => OID_SECP256K1,
        _ => OID_P256,
    }
}

pub fn ml_dsa_oid(p: MlDsa) -> Vec<u8> {
    let last = match p {
        MlDsa::MlDsa44 => 0x11,
        MlDsa::MlDsa65 => 0x12,
        _ => 0x13,
    };
    [&NIST_SIG[..], &[last]].concat()
}

pub fn ml_kem_oid(p: MlKem) -> Vec<u8> {
    let last = match p {
        MlKem::MlKem768 => 0x02,
        _ => 0x03,
    };
    [&NIST_KEM[..], &[last]].concat()
}

/// One DER element.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n <= 0xFF {
        out.extend_from_slice(&[0x81, n as u8]);
    } else if n <= 0xFFFF {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    } else {
        out.extend_from_slice(&[0x83, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// SubjectPublicKeyInfo with the given AlgorithmIdentifier content and key bits.
pub fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    let body = [tlv(0x30, algorithm), tlv(0x03, &bits)].concat();
    tlv(0x30, &body)
}

/// Reads one DER element: (tag, content, whole element).
pub fn read<'a>(b: &mut &'a [u8]) -> Option<(u8, &'a [u8], &'a [u8])> {
    let start = *b;
    let tag = take(b, 1)?[0];
    let first = take(b, 1)?[0];
    let len = match first {
        n if n < 0x80 => usize::from(n),
        0x81 => usize::from(take(b, 1)?[0]),
        0x82 => {
            let l = take(b, 2)?;
            (usize::from(l[0]) << 8) | usize::from(l[1])
        }
        0x83 => {
            let l = take(b, 3)?;
            (usize::from(l[0]) << 16) | (usize::from(l[1]) << 8) | usize::from(l[2])
        }
        _ => return None,
    };
    let header = start.len() - b.len();
    let content = take(b, len)?;
    Some((tag, content, &start[..header + len]))
}

/// A parsed SubjectPublicKeyInfo: algorithm OID (DER, with tag), parameters (DER element or
/// empty), and the key bits.
pub struct ParsedSpki<'a> {
    pub algorithm: &'a [u8],
    pub parameters: &'a [u8],
    pub key: &'a [u8],
}

/// Parses a SubjectPublicKeyInfo that fills `b` exactly.
pub fn parse_spki(mut b: &[u8]) -> Option<ParsedSpki<'_>> {
    let (0x30, mut body, _) = read(&mut b)? else {
        return None;
    };
    if !b.is_empty() {
        return None;
    }
    let (0x30, mut alg, _) = read(&mut body)? else {
        return None;
    };
    let (0x03, bits, _) = read(&mut body)? else {
        return None;
    };
    if !body.is_empty() {
        return None;
    }
    let (0x06, _, algorithm) = read(&mut alg)? else {
        return None;
    };
    let parameters = alg;
    let (0, key) = bits.split_first()? else {
        return None;
    };
    Some(ParsedSpki {
        algorithm,
        parameters,
        key,
    })
}

/// The private scalar of an EC key in PKCS #8 (RFC 5208 `PrivateKeyInfo` holding an RFC 5915
/// `ECPrivateKey`).
pub fn ec_private_scalar(pkcs8: &[u8]) -> Option<&[u8]> {
    let mut b = pkcs8;
    let (0x30, mut info, _) = read(&mut b)? else {
        return None;
    };
    let (0x02, _, _) = read(&mut info)? else {
        return None;
    };
    let (0x30, _, _) = read(&mut info)? else {
        return None;
    };
    let (0x04, mut inner, _) = read(&mut info)? else {
        return None;
    };
    let (0x30, mut ec, _) = read(&mut inner)? else {
        return None;
    };
    let (0x02, _, _) = read(&mut ec)? else {
        return None;
    };
    let (0x04, d, _) = read(&mut ec)? else {
        return None;
    };
    Some(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trips() {
        let alg = [OID_EC_PUBLIC_KEY, OID_P256].concat();
        let key = vec![4u8; 65];
        let s = spki(&alg, &key);
        let p = parse_spki(&s).unwrap();
        assert_eq!(p.algorithm, OID_EC_PUBLIC_KEY);
        assert_eq!(p.parameters, OID_P256);
        assert_eq!(p.key, &key[..]);
        assert!(parse_spki(&[s.as_slice(), &[0]].concat()).is_none());
        assert!(parse_spki(&s[..s.len() - 1]).is_none());
    }

    #[test]
    fn long_lengths() {
        let content = vec![7u8; 300];
        let e = tlv(0x04, &content);
        let mut b = e.as_slice();
        let (tag, c, whole) = read(&mut b).unwrap();
        assert_eq!((tag, c.len(), whole.len()), (0x04, 300, 304));
    }
}
