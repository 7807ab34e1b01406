//! Managed objects of any type (KMIP 1.4 §2.2): symmetric keys, key pairs, certificates, secret
//! data and opaque objects. Each is a [`Key`] of the instance, so the same roles, lifecycle and
//! audit apply as to a Key Protect key, and each shows in the admin listing.
//!
//! | object type | `Key::object_type` | stored material |
//! |---|---|---|
//! | symmetric key | `symmetric_key` | raw key bytes |
//! | private key | `private_key` | PKCS #8 `PrivateKeyInfo` DER |
//! | public key | `public_key` | RSA: X.509 `SubjectPublicKeyInfo` DER; EC: the uncompressed point |
//! | certificate | `certificate` | X.509 DER |
//! | secret data | `secret_data` | raw bytes |
//! | opaque object | `opaque_object` | raw bytes |
//!
//! Objects are extractable (their material may be read by callers holding `ReadKeyMaterial`),
//! start pre-active unless the request says otherwise, and carry protocol attributes in
//! `Key::attributes`. Every cryptographic operation goes through `keyfort-crypto`.

use std::sync::Arc;

use keyfort_store::Write;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::Result;
use crate::auth::{Action, Caller};
use crate::error::CoreError;
use crate::key::{DEFAULT_KEY_RING, Key, KeyQuery, MAX_NAME_LEN};
use crate::kms::{KmsRefusal, key_write_error, refuse, row_version};
use crate::lifecycle::{KeyState, Usage};
use crate::service::{Keyfort, new_key_id};

/// Largest secret data, opaque object or certificate accepted.
pub const MAX_OBJECT_LEN: usize = 64 * 1024;
/// Objects read per page while [`Keyfort::locate_objects`] walks an instance.
const LOCATE_PAGE: u64 = 1000;

/// A managed object's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    SymmetricKey,
    PublicKey,
    PrivateKey,
    Certificate,
    SecretData,
    OpaqueObject,
}

impl ObjectType {
    /// The stored `Key::object_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::SymmetricKey => "symmetric_key",
            ObjectType::PublicKey => "public_key",
            ObjectType::PrivateKey => "private_key",
            ObjectType::Certificate => "certificate",
            ObjectType::SecretData => "secret_data",
            ObjectType::OpaqueObject => "opaque_object",
        }
    }

    /// The type of a stored `Key::object_type`.
    pub fn parse(s: &str) -> Option<ObjectType> {
        [
            ObjectType::SymmetricKey,
            ObjectType::PublicKey,
            ObjectType::PrivateKey,
            ObjectType::Certificate,
            ObjectType::SecretData,
            ObjectType::OpaqueObject,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// An elliptic curve for key pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    P256,
    P384,
    P521,
}

impl EcCurve {
    /// The curve's field size in bits (the object's `bit_length`).
    pub fn bits(self) -> u32 {
        match self {
            EcCurve::P256 => 256,
            EcCurve::P384 => 384,
            EcCurve::P521 => 521,
        }
    }

    /// The curve of a field size.
    pub fn from_bits(bits: u32) -> Option<EcCurve> {
        match bits {
            256 => Some(EcCurve::P256),
            384 => Some(EcCurve::P384),
            521 => Some(EcCurve::P521),
            _ => None,
        }
    }

    fn crypto(self) -> keyfort_crypto::ec::Curve {
        match self {
            EcCurve::P256 => keyfort_crypto::ec::Curve::P256,
            EcCurve::P384 => keyfort_crypto::ec::Curve::P384,
            EcCurve::P521 => keyfort_crypto::ec::Curve::P521,
        }
    }
}

/// The algorithm of a key pair to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPairAlgorithm {
    /// RSA with public exponent 65537; 2048, 3072 or 4096 bits.
    Rsa(u32),
    /// ECDSA on a NIST curve.
    Ec(EcCurve),
}

/// A request to create (generate) or register (import) one object.
pub struct NewObject {
    pub object_type: ObjectType,
    /// `AES`, `RSA`, `EC`, `HMAC-SHA256`, … (empty for objects without one).
    pub algorithm: String,
    pub bit_length: u32,
    /// The key name shown in listings (the protocol's first Name); `None` for a generated one.
    pub name: Option<String>,
    /// Protocol attributes kept with the object.
    pub attributes: Map<String, Value>,
    /// Material to register; `None` generates a symmetric key of `bit_length` bits.
    pub material: Option<Zeroizing<Vec<u8>>>,
    pub initial_state: KeyState,
    /// The id to give the object (KMIP Import); a UUID. `None` makes a fresh one.
    pub id: Option<String>,
}

impl std::fmt::Debug for NewObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewObject")
            .field("object_type", &self.object_type)
            .field("algorithm", &self.algorithm)
            .field("bit_length", &self.bit_length)
            .field("name", &self.name)
            .field("material", &self.material.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// One half of a key pair to generate: its name and protocol attributes.
#[derive(Debug, Clone, Default)]
pub struct PairHalf {
    pub name: Option<String>,
    pub attributes: Map<String, Value>,
}

/// A symmetric or asymmetric cipher for [`Keyfort::object_encrypt`] and
/// [`Keyfort::object_decrypt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-GCM with a 16-byte tag; the IV is 12 bytes (generated when not given).
    AesGcm,
    /// AES-CBC with PKCS #7 padding; 16-byte IV (generated when not given).
    AesCbcPad,
    /// AES-CBC without padding (data a multiple of 16 bytes).
    AesCbc,
    /// AES-CTR; the IV is the 16-byte initial counter block.
    AesCtr,
    /// AES-ECB without padding.
    AesEcb,
    /// RSAES-OAEP with MGF1 over the same hash.
    RsaOaep(keyfort_crypto::rsa::OaepHash),
}

