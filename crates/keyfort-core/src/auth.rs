//! Principals, roles, API keys and access tokens.
//!
//! - A **principal** is a user or service identity. Deployment-wide principals (administrators)
//!   have no instance; the others belong to one instance.
//! - Principals authenticate with **API keys**: random 256-bit secrets shown once at creation and
//!   stored only as their SHA-256 hash (the secret has full entropy, so a slow hash adds nothing).
//! - An API key is exchanged at the IAM-compatible token endpoint for a short-lived **access
//!   token**: a JWT (RFC 7519) signed with the deployment's Ed25519 key (`alg` `EdDSA`, RFC 8037),
//!   carrying `iat` and `exp`. Every door verifies the same token with [`crate::Keyfort::authenticate`].
//! - **Roles** are granted per instance or per key ring (Key Protect's Reader, ReaderPlus, Writer,
//!   Manager, KeyPurge and KmipAdapterManager), or deployment-wide (Administrator).
//!   Authorization is decided here, in [`Caller::authorize`], never in a door.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyfort_crypto::ed25519;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::Result;
use crate::error::{AuthFailure, CoreError};

/// Length of an API key's random part, in bytes.
const API_KEY_RANDOM_LEN: usize = 32;
/// Prefix of every Keyfort API key, so that leaked keys are recognisable by scanners.
const API_KEY_PREFIX: &str = "kf";
/// Largest token accepted for verification; anything longer is refused before parsing.
const MAX_TOKEN_LEN: usize = 4096;
/// Tolerated clock difference for `iat`, in seconds.
const CLOCK_SKEW_SECS: i64 = 60;
/// The token issuer.
const ISSUER: &str = "keyfort";

/// A role, as in Key Protect's IAM service roles (Manager ⊇ Writer ⊇ ReaderPlus ⊇ Reader;
/// KeyPurge and KmipAdapterManager stand alone) plus the deployment-wide Administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Reader,
    ReaderPlus,
    Writer,
    Manager,
    KeyPurge,
    /// Manages KMIP adapters, their client certificates and objects, and may list (not read or
    /// use) keys and key rings: enough to choose an adapter's root key.
    KmipAdapterManager,
    /// Deployment administrator: manages instances and principals and holds every service role.
    Administrator,
}

impl Role {
    /// The role's name as used in APIs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::ReaderPlus => "ReaderPlus",
            Role::Writer => "Writer",
            Role::Manager => "Manager",
            Role::KeyPurge => "KeyPurge",
            Role::KmipAdapterManager => "KmipAdapterManager",
            Role::Administrator => "Administrator",
        }
    }

    /// The role of a name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Role> {
        [
            Role::Reader,
            Role::ReaderPlus,
            Role::Writer,
            Role::Manager,
            Role::KeyPurge,
            Role::KmipAdapterManager,
            Role::Administrator,
        ]
        .into_iter()
        .find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// Whether this role allows `action` (Key Protect's action table, `specs/keyprotect-api.md` §13).
    pub fn permits(self, action: Action) -> bool {
        use Action as A;
        match self {
            Role::Administrator => true,
            Role::KeyPurge => action == A::PurgeKey,
            Role::KmipAdapterManager => matches!(
                action,
                A::ListKeys | A::ReadKmipAdapters | A::ManageKmipAdapters
            ),
            Role::Manager => action != A::PurgeKey && action != A::ManageInstances,
            Role::Writer => matches!(
                action,
                A::ReadKey
                    | A::ListKeys
                    | A::UseKey
                    | A::ReadKeyMaterial
                    | A::CreateKey
                    | A::RotateKey
                    | A::ApproveDeletion
                    | A::CreateKeyRing
            ),
            Role::ReaderPlus => {
                matches!(
                    action,
                    A::ReadKey | A::ListKeys | A::UseKey | A::ReadKeyMaterial
                )
            }
            Role::Reader => matches!(action, A::ReadKey | A::ListKeys | A::UseKey),
        }
    }
}

