//! [`Keyfort`]: the service handle every door holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyfort_crypto::seal::{self, MasterKey, SealContext};
use keyfort_store::{
    ApiKeyRecord, InstanceRecord, KeyRingRecord, KeyVersionRecord, PrincipalRecord, Store,
    StoreError,
};
use zeroize::Zeroizing;

use crate::Result;
use crate::auth::{
    AccessToken, Action, ApiKeySecret, Caller, Claims, Principal, PrincipalKind, Role, RoleGrant,
    Scope, TokenSigner,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{AuthFailure, CoreError};
use crate::instance::{
    Instance, InstanceState, LoadedKeys, MasterKeys, STORED_INITIALIZED, STORED_UNINITIALIZED,
    STORED_ZEROIZED, UnsealMethod,
};
use crate::key::{
    DEFAULT_KEY_RING, Key, KeyListing, KeyQuery, KeyVersion, NewKey, seal_object_id,
    validate_key_ring_id,
};
use crate::kyok::{KyokState, MasterKeyProtector};
use crate::lifecycle::{KeyState, Transition, Usage};

/// How long a verified caller's principal and API key status are reused before they are read
/// again from the store (so a revocation on another node takes effect within this time).
const CALLER_CACHE_TTL_MS: i64 = 5_000;
/// Most tokens remembered as verified.
const VERIFIED_TOKENS_MAX: usize = 10_000;
/// Most entries in the caller cache before it is cleared.
const CALLER_CACHE_MAX: usize = 10_000;

/// When an instance's allowedIP policy was read, and its CIDRs (`None`: not enabled).
/// An instance's policies as enforced, with the time they were read (see `enforced_policies`).
pub(crate) type CachedPolicies = (i64, Arc<crate::kms::PolicyMap>);

/// Settings of the core.
pub struct CoreConfig {
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
    /// The key that signs access tokens.
    pub token_signer: TokenSigner,
    /// Key versions re-sealed per batch during master key rotation.
    pub reseal_batch_size: usize,
    /// Pause between re-seal batches (to leave room for requests on small machines).
    pub reseal_pause: Duration,
    /// The HSM that protects master keys of instances with HSM-backed unseal, if configured.
    pub master_key_protector: Option<Arc<dyn MasterKeyProtector>>,
    /// Key Protect's waiting periods.
    pub kms_timings: crate::kms::KmsTimings,
}

impl CoreConfig {
    /// Defaults for everything but the token settings.
    pub fn new(token_ttl: Duration, token_signer: TokenSigner) -> CoreConfig {
        CoreConfig {
            token_ttl,
            token_signer,
            reseal_batch_size: 256,
            reseal_pause: Duration::ZERO,
            master_key_protector: None,
            kms_timings: crate::kms::KmsTimings::default(),
        }
    }
}

impl std::fmt::Debug for CoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreConfig")
            .field("token_ttl", &self.token_ttl)
            .field("reseal_batch_size", &self.reseal_batch_size)
            .field("reseal_pause", &self.reseal_pause)
            .field(
                "master_key_protector",
                &self.master_key_protector.as_ref().map(|p| p.describe()),
            )
            .finish_non_exhaustive()
    }
}

/// The Keyfort service: cheap to clone, shared by every door.
#[derive(Clone)]
pub struct Keyfort {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) master_keys: MasterKeys,
    signer: TokenSigner,
    token_ttl: Duration,
    pub(crate) callers: Mutex<HashMap<String, CachedCaller>>,
    /// Tokens whose signature verified, with their claims (see `verified_claims`).
    tokens: Mutex<HashMap<String, Arc<Claims>>>,
    pub(crate) kyok: KyokState,
    pub(crate) reseal_batch_size: usize,
    pub(crate) reseal_pause: Duration,
    pub(crate) protector: Option<Arc<dyn MasterKeyProtector>>,
    pub(crate) kms_timings: crate::kms::KmsTimings,
    pub(crate) key_cache: crate::cache::KeyCache,
    /// Instance policies as enforced (allowedIP, keyCreateImportAccess, defaults for new keys).
    pub(crate) policies: Mutex<HashMap<String, CachedPolicies>>,
    /// Seals requested on this node for its peers, cluster-wide locks (`cluster.rs`).
    pub(crate) cluster: crate::cluster::ClusterState,
}

