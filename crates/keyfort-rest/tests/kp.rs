//! The Key Protect v2 door over a real core and SQLite store: every `/api/v2` endpoint against
//! every role (`specs/keyprotect-api.md` §13), the error envelope and its reason codes (§12), the
//! deprecated `?action=` form, `HEAD /keys` with `Key-Total`, paging, and token refusals.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyfort_core::{
    Clock, CoreConfig, DevSetup, Keyfort, KmsTimings, PrincipalKind, Role, RoleGrant, Scope,
    SystemClock, TokenSigner,
};
use keyfort_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// A clock the tests move forward.
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Env {
    _dir: tempfile::TempDir,
    app: Router,
    core: Keyfort,
    instance: String,
    admin: String,
}

/// Waiting periods out of the way, so every state can be reached at once.
fn quick_timings() -> KmsTimings {
    KmsTimings {
        change_guard: Duration::ZERO,
        rotate_guard: Duration::ZERO,
        purge_after: Duration::ZERO,
        ..KmsTimings::default()
    }
}

async fn env_with(clock: Arc<dyn Clock>) -> Env {
    env_with_timings(clock, quick_timings()).await
}

async fn env_with_timings(clock: Arc<dyn Clock>, timings: KmsTimings) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keyfort.db"))
        .await
        .unwrap();
    let mut config = CoreConfig::new(Duration::from_secs(600), TokenSigner::generate().unwrap());
    config.kms_timings = timings;
    let core = Keyfort::open_with_clock(Arc::new(store), config, clock)
        .await
        .unwrap();
    let boot = core
        .dev_bootstrap(DevSetup {
            master_key_file: dir.path().join("dev-master.key"),
            previous_api_key: None,
        })
        .await
        .unwrap();
    let admin = core.exchange_api_key(&boot.api_key).await.unwrap().token;
    Env {
        _dir: dir,
        app: keyfort_rest::router(core.clone()),
        core,
        instance: boot.instance_id,
        admin,
    }
}

async fn env() -> Env {
    env_with(Arc::new(SystemClock)).await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body["resources"][0]["reasons"][0]["code"]
            .as_str()
            .unwrap_or("")
    }
}

impl Env {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        instance: Option<&str>,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(i) = instance {
            b = b.header("Bluemix-Instance", i);
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let request = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/vnd.ibm.kms.key+json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A KP call as `token` on this env's instance.
    async fn kp(&self, token: &str, method: &str, uri: &str, body: Option<&Value>) -> Answer {
        self.send(method, uri, Some(token), Some(&self.instance), body, &[])
            .await
    }

    async fn admin(&self, method: &str, uri: &str, body: Option<&Value>) -> Answer {
        let a = self.kp(&self.admin.clone(), method, uri, body).await;
        assert!(
            a.status.is_success(),
            "{method} {uri}: {} {}",
            a.status,
            a.body
        );
        a
    }

    /// A new root key (or standard key) made by the administrator; returns its id.
    async fn new_key(&self, extractable: bool, dual_auth: bool) -> String {
        let mut resource = json!({"type": "application/vnd.ibm.kms.key+json", "name": "k", "extractable": extractable});
        let uri = if dual_auth {
            resource["dualAuthDelete"] = json!({"enabled": true});
            "/api/v2/keys_with_policy_overrides"
        } else {
            "/api/v2/keys"
        };
        let a = self.admin("POST", uri, Some(&collection(resource))).await;
        a.body["resources"][0]["id"].as_str().unwrap().to_owned()
    }

    /// A new root key imported with [`IMPORTED`] material; returns its id.
    async fn new_imported_key(&self) -> String {
        let resource = json!({"type": "application/vnd.ibm.kms.key+json", "name": "imp", "extractable": false, "payload": IMPORTED});
        let a = self
            .admin("POST", "/api/v2/keys", Some(&collection(resource)))
            .await;
        a.body["resources"][0]["id"].as_str().unwrap().to_owned()
    }

    /// Audit events of this env's instance with `action` on `target`, oldest first.
    async fn events(&self, action: &str, target: &str) -> Vec<keyfort_core::AuditEvent> {
        let admin = self.core.authenticate(&self.admin).await.unwrap();
        self.core
            .audit_events(
                &admin,
                &self.instance,
                &keyfort_core::AuditQuery {
                    action: Some(action.to_owned()),
                    target: Some(target.to_owned()),
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    /// A token of a new user holding `role` on `instance`.
    async fn token_for(&self, name: &str, role: Role, instance: &str) -> String {
        self.token_of_kind(name, PrincipalKind::User, role, instance)
            .await
    }

    /// A token of a new principal of `kind` holding `role` on `instance`.
    async fn token_of_kind(
        &self,
        name: &str,
        kind: PrincipalKind,
        role: Role,
        instance: &str,
    ) -> String {
        let admin = self.core.authenticate(&self.admin).await.unwrap();
        let p = self
            .core
            .create_principal(
                &admin,
                Some(instance),
                name,
                kind,
                vec![RoleGrant {
                    role,
                    scope: Scope::Instance(instance.to_owned()),
                }],
            )
            .await
            .unwrap();
        let (_, secret) = self.core.create_api_key(&admin, &p.id, "k").await.unwrap();
        self.core
            .exchange_api_key(secret.expose())
            .await
            .unwrap()
            .token
    }
}

fn collection(resource: Value) -> Value {
    json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1}, "resources": [resource]})
}

fn assert_envelope(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(
        a.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.error+json"
    );
    assert_eq!(a.body["metadata"]["collectionTotal"], 1);
    let r = &a.body["resources"][0];
    assert_eq!(r["reasons"][0]["code"], code, "{}", a.body);
    assert_eq!(r["reasons"][0]["status"], status);
    let msg = r["errorMsg"].as_str().unwrap();
    assert!(msg.ends_with(&format!("({code})")), "{msg}");
    assert!(a.headers.contains_key("correlation-id"));
}

// ---- the role matrix ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Reader,
    ReaderPlus,
    Writer,
    Manager,
    KeyPurge,
    /// Key Protect's KmipAdapterManager on the instance.
    KmipAdapterManager,
    /// A Manager of another instance: no role in this one.
    Stranger,
    /// A service identity with Reader on the instance.
    Service,
}

const EVERYONE: [Who; 8] = [
    Who::Reader,
    Who::ReaderPlus,
    Who::Writer,
    Who::Manager,
    Who::KeyPurge,
    Who::KmipAdapterManager,
    Who::Stranger,
    Who::Service,
];
const READERS: &[Who] = &[
    Who::Reader,
    Who::ReaderPlus,
    Who::Writer,
    Who::Manager,
    Who::Service,
];
/// Who may list and count keys and list key rings: the readers and the KmipAdapterManager.
const LISTERS: &[Who] = &[
    Who::Reader,
    Who::ReaderPlus,
    Who::Writer,
    Who::Manager,
    Who::Service,
    Who::KmipAdapterManager,
];
const SERVICES: &[Who] = &[Who::Service];
const READER_PLUS: &[Who] = &[Who::ReaderPlus, Who::Writer, Who::Manager];
const WRITERS: &[Who] = &[Who::Writer, Who::Manager];
const MANAGERS: &[Who] = &[Who::Manager];
const PURGERS: &[Who] = &[Who::KeyPurge];
/// Key Protect's KMIP Management actions: Manager and KmipAdapterManager only.
const KMIP_MANAGERS: &[Who] = &[Who::Manager, Who::KmipAdapterManager];

/// What must exist before a call.
#[derive(Debug, Clone, Copy)]
enum Setup {
    Nothing,
    /// The shared root key ({key}) and a ciphertext of it ({ct}).
    SharedRoot,
    SharedStandard,
    FreshRoot,
    FreshDualAuth,
    Suspended,
    Deleted,
    WithAlias,
    WithRegistration,
    Ring,
    ImportToken,
    /// A fresh root key imported with [`IMPORTED`] material.
    FreshImported,
    /// A deleted root key imported with [`IMPORTED`] material.
    DeletedImported,
    /// A fresh KMIP adapter ({adapter}) on a fresh root key.
    Adapter,
    /// A fresh adapter with a client certificate ({cert}).
    AdapterCert,
    /// A fresh adapter with an active object ({object}) its client created.
    AdapterObject,
}

#[derive(Clone, Copy)]
struct Case {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    setup: Setup,
    allowed: &'static [Who],
    /// The status an allowed caller gets.
    success: u16,
    /// Sent with the request (`X-Kms-Key-Ring`).
    headers: &'static [(&'static str, &'static str)],
    /// Users with a role get 403 SERVICE_ONLY_ERR rather than 401.
    service_only: bool,
}

impl Case {
    const fn with_headers(mut self, headers: &'static [(&'static str, &'static str)]) -> Case {
        self.headers = headers;
        self
    }

    const fn service_only(mut self) -> Case {
        self.service_only = true;
        self
    }
}

const fn case(
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    setup: Setup,
    allowed: &'static [Who],
    success: u16,
) -> Case {
    Case {
        method,
        path,
        body,
        setup,
        allowed,
        success,
        headers: &[],
        service_only: false,
    }
}

/// The material of [`Setup::FreshImported`] keys: 32 bytes of 0x5A, base64.
const IMPORTED: &str = "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo=";
const ROTATE_PLAIN: &str = r#"{"payload":"QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI="}"#;
/// `{sealed}` becomes `payload`, `encryptionAlgorithm`, `encryptedNonce` and `iv` of material
/// sealed to the instance's import token.
const ROTATE_SEALED: &str = r#"{{sealed}}"#;
const RESTORE_PLAIN: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"payload":"WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo="}]}"#;
const RESTORE_SEALED: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{{sealed}}]}"#;
const EVENT_ACK: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.event_acknowledge+json","collectionTotal":1},"resources":[{"eventId":"{uniq}","adopterKeyState":"DEK_DELETED","timestamp":"2026-01-02T03:04:05Z"}]}"#;
const DEFAULT_RING: &[(&str, &str)] = &[("X-Kms-Key-Ring", "default")];

const NEW_KEY: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"m","extractable":false}]}"#;
const NEW_KEY_DUAL: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"m","dualAuthDelete":{"enabled":true}}]}"#;
const ROTATION_POLICY: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.policy+json","rotation":{"enabled":true,"interval_month":3}}]}"#;
const INSTANCE_POLICY: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.policy+json","collectionTotal":1},"resources":[{"policy_type":"metrics","policy_data":{"enabled":true}}]}"#;
const REGISTRATION: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.registration_input+json","collectionTotal":1},"resources":[{"description":"d","preventKeyDeletion":false}]}"#;
const UNWRAP: &str = r#"{"ciphertext":"{ct}"}"#;
const CRN: &str = "crn%3Av1%3Atest%3Apublic%3Acos%3Aus%3Aa%2F1%3Ab%3Abucket%3Ax";
const NEW_ADAPTER: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.kmip_adapter+json","collectionTotal":1},"resources":[{"profile":"native_1.0","profile_data":{"crk_id":"{key}"},"name":"{uniq}","description":"d"}]}"#;
const NEW_CERT: &str = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.kmip_client_certificate+json","collectionTotal":1},"resources":[{"certificate":"{pem}","name":"{uniq}"}]}"#;

/// A DER structure the certificate checks accept (SEQUENCE { SEQUENCE { INTEGER n } }), unique
/// per `n`, and its PEM text. Only its fingerprint matters to the core.
fn fake_certificate(n: u32) -> (Vec<u8>, String) {
    let mut der = vec![0x30, 0x08, 0x30, 0x06, 0x02, 0x04];
    der.extend_from_slice(&n.to_be_bytes());
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        STANDARD.encode(&der)
    );
    (der, pem)
}

impl Env {
    /// A new adapter on root key `crk`, made by the administrator; returns its id.
    async fn new_adapter(&self, crk: &str, name: &str) -> String {
        let body: Value =
            serde_json::from_str(&NEW_ADAPTER.replace("{key}", crk).replace("{uniq}", name))
                .unwrap();
        let a = self
            .admin("POST", "/api/v2/kmip_adapters", Some(&body))
            .await;
        a.body["resources"][0]["id"].as_str().unwrap().to_owned()
    }

