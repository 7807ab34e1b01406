//! The audit hash chain's arithmetic, shared by every backend.

use keyfort_crypto::digest::sha256;

/// The length of an audit event's `hash` and `prev_hash` (SHA-256).
pub(crate) const HASH_LEN: usize = 32;

/// The indexed fields of an event to append: those its writer gave, else read from its body.
/// Debug builds (the tests) check given ones against the body.
pub(crate) fn event_fields(event: &crate::AuditEventInput) -> [String; 3] {
    match &event.fields {
        Some(f) => {
            let given = [f.target.clone(), f.action.clone(), f.outcome.clone()];
            debug_assert_eq!(given, body_fields(&event.body), "fields not the body's own");
            given
        }
        None => body_fields(&event.body),
    }
}

/// The body's `target`, `action` and `outcome` string fields; `""` for each one that is absent
/// or not a string, and for all three when the body is not a JSON object.
///
/// Read with a typed pass that skips every other member without building it (this runs for
/// every event appended).
pub(crate) fn body_fields(body: &str) -> [String; 3] {
    // serde would also read a struct from an array (`["k1", "wrap"]`).
    if !body.trim_start().starts_with('{') {
        return Default::default();
    }
    match serde_json::from_str::<Fields<'_>>(body) {
        Ok(f) => [f.target, f.action, f.outcome].map(|s| s.0.into_owned()),
        Err(_) => Default::default(),
    }
}

/// The three members [`body_fields`] reads.
#[derive(serde::Deserialize)]
struct Fields<'a> {
    #[serde(default, borrow)]
    target: StrOrEmpty<'a>,
    #[serde(default, borrow)]
    action: StrOrEmpty<'a>,
    #[serde(default, borrow)]
    outcome: StrOrEmpty<'a>,
}

/// A JSON string, or `""` for any other value (which is skipped, not built).
#[derive(Default)]
struct StrOrEmpty<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for StrOrEmpty<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        use std::borrow::Cow;
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrEmpty<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrEmpty(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrEmpty(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(StrOrEmpty(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StrOrEmpty::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StrOrEmpty::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StrOrEmpty::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StrOrEmpty::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(StrOrEmpty::default())
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(StrOrEmpty::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StrOrEmpty::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrOrEmpty::default())
            }
        }
        d.deserialize_any(V)
    }
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