/// Something a caller wants to do, checked against its roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Read key metadata, versions, registrations.
    ReadKey,
    /// List keys and key rings, count keys.
    ListKeys,
    /// Wrap, unwrap, rewrap, encrypt, decrypt, sign, verify.
    UseKey,
    /// Read the material of an extractable (standard) key.
    ReadKeyMaterial,
    /// Create or import keys.
    CreateKey,
    /// Rotate keys.
    RotateKey,
    /// First approval of a dual-authorized deletion.
    ApproveDeletion,
    /// Enable, disable, delete, restore, move, set policies.
    ManageKey,
    /// Purge a deleted key.
    PurgeKey,
    /// Create key rings.
    CreateKeyRing,
    /// Create instances and principals, change unseal configuration.
    ManageInstances,
    /// List and read KMIP adapters, their client certificates and objects
    /// (`kms.kmip-management.list`, `.read`).
    ReadKmipAdapters,
    /// Create and delete KMIP adapters and client certificates, delete KMIP objects
    /// (`kms.kmip-management.create`, `.delete`).
    ManageKmipAdapters,
}

impl Action {
    /// A short verb for messages ("create keys").
    pub fn describe(self) -> &'static str {
        match self {
            Action::ReadKey => "read keys",
            Action::ListKeys => "list keys",
            Action::UseKey => "use keys",
            Action::ReadKeyMaterial => "read key material",
            Action::CreateKey => "create keys",
            Action::RotateKey => "rotate keys",
            Action::ApproveDeletion => "approve key deletion",
            Action::ManageKey => "manage keys",
            Action::PurgeKey => "purge keys",
            Action::CreateKeyRing => "create key rings",
            Action::ManageInstances => "manage instances",
            Action::ReadKmipAdapters => "read KMIP adapters",
            Action::ManageKmipAdapters => "manage KMIP adapters",
        }
    }
}

/// Where a role applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every instance of the deployment.
    Deployment,
    /// One instance.
    Instance(String),
    /// One key ring of one instance.
    KeyRing { instance: String, ring: String },
}

/// One role granted at one scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleGrant {
    pub role: Role,
    pub scope: Scope,
}

impl RoleGrant {
    fn covers(&self, instance: &str, key_ring: Option<&str>) -> bool {
        match &self.scope {
            Scope::Deployment => true,
            Scope::Instance(i) => i == instance,
            Scope::KeyRing { instance: i, ring } => {
                i == instance && key_ring == Some(ring.as_str())
            }
        }
    }

    /// The grants as stored (JSON array).
    pub(crate) fn encode_all(grants: &[RoleGrant]) -> String {
        let items: Vec<Value> = grants
            .iter()
            .map(|g| match &g.scope {
                Scope::Deployment => json!({"role": g.role.name()}),
                Scope::Instance(i) => json!({"role": g.role.name(), "instance": i}),
                Scope::KeyRing { instance, ring } => {
                    json!({"role": g.role.name(), "instance": instance, "key_ring": ring})
                }
            })
            .collect();
        Value::Array(items).to_string()
    }

    /// Parses stored grants; `None` if the JSON is not what [`RoleGrant::encode_all`] writes.
    pub(crate) fn decode_all(text: &str) -> Option<Vec<RoleGrant>> {
        let value: Value = serde_json::from_str(text).ok()?;
        value
            .as_array()?
            .iter()
            .map(|item| {
                let role = Role::from_name(item.get("role")?.as_str()?)?;
                let instance = item.get("instance").and_then(Value::as_str);
                let ring = item.get("key_ring").and_then(Value::as_str);
                let scope = match (instance, ring) {
                    (None, None) => Scope::Deployment,
                    (Some(i), None) => Scope::Instance(i.to_owned()),
                    (Some(i), Some(r)) => Scope::KeyRing {
                        instance: i.to_owned(),
                        ring: r.to_owned(),
                    },
                    (None, Some(_)) => return None,
                };
                Some(RoleGrant { role, scope })
            })
            .collect()
    }
}

/// Whether a principal is a person or a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    User,
    Service,
}

impl PrincipalKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Service => "service",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<PrincipalKind> {
        match s {
            "user" => Some(PrincipalKind::User),
            "service" => Some(PrincipalKind::Service),
            _ => None,
        }
    }
}

