//! Key attributes: the typed form of the `map<uint64, AttributeValue>` templates (grep11 spec
//! §6), their canonical byte encoding (bound into every sealed blob), and lenient readers that
//! accept the arms Go and JS clients pick for each host-language type.

use std::collections::{BTreeMap, HashMap};

use crate::ck::rv;
use crate::error::{Result, ck};
use crate::proto::{self, attribute_value::OneAttr};

/// Most attributes one template or blob may carry.
pub const MAX_ATTRS: usize = 64;
/// Longest attribute value accepted.
pub const MAX_ATTR_LEN: usize = 4096;

/// One attribute value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    Bytes(Vec<u8>),
    Bool(bool),
    Int(i64),
}

/// A set of attributes, ordered by type (so the encoding is canonical).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attrs(pub BTreeMap<u64, Attr>);

impl Attrs {
    /// From a request template; an attribute with no value is refused.
    pub fn from_proto(map: &HashMap<u64, proto::AttributeValue>) -> Result<Attrs> {
        if map.len() > MAX_ATTRS {
            return Err(ck(rv::CKR_TEMPLATE_INCONSISTENT, "too many attributes"));
        }
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let value = match &v.one_attr {
                Some(OneAttr::AttributeB(b)) if b.len() <= MAX_ATTR_LEN => Attr::Bytes(b.clone()),
                Some(OneAttr::AttributeB(_)) => {
                    return Err(ck(
                        rv::CKR_ATTRIBUTE_VALUE_INVALID,
                        "attribute value too long",
                    ));
                }
                Some(OneAttr::AttributeTf(b)) => Attr::Bool(*b),
                Some(OneAttr::AttributeI(i)) => Attr::Int(*i),
                None => {
                    return Err(ck(
                        rv::CKR_ATTRIBUTE_VALUE_INVALID,
                        "attribute without a value",
                    ));
                }
            };
            out.insert(*k, value);
        }
        Ok(Attrs(out))
    }

    /// As a response map.
    pub fn to_proto(&self) -> HashMap<u64, proto::AttributeValue> {
        self.0
            .iter()
            .map(|(k, v)| {
                let one = match v {
                    Attr::Bytes(b) => OneAttr::AttributeB(b.clone()),
                    Attr::Bool(b) => OneAttr::AttributeTf(*b),
                    Attr::Int(i) => OneAttr::AttributeI(*i),
                };
                (
                    *k,
                    proto::AttributeValue {
                        one_attr: Some(one),
                    },
                )
            })
            .collect()
    }

    /// The PKCS#11 byte form of a value (CK_BBOOL one byte, CK_ULONG eight bytes big-endian).
    pub fn raw_bytes(value: &Attr) -> Vec<u8> {
        match value {
            Attr::Bytes(b) => b.clone(),
            Attr::Bool(b) => vec![u8::from(*b)],
            Attr::Int(i) => i.to_be_bytes().to_vec(),
        }
    }

    pub fn get(&self, t: u64) -> Option<&Attr> {
        self.0.get(&t)
    }

    pub fn set(&mut self, t: u64, v: Attr) {
        self.0.insert(t, v);
    }

    /// A boolean attribute: `AttributeTF`, an integer 0/1, or a one-byte value.
    pub fn bool(&self, t: u64) -> Result<Option<bool>> {
        Ok(match self.0.get(&t) {
            None => None,
            Some(Attr::Bool(b)) => Some(*b),
            Some(Attr::Int(0)) => Some(false),
            Some(Attr::Int(1)) => Some(true),
            Some(Attr::Bytes(b)) if b.len() == 1 && b[0] <= 1 => Some(b[0] == 1),
            Some(_) => {
                return Err(ck(
                    rv::CKR_ATTRIBUTE_VALUE_INVALID,
                    "not a boolean attribute",
                ));
            }
        })
    }

    /// A boolean attribute with a default.
    pub fn flag(&self, t: u64, default: bool) -> Result<bool> {
        Ok(self.bool(t)?.unwrap_or(default))
    }

    /// An integer attribute: `AttributeI`, or big-endian bytes (at most eight).
    pub fn int(&self, t: u64) -> Result<Option<u64>> {
        Ok(match self.0.get(&t) {
            None => None,
            Some(Attr::Int(i)) => Some(u64::try_from(*i).map_err(|_| {
                ck(
                    rv::CKR_ATTRIBUTE_VALUE_INVALID,
                    "negative integer attribute",
                )
            })?),
            Some(Attr::Bytes(b)) if b.len() <= 8 => {
                Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
            }
            Some(_) => {
                return Err(ck(
                    rv::CKR_ATTRIBUTE_VALUE_INVALID,
                    "not an integer attribute",
                ));
            }
        })
    }

    /// A byte-string attribute.
    pub fn bytes(&self, t: u64) -> Result<Option<&[u8]>> {
        Ok(match self.0.get(&t) {
            None => None,
            Some(Attr::Bytes(b)) => Some(b.as_slice()),
            Some(_) => {
                return Err(ck(
                    rv::CKR_ATTRIBUTE_VALUE_INVALID,
                    "not a byte-string attribute",
                ));
            }
        })
    }

    /// Canonical encoding: u16 count, then per attribute u64 type, one tag byte and the value
    /// (bytes: u32 length + bytes; bool: one byte; int: i64), all big-endian, ordered by type.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.0.len() * 16);
        // At most MAX_ATTRS entries (enforced on every way in).
        out.extend_from_slice(
            &u16::try_from(self.0.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        for (k, v) in &self.0 {
            out.extend_from_slice(&k.to_be_bytes());
            match v {
                Attr::Bytes(b) => {
                    out.push(0);
                    out.extend_from_slice(
                        &u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes(),
                    );
                    out.extend_from_slice(b);
                }
                Attr::Bool(b) => {
                    out.push(1);
                    out.push(u8::from(*b));
                }
                Attr::Int(i) => {
                    out.push(2);
                    out.extend_from_slice(&i.to_be_bytes());
                }
            }
        }
        out
    }

    /// Decodes [`Attrs::encode`]'s output exactly (no trailing bytes, ascending types, limits).
    pub fn decode(mut b: &[u8]) -> Option<Attrs> {
        let count = usize::from(u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?));
        if count > MAX_ATTRS {
            return None;
        }
        let mut out = BTreeMap::new();
        let mut last = None;
        for _ in 0..count {
            let t = u64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
            if last.is_some_and(|l| l >= t) {
                return None;
            }
            last = Some(t);
            let v = match take(&mut b, 1)?[0] {
                0 => {
                    let len = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
                    if len > MAX_ATTR_LEN {
                        return None;
                    }
                    Attr::Bytes(take(&mut b, len)?.to_vec())
                }
                1 => match take(&mut b, 1)?[0] {
                    0 => Attr::Bool(false),
                    1 => Attr::Bool(true),
                    _ => return None,
                },
                2 => Attr::Int(i64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?)),
                _ => return None,
            };
            out.insert(t, v);
        }
        b.is_empty().then_some(Attrs(out))
    }
}

