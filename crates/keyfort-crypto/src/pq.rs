//! Post-quantum algorithms: ML-KEM (FIPS 203) and ML-DSA (FIPS 204).

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::kem;
use aws_lc_rs::signature::{self as lc_sig, KeyPair as _};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// An ML-KEM parameter set (FIPS 203 §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MlKem {
    /// ML-KEM-768 (security category 3).
    MlKem768,
    /// ML-KEM-1024 (security category 5).
    MlKem1024,
}

impl MlKem {
    fn lc(self) -> &'static kem::Algorithm<kem::AlgorithmId> {
        match self {
            MlKem::MlKem768 => &kem::ML_KEM_768,
            MlKem::MlKem1024 => &kem::ML_KEM_1024,
        }
    }
}

/// An ML-KEM decapsulation key. Wiped on free; redacting `Debug`; no `Clone`.
pub struct DecapsulationKey {
    parameter_set: MlKem,
    inner: kem::DecapsulationKey<kem::AlgorithmId>,
}

impl DecapsulationKey {
    /// ML-KEM.KeyGen (FIPS 203 §7.1).
    pub fn generate(parameter_set: MlKem) -> Result<DecapsulationKey> {
        let inner =
            kem::DecapsulationKey::generate(parameter_set.lc()).map_err(|_| Error::Internal {
                what: "ML-KEM key generation",
            })?;
        Ok(DecapsulationKey {
            parameter_set,
            inner,
        })
    }

    /// Parses the FIPS 203 encoded decapsulation key `dk`.
    pub fn from_bytes(parameter_set: MlKem, bytes: &[u8]) -> Result<DecapsulationKey> {
        let inner = kem::DecapsulationKey::new(parameter_set.lc(), bytes)
            .map_err(|e| Error::key_rejected(&e))?;
        Ok(DecapsulationKey {
            parameter_set,
            inner,
        })
    }

    /// The FIPS 203 encoded decapsulation key `dk`.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let bytes = self.inner.key_bytes().map_err(|_| Error::Internal {
            what: "ML-KEM key encoding",
        })?;
        Ok(Zeroizing::new(bytes.as_ref().to_vec()))
    }

    /// The parameter set.
    #[must_use]
    pub fn parameter_set(&self) -> MlKem {
        self.parameter_set
    }

    /// The FIPS 203 encoded encapsulation key `ek`.
    pub fn encapsulation_key(&self) -> Result<Vec<u8>> {
        let err = |_| Error::Internal {
            what: "ML-KEM encapsulation key",
        };
        let ek = self.inner.encapsulation_key().map_err(err)?;
        let bytes = ek.key_bytes().map_err(err)?;
        Ok(bytes.as_ref().to_vec())
    }

    /// ML-KEM.Decaps (FIPS 203 §7.3). A wrong-length ciphertext is an error; a tampered one of
    /// the right length yields a pseudo-random shared secret (implicit rejection), per FIPS 203.
    pub fn decapsulate(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let ss = self
            .inner
            .decapsulate(kem::Ciphertext::from(ciphertext))
            .map_err(|_| Error::InvalidInput {
                what: "ML-KEM ciphertext",
            })?;
        Ok(Zeroizing::new(ss.as_ref().to_vec()))
    }
}

impl core::fmt::Debug for DecapsulationKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("pq::DecapsulationKey")
            .field("parameter_set", &self.parameter_set)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// ML-KEM.Encaps (FIPS 203 §7.2) to encapsulation key `ek`: returns (ciphertext, shared secret).
pub fn encapsulate(parameter_set: MlKem, ek: &[u8]) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let ek =
        kem::EncapsulationKey::new(parameter_set.lc(), ek).map_err(|e| Error::key_rejected(&e))?;
    let (ct, ss) = ek.encapsulate().map_err(|_| Error::Internal {
        what: "ML-KEM encapsulation",
    })?;
    Ok((ct.as_ref().to_vec(), Zeroizing::new(ss.as_ref().to_vec())))
}

/// An ML-DSA parameter set (FIPS 204 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MlDsa {
    /// ML-DSA-44 (security category 2).
    MlDsa44,
    /// ML-DSA-65 (security category 3).
    MlDsa65,
    /// ML-DSA-87 (security category 5).
    MlDsa87,
}

impl MlDsa {
    fn signing(self) -> &'static lc_sig::PqdsaSigningAlgorithm {
        match self {
            MlDsa::MlDsa44 => &lc_sig::ML_DSA_44_SIGNING,
            MlDsa::MlDsa65 => &lc_sig::ML_DSA_65_SIGNING,
            MlDsa::MlDsa87 => &lc_sig::ML_DSA_87_SIGNING,
        }
    }

    fn verification(self) -> &'static lc_sig::PqdsaVerificationAlgorithm {
        match self {
            MlDsa::MlDsa44 => &lc_sig::ML_DSA_44,
            MlDsa::MlDsa65 => &lc_sig::ML_DSA_65,
            MlDsa::MlDsa87 => &lc_sig::ML_DSA_87,
        }
    }

    /// The signature length in bytes (FIPS 204 Table 2).
    #[must_use]
    pub fn signature_len(self) -> usize {
        self.signing().signature_len()
    }

    /// The public key length in bytes (FIPS 204 Table 2).
    #[must_use]
    pub fn public_key_len(self) -> usize {
        self.signing().public_key_len()
    }
}

/// An ML-DSA private key. Wiped on free; redacting `Debug`; no `Clone`.
pub struct MlDsaSigningKey {
    parameter_set: MlDsa,
    inner: lc_sig::PqdsaKeyPair,
}