/// A user or service identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    /// `None` for deployment-wide principals.
    pub instance_id: Option<String>,
    pub name: String,
    pub kind: PrincipalKind,
    pub roles: Vec<RoleGrant>,
    pub disabled: bool,
    pub created_at: i64,
}

/// An authenticated caller of a core operation.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The API key the caller's token was issued for.
    pub api_key_id: Option<String>,
    /// Where this request came from, for the audit trail.
    pub request: RequestInfo,
}

/// Per-request facts recorded in audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// The client's correlation id, or one the door generated.
    pub correlation_id: Option<String>,
    /// The peer address.
    pub source: Option<String>,
    /// The key ring the request is scoped to (Key Protect's `X-Kms-Key-Ring`): a key outside
    /// it answers as not found.
    pub key_ring: Option<String>,
    /// The request came over the KMIP protocol. Only there do the objects of KMIP adapters
    /// exist (for an adapter's client, only its adapter's: `kmip_adapters::in_adapter_scope`);
    /// to every other caller they are not keys: not listed, counted or found.
    pub kmip: bool,
}

impl Caller {
    /// This caller, for one request.
    pub fn for_request(&self, correlation_id: Option<String>, source: Option<String>) -> Caller {
        Caller {
            request: RequestInfo {
                correlation_id,
                source,
                key_ring: None,
                kmip: false,
            },
            ..self.clone()
        }
    }

    /// This caller with its key lookups restricted to `key_ring` (when given).
    pub fn in_key_ring(mut self, key_ring: Option<String>) -> Caller {
        self.request.key_ring = key_ring;
        self
    }

    /// The identity recorded as creator or actor ("IBMid-…"-like: the principal's name).
    pub fn display_name(&self) -> &str {
        &self.principal.name
    }

    /// Whether the caller may do `action` in `instance` (and, for key-ring grants, in `key_ring`).
    pub fn may(&self, action: Action, instance: &str, key_ring: Option<&str>) -> bool {
        if self.principal.disabled {
            return false;
        }
        self.principal
            .roles
            .iter()
            .any(|g| g.role.permits(action) && g.covers(instance, key_ring))
    }

    /// [`Caller::may`] as a result.
    pub fn authorize(&self, action: Action, instance: &str, key_ring: Option<&str>) -> Result<()> {
        if self.may(action, instance, key_ring) {
            Ok(())
        } else {
            Err(CoreError::Forbidden {
                principal: self.principal.name.clone(),
                action: action.describe(),
            })
        }
    }

    /// Whether the caller is a deployment administrator.
    pub fn is_administrator(&self) -> bool {
        !self.principal.disabled
            && self
                .principal
                .roles
                .iter()
                .any(|g| g.role == Role::Administrator && g.scope == Scope::Deployment)
    }
}

/// An API key secret, shown once. Redacted in `Debug`, zeroized on drop.
pub struct ApiKeySecret(Zeroizing<String>);

impl ApiKeySecret {
    /// A fresh random API key.
    pub(crate) fn generate() -> Result<ApiKeySecret> {
        let random = keyfort_crypto::rng::random_bytes(API_KEY_RANDOM_LEN)?;
        let mut s = Zeroizing::new(String::with_capacity(API_KEY_PREFIX.len() + 43));
        s.push_str(API_KEY_PREFIX);
        URL_SAFE_NO_PAD.encode_string(random.as_slice(), &mut s);
        Ok(ApiKeySecret(s))
    }

    /// Wraps a secret presented by a caller.
    pub fn from_presented(secret: &str) -> ApiKeySecret {
        ApiKeySecret(Zeroizing::new(secret.to_owned()))
    }

    /// The secret itself, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The stored form: SHA-256 of the secret.
    pub(crate) fn hash(&self) -> [u8; 32] {
        keyfort_crypto::digest::sha256(self.0.as_bytes())
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

/// An access token as the token endpoint returns it.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The signed JWT.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Expiry as Unix seconds.
    pub expiration: i64,
    /// Issue time as Unix seconds.
    pub issued_at: i64,
}

/// The claims Keyfort puts in (and reads from) its access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    pub subject: String,
    pub api_key_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub token_id: String,
}