/// Splits `n` bytes off the front of `b`.
pub(crate) fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_rejects_trailing_bytes() {
        let mut a = Attrs::default();
        a.set(0x3, Attr::Bytes(b"label".to_vec()));
        a.set(0x104, Attr::Bool(true));
        a.set(0x161, Attr::Int(32));
        let enc = a.encode();
        assert_eq!(Attrs::decode(&enc), Some(a));
        let mut longer = enc.clone();
        longer.push(0);
        assert_eq!(Attrs::decode(&longer), None);
        assert_eq!(Attrs::decode(&enc[..enc.len() - 1]), None);
    }

    #[test]
    fn readers_accept_the_arms_clients_send() {
        let mut a = Attrs::default();
        a.set(1, Attr::Int(1));
        a.set(2, Attr::Bytes(vec![0]));
        a.set(3, Attr::Bytes(vec![0x01, 0x00, 0x01]));
        a.set(4, Attr::Bytes(b"xx".to_vec()));
        assert_eq!(a.bool(1).unwrap(), Some(true));
        assert_eq!(a.bool(2).unwrap(), Some(false));
        assert_eq!(a.int(3).unwrap(), Some(65537));
        assert!(a.bool(4).is_err());
        assert_eq!(a.bool(9).unwrap(), None);
    }
}
