//! The few AWS-LC operations `aws-lc-rs` does not expose, called through `aws-lc-sys`.
//!
//! This is the crate's only module with `unsafe` code. Every `unsafe` block carries a
//! `// SAFETY:` comment. The rules followed throughout:
//!
//! * every object AWS-LC allocates is owned by a [`Guard`] that frees it exactly once;
//! * every pointer/length pair passed in comes from a live Rust slice;
//! * every output buffer is sized from AWS-LC's own size query before the call;
//! * nothing here decides policy: callers in the safe modules check lengths and algorithms.
#![allow(unsafe_code)]

use core::ffi::c_int;
use core::mem::MaybeUninit;
use core::ptr;

use aws_lc_sys as ffi;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Owns a pointer returned by AWS-LC and frees it with the matching `*_free` on drop.
struct Guard<T> {
    ptr: *mut T,
    free: unsafe extern "C" fn(*mut T),
}

impl<T> Guard<T> {
    /// Wraps `ptr`, which must be null or an owned object that `free` releases.
    fn new(ptr: *mut T, free: unsafe extern "C" fn(*mut T), what: &'static str) -> Result<Self> {
        if ptr.is_null() {
            return Err(Error::Internal { what });
        }
        Ok(Guard { ptr, free })
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` is non-null (checked in `new`), owned by this guard, and `free` is the
        // AWS-LC destructor for its type; the guard is dropped once, so it is freed once.
        unsafe { (self.free)(self.ptr) }
    }
}

/// Parses an unencrypted PKCS #8 `PrivateKeyInfo` and checks its key type.
fn parse_private_key(pkcs8: &[u8], key_type: c_int) -> Result<Guard<ffi::EVP_PKEY>> {
    let mut cbs = MaybeUninit::<ffi::CBS>::uninit();
    // SAFETY: `CBS_init` fully initialises the CBS from a pointer/length pair of a live slice;
    // the CBS borrows `pkcs8`, which outlives this function's use of it.
    let mut cbs = unsafe {
        ffi::CBS_init(cbs.as_mut_ptr(), pkcs8.as_ptr(), pkcs8.len());
        cbs.assume_init()
    };
    // SAFETY: `cbs` is initialised and points into `pkcs8`; the returned key is owned by us.
    let pkey = unsafe { ffi::EVP_parse_private_key(&mut cbs) };
    let pkey = Guard::new(pkey, ffi::EVP_PKEY_free, "parse private key").map_err(|_| {
        Error::InvalidKey {
            what: "malformed PKCS#8 private key",
        }
    })?;
    // SAFETY: `pkey.ptr` is a valid EVP_PKEY.
    if unsafe { ffi::EVP_PKEY_id(pkey.ptr) } != key_type {
        return Err(Error::InvalidKey {
            what: "PKCS#8 key of the wrong type",
        });
    }
    // A well-formed key must also be followed by nothing.
    if cbs.len != 0 {
        return Err(Error::InvalidKey {
            what: "trailing bytes after PKCS#8 private key",
        });
    }
    Ok(pkey)
}

/// The RSA key inside an RSA `EVP_PKEY` (borrowed; lives as long as `pkey`).
fn rsa_of(pkey: &Guard<ffi::EVP_PKEY>) -> Result<*mut ffi::RSA> {
    // SAFETY: `pkey.ptr` is a valid EVP_PKEY; get0 returns a borrowed pointer or null.
    let rsa = unsafe { ffi::EVP_PKEY_get0_RSA(pkey.ptr) };
    if rsa.is_null() {
        return Err(Error::InvalidKey {
            what: "not an RSA key",
        });
    }
    Ok(rsa)
}

/// The modulus length in bytes of `rsa`.
fn rsa_len(rsa: *const ffi::RSA) -> usize {
    // SAFETY: `rsa` is a valid RSA key (callers obtain it from `rsa_of` or a guard).
    unsafe { ffi::RSA_size(rsa) as usize }
}

/// RSASSA-PKCS1-v1_5 signature primitive over caller-supplied bytes (PKCS #11 `CKM_RSA_PKCS`):
/// EMSA-PKCS1-v1_5 type-1 padding of `input` (normally a DER DigestInfo), then RSASP1.
pub(crate) fn rsa_sign_pkcs1_raw(pkcs8: &[u8], input: &[u8]) -> Result<Vec<u8>> {
    let pkey = parse_private_key(pkcs8, ffi::EVP_PKEY_RSA)?;
    let rsa = rsa_of(&pkey)?;
    let k = rsa_len(rsa);
    if input.len() + 11 > k {
        return Err(Error::InvalidInput {
            what: "input too long for the RSA modulus (PKCS#1 v1.5 needs 11 bytes)",
        });
    }
    let mut out = vec![0u8; k];
    let mut out_len = 0usize;
    // SAFETY: `rsa` is valid while `pkey` lives; `out` has `k` = RSA_size bytes, the maximum
    // this call writes; `input` is a live slice.
    let ok = unsafe {
        ffi::RSA_sign_raw(
            rsa,
            &mut out_len,
            out.as_mut_ptr(),
            out.len(),
            input.as_ptr(),
            input.len(),
            ffi::RSA_PKCS1_PADDING,
        )
    };
    if ok != 1 {
        return Err(Error::Internal {
            what: "RSA PKCS#1 raw sign",
        });
    }
    out.truncate(out_len);
    Ok(out)
}

/// Parses an RSA public key in PKCS #1 `RSAPublicKey` DER form.
fn parse_rsa_public_pkcs1(der: &[u8]) -> Result<Guard<ffi::RSA>> {
    // SAFETY: pointer/length of a live slice; the returned key is owned by the guard.
    let rsa = unsafe { ffi::RSA_public_key_from_bytes(der.as_ptr(), der.len()) };
    Guard::new(rsa, ffi::RSA_free, "parse RSA public key").map_err(|_| Error::InvalidKey {
        what: "malformed PKCS#1 RSA public key",
    })
}

/// RSAVP1 and removal of EMSA-PKCS1-v1_5 type-1 padding: returns the signed bytes (a DigestInfo
/// for `CKM_RSA_PKCS`), or [`Error::VerifyFailed`] if the padding is wrong.
pub(crate) fn rsa_recover_pkcs1_raw(pkcs1_public: &[u8], signature: &[u8]) -> Result<Vec<u8>> {
    let rsa = parse_rsa_public_pkcs1(pkcs1_public)?;
    let k = rsa_len(rsa.ptr);
    if signature.len() != k {
        return Err(Error::VerifyFailed);
    }
    let mut out = vec![0u8; k];
    let mut out_len = 0usize;
    // SAFETY: `rsa.ptr` is a valid key; `out` holds RSA_size bytes, the most this writes;
    // `signature` is a live slice.
    let ok = unsafe {
        ffi::RSA_verify_raw(
            rsa.ptr,
            &mut out_len,
            out.as_mut_ptr(),
            out.len(),
            signature.as_ptr(),
            signature.len(),
            ffi::RSA_PKCS1_PADDING,
        )
    };
    // SAFETY: clears the thread's AWS-LC error queue; no pointers involved.
    unsafe { ffi::ERR_clear_error() };
    if ok != 1 {
        return Err(Error::VerifyFailed);
    }
    out.truncate(out_len);
    Ok(out)
}

/// The output of the raw RSA decryption primitive, and the private exponent for implicit
/// rejection; both zeroized on drop.
pub(crate) struct RawRsaDecryption {
    /// RSADP(c) as a k-byte big-endian octet string (the encoded message EM).
    pub(crate) em: Zeroizing<Vec<u8>>,
    /// The private exponent d as a k-byte big-endian octet string.
    pub(crate) d: Zeroizing<Vec<u8>>,
}

/// RSADP (RFC 8017 §5.1.2) without any padding check: `c` must be exactly k bytes and < n.
pub(crate) fn rsa_decrypt_no_padding(pkcs8: &[u8], ciphertext: &[u8]) -> Result<RawRsaDecryption> {
    let pkey = parse_private_key(pkcs8, ffi::EVP_PKEY_RSA)?;
    let rsa = rsa_of(&pkey)?;
    let k = rsa_len(rsa);
    if ciphertext.len() != k {
        return Err(Error::InvalidInput {
            what: "RSA ciphertext length differs from the modulus length",
        });
    }
    let mut em = Zeroizing::new(vec![0u8; k]);
    let mut out_len = 0usize;
    // SAFETY: `rsa` is valid while `pkey` lives; `em` has k bytes, the most RSA_NO_PADDING
    // writes; `ciphertext` is a live slice of k bytes.
    let ok = unsafe {
        ffi::RSA_decrypt(
            rsa,
            &mut out_len,
            em.as_mut_ptr(),
            em.len(),
            ciphertext.as_ptr(),
            ciphertext.len(),
            ffi::RSA_NO_PADDING,
        )
    };
    // SAFETY: clears the thread's AWS-LC error queue; no pointers involved.
    unsafe { ffi::ERR_clear_error() };
    if ok != 1 || out_len != k {
        // With no padding the only failure is a ciphertext >= n: public information.
        return Err(Error::InvalidInput {
            what: "RSA ciphertext out of range",
        });
    }
    let mut d = Zeroizing::new(vec![0u8; k]);
    // SAFETY: `rsa` is valid; `RSA_get0_d` returns a borrowed BIGNUM (or null for a public key).
    let d_bn = unsafe { ffi::RSA_get0_d(rsa) };
    if d_bn.is_null() {
        return Err(Error::InvalidKey {
            what: "RSA key without a private exponent",
        });
    }
    // SAFETY: `d_bn` is a valid BIGNUM owned by `rsa`; `d` has k bytes and d < n fits in k.
    if unsafe { ffi::BN_bn2bin_padded(d.as_mut_ptr(), d.len(), d_bn) } != 1 {
        return Err(Error::Internal {
            what: "RSA private exponent encoding",
        });
    }
    Ok(RawRsaDecryption { em, d })
}

/// ECDSA signature encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EcdsaEncoding {
    /// `ECDSA-Sig-Value` DER SEQUENCE of two INTEGERs (RFC 3279 §2.2.3).
    Der,
    /// r ‖ s, each left-padded to the group order's byte length (PKCS #11, JOSE).
    Fixed,
}

/// The EC key inside an EC `EVP_PKEY` (borrowed).
fn ec_key_of(pkey: &Guard<ffi::EVP_PKEY>) -> Result<*mut ffi::EC_KEY> {
    // SAFETY: `pkey.ptr` is a valid EVP_PKEY; get0 returns a borrowed pointer or null.
    let key = unsafe { ffi::EVP_PKEY_get0_EC_KEY(pkey.ptr) };
    if key.is_null() {
        return Err(Error::InvalidKey {
            what: "not an EC key",
        });
    }
    Ok(key)
}

/// Byte length of the order of `key`'s group.
fn ec_order_len(key: *const ffi::EC_KEY) -> Result<usize> {
    // SAFETY: `key` is a valid EC_KEY; the group and order are borrowed from it.
    let order_len = unsafe {
        let group = ffi::EC_KEY_get0_group(key);
        if group.is_null() {
            return Err(Error::InvalidKey {
                what: "EC key without group",
            });
        }
        ffi::BN_num_bytes(ffi::EC_GROUP_get0_order(group)) as usize
    };
    Ok(order_len)
}

/// ECDSA signature generation (FIPS 186-5 §6.4.1) over a caller-supplied digest of any length
/// (PKCS #11 `CKM_ECDSA`); the digest is truncated to the order's bit length as the standard
/// says.
pub(crate) fn ecdsa_sign_digest(
    pkcs8: &[u8],
    digest: &[u8],
    encoding: EcdsaEncoding,
) -> Result<Vec<u8>> {
    let pkey = parse_private_key(pkcs8, ffi::EVP_PKEY_EC)?;
    let key = ec_key_of(&pkey)?;
    let order_len = ec_order_len(key)?;
    // SAFETY: `digest` is a live slice; `key` is valid while `pkey` lives; the result is owned.
    let sig = unsafe { ffi::ECDSA_do_sign(digest.as_ptr(), digest.len(), key) };
    let sig = Guard::new(sig, ffi::ECDSA_SIG_free, "ECDSA sign")?;
    match encoding {
        EcdsaEncoding::Fixed => {
            let mut out = vec![0u8; 2 * order_len];
            let (r_out, s_out) = out.split_at_mut(order_len);
            let mut r: *const ffi::BIGNUM = ptr::null();
            let mut s: *const ffi::BIGNUM = ptr::null();
            // SAFETY: `sig.ptr` is valid; r and s are borrowed from it and are < order, so they
            // fit in `order_len` bytes each; the output halves are live, exactly that long.
            let ok = unsafe {
                ffi::ECDSA_SIG_get0(sig.ptr, &mut r, &mut s);
                !r.is_null()
                    && !s.is_null()
                    && ffi::BN_bn2bin_padded(r_out.as_mut_ptr(), r_out.len(), r) == 1
                    && ffi::BN_bn2bin_padded(s_out.as_mut_ptr(), s_out.len(), s) == 1
            };
            if !ok {
                return Err(Error::Internal {
                    what: "ECDSA signature encoding",
                });
            }
            Ok(out)
        }
        EcdsaEncoding::Der => {
            let mut der: *mut u8 = ptr::null_mut();
            let mut der_len = 0usize;
            // SAFETY: `sig.ptr` is valid; on success AWS-LC allocates `der` (freed below).
            if unsafe { ffi::ECDSA_SIG_to_bytes(&mut der, &mut der_len, sig.ptr) } != 1
                || der.is_null()
            {
                return Err(Error::Internal {
                    what: "ECDSA signature encoding",
                });
            }
            // SAFETY: on success `der` points to `der_len` initialised bytes owned by us.
            let out = unsafe { core::slice::from_raw_parts(der, der_len) }.to_vec();
            // SAFETY: `der` was allocated by AWS-LC and is not used after this.
            unsafe { ffi::OPENSSL_free(der.cast()) };
            Ok(out)
        }
    }
}

/// ECDSA signature verification (FIPS 186-5 §6.4.2) over a caller-supplied digest.
///
/// `public_point` is an uncompressed or compressed SEC 1 point on the curve `nid`.
pub(crate) fn ecdsa_verify_digest(
    nid: c_int,
    public_point: &[u8],
    digest: &[u8],
    signature: &[u8],
    encoding: EcdsaEncoding,
) -> Result<()> {
    // SAFETY: creates a new owned EC_KEY for a built-in curve (null for an unknown nid).
    let key = unsafe { ffi::EC_KEY_new_by_curve_name(nid) };
    let key = Guard::new(key, ffi::EC_KEY_free, "EC key")?;
    // SAFETY: `key.ptr` is valid; the group is borrowed from it; the point is owned by a guard.
    let group = unsafe { ffi::EC_KEY_get0_group(key.ptr) };
    // SAFETY: `group` is the (non-null, static) group of a curve-name key.
    let point = unsafe { ffi::EC_POINT_new(group) };
    let point = Guard::new(point, ffi::EC_POINT_free, "EC point")?;
    // SAFETY: `group` and `point.ptr` are valid; `public_point` is a live slice; a null BN_CTX
    // is allowed. `EC_KEY_set_public_key` copies the point.
    let ok = unsafe {
        ffi::EC_POINT_oct2point(
            group,
            point.ptr,
            public_point.as_ptr(),
            public_point.len(),
            ptr::null_mut(),
        ) == 1
            && ffi::EC_KEY_set_public_key(key.ptr, point.ptr) == 1
    };
    if !ok {
        // SAFETY: clears the thread's AWS-LC error queue; no pointers involved.
        unsafe { ffi::ERR_clear_error() };
        return Err(Error::InvalidKey {
            what: "EC public key is not a point on the curve",
        });
    }
    let order_len = ec_order_len(key.ptr)?;
    let sig = match encoding {
        EcdsaEncoding::Der => {
            // SAFETY: live slice; the parsed signature (or null) is owned by the guard.
            let sig = unsafe { ffi::ECDSA_SIG_from_bytes(signature.as_ptr(), signature.len()) };
            Guard::new(sig, ffi::ECDSA_SIG_free, "ECDSA signature")
                .map_err(|_| Error::VerifyFailed)?
        }
        EcdsaEncoding::Fixed => {
            if signature.len() != 2 * order_len {
                return Err(Error::VerifyFailed);
            }
            let (r, s) = signature.split_at(order_len);
            // SAFETY: creates an empty owned signature.
            let sig = unsafe { ffi::ECDSA_SIG_new() };
            let sig = Guard::new(sig, ffi::ECDSA_SIG_free, "ECDSA signature")?;
            // SAFETY: `BN_bin2bn` with a null `ret` allocates new BIGNUMs from live slices.
            // `ECDSA_SIG_set0` takes ownership of both on success; on failure we free them.
            let ok = unsafe {
                let r_bn = ffi::BN_bin2bn(r.as_ptr(), r.len(), ptr::null_mut());
                let s_bn = ffi::BN_bin2bn(s.as_ptr(), s.len(), ptr::null_mut());
                if r_bn.is_null() || s_bn.is_null() || ffi::ECDSA_SIG_set0(sig.ptr, r_bn, s_bn) != 1
                {
                    ffi::BN_free(r_bn);
                    ffi::BN_free(s_bn);
                    false
                } else {
                    true
                }
            };
            if !ok {
                return Err(Error::Internal {
                    what: "ECDSA signature decoding",
                });
            }
            sig
        }
    };
    // SAFETY: all pointers are valid and owned by live guards; `digest` is a live slice.
    let ok = unsafe { ffi::ECDSA_do_verify(digest.as_ptr(), digest.len(), sig.ptr, key.ptr) };
    // SAFETY: clears the thread's AWS-LC error queue; no pointers involved.
    unsafe { ffi::ERR_clear_error() };
    if ok == 1 {
        Ok(())
    } else {
        Err(Error::VerifyFailed)
    }
}

/// An incremental SHA3-224 (FIPS 202), which `aws-lc-rs` does not expose.
pub(crate) struct Sha3_224 {
    ctx: Guard<ffi::EVP_MD_CTX>,
}

// SAFETY: the EVP_MD_CTX is exclusively owned by this value and AWS-LC keeps no thread-local
// state in it, so moving it to another thread is sound. It is not shared (no `Sync`).
unsafe impl Send for Sha3_224 {}

/// SHA3-224 output length.
pub(crate) const SHA3_224_LEN: usize = 28;

impl Sha3_224 {
    /// Starts a SHA3-224 computation.
    ///
    /// AWS-LC can only fail here on allocation failure, which is treated like Rust's own: abort.
    pub(crate) fn new() -> Self {
        // SAFETY: allocates a new owned context (null on allocation failure).
        let ctx = unsafe { ffi::EVP_MD_CTX_new() };
        let Ok(ctx) = Guard::new(ctx, ffi::EVP_MD_CTX_free, "SHA3-224") else {
            std::process::abort();
        };
        // SAFETY: `ctx.ptr` is a valid context; `EVP_sha3_224` returns a static EVP_MD.
        if unsafe { ffi::EVP_DigestInit_ex(ctx.ptr, ffi::EVP_sha3_224(), ptr::null_mut()) } != 1 {
            std::process::abort();
        }
        Sha3_224 { ctx }
    }

    /// Absorbs `data`.
    pub(crate) fn update(&mut self, data: &[u8]) {
        // SAFETY: `ctx` is an initialised digest context; `data` is a live slice. SHA-3 update
        // cannot fail for an initialised context.
        unsafe { ffi::EVP_DigestUpdate(self.ctx.ptr, data.as_ptr().cast(), data.len()) };
    }

    /// Finishes and returns the digest.
    pub(crate) fn finish(self) -> [u8; SHA3_224_LEN] {
        let mut out = [0u8; SHA3_224_LEN];
        let mut len: core::ffi::c_uint = 0;
        // SAFETY: `ctx` is initialised; `out` has room for the 28-byte SHA3-224 output.
        let ok = unsafe { ffi::EVP_DigestFinal_ex(self.ctx.ptr, out.as_mut_ptr(), &mut len) };
        if ok != 1 || len as usize != SHA3_224_LEN {
            std::process::abort();
        }
        out
    }
}

/// Curve identifiers for [`ecdsa_verify_digest`].
pub(crate) mod nid {
    pub(crate) const P256: core::ffi::c_int = aws_lc_sys::NID_X9_62_prime256v1;
    pub(crate) const P384: core::ffi::c_int = aws_lc_sys::NID_secp384r1;
    pub(crate) const P521: core::ffi::c_int = aws_lc_sys::NID_secp521r1;
    pub(crate) const SECP256K1: core::ffi::c_int = aws_lc_sys::NID_secp256k1;
}

/// An expanded AES key schedule (`AES_KEY`), wiped when dropped.
struct AesKeySchedule(ffi::AES_KEY);

impl AesKeySchedule {
    /// Expands `key` (16, 24 or 32 bytes) for encryption or, if `decrypt`, for decryption.
    fn new(key: &[u8], decrypt: bool) -> Result<Self> {
        let bits: core::ffi::c_uint = match key.len() {
            16 => 128,
            24 => 192,
            32 => 256,
            _ => {
                return Err(Error::InvalidKey {
                    what: "AES key must be 16, 24 or 32 bytes",
                });
            }
        };
        let mut schedule = AesKeySchedule(ffi::AES_KEY {
            rd_key: [0; 60],
            rounds: 0,
        });
        // SAFETY: `key` is a live slice of exactly `bits / 8` bytes; `schedule.0` is a writable
        // AES_KEY owned by us. Both functions return zero on success (unlike most of AWS-LC).
        let rc = unsafe {
            if decrypt {
                ffi::AES_set_decrypt_key(key.as_ptr(), bits, &mut schedule.0)
            } else {
                ffi::AES_set_encrypt_key(key.as_ptr(), bits, &mut schedule.0)
            }
        };
        if rc != 0 {
            return Err(Error::Internal {
                what: "AES key schedule",
            });
        }
        Ok(schedule)
    }
}

impl Drop for AesKeySchedule {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.0.rd_key.zeroize();
        self.0.rounds.zeroize();
    }
}

/// AES Key Wrap (RFC 3394 §2.2.1) with the default IV. `input` must be a multiple of 8 bytes
/// and at least 16 bytes (checked by the caller and again by AWS-LC).
pub(crate) fn aes_key_wrap(kek: &[u8], input: &[u8]) -> Result<Vec<u8>> {
    let schedule = AesKeySchedule::new(kek, false)?;
    let mut out = vec![0u8; input.len() + 8];
    // SAFETY: `schedule.0` is an encryption schedule; a null IV selects the RFC 3394 default;
    // `out` has room for the `input.len() + 8` bytes written; `input` is a live slice that does
    // not overlap `out`.
    let n = unsafe {
        ffi::AES_wrap_key(
            &schedule.0,
            ptr::null(),
            out.as_mut_ptr(),
            input.as_ptr(),
            input.len(),
        )
    };
    if usize::try_from(n).ok() != Some(out.len()) {
        return Err(Error::InvalidInput {
            what: "AES-KW input must be a multiple of 8 bytes, at least 16",
        });
    }
    Ok(out)
}

/// AES Key Unwrap (RFC 3394 §2.2.2) with the default IV; an integrity-check failure (or a
/// malformed length) is [`Error::DecryptFailed`].
pub(crate) fn aes_key_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let schedule = AesKeySchedule::new(kek, true)?;
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(Error::DecryptFailed);
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    // SAFETY: `schedule.0` is a decryption schedule; a null IV selects the RFC 3394 default;
    // `out` has room for the `wrapped.len() - 8` bytes written; `wrapped` is a live slice that
    // does not overlap `out`.
    let n = unsafe {
        ffi::AES_unwrap_key(
            &schedule.0,
            ptr::null(),
            out.as_mut_ptr(),
            wrapped.as_ptr(),
            wrapped.len(),
        )
    };
    // SAFETY: clears the thread's AWS-LC error queue; no pointers involved.
    unsafe { ffi::ERR_clear_error() };
    if usize::try_from(n).ok() != Some(out.len()) {
        // `out` may hold unverified partial plaintext; `Zeroizing` wipes it on drop.
        return Err(Error::DecryptFailed);
    }
    Ok(out)
}

/// AES Key Wrap with Padding (RFC 5649 §4.1) of 1 to 2³² − 1 bytes.
pub(crate) fn aes_key_wrap_pad(kek: &[u8], input: &[u8]) -> Result<Vec<u8>> {
    let schedule = AesKeySchedule::new(kek, false)?;
    // The output is the input rounded up to 8 bytes, plus the 8-byte AIV.
    let mut out = vec![0u8; input.len().div_ceil(8) * 8 + 8];
    let mut out_len = 0usize;
    // SAFETY: `schedule.0` is an encryption schedule; `out` is writable for `out.len()` bytes
    // (≥ `input.len()` + 15 rounded down to a multiple of 8, all AWS-LC writes) and does not
    // overlap the live slice `input`.
    let ok = unsafe {
        ffi::AES_wrap_key_padded(
            &schedule.0,
            out.as_mut_ptr(),
            &mut out_len,
            out.len(),
            input.as_ptr(),
            input.len(),
        )
    };
    if ok != 1 || out_len != out.len() {
        return Err(Error::InvalidInput {
            what: "AES-KWP input must be 1 to 2^32 - 1 bytes",
        });
    }
    Ok(out)
}

/// AES Key Unwrap with Padding (RFC 5649 §4.2); any failure is [`Error::DecryptFailed`].
pub(crate) fn aes_key_unwrap_pad(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let schedule = AesKeySchedule::new(kek, true)?;
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(Error::DecryptFailed);
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    let mut out_len = 0usize;
    // SAFETY: `schedule.0` is a decryption schedule; `out` is writable for `out.len()` =
    // `wrapped.len() - 8` bytes, the most AWS-LC writes, and does not overlap `wrapped`.
    let ok = unsafe {
        ffi::AES_unwrap_key_padded(
            &schedule.0,
            out.as_mut_ptr(),
            &mut out_len,
            out.len(),
            wrapped.as_ptr(),
            wrapped.len(),
        )
    };
    // SAFETY: clears the thread's AWS-LC error queue; no pointers involved.
    unsafe { ffi::ERR_clear_error() };
    if ok != 1 || out_len == 0 || out_len > out.len() {
        // `out` may hold unverified plaintext; `Zeroizing` wipes it on drop.
        return Err(Error::DecryptFailed);
    }
    out.truncate(out_len);
    Ok(out)
}

/// scrypt (RFC 7914 §6) of `password` and `salt` with cost `n` = N (a power of two), block
/// size `r` and parallelism `p`, filling `out`. AWS-LC refuses to use more than `max_mem` bytes.
///
/// Policy (which parameters are acceptable) is the caller's; AWS-LC rejects only parameters the
/// RFC forbids or whose memory exceeds `max_mem`, both reported as [`Error::InvalidInput`].
pub(crate) fn scrypt(
    password: &[u8],
    salt: &[u8],
    n: u64,
    r: u64,
    p: u64,
    max_mem: usize,
    out: &mut [u8],
) -> Result<()> {
    // SAFETY: `password`, `salt` and `out` are live slices passed with their own lengths (an
    // empty slice's dangling pointer is never read); `out` is exclusively borrowed.
    let ok = unsafe {
        ffi::EVP_PBE_scrypt(
            password.as_ptr().cast(),
            password.len(),
            salt.as_ptr(),
            salt.len(),
            n,
            r,
            p,
            max_mem,
            out.as_mut_ptr(),
            out.len(),
        )
    };
    // SAFETY: clears the thread's AWS-LC error queue; no pointers involved.
    unsafe { ffi::ERR_clear_error() };
    if ok != 1 {
        use zeroize::Zeroize as _;
        out.zeroize();
        return Err(Error::InvalidInput {
            what: "scrypt parameters rejected or memory limit exceeded",
        });
    }
    Ok(())
}

/// An AWS-LC `BIGNUM`, cleared when dropped (it may hold private key material).
pub(crate) struct Bn(Guard<ffi::BIGNUM>);

impl Bn {
    fn new() -> Result<Bn> {
        // SAFETY: allocates a fresh BIGNUM owned by the guard.
        Ok(Bn(Guard::new(
            unsafe { ffi::BN_new() },
            ffi::BN_clear_free,
            "BN_new",
        )?))
    }

    /// The unsigned big-endian number `bytes`.
    pub(crate) fn from_be(bytes: &[u8]) -> Result<Bn> {
        // SAFETY: `bytes` is a live slice passed with its length; the result is owned.
        let bn = unsafe { ffi::BN_bin2bn(bytes.as_ptr(), bytes.len(), ptr::null_mut()) };
        Ok(Bn(Guard::new(bn, ffi::BN_clear_free, "BN_bin2bn")?))
    }

    /// The number `w`.
    pub(crate) fn word(w: u64) -> Result<Bn> {
        let bn = Bn::new()?;
        // SAFETY: `bn` is a valid BIGNUM owned by us.
        if unsafe { ffi::BN_set_word(bn.0.ptr, w) } != 1 {
            return Err(Error::Internal {
                what: "BN_set_word",
            });
        }
        Ok(bn)
    }

    /// The number as unsigned big-endian bytes without leading zeros (empty for zero).
    pub(crate) fn to_be(&self) -> Zeroizing<Vec<u8>> {
        // SAFETY: `self.0.ptr` is a valid BIGNUM.
        let len = unsafe { ffi::BN_num_bytes(self.0.ptr) } as usize;
        let mut out = Zeroizing::new(vec![0u8; len]);
        // SAFETY: `out` has exactly BN_num_bytes bytes, the most BN_bn2bin writes.
        unsafe { ffi::BN_bn2bin(self.0.ptr, out.as_mut_ptr()) };
        out
    }

    /// Whether the number is zero.
    pub(crate) fn is_zero(&self) -> bool {
        // SAFETY: `self.0.ptr` is a valid BIGNUM.
        unsafe { ffi::BN_is_zero(self.0.ptr) == 1 }
    }

    /// Whether the number is one.
    pub(crate) fn is_one(&self) -> bool {
        // SAFETY: `self.0.ptr` is a valid BIGNUM.
        unsafe { ffi::BN_is_one(self.0.ptr) == 1 }
    }

    /// Whether the number is odd.
    pub(crate) fn is_odd(&self) -> bool {
        // SAFETY: `self.0.ptr` is a valid BIGNUM.
        unsafe { ffi::BN_is_odd(self.0.ptr) == 1 }
    }

    /// The number's length in bits.
    pub(crate) fn bits(&self) -> usize {
        // SAFETY: `self.0.ptr` is a valid BIGNUM.
        unsafe { ffi::BN_num_bits(self.0.ptr) as usize }
    }

    /// How many trailing zero bits the number has (0 for zero).
    pub(crate) fn low_zero_bits(&self) -> usize {
        // SAFETY: `self.0.ptr` is a valid BIGNUM.
        unsafe { ffi::BN_count_low_zero_bits(self.0.ptr) as usize }
    }

    /// Compares two numbers.
    pub(crate) fn cmp(&self, other: &Bn) -> core::cmp::Ordering {
        // SAFETY: both are valid BIGNUMs.
        unsafe { ffi::BN_cmp(self.0.ptr, other.0.ptr) }.cmp(&0)
    }
}

/// Arithmetic on [`Bn`]s with an AWS-LC `BN_CTX`. Every result is a fresh, non-negative number
/// (a subtraction that would go below zero is an error).
pub(crate) struct BnCtx(Guard<ffi::BN_CTX>);

impl BnCtx {
    pub(crate) fn new() -> Result<BnCtx> {
        // SAFETY: allocates a fresh BN_CTX owned by the guard.
        Ok(BnCtx(Guard::new(
            unsafe { ffi::BN_CTX_new() },
            ffi::BN_CTX_free,
            "BN_CTX_new",
        )?))
    }

    /// Runs one AWS-LC operation writing into a fresh result.
    fn op(&self, what: &'static str, f: impl FnOnce(*mut ffi::BIGNUM) -> c_int) -> Result<Bn> {
        let r = Bn::new()?;
        if f(r.0.ptr) != 1 {
            // SAFETY: clears the thread's AWS-LC error queue; no pointers involved.
            unsafe { ffi::ERR_clear_error() };
            return Err(Error::InvalidKey { what });
        }
        Ok(r)
    }

    /// a − b, refused below zero.
    pub(crate) fn sub(&self, a: &Bn, b: &Bn) -> Result<Bn> {
        if a.cmp(b) == core::cmp::Ordering::Less {
            return Err(Error::InvalidKey {
                what: "RSA component out of range",
            });
        }
        // SAFETY: `r`, `a` and `b` are valid BIGNUMs; `r` is distinct from both.
        self.op("BN_sub", |r| unsafe { ffi::BN_sub(r, a.0.ptr, b.0.ptr) })
    }

    /// a · b.
    pub(crate) fn mul(&self, a: &Bn, b: &Bn) -> Result<Bn> {
        // SAFETY: valid BIGNUMs and context; `r` is distinct from the inputs.
        self.op("BN_mul", |r| unsafe {
            ffi::BN_mul(r, a.0.ptr, b.0.ptr, self.0.ptr)
        })
    }

    /// (⌊a / b⌋, a mod b); b must not be zero.
    pub(crate) fn div_rem(&self, a: &Bn, b: &Bn) -> Result<(Bn, Bn)> {
        if b.is_zero() {
            return Err(Error::InvalidKey {
                what: "RSA component is zero",
            });
        }
        let rem = Bn::new()?;
        // SAFETY: valid BIGNUMs and context; quotient and remainder are distinct fresh numbers.
        let q = self.op("BN_div", |q| unsafe {
            ffi::BN_div(q, rem.0.ptr, a.0.ptr, b.0.ptr, self.0.ptr)
        })?;
        Ok((q, rem))
    }

    /// a mod m (non-negative); m must not be zero.
    pub(crate) fn modulo(&self, a: &Bn, m: &Bn) -> Result<Bn> {
        Ok(self.div_rem(a, m)?.1)
    }

    /// a^p mod m in constant time; m must be odd and a < m.
    pub(crate) fn mod_exp(&self, a: &Bn, p: &Bn, m: &Bn) -> Result<Bn> {
        if !m.is_odd() || a.cmp(m) != core::cmp::Ordering::Less {
            return Err(Error::InvalidKey {
                what: "RSA modulus is even",
            });
        }
        // SAFETY: valid BIGNUMs and context; `r` is distinct; a null Montgomery context makes
        // AWS-LC compute its own.
        self.op("BN_mod_exp_mont_consttime", |r| unsafe {
            ffi::BN_mod_exp_mont_consttime(r, a.0.ptr, p.0.ptr, m.0.ptr, self.0.ptr, ptr::null())
        })
    }

    /// gcd(a, b).
    pub(crate) fn gcd(&self, a: &Bn, b: &Bn) -> Result<Bn> {
        // SAFETY: valid BIGNUMs and context; `r` is distinct.
        self.op("BN_gcd", |r| unsafe {
            ffi::BN_gcd(r, a.0.ptr, b.0.ptr, self.0.ptr)
        })
    }

    /// a⁻¹ mod m, if it exists.
    pub(crate) fn mod_inverse(&self, a: &Bn, m: &Bn) -> Result<Bn> {
        let a = self.modulo(a, m)?;
        // SAFETY: valid BIGNUMs and context; `r` is distinct; BN_mod_inverse writes into `r`
        // and returns it, or null when there is no inverse.
        self.op("no modular inverse", |r| unsafe {
            c_int::from(!ffi::BN_mod_inverse(r, a.0.ptr, m.0.ptr, self.0.ptr).is_null())
        })
    }

    /// a >> n.
    pub(crate) fn rshift(&self, a: &Bn, n: usize) -> Result<Bn> {
        let n = c_int::try_from(n).map_err(|_| Error::InvalidKey {
            what: "RSA component too long",
        })?;
        // SAFETY: `r` and `a` are valid, distinct BIGNUMs.
        self.op("BN_rshift", |r| unsafe { ffi::BN_rshift(r, a.0.ptr, n) })
    }
}

/// A SEC 1 point (uncompressed or compressed) on the curve `nid`, checked to lie on the curve
/// and not be the point at infinity, in uncompressed form (`04 ‖ X ‖ Y`).
pub(crate) fn ec_point_uncompressed(nid: c_int, point: &[u8]) -> Result<Vec<u8>> {
    let invalid = || {
        // SAFETY: clears the thread's AWS-LC error queue; no pointers involved.
        unsafe { ffi::ERR_clear_error() };
        Error::InvalidKey {
            what: "EC point is not on the curve",
        }
    };
    // SAFETY: creates a new owned EC_KEY for a built-in curve (null for an unknown nid).
    let key = unsafe { ffi::EC_KEY_new_by_curve_name(nid) };
    let key = Guard::new(key, ffi::EC_KEY_free, "EC key")?;
    // SAFETY: `key.ptr` is valid; the (static) group is borrowed from it.
    let group = unsafe { ffi::EC_KEY_get0_group(key.ptr) };
    // SAFETY: `group` is the non-null group of a curve-name key.
    let p = unsafe { ffi::EC_POINT_new(group) };
    let p = Guard::new(p, ffi::EC_POINT_free, "EC point")?;
    // SAFETY: `group` and `p.ptr` are valid; `point` is a live slice; a null BN_CTX is allowed.
    // oct2point refuses encodings of points that are not on the curve.
    let parsed = unsafe {
        ffi::EC_POINT_oct2point(group, p.ptr, point.as_ptr(), point.len(), ptr::null_mut()) == 1
            && ffi::EC_POINT_is_at_infinity(group, p.ptr) == 0
            && ffi::EC_POINT_is_on_curve(group, p.ptr, ptr::null_mut()) == 1
    };
    if !parsed {
        return Err(invalid());
    }
    let form = ffi::point_conversion_form_t::POINT_CONVERSION_UNCOMPRESSED;
    // SAFETY: a size query (null buffer) on a valid group and point.
    let len =
        unsafe { ffi::EC_POINT_point2oct(group, p.ptr, form, ptr::null_mut(), 0, ptr::null_mut()) };
    if len == 0 {
        return Err(invalid());
    }
    let mut out = vec![0u8; len];
    // SAFETY: `out` has exactly the size AWS-LC asked for.
    let written = unsafe {
        ffi::EC_POINT_point2oct(
            group,
            p.ptr,
            form,
            out.as_mut_ptr(),
            out.len(),
            ptr::null_mut(),
        )
    };
    if written != len {
        return Err(invalid());
    }
    Ok(out)
}
