#![allow(clippy::unwrap_used)]
//! RewrapKeyBlob across a master key rotation, over TLS through the generated client: blobs
//! sealed under the old master key keep working while the old key is loaded (the rotation's
//! re-seal window), RewrapKeyBlob moves them to the new key, and once the old key is retired
//! only the rewrapped blobs open.

mod common;

use std::time::Duration;

use common::*;
use keyfort_core::{Command, CommandOutcome, CustodianSecret, NewKey, SignedCommand};
use keyfort_grpc::proto;

const CKR_IBM_WKID_MISMATCH: u64 = 0x8001_0001;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_after_master_key_rotation() {
    // The re-seal job pauses between stored keys, so the old master key stays loaded a while.
    let server = Server::start_with(Duration::from_millis(300)).await;
    let custodians: Vec<CustodianSecret> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| CustodianSecret::generate(n).unwrap())
        .collect();
    let instance = server
        .core
        .create_instance(&server.admin, "prod")
        .await
        .unwrap();
    let id = instance.id.clone();
    server
        .core
        .initialize_with_custodians(
            &server.admin,
            &id,
            custodians.iter().map(CustodianSecret::public).collect(),
            2,
        )
        .await
        .unwrap();
    // Stored keys for the re-seal job to work through.
    for i in 0..8 {
        server
            .core
            .create_key(
                &server.admin,
                &id,
                NewKey {
                    name: format!("k{i}"),
                    ..NewKey::default()
                },
            )
            .await
            .unwrap();
    }
    let mut c = server
        .client_as(Some(server.token.clone()), Some(id.clone()))
        .await;

    let key = c
        .generate_key(proto::GenerateKeyRequest {
            mech: mech(0x1080),
            template: template(&[(0x161, int(32))]),
        })
        .await
        .unwrap()
        .into_inner()
        .key_bytes;
    let (private, public) = {
        let r = c
            .generate_key_pair(proto::GenerateKeyPairRequest {
                mech: mech(0x1040),
                pub_key_template: template(&[(
                    0x180,
                    b(&[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]),
                )]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (r.priv_key_bytes, r.pub_key_bytes)
    };
    let gcm = mech_b(0x1087, &[3; 12]);
    let ct = c
        .encrypt_single(proto::EncryptSingleRequest {
            mech: gcm.clone(),
            key: kb(&key),
            plain: b"before".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;

    let mut cmd = SignedCommand::new(&id, Command::RotateMasterKey, now_s() + 600).unwrap();
    cmd.sign(&custodians[0]);
    cmd.sign(&custodians[2]);
    let outcome = server
        .core
        .execute_command(&server.admin, &id, cmd)
        .await
        .unwrap();
    assert!(
        matches!(outcome, CommandOutcome::Rotated { mk_version: 2, .. }),
        "{outcome:?}"
    );

    // While the old key is loaded, old blobs work and rewrap to the new key (both generations).
    c.encrypt_single(proto::EncryptSingleRequest {
        mech: gcm.clone(),
        key_bytes: key.clone(),
        plain: b"during".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let rewrapped = c
        .rewrap_key_blob(proto::RewrapKeyBlobRequest {
            wrapped_key: kb(&key),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rewrapped.rewrapped_key.as_ref().unwrap().key_blobs[0],
        rewrapped.rewrapped_key_bytes
    );
    assert_ne!(rewrapped.rewrapped_key_bytes, key);
    let new_key = rewrapped.rewrapped_key_bytes;
    let new_private = c
        .rewrap_key_blob(proto::RewrapKeyBlobRequest {
            wrapped_key_bytes: private.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rewrapped_key_bytes;
    let new_public = c
        .rewrap_key_blob(proto::RewrapKeyBlobRequest {
            wrapped_key: kb(&public),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rewrapped_key_bytes;
    // A rewrapped blob is itself current: rewrapping it again changes nothing it can do.
    c.rewrap_key_blob(proto::RewrapKeyBlobRequest {
        wrapped_key: kb(&new_key),
        ..Default::default()
    })
    .await
    .unwrap();

    // Wait for the re-seal job to finish and retire master key version 1.
    let mut retired = false;
    for _ in 0..200 {
        let status = server.core.unseal_status(&id).await.unwrap();
        if status
            .reseal
            .as_ref()
            .is_some_and(|p| !p.running && p.done == p.total)
        {
            retired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(retired, "the re-seal job did not finish");

    // Old blobs are refused as sealed under another wrapping key; the rewrapped ones work and
    // still decrypt what the old key encrypted.
    assert_eq!(
        ckr(c
            .encrypt_single(proto::EncryptSingleRequest {
                mech: gcm.clone(),
                key: kb(&key),
                plain: vec![1],
                ..Default::default()
            })
            .await),
        CKR_IBM_WKID_MISMATCH
    );
    assert_eq!(
        ckr(c
            .rewrap_key_blob(proto::RewrapKeyBlobRequest {
                wrapped_key: kb(&key),
                ..Default::default()
            })
            .await),
        CKR_IBM_WKID_MISMATCH
    );
    let pt = c
        .decrypt_single(proto::DecryptSingleRequest {
            mech: gcm,
            key: kb(&new_key),
            ciphered: ct,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(pt, b"before");
    let sig = c
        .sign_single(proto::SignSingleRequest {
            mech: mech(0x1044),
            priv_key: kb(&new_private),
            data: b"rotated".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .signature;
    c.verify_single(proto::VerifySingleRequest {
        mech: mech(0x1044),
        pub_key_bytes: new_public,
        data: b"rotated".to_vec(),
        signature: sig,
        ..Default::default()
    })
    .await
    .unwrap();
}