/// A signature scheme for [`Keyfort::object_sign`] and [`Keyfort::object_verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    Rsa(keyfort_crypto::rsa::SignatureScheme),
    /// ECDSA over the hash, signature DER-encoded.
    Ecdsa(keyfort_crypto::digest::Algorithm),
}

/// The result of an encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    pub data: Vec<u8>,
    /// The IV or counter block used, when the server chose it.
    pub generated_iv: Option<Vec<u8>>,
    /// The authentication tag (AES-GCM).
    pub tag: Option<Vec<u8>>,
}

impl Keyfort {
    /// Creates (generates) a symmetric key or registers an object with the caller's material,
    /// audited as `key.create` or `key.register`.
    pub async fn create_object(
        &self,
        caller: &Caller,
        instance_id: &str,
        req: NewObject,
    ) -> Result<Key> {
        let action = if req.material.is_some() {
            "key.register"
        } else {
            "key.create"
        };
        let target = req.name.clone().unwrap_or_default();
        self.audited(caller, instance_id, action, &target, async {
            caller.authorize(Action::CreateKey, instance_id, Some(DEFAULT_KEY_RING))?;
            let (mut key, version, material) = self.new_object(caller, instance_id, req).await?;
            let event = self.audit_event(
                caller,
                instance_id,
                action,
                &key.id,
                "success",
                json!({"object_type": key.object_type, "algorithm": key.algorithm, "bit_length": key.bit_length}),
            );
            let removals = self.inner.key_cache.removals();
            let applied = self
                .apply_audited(
                    vec![Write::InsertKey {
                        key: key.to_record(),
                        first_version: version,
                    }],
                    event,
                )
                .await
                .map_err(key_write_error)?;
            key.row_version = row_version(&applied).max(1);
            // A client usually uses or gets what it just created: keep it at hand (not an
            // adapter's object, whose CRK is checked on every use).
            if !crate::kmip_adapters::is_adapter_object(&key) {
                self.inner
                    .key_cache
                    .prime(&key, Arc::new(material), self.now_ms(), removals);
            }
            Ok(key)
        })
        .await
    }

    /// Replaces the object with id `req.id` by a new registered object with the same id (KMIP
    /// 2.0 Import with Replace Existing): the old object and all its versions are purged and
    /// the new one inserted in one transaction, audited as `key.replace`. Needs the Manager
    /// role on the old object and the right to create keys.
    pub async fn replace_object(
        &self,
        caller: &Caller,
        instance_id: &str,
        req: NewObject,
    ) -> Result<Key> {
        let id = req.id.clone().ok_or(CoreError::InvalidField {
            field: "unique identifier",
            rule: "a replacement names the object it replaces",
        })?;
        if req.material.is_none() {
            return Err(CoreError::InvalidField {
                field: "material",
                rule: "a replacement carries its material",
            });
        }
        self.audited(caller, instance_id, "key.replace", &id, async {
            caller.authorize(Action::CreateKey, instance_id, Some(DEFAULT_KEY_RING))?;
            let old = self
                .key_for(caller, instance_id, &id, Action::ManageKey)
                .await?;
            let (mut key, version, _) = self.new_object(caller, instance_id, req).await?;
            let event = self.audit_event(
                caller,
                instance_id,
                "key.replace",
                &key.id,
                "success",
                json!({
                    "object_type": key.object_type,
                    "algorithm": key.algorithm,
                    "bit_length": key.bit_length,
                    "replaced_object_type": old.object_type,
                }),
            );
            let applied = self
                .apply_audited(
                    vec![
                        Write::PurgeKey {
                            instance_id: instance_id.to_owned(),
                            key_id: old.id.clone(),
                        },
                        Write::InsertKey {
                            key: key.to_record(),
                            first_version: version,
                        },
                    ],
                    event,
                )
                .await
                .map_err(key_write_error)?;
            key.row_version = row_version(&applied).max(1);
            Ok(key)
        })
        .await
    }

