//! Keep Your Own Key through the core: custodian initialization, unsealing by parts with every
//! kind of bad part, signed commands, master key rotation with a resumable re-seal job, zeroize,
//! and wrap/unwrap across versions.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyfort_core::{
    Caller, Command, CommandOutcome, CoreConfig, CoreError, CustodianPublic, CustodianSecret,
    DevSetup, InstanceState, KeyPart, Keyfort, NewKey, PartRejection, SignedCommand, TokenSigner,
    Transition,
};
use keyfort_store::Store;
use keyfort_store::sqlite::SqliteStore;
use zeroize::Zeroizing;

const NOW_SLACK: i64 = 0;

struct Env {
    dir: tempfile::TempDir,
    core: Keyfort,
    admin: Arc<Caller>,
    api_key: String,
    custodians: Vec<CustodianSecret>,
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + NOW_SLACK
}

async fn open_core(dir: &Path, batch: usize, pause: Duration) -> Keyfort {
    let store = SqliteStore::open(&dir.join("keyfort.db")).await.unwrap();
    let signer = TokenSigner::load_or_create(&dir.join("token.key")).unwrap();
    let mut config = CoreConfig::new(Duration::from_secs(3600), signer);
    config.reseal_batch_size = batch;
    config.reseal_pause = pause;
    Keyfort::open(Arc::new(store), config).await.unwrap()
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let core = open_core(dir.path(), 256, Duration::ZERO).await;
    let boot = core
        .dev_bootstrap(DevSetup {
            master_key_file: dir.path().join("dev.key"),
            previous_api_key: None,
        })
        .await
        .unwrap();
    let token = core.exchange_api_key(&boot.api_key).await.unwrap();
    let admin = core.authenticate(&token.token).await.unwrap();
    let custodians = ["alice", "bob", "carol"]
        .iter()
        .map(|n| CustodianSecret::generate(n).unwrap())
        .collect();
    Env {
        dir,
        core,
        admin,
        api_key: boot.api_key,
        custodians,
    }
}

impl Env {
    fn publics(&self) -> Vec<CustodianPublic> {
        self.custodians
            .iter()
            .map(CustodianSecret::public)
            .collect()
    }

    async fn restart(&self, batch: usize, pause: Duration) -> (Keyfort, Arc<Caller>) {
        let core = open_core(self.dir.path(), batch, pause).await;
        let token = core.exchange_api_key(&self.api_key).await.unwrap();
        let admin = core.authenticate(&token.token).await.unwrap();
        (core, admin)
    }

    async fn init(&self, name: &str) -> (String, Vec<KeyPart>) {
        let instance = self.core.create_instance(&self.admin, name).await.unwrap();
        let parts = self
            .core
            .initialize_with_custodians(&self.admin, &instance.id, self.publics(), 2)
            .await
            .unwrap();
        (instance.id, parts)
    }

    fn signed(&self, instance: &str, command: Command, signers: &[usize]) -> SignedCommand {
        let mut cmd = SignedCommand::new(instance, command, now_s() + 600).unwrap();
        for i in signers {
            cmd.sign(&self.custodians[*i]);
        }
        cmd
    }
}

async fn submit(
    core: &Keyfort,
    who: &CustodianSecret,
    part: &KeyPart,
) -> Result<InstanceState, CoreError> {
    let submission = who.unseal_submission(part, now_s())?;
    core.submit_unseal_part(&part.instance_id, submission)
        .await
        .map(|s| s.state)
}

fn rejection(r: Result<InstanceState, CoreError>) -> PartRejection {
    match r {
        Err(CoreError::PartRejected { reason, .. }) => reason,
        other => panic!("expected a rejected part, got {other:?}"),
    }
}

