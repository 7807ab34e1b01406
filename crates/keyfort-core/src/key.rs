//! Keys: metadata, creation rules, and how their material is sealed.

use std::fmt;

pub use keyfort_store::{
    Comparison, DateCondition, KeyDate, KeySort, KeySortField, SearchMode, SearchScope,
};
use keyfort_store::{KeyFilter, KeyRecord, StoreError};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::Result;
use crate::error::CoreError;
use crate::lifecycle::{KeyState, Usage};

/// The key ring every instance has and keys go to by default.
pub const DEFAULT_KEY_RING: &str = "default";
/// Most aliases a key may have (Key Protect §4).
pub const MAX_ALIASES: usize = 5;
/// Most tags a key may have.
pub const MAX_TAGS: usize = 30;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 30;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 240;
/// Longest key name.
pub const MAX_NAME_LEN: usize = 90;
/// Words that cannot be aliases because they are path segments of the Key Protect API.
const RESERVED_ALIASES: [&str; 16] = [
    "allowed_ip",
    "key",
    "keys",
    "metadata",
    "policy",
    "policies",
    "registration",
    "registrations",
    "ring",
    "rings",
    "rotate",
    "wrap",
    "unwrap",
    "rewrap",
    "version",
    "versions",
];

/// Root keys never leave the server; standard keys are extractable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Root,
    Standard,
}

/// A key's metadata as callers see it. Never holds material.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub instance_id: String,
    pub id: String,
    pub key_ring_id: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub aliases: Vec<String>,
    pub object_type: String,
    pub algorithm: String,
    pub bit_length: u32,
    pub extractable: bool,
    pub imported: bool,
    pub state: KeyState,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub activation_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub deactivated_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub deleted_by: Option<String>,
    pub last_rotated_at: Option<i64>,
    pub current_version_id: String,
    /// Other non-secret attributes (policies, protocol-specific attributes).
    pub attributes: Map<String, Value>,
    /// For optimistic concurrency: the row version this view was read at.
    pub row_version: i64,
}

/// The attribute a door sets (to `true`) on a key whose material must never leave the server in
/// the clear, such as a KMIP object marked Extractable false or Sensitive true: the requests that
/// only give material in the clear (Key Protect's and the admin API's) refuse it, or leave it
/// out of a key's representation.
pub const NO_CLEAR_EXPORT: &str = "no_clear_export";

impl Key {
    /// Whether the key's material may leave the server in the clear: an extractable (standard)
    /// key that no door marked [`NO_CLEAR_EXPORT`].
    pub fn exports_in_clear(&self) -> bool {
        self.extractable && self.attributes.get(NO_CLEAR_EXPORT) != Some(&Value::Bool(true))
    }

    /// The key's state at `now` (ms): an Active key past its expiration date is Deactivated.
    /// Key Protect deactivates such a key within the hour; the maintenance pass records the
    /// change ([`Keyfort::run_maintenance`](crate::Keyfort::run_maintenance)), and until it
    /// has, every use of the key already sees it deactivated.
    pub fn state_at(&self, now: i64) -> KeyState {
        if self.state == KeyState::Active && self.expires_at.is_some_and(|e| e <= now) {
            KeyState::Deactivated
        } else {
            self.state
        }
    }

    /// Refuses `usage` unless the key's state at `now` ([`Self::state_at`]) permits it.
    pub(crate) fn require_usage(&self, usage: Usage, now: i64) -> Result<()> {
        let state = self.state_at(now);
        if state.permits(usage) {
            Ok(())
        } else {
            Err(CoreError::KeyNotUsable {
                id: self.id.clone(),
                state,
                usage,
            })
        }
    }

    /// Root or standard.
    pub fn kind(&self) -> KeyKind {
        if self.extractable {
            KeyKind::Standard
        } else {
            KeyKind::Root
        }
    }

