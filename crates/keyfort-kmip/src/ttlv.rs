//! Sans-IO TTLV (Tag-Type-Length-Value) encoding, KMIP 1.4 §9.1.
//!
//! Every item is an 8-byte header — tag (3 bytes), type (1 byte), length (4 bytes, big-endian,
//! the unpadded value length) — followed by the value, padded with zero bytes to a multiple of
//! 8. [`decode`] is strict: fixed-size types must carry their exact length, padding must be
//! zero, Booleans must be 0 or 1, Text Strings must be UTF-8, and bytes after the item are an
//! error. It never reads past its input, never allocates a buffer before checking that the
//! declared length fits in the input, and enforces the [`Limits`] on message size, nesting
//! depth and item count. Every rejection is a [`DecodeError`] naming the byte offset.

use std::fmt;

/// Header size: tag (3) + type (1) + length (4), KMIP 1.4 §9.1.1.
pub const HEADER_LEN: usize = 8;
/// Default [`Limits::max_message`]: 1 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
/// Default [`Limits::max_depth`]: nesting of Structures.
pub const DEFAULT_MAX_DEPTH: usize = 16;
/// Default [`Limits::max_items`]: items (Structures included) in one message.
pub const DEFAULT_MAX_ITEMS: usize = 10_000;

/// A KMIP tag (KMIP 1.4 §9.1.1.1): three bytes, `0x42XXXX` for tags defined by the
/// specification, `0x54XXXX` for extensions.
///
/// Named constants (`Tag::ACTIVATION_DATE`, …) and [`Tag::name`] are generated from the KMIP
/// 1.4/2.0 tables; unknown tags round-trip. `Debug` prints the name when known, as
/// `Tag(0x420001 ActivationDate)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub(crate) u32);

impl Tag {
    /// The tag for `value`, if it is a specification (`0x42XXXX`) or extension (`0x54XXXX`) tag.
    pub const fn new(value: u32) -> Option<Self> {
        match value >> 16 {
            0x42 | 0x54 => Some(Self(value)),
            _ => None,
        }
    }

    /// The tag's numeric value.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// Whether this is an extension tag (`0x54XXXX`), KMIP 1.4 §9.1.3.1.
    pub const fn is_extension(self) -> bool {
        self.0 >> 16 == 0x54
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "Tag(0x{:06X} {name})", self.0),
            None => write!(f, "Tag(0x{:06X})", self.0),
        }
    }
}

/// An item type (KMIP 1.4 §9.1.1.2; Date-Time Extended from KMIP 2.0 §9.1.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ItemType {
    /// 0x01: a sequence of items.
    Structure = 0x01,
    /// 0x02: 32-bit signed, padded to 8 bytes.
    Integer = 0x02,
    /// 0x03: 64-bit signed.
    LongInteger = 0x03,
    /// 0x04: big-endian two's complement, length a multiple of 8.
    BigInteger = 0x04,
    /// 0x05: 32-bit unsigned, padded to 8 bytes.
    Enumeration = 0x05,
    /// 0x06: 64-bit, 0 or 1.
    Boolean = 0x06,
    /// 0x07: UTF-8, padded.
    TextString = 0x07,
    /// 0x08: raw bytes, padded.
    ByteString = 0x08,
    /// 0x09: 64-bit signed POSIX seconds.
    DateTime = 0x09,
    /// 0x0A: 32-bit unsigned seconds, padded to 8 bytes.
    Interval = 0x0A,
    /// 0x0B: 64-bit signed POSIX microseconds (KMIP 2.0).
    DateTimeExtended = 0x0B,
}

impl ItemType {
    /// The type for a wire code, if defined.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => Self::Structure,
            0x02 => Self::Integer,
            0x03 => Self::LongInteger,
            0x04 => Self::BigInteger,
            0x05 => Self::Enumeration,
            0x06 => Self::Boolean,
            0x07 => Self::TextString,
            0x08 => Self::ByteString,
            0x09 => Self::DateTime,
            0x0A => Self::Interval,
            0x0B => Self::DateTimeExtended,
            _ => return None,
        })
    }

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// A Big Integer value (KMIP 1.4 §9.1.1.4): big-endian two's complement whose length is a
/// multiple of 8 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BigInt(Vec<u8>);

