//! [`Pkcs11Protector`]: master keys wrapped with `CKM_AES_GCM` under an AES-256 key that never
//! leaves a PKCS#11 token.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use keyfort_core::MasterKeyProtector;
use zeroize::Zeroizing;

use crate::blob::{self, IV_LEN, MASTER_KEY_LEN, TAG_BITS};
use crate::{HsmConfig, HsmError, module};

/// Protects instance master keys with an AES-256 key held on a PKCS#11 token.
///
/// One logged-in session per protector, guarded by a mutex: operations are serialized, which
/// is plenty for master keys (used at unseal and rotation only). A session the token dropped
/// (closed, logged out, device removed) is reopened once per operation.
pub struct Pkcs11Protector {
    ctx: Pkcs11,
    module: PathBuf,
    slot: Slot,
    token_label: String,
    key_label: String,
    pin: AuthPin,
    live: Mutex<Option<Live>>,
}

/// A logged-in session and the wrapping key's handle in it.
struct Live {
    session: Session,
    key: ObjectHandle,
}

/// Security-relevant attributes of the wrapping key, as the token reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProperties {
    /// `CKA_TOKEN`: the key persists on the token.
    pub token: bool,
    /// `CKA_SENSITIVE`: its value cannot be read in plaintext.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: it could be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: bool,
    /// `CKA_VALUE_LEN`, in bytes.
    pub value_len: u64,
}

impl Pkcs11Protector {
    /// Loads the module, finds the token by label, logs in as user and finds the wrapping key
    /// by label — generating it on the token (PKCS#11 v2.40 §5.14 `C_GenerateKey`,
    /// `CKM_AES_KEY_GEN`, 256 bits, sensitive, non-extractable) if it is missing and
    /// `create_key_if_missing` is set. Refuses a key that is extractable, not sensitive, or not
    /// 256 bits long.
    pub fn open(config: &HsmConfig) -> Result<Pkcs11Protector, HsmError> {
        let ctx = module::load(&config.module)?;
        let slot = find_slot(&ctx, config)?;
        let protector = Pkcs11Protector {
            ctx,
            module: config.module.clone(),
            slot,
            token_label: config.token_label.clone(),
            key_label: config.key_label.clone(),
            pin: AuthPin::new(config.pin.as_str().into()),
            live: Mutex::new(None),
        };
        let live = protector.connect(config.create_key_if_missing)?;
        let properties = read_properties(&live)
            .map_err(|source| protector.pkcs11_error("C_GetAttributeValue", source))?;
        protector.check_fit(&properties)?;
        *protector.lock() = Some(live);
        Ok(protector)
    }

    /// Reads the wrapping key's security attributes from the token.
    pub fn key_properties(&self) -> Result<KeyProperties, HsmError> {
        self.with_session(read_properties, |source| {
            self.pkcs11_error("C_GetAttributeValue", source)
        })
    }

    fn wrap_master_key(&self, instance_id: &str, master_key: &[u8]) -> Result<Vec<u8>, HsmError> {
        if master_key.len() != MASTER_KEY_LEN {
            return Err(HsmError::MasterKeyLength {
                expected: MASTER_KEY_LEN,
                actual: master_key.len(),
            });
        }
        let mut iv = [0u8; IV_LEN];
        keyfort_crypto::rng::fill(&mut iv).map_err(HsmError::Rng)?;
        let aad = blob::aad(instance_id);
        let (iv, sealed) = self.with_session(
            |live| {
                // A token may write back the IV it used; keep whatever it holds afterwards.
                let mut used_iv = iv;
                let params = GcmParams::new(&mut used_iv, &aad, Ulong::from(TAG_BITS))?;
                let sealed =
                    live.session
                        .encrypt(&Mechanism::AesGcm(params), live.key, master_key)?;
                Ok((used_iv, sealed))
            },
            |source| self.pkcs11_error("C_Encrypt (CKM_AES_GCM)", source),
        )?;
        blob::encode(&iv, &sealed)
    }