    /// Registers fake certificate `n` to `adapter`; returns the certificate's id and DER.
    async fn new_adapter_cert(&self, adapter: &str, n: u32) -> (String, Vec<u8>) {
        let (der, pem) = fake_certificate(n);
        let body = json!({"metadata": {"collectionType": "application/vnd.ibm.kms.kmip_client_certificate+json", "collectionTotal": 1},
            "resources": [{"certificate": pem, "name": format!("c{n}")}]});
        let a = self
            .admin(
                "POST",
                &format!("/api/v2/kmip_adapters/{adapter}/certificates"),
                Some(&body),
            )
            .await;
        (
            a.body["resources"][0]["id"].as_str().unwrap().to_owned(),
            der,
        )
    }

    /// An active AES-256 object created as the KMIP client of certificate `der`; its id.
    async fn new_adapter_object(&self, der: &[u8]) -> String {
        let session = self.core.kmip_session(der, None).await.unwrap();
        let key = self
            .core
            .create_object(
                &session.caller,
                &session.instance_id,
                keyfort_core::objects::NewObject {
                    object_type: keyfort_core::objects::ObjectType::SymmetricKey,
                    algorithm: "AES".into(),
                    bit_length: 256,
                    name: None,
                    attributes: serde_json::Map::new(),
                    material: None,
                    initial_state: keyfort_core::KeyState::Active,
                    id: None,
                },
            )
            .await
            .unwrap();
        key.id
    }
}

fn cases() -> Vec<Case> {
    let mut all = base_cases();
    // Every key endpoint form again, naming the key's ring in `X-Kms-Key-Ring`.
    let scoped: Vec<Case> = all
        .iter()
        .filter(|c| c.path.contains("{key}") && c.headers.is_empty())
        .map(|c| c.with_headers(DEFAULT_RING))
        .collect();
    all.extend(scoped);
    all
}

fn base_cases() -> Vec<Case> {
    use Setup::*;
    vec![
        case("HEAD", "/api/v2/keys", None, Nothing, LISTERS, 200),
        case("GET", "/api/v2/keys?state=", None, Nothing, LISTERS, 200),
        case("POST", "/api/v2/keys", Some(NEW_KEY), Nothing, WRITERS, 201),
        case(
            "POST",
            "/api/v2/keys_with_policy_overrides",
            Some(NEW_KEY_DUAL),
            Nothing,
            WRITERS,
            201,
        ),
        case("GET", "/api/v2/keys/{key}", None, SharedRoot, READERS, 200),
        case(
            "GET",
            "/api/v2/keys/{key}",
            None,
            SharedStandard,
            READER_PLUS,
            200,
        ),
        case(
            "GET",
            "/api/v2/keys/{key}/metadata",
            None,
            SharedRoot,
            READERS,
            200,
        ),
        case(
            "GET",
            "/api/v2/keys/{key}/versions",
            None,
            SharedRoot,
            READERS,
            200,
        ),
        case(
            "PATCH",
            "/api/v2/keys/{key}",
            Some(r#"{"keyRingID":"default"}"#),
            FreshRoot,
            MANAGERS,
            200,
        ),
        case(
            "DELETE",
            "/api/v2/keys/{key}",
            None,
            FreshRoot,
            MANAGERS,
            204,
        ),
        case(
            "DELETE",
            "/api/v2/keys/{key}/purge",
            None,
            Deleted,
            PURGERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/restore",
            None,
            Deleted,
            MANAGERS,
            201,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/wrap",
            Some("{}"),
            SharedRoot,
            READERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/unwrap",
            Some(UNWRAP),
            SharedRoot,
            READERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/rewrap",
            Some(UNWRAP),
            SharedRoot,
            READERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/rotate",
            None,
            FreshRoot,
            WRITERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/setKeyForDeletion",
            None,
            FreshDualAuth,
            WRITERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/unsetKeyForDeletion",
            None,
            FreshDualAuth,
            WRITERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/enable",
            None,
            Suspended,
            MANAGERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/disable",
            None,
            FreshRoot,
            MANAGERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/sync",
            None,
            SharedRoot,
            WRITERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}?action=wrap",
            Some("{}"),
            SharedRoot,
            READERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}?action=disable",
            None,
            FreshRoot,
            MANAGERS,
            204,
        ),
        case(
            "GET",
            "/api/v2/keys/{key}/policies",
            None,
            SharedRoot,
            MANAGERS,
            200,
        ),
        case(
            "PUT",
            "/api/v2/keys/{key}/policies?policy=rotation",
            Some(ROTATION_POLICY),
            FreshRoot,
            MANAGERS,
            200,
        ),
        case(
            "GET",
            "/api/v2/instance/policies",
            None,
            Nothing,
            MANAGERS,
            200,
        ),
        case(
            "PUT",
            "/api/v2/instance/policies?policy=metrics",
            Some(INSTANCE_POLICY),
            Nothing,
            MANAGERS,
            204,
        ),
        case(
            "GET",
            "/api/v2/import_token",
            None,
            ImportToken,
            WRITERS,
            200,
        ),
        case(
            "GET",
            "/api/v2/keys/{key}/registrations",
            None,
            SharedRoot,
            READERS,
            200,
        ),
        case(
            "GET",
            "/api/v2/keys/registrations",
            None,
            Nothing,
            READERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/registrations/{crn}",
            Some(REGISTRATION),
            FreshRoot,
            MANAGERS,
            201,
        ),
        case(
            "DELETE",
            "/api/v2/keys/{key}/registrations/{crn}",
            None,
            WithRegistration,
            MANAGERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/aliases/{uniq}",
            None,
            FreshRoot,
            WRITERS,
            201,
        ),
        case(
            "DELETE",
            "/api/v2/keys/{key}/aliases/{uniq}",
            None,
            WithAlias,
            WRITERS,
            204,
        ),
        case(
            "GET",
            "/api/v2/key_rings?totalCount=true",
            None,
            Nothing,
            LISTERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/key_rings/{uniq}",
            None,
            Nothing,
            WRITERS,
            201,
        ),
        case(
            "DELETE",
            "/api/v2/key_rings/{ring}",
            None,
            Ring,
            MANAGERS,
            204,
        ),
        // Imported material: rotate with a payload, plain or sealed to the import token;
        // restore proving the material, plain or sealed.
        case(
            "POST",
            "/api/v2/keys/{key}/actions/rotate",
            Some(ROTATE_PLAIN),
            FreshImported,
            WRITERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/actions/rotate",
            Some(ROTATE_SEALED),
            FreshImported,
            WRITERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}?action=rotate",
            Some(ROTATE_PLAIN),
            FreshImported,
            WRITERS,
            204,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/restore",
            Some(RESTORE_PLAIN),
            DeletedImported,
            MANAGERS,
            201,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}/restore",
            Some(RESTORE_SEALED),
            DeletedImported,
            MANAGERS,
            201,
        ),
        case(
            "POST",
            "/api/v2/keys/{key}?action=restore",
            Some(RESTORE_PLAIN),
            DeletedImported,
            MANAGERS,
            201,
        ),
        // X-Kms-Key-Ring naming the key's ring.
        case("GET", "/api/v2/keys", None, Nothing, LISTERS, 200).with_headers(DEFAULT_RING),
        case(
            "GET",
            "/api/v2/keys/registrations",
            None,
            Nothing,
            READERS,
            200,
        )
        .with_headers(DEFAULT_RING),
        case("HEAD", "/api/v2/keys", None, Nothing, LISTERS, 200).with_headers(DEFAULT_RING),
        // Listing with every sort field, filters with operators, and search.
        case(
            "GET",
            "/api/v2/keys?sort=-state,extractable,-imported,creationDate,-lastUpdateDate,lastRotateDate,-deletionDate,expirationDate,id",
            None,
            Nothing,
            LISTERS,
            200,
        ),
        case(
            "GET",
            "/api/v2/keys?filter=creationDate%3Dgte%3A%222020-01-01T00%3A00%3A00Z%22%20lastRotateDate%3Dnone%20state%3D1%2C2",
            None,
            Nothing,
            LISTERS,
            200,
        ),
        case(
            "HEAD",
            "/api/v2/keys?filter=extractable%3Dfalse%20expirationDate%3Dnone",
            None,
            Nothing,
            LISTERS,
            200,
        ),
        case(
            "GET",
            "/api/v2/keys?search=not%3Aexact%3Aname%3Azz",
            None,
            Nothing,
            LISTERS,
            200,
        ),
        // Instance: the allowedIP port; service-to-service event acknowledgement.
        case(
            "GET",
            "/api/v2/instance/allowed_ip_port",
            None,
            Nothing,
            MANAGERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/event_ack",
            Some(EVENT_ACK),
            Nothing,
            SERVICES,
            204,
        )
        .service_only(),
        // KMIP adapters, their certificates and objects.
        case(
            "GET",
            "/api/v2/kmip_adapters?limit=5&offset=0&totalCount=true",
            None,
            Nothing,
            KMIP_MANAGERS,
            200,
        ),
        case(
            "GET",
            "/api/v2/kmip_adapters?crk_id={key}",
            None,
            SharedRoot,
            KMIP_MANAGERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/kmip_adapters",
            Some(NEW_ADAPTER),
            SharedRoot,
            KMIP_MANAGERS,
            201,
        ),
        case(
            "GET",
            "/api/v2/kmip_adapters/{adapter}",
            None,
            Adapter,
            KMIP_MANAGERS,
            200,
        ),
        case(
            "GET",
            "/api/v2/kmip_adapters/{uniq}",
            None,
            Adapter,
            KMIP_MANAGERS,
            200,
        ),
        case(
            "DELETE",
            "/api/v2/kmip_adapters/{adapter}",
            None,
            Adapter,
            KMIP_MANAGERS,
            204,
        ),
        case(
            "GET",
            "/api/v2/kmip_adapters/{adapter}/kmip_objects?state=1,2,3,4,5&totalCount=true",
            None,
            AdapterObject,
            KMIP_MANAGERS,
            200,
        ),
        case(
            "GET",
            "/api/v2/kmip_adapters/{adapter}/kmip_objects/{object}",
            None,
            AdapterObject,
            KMIP_MANAGERS,
            200,
        ),
        case(
            "DELETE",
            "/api/v2/kmip_adapters/{adapter}/kmip_objects/{object}?force=true",
            None,
            AdapterObject,
            KMIP_MANAGERS,
            204,
        ),
        case(
            "GET",
            "/api/v2/kmip_adapters/{adapter}/certificates?totalCount=true",
            None,
            AdapterCert,
            KMIP_MANAGERS,
            200,
        ),
        case(
            "POST",
            "/api/v2/kmip_adapters/{adapter}/certificates",
            Some(NEW_CERT),
            Adapter,
            KMIP_MANAGERS,
            201,
        ),
        case(
            "GET",
            "/api/v2/kmip_adapters/{adapter}/certificates/{cert}",
            None,
            AdapterCert,
            KMIP_MANAGERS,
            200,
        ),
        case(
            "DELETE",
            "/api/v2/kmip_adapters/{adapter}/certificates/{cert}",
            None,
            AdapterCert,
            KMIP_MANAGERS,
            204,
        ),
        // An adapter's object is not a Key Protect key: whoever may read or use keys gets 404,
        // everyone else 401, as for any key.
        case(
            "GET",
            "/api/v2/keys/{object}",
            None,
            AdapterObject,
            READERS,
            404,
        ),
        case(
            "GET",
            "/api/v2/keys/{object}/metadata",
            None,
            AdapterObject,
            READERS,
            404,
        ),
        case(
            "POST",
            "/api/v2/keys/{object}/actions/wrap",
            Some("{}"),
            AdapterObject,
            READERS,
            404,
        ),
        case(
            "POST",
            "/api/v2/keys/{object}/actions/disable",
            None,
            AdapterObject,
            MANAGERS,
            404,
        ),
        case(
            "DELETE",
            "/api/v2/keys/{object}?force=true",
            None,
            AdapterObject,
            MANAGERS,
            404,
        ),
    ]
}

