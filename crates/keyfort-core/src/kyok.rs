//! Keep Your Own Key: the custodian ceremony, unsealing, commands signed by custodians, master
//! key rotation with background re-sealing, HSM-backed unseal and zeroization (DESIGN §2).
//!
//! What the server stores for an instance with custodians (`instances.unseal_config`, JSON):
//! the threshold, each custodian's public keys, share index and a *share check*
//! (`SHA-256("keyfort-share-check-v1" ‖ instance ‖ MK version ‖ index ‖ share)`), and the key
//! check value of the master key. It keeps no share and no master key. A rotation in progress
//! adds `rotation: {from}` and an instance secret `archived-mk/<from>`: the old master key sealed
//! under the new one, so that a crash in the middle loses nothing and the old key is forgotten
//! when the job ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyfort_crypto::seal::{self, MASTER_KEY_LEN, MasterKey, SealContext};
use keyfort_store::{
    AuditEventInput, InstanceRecord, InstanceSecretRecord, KeyVersionRecord, StoreError,
};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::Result;
use crate::auth::Caller;
use crate::custodian::{Command, CustodianPublic, KeyPart, SignedCommand, UnsealSubmission};
use crate::error::CoreError;
use crate::instance::{
    Instance, InstanceState, STORED_INITIALIZED, STORED_UNINITIALIZED, STORED_ZEROIZED,
    UnsealMethod,
};
use crate::key::Key;
use crate::service::{Keyfort, require_administrator};

/// Most custodians an instance may have.
pub const MAX_CUSTODIANS: usize = 16;
/// How old (or how far in the future) an unseal submission may be, in seconds.
const SUBMISSION_WINDOW_SECS: i64 = 300;
/// Longest lifetime of a signed command, in seconds.
const MAX_COMMAND_LIFETIME_SECS: i64 = 7 * 24 * 3600;

/// Protects instance master keys with a key held elsewhere (a PKCS#11 HSM). Calls block.
pub trait MasterKeyProtector: Send + Sync + 'static {
    /// A human description of the protecting key (token and key label).
    fn describe(&self) -> String;
    /// Encrypts a master key for an instance (the instance id bound as associated data).
    fn wrap(&self, instance_id: &str, master_key: &[u8]) -> Result<Vec<u8>>;
    /// Reverses [`MasterKeyProtector::wrap`].
    fn unwrap(&self, instance_id: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
}

/// Why a custodian's part was refused. The part does not count toward the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartRejection {
    /// The part was made for another instance.
    WrongInstance,
    /// The part belongs to an older (or unknown) master key version.
    StaleMasterKey,
    /// The custodian is not one of this instance's custodians.
    UnknownCustodian,
    /// The custodian's signature over the submission does not verify.
    BadSignature,
    /// The submission is too old or from the future.
    Expired,
    /// This exact submission was seen before.
    Replayed,
    /// This custodian's part is already loaded.
    Duplicate,
    /// The share does not match the one this custodian was given (tampered or wrong part).
    ShareMismatch,
    /// The instance is not waiting for parts (not initialized with custodians, or unsealed).
    NotExpected,
    /// The parts combine to a key that is not the instance's master key.
    WrongMasterKey,
}

impl fmt::Display for PartRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartRejection::WrongInstance => "the part belongs to another instance",
            PartRejection::StaleMasterKey => "the part is for another master key version",
            PartRejection::UnknownCustodian => "the custodian is not a custodian of this instance",
            PartRejection::BadSignature => "the custodian's signature does not verify",
            PartRejection::Expired => "the submission has expired",
            PartRejection::Replayed => "the submission was already used",
            PartRejection::Duplicate => "this custodian's part is already loaded",
            PartRejection::ShareMismatch => {
                "the part does not match the one issued to this custodian"
            }
            PartRejection::NotExpected => "the instance is not waiting for key parts",
            PartRejection::WrongMasterKey => "the parts do not form the instance's master key",
        })
    }
}

/// Where an instance's unsealing stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsealStatus {
    pub instance_id: String,
    pub state: InstanceState,
    pub mk_version: u32,
    pub method: UnsealMethod,
    /// Parts needed (custodian instances), else 0.
    pub threshold: u8,
    /// Custodians of the instance.
    pub custodians: Vec<String>,
    /// Names of the custodians whose part is loaded (while sealed).
    pub loaded: Vec<String>,
    pub reseal: Option<ResealProgress>,
}

/// Progress of a master key rotation's re-seal job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResealProgress {
    pub from_version: u32,
    pub to_version: u32,
    /// Key versions still sealed under the old master key when the job (re)started.
    pub total: u64,
    /// Key versions re-sealed by the job since it (re)started.
    pub done: u64,
    /// Whether the job is running in this process.
    pub running: bool,
}

