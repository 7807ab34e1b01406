//! RSA (RFC 8017): key generation, PKCS #8 / SPKI / PKCS #1 DER, RSASSA-PKCS1-v1_5 and
//! RSASSA-PSS signatures, RSAES-OAEP, and RSAES-PKCS1-v1_5 decryption with implicit rejection.
//!
//! # PKCS #1 v1.5 decryption is not a padding oracle
//!
//! [`PrivateKey::decrypt_pkcs1v15`] never reports bad padding. Following the implicit-rejection
//! construction of draft-irtf-cfrg-rsa-guidance (the Marvin-attack mitigation also used by
//! OpenSSL 3.2+), when the padding is wrong it returns a *synthetic* message that is a
//! deterministic pseudo-random function of the private key and the ciphertext:
//!
//! 1. KDK = HMAC-SHA-256(key = SHA-256(d as a k-byte big-endian string), msg = C).
//! 2. PRF(label, n bits) = HMAC-SHA-256(KDK, I₀ ‖ label ‖ n) ‖ HMAC-SHA-256(KDK, I₁ ‖ label ‖ n) ‖ …
//!    truncated to n bits, with Iᵢ and n as 2-byte big-endian integers.
//! 3. 128 candidate lengths = PRF("length", 2048 bits) read as 16-bit big-endian values, each
//!    masked to the next power of two above k − 10 minus one; the synthetic length is the last
//!    candidate below k − 10 (0 if none).
//! 4. The synthetic message is the last synthetic-length bytes of PRF("message", 8k bits).
//!
//! The padding check and the choice between real and synthetic message use branch-free
//! masks over the whole k-byte buffer. Callers must treat the result like any decryption that
//! may be wrong (e.g. as in TLS, derive the key and let the next authenticated step fail), and
//! must not reveal whether it "worked".

use aws_lc_rs::digest as lc_digest;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa as lc_rsa;
use aws_lc_rs::signature::{self as lc_sig, KeyPair as _};
use zeroize::Zeroizing;

use crate::{Error, Result, raw};

/// Supported RSA modulus sizes for key generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeySize {
    /// 2048-bit modulus.
    Rsa2048,
    /// 3072-bit modulus.
    Rsa3072,
    /// 4096-bit modulus.
    Rsa4096,
}

impl KeySize {
    /// The modulus length in bits.
    #[must_use]
    pub fn bits(self) -> usize {
        match self {
            KeySize::Rsa2048 => 2048,
            KeySize::Rsa3072 => 3072,
            KeySize::Rsa4096 => 4096,
        }
    }

    /// The key size with this modulus length in bits, if supported.
    #[must_use]
    pub fn from_bits(bits: usize) -> Option<KeySize> {
        match bits {
            2048 => Some(KeySize::Rsa2048),
            3072 => Some(KeySize::Rsa3072),
            4096 => Some(KeySize::Rsa4096),
            _ => None,
        }
    }

    fn lc(self) -> lc_rsa::KeySize {
        match self {
            KeySize::Rsa2048 => lc_rsa::KeySize::Rsa2048,
            KeySize::Rsa3072 => lc_rsa::KeySize::Rsa3072,
            KeySize::Rsa4096 => lc_rsa::KeySize::Rsa4096,
        }
    }
}

/// The hash of a signature scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    fn digest(self) -> &'static lc_digest::Algorithm {
        match self {
            Hash::Sha256 => &lc_digest::SHA256,
            Hash::Sha384 => &lc_digest::SHA384,
            Hash::Sha512 => &lc_digest::SHA512,
        }
    }
}

/// A signature scheme (RFC 8017 §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5 (RFC 8017 §8.2).
    Pkcs1v15(Hash),
    /// RSASSA-PSS (RFC 8017 §8.1) with MGF1 of the same hash and salt length = hash length.
    Pss(Hash),
}