/// `"payload", "encryptionAlgorithm", "encryptedNonce", "iv"` of `material` sealed to the
/// instance's import token (Key Protect secure import: RSA-OAEP-SHA-256 and AES-GCM of the
/// token's nonce under the material), as JSON object members.
async fn sealed_fields(env: &Env, material: &[u8]) -> String {
    let got = env.admin("GET", "/api/v2/import_token", None).await;
    let pem = String::from_utf8(
        STANDARD
            .decode(got.body["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let public =
        keyfort_crypto::rsa::PublicKey::from_der(&STANDARD.decode(der_b64).unwrap()).unwrap();
    let nonce = STANDARD
        .decode(got.body["nonce"].as_str().unwrap())
        .unwrap();
    let iv = [9u8; 12];
    let payload = public
        .encrypt_oaep(keyfort_crypto::rsa::OaepHash::Sha256, material, None)
        .unwrap();
    let encrypted_nonce = keyfort_crypto::aes::gcm_encrypt(material, &iv, &[], &nonce).unwrap();
    format!(
        r#""payload":"{}","encryptionAlgorithm":"RSAES_OAEP_SHA_256","encryptedNonce":"{}","iv":"{}""#,
        STANDARD.encode(payload),
        STANDARD.encode(encrypted_nonce),
        STANDARD.encode(iv)
    )
}

#[tokio::test]
async fn every_endpoint_against_every_role() {
    let env = env().await;
    let admin_caller = env.core.authenticate(&env.admin).await.unwrap();
    let other = env
        .core
        .create_instance(&admin_caller, "other")
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for who in EVERYONE {
        let token = match who {
            Who::Reader => env.token_for("reader", Role::Reader, &env.instance).await,
            Who::ReaderPlus => {
                env.token_for("reader-plus", Role::ReaderPlus, &env.instance)
                    .await
            }
            Who::Writer => env.token_for("writer", Role::Writer, &env.instance).await,
            Who::Manager => env.token_for("manager", Role::Manager, &env.instance).await,
            Who::KeyPurge => env.token_for("purger", Role::KeyPurge, &env.instance).await,
            Who::KmipAdapterManager => {
                env.token_for("kmip-manager", Role::KmipAdapterManager, &env.instance)
                    .await
            }
            Who::Stranger => env.token_for("stranger", Role::Manager, &other.id).await,
            Who::Service => {
                env.token_of_kind(
                    "service",
                    PrincipalKind::Service,
                    Role::Reader,
                    &env.instance,
                )
                .await
            }
        };
        tokens.push((who, token));
    }
    let shared_root = env.new_key(false, false).await;
    let shared_standard = env.new_key(true, false).await;
    let wrapped = env
        .admin(
            "POST",
            &format!("/api/v2/keys/{shared_root}/actions/wrap"),
            Some(&json!({})),
        )
        .await;
    let ct = wrapped.body["ciphertext"].as_str().unwrap().to_owned();
    env.admin(
        "POST",
        "/api/v2/import_token",
        Some(&json!({"expiration": 600, "maxAllowedRetrievals": 500})),
    )
    .await;

    // Material sealed to the import token: new material for rotations, and the imported keys'
    // own material for restores.
    let sealed_rotate = sealed_fields(&env, &[0x43; 32]).await;
    let sealed_restore = sealed_fields(&env, &[0x5A; 32]).await;

    let mut n = 0;
    let mut failures = Vec::new();
    for c in cases() {
        for (who, token) in &tokens {
            n += 1;
            let uniq = format!("u-{n}");
            let key = match c.setup {
                Setup::Nothing
                | Setup::Ring
                | Setup::ImportToken
                | Setup::Adapter
                | Setup::AdapterCert
                | Setup::AdapterObject => String::new(),
                Setup::FreshImported => env.new_imported_key().await,
                Setup::DeletedImported => {
                    let k = env.new_imported_key().await;
                    env.admin("DELETE", &format!("/api/v2/keys/{k}"), None)
                        .await;
                    k
                }
                Setup::SharedRoot => shared_root.clone(),
                Setup::SharedStandard => shared_standard.clone(),
                Setup::FreshRoot => env.new_key(false, false).await,
                Setup::FreshDualAuth => env.new_key(false, true).await,
                Setup::Suspended => {
                    let k = env.new_key(false, false).await;
                    env.admin("POST", &format!("/api/v2/keys/{k}/actions/disable"), None)
                        .await;
                    k
                }
                Setup::Deleted => {
                    let k = env.new_key(false, false).await;
                    env.admin("DELETE", &format!("/api/v2/keys/{k}"), None)
                        .await;
                    k
                }
                Setup::WithAlias => {
                    let k = env.new_key(false, false).await;
                    env.admin("POST", &format!("/api/v2/keys/{k}/aliases/{uniq}"), None)
                        .await;
                    k
                }
                Setup::WithRegistration => {
                    let k = env.new_key(false, false).await;
                    let body: Value = serde_json::from_str(REGISTRATION).unwrap();
                    env.admin(
                        "POST",
                        &format!("/api/v2/keys/{k}/registrations/{CRN}"),
                        Some(&body),
                    )
                    .await;
                    k
                }
            };
            let (mut adapter, mut cert, mut object) = (String::new(), String::new(), String::new());
            if matches!(
                c.setup,
                Setup::Adapter | Setup::AdapterCert | Setup::AdapterObject
            ) {
                let crk = env.new_key(false, false).await;
                adapter = env.new_adapter(&crk, &uniq).await;
                if !matches!(c.setup, Setup::Adapter) {
                    let (id, der) = env.new_adapter_cert(&adapter, n).await;
                    cert = id;
                    if matches!(c.setup, Setup::AdapterObject) {
                        object = env.new_adapter_object(&der).await;
                    }
                }
            }
            let pem = fake_certificate(1_000_000 + n).1.replace('\n', "\\n");
            let ring = format!("ring-{n}");
            if matches!(c.setup, Setup::Ring) {
                env.admin("POST", &format!("/api/v2/key_rings/{ring}"), None)
                    .await;
            }
            let path = c
                .path
                .replace("{key}", &key)
                .replace("{crn}", CRN)
                .replace("{ring}", &ring)
                .replace("{adapter}", &adapter)
                .replace("{cert}", &cert)
                .replace("{object}", &object)
                .replace("{uniq}", &uniq);
            let sealed = if c.path.contains("restore") {
                &sealed_restore
            } else {
                &sealed_rotate
            };
            let body = c.body.map(|b| {
                let text = b
                    .replace("{ct}", &ct)
                    .replace("{key}", &key)
                    .replace("{pem}", &pem)
                    .replace("{uniq}", &uniq)
                    .replace("{sealed}", sealed);
                serde_json::from_str::<Value>(&text).unwrap()
            });
            let a = env
                .send(
                    c.method,
                    &path,
                    Some(token),
                    Some(&env.instance),
                    body.as_ref(),
                    c.headers,
                )
                .await;
            let allowed = c.allowed.contains(who);
            let ok = if allowed {
                a.status.as_u16() == c.success
            } else if c.service_only && READERS.contains(who) {
                a.status == StatusCode::FORBIDDEN && a.reason() == "SERVICE_ONLY_ERR"
            } else {
                // HEAD answers carry no body, hence no reason.
                a.status == StatusCode::UNAUTHORIZED
                    && (c.method == "HEAD" || a.reason() == "UNAUTHORIZED_ERR")
            };
            if !ok {
                failures.push(format!(
                    "{} {} as {who:?}: expected {}, got {} {}",
                    c.method,
                    c.path,
                    if allowed {
                        c.success.to_string()
                    } else if c.service_only && READERS.contains(who) {
                        "403".into()
                    } else {
                        "401".into()
                    },
                    a.status,
                    a.body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} calls wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(n > 200);
}

// ---- envelopes and reason codes -------------------------------------------------------------

#[tokio::test]
async fn refusals_have_their_reason_codes() {
    let env = env().await;
    let admin = env.admin.clone();
    let root = env.new_key(false, false).await;
    let standard = env.new_key(true, false).await;

    // No Bluemix-Instance.
    let a = env
        .send("GET", "/api/v2/keys", Some(&admin), None, None, &[])
        .await;
    assert_envelope(&a, 400, "BAD_REQUEST_ERR");

    let a = env
        .kp(
            &admin,
            "GET",
            &format!("/api/v2/keys/{}", uuid_like()),
            None,
        )
        .await;
    assert_envelope(&a, 404, "KEY_NOT_FOUND_ERR");
    assert!(
        a.body["resources"][0]["errorMsg"]
            .as_str()
            .unwrap()
            .starts_with("Not Found: Key could not be retrieved")
    );

    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{standard}/actions/wrap"),
            None,
        )
        .await;
    assert_envelope(&a, 400, "KEY_ROOT_REQ_ERR");

    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{root}/actions/wrap"),
            Some(&json!({"plaintext": "not base64!"})),
        )
        .await;
    assert_envelope(&a, 400, "INVALID_FIELD_ERR");
    assert_eq!(
        a.body["resources"][0]["reasons"][0]["target"],
        json!({"type": "field", "name": "plaintext"})
    );

    // Collection total that does not match the resources.
    let mut body = collection(json!({"name": "x"}));
    body["metadata"]["collectionTotal"] = json!(2);
    let a = env.kp(&admin, "POST", "/api/v2/keys", Some(&body)).await;
    assert_envelope(&a, 400, "COLLECTION_TOTAL_MISMATCH_ERR");

    // A key field the core refuses.
    let a = env
        .kp(
            &admin,
            "POST",
            "/api/v2/keys",
            Some(&collection(json!({"name": ""}))),
        )
        .await;
    assert_envelope(&a, 400, "INVALID_FIELD_ERR");

    // Invalid JSON.
    let a = env
        .send(
            "POST",
            "/api/v2/keys",
            Some(&admin),
            Some(&env.instance),
            Some(&Value::String("{".into())),
            &[],
        )
        .await;
    assert_envelope(&a, 400, "BAD_BODY_ERR");

    // A tampered ciphertext.
    let w = env
        .admin(
            "POST",
            &format!("/api/v2/keys/{root}/actions/wrap"),
            Some(&json!({})),
        )
        .await;
    let mut ct = STANDARD
        .decode(w.body["ciphertext"].as_str().unwrap())
        .unwrap();
    let last = ct.len() - 1;
    ct[last] ^= 1;
    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{root}/actions/unwrap"),
            Some(&json!({"ciphertext": STANDARD.encode(&ct)})),
        )
        .await;
    assert_envelope(&a, 422, "UNPROCESSABLE_CIPHERTEXT_ERR");
    // The right AAD is part of the ciphertext too.
    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{root}/actions/unwrap"),
            Some(&json!({"ciphertext": w.body["ciphertext"], "aad": ["other"]})),
        )
        .await;
    assert_envelope(&a, 422, "UNPROCESSABLE_CIPHERTEXT_ERR");

    // State rules.
    env.admin(
        "POST",
        &format!("/api/v2/keys/{root}/actions/disable"),
        None,
    )
    .await;
    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{root}/actions/disable"),
            None,
        )
        .await;
    assert_envelope(&a, 409, "KEY_ACTION_INVALID_STATE_ERR");
    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{root}/actions/wrap"),
            None,
        )
        .await;
    assert_envelope(&a, 409, "KEY_ACTION_INVALID_STATE_ERR");
    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{root}/actions/setKeyForDeletion"),
            None,
        )
        .await;
    assert_envelope(&a, 409, "NOT_DUAL_AUTH_ERR");
    env.admin("DELETE", &format!("/api/v2/keys/{root}"), None)
        .await;
    let a = env
        .kp(&admin, "DELETE", &format!("/api/v2/keys/{root}"), None)
        .await;
    assert_envelope(&a, 410, "KEY_DELETED_ERR");

    // Dual authorization: no approval yet.
    let dual = env.new_key(false, true).await;
    let a = env
        .kp(&admin, "DELETE", &format!("/api/v2/keys/{dual}"), None)
        .await;
    assert_envelope(&a, 409, "AUTHORIZATIONS_NOT_MET");

    // Registrations protect a key.
    let protected = env.new_key(false, false).await;
    let body: Value = serde_json::from_str(REGISTRATION).unwrap();
    env.admin(
        "POST",
        &format!("/api/v2/keys/{protected}/registrations/{CRN}"),
        Some(&body),
    )
    .await;
    let a = env
        .kp(&admin, "DELETE", &format!("/api/v2/keys/{protected}"), None)
        .await;
    assert_envelope(&a, 409, "PROTECTED_RESOURCE_ERR");
    let a = env
        .kp(
            &admin,
            "DELETE",
            &format!("/api/v2/keys/{protected}?force=true"),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);

    // Policy query and body must agree.
    let body: Value = serde_json::from_str(ROTATION_POLICY).unwrap();
    let fresh = env.new_key(false, false).await;
    let a = env
        .kp(
            &admin,
            "PUT",
            &format!("/api/v2/keys/{fresh}/policies?policy=dualAuthDelete"),
            Some(&body),
        )
        .await;
    assert_envelope(&a, 400, "BODY_QUERY_PARAM_MISMATCH_ERR");

    // Unknown paths under /api/v2 answer in the envelope too.
    let a = env.kp(&admin, "GET", "/api/v2/nothing-here", None).await;
    assert_envelope(&a, 404, "NOT_FOUND_ERR");
}

