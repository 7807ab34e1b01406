//! The HTTP API over a real core and SQLite store: health, the IAM-compatible token endpoint in
//! every form clients send, bearer authentication and the admin API.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use keyfort_core::{CoreConfig, DevSetup, Keyfort, TokenSigner};
use keyfort_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

struct Env {
    _dir: tempfile::TempDir,
    app: Router,
    instance: String,
    api_key: String,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keyfort.db"))
        .await
        .unwrap();
    let core = Keyfort::open(
        Arc::new(store),
        CoreConfig::new(Duration::from_secs(600), TokenSigner::generate().unwrap()),
    )
    .await
    .unwrap();
    let boot = core
        .dev_bootstrap(DevSetup {
            master_key_file: dir.path().join("dev-master.key"),
            previous_api_key: None,
        })
        .await
        .unwrap();
    Env {
        _dir: dir,
        app: keyfort_rest::router(core),
        instance: boot.instance_id,
        api_key: boot.api_key,
    }
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

fn form(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

impl Env {
    async fn token(&self) -> String {
        let (status, body) = send(
            &self.app,
            form(
                "/identity/token",
                &format!("grant_type={GRANT}&apikey={}", self.api_key),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let token = self.token().await;
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let request = match body {
            Some(b) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => builder.body(Body::empty()).unwrap(),
        };
        send(&self.app, request).await
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let env = env().await;
    let (status, body) = send(
        &env.app,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = send(
        &env.app,
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["store"], "sqlite");
}

#[tokio::test]
async fn token_endpoint_in_every_client_form() {
    let env = env().await;
    // IBM Python SDK core: /identity/token, form body with response_type.
    let (status, body) = send(
        &env.app,
        form(
            "/identity/token",
            &format!(
                "grant_type={}&apikey={}&response_type=cloud_iam",
                urlencode(GRANT),
                env.api_key
            ),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let exp = body["expiration"].as_i64().unwrap();
    // The JWT decodes without verification and carries iat/exp.
    let token = body["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap(), exp);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );

    // redstone: /oidc/token with Basic auth and uaa fields.
    let mut request = form(
        "/oidc/token",
        &format!(
            "response_type=cloud_iam&uaa_client_id=cf&uaa_client_secret=&grant_type={GRANT}&apikey={}",
            env.api_key
        ),
    );
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, "Basic Yng6Yng=".parse().unwrap());
    let (status, _) = send(&env.app, request).await;
    assert_eq!(status, StatusCode::OK);

    // The grant in the query string, empty body.
    let (status, body) = send(
        &env.app,
        Request::post(format!(
            "/oidc/token?grant_type={GRANT}&apikey={}",
            env.api_key
        ))
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn token_endpoint_refusals() {
    let env = env().await;
    let cases = [
        format!("grant_type={GRANT}&apikey=kfwrong"),
        format!("grant_type={GRANT}"),
        format!("grant_type=password&apikey={}", env.api_key),
        format!("apikey={}", env.api_key),
        "%%%".to_owned(),
    ];
    for body in cases {
        let (status, answer) = send(&env.app, form("/identity/token", &body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            answer["errorCode"].as_str().unwrap().starts_with("BXNIM"),
            "{answer}"
        );
        assert!(answer.get("access_token").is_none());
    }
}

#[tokio::test]
async fn bearer_authentication_is_required_and_checked() {
    let env = env().await;
    let uri = "/api/keyfort/v1/instances";
    let (status, body) = send(&env.app, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    for value in ["Bearer", "Bearer not.a.token", "Basic abc", "Bearer a.b.c"] {
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        let (status, _) = send(&env.app, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{value}");
    }
    let token = env.token().await;
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&env.app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["instances"][0]["id"], env.instance.as_str());
    assert_eq!(body["instances"][0]["state"], "unsealed");
}

#[tokio::test]
async fn admin_keys_and_errors() {
    let env = env().await;
    let keys = format!("/api/keyfort/v1/instances/{}/keys", env.instance);
    let (status, key) = env
        .call(
            "POST",
            &keys,
            Some(
                json!({"name": "std", "extractable": true, "payload": "AAECAwQFBgcICQoLDA0ODw=="}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    assert_eq!(key["bit_length"], 128);
    assert_eq!(key["state"], "active");
    let id = key["id"].as_str().unwrap();

    let (status, versions) = env
        .call("GET", &format!("{keys}/{id}/versions"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(versions["versions"][0]["id"], key["current_version_id"]);
    assert_eq!(versions["versions"][0]["seq"], 1);

    let (status, material) = env
        .call("GET", &format!("{keys}/{id}/material"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(material["payload"], "AAECAwQFBgcICQoLDA0ODw==");

    let (status, root) = env.call("POST", &keys, Some(json!({"name": "root"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let root_id = root["id"].as_str().unwrap();
    let (status, body) = env
        .call("GET", &format!("{keys}/{root_id}/material"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "KEY_NOT_EXTRACTABLE");

    let (status, list) = env.call("GET", &format!("{keys}?limit=1"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2);
    assert_eq!(list["keys"].as_array().unwrap().len(), 1);

    let (status, disabled) = env
        .call("POST", &format!("{keys}/{id}/actions/disable"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(disabled["state"], "suspended");
    let (status, body) = env
        .call("POST", &format!("{keys}/{id}/actions/disable"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "INVALID_STATE");

    // Bad input: clear errors, nothing created.
    for bad in [
        json!({"name": ""}),
        json!({"name": "x", "payload": "not base64!"}),
        json!({"name": "x", "payload": "AAEC"}),
        json!({"name": "x", "unknown": 1}),
        json!({"name": "x", "aliases": ["wrap"]}),
    ] {
        let (status, body) = env.call("POST", &keys, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {body}");
        assert!(body["error"]["correlation_id"].is_string());
    }
    let (_, list) = env.call("GET", &keys, None).await;
    assert_eq!(list["total"], 2);

    let (status, body) = env
        .call(
            "GET",
            &format!("{keys}/00000000-0000-4000-8000-000000000000"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "KEY_NOT_FOUND");
    let (status, _) = env
        .call("GET", "/api/keyfort/v1/instances/nope/keys", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env.call("GET", &format!("{keys}?limit=abc"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Sealing makes every key operation answer "sealed".
    let (status, sealed) = env
        .call(
            "POST",
            &format!("/api/keyfort/v1/instances/{}/seal", env.instance),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sealed["state"], "sealed");
    let (status, body) = env.call("GET", &keys, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "INSTANCE_SEALED");
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let env = env().await;
    let keys = format!("/api/keyfort/v1/instances/{}/keys", env.instance);
    let huge = json!({"name": "x", "description": "d".repeat(keyfort_rest::MAX_BODY_BYTES)});
    let (status, _) = env.call("POST", &keys, Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A")
}
