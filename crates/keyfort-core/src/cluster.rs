//! Several nodes on one PostgreSQL store (DESIGN §4): keeping this node's caches coherent with
//! the writes of the others.
//!
//! The store announces every committed change to a key, an instance or a principal
//! ([`keyfort_store::postgres::Change`]); [`Keyfort::follow_changes`] applies them to this node as
//! they arrive, typically within milliseconds of the other node's commit:
//!
//! - a key: its entries leave the key cache (disable, delete, rotate, re-seal, purge, ...);
//! - an instance: its key cache entries and cached instance policies go; if its stored master
//!   key version is no longer the one loaded here (a rotation elsewhere), or it was zeroized, the
//!   master keys loaded here are unloaded: the instance is sealed on this node rather than used
//!   with a stale key;
//! - principals or API keys: the cache of authenticated callers is emptied.
//!
//! Master keys never go through the store. A node hands the current master key of an unsealed
//! instance to a peer over the node-to-node channel (mutual TLS with the cluster CA, in the
//! `keyfort` binary): [`Keyfort::export_master_key`] on the giving side,
//! [`Keyfort::import_master_key`] on the receiving side, which accepts the key only if its
//! version and check value are those stored for the instance, and then unseals exactly as a
//! custodian unseal does (audited, resuming a rotation's re-seal). Seals requested on a node are
//! announced to its peers ([`Keyfort::requested_seals`]), which apply them with
//! [`Keyfort::seal_here`].
//!
//! While the notification connection is down — and before it first listens — changes may be
//! missed, so the key cache is switched off (every request reads the store) and the other caches
//! are emptied; they come back when it listens again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use keyfort_crypto::seal::MasterKey;
use keyfort_store::postgres::{Change, Changes};
use tokio::sync::broadcast;
use zeroize::Zeroizing;

use crate::Result;
use crate::error::CoreError;
use crate::instance::STORED_ZEROIZED;
use crate::service::Keyfort;

/// Held while this node does a piece of cluster-wide work; dropping it releases the work.
pub type ClusterGuard = Box<dyn std::any::Any + Send>;

/// Takes the cluster-wide lock of a named piece of work if no node holds it (`None` if one
/// does): on PostgreSQL an advisory lock, released when the guard drops or the holder dies.
pub type ClusterLocks =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Option<ClusterGuard>> + Send>> + Send + Sync>;

/// This node's part in a cluster.
pub(crate) struct ClusterState {
    /// Seals requested on this node (by an administrator), for whoever forwards them to peers.
    seals: broadcast::Sender<String>,
    /// Set once on a shared store; without it every piece of work is this node's alone.
    locks: OnceLock<ClusterLocks>,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            seals: broadcast::channel(256).0,
            locks: OnceLock::new(),
        }
    }
}

