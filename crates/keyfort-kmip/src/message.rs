//! Request and response messages (KMIP 1.4 §7, §6; KMIP 2.0 §8): typed Rust read from the TTLV
//! tree, with the Result Reason to answer for every defect.

use crate::ttlv::{Item, Tag, Value};
use crate::{BatchErrorContinuationOption, Operation, ResultReason, ResultStatus};

/// Most batch items accepted in one request.
pub const MAX_BATCH_ITEMS: usize = 64;

/// A protocol version (KMIP 1.4 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: i32,
    pub minor: i32,
}

impl ProtocolVersion {
    pub const fn new(major: i32, minor: i32) -> Self {
        Self { major, minor }
    }

    /// Whether messages of this version use the KMIP 2.x encoding of attributes.
    pub fn is_v2(self) -> bool {
        self.major >= 2
    }

    /// The version's TTLV structure.
    pub fn to_item(self) -> Item {
        structure(
            Tag::PROTOCOL_VERSION,
            vec![
                Item::new(Tag::PROTOCOL_VERSION_MAJOR, Value::Integer(self.major)),
                Item::new(Tag::PROTOCOL_VERSION_MINOR, Value::Integer(self.minor)),
            ],
        )
    }

    /// Reads a Protocol Version structure.
    pub fn from_item(item: &Item) -> Result<Self, Invalid> {
        let s = Struct::of(item)?;
        Ok(Self {
            major: s.integer(Tag::PROTOCOL_VERSION_MAJOR)?,
            minor: s.integer(Tag::PROTOCOL_VERSION_MINOR)?,
        })
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The versions this server speaks, newest first (what Discover Versions answers).
pub const SUPPORTED_VERSIONS: [ProtocolVersion; 7] = [
    ProtocolVersion::new(2, 1),
    ProtocolVersion::new(2, 0),
    ProtocolVersion::new(1, 4),
    ProtocolVersion::new(1, 3),
    ProtocolVersion::new(1, 2),
    ProtocolVersion::new(1, 1),
    ProtocolVersion::new(1, 0),
];

/// The version to answer a request of `requested` in: the same when supported, otherwise the
/// newest supported version of the same major, otherwise `None`.
pub fn negotiate(requested: ProtocolVersion) -> Option<ProtocolVersion> {
    if SUPPORTED_VERSIONS.contains(&requested) {
        return Some(requested);
    }
    SUPPORTED_VERSIONS
        .iter()
        .copied()
        .find(|v| v.major == requested.major && v.minor < requested.minor)
}

/// A defect in a request, with the Result Reason to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: ResultReason,
    pub message: String,
}

impl Invalid {
    pub fn new(reason: ResultReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    pub fn message(message: impl Into<String>) -> Self {
        Self::new(ResultReason::INVALID_MESSAGE, message)
    }

    pub fn field(message: impl Into<String>) -> Self {
        Self::new(ResultReason::INVALID_FIELD, message)
    }

    pub fn missing(tag: Tag) -> Self {
        Self::new(
            ResultReason::MISSING_DATA,
            format!("missing {}", tag_name(tag)),
        )
    }
}

/// A tag's name for messages.
pub fn tag_name(tag: Tag) -> String {
    match tag.name() {
        Some(n) => n.to_owned(),
        None => format!("tag 0x{:06X}", tag.value()),
    }
}

/// A Structure's children, with typed lookups that answer [`Invalid`] on a wrong shape.
#[derive(Debug, Clone, Copy)]
pub struct Struct<'a> {
    pub tag: Tag,
    pub items: &'a [Item],
}

impl<'a> Struct<'a> {
    /// The children of `item`, which must be a Structure.
    pub fn of(item: &'a Item) -> Result<Self, Invalid> {
        match &item.value {
            Value::Structure(items) => Ok(Self {
                tag: item.tag,
                items,
            }),
            _ => Err(Invalid::message(format!(
                "{} must be a Structure",
                tag_name(item.tag)
            ))),
        }
    }

    /// The first child with `tag`.
    pub fn get(&self, tag: Tag) -> Option<&'a Item> {
        self.items.iter().find(|i| i.tag == tag)
    }

    /// Every child with `tag`.
    pub fn all(&self, tag: Tag) -> impl Iterator<Item = &'a Item> + 'a {
        self.items.iter().filter(move |i| i.tag == tag)
    }

