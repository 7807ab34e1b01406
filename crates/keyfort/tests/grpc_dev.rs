#![allow(clippy::unwrap_used)]
//! The gRPC (GREP11) door of a real `keyfort server --dev`: the address in dev.json, TLS with
//! the dev CA, a bearer token from the IAM-compatible token endpoint, and a tonic client
//! generated from our proto. No instance header: the dev administrator's calls go to the dev
//! instance.

mod common;

use common::{Server, Value};
use keyfort_grpc::proto::{self, crypto_client::CryptoClient};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_server_serves_grep11_over_tls_with_bearer_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), "grpc", &[]);
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
    let auth = bearer.clone();
    let mut c =
        CryptoClient::with_interceptor(channel.clone(), move |mut req: tonic::Request<()>| {
            req.metadata_mut()
                .insert("authorization", auth.parse().unwrap());
            Ok(req)
        });

    let rnd = c
        .generate_random(proto::GenerateRandomRequest { len: 32 })
        .await
        .unwrap()
        .into_inner()
        .rnd;
    assert_eq!(rnd.len(), 32);
    let key = c
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
    let gcm = Some(proto::Mechanism {
        mechanism: 0x1087,
        parameter: Some(proto::mechanism::Parameter::ParameterB(vec![7; 12])),
    });
    let ct = c
        .encrypt_single(proto::EncryptSingleRequest {
            mech: gcm.clone(),
            key: key.key.clone(),
            plain: b"over the dev server".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    let pt = c
        .decrypt_single(proto::DecryptSingleRequest {
            mech: gcm,
            key_bytes: key.key_bytes,
            ciphered: ct,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(pt, b"over the dev server");

    // Without a token: UNAUTHENTICATED with a Grep11Error detail.
    let mut anon = CryptoClient::new(channel);
    let status = anon
        .generate_random(proto::GenerateRandomRequest { len: 8 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        keyfort_grpc::grep11_error(&status).unwrap().code,
        0x8004_0001
    );
}
