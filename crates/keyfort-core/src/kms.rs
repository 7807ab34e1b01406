//! Key Protect semantics in the core (`specs/keyprotect-api.md` §4–§10): rotation, policies,
//! dual-authorized deletion, delete / restore / purge with their waiting periods, aliases, key
//! rings, registrations, import tokens, and the audit event written for every request.
//!
//! Every operation here writes its audit event in the same store transaction as its effect
//! ([`keyfort_store::Store::apply`]); a refused or failed request writes a `denied` or
//! `failure` event on its own.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyfort_store::{
    Applied, AuditEventInput, AuditFields, InstanceSecretRecord, KeyRingRecord, RegistrationRecord,
    StoreError, Write, WriteBatch,
};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::Result;
use crate::auth::{Action, Caller};
use crate::error::CoreError;
use crate::key::{DEFAULT_KEY_RING, Key, KeyQuery, NewKey, validate_aliases, validate_key_ring_id};
use crate::lifecycle::{KeyState, Transition, Usage};
use crate::service::{Keyfort, new_key_id};
use crate::wrap::Unwrapped;

/// Waiting periods of Key Protect, configurable (`specs/keyprotect-api.md` §7–§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KmsTimings {
    /// Enable and restore are refused this soon after the key's previous change (30 s).
    pub change_guard: Duration,
    /// A key may rotate once per this period (1 h); a never-rotated key at once.
    pub rotate_guard: Duration,
    /// A dual-authorization approval lasts this long (7 days).
    pub dual_auth_window: Duration,
    /// A deleted key may be purged this long after deletion (4 h).
    pub purge_after: Duration,
    /// A deleted key may be restored within this period (30 days).
    pub restore_window: Duration,
}

impl Default for KmsTimings {
    fn default() -> Self {
        KmsTimings {
            change_guard: Duration::from_secs(30),
            rotate_guard: Duration::from_secs(3600),
            dual_auth_window: Duration::from_secs(7 * 24 * 3600),
            purge_after: Duration::from_secs(4 * 3600),
            restore_window: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Why Key Protect rules refused a request. Each door maps these to its own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KmsRefusal {
    /// The action needs a root key.
    RootKeyRequired,
    /// The key's expiration date has passed.
    KeyExpired,
    /// The restore window has passed.
    RestoreExpired,
    /// An imported root key needs new material to rotate.
    PayloadRequired,
    /// The key is already deleted.
    KeyDeleted,
    /// Dual authorization: no valid approval by another principal.
    AuthorizationsNotMet,
    /// The key has no dual-authorization policy.
    NotDualAuth,
    /// Registrations protect the key (retry with force).
    ProtectedResource,
    /// A registration forbids deletion, even forced.
    PreventKeyDeletion,
    /// The key changed too recently.
    TooEarly,
    /// The key rotated less than the rotation guard ago.
    RotationNotPermitted,
    /// The instance's keyCreateImportAccess policy forbids this creation.
    CreateImportAccess,
    /// The import token has expired or has no retrievals left.
    ImportTokenExpired,
    /// No import token exists.
    ImportTokenMissing,
    /// The nonce in a secure import does not match the token's.
    IncorrectNonce,
    /// The encrypted nonce or IV of a secure import cannot be opened.
    IncorrectNonceIv,
    /// A dual-authorization policy cannot be turned off once set.
    DualAuthCannotBeDisabled,
    /// Registrations need an active key.
    KeyNotActive,
    /// The key ring still holds keys.
    KeyRingNotEmpty,
    /// The default key ring cannot be created or deleted.
    DefaultKeyRing,
    /// The ciphertext was not made by this key with this AAD, or is damaged.
    UnprocessableCiphertext,
    /// Key material was given for a key that was not imported (restore with a payload).
    ImportedKeyRequired,
    /// Only service identities may call this (service-to-service endpoints).
    ServiceOnly,
    /// A search over more keys than Key Protect searches (5000).
    SearchTooBroad,
}

impl fmt::Display for KmsRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KmsRefusal::RootKeyRequired => "the action requires a root key",
            KmsRefusal::KeyExpired => "the key has expired",
            KmsRefusal::RestoreExpired => "the key can no longer be restored",
            KmsRefusal::PayloadRequired => "an imported key needs new key material to rotate",
            KmsRefusal::KeyDeleted => "the key is deleted",
            KmsRefusal::AuthorizationsNotMet => "the deletion needs the approval of another user",
            KmsRefusal::NotDualAuth => "the key has no dual authorization policy",
            KmsRefusal::ProtectedResource => "the key protects registered resources",
            KmsRefusal::PreventKeyDeletion => "a registration prevents the deletion of the key",
            KmsRefusal::TooEarly => "the key was updated recently: please wait and try again",
            KmsRefusal::RotationNotPermitted => "the key was rotated within the last hour",
            KmsRefusal::CreateImportAccess => "the instance policy does not allow this creation",
            KmsRefusal::ImportTokenExpired => {
                "the import token has expired or has no retrievals left"
            }
            KmsRefusal::ImportTokenMissing => "no import token exists",
            KmsRefusal::IncorrectNonce => "the nonce does not match the import token",
            KmsRefusal::IncorrectNonceIv => "the encrypted nonce or its IV is invalid",
            KmsRefusal::DualAuthCannotBeDisabled => {
                "a dual authorization policy cannot be disabled"
            }
            KmsRefusal::KeyNotActive => "the key is not active",
            KmsRefusal::KeyRingNotEmpty => "the key ring still holds keys",
            KmsRefusal::DefaultKeyRing => "the default key ring cannot be changed",
            KmsRefusal::UnprocessableCiphertext => {
                "the ciphertext is invalid or was not made by this key with this AAD"
            }
            KmsRefusal::ImportedKeyRequired => "only imported keys are restored with key material",
            KmsRefusal::ServiceOnly => "this action can only be done by a service identity",
            KmsRefusal::SearchTooBroad => {
                "the search covers more than 5000 keys: narrow it with state, extractable or a key ring"
            }
        })
    }
}

pub(crate) fn refuse(id: &str, reason: KmsRefusal) -> CoreError {
    CoreError::KeyRefused {
        id: id.to_owned(),
        reason,
    }
}

/// A key's rotation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    pub enabled: bool,
    /// 1 to 12 (30-day months).
    pub interval_month: u8,
}

/// A key's policies with who set them when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPolicies {
    pub rotation: Option<(RotationPolicy, PolicyStamp)>,
    pub dual_auth_delete: Option<(bool, PolicyStamp)>,
}

/// Who set a policy, and when (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStamp {
    pub created_by: String,
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

/// Changes to a key's policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyPolicyUpdate {
    pub rotation: Option<RotationPolicy>,
    pub dual_auth_delete: Option<bool>,
}

/// Key Protect instance policy types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstancePolicyType {
    DualAuthDelete,
    AllowedNetwork,
    AllowedIp,
    KeyCreateImportAccess,
    Metrics,
    Rotation,
}

impl InstancePolicyType {
    pub const ALL: [InstancePolicyType; 6] = [
        InstancePolicyType::DualAuthDelete,
        InstancePolicyType::AllowedNetwork,
        InstancePolicyType::AllowedIp,
        InstancePolicyType::KeyCreateImportAccess,
        InstancePolicyType::Metrics,
        InstancePolicyType::Rotation,
    ];

    /// The wire name (`policy_type`).
    pub fn name(self) -> &'static str {
        match self {
            InstancePolicyType::DualAuthDelete => "dualAuthDelete",
            InstancePolicyType::AllowedNetwork => "allowedNetwork",
            InstancePolicyType::AllowedIp => "allowedIP",
            InstancePolicyType::KeyCreateImportAccess => "keyCreateImportAccess",
            InstancePolicyType::Metrics => "metrics",
            InstancePolicyType::Rotation => "rotation",
        }
    }

    /// The type of a wire name.
    pub fn from_name(name: &str) -> Option<InstancePolicyType> {
        InstancePolicyType::ALL
            .into_iter()
            .find(|t| t.name() == name)
    }
}

/// One instance policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePolicy {
    pub policy_type: InstancePolicyType,
    pub enabled: bool,
    /// Type-specific attributes (snake_case, as on the wire), present only when enabled.
    pub attributes: Map<String, Value>,
    pub stamp: PolicyStamp,
}

/// A key ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    pub id: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A registration of a resource protected by a key.
pub type Registration = RegistrationRecord;

/// Registrations read per page while [`Keyfort::registrations_matching`] walks an instance.
const REGISTRATION_PAGE: u64 = 1000;

/// What the import token endpoint shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportToken {
    pub created_at: i64,
    pub expires_at: i64,
    /// Seconds of validity it was created with.
    pub expiration: u64,
    pub max_retrievals: u32,
    pub remaining_retrievals: u32,
    /// PEM of the RSA public key and the nonce, on retrieval only.
    pub public_key_pem: Option<String>,
    pub nonce: Option<Vec<u8>>,
}

/// Key material sealed to an import token (Key Protect secure import).
pub struct SecureImport {
    /// RSA-OAEP ciphertext of the key material under the token's public key.
    pub payload: Vec<u8>,
    /// `true` for RSAES_OAEP_SHA_256, `false` for RSAES_OAEP_SHA_1.
    pub sha256: bool,
    /// AES-GCM of the token's nonce under the key material (ciphertext ‖ tag).
    pub encrypted_nonce: Vec<u8>,
    pub iv: Vec<u8>,
}

/// A service's acknowledgement of a key lifecycle event (§10, Key Protect `event_ack`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAck {
    pub event_id: String,
    /// The adopter's state of its data keys after processing the event (`DEK_ENABLED`, …).
    pub adopter_key_state: String,
    /// When the adopter processed the event (ms).
    pub processed_at: i64,
    /// The key version the adopter rewrapped its data keys with; required for `DEK_ENABLED`.
    pub rewrapped_key_version: Option<String>,
}

