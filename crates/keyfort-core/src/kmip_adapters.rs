//! Key Protect KMIP adapters (`/api/v2/kmip_adapters`): a named group of KMIP client
//! certificates of one instance, bound to one of its root keys (profile `native_1.0`, the
//! customer root key "CRK").
//!
//! What an adapter means for the KMIP door:
//!
//! - A certificate registered to an adapter is a KMIP client registration: the holder of its
//!   private key may connect to the KMIP port and act in the adapter's instance
//!   ([`Keyfort::kmip_session`] finds it by fingerprint). Its caller is a principal that exists
//!   only for the connection, named `kmip-adapter:<adapter id>/<certificate id>`, with the
//!   Manager role in the instance, so the same authorization, lifecycle and audit apply as for
//!   every other caller; it reaches only its adapter's objects (any other key is "not found",
//!   and Locate lists only them). Deleting the certificate (or its adapter) refuses the next
//!   connection.
//! - Every object such a client creates or registers is a key of the instance whose attributes
//!   carry `kmip_adapter: {adapter_id, cert_id, crk_id, crk_version_id}`; `kmip_objects` lists
//!   them by that tag.
//! - Under `native_1.0` an object's material is wrapped (AES key wrap with padding, RFC 5649)
//!   with the CRK's then current version before it is sealed under the master key, and unwrapped
//!   after unsealing on every read. The CRK must be usable for that: disabling it suspends the
//!   adapter's objects, destroying it crypto-erases them.

use serde_json::{Value, json};
use zeroize::Zeroizing;

use keyfort_store::{KmipAdapterRecord, KmipCertificateRecord, KmipObjectFilter, Write};

use crate::Result;
use crate::auth::{Action, Caller, Principal, PrincipalKind, RequestInfo, Role, RoleGrant, Scope};
use crate::error::CoreError;
use crate::key::Key;
use crate::kmip_clients::{KMIP_CLIENT_PREFIX, KmipSession, certificate_fingerprint};
use crate::kms::{KmsRefusal, refuse};
use crate::lifecycle::{KeyState, Transition, Usage};
use crate::service::{Keyfort, new_id};

/// The one adapter profile: objects wrapped by a root key of the instance.
pub const PROFILE_NATIVE: &str = "native_1.0";
/// Name prefix of the per-connection principals of adapter certificates.
pub const KMIP_ADAPTER_PREFIX: &str = "kmip-adapter:";
/// Most client certificates of one adapter (Key Protect's limit).
pub const MAX_CERTIFICATES_PER_ADAPTER: usize = 200;
/// Most adapters of one instance.
pub const MAX_ADAPTERS_PER_INSTANCE: usize = 1000;
/// Longest adapter or certificate name.
pub const MAX_ADAPTER_NAME_LEN: usize = 40;
/// Longest adapter description.
pub const MAX_DESCRIPTION_LEN: usize = 240;
/// Largest DER certificate accepted.
pub const MAX_CERTIFICATE_LEN: usize = 64 * 1024;
/// The key attribute that names an object's adapter.
const ATTRIBUTE: &str = "kmip_adapter";

/// Why a KMIP adapter request was refused. Each door maps these to its own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KmipAdapterRefusal {
    /// No adapter with that id or name in the instance.
    AdapterNotFound,
    /// No certificate with that id or name in the adapter.
    CertificateNotFound,
    /// No object with that id belongs to the adapter.
    ObjectNotFound,
    /// The profile is not `native_1.0`.
    UnsupportedProfile,
    /// The adapter still has objects that are not destroyed.
    AdapterHasObjects,
    /// The adapter already has [`MAX_CERTIFICATES_PER_ADAPTER`] certificates.
    TooManyCertificates,
    /// The instance already has [`MAX_ADAPTERS_PER_INSTANCE`] adapters.
    TooManyAdapters,
    /// Another adapter of the instance has that name.
    DuplicateAdapterName,
    /// The certificate is already registered (to this or another adapter, or as a client).
    DuplicateCertificate,
    /// Another certificate of the adapter has that name.
    DuplicateCertificateName,
    /// `profile_data.crk_id` names no key of the instance.
    CrkNotFound,
    /// The CRK is not an active root key (or expires, unless allowed).
    InvalidCrk,
}