async fn wait_reseal_done(core: &Keyfort, instance: &str) -> keyfort_core::ResealProgress {
    for _ in 0..600 {
        let status = core.unseal_status(instance).await.unwrap();
        if let Some(p) = &status.reseal
            && !p.running
            && p.done == p.total
        {
            return p.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("re-seal did not finish");
}

#[tokio::test]
async fn init_restart_unseal_with_two_of_three() {
    let env = env().await;
    let (id, parts) = env.init("prod").await;
    assert_eq!(parts.len(), 3);
    let key = env
        .core
        .create_key(
            &env.admin,
            &id,
            NewKey {
                name: "std".into(),
                extractable: true,
                ..NewKey::default()
            },
        )
        .await
        .unwrap();
    let material = env
        .core
        .key_material(&env.admin, &id, &key.id)
        .await
        .unwrap();

    let (core, admin) = env.restart(256, Duration::ZERO).await;
    let status = core.unseal_status(&id).await.unwrap();
    assert_eq!(status.state, InstanceState::Sealed);
    assert_eq!(status.threshold, 2);
    assert_eq!(status.custodians, vec!["alice", "bob", "carol"]);
    assert!(matches!(
        core.key_material(&admin, &id, &key.id).await,
        Err(CoreError::InstanceSealed { .. })
    ));

    // One part: still sealed, one loaded.
    assert_eq!(
        submit(&core, &env.custodians[0], &parts[0]).await.unwrap(),
        InstanceState::Sealed
    );
    assert_eq!(core.unseal_status(&id).await.unwrap().loaded, vec!["alice"]);
    // The same custodian again: refused, not counted.
    assert_eq!(
        rejection(submit(&core, &env.custodians[0], &parts[0]).await),
        PartRejection::Duplicate
    );
    // Replaying the exact same submission: refused.
    let sub = env.custodians[1]
        .unseal_submission(&parts[1], now_s())
        .unwrap();
    let replay = keyfort_core::UnsealSubmission::from_value(&sub.to_value()).unwrap();
    // Bob's part with a signature that is not bob's over it: bad signature.
    let mut forged = keyfort_core::UnsealSubmission::from_value(&sub.to_value()).unwrap();
    forged.signature = env.custodians[2].sign(b"something else");
    assert_eq!(
        rejection(core.submit_unseal_part(&id, forged).await.map(|s| s.state)),
        PartRejection::BadSignature
    );
    // Carol submitting bob's share under her own id: the share does not match hers.
    let mut carol_with_bobs_share = env.custodians[1]
        .unseal_submission(&parts[1], now_s())
        .unwrap();
    carol_with_bobs_share.custodian_id = env.custodians[2].public().id();
    carol_with_bobs_share.signature = env.custodians[2].sign(&carol_with_bobs_share.signed_bytes());
    assert_eq!(
        rejection(
            core.submit_unseal_part(&id, carol_with_bobs_share)
                .await
                .map(|s| s.state)
        ),
        PartRejection::ShareMismatch
    );
    // An expired submission.
    let old = env.custodians[1]
        .unseal_submission(&parts[1], now_s() - 3600)
        .unwrap();
    assert_eq!(
        rejection(core.submit_unseal_part(&id, old).await.map(|s| s.state)),
        PartRejection::Expired
    );
    assert_eq!(
        core.unseal_status(&id).await.unwrap().loaded,
        vec!["alice"],
        "refusals did not count"
    );

    // Bob's real part unseals.
    assert_eq!(
        core.submit_unseal_part(&id, sub).await.unwrap().state,
        InstanceState::Unsealed
    );
    assert_eq!(
        rejection(core.submit_unseal_part(&id, replay).await.map(|s| s.state)),
        PartRejection::NotExpected
    );
    let back = core.key_material(&admin, &id, &key.id).await.unwrap();
    assert_eq!(back.as_slice(), material.as_slice());
}

#[tokio::test]
async fn parts_of_another_instance_or_tampered_are_refused() {
    let env = env().await;
    let (id, _parts) = env.init("prod").await;
    let (other, other_parts) = env.init("other").await;
    let (core, _) = env.restart(256, Duration::ZERO).await;
    // A part of "other" offered to "prod".
    let sub = env.custodians[0]
        .unseal_submission(&other_parts[0], now_s())
        .unwrap();
    assert_eq!(
        rejection(core.submit_unseal_part(&id, sub).await.map(|s| s.state)),
        PartRejection::WrongInstance
    );
    // A tampered part does not even open for its custodian.
    let mut tampered = other_parts[1].clone();
    tampered.sealed[40] ^= 0x01;
    assert!(
        env.custodians[1]
            .unseal_submission(&tampered, now_s())
            .is_err()
    );
    // A part moved to another custodian does not open either.
    assert!(
        env.custodians[2]
            .unseal_submission(&other_parts[1], now_s())
            .is_err()
    );
    assert!(core.unseal_status(&other).await.unwrap().loaded.is_empty());
}

#[tokio::test]
async fn commands_need_threshold_signatures_once_and_in_time() {
    let env = env().await;
    let (id, _) = env.init("prod").await;
    let one = env.signed(&id, Command::RotateMasterKey, &[0]);
    assert!(matches!(
        env.core.execute_command(&env.admin, &id, one).await,
        Err(CoreError::CommandRejected {
            reason: "not enough custodian signatures",
            ..
        })
    ));
    // A stranger's signature.
    let stranger = CustodianSecret::generate("mallory").unwrap();
    let mut cmd = env.signed(&id, Command::Zeroize, &[0]);
    cmd.sign(&stranger);
    assert!(matches!(
        env.core.execute_command(&env.admin, &id, cmd).await,
        Err(CoreError::CommandRejected { .. })
    ));
    // Expired.
    let mut expired = SignedCommand::new(&id, Command::Zeroize, now_s() - 1).unwrap();
    expired.sign(&env.custodians[0]);
    expired.sign(&env.custodians[1]);
    assert!(matches!(
        env.core.execute_command(&env.admin, &id, expired).await,
        Err(CoreError::CommandRejected {
            reason: "the command has expired",
            ..
        })
    ));
    // Edited after signing: signatures no longer verify.
    let mut edited = env.signed(&id, Command::RotateMasterKey, &[0, 1]);
    edited.command = Command::Zeroize;
    assert!(matches!(
        env.core.execute_command(&env.admin, &id, edited).await,
        Err(CoreError::CommandRejected { .. })
    ));
    assert_eq!(
        env.core.unseal_status(&id).await.unwrap().state,
        InstanceState::Unsealed
    );

    // Valid: runs once; the same command again is refused.
    let ok = env.signed(&id, Command::RotateMasterKey, &[0, 2]);
    let outcome = env
        .core
        .execute_command(&env.admin, &id, ok.clone())
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        CommandOutcome::Rotated { mk_version: 2, .. }
    ));
    wait_reseal_done(&env.core, &id).await;
    assert!(matches!(
        env.core.execute_command(&env.admin, &id, ok).await,
        Err(CoreError::CommandRejected {
            reason: "the command was already used",
            ..
        })
    ));
}