pub(crate) struct CachedCaller {
    caller: Arc<Caller>,
    fetched_at: i64,
}

impl std::fmt::Debug for Keyfort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyfort")
            .field("store", &self.inner.store.backend())
            .finish_non_exhaustive()
    }
}

impl Keyfort {
    /// Opens the service on a store, with the system clock.
    pub async fn open(store: Arc<dyn Store>, config: CoreConfig) -> Result<Keyfort> {
        Keyfort::open_with_clock(store, config, Arc::new(SystemClock)).await
    }

    /// Opens the service with a given clock (tests of time-dependent rules).
    pub async fn open_with_clock(
        store: Arc<dyn Store>,
        config: CoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Keyfort> {
        store.ping().await?;
        Ok(Keyfort {
            inner: Arc::new(Inner {
                store,
                clock,
                master_keys: MasterKeys::default(),
                signer: config.token_signer,
                token_ttl: config.token_ttl,
                callers: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                kyok: KyokState::default(),
                reseal_batch_size: config.reseal_batch_size.max(1),
                reseal_pause: config.reseal_pause,
                protector: config.master_key_protector,
                kms_timings: config.kms_timings,
                key_cache: crate::cache::KeyCache::default(),
                policies: Mutex::new(HashMap::new()),
                cluster: crate::cluster::ClusterState::default(),
            }),
        })
    }

    /// Whether the service can serve requests: the store answers.
    pub async fn ready(&self) -> Result<()> {
        self.inner.store.ping().await?;
        Ok(())
    }

    /// The store backend's name.
    pub fn store_backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The time now, in Unix milliseconds, by the core's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    // ---- instances -------------------------------------------------------------------------

    /// Creates an uninitialized instance with its `default` key ring (administrators only).
    pub async fn create_instance(&self, caller: &Caller, name: &str) -> Result<Instance> {
        require_administrator(caller)?;
        self.create_instance_unchecked(name).await
    }

    pub(crate) async fn create_instance_unchecked(&self, name: &str) -> Result<Instance> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CoreError::InvalidField {
                field: "instance name",
                rule: "must be 1 to 64 characters of letters, digits, '-' and '_'",
            });
        }
        let now = self.now_ms();
        let record = InstanceRecord {
            id: new_id()?,
            name: name.to_owned(),
            state: STORED_UNINITIALIZED.to_owned(),
            mk_version: 0,
            unseal_method: UnsealMethod::None.as_str().to_owned(),
            mk_check_value: Vec::new(),
            unseal_config: "{}".to_owned(),
            created_at: now,
            updated_at: now,
            row_version: 1,
        };
        self.store().insert_instance(&record).await?;
        self.store()
            .insert_key_ring(&KeyRingRecord {
                instance_id: record.id.clone(),
                id: DEFAULT_KEY_RING.to_owned(),
                created_at: now,
                created_by: "keyfort".to_owned(),
            })
            .await?;
        Instance::from_record(&record, false)
    }

    /// One instance, if the caller may see it (administrators, or any role in that instance).
    pub async fn instance(&self, caller: &Caller, id: &str) -> Result<Instance> {
        let instance = self.instance_unchecked(id).await?;
        if !caller_sees_instance(caller, id) {
            return Err(CoreError::InstanceNotFound { id: id.to_owned() });
        }
        Ok(instance)
    }

    pub(crate) async fn instance_unchecked(&self, id: &str) -> Result<Instance> {
        let record = self.instance_record(id).await?;
        Instance::from_record(&record, self.inner.master_keys.is_loaded(id))
    }

    /// The instances the caller may see.
    pub async fn instances(&self, caller: &Caller) -> Result<Vec<Instance>> {
        let records = self.store().list_instances().await?;
        records
            .iter()
            .filter(|r| caller_sees_instance(caller, &r.id))
            .map(|r| Instance::from_record(r, self.inner.master_keys.is_loaded(&r.id)))
            .collect()
    }

    pub(crate) async fn instance_record(&self, id: &str) -> Result<InstanceRecord> {
        self.store()
            .instance(id)
            .await?
            .ok_or_else(|| CoreError::InstanceNotFound { id: id.to_owned() })
    }

    /// An instance's record, refusing an uninitialized or zeroized instance.
    pub(crate) async fn initialized_record(&self, id: &str) -> Result<InstanceRecord> {
        let record = self.instance_record(id).await?;
        match record.state.as_str() {
            STORED_UNINITIALIZED => Err(CoreError::InstanceUninitialized { id: id.to_owned() }),
            STORED_ZEROIZED => Err(CoreError::InstanceZeroized { id: id.to_owned() }),
            _ => Ok(record),
        }
    }

    /// Gives an uninitialized instance its first master key and leaves it unsealed.
    pub(crate) async fn initialize_instance(
        &self,
        id: &str,
        master_key: MasterKey,
        method: UnsealMethod,
        unseal_config: String,
    ) -> Result<Instance> {
        let mut record = self.instance_record(id).await?;
        if record.state != STORED_UNINITIALIZED {
            return Err(CoreError::InstanceAlreadyInitialized { id: id.to_owned() });
        }
        record.state = STORED_INITIALIZED.to_owned();
        record.mk_version = i64::from(master_key.version());
        record.mk_check_value = master_key.check_value().to_vec();
        record.unseal_method = method.as_str().to_owned();
        record.unseal_config = unseal_config;
        record.updated_at = self.now_ms();
        record.row_version = self.store().update_instance(&record).await?;
        self.inner.master_keys.load(id, vec![master_key]);
        tracing::info!(
            instance = id,
            method = method.as_str(),
            "instance initialized and unsealed"
        );
        Instance::from_record(&record, true)
    }

    /// Loads an instance's current master key, after checking it against the stored key check
    /// value: a wrong key is refused and nothing changes.
    pub(crate) async fn unseal_instance(
        &self,
        id: &str,
        master_key: MasterKey,
    ) -> Result<Instance> {
        let record = self.initialized_record(id).await?;
        let expected_version = u32::try_from(record.mk_version).ok();
        let check = master_key.check_value();
        if expected_version != Some(master_key.version())
            || !keyfort_crypto::ct_eq(&check, &record.mk_check_value)
        {
            return Err(CoreError::WrongMasterKey { id: id.to_owned() });
        }
        self.finish_unseal(&record, master_key).await?;
        Instance::from_record(&record, true)
    }

    /// Seals an instance: its master key is dropped from memory at once, and every key operation
    /// is refused until it is loaded again (administrators only).
    pub async fn seal_instance(&self, caller: &Caller, id: &str) -> Result<Instance> {
        require_administrator(caller)?;
        let record = self.instance_record(id).await?;
        self.inner.key_cache.forget_instance(id);
        if self.inner.master_keys.unload(id) {
            tracing::info!(instance = id, "instance sealed");
        }
        self.inner.cluster.announce_seal(id);
        Instance::from_record(&record, false)
    }

    /// [`Keyfort::unsealed`], for a caller who must hold some role in the instance: callers
    /// without one learn nothing about its keys, not even which exist.
    pub(crate) async fn unsealed_for(
        &self,
        caller: &Caller,
        instance_id: &str,
    ) -> Result<Arc<LoadedKeys>> {
        if !caller_sees_instance(caller, instance_id) {
            return Err(CoreError::Forbidden {
                principal: caller.principal.name.clone(),
                action: "use this instance",
            });
        }
        self.unsealed(instance_id).await
    }

    /// The loaded master keys of an instance, or the reason there are none.
    pub(crate) async fn unsealed(&self, instance_id: &str) -> Result<Arc<LoadedKeys>> {
        if let Some(keys) = self.inner.master_keys.get(instance_id) {
            return Ok(keys);
        }
        let instance = self.instance_unchecked(instance_id).await?;
        let id = instance_id.to_owned();
        Err(match instance.state {
            InstanceState::Uninitialized => CoreError::InstanceUninitialized { id },
            InstanceState::Zeroized => CoreError::InstanceZeroized { id },
            // Unsealed can only be seen here if a seal raced this call; report sealed.
            InstanceState::Sealed | InstanceState::Unsealed => CoreError::InstanceSealed { id },
        })
    }

    // ---- principals, API keys, tokens ------------------------------------------------------

    /// Creates a principal (administrators only).
    pub async fn create_principal(
        &self,
        caller: &Caller,
        instance_id: Option<&str>,
        name: &str,
        kind: PrincipalKind,
        roles: Vec<RoleGrant>,
    ) -> Result<Principal> {
        require_administrator(caller)?;
        if let Some(i) = instance_id {
            self.instance_record(i).await?;
        }
        self.create_principal_unchecked(instance_id, name, kind, roles)
            .await
    }

    pub(crate) async fn create_principal_unchecked(
        &self,
        instance_id: Option<&str>,
        name: &str,
        kind: PrincipalKind,
        roles: Vec<RoleGrant>,
    ) -> Result<Principal> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(CoreError::InvalidField {
                field: "principal name",
                rule: "must be 1 to 128 characters without control characters",
            });
        }
        let now = self.now_ms();
        let record = PrincipalRecord {
            id: new_id()?,
            instance_id: instance_id.map(str::to_owned),
            name: name.to_owned(),
            kind: kind.as_str().to_owned(),
            roles: RoleGrant::encode_all(&roles),
            disabled: false,
            created_at: now,
            updated_at: now,
            row_version: 1,
        };
        self.store().insert_principal(&record).await?;
        principal_from_record(&record)
    }

    pub(crate) async fn principal_by_name(
        &self,
        instance_id: Option<&str>,
        name: &str,
    ) -> Result<Option<Principal>> {
        match self.store().principal_by_name(instance_id, name).await? {
            Some(record) => Ok(Some(principal_from_record(&record)?)),
            None => Ok(None),
        }
    }

    /// Issues a new API key for a principal (administrators only). The secret is returned once.
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        principal_id: &str,
        name: &str,
    ) -> Result<(String, ApiKeySecret)> {
        require_administrator(caller)?;
        self.create_api_key_unchecked(principal_id, name).await
    }

    pub(crate) async fn create_api_key_unchecked(
        &self,
        principal_id: &str,
        name: &str,
    ) -> Result<(String, ApiKeySecret)> {
        let secret = ApiKeySecret::generate()?;
        let record = ApiKeyRecord {
            id: new_id()?,
            principal_id: principal_id.to_owned(),
            name: name.to_owned(),
            hash: secret.hash().to_vec(),
            created_at: self.now_ms(),
            expires_at: None,
            revoked_at: None,
            row_version: 1,
        };
        self.store()
            .insert_api_key(&record)
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => CoreError::InvalidField {
                    field: "principal",
                    rule: "must be an existing principal",
                },
                other => other.into(),
            })?;
        Ok((record.id, secret))
    }

    /// Revokes an API key (administrators only). Tokens issued for it stop working at once on
    /// this node, and within the caller cache's lifetime on the others.
    pub async fn revoke_api_key(&self, caller: &Caller, api_key_id: &str) -> Result<()> {
        require_administrator(caller)?;
        let mut record =
            self.store()
                .api_key(api_key_id)
                .await?
                .ok_or_else(|| CoreError::InvalidField {
                    field: "api key",
                    rule: "must be an existing API key",
                })?;
        if record.revoked_at.is_none() {
            record.revoked_at = Some(self.now_ms());
            self.store().update_api_key(&record).await?;
        }
        self.inner
            .callers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(api_key_id);
        Ok(())
    }

    /// Checks an API key: its record and its principal, both live.
    async fn check_api_key(&self, secret: &ApiKeySecret) -> Result<(ApiKeyRecord, Principal)> {
        let unauthenticated = CoreError::Unauthenticated;
        let record = self
            .store()
            .api_key_by_hash(&secret.hash())
            .await?
            .ok_or(unauthenticated(AuthFailure::UnknownApiKey))?;
        let now = self.now_ms();
        if record.revoked_at.is_some() || record.expires_at.is_some_and(|e| e <= now) {
            return Err(unauthenticated(AuthFailure::RevokedApiKey));
        }
        let principal = self
            .store()
            .principal(&record.principal_id)
            .await?
            .ok_or(unauthenticated(AuthFailure::PrincipalDisabled))?;
        let principal = principal_from_record(&principal)?;
        if principal.disabled {
            return Err(unauthenticated(AuthFailure::PrincipalDisabled));
        }
        Ok((record, principal))
    }

    /// The IAM-compatible token exchange: an API key for a signed access token.
    pub async fn exchange_api_key(&self, api_key: &str) -> Result<AccessToken> {
        let secret = ApiKeySecret::from_presented(api_key);
        let (record, principal) = self.check_api_key(&secret).await?;
        let now_s = self.now_ms().div_euclid(1000);
        let ttl = i64::try_from(self.inner.token_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            subject: principal.id,
            api_key_id: record.id,
            issued_at: now_s,
            expires_at: now_s.saturating_add(ttl),
            token_id: new_id()?,
        };
        Ok(AccessToken {
            token: self.inner.signer.sign(&claims),
            expires_in: self.inner.token_ttl.as_secs(),
            expiration: claims.expires_at,
            issued_at: claims.issued_at,
        })
    }

    /// Verifies an access token (without the `Bearer ` prefix) and returns its caller. Shared by
    /// every door. A revoked API key or disabled principal is refused within
    /// `CALLER_CACHE_TTL_MS` on every node, at once on the node that revoked it.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Caller>> {
        let now = self.now_ms();
        let claims = self.verified_claims(token, now)?;
        if let Some(caller) = self.cached_caller(&claims.api_key_id, now)
            && caller.principal.id == claims.subject
        {
            return Ok(caller);
        }
        let record = self
            .store()
            .api_key(&claims.api_key_id)
            .await?
            .filter(|r| r.principal_id == claims.subject)
            .ok_or(CoreError::Unauthenticated(AuthFailure::RevokedApiKey))?;
        if record.revoked_at.is_some() || record.expires_at.is_some_and(|e| e <= now) {
            return Err(CoreError::Unauthenticated(AuthFailure::RevokedApiKey));
        }
        let principal = self
            .store()
            .principal(&claims.subject)
            .await?
            .ok_or(CoreError::Unauthenticated(AuthFailure::PrincipalDisabled))?;
        let principal = principal_from_record(&principal)?;
        if principal.disabled {
            return Err(CoreError::Unauthenticated(AuthFailure::PrincipalDisabled));
        }
        let caller = Arc::new(Caller {
            principal,
            api_key_id: Some(record.id.clone()),
            request: crate::auth::RequestInfo::default(),
        });
        self.cache_caller(record.id, caller.clone(), now);
        Ok(caller)
    }

    /// Drops every cached caller (after a role or principal change).
    pub(crate) fn forget_cached_callers(&self) {
        self.inner
            .callers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// A token's claims: from the cache of tokens that verified before (keyed by the whole
    /// token, kept until the token expires), or by checking its signature and times.
    fn verified_claims(&self, token: &str, now: i64) -> Result<Arc<Claims>> {
        let now_s = now.div_euclid(1000);
        {
            let tokens = self
                .inner
                .tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(claims) = tokens.get(token)
                && claims.expires_at > now_s
            {
                return Ok(claims.clone());
            }
        }
        let claims = Arc::new(
            self.inner
                .signer
                .verify(token, now_s)
                .map_err(CoreError::Unauthenticated)?,
        );
        let mut tokens = self
            .inner
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tokens.len() >= VERIFIED_TOKENS_MAX {
            tokens.retain(|_, c| c.expires_at > now_s);
            if tokens.len() >= VERIFIED_TOKENS_MAX {
                tokens.clear();
            }
        }
        tokens.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    fn cached_caller(&self, api_key_id: &str, now: i64) -> Option<Arc<Caller>> {
        let cache = self
            .inner
            .callers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(api_key_id)
            .filter(|c| now - c.fetched_at < CALLER_CACHE_TTL_MS)
            .map(|c| c.caller.clone())
    }

    fn cache_caller(&self, api_key_id: String, caller: Arc<Caller>, now: i64) {
        let mut cache = self
            .inner
            .callers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CALLER_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            api_key_id,
            CachedCaller {
                caller,
                fetched_at: now,
            },
        );
    }

    // ---- keys ------------------------------------------------------------------------------

    /// Creates a symmetric key: generated, or imported from `req.payload`. Its material is
    /// sealed under the instance's current master key before it reaches the store.
    pub async fn create_key(&self, caller: &Caller, instance_id: &str, req: NewKey) -> Result<Key> {
        let target = req.name.clone();
        self.audited(
            caller,
            instance_id,
            "key.create",
            &target,
            self.create_key_audited(caller, instance_id, req),
        )
        .await
    }

    /// Creates a key; its success audit event is written with it.
    pub(crate) async fn create_key_audited(
        &self,
        caller: &Caller,
        instance_id: &str,
        req: NewKey,
    ) -> Result<Key> {
        req.validate()?;
        let ring = req
            .key_ring_id
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_RING.to_owned());
        caller.authorize(Action::CreateKey, instance_id, Some(&ring))?;
        let master_keys = self.unsealed(instance_id).await?;
        let imported = req.payload.is_some();
        let material = match req.payload {
            Some(p) => p,
            None => keyfort_crypto::rng::random_bytes(req.bit_length as usize / 8)?,
        };
        let now = self.now_ms();
        let key = Key {
            instance_id: instance_id.to_owned(),
            id: new_key_id(now)?,
            key_ring_id: ring,
            name: req.name,
            description: req.description,
            tags: req.tags,
            aliases: req.aliases,
            object_type: "symmetric_key".to_owned(),
            algorithm: "AES".to_owned(),
            bit_length: u32::try_from(material.len() * 8).unwrap_or(u32::MAX),
            extractable: req.extractable,
            imported,
            state: req.initial_state,
            created_at: now,
            created_by: caller.display_name().to_owned(),
            updated_at: now,
            activation_at: (req.initial_state == KeyState::Active).then_some(now),
            expires_at: req.expires_at,
            deactivated_at: None,
            deleted_at: None,
            deleted_by: None,
            last_rotated_at: None,
            current_version_id: new_key_id(now)?,
            attributes: req.attributes,
            row_version: 1,
        };
        let version = self.seal_version(&key, master_keys.current(), &material, 1, now)?;
        let event = self.audit_event(caller, instance_id, "key.create", &key.id, "success", serde_json::json!({
            "name": key.name, "extractable": key.extractable, "imported": key.imported, "key_ring": key.key_ring_id,
        }));
        self.apply_audited(
            vec![keyfort_store::Write::InsertKey {
                key: key.to_record(),
                first_version: version,
            }],
            event,
        )
        .await
        .map_err(crate::kms::key_write_error)?;
        Ok(key)
    }

    pub(crate) fn seal_version(
        &self,
        key: &Key,
        master_key: &MasterKey,
        material: &[u8],
        seq: i64,
        now: i64,
    ) -> Result<KeyVersionRecord> {
        let object_id = seal_object_id(&key.id, &key.current_version_id);
        let attributes = key.seal_attributes();
        let ctx = SealContext {
            instance_id: &key.instance_id,
            object_id: &object_id,
            attributes: &attributes,
        };
        Ok(KeyVersionRecord {
            instance_id: key.instance_id.clone(),
            key_id: key.id.clone(),
            id: key.current_version_id.clone(),
            seq,
            sealed: seal::seal(master_key, &ctx, material)?,
            mk_version: i64::from(master_key.version()),
            created_at: now,
        })
    }

    /// Unseals one stored version of a key with whichever loaded master key sealed it.
    pub(crate) fn unseal_version(
        &self,
        key: &Key,
        master_keys: &LoadedKeys,
        version: &KeyVersionRecord,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let rejected = |source| CoreError::SealedObjectRejected {
            instance: key.instance_id.clone(),
            object: seal_object_id(&key.id, &version.id),
            source,
        };
        let mk_version = seal::sealed_mk_version(&version.sealed).map_err(rejected)?;
        let master_key = master_keys.version(mk_version).ok_or_else(|| {
            rejected(keyfort_crypto::Error::InvalidKey {
                what: "master key version not loaded",
            })
        })?;
        let object_id = seal_object_id(&key.id, &version.id);
        let attributes = key.seal_attributes();
        let ctx = SealContext {
            instance_id: &key.instance_id,
            object_id: &object_id,
            attributes: &attributes,
        };
        seal::unseal(master_key, &ctx, &version.sealed).map_err(rejected)
    }

    /// A key's metadata, by id or alias.
    pub async fn key(&self, caller: &Caller, instance_id: &str, id_or_alias: &str) -> Result<Key> {
        self.audited(caller, instance_id, "key.read", id_or_alias, async {
            let key = self
                .key_for(caller, instance_id, id_or_alias, Action::ReadKey)
                .await?;
            self.audit_read(
                caller,
                instance_id,
                "key.read",
                &key.id,
                serde_json::json!({}),
            )
            .await?;
            Ok(key)
        })
        .await
    }

    /// A key the caller may act on: the instance is unsealed, the key exists, the caller holds
    /// `action` on its ring. Not audited (callers audit).
    pub(crate) async fn key_for(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        action: Action,
    ) -> Result<Key> {
        self.unsealed_for(caller, instance_id).await?;
        let key = self.find_key(instance_id, id_or_alias).await?;
        caller.authorize(action, instance_id, Some(&key.key_ring_id))?;
        crate::kms::check_key_ring(caller, &key)?;
        crate::kmip_adapters::check_adapter_scope(caller, &key)?;
        Ok(key)
    }

    pub(crate) async fn find_key(&self, instance_id: &str, id_or_alias: &str) -> Result<Key> {
        let record = if uuid::Uuid::try_parse(id_or_alias).is_ok() {
            self.store().key(instance_id, id_or_alias).await?
        } else {
            self.store().key_by_alias(instance_id, id_or_alias).await?
        };
        let record = record.ok_or_else(|| CoreError::KeyNotFound {
            id: id_or_alias.to_owned(),
        })?;
        Key::from_record(record)
    }

    /// The versions of a key, oldest first.
    pub async fn key_versions(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
    ) -> Result<Vec<KeyVersion>> {
        self.audited(
            caller,
            instance_id,
            "key.versions",
            id_or_alias,
            self.key_versions_inner(caller, instance_id, id_or_alias),
        )
        .await
    }

    async fn key_versions_inner(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
    ) -> Result<Vec<KeyVersion>> {
        let key = self
            .key_for(caller, instance_id, id_or_alias, Action::ReadKey)
            .await?;
        self.audit_read(
            caller,
            instance_id,
            "key.versions",
            &key.id,
            serde_json::json!({}),
        )
        .await?;
        let records = self.store().key_versions(instance_id, &key.id).await?;
        records
            .into_iter()
            .map(|r| {
                let seq = u32::try_from(r.seq).ok();
                let mk_version = u32::try_from(r.mk_version).ok();
                match (seq, mk_version) {
                    (Some(seq), Some(mk_version)) => Ok(KeyVersion {
                        id: r.id,
                        seq,
                        created_at: r.created_at,
                        mk_version,
                    }),
                    _ => Err(CoreError::CorruptRecord {
                        table: "key_versions",
                        id: r.id.clone(),
                        source: StoreError::Corrupt {
                            table: "key_versions",
                            id: r.id,
                            detail: "sequence or master key version out of range".into(),
                        },
                    }),
                }
            })
            .collect()
    }

    /// Lists keys with paging; the total counts every match.
    pub async fn list_keys(
        &self,
        caller: &Caller,
        instance_id: &str,
        query: &KeyQuery,
    ) -> Result<KeyListing> {
        self.audited(caller, instance_id, "key.list", instance_id, async {
            caller.authorize(Action::ListKeys, instance_id, query.key_ring_id.as_deref())?;
            self.unsealed(instance_id).await?;
            if let Some(ring) = &query.key_ring_id {
                validate_key_ring_id(ring)?;
            }
            let (keys, total, incomplete_search) =
                self.key_page(caller, instance_id, query).await?;
            self.audit_read(
                caller,
                instance_id,
                "key.list",
                instance_id,
                serde_json::json!({"returned": keys.len(), "total": total}),
            )
            .await?;
            Ok(KeyListing {
                keys,
                total,
                incomplete_search,
            })
        })
        .await
    }

    /// The material of an extractable key's current version (Key Protect "retrieve key").
    pub async fn key_material(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.audited(
            caller,
            instance_id,
            "key.material.read",
            id_or_alias,
            async {
                let key = self
                    .key_for(caller, instance_id, id_or_alias, Action::ReadKeyMaterial)
                    .await?;
                let material = self.current_material(&key).await?;
                self.audit_read(
                    caller,
                    instance_id,
                    "key.material.read",
                    &key.id,
                    serde_json::json!({}),
                )
                .await?;
                Ok(material)
            },
        )
        .await
    }

    /// The material of an extractable key's current version, to be given in the clear (not for
    /// a key marked [`crate::key::NO_CLEAR_EXPORT`]), without authorization or audit.
    pub(crate) async fn current_material(&self, key: &Key) -> Result<Zeroizing<Vec<u8>>> {
        check_exportable(key)?;
        if !key.exports_in_clear() {
            return Err(CoreError::NotExtractable { id: key.id.clone() });
        }
        self.version_material(key, &key.current_version_id).await
    }

    /// Applies a lifecycle transition to a key (Manager role), with optimistic concurrency.
    pub async fn transition_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        transition: Transition,
    ) -> Result<Key> {
        let action = format!("key.{transition}");
        self.audited(caller, instance_id, &action, id_or_alias, async {
            let mut key = self
                .key_for(caller, instance_id, id_or_alias, Action::ManageKey)
                .await?;
            // Deleting or destroying (KMIP Destroy) keeps Key Protect's rules, without `force`.
            if matches!(transition, Transition::Delete | Transition::Destroy)
                && !key.state.is_destroyed()
            {
                self.check_deletion(caller, instance_id, &mut key, false)
                    .await?;
            }
            self.transition_audited(caller, key, transition, &action, serde_json::json!({}))
                .await
        })
        .await
    }
}