impl std::fmt::Display for KmipAdapterRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KmipAdapterRefusal::AdapterNotFound => "KMIP adapter does not exist",
            KmipAdapterRefusal::CertificateNotFound => "KMIP client certificate does not exist",
            KmipAdapterRefusal::ObjectNotFound => "KMIP object does not exist in this adapter",
            KmipAdapterRefusal::UnsupportedProfile => "the only supported profile is native_1.0",
            KmipAdapterRefusal::AdapterHasObjects => {
                "the KMIP adapter still has objects that are not destroyed"
            }
            KmipAdapterRefusal::TooManyCertificates => {
                "a KMIP adapter has at most 200 client certificates"
            }
            KmipAdapterRefusal::TooManyAdapters => "the instance has too many KMIP adapters",
            KmipAdapterRefusal::DuplicateAdapterName => "a KMIP adapter with this name exists",
            KmipAdapterRefusal::DuplicateCertificate => "this certificate is already registered",
            KmipAdapterRefusal::DuplicateCertificateName => {
                "a certificate with this name exists in the KMIP adapter"
            }
            KmipAdapterRefusal::CrkNotFound => "the root key of profile_data.crk_id does not exist",
            KmipAdapterRefusal::InvalidCrk => {
                "profile_data.crk_id must name an enabled root key without an expiration date"
            }
        })
    }
}

fn refused(id: &str, reason: KmipAdapterRefusal) -> CoreError {
    CoreError::KmipAdapterRefused {
        id: id.to_owned(),
        reason,
    }
}

/// A KMIP adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipAdapter {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub profile: String,
    /// The root key of `native_1.0`.
    pub crk_id: String,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
}

impl KmipAdapter {
    fn from_record(r: KmipAdapterRecord) -> KmipAdapter {
        KmipAdapter {
            id: r.id,
            name: r.name,
            description: r.description,
            profile: r.profile,
            crk_id: r.crk_id,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        }
    }
}

/// A request to create an adapter.
#[derive(Debug, Clone, Default)]
pub struct NewKmipAdapter {
    /// Generated from the id when absent.
    pub name: Option<String>,
    pub description: Option<String>,
    pub profile: String,
    /// `profile_data.crk_id`: an id or alias of an active root key of the instance.
    pub crk_id: Option<String>,
    /// Whether a root key with an expiration date may be the CRK (`allowExpiringKey`).
    pub allow_expiring_key: bool,
}

/// A client certificate of an adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipCertificate {
    pub id: String,
    pub adapter_id: String,
    pub name: String,
    /// Lower-case hex SHA-256 of the DER.
    pub fingerprint: String,
    /// PEM text.
    pub certificate: String,
    pub created_at: i64,
    pub created_by: String,
}

impl KmipCertificate {
    fn from_record(r: KmipCertificateRecord) -> KmipCertificate {
        KmipCertificate {
            id: r.id,
            adapter_id: r.adapter_id,
            name: r.name,
            fingerprint: r.fingerprint,
            certificate: r.certificate,
            created_at: r.created_at,
            created_by: r.created_by,
        }
    }
}

/// An object of an adapter: a key of the instance tagged with the adapter.
#[derive(Debug, Clone)]
pub struct KmipObject {
    pub key: Key,
    /// The certificate whose client created the object.
    pub created_by_cert_id: Option<String>,
}

/// One page of a listing and the number of matches in all.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// Paging of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub offset: u64,
    pub limit: u64,
}

/// Where an adapter's object came from, as kept in its `kmip_adapter` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    adapter_id: String,
    cert_id: String,
    crk_id: String,
    crk_version_id: String,
}

impl Binding {
    fn of(key: &Key) -> Option<Binding> {
        let tag = key.attributes.get(ATTRIBUTE)?;
        let text = |name: &str| tag.get(name).and_then(Value::as_str).map(str::to_owned);
        Some(Binding {
            adapter_id: text("adapter_id")?,
            cert_id: text("cert_id")?,
            crk_id: text("crk_id")?,
            crk_version_id: text("crk_version_id")?,
        })
    }

    fn to_value(&self) -> Value {
        json!({
            "adapter_id": self.adapter_id,
            "cert_id": self.cert_id,
            "crk_id": self.crk_id,
            "crk_version_id": self.crk_version_id,
        })
    }
}

/// The adapter and certificate of a caller that is an adapter's KMIP client.
fn adapter_caller(caller: &Caller) -> Option<(&str, &str)> {
    caller
        .principal
        .name
        .strip_prefix(KMIP_ADAPTER_PREFIX)?
        .split_once('/')
        .filter(|(_, cert_id)| *cert_id == caller.principal.id)
}

/// The DER of a PEM text that holds exactly one `CERTIFICATE` block whose content is one DER
/// SEQUENCE (an X.509 certificate's outer structure), of at most [`MAX_CERTIFICATE_LEN`].
pub fn certificate_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let pem = pem.trim();
    let body = pem.strip_prefix(BEGIN)?.strip_suffix(END)?;
    if body.contains("-----") || body.len() > MAX_CERTIFICATE_LEN * 2 {
        return None;
    }
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (der.len() <= MAX_CERTIFICATE_LEN && is_der_sequence(&der)).then_some(der)
}

