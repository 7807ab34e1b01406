//! Key Protect endpoints over the real TLS socket of a `keyfort server --dev`: an imported root
//! key rotated with material sealed to the import token and restored with it, `X-Kms-Key-Ring`
//! on key calls, `POST /event_ack` by a service identity, and the allowedIP policy refusing
//! this client's real address while `GET /instance/allowed_ip_port` still answers with the
//! port the client reached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;

/// `/api/v2` calls with the headers Key Protect clients send.
struct Kp {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    instance: String,
}

impl Kp {
    fn new(server: &Server) -> Kp {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pem = std::fs::read(server.dev["ca_cert"].as_str().unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .build()
            .unwrap();
        Kp {
            runtime,
            http,
            base: server.addr(),
            instance: server.dev["instance_id"].as_str().unwrap().to_owned(),
        }
    }

    fn token(&self, api_key: &str) -> String {
        let answer: Value = self.runtime.block_on(async {
            self.http
                .post(format!("{}/identity/token", self.base))
                .form(&[
                    ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                    ("apikey", api_key),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        answer["access_token"].as_str().unwrap().to_owned()
    }

    fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut req = self
                .http
                .request(method, format!("{}/api/v2{path}", self.base))
                .bearer_auth(token)
                .header("Bluemix-Instance", &self.instance);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(body) = body {
                req = req
                    .header("Content-Type", "application/vnd.ibm.kms.key_action+json")
                    .body(body.to_string());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }
}

fn reason(answer: &Value) -> &str {
    answer["resources"][0]["reasons"][0]["code"]
        .as_str()
        .unwrap_or("")
}

fn key_collection(resource: Value) -> Value {
    json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1}, "resources": [resource]})
}

#[test]
fn key_protect_endpoints_over_the_wire() {
    use reqwest::Method;
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        work.path(),
        "kp-wire",
        &[("KEYFORT_KMS_CHANGE_GUARD_SECS", "0")],
    );
    let kp = Kp::new(&server);
    let admin = kp.token(server.dev["api_key"].as_str().unwrap());
    let call =
        |method: Method, path: &str, body: Option<&Value>| kp.call(&admin, method, path, body, &[]);

    // An imported root key, rotated with material sealed to the import token.
    let (status, _) = call(
        Method::POST,
        "/import_token",
        Some(&json!({"expiration": 600, "maxAllowedRetrievals": 5})),
    );
    assert_eq!(status, 200);
    let (status, token) = call(Method::GET, "/import_token", None);
    assert_eq!(status, 200, "{token}");
    let pem = String::from_utf8(B64.decode(token["payload"].as_str().unwrap()).unwrap()).unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let public = keyfort_crypto::rsa::PublicKey::from_der(&B64.decode(der).unwrap()).unwrap();
    let nonce = B64.decode(token["nonce"].as_str().unwrap()).unwrap();
    let (status, created) = call(
        Method::POST,
        "/keys",
        Some(&key_collection(json!({
            "type": "application/vnd.ibm.kms.key+json",
            "name": "wire-imported",
            "extractable": false,
            "payload": B64.encode([0x11u8; 32]),
        }))),
    );
    assert_eq!(status, 201, "{created}");
    let key = created["resources"][0]["id"].as_str().unwrap().to_owned();
    let (_, wrapped) = call(
        Method::POST,
        &format!("/keys/{key}/actions/wrap"),
        Some(&json!({})),
    );
    let dek = wrapped["plaintext"].as_str().unwrap().to_owned();
    let old_ct = wrapped["ciphertext"].as_str().unwrap().to_owned();
    let material = [0x22u8; 32];
    let iv = [5u8; 12];
    let sealed = json!({
        "payload": B64.encode(public.encrypt_oaep(keyfort_crypto::rsa::OaepHash::Sha256, &material, None).unwrap()),
        "encryptionAlgorithm": "RSAES_OAEP_SHA_256",
        "encryptedNonce": B64.encode(keyfort_crypto::aes::gcm_encrypt(&material, &iv, &[], &nonce).unwrap()),
        "iv": B64.encode(iv),
    });
    let (status, answer) = call(
        Method::POST,
        &format!("/keys/{key}/actions/rotate"),
        Some(&sealed),
    );
    assert_eq!(status, 204, "{answer}");
    let (status, unwrapped) = call(
        Method::POST,
        &format!("/keys/{key}/actions/unwrap"),
        Some(&json!({ "ciphertext": old_ct })),
    );
    assert_eq!(status, 200, "{unwrapped}");
    assert_eq!(unwrapped["plaintext"], dek.as_str());
    assert!(unwrapped["rewrappedKeyVersion"]["id"].is_string());
    // Restore needs the material the key has now: the sealed one.
    let (status, _) = call(Method::DELETE, &format!("/keys/{key}"), None);
    assert_eq!(status, 204);
    let (status, refused) = call(
        Method::POST,
        &format!("/keys/{key}/restore"),
        Some(&key_collection(
            json!({"payload": B64.encode([0x11u8; 32])}),
        )),
    );
    assert_eq!((status, reason(&refused)), (400, "INVALID_FIELD_ERR"));
    let (status, restored) = call(
        Method::POST,
        &format!("/keys/{key}/restore"),
        Some(&key_collection(json!({"payload": B64.encode(material)}))),
    );
    assert_eq!(status, 201, "{restored}");

    // X-Kms-Key-Ring: the key is in `default`, not in `wire-ring`.
    let (status, _) = call(Method::POST, "/key_rings/wire-ring", None);
    assert_eq!(status, 201);
    let wrap = |ring: &str| {
        kp.call(
            &admin,
            Method::POST,
            &format!("/keys/{key}/actions/wrap"),
            Some(&json!({})),
            &[("X-Kms-Key-Ring", ring)],
        )
    };
    let (status, answer) = wrap("wire-ring");
    assert_eq!((status, reason(&answer)), (404, "KEY_NOT_FOUND_ERR"));
    assert_eq!(wrap("default").0, 200);

    // Event acknowledgement: a service identity may, a user may not.
    let instance = kp.instance.clone();
    let svc = server.json(&[
        "iam",
        "principal",
        "create",
        "wire-service",
        "--service",
        "--instance",
        &instance,
        "--role",
        &format!("Reader@{instance}"),
    ]);
    let issued = server.json(&[
        "iam",
        "api-key",
        "create",
        svc["id"].as_str().unwrap(),
        "--name",
        "ack",
    ]);
    let service = kp.token(issued["api_key"].as_str().unwrap());
    let ack = json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.event_acknowledge+json", "collectionTotal": 1},
        "resources": [{"eventId": "wire-event", "adopterKeyState": "DEK_DELETED", "timestamp": "2026-05-06T07:08:09Z"}],
    });
    let (status, answer) = kp.call(&service, Method::POST, "/event_ack", Some(&ack), &[]);
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = call(Method::POST, "/event_ack", Some(&ack));
    assert_eq!((status, reason(&answer)), (403, "SERVICE_ONLY_ERR"));

    // An allowedIP policy that excludes this client: every call is refused but the port query,
    // which names the port this client connected to.
    let (status, answer) = call(Method::GET, "/instance/allowed_ip_port", None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["resources"], json!([]));
    let policy = json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
        "resources": [{"policy_type": "allowedIP", "policy_data": {"enabled": true, "attributes": {"allowed_ip": ["192.0.2.0/24"]}}}],
    });
    let (status, answer) = call(
        Method::PUT,
        "/instance/policies?policy=allowedIP",
        Some(&policy),
    );
    assert_eq!(status, 204, "{answer}");
    // The policy is read at most once a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (status, answer) = call(Method::GET, "/keys", None);
    assert_eq!((status, reason(&answer)), (401, "UNAUTHORIZED_ERR"));
    let (status, answer) = call(Method::GET, "/instance/allowed_ip_port", None);
    assert_eq!(status, 200, "{answer}");
    let port: u64 = server.dev["http_addr"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        answer["resources"],
        json!([{"private_endpoint_port": port}])
    );
    assert_eq!(
        answer["metadata"]["collectionType"],
        "application/vnd.ibm.kms.allowed_ip_metadata+json"
    );
}
