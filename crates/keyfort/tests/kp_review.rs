//! The allowedIP instance policy over the real TLS socket of a `keyfort server --dev`: the
//! client address is the socket's peer, never a header the client writes (`X-Forwarded-For`,
//! `X-Real-IP`, `Forwarded`); CIDR bounds are exact; each refusal is audited as denied with
//! the real source address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::kmip::{Kmip, en, int, secret_data, st, text};
use common::*;
use keyfort_kmip::Operation;
use keyfort_kmip::ttlv::{Item, Tag};
use reqwest::Method;

/// An HTTP client of the server with an access token for its dev instance.
struct Client {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    token: String,
    instance: String,
}

impl Client {
    /// Key `id` still exists and is not destroyed (state 5).
    fn assert_not_destroyed(&self, id: &str) {
        let (status, answer) = self.kp(Method::GET, &format!("/keys/{id}/metadata"), None, &[]);
        assert_eq!(status, 200, "{answer}");
        assert_ne!(answer["resources"][0]["state"], 5, "{answer}");
    }

    /// Sets the instance policy `policy_type` to `data`, then waits out the server's policy
    /// cache (at most a second).
    fn set_instance_policy(&self, policy_type: &str, data: Value) {
        let (status, answer) = self.kp(
            Method::PUT,
            &format!("/instance/policies?policy={policy_type}"),
            Some(&instance_policy(policy_type, data)),
            &[],
        );
        assert_eq!(status, 204, "{answer}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }

    fn kp(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut req = self
                .http
                .request(method, format!("{}/api/v2{path}", self.base))
                .bearer_auth(&self.token)
                .header("Bluemix-Instance", &self.instance);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(body) = body {
                req = req
                    .header("Content-Type", "application/json")
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

/// The dev server, a KP client of its dev instance as its administrator.
fn start(work: &std::path::Path, tag: &str) -> (Server, Client) {
    let server = Server::start(&work.join("data"), work, tag, &[]);
    let client = admin_client(&server);
    (server, client)
}

/// A KP client of `server`'s dev instance, with the administrator's access token.
fn admin_client(server: &Server) -> Client {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pem = std::fs::read(server.dev["ca_cert"].as_str().unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let token: Value = runtime.block_on(async {
        http.post(format!("{}/identity/token", server.addr()))
            .form(&[
                ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                ("apikey", server.dev["api_key"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    Client {
        runtime,
        http,
        base: server.addr(),
        token: token["access_token"].as_str().unwrap().to_owned(),
        instance: server.dev["instance_id"].as_str().unwrap().to_owned(),
    }
}

/// A KMIP 1.4 request of one operation.
fn kmip_request(op: Operation, payload: Vec<Item>) -> Item {
    st(
        Tag::REQUEST_MESSAGE,
        vec![
            st(
                Tag::REQUEST_HEADER,
                vec![
                    st(
                        Tag::PROTOCOL_VERSION,
                        vec![
                            int(Tag::PROTOCOL_VERSION_MAJOR, 1),
                            int(Tag::PROTOCOL_VERSION_MINOR, 4),
                        ],
                    ),
                    int(Tag::BATCH_COUNT, 1),
                ],
            ),
            st(
                Tag::BATCH_ITEM,
                vec![en(Tag::OPERATION, op.0), st(Tag::REQUEST_PAYLOAD, payload)],
            ),
        ],
    )
}

/// A key whose Key Protect dual-authorization policy is on cannot be deleted by one person
/// through the KMIP door either (Revoke, then Destroy).
#[test]
fn kmip_destroy_keeps_dual_authorization() {
    let work = tempfile::tempdir().unwrap();
    let (server, kp) = start(work.path(), "kp-review-kmip");
    let body = json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "dual", "extractable": false,
                       "dualAuthDelete": {"enabled": true}}],
    });
    let (status, answer) = kp.kp(
        Method::POST,
        "/keys_with_policy_overrides",
        Some(&body),
        &[],
    );
    assert_eq!(status, 201, "{answer}");
    let id = answer["resources"][0]["id"].as_str().unwrap().to_owned();
    let (status, answer) = kp.kp(Method::DELETE, &format!("/keys/{id}"), None, &[]);
    assert_eq!(status, 409, "{answer}");

    revoke_and_destroy(&Kmip::dev(&server), &id);
    kp.assert_not_destroyed(&id);
}

/// While the instance's dualAuthDelete policy is on, a key created over KMIP takes it, as one
/// created through Key Protect does: Key Protect shows the policy, and one KMIP client cannot
/// destroy the key.
#[test]
fn a_kmip_created_key_takes_the_instance_dual_authorization_policy() {
    let work = tempfile::tempdir().unwrap();
    let (server, kp) = start(work.path(), "kp-review-kmip-dual");
    kp.set_instance_policy("dualAuthDelete", json!({"enabled": true}));

    let kmip = Kmip::dev(&server);
    let created = create_aes(&kmip);
    let id = find_text(&created, Tag::UNIQUE_IDENTIFIER).expect("a created object's id");
    let (status, answer) = kp.kp(Method::GET, &format!("/keys/{id}/policies"), None, &[]);
    assert_eq!(status, 200, "{answer}");
    let dual = answer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p.get("dualAuthDelete").is_some())
        .unwrap_or_else(|| panic!("no dualAuthDelete policy: {answer}"));
    assert_eq!(dual["dualAuthDelete"]["enabled"], true, "{answer}");

    let destroyed = revoke_and_destroy(&kmip, &id);
    assert_ne!(
        find_enum(&destroyed, Tag::RESULT_STATUS),
        Some(0),
        "one client destroyed it: {destroyed:?}"
    );
    kp.assert_not_destroyed(&id);
}

/// The instance's keyCreateImportAccess policy holds on the KMIP door: an object made there is
/// a standard key of the instance, so generating one needs `create_standard_key`, registering
/// one `import_standard_key`, and no registration passes `enforce_token`. A refusal is
/// Permission Denied, stores nothing, and is audited.
#[test]
fn the_create_import_policy_holds_on_the_kmip_door() {
    let work = tempfile::tempdir().unwrap();
    let (server, kp) = start(work.path(), "kp-review-kmip-create-import");
    let kmip = Kmip::dev(&server);
    let set = |attributes: Value| {
        kp.set_instance_policy(
            "keyCreateImportAccess",
            json!({"enabled": true, "attributes": attributes}),
        );
    };
    let count = || {
        let found = kmip.call(&kmip_request(Operation::LOCATE, vec![]));
        let mut ids = 0;
        count_tagged(&found, Tag::UNIQUE_IDENTIFIER, &mut ids);
        ids
    };
    let register = || {
        kmip.call(&kmip_request(
            Operation::REGISTER,
            vec![en(Tag::OBJECT_TYPE, 7), secret_data(&[7; 16])],
        ))
    };
    let outcome = |answer: &Item| {
        (
            find_enum(answer, Tag::RESULT_STATUS),
            find_enum(answer, Tag::RESULT_REASON),
        )
    };
    let success = (Some(keyfort_kmip::ResultStatus::SUCCESS.0), None);
    let denied = (
        Some(keyfort_kmip::ResultStatus::OPERATION_FAILED.0),
        Some(keyfort_kmip::ResultReason::PERMISSION_DENIED.0),
    );

    // Root keys alone may be created: KMIP objects are standard keys, so Create is refused.
    set(json!({"create_root_key": true, "create_standard_key": false}));
    let before = count();
    let refused = create_aes(&kmip);
    assert_eq!(outcome(&refused), denied, "{refused:?}");
    assert!(find_text(&refused, Tag::UNIQUE_IDENTIFIER).is_none());
    assert_eq!(count(), before, "a refused creation stored an object");
    let registered = register();
    assert_eq!(outcome(&registered), success, "{registered:?}");

    // Standard keys may be created but not imported: Register is refused, Create is served
    // whatever the root key flags say.
    set(
        json!({"create_root_key": false, "create_standard_key": true, "import_standard_key": false}),
    );
    let before = count();
    let refused = register();
    assert_eq!(outcome(&refused), denied, "{refused:?}");
    assert_eq!(count(), before, "a refused registration stored an object");
    let created = create_aes(&kmip);
    assert_eq!(outcome(&created), success, "{created:?}");

    // Every import must come sealed to an import token: KMIP material never does.
    set(json!({"enforce_token": true}));
    let refused = register();
    assert_eq!(outcome(&refused), denied, "{refused:?}");
    let created = create_aes(&kmip);
    assert_eq!(outcome(&created), success, "{created:?}");

    // Each refusal is audited as a failure, with the policy as its reason (as Key Protect's).
    let (status, events) = server.api().call(
        Method::GET,
        &format!(
            "/api/keyfort/v1/instances/{}/audit?outcome=failure",
            kp.instance
        ),
        None,
    );
    assert_eq!(status, 200, "{events}");
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"]["reason"] == "CreateImportAccess")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["key.create", "key.register", "key.register"],
        "{events}"
    );
}

fn count_tagged(item: &Item, tag: Tag, n: &mut usize) {
    if item.tag == tag {
        *n += 1;
    }
    if let keyfort_kmip::ttlv::Value::Structure(items) = &item.value {
        for i in items {
            count_tagged(i, tag, n);
        }
    }
}

/// Revokes object `id` over KMIP (reason: cessation of operation), then destroys it; the
/// Destroy's response.
fn revoke_and_destroy(kmip: &Kmip, id: &str) -> Item {
    let uid = text(Tag::UNIQUE_IDENTIFIER, id);
    let reason = st(
        Tag::REVOCATION_REASON,
        vec![en(Tag::REVOCATION_REASON_CODE, 5)],
    );
    kmip.call(&kmip_request(Operation::REVOKE, vec![uid.clone(), reason]));
    kmip.call(&kmip_request(Operation::DESTROY, vec![uid]))
}

/// The instance's allowedIP policy holds on the KMIP door too, as on Key Protect's: a client
/// connecting from an address outside it is refused, one inside it is served.
#[test]
fn the_allowed_ip_policy_holds_on_the_kmip_door() {
    let work = tempfile::tempdir().unwrap();
    let (server, kp) = start(work.path(), "kp-review-kmip-ip");
    let allow = |cidrs: &[&str]| kp.set_instance_policy("allowedIP", allowed_ip(cidrs));
    let kmip = Kmip::dev(&server);
    // 127.0.0.0/31 holds this client (127.0.0.1).
    allow(&["127.0.0.0/31"]);
    let created = create_aes(&kmip);
    assert_eq!(
        find_enum(&created, Tag::RESULT_STATUS),
        Some(keyfort_kmip::ResultStatus::SUCCESS.0),
        "{created:?}"
    );
    // 127.0.0.2/31 does not. (Key Protect refuses this client from now on too.)
    allow(&["127.0.0.2/31"]);
    let refused = create_aes(&kmip);
    assert_eq!(
        (
            find_enum(&refused, Tag::RESULT_STATUS),
            find_enum(&refused, Tag::RESULT_REASON)
        ),
        (
            Some(keyfort_kmip::ResultStatus::OPERATION_FAILED.0),
            Some(keyfort_kmip::ResultReason::AUTHENTICATION_NOT_SUCCESSFUL.0)
        ),
        "{refused:?}"
    );
    assert!(find_text(&refused, Tag::UNIQUE_IDENTIFIER).is_none());
}

/// KMIP 1.4 Create of an AES-256 key; the response message.
fn create_aes(kmip: &Kmip) -> Item {
    let attribute =
        |name: &str, value: Item| st(Tag::ATTRIBUTE, vec![text(Tag::ATTRIBUTE_NAME, name), value]);
    kmip.call(&kmip_request(
        Operation::CREATE,
        vec![
            en(Tag::OBJECT_TYPE, 2),
            st(
                Tag::TEMPLATE_ATTRIBUTE,
                vec![
                    attribute("Cryptographic Algorithm", en(Tag::ATTRIBUTE_VALUE, 3)),
                    attribute("Cryptographic Length", int(Tag::ATTRIBUTE_VALUE, 256)),
                ],
            ),
        ],
    ))
}

/// The first text item tagged `tag` anywhere in `item`.
fn find_text(item: &Item, tag: Tag) -> Option<String> {
    find(item, tag).and_then(|i| match &i.value {
        keyfort_kmip::ttlv::Value::TextString(s) => Some(s.clone()),
        _ => None,
    })
}

/// The first enumeration item tagged `tag` anywhere in `item`.
fn find_enum(item: &Item, tag: Tag) -> Option<u32> {
    find(item, tag).and_then(|i| match &i.value {
        keyfort_kmip::ttlv::Value::Enumeration(v) => Some(*v),
        _ => None,
    })
}

fn find(item: &Item, tag: Tag) -> Option<&Item> {
    if item.tag == tag {
        return Some(item);
    }
    match &item.value {
        keyfort_kmip::ttlv::Value::Structure(items) => items.iter().find_map(|i| find(i, tag)),
        _ => None,
    }
}

/// The data of an allowedIP policy that lets in `cidrs`.
fn allowed_ip(cidrs: &[&str]) -> Value {
    json!({"enabled": true, "attributes": {"allowed_ip": cidrs}})
}

/// The body of `PUT /instance/policies?policy=<policy_type>`.
fn instance_policy(policy_type: &str, data: Value) -> Value {
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
        "resources": [{"policy_type": policy_type, "policy_data": data}],
    })
}

#[test]
fn allowed_ip_trusts_the_socket_not_forwarding_headers() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), work.path(), "kp-review", &[]);
    let api = server.api();
    let client = admin_client(&server);
    let instance = client.instance.clone();
    let kp = |method: Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]| {
        client.kp(method, path, body, headers)
    };
    let forged: [&[(&str, &str)]; 4] = [
        &[("X-Forwarded-For", "192.0.2.7")],
        &[("X-Forwarded-For", "192.0.2.7, 127.0.0.2")],
        &[("X-Real-IP", "127.0.0.2")],
        &[("Forwarded", "for=127.0.0.2")],
    ];