/// Whether `der` is exactly one DER SEQUENCE whose first element is a SEQUENCE.
fn is_der_sequence(der: &[u8]) -> bool {
    fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
        let tag = *b.first()?;
        let first = *b.get(1)?;
        if first < 0x80 {
            return Some((tag, 2, usize::from(first)));
        }
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        Some((tag, 2 + n, len))
    }
    let Some((0x30, head, len)) = header(der) else {
        return false;
    };
    if head.checked_add(len) != Some(der.len()) {
        return false;
    }
    matches!(header(&der[head..]), Some((0x30, h, l)) if h + l <= len)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ADAPTER_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && uuid::Uuid::try_parse(name).is_err()
}

/// The core state codes of KMIP State values (KMIP 1.4 §9.1.3.2.24); `None` for an unknown one.
pub fn core_states_of_kmip(kmip_state: u32) -> Option<Vec<i64>> {
    let states: Vec<i64> = KeyState::ALL
        .into_iter()
        .filter(|s| s.kmip() == kmip_state)
        .map(KeyState::code)
        .collect();
    (!states.is_empty()).then_some(states)
}

impl Keyfort {
    // ---- adapters ------------------------------------------------------------------------

    /// Creates an adapter (Manager or KmipAdapterManager). Its CRK must be an active root key
    /// of the instance.
    pub async fn create_kmip_adapter(
        &self,
        caller: &Caller,
        instance_id: &str,
        req: NewKmipAdapter,
    ) -> Result<KmipAdapter> {
        let target = req.name.clone().unwrap_or_default();
        self.audited(caller, instance_id, "kmip_adapter.create", &target, async {
            caller.authorize(Action::ManageKmipAdapters, instance_id, None)?;
            self.unsealed_for(caller, instance_id).await?;
            if req.profile != PROFILE_NATIVE {
                return Err(refused(
                    &req.profile,
                    KmipAdapterRefusal::UnsupportedProfile,
                ));
            }
            if let Some(n) = &req.name
                && !valid_name(n)
            {
                return Err(CoreError::InvalidField {
                    field: "name",
                    rule: "1 to 40 letters, digits, '-' or '_', not a UUID",
                });
            }
            if req.description.as_ref().is_some_and(|d| {
                d.chars().count() > MAX_DESCRIPTION_LEN || d.chars().any(char::is_control)
            }) {
                return Err(CoreError::InvalidField {
                    field: "description",
                    rule: "at most 240 characters without control characters",
                });
            }
            let crk_ref = req.crk_id.as_deref().ok_or(CoreError::InvalidField {
                field: "profile_data.crk_id",
                rule: "the id of a root key of the instance",
            })?;
            let crk = match self.find_key(instance_id, crk_ref).await {
                // Another adapter's object is not a key of the instance.
                Ok(k) if !is_adapter_object(&k) => k,
                Ok(_) | Err(CoreError::KeyNotFound { .. }) => {
                    return Err(refused(crk_ref, KmipAdapterRefusal::CrkNotFound));
                }
                Err(e) => return Err(e),
            };
            if crk.extractable
                || crk.state != KeyState::Active
                || (crk.expires_at.is_some() && !req.allow_expiring_key)
            {
                return Err(refused(&crk.id, KmipAdapterRefusal::InvalidCrk));
            }
            let existing = self.store().kmip_adapters(instance_id).await?;
            if existing.len() >= MAX_ADAPTERS_PER_INSTANCE {
                return Err(refused(instance_id, KmipAdapterRefusal::TooManyAdapters));
            }
            let id = new_id()?;
            let name = req
                .name
                .unwrap_or_else(|| format!("kmip_adapter_{}", &id[..8]));
            if existing.iter().any(|a| a.name == name) {
                return Err(refused(&name, KmipAdapterRefusal::DuplicateAdapterName));
            }
            let now = self.now_ms();
            let record = KmipAdapterRecord {
                instance_id: instance_id.to_owned(),
                id,
                name,
                description: req.description,
                profile: PROFILE_NATIVE.to_owned(),
                crk_id: crk.id.clone(),
                created_at: now,
                created_by: caller.display_name().to_owned(),
                updated_at: now,
                updated_by: caller.display_name().to_owned(),
            };
            let event = self.audit_event(
                caller,
                instance_id,
                "kmip_adapter.create",
                &record.id,
                "success",
                json!({"name": record.name, "profile": record.profile, "crk_id": record.crk_id}),
            );
            self.apply_audited(vec![Write::InsertKmipAdapter(record.clone())], event)
                .await
                .map_err(|e| match e {
                    CoreError::AlreadyExists { .. } => {
                        refused(&record.name, KmipAdapterRefusal::DuplicateAdapterName)
                    }
                    other => other,
                })?;
            Ok(KmipAdapter::from_record(record))
        })
        .await
    }