impl BigInt {
    /// A Big Integer from big-endian two's complement bytes, sign-extended at the front to a
    /// multiple of 8 bytes (the empty slice is zero with an empty encoding).
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            0xFF
        } else {
            0x00
        };
        let pad = (8 - bytes.len() % 8) % 8;
        let mut out = Vec::with_capacity(bytes.len() + pad);
        out.resize(pad, fill);
        out.extend_from_slice(bytes);
        Self(out)
    }

    /// The encoded bytes (a multiple of 8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A TTLV value (KMIP 1.4 §9.1.1.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// Child items, in order.
    Structure(Vec<Item>),
    /// 32-bit signed.
    Integer(i32),
    /// 64-bit signed.
    LongInteger(i64),
    /// Two's complement, a multiple of 8 bytes.
    BigInteger(BigInt),
    /// 32-bit unsigned; see the generated enumeration types for names.
    Enumeration(u32),
    /// True or false (encoded as 1 or 0).
    Boolean(bool),
    /// UTF-8 text.
    TextString(String),
    /// Raw bytes.
    ByteString(Vec<u8>),
    /// POSIX time in seconds.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
    /// POSIX time in microseconds (KMIP 2.0).
    DateTimeExtended(i64),
}

impl Value {
    /// The item type this value is encoded as.
    pub const fn item_type(&self) -> ItemType {
        match self {
            Self::Structure(_) => ItemType::Structure,
            Self::Integer(_) => ItemType::Integer,
            Self::LongInteger(_) => ItemType::LongInteger,
            Self::BigInteger(_) => ItemType::BigInteger,
            Self::Enumeration(_) => ItemType::Enumeration,
            Self::Boolean(_) => ItemType::Boolean,
            Self::TextString(_) => ItemType::TextString,
            Self::ByteString(_) => ItemType::ByteString,
            Self::DateTime(_) => ItemType::DateTime,
            Self::Interval(_) => ItemType::Interval,
            Self::DateTimeExtended(_) => ItemType::DateTimeExtended,
        }
    }
}

/// One TTLV item: a tag and a typed value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Item {
    /// The tag.
    pub tag: Tag,
    /// The value (its variant decides the item type).
    pub value: Value,
}

impl Item {
    /// An item from a tag and a value.
    pub fn new(tag: Tag, value: Value) -> Self {
        Self { tag, value }
    }
}

/// Decoding limits; every violation is a [`DecodeError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, header included.
    pub max_message: usize,
    /// Deepest accepted nesting of Structures (the outermost Structure is depth 1). [`decode`]
    /// itself uses no call stack per level, but [`encode`] and the derived `Drop`, `PartialEq`
    /// and `Debug` of [`Item`] recurse, so keep this small.
    pub max_depth: usize,
    /// Most items accepted in one input, Structures included.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            max_depth: DEFAULT_MAX_DEPTH,
            max_items: DEFAULT_MAX_ITEMS,
        }
    }
}

/// Why [`decode`] rejected its input. `offset` is the byte offset into the input of the item
/// header or value byte at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than [`Limits::max_message`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        offset: usize,
        len: usize,
        max: usize,
    },
    /// Fewer than 8 bytes remain (in the input or the enclosing Structure) for an item header.
    #[error("truncated item header at offset {offset}: {available} of 8 bytes")]
    Truncated { offset: usize, available: usize },
    /// The declared (padded) length runs past the input or the enclosing Structure.
    #[error("item at offset {offset} declares {length} bytes, only {available} available")]
    LengthOverflow {
        offset: usize,
        length: u32,
        available: usize,
    },
    /// A tag outside `0x42XXXX` and `0x54XXXX`.
    #[error("invalid tag 0x{tag:06X} at offset {offset}")]
    InvalidTag { offset: usize, tag: u32 },
    /// An undefined item type code.
    #[error("unknown item type 0x{code:02X} at offset {offset}")]
    UnknownType { offset: usize, code: u8 },
    /// A length not allowed for the type (fixed-size types, Big Integer not a multiple of 8,
    /// Structure not a multiple of 8).
    #[error("invalid length {length} for {item_type:?} at offset {offset}")]
    InvalidLength {
        offset: usize,
        item_type: ItemType,
        length: u32,
    },
    /// A padding byte that is not zero.
    #[error("non-zero padding byte at offset {offset}")]
    NonZeroPadding { offset: usize },
    /// A Boolean other than 0 or 1.
    #[error("invalid Boolean value {value} at offset {offset}")]
    InvalidBoolean { offset: usize, value: u64 },
    /// A Text String that is not UTF-8; `offset` is the first invalid byte.
    #[error("invalid UTF-8 in Text String at offset {offset}")]
    InvalidUtf8 { offset: usize },
    /// Structures nested deeper than [`Limits::max_depth`].
    #[error("Structure at offset {offset} nests deeper than {max}")]
    DepthExceeded { offset: usize, max: usize },
    /// More items than [`Limits::max_items`].
    #[error("item at offset {offset} exceeds the limit of {max} items")]
    TooManyItems { offset: usize, max: usize },
    /// Bytes left after the item.
    #[error("trailing bytes at offset {offset}")]
    TrailingBytes { offset: usize },
}