/// What a signed command did.
#[derive(Debug, Clone)]
pub enum CommandOutcome {
    /// A new master key; its parts go to the custodians.
    Rotated {
        mk_version: u32,
        parts: Vec<KeyPart>,
    },
    /// The custodian set changed with a new master key; its parts go to the new custodians.
    CustodiansChanged {
        mk_version: u32,
        parts: Vec<KeyPart>,
    },
    /// The instance's keys are gone for good.
    Zeroized,
}

/// In-memory ceremony state of this process.
#[derive(Default)]
pub(crate) struct KyokState {
    progress: Mutex<HashMap<String, UnsealProgress>>,
    seen_nonces: Mutex<HashMap<String, i64>>,
    reseal: Mutex<HashMap<String, ResealProgress>>,
}

struct UnsealProgress {
    mk_version: u32,
    shares: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

/// The stored custodian configuration.
struct CustodianConfig {
    threshold: u8,
    custodians: Vec<StoredCustodian>,
}

struct StoredCustodian {
    public: CustodianPublic,
    share_check: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn corrupt_config(id: &str) -> CoreError {
    CoreError::CorruptRecord {
        table: "instances",
        id: id.to_owned(),
        source: StoreError::Corrupt {
            table: "instances",
            id: id.to_owned(),
            detail: "unreadable unseal configuration".into(),
        },
    }
}

fn parse_config(record: &InstanceRecord) -> Result<Value> {
    serde_json::from_str::<Value>(&record.unseal_config)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| corrupt_config(&record.id))
}

fn custodian_config(record: &InstanceRecord) -> Result<CustodianConfig> {
    let v = parse_config(record)?;
    let bad = || corrupt_config(&record.id);
    let threshold = v
        .get("threshold")
        .and_then(Value::as_u64)
        .and_then(|t| u8::try_from(t).ok())
        .ok_or_else(bad)?;
    let custodians = v
        .get("custodians")
        .and_then(Value::as_array)
        .ok_or_else(bad)?
        .iter()
        .map(|c| {
            let public = CustodianPublic::from_value(c).map_err(|_| bad())?;
            let share_check = c
                .get("share_check")
                .and_then(Value::as_str)
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(bad)?;
            Ok(StoredCustodian {
                public,
                share_check,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(CustodianConfig {
        threshold,
        custodians,
    })
}

fn rotation_from(record: &InstanceRecord) -> Result<Option<u32>> {
    let v = parse_config(record)?;
    match v.get("rotation").and_then(|r| r.get("from")) {
        None => Ok(None),
        Some(from) => from
            .as_u64()
            .and_then(|f| u32::try_from(f).ok())
            .map(Some)
            .ok_or_else(|| corrupt_config(&record.id)),
    }
}

fn share_check(instance_id: &str, mk_version: u32, custodian_id: &str, share: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(64 + share.len());
    input.extend_from_slice(b"keyfort-share-check-v1\n");
    input.extend_from_slice(instance_id.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(&mk_version.to_be_bytes());
    input.extend_from_slice(custodian_id.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(share);
    keyfort_crypto::digest::sha256(&input)
}

fn archived_secret_name(version: u32) -> String {
    format!("archived-mk/{version}")
}

fn archived_context<'a>(instance_id: &'a str, object_id: &'a str) -> SealContext<'a> {
    SealContext {
        instance_id,
        object_id,
        attributes: b"keyfort-archived-master-key-v1",
    }
}

/// Splits a master key to custodians: the parts to hand out and the stored configuration.
fn split_to_custodians(
    instance_id: &str,
    mk: &MasterKey,
    custodians: &[CustodianPublic],
    threshold: u8,
) -> Result<(Vec<KeyPart>, Value)> {
    validate_custodian_set(custodians, threshold)?;
    let count = u8::try_from(custodians.len()).map_err(|_| CoreError::InvalidField {
        field: "custodians",
        rule: "at most 16 custodians",
    })?;
    let shares = keyfort_crypto::shamir::split(mk.expose_secret(), threshold, count)?;
    let mut parts = Vec::with_capacity(custodians.len());
    let mut stored = Vec::with_capacity(custodians.len());
    for (custodian, share) in custodians.iter().zip(shares.iter()) {
        let id = custodian.id();
        let mut part = KeyPart {
            instance_id: instance_id.to_owned(),
            mk_version: mk.version(),
            custodian_id: id.clone(),
            custodian_name: custodian.name.clone(),
            threshold,
            sealed: Vec::new(),
        };
        part.sealed =
            keyfort_crypto::sealbox::seal_to(&custodian.encryption_key, &part.aad(), share)?;
        let mut entry = custodian.to_value();
        entry["share_check"] = json!(hex::encode(share_check(
            instance_id,
            mk.version(),
            &id,
            share
        )));
        stored.push(entry);
        parts.push(part);
    }
    Ok((parts, json!({"threshold": threshold, "custodians": stored})))
}

fn validate_custodian_set(custodians: &[CustodianPublic], threshold: u8) -> Result<()> {
    if custodians.is_empty() || custodians.len() > MAX_CUSTODIANS {
        return Err(CoreError::InvalidField {
            field: "custodians",
            rule: "1 to 16 custodians",
        });
    }
    if threshold == 0 || usize::from(threshold) > custodians.len() {
        return Err(CoreError::InvalidField {
            field: "threshold",
            rule: "must be between 1 and the number of custodians",
        });
    }
    let mut ids = HashSet::new();
    for c in custodians {
        if !ids.insert(c.id()) {
            return Err(CoreError::InvalidField {
                field: "custodians",
                rule: "each custodian once",
            });
        }
    }
    Ok(())
}

/// A canonical audit event body (keys sorted by serde_json's map).
pub(crate) fn audit_body(
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    details: Value,
) -> String {
    json!({
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "details": details,
    })
    .to_string()
}

impl Keyfort {
    fn audit_input(&self, instance_id: &str, body: String) -> AuditEventInput {
        AuditEventInput {
            instance_id: instance_id.to_owned(),
            at: self.now_ms(),
            body,
            fields: None,
        }
    }

    /// Appends an audit event; a failure is logged, not returned (the effect already happened).
    async fn audit(
        &self,
        instance_id: &str,
        actor: &str,
        action: &str,
        outcome: &str,
        details: Value,
    ) {
        let input = self.audit_input(
            instance_id,
            audit_body(actor, action, instance_id, outcome, details),
        );
        if let Err(e) = self.store().append_audit_event(&input).await {
            tracing::error!(instance = instance_id, action, error = ?e, "audit event could not be written");
        }
    }

    /// Initializes an instance with custodians: a new master key, split M-of-N, one part per
    /// custodian sealed to their public key. The server keeps no part. The instance is left
    /// unsealed. Administrators only.
    pub async fn initialize_with_custodians(
        &self,
        caller: &Caller,
        instance_id: &str,
        custodians: Vec<CustodianPublic>,
        threshold: u8,
    ) -> Result<Vec<KeyPart>> {
        require_administrator(caller)?;
        let mut record = self.instance_record(instance_id).await?;
        if record.state != STORED_UNINITIALIZED {
            return Err(CoreError::InstanceAlreadyInitialized {
                id: instance_id.to_owned(),
            });
        }
        let mk = MasterKey::generate(1)?;
        let (parts, config) = split_to_custodians(instance_id, &mk, &custodians, threshold)?;
        record.state = STORED_INITIALIZED.to_owned();
        record.mk_version = 1;
        record.mk_check_value = mk.check_value().to_vec();
        record.unseal_method = UnsealMethod::Custodians.as_str().to_owned();
        record.unseal_config = config.to_string();
        record.updated_at = self.now_ms();
        let names: Vec<&str> = custodians.iter().map(|c| c.name.as_str()).collect();
        let audit = self.audit_input(
            instance_id,
            audit_body(
                caller.display_name(),
                "instance.initialize",
                instance_id,
                "success",
                json!({"method": "custodians", "threshold": threshold, "custodians": names, "master_key_version": 1}),
            ),
        );
        self.store()
            .update_instance_with(&record, None, Some(&audit))
            .await?;
        self.inner.master_keys.load(instance_id, vec![mk]);
        tracing::info!(
            instance = instance_id,
            threshold,
            custodians = custodians.len(),
            "instance initialized"
        );
        Ok(parts)
    }

    /// Initializes an instance whose master key is protected by the configured HSM; the server
    /// unseals it by itself at start. Administrators only.
    pub async fn initialize_with_hsm(
        &self,
        caller: &Caller,
        instance_id: &str,
    ) -> Result<Instance> {
        require_administrator(caller)?;
        let protector = self.protector()?;
        let mut record = self.instance_record(instance_id).await?;
        if record.state != STORED_UNINITIALIZED {
            return Err(CoreError::InstanceAlreadyInitialized {
                id: instance_id.to_owned(),
            });
        }
        let mk = MasterKey::generate(1)?;
        let wrapped = hsm_wrap(protector.clone(), instance_id, &mk).await?;
        record.state = STORED_INITIALIZED.to_owned();
        record.mk_version = 1;
        record.mk_check_value = mk.check_value().to_vec();
        record.unseal_method = UnsealMethod::Hsm.as_str().to_owned();
        record.unseal_config =
            json!({"hsm": {"key": protector.describe(), "wrapped": B64.encode(&wrapped)}})
                .to_string();
        record.updated_at = self.now_ms();
        let audit = self.audit_input(
            instance_id,
            audit_body(
                caller.display_name(),
                "instance.initialize",
                instance_id,
                "success",
                json!({"method": "hsm", "key": protector.describe(), "master_key_version": 1}),
            ),
        );
        record.row_version = self
            .store()
            .update_instance_with(&record, None, Some(&audit))
            .await?;
        self.inner.master_keys.load(instance_id, vec![mk]);
        Instance::from_record(&record, true)
    }

    fn protector(&self) -> Result<Arc<dyn MasterKeyProtector>> {
        self.inner.protector.clone().ok_or(CoreError::InvalidField {
            field: "hsm",
            rule: "no HSM is configured on this server",
        })
    }

    /// Unseals an HSM-protected instance with the configured HSM.
    pub async fn unseal_with_hsm(&self, instance_id: &str) -> Result<Instance> {
        let protector = self.protector()?;
        let record = self.instance_record(instance_id).await?;
        if record.unseal_method != UnsealMethod::Hsm.as_str() {
            return Err(CoreError::InvalidField {
                field: "instance",
                rule: "is not HSM-protected",
            });
        }
        let config = parse_config(&record)?;
        let wrapped = config
            .get("hsm")
            .and_then(|h| h.get("wrapped"))
            .and_then(Value::as_str)
            .and_then(|w| B64.decode(w).ok())
            .ok_or_else(|| corrupt_config(instance_id))?;
        let version = u32::try_from(record.mk_version).map_err(|_| corrupt_config(instance_id))?;
        let id = instance_id.to_owned();
        let bytes = tokio::task::spawn_blocking(move || protector.unwrap(&id, &wrapped))
            .await
            .map_err(|_| CoreError::InvalidField {
                field: "hsm",
                rule: "the HSM call did not complete",
            })??;
        let mk = MasterKey::from_bytes(version, &bytes)?;
        self.unseal_instance(instance_id, mk).await
    }

    /// Unseals every HSM-protected instance (at server start). Returns the ids unsealed; an
    /// instance that fails is logged and left sealed.
    pub async fn unseal_hsm_instances(&self) -> Result<Vec<String>> {
        if self.inner.protector.is_none() {
            return Ok(Vec::new());
        }
        let mut unsealed = Vec::new();
        for record in self.store().list_instances().await? {
            if record.unseal_method == UnsealMethod::Hsm.as_str()
                && record.state == STORED_INITIALIZED
            {
                match self.unseal_with_hsm(&record.id).await {
                    Ok(_) => unsealed.push(record.id),
                    Err(e) => {
                        tracing::error!(instance = record.id, error = %e, "HSM unseal failed")
                    }
                }
            }
        }
        Ok(unsealed)
    }

    /// Every instance with its unseal status, for the metrics exporter (no secret in either).
    pub async fn all_unseal_statuses(&self) -> Result<Vec<(Instance, UnsealStatus)>> {
        let mut out = Vec::new();
        for record in self.store().list_instances().await? {
            let instance =
                Instance::from_record(&record, self.inner.master_keys.is_loaded(&record.id))?;
            let status = self.unseal_status(&record.id).await?;
            out.push((instance, status));
        }
        Ok(out)
    }

    /// Where unsealing of an instance stands (no authentication: custodians need it, and it
    /// reveals no secret).
    pub async fn unseal_status(&self, instance_id: &str) -> Result<UnsealStatus> {
        let record = self.instance_record(instance_id).await?;
        let instance =
            Instance::from_record(&record, self.inner.master_keys.is_loaded(instance_id))?;
        let (threshold, custodians) = if record.unseal_method == UnsealMethod::Custodians.as_str()
            && record.state == STORED_INITIALIZED
        {
            let config = custodian_config(&record)?;
            (
                config.threshold,
                config
                    .custodians
                    .into_iter()
                    .map(|c| c.public)
                    .collect::<Vec<_>>(),
            )
        } else {
            (0, Vec::new())
        };
        let loaded = {
            let progress = lock(&self.inner.kyok.progress);
            progress
                .get(instance_id)
                .filter(|p| i64::from(p.mk_version) == record.mk_version)
                .map(|p| {
                    custodians
                        .iter()
                        .filter(|c| p.shares.contains_key(&c.id()))
                        .map(|c| c.name.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        let reseal = lock(&self.inner.kyok.reseal).get(instance_id).cloned();
        Ok(UnsealStatus {
            instance_id: instance.id,
            state: instance.state,
            mk_version: instance.mk_version,
            method: instance.unseal_method,
            threshold,
            custodians: custodians.into_iter().map(|c| c.name).collect(),
            loaded,
            reseal,
        })
    }

    /// Accepts one custodian's part toward unsealing. After `threshold` distinct valid parts the
    /// instance unseals. A refused part changes nothing and does not count.
    pub async fn submit_unseal_part(
        &self,
        instance_id: &str,
        submission: UnsealSubmission,
    ) -> Result<UnsealStatus> {
        match self.check_and_add_part(instance_id, &submission).await {
            Ok(()) => {}
            Err(e) => {
                if let CoreError::PartRejected { reason, .. } = &e {
                    self.audit(
                        instance_id,
                        &submission.custodian_id,
                        "instance.unseal_part",
                        "rejected",
                        json!({"reason": reason.to_string()}),
                    )
                    .await;
                }
                return Err(e);
            }
        }
        self.unseal_status(instance_id).await
    }

    async fn check_and_add_part(&self, instance_id: &str, s: &UnsealSubmission) -> Result<()> {
        let reject = |reason| CoreError::PartRejected {
            instance: instance_id.to_owned(),
            reason,
        };
        let record = self.initialized_record(instance_id).await?;
        if record.unseal_method != UnsealMethod::Custodians.as_str()
            || self.inner.master_keys.is_loaded(instance_id)
        {
            return Err(reject(PartRejection::NotExpected));
        }
        if s.instance_id != instance_id {
            return Err(reject(PartRejection::WrongInstance));
        }
        let mk_version =
            u32::try_from(record.mk_version).map_err(|_| corrupt_config(instance_id))?;
        if s.mk_version != mk_version {
            return Err(reject(PartRejection::StaleMasterKey));
        }
        let config = custodian_config(&record)?;
        let custodian = config
            .custodians
            .iter()
            .find(|c| c.public.id() == s.custodian_id)
            .ok_or(reject(PartRejection::UnknownCustodian))?;
        if !custodian.public.verify(&s.signed_bytes(), &s.signature) {
            return Err(reject(PartRejection::BadSignature));
        }
        let now_s = self.now_ms().div_euclid(1000);
        if (now_s - s.issued_at).abs() > SUBMISSION_WINDOW_SECS {
            return Err(reject(PartRejection::Expired));
        }
        {
            let mut seen = lock(&self.inner.kyok.seen_nonces);
            seen.retain(|_, expiry| *expiry > now_s);
            if seen.contains_key(&s.nonce) {
                return Err(reject(PartRejection::Replayed));
            }
            seen.insert(s.nonce.clone(), s.issued_at + SUBMISSION_WINDOW_SECS + 1);
        }
        let check = share_check(instance_id, mk_version, &s.custodian_id, &s.share);
        if !keyfort_crypto::ct_eq(&check, &custodian.share_check) {
            return Err(reject(PartRejection::ShareMismatch));
        }
        // Add the share; combine when enough are present.
        let ready: Option<Vec<Zeroizing<Vec<u8>>>> = {
            let mut progress = lock(&self.inner.kyok.progress);
            let entry = progress
                .entry(instance_id.to_owned())
                .or_insert_with(|| UnsealProgress {
                    mk_version,
                    shares: BTreeMap::new(),
                });
            if entry.mk_version != mk_version {
                *entry = UnsealProgress {
                    mk_version,
                    shares: BTreeMap::new(),
                };
            }
            if entry.shares.contains_key(&s.custodian_id) {
                return Err(reject(PartRejection::Duplicate));
            }
            entry.shares.insert(s.custodian_id.clone(), s.share.clone());
            if entry.shares.len() >= usize::from(config.threshold) {
                let shares = std::mem::take(&mut entry.shares).into_values().collect();
                progress.remove(instance_id);
                Some(shares)
            } else {
                None
            }
        };
        self.audit(
            instance_id,
            &custodian.public.name,
            "instance.unseal_part",
            "accepted",
            json!({}),
        )
        .await;
        let Some(shares) = ready else { return Ok(()) };
        let refs: Vec<&[u8]> = shares.iter().map(|s| s.as_slice()).collect();
        let secret = keyfort_crypto::shamir::combine(&refs, config.threshold)
            .map_err(|_| reject(PartRejection::WrongMasterKey))?;
        if secret.len() != MASTER_KEY_LEN {
            return Err(reject(PartRejection::WrongMasterKey));
        }
        let mk = MasterKey::from_bytes(mk_version, &secret)?;
        match self.unseal_instance(instance_id, mk).await {
            Err(CoreError::WrongMasterKey { .. }) => Err(reject(PartRejection::WrongMasterKey)),
            other => other.map(drop),
        }
    }

    /// Loads a verified master key, resuming an interrupted rotation if there is one.
    pub(crate) async fn finish_unseal(&self, record: &InstanceRecord, mk: MasterKey) -> Result<()> {
        let instance_id = record.id.as_str();
        let mut keys = vec![mk];
        if let Some(from) = rotation_from(record)? {
            let name = archived_secret_name(from);
            let secret = self
                .store()
                .instance_secret(instance_id, &name)
                .await?
                .ok_or_else(|| corrupt_config(instance_id))?;
            let object = format!("mk/{from}");
            let old = seal::unseal(
                &keys[0],
                &archived_context(instance_id, &object),
                &secret.sealed,
            )
            .map_err(|source| CoreError::SealedObjectRejected {
                instance: instance_id.to_owned(),
                object: object.clone(),
                source,
            })?;
            keys.push(MasterKey::from_bytes(from, &old)?);
        }
        let rotating = keys.len() > 1;
        self.inner.master_keys.load(instance_id, keys);
        lock(&self.inner.kyok.progress).remove(instance_id);
        tracing::info!(instance = instance_id, "instance unsealed");
        self.audit(
            instance_id,
            "keyfort",
            "instance.unseal",
            "success",
            json!({"master_key_version": record.mk_version}),
        )
        .await;
        if rotating {
            self.spawn_reseal(instance_id.to_owned());
        }
        Ok(())
    }

    /// Runs a command signed by at least `threshold` of the instance's custodians.
    /// Administrators submit it; nothing else lets them rotate, zeroize or change custodians.
    pub async fn execute_command(
        &self,
        caller: &Caller,
        instance_id: &str,
        command: SignedCommand,
    ) -> Result<CommandOutcome> {
        require_administrator(caller)?;
        let refuse = |reason: &'static str| CoreError::CommandRejected {
            instance: instance_id.to_owned(),
            reason,
        };
        let record = self.initialized_record(instance_id).await?;
        if command.instance_id != instance_id {
            return Err(refuse("the command is for another instance"));
        }
        if record.unseal_method != UnsealMethod::Custodians.as_str() {
            return Err(refuse("the instance has no custodians to sign commands"));
        }
        let now_s = self.now_ms().div_euclid(1000);
        if command.expires_at <= now_s {
            return Err(refuse("the command has expired"));
        }
        if command.expires_at > now_s + MAX_COMMAND_LIFETIME_SECS {
            return Err(refuse("the command's expiry is too far away"));
        }
        let config = custodian_config(&record)?;
        let signed = command.signed_bytes();
        let mut signers = HashSet::new();
        for (id, signature) in &command.signatures {
            let custodian = config.custodians.iter().find(|c| c.public.id() == *id);
            match custodian {
                Some(c) if c.public.verify(&signed, signature) => {
                    signers.insert(c.public.name.clone());
                }
                Some(_) => return Err(refuse("a signature does not verify")),
                None => {
                    return Err(refuse(
                        "a signature is not from a custodian of this instance",
                    ));
                }
            }
        }
        if signers.len() < usize::from(config.threshold) {
            return Err(refuse("not enough custodian signatures"));
        }
        let loaded = self.unsealed(instance_id).await?;
        if command.command != Command::Zeroize && rotation_from(&record)?.is_some() {
            return Err(CoreError::RotationInProgress {
                id: instance_id.to_owned(),
            });
        }
        self.store()
            .use_command_nonce(
                instance_id,
                &command.nonce,
                command.expires_at * 1000,
                self.now_ms(),
            )
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists { .. } => refuse("the command was already used"),
                other => other.into(),
            })?;
        let signers: Vec<String> = signers.into_iter().collect();
        match command.command {
            Command::Zeroize => {
                self.zeroize(caller, record, &signers).await?;
                Ok(CommandOutcome::Zeroized)
            }
            Command::RotateMasterKey => {
                let custodians: Vec<CustodianPublic> =
                    config.custodians.into_iter().map(|c| c.public).collect();
                let (mk_version, parts) = self
                    .rotate(
                        caller,
                        record,
                        loaded.current_shared(),
                        &custodians,
                        config.threshold,
                        &signers,
                        "rotate",
                    )
                    .await?;
                Ok(CommandOutcome::Rotated { mk_version, parts })
            }
            Command::SetCustodians {
                custodians,
                threshold,
            } => {
                let (mk_version, parts) = self
                    .rotate(
                        caller,
                        record,
                        loaded.current_shared(),
                        &custodians,
                        threshold,
                        &signers,
                        "set_custodians",
                    )
                    .await?;
                Ok(CommandOutcome::CustodiansChanged { mk_version, parts })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn rotate(
        &self,
        caller: &Caller,
        mut record: InstanceRecord,
        old: Arc<MasterKey>,
        custodians: &[CustodianPublic],
        threshold: u8,
        signers: &[String],
        why: &str,
    ) -> Result<(u32, Vec<KeyPart>)> {
        let instance_id = record.id.clone();
        let from = old.version();
        let to = from.checked_add(1).ok_or(CoreError::InvalidField {
            field: "master key version",
            rule: "exhausted",
        })?;
        let new = MasterKey::generate(to)?;
        let (parts, mut config) = split_to_custodians(&instance_id, &new, custodians, threshold)?;
        config["rotation"] = json!({"from": from});
        let object = format!("mk/{from}");
        let archived = seal::seal(
            &new,
            &archived_context(&instance_id, &object),
            old.expose_secret(),
        )?;
        let secret = InstanceSecretRecord {
            instance_id: instance_id.clone(),
            name: archived_secret_name(from),
            sealed: archived,
            mk_version: i64::from(to),
            created_at: self.now_ms(),
        };
        record.mk_version = i64::from(to);
        record.mk_check_value = new.check_value().to_vec();
        record.unseal_config = config.to_string();
        record.updated_at = self.now_ms();
        let names: Vec<&str> = custodians.iter().map(|c| c.name.as_str()).collect();
        let audit = self.audit_input(
            &instance_id,
            audit_body(caller.display_name(), "instance.rotate_master_key", &instance_id, "success",
                json!({"command": why, "from": from, "to": to, "signed_by": signers, "custodians": names, "threshold": threshold})),
        );
        self.store()
            .update_instance_with(&record, Some(&secret), Some(&audit))
            .await?;
        self.inner
            .master_keys
            .load_shared(&instance_id, vec![old, Arc::new(new)]);
        tracing::info!(
            instance = instance_id,
            from,
            to,
            "master key rotated; re-sealing in the background"
        );
        self.spawn_reseal(instance_id);
        Ok((to, parts))
    }

    async fn zeroize(
        &self,
        caller: &Caller,
        mut record: InstanceRecord,
        signers: &[String],
    ) -> Result<()> {
        let instance_id = record.id.clone();
        record.state = STORED_ZEROIZED.to_owned();
        record.mk_check_value = Vec::new();
        record.unseal_config = "{}".to_owned();
        record.updated_at = self.now_ms();
        let audit = self.audit_input(
            &instance_id,
            audit_body(caller.display_name(), "instance.zeroize", &instance_id, "success",
                json!({"signed_by": signers, "effect": "master key, key parts and all key material destroyed"})),
        );
        self.store().zeroize_instance(&record, &audit).await?;
        self.inner.key_cache.forget_instance(&instance_id);
        self.inner.master_keys.unload(&instance_id);
        lock(&self.inner.kyok.progress).remove(&instance_id);
        lock(&self.inner.kyok.reseal).remove(&instance_id);
        tracing::warn!(instance = instance_id, "instance zeroized");
        Ok(())
    }

    /// Starts (or restarts) the re-seal job of an instance in the background.
    pub(crate) fn spawn_reseal(&self, instance_id: String) {
        let core = self.clone();
        tokio::spawn(async move {
            // One node at a time (several nodes on one store); released when `_held` drops.
            let Some(_held) = core
                .cluster_exclusive(&format!("keyfort/reseal/{instance_id}"))
                .await
            else {
                return;
            };
            if let Err(e) = core.run_reseal(&instance_id).await {
                tracing::error!(instance = instance_id, error = ?e, "re-seal job stopped; it resumes at the next unseal");
                if let Some(p) = lock(&core.inner.kyok.reseal).get_mut(&instance_id) {
                    p.running = false;
                }
            }
        });
    }

    /// Re-seals every key version still under an older master key, then forgets the old key.
    async fn run_reseal(&self, instance_id: &str) -> Result<()> {
        let Some(loaded) = self.inner.master_keys.get(instance_id) else {
            return Ok(());
        };
        let to = loaded.current().version();
        let record = self.instance_record(instance_id).await?;
        let Some(from) = rotation_from(&record)? else {
            return Ok(());
        };
        let total = self
            .store()
            .count_key_versions_below_mk(instance_id, i64::from(to))
            .await?;
        {
            let mut reseal = lock(&self.inner.kyok.reseal);
            if reseal
                .get(instance_id)
                .is_some_and(|p| p.running && p.to_version == to)
            {
                return Ok(()); // already running in this process
            }
            reseal.insert(
                instance_id.to_owned(),
                ResealProgress {
                    from_version: from,
                    to_version: to,
                    total,
                    done: 0,
                    running: true,
                },
            );
        }
        let batch = u64::try_from(self.inner.reseal_batch_size).unwrap_or(256);
        let mut stalled_at: Option<String> = None;
        loop {
            // Stop if the instance was sealed or zeroized meanwhile; the next unseal resumes.
            let Some(loaded) = self.inner.master_keys.get(instance_id) else {
                if let Some(p) = lock(&self.inner.kyok.reseal).get_mut(instance_id) {
                    p.running = false;
                }
                return Ok(());
            };
            let versions = self
                .store()
                .key_versions_below_mk(instance_id, i64::from(to), batch)
                .await?;
            if versions.is_empty() {
                break;
            }
            let mut keys: HashMap<String, Key> = HashMap::new();
            let mut done = 0u64;
            let first_id = versions[0].id.clone();
            if stalled_at.as_deref() == Some(first_id.as_str()) {
                return Err(CoreError::CorruptRecord {
                    table: "key_versions",
                    id: first_id,
                    source: StoreError::Corrupt {
                        table: "key_versions",
                        id: versions[0].id.clone(),
                        detail: "cannot be re-sealed: its key is missing".into(),
                    },
                });
            }
            for version in versions {
                if !keys.contains_key(&version.key_id) {
                    match self.store().key(instance_id, &version.key_id).await? {
                        Some(r) => {
                            keys.insert(version.key_id.clone(), Key::from_record(r)?);
                        }
                        None => continue, // purged meanwhile
                    }
                }
                let Some(key) = keys.get(&version.key_id) else {
                    continue;
                };
                let material = self.unseal_version(key, &loaded, &version)?;
                let mut key_at_version = key.clone();
                key_at_version.current_version_id = version.id.clone();
                let resealed: KeyVersionRecord = self.seal_version(
                    &key_at_version,
                    loaded.current(),
                    &material,
                    version.seq,
                    version.created_at,
                )?;
                match self
                    .store()
                    .reseal_key_version(&resealed, version.mk_version)
                    .await
                {
                    Ok(()) => done += 1,
                    Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(p) = lock(&self.inner.kyok.reseal).get_mut(instance_id) {
                p.done += done;
            }
            stalled_at = (done == 0).then_some(first_id);
            if !self.inner.reseal_pause.is_zero() {
                tokio::time::sleep(self.inner.reseal_pause).await;
            }
        }
        // Every version is under the new key: drop the rotation marker and the archived key.
        let mut record = self.instance_record(instance_id).await?;
        let mut config = parse_config(&record)?;
        if let Some(obj) = config.as_object_mut() {
            obj.remove("rotation");
        }
        record.unseal_config = config.to_string();
        record.updated_at = self.now_ms();
        let audit = self.audit_input(
            instance_id,
            audit_body(
                "keyfort",
                "instance.reseal_complete",
                instance_id,
                "success",
                json!({"from": from, "to": to}),
            ),
        );
        self.store()
            .update_instance_with(&record, None, Some(&audit))
            .await?;
        self.store()
            .delete_instance_secret(instance_id, &archived_secret_name(from))
            .await?;
        self.inner.master_keys.retain_current(instance_id);
        if let Some(p) = lock(&self.inner.kyok.reseal).get_mut(instance_id) {
            p.running = false;
        }
        tracing::info!(
            instance = instance_id,
            from,
            to,
            "re-seal complete; the old master key is forgotten"
        );
        Ok(())
    }
}

async fn hsm_wrap(
    protector: Arc<dyn MasterKeyProtector>,
    instance_id: &str,
    mk: &MasterKey,
) -> Result<Vec<u8>> {
    let id = instance_id.to_owned();
    let bytes = Zeroizing::new(mk.expose_secret().to_vec());
    tokio::task::spawn_blocking(move || protector.wrap(&id, &bytes))
        .await
        .map_err(|_| CoreError::InvalidField {
            field: "hsm",
            rule: "the HSM call did not complete",
        })?
}