impl MlDsaSigningKey {
    /// ML-DSA.KeyGen (FIPS 204 §5.1).
    pub fn generate(parameter_set: MlDsa) -> Result<MlDsaSigningKey> {
        let inner = lc_sig::PqdsaKeyPair::generate(parameter_set.signing()).map_err(|_| {
            Error::Internal {
                what: "ML-DSA key generation",
            }
        })?;
        Ok(MlDsaSigningKey {
            parameter_set,
            inner,
        })
    }

    /// ML-DSA.KeyGen_internal from a 32-byte seed ξ (FIPS 204 §6.1).
    pub fn from_seed(parameter_set: MlDsa, seed: &[u8]) -> Result<MlDsaSigningKey> {
        let inner = lc_sig::PqdsaKeyPair::from_seed(parameter_set.signing(), seed)
            .map_err(|e| Error::key_rejected(&e))?;
        Ok(MlDsaSigningKey {
            parameter_set,
            inner,
        })
    }

    /// Parses a PKCS #8 `PrivateKeyInfo` (seed or expanded form).
    pub fn from_pkcs8(parameter_set: MlDsa, der: &[u8]) -> Result<MlDsaSigningKey> {
        let inner = lc_sig::PqdsaKeyPair::from_pkcs8(parameter_set.signing(), der)
            .map_err(|e| Error::key_rejected(&e))?;
        Ok(MlDsaSigningKey {
            parameter_set,
            inner,
        })
    }

    /// The key as PKCS #8 `PrivateKeyInfo` DER.
    pub fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>> {
        let der = self
            .inner
            .private_key()
            .as_der()
            .map_err(|_| Error::Internal {
                what: "ML-DSA PKCS#8 encoding",
            })?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    /// The parameter set.
    #[must_use]
    pub fn parameter_set(&self) -> MlDsa {
        self.parameter_set
    }

    /// The FIPS 204 encoded public key `pk`.
    #[must_use]
    pub fn public_key(&self) -> Vec<u8> {
        self.inner.public_key().as_ref().to_vec()
    }

    /// ML-DSA.Sign (FIPS 204 §5.2, hedged, empty context string).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let mut sig = vec![0u8; self.parameter_set.signature_len()];
        let len = self
            .inner
            .sign(msg, &mut sig)
            .map_err(|_| Error::Internal {
                what: "ML-DSA sign",
            })?;
        sig.truncate(len);
        Ok(sig)
    }
}

impl core::fmt::Debug for MlDsaSigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("pq::MlDsaSigningKey")
            .field("parameter_set", &self.parameter_set)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// ML-DSA.Verify (FIPS 204 §5.3, empty context string).
pub fn ml_dsa_verify(
    parameter_set: MlDsa,
    public_key: &[u8],
    msg: &[u8],
    signature: &[u8],
) -> Result<()> {
    if public_key.len() != parameter_set.public_key_len() {
        return Err(Error::InvalidKey {
            what: "ML-DSA public key length",
        });
    }
    lc_sig::UnparsedPublicKey::new(parameter_set.verification(), public_key)
        .verify(msg, signature)
        .map_err(|_| Error::VerifyFailed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ml_kem_round_trip_and_tamper() {
        for (ps, ek_len, ct_len) in [
            (MlKem::MlKem768, 1184, 1088),
            (MlKem::MlKem1024, 1568, 1568),
        ] {
            let dk = DecapsulationKey::generate(ps).unwrap();
            let ek = dk.encapsulation_key().unwrap();
            assert_eq!(ek.len(), ek_len);
            let (ct, ss) = encapsulate(ps, &ek).unwrap();
            assert_eq!(ct.len(), ct_len);
            assert_eq!(ss.len(), 32);
            assert_eq!(dk.decapsulate(&ct).unwrap(), ss);
            let mut bad = ct.clone();
            bad[5] ^= 1;
            assert_ne!(dk.decapsulate(&bad).unwrap(), ss);
            assert!(dk.decapsulate(&ct[1..]).is_err());
            let again = DecapsulationKey::from_bytes(ps, &dk.to_bytes().unwrap()).unwrap();
            assert_eq!(again.decapsulate(&ct).unwrap(), ss);
            assert!(encapsulate(ps, &ek[1..]).is_err());
        }
    }

    #[test]
    fn ml_dsa_round_trip_and_tamper() {
        for (ps, pk_len, sig_len) in [
            (MlDsa::MlDsa44, 1312, 2420),
            (MlDsa::MlDsa65, 1952, 3309),
            (MlDsa::MlDsa87, 2592, 4627),
        ] {
            let key = MlDsaSigningKey::generate(ps).unwrap();
            let pk = key.public_key();
            assert_eq!(pk.len(), pk_len);
            let sig = key.sign(b"msg").unwrap();
            assert_eq!(sig.len(), sig_len);
            assert!(ml_dsa_verify(ps, &pk, b"msg", &sig).is_ok());
            assert_eq!(
                ml_dsa_verify(ps, &pk, b"msh", &sig),
                Err(Error::VerifyFailed)
            );
            let mut bad = sig.clone();
            bad[7] ^= 1;
            assert_eq!(
                ml_dsa_verify(ps, &pk, b"msg", &bad),
                Err(Error::VerifyFailed)
            );
            let again = MlDsaSigningKey::from_pkcs8(ps, &key.to_pkcs8().unwrap()).unwrap();
            assert_eq!(again.public_key(), pk);
            let s1 = MlDsaSigningKey::from_seed(ps, &[9u8; 32]).unwrap();
            let s2 = MlDsaSigningKey::from_seed(ps, &[9u8; 32]).unwrap();
            assert_eq!(s1.public_key(), s2.public_key());
        }
    }
}
