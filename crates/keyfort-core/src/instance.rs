//! Instances (tenants) and their master keys (DESIGN §2).
//!
//! ```text
//!                 initialize (MK created, parts handed out)
//!  Uninitialized ───────────────────────────────────────────▶ Unsealed
//!                                                              │   ▲
//!                                     seal, or process restart │   │ M parts / HSM / dev key file
//!                                                              ▼   │
//!                                                             Sealed
//!  Sealed/Unsealed ── zeroize (M custodian signatures) ──▶ Zeroized (terminal)
//! ```
//!
//! Only `uninitialized`, `initialized` and `zeroized` are stored. Whether an initialized instance
//! is sealed is a property of the running process: its master key lives in memory only
//! ([`MasterKeys`]), so every restart leaves every instance sealed until its key is loaded again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use keyfort_crypto::seal::MasterKey;
use keyfort_store::InstanceRecord;

use crate::Result;
use crate::error::CoreError;

/// Stored value of `instances.state` before initialization.
pub(crate) const STORED_UNINITIALIZED: &str = "uninitialized";
/// Stored value of `instances.state` once a master key exists.
pub(crate) const STORED_INITIALIZED: &str = "initialized";
/// Stored value of `instances.state` after zeroization.
pub(crate) const STORED_ZEROIZED: &str = "zeroized";

/// The state of an instance as seen by callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// No master key exists yet.
    Uninitialized,
    /// A master key exists but is not loaded: every key operation is refused.
    Sealed,
    /// The master key is loaded: key operations work.
    Unsealed,
    /// The master key and all key material are gone for good.
    Zeroized,
}

impl InstanceState {
    /// Lower-case name for APIs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Uninitialized => "uninitialized",
            InstanceState::Sealed => "sealed",
            InstanceState::Unsealed => "unsealed",
            InstanceState::Zeroized => "zeroized",
        }
    }
}

/// How an instance's master key is loaded after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnsealMethod {
    /// Not decided yet (uninitialized instance).
    None,
    /// A key file in the data directory; only for `keyfort server --dev`.
    DevKeyFile,
    /// M-of-N parts held by custodians.
    Custodians,
    /// An AES key held in a PKCS#11 HSM wraps the master key.
    Hsm,
}

impl UnsealMethod {
    /// The method's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            UnsealMethod::None => "",
            UnsealMethod::DevKeyFile => "dev_key_file",
            UnsealMethod::Custodians => "custodians",
            UnsealMethod::Hsm => "hsm",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<UnsealMethod> {
        match s {
            "" => Some(UnsealMethod::None),
            "dev_key_file" => Some(UnsealMethod::DevKeyFile),
            "custodians" => Some(UnsealMethod::Custodians),
            "hsm" => Some(UnsealMethod::Hsm),
            _ => None,
        }
    }
}