    /// The adapters of the instance (Manager or KmipAdapterManager), optionally only those of
    /// one CRK.
    pub async fn kmip_adapters(
        &self,
        caller: &Caller,
        instance_id: &str,
        crk_id: Option<&str>,
        paging: Paging,
    ) -> Result<Page<KmipAdapter>> {
        self.audited(
            caller,
            instance_id,
            "kmip_adapter.list",
            instance_id,
            async {
                caller.authorize(Action::ReadKmipAdapters, instance_id, None)?;
                self.unsealed_for(caller, instance_id).await?;
                let all: Vec<KmipAdapterRecord> = self
                    .store()
                    .kmip_adapters(instance_id)
                    .await?
                    .into_iter()
                    .filter(|a| crk_id.is_none_or(|c| a.crk_id == c))
                    .collect();
                let total = all.len() as u64;
                let items: Vec<KmipAdapter> = all
                    .into_iter()
                    .skip(usize::try_from(paging.offset).unwrap_or(usize::MAX))
                    .take(usize::try_from(paging.limit).unwrap_or(usize::MAX))
                    .map(KmipAdapter::from_record)
                    .collect();
                self.audit_read(
                    caller,
                    instance_id,
                    "kmip_adapter.list",
                    instance_id,
                    json!({"returned": items.len(), "total": total}),
                )
                .await?;
                Ok(Page { items, total })
            },
        )
        .await
    }

    /// One adapter by id or name (Manager or KmipAdapterManager).
    pub async fn kmip_adapter(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_name: &str,
    ) -> Result<KmipAdapter> {
        self.audited(
            caller,
            instance_id,
            "kmip_adapter.read",
            id_or_name,
            async {
                let adapter = self
                    .adapter_for(caller, instance_id, id_or_name, Action::ReadKmipAdapters)
                    .await?;
                self.audit_read(
                    caller,
                    instance_id,
                    "kmip_adapter.read",
                    &adapter.id,
                    json!({}),
                )
                .await?;
                Ok(adapter)
            },
        )
        .await
    }

    /// Deletes an adapter and its certificates (Manager or KmipAdapterManager); refused while it
    /// has objects that are not destroyed.
    pub async fn delete_kmip_adapter(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_name: &str,
    ) -> Result<()> {
        self.audited(
            caller,
            instance_id,
            "kmip_adapter.delete",
            id_or_name,
            async {
                let adapter = self
                    .adapter_for(caller, instance_id, id_or_name, Action::ManageKmipAdapters)
                    .await?;
                let live = KmipObjectFilter {
                    states: KeyState::ALL
                        .into_iter()
                        .filter(|s| !s.is_destroyed())
                        .map(KeyState::code)
                        .collect(),
                    offset: 0,
                    limit: Some(0),
                };
                let (_, live_objects) = self
                    .store()
                    .kmip_objects(instance_id, &adapter.id, &live)
                    .await?;
                if live_objects > 0 {
                    return Err(refused(&adapter.id, KmipAdapterRefusal::AdapterHasObjects));
                }
                let event = self.audit_event(
                    caller,
                    instance_id,
                    "kmip_adapter.delete",
                    &adapter.id,
                    "success",
                    json!({"name": adapter.name}),
                );
                self.apply_audited(
                    vec![Write::DeleteKmipAdapter {
                        instance_id: instance_id.to_owned(),
                        id: adapter.id.clone(),
                    }],
                    event,
                )
                .await
                .map_err(|e| not_found_as(e, &adapter.id, KmipAdapterRefusal::AdapterNotFound))?;
                Ok(())
            },
        )
        .await
    }

    /// The adapter named by `id_or_name`, for a caller who may do `action` in the instance.
    async fn adapter_for(
        &self,
        caller: &Caller,
        instance_id: &str,
        id_or_name: &str,
        action: Action,
    ) -> Result<KmipAdapter> {
        caller.authorize(action, instance_id, None)?;
        self.unsealed_for(caller, instance_id).await?;
        let by_id = uuid::Uuid::try_parse(id_or_name).is_ok();
        self.store()
            .kmip_adapters(instance_id)
            .await?
            .into_iter()
            .find(|a| {
                if by_id {
                    a.id == id_or_name
                } else {
                    a.name == id_or_name
                }
            })
            .map(KmipAdapter::from_record)
            .ok_or_else(|| refused(id_or_name, KmipAdapterRefusal::AdapterNotFound))
    }

