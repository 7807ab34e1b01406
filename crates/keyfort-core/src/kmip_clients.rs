//! KMIP clients: a TLS client certificate, by the SHA-256 fingerprint of its DER, maps to a
//! principal with one role in one instance.
//!
//! The mapping is an ordinary deployment-wide service principal named
//! `kmip-client:<fingerprint>` whose single grant names the instance and the role, so the same
//! authorization, disabling and audit apply to KMIP clients as to API-key callers. Removing a
//! client disables its principal and drops its grant.

use std::sync::Arc;

use keyfort_store::PrincipalRecord;

use crate::Result;
use crate::auth::{Caller, Principal, PrincipalKind, RequestInfo, Role, RoleGrant, Scope};
use crate::error::{AuthFailure, CoreError};
use crate::service::{Keyfort, principal_from_record, require_administrator};

/// Name prefix of the principals that stand for KMIP client certificates.
pub const KMIP_CLIENT_PREFIX: &str = "kmip-client:";

/// A registered KMIP client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipClient {
    /// Lower-case hex SHA-256 of the certificate's DER.
    pub fingerprint: String,
    pub principal_id: String,
    pub instance_id: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: i64,
}

impl KmipClient {
    fn from_principal(p: &Principal) -> Option<KmipClient> {
        let fingerprint = p.name.strip_prefix(KMIP_CLIENT_PREFIX)?.to_owned();
        let (role, instance_id) = match p.roles.as_slice() {
            [
                RoleGrant {
                    role,
                    scope: Scope::Instance(i),
                },
            ] => (*role, i.clone()),
            _ => (Role::Reader, String::new()),
        };
        Some(KmipClient {
            fingerprint,
            principal_id: p.id.clone(),
            instance_id,
            role,
            disabled: p.disabled || p.roles.is_empty(),
            created_at: p.created_at,
        })
    }
}

/// The fingerprint that identifies a client certificate: lower-case hex SHA-256 of its DER.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    hex::encode(keyfort_crypto::digest::sha256(der))
}

/// An authenticated KMIP caller and the instance its objects live in.
#[derive(Debug, Clone)]
pub struct KmipSession {
    pub caller: Arc<Caller>,
    pub instance_id: String,
}

impl Keyfort {
    /// Registers a client certificate (DER) for `role` in `instance_id` (administrators only).
    /// Registering a removed certificate again enables it with the new grant.
    pub async fn add_kmip_client(
        &self,
        caller: &Caller,
        cert_der: &[u8],
        instance_id: &str,
        role: Role,
    ) -> Result<KmipClient> {
        require_administrator(caller)?;
        self.add_kmip_client_unchecked(cert_der, instance_id, role)
            .await
    }

    /// [`Keyfort::add_kmip_client`] without the administrator check, for the dev bootstrap.
    pub async fn register_dev_kmip_client(
        &self,
        cert_der: &[u8],
        instance_id: &str,
    ) -> Result<KmipClient> {
        self.add_kmip_client_unchecked(cert_der, instance_id, Role::Manager)
            .await
    }

    async fn add_kmip_client_unchecked(
        &self,
        cert_der: &[u8],
        instance_id: &str,
        role: Role,
    ) -> Result<KmipClient> {
        if cert_der.is_empty() || cert_der.len() > 64 * 1024 {
            return Err(CoreError::InvalidField {
                field: "certificate",
                rule: "must be one DER certificate of at most 64 KiB",
            });
        }
        if matches!(
            role,
            Role::Administrator | Role::KeyPurge | Role::KmipAdapterManager
        ) {
            return Err(CoreError::InvalidField {
                field: "role",
                rule: "a KMIP client is a Reader, ReaderPlus, Writer or Manager",
            });
        }
        self.instance_record(instance_id).await?;
        let fingerprint = certificate_fingerprint(cert_der);
        // A certificate names one KMIP caller: not also a KMIP adapter's client.
        if self
            .store()
            .kmip_certificate_by_fingerprint(&fingerprint)
            .await?
            .is_some()
        {
            return Err(CoreError::AlreadyExists {
                what: "kmip adapter certificate",
                id: fingerprint,
            });
        }
        let name = format!("{KMIP_CLIENT_PREFIX}{fingerprint}");
        let grant = vec![RoleGrant {
            role,
            scope: Scope::Instance(instance_id.to_owned()),
        }];
        let principal = match self.store().principal_by_name(None, &name).await? {
            Some(mut record) => {
                record.roles = RoleGrant::encode_all(&grant);
                record.disabled = false;
                record.updated_at = self.now_ms();
                record.row_version = self.store().update_principal(&record).await?;
                self.forget_cached_callers();
                principal_from_record(&record)?
            }
            None => {
                self.create_principal_unchecked(None, &name, PrincipalKind::Service, grant)
                    .await?
            }
        };
        KmipClient::from_principal(&principal).ok_or_else(|| corrupt(&principal.id))
    }