fn uuid_like() -> &'static str {
    "2291e4ae-a14c-4af9-88f0-27c0cb2739e2"
}

#[tokio::test]
async fn tokens_that_are_missing_foreign_garbage_or_expired_are_refused() {
    let clock = Arc::new(TestClock(AtomicI64::new(SystemClock.now_ms())));
    let env = env_with(clock.clone()).await;
    let foreign = env_with(Arc::new(SystemClock)).await;
    let cases = [
        ("missing", None),
        ("garbage", Some("not.a.token".to_owned())),
        ("foreign", Some(foreign.admin.clone())),
    ];
    for (what, token) in cases {
        let a = env
            .send(
                "GET",
                "/api/v2/keys",
                token.as_deref(),
                Some(&env.instance),
                None,
                &[],
            )
            .await;
        assert_envelope(&a, 401, "UNAUTHORIZED_ERR");
        assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer", "{what}");
    }
    // The same token works, then expires.
    let a = env
        .kp(&env.admin.clone(), "GET", "/api/v2/keys", None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    clock.0.fetch_add(3_600_000, Ordering::SeqCst);
    let a = env
        .kp(&env.admin.clone(), "GET", "/api/v2/keys", None)
        .await;
    assert_envelope(&a, 401, "UNAUTHORIZED_ERR");
}

/// The key view's date flags follow the server's clock, as the rules they describe do.
#[tokio::test]
async fn the_key_view_tells_time_by_the_server_clock() {
    let clock = Arc::new(TestClock(AtomicI64::new(SystemClock.now_ms())));
    let env = env_with_timings(
        clock.clone(),
        KmsTimings {
            restore_window: Duration::from_secs(60),
            ..quick_timings()
        },
    )
    .await;
    let id = env.new_key(false, false).await;
    env.admin("DELETE", &format!("/api/v2/keys/{id}"), None)
        .await;
    let view = |a: Answer| {
        let k = &a.body["resources"][0];
        (k["restoreAllowed"].clone(), k["purgeAllowed"].clone())
    };
    let a = env
        .admin("GET", &format!("/api/v2/keys/{id}/metadata"), None)
        .await;
    assert_eq!(view(a), (json!(true), json!(true)));
    clock.0.fetch_add(120_000, Ordering::SeqCst);
    let a = env
        .admin("GET", &format!("/api/v2/keys/{id}/metadata"), None)
        .await;
    assert_eq!(view(a), (json!(false), json!(true)));
    // And the rule itself agrees.
    let a = env
        .kp(
            &env.admin.clone(),
            "POST",
            &format!("/api/v2/keys/{id}/restore"),
            None,
        )
        .await;
    assert_envelope(&a, 400, "KEY_RESTORE_EXPIRED");
}

// ---- listing, counting, paging, the deprecated form ------------------------------------------

#[tokio::test]
async fn head_list_and_paging() {
    let env = env().await;
    let admin = env.admin.clone();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(env.new_key(false, false).await);
    }
    let standard = env.new_key(true, false).await;

    let a = env.kp(&admin, "HEAD", "/api/v2/keys", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["key-total"], "6");
    let a = env
        .kp(&admin, "HEAD", "/api/v2/keys?extractable=true", None)
        .await;
    assert_eq!(a.headers["key-total"], "1");

    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let a = env
            .kp(
                &admin,
                "GET",
                &format!("/api/v2/keys?limit=2&offset={offset}&totalCount=true&state="),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["metadata"]["totalCount"], 6);
        let page = a.body["resources"].as_array().unwrap();
        assert_eq!(a.body["metadata"]["collectionTotal"], page.len());
        assert_eq!(page.len(), 2);
        seen.extend(page.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6);
    assert!(seen.contains(&standard));

    // A deleted key leaves the default listing and the count; `state=5` finds it.
    env.admin("DELETE", &format!("/api/v2/keys/{}", ids[0]), None)
        .await;
    let a = env.kp(&admin, "HEAD", "/api/v2/keys", None).await;
    assert_eq!(a.headers["key-total"], "5");
    let a = env.kp(&admin, "GET", "/api/v2/keys?state=5", None).await;
    assert_eq!(a.body["resources"][0]["id"], json!(ids[0]));
    assert_eq!(a.body["resources"][0]["deleted"], true);
    let a = env
        .kp(&admin, "GET", "/api/v2/keys?filter=state%3D5", None)
        .await;
    assert_eq!(a.body["metadata"]["collectionTotal"], 1, "{}", a.body);

    // Bad query parameters.
    for q in [
        "limit=0",
        "limit=5001",
        "state=4",
        "extractable=maybe",
        "sort=name",
        "sort=id,-id",
        "filter=color%3Dred",
        "filter=creationDate%3Dgte%3A2020-01-01",
        "filter=creationDate%3Dgt%3Anone",
        "filter=state%3D1&state=1",
        "filter=extractable%3Dtrue&extractable=false",
        "filter=lastRotateDate%3Dnone%20lastRotateDate%3Dnone%20lastRotateDate%3Dnone%20lastRotateDate%3Dnone",
        "search=not%3Aexact%3A",
    ] {
        let a = env
            .kp(&admin, "GET", &format!("/api/v2/keys?{q}"), None)
            .await;
        assert_envelope(&a, 400, "INVALID_QUERY_PARAM_ERR");
    }
}

#[tokio::test]
async fn deprecated_action_form_and_key_resource() {
    let env = env().await;
    let admin = env.admin.clone();
    let key = env.new_key(false, false).await;
    let dek = STANDARD.encode([7u8; 32]);
    let w = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{key}?action=wrap"),
            Some(&json!({"plaintext": dek, "aad": ["a"]})),
        )
        .await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    assert_eq!(
        w.headers[header::CONTENT_TYPE],
        "application/vnd.ibm.kms.key_action+json"
    );
    let u = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{key}?action=unwrap"),
            Some(&json!({"ciphertext": w.body["ciphertext"], "aad": ["a"]})),
        )
        .await;
    assert_eq!(u.body["plaintext"], json!(dek));
    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{key}?action=rotate"),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/keys/{key}?action=bogus"),
            None,
        )
        .await;
    assert_envelope(&a, 400, "INVALID_ACTION_ERR");
    let a = env
        .kp(&admin, "POST", &format!("/api/v2/keys/{key}"), None)
        .await;
    assert_envelope(&a, 400, "INVALID_QUERY_PARAM_ERR");

    // The key resource (§4).
    let a = env
        .kp(&admin, "GET", &format!("/api/v2/keys/{key}"), None)
        .await;
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
    let k = &a.body["resources"][0];
    assert_eq!(
        a.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.key+json"
    );
    assert_eq!(k["id"], json!(key));
    assert_eq!(k["state"], 1);
    assert_eq!(k["keyRingID"], "default");
    assert_eq!(k["extractable"], false);
    assert_eq!(k["deleted"], false);
    assert_eq!(k["dualAuthDelete"], json!({"enabled": false}));
    assert_eq!(
        k["crn"],
        json!(format!(
            "crn:v1:keyfort:private:kms:local:a/keyfort:{}:key:{key}",
            env.instance
        ))
    );
    assert!(k.get("payload").is_none());
    assert!(k["lastRotateDate"].is_string());
    let versions = env
        .kp(
            &admin,
            "GET",
            &format!("/api/v2/keys/{key}/versions?totalCount=true"),
            None,
        )
        .await;
    assert_eq!(versions.body["metadata"]["totalCount"], 2);
    assert_eq!(versions.body["resources"][0]["id"], k["keyVersion"]["id"]);

    // Correlation ids are echoed (also on refusals and unknown endpoints), or made up when the
    // client's is missing or unusable.
    let long = "x".repeat(129);
    let admin = Some(admin.as_str());
    for (path, token, header, status, echoed) in [
        (
            "/api/v2/keys",
            admin,
            ("X-Correlation-ID", "abc-123"),
            200,
            true,
        ),
        ("/api/v2/keys", None, ("Correlation-Id", "req-7"), 401, true),
        (
            "/api/v2/no_such_thing",
            admin,
            ("Correlation-Id", "req-7"),
            404,
            true,
        ),
        (
            "/api/v2/keys",
            admin,
            ("Correlation-Id", long.as_str()),
            200,
            false,
        ),
    ] {
        let a = env
            .send("GET", path, token, Some(&env.instance), None, &[header])
            .await;
        assert_eq!(a.status.as_u16(), status, "{path}");
        let id = a.headers["correlation-id"].to_str().unwrap();
        if echoed {
            assert_eq!(id, header.1, "{path}");
        } else {
            assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        }
    }
}

// ---- admin API: principals, API keys, audit ---------------------------------------------------

