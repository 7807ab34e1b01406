//! Sealing for the GREP11-compatible door: stateless key and state blobs that clients hold.
//!
//! The server stores nothing for these blobs. Each one is a [`keyfort_crypto::seal`] blob under
//! the instance's master key, bound to the instance, to an object id chosen by the door (a blob
//! kind such as `grep11/key`) and to the door's canonical encoding of the key's attributes. The
//! master key's version and check value travel with every blob (the "wrapping key id"), so a
//! blob from another instance or another master key is recognised as such, and
//! [`Grep11Sealer::unseal`] accepts any master key version still loaded, which is what
//! `RewrapKeyBlob` needs during a master key rotation.
//!
//! Opening a blob (authenticating it, decoding its attributes, parsing the key inside, which
//! for an EC or RSA key means validating the key pair) costs as much as the operation it serves,
//! so the door may keep what it opened in [`OpenedBlobs`], through [`Grep11Sealer::opened`] and
//! [`Grep11Sealer::remember_opened`]: in memory only, keyed by the SHA-256 of the whole blob (a
//! changed byte is a different blob that must authenticate on its own), held by the loaded
//! master keys of the instance, so that sealing the instance or changing its master keys drops
//! (and zeroizes) everything at once. Nothing is stored: the server still keeps no state for
//! a blob that it could not rebuild from the blob alone.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use keyfort_crypto::seal::{self, MasterKey, SealContext};
use zeroize::Zeroizing;

use crate::auth::{Action, Caller, Scope};
use crate::instance::LoadedKeys;
use crate::{CoreError, Keyfort, Result};

/// Length of a wrapping key id: the master key's check value.
pub const WKID_LEN: usize = 8;

/// The loaded master keys of one instance, for one caller's GREP11 requests.
pub struct Grep11Sealer {
    instance_id: String,
    keys: Arc<LoadedKeys>,
}

impl std::fmt::Debug for Grep11Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grep11Sealer")
            .field("instance_id", &self.instance_id)
            .field("mk_version", &self.keys.current().version())
            .finish()
    }
}

/// Why a GREP11 blob could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobRejection {
    /// Sealed under a master key that this instance does not have loaded (another instance,
    /// or a master key retired by a rotation).
    #[error("blob sealed under another wrapping key")]
    WrappingKeyMismatch,
    /// Malformed or tampered, or bound to other attributes.
    #[error("blob failed authentication")]
    Invalid,
}

impl Keyfort {
    /// The sealer of an instance for a GREP11 caller, after checking that `caller` may do
    /// `action` there. `instance` is the instance the client named (the `bluemix-instance`
    /// header); without one, the single instance in which the caller holds roles, or for a
    /// deployment-wide caller the deployment's only unsealed instance.
    pub async fn grep11_sealer(
        &self,
        caller: &Caller,
        instance: Option<&str>,
        action: Action,
    ) -> Result<Grep11Sealer> {
        let instance_id = match instance {
            Some(id) => id.to_owned(),
            None => match implied_instance(caller) {
                Some(id) => id,
                None if caller_is_deployment_wide(caller) => self
                    .inner
                    .master_keys
                    .only_loaded()
                    .ok_or(CoreError::InvalidField {
                    field: "bluemix-instance",
                    rule: "required: not exactly one instance of the deployment is unsealed",
                })?,
                None => {
                    return Err(CoreError::InvalidField {
                        field: "bluemix-instance",
                        rule: "required: the caller is not bound to a single instance",
                    });
                }
            },
        };
        caller.authorize(action, &instance_id, None)?;
        let keys = self.unsealed(&instance_id).await?;
        Ok(Grep11Sealer { instance_id, keys })
    }
}

pub(crate) fn caller_is_deployment_wide(caller: &Caller) -> bool {
    caller.principal.instance_id.is_none()
        && caller
            .principal
            .roles
            .iter()
            .any(|g| g.scope == Scope::Deployment)
}

/// The one instance a caller's roles name, for clients that send no instance header.
pub(crate) fn implied_instance(caller: &Caller) -> Option<String> {
    if let Some(id) = &caller.principal.instance_id {
        return Some(id.clone());
    }
    let mut named = caller
        .principal
        .roles
        .iter()
        .filter_map(|g| match &g.scope {
            Scope::Deployment => None,
            Scope::Instance(i) | Scope::KeyRing { instance: i, .. } => Some(i.as_str()),
        });
    let first = named.next()?;
    named.all(|s| s == first).then(|| first.to_owned())
}

/// Most opened blobs kept per instance.
pub const OPENED_MAX: usize = 1024;
/// How long an opened blob is kept after it was first opened.
pub const OPENED_TTL: Duration = Duration::from_secs(300);

/// A value the door derived from a blob that opened, kept with the time it was opened.
type Opened = (Instant, Arc<dyn Any + Send + Sync>);

/// What the GREP11 door derived from blobs that opened under one set of loaded master keys,
/// by SHA-256 of the blob: at most [`OPENED_MAX`] entries (the oldest goes first), each for at
/// most [`OPENED_TTL`]. It lives and dies with those keys.
#[derive(Default)]
pub(crate) struct OpenedBlobs {
    entries: Mutex<HashMap<[u8; 32], Opened>>,
}