    fn unwrap_master_key(
        &self,
        instance_id: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let parsed = blob::parse(wrapped)?;
        let aad = blob::aad(instance_id);
        let master_key = self.with_session(
            |live| {
                let mut iv = parsed.iv;
                let params = GcmParams::new(&mut iv, &aad, Ulong::from(TAG_BITS))?;
                live.session
                    .decrypt(&Mechanism::AesGcm(params), live.key, parsed.sealed)
                    .map(Zeroizing::new)
            },
            |source| match source {
                // A GCM tag mismatch: the blob, the instance or the key is not the one used.
                // PKCS#11 says CKR_ENCRYPTED_DATA_INVALID; SoftHSM2 2.6 answers
                // CKR_GENERAL_ERROR from C_Decrypt (its OpenSSL final step fails).
                CkError::Pkcs11(
                    RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                    _,
                )
                | CkError::Pkcs11(RvError::GeneralError, Function::Decrypt) => HsmError::Rejected {
                    token: self.token_label.clone(),
                    instance: instance_id.to_owned(),
                    source,
                },
                source => self.pkcs11_error("C_Decrypt (CKM_AES_GCM)", source),
            },
        )?;
        if master_key.len() != MASTER_KEY_LEN {
            return Err(HsmError::UnexpectedOutput {
                operation: "C_Decrypt",
                expected: MASTER_KEY_LEN,
                actual: master_key.len(),
            });
        }
        Ok(master_key)
    }

    /// Runs `op` on the live session, opening one if needed and reopening it once if the token
    /// lost it. `on_error` maps the operation's own failures.
    fn with_session<T>(
        &self,
        op: impl Fn(&Live) -> cryptoki::error::Result<T>,
        on_error: impl FnOnce(CkError) -> HsmError,
    ) -> Result<T, HsmError> {
        let mut live = self.lock();
        if let Some(current) = live.as_ref() {
            match op(current) {
                Err(e) if session_lost(&e) => *live = None,
                result => return result.map_err(on_error),
            }
        }
        let current = live.insert(self.connect(false)?);
        op(current).map_err(on_error)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|poisoned| {
            // A panic mid-operation may have left the session in an operation: start afresh.
            let mut live = poisoned.into_inner();
            *live = None;
            live
        })
    }

    /// Opens a session, logs in and finds (or, with `create`, generates) the wrapping key.
    fn connect(&self, create: bool) -> Result<Live, HsmError> {
        let session = if create {
            self.ctx.open_rw_session(self.slot)
        } else {
            self.ctx.open_ro_session(self.slot)
        }
        .map_err(|source| self.pkcs11_error("C_OpenSession", source))?;
        match session.login(UserType::User, Some(&self.pin)) {
            // Login state is shared by all sessions of the process on a token.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(source) => {
                return Err(HsmError::Login {
                    token: self.token_label.clone(),
                    source,
                });
            }
        }
        let key = match self.find_key(&session)? {
            Some(key) => key,
            None if create => {
                self.generate_key(&session)?;
                self.find_key(&session)?
                    .ok_or_else(|| HsmError::KeyNotFound {
                        token: self.token_label.clone(),
                        key: self.key_label.clone(),
                    })?
            }
            None => {
                return Err(HsmError::KeyNotFound {
                    token: self.token_label.clone(),
                    key: self.key_label.clone(),
                });
            }
        };
        Ok(Live { session, key })
    }

    fn find_key(&self, session: &Session) -> Result<Option<ObjectHandle>, HsmError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
        ];
        let found = session
            .find_objects(&template)
            .map_err(|source| self.pkcs11_error("C_FindObjects", source))?;
        match found.as_slice() {
            [] => Ok(None),
            [key] => Ok(Some(*key)),
            keys => Err(HsmError::AmbiguousKey {
                token: self.token_label.clone(),
                key: self.key_label.clone(),
                count: keys.len(),
            }),
        }
    }

    fn generate_key(&self, session: &Session) -> Result<ObjectHandle, HsmError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
            Attribute::ValueLen(Ulong::from(MASTER_KEY_LEN as u64)),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ];
        session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|source| self.pkcs11_error("C_GenerateKey (CKM_AES_KEY_GEN)", source))
    }

    fn check_fit(&self, properties: &KeyProperties) -> Result<(), HsmError> {
        let reason = if properties.extractable {
            "it is extractable (CKA_EXTRACTABLE)"
        } else if !properties.sensitive {
            "it is not sensitive (CKA_SENSITIVE)"
        } else if properties.value_len != MASTER_KEY_LEN as u64 {
            "it is not a 256-bit AES key (CKA_VALUE_LEN)"
        } else {
            return Ok(());
        };
        Err(HsmError::UnfitKey {
            token: self.token_label.clone(),
            key: self.key_label.clone(),
            reason,
        })
    }

    fn pkcs11_error(&self, operation: &'static str, source: CkError) -> HsmError {
        HsmError::Pkcs11 {
            token: self.token_label.clone(),
            operation,
            source,
        }
    }
}

