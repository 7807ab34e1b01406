//! Shamir secret sharing over GF(2^8) (Shamir 1979), for splitting instance master keys into
//! custodian parts. The field arithmetic comes from the `blahaj` crate; the randomness of the
//! polynomials comes from this crate's CSPRNG (AWS-LC), never from another generator.
//!
//! A share is `x ‖ y₁ … yₙ`: one byte of x coordinate (1–255) and one byte per secret byte.

use std::convert::Infallible;

use zeroize::{Zeroize, Zeroizing};

use crate::{Error, Result};

/// Most shares a secret can be split into (x coordinates 1–255).
pub const MAX_SHARES: u8 = 255;

/// Splits `secret` into `shares` shares, any `threshold` of which recover it.
pub fn split(secret: &[u8], threshold: u8, shares: u8) -> Result<Vec<Zeroizing<Vec<u8>>>> {
    if secret.is_empty() {
        return Err(Error::InvalidInput {
            what: "secret to split is empty",
        });
    }
    if threshold == 0 || shares == 0 || threshold > shares {
        return Err(Error::InvalidInput {
            what: "threshold must be between 1 and the number of shares",
        });
    }
    // Check the CSPRNG once before dealing, so that a failing generator is an error here rather
    // than inside the dealer (which cannot return one).
    crate::rng::fill(&mut [0u8; 1])?;
    let mut rng = DealerRng::default();
    let dealer = blahaj::Sharks(threshold).dealer_rng(secret, &mut rng);
    Ok(dealer
        .take(usize::from(shares))
        .map(|share| Zeroizing::new(Vec::from(&share)))
        .collect())
}

/// Recovers a secret from at least `threshold` distinct shares of the same length.
///
/// Fewer shares, or shares of different lengths, are an error. Shares that do not belong to the
/// same split recover a wrong value without any error: callers check the result (for master
/// keys, against the stored key check value).
pub fn combine(shares: &[&[u8]], threshold: u8) -> Result<Zeroizing<Vec<u8>>> {
    let parsed = shares
        .iter()
        .map(|s| {
            if s.len() < 2 || s[0] == 0 {
                return Err(Error::InvalidInput {
                    what: "malformed share",
                });
            }
            blahaj::Share::try_from(*s).map_err(|_| Error::InvalidInput {
                what: "malformed share",
            })
        })
        .collect::<Result<Vec<_>>>()?;
    blahaj::Sharks(threshold)
        .recover(parsed.iter())
        .map(Zeroizing::new)
        .map_err(|_| Error::InvalidInput {
            what: "not enough distinct shares of equal length",
        })
}

/// Feeds the dealer from AWS-LC's generator, in blocks.
struct DealerRng {
    buf: [u8; 256],
    pos: usize,
    filled: bool,
}

impl Default for DealerRng {
    fn default() -> Self {
        DealerRng {
            buf: [0u8; 256],
            pos: 0,
            filled: false,
        }
    }
}

impl DealerRng {
    fn next_bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            if !self.filled || self.pos == self.buf.len() {
                if crate::rng::fill(&mut self.buf).is_err() {
                    // The generator worked a moment ago (checked in `split`); if it fails now the
                    // process cannot make secrets safely. Stop rather than deal weak shares.
                    eprintln!("keyfort: fatal: the CSPRNG failed while splitting a secret");
                    std::process::abort();
                }
                self.pos = 0;
                self.filled = true;
            }
            *b = self.buf[self.pos];
            self.pos += 1;
        }
        out
    }
}

impl Drop for DealerRng {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl rand_core::TryRng for DealerRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> std::result::Result<u32, Infallible> {
        Ok(u32::from_le_bytes(self.next_bytes::<4>()))
    }

    fn try_next_u64(&mut self) -> std::result::Result<u64, Infallible> {
        Ok(u64::from_le_bytes(self.next_bytes::<8>()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Infallible> {
        for b in dst {
            *b = self.next_bytes::<1>()[0];
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for DealerRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_subset_recovers() {
        let secret: Vec<u8> = (0..32).collect();
        let shares = split(&secret, 3, 5).unwrap();
        assert_eq!(shares.len(), 5);
        for s in &shares {
            assert_eq!(s.len(), 33);
        }
        for a in 0..5 {
            for b in (a + 1)..5 {
                for c in (b + 1)..5 {
                    let subset = [
                        shares[a].as_slice(),
                        shares[b].as_slice(),
                        shares[c].as_slice(),
                    ];
                    assert_eq!(combine(&subset, 3).unwrap().as_slice(), secret.as_slice());
                }
            }
        }
    }

    #[test]
    fn fewer_than_threshold_fails_or_differs() {
        let secret = [0x42u8; 32];
        let shares = split(&secret, 3, 5).unwrap();
        assert!(combine(&[shares[0].as_slice(), shares[1].as_slice()], 3).is_err());
        // A duplicated share does not count twice.
        assert!(
            combine(
                &[
                    shares[0].as_slice(),
                    shares[0].as_slice(),
                    shares[1].as_slice()
                ],
                3
            )
            .is_err()
        );
        // Two shares with threshold 2 from a 3-threshold split give a wrong value.
        let wrong = combine(&[shares[0].as_slice(), shares[1].as_slice()], 2).unwrap();
        assert_ne!(wrong.as_slice(), secret.as_slice());
    }

    #[test]
    fn splits_are_random() {
        let secret = [7u8; 16];
        let a = split(&secret, 2, 3).unwrap();
        let b = split(&secret, 2, 3).unwrap();
        assert_ne!(a[0].as_slice(), b[0].as_slice());
        // No share equals the secret bytes.
        for s in &a {
            assert_ne!(&s[1..], &secret[..]);
        }
    }

    #[test]
    fn bad_parameters_and_shares() {
        assert!(split(&[], 2, 3).is_err());
        assert!(split(&[1], 0, 3).is_err());
        assert!(split(&[1], 4, 3).is_err());
        assert!(combine(&[&[1u8][..]], 1).is_err());
        assert!(combine(&[&[0u8, 1, 2][..]], 1).is_err());
        let shares = split(&[1, 2, 3], 1, 1).unwrap();
        assert_eq!(
            combine(&[shares[0].as_slice()], 1).unwrap().as_slice(),
            &[1, 2, 3]
        );
        let other = split(&[1, 2], 2, 2).unwrap();
        assert!(combine(&[shares[0].as_slice(), other[0].as_slice()], 2).is_err());
    }
}
