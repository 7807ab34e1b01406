//! A short-lived cache of root keys and their unsealed material, for the wrap / unwrap path.
//!
//! Entries live at most [`KEY_CACHE_TTL_MS`]; every write the core makes to a key removes that
//! key's entries at once, and sealing or zeroizing an instance removes all of its entries, so on
//! one node a change is seen by the next request. Other nodes see it within the TTL, or sooner
//! when they follow the store's change notifications (`cluster.rs`), which also switch the cache
//! off while they may be missed. Cached material is zeroized when its entry is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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

    /// Forgets every entry of one key.
    pub(crate) fn forget_key(&self, instance_id: &str, key_id: &str) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
            entries.clear();
        }
    }

    /// Forgets every entry.
    pub(crate) fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Forgets every entry of an instance.
    pub(crate) fn forget_instance(&self, instance_id: &str) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|(i, _), _| i != instance_id);
    }
}