/// Longest event id and adopter key state accepted in an acknowledgement.
const MAX_EVENT_FIELD: usize = 128;

fn validate_event_ack(ack: &EventAck) -> Result<()> {
    let printable = |s: &str| {
        !s.is_empty() && s.len() <= MAX_EVENT_FIELD && s.bytes().all(|b| b.is_ascii_graphic())
    };
    if !printable(&ack.event_id) {
        return Err(CoreError::InvalidField {
            field: "eventId",
            rule: "1 to 128 printable characters",
        });
    }
    if !printable(&ack.adopter_key_state)
        || !ack
            .adopter_key_state
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
    {
        return Err(CoreError::InvalidField {
            field: "adopterKeyState",
            rule: "a key state name such as DEK_ENABLED or DEK_DELETED",
        });
    }
    match &ack.rewrapped_key_version {
        Some(v) if uuid::Uuid::try_parse(v).is_err() => Err(CoreError::InvalidField {
            field: "keyStateData.rewrappedKeyVersion",
            rule: "a key version id",
        }),
        None if ack.adopter_key_state == "DEK_ENABLED" => Err(CoreError::InvalidField {
            field: "keyStateData.rewrappedKeyVersion",
            rule: "present when adopterKeyState is DEK_ENABLED",
        }),
        _ => Ok(()),
    }
}

/// Key material a caller supplies for an imported root key: to rotate it (§6 rotate) or to
/// prove, on restore, that it holds the deleted key's material (§7).
pub enum ImportedMaterial {
    /// Plain material (`payload`).
    Plain(Zeroizing<Vec<u8>>),
    /// Material sealed to the instance's import token (`payload`, `encryptionAlgorithm`,
    /// `encryptedNonce`, `iv`).
    Sealed(SecureImport),
}

const IMPORT_TOKEN_SECRET: &str = "import-token";

/// An instance's policies by type.
pub(crate) type PolicyMap = HashMap<InstancePolicyType, InstancePolicy>;

/// How long a node enforces instance policies it read before reading them again (a change made
/// through another node takes effect here within this time).
const POLICY_CACHE_MS: i64 = 1_000;

/// The outcome recorded for a failed request.
fn outcome_of(e: &CoreError) -> &'static str {
    match e {
        CoreError::Forbidden { .. } | CoreError::Unauthenticated(_) => "denied",
        _ => "failure",
    }
}

/// A short stable name of an error kind for the audit trail (never its message or data).
fn reason_of(e: &CoreError) -> String {
    match e {
        CoreError::KeyRefused { reason, .. } => format!("{reason:?}"),
        CoreError::KeystoreRefused { reason, .. } => format!("{reason:?}"),
        CoreError::InvalidField { field, .. } => format!("InvalidField:{field}"),
        other => {
            // The variant name: the leading identifier of the Debug form.
            let debug = format!("{other:?}");
            debug
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect()
        }
    }
}

/// An audit event's body: JSON written member by member, in the order of a JSON object with
/// sorted keys (as every event has had), without building a JSON tree first.
fn audit_body(
    caller: &Caller,
    action: &str,
    target: &str,
    outcome: &str,
    details: &Value,
) -> String {
    // Writing strings and JSON values into a `Vec` cannot fail.
    let mut body = Vec::with_capacity(320);
    let mut member = |name: &[u8], value: &dyn Fn(&mut Vec<u8>)| {
        body.extend_from_slice(name);
        value(&mut body);
    };
    member(b"{\"action\":", &|b| drop(serde_json::to_writer(b, action)));
    member(b",\"actor\":", &|b| {
        drop(serde_json::to_writer(b, &caller.principal.name))
    });
    member(b",\"actor_id\":", &|b| {
        drop(serde_json::to_writer(b, &caller.principal.id))
    });
    member(b",\"correlation_id\":", &|b| {
        drop(serde_json::to_writer(b, &caller.request.correlation_id))
    });
    member(b",\"details\":", &|b| {
        drop(serde_json::to_writer(b, details))
    });
    member(b",\"outcome\":", &|b| {
        drop(serde_json::to_writer(b, outcome))
    });
    member(b",\"source\":", &|b| {
        drop(serde_json::to_writer(b, &caller.request.source))
    });
    member(b",\"target\":", &|b| drop(serde_json::to_writer(b, target)));
    body.push(b'}');
    String::from_utf8(body).unwrap_or_default()
}

impl Keyfort {
    /// Builds the audit event of a request.
    pub(crate) fn audit_event(
        &self,
        caller: &Caller,
        instance_id: &str,
        action: &str,
        target: &str,
        outcome: &str,
        details: Value,
    ) -> AuditEventInput {
        AuditEventInput {
            instance_id: instance_id.to_owned(),
            at: self.now_ms(),
            body: audit_body(caller, action, target, outcome, &details),
            fields: Some(AuditFields {
                target: target.to_owned(),
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            }),
        }
    }

    /// Runs `op`; if it fails, records a `denied` or `failure` event and returns the error.
    pub(crate) async fn audited<T>(
        &self,
        caller: &Caller,
        instance_id: &str,
        action: &str,
        target: &str,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match op.await {
            Ok(v) => Ok(v),
            Err(e) => {
                // Events need an existing instance; unknown or sealed instances are only logged.
                if !matches!(e, CoreError::InstanceNotFound { .. }) {
                    let event = self.audit_event(
                        caller,
                        instance_id,
                        action,
                        target,
                        outcome_of(&e),
                        json!({"reason": reason_of(&e)}),
                    );
                    if let Err(audit_error) = self.store().record_audit_event(&event).await {
                        tracing::error!(instance = instance_id, action, error = ?audit_error, "audit event lost");
                    }
                }
                Err(e)
            }
        }
    }

    /// Records a successful read.
    pub(crate) async fn audit_read(
        &self,
        caller: &Caller,
        instance_id: &str,
        action: &str,
        target: &str,
        details: Value,
    ) -> Result<()> {
        let event = self.audit_event(caller, instance_id, action, target, "success", details);
        self.store().record_audit_event(&event).await?;
        Ok(())
    }

    /// Stores a changed key with its success audit event, in one transaction, and takes the
    /// new row version.
    pub(crate) async fn save_key(
        &self,
        caller: &Caller,
        key: &mut Key,
        action: &str,
        details: Value,
    ) -> Result<()> {
        key.updated_at = self.now_ms();
        let event = self.audit_event(
            caller,
            &key.instance_id,
            action,
            &key.id,
            "success",
            details,
        );
        let applied = self
            .apply_audited(vec![Write::UpdateKey(key.to_record())], event)
            .await
            .map_err(key_write_error)?;
        key.row_version = row_version(&applied);
        Ok(())
    }

    /// Applies writes plus the success audit event, atomically.
    pub(crate) async fn apply_audited(
        &self,
        mut writes: Vec<Write>,
        event: AuditEventInput,
    ) -> Result<Vec<Applied>> {
        writes.push(Write::AppendAudit(event));
        let batch = WriteBatch { writes };
        self.forget_cached(&batch);
        let applied = self.store().apply(&batch).await;
        // Again after the commit: a request that read the old row meanwhile must not keep it.
        self.forget_cached(&batch);
        Ok(applied?)
    }

    fn forget_cached(&self, batch: &WriteBatch) {
        for w in &batch.writes {
            match w {
                Write::UpdateKey(k) | Write::AddKeyVersion { key: k, .. } => {
                    self.inner.key_cache.forget_key(&k.instance_id, &k.id);
                }
                Write::PurgeKey {
                    instance_id,
                    key_id,
                } => {
                    self.inner.key_cache.forget_key(instance_id, key_id);
                }
                _ => {}
            }
        }
    }

    // ---- keys ------------------------------------------------------------------------------

