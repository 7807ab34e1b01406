//! GREP11 key blobs, state blobs and templates come from clients. Their decoders (blob layout,
//! canonical attributes, operation state, SubjectPublicKeyInfo) may never panic, and what the
//! attribute decoder accepts encodes back to the same bytes.
#![no_main]

use keyfort_grpc::attrs::Attrs;
use keyfort_grpc::blob::{self, Public};
use keyfort_grpc::state::{Op, State};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = blob::parse(data) {
        if let Some(attrs) = Attrs::decode(p.attrs) {
            assert_eq!(attrs.encode(), p.attrs);
        }
        let _ = Public::from_spki(p.spki);
    }
    if let Some(attrs) = Attrs::decode(data) {
        assert_eq!(attrs.encode(), data);
    }
    for op in [Op::Digest, Op::Encrypt, Op::Decrypt, Op::Sign, Op::Verify] {
        if let Ok(state) = State::decode(data, op) {
            let again = State::decode(&state.encode(), op).expect("round trip");
            assert_eq!(again.key, state.key);
            assert_eq!(*again.data, *state.data);
        }
    }
    let _ = Public::from_spki(data);
});
