#![allow(clippy::unwrap_used)]
//! The keystore service of a real `keyfort server --dev`: token objects stored over gRPC (TLS,
//! bearer token from the IAM-compatible token endpoint) survive a crash of the server, and the
//! key blob kept in one still works with the crypto service after the restart.

mod common;

use common::{Server, Value};
use keyfort_grpc::keystore_proto::{self as pb, keystore_client::KeystoreClient};
use keyfort_grpc::proto::{self, crypto_client::CryptoClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const CKA_CLASS: u64 = 0x0;
const CKA_LABEL: u64 = 0x3;
const CKA_ID: u64 = 0x102;

/// A TLS channel to the server's gRPC port and a bearer token for its dev API key.
async fn connect(server: &Server) -> (Channel, String) {
    let dev: Value = server.dev.clone();
    let grpc_addr = dev["grpc_addr"].as_str().unwrap().to_owned();
    let port = grpc_addr.rsplit(':').next().unwrap().to_owned();
    let ca = std::fs::read(dev["ca_cert"].as_str().unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let token: Value = http
        .post(format!("{}/identity/token", server.addr()))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", dev["api_key"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    (channel, bearer)
}

fn with_bearer(
    bearer: String,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut req: tonic::Request<()>| {
        req.metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        Ok(req)
    }
}

fn at(t: u64, v: &[u8]) -> pb::Attribute {
    pb::Attribute {
        r#type: t,
        value: v.to_vec(),
    }
}

fn gcm() -> Option<proto::Mechanism> {
    Some(proto::Mechanism {
        mechanism: 0x1087,
        parameter: Some(proto::mechanism::Parameter::ParameterB(vec![3; 12])),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_objects_survive_a_server_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, tmp.path(), "first", &[]);
    let (channel, bearer) = connect(&server).await;
    let mut crypto = CryptoClient::with_interceptor(channel.clone(), with_bearer(bearer.clone()));
    let mut ks = KeystoreClient::with_interceptor(channel, with_bearer(bearer));

    let token = ks
        .create_keystore(pb::CreateKeystoreRequest {
            name: "pkcs11-token".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keystore
        .unwrap();
    let key = crypto
        .generate_key(proto::GenerateKeyRequest {
            mech: Some(proto::Mechanism {
                mechanism: 0x1080,
                parameter: None,
            }),
            template: [(
                0x161u64,
                proto::AttributeValue {
                    one_attr: Some(proto::attribute_value::OneAttr::AttributeI(32)),
                },
            )]
            .into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ct = crypto
        .encrypt_single(proto::EncryptSingleRequest {
            mech: gcm(),
            key_bytes: key.key_bytes.clone(),
            plain: b"before the crash".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    let mut stored = Vec::new();
    for (i, label) in ["aes-1", "aes-2", "aes-3"].iter().enumerate() {
        let o = ks
            .store_object(pb::StoreObjectRequest {
                keystore_id: token.id.clone(),
                blob: key.key_bytes.clone(),
                attributes: vec![
                    at(CKA_CLASS, &4u64.to_le_bytes()),
                    at(CKA_LABEL, label.as_bytes()),
                    at(CKA_ID, &[u8::try_from(i).unwrap()]),
                ],
            })
            .await
            .unwrap()
            .into_inner()
            .object
            .unwrap();
        stored.push(o);
    }
    // One acknowledged update, the last write before the crash.
    let updated = ks
        .update_object(pb::UpdateObjectRequest {
            keystore_id: token.id.clone(),
            id: stored[2].id.clone(),
            row_version: 1,
            set: vec![at(CKA_LABEL, b"aes-3-renamed")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    drop((crypto, ks));

    // SIGKILL: only what reached the database survives.
    server.kill();
    let mut server = Server::start(&data, tmp.path(), "second", &[]);
    let (channel, bearer) = connect(&server).await;
    let mut crypto = CryptoClient::with_interceptor(channel.clone(), with_bearer(bearer.clone()));
    let mut ks = KeystoreClient::with_interceptor(channel, with_bearer(bearer));

    let list = ks
        .list_keystores(pb::ListKeystoresRequest {})
        .await
        .unwrap()
        .into_inner()
        .keystores;
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id.as_str(), list[0].object_count),
        (token.id.as_str(), 3)
    );
    let found = ks
        .find_objects(pb::FindObjectsRequest {
            keystore_id: token.id.clone(),
            template: vec![at(CKA_LABEL, b"aes-3-renamed")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .objects;
    assert_eq!(found, vec![updated]);
    let first = ks
        .find_objects(pb::FindObjectsRequest {
            keystore_id: token.id.clone(),
            template: vec![at(CKA_ID, &[0]), at(CKA_LABEL, b"aes-1")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .objects;
    assert_eq!(first, vec![stored[0].clone()]);

    // The kept blob opens under the instance's master key after the restart.
    let pt = crypto
        .decrypt_single(proto::DecryptSingleRequest {
            mech: gcm(),
            key_bytes: first[0].blob.clone(),
            ciphered: ct,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(pt, b"before the crash");
    server.terminate();
}