impl SignatureScheme {
    fn signing(self) -> &'static lc_sig::RsaSignatureEncoding {
        match self {
            SignatureScheme::Pkcs1v15(Hash::Sha256) => &lc_sig::RSA_PKCS1_SHA256,
            SignatureScheme::Pkcs1v15(Hash::Sha384) => &lc_sig::RSA_PKCS1_SHA384,
            SignatureScheme::Pkcs1v15(Hash::Sha512) => &lc_sig::RSA_PKCS1_SHA512,
            SignatureScheme::Pss(Hash::Sha256) => &lc_sig::RSA_PSS_SHA256,
            SignatureScheme::Pss(Hash::Sha384) => &lc_sig::RSA_PSS_SHA384,
            SignatureScheme::Pss(Hash::Sha512) => &lc_sig::RSA_PSS_SHA512,
        }
    }

    fn verification(self) -> &'static lc_sig::RsaParameters {
        match self {
            SignatureScheme::Pkcs1v15(Hash::Sha256) => &lc_sig::RSA_PKCS1_2048_8192_SHA256,
            SignatureScheme::Pkcs1v15(Hash::Sha384) => &lc_sig::RSA_PKCS1_2048_8192_SHA384,
            SignatureScheme::Pkcs1v15(Hash::Sha512) => &lc_sig::RSA_PKCS1_2048_8192_SHA512,
            SignatureScheme::Pss(Hash::Sha256) => &lc_sig::RSA_PSS_2048_8192_SHA256,
            SignatureScheme::Pss(Hash::Sha384) => &lc_sig::RSA_PSS_2048_8192_SHA384,
            SignatureScheme::Pss(Hash::Sha512) => &lc_sig::RSA_PSS_2048_8192_SHA512,
        }
    }
}

/// The hash of RSAES-OAEP (RFC 8017 §7.1); MGF1 uses the same hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OaepHash {
    /// SHA-1 (still the PKCS #11 / KMIP default for OAEP).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl OaepHash {
    fn lc(self) -> &'static lc_rsa::OaepAlgorithm {
        match self {
            OaepHash::Sha1 => &lc_rsa::OAEP_SHA1_MGF1SHA1,
            OaepHash::Sha256 => &lc_rsa::OAEP_SHA256_MGF1SHA256,
            OaepHash::Sha384 => &lc_rsa::OAEP_SHA384_MGF1SHA384,
            OaepHash::Sha512 => &lc_rsa::OAEP_SHA512_MGF1SHA512,
        }
    }
}

/// An RSA private key. Zeroized on drop; redacting `Debug`; no `Clone`.
pub struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    signing: lc_rsa::KeyPair,
    public: PublicKey,
}

impl PrivateKey {
    /// Generates a key pair with public exponent 65537.
    pub fn generate(size: KeySize) -> Result<PrivateKey> {
        let kp = lc_rsa::KeyPair::generate(size.lc()).map_err(|_| Error::Internal {
            what: "RSA key generation",
        })?;
        let der = kp.as_der().map_err(|_| Error::Internal {
            what: "RSA PKCS#8 encoding",
        })?;
        Self::from_pkcs8(der.as_ref())
    }

    /// Parses an unencrypted PKCS #8 `PrivateKeyInfo` (RFC 5208) holding an RSA key of
    /// 2048–8192 bits; the key is checked for consistency.
    pub fn from_pkcs8(der: &[u8]) -> Result<PrivateKey> {
        let signing = lc_rsa::KeyPair::from_pkcs8(der).map_err(|e| Error::key_rejected(&e))?;
        let public = PublicKey::from_der(signing.public_key().as_ref())?;
        Ok(PrivateKey {
            pkcs8: Zeroizing::new(der.to_vec()),
            signing,
            public,
        })
    }

    /// The key as PKCS #8 `PrivateKeyInfo` DER, as given or generated.
    #[must_use]
    pub fn to_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The public half.
    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The modulus length k in bytes (= signature and ciphertext length).
    #[must_use]
    pub fn modulus_len(&self) -> usize {
        self.signing.public_modulus_len()
    }

