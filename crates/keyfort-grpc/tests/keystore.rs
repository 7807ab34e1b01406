#![allow(clippy::unwrap_used)]
//! The keystore service (`keyfort.keystore.v1.Keystore`) over real TLS against a real server,
//! through a tonic client generated from our proto: keystores, token objects holding GREP11 key
//! blobs, C_FindObjects templates and paging, optimistic updates, deletes, roles, limits.

mod common;

use common::{Server, ckr, kb, mech, template};
use keyfort_core::{PrincipalKind, Role, RoleGrant, Scope};
use keyfort_grpc::ck::rv;
use keyfort_grpc::keystore_proto::{self as pb, keystore_client::KeystoreClient};
use keyfort_grpc::proto;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Ks = KeystoreClient<InterceptedService<Channel, Headers>>;

/// Adds the bearer token and, when set, the instance header to every call.
#[derive(Clone)]
struct Headers {
    token: Option<String>,
    instance: Option<String>,
}

impl tonic::service::Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        if let Some(i) = &self.instance {
            req.metadata_mut()
                .insert("bluemix-instance", i.parse().unwrap());
        }
        Ok(req)
    }
}

const CKA_CLASS: u64 = 0x0;
const CKA_TOKEN: u64 = 0x1;
const CKA_LABEL: u64 = 0x3;
const CKA_KEY_TYPE: u64 = 0x100;
const CKA_ID: u64 = 0x102;
const CKO_SECRET_KEY: u64 = 4;
const CKO_PRIVATE_KEY: u64 = 3;
const CKK_AES: u64 = 0x1f;