#[tokio::test]
async fn rotation_reseals_everything_and_old_parts_stop_working() {
    let env = env().await;
    let (id, v1_parts) = env.init("prod").await;
    let mut std_keys = Vec::new();
    for i in 0..20 {
        let k = env
            .core
            .create_key(
                &env.admin,
                &id,
                NewKey {
                    name: format!("s{i}"),
                    extractable: true,
                    ..NewKey::default()
                },
            )
            .await
            .unwrap();
        let m = env.core.key_material(&env.admin, &id, &k.id).await.unwrap();
        std_keys.push((k.id, m));
    }
    let root = env
        .core
        .create_key(
            &env.admin,
            &id,
            NewKey {
                name: "root".into(),
                ..NewKey::default()
            },
        )
        .await
        .unwrap();
    let wrapped = env
        .core
        .wrap_key(
            &env.admin,
            &id,
            &root.id,
            Some(Zeroizing::new(vec![9u8; 32])),
            &["ctx".into()],
        )
        .await
        .unwrap();

    let outcome = env
        .core
        .execute_command(
            &env.admin,
            &id,
            env.signed(&id, Command::RotateMasterKey, &[0, 1]),
        )
        .await
        .unwrap();
    let CommandOutcome::Rotated {
        mk_version: 2,
        parts: v2_parts,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(v2_parts.iter().all(|p| p.mk_version == 2));
    // Keys keep working during and after the re-seal.
    let un = env
        .core
        .unwrap_key(
            &env.admin,
            &id,
            &root.id,
            &wrapped.ciphertext,
            &["ctx".into()],
        )
        .await
        .unwrap();
    assert_eq!(un.plaintext.as_slice(), &[9u8; 32]);
    let progress = wait_reseal_done(&env.core, &id).await;
    assert_eq!((progress.from_version, progress.to_version), (1, 2));
    assert_eq!(progress.total, 21);

    // Every stored version is now under MK 2 and the archived key is gone.
    let store = SqliteStore::open(&env.dir.path().join("keyfort.db"))
        .await
        .unwrap();
    assert_eq!(store.count_key_versions_below_mk(&id, 2).await.unwrap(), 0);
    assert!(
        store
            .instance_secret(&id, "archived-mk/1")
            .await
            .unwrap()
            .is_none()
    );

    // After a restart, v1 parts are refused; v2 parts unseal and everything reads back.
    let (core, admin) = env.restart(256, Duration::ZERO).await;
    assert_eq!(
        rejection(submit(&core, &env.custodians[0], &v1_parts[0]).await),
        PartRejection::StaleMasterKey
    );
    submit(&core, &env.custodians[0], &v2_parts[0])
        .await
        .unwrap();
    assert_eq!(
        submit(&core, &env.custodians[2], &v2_parts[2])
            .await
            .unwrap(),
        InstanceState::Unsealed
    );
    for (kid, m) in &std_keys {
        assert_eq!(
            core.key_material(&admin, &id, kid)
                .await
                .unwrap()
                .as_slice(),
            m.as_slice()
        );
    }
    let un = core
        .unwrap_key(&admin, &id, &root.id, &wrapped.ciphertext, &["ctx".into()])
        .await
        .unwrap();
    assert_eq!(un.plaintext.as_slice(), &[9u8; 32]);
}

#[tokio::test]
async fn interrupted_reseal_resumes_after_restart() {
    let env = env().await;
    let (id, _) = env.init("prod").await;
    let mut std_keys = Vec::new();
    for i in 0..60 {
        let k = env
            .core
            .create_key(
                &env.admin,
                &id,
                NewKey {
                    name: format!("k{i}"),
                    extractable: true,
                    ..NewKey::default()
                },
            )
            .await
            .unwrap();
        let m = env.core.key_material(&env.admin, &id, &k.id).await.unwrap();
        std_keys.push((k.id, m));
    }
    // First rotation (v2) in this process, quickly.
    let outcome = env
        .core
        .execute_command(
            &env.admin,
            &id,
            env.signed(&id, Command::RotateMasterKey, &[1, 2]),
        )
        .await
        .unwrap();
    let CommandOutcome::Rotated {
        parts: v2_parts, ..
    } = outcome
    else {
        panic!()
    };
    wait_reseal_done(&env.core, &id).await;

    // Now a process with a slow re-seal: unseal with v2 parts, rotate to v3, "crash" mid-job.
    let (slow, slow_admin) = env.restart(5, Duration::from_millis(200)).await;
    submit(&slow, &env.custodians[0], &v2_parts[0])
        .await
        .unwrap();
    submit(&slow, &env.custodians[1], &v2_parts[1])
        .await
        .unwrap();
    let outcome = slow
        .execute_command(
            &slow_admin,
            &id,
            env.signed(&id, Command::RotateMasterKey, &[0, 1]),
        )
        .await
        .unwrap();
    let CommandOutcome::Rotated {
        mk_version: 3,
        parts: v3_parts,
    } = outcome
    else {
        panic!()
    };
    let mut saw_progress = false;
    for _ in 0..200 {
        if let Some(p) = slow.unseal_status(&id).await.unwrap().reseal
            && p.done > 0
            && p.running
        {
            saw_progress = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_progress, "the slow job should be observed mid-way");
    // Crash: the process's memory is gone (its job stops once its keys are unloaded).
    slow.seal_instance(&slow_admin, &id).await.unwrap();
    drop(slow);
    let store = SqliteStore::open(&env.dir.path().join("keyfort.db"))
        .await
        .unwrap();
    let left = store.count_key_versions_below_mk(&id, 3).await.unwrap();
    assert!(left > 0, "the crash should leave work to do");
    assert!(
        store
            .instance_secret(&id, "archived-mk/2")
            .await
            .unwrap()
            .is_some()
    );

    // Restart, unseal with v3 parts: the job resumes and finishes; every key still reads.
    let (core, admin) = env.restart(256, Duration::ZERO).await;
    submit(&core, &env.custodians[2], &v3_parts[2])
        .await
        .unwrap();
    assert_eq!(
        submit(&core, &env.custodians[0], &v3_parts[0])
            .await
            .unwrap(),
        InstanceState::Unsealed
    );
    // Keys under the old key work before the job reaches them.
    for (kid, m) in &std_keys {
        assert_eq!(
            core.key_material(&admin, &id, kid)
                .await
                .unwrap()
                .as_slice(),
            m.as_slice()
        );
    }
    wait_reseal_done(&core, &id).await;
    assert_eq!(store.count_key_versions_below_mk(&id, 3).await.unwrap(), 0);
    assert!(
        store
            .instance_secret(&id, "archived-mk/2")
            .await
            .unwrap()
            .is_none()
    );
    for (kid, m) in &std_keys {
        assert_eq!(
            core.key_material(&admin, &id, kid)
                .await
                .unwrap()
                .as_slice(),
            m.as_slice()
        );
    }
}

#[tokio::test]
async fn zeroize_destroys_the_instance_and_says_so() {
    let env = env().await;
    let (id, parts) = env.init("prod").await;
    let k = env
        .core
        .create_key(
            &env.admin,
            &id,
            NewKey {
                name: "k".into(),
                ..NewKey::default()
            },
        )
        .await
        .unwrap();
    let outcome = env
        .core
        .execute_command(&env.admin, &id, env.signed(&id, Command::Zeroize, &[1, 2]))
        .await
        .unwrap();
    assert!(matches!(outcome, CommandOutcome::Zeroized));
    assert_eq!(
        env.core.unseal_status(&id).await.unwrap().state,
        InstanceState::Zeroized
    );
    assert!(matches!(
        env.core.key(&env.admin, &id, &k.id).await,
        Err(CoreError::InstanceZeroized { .. })
    ));
    let (core, _) = env.restart(256, Duration::ZERO).await;
    assert!(matches!(
        submit(&core, &env.custodians[0], &parts[0]).await,
        Err(CoreError::InstanceZeroized { .. })
    ));
    let store = SqliteStore::open(&env.dir.path().join("keyfort.db"))
        .await
        .unwrap();
    assert!(store.key(&id, &k.id).await.unwrap().is_none());
    let events = store.audit_events(&id, 0, 1000).await.unwrap();
    let zeroize = events
        .iter()
        .find(|e| e.action == "instance.zeroize")
        .unwrap();
    assert!(
        zeroize.body.contains("bob") && zeroize.body.contains("carol"),
        "{}",
        zeroize.body
    );
    // Requests after the zeroization are recorded as failures.
    let later: Vec<_> = events.iter().filter(|e| e.seq > zeroize.seq).collect();
    assert!(later.iter().all(|e| e.outcome == "failure"));
    assert!(later.iter().any(|e| e.body.contains("InstanceZeroized")));
}

#[tokio::test]
async fn wrap_unwrap_rules() {
    let env = env().await;
    let (id, _) = env.init("prod").await;
    let root = env
        .core
        .create_key(
            &env.admin,
            &id,
            NewKey {
                name: "root".into(),
                ..NewKey::default()
            },
        )
        .await
        .unwrap();
    let std = env
        .core
        .create_key(
            &env.admin,
            &id,
            NewKey {
                name: "std".into(),
                extractable: true,
                ..NewKey::default()
            },
        )
        .await
        .unwrap();
    let generated = env
        .core
        .wrap_key(&env.admin, &id, &root.id, None, &[])
        .await
        .unwrap();
    let dek = generated.generated_plaintext.clone().unwrap();
    assert_eq!(dek.len(), 32);
    let un = env
        .core
        .unwrap_key(&env.admin, &id, &root.id, &generated.ciphertext, &[])
        .await
        .unwrap();
    assert_eq!(un.plaintext.as_slice(), dek.as_slice());
    assert!(un.rewrapped.is_none());
    // Wrong AAD, tampered ciphertext, another key: refused.
    assert!(
        env.core
            .unwrap_key(
                &env.admin,
                &id,
                &root.id,
                &generated.ciphertext,
                &["x".into()]
            )
            .await
            .is_err()
    );
    let mut bad = generated.ciphertext.clone();
    let n = bad.len() - 1;
    bad[n] ^= 1;
    assert!(
        env.core
            .unwrap_key(&env.admin, &id, &root.id, &bad, &[])
            .await
            .is_err()
    );
    assert!(
        env.core
            .unwrap_key(&env.admin, &id, &root.id, b"short", &[])
            .await
            .is_err()
    );
    let root2 = env
        .core
        .create_key(
            &env.admin,
            &id,
            NewKey {
                name: "root2".into(),
                ..NewKey::default()
            },
        )
        .await
        .unwrap();
    assert!(
        env.core
            .unwrap_key(&env.admin, &id, &root2.id, &generated.ciphertext, &[])
            .await
            .is_err()
    );
    // Standard keys do not wrap.
    assert!(
        env.core
            .wrap_key(&env.admin, &id, &std.id, None, &[])
            .await
            .is_err()
    );
    // A disabled key neither wraps nor unwraps.
    env.core
        .transition_key(&env.admin, &id, &root.id, Transition::Disable)
        .await
        .unwrap();
    assert!(matches!(
        env.core
            .wrap_key(&env.admin, &id, &root.id, None, &[])
            .await,
        Err(CoreError::KeyNotUsable { .. })
    ));
    assert!(matches!(
        env.core
            .unwrap_key(&env.admin, &id, &root.id, &generated.ciphertext, &[])
            .await,
        Err(CoreError::KeyNotUsable { .. })
    ));
}

#[tokio::test]
async fn database_never_holds_the_master_key_or_a_share() {
    let env = env().await;
    let (id, parts) = env.init("prod").await;
    for i in 0..10 {
        env.core
            .create_key(
                &env.admin,
                &id,
                NewKey {
                    name: format!("k{i}"),
                    ..NewKey::default()
                },
            )
            .await
            .unwrap();
    }
    let outcome = env
        .core
        .execute_command(
            &env.admin,
            &id,
            env.signed(&id, Command::RotateMasterKey, &[0, 1]),
        )
        .await
        .unwrap();
    let CommandOutcome::Rotated {
        parts: v2_parts, ..
    } = outcome
    else {
        panic!()
    };
    wait_reseal_done(&env.core, &id).await;

    // Rebuild both master keys from the custodians' parts, as the custodians could.
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for set in [&parts, &v2_parts] {
        let shares: Vec<Zeroizing<Vec<u8>>> = set
            .iter()
            .zip(&env.custodians)
            .map(|(p, c)| c.open_part(p).unwrap())
            .collect();
        let refs: Vec<&[u8]> = shares.iter().map(|s| s.as_slice()).collect();
        let mk = keyfort_crypto::shamir::combine(&refs[..2], 2).unwrap();
        assert_eq!(mk.len(), 32);
        secrets.push(mk.to_vec());
        secrets.extend(shares.iter().map(|s| s.to_vec()));
    }
    let mut scanned = 0;
    // The database, its WAL and the audit journal's segments (`keyfort.db-audit/`).
    let mut files = Vec::new();
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("keyfort.db")
        {
            continue;
        }
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(path);
        }
    }
    for path in files {
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for secret in &secrets {
            for needle in [&secret[..], &secret[secret.len() - 16..]] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "secret found in {name}"
                );
            }
        }
    }
    assert!(scanned > 0);
}