    // ---- certificates --------------------------------------------------------------------

    /// Registers a client certificate (PEM) to an adapter (Manager or KmipAdapterManager): its
    /// holder may then connect to the KMIP port as a client of the adapter.
    pub async fn add_kmip_certificate(
        &self,
        caller: &Caller,
        instance_id: &str,
        adapter: &str,
        name: Option<String>,
        pem: &str,
    ) -> Result<KmipCertificate> {
        self.audited(caller, instance_id, "kmip_certificate.create", adapter, async {
            let adapter = self
                .adapter_for(caller, instance_id, adapter, Action::ManageKmipAdapters)
                .await?;
            let der = certificate_der(pem).ok_or(CoreError::InvalidField {
                field: "certificate",
                rule: "one PEM CERTIFICATE block holding a DER X.509 certificate",
            })?;
            if let Some(n) = &name
                && !valid_name(n) {
                    return Err(CoreError::InvalidField {
                        field: "name",
                        rule: "1 to 40 letters, digits, '-' or '_', not a UUID",
                    });
                }
            let existing = self
                .store()
                .kmip_certificates(instance_id, &adapter.id)
                .await?;
            if existing.len() >= MAX_CERTIFICATES_PER_ADAPTER {
                return Err(refused(&adapter.id, KmipAdapterRefusal::TooManyCertificates));
            }
            let fingerprint = certificate_fingerprint(&der);
            // A certificate names one KMIP caller: not also an admin-registered client.
            let client = format!("{KMIP_CLIENT_PREFIX}{fingerprint}");
            if self
                .store()
                .principal_by_name(None, &client)
                .await?
                .is_some_and(|p| !p.disabled)
            {
                return Err(refused(&fingerprint, KmipAdapterRefusal::DuplicateCertificate));
            }
            let id = new_id()?;
            let name = name.unwrap_or_else(|| format!("kmip_cert_{}", &id[..8]));
            if existing.iter().any(|c| c.name == name) {
                return Err(refused(&name, KmipAdapterRefusal::DuplicateCertificateName));
            }
            let record = KmipCertificateRecord {
                instance_id: instance_id.to_owned(),
                adapter_id: adapter.id.clone(),
                id,
                name,
                fingerprint,
                certificate: pem.trim().to_owned(),
                created_at: self.now_ms(),
                created_by: caller.display_name().to_owned(),
            };
            let event = self.audit_event(
                caller,
                instance_id,
                "kmip_certificate.create",
                &record.id,
                "success",
                json!({"adapter_id": adapter.id, "name": record.name, "fingerprint": record.fingerprint}),
            );
            self.apply_audited(vec![Write::InsertKmipCertificate(record.clone())], event)
                .await
                .map_err(|e| match e {
                    CoreError::AlreadyExists { .. } => {
                        refused(&record.fingerprint, KmipAdapterRefusal::DuplicateCertificate)
                    }
                    other => not_found_as(other, &adapter.id, KmipAdapterRefusal::AdapterNotFound),
                })?;
            Ok(KmipCertificate::from_record(record))
        })
        .await
    }

    /// The certificates of an adapter (Manager or KmipAdapterManager).
    pub async fn kmip_certificates(
        &self,
        caller: &Caller,
        instance_id: &str,
        adapter: &str,
        paging: Paging,
    ) -> Result<Page<KmipCertificate>> {
        self.audited(
            caller,
            instance_id,
            "kmip_certificate.list",
            adapter,
            async {
                let adapter = self
                    .adapter_for(caller, instance_id, adapter, Action::ReadKmipAdapters)
                    .await?;
                let all = self
                    .store()
                    .kmip_certificates(instance_id, &adapter.id)
                    .await?;
                let total = all.len() as u64;
                let items: Vec<KmipCertificate> = all
                    .into_iter()
                    .skip(usize::try_from(paging.offset).unwrap_or(usize::MAX))
                    .take(usize::try_from(paging.limit).unwrap_or(usize::MAX))
                    .map(KmipCertificate::from_record)
                    .collect();
                self.audit_read(
                    caller,
                    instance_id,
                    "kmip_certificate.list",
                    &adapter.id,
                    json!({"returned": items.len(), "total": total}),
                )
                .await?;
                Ok(Page { items, total })
            },
        )
        .await
    }

