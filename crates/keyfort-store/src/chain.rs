//! The audit hash chain's arithmetic, shared by every backend.

use keyfort_crypto::digest::sha256;

/// The length of an audit event's `hash` and `prev_hash` (SHA-256).
pub(crate) const HASH_LEN: usize = 32;

/// The body's `target`, `action` and `outcome` string fields; `""` for each one that is absent
/// or not a string, and for all three when the body is not a JSON object.
pub(crate) fn body_fields(body: &str) -> [String; 3] {
    let parsed = serde_json::from_str::<serde_json::Value>(body).ok();
    ["target", "action", "outcome"].map(|name| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    })
}

/// `SHA-256(prev_hash ‖ seq as u64 BE ‖ at as i64 BE ‖ body)`. `seq` is at least 1, so its
/// two's-complement bytes are those of the same `u64`.
pub(crate) fn chain_hash(prev_hash: &[u8], seq: i64, at: i64, body: &str) -> [u8; 32] {
    let mut input = Vec::with_capacity(prev_hash.len() + 16 + body.len());
    input.extend_from_slice(prev_hash);
    input.extend_from_slice(&seq.to_be_bytes());
    input.extend_from_slice(&at.to_be_bytes());
    input.extend_from_slice(body.as_bytes());
    sha256(&input)
}
