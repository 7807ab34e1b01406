//! Adversarial checks of the Key Protect v2 door over a real core and SQLite store: key-ring
//! scoped grants, the keyCreateImportAccess policy, dual authorization, purge and restore
//! waiting periods, token revocation and forgery, ciphertexts of other keys, input limits, and
//! the audit events of refused requests.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keyfort_core::{
    Clock, CoreConfig, DevSetup, Keyfort, KmsTimings, PrincipalKind, Role, RoleGrant, Scope,
    SystemClock, TokenSigner,
};
use keyfort_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// Long enough for the waiting periods the tests step over with one token.
const TOKEN_TTL: Duration = Duration::from_secs(60 * 24 * 3600);

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl TestClock {
    fn advance(&self, d: Duration) {
        self.0
            .fetch_add(i64::try_from(d.as_millis()).unwrap(), Ordering::SeqCst);
    }
}

struct Env {
    _dir: tempfile::TempDir,
    app: Router,
    core: Keyfort,
    instance: String,
    admin: String,
    clock: Arc<TestClock>,
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body["resources"][0]["reasons"][0]["code"]
            .as_str()
            .unwrap_or("")
    }
}

/// An env with Key Protect's waiting periods (`KmsTimings::default()`) unless told otherwise.
async fn env_with(timings: KmsTimings) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keyfort.db"))
        .await
        .unwrap();
    let mut config = CoreConfig::new(TOKEN_TTL, TokenSigner::generate().unwrap());
    config.kms_timings = timings;
    let clock = Arc::new(TestClock(AtomicI64::new(SystemClock.now_ms())));
    let core = Keyfort::open_with_clock(Arc::new(store), config, clock.clone())
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
        clock,
    }
}

/// Waiting periods out of the way.
fn quick() -> KmsTimings {
    KmsTimings {
        change_guard: Duration::ZERO,
        rotate_guard: Duration::ZERO,
        purge_after: Duration::ZERO,
        ..KmsTimings::default()
    }
}

fn collection(kind: &str, resource: Value) -> Value {
    json!({"metadata": {"collectionType": format!("application/vnd.ibm.kms.{kind}+json"), "collectionTotal": 1}, "resources": [resource]})
}

fn key_body(name: &str, extractable: bool) -> Value {
    collection(
        "key",
        json!({"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": extractable}),
    )
}

const MATERIAL: &str = "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo=";