    /// Removes an object this caller created, as the compensation of a KMIP batch that is
    /// undone (Batch Error Continuation Option Undo). Refused unless the object is unchanged
    /// since its creation (`row_version`) and was created by the caller; audited as
    /// `key.create.undo`.
    pub async fn undo_object_creation(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        row_version: i64,
    ) -> Result<()> {
        self.audited(caller, instance_id, "key.create.undo", id, async {
            caller.authorize(Action::CreateKey, instance_id, Some(DEFAULT_KEY_RING))?;
            let key = self
                .key_for(caller, instance_id, id, Action::CreateKey)
                .await?;
            if key.row_version != row_version || key.created_by != caller.display_name() {
                return Err(CoreError::Conflict {
                    what: "key",
                    id: key.id,
                });
            }
            let event = self.audit_event(
                caller,
                instance_id,
                "key.create.undo",
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
            Ok(())
        })
        .await
    }

    /// The key record, sealed first version and material of a new object (not yet stored).
    async fn new_object(
        &self,
        caller: &Caller,
        instance_id: &str,
        req: NewObject,
    ) -> Result<(Key, keyfort_store::KeyVersionRecord, Zeroizing<Vec<u8>>)> {
        let loaded = self.unsealed(instance_id).await?;
        let mut bit_length = req.bit_length;
        let registered = req.material.is_some();
        let material = match req.material {
            Some(m) => {
                // An EC public key registered without a length naming its curve: the point's
                // own length names it, if it lies on that curve.
                if req.object_type == ObjectType::PublicKey
                    && req.algorithm == "EC"
                    && EcCurve::from_bits(bit_length).is_none()
                    && let Some(curve) = curve_of_point(&m)
                {
                    bit_length = curve.bits();
                }
                check_material(req.object_type, &req.algorithm, bit_length, &m)?;
                m
            }
            None => {
                if req.object_type != ObjectType::SymmetricKey {
                    return Err(CoreError::InvalidField {
                        field: "object type",
                        rule: "only symmetric keys are generated by create",
                    });
                }
                check_symmetric(&req.algorithm, req.bit_length)?;
                keyfort_crypto::rng::random_bytes(req.bit_length as usize / 8)?
            }
        };
        let mut key = self.object_key(
            caller,
            instance_id,
            req.object_type,
            &req.algorithm,
            bit_length,
            req.name,
            req.attributes,
            req.initial_state,
        )?;
        if let Some(id) = req.id {
            if uuid::Uuid::try_parse(&id).is_err() {
                return Err(CoreError::InvalidField {
                    field: "unique identifier",
                    rule: "must be a UUID",
                });
            }
            key.id = id;
        }
        let bound = self.bind_to_adapter(caller, &mut key, &material).await?;
        self.apply_instance_policies(caller, instance_id, &mut [&mut key], registered)
            .await?;
        let version = self.seal_version(&key, loaded.current(), &bound, 1, key.created_at)?;
        Ok((key, version, material))
    }

    /// Generates a key pair; both halves are stored in one transaction with one audit event.
    /// Returns `(private, public)`. Each half's attributes gain a `links` entry naming the other.
    pub async fn create_key_pair(
        &self,
        caller: &Caller,
        instance_id: &str,
        algorithm: KeyPairAlgorithm,
        private: PairHalf,
        public: PairHalf,
        initial_state: KeyState,
    ) -> Result<(Key, Key)> {
        let target = private.name.clone().unwrap_or_default();
        self.audited(caller, instance_id, "key.create_pair", &target, async {
            caller.authorize(Action::CreateKey, instance_id, Some(DEFAULT_KEY_RING))?;
            let loaded = self.unsealed(instance_id).await?;
            let (alg, bits, private_der, public_der) = generate_pair(algorithm)?;
            let mut private_key = self.object_key(
                caller,
                instance_id,
                ObjectType::PrivateKey,
                alg,
                bits,
                private.name,
                private.attributes,
                initial_state,
            )?;
            let mut public_key = self.object_key(
                caller,
                instance_id,
                ObjectType::PublicKey,
                alg,
                bits,
                public.name,
                public.attributes,
                initial_state,
            )?;
            private_key
                .attributes
                .insert("public_key_id".into(), Value::String(public_key.id.clone()));
            public_key.attributes.insert(
                "private_key_id".into(),
                Value::String(private_key.id.clone()),
            );
            let private_der = self
                .bind_to_adapter(caller, &mut private_key, &private_der)
                .await?;
            let public_der = self
                .bind_to_adapter(caller, &mut public_key, &public_der)
                .await?;
            self.apply_instance_policies(
                caller,
                instance_id,
                &mut [&mut private_key, &mut public_key],
                false,
            )
            .await?;
            let now = private_key.created_at;
            let private_version =
                self.seal_version(&private_key, loaded.current(), &private_der, 1, now)?;
            let public_version =
                self.seal_version(&public_key, loaded.current(), &public_der, 1, now)?;
            let event = self.audit_event(
                caller,
                instance_id,
                "key.create_pair",
                &private_key.id,
                "success",
                json!({"algorithm": alg, "bit_length": bits, "public_key": public_key.id}),
            );
            self.apply_audited(
                vec![
                    Write::InsertKey {
                        key: private_key.to_record(),
                        first_version: private_version,
                    },
                    Write::InsertKey {
                        key: public_key.to_record(),
                        first_version: public_version,
                    },
                ],
                event,
            )
            .await
            .map_err(key_write_error)?;
            Ok((private_key, public_key))
        })
        .await
    }

    /// Holds new objects to the instance's policies, as Key Protect holds the keys created
    /// through it: an object made over KMIP is a key of the instance (a standard key: its
    /// material may be read).
    ///
    /// - keyCreateImportAccess: generating one needs `create_standard_key`, registering one
    ///   (`registered`, the caller's material) `import_standard_key`, and no registration passes
    ///   `enforce_token`, since its material never comes sealed to an import token;
    /// - dualAuthDelete, while on, is given to each, and no single client may delete it either.
    ///
    /// Not a Key Protect KMIP adapter's objects, which live under their adapter's root key and
    /// are not the instance's keys.
    async fn apply_instance_policies(
        &self,
        caller: &Caller,
        instance_id: &str,
        keys: &mut [&mut Key],
        registered: bool,
    ) -> Result<()> {
        let policies = self.enforced_policies(instance_id).await?;
        let dual_auth = crate::kms::instance_dual_auth(&policies);
        let stamp = json!({"by": caller.principal.name, "at": self.now_ms()});
        for key in keys {
            if crate::kmip_adapters::is_adapter_object(key) {
                continue;
            }
            if !crate::kms::create_import_allowed(&policies, registered, key.extractable, false) {
                let name = if key.name.is_empty() {
                    "new object"
                } else {
                    &key.name
                };
                return Err(refuse(name, KmsRefusal::CreateImportAccess));
            }
            if dual_auth {
                key.attributes.insert(
                    "policies".into(),
                    json!({"dualAuthDelete": {"enabled": true, "stamp": stamp}}),
                );
            }
        }
        Ok(())
    }

    /// Builds a new object's record (not stored).
    #[allow(clippy::too_many_arguments)]
    fn object_key(
        &self,
        caller: &Caller,
        instance_id: &str,
        object_type: ObjectType,
        algorithm: &str,
        bit_length: u32,
        name: Option<String>,
        attributes: Map<String, Value>,
        state: KeyState,
    ) -> Result<Key> {
        let now = self.now_ms();
        let id = new_key_id(now)?;
        let name = match name {
            Some(n)
                if !n.is_empty()
                    && n.chars().count() <= MAX_NAME_LEN
                    && !n.chars().any(char::is_control) =>
            {
                n
            }
            Some(_) => {
                return Err(CoreError::InvalidField {
                    field: "name",
                    rule: "must be 1 to 90 characters without control characters",
                });
            }
            // The id's last characters: its first ones are its creation time.
            None => format!(
                "{}-{}",
                object_type.as_str().replace('_', "-"),
                &id[id.len().saturating_sub(8)..]
            ),
        };
        Ok(Key {
            instance_id: instance_id.to_owned(),
            id,
            key_ring_id: DEFAULT_KEY_RING.to_owned(),
            name,
            description: None,
            tags: Vec::new(),
            aliases: Vec::new(),
            object_type: object_type.as_str().to_owned(),
            algorithm: algorithm.to_owned(),
            bit_length,
            extractable: true,
            imported: false,
            state,
            created_at: now,
            created_by: caller.display_name().to_owned(),
            updated_at: now,
            activation_at: (state == KeyState::Active).then_some(now),
            expires_at: None,
            deactivated_at: None,
            deleted_at: None,
            deleted_by: None,
            last_rotated_at: None,
            current_version_id: new_key_id(now)?,
            attributes,
            row_version: 1,
        })
    }

    /// An object's metadata and the material of its current version (audited
    /// `key.material.read`). Destroyed objects have no material to give.
    pub async fn object_material(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
    ) -> Result<(Key, Zeroizing<Vec<u8>>)> {
        self.audited(caller, instance_id, "key.material.read", id, async {
            let entry = self.cached_key(caller, instance_id, id).await?;
            let key = &entry.key;
            caller.authorize(Action::ReadKeyMaterial, instance_id, Some(&key.key_ring_id))?;
            crate::kms::check_key_ring(caller, key)?;
            crate::kmip_adapters::check_adapter_scope(caller, key)?;
            crate::service::check_exportable(key)?;
            let material = self
                .cached_material(&entry, &key.current_version_id)
                .await?;
            self.audit_read(caller, instance_id, "key.material.read", &key.id, json!({}))
                .await?;
            Ok((key.clone(), Zeroizing::new(material.to_vec())))
        })
        .await
    }

    /// Changes an object's non-secret attributes (Manager role), audited as `action`.
    pub async fn update_object(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        action: &str,
        edit: impl FnOnce(&mut Key) -> Result<()>,
    ) -> Result<Key> {
        self.audited(caller, instance_id, action, id, async {
            let mut key = self
                .key_for(caller, instance_id, id, Action::ManageKey)
                .await?;
            edit(&mut key)?;
            self.save_key(caller, &mut key, action, json!({})).await?;
            Ok(key)
        })
        .await
    }

    /// KMIP Locate's walk: every object of the instance the caller may list (its KMIP adapter's
    /// objects alone, for an adapter's client), in creation order, read a page at a time so
    /// that neither memory nor the answer depends on how many there are. Returns how many
    /// `keep` accepts, and the ids of those from the `offset`-th on, at most `max`. Audited as
    /// `key.list`.
    pub async fn locate_objects(
        &self,
        caller: &Caller,
        instance_id: &str,
        keep: impl Fn(&Key) -> bool,
        offset: usize,
        max: Option<usize>,
    ) -> Result<(usize, Vec<String>)> {
        self.audited(caller, instance_id, "key.list", instance_id, async {
            caller.authorize(Action::ListKeys, instance_id, None)?;
            self.unsealed(instance_id).await?;
            let mut filter = KeyQuery {
                states: KeyState::ALL.to_vec(),
                limit: Some(LOCATE_PAGE),
                ..KeyQuery::default()
            }
            .to_filter();
            filter.without_kmip_adapter_objects =
                crate::kmip_adapters::lists_without_adapter_objects(caller);
            let mut found = crate::kms_list::Window::new(offset, max.unwrap_or(usize::MAX));
            loop {
                let page = self.store().list_keys(instance_id, &filter).await?;
                let full = page.len() as u64 == LOCATE_PAGE;
                filter.after = page.last().map(|r| keyfort_store::KeyCursor {
                    created_at: r.created_at,
                    id: r.id.clone(),
                });
                for record in page {
                    let key = Key::from_record(record)?;
                    if crate::kmip_adapters::in_adapter_scope(caller, &key) && keep(&key) {
                        found.offer(key.id);
                    }
                }
                if !full {
                    break;
                }
            }
            self.audit_read(
                caller,
                instance_id,
                "key.list",
                instance_id,
                json!({"returned": found.items.len(), "total": found.total}),
            )
            .await?;
            Ok((found.total, found.items))
        })
        .await
    }

    /// Replaces a symmetric key with a new object of the same kind and attributes (KMIP
    /// Re-key): the new object is active; the old one keeps its state. Returns the new key.
    pub async fn rekey_object(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        attributes: impl FnOnce(&Key) -> Map<String, Value>,
    ) -> Result<Key> {
        let old = self
            .audited(caller, instance_id, "key.rekey", id, async {
                let key = self
                    .key_for(caller, instance_id, id, Action::RotateKey)
                    .await?;
                if key.object_type != ObjectType::SymmetricKey.as_str() {
                    return Err(CoreError::InvalidField {
                        field: "object type",
                        rule: "only symmetric keys are re-keyed",
                    });
                }
                if key.state.is_destroyed() {
                    return Err(CoreError::KeyNotUsable {
                        id: key.id,
                        state: key.state,
                        usage: Usage::Rotate,
                    });
                }
                Ok(key)
            })
            .await?;
        let new = self
            .create_object(
                caller,
                instance_id,
                NewObject {
                    object_type: ObjectType::SymmetricKey,
                    algorithm: old.algorithm.clone(),
                    bit_length: old.bit_length,
                    name: None,
                    attributes: attributes(&old),
                    material: None,
                    initial_state: KeyState::Active,
                    id: None,
                },
            )
            .await?;
        Ok(new)
    }

    /// Encrypts with an active symmetric key or public key (role with `UseKey`); `cipher`
    /// chooses the cipher for the key once it is loaded (a refusal aborts with its error).
    #[allow(clippy::too_many_arguments)]
    pub async fn object_encrypt(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        cipher: impl FnOnce(&Key) -> Result<Cipher>,
        iv: Option<&[u8]>,
        aad: &[u8],
        data: &[u8],
    ) -> Result<Encrypted> {
        self.audited(caller, instance_id, "key.encrypt", id, async {
            let (key, material) = self.usable(caller, instance_id, id, Usage::Protect).await?;
            let out = encrypt(&key, &material, cipher(&key)?, iv, aad, data)?;
            self.audit_read(caller, instance_id, "key.encrypt", &key.id, json!({}))
                .await?;
            Ok(out)
        })
        .await
    }

    /// Decrypts with a symmetric key or private key (active, deactivated or compromised).
    #[allow(clippy::too_many_arguments)]
    pub async fn object_decrypt(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        cipher: impl FnOnce(&Key) -> Result<Cipher>,
        iv: Option<&[u8]>,
        aad: &[u8],
        tag: Option<&[u8]>,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.audited(caller, instance_id, "key.decrypt", id, async {
            let (key, material) = self.usable(caller, instance_id, id, Usage::Process).await?;
            let out = decrypt(&key, &material, cipher(&key)?, iv, aad, tag, data)?;
            self.audit_read(caller, instance_id, "key.decrypt", &key.id, json!({}))
                .await?;
            Ok(out)
        })
        .await
    }

    /// Signs with an active private key.
    pub async fn object_sign(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        scheme: impl FnOnce(&Key) -> Result<SignatureScheme>,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.audited(caller, instance_id, "key.sign", id, async {
            let (key, material) = self.usable(caller, instance_id, id, Usage::Protect).await?;
            let scheme = scheme(&key)?;
            if key.object_type != ObjectType::PrivateKey.as_str() {
                return Err(wrong_type("signing needs a private key"));
            }
            let signature =
                match (scheme, key.algorithm.as_str()) {
                    (SignatureScheme::Rsa(s), "RSA") => {
                        keyfort_crypto::rsa::PrivateKey::from_pkcs8(&material)?.sign(s, data)?
                    }
                    (SignatureScheme::Ecdsa(h), "EC") => {
                        let curve = curve_of(&key)?;
                        keyfort_crypto::ec::SigningKey::from_pkcs8(curve.crypto(), &material)?
                            .sign(h, keyfort_crypto::ec::SignatureFormat::Der, data)?
                    }
                    _ => return Err(wrong_type("the scheme does not fit the key's algorithm")),
                };
            self.audit_read(caller, instance_id, "key.sign", &key.id, json!({}))
                .await?;
            Ok(signature)
        })
        .await
    }

    /// Verifies a signature with a public key (or the public half of a private key). `Ok(false)`
    /// when the signature does not verify.
    pub async fn object_verify(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        scheme: impl FnOnce(&Key) -> Result<SignatureScheme>,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        self.audited(caller, instance_id, "key.verify", id, async {
            let (key, material) = self.usable(caller, instance_id, id, Usage::Process).await?;
            let verified = verify(&key, &material, scheme(&key)?, data, signature)?;
            self.audit_read(
                caller,
                instance_id,
                "key.verify",
                &key.id,
                json!({"valid": verified}),
            )
            .await?;
            Ok(verified)
        })
        .await
    }

    /// Computes an HMAC with an active HMAC key (or an AES key used as HMAC key material).
    pub async fn object_mac(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        algorithm: impl FnOnce(&Key) -> Result<keyfort_crypto::hmac::Algorithm>,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        self.audited(caller, instance_id, "key.mac", id, async {
            let (key, material) = self.usable(caller, instance_id, id, Usage::Protect).await?;
            let algorithm = algorithm(&key)?;
            if key.object_type != ObjectType::SymmetricKey.as_str() {
                return Err(wrong_type("a MAC needs a symmetric key"));
            }
            let mac = keyfort_crypto::hmac::sign(algorithm, &material, data);
            self.audit_read(caller, instance_id, "key.mac", &key.id, json!({}))
                .await?;
            Ok(mac)
        })
        .await
    }

    /// Verifies an HMAC; `Ok(false)` when it does not match.
    pub async fn object_mac_verify(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        algorithm: impl FnOnce(&Key) -> Result<keyfort_crypto::hmac::Algorithm>,
        data: &[u8],
        mac: &[u8],
    ) -> Result<bool> {
        self.audited(caller, instance_id, "key.mac_verify", id, async {
            let (key, material) = self.usable(caller, instance_id, id, Usage::Process).await?;
            let algorithm = algorithm(&key)?;
            if key.object_type != ObjectType::SymmetricKey.as_str() {
                return Err(wrong_type("a MAC needs a symmetric key"));
            }
            let valid = keyfort_crypto::hmac::verify(algorithm, &material, data, mac).is_ok();
            self.audit_read(
                caller,
                instance_id,
                "key.mac_verify",
                &key.id,
                json!({"valid": valid}),
            )
            .await?;
            Ok(valid)
        })
        .await
    }

    /// Wraps key material with an active AES key (RFC 3394 AES Key Wrap when the data is a
    /// multiple of 8 bytes of at least 16, RFC 5649 with padding otherwise or when `padded`).
    pub async fn object_wrap(
        &self,
        caller: &Caller,
        instance_id: &str,
        wrapping_key_id: &str,
        data: &[u8],
        padded: bool,
    ) -> Result<Vec<u8>> {
        self.audited(caller, instance_id, "key.wrap", wrapping_key_id, async {
            let (key, material) = self
                .usable(caller, instance_id, wrapping_key_id, Usage::Protect)
                .await?;
            if key.object_type != ObjectType::SymmetricKey.as_str() || key.algorithm != "AES" {
                return Err(wrong_type("wrapping needs an AES key"));
            }
            let wrapped = if padded || !data.len().is_multiple_of(8) || data.len() < 16 {
                keyfort_crypto::aes::key_wrap_pad(&material, data)?
            } else {
                keyfort_crypto::aes::key_wrap(&material, data)?
            };
            self.audit_read(caller, instance_id, "key.wrap", &key.id, json!({}))
                .await?;
            Ok(wrapped)
        })
        .await
    }

    /// Random bytes from the server's CSPRNG (KMIP RNG Retrieve); at most 64 KiB.
    pub fn random_bytes(&self, len: usize) -> Result<Zeroizing<Vec<u8>>> {
        if len == 0 || len > MAX_OBJECT_LEN {
            return Err(CoreError::InvalidField {
                field: "data length",
                rule: "must be 1 to 65536 bytes",
            });
        }
        Ok(keyfort_crypto::rng::random_bytes(len)?)
    }

    /// A key the caller may use now, and its current material.
    async fn usable(
        &self,
        caller: &Caller,
        instance_id: &str,
        id: &str,
        usage: Usage,
    ) -> Result<(Key, Arc<Zeroizing<Vec<u8>>>)> {
        let entry = self.cached_key(caller, instance_id, id).await?;
        let key = &entry.key;
        caller.authorize(Action::UseKey, instance_id, Some(&key.key_ring_id))?;
        crate::kms::check_key_ring(caller, key)?;
        crate::kmip_adapters::check_adapter_scope(caller, key)?;
        key.require_usage(usage, self.now_ms())?;
        let material = self
            .cached_material(&entry, &key.current_version_id)
            .await?;
        Ok((key.clone(), material))
    }
}

fn wrong_type(rule: &'static str) -> CoreError {
    CoreError::InvalidField { field: "key", rule }
}

fn curve_of(key: &Key) -> Result<EcCurve> {
    EcCurve::from_bits(key.bit_length).ok_or_else(|| wrong_type("unsupported curve"))
}

fn check_symmetric(algorithm: &str, bits: u32) -> Result<()> {
    let ok = match algorithm {
        "AES" => matches!(bits, 128 | 192 | 256),
        a if a.starts_with("HMAC-") => (128..=4096).contains(&bits) && bits.is_multiple_of(8),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(CoreError::InvalidField {
            field: "cryptographic length",
            rule: "AES keys are 128, 192 or 256 bits; HMAC keys 128 to 4096 bits",
        })
    }
}

/// Checks registered material: its size, and that keys parse.
fn check_material(object_type: ObjectType, algorithm: &str, bits: u32, m: &[u8]) -> Result<()> {
    let invalid = |rule| {
        Err(CoreError::InvalidField {
            field: "key material",
            rule,
        })
    };
    if m.is_empty() || m.len() > MAX_OBJECT_LEN {
        return invalid("must be 1 to 65536 bytes");
    }
    match (object_type, algorithm) {
        (ObjectType::SymmetricKey, "AES") if ![16, 24, 32].contains(&m.len()) => {
            invalid("AES keys are 16, 24 or 32 bytes")
        }
        (ObjectType::SymmetricKey, _) if m.len() * 8 != bits as usize => {
            invalid("the material's length must match the cryptographic length")
        }
        (ObjectType::PrivateKey, "RSA") => keyfort_crypto::rsa::PrivateKey::from_pkcs8(m)
            .map(|_| ())
            .map_err(CoreError::from),
        (ObjectType::PublicKey, "RSA") => keyfort_crypto::rsa::PublicKey::from_der(m)
            .map(|_| ())
            .map_err(CoreError::from),
        (ObjectType::PrivateKey, "EC") => {
            let curve = EcCurve::from_bits(bits).ok_or_else(|| wrong_type("unsupported curve"))?;
            keyfort_crypto::ec::SigningKey::from_pkcs8(curve.crypto(), m)
                .map(|_| ())
                .map_err(CoreError::from)
        }
        // A point (SEC 1, compressed or not) on the key's curve; with no known curve, the key is
        // refused when used.
        (ObjectType::PublicKey, "EC") => match EcCurve::from_bits(bits) {
            Some(curve) => keyfort_crypto::components::ec_public_point(curve.crypto(), m)
                .map(|_| ())
                .or_else(|_| invalid("must be a point on the key's curve")),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The supported curve an EC public key (a SEC 1 point, compressed or not) lies on, told by its
/// length and checked on that curve.
fn curve_of_point(point: &[u8]) -> Option<EcCurve> {
    let curve = match point.len() {
        33 | 65 => EcCurve::P256,
        49 | 97 => EcCurve::P384,
        67 | 133 => EcCurve::P521,
        _ => return None,
    };
    keyfort_crypto::components::ec_public_point(curve.crypto(), point)
        .ok()
        .map(|_| curve)
}

/// Generates a key pair: `(algorithm, bits, PKCS #8 private, public)`.
#[allow(clippy::type_complexity)]
fn generate_pair(
    algorithm: KeyPairAlgorithm,
) -> Result<(&'static str, u32, Zeroizing<Vec<u8>>, Vec<u8>)> {
    match algorithm {
        KeyPairAlgorithm::Rsa(bits) => {
            let size = keyfort_crypto::rsa::KeySize::from_bits(bits as usize).ok_or(
                CoreError::InvalidField {
                    field: "cryptographic length",
                    rule: "RSA keys are 2048, 3072 or 4096 bits",
                },
            )?;
            let key = keyfort_crypto::rsa::PrivateKey::generate(size)?;
            let public = key.public_key().to_spki_der().to_vec();
            Ok(("RSA", bits, key.to_pkcs8(), public))
        }
        KeyPairAlgorithm::Ec(curve) => {
            let key = keyfort_crypto::ec::SigningKey::generate(curve.crypto())?;
            let public = key.public_key().to_vec();
            Ok(("EC", curve.bits(), key.to_pkcs8(), public))
        }
    }
}

fn encrypt(
    key: &Key,
    material: &[u8],
    cipher: Cipher,
    iv: Option<&[u8]>,
    aad: &[u8],
    data: &[u8],
) -> Result<Encrypted> {
    use keyfort_crypto::aes;
    let symmetric = key.object_type == ObjectType::SymmetricKey.as_str() && key.algorithm == "AES";
    let fresh_iv = |len: usize| -> Result<(Vec<u8>, bool)> {
        match iv {
            Some(iv) => Ok((iv.to_vec(), false)),
            None => Ok((keyfort_crypto::rng::random_bytes(len)?.to_vec(), true)),
        }
    };
    let plain = |data: Vec<u8>| Encrypted {
        data,
        generated_iv: None,
        tag: None,
    };
    match cipher {
        Cipher::RsaOaep(hash) => {
            let public = match key.object_type.as_str() {
                "public_key" if key.algorithm == "RSA" => {
                    keyfort_crypto::rsa::PublicKey::from_der(material)?
                }
                "private_key" if key.algorithm == "RSA" => {
                    keyfort_crypto::rsa::PrivateKey::from_pkcs8(material)?
                        .public_key()
                        .clone()
                }
                _ => return Err(wrong_type("RSA encryption needs an RSA key")),
            };
            Ok(plain(public.encrypt_oaep(hash, data, None)?))
        }
        _ if !symmetric => Err(wrong_type("this cipher needs an AES key")),
        Cipher::AesGcm => {
            let (iv, generated) = fresh_iv(aes::GCM_IV_LEN)?;
            let mut out = aes::gcm_encrypt(material, &iv, aad, data)?;
            let tag = out.split_off(out.len().saturating_sub(aes::GCM_TAG_LEN));
            Ok(Encrypted {
                data: out,
                generated_iv: generated.then_some(iv),
                tag: Some(tag),
            })
        }
        Cipher::AesCbcPad | Cipher::AesCbc | Cipher::AesCtr => {
            let (iv, generated) = fresh_iv(16)?;
            let data = match cipher {
                Cipher::AesCbcPad => aes::cbc_pad_encrypt(material, &iv, data)?,
                Cipher::AesCbc => aes::cbc_encrypt(material, &iv, data)?,
                _ => aes::ctr_apply(material, &iv, data)?.to_vec(),
            };
            Ok(Encrypted {
                data,
                generated_iv: generated.then_some(iv),
                tag: None,
            })
        }
        Cipher::AesEcb => Ok(plain(aes::ecb_encrypt(material, data)?)),
    }
}

fn decrypt(
    key: &Key,
    material: &[u8],
    cipher: Cipher,
    iv: Option<&[u8]>,
    aad: &[u8],
    tag: Option<&[u8]>,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    use keyfort_crypto::aes;
    let symmetric = key.object_type == ObjectType::SymmetricKey.as_str() && key.algorithm == "AES";
    let need_iv = || {
        iv.ok_or(CoreError::InvalidField {
            field: "IV",
            rule: "this cipher needs the IV used to encrypt",
        })
    };
    match cipher {
        Cipher::RsaOaep(hash) => {
            if key.object_type != ObjectType::PrivateKey.as_str() || key.algorithm != "RSA" {
                return Err(wrong_type("RSA decryption needs an RSA private key"));
            }
            Ok(keyfort_crypto::rsa::PrivateKey::from_pkcs8(material)?
                .decrypt_oaep(hash, data, None)?)
        }
        _ if !symmetric => Err(wrong_type("this cipher needs an AES key")),
        Cipher::AesGcm => {
            let tag = tag.ok_or(CoreError::InvalidField {
                field: "authenticated encryption tag",
                rule: "AES-GCM decryption needs the tag",
            })?;
            let mut joined = Vec::with_capacity(data.len() + tag.len());
            joined.extend_from_slice(data);
            joined.extend_from_slice(tag);
            Ok(aes::gcm_decrypt(material, need_iv()?, aad, &joined)?)
        }
        Cipher::AesCbcPad => Ok(aes::cbc_pad_decrypt(material, need_iv()?, data)?),
        Cipher::AesCbc => Ok(aes::cbc_decrypt(material, need_iv()?, data)?),
        Cipher::AesCtr => Ok(aes::ctr_apply(material, need_iv()?, data)?),
        Cipher::AesEcb => Ok(aes::ecb_decrypt(material, data)?),
    }
}

fn verify(
    key: &Key,
    material: &[u8],
    scheme: SignatureScheme,
    data: &[u8],
    signature: &[u8],
) -> Result<bool> {
    use keyfort_crypto::Error as E;
    let result = match (scheme, key.object_type.as_str(), key.algorithm.as_str()) {
        (SignatureScheme::Rsa(s), "public_key", "RSA") => {
            keyfort_crypto::rsa::PublicKey::from_der(material)?.verify(s, data, signature)
        }
        (SignatureScheme::Rsa(s), "private_key", "RSA") => {
            keyfort_crypto::rsa::PrivateKey::from_pkcs8(material)?
                .public_key()
                .verify(s, data, signature)
        }
        (SignatureScheme::Ecdsa(h), "public_key", "EC") => keyfort_crypto::ec::verify(
            curve_of(key)?.crypto(),
            material,
            h,
            keyfort_crypto::ec::SignatureFormat::Der,
            data,
            signature,
        ),
        (SignatureScheme::Ecdsa(h), "private_key", "EC") => {
            let signing =
                keyfort_crypto::ec::SigningKey::from_pkcs8(curve_of(key)?.crypto(), material)?;
            keyfort_crypto::ec::verify(
                signing.curve(),
                signing.public_key(),
                h,
                keyfort_crypto::ec::SignatureFormat::Der,
                data,
                signature,
            )
        }
        _ => return Err(wrong_type("the scheme does not fit the key")),
    };
    match result {
        Ok(()) => Ok(true),
        Err(E::VerifyFailed | E::InvalidInput { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_ec_public_keys_must_be_points_on_their_curve() {
        let key =
            keyfort_crypto::ec::SigningKey::generate(keyfort_crypto::ec::Curve::P256).expect("key");
        let point = key.public_key().to_vec();
        let check = |m: &[u8], bits| check_material(ObjectType::PublicKey, "EC", bits, m);
        assert!(check(&point, 256).is_ok());
        let mut off = point.clone();
        off[64] ^= 1;
        assert!(matches!(
            check(&off, 256),
            Err(CoreError::InvalidField {
                field: "key material",
                ..
            })
        ));
        assert!(check(&point, 384).is_err(), "a P-256 point named as P-384");
    }

    #[test]
    fn an_ec_point_names_its_curve_by_its_length() {
        for (curve, ours) in [
            (keyfort_crypto::ec::Curve::P256, EcCurve::P256),
            (keyfort_crypto::ec::Curve::P384, EcCurve::P384),
            (keyfort_crypto::ec::Curve::P521, EcCurve::P521),
        ] {
            let key = keyfort_crypto::ec::SigningKey::generate(curve).expect("key");
            let point = key.public_key().to_vec();
            assert_eq!(curve_of_point(&point), Some(ours));
            let mut off = point.clone();
            if let Some(last) = off.last_mut() {
                *last ^= 1;
            }
            assert_eq!(curve_of_point(&off), None, "not on the curve");
        }
        assert_eq!(curve_of_point(&[4; 64]), None);
        assert_eq!(curve_of_point(&[]), None);
    }

    #[test]
    fn object_types_round_trip() {
        for t in [
            ObjectType::SymmetricKey,
            ObjectType::PublicKey,
            ObjectType::PrivateKey,
            ObjectType::Certificate,
            ObjectType::SecretData,
            ObjectType::OpaqueObject,
        ] {
            assert_eq!(ObjectType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ObjectType::parse("split_key"), None);
    }

    #[test]
    fn registered_material_is_checked() {
        assert!(check_material(ObjectType::SymmetricKey, "AES", 128, &[0; 16]).is_ok());
        assert!(check_material(ObjectType::SymmetricKey, "AES", 128, &[0; 17]).is_err());
        assert!(check_material(ObjectType::PrivateKey, "RSA", 2048, b"not der").is_err());
        assert!(check_material(ObjectType::SecretData, "", 0, &[]).is_err());
        assert!(check_material(ObjectType::SecretData, "", 0, &[1; 96]).is_ok());
        assert!(check_symmetric("AES", 256).is_ok());
        assert!(check_symmetric("AES", 100).is_err());
        assert!(check_symmetric("DES", 64).is_err());
    }
}
