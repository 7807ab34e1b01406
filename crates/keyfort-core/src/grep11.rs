//! Sealing for the GREP11-compatible door: stateless key and state blobs that clients hold.
//!
//! The server stores nothing for these blobs. Each one is a [`keyfort_crypto::seal`] blob under
//! the instance's master key, bound to the instance, to an object id chosen by the door (a blob
//! kind such as `grep11/key`) and to the door's canonical encoding of the key's attributes. The
//! master key's version and check value travel with every blob (the "wrapping key id"), so a
//! blob from another instance or another master key is recognised as such, and
//! [`Grep11Sealer::unseal`] accepts any master key version still loaded, which is what
//! `RewrapKeyBlob` needs during a master key rotation.

use std::sync::Arc;

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

impl Grep11Sealer {
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