    /// Hashes `msg` and signs it (RFC 8017 §8.1.1 / §8.2.1).
    pub fn sign(&self, scheme: SignatureScheme, msg: &[u8]) -> Result<Vec<u8>> {
        let mut sig = vec![0u8; self.modulus_len()];
        self.signing
            .sign(scheme.signing(), &SystemRandom::new(), msg, &mut sig)
            .map_err(|_| Error::Internal { what: "RSA sign" })?;
        Ok(sig)
    }

    /// Signs a caller-computed digest with `scheme` (PKCS #11 `CKM_RSA_PKCS_PSS` without a hash
    /// prefix, and the digest-only form of the v1.5 schemes). `digest` must be exactly the
    /// scheme hash's length.
    pub fn sign_digest(&self, scheme: SignatureScheme, digest: &[u8]) -> Result<Vec<u8>> {
        let (SignatureScheme::Pkcs1v15(hash) | SignatureScheme::Pss(hash)) = scheme;
        let digest = lc_digest::Digest::import_less_safe(digest, hash.digest()).map_err(|_| {
            Error::InvalidInput {
                what: "digest length does not match the hash",
            }
        })?;
        let mut sig = vec![0u8; self.modulus_len()];
        self.signing
            .sign_digest(scheme.signing(), &digest, &mut sig)
            .map_err(|_| Error::Internal { what: "RSA sign" })?;
        Ok(sig)
    }

    /// The raw RSASSA-PKCS1-v1_5 operation over caller bytes (PKCS #11 `CKM_RSA_PKCS` signing):
    /// EMSA-PKCS1-v1_5 type-1 padding of `digest_info` (normally a DER `DigestInfo`, RFC 8017
    /// §9.2 step 2), then RSASP1. At most k − 11 bytes.
    pub fn sign_pkcs1v15_raw(&self, digest_info: &[u8]) -> Result<Vec<u8>> {
        raw::rsa_sign_pkcs1_raw(&self.pkcs8, digest_info)
    }

    /// RSAES-OAEP decryption (RFC 8017 §7.1.2) with an optional label.
    pub fn decrypt_oaep(
        &self,
        hash: OaepHash,
        ciphertext: &[u8],
        label: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let key = lc_rsa::PrivateDecryptingKey::from_pkcs8(&self.pkcs8)
            .map_err(|e| Error::key_rejected(&e))?;
        let key = lc_rsa::OaepPrivateDecryptingKey::new(key).map_err(|_| Error::InvalidKey {
            what: "RSA key unusable for OAEP",
        })?;
        let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
        let len = key
            .decrypt(hash.lc(), ciphertext, &mut out, label)
            .map_err(|_| Error::DecryptFailed)?
            .len();
        out.truncate(len);
        Ok(out)
    }

    /// RSAES-PKCS1-v1_5 decryption (RFC 8017 §7.2.2) with implicit rejection (see the module
    /// docs): bad padding yields `Ok` with a deterministic synthetic message, never an error.
    ///
    /// Errors only for conditions visible from public data: a ciphertext that is not k bytes
    /// or not below the modulus.
    pub fn decrypt_pkcs1v15(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let raw = raw::rsa_decrypt_no_padding(&self.pkcs8, ciphertext)?;
        Ok(implicit_rejection::unpad(&raw.em, &raw.d, ciphertext))
    }
}

impl core::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("rsa::PrivateKey")
            .field("modulus_bits", &(self.modulus_len() * 8))
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// An RSA public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pkcs1: Vec<u8>,
    spki: Vec<u8>,
    modulus_len: usize,
}

impl PublicKey {
    /// Parses a public key in either X.509 `SubjectPublicKeyInfo` (RFC 5280) or PKCS #1
    /// `RSAPublicKey` (RFC 8017 §A.1.1) DER.
    pub fn from_der(der: &[u8]) -> Result<PublicKey> {
        let key = lc_rsa::PublicKey::from_der(der).map_err(|e| Error::key_rejected(&e))?;
        let spki = key.as_der().map_err(|_| Error::Internal {
            what: "RSA SPKI encoding",
        })?;
        Ok(PublicKey {
            pkcs1: key.as_ref().to_vec(),
            spki: spki.as_ref().to_vec(),
            modulus_len: key.modulus_len(),
        })
    }