    pub fn require(&self, tag: Tag) -> Result<&'a Item, Invalid> {
        self.get(tag).ok_or_else(|| Invalid::missing(tag))
    }

    pub fn child(&self, tag: Tag) -> Result<Option<Struct<'a>>, Invalid> {
        self.get(tag).map(Struct::of).transpose()
    }

    pub fn integer(&self, tag: Tag) -> Result<i32, Invalid> {
        self.opt_integer(tag)?.ok_or_else(|| Invalid::missing(tag))
    }

    pub fn opt_integer(&self, tag: Tag) -> Result<Option<i32>, Invalid> {
        self.get(tag)
            .map(|i| match i.value {
                Value::Integer(v) => Ok(v),
                _ => Err(wrong_type(tag, "an Integer")),
            })
            .transpose()
    }

    pub fn enumeration(&self, tag: Tag) -> Result<u32, Invalid> {
        self.opt_enumeration(tag)?
            .ok_or_else(|| Invalid::missing(tag))
    }

    pub fn opt_enumeration(&self, tag: Tag) -> Result<Option<u32>, Invalid> {
        self.get(tag)
            .map(|i| match i.value {
                Value::Enumeration(v) => Ok(v),
                _ => Err(wrong_type(tag, "an Enumeration")),
            })
            .transpose()
    }

    pub fn opt_text(&self, tag: Tag) -> Result<Option<&'a str>, Invalid> {
        self.get(tag)
            .map(|i| match &i.value {
                Value::TextString(v) => Ok(v.as_str()),
                _ => Err(wrong_type(tag, "a Text String")),
            })
            .transpose()
    }

    pub fn text(&self, tag: Tag) -> Result<&'a str, Invalid> {
        self.opt_text(tag)?.ok_or_else(|| Invalid::missing(tag))
    }

    pub fn opt_bytes(&self, tag: Tag) -> Result<Option<&'a [u8]>, Invalid> {
        self.get(tag)
            .map(|i| match &i.value {
                Value::ByteString(v) => Ok(v.as_slice()),
                _ => Err(wrong_type(tag, "a Byte String")),
            })
            .transpose()
    }

    pub fn bytes(&self, tag: Tag) -> Result<&'a [u8], Invalid> {
        self.opt_bytes(tag)?.ok_or_else(|| Invalid::missing(tag))
    }

    pub fn opt_bool(&self, tag: Tag) -> Result<Option<bool>, Invalid> {
        self.get(tag)
            .map(|i| match i.value {
                Value::Boolean(v) => Ok(v),
                _ => Err(wrong_type(tag, "a Boolean")),
            })
            .transpose()
    }
}

fn wrong_type(tag: Tag, what: &str) -> Invalid {
    Invalid::new(
        ResultReason::INVALID_FIELD,
        format!("{} must be {what}", tag_name(tag)),
    )
}

/// A Structure item.
pub fn structure(tag: Tag, items: Vec<Item>) -> Item {
    Item::new(tag, Value::Structure(items))
}

/// The Request Header (KMIP 1.4 §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub version: ProtocolVersion,
    pub maximum_response_size: Option<i32>,
    pub batch_error_continuation: BatchErrorContinuationOption,
    pub batch_count: i32,
}

/// One batch item of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBatchItem {
    pub operation: Operation,
    /// Unique Batch Item ID, echoed in the response.
    pub id: Option<Vec<u8>>,
    /// The Request Payload (an empty Structure when absent).
    pub payload: Item,
}

/// A Request Message (KMIP 1.4 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMessage {
    pub header: RequestHeader,
    pub items: Vec<RequestBatchItem>,
}

/// A request the server cannot read as a message: what to answer instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    /// The version to answer in (the request's, when it could be read).
    pub version: ProtocolVersion,
    pub error: Invalid,
}