#[tokio::test]
async fn principals_api_keys_and_the_audit_trail() {
    let env = env().await;
    let admin = env.admin.clone();
    let admin_call = |method: &'static str, uri: String, body: Option<Value>| {
        let env = &env;
        let admin = admin.clone();
        async move {
            let mut b = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {admin}"));
            if body.is_some() {
                b = b.header(header::CONTENT_TYPE, "application/json");
            }
            let request = b
                .body(body.map_or(Body::empty(), |v| Body::from(v.to_string())))
                .unwrap();
            let response = env.app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
                .await
                .unwrap();
            (status, bytes)
        }
    };
    let json_of = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();

    let (status, bytes) = admin_call(
        "POST",
        "/api/keyfort/v1/principals".into(),
        Some(json!({"name": "w", "instance_id": env.instance, "roles": [{"role": "Writer", "instance": env.instance}]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let p = json_of(&bytes);
    let pid = p["id"].as_str().unwrap().to_owned();
    let (status, bytes) = admin_call(
        "POST",
        format!("/api/keyfort/v1/principals/{pid}/api_keys"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let k = json_of(&bytes);
    let secret = k["api_key"].as_str().unwrap().to_owned();
    let token = env.core.exchange_api_key(&secret).await.unwrap().token;
    // A Writer may create keys but not disable them; as Manager it may.
    let key = env
        .kp(
            &token,
            "POST",
            "/api/v2/keys",
            Some(&collection(json!({"name": "w1"}))),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED);
    let key_id = key.body["resources"][0]["id"].as_str().unwrap().to_owned();
    let disable = format!("/api/v2/keys/{key_id}/actions/disable");
    assert_eq!(
        env.kp(&token, "POST", &disable, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = admin_call(
        "PATCH",
        format!("/api/keyfort/v1/principals/{pid}"),
        Some(json!({"roles": [{"role": "Manager", "instance": env.instance}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        env.kp(&token, "POST", &disable, None).await.status,
        StatusCode::NO_CONTENT
    );

    // Rotation of the API key revokes the old one; revocation ends the new one.
    let (status, bytes) = admin_call(
        "POST",
        format!(
            "/api/keyfort/v1/api_keys/{}/rotate",
            k["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let rotated = json_of(&bytes);
    assert!(env.core.exchange_api_key(&secret).await.is_err());
    let fresh = rotated["api_key"].as_str().unwrap();
    assert!(env.core.exchange_api_key(fresh).await.is_ok());
    let (status, _) = admin_call(
        "DELETE",
        format!(
            "/api/keyfort/v1/api_keys/{}",
            rotated["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(env.core.exchange_api_key(fresh).await.is_err());

    // The audit trail: filters, verification, CADF export.
    let base = format!("/api/keyfort/v1/instances/{}/audit", env.instance);
    let (status, bytes) = admin_call(
        "GET",
        format!("{base}?target={key_id}&action=key.disable"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = json_of(&bytes)["events"].as_array().unwrap().clone();
    let outcomes: Vec<&str> = events
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["denied", "success"]);
    assert_eq!(events[1]["actor"], "w");
    let (status, bytes) = admin_call("GET", format!("{base}?outcome=denied&limit=1"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&bytes)["events"].as_array().unwrap().len(), 1);
    let (status, bytes) = admin_call("GET", format!("{base}/verify"), None).await;
    assert_eq!(status, StatusCode::OK);
    let verdict = json_of(&bytes);
    assert_eq!(verdict["ok"], true, "{verdict}");
    let (status, bytes) = admin_call("GET", format!("{base}/export?target={key_id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<Value> = String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3);
    assert!(lines.iter().all(|e| e["target"]["id"] == json!(key_id)));
    assert_eq!(lines.last().unwrap()["action"], "key.disable");
    let (status, _) = admin_call("GET", format!("{base}?from=yesterday"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Tokens of the revoked API key stop working at once.
    let a = env
        .send(
            "GET",
            "/api/keyfort/v1/principals",
            Some(&token),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

// ---- X-Kms-Key-Ring -------------------------------------------------------------------------

#[tokio::test]
async fn key_ring_header_scopes_every_key_endpoint() {
    let env = env().await;
    env.admin("POST", "/api/v2/key_rings/r1", None).await;
    let resource = json!({"type": "application/vnd.ibm.kms.key+json", "name": "in-r1", "extractable": false, "aliases": ["in-r1-alias"]});
    let created = env
        .send(
            "POST",
            "/api/v2/keys",
            Some(&env.admin),
            Some(&env.instance),
            Some(&collection(resource)),
            &[("X-Kms-Key-Ring", "r1")],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["resources"][0]["keyRingID"], "r1");
    let key = created.body["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let in_default = env.new_key(false, false).await;
    let wrapped = env
        .admin(
            "POST",
            &format!("/api/v2/keys/{key}/actions/wrap"),
            Some(&json!({})),
        )
        .await;
    let ct = wrapped.body["ciphertext"].as_str().unwrap().to_owned();
    let unwrap = json!({ "ciphertext": ct });
    let policy: Value = serde_json::from_str(ROTATION_POLICY).unwrap();
    let registration: Value = serde_json::from_str(REGISTRATION).unwrap();

    // Every key endpoint, by id and by alias, naming the wrong ring: 404, nothing changes.
    let forms: Vec<(&str, String, Option<&Value>)> = vec![
        ("GET", format!("/api/v2/keys/{key}"), None),
        ("GET", "/api/v2/keys/in-r1-alias".to_owned(), None),
        ("GET", format!("/api/v2/keys/{key}/metadata"), None),
        ("GET", format!("/api/v2/keys/{key}/versions"), None),
        ("PATCH", format!("/api/v2/keys/{key}"), None),
        ("DELETE", format!("/api/v2/keys/{key}"), None),
        ("DELETE", format!("/api/v2/keys/{key}/purge"), None),
        ("POST", format!("/api/v2/keys/{key}/restore"), None),
        ("POST", format!("/api/v2/keys/{key}/actions/wrap"), None),
        (
            "POST",
            format!("/api/v2/keys/{key}/actions/unwrap"),
            Some(&unwrap),
        ),
        (
            "POST",
            format!("/api/v2/keys/{key}/actions/rewrap"),
            Some(&unwrap),
        ),
        ("POST", format!("/api/v2/keys/{key}/actions/rotate"), None),
        ("POST", format!("/api/v2/keys/{key}/actions/disable"), None),
        ("POST", format!("/api/v2/keys/{key}/actions/enable"), None),
        (
            "POST",
            format!("/api/v2/keys/{key}/actions/setKeyForDeletion"),
            None,
        ),
        ("POST", format!("/api/v2/keys/{key}/actions/sync"), None),
        ("POST", format!("/api/v2/keys/{key}?action=disable"), None),
        ("GET", format!("/api/v2/keys/{key}/policies"), None),
        (
            "PUT",
            format!("/api/v2/keys/{key}/policies?policy=rotation"),
            Some(&policy),
        ),
        ("GET", format!("/api/v2/keys/{key}/registrations"), None),
        (
            "POST",
            format!("/api/v2/keys/{key}/registrations/{CRN}"),
            Some(&registration),
        ),
        (
            "POST",
            format!("/api/v2/keys/{key}/aliases/other-alias"),
            None,
        ),
        (
            "DELETE",
            format!("/api/v2/keys/{key}/aliases/in-r1-alias"),
            None,
        ),
    ];
    let patch = json!({"keyRingID": "default"});
    for (method, uri, body) in &forms {
        let body = if *method == "PATCH" {
            Some(&patch)
        } else {
            *body
        };
        let a = env
            .send(
                method,
                uri,
                Some(&env.admin),
                Some(&env.instance),
                body,
                &[("X-Kms-Key-Ring", "default")],
            )
            .await;
        assert_envelope(&a, 404, "KEY_NOT_FOUND_ERR");
        assert!(
            a.body["resources"][0]["errorMsg"]
                .as_str()
                .unwrap()
                .starts_with("Not Found: "),
            "{method} {uri}: {}",
            a.body
        );
    }
    let after = env
        .admin("GET", &format!("/api/v2/keys/{key}/metadata"), None)
        .await;
    let r = &after.body["resources"][0];
    assert_eq!(r["state"], 1);
    assert_eq!(r["keyRingID"], "r1");
    assert_eq!(r["aliases"], json!(["in-r1-alias"]));
    assert!(r.get("lastRotateDate").is_none_or(Value::is_null), "{r}");
    // A refusal is audited as a failure of that key.
    let refused = env.events("key.disable", &key).await;
    assert!(refused.iter().all(|e| e.outcome == "failure"));
    assert_eq!(refused.len(), 2);

    // Naming the right ring works; the key in `default` is not found through `r1`.
    let r1 = [("X-Kms-Key-Ring", "r1")];
    for uri in [
        format!("/api/v2/keys/{key}/metadata"),
        "/api/v2/keys/in-r1-alias".to_owned(),
    ] {
        let a = env
            .send(
                "GET",
                &uri,
                Some(&env.admin),
                Some(&env.instance),
                None,
                &r1,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let a = env
        .send(
            "POST",
            &format!("/api/v2/keys/{key}/actions/unwrap"),
            Some(&env.admin),
            Some(&env.instance),
            Some(&unwrap),
            &r1,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = env
        .send(
            "GET",
            &format!("/api/v2/keys/{in_default}"),
            Some(&env.admin),
            Some(&env.instance),
            None,
            &r1,
        )
        .await;
    assert_envelope(&a, 404, "KEY_NOT_FOUND_ERR");
    // A ring that does not exist holds no key either.
    let a = env
        .send(
            "GET",
            &format!("/api/v2/keys/{key}"),
            Some(&env.admin),
            Some(&env.instance),
            None,
            &[("X-Kms-Key-Ring", "nowhere")],
        )
        .await;
    assert_envelope(&a, 404, "KEY_NOT_FOUND_ERR");
    // List and count in a ring.
    let listed = env
        .send(
            "GET",
            "/api/v2/keys",
            Some(&env.admin),
            Some(&env.instance),
            None,
            &r1,
        )
        .await;
    let ids: Vec<&str> = listed.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [key.as_str()]);
    let counted = env
        .send(
            "HEAD",
            "/api/v2/keys",
            Some(&env.admin),
            Some(&env.instance),
            None,
            &r1,
        )
        .await;
    assert_eq!(counted.headers["key-total"], "1");
    // Registrations of all keys, in a ring.
    let a = env
        .send(
            "POST",
            &format!("/api/v2/keys/{key}/registrations/{CRN}"),
            Some(&env.admin),
            Some(&env.instance),
            Some(&registration),
            &r1,
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    for (ring, want) in [("r1", 1), ("default", 0)] {
        let a = env
            .send(
                "GET",
                "/api/v2/keys/registrations",
                Some(&env.admin),
                Some(&env.instance),
                None,
                &[("X-Kms-Key-Ring", ring)],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(
            a.body["resources"].as_array().unwrap().len(),
            want,
            "{ring}"
        );
    }
    let all = env.admin("GET", "/api/v2/keys/registrations", None).await;
    assert_eq!(all.body["resources"].as_array().unwrap().len(), 1);
    // Moving: the header names the current ring.
    let a = env
        .send(
            "PATCH",
            &format!("/api/v2/keys/{key}"),
            Some(&env.admin),
            Some(&env.instance),
            Some(&patch),
            &r1,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["resources"][0]["keyRingID"], "default");
}

// ---- imported material: rotate and restore ---------------------------------------------------

#[tokio::test]
async fn rotate_and_restore_with_imported_material() {
    let env = env().await;
    let key = env.new_imported_key().await;
    let rotate = |body: Option<Value>| {
        let uri = format!("/api/v2/keys/{key}/actions/rotate");
        let env = &env;
        async move {
            env.send(
                "POST",
                &uri,
                Some(&env.admin),
                Some(&env.instance),
                body.as_ref(),
                &[],
            )
            .await
        }
    };
    let wrapped = env
        .admin(
            "POST",
            &format!("/api/v2/keys/{key}/actions/wrap"),
            Some(&json!({})),
        )
        .await;
    let old_ct = wrapped.body["ciphertext"].as_str().unwrap().to_owned();

    // An imported key needs material to rotate, of its own length.
    assert_envelope(&rotate(None).await, 400, "KEY_PAYLOAD_REQ_ERR");
    assert_envelope(&rotate(Some(json!({}))).await, 400, "KEY_PAYLOAD_REQ_ERR");
    let short = json!({"payload": STANDARD.encode([1u8; 16])});
    assert_envelope(&rotate(Some(short)).await, 400, "INVALID_FIELD_ERR");
    let garbage = json!({"payload": "not base64!"});
    assert_envelope(&rotate(Some(garbage)).await, 400, "INVALID_FIELD_ERR");
    assert_eq!(env.events("key.rotate", &key).await.len(), 3);

    // Plain new material.
    let m2 = [0x22u8; 32];
    let a = rotate(Some(json!({"payload": STANDARD.encode(m2)}))).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    // The old ciphertext still unwraps, and comes back rewrapped under the new version.
    let a = env
        .admin(
            "POST",
            &format!("/api/v2/keys/{key}/actions/unwrap"),
            Some(&json!({ "ciphertext": old_ct })),
        )
        .await;
    assert!(
        a.body["rewrappedKeyVersion"]["id"].is_string(),
        "{}",
        a.body
    );

    // Material sealed to the import token; a wrong nonce is refused and changes nothing.
    env.admin(
        "POST",
        "/api/v2/import_token",
        Some(&json!({"expiration": 600, "maxAllowedRetrievals": 10})),
    )
    .await;
    let m3 = [0x33u8; 32];
    let sealed: Value =
        serde_json::from_str(&format!("{{{}}}", sealed_fields(&env, &m3).await)).unwrap();
    let mut wrong_nonce = sealed.clone();
    wrong_nonce["encryptedNonce"] =
        json!(STANDARD.encode(
            keyfort_crypto::aes::gcm_encrypt(&m3, &[9u8; 12], &[], b"not the nonce").unwrap()
        ));
    assert_envelope(&rotate(Some(wrong_nonce)).await, 400, "INCORRECT_NONCE_ERR");
    let mut bad_iv = sealed.clone();
    bad_iv["iv"] = json!(STANDARD.encode([1u8; 12]));
    assert_envelope(&rotate(Some(bad_iv)).await, 400, "INCORRECT_NONCE_IV_ERR");
    let mut bad_alg = sealed.clone();
    bad_alg["encryptionAlgorithm"] = json!("RSA_PKCS1");
    assert_envelope(&rotate(Some(bad_alg)).await, 400, "INVALID_FIELD_ERR");
    let versions = env
        .admin(
            "GET",
            &format!("/api/v2/keys/{key}/versions?totalCount=true"),
            None,
        )
        .await;
    assert_eq!(versions.body["metadata"]["totalCount"], 2);
    let a = rotate(Some(sealed)).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let versions = env
        .admin(
            "GET",
            &format!("/api/v2/keys/{key}/versions?totalCount=true"),
            None,
        )
        .await;
    assert_eq!(versions.body["metadata"]["totalCount"], 3);
    let rotations: Vec<_> = env
        .events("key.rotate", &key)
        .await
        .into_iter()
        .filter(|e| e.outcome == "success")
        .collect();
    assert_eq!(rotations.len(), 2);
    assert_eq!(rotations[0].details["import_token"], false);
    assert_eq!(rotations[1].details["import_token"], true);

    // Restore proves the current material: the first and second are refused, the third
    // (sealed above) is accepted, plain or sealed.
    env.admin("DELETE", &format!("/api/v2/keys/{key}"), None)
        .await;
    let restore = |body: Value| {
        let uri = format!("/api/v2/keys/{key}/restore");
        let env = &env;
        async move {
            env.send(
                "POST",
                &uri,
                Some(&env.admin),
                Some(&env.instance),
                Some(&body),
                &[],
            )
            .await
        }
    };
    let plain = |m: &[u8]| collection(json!({ "payload": STANDARD.encode(m) }));
    for old in [[0x5Au8; 32], m2] {
        assert_envelope(&restore(plain(&old)).await, 400, "INVALID_FIELD_ERR");
    }
    let still = env
        .admin("GET", &format!("/api/v2/keys/{key}/metadata"), None)
        .await;
    assert_eq!(still.body["resources"][0]["state"], 5);
    let a = restore(plain(&m3)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["resources"][0]["state"], 1);
    let restored = env.events("key.restore", &key).await;
    assert_eq!(
        restored
            .iter()
            .map(|e| e.outcome.as_str())
            .collect::<Vec<_>>(),
        ["failure", "failure", "success"]
    );
    assert_eq!(restored[2].details["payload"], true);
    env.admin("DELETE", &format!("/api/v2/keys/{key}"), None)
        .await;
    let sealed: Value =
        serde_json::from_str(&format!("{{{}}}", sealed_fields(&env, &m3).await)).unwrap();
    let a = restore(collection(sealed)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);

    // A generated key is not restored with material, and rotates without it only.
    let generated = env.new_key(false, false).await;
    let a = env
        .send(
            "POST",
            &format!("/api/v2/keys/{generated}/actions/rotate"),
            Some(&env.admin),
            Some(&env.instance),
            Some(&json!({"payload": STANDARD.encode([1u8; 32])})),
            &[],
        )
        .await;
    assert_envelope(&a, 400, "INVALID_FIELD_ERR");
    env.admin("DELETE", &format!("/api/v2/keys/{generated}"), None)
        .await;
    let a = env
        .send(
            "POST",
            &format!("/api/v2/keys/{generated}/restore"),
            Some(&env.admin),
            Some(&env.instance),
            Some(&plain(&[1u8; 32])),
            &[],
        )
        .await;
    assert_envelope(&a, 400, "KEY_IMPT_REQ_ERR");
    let a = env
        .send(
            "POST",
            &format!("/api/v2/keys/{generated}/restore"),
            Some(&env.admin),
            Some(&env.instance),
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
}

// ---- allowed IP port and event acknowledgement ----------------------------------------------

#[tokio::test]
async fn allowed_ip_port_answers_even_where_the_policy_refuses() {
    let env = env().await;
    let manager = env.token_for("manager", Role::Manager, &env.instance).await;
    let writer = env.token_for("writer", Role::Writer, &env.instance).await;
    let port = |token: String, host: Option<&'static str>| {
        let env = &env;
        async move {
            let headers: Vec<(&str, &str)> = host.map(|h| ("Host", h)).into_iter().collect();
            env.send(
                "GET",
                "/api/v2/instance/allowed_ip_port",
                Some(&token),
                Some(&env.instance),
                None,
                &headers,
            )
            .await
        }
    };
    // No allowedIP policy: no port.
    let a = port(manager.clone(), Some("kms.example:9443")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.allowed_ip_metadata+json"
    );
    assert_eq!(a.body["metadata"]["collectionTotal"], 0);
    assert_eq!(a.body["resources"], json!([]));
    assert_envelope(&port(writer.clone(), None).await, 401, "UNAUTHORIZED_ERR");

    // With a policy that admits no address this test can come from (in-process requests
    // have none), every other call is refused, this one still answers.
    let admin = env.core.authenticate(&env.admin).await.unwrap();
    let mut attributes = serde_json::Map::new();
    attributes.insert("allowed_ip".into(), json!(["192.0.2.0/24"]));
    env.core
        .set_instance_policies(
            &admin,
            &env.instance,
            vec![(
                keyfort_core::InstancePolicyType::AllowedIp,
                true,
                attributes,
            )],
        )
        .await
        .unwrap();
    let a = env
        .send(
            "GET",
            "/api/v2/keys",
            Some(&manager),
            Some(&env.instance),
            None,
            &[],
        )
        .await;
    assert_envelope(&a, 401, "UNAUTHORIZED_ERR");
    let a = port(manager.clone(), Some("kms.example:9443")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["metadata"]["collectionTotal"], 1);
    assert_eq!(
        a.body["resources"],
        json!([{"private_endpoint_port": 9443}])
    );
    let a = port(manager.clone(), None).await;
    assert_eq!(a.body["resources"][0]["private_endpoint_port"], 443);
    assert_envelope(&port(writer, None).await, 401, "UNAUTHORIZED_ERR");
    let events = env
        .events("instance.allowed_ip_port.read", &env.instance)
        .await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.outcome.as_str())
            .collect::<Vec<_>>(),
        ["success", "denied", "success", "success", "denied"]
    );
    assert_eq!(events[2].details["port"], 9443);
}

#[tokio::test]
async fn event_acknowledgements_are_for_services_and_audited() {
    let env = env().await;
    let service = env
        .token_of_kind("cos", PrincipalKind::Service, Role::Reader, &env.instance)
        .await;
    let manager = env.token_for("manager", Role::Manager, &env.instance).await;
    let ack = |resource: Value| json!({"metadata": {"collectionType": "application/vnd.ibm.kms.event_acknowledge+json", "collectionTotal": 1}, "resources": [resource]});
    let version = "0b9f6c3e-2d55-4a51-9a4e-1f1c2b3d4e5f";
    let good = ack(json!({
        "eventId": "ev-1",
        "adopterKeyState": "DEK_ENABLED",
        "timestamp": "2026-03-04T05:06:07Z",
        "keyStateData": {"rewrappedKeyVersion": version},
    }));
    let a = env
        .kp(&service, "POST", "/api/v2/event_ack", Some(&good))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let events = env.events("event.acknowledge", "ev-1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "success");
    assert_eq!(events[0].actor, "cos");
    assert_eq!(events[0].details["adopter_key_state"], "DEK_ENABLED");
    assert_eq!(events[0].details["rewrapped_key_version"], version);
    assert_eq!(events[0].details["processed_at"], 1_772_600_767_000_i64);

    // A user, even a Manager, is not a service.
    let a = env
        .kp(&manager, "POST", "/api/v2/event_ack", Some(&good))
        .await;
    assert_envelope(&a, 403, "SERVICE_ONLY_ERR");
    assert_eq!(env.events("event.acknowledge", "ev-1").await.len(), 2);

    // Malformed acknowledgements.
    let bad = [
        (
            json!({"adopterKeyState": "DEK_DELETED", "timestamp": "2026-03-04T05:06:07Z"}),
            "INVALID_FIELD_ERR",
        ),
        (
            json!({"eventId": "e", "adopterKeyState": "DEK_DELETED", "timestamp": "yesterday"}),
            "INVALID_FIELD_ERR",
        ),
        (
            json!({"eventId": "e", "adopterKeyState": "dek deleted", "timestamp": "2026-03-04T05:06:07Z"}),
            "INVALID_FIELD_ERR",
        ),
        (
            json!({"eventId": "e", "adopterKeyState": "DEK_ENABLED", "timestamp": "2026-03-04T05:06:07Z"}),
            "INVALID_FIELD_ERR",
        ),
        (
            json!({"eventId": "e", "adopterKeyState": "DEK_ENABLED", "timestamp": "2026-03-04T05:06:07Z", "keyStateData": {"rewrappedKeyVersion": "v1"}}),
            "INVALID_FIELD_ERR",
        ),
        (
            json!({"eventId": "", "adopterKeyState": "DEK_DELETED", "timestamp": "2026-03-04T05:06:07Z"}),
            "INVALID_FIELD_ERR",
        ),
    ];
    for (resource, code) in bad {
        let a = env
            .kp(
                &service,
                "POST",
                "/api/v2/event_ack",
                Some(&ack(resource.clone())),
            )
            .await;
        assert_envelope(&a, 400, code);
    }
    let mut two = ack(
        json!({"eventId": "a", "adopterKeyState": "DEK_DELETED", "timestamp": "2026-03-04T05:06:07Z"}),
    );
    two["metadata"]["collectionTotal"] = json!(2);
    let a = env
        .kp(&service, "POST", "/api/v2/event_ack", Some(&two))
        .await;
    assert_envelope(&a, 400, "COLLECTION_TOTAL_MISMATCH_ERR");
    let a = env.kp(&service, "POST", "/api/v2/event_ack", None).await;
    assert_envelope(&a, 400, "NO_BODY_ERR");
}

// ---- listing: sort, filter, search -----------------------------------------------------------

#[tokio::test]
async fn list_sorts_filters_and_searches() {
    const T0: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z
    let clock = Arc::new(TestClock(AtomicI64::new(T0)));
    let env = env_with(clock.clone()).await;
    let at = |ms: i64| clock.0.store(ms, Ordering::SeqCst);
    let create = |name: &'static str, extra: Value| {
        let env = &env;
        async move {
            let mut resource = json!({"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false});
            for (k, v) in extra.as_object().unwrap() {
                resource[k] = v.clone();
            }
            let a = env
                .admin("POST", "/api/v2/keys", Some(&collection(resource)))
                .await;
            a.body["resources"][0]["id"].as_str().unwrap().to_owned()
        }
    };
    at(T0);
    let a = create("alpha-payroll", json!({"aliases": ["pay-a"]})).await;
    at(T0 + 1000);
    let b = create("beta", json!({"extractable": true})).await;
    at(T0 + 2000);
    let c = create("Gamma-Payroll", json!({})).await;
    at(T0 + 3000);
    env.admin("POST", &format!("/api/v2/keys/{c}/actions/rotate"), None)
        .await;
    at(T0 + 4000);
    let d = create("delta", json!({"expirationDate": "2030-01-01T00:00:00Z"})).await;
    at(T0 + 5000);
    let e = create("epsilon", json!({})).await;
    at(T0 + 6000);
    env.admin("DELETE", &format!("/api/v2/keys/{e}"), None)
        .await;
    at(T0 + 7000);

    // The ids of a listing, and the same query's HEAD count.
    let list = |query: &str| {
        let env = &env;
        let query = query.to_owned();
        async move {
            let a = env
                .kp(
                    &env.admin,
                    "GET",
                    &format!("/api/v2/keys?{query}&totalCount=true"),
                    None,
                )
                .await;
            assert_eq!(a.status, StatusCode::OK, "{query}: {}", a.body);
            let ids: Vec<String> = a.body["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_owned())
                .collect();
            let h = env
                .kp(&env.admin, "HEAD", &format!("/api/v2/keys?{query}"), None)
                .await;
            assert_eq!(h.status, StatusCode::OK, "HEAD {query}");
            let total = a.body["metadata"]["totalCount"].as_u64().unwrap();
            assert_eq!(
                h.headers["key-total"].to_str().unwrap(),
                total.to_string(),
                "HEAD {query}"
            );
            if !query.contains("limit=") && total <= 200 {
                assert_eq!(total, ids.len() as u64, "{query}");
            }
            (ids, a.body["metadata"].clone())
        }
    };
    let owned = |v: &[&String]| v.iter().map(|x| (*x).clone()).collect::<Vec<String>>();
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<String>>()
    };

    // Default order: by id. Sorts, descending with `-`, ties by id.
    assert_eq!(list("").await.0, sorted(vec![&a, &b, &c, &d]));
    assert_eq!(list("sort=creationDate").await.0, owned(&[&a, &b, &c, &d]));
    assert_eq!(list("sort=-creationDate").await.0, owned(&[&d, &c, &b, &a]));
    assert_eq!(
        list("sort=extractable,-creationDate").await.0,
        owned(&[&d, &c, &a, &b])
    );
    assert_eq!(
        list("sort=-lastRotateDate,creationDate").await.0,
        owned(&[&c, &a, &b, &d])
    );
    assert_eq!(list("sort=expirationDate,id").await.0[3], d);
    assert_eq!(
        list("sort=-lastUpdateDate").await.0,
        owned(&[&d, &c, &b, &a])
    );
    assert_eq!(
        list("state=1,5&sort=-state,-deletionDate,creationDate")
            .await
            .0,
        owned(&[&e, &a, &b, &c, &d])
    );
    assert_eq!(list("sort=-id").await.0, {
        let mut v = sorted(vec![&a, &b, &c, &d]);
        v.reverse();
        v
    });
    assert_eq!(
        list("sort=imported,creationDate&limit=2&offset=1").await.0,
        owned(&[&b, &c])
    );

    // Filters: date comparisons (up to three per property), `none`, state and extractable.
    let q = |s: &str| s.replace(' ', "%20").replace('"', "%22");
    let ids = |q: &str| {
        let q = q.to_owned();
        async move { sorted(list(&q).await.0.iter().collect()) }
    };
    assert_eq!(
        ids(&q(r#"filter=creationDate=gte:"2023-11-14T22:13:21Z" creationDate=lt:"2023-11-14T22:13:24Z""#)).await,
        sorted(vec![&b, &c])
    );
    assert_eq!(
        ids(&q(r#"filter=creationDate="2023-11-14T22:13:22Z""#)).await,
        [c.as_str()]
    );
    assert_eq!(
        ids(&q(r#"filter=creationDate=gt:"2023-11-14T22:13:20Z" creationDate=lte:"2023-11-14T22:13:22Z" creationDate=gt:"2023-11-14T22:13:21Z""#)).await,
        [c.as_str()]
    );
    assert_eq!(
        ids(&q("filter=lastRotateDate=none")).await,
        sorted(vec![&a, &b, &d])
    );
    assert_eq!(
        ids(&q(r#"filter=lastRotateDate=gt:"2023-01-01T00:00:00Z""#)).await,
        [c.as_str()]
    );
    assert_eq!(
        ids(&q("filter=expirationDate=none extractable=false")).await,
        sorted(vec![&a, &c])
    );
    assert_eq!(
        ids(&q(r#"filter=expirationDate=lte:"2030-01-01T00:00:00Z""#)).await,
        [d.as_str()]
    );
    assert_eq!(
        ids(&q(
            r#"filter=state=5 deletionDate=gte:"2023-11-14T22:13:26Z""#
        ))
        .await,
        [e.as_str()]
    );
    assert_eq!(
        ids(&q(
            r#"filter=state=1,5 deletionDate=none lastUpdateDate=lt:"2023-11-14T22:13:22Z""#
        ))
        .await,
        sorted(vec![&a, &b])
    );
    assert_eq!(ids(&q("filter=extractable=TRUE")).await, [b.as_str()]);
    assert_eq!(ids(&q("filter=none")).await, sorted(vec![&a, &b, &c, &d]));

    // Search: substring of name or alias by default, options and scopes, metadata.
    let (found, meta) = list("search=PAYROLL").await;
    assert_eq!(sorted(found.iter().collect()), sorted(vec![&a, &c]));
    assert_eq!(meta["incompleteSearch"], false);
    assert_eq!(
        meta["searchQuery"],
        json!({"query": "PAYROLL", "scopes": ["name", "alias"], "not": false, "exact": false})
    );
    assert_eq!(ids("search=exact%3Abeta").await, [b.as_str()]);
    assert!(ids("search=exact%3ABeta").await.is_empty());
    assert_eq!(
        ids("search=name%3Aexact%3AGamma-Payroll").await,
        [c.as_str()]
    );
    assert_eq!(ids("search=alias%3Apay").await, [a.as_str()]);
    assert!(ids("search=name%3Apay-").await.is_empty());
    let (found, meta) = list("search=not%3Apayroll").await;
    assert_eq!(sorted(found.iter().collect()), sorted(vec![&b, &d]));
    assert_eq!(meta["searchQuery"]["not"], true);
    assert!(ids("search=escape%3Anot%3A").await.is_empty());
    // A full id, or an alias, is looked up too and comes first.
    let (found, _) = list(&format!("search={d}")).await;
    assert_eq!(found, [d.as_str()]);
    let (found, _) = list("search=a&sort=-creationDate").await;
    assert_eq!(found, owned(&[&d, &c, &b, &a]));
    let (found, _) = list("search=pay-a").await;
    assert_eq!(found, [a.as_str()]);
    // The looked-up key must meet the other conditions too.
    assert!(
        ids(&format!("search={d}&extractable=true"))
            .await
            .is_empty()
    );

    // Over 5000 keys to search: refused unless the key is named by id or alias.
    let admin = env.core.authenticate(&env.admin).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..4998 {
        let core = env.core.clone();
        let admin = admin.clone();
        let instance = env.instance.clone();
        tasks.spawn(async move {
            core.kms_create_key(
                &admin,
                &instance,
                keyfort_core::NewKey {
                    name: format!("bulk-{i}"),
                    ..keyfort_core::NewKey::default()
                },
                keyfort_core::KeyPolicyUpdate::default(),
                None,
            )
            .await
            .unwrap();
        });
        if tasks.len() >= 64 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let too_broad = env
        .kp(&env.admin, "GET", "/api/v2/keys?search=payroll", None)
        .await;
    assert_envelope(&too_broad, 400, "KEY_SEARCH_TOO_BROAD");
    let h = env
        .kp(&env.admin, "HEAD", "/api/v2/keys?search=payroll", None)
        .await;
    assert_eq!(h.status, StatusCode::BAD_REQUEST);
    let (found, meta) = list(&format!("search={a}")).await;
    assert_eq!(found, [a.as_str()]);
    assert_eq!(meta["incompleteSearch"], true);
    let (found, meta) = list("search=alias%3Apay-a").await;
    assert_eq!(found, [a.as_str()]);
    assert_eq!(meta["incompleteSearch"], true);
    let a_name = env
        .kp(&env.admin, "GET", "/api/v2/keys?search=name%3Apay-a", None)
        .await;
    assert_envelope(&a_name, 400, "KEY_SEARCH_TOO_BROAD");
    // Narrowed below the limit, the search runs.
    assert_eq!(ids("search=e&extractable=true").await, [b.as_str()]);
    assert_eq!(list("").await.1["collectionTotal"], 200);
    let (_, meta) = list("totalCount=true&limit=1").await;
    assert_eq!(meta["totalCount"], 5002);
}

// ---- KMIP adapters --------------------------------------------------------------------------

fn kmip_collection(kind: &str, resource: Value) -> Value {
    json!({"metadata": {"collectionType": format!("application/vnd.ibm.kms.{kind}+json"), "collectionTotal": 1}, "resources": [resource]})
}

#[tokio::test]
async fn kmip_adapters_envelopes_reason_codes_objects_and_audit() {
    let env = env().await;
    let admin = env.admin.clone();
    let crk = env.new_key(false, false).await;
    let standard = env.new_key(true, false).await;
    let disabled = env.new_key(false, false).await;
    env.admin(
        "POST",
        &format!("/api/v2/keys/{disabled}/actions/disable"),
        None,
    )
    .await;
    let adapter_body = |crk: &str, name: &str| {
        kmip_collection(
            "kmip_adapter",
            json!({"profile": "native_1.0", "profile_data": {"crk_id": crk}, "name": name, "description": "for the tests"}),
        )
    };

    // Refused creations.
    let post = |body: Value| {
        let env = &env;
        let admin = admin.clone();
        async move {
            env.kp(&admin, "POST", "/api/v2/kmip_adapters", Some(&body))
                .await
        }
    };
    let a = post(kmip_collection(
        "kmip_adapter",
        json!({"profile": "native_1.0"}),
    ))
    .await;
    assert_envelope(&a, 400, "INVALID_FIELD_ERR");
    let a = post(kmip_collection(
        "kmip_adapter",
        json!({"profile": "kmip_2.0", "profile_data": {"crk_id": crk}}),
    ))
    .await;
    assert_envelope(&a, 400, "KMIP_PROFILE_NOT_SUPPORTED_ERR");
    let a = post(adapter_body(uuid_like(), "a")).await;
    assert_envelope(&a, 404, "NATIVE_CRK_ID_NOT_FOUND_ERR");
    for not_a_crk in [&standard, &disabled] {
        let a = post(adapter_body(not_a_crk, "a")).await;
        assert_envelope(&a, 400, "NATIVE_INVALID_CRK_ERR");
    }
    let a = post(adapter_body(&crk, "has space")).await;
    assert_envelope(&a, 400, "INVALID_FIELD_ERR");
    let a = post(json!({"metadata": {"collectionType": "application/vnd.ibm.kms.kmip_adapter+json", "collectionTotal": 2}, "resources": [{"profile": "native_1.0"}]})).await;
    assert_envelope(&a, 400, "COLLECTION_TOTAL_MISMATCH_ERR");

    // Created: 201, the collection envelope, snake_case fields.
    let a = post(adapter_body(&crk, "first")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        a.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.kmip_adapter+json"
    );
    let created = a.body["resources"][0].clone();
    let adapter = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "first");
    assert_eq!(created["profile"], "native_1.0");
    assert_eq!(created["profile_data"]["crk_id"], crk.as_str());
    assert_eq!(created["description"], "for the tests");
    for field in ["created_at", "created_by", "updated_at", "updated_by"] {
        assert!(
            created[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}"
        );
    }
    let a = post(adapter_body(&crk, "first")).await;
    assert_envelope(&a, 409, "KMIP_ADAPTER_DUPLICATE_NAME_ERR");
    let other_crk = env.new_key(false, false).await;
    let a = post(adapter_body(&other_crk, "")).await;
    assert_envelope(&a, 400, "INVALID_FIELD_ERR");
    let second = env.new_adapter(&other_crk, "second").await;

    // Read by id and by name; list with paging, totalCount and the crk_id filter.
    for id in [adapter.as_str(), "first"] {
        let a = env
            .kp(&admin, "GET", &format!("/api/v2/kmip_adapters/{id}"), None)
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body["resources"][0], created);
    }
    let a = env
        .kp(&admin, "GET", "/api/v2/kmip_adapters/nope", None)
        .await;
    assert_envelope(&a, 404, "KMIP_ADAPTER_NOT_FOUND_ERR");
    let a = env
        .kp(
            &admin,
            "GET",
            "/api/v2/kmip_adapters?limit=1&offset=1&totalCount=true",
            None,
        )
        .await;
    assert_eq!(a.body["metadata"]["collectionTotal"], 1);
    assert_eq!(a.body["metadata"]["totalCount"], 2);
    assert_eq!(a.body["resources"][0]["id"], second.as_str());
    let a = env
        .kp(
            &admin,
            "GET",
            &format!("/api/v2/kmip_adapters?crk_id={crk}"),
            None,
        )
        .await;
    assert_eq!(a.body["resources"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["resources"][0]["id"], adapter.as_str());
    let a = env
        .kp(&admin, "GET", "/api/v2/kmip_adapters?limit=201", None)
        .await;
    assert_envelope(&a, 400, "INVALID_QUERY_PARAM_ERR");

    // Certificates.
    let certs = format!("/api/v2/kmip_adapters/{adapter}/certificates");
    let cert_body = |pem: &str, name: &str| {
        kmip_collection(
            "kmip_client_certificate",
            json!({"certificate": pem, "name": name}),
        )
    };
    let a = env
        .kp(&admin, "POST", &certs, Some(&cert_body("not a pem", "c")))
        .await;
    assert_envelope(&a, 400, "INVALID_FIELD_ERR");
    assert_eq!(
        a.body["resources"][0]["reasons"][0]["target"]["name"],
        "certificate"
    );
    let (der, pem) = fake_certificate(7);
    let a = env
        .kp(&admin, "POST", &certs, Some(&cert_body(&pem, "app")))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        a.headers[header::CONTENT_TYPE],
        "application/vnd.ibm.kms.kmip_client_certificate+json"
    );
    assert_eq!(
        a.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.kmip_client_certificate+json"
    );
    let cert = a.body["resources"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["resources"][0]["certificate"], pem.trim());
    assert_eq!(a.body["resources"][0]["name"], "app");
    let a = env
        .kp(&admin, "POST", &certs, Some(&cert_body(&pem, "again")))
        .await;
    assert_envelope(&a, 409, "KMIP_CERT_DUPLICATE_ERR");
    let a = env
        .kp(
            &admin,
            "POST",
            &format!("/api/v2/kmip_adapters/{second}/certificates"),
            Some(&cert_body(&pem, "again")),
        )
        .await;
    assert_envelope(&a, 409, "KMIP_CERT_DUPLICATE_ERR");
    let a = env
        .kp(
            &admin,
            "POST",
            &certs,
            Some(&cert_body(&fake_certificate(8).1, "app")),
        )
        .await;
    assert_envelope(&a, 409, "KMIP_CERT_DUPLICATE_NAME_ERR");
    // One certificate names one KMIP caller: an adapter's certificate is not also an
    // admin-registered client, and the other way round.
    let admin_caller = env.core.authenticate(&env.admin).await.unwrap();
    assert!(matches!(
        env.core
            .add_kmip_client(&admin_caller, &der, &env.instance, Role::Manager)
            .await,
        Err(keyfort_core::CoreError::AlreadyExists { .. })
    ));
    let (client_der, client_pem) = fake_certificate(9);
    // A KMIP client holds one of the chained roles: not KeyPurge, KmipAdapterManager (whose
    // KMIP side is the adapters' certificates) or Administrator.
    for role in [
        Role::KeyPurge,
        Role::KmipAdapterManager,
        Role::Administrator,
    ] {
        assert!(matches!(
            env.core
                .add_kmip_client(&admin_caller, &client_der, &env.instance, role)
                .await,
            Err(keyfort_core::CoreError::InvalidField { field: "role", .. })
        ));
    }
    env.core
        .add_kmip_client(&admin_caller, &client_der, &env.instance, Role::Manager)
        .await
        .unwrap();
    let a = env
        .kp(
            &admin,
            "POST",
            &certs,
            Some(&cert_body(&client_pem, "client")),
        )
        .await;
    assert_envelope(&a, 409, "KMIP_CERT_DUPLICATE_ERR");
    let a = env
        .kp(&admin, "GET", &format!("{certs}?totalCount=true"), None)
        .await;
    assert_eq!(a.body["metadata"]["totalCount"], 1);
    assert_eq!(a.body["resources"][0]["id"], cert.as_str());
    assert!(a.body["resources"][0].get("certificate").is_none());
    let a = env.kp(&admin, "GET", &format!("{certs}/app"), None).await;
    assert_eq!(a.body["resources"][0]["id"], cert.as_str());
    let a = env
        .kp(&admin, "GET", &format!("{certs}/{}", uuid_like()), None)
        .await;
    assert_envelope(&a, 404, "KMIP_CERT_NOT_FOUND_ERR");

    // An object created by the certificate's KMIP client belongs to the adapter; its material
    // is wrapped by the CRK: disabling the CRK suspends it.
    let object = env.new_adapter_object(&der).await;
    let objects = format!("/api/v2/kmip_adapters/{adapter}/kmip_objects");
    let a = env
        .kp(&admin, "GET", &format!("{objects}?totalCount=true"), None)
        .await;
    assert_eq!(
        a.body["metadata"]["collectionType"],
        "application/vnd.ibm.kms.kmip_object+json"
    );
    assert_eq!(a.body["metadata"]["totalCount"], 1);
    let o = &a.body["resources"][0];
    assert_eq!(o["id"], object.as_str());
    assert_eq!(o["kmip_object_type"], 2);
    assert_eq!(o["state"], 2);
    assert_eq!(o["created_by_kmip_client_cert_id"], cert.as_str());
    let a = env
        .kp(
            &admin,
            "GET",
            &format!("/api/v2/kmip_adapters/{second}/kmip_objects/{object}"),
            None,
        )
        .await;
    assert_envelope(&a, 404, "KMIP_OBJECT_NOT_FOUND_ERR");
    let a = env
        .kp(&admin, "GET", &format!("{objects}?state=9"), None)
        .await;
    assert_envelope(&a, 400, "INVALID_QUERY_PARAM_ERR");
    let session = env.core.kmip_session(&der, None).await.unwrap();
    let (_, material) = env
        .core
        .object_material(&session.caller, &env.instance, &object)
        .await
        .unwrap();
    assert_eq!(material.len(), 32);
    // The adapter's client reaches only the adapter's objects.
    assert!(matches!(
        env.core
            .key(&session.caller, &env.instance, &standard)
            .await,
        Err(keyfort_core::CoreError::KeyNotFound { .. })
    ));
    assert!(matches!(
        env.core
            .object_material(&session.caller, &env.instance, &standard)
            .await,
        Err(keyfort_core::CoreError::KeyNotFound { .. })
    ));
    let (total, visible) = env
        .core
        .locate_objects(&session.caller, &env.instance, |_| true, 0, None)
        .await
        .unwrap();
    assert_eq!((total, visible), (1, vec![object.clone()]));
    env.admin("POST", &format!("/api/v2/keys/{crk}/actions/disable"), None)
        .await;
    assert!(matches!(
        env.core
            .object_material(&session.caller, &env.instance, &object)
            .await,
        Err(keyfort_core::CoreError::KeyNotUsable { ref id, .. }) if *id == crk
    ));
    env.admin("POST", &format!("/api/v2/keys/{crk}/actions/enable"), None)
        .await;
    let (_, again) = env
        .core
        .object_material(&session.caller, &env.instance, &object)
        .await
        .unwrap();
    assert_eq!(*again, *material);
    // Rotating the CRK: the object stays readable (it names the CRK version that wraps it); a
    // new object is wrapped by the new version.
    env.admin("POST", &format!("/api/v2/keys/{crk}/actions/rotate"), None)
        .await;
    let (_, after_rotation) = env
        .core
        .object_material(&session.caller, &env.instance, &object)
        .await
        .unwrap();
    assert_eq!(*after_rotation, *material);
    let newer = env.new_adapter_object(&der).await;
    let mut crk_versions = Vec::new();
    for id in [&object, &newer] {
        let k = env
            .core
            .key(&session.caller, &env.instance, id)
            .await
            .unwrap();
        crk_versions.push(k.attributes["kmip_adapter"]["crk_version_id"].clone());
    }
    assert_ne!(crk_versions[0], crk_versions[1]);
    env.core
        .object_material(&session.caller, &env.instance, &newer)
        .await
        .unwrap();
    env.admin(
        "DELETE",
        &format!("/api/v2/kmip_adapters/{adapter}/kmip_objects/{newer}?force=true"),
        None,
    )
    .await;
    // Another KMIP client re-keying an adapter's object (KMIP Re-key copies the attributes)
    // makes a key outside the adapter, readable without the CRK.
    let other_client = env.core.kmip_session(&client_der, None).await.unwrap();
    let rekeyed = env
        .core
        .rekey_object(&other_client.caller, &env.instance, &object, |old| {
            old.attributes.clone()
        })
        .await
        .unwrap();
    assert!(!rekeyed.attributes.contains_key("kmip_adapter"));
    let (_, rekeyed_material) = env
        .core
        .object_material(&other_client.caller, &env.instance, &rekeyed.id)
        .await
        .unwrap();
    assert_eq!(rekeyed_material.len(), 32);
    // Outside the KMIP protocol an adapter's object is not a key; the re-keyed one is.
    assert!(matches!(
        env.core.key(&admin_caller, &env.instance, &object).await,
        Err(keyfort_core::CoreError::KeyNotFound { .. })
    ));
    env.core
        .key(&admin_caller, &env.instance, &rekeyed.id)
        .await
        .unwrap();

    // An adapter with live objects stays; an active object needs `force`.
    let a = env
        .kp(
            &admin,
            "DELETE",
            &format!("/api/v2/kmip_adapters/{adapter}"),
            None,
        )
        .await;
    assert_envelope(&a, 409, "KMIP_ADAPTER_HAS_OBJECTS_ERR");
    let a = env
        .kp(&admin, "DELETE", &format!("{objects}/{object}"), None)
        .await;
    assert_envelope(&a, 409, "KEY_ACTION_INVALID_STATE_ERR");
    let a = env
        .kp(
            &admin,
            "DELETE",
            &format!("{objects}/{object}?force=true"),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = env
        .kp(&admin, "GET", &format!("{objects}/{object}"), None)
        .await;
    assert_eq!(a.body["resources"][0]["state"], 5);
    assert!(a.body["resources"][0]["destroyed_at"].is_string());
    let a = env
        .kp(&admin, "GET", &format!("{objects}?totalCount=true"), None)
        .await;
    assert_eq!(a.body["metadata"]["totalCount"], 0);
    let a = env
        .kp(&admin, "GET", &format!("{objects}?state=5"), None)
        .await;
    assert_eq!(a.body["resources"][0]["id"], object.as_str());
    assert!(
        env.core
            .object_material(&session.caller, &env.instance, &object)
            .await
            .is_err()
    );

    // Deleting the certificate refuses its next session; then the adapter goes.
    let a = env
        .kp(&admin, "DELETE", &format!("{certs}/{cert}"), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert!(matches!(
        env.core.kmip_session(&der, None).await,
        Err(keyfort_core::CoreError::Unauthenticated(_))
    ));
    let a = env
        .kp(&admin, "DELETE", &format!("{certs}/{cert}"), None)
        .await;
    assert_envelope(&a, 404, "KMIP_CERT_NOT_FOUND_ERR");
    let a = env
        .kp(
            &admin,
            "DELETE",
            &format!("/api/v2/kmip_adapters/{adapter}"),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = env
        .kp(
            &admin,
            "GET",
            &format!("/api/v2/kmip_adapters/{adapter}"),
            None,
        )
        .await;
    assert_envelope(&a, 404, "KMIP_ADAPTER_NOT_FOUND_ERR");

    // Every request is audited: changes, reads and refusals.
    let created = env.events("kmip_adapter.create", &adapter).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].outcome, "success");
    assert_eq!(created[0].details["crk_id"], crk.as_str());
    let deletes = env.events("kmip_adapter.delete", &adapter).await;
    assert_eq!(
        deletes
            .iter()
            .map(|e| e.outcome.as_str())
            .collect::<Vec<_>>(),
        ["failure", "success"]
    );
    assert_eq!(env.events("kmip_certificate.create", &cert).await.len(), 1);
    let cert_deletes = env.events("kmip_certificate.delete", &cert).await;
    assert_eq!(
        cert_deletes
            .iter()
            .map(|e| e.outcome.as_str())
            .collect::<Vec<_>>(),
        ["success", "failure"]
    );
    assert_eq!(env.events("kmip_object.delete", &object).await.len(), 2);
    let reader = env.token_for("reader", Role::Reader, &env.instance).await;
    let a = env
        .kp(
            &reader,
            "POST",
            "/api/v2/kmip_adapters",
            Some(&adapter_body(&crk, "x")),
        )
        .await;
    assert_envelope(&a, 401, "UNAUTHORIZED_ERR");
    let denied = env.events("kmip_adapter.create", "x").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].outcome, "denied");
}