pub(crate) fn require_administrator(caller: &Caller) -> Result<()> {
    if caller.is_administrator() {
        Ok(())
    } else {
        Err(CoreError::Forbidden {
            principal: caller.principal.name.clone(),
            action: Action::ManageInstances.describe(),
        })
    }
}

fn caller_sees_instance(caller: &Caller, instance_id: &str) -> bool {
    caller.is_administrator()
        || caller.principal.roles.iter().any(|g| match &g.scope {
            Scope::Deployment => true,
            Scope::Instance(i) | Scope::KeyRing { instance: i, .. } => i == instance_id,
        })
}

pub(crate) fn principal_from_record(r: &PrincipalRecord) -> Result<Principal> {
    let corrupt = |detail: &str| CoreError::CorruptRecord {
        table: "principals",
        id: r.id.clone(),
        source: StoreError::Corrupt {
            table: "principals",
            id: r.id.clone(),
            detail: detail.into(),
        },
    };
    Ok(Principal {
        id: r.id.clone(),
        instance_id: r.instance_id.clone(),
        name: r.name.clone(),
        kind: PrincipalKind::parse(&r.kind).ok_or_else(|| corrupt("unknown kind"))?,
        roles: RoleGrant::decode_all(&r.roles).ok_or_else(|| corrupt("unreadable roles"))?,
        disabled: r.disabled,
        created_at: r.created_at,
    })
}