impl DecodeError {
    /// The byte offset at fault.
    pub const fn offset(&self) -> usize {
        match *self {
            Self::MessageTooLarge { offset, .. }
            | Self::Truncated { offset, .. }
            | Self::LengthOverflow { offset, .. }
            | Self::InvalidTag { offset, .. }
            | Self::UnknownType { offset, .. }
            | Self::InvalidLength { offset, .. }
            | Self::NonZeroPadding { offset }
            | Self::InvalidBoolean { offset, .. }
            | Self::InvalidUtf8 { offset }
            | Self::DepthExceeded { offset, .. }
            | Self::TooManyItems { offset, .. }
            | Self::TrailingBytes { offset } => offset,
        }
    }
}

/// The total length (header included) of the item whose first 8 bytes are `header`, for a
/// socket reader: read 8 bytes, call this, check the result against [`Limits::max_message`]
/// before allocating, then read the rest and [`decode`]. `None` if `header` is shorter than 8
/// bytes or names an undefined item type.
pub fn frame_len(header: &[u8]) -> Option<usize> {
    let header: &[u8; HEADER_LEN] = header.get(..HEADER_LEN)?.try_into().ok()?;
    let item_type = ItemType::from_code(header[3])?;
    let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let padded = padded_len(item_type, length)?;
    HEADER_LEN.checked_add(padded)
}

/// The value length on the wire: Structures are not padded (their children are), every other
/// type is padded to a multiple of 8.
fn padded_len(item_type: ItemType, length: u32) -> Option<usize> {
    let length = usize::try_from(length).ok()?;
    match item_type {
        ItemType::Structure => Some(length),
        _ => length.checked_next_multiple_of(8),
    }
}

/// Decodes exactly one item from `bytes` (KMIP 1.4 §9.1), enforcing `limits`.
///
/// Structures are decoded with an explicit stack, so nesting costs no call stack whatever
/// `limits.max_depth` is; buffers are allocated only for values whose length has been checked
/// against the input.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Item, DecodeError> {
    if bytes.len() > limits.max_message {
        return Err(DecodeError::MessageTooLarge {
            offset: 0,
            len: bytes.len(),
            max: limits.max_message,
        });
    }
    // Open Structures: tag, end offset of the value, children so far.
    let mut stack: Vec<(Tag, usize, Vec<Item>)> = Vec::new();
    let mut pos = 0;
    let mut items = 0usize;
    'items: loop {
        let end = stack.last().map_or(bytes.len(), |(_, end, _)| *end);
        let start = pos;
        let available = end - start;
        let Some(header) = bytes
            .get(start..start + HEADER_LEN)
            .filter(|_| available >= HEADER_LEN)
        else {
            return Err(DecodeError::Truncated {
                offset: start,
                available,
            });
        };
        items += 1;
        if items > limits.max_items {
            return Err(DecodeError::TooManyItems {
                offset: start,
                max: limits.max_items,
            });
        }
        let raw_tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
        let tag = Tag::new(raw_tag).ok_or(DecodeError::InvalidTag {
            offset: start,
            tag: raw_tag,
        })?;
        let item_type = ItemType::from_code(header[3]).ok_or(DecodeError::UnknownType {
            offset: start + 3,
            code: header[3],
        })?;
        let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let value_start = start + HEADER_LEN;
        let room = end - value_start;
        let padded = padded_len(item_type, length).filter(|&p| p <= room).ok_or(
            DecodeError::LengthOverflow {
                offset: start,
                length,
                available: room,
            },
        )?;
        let mut done = if item_type == ItemType::Structure {
            if length % 8 != 0 {
                return Err(DecodeError::InvalidLength {
                    offset: start,
                    item_type,
                    length,
                });
            }
            if stack.len() >= limits.max_depth {
                return Err(DecodeError::DepthExceeded {
                    offset: start,
                    max: limits.max_depth,
                });
            }
            pos = value_start;
            if padded == 0 {
                Item::new(tag, Value::Structure(Vec::new()))
            } else {
                stack.push((tag, value_start + padded, Vec::new()));
                continue;
            }
        } else {
            // `padded <= room` was checked above, so this slice is in bounds.
            let field = &bytes[value_start..value_start + padded];
            pos = value_start + padded;
            Item::new(tag, scalar(item_type, length, field, start)?)
        };
        // Attach the finished item to its parent, closing every Structure that ends here.
        while let Some((parent, end, mut children)) = stack.pop() {
            children.push(done);
            if pos != end {
                stack.push((parent, end, children));
                continue 'items;
            }
            done = Item::new(parent, Value::Structure(children));
        }
        if pos != bytes.len() {
            return Err(DecodeError::TrailingBytes { offset: pos });
        }
        return Ok(done);
    }
}