/// Signs and verifies access tokens with the deployment's Ed25519 key.
pub struct TokenSigner {
    key: ed25519::SigningKey,
    public: [u8; 32],
    kid: String,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer with a fresh key (tests, or deployments that accept tokens dying with the process).
    pub fn generate() -> Result<TokenSigner> {
        Ok(TokenSigner::from_key(ed25519::SigningKey::generate()?))
    }

    /// Loads the PKCS#8 key at `path`, or creates it (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<TokenSigner> {
        let io_err = |source| CoreError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(der) => {
                let der = Zeroizing::new(der);
                let key =
                    ed25519::SigningKey::from_pkcs8(&der).map_err(|_| CoreError::InvalidField {
                        field: "token signing key file",
                        rule: "must hold an Ed25519 PKCS#8 private key",
                    })?;
                Ok(TokenSigner::from_key(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ed25519::SigningKey::generate()?;
                let der = key.to_pkcs8()?;
                write_secret_file(path, &der).map_err(io_err)?;
                Ok(TokenSigner::from_key(key))
            }
            Err(e) => Err(io_err(e)),
        }
    }

    fn from_key(key: ed25519::SigningKey) -> TokenSigner {
        let public = key.public_key();
        let kid = hex::encode(&keyfort_crypto::digest::sha256(&public)[..8]);
        TokenSigner { key, public, kid }
    }

    /// The key id written in each token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub(crate) fn sign(&self, claims: &Claims) -> String {
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        let payload = json!({
            "iss": ISSUER,
            "sub": claims.subject,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.token_id,
            "akid": claims.api_key_id,
        });
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload.to_string(), &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        token
    }

    /// Checks a token's form, signature and times (`now` in Unix seconds). This is the decoder
    /// every door runs on untrusted bearer tokens; the fuzz target `token_verify` drives it.
    pub fn check(&self, token: &str, now: i64) -> std::result::Result<(), AuthFailure> {
        self.verify(token, now).map(drop)
    }

    /// Verifies a token's signature and times (`now` in Unix seconds) and returns its claims.
    pub(crate) fn verify(&self, token: &str, now: i64) -> std::result::Result<Claims, AuthFailure> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthFailure::Malformed);
        };
        let header: Value = decode_json_part(h)?;
        if header.get("alg").and_then(Value::as_str) != Some("EdDSA") {
            return Err(AuthFailure::Malformed);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthFailure::Malformed)?;
        let signed_len = h.len() + 1 + p.len();
        ed25519::verify(&self.public, &token.as_bytes()[..signed_len], &signature)
            .map_err(|_| AuthFailure::BadSignature)?;
        let payload: Value = decode_json_part(p)?;
        let text = |name: &str| {
            payload
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(AuthFailure::Malformed)
        };
        let number = |name: &str| {
            payload
                .get(name)
                .and_then(Value::as_i64)
                .ok_or(AuthFailure::Malformed)
        };
        if text("iss")? != ISSUER {
            return Err(AuthFailure::Malformed);
        }
        let claims = Claims {
            subject: text("sub")?,
            api_key_id: text("akid")?,
            issued_at: number("iat")?,
            expires_at: number("exp")?,
            token_id: text("jti")?,
        };
        if claims.expires_at <= now || claims.issued_at > now + CLOCK_SKEW_SECS {
            return Err(AuthFailure::Expired);
        }
        Ok(claims)
    }
}

fn decode_json_part(part: &str) -> std::result::Result<Value, AuthFailure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthFailure::Malformed)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| AuthFailure::Malformed)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(AuthFailure::Malformed)
    }
}