    pub(crate) fn from_record(r: KeyRecord) -> Result<Key> {
        let corrupt = |detail: &str| CoreError::CorruptRecord {
            table: "keys",
            id: r.id.clone(),
            source: StoreError::Corrupt {
                table: "keys",
                id: r.id.clone(),
                detail: detail.into(),
            },
        };
        let state = KeyState::from_code(r.state).ok_or_else(|| corrupt("unknown state"))?;
        let bit_length = u32::try_from(r.bit_length).map_err(|_| corrupt("bad bit length"))?;
        let attributes = match serde_json::from_str::<Value>(&r.attributes) {
            Ok(Value::Object(map)) => map,
            _ => return Err(corrupt("attributes are not a JSON object")),
        };
        Ok(Key {
            instance_id: r.instance_id,
            id: r.id,
            key_ring_id: r.key_ring_id,
            name: r.name,
            description: r.description,
            tags: r.tags,
            aliases: r.aliases,
            object_type: r.object_type,
            algorithm: r.algorithm,
            bit_length,
            extractable: r.extractable,
            imported: r.imported,
            state,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
            activation_at: r.activation_at,
            expires_at: r.expires_at,
            deactivated_at: r.deactivated_at,
            deleted_at: r.deleted_at,
            deleted_by: r.deleted_by,
            last_rotated_at: r.last_rotated_at,
            current_version_id: r.current_version_id,
            attributes,
            row_version: r.row_version,
        })
    }

    pub(crate) fn to_record(&self) -> KeyRecord {
        KeyRecord {
            instance_id: self.instance_id.clone(),
            id: self.id.clone(),
            key_ring_id: self.key_ring_id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            aliases: self.aliases.clone(),
            object_type: self.object_type.clone(),
            algorithm: self.algorithm.clone(),
            bit_length: i64::from(self.bit_length),
            extractable: self.extractable,
            imported: self.imported,
            state: self.state.code(),
            created_at: self.created_at,
            created_by: self.created_by.clone(),
            updated_at: self.updated_at,
            activation_at: self.activation_at,
            expires_at: self.expires_at,
            deactivated_at: self.deactivated_at,
            deleted_at: self.deleted_at,
            deleted_by: self.deleted_by.clone(),
            last_rotated_at: self.last_rotated_at,
            current_version_id: self.current_version_id.clone(),
            attributes: Value::Object(self.attributes.clone()).to_string(),
            row_version: self.row_version,
        }
    }

    /// The security attributes bound into every sealed version of this key: changing any of
    /// them in the database makes the material unusable.
    pub(crate) fn seal_attributes(&self) -> Vec<u8> {
        format!(
            "keyfort-key-v1;type={};alg={};bits={};extractable={}",
            self.object_type,
            self.algorithm,
            self.bit_length,
            u8::from(self.extractable)
        )
        .into_bytes()
    }
}

/// One version of a key's material (metadata only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    pub id: String,
    /// 1 for the first version, then +1 per rotation.
    pub seq: u32,
    pub created_at: i64,
    /// Master key version its material is sealed under.
    pub mk_version: u32,
}

/// The sealed-object id of one version of a key.
pub(crate) fn seal_object_id(key_id: &str, version_id: &str) -> String {
    format!("key/{key_id}/{version_id}")
}

/// A request to create (generate or import) a symmetric key.
pub struct NewKey {
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub aliases: Vec<String>,
    /// `None` means the `default` ring.
    pub key_ring_id: Option<String>,
    /// `false` makes a root key.
    pub extractable: bool,
    /// Key length in bits for generated keys (128, 192 or 256); ignored when importing.
    pub bit_length: u32,
    /// Material to import instead of generating (16, 24 or 32 bytes).
    pub payload: Option<Zeroizing<Vec<u8>>>,
    pub expires_at: Option<i64>,
    /// `Active` (Key Protect) or `PreActive` (KMIP, UKO).
    pub initial_state: KeyState,
    /// Initial non-secret attributes.
    pub attributes: Map<String, Value>,
}

impl Default for NewKey {
    fn default() -> Self {
        NewKey {
            name: String::new(),
            description: None,
            tags: Vec::new(),
            aliases: Vec::new(),
            key_ring_id: None,
            extractable: false,
            bit_length: 256,
            payload: None,
            expires_at: None,
            initial_state: KeyState::Active,
            attributes: Map::new(),
        }
    }
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("key_ring_id", &self.key_ring_id)
            .field("extractable", &self.extractable)
            .field("bit_length", &self.bit_length)
            .field("payload", &self.payload.as_ref().map(|_| "<redacted>"))
            .field("initial_state", &self.initial_state)
            .finish_non_exhaustive()
    }
}

