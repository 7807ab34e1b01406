//! A short-lived cache of keys and their unsealed material, for the wrap / unwrap path and the
//! KMIP crypto operations and Get.
//!
//! Entries live at most [`KEY_CACHE_TTL_MS`]; every write the core makes to a key removes that
//! key's entries at once, and sealing or zeroizing an instance removes all of its entries, so on
//! one node a change is seen by the next request. Other nodes see it within the TTL, or sooner
//! when they follow the store's change notifications (`cluster.rs`), which also switch the cache
//! off while they may be missed. Cached material is zeroized when its entry is dropped. A KMIP
//! adapter's object keeps no material here: it is unwrapped with its adapter's root key at each
//! use, so that disabling that root key suspends the object at once.
//!
//! A key this node has just created is put in the cache with its material ([`KeyCache::prime`])
//! unless some entry was removed meanwhile, so that the usual next request (KMIP Get, Encrypt)
//! reads nothing from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use zeroize::Zeroizing;

use crate::key::Key;

/// Longest life of a cached entry, in milliseconds.
pub(crate) const KEY_CACHE_TTL_MS: i64 = 1_000;
/// Most cached entries before the cache is emptied.
const KEY_CACHE_MAX: usize = 50_000;

/// One cached key and the versions' material unsealed so far.
pub(crate) struct CachedKey {
    pub(crate) key: Key,
    fetched_at: i64,
    materials: Mutex<HashMap<String, Arc<Zeroizing<Vec<u8>>>>>,
}

impl CachedKey {
    pub(crate) fn material(&self, version_id: &str) -> Option<Arc<Zeroizing<Vec<u8>>>> {
        lock(&self.materials).get(version_id).cloned()
    }

    pub(crate) fn put_material(&self, version_id: &str, material: Arc<Zeroizing<Vec<u8>>>) {
        lock(&self.materials).insert(version_id.to_owned(), material);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Cached keys by (instance, id or alias used to name them).
#[derive(Default)]
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<(String, String), Arc<CachedKey>>>,
    /// While set, nothing is served from or kept in the cache.
    off: AtomicBool,
    /// Counts the removals (of a key, an instance, everything), changed under the write lock:
    /// [`KeyCache::prime`] keeps nothing if one happened since its caller wrote the key.
    removals: AtomicU64,
}

impl KeyCache {
    pub(crate) fn get(&self, instance_id: &str, name: &str, now: i64) -> Option<Arc<CachedKey>> {
        if self.off.load(Ordering::Acquire) {
            return None;
        }
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(&(instance_id.to_owned(), name.to_owned()))
            .filter(|e| now - e.fetched_at < KEY_CACHE_TTL_MS)
            .cloned()
    }

    pub(crate) fn insert(
        &self,
        instance_id: &str,
        name: &str,
        key: Key,
        now: i64,
    ) -> Arc<CachedKey> {
        let entry = Arc::new(CachedKey {
            key,
            fetched_at: now,
            materials: Mutex::new(HashMap::new()),
        });
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.off.load(Ordering::Acquire) {
            // Served once, kept nowhere.
            return entry;
        }
        if entries.len() >= KEY_CACHE_MAX {
            entries.retain(|_, e| now - e.fetched_at < KEY_CACHE_TTL_MS);
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert((instance_id.to_owned(), name.to_owned()), entry.clone());
        entry
    }

    /// The removal count, to pass to [`KeyCache::prime`]: read it before the write whose result
    /// is primed.
    pub(crate) fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// Keeps a key just written by this node, with the material of its current version, so that
    /// the next use reads nothing; unless the cache is off or any entry was removed since
    /// `removals_seen` (a concurrent change of that key might be older than this copy).
    pub(crate) fn prime(
        &self,
        key: &Key,
        material: Arc<Zeroizing<Vec<u8>>>,
        now: i64,
        removals_seen: u64,
    ) {
        let entry = Arc::new(CachedKey {
            key: key.clone(),
            fetched_at: now,
            materials: Mutex::new(HashMap::from([(key.current_version_id.clone(), material)])),
        });
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.off.load(Ordering::Acquire)
            || self.removals.load(Ordering::Acquire) != removals_seen
        {
            return;
        }
        if entries.len() >= KEY_CACHE_MAX {
            return;
        }
        entries.insert((key.instance_id.clone(), key.id.clone()), entry);
    }

    /// Forgets every entry of one key.
    pub(crate) fn forget_key(&self, instance_id: &str, key_id: &str) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.removals.fetch_add(1, Ordering::AcqRel);
        entries.retain(|(i, _), e| !(i == instance_id && e.key.id == key_id));
    }

    /// Switches the cache off (emptying it) or back on.
    pub(crate) fn set_off(&self, off: bool) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.off.store(off, Ordering::Release);
        if off {
            self.removals.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }

    /// Forgets every entry.
    pub(crate) fn clear(&self) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.removals.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Forgets every entry of an instance.
    pub(crate) fn forget_instance(&self, instance_id: &str) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.removals.fetch_add(1, Ordering::AcqRel);
        entries.retain(|(i, _), _| i != instance_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::KeyState;

    fn key(id: &str) -> Key {
        Key {
            instance_id: "i".into(),
            id: id.into(),
            key_ring_id: "default".into(),
            name: id.into(),
            description: None,
            tags: Vec::new(),
            aliases: Vec::new(),
            object_type: "SymmetricKey".into(),
            algorithm: "AES".into(),
            bit_length: 256,
            extractable: true,
            imported: false,
            state: KeyState::Active,
            created_at: 0,
            created_by: "p".into(),
            updated_at: 0,
            activation_at: None,
            expires_at: None,
            deactivated_at: None,
            deleted_at: None,
            deleted_by: None,
            last_rotated_at: None,
            current_version_id: format!("{id}-v1"),
            attributes: serde_json::Map::new(),
            row_version: 1,
        }
    }

    fn material() -> Arc<Zeroizing<Vec<u8>>> {
        Arc::new(Zeroizing::new(vec![7; 32]))
    }

    #[test]
    fn a_primed_key_is_served_with_its_material() {
        let cache = KeyCache::default();
        let seen = cache.removals();
        cache.prime(&key("k1"), material(), 100, seen);
        let entry = cache.get("i", "k1", 150).expect("primed");
        assert_eq!(entry.key.id, "k1");
        assert_eq!(
            entry.material("k1-v1").as_deref().map(|m| m.len()),
            Some(32)
        );
        // Fresh for the TTL only.
        assert!(cache.get("i", "k1", 100 + KEY_CACHE_TTL_MS).is_none());
    }

    #[test]
    fn a_removal_since_the_write_keeps_the_copy_out() {
        for remove in [
            |c: &KeyCache| c.forget_key("i", "k1"),
            |c: &KeyCache| c.forget_key("i", "other"),
            |c: &KeyCache| c.forget_instance("i"),
            |c: &KeyCache| c.clear(),
        ] {
            let cache = KeyCache::default();
            let seen = cache.removals();
            remove(&cache);
            cache.prime(&key("k1"), material(), 100, seen);
            assert!(cache.get("i", "k1", 100).is_none());
        }
        // Nor while the cache is off.
        let cache = KeyCache::default();
        cache.set_off(true);
        let seen = cache.removals();
        cache.prime(&key("k1"), material(), 100, seen);
        cache.set_off(false);
        assert!(cache.get("i", "k1", 100).is_none());
    }
}
