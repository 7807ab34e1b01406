//! The Keep-Your-Own-Key routes over a real core and SQLite store: initialization, unsealing
//! without a bearer token, commands that need an administrator and custodians' signatures,
//! wrap/unwrap and `/metrics`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use keyfort_core::{
    Command, CoreConfig, CustodianSecret, DevSetup, KeyPart, Keyfort, SignedCommand, TokenSigner,
};
use keyfort_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

struct Env {
    _dir: tempfile::TempDir,
    core: Keyfort,
    app: Router,
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
        app: keyfort_rest::router(core.clone()),
        core,
        api_key: boot.api_key,
    }
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

fn request(method: &str, uri: &str, token: Option<&str>, body: Option<&Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(b) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

impl Env {
    async fn token(&self) -> String {
        let body = format!("grant_type={GRANT}&apikey={}", self.api_key);
        let req = Request::post("/identity/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, body) = send(&self.app, req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn admin(&self, method: &str, uri: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let token = self.token().await;
        send(&self.app, request(method, uri, Some(&token), body)).await
    }

    async fn anon(&self, method: &str, uri: &str, body: Option<&Value>) -> (StatusCode, Value) {
        send(&self.app, request(method, uri, None, body)).await
    }

    /// A new instance initialized with three custodians, 2 of 3; returns its id, the custodians
    /// and their parts.
    async fn custodian_instance(&self) -> (String, Vec<CustodianSecret>, Vec<KeyPart>) {
        let (status, created) = self
            .admin(
                "POST",
                "/api/keyfort/v1/instances",
                Some(&json!({"name": "prod"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let custodians: Vec<CustodianSecret> = ["alice", "bob", "carol"]
            .iter()
            .map(|n| CustodianSecret::generate(n).unwrap())
            .collect();
        let body = json!({
            "custodians": custodians.iter().map(|c| c.public().to_value()).collect::<Vec<_>>(),
            "threshold": 2,
        });
        let uri = format!("/api/keyfort/v1/instances/{id}/init");
        let (status, _) = self.anon("POST", &uri, Some(&body)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "init needs a token");
        let (status, answer) = self.admin("POST", &uri, Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let parts: Vec<KeyPart> = answer["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| KeyPart::from_json(&p.to_string()).unwrap())
            .collect();
        assert_eq!(parts.len(), 3);
        (id, custodians, parts)
    }
}

#[tokio::test]
async fn unsealing_needs_no_token_and_refusals_say_why() {
    let env = env().await;
    let (id, custodians, parts) = env.custodian_instance().await;
    let status_uri = format!("/api/keyfort/v1/instances/{id}/unseal");

    let (status, body) = env.anon("GET", &status_uri, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["state"], "unsealed",
        "init leaves the instance unsealed"
    );
    assert_eq!(body["method"], "custodians");
    assert_eq!(body["custodians"], json!(["alice", "bob", "carol"]));

    let (status, _) = env
        .admin(
            "POST",
            &format!("/api/keyfort/v1/instances/{id}/seal"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = env.anon("GET", &status_uri, None).await;
    assert_eq!(body["state"], "sealed");
    assert_eq!(body["threshold"], 2);

    let alice = custodians[0]
        .unseal_submission(&parts[0], now())
        .unwrap()
        .to_value();
    let (status, body) = env.anon("POST", &status_uri, Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["loaded"], json!(["alice"]));

    // The same submission again: a replay.
    let (status, body) = env.anon("POST", &status_uri, Some(&alice)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "PART_REJECTED");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("already used"), "{message}");

    // A forged signature.
    let mut forged = custodians[1]
        .unseal_submission(&parts[1], now())
        .unwrap()
        .to_value();
    forged["signature"] = alice["signature"].clone();
    let (status, body) = env.anon("POST", &status_uri, Some(&forged)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature does not verify"),
        "{body}"
    );

    // A body that is not a submission.
    let (status, body) = env
        .anon("POST", &status_uri, Some(&json!({"share": 1})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "INVALID_FIELD");

    let bob = custodians[1]
        .unseal_submission(&parts[1], now())
        .unwrap()
        .to_value();
    let (status, body) = env.anon("POST", &status_uri, Some(&bob)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "unsealed");

    let (status, body) = env
        .anon("GET", "/api/keyfort/v1/instances/nope/unseal", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn commands_need_an_administrator_and_enough_signatures() {
    let env = env().await;
    let (id, custodians, _) = env.custodian_instance().await;
    let uri = format!("/api/keyfort/v1/instances/{id}/commands");
    let mut command = SignedCommand::new(&id, Command::RotateMasterKey, now() + 600).unwrap();
    command.sign(&custodians[2]);
    let body: Value = serde_json::from_str(&command.to_json()).unwrap();

    let (status, _) = env.anon("POST", &uri, Some(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, answer) = env.admin("POST", &uri, Some(&body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["code"], "COMMAND_REJECTED");

    command.sign(&custodians[0]);
    let body: Value = serde_json::from_str(&command.to_json()).unwrap();
    let (status, answer) = env.admin("POST", &uri, Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "rotated");
    assert_eq!(answer["master_key_version"], 2);
    assert_eq!(answer["parts"].as_array().map(Vec::len), Some(3));
    assert_eq!(answer["parts"][0]["master_key_version"], 2);

    // Once the re-seal is done, a replay of the executed command is refused.
    let status_uri = format!("/api/keyfort/v1/instances/{id}/unseal");
    for _ in 0..100 {
        let (_, status) = env.anon("GET", &status_uri, None).await;
        if status["reseal"]["running"] == json!(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, answer) = env.admin("POST", &uri, Some(&body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "replayed: {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{answer}"
    );
}

#[tokio::test]
async fn init_body_must_choose_one_method() {
    let env = env().await;
    let (status, created) = env
        .admin(
            "POST",
            "/api/keyfort/v1/instances",
            Some(&json!({"name": "hsm"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let uri = format!(
        "/api/keyfort/v1/instances/{}/init",
        created["id"].as_str().unwrap()
    );
    for body in [
        json!({}),
        json!({"hsm": true, "threshold": 1}),
        json!({"custodians": []}),
    ] {
        let (status, answer) = env.admin("POST", &uri, Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    // No HSM is configured on this server.
    let (status, answer) = env.admin("POST", &uri, Some(&json!({"hsm": true}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no HSM"),
        "{answer}"
    );
}

#[tokio::test]
async fn wrap_unwrap_and_metrics() {
    let env = env().await;
    let (id, _, _) = env.custodian_instance().await;
    let keys = format!("/api/keyfort/v1/instances/{id}/keys");
    let (status, key) = env
        .admin("POST", &keys, Some(&json!({"name": "root"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key = format!("{keys}/{}", key["id"].as_str().unwrap());

    let (status, wrapped) = env
        .admin(
            "POST",
            &format!("{key}/wrap"),
            Some(&json!({"aad": ["a", "b"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{wrapped}");
    assert!(wrapped["plaintext"].is_string(), "a generated DEK");
    let (status, unwrapped) = env
        .admin(
            "POST",
            &format!("{key}/unwrap"),
            Some(&json!({"ciphertext": wrapped["ciphertext"], "aad": ["a", "b"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{unwrapped}");
    assert_eq!(unwrapped["plaintext"], wrapped["plaintext"]);
    assert_eq!(unwrapped["key_version"], wrapped["key_version"]);
    assert!(unwrapped.get("rewrapped").is_none());

    let (status, answer) = env
        .admin(
            "POST",
            &format!("{key}/unwrap"),
            Some(&json!({"ciphertext": wrapped["ciphertext"], "aad": ["a"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "wrong AAD: {answer}");
    let (status, _) = env
        .admin(
            "POST",
            &format!("{key}/wrap"),
            Some(&json!({"plaintext": "not base64!"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env
        .anon("POST", &format!("{key}/wrap"), Some(&json!({})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, text) = env.admin("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(
        text.contains(&format!(
            "keyfort_instance_unsealed{{instance=\"{id}\",name=\"prod\"}} 1"
        )),
        "{text}"
    );
    assert!(text.contains("keyfort_reseal_running{"), "{text}");

    // Sealed: key operations are refused with a message that says so.
    env.admin(
        "POST",
        &format!("/api/keyfort/v1/instances/{id}/seal"),
        None,
    )
    .await;
    let (status, answer) = env
        .admin("POST", &format!("{key}/wrap"), Some(&json!({})))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer["error"]["code"], "INSTANCE_SEALED");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sealed"),
        "{answer}"
    );
    let (_, text) = env.admin("GET", "/metrics", None).await;
    assert!(
        text.as_str().unwrap().contains(&format!(
            "keyfort_instance_unsealed{{instance=\"{id}\",name=\"prod\"}} 0"
        )),
        "{text}"
    );
}

/// `/metrics` names every instance: without an access token it is 401, with the token of a
/// principal who is not a deployment administrator 403 (both in the admin API's error shape),
/// and with an administrator's the figures; opened (`MetricsAccess::Open`), anyone reads it.
#[tokio::test]
async fn metrics_are_for_deployment_administrators_unless_opened() {
    let env = env().await;
    let (status, answer) = env.anon("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(answer["error"]["code"].is_string(), "{answer}");
    let (status, answer) = send(
        &env.app,
        request("GET", "/metrics", Some("not-a-token"), None),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");

    // A Manager of one instance is not a deployment administrator.
    let (_, instances) = env.admin("GET", "/api/keyfort/v1/instances", None).await;
    let instance = instances["instances"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{instances}"))
        .to_owned();
    let (status, principal) = env
        .admin(
            "POST",
            "/api/keyfort/v1/principals",
            Some(&json!({
                "name": "manager",
                "instance_id": instance,
                "roles": [{"role": "Manager", "instance": instance}],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{principal}");
    let (status, key) = env
        .admin(
            "POST",
            &format!(
                "/api/keyfort/v1/principals/{}/api_keys",
                principal["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let manager = Env {
        _dir: tempfile::tempdir().unwrap(),
        core: env.core.clone(),
        app: env.app.clone(),
        api_key: key["api_key"]
            .as_str()
            .unwrap_or_else(|| panic!("{key}"))
            .to_owned(),
    };
    let (status, answer) = manager.admin("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        !answer.to_string().contains(&instance),
        "a refusal names no instance: {answer}"
    );

    let (status, text) = env.admin("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.as_str().unwrap().contains(&instance), "{text}");

    // Opened, no token is needed.
    let open = Env {
        _dir: tempfile::tempdir().unwrap(),
        core: env.core.clone(),
        app: keyfort_rest::router_with(env.core.clone(), keyfort_rest::MetricsAccess::Open),
        api_key: String::new(),
    };
    let (status, text) = open.anon("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.as_str().unwrap().contains(&instance), "{text}");
}

/// The CADF export streams the trail a page at a time: every event once, in order, across
/// pages, and a limit that ends inside a page is kept.
#[tokio::test]
async fn the_audit_export_streams_every_event_across_pages() {
    let env = env().await;
    let token = env.token().await;
    let caller = env.core.authenticate(&token).await.unwrap();
    let (_, instances) = env.admin("GET", "/api/keyfort/v1/instances", None).await;
    let instance = instances["instances"][0]["id"].as_str().unwrap().to_owned();
    // 2,500 listings, each audited: more than two pages of the export.
    for _ in 0..2500 {
        env.core
            .list_keys(&caller, &instance, &keyfort_core::KeyQuery::default())
            .await
            .unwrap();
    }
    let export = |query: &'static str| {
        let (app, token, instance) = (env.app.clone(), token.clone(), instance.clone());
        async move {
            let uri = format!("/api/keyfort/v1/instances/{instance}/audit/export{query}");
            let response = app
                .oneshot(request("GET", &uri, Some(&token), None))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
                .await
                .unwrap();
            String::from_utf8(bytes.to_vec())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let seq = |e: &Value| {
        let id = e["id"].as_str().unwrap();
        id.rsplit(':').next().unwrap().parse::<i64>().unwrap()
    };
    let all = export("").await;
    assert!(all.len() >= 2500, "{}", all.len());
    let seqs: Vec<i64> = all.iter().map(seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "events missing, repeated or out of order"
    );
    let listings = export("?action=key.list").await;
    assert_eq!(listings.len(), 2500);
    let limited = export("?limit=1500").await;
    assert_eq!(limited, all[..1500]);
}