/// A fresh UUID (v7) for a key, a key version or a stored object: `now_ms` (its creation
/// time, which its metadata shows anyway), then 74 random bits from the crypto boundary's
/// CSPRNG. Ids that grow with time keep each index of those tables growing at its end, so a
/// group of creations writes a few pages rather than one page per key per index.
pub(crate) fn new_key_id(now_ms: i64) -> Result<String> {
    let mut bytes = [0u8; 10];
    keyfort_crypto::rng::fill_identifier(&mut bytes)?;
    let millis = u64::try_from(now_ms).unwrap_or(0);
    Ok(uuid::Builder::from_unix_timestamp_millis(millis, &bytes)
        .into_uuid()
        .to_string())
}

/// A fresh random UUID (v4) from the crypto boundary's CSPRNG (its identifier pool: ids are
/// public).
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    keyfort_crypto::rng::fill_identifier(&mut bytes)?;
    Ok(uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string())
}

/// The administrator role at deployment scope.
pub(crate) fn administrator_grant() -> RoleGrant {
    RoleGrant {
        role: Role::Administrator,
        scope: Scope::Deployment,
    }
}

/// Whether `key`'s material may leave the server now: a standard (extractable) key in a state
/// that permits export.
pub(crate) fn check_exportable(key: &Key) -> Result<()> {
    if !key.extractable {
        return Err(CoreError::NotExtractable { id: key.id.clone() });
    }
    if !key.state.permits(Usage::Export) {
        return Err(CoreError::KeyNotUsable {
            id: key.id.clone(),
            state: key.state,
            usage: Usage::Export,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::new_key_id;

    #[test]
    fn key_ids_are_v7_uuids_that_sort_by_creation_time() {
        let earlier = new_key_id(1_796_441_463_593).expect("id");
        let later = new_key_id(1_796_441_463_594).expect("id");
        let parsed = uuid::Uuid::parse_str(&earlier).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 7);
        assert!(earlier < later, "{earlier} < {later}");
        // Within one millisecond the rest is random.
        assert_ne!(new_key_id(5).expect("id"), new_key_id(5).expect("id"));
    }
}