    /// X.509 `SubjectPublicKeyInfo` DER.
    #[must_use]
    pub fn to_spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// PKCS #1 `RSAPublicKey` DER.
    #[must_use]
    pub fn to_pkcs1_der(&self) -> &[u8] {
        &self.pkcs1
    }

    /// The modulus length k in bytes.
    #[must_use]
    pub fn modulus_len(&self) -> usize {
        self.modulus_len
    }

    /// Verifies a signature over `msg` (RFC 8017 §8.1.2 / §8.2.2). Keys below 2048 bits fail.
    pub fn verify(&self, scheme: SignatureScheme, msg: &[u8], signature: &[u8]) -> Result<()> {
        lc_sig::UnparsedPublicKey::new(scheme.verification(), &self.pkcs1)
            .verify(msg, signature)
            .map_err(|_| Error::VerifyFailed)
    }

    /// Verifies a signature over a caller-computed digest of the scheme's hash.
    pub fn verify_digest(
        &self,
        scheme: SignatureScheme,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        let (SignatureScheme::Pkcs1v15(hash) | SignatureScheme::Pss(hash)) = scheme;
        let digest = lc_digest::Digest::import_less_safe(digest, hash.digest()).map_err(|_| {
            Error::InvalidInput {
                what: "digest length does not match the hash",
            }
        })?;
        lc_sig::UnparsedPublicKey::new(scheme.verification(), &self.pkcs1)
            .verify_digest(&digest, signature)
            .map_err(|_| Error::VerifyFailed)
    }

    /// Verifies a raw RSASSA-PKCS1-v1_5 signature (PKCS #11 `CKM_RSA_PKCS`) over caller bytes,
    /// normally a DER `DigestInfo`; the comparison is constant time.
    pub fn verify_pkcs1v15_raw(&self, digest_info: &[u8], signature: &[u8]) -> Result<()> {
        let recovered = raw::rsa_recover_pkcs1_raw(&self.pkcs1, signature)?;
        if crate::ct_eq(&recovered, digest_info) {
            Ok(())
        } else {
            Err(Error::VerifyFailed)
        }
    }

    /// RSAES-OAEP encryption (RFC 8017 §7.1.1) with an optional label.
    pub fn encrypt_oaep(
        &self,
        hash: OaepHash,
        plaintext: &[u8],
        label: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let key = lc_rsa::PublicEncryptingKey::from_der(&self.spki)
            .map_err(|e| Error::key_rejected(&e))?;
        let key = lc_rsa::OaepPublicEncryptingKey::new(key).map_err(|_| Error::InvalidKey {
            what: "RSA key unusable for OAEP",
        })?;
        if plaintext.len() > key.max_plaintext_size(hash.lc()) {
            return Err(Error::InvalidInput {
                what: "plaintext too long for RSA-OAEP",
            });
        }
        let mut out = vec![0u8; key.ciphertext_size()];
        let len = key
            .encrypt(hash.lc(), plaintext, &mut out, label)
            .map_err(|_| Error::Internal {
                what: "RSA-OAEP encrypt",
            })?
            .len();
        out.truncate(len);
        Ok(out)
    }

    /// RSAES-PKCS1-v1_5 encryption (RFC 8017 §7.2.1), for interoperability only.
    pub fn encrypt_pkcs1v15(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let key = lc_rsa::PublicEncryptingKey::from_der(&self.spki)
            .map_err(|e| Error::key_rejected(&e))?;
        let key = lc_rsa::Pkcs1PublicEncryptingKey::new(key).map_err(|_| Error::InvalidKey {
            what: "RSA key unusable for PKCS#1 v1.5 encryption",
        })?;
        if plaintext.len() > key.max_plaintext_size() {
            return Err(Error::InvalidInput {
                what: "plaintext too long for RSA PKCS#1 v1.5",
            });
        }
        let mut out = vec![0u8; key.ciphertext_size()];
        let len = key
            .encrypt(plaintext, &mut out)
            .map_err(|_| Error::Internal {
                what: "RSA PKCS#1 v1.5 encrypt",
            })?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("rsa::PublicKey")
            .field("modulus_bits", &(self.modulus_len * 8))
            .finish_non_exhaustive()
    }
}