impl RequestMessage {
    /// Reads a Request Message from its TTLV tree.
    pub fn from_item(item: &Item) -> Result<Self, MessageError> {
        let fallback = ProtocolVersion::new(1, 0);
        let fail = |version, error| MessageError { version, error };
        if item.tag != Tag::REQUEST_MESSAGE {
            return Err(fail(fallback, Invalid::message("not a Request Message")));
        }
        let msg = Struct::of(item).map_err(|e| fail(fallback, e))?;
        let header = msg
            .require(Tag::REQUEST_HEADER)
            .and_then(Struct::of)
            .map_err(|e| fail(fallback, e))?;
        let requested = header
            .require(Tag::PROTOCOL_VERSION)
            .and_then(ProtocolVersion::from_item)
            .map_err(|e| fail(fallback, e))?;
        let Some(version) = negotiate(requested) else {
            return Err(fail(
                SUPPORTED_VERSIONS[0],
                Invalid::new(
                    ResultReason::OPERATION_NOT_SUPPORTED,
                    format!("protocol version {requested} is not supported"),
                ),
            ));
        };
        let read_header = || -> Result<RequestHeader, Invalid> {
            let batch_count = header.integer(Tag::BATCH_COUNT)?;
            let continuation = header
                .opt_enumeration(Tag::BATCH_ERROR_CONTINUATION_OPTION)?
                .map(BatchErrorContinuationOption)
                .unwrap_or(BatchErrorContinuationOption::STOP);
            if ![
                BatchErrorContinuationOption::CONTINUE,
                BatchErrorContinuationOption::STOP,
                BatchErrorContinuationOption::UNDO,
            ]
            .contains(&continuation)
            {
                return Err(Invalid::field("unknown Batch Error Continuation Option"));
            }
            if header.get(Tag::ASYNCHRONOUS_INDICATOR).is_some()
                && header.opt_bool(Tag::ASYNCHRONOUS_INDICATOR)? == Some(true)
            {
                return Err(Invalid::new(
                    ResultReason::FEATURE_NOT_SUPPORTED,
                    "asynchronous operations are not supported",
                ));
            }
            Ok(RequestHeader {
                version,
                maximum_response_size: header.opt_integer(Tag::MAXIMUM_RESPONSE_SIZE)?,
                batch_error_continuation: continuation,
                batch_count,
            })
        };
        let header = read_header().map_err(|e| fail(version, e))?;
        let items = msg
            .all(Tag::BATCH_ITEM)
            .map(read_batch_item)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(version, e))?;
        if items.is_empty() {
            return Err(fail(version, Invalid::message("no Batch Item")));
        }
        if items.len() > MAX_BATCH_ITEMS {
            return Err(fail(
                version,
                Invalid::message(format!("more than {MAX_BATCH_ITEMS} batch items")),
            ));
        }
        if usize::try_from(header.batch_count).ok() != Some(items.len()) {
            return Err(fail(
                version,
                Invalid::message("Batch Count does not match the batch items"),
            ));
        }
        Ok(Self { header, items })
    }
}

fn read_batch_item(item: &Item) -> Result<RequestBatchItem, Invalid> {
    let s = Struct::of(item)?;
    let operation = Operation(s.enumeration(Tag::OPERATION)?);
    let id = s.opt_bytes(Tag::UNIQUE_BATCH_ITEM_ID)?.map(<[u8]>::to_vec);
    let payload = match s.get(Tag::REQUEST_PAYLOAD) {
        Some(p) => {
            Struct::of(p)?;
            p.clone()
        }
        None => structure(Tag::REQUEST_PAYLOAD, Vec::new()),
    };
    Ok(RequestBatchItem {
        operation,
        id,
        payload,
    })
}

/// One batch item of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseBatchItem {
    pub operation: Option<Operation>,
    pub id: Option<Vec<u8>>,
    pub status: ResultStatus,
    pub reason: Option<ResultReason>,
    pub message: Option<String>,
    /// The Response Payload's children.
    pub payload: Option<Vec<Item>>,
}

impl ResponseBatchItem {
    pub fn success(operation: Operation, id: Option<Vec<u8>>, payload: Vec<Item>) -> Self {
        Self {
            operation: Some(operation),
            id,
            status: ResultStatus::SUCCESS,
            reason: None,
            message: None,
            payload: Some(payload),
        }
    }

    pub fn failure(operation: Option<Operation>, id: Option<Vec<u8>>, error: Invalid) -> Self {
        Self {
            operation,
            id,
            status: ResultStatus::OPERATION_FAILED,
            reason: Some(error.reason),
            message: Some(error.message),
            payload: None,
        }
    }

    fn into_item(self) -> Item {
        let mut items = Vec::with_capacity(6);
        if let Some(op) = self.operation {
            items.push(Item::new(Tag::OPERATION, Value::Enumeration(op.0)));
        }
        if let Some(id) = self.id {
            items.push(Item::new(Tag::UNIQUE_BATCH_ITEM_ID, Value::ByteString(id)));
        }
        items.push(Item::new(
            Tag::RESULT_STATUS,
            Value::Enumeration(self.status.0),
        ));
        if let Some(r) = self.reason {
            items.push(Item::new(Tag::RESULT_REASON, Value::Enumeration(r.0)));
        }
        if let Some(m) = self.message {
            items.push(Item::new(Tag::RESULT_MESSAGE, Value::TextString(m)));
        }
        if let Some(p) = self.payload {
            items.push(structure(Tag::RESPONSE_PAYLOAD, p));
        }
        structure(Tag::BATCH_ITEM, items)
    }
}

