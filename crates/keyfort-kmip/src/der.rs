//! Just enough DER (X.690) to move RSA and EC keys between the key formats KMIP names (PKCS #1,
//! PKCS #8, X.509 SubjectPublicKeyInfo, raw EC points). No cryptography: only framing.

/// `AlgorithmIdentifier { rsaEncryption, NULL }`.
const RSA_ALGORITHM: [u8; 15] = [
    0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// One TLV: `(tag, content, rest)`.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    write_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// The PKCS #1 `RSAPrivateKey` inside a PKCS #8 `PrivateKeyInfo`.
pub fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let (0x30, body, _) = read_tlv(pkcs8)? else {
        return None;
    };
    let (0x02, _, rest) = read_tlv(body)? else {
        return None;
    };
    let (0x30, _, rest) = read_tlv(rest)? else {
        return None;
    };
    let (0x04, key, _) = read_tlv(rest)? else {
        return None;
    };
    Some(key.to_vec())
}

/// A PKCS #8 `PrivateKeyInfo` around a PKCS #1 `RSAPrivateKey`.
pub fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&RSA_ALGORITHM);
    body.extend(tlv(0x04, pkcs1));
    tlv(0x30, &body)
}

/// The subject public key (PKCS #1 `RSAPublicKey`, or an EC point) inside a
/// SubjectPublicKeyInfo.
pub fn spki_key(spki: &[u8]) -> Option<Vec<u8>> {
    let (0x30, body, _) = read_tlv(spki)? else {
        return None;
    };
    let (0x30, _, rest) = read_tlv(body)? else {
        return None;
    };
    let (0x03, bits, _) = read_tlv(rest)? else {
        return None;
    };
    let (&0, key) = bits.split_first()? else {
        return None;
    };
    Some(key.to_vec())
}

/// A SubjectPublicKeyInfo around a PKCS #1 `RSAPublicKey`.
pub fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    let mut bits = vec![0x00];
    bits.extend_from_slice(pkcs1);
    let mut body = RSA_ALGORITHM.to_vec();
    body.extend(tlv(0x03, &bits));
    tlv(0x30, &body)
}

/// A SubjectPublicKeyInfo around an uncompressed EC point on P-256, P-384 or P-521.
pub fn ec_spki(bits: u32, point: &[u8]) -> Option<Vec<u8>> {
    let curve: &[u8] = match bits {
        256 => &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07],
        384 => &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22],
        521 => &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x23],
        _ => return None,
    };
    let mut alg = vec![0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    alg.extend_from_slice(curve);
    let mut body = tlv(0x30, &alg);
    let mut key = vec![0x00];
    key.extend_from_slice(point);
    body.extend(tlv(0x03, &key));
    Some(tlv(0x30, &body))
}

/// The INTEGERs of a SEQUENCE of INTEGERs (the contents, two's complement big-endian), as
/// PKCS #1 `RSAPrivateKey` and `RSAPublicKey` are.
fn integers(der: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (0x30, mut body, _) = read_tlv(der)? else {
        return None;
    };
    let mut out = Vec::new();
    while !body.is_empty() {
        let (0x02, int, rest) = read_tlv(body)? else {
            return None;
        };
        out.push(int.to_vec());
        body = rest;
    }
    Some(out)
}

/// The components of a PKCS #1 `RSAPrivateKey` (two-prime): modulus, public exponent, private
/// exponent, p, q, d mod (p-1), d mod (q-1), q^-1 mod p.
pub fn rsa_private_components(pkcs1: &[u8]) -> Option<[Vec<u8>; 8]> {
    let ints = integers(pkcs1)?;
    if ints.len() != 9 || ints[0] != [0] {
        return None;
    }
    let mut it = ints.into_iter().skip(1);
    Some(std::array::from_fn(|_| it.next().unwrap_or_default()))
}

/// The modulus and public exponent of a PKCS #1 `RSAPublicKey`.
pub fn rsa_public_components(pkcs1: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut ints = integers(pkcs1)?.into_iter();
    let (Some(n), Some(e), None) = (ints.next(), ints.next(), ints.next()) else {
        return None;
    };
    Some((n, e))
}

/// The private scalar of an EC key's PKCS #8 `PrivateKeyInfo` (RFC 5915 `ECPrivateKey`
/// `privateKey`), as unsigned big-endian bytes.
pub fn ec_private_scalar(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let (0x30, body, _) = read_tlv(pkcs8)? else {
        return None;
    };
    let (0x02, _, rest) = read_tlv(body)? else {
        return None;
    };
    let (0x30, _, rest) = read_tlv(rest)? else {
        return None;
    };
    let (0x04, ec_private_key, _) = read_tlv(rest)? else {
        return None;
    };
    let (0x30, body, _) = read_tlv(ec_private_key)? else {
        return None;
    };
    let (0x02, version, rest) = read_tlv(body)? else {
        return None;
    };
    if version != [1] {
        return None;
    }
    let (0x04, scalar, _) = read_tlv(rest)? else {
        return None;
    };
    Some(scalar.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs1_and_pkcs8_round_trip() {
        let pkcs1 = vec![0x30, 0x03, 0x02, 0x01, 0x00];
        let pkcs8 = pkcs1_to_pkcs8(&pkcs1);
        assert_eq!(pkcs8_to_pkcs1(&pkcs8), Some(pkcs1.clone()));
        assert_eq!(spki_key(&rsa_spki(&pkcs1)), Some(pkcs1));
        let long = vec![0xAB; 300];
        assert_eq!(spki_key(&rsa_spki(&long)), Some(long));
    }

    #[test]
    fn truncated_input_is_refused() {
        assert_eq!(pkcs8_to_pkcs1(&[0x30, 0x82, 0x01]), None);
        assert_eq!(spki_key(&[]), None);
        assert_eq!(spki_key(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
    }

    #[test]
    fn p256_spki_has_the_standard_prefix() {
        let spki = ec_spki(256, &[0x04; 65]).unwrap_or_default();
        assert_eq!(spki.len(), 91);
        assert_eq!(&spki[..4], &[0x30, 0x59, 0x30, 0x13]);
    }

    #[test]
    fn rsa_components_are_read_and_malformed_keys_refused() {
        // RSAPrivateKey { 0, 0x00C5, 3, 7, 11, 13, 1, 2, 4 } and RSAPublicKey { 0x00C5, 3 }.
        let private = [
            0x30, 0x1C, 0x02, 0x01, 0x00, 0x02, 0x02, 0x00, 0xC5, 0x02, 0x01, 0x03, 0x02, 0x01,
            0x07, 0x02, 0x01, 0x0B, 0x02, 0x01, 0x0D, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0x02,
            0x01, 0x04,
        ];
        let c = rsa_private_components(&private).unwrap_or_else(|| panic!("components"));
        assert_eq!(c[0], [0x00, 0xC5]);
        assert_eq!(c[7], [0x04]);
        assert_eq!(rsa_private_components(&private[..20]), None);
        let public = [0x30, 0x07, 0x02, 0x02, 0x00, 0xC5, 0x02, 0x01, 0x03];
        assert_eq!(
            rsa_public_components(&public),
            Some((vec![0x00, 0xC5], vec![0x03]))
        );
        assert_eq!(rsa_public_components(&private), None);
    }
}