#[tokio::test]
async fn secure_import_through_an_import_token() {
    use base64::Engine as _;
    use keyfort_core::{KeyPolicyUpdate, KmsRefusal, SecureImport};
    let env = env().await;
    let (id, _) = env.init("prod").await;
    let token = env
        .core
        .create_import_token(&env.admin, &id, 600, 2)
        .await
        .unwrap();
    assert_eq!(token.remaining_retrievals, 2);
    let got = env
        .core
        .retrieve_import_token(&env.admin, &id)
        .await
        .unwrap();
    assert_eq!(got.remaining_retrievals, 1);
    let pem = got.public_key_pem.unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let public = keyfort_crypto::rsa::PublicKey::from_der(&der).unwrap();
    assert_eq!(public.modulus_len(), 512, "RSA-4096");
    let nonce = got.nonce.unwrap();

    let material = [0x3Cu8; 32];
    let seal = |nonce: &[u8]| {
        let iv = [7u8; 12];
        SecureImport {
            payload: public
                .encrypt_oaep(keyfort_crypto::rsa::OaepHash::Sha256, &material, None)
                .unwrap(),
            sha256: true,
            encrypted_nonce: keyfort_crypto::aes::gcm_encrypt(&material, &iv, &[], nonce).unwrap(),
            iv: iv.to_vec(),
        }
    };
    let request = || NewKey {
        name: "imported".into(),
        extractable: true,
        ..NewKey::default()
    };
    // A wrong nonce is refused.
    let err = env
        .core
        .kms_create_key(
            &env.admin,
            &id,
            request(),
            KeyPolicyUpdate::default(),
            Some(seal(b"not the nonce!!!")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::KeyRefused {
                reason: KmsRefusal::IncorrectNonce,
                ..
            }
        ),
        "{err:?}"
    );
    // The right one imports the material.
    let key = env
        .core
        .kms_create_key(
            &env.admin,
            &id,
            request(),
            KeyPolicyUpdate::default(),
            Some(seal(&nonce)),
        )
        .await
        .unwrap();
    assert!(key.imported);
    let back = env
        .core
        .key_material(&env.admin, &id, &key.id)
        .await
        .unwrap();
    assert_eq!(back.as_slice(), &material);
    // The last retrieval, then none left.
    env.core
        .retrieve_import_token(&env.admin, &id)
        .await
        .unwrap();
    assert!(matches!(
        env.core.retrieve_import_token(&env.admin, &id).await,
        Err(CoreError::KeyRefused {
            reason: KmsRefusal::ImportTokenExpired,
            ..
        })
    ));
}