/// An instance as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub state: InstanceState,
    /// Version of the current master key (0 before initialization).
    pub mk_version: u32,
    pub unseal_method: UnsealMethod,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Instance {
    pub(crate) fn from_record(record: &InstanceRecord, unsealed: bool) -> Result<Instance> {
        let corrupt = || CoreError::CorruptRecord {
            table: "instances",
            id: record.id.clone(),
            source: keyfort_store::StoreError::Corrupt {
                table: "instances",
                id: record.id.clone(),
                detail: "unknown state, unseal method or master key version".into(),
            },
        };
        let state = match record.state.as_str() {
            STORED_UNINITIALIZED => InstanceState::Uninitialized,
            STORED_INITIALIZED if unsealed => InstanceState::Unsealed,
            STORED_INITIALIZED => InstanceState::Sealed,
            STORED_ZEROIZED => InstanceState::Zeroized,
            _ => return Err(corrupt()),
        };
        Ok(Instance {
            id: record.id.clone(),
            name: record.name.clone(),
            state,
            mk_version: u32::try_from(record.mk_version).map_err(|_| corrupt())?,
            unseal_method: UnsealMethod::parse(&record.unseal_method).ok_or_else(corrupt)?,
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }
}

/// The master keys of unsealed instances, in memory only.
///
/// An instance may hold several master key versions at once while a rotation re-seals its objects;
/// the highest version is the current one, used for all new seals.
#[derive(Default)]
pub(crate) struct MasterKeys {
    by_instance: RwLock<HashMap<String, Arc<LoadedKeys>>>,
}

/// The loaded master key versions of one instance, newest last.
pub(crate) struct LoadedKeys {
    keys: Vec<Arc<MasterKey>>,
    /// What the GREP11 door derived from blobs that opened under exactly these keys; dropped
    /// with them (seal, rotation).
    pub(crate) grep11_opened: crate::grep11::OpenedBlobs,
}

impl LoadedKeys {
    fn new(keys: Vec<Arc<MasterKey>>) -> LoadedKeys {
        LoadedKeys {
            keys,
            grep11_opened: crate::grep11::OpenedBlobs::default(),
        }
    }

    /// The current (newest) master key.
    pub(crate) fn current(&self) -> &MasterKey {
        // Invariant: a LoadedKeys is only built from a non-empty list (see MasterKeys::load).
        &self.keys[self.keys.len() - 1]
    }

    /// The loaded key of a given version, if any.
    pub(crate) fn version(&self, version: u32) -> Option<&MasterKey> {
        self.keys
            .iter()
            .map(AsRef::as_ref)
            .find(|k| k.version() == version)
    }

    /// The current key, shared.
    pub(crate) fn current_shared(&self) -> Arc<MasterKey> {
        // Invariant: never empty (see MasterKeys::load_shared).
        self.keys[self.keys.len() - 1].clone()
    }
}

impl MasterKeys {
    /// The loaded keys of an instance, if it is unsealed.
    pub(crate) fn get(&self, instance_id: &str) -> Option<Arc<LoadedKeys>> {
        self.read().get(instance_id).cloned()
    }

    /// The id of the one unsealed instance, if exactly one is unsealed.
    pub(crate) fn only_loaded(&self) -> Option<String> {
        let map = self.read();
        let mut ids = map.keys();
        match (ids.next(), ids.next()) {
            (Some(id), None) => Some(id.clone()),
            _ => None,
        }
    }

    /// Every unsealed instance with its current master key version.
    pub(crate) fn loaded_versions(&self) -> Vec<(String, u32)> {
        self.read()
            .iter()
            .map(|(id, keys)| (id.clone(), keys.current().version()))
            .collect()
    }

    /// Whether an instance is unsealed.
    pub(crate) fn is_loaded(&self, instance_id: &str) -> bool {
        self.read().contains_key(instance_id)
    }

    /// Loads (replaces) the master keys of an instance; ignored if `keys` is empty.
    pub(crate) fn load(&self, instance_id: &str, keys: Vec<MasterKey>) {
        self.load_shared(instance_id, keys.into_iter().map(Arc::new).collect());
    }

    /// [`MasterKeys::load`] with keys that may also be held elsewhere.
    pub(crate) fn load_shared(&self, instance_id: &str, mut keys: Vec<Arc<MasterKey>>) {
        if keys.is_empty() {
            return;
        }
        keys.sort_by_key(|k| k.version());
        self.write()
            .insert(instance_id.to_owned(), Arc::new(LoadedKeys::new(keys)));
    }

    /// Keeps only the current master key of an instance (the end of a rotation); the others
    /// are dropped, and zeroized once no task still holds them.
    pub(crate) fn retain_current(&self, instance_id: &str) {
        let mut map = self.write();
        if let Some(loaded) = map.get(instance_id) {
            let current = loaded.current_shared();
            map.insert(
                instance_id.to_owned(),
                Arc::new(LoadedKeys::new(vec![current])),
            );
        }
    }

    /// [`MasterKeys::unload`] unless the current loaded version is `version` — checked and done
    /// under one lock, so a load of that version racing with the caller is never undone.
    pub(crate) fn unload_unless(&self, instance_id: &str, version: u32) -> bool {
        let mut map = self.write();
        match map.get(instance_id) {
            Some(keys) if keys.current().version() != version => {
                map.remove(instance_id);
                true
            }
            _ => false,
        }
    }

    /// Forgets an instance's master keys at once (seal). Key material in flight in other tasks is
    /// dropped (and zeroized) when those tasks finish.
    pub(crate) fn unload(&self, instance_id: &str) -> bool {
        self.write().remove(instance_id).is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<LoadedKeys>>> {
        // A poisoned lock only means another thread panicked while holding it; the map itself is
        // always in a consistent state (single insert/remove calls), so keep using it.
        self.by_instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<LoadedKeys>>> {
        self.by_instance
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unload_unless_keeps_the_named_version() {
        let keys = MasterKeys::default();
        assert!(!keys.unload_unless("i", 2), "nothing loaded");
        keys.load("i", vec![MasterKey::generate(2).unwrap()]);
        assert!(!keys.unload_unless("i", 2));
        assert!(keys.is_loaded("i"));
        assert_eq!(keys.loaded_versions(), [("i".to_owned(), 2)]);
        assert!(keys.unload_unless("i", 3));
        assert!(!keys.is_loaded("i"));
        assert!(keys.loaded_versions().is_empty());
    }

    #[test]
    fn loaded_keys_pick_newest_as_current() {
        let keys = MasterKeys::default();
        assert!(keys.get("i").is_none());
        keys.load(
            "i",
            vec![
                MasterKey::generate(2).unwrap(),
                MasterKey::generate(1).unwrap(),
            ],
        );
        let loaded = keys.get("i").unwrap();
        assert_eq!(loaded.current().version(), 2);
        assert_eq!(loaded.version(1).map(MasterKey::version), Some(1));
        assert!(loaded.version(3).is_none());
        assert!(keys.unload("i"));
        assert!(!keys.is_loaded("i"));
        keys.load("i", Vec::new());
        assert!(!keys.is_loaded("i"));
    }

    #[test]
    fn state_from_record() {
        let mut record = InstanceRecord {
            id: "i".into(),
            name: "n".into(),
            state: STORED_INITIALIZED.into(),
            mk_version: 1,
            unseal_method: "dev_key_file".into(),
            mk_check_value: vec![],
            unseal_config: "{}".into(),
            created_at: 0,
            updated_at: 0,
            row_version: 1,
        };
        assert_eq!(
            Instance::from_record(&record, false).unwrap().state,
            InstanceState::Sealed
        );
        assert_eq!(
            Instance::from_record(&record, true).unwrap().state,
            InstanceState::Unsealed
        );
        record.state = STORED_UNINITIALIZED.into();
        assert_eq!(
            Instance::from_record(&record, false).unwrap().state,
            InstanceState::Uninitialized
        );
        record.state = "bogus".into();
        assert!(matches!(
            Instance::from_record(&record, false),
            Err(CoreError::CorruptRecord {
                table: "instances",
                ..
            })
        ));
        record.state = STORED_INITIALIZED.into();
        record.mk_version = -1;
        assert!(Instance::from_record(&record, false).is_err());
    }
}
