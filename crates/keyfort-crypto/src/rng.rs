//! Random bytes from AWS-LC's DRBG (NIST SP 800-90A CTR-DRBG, seeded from the OS).

use std::cell::RefCell;

use zeroize::Zeroizing;

use crate::{Error, Result};

/// Fills `buf` with cryptographically secure random bytes.
pub fn fill(buf: &mut [u8]) -> Result<()> {
    aws_lc_rs::rand::fill(buf).map_err(|_| Error::Rng)
}

/// Returns `len` fresh random bytes in a zeroizing buffer.
pub fn random_bytes(len: usize) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    fill(&mut out)?;
    Ok(out)
}

/// The bytes each thread draws from the DRBG at a time for [`fill_identifier`].
const IDENTIFIER_POOL: usize = 4096;

thread_local! {
    /// Random bytes drawn for identifiers, and how many of them were handed out.
    static IDENTIFIERS: RefCell<(Box<[u8; IDENTIFIER_POOL]>, usize)> =
        RefCell::new((Box::new([0; IDENTIFIER_POOL]), IDENTIFIER_POOL));
}

/// Fills `buf` with random bytes for a public identifier (a request's correlation id, an
/// object's id): the same DRBG's output, drawn [`IDENTIFIER_POOL`] bytes at a time per thread
/// and handed out once each, so that an id costs a copy rather than a DRBG call. Never for
/// anything secret (keys, nonces, salts, tokens' secrets): those use [`fill`].
pub fn fill_identifier(buf: &mut [u8]) -> Result<()> {
    if buf.len() > IDENTIFIER_POOL / 16 {
        return fill(buf);
    }
    IDENTIFIERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (bytes, used) = &mut *pool;
        if IDENTIFIER_POOL - *used < buf.len() {
            fill(&mut bytes[..])?;
            *used = 0;
        }
        let end = *used + buf.len();
        buf.copy_from_slice(&bytes[*used..end]);
        *used = end;
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_never_handed_out_twice() {
        let mut seen = std::collections::HashSet::new();
        // Several pools' worth, in sizes that do not divide the pool.
        for _ in 0..3 * IDENTIFIER_POOL / 10 {
            let mut id = [0u8; 10];
            fill_identifier(&mut id).unwrap();
            assert!(seen.insert(id), "an identifier came twice");
        }
        let mut large = vec![0u8; IDENTIFIER_POOL];
        fill_identifier(&mut large).unwrap();
        assert!(large.iter().any(|&b| b != 0));
    }

    #[test]
    fn random_bytes_differ() {
        let a = random_bytes(32).unwrap();
        let b = random_bytes(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(*a, *b);
        assert!(random_bytes(0).unwrap().is_empty());
    }
}
