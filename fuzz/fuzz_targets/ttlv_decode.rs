//! TTLV arrives from any TLS peer on the KMIP port: decoding must never panic, and whatever it
//! accepts must re-encode to exactly the bytes it was given (the codec is canonical). Whatever
//! decodes is also read as a Request Message, which must answer a typed error, never panic.
#![no_main]

use keyfort_kmip::message::RequestMessage;
use keyfort_kmip::ttlv::{self, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = ttlv::decode(data, &Limits::default()) {
        assert_eq!(ttlv::encode(&item), data);
        assert_eq!(ttlv::frame_len(data), Some(data.len()));
        let _ = RequestMessage::from_item(&item);
    }
});
