#![allow(clippy::unwrap_used)]
//! Two initialized instances on one server: key blobs, operation states and keystores of one
//! are refused in the other, whoever asks (a principal of the other instance, or a deployment
//! administrator naming the other instance), and nothing of the first changes.

mod common;

use common::{Server, ckr, kb, mech, mech_b, template};
use keyfort_core::{CustodianSecret, PrincipalKind, Role, RoleGrant, Scope};
use keyfort_grpc::ck::rv;
use keyfort_grpc::keystore_proto::{self as pb, keystore_client::KeystoreClient};
use keyfort_grpc::proto;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Ks = KeystoreClient<InterceptedService<Channel, Headers>>;

#[derive(Clone)]
struct Headers {
    token: String,
    instance: Option<String>,
}

impl tonic::service::Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        if let Some(i) = &self.instance {
            req.metadata_mut()
                .insert("bluemix-instance", i.parse().unwrap());
        }
        Ok(req)
    }
}

async fn ks(server: &Server, token: &str, instance: Option<&str>) -> Ks {
    KeystoreClient::with_interceptor(
        server.channel().await,
        Headers {
            token: token.to_owned(),
            instance: instance.map(str::to_owned),
        },
    )
}

async fn manager_of(server: &Server, name: &str, instance: &str) -> String {
    let p = server
        .core
        .create_principal(
            &server.admin,
            Some(instance),
            name,
            PrincipalKind::User,
            vec![RoleGrant {
                role: Role::Manager,
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

fn encrypt(key: &[u8]) -> proto::EncryptSingleRequest {
    proto::EncryptSingleRequest {
        mech: mech_b(0x1085, &[0; 16]),
        key: kb(key),
        plain: b"data".to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_cannot_reach_into_another() {
    let server = Server::start().await;
    let a = server.instance_id.clone();
    let custodians: Vec<CustodianSecret> = ["alice", "bob"]
        .iter()
        .map(|n| CustodianSecret::generate(n).unwrap())
        .collect();
    let b = server
        .core
        .create_instance(&server.admin, "second")
        .await
        .unwrap()
        .id;
    server
        .core
        .initialize_with_custodians(
            &server.admin,
            &b,
            custodians.iter().map(CustodianSecret::public).collect(),
            2,
        )
        .await
        .unwrap();

    // GREP11: a key and a state of A, used by the administrator naming B and by B's manager.
    let mut in_a = server
        .client_as(Some(server.token.clone()), Some(a.clone()))
        .await;
    let key_a = in_a
        .generate_key(proto::GenerateKeyRequest {
            mech: mech(0x1080),
            template: template(&[(0x161, common::int(32))]),
        })
        .await
        .unwrap()
        .into_inner()
        .key_bytes;
    let state_a = in_a
        .encrypt_init(proto::EncryptInitRequest {
            mech: mech_b(0x1085, &[0; 16]),
            key: kb(&key_a),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let manager_b = manager_of(&server, "manager-b", &b).await;
    for mut c in [
        server
            .client_as(Some(server.token.clone()), Some(b.clone()))
            .await,
        server.client_as(Some(manager_b.clone()), None).await,
    ] {
        assert_eq!(
            ckr(c.encrypt_single(encrypt(&key_a)).await),
            rv::CKR_IBM_WKID_MISMATCH
        );
        assert_eq!(
            ckr(c
                .encrypt_update(proto::EncryptUpdateRequest {
                    state: state_a.clone(),
                    plain: vec![0; 16],
                })
                .await),
            rv::CKR_IBM_WKID_MISMATCH
        );
        assert_eq!(
            ckr(c
                .set_attribute_value(proto::SetAttributeValueRequest {
                    object: key_a.clone(),
                    attributes: template(&[(0x3, common::b(b"mine"))]),
                })
                .await),
            rv::CKR_IBM_WKID_MISMATCH
        );
        assert_eq!(
            ckr(c
                .rewrap_key_blob(proto::RewrapKeyBlobRequest {
                    wrapped_key_bytes: key_a.clone(),
                    ..Default::default()
                })
                .await),
            rv::CKR_IBM_WKID_MISMATCH
        );
    }
    // B's manager may not name A.
    let mut named = server
        .client_as(Some(manager_b.clone()), Some(a.clone()))
        .await;
    let status = named.encrypt_single(encrypt(&key_a)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // Keystores: A's keystore and object are not found from B, by id, and cannot be changed or
    // deleted from there; B's own listing does not show them.
    let mut ks_a = ks(&server, &server.token, Some(&a)).await;
    let store = ks_a
        .create_keystore(pb::CreateKeystoreRequest {
            name: "in-a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keystore
        .unwrap();
    let object = ks_a
        .store_object(pb::StoreObjectRequest {
            keystore_id: store.id.clone(),
            blob: key_a.clone(),
            attributes: vec![pb::Attribute {
                r#type: 0x3,
                value: b"secret label".to_vec(),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    for mut k in [
        ks(&server, &server.token, Some(&b)).await,
        ks(&server, &manager_b, None).await,
    ] {
        // B has a keystore of its own, with an object, to aim at.
        let own = k
            .create_keystore(pb::CreateKeystoreRequest {
                name: format!("in-b-{}", rand_suffix()),
            })
            .await
            .unwrap()
            .into_inner()
            .keystore
            .unwrap();
        let listed = k
            .list_keystores(pb::ListKeystoresRequest {})
            .await
            .unwrap()
            .into_inner()
            .keystores;
        assert!(listed.iter().all(|s| s.id != store.id));
        assert_eq!(
            ckr(k
                .get_object(pb::GetObjectRequest {
                    keystore_id: store.id.clone(),
                    id: object.id.clone(),
                })
                .await),
            rv::CKR_TOKEN_NOT_PRESENT
        );
        // A's object id under B's keystore id: not there either.
        assert_eq!(
            ckr(k
                .get_object(pb::GetObjectRequest {
                    keystore_id: own.id.clone(),
                    id: object.id.clone(),
                })
                .await),
            rv::CKR_OBJECT_HANDLE_INVALID
        );
        assert_eq!(
            ckr(k
                .find_objects(pb::FindObjectsRequest {
                    keystore_id: store.id.clone(),
                    ..Default::default()
                })
                .await),
            rv::CKR_TOKEN_NOT_PRESENT
        );
        assert_not_present(ckr(k
            .update_object(pb::UpdateObjectRequest {
                keystore_id: store.id.clone(),
                id: object.id.clone(),
                row_version: 1,
                set: vec![pb::Attribute {
                    r#type: 0x3,
                    value: b"taken".to_vec(),
                }],
                ..Default::default()
            })
            .await));
        assert_not_present(ckr(k
            .delete_object(pb::DeleteObjectRequest {
                keystore_id: store.id.clone(),
                id: object.id.clone(),
                row_version: 0,
            })
            .await));
        assert_not_present(ckr(k
            .store_object(pb::StoreObjectRequest {
                keystore_id: store.id.clone(),
                blob: b"planted".to_vec(),
                attributes: vec![],
            })
            .await));
        assert_not_present(ckr(k
            .delete_keystore(pb::DeleteKeystoreRequest {
                keystore_id: store.id.clone(),
                force: true,
            })
            .await));
    }

    // A is as it was.
    let all = ks_a
        .find_objects(pb::FindObjectsRequest {
            keystore_id: store.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .objects;
    assert_eq!(all, vec![object]);
    in_a.encrypt_single(encrypt(&key_a)).await.unwrap();
}

/// Refused as not found: another instance's keystore is not there, whatever the call does with
/// it, as a read of it answers.
fn assert_not_present(code: u64) {
    assert_eq!(code, rv::CKR_TOKEN_NOT_PRESENT, "{code:#x}");
}

fn rand_suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{n}")
}
