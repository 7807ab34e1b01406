//! The wrapped master key format, version 1 (sans-IO: bytes in, parts out).
//!
//! `0x01 ‖ IV (12) ‖ ciphertext (32) ‖ GCM tag (16)`, with
//! AAD = `"keyfort-hsm-mk-v1\n" ‖ instance id`.

use crate::HsmError;

/// Length of a master key, in bytes.
pub const MASTER_KEY_LEN: usize = 32;
/// Length of a version 1 wrapped master key, in bytes.
pub const WRAPPED_LEN: usize = 1 + IV_LEN + MASTER_KEY_LEN + TAG_LEN;

pub(crate) const VERSION_1: u8 = 0x01;
pub(crate) const IV_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const TAG_BITS: u64 = 8 * TAG_LEN as u64;

const AAD_PREFIX: &[u8] = b"keyfort-hsm-mk-v1\n";

/// The associated data that binds a wrapped master key to its instance.
pub(crate) fn aad(instance_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + instance_id.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(instance_id.as_bytes());
    aad
}

/// Assembles a version 1 blob from the IV and the token's `ciphertext ‖ tag`.
pub(crate) fn encode(iv: &[u8; IV_LEN], sealed: &[u8]) -> Result<Vec<u8>, HsmError> {
    if sealed.len() != MASTER_KEY_LEN + TAG_LEN {
        return Err(HsmError::UnexpectedOutput {
            operation: "C_Encrypt",
            expected: MASTER_KEY_LEN + TAG_LEN,
            actual: sealed.len(),
        });
    }
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.push(VERSION_1);
    out.extend_from_slice(iv);
    out.extend_from_slice(sealed);
    Ok(out)
}

/// The parts of a version 1 blob.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parsed<'a> {
    pub(crate) iv: [u8; IV_LEN],
    /// `ciphertext ‖ tag`, as `C_Decrypt` takes it for `CKM_AES_GCM`.
    pub(crate) sealed: &'a [u8],
}

/// Splits a blob, checking its version and exact length.
pub(crate) fn parse(wrapped: &[u8]) -> Result<Parsed<'_>, HsmError> {
    let Some((&version, rest)) = wrapped.split_first() else {
        return Err(HsmError::MalformedWrappedKey { reason: "empty" });
    };
    if version != VERSION_1 {
        return Err(HsmError::MalformedWrappedKey {
            reason: "unknown version",
        });
    }
    if wrapped.len() != WRAPPED_LEN {
        return Err(HsmError::MalformedWrappedKey {
            reason: "wrong length",
        });
    }
    let (iv, sealed) = rest.split_at(IV_LEN);
    let mut iv_arr = [0u8; IV_LEN];
    iv_arr.copy_from_slice(iv);
    Ok(Parsed { iv: iv_arr, sealed })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_returns_the_parts() {
        let iv = [7u8; IV_LEN];
        let sealed = [9u8; MASTER_KEY_LEN + TAG_LEN];
        let blob = encode(&iv, &sealed).unwrap();
        assert_eq!(blob.len(), WRAPPED_LEN);
        assert_eq!(blob[0], VERSION_1);
        let parsed = parse(&blob).unwrap();
        assert_eq!(parsed.iv, iv);
        assert_eq!(parsed.sealed, &sealed[..]);
    }

    #[test]
    fn parse_rejects_bad_version_and_length() {
        let blob = encode(&[0u8; IV_LEN], &[0u8; MASTER_KEY_LEN + TAG_LEN]).unwrap();
        assert!(matches!(
            parse(&[]),
            Err(HsmError::MalformedWrappedKey { reason: "empty" })
        ));
        let mut v2 = blob.clone();
        v2[0] = 0x02;
        assert!(matches!(
            parse(&v2),
            Err(HsmError::MalformedWrappedKey {
                reason: "unknown version"
            })
        ));
        for len in [1, WRAPPED_LEN - 1] {
            assert!(matches!(
                parse(&blob[..len]),
                Err(HsmError::MalformedWrappedKey {
                    reason: "wrong length"
                })
            ));
        }
        let mut long = blob.clone();
        long.push(0);
        assert!(parse(&long).is_err());
    }

    #[test]
    fn encode_rejects_unexpected_token_output() {
        assert!(matches!(
            encode(&[0u8; IV_LEN], &[0u8; MASTER_KEY_LEN]),
            Err(HsmError::UnexpectedOutput { .. })
        ));
    }

    #[test]
    fn aad_binds_the_instance() {
        assert_eq!(aad("inst-1"), b"keyfort-hsm-mk-v1\ninst-1".to_vec());
        assert_ne!(aad("a"), aad("b"));
    }
}
