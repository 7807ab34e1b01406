//! Sealed blobs come back from storage (or, for GREP11, from clients): parsing them must never
//! panic, and nothing but a blob sealed under the key may open.
#![no_main]

use std::sync::OnceLock;

use keyfort_crypto::seal::{self, MasterKey, SealContext};
use libfuzzer_sys::fuzz_target;

fn master_key() -> &'static MasterKey {
    static MK: OnceLock<MasterKey> = OnceLock::new();
    MK.get_or_init(|| MasterKey::from_bytes(1, &[7u8; 32]).expect("valid length"))
}

fuzz_target!(|data: &[u8]| {
    let _ = seal::sealed_mk_version(data);
    let ctx = SealContext { instance_id: "i", object_id: "o", attributes: b"a" };
    assert!(seal::unseal(master_key(), &ctx, data).is_err());
});
