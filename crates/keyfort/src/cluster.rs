//! The store a node runs on, and what changes when it shares a PostgreSQL database with others:
//! it follows the other nodes' changes (cache coherence, `keyfort_core::cluster`), and runs the
//! cluster's background work only while it holds that work's advisory lock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyfort_store::Store;
use keyfort_store::postgres::PgStore;
use keyfort_store::sqlite::SqliteStore;

use crate::config::Config;
use crate::server::{DB_FILE, ServerError};

/// How often the maintenance pass (scheduled rotations, purges) is attempted.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// The advisory lock of the maintenance pass.
const MAINTENANCE_LOCK: &str = "keyfort/maintenance";

/// The node's store: SQLite in the data directory, or the configured PostgreSQL database.
pub struct NodeStore {
    pub store: Arc<dyn Store>,
    postgres: Option<PgStore>,
}

impl NodeStore {
    pub async fn open(config: &Config, data_dir: &Path) -> Result<NodeStore, ServerError> {
        match &config.store {
            Some(url) => {
                let pg = PgStore::open(url.expose()).await?;
                tracing::info!(store = %url, "store: PostgreSQL");
                Ok(NodeStore {
                    store: Arc::new(pg.clone()),
                    postgres: Some(pg),
                })
            }
            None => Ok(NodeStore {
                store: Arc::new(SqliteStore::open(&data_dir.join(DB_FILE)).await?),
                postgres: None,
            }),
        }
    }

    /// Attaches `core` (just opened) to the cluster and starts its background work: on
    /// PostgreSQL, cluster-wide work takes advisory locks and this node follows the other nodes'
    /// changes; the maintenance pass and the resumption of unfinished re-seal jobs run once a
    /// minute (on PostgreSQL: by one node at a time, taken over when that node dies).
    pub fn attach(&self, core: &keyfort_core::Keyfort) {
        if let Some(pg) = &self.postgres {
            let locks_pg = pg.clone();
            core.set_cluster_locks(Arc::new(move |name: String| {
                let pg = locks_pg.clone();
                Box::pin(async move {
                    match pg.try_lock(&name).await {
                        Ok(Some(lock)) => Some(Box::new(lock) as keyfort_core::ClusterGuard),
                        Ok(None) => None,
                        Err(e) => {
                            tracing::warn!(work = %name, error = %e, "cannot take a cluster lock");
                            None
                        }
                    }
                })
            }));
            let changes = pg.changes();
            let follower = core.clone();
            tokio::spawn(async move { follower.follow_changes(changes).await });
        }
        let core = core.clone();
        let pg = self.postgres.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                core.resume_reseal_jobs();
                let lock = match &pg {
                    None => None,
                    Some(pg) => match pg.try_lock(MAINTENANCE_LOCK).await {
                        Ok(Some(lock)) => Some(lock),
                        // Another node runs it.
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot take the maintenance lock");
                            continue;
                        }
                    },
                };
                maintenance_pass(&core).await;
                if let Some(lock) = lock
                    && let Err(e) = lock.release().await
                {
                    tracing::warn!(error = %e, "cannot release the maintenance lock");
                }
            }
        });
    }
}

/// Key Protect's background work (scheduled rotations, automatic purge).
async fn maintenance_pass(core: &keyfort_core::Keyfort) {
    match core.run_maintenance().await {
        Ok(r) if r.rotated.is_empty() && r.purged.is_empty() && r.failed == 0 => {}
        Ok(r) => tracing::info!(
            rotated = r.rotated.len(),
            purged = r.purged.len(),
            failed = r.failed,
            "maintenance pass"
        ),
        Err(e) => tracing::warn!(error = %e, "maintenance pass failed"),
    }
}
