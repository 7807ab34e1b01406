//! Several nodes on one PostgreSQL store (DESIGN §4): keeping this node's caches coherent with
//! the writes of the others.
//!
//! The store announces every committed change to a key, an instance or a principal
//! ([`keyfort_store::postgres::Change`]); [`Keyfort::follow_changes`] applies them to this node as
//! they arrive, typically within milliseconds of the other node's commit:
//!
//! - a key: its entries leave the key cache (disable, delete, rotate, re-seal, purge, ...);
//! - an instance: its key cache entries and cached `allowedIP` policy go; if its stored master
//!   key version is no longer the one loaded here (a rotation elsewhere), or it was zeroized, the
//!   master keys loaded here are unloaded: the instance is sealed on this node rather than used
//!   with a stale key;
//! - principals or API keys: the cache of authenticated callers is emptied.
//!
//! While the notification connection is down — and before it first listens — changes may be
//! missed, so the key cache is switched off (every request reads the store) and the other caches
//! are emptied; they come back when it listens again.

use keyfort_store::postgres::{Change, Changes};

use crate::instance::STORED_ZEROIZED;
use crate::service::Keyfort;

impl Keyfort {
    /// Applies the changes of `changes` to this node's caches until the stream ends (the store
    /// closed). Call it in its own task, once, right after [`Keyfort::open`] on a PostgreSQL
    /// store.
    pub async fn follow_changes(&self, mut changes: Changes) {
        self.apply_change(&Change::Lost).await;
        while let Some(change) = changes.next().await {
            self.apply_change(&change).await;
        }
        self.apply_change(&Change::Lost).await;
    }

    /// Applies one change to this node's caches.
    pub async fn apply_change(&self, change: &Change) {
        match change {
            Change::Key {
                instance_id,
                key_id,
            } => self.inner.key_cache.forget_key(instance_id, key_id),
            Change::Instance { instance_id } => {
                self.inner.key_cache.forget_instance(instance_id);
                lock(&self.inner.allowed_ips).remove(instance_id);
                self.check_loaded_master_key(instance_id).await;
            }
            Change::Principals => lock(&self.inner.callers).clear(),
            Change::Lost => {
                tracing::warn!("change notifications interrupted: caches off until they resume");
                self.inner.key_cache.set_off(true);
                self.forget_everything();
            }
            Change::Listening => {
                self.forget_everything();
                self.inner.key_cache.set_off(false);
                tracing::info!("following the change notifications of every node");
            }
            // A notification this build cannot read: anything may have changed.
            _ => self.forget_everything(),
        }
    }

    fn forget_everything(&self) {
        self.inner.key_cache.clear();
        lock(&self.inner.callers).clear();
        lock(&self.inner.allowed_ips).clear();
    }

    /// Seals this node's copy of an instance whose stored master key version moved past the
    /// loaded one, or which was zeroized.
    async fn check_loaded_master_key(&self, instance_id: &str) {
        let Some(loaded) = self.inner.master_keys.get(instance_id) else {
            return;
        };
        let record = match self.store().instance(instance_id).await {
            Ok(record) => record,
            Err(e) => {
                // Unknown: be safe, as if it had changed.
                tracing::warn!(instance = instance_id, error = %e, "cannot re-read a changed instance; sealing it here");
                None
            }
        };
        let current = i64::from(loaded.current().version());
        let stale = match &record {
            Some(r) => r.state == STORED_ZEROIZED || r.mk_version != current,
            None => true,
        };
        if stale && self.inner.master_keys.unload(instance_id) {
            self.inner.key_cache.forget_instance(instance_id);
            tracing::warn!(
                instance = instance_id,
                "instance changed on another node (master key rotated or zeroized): sealed here"
            );
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
