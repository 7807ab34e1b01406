//! Bearer tokens are the first untrusted bytes every door decodes.
#![no_main]

use std::sync::OnceLock;

use keyfort_core::TokenSigner;
use libfuzzer_sys::fuzz_target;

fn signer() -> &'static TokenSigner {
    static SIGNER: OnceLock<TokenSigner> = OnceLock::new();
    SIGNER.get_or_init(|| TokenSigner::generate().expect("CSPRNG available"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        // A forged token must never verify: the fuzzer cannot know the signing key.
        assert!(signer().check(token, 1_700_000_000).is_err());
    }
});