    /// One certificate of an adapter by id or name (Manager or KmipAdapterManager).
    pub async fn kmip_certificate(
        &self,
        caller: &Caller,
        instance_id: &str,
        adapter: &str,
        id_or_name: &str,
    ) -> Result<KmipCertificate> {
        self.audited(
            caller,
            instance_id,
            "kmip_certificate.read",
            id_or_name,
            async {
                let (_, cert) = self
                    .certificate_for(
                        caller,
                        instance_id,
                        adapter,
                        id_or_name,
                        Action::ReadKmipAdapters,
                    )
                    .await?;
                self.audit_read(
                    caller,
                    instance_id,
                    "kmip_certificate.read",
                    &cert.id,
                    json!({}),
                )
                .await?;
                Ok(cert)
            },
        )
        .await
    }

    /// Deletes a certificate (Manager or KmipAdapterManager): its client's next connection is
    /// refused.
    pub async fn delete_kmip_certificate(
        &self,
        caller: &Caller,
        instance_id: &str,
        adapter: &str,
        id_or_name: &str,
    ) -> Result<()> {
        self.audited(
            caller,
            instance_id,
            "kmip_certificate.delete",
            id_or_name,
            async {
                let (adapter, cert) = self
                    .certificate_for(
                        caller,
                        instance_id,
                        adapter,
                        id_or_name,
                        Action::ManageKmipAdapters,
                    )
                    .await?;
                let event = self.audit_event(
                    caller,
                    instance_id,
                    "kmip_certificate.delete",
                    &cert.id,
                    "success",
                    json!({"adapter_id": adapter.id, "fingerprint": cert.fingerprint}),
                );
                self.apply_audited(
                    vec![Write::DeleteKmipCertificate {
                        instance_id: instance_id.to_owned(),
                        adapter_id: adapter.id.clone(),
                        id: cert.id.clone(),
                    }],
                    event,
                )
                .await
                .map_err(|e| not_found_as(e, &cert.id, KmipAdapterRefusal::CertificateNotFound))?;
                Ok(())
            },
        )
        .await
    }

    async fn certificate_for(
        &self,
        caller: &Caller,
        instance_id: &str,
        adapter: &str,
        id_or_name: &str,
        action: Action,
    ) -> Result<(KmipAdapter, KmipCertificate)> {
        let adapter = self
            .adapter_for(caller, instance_id, adapter, action)
            .await?;
        let by_id = uuid::Uuid::try_parse(id_or_name).is_ok();
        let cert = self
            .store()
            .kmip_certificates(instance_id, &adapter.id)
            .await?
            .into_iter()
            .find(|c| {
                if by_id {
                    c.id == id_or_name
                } else {
                    c.name == id_or_name
                }
            })
            .map(KmipCertificate::from_record)
            .ok_or_else(|| refused(id_or_name, KmipAdapterRefusal::CertificateNotFound))?;
        Ok((adapter, cert))
    }

    // ---- objects -------------------------------------------------------------------------

    /// The objects of an adapter in the given core states (all when empty; Reader and up).
    pub async fn kmip_objects(
        &self,
        caller: &Caller,
        instance_id: &str,
        adapter: &str,
        states: Vec<i64>,
        paging: Paging,
    ) -> Result<Page<KmipObject>> {
        self.audited(caller, instance_id, "kmip_object.list", adapter, async {
            let adapter = self
                .adapter_for(caller, instance_id, adapter, Action::ReadKmipAdapters)
                .await?;
            let filter = KmipObjectFilter {
                states,
                offset: paging.offset,
                limit: Some(paging.limit),
            };
            let (records, total) = self
                .store()
                .kmip_objects(instance_id, &adapter.id, &filter)
                .await?;
            let items = records
                .into_iter()
                .map(|r| Key::from_record(r).map(object_of))
                .collect::<Result<Vec<_>>>()?;
            self.audit_read(
                caller,
                instance_id,
                "kmip_object.list",
                &adapter.id,
                json!({"returned": items.len(), "total": total}),
            )
            .await?;
            Ok(Page { items, total })
        })
        .await
    }

    /// One object of an adapter (Manager or KmipAdapterManager).
    pub async fn kmip_object(
        &self,
        caller: &Caller,
        instance_id: &str,
        adapter: &str,
        id: &str,
    ) -> Result<KmipObject> {
        self.audited(caller, instance_id, "kmip_object.read", id, async {
            let object = self
                .object_for(caller, instance_id, adapter, id, Action::ReadKmipAdapters)
                .await?;
            self.audit_read(
                caller,
                instance_id,
                "kmip_object.read",
                &object.key.id,
                json!({}),
            )
            .await?;
            Ok(object)
        })
        .await
    }