fn ulong(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn at(t: u64, v: &[u8]) -> pb::Attribute {
    pb::Attribute {
        r#type: t,
        value: v.to_vec(),
    }
}

async fn ks_client(server: &Server, token: Option<String>, instance: Option<String>) -> Ks {
    KeystoreClient::with_interceptor(server.channel().await, Headers { token, instance })
}

async fn create(ks: &mut Ks, name: &str) -> pb::KeystoreInfo {
    ks.create_keystore(pb::CreateKeystoreRequest {
        name: name.to_owned(),
    })
    .await
    .unwrap()
    .into_inner()
    .keystore
    .unwrap()
}

async fn store(
    ks: &mut Ks,
    keystore: &str,
    blob: &[u8],
    attrs: Vec<pb::Attribute>,
) -> pb::TokenObject {
    ks.store_object(pb::StoreObjectRequest {
        keystore_id: keystore.to_owned(),
        blob: blob.to_vec(),
        attributes: attrs,
    })
    .await
    .unwrap()
    .into_inner()
    .object
    .unwrap()
}

async fn find(
    ks: &mut Ks,
    keystore: &str,
    tmpl: Vec<pb::Attribute>,
    limit: u32,
    cursor: &str,
) -> pb::FindObjectsResponse {
    ks.find_objects(pb::FindObjectsRequest {
        keystore_id: keystore.to_owned(),
        template: tmpl,
        limit,
        cursor: cursor.to_owned(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// A token of a new principal holding `role` on `instance`.
async fn token_for(server: &Server, name: &str, role: Role, instance: &str) -> String {
    let p = server
        .core
        .create_principal(
            &server.admin,
            Some(instance),
            name,
            PrincipalKind::User,
            vec![RoleGrant {
                role,
                scope: Scope::Instance(instance.to_owned()),
            }],
        )
        .await
        .unwrap();
    let (_, secret) = server
        .core
        .create_api_key(&server.admin, &p.id, "k")
        .await
        .unwrap();
    server
        .core
        .exchange_api_key(secret.expose())
        .await
        .unwrap()
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_objects_hold_grep11_blobs_and_are_found_by_template() {
    let server = Server::start().await;
    let mut crypto = server.client().await;
    let mut ks = ks_client(&server, Some(server.token.clone()), None).await;

    let token = create(&mut ks, "token-1").await;
    assert_eq!(token.name, "token-1");
    assert_eq!(token.object_count, 0);
    assert_eq!(
        ckr(ks
            .create_keystore(pb::CreateKeystoreRequest {
                name: "token-1".into()
            })
            .await),
        rv::CKR_IBM_GREP11_CONFLICT
    );

    // A real AES key blob from the crypto service, kept as a token object.
    let key = crypto
        .generate_key(proto::GenerateKeyRequest {
            mech: mech(0x1080),
            template: template(&[(0x161, common::int(32))]),
        })
        .await
        .unwrap()
        .into_inner();
    let attrs = vec![
        at(CKA_LABEL, b"aes-main"),
        at(CKA_CLASS, &ulong(CKO_SECRET_KEY)),
        at(CKA_KEY_TYPE, &ulong(CKK_AES)),
        at(CKA_ID, &[0x01]),
        at(CKA_TOKEN, &[1]),
    ];
    let aes = store(&mut ks, &token.id, &key.key_bytes, attrs).await;
    assert_eq!(aes.row_version, 1);
    assert_eq!(aes.keystore_id, token.id);
    assert_eq!(aes.blob, key.key_bytes);
    // Attributes come back sorted by type.
    let types: Vec<u64> = aes.attributes.iter().map(|a| a.r#type).collect();
    assert_eq!(
        types,
        [CKA_CLASS, CKA_TOKEN, CKA_LABEL, CKA_KEY_TYPE, CKA_ID]
    );
    assert!(aes.created_at_ms > 0 && aes.created_at_ms == aes.updated_at_ms);

    // Ten private-key objects (blob-less placeholders are fine: the server never opens blobs).
    let mut privs = Vec::new();
    for i in 0..10u8 {
        let o = store(
            &mut ks,
            &token.id,
            format!("sealed-{i}").as_bytes(),
            vec![
                at(CKA_CLASS, &ulong(CKO_PRIVATE_KEY)),
                at(CKA_LABEL, format!("rsa-{}", i % 3).as_bytes()),
                at(CKA_ID, &[0x10 + i]),
            ],
        )
        .await;
        privs.push(o);
    }
    privs.sort_by(|a, b| a.id.cmp(&b.id));

    // C_FindObjects as NGINX's post-fork reload does it: class + id + label.
    let found = find(
        &mut ks,
        &token.id,
        vec![
            at(CKA_CLASS, &ulong(CKO_SECRET_KEY)),
            at(CKA_ID, &[1]),
            at(CKA_LABEL, b"aes-main"),
        ],
        0,
        "",
    )
    .await;
    assert_eq!(found.objects, vec![aes.clone()]);
    assert!(found.next_cursor.is_empty());
    // The found blob still works with the crypto service.
    let blob = &found.objects[0].blob;
    let gcm = Some(proto::Mechanism {
        mechanism: 0x1087,
        parameter: Some(proto::mechanism::Parameter::ParameterB(vec![9; 12])),
    });
    let ct = crypto
        .encrypt_single(proto::EncryptSingleRequest {
            mech: gcm.clone(),
            key: kb(blob),
            plain: b"token object".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    let pt = crypto
        .decrypt_single(proto::DecryptSingleRequest {
            mech: gcm,
            key_bytes: key.key_bytes.clone(),
            ciphered: ct,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(pt, b"token object");

    // By label only: rsa-1 is i = 1, 4, 7.
    let by_label = find(&mut ks, &token.id, vec![at(CKA_LABEL, b"rsa-1")], 0, "").await;
    assert_eq!(by_label.objects.len(), 3);
    assert!(
        by_label
            .objects
            .iter()
            .all(|o| o.attributes.contains(&at(CKA_LABEL, b"rsa-1")))
    );
    // No match: a wrong value, a value of the wrong length, an attribute nobody has.
    for tmpl in [
        vec![at(CKA_LABEL, b"rsa-9")],
        vec![at(CKA_CLASS, &[3])],
        vec![
            at(CKA_LABEL, b"rsa-1"),
            at(CKA_CLASS, &ulong(CKO_SECRET_KEY)),
        ],
        vec![at(0x170, &[1])],
    ] {
        assert!(
            find(&mut ks, &token.id, tmpl, 0, "")
                .await
                .objects
                .is_empty()
        );
    }
    // Empty template: all eleven.
    assert_eq!(
        find(&mut ks, &token.id, vec![], 0, "").await.objects.len(),
        11
    );

    // Paging by 4 through the ten private keys: 4 + 4 + 2, in id order, each once.
    let class = vec![at(CKA_CLASS, &ulong(CKO_PRIVATE_KEY))];
    let mut pages = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = find(&mut ks, &token.id, class.clone(), 4, &cursor).await;
        let start: usize = pages.iter().sum();
        pages.push(page.objects.len());
        assert_eq!(page.objects, privs[start..start + page.objects.len()]);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(pages, [4, 4, 2]);
    let mut all_ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = find(&mut ks, &token.id, class.clone(), 3, &cursor).await;
        all_ids.extend(page.objects.into_iter().map(|o| o.id));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(
        all_ids,
        privs.iter().map(|o| o.id.clone()).collect::<Vec<_>>()
    );

    // Update: relabel and re-seal, at the version read.
    let updated = ks
        .update_object(pb::UpdateObjectRequest {
            keystore_id: token.id.clone(),
            id: aes.id.clone(),
            row_version: 1,
            blob: Some(b"resealed".to_vec()),
            set: vec![at(CKA_LABEL, b"aes-renamed"), at(0x162, &[1])],
            remove: vec![CKA_TOKEN],
        })
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    assert_eq!(updated.row_version, 2);
    assert_eq!(updated.blob, b"resealed");
    assert_eq!(updated.created_at_ms, aes.created_at_ms);
    assert!(updated.updated_at_ms >= aes.updated_at_ms);
    let types: Vec<u64> = updated.attributes.iter().map(|a| a.r#type).collect();
    assert_eq!(types, [CKA_CLASS, CKA_LABEL, CKA_KEY_TYPE, CKA_ID, 0x162]);
    assert!(
        find(&mut ks, &token.id, vec![at(CKA_LABEL, b"aes-main")], 0, "")
            .await
            .objects
            .is_empty()
    );
    assert_eq!(
        find(
            &mut ks,
            &token.id,
            vec![at(CKA_LABEL, b"aes-renamed")],
            0,
            ""
        )
        .await
        .objects,
        vec![updated.clone()]
    );
    // A stale version is refused and changes nothing.
    let stale = ks
        .update_object(pb::UpdateObjectRequest {
            keystore_id: token.id.clone(),
            id: aes.id.clone(),
            row_version: 1,
            blob: Some(b"lost update".to_vec()),
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(stale), rv::CKR_IBM_GREP11_CONFLICT);
    let got = ks
        .get_object(pb::GetObjectRequest {
            keystore_id: token.id.clone(),
            id: aes.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    assert_eq!(got, updated);
    let stale_delete = ks
        .delete_object(pb::DeleteObjectRequest {
            keystore_id: token.id.clone(),
            id: aes.id.clone(),
            row_version: 1,
        })
        .await;
    assert_eq!(ckr(stale_delete), rv::CKR_IBM_GREP11_CONFLICT);

    // Delete at the current version; then it is unknown.
    ks.delete_object(pb::DeleteObjectRequest {
        keystore_id: token.id.clone(),
        id: aes.id.clone(),
        row_version: 2,
    })
    .await
    .unwrap();
    let gone = ks
        .get_object(pb::GetObjectRequest {
            keystore_id: token.id.clone(),
            id: aes.id.clone(),
        })
        .await;
    assert_eq!(ckr(gone), rv::CKR_OBJECT_HANDLE_INVALID);
    let again = ks
        .delete_object(pb::DeleteObjectRequest {
            keystore_id: token.id.clone(),
            id: aes.id.clone(),
            row_version: 0,
        })
        .await;
    assert_eq!(ckr(again), rv::CKR_OBJECT_HANDLE_INVALID);

    // Listing shows the count; a keystore holding objects is deleted only when forced.
    let other = create(&mut ks, "a-token").await;
    let list = ks
        .list_keystores(pb::ListKeystoresRequest {})
        .await
        .unwrap()
        .into_inner()
        .keystores;
    assert_eq!(
        list.iter()
            .map(|k| (k.name.as_str(), k.object_count))
            .collect::<Vec<_>>(),
        [("a-token", 0), ("token-1", 10)]
    );
    let refused = ks
        .delete_keystore(pb::DeleteKeystoreRequest {
            keystore_id: token.id.clone(),
            force: false,
        })
        .await;
    let status = refused.as_ref().unwrap_err().clone();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(ckr(refused), rv::CKR_ACTION_PROHIBITED);
    assert_eq!(
        find(&mut ks, &token.id, vec![], 0, "").await.objects.len(),
        10
    );
    ks.delete_keystore(pb::DeleteKeystoreRequest {
        keystore_id: token.id.clone(),
        force: true,
    })
    .await
    .unwrap();
    ks.delete_keystore(pb::DeleteKeystoreRequest {
        keystore_id: other.id.clone(),
        force: false,
    })
    .await
    .unwrap();
    let missing = ks
        .find_objects(pb::FindObjectsRequest {
            keystore_id: token.id.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(missing), rv::CKR_TOKEN_NOT_PRESENT);
    assert!(
        ks.list_keystores(pb::ListKeystoresRequest {})
            .await
            .unwrap()
            .into_inner()
            .keystores
            .is_empty()
    );

    // Every change was audited, in the instance's chain.
    let events = server
        .core
        .audit_events(
            &server.admin,
            &server.instance_id,
            &keyfort_core::AuditQuery {
                limit: 10_000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let actions: Vec<String> = events.iter().map(|e| e.action.clone()).collect();
    for action in [
        "keystore.create",
        "keystore.object.store",
        "keystore.object.update",
        "keystore.object.delete",
        "keystore.object.find",
        "keystore.delete",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} not in {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystores_use_the_crypto_service_auth_and_roles() {
    let server = Server::start().await;
    let inst = server.instance_id.clone();
    let mut admin = ks_client(&server, Some(server.token.clone()), Some(inst.clone())).await;
    let token = create(&mut admin, "shared").await;
    let obj = store(&mut admin, &token.id, b"blob", vec![at(CKA_LABEL, b"k")]).await;

    // No token, or a malformed one: UNAUTHENTICATED with the GREP11 code, nothing stored.
    for bad in [None, Some("not-a-token".to_owned())] {
        let mut anon = ks_client(&server, bad, Some(inst.clone())).await;
        let r = anon
            .store_object(pb::StoreObjectRequest {
                keystore_id: token.id.clone(),
                blob: b"x".to_vec(),
                attributes: vec![],
            })
            .await;
        assert_eq!(r.as_ref().unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(ckr(r), rv::CKR_IBM_GREP11_NOT_AUTHENTICATED);
        let r = anon.list_keystores(pb::ListKeystoresRequest {}).await;
        assert_eq!(ckr(r), rv::CKR_IBM_GREP11_NOT_AUTHENTICATED);
    }

    // A Reader finds and gets, but may not store, update, delete or create.
    let reader = token_for(&server, "reader", Role::Reader, &inst).await;
    let mut r = ks_client(&server, Some(reader), None).await;
    let found = find(&mut r, &token.id, vec![at(CKA_LABEL, b"k")], 0, "").await;
    assert_eq!(found.objects, vec![obj.clone()]);
    r.get_object(pb::GetObjectRequest {
        keystore_id: token.id.clone(),
        id: obj.id.clone(),
    })
    .await
    .unwrap();
    let denied = r
        .store_object(pb::StoreObjectRequest {
            keystore_id: token.id.clone(),
            blob: b"x".to_vec(),
            attributes: vec![],
        })
        .await;
    assert_eq!(denied.as_ref().unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(ckr(denied), rv::CKR_USER_NOT_LOGGED_IN);
    let denied = r
        .update_object(pb::UpdateObjectRequest {
            keystore_id: token.id.clone(),
            id: obj.id.clone(),
            row_version: 1,
            set: vec![at(CKA_LABEL, b"mine")],
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(denied), rv::CKR_USER_NOT_LOGGED_IN);
    let denied = r
        .delete_object(pb::DeleteObjectRequest {
            keystore_id: token.id.clone(),
            id: obj.id.clone(),
            row_version: 0,
        })
        .await;
    assert_eq!(ckr(denied), rv::CKR_USER_NOT_LOGGED_IN);
    let denied = r
        .create_keystore(pb::CreateKeystoreRequest {
            name: "readers-own".into(),
        })
        .await;
    assert_eq!(ckr(denied), rv::CKR_USER_NOT_LOGGED_IN);

    // A Writer stores and deletes objects and creates keystores, but a forced delete of a
    // keystore holding objects needs a Manager.
    let writer = token_for(&server, "writer", Role::Writer, &inst).await;
    let mut w = ks_client(&server, Some(writer), None).await;
    let mine = store(&mut w, &token.id, b"w", vec![at(CKA_LABEL, b"w")]).await;
    w.delete_object(pb::DeleteObjectRequest {
        keystore_id: token.id.clone(),
        id: mine.id,
        row_version: 1,
    })
    .await
    .unwrap();
    let denied = w
        .delete_keystore(pb::DeleteKeystoreRequest {
            keystore_id: token.id.clone(),
            force: true,
        })
        .await;
    assert_eq!(ckr(denied), rv::CKR_USER_NOT_LOGGED_IN);

    // A principal of another instance: naming ours is refused; in its own instance our
    // keystore does not exist.
    let other = server
        .core
        .create_instance(&server.admin, "other")
        .await
        .unwrap();
    let stranger = token_for(&server, "stranger", Role::Manager, &other.id).await;
    let mut s = ks_client(&server, Some(stranger.clone()), Some(inst.clone())).await;
    let denied = s
        .find_objects(pb::FindObjectsRequest {
            keystore_id: token.id.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(denied.as_ref().unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(ckr(denied), rv::CKR_USER_NOT_LOGGED_IN);
    let denied = s
        .delete_keystore(pb::DeleteKeystoreRequest {
            keystore_id: token.id.clone(),
            force: true,
        })
        .await;
    assert_eq!(ckr(denied), rv::CKR_USER_NOT_LOGGED_IN);
    // Its own instance is not initialized: no master key, no keystores.
    let mut own = ks_client(&server, Some(stranger), None).await;
    let r = own
        .get_object(pb::GetObjectRequest {
            keystore_id: token.id.clone(),
            id: obj.id.clone(),
        })
        .await;
    assert_eq!(ckr(r), rv::CKR_IBM_WK_NOT_INITIALIZED);

    // Nothing changed through all of that.
    let all = find(&mut admin, &token.id, vec![], 0, "").await;
    assert_eq!(all.objects, vec![obj]);

    // The refusals are in the audit trail, as `denied`, naming who tried.
    let denied = server
        .core
        .audit_events(
            &server.admin,
            &inst,
            &keyfort_core::AuditQuery {
                outcome: Some("denied".to_owned()),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let seen: Vec<(&str, &str)> = denied
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    for want in [
        ("reader", "keystore.object.store"),
        ("reader", "keystore.object.update"),
        ("reader", "keystore.object.delete"),
        ("reader", "keystore.create"),
        ("writer", "keystore.delete"),
        ("stranger", "keystore.object.find"),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_pkcs11_codes_and_changes_nothing() {
    use keyfort_core::keystores::{
        MAX_ATTRIBUTE_LEN, MAX_ATTRIBUTES, MAX_BLOB_LEN, MAX_PAGE, MAX_TEMPLATE,
    };
    let server = Server::start().await;
    let mut ks = ks_client(&server, Some(server.token.clone()), None).await;
    let token = create(&mut ks, "limits").await;
    let obj = store(&mut ks, &token.id, b"b", vec![at(CKA_LABEL, b"ok")]).await;
    let put = |blob: Vec<u8>, attributes: Vec<pb::Attribute>| pb::StoreObjectRequest {
        keystore_id: token.id.clone(),
        blob,
        attributes,
    };

    // Blob and attribute limits.
    let r = ks
        .store_object(put(vec![0; MAX_BLOB_LEN + 1], vec![]))
        .await;
    assert_eq!(r.as_ref().unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(ckr(r), rv::CKR_DATA_LEN_RANGE);
    // The largest blob is fine.
    store(&mut ks, &token.id, &vec![1; MAX_BLOB_LEN], vec![]).await;
    let many = (0..=MAX_ATTRIBUTES as u64).map(|t| at(t, b"")).collect();
    assert_eq!(
        ckr(ks.store_object(put(b"x".to_vec(), many)).await),
        rv::CKR_TEMPLATE_INCONSISTENT
    );
    let dup = vec![at(CKA_LABEL, b"a"), at(CKA_LABEL, b"b")];
    assert_eq!(
        ckr(ks.store_object(put(b"x".to_vec(), dup)).await),
        rv::CKR_TEMPLATE_INCONSISTENT
    );
    let long = vec![at(0x11, &vec![0; MAX_ATTRIBUTE_LEN + 1])];
    assert_eq!(
        ckr(ks.store_object(put(b"x".to_vec(), long)).await),
        rv::CKR_ATTRIBUTE_VALUE_INVALID
    );

    // Unknown ids.
    let r = ks
        .get_object(pb::GetObjectRequest {
            keystore_id: token.id.clone(),
            id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
        })
        .await;
    assert_eq!(r.as_ref().unwrap_err().code(), Code::NotFound);
    assert_eq!(ckr(r), rv::CKR_OBJECT_HANDLE_INVALID);
    let r = ks
        .update_object(pb::UpdateObjectRequest {
            keystore_id: token.id.clone(),
            id: "nope".into(),
            row_version: 1,
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(r), rv::CKR_OBJECT_HANDLE_INVALID);
    let r = ks
        .store_object(pb::StoreObjectRequest {
            keystore_id: "nope".into(),
            blob: b"x".to_vec(),
            attributes: vec![],
        })
        .await;
    assert_eq!(ckr(r), rv::CKR_TOKEN_NOT_PRESENT);
    let r = ks
        .delete_keystore(pb::DeleteKeystoreRequest {
            keystore_id: "nope".into(),
            force: false,
        })
        .await;
    assert_eq!(ckr(r), rv::CKR_TOKEN_NOT_PRESENT);

    // Find: template size, limit, cursor.
    let big = (0..=MAX_TEMPLATE as u64).map(|t| at(t, b"")).collect();
    let r = ks
        .find_objects(pb::FindObjectsRequest {
            keystore_id: token.id.clone(),
            template: big,
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(r), rv::CKR_TEMPLATE_INCONSISTENT);
    let r = ks
        .find_objects(pb::FindObjectsRequest {
            keystore_id: token.id.clone(),
            limit: MAX_PAGE + 1,
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(r), rv::CKR_ARGUMENTS_BAD);
    let r = ks
        .find_objects(pb::FindObjectsRequest {
            keystore_id: token.id.clone(),
            cursor: "' OR 1=1 --".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(r), rv::CKR_ARGUMENTS_BAD);
    // Names and versions.
    for name in ["", "has space", &"n".repeat(65)] {
        let r = ks
            .create_keystore(pb::CreateKeystoreRequest { name: name.into() })
            .await;
        assert_eq!(ckr(r), rv::CKR_ARGUMENTS_BAD, "{name:?}");
    }
    let r = ks
        .update_object(pb::UpdateObjectRequest {
            keystore_id: token.id.clone(),
            id: obj.id.clone(),
            row_version: 0,
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(r), rv::CKR_ARGUMENTS_BAD);
    // An update whose result breaks a limit changes nothing either.
    let r = ks
        .update_object(pb::UpdateObjectRequest {
            keystore_id: token.id.clone(),
            id: obj.id.clone(),
            row_version: 1,
            blob: Some(vec![0; MAX_BLOB_LEN + 1]),
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(r), rv::CKR_DATA_LEN_RANGE);

    let all = find(&mut ks, &token.id, vec![], 0, "").await;
    assert_eq!(all.objects.len(), 2);
    assert!(all.objects.contains(&obj));

    // Refusals are audited as failures with the reason's name.
    let failures = server
        .core
        .audit_events(
            &server.admin,
            &server.instance_id,
            &keyfort_core::AuditQuery {
                outcome: Some("failure".to_owned()),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let reasons: Vec<String> = failures
        .iter()
        .filter_map(|e| e.details["reason"].as_str().map(str::to_owned))
        .collect();
    for want in [
        "BlobTooLarge",
        "DuplicateAttribute",
        "ObjectNotFound",
        "InvalidCursor",
    ] {
        assert!(
            reasons.iter().any(|r| r == want),
            "{want} not in {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_at_one_version_have_one_winner() {
    let server = Server::start().await;
    let mut ks = ks_client(&server, Some(server.token.clone()), None).await;
    let token = create(&mut ks, "race").await;
    let obj = store(&mut ks, &token.id, b"v1", vec![at(CKA_LABEL, b"start")]).await;

    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let mut c = ks.clone();
        let (keystore_id, id) = (token.id.clone(), obj.id.clone());
        tasks.push(tokio::spawn(async move {
            c.update_object(pb::UpdateObjectRequest {
                keystore_id,
                id,
                row_version: 1,
                set: vec![at(CKA_LABEL, &[b'w', b'0' + i])],
                ..Default::default()
            })
            .await
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => winners.push(r.into_inner().object.unwrap()),
            Err(status) => {
                let e = keyfort_grpc::grep11_error(&status).unwrap();
                assert_eq!(e.code, rv::CKR_IBM_GREP11_CONFLICT, "{status:?}");
                assert!(e.retry);
            }
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let got = ks
        .get_object(pb::GetObjectRequest {
            keystore_id: token.id.clone(),
            id: obj.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    assert_eq!(got, winners[0]);
    assert_eq!(got.row_version, 2);
    // The index holds exactly the winner's label.
    let start = find(&mut ks, &token.id, vec![at(CKA_LABEL, b"start")], 0, "").await;
    assert!(start.objects.is_empty());
    let label = got.attributes[0].value.clone();
    let found = find(&mut ks, &token.id, vec![at(CKA_LABEL, &label)], 0, "").await;
    assert_eq!(found.objects, vec![got]);
}