/// Constant-time EME-PKCS1-v1_5 decoding with implicit rejection (module docs).
mod implicit_rejection {
    use core::hint::black_box;

    use zeroize::Zeroizing;

    use crate::hmac::{self, Algorithm::Sha256};

    /// Number of candidate lengths drawn from the PRF.
    const CANDIDATES: usize = 128;

    /// All-ones if `x == 0`, else zero.
    fn is_zero(x: usize) -> usize {
        let x = x as u64;
        // (x | -x) has its top bit set iff x != 0.
        let nonzero = (x | x.wrapping_neg()) >> 63;
        black_box((nonzero as usize).wrapping_sub(1))
    }

    /// All-ones if `a < b` (both below 2^63), else zero.
    fn lt(a: usize, b: usize) -> usize {
        let borrow = (a as u64).wrapping_sub(b as u64) >> 63;
        black_box(0usize.wrapping_sub(borrow as usize))
    }

    fn select(mask: usize, a: usize, b: usize) -> usize {
        (a & mask) | (b & !mask)
    }

    /// PRF(label, bits) of the module docs.
    fn prf(kdk: &[u8], label: &[u8], out_len: usize) -> Zeroizing<Vec<u8>> {
        let key = hmac::Key::new(Sha256, kdk);
        let bits = u16::try_from(out_len * 8).unwrap_or(u16::MAX).to_be_bytes();
        let mut out = Zeroizing::new(Vec::with_capacity(out_len + 32));
        let mut i: u16 = 0;
        while out.len() < out_len {
            let mut ctx = key.context();
            ctx.update(&i.to_be_bytes());
            ctx.update(label);
            ctx.update(&bits);
            out.extend_from_slice(&Zeroizing::new(ctx.sign()));
            i = i.wrapping_add(1);
        }
        out.truncate(out_len);
        out
    }