    /// Destroys an object of an adapter (Manager or KmipAdapterManager): KMIP state Destroyed,
    /// its material no longer usable. Without `force` only an object that is not active may be
    /// destroyed (KMIP Destroy); with `force`, an active one too.
    pub async fn delete_kmip_object(
        &self,
        caller: &Caller,
        instance_id: &str,
        adapter: &str,
        id: &str,
        force: bool,
    ) -> Result<KmipObject> {
        self.audited(caller, instance_id, "kmip_object.delete", id, async {
            let object = self
                .object_for(caller, instance_id, adapter, id, Action::ManageKmipAdapters)
                .await?;
            let transition = if force {
                Transition::Delete
            } else {
                Transition::Destroy
            };
            let key = self
                .transition_audited(
                    caller,
                    object.key,
                    transition,
                    "kmip_object.delete",
                    json!({"force": force}),
                )
                .await?;
            Ok(object_of(key))
        })
        .await
    }

    async fn object_for(
        &self,
        caller: &Caller,
        instance_id: &str,
        adapter: &str,
        id: &str,
        action: Action,
    ) -> Result<KmipObject> {
        let adapter = self
            .adapter_for(caller, instance_id, adapter, action)
            .await?;
        let not_found = || refused(id, KmipAdapterRefusal::ObjectNotFound);
        if uuid::Uuid::try_parse(id).is_err() {
            return Err(not_found());
        }
        let key = match self.find_key(instance_id, id).await {
            Ok(k) => k,
            Err(CoreError::KeyNotFound { .. }) => return Err(not_found()),
            Err(e) => return Err(e),
        };
        if Binding::of(&key).is_none_or(|b| b.adapter_id != adapter.id) {
            return Err(not_found());
        }
        Ok(object_of(key))
    }

    // ---- the KMIP door -------------------------------------------------------------------

    /// The session of a client certificate registered to an adapter, if it is one.
    pub(crate) async fn adapter_session(
        &self,
        cert_der: &[u8],
        source: Option<String>,
    ) -> Result<Option<KmipSession>> {
        let fingerprint = certificate_fingerprint(cert_der);
        let Some(cert) = self
            .store()
            .kmip_certificate_by_fingerprint(&fingerprint)
            .await?
        else {
            return Ok(None);
        };
        let principal = Principal {
            id: cert.id.clone(),
            instance_id: Some(cert.instance_id.clone()),
            name: format!("{KMIP_ADAPTER_PREFIX}{}/{}", cert.adapter_id, cert.id),
            kind: PrincipalKind::Service,
            roles: vec![RoleGrant {
                role: Role::Manager,
                scope: Scope::Instance(cert.instance_id.clone()),
            }],
            disabled: false,
            created_at: cert.created_at,
        };
        Ok(Some(KmipSession {
            caller: std::sync::Arc::new(Caller {
                principal,
                api_key_id: None,
                request: RequestInfo {
                    correlation_id: None,
                    source,
                    key_ring: None,
                    kmip: true,
                },
            }),
            instance_id: cert.instance_id,
        }))
    }

    /// For a caller that is an adapter's KMIP client: tags `key` as the adapter's object and
    /// returns `material` wrapped under the adapter's root key, to be sealed. For any other
    /// caller, `material` unchanged and no adapter tag on `key`.
    pub(crate) async fn bind_to_adapter(
        &self,
        caller: &Caller,
        key: &mut Key,
        material: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let Some((adapter_id, cert_id)) = adapter_caller(caller) else {
            // Only an adapter's client makes an adapter's object: a binding copied from another
            // object (KMIP Re-key copies its attributes) does not carry over.
            key.attributes.remove(ATTRIBUTE);
            return Ok(Zeroizing::new(material.to_vec()));
        };
        let adapter = self
            .store()
            .kmip_adapters(&key.instance_id)
            .await?
            .into_iter()
            .find(|a| a.id == adapter_id)
            .ok_or_else(|| refused(adapter_id, KmipAdapterRefusal::AdapterNotFound))?;
        let crk = self.find_key(&key.instance_id, &adapter.crk_id).await?;
        check_crk(&crk, Usage::Protect, self.now_ms())?;
        let crk_material = self.version_material(&crk, &crk.current_version_id).await?;
        let wrapped = keyfort_crypto::aes::key_wrap_pad(&crk_material, material)?;
        let binding = Binding {
            adapter_id: adapter.id,
            cert_id: cert_id.to_owned(),
            crk_id: crk.id.clone(),
            crk_version_id: crk.current_version_id.clone(),
        };
        key.attributes
            .insert(ATTRIBUTE.to_owned(), binding.to_value());
        Ok(Zeroizing::new(wrapped))
    }

