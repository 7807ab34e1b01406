//! `keyfort server --dev`: one instance, unsealed from a key file, and an administrator API key.
//!
//! The dev key file holds the instance master key in the clear. It exists only in dev mode: any
//! other deployment loads master keys from custodians' parts or an HSM.

use std::path::{Path, PathBuf};

use keyfort_crypto::seal::{MASTER_KEY_LEN, MasterKey};
use zeroize::Zeroizing;

use crate::Result;
use crate::auth::{ApiKeySecret, PrincipalKind, write_secret_file};
use crate::error::CoreError;
use crate::instance::{InstanceState, UnsealMethod};
use crate::service::{Keyfort, administrator_grant};

/// Name of the dev instance.
pub const DEV_INSTANCE_NAME: &str = "dev";
/// Name of the dev administrator principal.
pub const DEV_ADMIN_NAME: &str = "admin";
/// First line of a dev master key file.
const DEV_KEY_FILE_HEADER: &str = "keyfort-dev-master-key v1";

/// What the dev bootstrap needs.
#[derive(Debug, Clone)]
pub struct DevSetup {
    /// Where the dev instance's master key is kept (created if absent).
    pub master_key_file: PathBuf,
    /// The API key written by a previous run, reused if it is still valid.
    pub previous_api_key: Option<String>,
}

/// What the dev bootstrap made or found.
#[derive(Debug, Clone)]
pub struct DevBootstrap {
    pub instance_id: String,
    /// The administrator API key (the secret itself, for `dev.json`).
    pub api_key: String,
    /// Whether the instance was created by this run.
    pub created: bool,
}

impl Keyfort {
    /// Makes or finds the dev instance, unseals it from its key file, and makes or reuses an
    /// administrator API key. Idempotent across restarts on the same data directory.
    pub async fn dev_bootstrap(&self, setup: DevSetup) -> Result<DevBootstrap> {
        let existing = self
            .store()
            .list_instances()
            .await?
            .into_iter()
            .find(|r| r.name == DEV_INSTANCE_NAME);
        let (instance_id, created) = match existing {
            Some(record) => {
                let instance = self.instance_unchecked(&record.id).await?;
                if instance.state == InstanceState::Uninitialized {
                    let mk = load_or_create_key_file(&setup.master_key_file, 1)?;
                    self.initialize_instance(&record.id, mk, UnsealMethod::DevKeyFile, "{}".into())
                        .await?;
                } else if instance.state == InstanceState::Sealed {
                    let mk = read_key_file(&setup.master_key_file)?;
                    self.unseal_instance(&record.id, mk).await?;
                }
                (record.id, false)
            }
            None => {
                let instance = self.create_instance_unchecked(DEV_INSTANCE_NAME).await?;
                let mk = load_or_create_key_file(&setup.master_key_file, 1)?;
                self.initialize_instance(&instance.id, mk, UnsealMethod::DevKeyFile, "{}".into())
                    .await?;
                (instance.id, true)
            }
        };

        let admin = match self.principal_by_name(None, DEV_ADMIN_NAME).await? {
            Some(p) => p,
            None => {
                self.create_principal_unchecked(
                    None,
                    DEV_ADMIN_NAME,
                    PrincipalKind::User,
                    vec![administrator_grant()],
                )
                .await?
            }
        };

        if let Some(previous) = setup.previous_api_key
            && self.api_key_belongs_to(&previous, &admin.id).await?
        {
            return Ok(DevBootstrap {
                instance_id,
                api_key: previous,
                created,
            });
        }
        let (_, secret) = self.create_api_key_unchecked(&admin.id, "dev").await?;
        Ok(DevBootstrap {
            instance_id,
            api_key: secret.expose().to_owned(),
            created,
        })
    }

    async fn api_key_belongs_to(&self, api_key: &str, principal_id: &str) -> Result<bool> {
        let secret = ApiKeySecret::from_presented(api_key);
        Ok(self
            .store()
            .api_key_by_hash(&secret.hash())
            .await?
            .is_some_and(|r| r.principal_id == principal_id && r.revoked_at.is_none()))
    }
}

fn key_file_error(path: &Path) -> impl FnOnce(std::io::Error) -> CoreError + '_ {
    move |source| CoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the dev key file, or creates it with a fresh master key of `version`.
fn load_or_create_key_file(path: &Path, version: u32) -> Result<MasterKey> {
    if path.exists() {
        return read_key_file(path);
    }
    let mk = MasterKey::generate(version)?;
    let text = Zeroizing::new(format!(
        "{DEV_KEY_FILE_HEADER}\n{}\n{}\n",
        mk.version(),
        hex::encode(mk.expose_secret())
    ));
    write_secret_file(path, text.as_bytes()).map_err(key_file_error(path))?;
    Ok(mk)
}

fn read_key_file(path: &Path) -> Result<MasterKey> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(key_file_error(path))?);
    let invalid = CoreError::InvalidField {
        field: "dev master key file",
        rule: "must hold the header line, the master key version and 64 hex digits",
    };
    let mut lines = text.lines();
    if lines.next() != Some(DEV_KEY_FILE_HEADER) {
        return Err(invalid);
    }
    let version: u32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or(invalid)?;
    let hex_key = lines.next().map(str::trim).unwrap_or_default();
    let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    hex::decode_to_slice(hex_key, bytes.as_mut_slice()).map_err(|_| CoreError::InvalidField {
        field: "dev master key file",
        rule: "the key line must be 64 hex digits",
    })?;
    Ok(MasterKey::from_bytes(version, bytes.as_slice())?)
}
