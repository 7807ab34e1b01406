//! The Key Material of a Register request in a Transparent RSA/EC format comes from any
//! registered KMIP client: whatever TTLV item it holds, reading it must answer a key or a typed
//! error, never panic.
#![no_main]

use keyfort_kmip::ttlv::{self, Limits};
use keyfort_kmip::{KeyFormatType, ObjectType, transparent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let Ok(item) = ttlv::decode(bytes, &Limits::default()) else {
        return;
    };
    let (t, format) = match selector % 8 {
        0 => (ObjectType::PRIVATE_KEY, KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY),
        1 => (ObjectType::PUBLIC_KEY, KeyFormatType::TRANSPARENT_RSA_PUBLIC_KEY),
        2 => (ObjectType::PRIVATE_KEY, KeyFormatType::TRANSPARENT_EC_PRIVATE_KEY),
        3 => (ObjectType::PUBLIC_KEY, KeyFormatType::TRANSPARENT_EC_PUBLIC_KEY),
        4 => (ObjectType::PRIVATE_KEY, KeyFormatType::TRANSPARENT_ECDSA_PRIVATE_KEY),
        5 => (ObjectType::PUBLIC_KEY, KeyFormatType::TRANSPARENT_ECDH_PUBLIC_KEY),
        6 => (ObjectType::SYMMETRIC_KEY, KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY),
        _ => (ObjectType::PUBLIC_KEY, KeyFormatType(u32::from(selector))),
    };
    if let Ok(key) = transparent::read(t, format, &item) {
        assert!(!key.material.is_empty());
    }
});