/// Writes a new secret file readable by its owner only; fails if it exists.
pub(crate) fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            subject: "p1".into(),
            api_key_id: "k1".into(),
            issued_at: now,
            expires_at: now + 3600,
            token_id: "t1".into(),
        }
    }

    #[test]
    fn token_round_trip() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.sign(&claims(1_000));
        assert_eq!(signer.verify(&token, 1_001), Ok(claims(1_000)));
    }

    #[test]
    fn expired_and_future_tokens_are_refused() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.sign(&claims(1_000));
        assert_eq!(signer.verify(&token, 4_600), Err(AuthFailure::Expired));
        assert_eq!(
            signer.verify(&token, 1_000 - CLOCK_SKEW_SECS - 1),
            Err(AuthFailure::Expired)
        );
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let signer = TokenSigner::generate().unwrap();
        let other = TokenSigner::generate().unwrap();
        let token = signer.sign(&claims(1_000));
        assert_eq!(other.verify(&token, 1_001), Err(AuthFailure::BadSignature));

        // Swap in a payload with a different subject, keeping the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged_claims = claims(1_000);
        forged_claims.subject = "admin".into();
        let forged_payload = signer.sign(&forged_claims);
        let forged_payload = forged_payload.split('.').nth(1).unwrap();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            signer.verify(&forged, 1_001),
            Err(AuthFailure::BadSignature)
        );

        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(
                signer.verify(bad, 1_001),
                Err(AuthFailure::Malformed),
                "{bad:.20}"
            );
        }
        // alg "none" with an empty signature.
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let none = format!("{}.{}.", none_header, parts[1]);
        assert_eq!(signer.verify(&none, 1_001), Err(AuthFailure::Malformed));
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.sign(&claims(1_000));
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'.', b'_', 0xFF] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut changed = bytes.to_vec();
                changed[i] = replacement;
                let Ok(text) = String::from_utf8(changed) else {
                    continue;
                };
                // Base64url's last character may carry unused bits; a change there can decode to
                // the same bytes, which is the same token.
                if signer.verify(&text, 1_001).is_ok() {
                    assert_eq!(
                        URL_SAFE_NO_PAD
                            .decode(text.rsplit('.').next().unwrap())
                            .ok(),
                        URL_SAFE_NO_PAD
                            .decode(token.rsplit('.').next().unwrap())
                            .ok(),
                        "changed token accepted at byte {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn signer_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        let a = TokenSigner::load_or_create(&path).unwrap();
        let b = TokenSigner::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            TokenSigner::load_or_create(&path),
            Err(CoreError::InvalidField { .. })
        ));
    }

    #[test]
    fn role_table() {
        use Action as A;
        assert!(Role::Reader.permits(A::UseKey));
        assert!(!Role::Reader.permits(A::ReadKeyMaterial));
        assert!(Role::ReaderPlus.permits(A::ReadKeyMaterial));
        assert!(!Role::ReaderPlus.permits(A::CreateKey));
        assert!(Role::Writer.permits(A::CreateKey));
        assert!(Role::Writer.permits(A::RotateKey));
        assert!(!Role::Writer.permits(A::ManageKey));
        assert!(Role::Manager.permits(A::ManageKey));
        assert!(!Role::Manager.permits(A::PurgeKey));
        assert!(Role::KeyPurge.permits(A::PurgeKey));
        assert!(!Role::KeyPurge.permits(A::ReadKey));
        assert!(Role::Administrator.permits(A::ManageInstances));
        assert!(!Role::Manager.permits(A::ManageInstances));
    }

    const ALL_ACTIONS: [Action; 13] = [
        Action::ReadKey,
        Action::ListKeys,
        Action::UseKey,
        Action::ReadKeyMaterial,
        Action::CreateKey,
        Action::RotateKey,
        Action::ApproveDeletion,
        Action::ManageKey,
        Action::PurgeKey,
        Action::CreateKeyRing,
        Action::ManageInstances,
        Action::ReadKmipAdapters,
        Action::ManageKmipAdapters,
    ];

    /// Key Protect's KMIP Management table: Manager and KmipAdapterManager only; the
    /// KmipAdapterManager also lists keys and key rings (and counts keys), and nothing else.
    #[test]
    fn kmip_adapter_manager_role() {
        use Action as A;
        for action in ALL_ACTIONS {
            assert_eq!(
                Role::KmipAdapterManager.permits(action),
                matches!(
                    action,
                    A::ListKeys | A::ReadKmipAdapters | A::ManageKmipAdapters
                ),
                "{action:?}"
            );
        }
        for kmip in [A::ReadKmipAdapters, A::ManageKmipAdapters] {
            for role in [Role::Reader, Role::ReaderPlus, Role::Writer, Role::KeyPurge] {
                assert!(!role.permits(kmip), "{role:?} {kmip:?}");
            }
            assert!(Role::Manager.permits(kmip));
            assert!(Role::Administrator.permits(kmip));
        }
        // Not in the additive chain: a Manager's rights are not implied, nor the reverse.
        assert!(!Role::KmipAdapterManager.permits(A::ReadKey));
        assert!(!Role::KmipAdapterManager.permits(A::UseKey));
        assert!(!Role::KmipAdapterManager.permits(A::PurgeKey));
        assert_eq!(
            Role::from_name("kmipadaptermanager"),
            Some(Role::KmipAdapterManager)
        );
        assert_eq!(Role::KmipAdapterManager.name(), "KmipAdapterManager");
    }

    #[test]
    fn kmip_adapter_manager_grants_round_trip_and_scope() {
        let grants = vec![
            RoleGrant {
                role: Role::KmipAdapterManager,
                scope: Scope::Instance("i1".into()),
            },
            RoleGrant {
                role: Role::KmipAdapterManager,
                scope: Scope::KeyRing {
                    instance: "i2".into(),
                    ring: "r".into(),
                },
            },
        ];
        let encoded = RoleGrant::encode_all(&grants);
        assert!(
            encoded.contains(r#""role":"KmipAdapterManager""#),
            "{encoded}"
        );
        assert_eq!(RoleGrant::decode_all(&encoded), Some(grants.clone()));
        let caller = Caller {
            principal: Principal {
                id: "p".into(),
                instance_id: Some("i1".into()),
                name: "kam".into(),
                kind: PrincipalKind::User,
                roles: grants,
                disabled: false,
                created_at: 0,
            },
            api_key_id: None,
            request: RequestInfo::default(),
        };
        assert!(
            caller
                .authorize(Action::ManageKmipAdapters, "i1", None)
                .is_ok()
        );
        assert!(
            caller
                .authorize(Action::ListKeys, "i1", Some("any"))
                .is_ok()
        );
        assert!(matches!(
            caller.authorize(Action::ReadKey, "i1", None),
            Err(CoreError::Forbidden { .. })
        ));
        assert!(caller.authorize(Action::ListKeys, "i2", Some("r")).is_ok());
        assert!(!caller.may(Action::ListKeys, "i2", Some("other")));
        assert!(!caller.may(Action::ReadKmipAdapters, "i3", None));
    }

    #[test]
    fn grants_are_scoped() {
        let caller = Caller {
            principal: Principal {
                id: "p".into(),
                instance_id: Some("i1".into()),
                name: "alice".into(),
                kind: PrincipalKind::User,
                roles: vec![
                    RoleGrant {
                        role: Role::Reader,
                        scope: Scope::Instance("i1".into()),
                    },
                    RoleGrant {
                        role: Role::Writer,
                        scope: Scope::KeyRing {
                            instance: "i1".into(),
                            ring: "r".into(),
                        },
                    },
                ],
                disabled: false,
                created_at: 0,
            },
            api_key_id: None,
            request: RequestInfo::default(),
        };
        assert!(caller.may(Action::UseKey, "i1", None));
        assert!(!caller.may(Action::UseKey, "i2", None));
        assert!(caller.may(Action::CreateKey, "i1", Some("r")));
        assert!(!caller.may(Action::CreateKey, "i1", Some("default")));
        assert!(!caller.may(Action::CreateKey, "i1", None));
        assert!(!caller.is_administrator());
        let encoded = RoleGrant::encode_all(&caller.principal.roles);
        assert_eq!(
            RoleGrant::decode_all(&encoded),
            Some(caller.principal.roles.clone())
        );
        assert_eq!(RoleGrant::decode_all("{"), None);
        assert_eq!(RoleGrant::decode_all(r#"[{"role":"Nope"}]"#), None);
    }
}
