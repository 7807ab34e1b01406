//! KMIP adapter client certificates arrive as PEM text in Key Protect request bodies. The
//! decoder may not panic, and what it accepts is one bounded DER SEQUENCE.
#![no_main]

use keyfort_core::kmip_adapters::certificate_der;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(der) = certificate_der(text) {
            assert_eq!(der.first(), Some(&0x30));
            assert!(der.len() <= keyfort_core::kmip_adapters::MAX_CERTIFICATE_LEN);
        }
    }
});