impl OpenedBlobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Opened>> {
        // The map is consistent after every single insert or remove.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, digest: &[u8; 32]) -> Option<Arc<dyn Any + Send + Sync>> {
        let mut map = self.lock();
        match map.get(digest) {
            Some((at, v)) if at.elapsed() < OPENED_TTL => Some(v.clone()),
            Some(_) => {
                map.remove(digest);
                None
            }
            None => None,
        }
    }

    fn put(&self, digest: [u8; 32], value: Arc<dyn Any + Send + Sync>) {
        let mut map = self.lock();
        if map.len() >= OPENED_MAX && !map.contains_key(&digest) {
            map.retain(|_, (at, _)| at.elapsed() < OPENED_TTL);
            if map.len() >= OPENED_MAX {
                let oldest = map.iter().min_by_key(|(_, (at, _))| *at).map(|(d, _)| *d);
                if let Some(d) = oldest {
                    map.remove(&d);
                }
            }
        }
        map.insert(digest, (Instant::now(), value));
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Grep11Sealer {
    /// What [`Grep11Sealer::remember_opened`] kept for the blob whose SHA-256 is `digest`,
    /// under the master keys this sealer holds, if it is still kept and of type `T`.
    pub fn opened<T: Any + Send + Sync>(&self, digest: &[u8; 32]) -> Option<Arc<T>> {
        self.keys.grep11_opened.get(digest)?.downcast().ok()
    }

    /// Keeps `value`, derived from the blob whose SHA-256 is `digest` after that blob opened
    /// with this sealer, until the instance is sealed or its master keys change (or it ages
    /// out, see [`OpenedBlobs`]). Only ever call this for a blob that authenticated.
    pub fn remember_opened<T: Any + Send + Sync>(&self, digest: [u8; 32], value: Arc<T>) {
        self.keys.grep11_opened.put(digest, value);
    }

    /// How many opened blobs are kept for this sealer's master keys.
    pub fn opened_count(&self) -> usize {
        self.keys.grep11_opened.len()
    }

    /// The instance this sealer serves.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The current wrapping key id: the current master key's check value.
    pub fn wkid(&self) -> [u8; WKID_LEN] {
        self.keys.current().check_value()
    }

    /// The current master key version.
    pub fn mk_version(&self) -> u32 {
        self.keys.current().version()
    }

    /// Seals `plaintext` under the current master key, bound to `object` and `attributes`.
    /// Returns the wrapping key id and the sealed bytes.
    pub fn seal(
        &self,
        object: &str,
        attributes: &[u8],
        plaintext: &[u8],
    ) -> Result<([u8; WKID_LEN], Vec<u8>)> {
        let mk = self.keys.current();
        let ctx = self.context(object, attributes);
        Ok((mk.check_value(), seal::seal(mk, &ctx, plaintext)?))
    }

    /// Opens a blob made by [`Grep11Sealer::seal`] under any loaded master key of this instance
    /// whose check value is `wkid`. Also returns whether that key is the current one.
    pub fn unseal(
        &self,
        object: &str,
        attributes: &[u8],
        wkid: &[u8],
        sealed: &[u8],
    ) -> std::result::Result<(Zeroizing<Vec<u8>>, bool), BlobRejection> {
        let mk = self.key_for(wkid, sealed)?;
        let current = mk.version() == self.keys.current().version();
        let ctx = self.context(object, attributes);
        let plain = seal::unseal(mk, &ctx, sealed).map_err(|_| BlobRejection::Invalid)?;
        Ok((plain, current))
    }

    fn key_for(
        &self,
        wkid: &[u8],
        sealed: &[u8],
    ) -> std::result::Result<&MasterKey, BlobRejection> {
        let version = seal::sealed_mk_version(sealed).map_err(|_| BlobRejection::Invalid)?;
        let mk = self
            .keys
            .version(version)
            .ok_or(BlobRejection::WrappingKeyMismatch)?;
        if keyfort_crypto::ct_eq(&mk.check_value(), wkid) {
            Ok(mk)
        } else {
            Err(BlobRejection::WrappingKeyMismatch)
        }
    }

    fn context<'a>(&'a self, object: &'a str, attributes: &'a [u8]) -> SealContext<'a> {
        SealContext {
            instance_id: &self.instance_id,
            object_id: object,
            attributes,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn digest(i: usize) -> [u8; 32] {
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&(i as u64).to_be_bytes());
        d
    }

    #[test]
    fn opened_blobs_are_bounded_oldest_first_and_typed() {
        let kept = OpenedBlobs::default();
        let first = Arc::new(String::from("first"));
        kept.put(digest(0), first.clone());
        std::thread::sleep(Duration::from_millis(2));
        for i in 1..OPENED_MAX {
            kept.put(digest(i), Arc::new(i));
        }
        assert_eq!(kept.len(), OPENED_MAX);
        let got = kept.get(&digest(0)).unwrap().downcast::<String>().unwrap();
        assert!(Arc::ptr_eq(&got, &first));
        drop(got);
        // Replacing a kept entry evicts nothing; one more entry evicts the oldest.
        kept.put(digest(5), Arc::new(5usize));
        assert_eq!(kept.len(), OPENED_MAX);
        kept.put(digest(OPENED_MAX), Arc::new(OPENED_MAX));
        assert_eq!(kept.len(), OPENED_MAX);
        assert!(kept.get(&digest(0)).is_none());
        assert_eq!(Arc::strong_count(&first), 1, "the evicted value is dropped");
        assert!(kept.get(&digest(1)).is_some());
        // A value of another type is not returned as this one.
        assert!(kept.get(&digest(1)).unwrap().downcast::<String>().is_err());
    }
}
