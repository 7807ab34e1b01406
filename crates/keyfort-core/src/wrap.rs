//! Envelope encryption with root keys (Key Protect wrap / unwrap / rewrap).
//!
//! Wrapped form, version 1 (opaque to clients, base64 on the wire):
//!
//! | bytes | field |
//! |---|---|
//! | 3 | magic `"KFW"` |
//! | 1 | format version `0x01` |
//! | 16 | id (UUID) of the key version that wrapped it |
//! | 12 | AES-GCM nonce |
//! | n + 16 | AES-256-GCM ciphertext and tag |
//!
//! The GCM associated data binds the first 20 bytes, the key id, and each caller AAD string
//! (length-prefixed), so a wrapped DEK opens only under the same key with the same AAD.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::Result;
use crate::auth::{Action, Caller};
use crate::cache::CachedKey;
use crate::error::CoreError;
use crate::key::Key;
use crate::kms::{KmsRefusal, refuse};
use crate::lifecycle::Usage;
use crate::service::Keyfort;

const MAGIC: &[u8; 3] = b"KFW";
const FORMAT_V1: u8 = 0x01;
const HEADER_LEN: usize = 3 + 1 + 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Most AAD strings, and the longest one (Key Protect: 255 characters each).
const MAX_AAD_ITEMS: usize = 32;
const MAX_AAD_LEN: usize = 255;
/// Longest plaintext wrapped (a DEK; Key Protect wraps key-sized values).
pub const MAX_WRAP_PLAINTEXT: usize = 7168;
/// Length of a DEK generated when wrap has no plaintext.
const GENERATED_DEK_LEN: usize = 32;

/// The result of a wrap.
#[derive(Debug)]
pub struct Wrapped {
    pub ciphertext: Vec<u8>,
    pub key_version_id: String,
    /// The DEK the server generated, when the caller gave none.
    pub generated_plaintext: Option<Zeroizing<Vec<u8>>>,
}

/// The result of an unwrap.
#[derive(Debug)]
pub struct Unwrapped {
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The key version the ciphertext was wrapped with.
    pub key_version_id: String,
    /// When that was not the latest version: the same plaintext wrapped under the latest.
    pub rewrapped: Option<Wrapped>,
}

fn check_aad(aad: &[String]) -> Result<()> {
    if aad.len() > MAX_AAD_ITEMS || aad.iter().any(|a| a.chars().count() > MAX_AAD_LEN) {
        return Err(CoreError::InvalidField {
            field: "aad",
            rule: "at most 32 strings of at most 255 characters",
        });
    }
    Ok(())
}

fn gcm_aad(header: &[u8], key_id: &str, aad: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + key_id.len() + 64);
    out.extend_from_slice(header);
    out.extend_from_slice(&(key_id.len() as u32).to_be_bytes());
    out.extend_from_slice(key_id.as_bytes());
    for a in aad {
        out.extend_from_slice(&(a.len() as u32).to_be_bytes());
        out.extend_from_slice(a.as_bytes());
    }
    out
}

fn unprocessable(key_id: &str) -> CoreError {
    refuse(key_id, KmsRefusal::UnprocessableCiphertext)
}