/// Decodes a non-Structure value; `field` is the padded value, `start` the item's offset.
fn scalar(
    item_type: ItemType,
    length: u32,
    field: &[u8],
    start: usize,
) -> Result<Value, DecodeError> {
    let value_start = start + HEADER_LEN;
    let len = field
        .len()
        .min(usize::try_from(length).unwrap_or(usize::MAX));
    let (value, padding) = field.split_at(len);
    if let Some(i) = padding.iter().position(|&b| b != 0) {
        return Err(DecodeError::NonZeroPadding {
            offset: value_start + len + i,
        });
    }
    let bad_length = DecodeError::InvalidLength {
        offset: start,
        item_type,
        length,
    };
    let four =
        || -> Result<[u8; 4], DecodeError> { value.try_into().map_err(|_| bad_length.clone()) };
    let eight =
        || -> Result<[u8; 8], DecodeError> { value.try_into().map_err(|_| bad_length.clone()) };
    Ok(match item_type {
        ItemType::Integer => Value::Integer(i32::from_be_bytes(four()?)),
        ItemType::Enumeration => Value::Enumeration(u32::from_be_bytes(four()?)),
        ItemType::Interval => Value::Interval(u32::from_be_bytes(four()?)),
        ItemType::LongInteger => Value::LongInteger(i64::from_be_bytes(eight()?)),
        ItemType::DateTime => Value::DateTime(i64::from_be_bytes(eight()?)),
        ItemType::DateTimeExtended => Value::DateTimeExtended(i64::from_be_bytes(eight()?)),
        ItemType::Boolean => match u64::from_be_bytes(eight()?) {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            other => {
                return Err(DecodeError::InvalidBoolean {
                    offset: value_start,
                    value: other,
                });
            }
        },
        ItemType::BigInteger => {
            if value.len() % 8 != 0 {
                return Err(bad_length);
            }
            Value::BigInteger(BigInt(value.to_vec()))
        }
        ItemType::TextString => match std::str::from_utf8(value) {
            Ok(text) => Value::TextString(text.to_owned()),
            Err(e) => {
                return Err(DecodeError::InvalidUtf8 {
                    offset: value_start + e.valid_up_to(),
                });
            }
        },
        ItemType::ByteString => Value::ByteString(value.to_vec()),
        // Structures are handled by `decode`; the caller never passes one here.
        ItemType::Structure => return Err(bad_length),
    })
}

/// Encodes `item` (KMIP 1.4 §9.1). `decode(&encode(x), &limits) == Ok(x)` for every item within
/// the limits.
///
/// # Panics
///
/// If a value or Structure is longer than `u32::MAX` bytes, which TTLV cannot express.
pub fn encode(item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(item, &mut out);
    out
}