    /// Every registered KMIP client (administrators only).
    pub async fn kmip_clients(&self, caller: &Caller) -> Result<Vec<KmipClient>> {
        require_administrator(caller)?;
        let records = self.store().list_principals().await?;
        let mut out = Vec::new();
        for r in records
            .iter()
            .filter(|r| r.instance_id.is_none() && r.name.starts_with(KMIP_CLIENT_PREFIX))
        {
            let p = principal_from_record(r)?;
            out.extend(KmipClient::from_principal(&p));
        }
        Ok(out)
    }

    /// Removes a client by fingerprint: its principal is disabled and loses its grant, so its
    /// next connection is refused (administrators only).
    pub async fn remove_kmip_client(&self, caller: &Caller, fingerprint: &str) -> Result<()> {
        require_administrator(caller)?;
        let name = format!("{KMIP_CLIENT_PREFIX}{}", fingerprint.to_ascii_lowercase());
        let mut record: PrincipalRecord = self
            .store()
            .principal_by_name(None, &name)
            .await?
            .ok_or_else(|| CoreError::InvalidField {
                field: "fingerprint",
                rule: "must be the fingerprint of a registered KMIP client",
            })?;
        record.roles = RoleGrant::encode_all(&[]);
        record.disabled = true;
        record.updated_at = self.now_ms();
        self.store().update_principal(&record).await?;
        self.forget_cached_callers();
        Ok(())
    }

    /// The caller a verified client certificate (DER) stands for, with its instance, connected
    /// from `peer`; refused as unauthenticated when the certificate is not registered or its
    /// client was removed, and as forbidden (audited) when the instance's allowedIP policy
    /// does not allow `peer`, as on every other door.
    pub async fn kmip_session(
        &self,
        cert_der: &[u8],
        peer: Option<std::net::SocketAddr>,
    ) -> Result<KmipSession> {
        let session = self.client_session(cert_der, peer).await?;
        self.check_source(
            &session.caller,
            &session.instance_id,
            peer.map(|p| p.ip().to_canonical()),
        )
        .await?;
        Ok(session)
    }

    async fn client_session(
        &self,
        cert_der: &[u8],
        peer: Option<std::net::SocketAddr>,
    ) -> Result<KmipSession> {
        let source = peer.map(|p| p.to_string());
        if let Some(session) = self.adapter_session(cert_der, source.clone()).await? {
            return Ok(session);
        }
        let name = format!("{KMIP_CLIENT_PREFIX}{}", certificate_fingerprint(cert_der));
        let record = self
            .store()
            .principal_by_name(None, &name)
            .await?
            .ok_or(CoreError::Unauthenticated(AuthFailure::UnknownCertificate))?;
        let principal = principal_from_record(&record)?;
        let client =
            KmipClient::from_principal(&principal).ok_or_else(|| corrupt(&principal.id))?;
        if client.disabled {
            return Err(CoreError::Unauthenticated(AuthFailure::PrincipalDisabled));
        }
        Ok(KmipSession {
            caller: Arc::new(Caller {
                principal,
                api_key_id: None,
                request: RequestInfo {
                    correlation_id: None,
                    source,
                    key_ring: None,
                    kmip: true,
                },
            }),
            instance_id: client.instance_id,
        })
    }
}

fn corrupt(id: &str) -> CoreError {
    CoreError::CorruptRecord {
        table: "principals",
        id: id.to_owned(),
        source: keyfort_store::StoreError::Corrupt {
            table: "principals",
            id: id.to_owned(),
            detail: "not a KMIP client principal".into(),
        },
    }
}