impl ClusterState {
    pub(crate) fn announce_seal(&self, instance_id: &str) {
        // Nobody listening (a single node) is fine.
        let _ = self.seals.send(instance_id.to_owned());
    }
}

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
                lock(&self.inner.policies).remove(instance_id);
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
        lock(&self.inner.policies).clear();
    }

    /// Makes cluster-wide work (the re-seal job of a master key rotation) take `locks` first, so
    /// that one node at a time does it. Set once, before serving; later calls are ignored.
    pub fn set_cluster_locks(&self, locks: ClusterLocks) {
        let _ = self.inner.cluster.locks.set(locks);
    }

    /// The lock of a named piece of cluster-wide work, `None` if another node holds it.
    pub(crate) async fn cluster_exclusive(&self, name: &str) -> Option<ClusterGuard> {
        match self.inner.cluster.locks.get() {
            Some(locks) => locks(name.to_owned()).await,
            None => Some(Box::new(())),
        }
    }

    /// Starts the re-seal job of every instance unsealed here whose master key rotation is not
    /// finished (a job that stopped, or whose node died). Each job runs on one node at a time.
    pub fn resume_reseal_jobs(&self) {
        for (instance_id, _) in self.unsealed_here() {
            self.spawn_reseal(instance_id);
        }
    }

    /// The instances unsealed on this node, with their current master key version.
    pub fn unsealed_here(&self) -> Vec<(String, u32)> {
        self.inner.master_keys.loaded_versions()
    }

    /// Every initialized instance (sealed or not here).
    pub async fn initialized_instance_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .store()
            .list_instances()
            .await?
            .into_iter()
            .filter(|r| r.state == crate::instance::STORED_INITIALIZED)
            .map(|r| r.id)
            .collect())
    }

    /// The instances sealed by an administrator on this node from now on, as they happen.
    pub fn requested_seals(&self) -> broadcast::Receiver<String> {
        self.inner.cluster.seals.subscribe()
    }

    /// The current master key of an instance unsealed here, for a peer that proved it belongs to
    /// the cluster: its version and bytes.
    pub fn export_master_key(&self, instance_id: &str) -> Option<(u32, Zeroizing<Vec<u8>>)> {
        let loaded = self.inner.master_keys.get(instance_id)?;
        let current = loaded.current();
        Some((
            current.version(),
            Zeroizing::new(current.expose_secret().to_vec()),
        ))
    }

    /// Unseals an instance with a master key handed over by a peer. `Ok(false)` if it was
    /// unsealed here with that version already; [`CoreError::WrongMasterKey`] unless the version
    /// and check value are the stored ones.
    pub async fn import_master_key(
        &self,
        instance_id: &str,
        version: u32,
        bytes: &[u8],
    ) -> Result<bool> {
        if self
            .inner
            .master_keys
            .get(instance_id)
            .is_some_and(|k| k.current().version() == version)
        {
            return Ok(false);
        }
        let record = self.store().instance(instance_id).await?.ok_or_else(|| {
            CoreError::InstanceNotFound {
                id: instance_id.to_owned(),
            }
        })?;
        let mk = MasterKey::from_bytes(version, bytes)?;
        if record.state == STORED_ZEROIZED
            || record.mk_version != i64::from(version)
            || !keyfort_crypto::ct_eq(&mk.check_value(), &record.mk_check_value)
        {
            return Err(CoreError::WrongMasterKey {
                id: instance_id.to_owned(),
            });
        }
        self.finish_unseal(&record, mk).await?;
        Ok(true)
    }

    /// Seals an instance on this node only (a peer's seal); whether it was unsealed here.
    pub fn seal_here(&self, instance_id: &str) -> bool {
        self.inner.key_cache.forget_instance(instance_id);
        let sealed = self.inner.master_keys.unload(instance_id);
        if sealed {
            tracing::info!(instance = instance_id, "instance sealed (by a peer)");
        }
        sealed
    }

    /// Seals this node's copy of an instance whose stored master key version moved past the
    /// loaded one, or which was zeroized.
    async fn check_loaded_master_key(&self, instance_id: &str) {
        if !self.inner.master_keys.is_loaded(instance_id) {
            return;
        }
        let record = match self.store().instance(instance_id).await {
            Ok(record) => record,
            Err(e) => {
                // Unknown: be safe, as if it had changed.
                tracing::warn!(instance = instance_id, error = %e, "cannot re-read a changed instance; sealing it here");
                None
            }
        };
        // The notification follows the commit, so the record read here is at least as new as
        // the change. A rotation on this very node loads its new key right after committing:
        // `unload_unless` leaves that key alone.
        let sealed = match record
            .as_ref()
            .map(|r| (r.state == STORED_ZEROIZED, u32::try_from(r.mk_version).ok()))
        {
            Some((false, Some(version))) => {
                self.inner.master_keys.unload_unless(instance_id, version)
            }
            _ => self.inner.master_keys.unload(instance_id),
        };
        if sealed {
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