impl NewKey {
    /// Checks every field against Key Protect's rules (`specs/keyprotect-api.md` §4).
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field, rule| Err(CoreError::InvalidField { field, rule });
        if self.name.is_empty() || self.name.chars().count() > MAX_NAME_LEN {
            return invalid("name", "must be 1 to 90 characters");
        }
        if self.name.chars().any(char::is_control) {
            return invalid("name", "must not contain control characters");
        }
        if let Some(d) = &self.description
            && d.chars().count() > MAX_DESCRIPTION_LEN
        {
            return invalid("description", "must be at most 240 characters");
        }
        if self.tags.len() > MAX_TAGS {
            return invalid("tags", "at most 30 tags");
        }
        if self.tags.iter().any(|t| t.chars().count() > MAX_TAG_LEN) {
            return invalid("tags", "each tag must be at most 30 characters");
        }
        validate_aliases(&self.aliases)?;
        if let Some(ring) = &self.key_ring_id {
            validate_key_ring_id(ring)?;
        }
        match &self.payload {
            Some(p) if ![16, 24, 32].contains(&p.len()) => {
                invalid("payload", "must be 128, 192 or 256 bits of key material")
            }
            None if ![128, 192, 256].contains(&self.bit_length) => {
                invalid("bit_length", "must be 128, 192 or 256")
            }
            _ => Ok(()),
        }
    }
}

/// Checks an alias list: at most 5, each 2–90 characters of `[A-Za-z0-9_-]`, not a UUID, not
/// reserved, no duplicates.
pub(crate) fn validate_aliases(aliases: &[String]) -> Result<()> {
    let invalid = |rule| {
        Err(CoreError::InvalidField {
            field: "aliases",
            rule,
        })
    };
    if aliases.len() > MAX_ALIASES {
        return invalid("at most 5 aliases");
    }
    for (i, alias) in aliases.iter().enumerate() {
        if alias.len() < 2 || alias.len() > 90 {
            return invalid("each alias must be 2 to 90 characters");
        }
        if !alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return invalid("aliases may contain only letters, digits, '_' and '-'");
        }
        if uuid::Uuid::try_parse(alias).is_ok() {
            return invalid("an alias must not be a UUID");
        }
        if RESERVED_ALIASES
            .iter()
            .any(|r| r.eq_ignore_ascii_case(alias))
        {
            return invalid("that alias is a reserved word");
        }
        if aliases[..i].contains(alias) {
            return invalid("aliases must be distinct");
        }
    }
    Ok(())
}

/// Checks a key ring id: 2–100 characters of `[A-Za-z0-9-]`.
pub(crate) fn validate_key_ring_id(id: &str) -> Result<()> {
    if id.len() < 2 || id.len() > 100 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(CoreError::InvalidField {
            field: "key ring id",
            rule: "must be 2 to 100 characters of letters, digits and '-'",
        });
    }
    Ok(())
}

/// Which keys to list.
#[derive(Debug, Clone, Default)]
pub struct KeyQuery {
    pub key_ring_id: Option<String>,
    /// Empty means every state but the destroyed ones (Key Protect's default listing).
    pub states: Vec<KeyState>,
    pub extractable: Option<bool>,
    /// Key Protect search (§11): matched as `search_mode` says.
    pub search: Option<String>,
    pub search_mode: SearchMode,
    /// Conditions on key dates, all of which must hold.
    pub dates: Vec<DateCondition>,
    /// Sort order; empty means by creation time. Ties go by id.
    pub sort: Vec<KeySort>,
    pub offset: u64,
    pub limit: Option<u64>,
}

