//! Unseal submissions and signed commands arrive over the network; part and public-key files come
//! from custodians. None of their decoders may panic, whatever the bytes.
#![no_main]

use keyfort_core::{CustodianPublic, KeyPart, SignedCommand, UnsealSubmission};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = CustodianPublic::from_json(text);
        let _ = KeyPart::from_json(text);
        if let Ok(command) = SignedCommand::from_json(text) {
            // Whatever was decoded encodes and decodes to itself.
            let again = SignedCommand::from_json(&command.to_json()).expect("round trip");
            assert_eq!(again, command);
        }
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = UnsealSubmission::from_value(&value);
        }
    }
});