    // 127.0.0.0/31 holds this client (127.0.0.1), whatever the headers say.
    client.set_instance_policy("allowedIP", allowed_ip(&["127.0.0.0/31"]));
    for headers in forged {
        let (status, answer) = kp(Method::GET, "/keys", None, headers);
        assert_eq!(status, 200, "{headers:?}: {answer}");
    }

    // 127.0.0.2/31 (.2 and .3) does not: refused, and no header talks the server round.
    client.set_instance_policy("allowedIP", allowed_ip(&["127.0.0.2/31", "::1/128"]));
    let (status, answer) = kp(Method::GET, "/keys", None, &[]);
    assert_eq!(status, 401, "{answer}");
    for headers in forged {
        let (status, answer) = kp(Method::GET, "/keys", None, headers);
        assert_eq!(status, 401, "{headers:?}: {answer}");
        assert_eq!(
            answer["resources"][0]["reasons"][0]["code"],
            "UNAUTHORIZED_ERR"
        );
    }

    // Each refusal is audited as denied, with the socket's address.
    let (status, events) = api.call(
        Method::GET,
        &format!("/api/keyfort/v1/instances/{instance}/audit?action=request.source"),
        None,
    );
    assert_eq!(status, 200, "{events}");
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 1 + forged.len(), "{events:?}");
    for e in events {
        assert_eq!(e["outcome"], "denied", "{e}");
        assert_eq!(e["source"], "127.0.0.1", "{e}");
    }
}