    /// Returns the real message if `em` is well-formed EME-PKCS1-v1_5, else the synthetic one.
    pub(super) fn unpad(em: &[u8], d: &[u8], ciphertext: &[u8]) -> Zeroizing<Vec<u8>> {
        let k = em.len();
        let d_hash = Zeroizing::new(crate::digest::sha256(d));
        let kdk = Zeroizing::new(hmac::sign(Sha256, &d_hash[..], ciphertext));
        let lengths = prf(&kdk, b"length", 2 * CANDIDATES);
        let synthetic = prf(&kdk, b"message", k);

        // The longest message: k - 11 bytes, i.e. below k - 10.
        let max_sep_offset = k.saturating_sub(10);
        let mask = max_sep_offset.next_power_of_two().wrapping_sub(1);
        let mut synth_len = 0usize;
        for pair in lengths.chunks_exact(2) {
            let candidate = (usize::from(pair[0]) << 8 | usize::from(pair[1])) & mask;
            synth_len = select(lt(candidate, max_sep_offset), candidate, synth_len);
        }

        // EM = 0x00 ‖ 0x02 ‖ PS (≥ 8 non-zero bytes) ‖ 0x00 ‖ M  (RFC 8017 §7.2.2 step 3).
        let mut good = is_zero(usize::from(em.first().copied().unwrap_or(1)))
            & is_zero(usize::from(em.get(1).copied().unwrap_or(0)) ^ 2);
        let mut found = 0usize;
        let mut zero_index = 0usize;
        for (i, &b) in em.iter().enumerate().skip(2) {
            let is_sep = is_zero(usize::from(b)) & !found;
            zero_index = select(is_sep, i, zero_index);
            found |= is_sep;
        }
        good &= found;
        good &= !lt(zero_index, 2 + 8);
        let real_len = k.wrapping_sub(zero_index).wrapping_sub(1);
        let out_len = select(good, real_len, synth_len);

        // Both candidates are suffixes of k-byte buffers: blend the whole buffers, then take
        // the tail (whose length is the result's length, public once returned).
        let byte_mask = (good & 0xff) as u8;
        let mut blended = Zeroizing::new(vec![0u8; k]);
        for ((out, &e), &s) in blended.iter_mut().zip(em).zip(synthetic.iter()) {
            *out = (e & byte_mask) | (s & !byte_mask);
        }
        let start = k.saturating_sub(out_len);
        Zeroizing::new(blended[start..].to_vec())
    }

    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    mod tests {
        use super::*;

        #[test]
        fn masks() {
            assert_eq!(is_zero(0), usize::MAX);
            assert_eq!(is_zero(1), 0);
            assert_eq!(is_zero(255), 0);
            assert_eq!(lt(1, 2), usize::MAX);
            assert_eq!(lt(2, 2), 0);
            assert_eq!(lt(3, 2), 0);
            assert_eq!(select(usize::MAX, 4, 5), 4);
            assert_eq!(select(0, 4, 5), 5);
        }

        #[test]
        fn well_formed_message_is_returned() {
            let mut em = vec![0u8; 64];
            em[1] = 2;
            em[2..20].fill(0x33);
            em[20] = 0;
            em[21..].fill(0x44);
            let out = unpad(&em, &[1; 64], &[2; 64]);
            assert_eq!(&out[..], &[0x44; 43][..]);
            // A message of length zero is valid too.
            let mut em = vec![0x55u8; 64];
            em[0] = 0;
            em[1] = 2;
            em[63] = 0;
            assert!(unpad(&em, &[1; 64], &[2; 64]).is_empty());
        }

        #[test]
        fn malformed_gives_deterministic_synthetic() {
            let mut em = vec![0u8; 64];
            em[1] = 2;
            em[2..9].fill(0x33); // only 7 bytes of PS
            em[9] = 0;
            em[10..].fill(0x44);
            let a = unpad(&em, &[1; 64], &[2; 64]);
            let b = unpad(&em, &[1; 64], &[2; 64]);
            assert_eq!(a, b);
            assert!(a.len() <= 64 - 11);
            assert_ne!(&a[..], &em[10..]);
            let c = unpad(&em, &[1; 64], &[3; 64]);
            assert_ne!(a, c);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        PrivateKey::generate(KeySize::Rsa2048).unwrap()
    }

    /// DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1).
    const SHA256_DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];

