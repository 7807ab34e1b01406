//! Identity management: principals, their role grants and their API keys (administrators only).

use keyfort_store::ApiKeyRecord;

use crate::Result;
use crate::auth::{ApiKeySecret, Caller, Principal, RoleGrant};
use crate::error::CoreError;
use crate::service::{Keyfort, principal_from_record, require_administrator};

/// An API key's metadata (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: String,
    pub principal_id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl From<ApiKeyRecord> for ApiKeyInfo {
    fn from(r: ApiKeyRecord) -> Self {
        ApiKeyInfo {
            id: r.id,
            principal_id: r.principal_id,
            name: r.name,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

impl Keyfort {
    /// Every principal.
    pub async fn principals(&self, caller: &Caller) -> Result<Vec<Principal>> {
        require_administrator(caller)?;
        self.store()
            .list_principals()
            .await?
            .iter()
            .map(principal_from_record)
            .collect()
    }

    /// One principal by id or name (deployment-wide names first).
    pub async fn principal(&self, caller: &Caller, id_or_name: &str) -> Result<Principal> {
        require_administrator(caller)?;
        self.find_principal(id_or_name).await
    }

    async fn find_principal(&self, id_or_name: &str) -> Result<Principal> {
        if let Some(r) = self.store().principal(id_or_name).await? {
            return principal_from_record(&r);
        }
        let all = self.store().list_principals().await?;
        let mut found = all.iter().filter(|p| p.name == id_or_name);
        match (found.next(), found.next()) {
            (Some(p), None) => principal_from_record(p),
            (Some(_), Some(_)) => Err(CoreError::InvalidField {
                field: "principal",
                rule: "the name is ambiguous: use the id",
            }),
            (None, _) => Err(CoreError::InvalidField {
                field: "principal",
                rule: "must be an existing principal",
            }),
        }
    }

    /// Replaces a principal's role grants and disabled flag.
    pub async fn update_principal(
        &self,
        caller: &Caller,
        id_or_name: &str,
        roles: Option<Vec<RoleGrant>>,
        disabled: Option<bool>,
    ) -> Result<Principal> {
        require_administrator(caller)?;
        let principal = self.find_principal(id_or_name).await?;
        let mut record = self
            .store()
            .principal(&principal.id)
            .await?
            .ok_or_else(|| CoreError::InvalidField {
                field: "principal",
                rule: "must be an existing principal",
            })?;
        if principal.id == caller.principal.id && disabled == Some(true) {
            return Err(CoreError::InvalidField {
                field: "principal",
                rule: "you cannot disable yourself",
            });
        }
        if let Some(roles) = roles {
            record.roles = RoleGrant::encode_all(&roles);
        }
        if let Some(d) = disabled {
            record.disabled = d;
        }
        record.updated_at = self.now_ms();
        record.row_version = self.store().update_principal(&record).await?;
        self.forget_cached_callers();
        principal_from_record(&record)
    }

    /// The API keys of a principal (metadata only).
    pub async fn api_keys(&self, caller: &Caller, id_or_name: &str) -> Result<Vec<ApiKeyInfo>> {
        require_administrator(caller)?;
        let principal = self.find_principal(id_or_name).await?;
        Ok(self
            .store()
            .list_api_keys(&principal.id)
            .await?
            .into_iter()
            .map(ApiKeyInfo::from)
            .collect())
    }

    /// Rotation of an API key: a new key for the same principal, and the old one revoked.
    pub async fn rotate_api_key(
        &self,
        caller: &Caller,
        api_key_id: &str,
    ) -> Result<(String, ApiKeySecret)> {
        require_administrator(caller)?;
        let old =
            self.store()
                .api_key(api_key_id)
                .await?
                .ok_or_else(|| CoreError::InvalidField {
                    field: "api key",
                    rule: "must be an existing API key",
                })?;
        if old.revoked_at.is_some() {
            return Err(CoreError::InvalidField {
                field: "api key",
                rule: "is already revoked",
            });
        }
        let fresh = self
            .create_api_key_unchecked(&old.principal_id, &old.name)
            .await?;
        self.revoke_api_key(caller, api_key_id).await?;
        Ok(fresh)
    }
}