fn encode_into(item: &Item, out: &mut Vec<u8>) {
    let tag = item.tag.0.to_be_bytes();
    out.extend_from_slice(&tag[1..]);
    out.push(item.value.item_type().code());
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let value_start = out.len();
    match &item.value {
        Value::Structure(children) => children.iter().for_each(|c| encode_into(c, out)),
        Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v) => {
            out.extend_from_slice(&v.to_be_bytes());
        }
        Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
        Value::BigInteger(v) => out.extend_from_slice(v.as_bytes()),
        Value::TextString(v) => out.extend_from_slice(v.as_bytes()),
        Value::ByteString(v) => out.extend_from_slice(v),
    }
    let length = u32::try_from(out.len() - value_start)
        .expect("TTLV values are at most u32::MAX bytes (documented panic)");
    out[length_at..value_start].copy_from_slice(&length.to_be_bytes());
    out.resize(out.len().next_multiple_of(8), 0);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Hex with `|`, `_` and spaces allowed as separators.
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        assert_eq!(digits.len() % 2, 0, "odd hex: {s}");
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn tag(v: u32) -> Tag {
        Tag::new(v).unwrap()
    }

    fn d(bytes: &[u8]) -> Result<Item, DecodeError> {
        decode(bytes, &Limits::default())
    }

    /// Known answers: the encoding examples of KMIP 1.4 §9.1.2, all under tag 0x420020.
    fn spec_examples() -> Vec<(Value, &'static str)> {
        vec![
            (
                Value::Integer(8),
                "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00",
            ),
            (
                Value::LongInteger(123_456_789_000_000_000),
                "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
            ),
            (
                Value::BigInteger(BigInt::from_be_bytes(&hex(
                    "03 FD 35 EB 6B C2 DF 46 18 08 00 00",
                ))),
                "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
            ),
            (
                Value::Enumeration(255),
                "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
            (
                Value::Boolean(true),
                "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01",
            ),
            (
                Value::TextString("Hello World".into()),
                "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
            ),
            (
                Value::ByteString(vec![1, 2, 3]),
                "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00",
            ),
            (
                // Friday, March 14, 2008, 11:56:40 GMT.
                Value::DateTime(1_205_495_800),
                "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
            ),
            (
                // 10 days.
                Value::Interval(864_000),
                "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
            ),
            (
                Value::Structure(vec![
                    Item::new(tag(0x42_0004), Value::Enumeration(254)),
                    Item::new(tag(0x42_0005), Value::Integer(255)),
                ]),
                "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 \
                 | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
        ]
    }

    #[test]
    fn spec_examples_encode_and_decode() {
        for (value, bytes) in spec_examples() {
            let item = Item::new(tag(0x42_0020), value);
            let bytes = hex(bytes);
            assert_eq!(encode(&item), bytes, "{item:?}");
            assert_eq!(d(&bytes), Ok(item));
            assert_eq!(frame_len(&bytes), Some(bytes.len()));
        }
    }

    #[test]
    fn hand_made_items_of_every_type_round_trip() {
        let all = Item::new(
            Tag::REQUEST_MESSAGE,
            Value::Structure(vec![
                Item::new(Tag::BATCH_COUNT, Value::Integer(-1)),
                Item::new(tag(0x54_0001), Value::LongInteger(i64::MIN)),
                Item::new(
                    tag(0x54_0002),
                    Value::BigInteger(BigInt::from_be_bytes(&[0x80])),
                ),
                Item::new(
                    tag(0x54_0003),
                    Value::BigInteger(BigInt::from_be_bytes(&[])),
                ),
                Item::new(Tag::OPERATION, Value::Enumeration(u32::MAX)),
                Item::new(Tag::ASYNCHRONOUS_INDICATOR, Value::Boolean(false)),
                Item::new(Tag::UNIQUE_IDENTIFIER, Value::TextString("clé-𝄞".into())),
                Item::new(Tag::UNIQUE_IDENTIFIER, Value::TextString(String::new())),
                Item::new(Tag::UNIQUE_BATCH_ITEM_ID, Value::ByteString(vec![0; 8])),
                Item::new(Tag::TIME_STAMP, Value::DateTime(-1)),
                Item::new(tag(0x54_0004), Value::Interval(0)),
                Item::new(
                    tag(0x54_0005),
                    Value::DateTimeExtended(1_205_495_800_000_001),
                ),
                Item::new(Tag::BATCH_ITEM, Value::Structure(vec![])),
            ]),
        );
        let bytes = encode(&all);
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(d(&bytes), Ok(all));
        // The negative one-byte Big Integer is sign-extended to 8 bytes.
        assert_eq!(
            BigInt::from_be_bytes(&[0x80]).as_bytes(),
            &hex("FFFFFFFFFFFFFF80")
        );
        assert_eq!(BigInt::from_be_bytes(&[1; 9]).as_bytes().len(), 16);
    }

    #[test]
    fn tags_and_enumerations_have_names() {
        assert_eq!(Tag::ACTIVATION_DATE.value(), 0x42_0001);
        assert_eq!(
            format!("{:?}", Tag::ACTIVATION_DATE),
            "Tag(0x420001 ActivationDate)"
        );
        assert_eq!(format!("{:?}", tag(0x54_0001)), "Tag(0x540001)");
        assert!(tag(0x54_0001).is_extension() && !Tag::OPERATION.is_extension());
        assert_eq!(Tag::OPERATION.value(), 0x42_005C);
        assert_eq!(Tag::ATTRIBUTES.value(), 0x42_0125, "a KMIP 2.0 tag");
        assert_eq!(Tag::new(0x43_0001), None);
        assert_eq!(crate::Operation::GET.0, 0x0A);
        assert_eq!(crate::Operation::SET_ATTRIBUTE.0, 0x31);
        assert_eq!(
            format!("{:?}", crate::Operation::GET),
            "Operation(0x0000000A Get)"
        );
        assert_eq!(
            format!("{:?}", crate::Operation(0xFFFF)),
            "Operation(0x0000FFFF)"
        );
        assert_eq!(crate::ObjectType::SYMMETRIC_KEY.0, 2);
        assert_eq!(crate::ResultStatus::OPERATION_FAILED.0, 1);
        assert_eq!(crate::ResultReason::GENERAL_FAILURE.0, 0x100);
        assert_eq!(crate::State::ACTIVE.name(), Some("Active"));
        assert_eq!(crate::CryptographicAlgorithm::AES.0, 3);
        assert_eq!(crate::CryptographicAlgorithm::TRIPLE_DES.0, 2);
        assert_eq!(crate::KeyFormatType::TRANSPARENT_SYMMETRIC_KEY.0, 7);
        assert_eq!(crate::BatchErrorContinuationOption::STOP.0, 2);
        let usage = crate::CryptographicUsageMask(12);
        assert!(usage.contains(crate::CryptographicUsageMask::ENCRYPT));
        assert!(!usage.contains(crate::CryptographicUsageMask::SIGN));
    }

    #[test]
    fn frame_len_reads_the_header() {
        assert_eq!(frame_len(&hex("420078 01 00000100")), Some(8 + 256));
        assert_eq!(frame_len(&hex("420020 07 0000000B 48")), Some(8 + 16));
        assert_eq!(frame_len(&hex("420078 01 000001")), None);
        assert_eq!(frame_len(&hex("420078 FF 00000000")), None);
        assert_eq!(frame_len(&hex("420078 01 FFFFFFFF")), Some(8 + 0xFFFF_FFFF));
    }

    #[test]
    fn malformations_are_typed_with_offsets() {
        let cases: &[(&str, DecodeError)] = &[
            (
                "",
                DecodeError::Truncated {
                    offset: 0,
                    available: 0,
                },
            ),
            (
                "420020 02 000000",
                DecodeError::Truncated {
                    offset: 0,
                    available: 7,
                },
            ),
            (
                "420020 02 00000004 00000008",
                DecodeError::LengthOverflow {
                    offset: 0,
                    length: 4,
                    available: 4,
                },
            ),
            (
                "420020 07 FFFFFFFF 00000000 00000000",
                DecodeError::LengthOverflow {
                    offset: 0,
                    length: u32::MAX,
                    available: 8,
                },
            ),
            (
                "420020 01 FFFFFFF8 420021 02 00000004 00000008 00000000",
                DecodeError::LengthOverflow {
                    offset: 0,
                    length: 0xFFFF_FFF8,
                    available: 16,
                },
            ),
            // A child running past its parent's declared end.
            (
                "420020 01 00000008 420021 02 00000004 00000008 00000000",
                DecodeError::LengthOverflow {
                    offset: 8,
                    length: 4,
                    available: 0,
                },
            ),
            (
                "420020 02 00000004 00000008 00000000 00",
                DecodeError::TrailingBytes { offset: 16 },
            ),
            (
                "430020 02 00000004 00000008 00000000",
                DecodeError::InvalidTag {
                    offset: 0,
                    tag: 0x43_0020,
                },
            ),
            (
                "420020 0C 00000000",
                DecodeError::UnknownType {
                    offset: 3,
                    code: 0x0C,
                },
            ),
            (
                "420020 00 00000000",
                DecodeError::UnknownType { offset: 3, code: 0 },
            ),
            (
                "420020 02 00000008 00000000 00000008",
                DecodeError::InvalidLength {
                    offset: 0,
                    item_type: ItemType::Integer,
                    length: 8,
                },
            ),
            (
                "420020 05 00000003 000000 0000000000",
                DecodeError::InvalidLength {
                    offset: 0,
                    item_type: ItemType::Enumeration,
                    length: 3,
                },
            ),
            (
                "420020 0A 00000000",
                DecodeError::InvalidLength {
                    offset: 0,
                    item_type: ItemType::Interval,
                    length: 0,
                },
            ),
            (
                "420020 03 00000004 00000001 00000000",
                DecodeError::InvalidLength {
                    offset: 0,
                    item_type: ItemType::LongInteger,
                    length: 4,
                },
            ),
            (
                "420020 09 00000007 00000000 00000000",
                DecodeError::InvalidLength {
                    offset: 0,
                    item_type: ItemType::DateTime,
                    length: 7,
                },
            ),
            (
                "420020 0B 00000010 00000000 00000000 00000000 00000000",
                DecodeError::InvalidLength {
                    offset: 0,
                    item_type: ItemType::DateTimeExtended,
                    length: 16,
                },
            ),
            (
                "420020 06 00000004 00000001 00000000",
                DecodeError::InvalidLength {
                    offset: 0,
                    item_type: ItemType::Boolean,
                    length: 4,
                },
            ),
            (
                "420020 04 00000004 00000001 00000000",
                DecodeError::InvalidLength {
                    offset: 0,
                    item_type: ItemType::BigInteger,
                    length: 4,
                },
            ),
            (
                "420020 01 00000004 00000000",
                DecodeError::InvalidLength {
                    offset: 0,
                    item_type: ItemType::Structure,
                    length: 4,
                },
            ),
            (
                "420020 02 00000004 00000008 00000100",
                DecodeError::NonZeroPadding { offset: 14 },
            ),
            (
                "420020 07 00000001 41 00000000000001",
                DecodeError::NonZeroPadding { offset: 15 },
            ),
            (
                "420020 06 00000008 00000000 00000002",
                DecodeError::InvalidBoolean {
                    offset: 8,
                    value: 2,
                },
            ),
            (
                "420020 06 00000008 01000000 00000001",
                DecodeError::InvalidBoolean {
                    offset: 8,
                    value: 0x0100_0000_0000_0001,
                },
            ),
            (
                "420020 07 00000003 41 C3 28 0000000000",
                DecodeError::InvalidUtf8 { offset: 9 },
            ),
            (
                "420020 07 00000002 ED A0 000000000000",
                DecodeError::InvalidUtf8 { offset: 8 },
            ),
            // The error inside a Structure reports the absolute offset.
            (
                "420020 01 00000010 420021 06 00000008 00000000 00000003",
                DecodeError::InvalidBoolean {
                    offset: 16,
                    value: 3,
                },
            ),
        ];
        for (bytes, want) in cases {
            let got = d(&hex(bytes));
            assert_eq!(got.as_ref(), Err(want), "{bytes}");
            assert_eq!(got.unwrap_err().offset(), want.offset());
        }
    }

    /// `levels` Structures nested in each other around an Integer.
    fn nested(levels: usize) -> Item {
        let mut item = Item::new(tag(0x42_0020), Value::Integer(1));
        for _ in 0..levels {
            item = Item::new(tag(0x42_0021), Value::Structure(vec![item]));
        }
        item
    }

    #[test]
    fn depth_limit() {
        let limits = Limits::default();
        assert_eq!(
            d(&encode(&nested(DEFAULT_MAX_DEPTH))),
            Ok(nested(DEFAULT_MAX_DEPTH))
        );
        assert_eq!(
            decode(&encode(&nested(DEFAULT_MAX_DEPTH + 1)), &limits),
            Err(DecodeError::DepthExceeded {
                offset: 8 * DEFAULT_MAX_DEPTH,
                max: DEFAULT_MAX_DEPTH
            })
        );
        let shallow = Limits {
            max_depth: 0,
            ..limits
        };
        assert!(decode(&encode(&nested(0)), &shallow).is_ok());
        assert_eq!(
            decode(&encode(&nested(1)), &shallow),
            Err(DecodeError::DepthExceeded { offset: 0, max: 0 })
        );
        // Deep input under a generous limit costs no call stack in `decode` (the bytes are built
        // by hand and the tree is walked and dropped level by level: `encode`, `Drop`,
        // `PartialEq` and `Debug` recurse).
        let levels = 100_000;
        let mut bytes = Vec::with_capacity(8 * levels + 16);
        for i in 0..levels {
            let length = u32::try_from(8 * (levels - 1 - i) + 16).unwrap();
            bytes.extend_from_slice(&hex("420021 01"));
            bytes.extend_from_slice(&length.to_be_bytes());
        }
        bytes.extend_from_slice(&hex("420020 02 00000004 00000001 00000000"));
        let roomy = Limits {
            max_depth: usize::MAX,
            max_items: usize::MAX,
            max_message: usize::MAX,
        };
        let mut stack = vec![decode(&bytes, &roomy).unwrap()];
        let mut depth = 0;
        while let Some(item) = stack.pop() {
            match item.value {
                Value::Structure(children) => {
                    assert_eq!(children.len(), 1);
                    depth += 1;
                    stack.extend(children);
                }
                Value::Integer(1) => assert_eq!(depth, levels),
                other => panic!("unexpected {other:?}"),
            }
        }
        let limits = Limits {
            max_depth: levels - 1,
            ..roomy
        };
        assert_eq!(
            decode(&bytes, &limits),
            Err(DecodeError::DepthExceeded {
                offset: 8 * (levels - 1),
                max: levels - 1
            })
        );
    }

    #[test]
    fn item_limit() {
        let children = |n: usize| {
            Item::new(
                tag(0x42_0020),
                Value::Structure(
                    (0..n)
                        .map(|i| Item::new(tag(0x42_0021), Value::Integer(i as i32)))
                        .collect(),
                ),
            )
        };
        let limits = Limits {
            max_items: 5,
            ..Limits::default()
        };
        assert!(decode(&encode(&children(4)), &limits).is_ok());
        assert_eq!(
            decode(&encode(&children(5)), &limits),
            Err(DecodeError::TooManyItems {
                offset: 8 + 4 * 16,
                max: 5
            })
        );
        let bytes = encode(&children(DEFAULT_MAX_ITEMS));
        assert_eq!(
            d(&bytes),
            Err(DecodeError::TooManyItems {
                offset: 8 + (DEFAULT_MAX_ITEMS - 1) * 16,
                max: DEFAULT_MAX_ITEMS
            })
        );
    }

    #[test]
    fn message_size_limit() {
        let item = Item::new(
            tag(0x42_0020),
            Value::ByteString(vec![7; DEFAULT_MAX_MESSAGE - 8]),
        );
        let bytes = encode(&item);
        assert_eq!(bytes.len(), DEFAULT_MAX_MESSAGE);
        assert_eq!(d(&bytes), Ok(item));
        let too_big = encode(&Item::new(
            tag(0x42_0020),
            Value::ByteString(vec![7; DEFAULT_MAX_MESSAGE - 7]),
        ));
        assert_eq!(
            d(&too_big),
            Err(DecodeError::MessageTooLarge {
                offset: 0,
                len: DEFAULT_MAX_MESSAGE + 8,
                max: DEFAULT_MAX_MESSAGE
            })
        );
    }

    fn arb_tag() -> impl Strategy<Value = Tag> {
        prop_oneof![0x42_0000u32..=0x42_FFFF, 0x54_0000u32..=0x54_FFFF].prop_map(Tag)
    }

    fn arb_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(Value::Integer),
            any::<i64>().prop_map(Value::LongInteger),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| Value::BigInteger(BigInt::from_be_bytes(&b))),
            any::<u32>().prop_map(Value::Enumeration),
            any::<bool>().prop_map(Value::Boolean),
            ".{0,20}".prop_map(Value::TextString),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::ByteString),
            any::<i64>().prop_map(Value::DateTime),
            any::<u32>().prop_map(Value::Interval),
            any::<i64>().prop_map(Value::DateTimeExtended),
        ]
    }

    /// Items nested at most 6 Structures deep.
    fn arb_item() -> impl Strategy<Value = Item> {
        let leaf = (arb_tag(), arb_scalar()).prop_map(|(t, v)| Item::new(t, v));
        leaf.prop_recursive(6, 64, 8, |inner| {
            (arb_tag(), proptest::collection::vec(inner, 0..8))
                .prop_map(|(t, c)| Item::new(t, Value::Structure(c)))
        })
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(item in arb_item()) {
            let bytes = encode(&item);
            prop_assert_eq!(frame_len(&bytes), Some(bytes.len()));
            let decoded = d(&bytes);
            prop_assert_eq!(decoded.as_ref(), Ok(&item));
            // And for these valid encodings, encode inverts decode.
            prop_assert_eq!(encode(&decoded.unwrap()), bytes);
        }

        #[test]
        fn mutated_encodings_decode_to_themselves_or_fail(
            item in arb_item(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encode(&item);
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if let Ok(decoded) = d(&bytes) {
                prop_assert_eq!(encode(&decoded), bytes);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(item) = d(&bytes) {
                prop_assert_eq!(encode(&item), bytes);
            }
        }
    }
}