impl MasterKeyProtector for Pkcs11Protector {
    fn describe(&self) -> String {
        format!(
            "PKCS#11 token '{}' key '{}'",
            self.token_label, self.key_label
        )
    }

    fn wrap(&self, instance_id: &str, master_key: &[u8]) -> keyfort_core::Result<Vec<u8>> {
        Ok(self.wrap_master_key(instance_id, master_key)?)
    }

    fn unwrap(
        &self,
        instance_id: &str,
        wrapped: &[u8],
    ) -> keyfort_core::Result<Zeroizing<Vec<u8>>> {
        Ok(self.unwrap_master_key(instance_id, wrapped)?)
    }
}

impl fmt::Debug for Pkcs11Protector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Protector")
            .field("module", &self.module)
            .field("slot", &self.slot)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .field("pin", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The slot holding the one token labelled `config.token_label`.
fn find_slot(ctx: &Pkcs11, config: &HsmConfig) -> Result<Slot, HsmError> {
    let pkcs11_error = |operation, source| HsmError::Pkcs11 {
        token: config.token_label.clone(),
        operation,
        source,
    };
    let mut matching = Vec::new();
    for slot in ctx
        .get_slots_with_token()
        .map_err(|e| pkcs11_error("C_GetSlotList", e))?
    {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| pkcs11_error("C_GetTokenInfo", e))?;
        if info.label().trim_end() == config.token_label {
            matching.push(slot);
        }
    }
    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(HsmError::TokenNotFound {
            token: config.token_label.clone(),
            module: config.module.clone(),
        }),
        slots => Err(HsmError::AmbiguousToken {
            token: config.token_label.clone(),
            module: config.module.clone(),
            count: slots.len(),
        }),
    }
}

fn read_properties(live: &Live) -> cryptoki::error::Result<KeyProperties> {
    // Attributes the token does not report take their unsafe value, so `check_fit` refuses.
    let mut properties = KeyProperties {
        token: false,
        sensitive: false,
        extractable: true,
        always_sensitive: false,
        never_extractable: false,
        value_len: 0,
    };
    let wanted = [
        AttributeType::Token,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
        AttributeType::ValueLen,
    ];
    for attribute in live.session.get_attributes(live.key, &wanted)? {
        match attribute {
            Attribute::Token(v) => properties.token = v,
            Attribute::Sensitive(v) => properties.sensitive = v,
            Attribute::Extractable(v) => properties.extractable = v,
            Attribute::AlwaysSensitive(v) => properties.always_sensitive = v,
            Attribute::NeverExtractable(v) => properties.never_extractable = v,
            Attribute::ValueLen(v) => properties.value_len = *v,
            _ => {}
        }
    }
    Ok(properties)
}

/// Whether the token dropped the session, its login or the key handle, so reopening the
/// session and finding the key again may help. (SoftHSM2 answers an operation on a private key
/// after a logout with `CKR_OBJECT_HANDLE_INVALID`.)
fn session_lost(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid,
            _
        )
    )
}