impl Env {
    async fn raw(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        instance: &str,
        body: Body,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("Bluemix-Instance", instance)
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let response = self
            .app
            .clone()
            .oneshot(b.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let _headers: HeaderMap = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer { status, body }
    }

    async fn call(
        &self,
        token: &str,
        method: &str,
        uri: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
        self.raw(method, uri, token, &self.instance, body, extra)
            .await
    }

    async fn admin(
        &self,
        method: &str,
        uri: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let a = self
            .call(&self.admin.clone(), method, uri, body, extra)
            .await;
        assert!(
            a.status.is_success(),
            "{method} {uri}: {} {}",
            a.status,
            a.body
        );
        a
    }

    /// A key made by the administrator in `ring` (the default ring when `None`).
    async fn key_in(&self, ring: Option<&str>, extractable: bool) -> String {
        let extra: Vec<(&str, &str)> = ring.map(|r| ("X-Kms-Key-Ring", r)).into_iter().collect();
        let a = self
            .admin(
                "POST",
                "/api/v2/keys",
                Some(&key_body("k", extractable)),
                &extra,
            )
            .await;
        a.body["resources"][0]["id"].as_str().unwrap().to_owned()
    }

    async fn dual_auth_key(&self) -> String {
        let mut body = key_body("dual", false);
        body["resources"][0]["dualAuthDelete"] = json!({"enabled": true});
        let a = self
            .admin(
                "POST",
                "/api/v2/keys_with_policy_overrides",
                Some(&body),
                &[],
            )
            .await;
        a.body["resources"][0]["id"].as_str().unwrap().to_owned()
    }

    /// A principal with `grants`, and a token of it.
    async fn principal(&self, name: &str, grants: Vec<RoleGrant>) -> (String, String) {
        let admin = self.core.authenticate(&self.admin).await.unwrap();
        let p = self
            .core
            .create_principal(
                &admin,
                Some(&self.instance),
                name,
                PrincipalKind::User,
                grants,
            )
            .await
            .unwrap();
        let (_, secret) = self.core.create_api_key(&admin, &p.id, "k").await.unwrap();
        let token = self
            .core
            .exchange_api_key(secret.expose())
            .await
            .unwrap()
            .token;
        (p.id, token)
    }

    async fn token_for(&self, name: &str, role: Role) -> String {
        let scope = Scope::Instance(self.instance.clone());
        self.principal(name, vec![RoleGrant { role, scope }])
            .await
            .1
    }

    async fn ring_token(&self, name: &str, role: Role, ring: &str) -> String {
        let scope = Scope::KeyRing {
            instance: self.instance.clone(),
            ring: ring.to_owned(),
        };
        self.principal(name, vec![RoleGrant { role, scope }])
            .await
            .1
    }

    async fn set_instance_policy(&self, policy: &str, data: Value) {
        let body = collection(
            "policy",
            json!({"policy_type": policy, "policy_data": data}),
        );
        self.admin(
            "PUT",
            &format!("/api/v2/instance/policies?policy={policy}"),
            Some(&body),
            &[],
        )
        .await;
    }

    async fn state_of(&self, key: &str) -> Value {
        let a = self
            .admin("GET", &format!("/api/v2/keys/{key}/metadata"), None, &[])
            .await;
        a.body["resources"][0]["state"].clone()
    }

    /// Outcomes of the audit events of `action` on `target`, oldest first.
    async fn outcomes(&self, action: &str, target: &str) -> Vec<String> {
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
            .into_iter()
            .map(|e| e.outcome)
            .collect()
    }
}

fn assert_refused(a: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!(a.status.as_u16(), status, "{what}: {}", a.body);
    assert_eq!(a.reason(), code, "{what}: {}", a.body);
    assert_eq!(
        a.body["metadata"]["collectionType"], "application/vnd.ibm.kms.error+json",
        "{what}"
    );
    assert!(a.body.get("plaintext").is_none(), "{what}: {}", a.body);
    assert!(a.body.get("ciphertext").is_none(), "{what}: {}", a.body);
}

// ---- key-ring scoped grants -------------------------------------------------------------------

#[tokio::test]
async fn a_key_ring_grant_reaches_no_key_of_another_ring() {
    let env = env_with(quick()).await;
    for ring in ["r1", "r2"] {
        env.admin("POST", &format!("/api/v2/key_rings/{ring}"), None, &[])
            .await;
    }
    let k1 = env.key_in(Some("r1"), false).await;
    let k2 = env.key_in(Some("r2"), false).await;
    let s2 = env.key_in(Some("r2"), true).await;
    let writer = env.ring_token("writer-r1", Role::Writer, "r1").await;
    let manager = env.ring_token("manager-r1", Role::Manager, "r1").await;

    // Inside its ring the Writer works.
    let a = env
        .call(
            &writer,
            "POST",
            &format!("/api/v2/keys/{k1}/actions/wrap"),
            Some(&json!({})),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let wrapped = a.body["ciphertext"].as_str().unwrap().to_owned();

    // Nothing of r2, whether the ring header names r1, r2 or nothing.
    let admin_wrap = env
        .admin(
            "POST",
            &format!("/api/v2/keys/{k2}/actions/wrap"),
            Some(&json!({})),
            &[],
        )
        .await;
    let ct2 = admin_wrap.body["ciphertext"].as_str().unwrap().to_owned();
    for ring in [None, Some("r1"), Some("r2")] {
        let extra: Vec<(&str, &str)> = ring.map(|r| ("X-Kms-Key-Ring", r)).into_iter().collect();
        for token in [&writer, &manager] {
            let calls: Vec<(&str, String, Option<Value>)> = vec![
                (
                    "POST",
                    format!("/api/v2/keys/{k2}/actions/wrap"),
                    Some(json!({})),
                ),
                (
                    "POST",
                    format!("/api/v2/keys/{k2}/actions/unwrap"),
                    Some(json!({"ciphertext": ct2})),
                ),
                (
                    "POST",
                    format!("/api/v2/keys/{k2}/actions/rewrap"),
                    Some(json!({"ciphertext": ct2})),
                ),
                ("POST", format!("/api/v2/keys/{k2}/actions/rotate"), None),
                ("POST", format!("/api/v2/keys/{k2}/actions/disable"), None),
                (
                    "POST",
                    format!("/api/v2/keys/{k2}/actions/setKeyForDeletion"),
                    None,
                ),
                ("POST", format!("/api/v2/keys/{k2}?action=rotate"), None),
                ("GET", format!("/api/v2/keys/{k2}"), None),
                ("GET", format!("/api/v2/keys/{s2}"), None),
                ("GET", format!("/api/v2/keys/{k2}/metadata"), None),
                ("GET", format!("/api/v2/keys/{k2}/versions"), None),
                ("GET", format!("/api/v2/keys/{k2}/policies"), None),
                ("GET", format!("/api/v2/keys/{k2}/registrations"), None),
                ("DELETE", format!("/api/v2/keys/{k2}"), None),
                (
                    "POST",
                    format!("/api/v2/keys/{k2}/aliases/stolen-alias"),
                    None,
                ),
                (
                    "PATCH",
                    format!("/api/v2/keys/{k2}"),
                    Some(json!({"keyRingID": "r1"})),
                ),
            ];
            for (method, uri, body) in calls {
                let a = env.call(token, method, &uri, body.as_ref(), &extra).await;
                assert!(
                    a.status == StatusCode::UNAUTHORIZED || a.status == StatusCode::NOT_FOUND,
                    "{method} {uri} with ring {ring:?}: {} {}",
                    a.status,
                    a.body
                );
                assert!(
                    !a.body.to_string().contains("\"payload\""),
                    "{uri}: {}",
                    a.body
                );
            }
        }
    }
    // A ciphertext of k2 does not unwrap under k1 either.
    let a = env
        .call(
            &writer,
            "POST",
            &format!("/api/v2/keys/{k1}/actions/unwrap"),
            Some(&json!({"ciphertext": ct2})),
            &[],
        )
        .await;
    assert_refused(
        &a,
        422,
        "UNPROCESSABLE_CIPHERTEXT_ERR",
        "k2 ciphertext under k1",
    );
    let a = env
        .call(
            &writer,
            "POST",
            &format!("/api/v2/keys/{k1}/actions/unwrap"),
            Some(&json!({"ciphertext": wrapped})),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // The r1 Manager may not move its key out to r2.
    let a = env
        .call(
            &manager,
            "PATCH",
            &format!("/api/v2/keys/{k1}"),
            Some(&json!({"keyRingID": "r2"})),
            &[],
        )
        .await;
    assert_refused(&a, 401, "UNAUTHORIZED_ERR", "move r1 -> r2");
    assert_eq!(
        env.admin("GET", &format!("/api/v2/keys/{k1}/metadata"), None, &[])
            .await
            .body["resources"][0]["keyRingID"],
        "r1"
    );
    assert_eq!(
        env.admin("GET", &format!("/api/v2/keys/{k2}/metadata"), None, &[])
            .await
            .body["resources"][0]["keyRingID"],
        "r2"
    );
    assert_eq!(env.state_of(&k2).await, 1);

    // Listing, counting and searching show r1 only.
    let a = env
        .call(
            &writer,
            "GET",
            "/api/v2/keys",
            None,
            &[("X-Kms-Key-Ring", "r1")],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let ids: Vec<&str> = a.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![k1.as_str()]);
    for (method, uri) in [
        ("GET", format!("/api/v2/keys?search={k2}")),
        ("GET", "/api/v2/keys".to_owned()),
        ("HEAD", "/api/v2/keys".to_owned()),
    ] {
        for ring in [None, Some("r2")] {
            let extra: Vec<(&str, &str)> =
                ring.map(|r| ("X-Kms-Key-Ring", r)).into_iter().collect();
            let a = env.call(&writer, method, &uri, None, &extra).await;
            assert_eq!(
                a.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {ring:?}"
            );
        }
    }
    let a = env
        .call(
            &writer,
            "GET",
            &format!("/api/v2/keys?search={k2}"),
            None,
            &[("X-Kms-Key-Ring", "r1")],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body["resources"].as_array().unwrap().len(),
        0,
        "{}",
        a.body
    );

    // The Writer creates in its ring only, and counts what is there.
    let a = env
        .call(
            &writer,
            "POST",
            "/api/v2/keys",
            Some(&key_body("mine", false)),
            &[("X-Kms-Key-Ring", "r1")],
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["resources"][0]["keyRingID"], "r1");
    for ring in [None, Some("r2"), Some("default")] {
        let extra: Vec<(&str, &str)> = ring.map(|r| ("X-Kms-Key-Ring", r)).into_iter().collect();
        let a = env
            .call(
                &writer,
                "POST",
                "/api/v2/keys",
                Some(&key_body("theirs", false)),
                &extra,
            )
            .await;
        assert_refused(&a, 401, "UNAUTHORIZED_ERR", "create outside r1");
    }
    let mut b = Request::builder()
        .method("HEAD")
        .uri("/api/v2/keys")
        .header(header::AUTHORIZATION, format!("Bearer {writer}"))
        .header("Bluemix-Instance", &env.instance)
        .header("X-Kms-Key-Ring", "r1")
        .body(Body::empty())
        .unwrap();
    b.extensions_mut().insert(axum::extract::ConnectInfo(
        "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
    ));
    let response = env.app.clone().oneshot(b).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["key-total"], "2");

    // Each refusal is in the audit trail as denied.
    let outcomes = env.outcomes("key.wrap", &k2).await;
    assert!(outcomes.iter().any(|o| o == "denied"), "{outcomes:?}");
    let outcomes = env.outcomes("key.move", &k1).await;
    assert!(outcomes.iter().any(|o| o == "denied"), "{outcomes:?}");
}

// ---- keyCreateImportAccess ----------------------------------------------------------------------

/// `payload`, `encryptionAlgorithm`, `encryptedNonce` and `iv` of `material` sealed to the
/// instance's import token.
async fn sealed_resource(env: &Env, name: &str, material: &[u8]) -> Value {
    env.admin(
        "POST",
        "/api/v2/import_token",
        Some(&json!({"expiration": 600, "maxAllowedRetrievals": 10})),
        &[],
    )
    .await;
    let got = env.admin("GET", "/api/v2/import_token", None, &[]).await;
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
    collection(
        "key",
        json!({
            "type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false,
            "payload": STANDARD.encode(payload), "encryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "encryptedNonce": STANDARD.encode(encrypted_nonce), "iv": STANDARD.encode(iv),
        }),
    )
}

fn imported_body(name: &str, extractable: bool) -> Value {
    let mut b = key_body(name, extractable);
    b["resources"][0]["payload"] = json!(MATERIAL);
    b
}

async fn key_count(env: &Env) -> usize {
    env.admin("GET", "/api/v2/keys?limit=5000", None, &[])
        .await
        .body["resources"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn each_create_import_flag_is_enforced() {
    let env = env_with(quick()).await;
    let writer = env.token_for("writer", Role::Writer).await;
    let flags = [
        "create_root_key",
        "create_standard_key",
        "import_root_key",
        "import_standard_key",
    ];
    for denied in flags {
        let mut attributes = serde_json::Map::new();
        for f in flags {
            attributes.insert(f.to_owned(), json!(f != denied));
        }
        env.set_instance_policy(
            "keyCreateImportAccess",
            json!({"enabled": true, "attributes": attributes}),
        )
        .await;
        let bodies = [
            ("create_root_key", key_body("r", false)),
            ("create_standard_key", key_body("s", true)),
            ("import_root_key", imported_body("ir", false)),
            ("import_standard_key", imported_body("is", true)),
        ];
        for (kind, body) in bodies {
            let before = key_count(&env).await;
            let a = env
                .call(&writer, "POST", "/api/v2/keys", Some(&body), &[])
                .await;
            if kind == denied {
                assert_refused(&a, 409, "KEY_CREATE_IMPORT_ACCESS_ERR", kind);
                assert_eq!(key_count(&env).await, before, "{kind}");
            } else {
                assert_eq!(
                    a.status,
                    StatusCode::CREATED,
                    "{kind} with {denied} off: {}",
                    a.body
                );
            }
        }
        // A secure import is an import of a root key.
        let sealed = sealed_resource(&env, "sealed", &[0x5a; 32]).await;
        let a = env
            .call(&writer, "POST", "/api/v2/keys", Some(&sealed), &[])
            .await;
        if denied == "import_root_key" {
            assert_refused(&a, 409, "KEY_CREATE_IMPORT_ACCESS_ERR", "secure import");
        } else {
            assert_eq!(
                a.status,
                StatusCode::CREATED,
                "secure import with {denied} off: {}",
                a.body
            );
        }
    }
}

/// `enforce_token: true` means key material comes in only sealed to the import token: a
/// plain-text import is refused, a secure import goes through.
#[tokio::test]
async fn enforce_token_refuses_plain_imports() {
    let env = env_with(quick()).await;
    let writer = env.token_for("writer", Role::Writer).await;
    env.set_instance_policy(
        "keyCreateImportAccess",
        json!({"enabled": true, "attributes": {"enforce_token": true}}),
    )
    .await;
    let before = key_count(&env).await;
    for extractable in [false, true] {
        let a = env
            .call(
                &writer,
                "POST",
                "/api/v2/keys",
                Some(&imported_body("plain", extractable)),
                &[],
            )
            .await;
        assert_refused(&a, 409, "KEY_CREATE_IMPORT_ACCESS_ERR", "plain import");
    }
    assert_eq!(key_count(&env).await, before);
    let sealed = sealed_resource(&env, "sealed", &[0x5a; 32]).await;
    let a = env
        .call(&writer, "POST", "/api/v2/keys", Some(&sealed), &[])
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    // Generated keys carry no material in the request: allowed.
    let a = env
        .call(
            &writer,
            "POST",
            "/api/v2/keys",
            Some(&key_body("gen", false)),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
}

// ---- dual authorization -------------------------------------------------------------------------

#[tokio::test]
async fn dual_authorization_needs_two_people_within_the_window() {
    let env = env_with(quick()).await;
    let alice = env.token_for("alice", Role::Manager).await;
    let bob = env.token_for("bob", Role::Manager).await;
    let set = |k: &str| format!("/api/v2/keys/{k}/actions/setKeyForDeletion");
    let unset = |k: &str| format!("/api/v2/keys/{k}/actions/unsetKeyForDeletion");
    let del = |k: &str| format!("/api/v2/keys/{k}");

    // The approver cannot delete herself.
    let k = env.dual_auth_key().await;
    assert_eq!(
        env.call(&alice, "POST", &set(&k), None, &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let a = env.call(&alice, "DELETE", &del(&k), None, &[]).await;
    assert_refused(&a, 409, "AUTHORIZATIONS_NOT_MET", "same principal");
    assert_eq!(env.state_of(&k).await, 1);
    // An approval withdrawn by someone else no longer counts.
    assert_eq!(
        env.call(&bob, "POST", &unset(&k), None, &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let a = env.call(&bob, "DELETE", &del(&k), None, &[]).await;
    assert_refused(&a, 409, "AUTHORIZATIONS_NOT_MET", "after unset");
    assert_eq!(env.state_of(&k).await, 1);

    // An approval expires after seven days.
    assert_eq!(
        env.call(&alice, "POST", &set(&k), None, &[]).await.status,
        StatusCode::NO_CONTENT
    );
    env.clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    let a = env.call(&bob, "DELETE", &del(&k), None, &[]).await;
    assert_refused(&a, 409, "AUTHORIZATIONS_NOT_MET", "expired approval");
    assert_eq!(env.state_of(&k).await, 1);

    // A fresh approval by another principal lets the delete through.
    assert_eq!(
        env.call(&alice, "POST", &set(&k), None, &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let a = env.call(&bob, "DELETE", &del(&k), None, &[]).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(env.state_of(&k).await, 5);
}

// ---- purge and restore --------------------------------------------------------------------------

#[tokio::test]
async fn purge_and_restore_keep_their_waiting_periods() {
    let env = env_with(KmsTimings::default()).await;
    let manager = env.token_for("manager", Role::Manager).await;
    let purger = env.token_for("purger", Role::KeyPurge).await;
    let k = env.key_in(None, false).await;
    let other = env.key_in(None, false).await;

    // Restore of a key that was not deleted.
    let a = env
        .call(
            &manager,
            "POST",
            &format!("/api/v2/keys/{k}/restore"),
            None,
            &[],
        )
        .await;
    assert_refused(&a, 409, "KEY_ACTION_INVALID_STATE_ERR", "restore active");
    env.admin("DELETE", &format!("/api/v2/keys/{k}"), None, &[])
        .await;
    env.admin("DELETE", &format!("/api/v2/keys/{other}"), None, &[])
        .await;

    let purge = format!("/api/v2/keys/{k}/purge");
    let a = env.call(&purger, "DELETE", &purge, None, &[]).await;
    assert_refused(&a, 409, "REQ_TOO_EARLY_ERR", "purge before 4 h");
    env.clock.advance(Duration::from_secs(4 * 3600 + 1));
    let a = env.call(&manager, "DELETE", &purge, None, &[]).await;
    assert_refused(&a, 401, "UNAUTHORIZED_ERR", "purge by a Manager");
    assert_eq!(env.state_of(&k).await, 5);
    let a = env.call(&purger, "DELETE", &purge, None, &[]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = env
        .call(
            &manager,
            "POST",
            &format!("/api/v2/keys/{k}/restore"),
            None,
            &[],
        )
        .await;
    assert_refused(&a, 404, "KEY_NOT_FOUND_ERR", "restore after purge");

    // Past the 30-day restore window.
    env.clock.advance(Duration::from_secs(30 * 24 * 3600));
    let a = env
        .call(
            &manager,
            "POST",
            &format!("/api/v2/keys/{other}/restore"),
            None,
            &[],
        )
        .await;
    assert_refused(&a, 400, "KEY_RESTORE_EXPIRED", "restore after 30 days");
    assert_eq!(env.state_of(&other).await, 5);
}

// ---- tokens -------------------------------------------------------------------------------------

/// `token` with its header or payload replaced (the signature kept).
fn forged(
    token: &str,
    header: Option<Value>,
    payload: Option<Value>,
    signature: Option<&str>,
) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    if let Some(h) = header {
        parts[0] = URL_SAFE_NO_PAD.encode(h.to_string());
    }
    if let Some(p) = payload {
        parts[1] = URL_SAFE_NO_PAD.encode(p.to_string());
    }
    if let Some(s) = signature {
        parts[2] = s.to_owned();
    }
    parts.join(".")
}

#[tokio::test]
async fn revoked_rotated_and_forged_tokens_are_refused() {
    let env = env_with(quick()).await;
    let admin = env.core.authenticate(&env.admin).await.unwrap();
    let (pid, _) = env
        .principal(
            "user",
            vec![RoleGrant {
                role: Role::Manager,
                scope: Scope::Instance(env.instance.clone()),
            }],
        )
        .await;
    let new_token = |secret: keyfort_core::ApiKeySecret| {
        let core = env.core.clone();
        async move { core.exchange_api_key(secret.expose()).await.unwrap().token }
    };
    let list = "/api/v2/keys";

    // Revoked: a token issued before no longer works, at once.
    let (key_id, secret) = env.core.create_api_key(&admin, &pid, "a").await.unwrap();
    let token = new_token(secret).await;
    assert_eq!(
        env.call(&token, "GET", list, None, &[]).await.status,
        StatusCode::OK
    );
    let a = env
        .call(
            &env.admin.clone(),
            "DELETE",
            &format!("/api/keyfort/v1/api_keys/{key_id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = env.call(&token, "GET", list, None, &[]).await;
    assert_refused(&a, 401, "UNAUTHORIZED_ERR", "revoked key");

    // Rotated: the old key's tokens stop, the new key's work.
    let (key_id, secret) = env.core.create_api_key(&admin, &pid, "b").await.unwrap();
    let token = new_token(secret).await;
    assert_eq!(
        env.call(&token, "GET", list, None, &[]).await.status,
        StatusCode::OK
    );
    let a = env
        .call(
            &env.admin.clone(),
            "POST",
            &format!("/api/keyfort/v1/api_keys/{key_id}/rotate"),
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a2 = env.call(&token, "GET", list, None, &[]).await;
    assert_refused(&a2, 401, "UNAUTHORIZED_ERR", "rotated key");
    let fresh = env
        .core
        .exchange_api_key(a.body["api_key"].as_str().unwrap())
        .await
        .unwrap()
        .token;
    assert_eq!(
        env.call(&fresh, "GET", list, None, &[]).await.status,
        StatusCode::OK
    );

    // Disabled principal.
    env.core
        .update_principal(&admin, &pid, None, Some(true))
        .await
        .unwrap();
    let a = env.call(&fresh, "GET", list, None, &[]).await;
    assert_refused(&a, 401, "UNAUTHORIZED_ERR", "disabled principal");

    // Forgeries of a valid token.
    let good = env.token_for("good", Role::Reader).await;
    let parts: Vec<&str> = good.split('.').collect();
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let admin_sub = admin.principal.id.clone();
    let mut as_admin = payload.clone();
    as_admin["sub"] = json!(admin_sub);
    let mut later = payload.clone();
    later["exp"] = json!(payload["exp"].as_i64().unwrap() + 86_400);
    let mut other_issuer = payload.clone();
    other_issuer["iss"] = json!("https://iam.cloud.ibm.com/identity");
    let cases = [
        (
            "alg none",
            forged(
                &good,
                Some(json!({"alg": "none", "typ": "JWT"})),
                None,
                Some(""),
            ),
        ),
        (
            "alg HS256",
            forged(
                &good,
                Some(json!({"alg": "HS256", "typ": "JWT"})),
                None,
                None,
            ),
        ),
        ("other subject", forged(&good, None, Some(as_admin), None)),
        ("longer life", forged(&good, None, Some(later), None)),
        (
            "other issuer",
            forged(&good, None, Some(other_issuer), None),
        ),
        ("no signature", forged(&good, None, None, Some(""))),
        ("two parts", parts[..2].join(".")),
    ];
    for (what, token) in cases {
        let a = env.call(&token, "GET", list, None, &[]).await;
        assert_refused(&a, 401, "UNAUTHORIZED_ERR", what);
    }
    // Expired.
    env.clock.advance(TOKEN_TTL + Duration::from_secs(1));
    let a = env.call(&good, "GET", list, None, &[]).await;
    assert_refused(&a, 401, "UNAUTHORIZED_ERR", "expired");
}

// ---- input limits -------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_and_malformed_input_is_refused_in_key_protect_terms() {
    let env = env_with(quick()).await;
    let admin = env.admin.clone();
    let k = env.key_in(None, false).await;

    // Paging.
    for (uri, status, code) in [
        ("/api/v2/keys?limit=5001", 400, "INVALID_QUERY_PARAM_ERR"),
        ("/api/v2/keys?limit=0", 400, "INVALID_QUERY_PARAM_ERR"),
        ("/api/v2/keys?limit=-1", 400, "INVALID_QUERY_PARAM_ERR"),
        (
            "/api/v2/keys?limit=99999999999999999999999",
            400,
            "INVALID_QUERY_PARAM_ERR",
        ),
    ] {
        let a = env.call(&admin, "GET", uri, None, &[]).await;
        assert_refused(&a, status, code, uri);
    }
    for uri in [
        "/api/v2/keys?offset=18446744073709551615".to_owned(),
        "/api/v2/keys?offset=9223372036854775808".to_owned(),
        "/api/v2/key_rings?offset=18446744073709551615".to_owned(),
        format!("/api/v2/keys/{k}/versions?offset=18446744073709551615"),
        "/api/v2/keys/registrations?offset=18446744073709551615".to_owned(),
    ] {
        let a = env.call(&admin, "GET", &uri, None, &[]).await;
        assert!(
            a.status == StatusCode::OK || a.status == StatusCode::BAD_REQUEST,
            "{uri}: {} {}",
            a.status,
            a.body
        );
        if a.status == StatusCode::OK {
            assert_eq!(a.body["resources"].as_array().unwrap().len(), 0, "{uri}");
        }
    }

    // Key fields beyond their limits change nothing.
    let before = key_count(&env).await;
    let long = "n".repeat(10_000);
    let mut bodies = Vec::new();
    let mut b = key_body(&long, false);
    bodies.push(("long name", b.clone()));
    b = key_body("d", false);
    b["resources"][0]["description"] = json!("d".repeat(241));
    bodies.push(("long description", b.clone()));
    b = key_body("t", false);
    b["resources"][0]["tags"] = json!(vec!["t"; 31]);
    bodies.push(("too many tags", b.clone()));
    b = key_body("t", false);
    b["resources"][0]["tags"] = json!(["t".repeat(31)]);
    bodies.push(("long tag", b.clone()));
    b = key_body("a", false);
    b["resources"][0]["aliases"] = json!(["a1", "a2", "a3", "a4", "a5", "a6"]);
    bodies.push(("six aliases", b.clone()));
    b = key_body("a", false);
    b["resources"][0]["aliases"] = json!(["a".repeat(91)]);
    bodies.push(("long alias", b.clone()));
    b = key_body("a", false);
    b["resources"][0]["aliases"] = json!(["keys"]);
    bodies.push(("reserved alias", b.clone()));
    for (what, body) in bodies {
        let a = env
            .call(&admin, "POST", "/api/v2/keys", Some(&body), &[])
            .await;
        assert_refused(&a, 400, "INVALID_FIELD_ERR", what);
    }
    assert_eq!(key_count(&env).await, before);

    // Bodies that are not JSON, too deep or too big.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "invalid UTF-8",
            b"{\"resources\":[{\"name\":\"\xff\xfe\"}]}".to_vec(),
            400,
            "BAD_BODY_ERR",
        ),
        ("deep", deep.into_bytes(), 413, "BODY_TOO_LARGE_ERR"),
        (
            "deep small",
            format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes(),
            400,
            "BAD_BODY_ERR",
        ),
        ("huge", vec![b' '; 2 << 20], 413, "BODY_TOO_LARGE_ERR"),
    ];
    for (what, bytes, status, code) in cases {
        let a = env
            .raw(
                "POST",
                "/api/v2/keys",
                &admin,
                &env.instance,
                Body::from(bytes),
                &[],
            )
            .await;
        assert_refused(&a, status, code, what);
    }
    assert_eq!(key_count(&env).await, before);
}

/// A create or import by someone who may not create keys is refused as unauthorized before
/// anything about the instance shows: not its keyCreateImportAccess policy, not whether it has
/// an import token, not what that token's private key decrypts.
#[tokio::test]
async fn who_may_not_create_learns_nothing_of_the_instance() {
    let env = env_with(quick()).await;
    let reader = env.token_for("reader", Role::Reader).await;
    let (_, nobody) = env.principal("nobody", Vec::new()).await;
    let sealed_without_token = collection(
        "key",
        json!({
            "type": "application/vnd.ibm.kms.key+json", "name": "s", "extractable": false,
            "payload": STANDARD.encode([1u8; 256]), "encryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "encryptedNonce": STANDARD.encode([2u8; 28]), "iv": STANDARD.encode([3u8; 12]),
        }),
    );
    for token in [&reader, &nobody] {
        let a = env
            .call(
                token,
                "POST",
                "/api/v2/keys",
                Some(&sealed_without_token),
                &[],
            )
            .await;
        assert_refused(&a, 401, "UNAUTHORIZED_ERR", "secure import without a token");
    }
    // With a token: a payload it cannot decrypt.
    let mut garbage = sealed_resource(&env, "s", &[0x5a; 32]).await;
    garbage["resources"][0]["payload"] = json!(STANDARD.encode([1u8; 256]));
    for token in [&reader, &nobody] {
        let a = env
            .call(token, "POST", "/api/v2/keys", Some(&garbage), &[])
            .await;
        assert_refused(&a, 401, "UNAUTHORIZED_ERR", "undecryptable payload");
    }
    env.set_instance_policy(
        "keyCreateImportAccess",
        json!({"enabled": true, "attributes": {"create_root_key": false}}),
    )
    .await;
    for token in [&reader, &nobody] {
        let a = env
            .call(
                token,
                "POST",
                "/api/v2/keys",
                Some(&key_body("r", false)),
                &[],
            )
            .await;
        assert_refused(&a, 401, "UNAUTHORIZED_ERR", "create under the policy");
    }
}

/// An approval stands only while its author may still approve: once the approver's role is
/// removed or the approver is disabled, the delete is refused as not authorized by two people.
#[tokio::test]
async fn an_approval_lapses_with_its_authors_access() {
    let env = env_with(quick()).await;
    let admin = env.core.authenticate(&env.admin).await.unwrap();
    let bob = env.token_for("bob", Role::Manager).await;
    let grant = || {
        vec![RoleGrant {
            role: Role::Writer,
            scope: Scope::Instance(env.instance.clone()),
        }]
    };
    for (name, change) in [("demoted", Some(Vec::new())), ("disabled", None)] {
        let (alice_id, alice) = env.principal(name, grant()).await;
        let k = env.dual_auth_key().await;
        let set = format!("/api/v2/keys/{k}/actions/setKeyForDeletion");
        assert_eq!(
            env.call(&alice, "POST", &set, None, &[]).await.status,
            StatusCode::NO_CONTENT
        );
        let disabled = change.is_none().then_some(true);
        env.core
            .update_principal(&admin, &alice_id, change, disabled)
            .await
            .unwrap();
        let a = env
            .call(&bob, "DELETE", &format!("/api/v2/keys/{k}"), None, &[])
            .await;
        assert_refused(&a, 409, "AUTHORIZATIONS_NOT_MET", name);
        assert_eq!(env.state_of(&k).await, 1, "{name}");
    }
}

// ---- the audit trail of refusals ----------------------------------------------------------------

impl Env {
    async fn denied_count(&self) -> usize {
        let admin = self.core.authenticate(&self.admin).await.unwrap();
        self.core
            .audit_events(
                &admin,
                &self.instance,
                &keyfort_core::AuditQuery {
                    outcome: Some("denied".to_owned()),
                    limit: 10_000,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .len()
    }
}

#[tokio::test]
async fn every_refused_endpoint_writes_a_denied_event() {
    let env = env_with(quick()).await;
    let reader = env.token_for("reader", Role::Reader).await;
    let k = env.key_in(None, false).await;
    let s = env.key_in(None, true).await;
    let policy = collection(
        "policy",
        json!({"policy_type": "dualAuthDelete", "policy_data": {"enabled": true}}),
    );
    let key_policy = collection(
        "policy",
        json!({"type": "application/vnd.ibm.kms.policy+json", "rotation": {"enabled": true, "interval_month": 3}}),
    );
    let calls: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/api/v2/keys".into(), Some(key_body("x", false))),
        ("GET", format!("/api/v2/keys/{s}"), None),
        (
            "PATCH",
            format!("/api/v2/keys/{k}"),
            Some(json!({"keyRingID": "default"})),
        ),
        ("DELETE", format!("/api/v2/keys/{k}"), None),
        ("DELETE", format!("/api/v2/keys/{k}/purge"), None),
        ("POST", format!("/api/v2/keys/{k}/restore"), None),
        ("POST", format!("/api/v2/keys/{k}/actions/rotate"), None),
        ("POST", format!("/api/v2/keys/{k}/actions/disable"), None),
        (
            "POST",
            format!("/api/v2/keys/{k}/actions/setKeyForDeletion"),
            None,
        ),
        ("POST", format!("/api/v2/keys/{k}/actions/sync"), None),
        ("GET", format!("/api/v2/keys/{k}/policies"), None),
        (
            "PUT",
            format!("/api/v2/keys/{k}/policies"),
            Some(key_policy),
        ),
        ("GET", "/api/v2/instance/policies".into(), None),
        (
            "PUT",
            "/api/v2/instance/policies?policy=dualAuthDelete".into(),
            Some(policy),
        ),
        ("POST", "/api/v2/import_token".into(), Some(json!({}))),
        ("GET", "/api/v2/import_token".into(), None),
        ("POST", format!("/api/v2/keys/{k}/aliases/some-alias"), None),
        (
            "DELETE",
            format!("/api/v2/keys/{k}/aliases/some-alias"),
            None,
        ),
        ("POST", "/api/v2/key_rings/ring-x".into(), None),
        ("DELETE", "/api/v2/key_rings/default".into(), None),
        (
            "POST",
            format!("/api/v2/keys/{k}/registrations/crn:v1:x"),
            Some(json!({})),
        ),
        ("GET", "/api/v2/kmip_adapters".into(), None),
    ];
    for (method, uri, body) in calls {
        let before = env.denied_count().await;
        let a = env.call(&reader, method, &uri, body.as_ref(), &[]).await;
        assert!(
            a.status == StatusCode::UNAUTHORIZED || a.status == StatusCode::FORBIDDEN,
            "{method} {uri}: {} {}",
            a.status,
            a.body
        );
        assert_eq!(
            env.denied_count().await,
            before + 1,
            "{method} {uri} left no denied event"
        );
    }
}

// ---- moving keys between rings ------------------------------------------------------------------

/// The Go client's `SetKeyRing` sends `{"KeyRingID": …}` (a Go struct without JSON tags), which
/// Key Protect's case-insensitive decoder takes; the move needs Manager on both rings.
#[tokio::test]
async fn patch_takes_the_go_clients_key_ring_field() {
    let env = env_with(quick()).await;
    env.admin("POST", "/api/v2/key_rings/r1", None, &[]).await;
    let k = env.key_in(None, false).await;
    let writer = env.token_for("writer", Role::Writer).await;
    let body = json!({"KeyRingID": "r1"});
    let a = env
        .call(
            &writer,
            "PATCH",
            &format!("/api/v2/keys/{k}"),
            Some(&body),
            &[],
        )
        .await;
    assert_refused(&a, 401, "UNAUTHORIZED_ERR", "writer moves");
    let a = env
        .admin("PATCH", &format!("/api/v2/keys/{k}"), Some(&body), &[])
        .await;
    assert_eq!(a.body["resources"][0]["keyRingID"], "r1", "{}", a.body);
    let a = env
        .call(
            &env.admin.clone(),
            "PATCH",
            &format!("/api/v2/keys/{k}"),
            Some(&json!({"KeyRingID": 7})),
            &[],
        )
        .await;
    assert_refused(&a, 400, "INVALID_FIELD_ERR", "not a string");
}

// ---- wrap and unwrap ----------------------------------------------------------------------------

#[tokio::test]
async fn unwrap_refuses_every_altered_ciphertext_without_plaintext() {
    let env = env_with(quick()).await;
    let reader = env.token_for("reader", Role::Reader).await;
    let k = env.key_in(None, false).await;
    let other = env.key_in(None, false).await;
    let wrap = |key: &str| format!("/api/v2/keys/{key}/actions/wrap");
    let unwrap = format!("/api/v2/keys/{k}/actions/unwrap");
    let aad = json!(["tenant-a", "db-7"]);
    let a = env
        .call(&reader, "POST", &wrap(&k), Some(&json!({"aad": aad})), &[])
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let ct = a.body["ciphertext"].as_str().unwrap().to_owned();
    let raw = STANDARD.decode(&ct).unwrap();
    let of_other = env
        .call(
            &reader,
            "POST",
            &wrap(&other),
            Some(&json!({"aad": aad})),
            &[],
        )
        .await
        .body["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut cases: Vec<(String, Value)> = vec![
        ("no aad".into(), json!({"ciphertext": ct})),
        (
            "other aad".into(),
            json!({"ciphertext": ct, "aad": ["tenant-b", "db-7"]}),
        ),
        (
            "aad reordered".into(),
            json!({"ciphertext": ct, "aad": ["db-7", "tenant-a"]}),
        ),
        (
            "aad joined".into(),
            json!({"ciphertext": ct, "aad": ["tenant-adb-7"]}),
        ),
        (
            "aad extra".into(),
            json!({"ciphertext": ct, "aad": ["tenant-a", "db-7", ""]}),
        ),
        (
            "other key".into(),
            json!({"ciphertext": of_other, "aad": aad}),
        ),
        ("empty".into(), json!({"ciphertext": "", "aad": aad})),
    ];
    for cut in [1, raw.len() / 2, raw.len() - 1] {
        cases.push((
            format!("truncated to {cut}"),
            json!({"ciphertext": STANDARD.encode(&raw[..cut]), "aad": aad}),
        ));
    }
    for i in [0, raw.len() / 2, raw.len() - 1] {
        let mut m = raw.clone();
        m[i] ^= 0x01;
        cases.push((
            format!("byte {i} flipped"),
            json!({"ciphertext": STANDARD.encode(&m), "aad": aad}),
        ));
    }
    let mut longer = raw.clone();
    longer.push(0);
    cases.push((
        "one byte added".into(),
        json!({"ciphertext": STANDARD.encode(&longer), "aad": aad}),
    ));
    for (what, body) in cases {
        let a = env.call(&reader, "POST", &unwrap, Some(&body), &[]).await;
        assert!(
            a.status == StatusCode::UNPROCESSABLE_ENTITY || a.status == StatusCode::BAD_REQUEST,
            "{what}: {} {}",
            a.status,
            a.body
        );
        let code = a.reason().to_owned();
        assert!(
            code == "UNPROCESSABLE_CIPHERTEXT_ERR" || code == "INVALID_FIELD_ERR",
            "{what}: {}",
            a.body
        );
        assert_refused(&a, a.status.as_u16(), &code, &what);
    }
    // The genuine one still unwraps.
    let a = env
        .call(
            &reader,
            "POST",
            &unwrap,
            Some(&json!({"ciphertext": ct, "aad": aad})),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // A disabled key wraps and unwraps nothing.
    env.admin(
        "POST",
        &format!("/api/v2/keys/{k}/actions/disable"),
        None,
        &[],
    )
    .await;
    for (uri, body) in [
        (unwrap.clone(), json!({"ciphertext": ct, "aad": aad})),
        (
            format!("/api/v2/keys/{k}/actions/rewrap"),
            json!({"ciphertext": ct, "aad": aad}),
        ),
        (wrap(&k), json!({})),
    ] {
        let a = env.call(&reader, "POST", &uri, Some(&body), &[]).await;
        assert_refused(&a, 409, "KEY_ACTION_INVALID_STATE_ERR", &uri);
    }
}

#[tokio::test]
async fn wrap_inputs_have_limits() {
    let env = env_with(quick()).await;
    let k = env.key_in(None, false).await;
    let admin = env.admin.clone();
    let wrap = format!("/api/v2/keys/{k}/actions/wrap");
    for (what, body) in [
        ("aad of 256 characters", json!({"aad": ["a".repeat(256)]})),
        ("aad not strings", json!({"aad": [1, 2]})),
        ("plaintext not base64", json!({"plaintext": "***"})),
        (
            "plaintext of 8 KiB",
            json!({"plaintext": STANDARD.encode(vec![7u8; 8192])}),
        ),
    ] {
        let a = env.call(&admin, "POST", &wrap, Some(&body), &[]).await;
        assert_refused(&a, 400, "INVALID_FIELD_ERR", what);
    }
}

// ---- unknown instances ----------------------------------------------------------------------------

/// An instance that does not exist is, to a caller, one it has no access to: Key Protect's 401
/// on `/api/v2`, 404 on the native API, never a server error.
#[tokio::test]
async fn an_unknown_instance_is_refused_not_a_server_error() {
    let env = env_with(quick()).await;
    let admin = env.admin.clone();
    let writer = env.token_for("writer", Role::Writer).await;
    for token in [&admin, &writer] {
        for instance in ["nope", "2291e4ae-a14c-4af9-88f0-27c0cb2739e2"] {
            for (method, uri) in [
                ("GET", "/api/v2/keys"),
                ("HEAD", "/api/v2/keys"),
                ("POST", "/api/v2/keys"),
                ("GET", "/api/v2/key_rings"),
                ("GET", "/api/v2/instance/policies"),
                ("GET", "/api/v2/instance/allowed_ip_port"),
            ] {
                let body = Body::from(key_body("k", false).to_string());
                let a = env.raw(method, uri, token, instance, body, &[]).await;
                assert_eq!(
                    a.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {uri} {instance}: {}",
                    a.body
                );
            }
        }
    }
}

// ---- the native key API under the same rules --------------------------------------------------

impl Env {
    /// A call to the native API (`/api/keyfort/v1/instances/{instance}/keys…`) from `peer`.
    async fn native(
        &self,
        token: &str,
        method: &str,
        tail: &str,
        body: Option<&Value>,
        peer: &str,
    ) -> Answer {
        let uri = format!("/api/keyfort/v1/instances/{}/keys{tail}", self.instance);
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |v| Body::from(v.to_string())))
            .unwrap();
        let addr: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, body }
    }
}

/// Deleting, destroying or restoring through the native key actions keeps Key Protect's rules:
/// a dual-authorized key needs its second person, a restore its window.
#[tokio::test]
async fn native_key_actions_keep_dual_authorization_and_the_restore_window() {
    let env = env_with(quick()).await;
    let manager = env.token_for("manager", Role::Manager).await;
    let k = env.dual_auth_key().await;
    for action in ["delete", "compromise/../delete"] {
        let a = env
            .native(
                &manager,
                "POST",
                &format!("/{k}/actions/{action}"),
                None,
                "127.0.0.1",
            )
            .await;
        assert!(!a.status.is_success(), "{action}: {} {}", a.status, a.body);
    }
    assert_eq!(env.state_of(&k).await, 1);
    env.admin(
        "POST",
        &format!("/api/v2/keys/{k}/actions/disable"),
        None,
        &[],
    )
    .await;
    let a = env
        .native(
            &manager,
            "POST",
            &format!("/{k}/actions/destroy"),
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "destroy: {}", a.body);
    assert_eq!(a.body["error"]["code"], "KEY_REFUSED", "{}", a.body);
    assert_eq!(env.state_of(&k).await, 2);

    // Past the restore window.
    let old = env.key_in(None, false).await;
    env.admin("DELETE", &format!("/api/v2/keys/{old}"), None, &[])
        .await;
    env.clock.advance(Duration::from_secs(31 * 24 * 3600));
    let a = env
        .native(
            &manager,
            "POST",
            &format!("/{old}/actions/restore"),
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "restore: {}", a.body);
    assert_eq!(env.state_of(&old).await, 5);
}

/// Keys made through the native API obey the instance's keyCreateImportAccess policy and get
/// its dualAuthDelete policy, as those made through Key Protect do.
#[tokio::test]
async fn native_key_creation_keeps_the_instance_policies() {
    let env = env_with(quick()).await;
    let writer = env.token_for("writer", Role::Writer).await;
    env.set_instance_policy(
        "keyCreateImportAccess",
        json!({"enabled": true, "attributes": {"create_root_key": false, "import_standard_key": false}}),
    )
    .await;
    let before = key_count(&env).await;
    for body in [
        json!({"name": "root"}),
        json!({"name": "std", "extractable": true, "payload": MATERIAL}),
    ] {
        let a = env
            .native(&writer, "POST", "", Some(&body), "127.0.0.1")
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT, "{body}: {}", a.body);
        assert_eq!(a.body["error"]["code"], "KEY_REFUSED", "{}", a.body);
    }
    assert_eq!(key_count(&env).await, before);

    env.set_instance_policy("dualAuthDelete", json!({"enabled": true}))
        .await;
    let a = env
        .native(
            &writer,
            "POST",
            "",
            Some(&json!({"name": "std", "extractable": true})),
            "127.0.0.1",
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let id = a.body["id"].as_str().unwrap();
    let a = env
        .call(
            &env.admin.clone(),
            "DELETE",
            &format!("/api/v2/keys/{id}"),
            None,
            &[],
        )
        .await;
    assert_refused(
        &a,
        409,
        "AUTHORIZATIONS_NOT_MET",
        "native key under dualAuthDelete",
    );
}

/// The allowedIP policy guards the instance's keys on the native API too.
#[tokio::test]
async fn native_key_api_keeps_the_allowed_ip_policy() {
    let env = env_with(quick()).await;
    let reader = env.token_for("reader-plus", Role::ReaderPlus).await;
    let k = env.key_in(None, false).await;
    let s = env.key_in(None, true).await;
    let wrapped = env
        .admin(
            "POST",
            &format!("/api/v2/keys/{k}/actions/wrap"),
            Some(&json!({})),
            &[],
        )
        .await
        .body["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    let unwrap = json!({"ciphertext": wrapped});
    let empty = json!({});
    let create = json!({"name": "from-elsewhere"});
    let calls: Vec<(&str, String, Option<&Value>)> = vec![
        ("GET", String::new(), None),
        ("GET", format!("/{k}"), None),
        ("GET", format!("/{k}/versions"), None),
        ("GET", format!("/{s}/material"), None),
        ("POST", format!("/{k}/wrap"), Some(&empty)),
        ("POST", format!("/{k}/unwrap"), Some(&unwrap)),
        ("POST", format!("/{k}/actions/disable"), None),
        ("POST", String::new(), Some(&create)),
    ];
    for (method, tail, body) in &calls[..6] {
        let a = env
            .native(&reader, method, tail, *body, "198.51.100.9")
            .await;
        assert!(
            a.status.is_success(),
            "{method} {tail} before the policy: {} {}",
            a.status,
            a.body
        );
    }
    env.set_instance_policy(
        "allowedIP",
        json!({"enabled": true, "attributes": {"allowed_ip": ["192.0.2.0/24"]}}),
    )
    .await;
    env.clock.advance(Duration::from_secs(2));
    for (method, tail, body) in &calls {
        let a = env
            .native(&reader, method, tail, *body, "198.51.100.9")
            .await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{method} {tail}: {}",
            a.body
        );
        assert!(a.body.get("plaintext").is_none() && a.body.get("payload").is_none());
    }
    // From an allowed address the same calls work.
    let a = env
        .native(
            &reader,
            "POST",
            &format!("/{k}/unwrap"),
            Some(&unwrap),
            "192.0.2.10",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

// ---- expiry -------------------------------------------------------------------------------------

/// A key past its expirationDate is Deactivated (within the hour, §7): it no longer wraps,
/// still unwraps, and cannot be enabled again.
#[tokio::test]
async fn an_expired_key_no_longer_wraps() {
    let env = env_with(quick()).await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut body = key_body("expiring", false);
    body["resources"][0]["expirationDate"] = json!(soon);
    let a = env.admin("POST", "/api/v2/keys", Some(&body), &[]).await;
    let k = a.body["resources"][0]["id"].as_str().unwrap().to_owned();
    let wrap = format!("/api/v2/keys/{k}/actions/wrap");
    let ct = env.admin("POST", &wrap, Some(&json!({})), &[]).await.body["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    env.clock.advance(Duration::from_secs(2 * 3600));
    let a = env
        .call(&env.admin.clone(), "POST", &wrap, Some(&json!({})), &[])
        .await;
    assert!(
        a.status == StatusCode::CONFLICT || a.status == StatusCode::BAD_REQUEST,
        "wrap with an expired key: {} {}",
        a.status,
        a.body
    );
    assert!(a.body.get("ciphertext").is_none());
    let a = env
        .call(
            &env.admin.clone(),
            "POST",
            &format!("/api/v2/keys/{k}/actions/unwrap"),
            Some(&json!({"ciphertext": ct})),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "unwrap: {}", a.body);
}

/// On a dual-stack listener an IPv4 client's address arrives as `::ffff:a.b.c.d`: the
/// allowedIP policy matches it against IPv4 CIDRs all the same, on both doors.
#[tokio::test]
async fn allowed_ip_matches_ipv4_clients_of_a_dual_stack_listener() {
    let env = env_with(quick()).await;
    let reader = env.token_for("reader", Role::Reader).await;
    env.set_instance_policy(
        "allowedIP",
        json!({"enabled": true, "attributes": {"allowed_ip": ["192.0.2.0/24", "2001:db8::/32"]}}),
    )
    .await;
    env.clock.advance(Duration::from_secs(2));
    let kp = |peer: &'static str| {
        let mut request = Request::builder()
            .method("GET")
            .uri("/api/v2/keys")
            .header(header::AUTHORIZATION, format!("Bearer {reader}"))
            .header("Bluemix-Instance", &env.instance)
            .body(Body::empty())
            .unwrap();
        let addr: std::net::SocketAddr = peer.parse().unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        let app = env.app.clone();
        async move { app.oneshot(request).await.unwrap().status() }
    };
    for (peer, allowed) in [
        ("192.0.2.10:4000", true),
        ("[::ffff:192.0.2.10]:4000", true),
        ("[2001:db8::7]:4000", true),
        ("[::ffff:198.51.100.1]:4000", false),
        ("198.51.100.1:4000", false),
        ("[::ffff:c000:20a]:4000", true),
    ] {
        let status = kp(peer).await;
        assert_eq!(
            status == StatusCode::OK,
            allowed,
            "/api/v2 from {peer}: {status}"
        );
        let host = peer.rsplit_once(':').unwrap().0;
        let a = env.native(&reader, "GET", "", None, host).await;
        assert_eq!(
            a.status == StatusCode::OK,
            allowed,
            "native from {peer}: {}",
            a.status
        );
    }
}

/// A role taken away applies at once to the tokens already issued.
#[tokio::test]
async fn a_removed_role_stops_working_at_once() {
    let env = env_with(quick()).await;
    let admin = env.core.authenticate(&env.admin).await.unwrap();
    let k = env.key_in(None, false).await;
    let scope = Scope::Instance(env.instance.clone());
    let (id, token) = env
        .principal(
            "ex-manager",
            vec![RoleGrant {
                role: Role::Manager,
                scope: scope.clone(),
            }],
        )
        .await;
    let disable = format!("/api/v2/keys/{k}/actions/disable");
    let enable = format!("/api/v2/keys/{k}/actions/enable");
    assert_eq!(
        env.call(&token, "POST", &disable, None, &[]).await.status,
        StatusCode::NO_CONTENT
    );
    env.core
        .update_principal(
            &admin,
            &id,
            Some(vec![RoleGrant {
                role: Role::Reader,
                scope,
            }]),
            None,
        )
        .await
        .unwrap();
    let a = env.call(&token, "POST", &enable, None, &[]).await;
    assert_refused(&a, 401, "UNAUTHORIZED_ERR", "demoted to Reader");
    assert_eq!(env.state_of(&k).await, 2);
    let a = env
        .call(
            &token,
            "GET",
            &format!("/api/v2/keys/{k}/metadata"),
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

// ---- caching of secrets -------------------------------------------------------------------------

/// Every answer that can carry a secret (access tokens, API keys, key material, plaintexts)
/// tells caches not to keep it: `Cache-Control: no-store` (RFC 6749 §5.1 for the token
/// endpoint; the same for the rest).
#[tokio::test]
async fn answers_with_secrets_are_not_cacheable() {
    let env = env_with(quick()).await;
    let root = env.key_in(None, false).await;
    let std_key = env.key_in(None, true).await;
    let admin_caller = env.core.authenticate(&env.admin).await.unwrap();
    let (pid, _) = env
        .principal(
            "someone",
            vec![RoleGrant {
                role: Role::Reader,
                scope: Scope::Instance(env.instance.clone()),
            }],
        )
        .await;
    let (_, secret) = env
        .core
        .create_api_key(&admin_caller, &pid, "k")
        .await
        .unwrap();
    let native = format!("/api/keyfort/v1/instances/{}/keys", env.instance);
    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        (
            "POST",
            "/identity/token".into(),
            Some(format!(
                "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={}",
                secret.expose()
            )),
            "application/x-www-form-urlencoded",
        ),
        (
            "POST",
            format!("/api/keyfort/v1/principals/{pid}/api_keys"),
            Some("{}".into()),
            "application/json",
        ),
        (
            "GET",
            format!("/api/v2/keys/{std_key}"),
            None,
            "application/json",
        ),
        (
            "POST",
            format!("/api/v2/keys/{root}/actions/wrap"),
            Some("{}".into()),
            "application/json",
        ),
        (
            "GET",
            format!("{native}/{std_key}/material"),
            None,
            "application/json",
        ),
        (
            "POST",
            format!("{native}/{root}/wrap"),
            Some("{}".into()),
            "application/json",
        ),
    ];
    for (method, uri, body, content_type) in cases {
        let mut request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", env.admin))
            .header("Bluemix-Instance", &env.instance)
            .header(header::CONTENT_TYPE, content_type)
            .body(body.map_or_else(Body::empty, Body::from))
            .unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(
            "127.0.0.1:4000".parse::<std::net::SocketAddr>().unwrap(),
        ));
        let response = env.app.clone().oneshot(request).await.unwrap();
        assert!(
            response.status().is_success(),
            "{method} {uri}: {}",
            response.status()
        );
        assert_eq!(
            response
                .headers()
                .get(header::CACHE_CONTROL)
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{method} {uri}"
        );
        assert_eq!(
            response
                .headers()
                .get(header::PRAGMA)
                .map(|v| v.to_str().unwrap()),
            Some("no-cache"),
            "{method} {uri}"
        );
    }
}

/// A key's dual-authorization policy cannot be switched off (§8), in any form of the policy
/// request, nor by switching off the instance policy: the one-person delete stays refused.
#[tokio::test]
async fn dual_authorization_cannot_be_switched_off() {
    let env = env_with(quick()).await;
    let manager = env.token_for("manager", Role::Manager).await;
    env.set_instance_policy("dualAuthDelete", json!({"enabled": true}))
        .await;
    let k = env.key_in(None, false).await;
    let policy = |resource: Value| collection("policy", resource);
    let off = json!({"type": "application/vnd.ibm.kms.policy+json", "dualAuthDelete": {"enabled": false}});
    let both = json!({"type": "application/vnd.ibm.kms.policy+json", "dualAuthDelete": {"enabled": false},
                      "rotation": {"enabled": true, "interval_month": 3}});
    for (uri, body) in [
        (
            format!("/api/v2/keys/{k}/policies?policy=dualAuthDelete"),
            policy(off.clone()),
        ),
        (format!("/api/v2/keys/{k}/policies"), policy(both)),
        (format!("/api/v2/keys/{k}/policies"), policy(off)),
    ] {
        let a = env.call(&manager, "PUT", &uri, Some(&body), &[]).await;
        assert_refused(&a, 400, "POLICY_CANNOT_BE_DISABLED_ERR", &uri);
    }
    env.set_instance_policy("dualAuthDelete", json!({"enabled": false}))
        .await;
    let a = env
        .call(&manager, "DELETE", &format!("/api/v2/keys/{k}"), None, &[])
        .await;
    assert_refused(
        &a,
        409,
        "AUTHORIZATIONS_NOT_MET",
        "delete after the instance policy is off",
    );
    assert_eq!(env.state_of(&k).await, 1);
}
