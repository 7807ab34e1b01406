//! Background work of Key Protect semantics: deactivating keys past their expiration date,
//! rotating root keys whose rotation policy is due, and purging keys deleted longer ago than the
//! retention period. The server runs
//! [`Keyfort::run_maintenance`] periodically; each pass is idempotent, so running it twice (or on
//! two nodes) does no harm beyond a refused duplicate rotation.

use std::time::Duration;

use keyfort_store::{KeyFilter, Write};

use crate::Result;
use crate::auth::{Caller, Principal, PrincipalKind};
use crate::error::CoreError;
use crate::key::Key;
use crate::kms::key_policies_of;
use crate::lifecycle::{KeyState, Transition};
use crate::service::{Keyfort, administrator_grant};

/// A Key Protect rotation-policy month.
const MONTH_MS: i64 = 30 * 24 * 3600 * 1000;
/// Deleted keys are purged this long after deletion (Key Protect: 90 days).
pub const AUTO_PURGE_AFTER: Duration = Duration::from_secs(90 * 24 * 3600);
/// Keys read per page while scanning.
const PAGE: u64 = 500;

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Keys deactivated because their expiration date has passed.
    pub deactivated: Vec<String>,
    pub rotated: Vec<String>,
    pub purged: Vec<String>,
    pub failed: usize,
}

/// The identity recorded for work the server does by itself.
fn system_caller() -> Caller {
    Caller {
        principal: Principal {
            id: "keyfort".to_owned(),
            instance_id: None,
            name: "keyfort".to_owned(),
            kind: PrincipalKind::Service,
            roles: vec![administrator_grant()],
            disabled: false,
            created_at: 0,
        },
        api_key_id: None,
        request: crate::auth::RequestInfo {
            correlation_id: Some("maintenance".to_owned()),
            source: None,
            key_ring: None,
            kmip: false,
        },
    }
}

/// An Active key whose expiration date has passed, not yet recorded as deactivated.
fn expired(key: &Key, now: i64) -> bool {
    key.state == KeyState::Active && key.state_at(now) == KeyState::Deactivated
}

fn due_for_rotation(key: &Key, now: i64) -> bool {
    let Some((policy, _)) = key_policies_of(key).rotation else {
        return false;
    };
    if !policy.enabled || key.extractable || key.state != KeyState::Active {
        return false;
    }
    let since = key.last_rotated_at.unwrap_or(key.created_at);
    now - since >= i64::from(policy.interval_month) * MONTH_MS
}

impl Keyfort {
    /// One pass over every unsealed instance: deactivates Active keys past their expiration
    /// date (Key Protect does within the hour; uses already see them deactivated, see
    /// [`Key::state_at`]), rotates root keys whose rotation policy is due and purges keys
    /// deleted more than [`AUTO_PURGE_AFTER`] ago. Sealed instances are skipped.
    pub async fn run_maintenance(&self) -> Result<MaintenanceReport> {
        let caller = system_caller();
        let mut report = MaintenanceReport::default();
        for record in self.store().list_instances().await? {
            if !self.inner.master_keys.is_loaded(&record.id) {
                continue;
            }
            let now = self.now_ms();
            // First collect what is due (the listing is not changed while paging), then act.
            let mut due = Vec::new();
            let mut offset = 0;
            loop {
                let filter = KeyFilter {
                    states: vec![
                        KeyState::Active.code(),
                        KeyState::Destroyed.code(),
                        KeyState::DestroyedCompromised.code(),
                    ],
                    offset,
                    limit: Some(PAGE),
                    ..KeyFilter::default()
                };
                let page = self.store().list_keys(&record.id, &filter).await?;
                let n = page.len() as u64;
                for r in page {
                    let key = Key::from_record(r)?;
                    let purge_due = key.state.is_destroyed()
                        && key
                            .deleted_at
                            .is_some_and(|d| now - d >= AUTO_PURGE_AFTER.as_millis() as i64);
                    if purge_due || expired(&key, now) || due_for_rotation(&key, now) {
                        due.push(key);
                    }
                }
                if n < PAGE {
                    break;
                }
                offset += n;
            }
            for key in due {
                if expired(&key, now) {
                    let id = key.id.clone();
                    let details = serde_json::json!({"automatic": true, "reason": "expired"});
                    match self
                        .transition_audited(
                            &caller,
                            key,
                            Transition::Deactivate,
                            "key.deactivate",
                            details,
                        )
                        .await
                    {
                        Ok(_) => report.deactivated.push(id),
                        Err(e) => {
                            tracing::warn!(key = id, error = %e, "deactivating an expired key failed");
                            report.failed += 1;
                        }
                    }
                } else if key.state.is_destroyed() {
                    let event = self.audit_event(
                        &caller,
                        &record.id,
                        "key.purge",
                        &key.id,
                        "success",
                        serde_json::json!({"name": key.name, "automatic": true}),
                    );
                    let purge = Write::PurgeKey {
                        instance_id: record.id.clone(),
                        key_id: key.id.clone(),
                    };
                    match self.apply_audited(vec![purge], event).await {
                        Ok(_) => report.purged.push(key.id),
                        Err(e) => {
                            tracing::warn!(key = key.id, error = %e, "automatic purge failed");
                            report.failed += 1;
                        }
                    }
                } else {
                    match self.rotate_key(&caller, &record.id, &key.id, None).await {
                        Ok(_) => report.rotated.push(key.id),
                        Err(CoreError::KeyRefused { .. }) => {}
                        Err(e) => {
                            tracing::warn!(key = key.id, error = %e, "scheduled rotation failed");
                            report.failed += 1;
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_caller_is_an_administrator() {
        assert!(system_caller().is_administrator());
    }
}