    #[test]
    fn all_in_one_2048() {
        let k = key();
        assert_eq!(k.modulus_len(), 256);
        let pubk = k.public_key().clone();

        // Export / import.
        let again = PrivateKey::from_pkcs8(&k.to_pkcs8()).unwrap();
        assert_eq!(again.public_key(), &pubk);
        assert_eq!(PublicKey::from_der(pubk.to_spki_der()).unwrap(), pubk);
        assert_eq!(PublicKey::from_der(pubk.to_pkcs1_der()).unwrap(), pubk);

        // Hashed signatures.
        for scheme in [
            SignatureScheme::Pkcs1v15(Hash::Sha256),
            SignatureScheme::Pkcs1v15(Hash::Sha384),
            SignatureScheme::Pkcs1v15(Hash::Sha512),
            SignatureScheme::Pss(Hash::Sha256),
            SignatureScheme::Pss(Hash::Sha384),
            SignatureScheme::Pss(Hash::Sha512),
        ] {
            let sig = k.sign(scheme, b"msg").unwrap();
            assert!(pubk.verify(scheme, b"msg", &sig).is_ok(), "{scheme:?}");
            assert_eq!(pubk.verify(scheme, b"msh", &sig), Err(Error::VerifyFailed));
            let mut bad = sig.clone();
            bad[100] ^= 1;
            assert_eq!(pubk.verify(scheme, b"msg", &bad), Err(Error::VerifyFailed));
        }

        // Digest forms agree with the hashed forms.
        let digest = crate::digest::sha256(b"msg");
        let pss = k
            .sign_digest(SignatureScheme::Pss(Hash::Sha256), &digest)
            .unwrap();
        assert!(
            pubk.verify(SignatureScheme::Pss(Hash::Sha256), b"msg", &pss)
                .is_ok()
        );
        assert!(
            pubk.verify_digest(SignatureScheme::Pss(Hash::Sha256), &digest, &pss)
                .is_ok()
        );
        assert!(
            k.sign_digest(SignatureScheme::Pss(Hash::Sha384), &digest)
                .is_err()
        );

        // Raw CKM_RSA_PKCS over a DigestInfo equals the v1.5 SHA-256 signature (deterministic).
        let mut digest_info = SHA256_DIGEST_INFO.to_vec();
        digest_info.extend_from_slice(&digest);
        let raw_sig = k.sign_pkcs1v15_raw(&digest_info).unwrap();
        let v15 = k
            .sign(SignatureScheme::Pkcs1v15(Hash::Sha256), b"msg")
            .unwrap();
        assert_eq!(raw_sig, v15);
        assert!(pubk.verify_pkcs1v15_raw(&digest_info, &raw_sig).is_ok());
        let mut other = digest_info.clone();
        other[30] ^= 1;
        assert_eq!(
            pubk.verify_pkcs1v15_raw(&other, &raw_sig),
            Err(Error::VerifyFailed)
        );
        let mut bad = raw_sig.clone();
        bad[0] ^= 1;
        assert_eq!(
            pubk.verify_pkcs1v15_raw(&digest_info, &bad),
            Err(Error::VerifyFailed)
        );
        assert!(k.sign_pkcs1v15_raw(&[0u8; 246]).is_err());

        // OAEP with and without label.
        for hash in [OaepHash::Sha1, OaepHash::Sha256] {
            let ct = pubk
                .encrypt_oaep(hash, b"data key", Some(b"label"))
                .unwrap();
            assert_eq!(
                &k.decrypt_oaep(hash, &ct, Some(b"label")).unwrap()[..],
                b"data key"
            );
            assert_eq!(k.decrypt_oaep(hash, &ct, None), Err(Error::DecryptFailed));
            let ct = pubk.encrypt_oaep(hash, b"x", None).unwrap();
            assert_eq!(&k.decrypt_oaep(hash, &ct, None).unwrap()[..], b"x");
        }

        // PKCS#1 v1.5 decryption: valid ciphertexts decrypt…
        let ct = pubk.encrypt_pkcs1v15(b"premaster").unwrap();
        assert_eq!(&k.decrypt_pkcs1v15(&ct).unwrap()[..], b"premaster");
        // …and a bad-padding ciphertext (an OAEP one) gives a stable synthetic message.
        let oaep = pubk
            .encrypt_oaep(OaepHash::Sha256, b"premaster", None)
            .unwrap();
        let a = k.decrypt_pkcs1v15(&oaep).unwrap();
        let b = k.decrypt_pkcs1v15(&oaep).unwrap();
        assert_eq!(a, b);
        assert!(a.len() <= 256 - 11);
        assert_ne!(&a[..], b"premaster");
        let other = pubk
            .encrypt_oaep(OaepHash::Sha256, b"premaster", None)
            .unwrap();
        assert_ne!(k.decrypt_pkcs1v15(&other).unwrap(), a);
        // Public-data errors remain errors.
        assert!(matches!(
            k.decrypt_pkcs1v15(&ct[1..]),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            k.decrypt_pkcs1v15(&[0xff; 256]),
            Err(Error::InvalidInput { .. })
        ));

        assert!(format!("{k:?}").contains("redacted"));
    }

    #[test]
    fn bad_keys_rejected() {
        assert!(matches!(
            PrivateKey::from_pkcs8(b"nope"),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            PublicKey::from_der(b"nope"),
            Err(Error::InvalidKey { .. })
        ));
        assert_eq!(KeySize::from_bits(3072), Some(KeySize::Rsa3072));
        assert_eq!(KeySize::from_bits(1024), None);
    }
}