impl KeyQuery {
    pub(crate) fn to_filter(&self) -> KeyFilter {
        let states = if self.states.is_empty() {
            [
                KeyState::PreActive,
                KeyState::Active,
                KeyState::Suspended,
                KeyState::Deactivated,
                KeyState::Compromised,
            ]
            .iter()
            .map(|s| s.code())
            .collect()
        } else {
            self.states.iter().map(|s| s.code()).collect()
        };
        KeyFilter {
            key_ring_id: self.key_ring_id.clone(),
            states,
            extractable: self.extractable,
            search: self.search.clone(),
            search_mode: self.search_mode,
            id: None,
            dates: self.dates.clone(),
            sort: self.sort.clone(),
            offset: self.offset,
            limit: self.limit,
            without_kmip_adapter_objects: false,
            after: None,
        }
    }
}

/// One page of keys and the total matching.
#[derive(Debug, Clone)]
pub struct KeyListing {
    pub keys: Vec<Key>,
    pub total: u64,
    /// The search space was too large to search: the page holds only the key named by id or
    /// alias (Key Protect's `incompleteSearch`).
    pub incomplete_search: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key() -> NewKey {
        NewKey {
            name: "k".into(),
            ..NewKey::default()
        }
    }

    #[test]
    fn valid_requests_pass() {
        new_key().validate().unwrap();
        let k = NewKey {
            aliases: vec!["ab".into(), "my-key_1".into()],
            tags: vec!["t".into()],
            payload: Some(Zeroizing::new(vec![0; 24])),
            ..new_key()
        };
        k.validate().unwrap();
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let cases: Vec<(NewKey, &str)> = vec![
            (
                NewKey {
                    name: String::new(),
                    ..new_key()
                },
                "name",
            ),
            (
                NewKey {
                    name: "x".repeat(91),
                    ..new_key()
                },
                "name",
            ),
            (
                NewKey {
                    name: "a\nb".into(),
                    ..new_key()
                },
                "name",
            ),
            (
                NewKey {
                    description: Some("d".repeat(241)),
                    ..new_key()
                },
                "description",
            ),
            (
                NewKey {
                    tags: vec!["t".into(); 31],
                    ..new_key()
                },
                "tags",
            ),
            (
                NewKey {
                    tags: vec!["t".repeat(31)],
                    ..new_key()
                },
                "tags",
            ),
            (
                NewKey {
                    aliases: vec!["a".into()],
                    ..new_key()
                },
                "aliases",
            ),
            (
                NewKey {
                    aliases: vec!["a b".into()],
                    ..new_key()
                },
                "aliases",
            ),
            (
                NewKey {
                    aliases: vec!["wrap".into()],
                    ..new_key()
                },
                "aliases",
            ),
            (
                NewKey {
                    aliases: vec!["ab".into(), "ab".into()],
                    ..new_key()
                },
                "aliases",
            ),
            (
                NewKey {
                    aliases: vec!["2291e4ae-a14c-4af9-88f0-27c0cb2739e2".into()],
                    ..new_key()
                },
                "aliases",
            ),
            (
                NewKey {
                    aliases: (0..6).map(|i| format!("a{i}")).collect(),
                    ..new_key()
                },
                "aliases",
            ),
            (
                NewKey {
                    key_ring_id: Some("a b".into()),
                    ..new_key()
                },
                "key ring id",
            ),
            (
                NewKey {
                    payload: Some(Zeroizing::new(vec![0; 17])),
                    ..new_key()
                },
                "payload",
            ),
            (
                NewKey {
                    bit_length: 512,
                    ..new_key()
                },
                "bit_length",
            ),
        ];
        for (req, field) in cases {
            match req.validate() {
                Err(CoreError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{req:?}"),
                other => panic!("{req:?}: expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_never_shows_payload() {
        let k = NewKey {
            payload: Some(Zeroizing::new(vec![0xAB; 32])),
            ..new_key()
        };
        let text = format!("{k:?}");
        assert!(text.contains("<redacted>"));
        assert!(!text.contains("171"), "{text}");
    }

    #[test]
    fn default_listing_hides_destroyed_keys() {
        let f = KeyQuery::default().to_filter();
        assert!(!f.states.contains(&KeyState::Destroyed.code()));
        assert!(!f.states.contains(&KeyState::DestroyedCompromised.code()));
        assert!(f.states.contains(&KeyState::Active.code()));
    }
}