/// A Response Message (KMIP 1.4 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMessage {
    pub version: ProtocolVersion,
    /// POSIX seconds.
    pub time_stamp: i64,
    pub items: Vec<ResponseBatchItem>,
}

impl ResponseMessage {
    /// The message's TTLV tree (its payloads moved, not copied).
    pub fn into_item(self) -> Item {
        let count = i32::try_from(self.items.len()).unwrap_or(i32::MAX);
        let header = structure(
            Tag::RESPONSE_HEADER,
            vec![
                self.version.to_item(),
                Item::new(Tag::TIME_STAMP, Value::DateTime(self.time_stamp)),
                Item::new(Tag::BATCH_COUNT, Value::Integer(count)),
            ],
        );
        let mut items = vec![header];
        items.extend(self.items.into_iter().map(ResponseBatchItem::into_item));
        structure(Tag::RESPONSE_MESSAGE, items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: (i32, i32), count: i32, items: Vec<Item>) -> Item {
        let mut children = vec![structure(
            Tag::REQUEST_HEADER,
            vec![
                ProtocolVersion::new(version.0, version.1).to_item(),
                Item::new(Tag::BATCH_COUNT, Value::Integer(count)),
            ],
        )];
        children.extend(items);
        structure(Tag::REQUEST_MESSAGE, children)
    }

    fn batch_item(op: Operation, id: Option<&[u8]>) -> Item {
        let mut c = vec![Item::new(Tag::OPERATION, Value::Enumeration(op.0))];
        if let Some(id) = id {
            c.push(Item::new(
                Tag::UNIQUE_BATCH_ITEM_ID,
                Value::ByteString(id.to_vec()),
            ));
        }
        structure(Tag::BATCH_ITEM, c)
    }

    #[test]
    fn reads_a_request_with_ids_and_default_payload() {
        let m = RequestMessage::from_item(&request(
            (1, 1),
            2,
            vec![
                batch_item(Operation::DISCOVER_VERSIONS, Some(b"QLKC\x01\0\0\0")),
                batch_item(Operation::QUERY, None),
            ],
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.header.version, ProtocolVersion::new(1, 1));
        assert_eq!(
            m.header.batch_error_continuation,
            BatchErrorContinuationOption::STOP
        );
        assert_eq!(m.items.len(), 2);
        assert_eq!(m.items[0].id.as_deref(), Some(&b"QLKC\x01\0\0\0"[..]));
        assert_eq!(m.items[1].payload, structure(Tag::REQUEST_PAYLOAD, vec![]));
    }

    #[test]
    fn defects_have_reasons() {
        let err = |item: Item| {
            RequestMessage::from_item(&item)
                .err()
                .map(|e| e.error.reason)
        };
        assert_eq!(
            err(request((1, 2), 2, vec![batch_item(Operation::GET, None)])),
            Some(ResultReason::INVALID_MESSAGE)
        );
        assert_eq!(
            err(request((3, 0), 1, vec![batch_item(Operation::GET, None)])),
            Some(ResultReason::OPERATION_NOT_SUPPORTED)
        );
        assert_eq!(
            err(request((1, 2), 0, vec![])),
            Some(ResultReason::INVALID_MESSAGE)
        );
        assert_eq!(
            err(structure(Tag::REQUEST_MESSAGE, vec![])),
            Some(ResultReason::MISSING_DATA)
        );
        assert_eq!(
            err(Item::new(Tag::REQUEST_MESSAGE, Value::Integer(1))),
            Some(ResultReason::INVALID_MESSAGE)
        );
    }

    #[test]
    fn negotiation_answers_in_a_supported_version() {
        assert_eq!(
            negotiate(ProtocolVersion::new(1, 1)),
            Some(ProtocolVersion::new(1, 1))
        );
        assert_eq!(
            negotiate(ProtocolVersion::new(1, 9)),
            Some(ProtocolVersion::new(1, 4))
        );
        assert_eq!(
            negotiate(ProtocolVersion::new(2, 5)),
            Some(ProtocolVersion::new(2, 1))
        );
        assert_eq!(negotiate(ProtocolVersion::new(3, 0)), None);
    }
}