impl Keyfort {
    /// Wraps `plaintext` (or a fresh 32-byte DEK) with the current version of a root key.
    pub async fn wrap_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        plaintext: Option<Zeroizing<Vec<u8>>>,
        aad: &[String],
    ) -> Result<Wrapped> {
        self.audited(caller, instance_id, "key.wrap", id_or_alias, async {
            let w = self
                .wrap_inner(caller, instance_id, id_or_alias, plaintext, aad)
                .await?;
            let details = serde_json::json!({"version": w.key_version_id});
            self.audit_read(caller, instance_id, "key.wrap", id_or_alias, details)
                .await?;
            Ok(w)
        })
        .await
    }

    pub(crate) async fn wrap_inner(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        plaintext: Option<Zeroizing<Vec<u8>>>,
        aad: &[String],
    ) -> Result<Wrapped> {
        check_aad(aad)?;
        let entry = self
            .root_key_for(caller, instance_id, id_or_alias, Usage::Protect)
            .await?;
        let (plaintext, generated) = match plaintext {
            Some(p) if p.is_empty() || p.len() > MAX_WRAP_PLAINTEXT => {
                return Err(CoreError::InvalidField {
                    field: "plaintext",
                    rule: "must be 1 to 7168 bytes",
                });
            }
            Some(p) => (p, false),
            None => (keyfort_crypto::rng::random_bytes(GENERATED_DEK_LEN)?, true),
        };
        let version_id = entry.key.current_version_id.clone();
        let ciphertext = self
            .wrap_with_version(&entry, &version_id, &plaintext, aad)
            .await?;
        Ok(Wrapped {
            ciphertext,
            key_version_id: version_id,
            generated_plaintext: generated.then_some(plaintext),
        })
    }

    /// Unwraps a ciphertext made by [`Keyfort::wrap_key`] with any version of the key; if that
    /// was not the latest version, also returns the plaintext rewrapped under the latest.
    pub async fn unwrap_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<Unwrapped> {
        self.audited(caller, instance_id, "key.unwrap", id_or_alias, async {
            let u = self.unwrap_inner(caller, instance_id, id_or_alias, ciphertext, aad).await?;
            let details = serde_json::json!({"version": u.key_version_id, "rewrapped": u.rewrapped.is_some()});
            self.audit_read(caller, instance_id, "key.unwrap", id_or_alias, details).await?;
            Ok(u)
        })
        .await
    }

    pub(crate) async fn unwrap_inner(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<Unwrapped> {
        check_aad(aad)?;
        let entry = self
            .root_key_for(caller, instance_id, id_or_alias, Usage::Process)
            .await?;
        let key = &entry.key;
        if ciphertext.len() < HEADER_LEN + NONCE_LEN + TAG_LEN
            || &ciphertext[..3] != MAGIC
            || ciphertext[3] != FORMAT_V1
        {
            return Err(unprocessable(&key.id));
        }
        let version_id = uuid::Uuid::from_slice(&ciphertext[4..HEADER_LEN])
            .map_err(|_| unprocessable(&key.id))?
            .to_string();
        let material = self
            .cached_material(&entry, &version_id)
            .await
            .map_err(|e| match e {
                CoreError::KeyNotFound { .. } => unprocessable(&key.id),
                other => other,
            })?;
        let nonce = &ciphertext[HEADER_LEN..HEADER_LEN + NONCE_LEN];
        let body = &ciphertext[HEADER_LEN + NONCE_LEN..];
        let ad = gcm_aad(&ciphertext[..HEADER_LEN], &key.id, aad);
        let plaintext = keyfort_crypto::aes::gcm_decrypt(material.as_slice(), nonce, &ad, body)
            .map_err(|_| unprocessable(&key.id))?;
        let rewrapped = if version_id != key.current_version_id {
            let current = key.current_version_id.clone();
            let ciphertext = self
                .wrap_with_version(&entry, &current, &plaintext, aad)
                .await?;
            Some(Wrapped {
                ciphertext,
                key_version_id: current,
                generated_plaintext: None,
            })
        } else {
            None
        };
        Ok(Unwrapped {
            plaintext,
            key_version_id: version_id,
            rewrapped,
        })
    }

    /// A root key usable for `usage`, from the key cache when fresh (see `cache.rs`).
    async fn root_key_for(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
        usage: Usage,
    ) -> Result<Arc<CachedKey>> {
        let entry = self.cached_key(caller, instance_id, id_or_alias).await?;
        let key = &entry.key;
        caller.authorize(Action::UseKey, instance_id, Some(&key.key_ring_id))?;
        crate::kms::check_key_ring(caller, key)?;
        crate::kmip_adapters::check_adapter_scope(caller, key)?;
        if key.extractable {
            return Err(refuse(&key.id, KmsRefusal::RootKeyRequired));
        }
        key.require_usage(usage, self.now_ms())?;
        Ok(entry)
    }

    /// A key (by id or alias) and the material unsealed so far, from the key cache while fresh,
    /// else read and cached (see `cache.rs`; every change to the key drops its entry). The
    /// caller's rights on it are not checked yet.
    pub(crate) async fn cached_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_alias: &str,
    ) -> Result<Arc<CachedKey>> {
        self.unsealed_for(caller, instance_id).await?;
        let now = self.now_ms();
        Ok(
            match self.inner.key_cache.get(instance_id, id_or_alias, now) {
                Some(entry) => entry,
                None => {
                    let key = self.find_key(instance_id, id_or_alias).await?;
                    self.inner
                        .key_cache
                        .insert(instance_id, id_or_alias, key, now)
                }
            },
        )
    }

    /// A version's material, unsealed once per cache entry.
    pub(crate) async fn cached_material(
        &self,
        entry: &CachedKey,
        version_id: &str,
    ) -> Result<Arc<Zeroizing<Vec<u8>>>> {
        if crate::kmip_adapters::is_adapter_object(&entry.key) {
            // Unwrapped with its CRK each time, so that the CRK's state applies at once.
            return Ok(Arc::new(
                self.version_material(&entry.key, version_id).await?,
            ));
        }
        if let Some(material) = entry.material(version_id) {
            return Ok(material);
        }
        let material = Arc::new(self.version_material(&entry.key, version_id).await?);
        entry.put_material(version_id, material.clone());
        Ok(material)
    }

    /// The unsealed material of one version of a key.
    pub(crate) async fn version_material(
        &self,
        key: &Key,
        version_id: &str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let master_keys = self.unsealed(&key.instance_id).await?;
        let version = self
            .store()
            .key_version(&key.instance_id, &key.id, version_id)
            .await?
            .ok_or_else(|| CoreError::KeyNotFound {
                id: format!("{}/{version_id}", key.id),
            })?;
        let material = self.unseal_version(key, &master_keys, &version)?;
        self.unbind_from_adapter(key, material).await
    }

    async fn wrap_with_version(
        &self,
        entry: &CachedKey,
        version_id: &str,
        plaintext: &[u8],
        aad: &[String],
    ) -> Result<Vec<u8>> {
        let key = &entry.key;
        let material = self.cached_material(entry, version_id).await?;
        let uuid = uuid::Uuid::try_parse(version_id).map_err(|_| CoreError::CorruptRecord {
            table: "key_versions",
            id: version_id.to_owned(),
            source: keyfort_store::StoreError::Corrupt {
                table: "key_versions",
                id: version_id.to_owned(),
                detail: "version id is not a UUID".into(),
            },
        })?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_V1);
        out.extend_from_slice(uuid.as_bytes());
        let ad = gcm_aad(&out, &key.id, aad);
        let (nonce, body) =
            keyfort_crypto::aes::gcm_encrypt_random_iv(material.as_slice(), &ad, plaintext)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }
}
