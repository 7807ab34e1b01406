#![allow(clippy::unwrap_used)]
//! Blobs that opened are kept in memory with the instance's loaded master keys, keyed by the
//! digest of the whole blob: a kept blob is not authenticated and parsed again, a changed copy
//! of it still is (and fails), and sealing the instance or changing its master key drops
//! everything kept.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use keyfort_core::grep11::Grep11Sealer;
use keyfort_core::{
    Action, Command, CommandOutcome, CustodianSecret, DevSetup, Keyfort, SignedCommand,
};
use keyfort_grpc::blob;
use keyfort_grpc::proto;

const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const CKR_IBM_WKID_MISMATCH: u64 = 0x8001_0001;
const CKR_IBM_BLOB_ERROR: u64 = 0x8001_0004;
const CKR_IBM_WK_NOT_INITIALIZED: u64 = 0x8001_0009;

async fn p256_pair(c: &mut Client) -> (Vec<u8>, Vec<u8>) {
    let r = c
        .generate_key_pair(proto::GenerateKeyPairRequest {
            mech: mech(0x1040),
            pub_key_template: template(&[(0x180, b(P256))]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (r.priv_key_bytes, r.pub_key_bytes)
}

async fn aes_key(c: &mut Client) -> Vec<u8> {
    c.generate_key(proto::GenerateKeyRequest {
        mech: mech(0x1080),
        template: template(&[(0x161, int(32))]),
    })
    .await
    .unwrap()
    .into_inner()
    .key_bytes
}

async fn sign(c: &mut Client, key: &[u8], data: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    c.sign_single(proto::SignSingleRequest {
        mech: mech(0x1044),
        priv_key: kb(key),
        data: data.to_vec(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().signature)
}

async fn verify(c: &mut Client, key: &[u8], data: &[u8], sig: &[u8]) {
    c.verify_single(proto::VerifySingleRequest {
        mech: mech(0x1044),
        pub_key: kb(key),
        data: data.to_vec(),
        signature: sig.to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
}

fn encrypt(key: &[u8]) -> proto::EncryptSingleRequest {
    proto::EncryptSingleRequest {
        mech: mech_b(0x1087, &[9; 12]),
        key: kb(key),
        plain: b"opened".to_vec(),
        ..Default::default()
    }
}

async fn sealer(core: &Keyfort, admin: &keyfort_core::Caller, id: &str) -> Grep11Sealer {
    core.grep11_sealer(admin, Some(id), Action::UseKey)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_blobs_are_reused_and_changed_copies_still_refused() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let (private, public) = p256_pair(&mut c).await;
    let secret = aes_key(&mut c).await;

    // Used once: now kept.
    let sig = sign(&mut c, &private, b"m").await.unwrap();
    verify(&mut c, &public, b"m", &sig).await;
    c.encrypt_single(encrypt(&secret)).await.unwrap();
    let s = sealer(&server.core, &server.admin, &server.instance_id).await;
    assert_eq!(s.opened_count(), 3);
    let a = blob::open(&s, &private).unwrap();
    let again = blob::open(&s, &private).unwrap();
    assert!(Arc::ptr_eq(&a, &again), "the kept key is reused");
    assert_eq!(s.opened_count(), 3);

    // Every changed copy of a kept blob is refused and kept nowhere.
    for key in [&private, &secret] {
        for i in (0..key.len()).step_by(5) {
            let mut t = key.clone();
            t[i] ^= 0x01;
            let code = if key == &private {
                ckr(sign(&mut c, &t, b"m").await.map(tonic::Response::new))
            } else {
                ckr(c.encrypt_single(encrypt(&t)).await)
            };
            assert!(
                [CKR_IBM_BLOB_ERROR, CKR_IBM_WKID_MISMATCH].contains(&code),
                "byte {i}: {code:#x}"
            );
        }
        let mut longer = key.clone();
        longer.push(0);
        assert_eq!(
            ckr(sign(&mut c, &longer, b"m").await.map(tonic::Response::new)),
            CKR_IBM_BLOB_ERROR
        );
        let shorter = key[..key.len() - 1].to_vec();
        assert_eq!(
            ckr(c.encrypt_single(encrypt(&shorter)).await),
            CKR_IBM_BLOB_ERROR
        );
    }
    let mut t = public.clone();
    t[40] ^= 1;
    let status = c
        .verify_single(proto::VerifySingleRequest {
            mech: mech(0x1044),
            pub_key: kb(&t),
            data: b"m".to_vec(),
            signature: sig.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(status), CKR_IBM_BLOB_ERROR);
    assert_eq!(s.opened_count(), 3, "refused blobs are not kept");

    // The kept originals still work.
    let sig = sign(&mut c, &private, b"n").await.unwrap();
    verify(&mut c, &public, b"n", &sig).await;
    c.encrypt_single(encrypt(&secret)).await.unwrap();

    // Another instance's sealer does not see them: its own master key must open the blob.
    let other = Server::start().await;
    let o = sealer(&other.core, &other.admin, &other.instance_id).await;
    assert!(blob::open(&o, &private).is_err());
    assert_eq!(o.opened_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_the_instance_drops_kept_blobs() {
    let server = Server::start().await;
    let mut c = server
        .client_as(Some(server.token.clone()), Some(server.instance_id.clone()))
        .await;
    let (private, public) = p256_pair(&mut c).await;
    sign(&mut c, &private, b"m").await.unwrap();

    let s = sealer(&server.core, &server.admin, &server.instance_id).await;
    let kept = Arc::downgrade(&blob::open(&s, &private).unwrap());
    assert_eq!(s.opened_count(), 1);
    drop(s);
    assert!(kept.upgrade().is_some());

    server
        .core
        .seal_instance(&server.admin, &server.instance_id)
        .await
        .unwrap();
    assert!(kept.upgrade().is_none(), "the kept key went with the seal");
    assert_eq!(
        ckr(sign(&mut c, &private, b"m").await.map(tonic::Response::new)),
        CKR_IBM_WK_NOT_INITIALIZED
    );

    // Unsealed again (same master key): nothing kept, the blob opens afresh and works.
    server
        .core
        .dev_bootstrap(DevSetup {
            master_key_file: server.dir.path().join("dev.key"),
            previous_api_key: None,
        })
        .await
        .unwrap();
    let s = sealer(&server.core, &server.admin, &server.instance_id).await;
    assert_eq!(s.opened_count(), 0);
    let sig = sign(&mut c, &private, b"m").await.unwrap();
    verify(&mut c, &public, b"m", &sig).await;
    assert_eq!(s.opened_count(), 2);
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_change_drops_kept_blobs() {
    let server = Server::start_with(Duration::from_millis(50)).await;
    let custodians: Vec<CustodianSecret> = ["alice", "bob"]
        .iter()
        .map(|n| CustodianSecret::generate(n).unwrap())
        .collect();
    let id = server
        .core
        .create_instance(&server.admin, "rotating")
        .await
        .unwrap()
        .id;
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
    let mut c = server
        .client_as(Some(server.token.clone()), Some(id.clone()))
        .await;
    let (private, public) = p256_pair(&mut c).await;
    let secret = aes_key(&mut c).await;
    sign(&mut c, &private, b"m").await.unwrap();
    c.encrypt_single(encrypt(&secret)).await.unwrap();
    let s = sealer(&server.core, &server.admin, &id).await;
    let kept = Arc::downgrade(&blob::open(&s, &private).unwrap());
    assert!(!kept.upgrade().unwrap().attrs.0.is_empty());
    assert_eq!(s.opened_count(), 2);
    drop(s);

    let mut cmd = SignedCommand::new(&id, Command::RotateMasterKey, now_s() + 600).unwrap();
    for custodian in &custodians {
        cmd.sign(custodian);
    }
    let outcome = server
        .core
        .execute_command(&server.admin, &id, cmd)
        .await
        .unwrap();
    assert!(
        matches!(outcome, CommandOutcome::Rotated { mk_version: 2, .. }),
        "{outcome:?}"
    );
    assert!(
        kept.upgrade().is_none(),
        "the kept key went with the old keys"
    );
    let s = sealer(&server.core, &server.admin, &id).await;
    assert_eq!(s.opened_count(), 0);

    // Once the re-seal job retires the old master key, the blobs sealed under it are refused
    // although they were kept before.
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
    assert_eq!(
        ckr(sign(&mut c, &private, b"m").await.map(tonic::Response::new)),
        CKR_IBM_WKID_MISMATCH
    );
    assert_eq!(
        ckr(c.encrypt_single(encrypt(&secret)).await),
        CKR_IBM_WKID_MISMATCH
    );
    let mut v = c.clone();
    let status = v
        .verify_single(proto::VerifySingleRequest {
            mech: mech(0x1044),
            pub_key: kb(&public),
            data: b"m".to_vec(),
            signature: vec![0; 64],
            ..Default::default()
        })
        .await;
    assert_eq!(ckr(status), CKR_IBM_WKID_MISMATCH);
}