    /// The material of an adapter's object, unwrapped from under its root key after unsealing;
    /// any other key's unsealed material unchanged. The root key must still be usable to
    /// process: a disabled root key suspends the objects, a destroyed one erases them.
    pub(crate) async fn unbind_from_adapter(
        &self,
        key: &Key,
        material: Zeroizing<Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let Some(binding) = Binding::of(key) else {
            return Ok(material);
        };
        let crk = self.find_key(&key.instance_id, &binding.crk_id).await?;
        check_crk(&crk, Usage::Process, self.now_ms())?;
        let loaded = self.unsealed(&key.instance_id).await?;
        let version = self
            .store()
            .key_version(&key.instance_id, &crk.id, &binding.crk_version_id)
            .await?
            .ok_or_else(|| CoreError::KeyNotFound {
                id: format!("{}/{}", crk.id, binding.crk_version_id),
            })?;
        let crk_material = self.unseal_version(&crk, &loaded, &version)?;
        Ok(keyfort_crypto::aes::key_unwrap_pad(
            &crk_material,
            &material,
        )?)
    }
}

/// Whether `key` is an adapter's object: its material is wrapped by the adapter's CRK, whose
/// state is checked on every use, so the material is never kept in the key cache.
pub(crate) fn is_adapter_object(key: &Key) -> bool {
    Binding::of(key).is_some()
}

/// Whether `caller` may see `key`: an adapter's KMIP client sees only its adapter's objects;
/// another KMIP client, every key; every other caller (the Key Protect API, the admin API),
/// every key but the adapters' objects, which are not Key Protect keys.
pub(crate) fn in_adapter_scope(caller: &Caller, key: &Key) -> bool {
    match adapter_caller(caller) {
        Some((adapter_id, _)) => Binding::of(key).is_some_and(|b| b.adapter_id == adapter_id),
        None if caller.request.kmip => true,
        None => !is_adapter_object(key),
    }
}

/// Whether listings for `caller` leave the adapters' objects out (see [`in_adapter_scope`]).
pub(crate) fn lists_without_adapter_objects(caller: &Caller) -> bool {
    !caller.request.kmip
}

/// [`in_adapter_scope`] as a result: a key out of scope is not found.
pub(crate) fn check_adapter_scope(caller: &Caller, key: &Key) -> Result<()> {
    if in_adapter_scope(caller, key) {
        Ok(())
    } else {
        Err(CoreError::KeyNotFound { id: key.id.clone() })
    }
}

/// A root key usable as an adapter's CRK for `usage`.
fn check_crk(crk: &Key, usage: Usage, now: i64) -> Result<()> {
    if crk.extractable {
        return Err(refuse(&crk.id, KmsRefusal::RootKeyRequired));
    }
    crk.require_usage(usage, now)?;
    Ok(())
}

fn object_of(key: Key) -> KmipObject {
    let created_by_cert_id = Binding::of(&key).map(|b| b.cert_id);
    KmipObject {
        key,
        created_by_cert_id,
    }
}

/// A store `NotFound` of a delete (a concurrent delete won) as the adapter refusal.
fn not_found_as(e: CoreError, id: &str, reason: KmipAdapterRefusal) -> CoreError {
    match e {
        CoreError::Store(keyfort_store::StoreError::NotFound { .. }) => refused(id, reason),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_pem_is_checked() {
        use base64::Engine as _;
        // SEQUENCE { SEQUENCE { INTEGER 1 } }
        let der = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01];
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let pem = format!("\n-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        assert_eq!(certificate_der(&pem), Some(der.to_vec()));
        // Trailing bytes, wrong tags, truncation, two blocks, junk: refused.
        for bad in [
            vec![0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01, 0x00],
            vec![0x31, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01],
            vec![0x30, 0x05, 0x02, 0x03, 0x02, 0x01, 0x01],
            vec![0x30, 0x05, 0x30, 0x03],
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            vec![],
        ] {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bad);
            let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----");
            assert_eq!(certificate_der(&pem), None, "{bad:?}");
        }
        assert_eq!(certificate_der(&format!("{pem}{pem}")), None);
        assert_eq!(certificate_der("not a pem"), None);
        assert_eq!(
            certificate_der("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
    }

    #[test]
    fn kmip_states_map_to_core_states() {
        assert_eq!(core_states_of_kmip(2), Some(vec![KeyState::Active.code()]));
        assert_eq!(
            core_states_of_kmip(3),
            Some(vec![
                KeyState::Suspended.code(),
                KeyState::Deactivated.code()
            ])
        );
        assert_eq!(core_states_of_kmip(0), None);
        assert_eq!(core_states_of_kmip(7), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("my-adapter_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"a".repeat(41)));
        assert!(!valid_name("0b9f6a8e-7a4c-4f55-9d2e-1f0c2b3a4d5e"));
    }
}