    /// Key Protect create / import, with the instance's policies applied and audited.
    pub async fn kms_create_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        mut req: NewKey,
        policy_overrides: KeyPolicyUpdate,
        secure_import: Option<SecureImport>,
    ) -> Result<Key> {
        let target = req.name.clone();
        self.audited(caller, instance_id, "key.create", &target, async {
            // Who may not create keys in the ring learns nothing more of the instance: not its
            // policies, not whether it has an import token. (An unknown instance is refused by
            // the policy lookup next.)
            let ring = req.key_ring_id.as_deref().unwrap_or(DEFAULT_KEY_RING);
            caller.authorize(Action::CreateKey, instance_id, Some(ring))?;
            let sealed = secure_import.is_some();
            if let Some(import) = secure_import {
                req.payload = Some(self.open_secure_import(caller, instance_id, import).await?);
            }
            let policies = self.enforced_policies(instance_id).await?;
            self.check_create_access(&policies, &req, sealed)?;
            let mut attributes = req.attributes.clone();
            let stamp = json!({"by": caller.principal.name, "at": self.now_ms()});
            let mut key_policies = Map::new();
            let dual = policy_overrides.dual_auth_delete.unwrap_or_else(|| instance_dual_auth(&policies));
            if dual {
                key_policies.insert("dualAuthDelete".into(), json!({"enabled": true, "stamp": stamp}));
            }
            let rotation = policy_overrides.rotation.or_else(|| {
                policies.get(&InstancePolicyType::Rotation).filter(|p| p.enabled).map(|p| RotationPolicy {
                    enabled: true,
                    interval_month: p.attributes.get("interval_month").and_then(Value::as_u64).and_then(|m| u8::try_from(m).ok()).unwrap_or(1),
                })
            });
            if let Some(r) = rotation {
                validate_rotation(r)?;
                key_policies.insert("rotation".into(), json!({"enabled": r.enabled, "interval_month": r.interval_month, "stamp": stamp}));
            }
            if !key_policies.is_empty() {
                attributes.insert("policies".into(), Value::Object(key_policies));
            }
            req.attributes = attributes;
            self.create_key_audited(caller, instance_id, req).await
        })
        .await
    }

    /// The instance's keyCreateImportAccess policy for `req`; `sealed` when its material came
    /// sealed to the import token (which `enforce_token` requires of every import).
    fn check_create_access(&self, policies: &PolicyMap, req: &NewKey, sealed: bool) -> Result<()> {
        if create_import_allowed(policies, req.payload.is_some(), req.extractable, sealed) {
            Ok(())
        } else {
            Err(refuse(&req.name, KmsRefusal::CreateImportAccess))
        }
    }

    /// A key's metadata and, for standard keys, its material (Key Protect GET /keys/{id}).
    pub async fn kms_key_with_payload(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
    ) -> Result<(Key, Option<Zeroizing<Vec<u8>>>)> {
        self.audited(caller, instance_id, "key.read", id_or_alias, async {
            let key = self
                .key_for(caller, instance_id, id_or_alias, Action::ReadKey)
                .await?;
            let payload = if key.exports_in_clear() && key.state.permits(Usage::Export) {
                caller.authorize(Action::ReadKeyMaterial, instance_id, Some(&key.key_ring_id))?;
                Some(self.current_material(&key).await?)
            } else {
                None
            };
            self.audit_read(
                caller,
                instance_id,
                "key.read",
                &key.id,
                json!({"payload": payload.is_some()}),
            )
            .await?;
            Ok((key, payload))
        })
        .await
    }

    /// Moves a key to another ring (Manager on the key and the target ring).
    pub async fn move_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        ring: &str,
    ) -> Result<Key> {
        self.audited(caller, instance_id, "key.move", id_or_alias, async {
            validate_key_ring_id(ring)?;
            let mut key = self
                .key_for(caller, instance_id, id_or_alias, Action::ManageKey)
                .await?;
            caller.authorize(Action::ManageKey, instance_id, Some(ring))?;
            if self.store().key_ring(instance_id, ring).await?.is_none() {
                return Err(CoreError::KeyRingNotFound {
                    id: ring.to_owned(),
                });
            }
            let from = std::mem::replace(&mut key.key_ring_id, ring.to_owned());
            self.save_key(
                caller,
                &mut key,
                "key.move",
                json!({"from": from, "to": ring}),
            )
            .await?;
            Ok(key)
        })
        .await
    }

    /// Enable or disable (Manager); enable is refused within the change guard.
    pub async fn kms_transition(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        transition: Transition,
    ) -> Result<Key> {
        let action = format!("key.{transition}");
        self.audited(caller, instance_id, &action, id_or_alias, async {
            let key = self
                .key_for(caller, instance_id, id_or_alias, Action::ManageKey)
                .await?;
            if key.state.is_destroyed() {
                return Err(refuse(&key.id, KmsRefusal::KeyDeleted));
            }
            if transition == Transition::Enable
                && self.now_ms() - key.updated_at < ms(self.kms_timings().change_guard)
            {
                return Err(refuse(&key.id, KmsRefusal::TooEarly));
            }
            if transition == Transition::Enable
                && key.expires_at.is_some_and(|e| e <= self.now_ms())
            {
                return Err(refuse(&key.id, KmsRefusal::KeyExpired));
            }
            self.transition_audited(caller, key, transition, &action, json!({}))
                .await
        })
        .await
    }

    /// Applies a lifecycle transition with its audit event in one transaction.
    pub(crate) async fn transition_audited(
        &self,
        caller: &Caller,
        mut key: Key,
        transition: Transition,
        action: &str,
        details: Value,
    ) -> Result<Key> {
        let next = key
            .state
            .apply(transition)
            .ok_or_else(|| CoreError::InvalidTransition {
                id: key.id.clone(),
                state: key.state,
                transition,
            })?;
        let now = self.now_ms();
        match transition {
            Transition::Activate | Transition::Reactivate | Transition::Enable => {
                key.activation_at = key.activation_at.or(Some(now));
            }
            Transition::Deactivate => key.deactivated_at = Some(now),
            Transition::Delete | Transition::Destroy => {
                key.deleted_at = Some(now);
                key.deleted_by = Some(caller.display_name().to_owned());
            }
            Transition::Restore => {
                key.deleted_at = None;
                key.deleted_by = None;
            }
            Transition::Disable | Transition::Compromise => {}
        }
        key.state = next;
        self.save_key(caller, &mut key, action, details).await?;
        Ok(key)
    }

    /// Rotates a root key: a new version becomes current; older versions still unwrap.
    pub async fn rotate_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        material: Option<ImportedMaterial>,
    ) -> Result<Key> {
        self.audited(caller, instance_id, "key.rotate", id_or_alias, async {
            let mut key = self
                .key_for(caller, instance_id, id_or_alias, Action::RotateKey)
                .await?;
            let loaded = self.unsealed(instance_id).await?;
            if key.extractable {
                return Err(refuse(&key.id, KmsRefusal::RootKeyRequired));
            }
            if key.state.is_destroyed() {
                return Err(refuse(&key.id, KmsRefusal::KeyDeleted));
            }
            if !key.state.permits(Usage::Rotate) {
                return Err(CoreError::KeyNotUsable {
                    id: key.id,
                    state: key.state,
                    usage: Usage::Rotate,
                });
            }
            let now = self.now_ms();
            if key
                .last_rotated_at
                .is_some_and(|t| now - t < ms(self.kms_timings().rotate_guard))
            {
                return Err(refuse(&key.id, KmsRefusal::RotationNotPermitted));
            }
            let sealed = matches!(material, Some(ImportedMaterial::Sealed(_)));
            let material = match (key.imported, material) {
                (true, None) => return Err(refuse(&key.id, KmsRefusal::PayloadRequired)),
                (false, Some(_)) => {
                    return Err(CoreError::InvalidField {
                        field: "payload",
                        rule: "only imported keys rotate with new material",
                    });
                }
                (true, Some(m)) => {
                    let p = self.open_material(caller, instance_id, m).await?;
                    if p.len() * 8 != key.bit_length as usize {
                        return Err(CoreError::InvalidField {
                            field: "payload",
                            rule: "must have the key's length",
                        });
                    }
                    p
                }
                (false, None) => keyfort_crypto::rng::random_bytes(key.bit_length as usize / 8)?,
            };
            let versions = self.store().key_versions(instance_id, &key.id).await?;
            let seq = versions.iter().map(|v| v.seq).max().unwrap_or(0) + 1;
            key.current_version_id = new_key_id(now)?;
            key.last_rotated_at = Some(now);
            key.updated_at = now;
            let version = self.seal_version(&key, loaded.current(), &material, seq, now)?;
            let event = self.audit_event(
                caller,
                instance_id,
                "key.rotate",
                &key.id,
                "success",
                json!({"version": key.current_version_id, "seq": seq, "imported_material": key.imported, "import_token": sealed}),
            );
            let applied = self
                .apply_audited(
                    vec![Write::AddKeyVersion {
                        key: key.to_record(),
                        version,
                    }],
                    event,
                )
                .await
                .map_err(key_write_error)?;
            key.row_version = row_version(&applied);
            Ok(key)
        })
        .await
    }

    /// Rewraps a ciphertext under the key's latest version.
    pub async fn rewrap_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<Unwrapped> {
        self.audited(caller, instance_id, "key.rewrap", id_or_alias, async {
            let mut out = self
                .unwrap_inner(caller, instance_id, id_or_alias, ciphertext, aad)
                .await?;
            if out.rewrapped.is_none() {
                // Already the latest version: rewrap anyway so the caller gets a fresh ciphertext.
                let w = self
                    .wrap_inner(
                        caller,
                        instance_id,
                        id_or_alias,
                        Some(out.plaintext.clone()),
                        aad,
                    )
                    .await?;
                out.rewrapped = Some(crate::wrap::Wrapped {
                    ciphertext: w.ciphertext,
                    key_version_id: w.key_version_id,
                    generated_plaintext: None,
                });
            }
            self.audit_read(
                caller,
                instance_id,
                "key.rewrap",
                id_or_alias,
                json!({"from_version": out.key_version_id}),
            )
            .await?;
            Ok(out)
        })
        .await
    }

    /// Records a sync request (registered services are notified out of band).
    pub async fn sync_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
    ) -> Result<()> {
        self.audited(caller, instance_id, "key.sync", id_or_alias, async {
            let key = self
                .key_for(caller, instance_id, id_or_alias, Action::RotateKey)
                .await?;
            self.audit_read(caller, instance_id, "key.sync", &key.id, json!({}))
                .await
        })
        .await
    }

    // ---- dual authorization, delete, restore, purge ----------------------------------------

    /// First approval of a dual-authorized deletion (Writer or Manager).
    pub async fn set_key_for_deletion(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        set: bool,
    ) -> Result<Key> {
        let action = if set {
            "key.set_for_deletion"
        } else {
            "key.unset_for_deletion"
        };
        self.audited(caller, instance_id, action, id_or_alias, async {
            let mut key = self.key_for(caller, instance_id, id_or_alias, Action::ApproveDeletion).await?;
            if key.state.is_destroyed() {
                return Err(refuse(&key.id, KmsRefusal::KeyDeleted));
            }
            if !dual_auth_enabled(&key) {
                return Err(refuse(&key.id, KmsRefusal::NotDualAuth));
            }
            if set {
                let expires = self.now_ms() + ms(self.kms_timings().dual_auth_window);
                key.attributes.insert(
                    "dual_auth_pending".into(),
                    json!({"by": caller.principal.id, "by_name": caller.principal.name, "expires_at": expires}),
                );
            } else {
                key.attributes.remove("dual_auth_pending");
            }
            self.save_key(caller, &mut key, action, json!({})).await?;
            Ok(key)
        })
        .await
    }

    /// Soft delete (Manager): state destroyed, restorable within the restore window.
    pub async fn delete_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        force: bool,
    ) -> Result<Key> {
        self.audited(caller, instance_id, "key.delete", id_or_alias, async {
            let mut key = self.key_for(caller, instance_id, id_or_alias, Action::ManageKey).await?;
            if key.state.is_destroyed() {
                return Err(refuse(&key.id, KmsRefusal::KeyDeleted));
            }
            let registrations = self.check_deletion(caller, instance_id, &mut key, force).await?;
            let mut writes = Vec::new();
            if force {
                for r in &registrations {
                    writes.push(Write::DeleteRegistration {
                        instance_id: instance_id.to_owned(),
                        key_id: key.id.clone(),
                        resource_crn: r.resource_crn.clone(),
                    });
                }
            }
            let next = key.state.apply(Transition::Delete).ok_or_else(|| CoreError::InvalidTransition {
                id: key.id.clone(),
                state: key.state,
                transition: Transition::Delete,
            })?;
            let now = self.now_ms();
            key.state = next;
            key.deleted_at = Some(now);
            key.deleted_by = Some(caller.display_name().to_owned());
            key.updated_at = now;
            writes.insert(0, Write::UpdateKey(key.to_record()));
            let event = self.audit_event(caller, instance_id, "key.delete", &key.id, "success", json!({"force": force, "registrations_removed": if force { registrations.len() } else { 0 }}));
            let applied = self.apply_audited(writes, event).await.map_err(key_write_error)?;
            key.row_version = row_version(&applied);
            Ok(key)
        })
        .await
    }

    /// Key Protect's conditions for deleting `key`, whichever door asks: no registration that
    /// prevents deletion, no registration at all unless `force`, and with a dual-authorization
    /// policy, an approval that still stands ([`Self::deletion_approved`]), which the deletion
    /// uses up. Returns the key's registrations.
    pub(crate) async fn check_deletion(
        &self,
        caller: &Caller,
        instance_id: &str,
        key: &mut Key,
        force: bool,
    ) -> Result<Vec<keyfort_store::RegistrationRecord>> {
        let registrations = self
            .store()
            .registrations(instance_id, Some(&key.id))
            .await?;
        if registrations.iter().any(|r| r.prevent_key_deletion) {
            return Err(refuse(&key.id, KmsRefusal::PreventKeyDeletion));
        }
        if !registrations.is_empty() && !force {
            return Err(refuse(&key.id, KmsRefusal::ProtectedResource));
        }
        if dual_auth_enabled(key) {
            if !self.deletion_approved(caller, instance_id, key).await? {
                return Err(refuse(&key.id, KmsRefusal::AuthorizationsNotMet));
            }
            key.attributes.remove("dual_auth_pending");
        }
        Ok(registrations)
    }

    /// Whether `key`'s pending deletion approval stands for `caller`: given by another
    /// principal, not expired, and by someone who is still enabled and still allowed to
    /// approve deletions of this key (an approval lapses with its author's access).
    async fn deletion_approved(
        &self,
        caller: &Caller,
        instance_id: &str,
        key: &Key,
    ) -> Result<bool> {
        let now = self.now_ms();
        let Some(pending) = key.attributes.get("dual_auth_pending") else {
            return Ok(false);
        };
        let Some(by) = pending.get("by").and_then(Value::as_str) else {
            return Ok(false);
        };
        let current = pending
            .get("expires_at")
            .and_then(Value::as_i64)
            .is_some_and(|e| e > now);
        if by == caller.principal.id || !current {
            return Ok(false);
        }
        let Some(record) = self.store().principal(by).await? else {
            return Ok(false);
        };
        let approver = Caller {
            principal: crate::service::principal_from_record(&record)?,
            api_key_id: None,
            request: crate::auth::RequestInfo::default(),
        };
        Ok(approver.may(Action::ApproveDeletion, instance_id, Some(&key.key_ring_id)))
    }

    /// Restores a deleted key within the restore window (Manager).
    pub async fn restore_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        material: Option<ImportedMaterial>,
    ) -> Result<Key> {
        self.audited(caller, instance_id, "key.restore", id_or_alias, async {
            let key = self
                .key_for(caller, instance_id, id_or_alias, Action::ManageKey)
                .await?;
            let now = self.now_ms();
            let t = self.kms_timings();
            if key.state != KeyState::Destroyed {
                return Err(CoreError::InvalidTransition {
                    id: key.id,
                    state: key.state,
                    transition: Transition::Restore,
                });
            }
            if key
                .deleted_at
                .is_some_and(|d| now - d > ms(t.restore_window))
            {
                return Err(refuse(&key.id, KmsRefusal::RestoreExpired));
            }
            if key.expires_at.is_some_and(|e| e <= now) {
                return Err(refuse(&key.id, KmsRefusal::KeyExpired));
            }
            if now - key.updated_at < ms(t.change_guard) {
                return Err(refuse(&key.id, KmsRefusal::TooEarly));
            }
            let with_material = material.is_some();
            if let Some(m) = material {
                if !key.imported {
                    return Err(refuse(&key.id, KmsRefusal::ImportedKeyRequired));
                }
                let given = self.open_material(caller, instance_id, m).await?;
                let held = self.version_material(&key, &key.current_version_id).await?;
                if !keyfort_crypto::ct_eq(&given, &held) {
                    return Err(CoreError::InvalidField {
                        field: "payload",
                        rule: "the key material of the deleted key",
                    });
                }
            }
            self.transition_audited(
                caller,
                key,
                Transition::Restore,
                "key.restore",
                json!({"payload": with_material}),
            )
            .await
        })
        .await
    }

    /// Purges a deleted key for good (KeyPurge role, after the purge delay).
    pub async fn purge_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
    ) -> Result<Key> {
        self.audited(caller, instance_id, "key.purge", id_or_alias, async {
            let key = self
                .key_for(caller, instance_id, id_or_alias, Action::PurgeKey)
                .await?;
            if !key.state.is_destroyed() {
                return Err(CoreError::InvalidTransition {
                    id: key.id,
                    state: key.state,
                    transition: Transition::Destroy,
                });
            }
            if key
                .deleted_at
                .is_some_and(|d| self.now_ms() - d < ms(self.kms_timings().purge_after))
            {
                return Err(refuse(&key.id, KmsRefusal::TooEarly));
            }
            let event = self.audit_event(
                caller,
                instance_id,
                "key.purge",
                &key.id,
                "success",
                json!({"name": key.name}),
            );
            self.apply_audited(
                vec![Write::PurgeKey {
                    instance_id: instance_id.to_owned(),
                    key_id: key.id.clone(),
                }],
                event,
            )
            .await
            .map_err(key_write_error)?;
            Ok(key)
        })
        .await
    }

    // ---- policies --------------------------------------------------------------------------

    /// A key's policies.
    pub async fn key_policies(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
    ) -> Result<(Key, KeyPolicies)> {
        self.audited(
            caller,
            instance_id,
            "key.policies.read",
            id_or_alias,
            async {
                let key = self
                    .key_for(caller, instance_id, id_or_alias, Action::ManageKey)
                    .await?;
                let policies = key_policies_of(&key);
                self.audit_read(caller, instance_id, "key.policies.read", &key.id, json!({}))
                    .await?;
                Ok((key, policies))
            },
        )
        .await
    }

    /// Sets a key's policies (Manager). Dual authorization cannot be turned off once on.
    pub async fn set_key_policies(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        update: KeyPolicyUpdate,
    ) -> Result<(Key, KeyPolicies)> {
        self.audited(caller, instance_id, "key.policies.set", id_or_alias, async {
            let mut key = self.key_for(caller, instance_id, id_or_alias, Action::ManageKey).await?;
            if key.state.is_destroyed() {
                return Err(refuse(&key.id, KmsRefusal::KeyDeleted));
            }
            let now = self.now_ms();
            let mut policies = key.attributes.get("policies").and_then(Value::as_object).cloned().unwrap_or_default();
            let stamp_for = |existing: Option<&Value>| {
                let created = existing.and_then(|e| e.get("stamp")).cloned();
                json!({
                    "by": created.as_ref().and_then(|c| c.get("by")).cloned().unwrap_or(json!(caller.principal.name)),
                    "at": created.as_ref().and_then(|c| c.get("at")).cloned().unwrap_or(json!(now)),
                    "updated_by": caller.principal.name,
                    "updated_at": now,
                })
            };
            if let Some(enabled) = update.dual_auth_delete {
                if !enabled && dual_auth_enabled(&key) {
                    return Err(refuse(&key.id, KmsRefusal::DualAuthCannotBeDisabled));
                }
                let stamp = stamp_for(policies.get("dualAuthDelete"));
                policies.insert("dualAuthDelete".into(), json!({"enabled": enabled, "stamp": stamp}));
            }
            if let Some(r) = update.rotation {
                validate_rotation(r)?;
                if key.extractable {
                    return Err(refuse(&key.id, KmsRefusal::RootKeyRequired));
                }
                let stamp = stamp_for(policies.get("rotation"));
                policies.insert("rotation".into(), json!({"enabled": r.enabled, "interval_month": r.interval_month, "stamp": stamp}));
            }
            key.attributes.insert("policies".into(), Value::Object(policies));
            let details = json!({
                "dualAuthDelete": update.dual_auth_delete,
                "rotation": update.rotation.map(|r| json!({"enabled": r.enabled, "interval_month": r.interval_month})),
            });
            self.save_key(caller, &mut key, "key.policies.set", details).await?;
            let p = key_policies_of(&key);
            Ok((key, p))
        })
        .await
    }

    /// The instance's policies as requests are checked against them: read from the store at
    /// most once a second per instance, and at once after a change made through this node.
    pub(crate) async fn enforced_policies(&self, instance_id: &str) -> Result<Arc<PolicyMap>> {
        let now = self.now_ms();
        let cached = lock_map(&self.inner.policies)
            .get(instance_id)
            .filter(|(at, _)| (0..POLICY_CACHE_MS).contains(&(now - at)))
            .map(|(_, map)| map.clone());
        if let Some(map) = cached {
            return Ok(map);
        }
        let map = Arc::new(self.instance_policy_map(instance_id).await?);
        lock_map(&self.inner.policies).insert(instance_id.to_owned(), (now, map.clone()));
        Ok(map)
    }

    /// The instance's policies, read from the store now.
    async fn instance_policy_map(&self, instance_id: &str) -> Result<PolicyMap> {
        let text = match self.store().instance_policies(instance_id).await {
            Ok(text) => text,
            Err(keyfort_store::StoreError::NotFound { .. }) => {
                return Err(CoreError::InstanceNotFound {
                    id: instance_id.to_owned(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let v: Value = serde_json::from_str(&text).unwrap_or(json!({}));
        let mut out = std::collections::HashMap::new();
        if let Some(obj) = v.as_object() {
            for (name, p) in obj {
                let Some(t) = InstancePolicyType::from_name(name) else {
                    continue;
                };
                out.insert(
                    t,
                    InstancePolicy {
                        policy_type: t,
                        enabled: p.get("enabled").and_then(Value::as_bool).unwrap_or(false),
                        attributes: p
                            .get("attributes")
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default(),
                        stamp: PolicyStamp {
                            created_by: p
                                .get("created_by")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            created_at: p.get("created_at").and_then(Value::as_i64).unwrap_or(0),
                            updated_by: p
                                .get("updated_by")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            updated_at: p.get("updated_at").and_then(Value::as_i64).unwrap_or(0),
                        },
                    },
                );
            }
        }
        Ok(out)
    }

    /// The instance policies (Manager).
    pub async fn instance_policies(
        &self,
        caller: &Caller,
        instance_id: &str,
    ) -> Result<Vec<InstancePolicy>> {
        self.audited(
            caller,
            instance_id,
            "instance.policies.read",
            instance_id,
            async {
                self.instance_record(instance_id).await?;
                caller.authorize(Action::ManageKey, instance_id, None)?;
                let map = self.instance_policy_map(instance_id).await?;
                self.audit_read(
                    caller,
                    instance_id,
                    "instance.policies.read",
                    instance_id,
                    json!({}),
                )
                .await?;
                Ok(InstancePolicyType::ALL
                    .into_iter()
                    .filter_map(|t| map.get(&t).cloned())
                    .collect())
            },
        )
        .await
    }

    /// The port of the allowedIP policy (§3 #26, Manager). Keyfort has no separate private
    /// endpoint: the policy is enforced on the port the caller reached, `served_on`, which is
    /// returned while an allowedIP policy is enabled, `None` otherwise. The caller's address
    /// is not checked against the policy here (Key Protect lets this call through).
    pub async fn allowed_ip_port(
        &self,
        caller: &Caller,
        instance_id: &str,
        served_on: u16,
    ) -> Result<Option<u16>> {
        let action = "instance.allowed_ip_port.read";
        self.audited(caller, instance_id, action, instance_id, async {
            self.instance_record(instance_id).await?;
            caller.authorize(Action::ManageKey, instance_id, None)?;
            let map = self.instance_policy_map(instance_id).await?;
            let port = map
                .get(&InstancePolicyType::AllowedIp)
                .filter(|p| p.enabled)
                .map(|_| served_on);
            self.audit_read(
                caller,
                instance_id,
                action,
                instance_id,
                json!({"port": port}),
            )
            .await?;
            Ok(port)
        })
        .await
    }

    /// Records a service's acknowledgement of a key lifecycle event (§10; service identities
    /// with at least Reader on the instance). The acknowledgement is kept in the audit trail.
    pub async fn acknowledge_event(
        &self,
        caller: &Caller,
        instance_id: &str,
        ack: EventAck,
    ) -> Result<()> {
        let action = "event.acknowledge";
        let target = ack.event_id.clone();
        self.audited(caller, instance_id, action, &target, async {
            self.instance_record(instance_id).await?;
            caller.authorize(Action::ReadKey, instance_id, None)?;
            if caller.principal.kind != crate::auth::PrincipalKind::Service {
                return Err(refuse(instance_id, KmsRefusal::ServiceOnly));
            }
            validate_event_ack(&ack)?;
            let event = self.audit_event(
                caller,
                instance_id,
                action,
                &ack.event_id,
                "success",
                json!({
                    "adopter_key_state": ack.adopter_key_state,
                    "processed_at": ack.processed_at,
                    "rewrapped_key_version": ack.rewrapped_key_version,
                }),
            );
            self.store().append_audit_event(&event).await?;
            Ok(())
        })
        .await
    }

    /// Sets instance policies (Manager). Each entry: type, enabled, attributes (validated).
    pub async fn set_instance_policies(
        &self,
        caller: &Caller,
        instance_id: &str,
        updates: Vec<(InstancePolicyType, bool, Map<String, Value>)>,
    ) -> Result<()> {
        self.audited(
            caller,
            instance_id,
            "instance.policies.set",
            instance_id,
            async {
                self.instance_record(instance_id).await?;
                caller.authorize(Action::ManageKey, instance_id, None)?;
                let text = self.store().instance_policies(instance_id).await?;
                let mut all: Map<String, Value> = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.as_object().cloned())
                    .unwrap_or_default();
                let now = self.now_ms();
                let mut names = Vec::new();
                for (t, enabled, attributes) in updates {
                    validate_instance_policy(t, enabled, &attributes)?;
                    let existing = all.get(t.name()).cloned();
                    let created_by = existing
                        .as_ref()
                        .and_then(|e| e.get("created_by"))
                        .cloned()
                        .unwrap_or(json!(caller.principal.name));
                    let created_at = existing
                        .as_ref()
                        .and_then(|e| e.get("created_at"))
                        .cloned()
                        .unwrap_or(json!(now));
                    all.insert(t.name().to_owned(), json!({
                    "enabled": enabled,
                    "attributes": if enabled { Value::Object(attributes) } else { json!({}) },
                    "created_by": created_by, "created_at": created_at,
                    "updated_by": caller.principal.name, "updated_at": now,
                }));
                    names.push(t.name());
                }
                let event = self.audit_event(
                    caller,
                    instance_id,
                    "instance.policies.set",
                    instance_id,
                    "success",
                    json!({"policies": names}),
                );
                self.store()
                    .set_instance_policies(instance_id, &Value::Object(all).to_string(), &event)
                    .await?;
                lock_map(&self.inner.policies).remove(instance_id);
                Ok(())
            },
        )
        .await
    }

    /// Refuses (and audits) a request whose source address the instance's allowedIP policy does
    /// not allow. The policy is read at most once a second per instance.
    pub async fn check_source(
        &self,
        caller: &Caller,
        instance_id: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<()> {
        let policies = self.enforced_policies(instance_id).await?;
        let cidrs = policies
            .get(&InstancePolicyType::AllowedIp)
            .filter(|p| p.enabled)
            .map(|p| {
                p.attributes
                    .get("allowed_ip")
                    .and_then(Value::as_array)
                    .map(|list| list.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                    .unwrap_or_default()
            });
        let Some(cidrs) = cidrs else { return Ok(()) };
        if source.is_some_and(|ip| cidrs.iter().any(|c| cidr_contains(c, ip))) {
            return Ok(());
        }
        let event = self.audit_event(
            caller,
            instance_id,
            "request.source",
            instance_id,
            "denied",
            json!({"reason": "allowedIP"}),
        );
        if let Err(e) = self.store().append_audit_event(&event).await {
            tracing::error!(instance = instance_id, error = ?e, "audit event lost");
        }
        Err(CoreError::Forbidden {
            principal: caller.principal.name.clone(),
            action: "connect from this address",
        })
    }

    // ---- aliases and key rings -------------------------------------------------------------

    /// Adds an alias to a key (Writer or Manager; at most 5 per key).
    pub async fn add_alias(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        alias: &str,
    ) -> Result<Key> {
        self.audited(
            caller,
            instance_id,
            "key.alias.create",
            id_or_alias,
            async {
                let mut key = self
                    .key_for(caller, instance_id, id_or_alias, Action::CreateKey)
                    .await?;
                if key.state.is_destroyed() {
                    return Err(refuse(&key.id, KmsRefusal::KeyDeleted));
                }
                if key.aliases.iter().any(|a| a == alias) {
                    return Ok(key);
                }
                key.aliases.push(alias.to_owned());
                validate_aliases(&key.aliases)?;
                self.save_key(
                    caller,
                    &mut key,
                    "key.alias.create",
                    json!({"alias": alias}),
                )
                .await?;
                Ok(key)
            },
        )
        .await
    }

    /// Removes an alias from a key.
    pub async fn delete_alias(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        alias: &str,
    ) -> Result<Key> {
        self.audited(
            caller,
            instance_id,
            "key.alias.delete",
            id_or_alias,
            async {
                let mut key = self
                    .key_for(caller, instance_id, id_or_alias, Action::CreateKey)
                    .await?;
                let before = key.aliases.len();
                key.aliases.retain(|a| a != alias);
                if key.aliases.len() == before {
                    return Err(CoreError::KeyNotFound {
                        id: format!("{}/aliases/{alias}", key.id),
                    });
                }
                self.save_key(
                    caller,
                    &mut key,
                    "key.alias.delete",
                    json!({"alias": alias}),
                )
                .await?;
                Ok(key)
            },
        )
        .await
    }

    /// The key rings of an instance (Reader on the instance).
    pub async fn key_rings(&self, caller: &Caller, instance_id: &str) -> Result<Vec<KeyRing>> {
        self.audited(caller, instance_id, "key_ring.list", instance_id, async {
            self.instance_record(instance_id).await?;
            caller.authorize(Action::ListKeys, instance_id, None)?;
            let rings = self.store().list_key_rings(instance_id).await?;
            self.audit_read(caller, instance_id, "key_ring.list", instance_id, json!({}))
                .await?;
            Ok(rings
                .into_iter()
                .map(|r| KeyRing {
                    id: r.id,
                    created_at: r.created_at,
                    created_by: r.created_by,
                })
                .collect())
        })
        .await
    }

    /// Creates a key ring (Writer on the instance).
    pub async fn create_key_ring(
        &self,
        caller: &Caller,
        instance_id: &str,
        ring: &str,
    ) -> Result<KeyRing> {
        self.audited(caller, instance_id, "key_ring.create", ring, async {
            self.instance_record(instance_id).await?;
            caller.authorize(Action::CreateKeyRing, instance_id, None)?;
            validate_key_ring_id(ring)?;
            if ring == DEFAULT_KEY_RING {
                return Err(refuse(ring, KmsRefusal::DefaultKeyRing));
            }
            let record = KeyRingRecord {
                instance_id: instance_id.to_owned(),
                id: ring.to_owned(),
                created_at: self.now_ms(),
                created_by: caller.principal.name.clone(),
            };
            let event = self.audit_event(
                caller,
                instance_id,
                "key_ring.create",
                ring,
                "success",
                json!({}),
            );
            self.apply_audited(vec![Write::InsertKeyRing(record.clone())], event)
                .await?;
            Ok(KeyRing {
                id: record.id,
                created_at: record.created_at,
                created_by: record.created_by,
            })
        })
        .await
    }

    /// Deletes a key ring (Manager). Refused while it holds a live key; with `force`, its
    /// destroyed keys move to `default`.
    pub async fn delete_key_ring(
        &self,
        caller: &Caller,
        instance_id: &str,
        ring: &str,
        force: bool,
    ) -> Result<()> {
        self.audited(caller, instance_id, "key_ring.delete", ring, async {
            self.instance_record(instance_id).await?;
            caller.authorize(Action::ManageKey, instance_id, None)?;
            if ring == DEFAULT_KEY_RING {
                return Err(refuse(ring, KmsRefusal::DefaultKeyRing));
            }
            if self.store().key_ring(instance_id, ring).await?.is_none() {
                return Err(CoreError::KeyRingNotFound {
                    id: ring.to_owned(),
                });
            }
            let query = KeyQuery {
                key_ring_id: Some(ring.to_owned()),
                states: KeyState::ALL.to_vec(),
                ..KeyQuery::default()
            };
            let keys = self
                .store()
                .list_keys(instance_id, &query.to_filter())
                .await?;
            let mut writes = Vec::new();
            for record in keys {
                let mut key = Key::from_record(record)?;
                if !key.state.is_destroyed() || !force {
                    return Err(refuse(ring, KmsRefusal::KeyRingNotEmpty));
                }
                key.key_ring_id = DEFAULT_KEY_RING.to_owned();
                writes.push(Write::UpdateKey(key.to_record()));
            }
            writes.push(Write::DeleteKeyRing {
                instance_id: instance_id.to_owned(),
                id: ring.to_owned(),
            });
            let event = self.audit_event(
                caller,
                instance_id,
                "key_ring.delete",
                ring,
                "success",
                json!({"force": force}),
            );
            self.apply_audited(writes, event).await?;
            Ok(())
        })
        .await
    }

    // ---- registrations ---------------------------------------------------------------------

    /// Registrations of a key, or of all keys.
    pub async fn registrations(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: Option<&str>,
    ) -> Result<Vec<Registration>> {
        self.registrations_matching(caller, instance_id, id_or_alias, |_| true, 0, usize::MAX)
            .await
            .map(|(_, page)| page)
    }

    /// Registrations of a key, or of all keys, that `keep` accepts: how many there are, and
    /// those from the `offset`-th on, at most `limit`, ordered by key then CRN. All keys'
    /// registrations are read a page at a time, so memory does not grow with their number.
    pub async fn registrations_matching(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: Option<&str>,
        keep: impl Fn(&Registration) -> bool,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<Registration>)> {
        let target = id_or_alias.unwrap_or(instance_id).to_owned();
        self.audited(caller, instance_id, "registration.list", &target, async {
            self.unsealed_for(caller, instance_id).await?;
            let mut found = crate::kms_list::Window::new(offset, limit);
            let mut take = |r: Registration| {
                if keep(&r) {
                    found.offer(r);
                }
            };
            match id_or_alias {
                Some(k) => {
                    let key = self.find_key(instance_id, k).await?;
                    caller.authorize(Action::ReadKey, instance_id, Some(&key.key_ring_id))?;
                    check_key_ring(caller, &key)?;
                    crate::kmip_adapters::check_adapter_scope(caller, &key)?;
                    for r in self
                        .store()
                        .registrations(instance_id, Some(&key.id))
                        .await?
                    {
                        take(r);
                    }
                }
                None => {
                    let ring = caller.request.key_ring.as_deref();
                    caller.authorize(Action::ReadKey, instance_id, ring)?;
                    // Scoped to a key ring: only the registrations of keys in it.
                    let in_ring = match ring {
                        Some(ring) => {
                            let filter = KeyQuery {
                                key_ring_id: Some(ring.to_owned()),
                                states: KeyState::ALL.to_vec(),
                                ..KeyQuery::default()
                            }
                            .to_filter();
                            let keys = self.store().list_keys(instance_id, &filter).await?;
                            Some(
                                keys.into_iter()
                                    .map(|k| k.id)
                                    .collect::<std::collections::HashSet<String>>(),
                            )
                        }
                        None => None,
                    };
                    let mut after: Option<(String, String)> = None;
                    loop {
                        let cursor = after.as_ref().map(|(k, c)| (k.as_str(), c.as_str()));
                        let records = self
                            .store()
                            .registrations_after(instance_id, cursor, REGISTRATION_PAGE)
                            .await?;
                        let full = records.len() as u64 == REGISTRATION_PAGE;
                        after = records
                            .last()
                            .map(|r| (r.key_id.clone(), r.resource_crn.clone()));
                        for r in records {
                            if in_ring.as_ref().is_none_or(|ids| ids.contains(&r.key_id)) {
                                take(r);
                            }
                        }
                        if !full {
                            break;
                        }
                    }
                }
            }
            self.audit_read(caller, instance_id, "registration.list", &target, json!({}))
                .await?;
            Ok((found.total, found.items))
        })
        .await
    }

    /// Creates or replaces a registration (service-to-service; Manager here).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_registration(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        resource_crn: &str,
        description: Option<String>,
        registration_metadata: Option<String>,
        prevent_key_deletion: bool,
    ) -> Result<Registration> {
        self.audited(caller, instance_id, "registration.put", id_or_alias, async {
            let key = self.key_for(caller, instance_id, id_or_alias, Action::ManageKey).await?;
            if key.state != KeyState::Active {
                return Err(refuse(&key.id, KmsRefusal::KeyNotActive));
            }
            if resource_crn.is_empty() || resource_crn.len() > 512 || !resource_crn.starts_with("crn:") {
                return Err(CoreError::InvalidField { field: "resource CRN", rule: "must be a CRN of at most 512 characters" });
            }
            let now = self.now_ms();
            let existing = self.store().registrations(instance_id, Some(&key.id)).await?.into_iter().find(|r| r.resource_crn == resource_crn);
            if existing.as_ref().is_some_and(|e| e.prevent_key_deletion) && !prevent_key_deletion {
                return Err(refuse(&key.id, KmsRefusal::PreventKeyDeletion));
            }
            let record = RegistrationRecord {
                instance_id: instance_id.to_owned(),
                key_id: key.id.clone(),
                resource_crn: resource_crn.to_owned(),
                description,
                registration_metadata,
                prevent_key_deletion,
                key_version_id: key.current_version_id.clone(),
                created_by: existing.as_ref().map_or_else(|| caller.principal.name.clone(), |e| e.created_by.clone()),
                created_at: existing.as_ref().map_or(now, |e| e.created_at),
                updated_by: caller.principal.name.clone(),
                updated_at: now,
            };
            let event = self.audit_event(caller, instance_id, "registration.put", &key.id, "success", json!({"resource_crn": resource_crn, "prevent_key_deletion": prevent_key_deletion}));
            self.apply_audited(vec![Write::PutRegistration(record.clone())], event).await?;
            Ok(record)
        })
        .await
    }

    /// Deletes a registration (a WORM one cannot be deleted).
    pub async fn delete_registration(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        resource_crn: &str,
    ) -> Result<()> {
        self.audited(
            caller,
            instance_id,
            "registration.delete",
            id_or_alias,
            async {
                let key = self
                    .key_for(caller, instance_id, id_or_alias, Action::ManageKey)
                    .await?;
                let existing = self
                    .store()
                    .registrations(instance_id, Some(&key.id))
                    .await?
                    .into_iter()
                    .find(|r| r.resource_crn == resource_crn);
                match existing {
                    None => {
                        return Err(CoreError::KeyNotFound {
                            id: format!("{}/registrations/{resource_crn}", key.id),
                        });
                    }
                    Some(r) if r.prevent_key_deletion => {
                        return Err(refuse(&key.id, KmsRefusal::PreventKeyDeletion));
                    }
                    Some(_) => {}
                }
                let event = self.audit_event(
                    caller,
                    instance_id,
                    "registration.delete",
                    &key.id,
                    "success",
                    json!({"resource_crn": resource_crn}),
                );
                self.apply_audited(
                    vec![Write::DeleteRegistration {
                        instance_id: instance_id.to_owned(),
                        key_id: key.id.clone(),
                        resource_crn: resource_crn.to_owned(),
                    }],
                    event,
                )
                .await?;
                Ok(())
            },
        )
        .await
    }

    // ---- import tokens ---------------------------------------------------------------------

    /// Creates the instance's import token (Writer): an RSA-4096 key pair and a nonce, sealed
    /// under the instance master key. Replaces any previous token.
    pub async fn create_import_token(
        &self,
        caller: &Caller,
        instance_id: &str,
        expiration_secs: u64,
        max_retrievals: u32,
    ) -> Result<ImportToken> {
        self.audited(
            caller,
            instance_id,
            "import_token.create",
            instance_id,
            async {
                let loaded = self.unsealed_for(caller, instance_id).await?;
                caller.authorize(Action::CreateKey, instance_id, None)?;
                if !(300..=86_400).contains(&expiration_secs) {
                    return Err(CoreError::InvalidField {
                        field: "expiration",
                        rule: "must be 300 to 86400 seconds",
                    });
                }
                if !(1..=500).contains(&max_retrievals) {
                    return Err(CoreError::InvalidField {
                        field: "maxAllowedRetrievals",
                        rule: "must be 1 to 500",
                    });
                }
                let key = tokio::task::spawn_blocking(|| {
                    keyfort_crypto::rsa::PrivateKey::generate(keyfort_crypto::rsa::KeySize::Rsa4096)
                })
                .await
                .map_err(|_| CoreError::InvalidField {
                    field: "import token",
                    rule: "key generation did not complete",
                })??;
                let mut nonce = [0u8; 16];
                keyfort_crypto::rng::fill(&mut nonce)?;
                let now = self.now_ms();
                let expires_at = now + i64::try_from(expiration_secs).unwrap_or(86_400) * 1000;
                let token = ImportToken {
                    created_at: now,
                    expires_at,
                    expiration: expiration_secs,
                    max_retrievals,
                    remaining_retrievals: max_retrievals,
                    public_key_pem: None,
                    nonce: None,
                };
                let state = token_state(&token, &key.to_pkcs8(), &nonce);
                let sealed = self.seal_instance_secret(
                    instance_id,
                    loaded.current(),
                    IMPORT_TOKEN_SECRET,
                    state.as_bytes(),
                )?;
                let event = self.audit_event(
                    caller,
                    instance_id,
                    "import_token.create",
                    instance_id,
                    "success",
                    json!({"expiration": expiration_secs, "max_retrievals": max_retrievals}),
                );
                self.apply_audited(vec![Write::PutInstanceSecret(sealed)], event)
                    .await?;
                Ok(token)
            },
        )
        .await
    }

    /// Retrieves the import token's public key and nonce (Writer); each call uses one retrieval.
    pub async fn retrieve_import_token(
        &self,
        caller: &Caller,
        instance_id: &str,
    ) -> Result<ImportToken> {
        self.audited(
            caller,
            instance_id,
            "import_token.read",
            instance_id,
            async {
                let loaded = self.unsealed_for(caller, instance_id).await?;
                caller.authorize(Action::CreateKey, instance_id, None)?;
                let (mut token, pkcs8, nonce) = self.load_import_token(instance_id).await?;
                if token.expires_at <= self.now_ms() || token.remaining_retrievals == 0 {
                    return Err(refuse(instance_id, KmsRefusal::ImportTokenExpired));
                }
                token.remaining_retrievals -= 1;
                let key = keyfort_crypto::rsa::PrivateKey::from_pkcs8(&pkcs8)?;
                let state = token_state(&token, &pkcs8, &nonce);
                let sealed = self.seal_instance_secret(
                    instance_id,
                    loaded.current(),
                    IMPORT_TOKEN_SECRET,
                    state.as_bytes(),
                )?;
                let event = self.audit_event(
                    caller,
                    instance_id,
                    "import_token.read",
                    instance_id,
                    "success",
                    json!({"remaining": token.remaining_retrievals}),
                );
                self.apply_audited(vec![Write::PutInstanceSecret(sealed)], event)
                    .await?;
                token.public_key_pem = Some(pem("PUBLIC KEY", key.public_key().to_spki_der()));
                token.nonce = Some(nonce.to_vec());
                Ok(token)
            },
        )
        .await
    }

    async fn load_import_token(
        &self,
        instance_id: &str,
    ) -> Result<(ImportToken, Zeroizing<Vec<u8>>, Vec<u8>)> {
        let loaded = self.unsealed(instance_id).await?;
        let record = self
            .store()
            .instance_secret(instance_id, IMPORT_TOKEN_SECRET)
            .await?
            .ok_or_else(|| refuse(instance_id, KmsRefusal::ImportTokenMissing))?;
        let version = keyfort_crypto::seal::sealed_mk_version(&record.sealed)?;
        let mk = loaded
            .version(version)
            .ok_or_else(|| refuse(instance_id, KmsRefusal::ImportTokenExpired))?;
        let object = format!("secret/{IMPORT_TOKEN_SECRET}");
        let ctx = keyfort_crypto::seal::SealContext {
            instance_id,
            object_id: &object,
            attributes: b"keyfort-instance-secret-v1",
        };
        let plain = keyfort_crypto::seal::unseal(mk, &ctx, &record.sealed).map_err(|source| {
            CoreError::SealedObjectRejected {
                instance: instance_id.to_owned(),
                object: object.clone(),
                source,
            }
        })?;
        let v: Value = serde_json::from_slice(&plain)
            .map_err(|_| refuse(instance_id, KmsRefusal::ImportTokenMissing))?;
        let num = |n: &str| v.get(n).and_then(Value::as_i64).unwrap_or(0);
        let token = ImportToken {
            created_at: num("created_at"),
            expires_at: num("expires_at"),
            expiration: u64::try_from(num("expiration")).unwrap_or(0),
            max_retrievals: u32::try_from(num("max_retrievals")).unwrap_or(0),
            remaining_retrievals: u32::try_from(num("remaining")).unwrap_or(0),
            public_key_pem: None,
            nonce: None,
        };
        let pkcs8 = Zeroizing::new(
            v.get("key")
                .and_then(Value::as_str)
                .and_then(|k| B64.decode(k).ok())
                .unwrap_or_default(),
        );
        let nonce = v
            .get("nonce")
            .and_then(Value::as_str)
            .and_then(|k| B64.decode(k).ok())
            .unwrap_or_default();
        Ok((token, pkcs8, nonce))
    }

    fn seal_instance_secret(
        &self,
        instance_id: &str,
        mk: &keyfort_crypto::seal::MasterKey,
        name: &str,
        plaintext: &[u8],
    ) -> Result<InstanceSecretRecord> {
        let object = format!("secret/{name}");
        let ctx = keyfort_crypto::seal::SealContext {
            instance_id,
            object_id: &object,
            attributes: b"keyfort-instance-secret-v1",
        };
        Ok(InstanceSecretRecord {
            instance_id: instance_id.to_owned(),
            name: name.to_owned(),
            sealed: keyfort_crypto::seal::seal(mk, &ctx, plaintext)?,
            mk_version: i64::from(mk.version()),
            created_at: self.now_ms(),
        })
    }

    /// The plain bytes of caller-supplied material.
    async fn open_material(
        &self,
        caller: &Caller,
        instance_id: &str,
        material: ImportedMaterial,
    ) -> Result<Zeroizing<Vec<u8>>> {
        match material {
            ImportedMaterial::Plain(p) => Ok(p),
            ImportedMaterial::Sealed(import) => {
                self.open_secure_import(caller, instance_id, import).await
            }
        }
    }

    /// Opens key material sent under the import token (Key Protect secure import).
    async fn open_secure_import(
        &self,
        _caller: &Caller,
        instance_id: &str,
        import: SecureImport,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (token, pkcs8, nonce) = self.load_import_token(instance_id).await?;
        if token.expires_at <= self.now_ms() {
            return Err(refuse(instance_id, KmsRefusal::ImportTokenExpired));
        }
        let key = keyfort_crypto::rsa::PrivateKey::from_pkcs8(&pkcs8)?;
        let hash = if import.sha256 {
            keyfort_crypto::rsa::OaepHash::Sha256
        } else {
            keyfort_crypto::rsa::OaepHash::Sha1
        };
        let material =
            key.decrypt_oaep(hash, &import.payload, None)
                .map_err(|_| CoreError::InvalidField {
                    field: "payload",
                    rule: "cannot be decrypted with the import token",
                })?;
        if ![16, 24, 32].contains(&material.len()) {
            return Err(CoreError::InvalidField {
                field: "payload",
                rule: "must be 128, 192 or 256 bits of key material",
            });
        }
        let opened =
            keyfort_crypto::aes::gcm_decrypt(&material, &import.iv, &[], &import.encrypted_nonce)
                .map_err(|_| refuse(instance_id, KmsRefusal::IncorrectNonceIv))?;
        if !keyfort_crypto::ct_eq(&opened, &nonce) {
            return Err(refuse(instance_id, KmsRefusal::IncorrectNonce));
        }
        Ok(material)
    }

    /// Key Protect's waiting periods in force on this server.
    pub fn kms_timings(&self) -> KmsTimings {
        self.inner.kms_timings
    }
}

fn lock_map<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn token_state(token: &ImportToken, pkcs8: &[u8], nonce: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(
        json!({
            "created_at": token.created_at,
            "expires_at": token.expires_at,
            "expiration": token.expiration,
            "max_retrievals": token.max_retrievals,
            "remaining": token.remaining_retrievals,
            "key": B64.encode(pkcs8),
            "nonce": B64.encode(nonce),
        })
        .to_string(),
    )
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn validate_rotation(r: RotationPolicy) -> Result<()> {
    if !(1..=12).contains(&r.interval_month) {
        return Err(CoreError::InvalidField {
            field: "interval_month",
            rule: "must be 1 to 12",
        });
    }
    Ok(())
}

fn validate_instance_policy(
    t: InstancePolicyType,
    enabled: bool,
    attributes: &Map<String, Value>,
) -> Result<()> {
    let bad = |rule| {
        Err(CoreError::InvalidField {
            field: "policy_data.attributes",
            rule,
        })
    };
    if !enabled {
        return Ok(());
    }
    match t {
        InstancePolicyType::DualAuthDelete | InstancePolicyType::Metrics => Ok(()),
        InstancePolicyType::AllowedNetwork => {
            match attributes.get("allowed_network").and_then(Value::as_str) {
                Some("public-and-private" | "private-only") => Ok(()),
                _ => bad("allowed_network must be public-and-private or private-only"),
            }
        }
        InstancePolicyType::AllowedIp => {
            let Some(list) = attributes.get("allowed_ip").and_then(Value::as_array) else {
                return bad("allowed_ip must be a list of CIDRs");
            };
            if list.is_empty()
                || list.len() > 1000
                || !list
                    .iter()
                    .all(|c| c.as_str().is_some_and(|c| parse_cidr(c).is_some()))
            {
                return bad("allowed_ip must be a list of CIDRs");
            }
            Ok(())
        }
        InstancePolicyType::KeyCreateImportAccess => {
            for (k, v) in attributes {
                let known = [
                    "create_root_key",
                    "create_standard_key",
                    "import_root_key",
                    "import_standard_key",
                    "enforce_token",
                ];
                if !known.contains(&k.as_str()) || !v.is_boolean() {
                    return bad(
                        "keyCreateImportAccess attributes are booleans: create_root_key, create_standard_key, import_root_key, import_standard_key, enforce_token",
                    );
                }
            }
            Ok(())
        }
        InstancePolicyType::Rotation => {
            match attributes.get("interval_month").and_then(Value::as_u64) {
                Some(1..=12) => Ok(()),
                _ => bad("interval_month must be 1 to 12"),
            }
        }
    }
}

fn parse_cidr(c: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = c.split_once('/').unwrap_or((c, ""));
    let ip: std::net::IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse().ok()?
    };
    (len <= max).then_some((ip, len))
}

fn cidr_contains(cidr: &str, ip: std::net::IpAddr) -> bool {
    let Some((net, len)) = parse_cidr(cidr) else {
        return false;
    };
    match (net, ip) {
        (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Key Protect's `X-Kms-Key-Ring` on a key request (§2): a key outside the named ring is not
/// found. Checked after authorization, so a caller without access learns nothing either way.
pub(crate) fn check_key_ring(caller: &Caller, key: &Key) -> Result<()> {
    match &caller.request.key_ring {
        Some(ring) if *ring != key.key_ring_id => {
            Err(CoreError::KeyNotFound { id: key.id.clone() })
        }
        _ => Ok(()),
    }
}

/// Whether the instance's dualAuthDelete policy is on: every key created meanwhile takes it as
/// its own, whatever door creates it.
/// Whether the instance's keyCreateImportAccess policy (if on) lets a key be made: generated
/// or `imported` with the caller's material, `extractable` (a standard key) or not (a root key);
/// an import with `enforce_token` on must have come `sealed` to the instance's import token.
pub(crate) fn create_import_allowed(
    policies: &PolicyMap,
    imported: bool,
    extractable: bool,
    sealed: bool,
) -> bool {
    let Some(p) = policies
        .get(&InstancePolicyType::KeyCreateImportAccess)
        .filter(|p| p.enabled)
    else {
        return true;
    };
    let flag = |name: &str, default: bool| {
        p.attributes
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    let allowed = match (imported, extractable) {
        (false, false) => flag("create_root_key", true),
        (false, true) => flag("create_standard_key", true),
        (true, false) => flag("import_root_key", true),
        (true, true) => flag("import_standard_key", true),
    };
    allowed && !(imported && !sealed && flag("enforce_token", false))
}

pub(crate) fn instance_dual_auth(policies: &PolicyMap) -> bool {
    policies
        .get(&InstancePolicyType::DualAuthDelete)
        .is_some_and(|p| p.enabled)
}

fn dual_auth_enabled(key: &Key) -> bool {
    key.attributes
        .get("policies")
        .and_then(|p| p.get("dualAuthDelete"))
        .and_then(|d| d.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The dual-authorization approval of a key, if pending: (approver name, expiry ms).
pub fn pending_deletion(key: &Key) -> Option<(String, i64)> {
    let p = key.attributes.get("dual_auth_pending")?;
    Some((
        p.get("by_name")?.as_str()?.to_owned(),
        p.get("expires_at")?.as_i64()?,
    ))
}

/// A key's policies, read from its attributes.
pub fn key_policies_of(key: &Key) -> KeyPolicies {
    let policies = key.attributes.get("policies");
    let stamp = |v: &Value| {
        let s = v.get("stamp");
        let text = |n: &str| {
            s.and_then(|s| s.get(n))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let num = |n: &str| {
            s.and_then(|s| s.get(n))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        PolicyStamp {
            created_by: text("by"),
            created_at: num("at"),
            updated_by: if text("updated_by").is_empty() {
                text("by")
            } else {
                text("updated_by")
            },
            updated_at: if num("updated_at") == 0 {
                num("at")
            } else {
                num("updated_at")
            },
        }
    };
    KeyPolicies {
        rotation: policies.and_then(|p| p.get("rotation")).map(|r| {
            (
                RotationPolicy {
                    enabled: r.get("enabled").and_then(Value::as_bool).unwrap_or(false),
                    interval_month: r
                        .get("interval_month")
                        .and_then(Value::as_u64)
                        .and_then(|m| u8::try_from(m).ok())
                        .unwrap_or(1),
                },
                stamp(r),
            )
        }),
        dual_auth_delete: policies.and_then(|p| p.get("dualAuthDelete")).map(|d| {
            (
                d.get("enabled").and_then(Value::as_bool).unwrap_or(false),
                stamp(d),
            )
        }),
    }
}

pub(crate) fn row_version(applied: &[Applied]) -> i64 {
    applied
        .iter()
        .find_map(|a| match a {
            Applied::RowVersion(v) => Some(*v),
            _ => None,
        })
        .unwrap_or(0)
}

/// Store errors of key writes in core terms.
pub(crate) fn key_write_error(e: CoreError) -> CoreError {
    match e {
        CoreError::Store(StoreError::NotFound {
            what: "key ring",
            id,
        }) => CoreError::KeyRingNotFound { id },
        CoreError::Store(StoreError::NotFound { what: "key", id }) => CoreError::KeyNotFound { id },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_bodies_are_json_objects_with_sorted_members() {
        use crate::auth::{Principal, PrincipalKind, RequestInfo};
        for (correlation_id, source) in [
            (Some("c-1".to_owned()), Some("127.0.0.1".to_owned())),
            (None, None),
        ] {
            let caller = Caller {
                principal: Principal {
                    id: "p\"1".into(),
                    instance_id: None,
                    name: "al\\ice \u{e9}\n".into(),
                    kind: PrincipalKind::User,
                    roles: Vec::new(),
                    disabled: false,
                    created_at: 0,
                },
                api_key_id: None,
                request: RequestInfo {
                    correlation_id: correlation_id.clone(),
                    source: source.clone(),
                    key_ring: None,
                    kmip: false,
                },
            };
            let details = json!({"z": [1, "two"], "a": {"b": null}});
            let body = audit_body(&caller, "kms.wrap", "k\"1", "success", &details);
            let expected = json!({
                "actor": caller.principal.name,
                "actor_id": caller.principal.id,
                "action": "kms.wrap",
                "target": "k\"1",
                "outcome": "success",
                "correlation_id": correlation_id,
                "source": source,
                "details": details,
            });
            assert_eq!(body, expected.to_string());
        }
    }

    #[test]
    fn cidrs() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(cidr_contains("10.0.0.0/8", ip("10.1.2.3")));
        assert!(!cidr_contains("10.0.0.0/8", ip("11.1.2.3")));
        assert!(cidr_contains("127.0.0.1", ip("127.0.0.1")));
        assert!(cidr_contains("0.0.0.0/0", ip("1.2.3.4")));
        assert!(cidr_contains("::1/128", ip("::1")));
        assert!(!cidr_contains("::1/128", ip("127.0.0.1")));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nonsense").is_none());
    }

    #[test]
    fn instance_policy_validation() {
        let attrs = |v: Value| v.as_object().unwrap().clone();
        assert!(
            validate_instance_policy(
                InstancePolicyType::Rotation,
                true,
                &attrs(json!({"interval_month": 3}))
            )
            .is_ok()
        );
        assert!(
            validate_instance_policy(
                InstancePolicyType::Rotation,
                true,
                &attrs(json!({"interval_month": 13}))
            )
            .is_err()
        );
        assert!(
            validate_instance_policy(
                InstancePolicyType::AllowedIp,
                true,
                &attrs(json!({"allowed_ip": ["10.0.0.0/8"]}))
            )
            .is_ok()
        );
        assert!(
            validate_instance_policy(
                InstancePolicyType::AllowedIp,
                true,
                &attrs(json!({"allowed_ip": ["x"]}))
            )
            .is_err()
        );
        assert!(
            validate_instance_policy(
                InstancePolicyType::KeyCreateImportAccess,
                true,
                &attrs(json!({"create_root_key": false}))
            )
            .is_ok()
        );
        assert!(
            validate_instance_policy(
                InstancePolicyType::KeyCreateImportAccess,
                true,
                &attrs(json!({"bogus": false}))
            )
            .is_err()
        );
        assert!(
            validate_instance_policy(
                InstancePolicyType::AllowedNetwork,
                true,
                &attrs(json!({"allowed_network": "private-only"}))
            )
            .is_ok()
        );
        assert!(
            validate_instance_policy(InstancePolicyType::AllowedIp, false, &Map::new()).is_ok()
        );
    }
}
