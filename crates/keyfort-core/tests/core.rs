//! The core over a real SQLite store: sealing, key creation and material, lifecycle through the
//! store, authentication, and what reaches the database files.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyfort_core::{
    Caller, CoreConfig, CoreError, DevSetup, InstanceState, KeyQuery, KeyState, Keyfort, NewKey,
    PrincipalKind, Role, RoleGrant, Scope, TokenSigner, Transition,
};
use keyfort_store::sqlite::SqliteStore;
use sqlx::ConnectOptions as _;
use sqlx::Connection as _;
use zeroize::Zeroizing;

struct Env {
    dir: tempfile::TempDir,
    core: Keyfort,
    instance: String,
    admin: Arc<Caller>,
    api_key: String,
}

impl Env {
    fn db_path(&self) -> PathBuf {
        self.dir.path().join("keyfort.db")
    }

    fn setup(&self) -> DevSetup {
        DevSetup {
            master_key_file: self.dir.path().join("dev-master.key"),
            previous_api_key: Some(self.api_key.clone()),
        }
    }

    /// Opens a new core on the same files, as after a restart.
    async fn restart(&self) -> Keyfort {
        open_core(self.dir.path()).await
    }

    async fn caller_with(&self, name: &str, role: Role) -> Arc<Caller> {
        let p = self
            .core
            .create_principal(
                &self.admin,
                Some(&self.instance),
                name,
                PrincipalKind::Service,
                vec![RoleGrant {
                    role,
                    scope: Scope::Instance(self.instance.clone()),
                }],
            )
            .await
            .unwrap();
        let (_, secret) = self
            .core
            .create_api_key(&self.admin, &p.id, "k")
            .await
            .unwrap();
        let token = self.core.exchange_api_key(secret.expose()).await.unwrap();
        self.core.authenticate(&token.token).await.unwrap()
    }
}

async fn open_core(dir: &Path) -> Keyfort {
    let store = SqliteStore::open(&dir.join("keyfort.db")).await.unwrap();
    let signer = TokenSigner::load_or_create(&dir.join("token-signing.key")).unwrap();
    Keyfort::open(
        Arc::new(store),
        CoreConfig::new(Duration::from_secs(3600), signer),
    )
    .await
    .unwrap()
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let core = open_core(dir.path()).await;
    let boot = core
        .dev_bootstrap(DevSetup {
            master_key_file: dir.path().join("dev-master.key"),
            previous_api_key: None,
        })
        .await
        .unwrap();
    assert!(boot.created);
    let token = core.exchange_api_key(&boot.api_key).await.unwrap();
    let admin = core.authenticate(&token.token).await.unwrap();
    Env {
        dir,
        core,
        instance: boot.instance_id,
        admin,
        api_key: boot.api_key,
    }
}

fn named(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        ..NewKey::default()
    }
}

async fn raw_db(path: &Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

/// The stored event of `instance`'s chain with sequence number `seq`, as its block holds it.
async fn stored_event(
    db: &mut sqlx::SqliteConnection,
    instance: &str,
    seq: i64,
) -> serde_json::Value {
    let mut found = None;
    edit_event(db, instance, seq, |event| {
        found = Some(event.clone());
        Some(event)
    })
    .await;
    found.unwrap()
}

/// Rewrites, behind the store's back, the stored event of `instance`'s chain with sequence
/// number `seq` (an element of its block's JSON array): `edit` returns its new object, or `None`
/// to remove it.
async fn edit_event(
    db: &mut sqlx::SqliteConnection,
    instance: &str,
    seq: i64,
    edit: impl FnOnce(serde_json::Value) -> Option<serde_json::Value>,
) {
    let blocks: Vec<(i64, String)> =
        sqlx::query_as("SELECT rowid, events FROM audit_blocks WHERE instance_id = ?1")
            .bind(instance)
            .fetch_all(&mut *db)
            .await
            .unwrap();
    for (rowid, events) in blocks {
        let mut events: Vec<serde_json::Value> = serde_json::from_str(&events).unwrap();
        let Some(i) = events.iter().position(|e| e["seq"] == seq) else {
            continue;
        };
        if let Some(event) = edit(events.remove(i)) {
            events.insert(i, event);
        }
        sqlx::query("UPDATE audit_blocks SET events = ?1 WHERE rowid = ?2")
            .bind(serde_json::to_string(&events).unwrap())
            .bind(rowid)
            .execute(&mut *db)
            .await
            .unwrap();
        return;
    }
    panic!("no stored event {seq}");
}

/// Swaps the contents of the stored events `a` and `b`, each keeping its sequence number.
async fn swap_events(db: &mut sqlx::SqliteConnection, instance: &str, a: i64, b: i64) {
    let (event_a, event_b) = (
        stored_event(db, instance, a).await,
        stored_event(db, instance, b).await,
    );
    for (seq, mut content) in [(a, event_b), (b, event_a)] {
        content["seq"] = seq.into();
        edit_event(db, instance, seq, |_| Some(content)).await;
    }
}

#[tokio::test]
async fn imported_material_round_trips_and_never_reaches_the_files() {
    let env = env().await;
    // A recognisable 32-byte pattern; no part of it may appear in any database file.
    let material: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(0xA5))
        .collect();
    let key = env
        .core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                name: "imported".into(),
                extractable: true,
                payload: Some(Zeroizing::new(material.clone())),
                ..NewKey::default()
            },
        )
        .await
        .unwrap();
    assert!(key.imported);
    assert_eq!(key.bit_length, 256);
    let back = env
        .core
        .key_material(&env.admin, &env.instance, &key.id)
        .await
        .unwrap();
    assert_eq!(back.as_slice(), material.as_slice());

    // Several generated keys too, then read every file of the database (main, WAL, SHM).
    for i in 0..5 {
        env.core
            .create_key(&env.admin, &env.instance, named(&format!("k{i}")))
            .await
            .unwrap();
    }
    let hex = hex::encode(&material).into_bytes();
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
        for needle in [&material[..], &material[..16], &material[16..], &hex[..]] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "key material found in {name}"
            );
        }
    }
    assert!(scanned > 0, "no database file was scanned");
}

#[tokio::test]
async fn sealed_instance_refuses_every_key_operation() {
    let env = env().await;
    let key = env
        .core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                extractable: true,
                ..named("a")
            },
        )
        .await
        .unwrap();

    let sealed = env
        .core
        .seal_instance(&env.admin, &env.instance)
        .await
        .unwrap();
    assert_eq!(sealed.state, InstanceState::Sealed);
    let is_sealed = |r: Result<(), CoreError>| {
        assert!(matches!(r, Err(CoreError::InstanceSealed { .. })), "{r:?}");
    };
    is_sealed(
        env.core
            .create_key(&env.admin, &env.instance, named("b"))
            .await
            .map(drop),
    );
    is_sealed(
        env.core
            .key(&env.admin, &env.instance, &key.id)
            .await
            .map(drop),
    );
    is_sealed(
        env.core
            .key_material(&env.admin, &env.instance, &key.id)
            .await
            .map(drop),
    );
    is_sealed(
        env.core
            .list_keys(&env.admin, &env.instance, &KeyQuery::default())
            .await
            .map(drop),
    );
    is_sealed(
        env.core
            .transition_key(&env.admin, &env.instance, &key.id, Transition::Disable)
            .await
            .map(drop),
    );
    let message = env
        .core
        .key(&env.admin, &env.instance, &key.id)
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("sealed"), "{message}");

    // Unsealing again (here from the dev key file) brings everything back.
    env.core.dev_bootstrap(env.setup()).await.unwrap();
    assert_eq!(
        env.core
            .instance(&env.admin, &env.instance)
            .await
            .unwrap()
            .state,
        InstanceState::Unsealed
    );
    env.core
        .key_material(&env.admin, &env.instance, &key.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn restart_leaves_instance_sealed_until_its_key_is_loaded() {
    let env = env().await;
    let material = vec![7u8; 16];
    let key = env
        .core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                extractable: true,
                payload: Some(Zeroizing::new(material.clone())),
                aliases: vec!["my-alias".into()],
                ..named("persisted")
            },
        )
        .await
        .unwrap();

    let core = env.restart().await;
    let token = core.exchange_api_key(&env.api_key).await.unwrap();
    let admin = core.authenticate(&token.token).await.unwrap();
    assert_eq!(
        core.instance(&admin, &env.instance).await.unwrap().state,
        InstanceState::Sealed
    );
    assert!(matches!(
        core.key_material(&admin, &env.instance, &key.id).await,
        Err(CoreError::InstanceSealed { .. })
    ));

    let boot = core.dev_bootstrap(env.setup()).await.unwrap();
    assert!(!boot.created);
    assert_eq!(boot.instance_id, env.instance);
    assert_eq!(boot.api_key, env.api_key, "a still-valid API key is reused");
    let back = core
        .key_material(&admin, &env.instance, "my-alias")
        .await
        .unwrap();
    assert_eq!(back.as_slice(), material.as_slice());
}

#[tokio::test]
async fn wrong_master_key_does_not_unseal() {
    let env = env().await;
    env.core
        .seal_instance(&env.admin, &env.instance)
        .await
        .unwrap();
    // Replace the dev key file with another key of the same version.
    let path = env.dir.path().join("dev-master.key");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = "00".repeat(32);
    std::fs::write(&path, lines.join("\n")).unwrap();
    let err = env.core.dev_bootstrap(env.setup()).await.unwrap_err();
    assert!(matches!(err, CoreError::WrongMasterKey { .. }), "{err:?}");
    assert_eq!(
        env.core
            .instance(&env.admin, &env.instance)
            .await
            .unwrap()
            .state,
        InstanceState::Sealed
    );
}

#[tokio::test]
async fn sealed_blob_moved_between_keys_or_instances_or_edited_is_rejected() {
    let env = env().await;
    let a = env
        .core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                extractable: true,
                ..named("a")
            },
        )
        .await
        .unwrap();
    let b = env
        .core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                extractable: true,
                ..named("b")
            },
        )
        .await
        .unwrap();
    let root = env
        .core
        .create_key(&env.admin, &env.instance, named("root"))
        .await
        .unwrap();

    let mut db = raw_db(&env.db_path()).await;
    // Copy a's sealed material over b's.
    sqlx::query(
        "UPDATE key_versions SET sealed = (SELECT sealed FROM key_versions WHERE key_id = ?1) \
         WHERE key_id = ?2",
    )
    .bind(&a.id)
    .bind(&b.id)
    .execute(&mut db)
    .await
    .unwrap();
    // Turn the root key into an extractable one behind the core's back.
    sqlx::query("UPDATE keys SET extractable = 1 WHERE id = ?1")
        .bind(&root.id)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();

    env.core
        .key_material(&env.admin, &env.instance, &a.id)
        .await
        .unwrap();
    let err = env
        .core
        .key_material(&env.admin, &env.instance, &b.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::SealedObjectRejected { .. }),
        "{err:?}"
    );
    let err = env
        .core
        .key_material(&env.admin, &env.instance, &root.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::SealedObjectRejected { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&root.id),
        "the error names the object: {message}"
    );
}

#[tokio::test]
async fn blob_from_another_instance_is_rejected() {
    let env = env().await;
    // A second instance sharing the same master key bytes, so only the binding differs.
    let other = env.core.create_instance(&env.admin, "other").await.unwrap();
    let mk_text = std::fs::read_to_string(env.dir.path().join("dev-master.key")).unwrap();
    let key_line = mk_text.lines().nth(2).unwrap().to_owned();
    let mut db = raw_db(&env.db_path()).await;
    // Initialize the other instance with the same key check value (same MK) via the store.
    sqlx::query(
        "UPDATE instances SET state = 'initialized', mk_version = 1, unseal_method = 'dev_key_file', \
         mk_check_value = (SELECT mk_check_value FROM instances WHERE id = ?1), row_version = row_version + 1 \
         WHERE id = ?2",
    )
    .bind(&env.instance)
    .bind(&other.id)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    assert_eq!(key_line.len(), 64);

    let source = env
        .core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                extractable: true,
                ..named("src")
            },
        )
        .await
        .unwrap();
    // Rename the dev instance so that the bootstrap unseals "other" from the same key file.
    let mut db = raw_db(&env.db_path()).await;
    sqlx::query("UPDATE instances SET name = 'dev-original' WHERE id = ?1")
        .bind(&env.instance)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE instances SET name = 'dev' WHERE id = ?1")
        .bind(&other.id)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    env.core.dev_bootstrap(env.setup()).await.unwrap();
    let target = env
        .core
        .create_key(
            &env.admin,
            &other.id,
            NewKey {
                extractable: true,
                ..named("dst")
            },
        )
        .await
        .unwrap();
    env.core
        .key_material(&env.admin, &other.id, &target.id)
        .await
        .unwrap();

    // Move the sealed material of the first instance's key onto the other instance's key.
    let mut db = raw_db(&env.db_path()).await;
    sqlx::query(
        "UPDATE key_versions SET sealed = (SELECT sealed FROM key_versions WHERE key_id = ?1) \
         WHERE key_id = ?2",
    )
    .bind(&source.id)
    .bind(&target.id)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    let err = env
        .core
        .key_material(&env.admin, &other.id, &target.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::SealedObjectRejected { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn corrupted_key_row_gives_a_clear_error_naming_it() {
    let env = env().await;
    let key = env
        .core
        .create_key(&env.admin, &env.instance, named("c"))
        .await
        .unwrap();
    let mut db = raw_db(&env.db_path()).await;
    sqlx::query("UPDATE keys SET state = 42 WHERE id = ?1")
        .bind(&key.id)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let err = env
        .core
        .key(&env.admin, &env.instance, &key.id)
        .await
        .unwrap_err();
    match &err {
        CoreError::CorruptRecord { table, id, .. } => {
            assert_eq!(*table, "keys");
            assert_eq!(id, &key.id);
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}

#[tokio::test]
async fn lifecycle_through_the_store() {
    let env = env().await;
    let key = env
        .core
        .create_key(&env.admin, &env.instance, named("l"))
        .await
        .unwrap();
    assert_eq!(key.state, KeyState::Active);
    let versions = env
        .core
        .key_versions(&env.admin, &env.instance, &key.id)
        .await
        .unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].id, key.current_version_id);
    assert_eq!((versions[0].seq, versions[0].mk_version), (1, 1));
    let t = |tr| {
        env.core
            .transition_key(&env.admin, &env.instance, &key.id, tr)
    };
    assert_eq!(
        t(Transition::Disable).await.unwrap().state,
        KeyState::Suspended
    );
    let err = t(Transition::Disable).await.unwrap_err();
    assert!(matches!(
        err,
        CoreError::InvalidTransition {
            state: KeyState::Suspended,
            ..
        }
    ));
    assert_eq!(t(Transition::Enable).await.unwrap().state, KeyState::Active);
    let deleted = t(Transition::Delete).await.unwrap();
    assert_eq!(deleted.state, KeyState::Destroyed);
    assert!(deleted.deleted_at.is_some());
    assert_eq!(deleted.deleted_by.as_deref(), Some("admin"));

    // Destroyed keys are hidden from the default listing but listed on request.
    let listed = env
        .core
        .list_keys(&env.admin, &env.instance, &KeyQuery::default())
        .await
        .unwrap();
    assert!(listed.keys.iter().all(|k| k.id != key.id));
    let destroyed = KeyQuery {
        states: vec![KeyState::Destroyed],
        ..KeyQuery::default()
    };
    let listed = env
        .core
        .list_keys(&env.admin, &env.instance, &destroyed)
        .await
        .unwrap();
    assert_eq!(listed.total, 1);
    assert_eq!(
        t(Transition::Restore).await.unwrap().state,
        KeyState::Active
    );

    // A pre-active key (KMIP/UKO style) must be activated before use.
    let pre = env
        .core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                initial_state: KeyState::PreActive,
                extractable: true,
                ..named("p")
            },
        )
        .await
        .unwrap();
    assert_eq!(pre.activation_at, None);
    let err = env
        .core
        .transition_key(&env.admin, &env.instance, &pre.id, Transition::Enable)
        .await;
    assert!(matches!(err, Err(CoreError::InvalidTransition { .. })));
    let active = env
        .core
        .transition_key(&env.admin, &env.instance, &pre.id, Transition::Activate)
        .await
        .unwrap();
    assert!(active.activation_at.is_some());
}

#[tokio::test]
async fn duplicate_alias_and_missing_ring_are_refused() {
    let env = env().await;
    env.core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                aliases: vec!["dup".into()],
                ..named("a")
            },
        )
        .await
        .unwrap();
    let err = env
        .core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                aliases: vec!["dup".into()],
                ..named("b")
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::AlreadyExists { .. }), "{err:?}");
    let err = env
        .core
        .create_key(
            &env.admin,
            &env.instance,
            NewKey {
                key_ring_id: Some("nowhere".into()),
                ..named("c")
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::KeyRingNotFound { .. }), "{err:?}");
    let listed = env
        .core
        .list_keys(&env.admin, &env.instance, &KeyQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.total, 1, "failed creations change nothing");
}

#[tokio::test]
async fn roles_are_enforced_in_the_core() {
    let env = env().await;
    let reader = env.caller_with("reader", Role::Reader).await;
    let writer = env.caller_with("writer", Role::Writer).await;
    let key = env
        .core
        .create_key(
            &writer,
            &env.instance,
            NewKey {
                extractable: true,
                ..named("w")
            },
        )
        .await
        .unwrap();
    assert_eq!(key.created_by, "writer");
    assert!(matches!(
        env.core
            .create_key(&reader, &env.instance, named("r"))
            .await,
        Err(CoreError::Forbidden { .. })
    ));
    env.core.key(&reader, &env.instance, &key.id).await.unwrap();
    assert!(matches!(
        env.core.key_material(&reader, &env.instance, &key.id).await,
        Err(CoreError::Forbidden { .. })
    ));
    assert!(matches!(
        env.core
            .transition_key(&writer, &env.instance, &key.id, Transition::Disable)
            .await,
        Err(CoreError::Forbidden { .. })
    ));
    assert!(matches!(
        env.core.seal_instance(&writer, &env.instance).await,
        Err(CoreError::Forbidden { .. })
    ));
    assert!(matches!(
        env.core.create_instance(&writer, "mine").await,
        Err(CoreError::Forbidden { .. })
    ));
    // Non-administrators see only their own instance.
    let other = env
        .core
        .create_instance(&env.admin, "elsewhere")
        .await
        .unwrap();
    assert!(matches!(
        env.core.instance(&reader, &other.id).await,
        Err(CoreError::InstanceNotFound { .. })
    ));
    let visible = env.core.instances(&reader).await.unwrap();
    assert_eq!(visible.len(), 1);
    assert_eq!(env.core.instances(&env.admin).await.unwrap().len(), 2);
}

#[tokio::test]
async fn api_keys_and_tokens() {
    let env = env().await;
    assert!(matches!(
        env.core.exchange_api_key("kfnot-a-key").await,
        Err(CoreError::Unauthenticated(_))
    ));
    assert!(matches!(
        env.core.authenticate("garbage").await,
        Err(CoreError::Unauthenticated(_))
    ));

    let p = env
        .core
        .create_principal(
            &env.admin,
            Some(&env.instance),
            "svc",
            PrincipalKind::Service,
            vec![],
        )
        .await
        .unwrap();
    let (key_id, secret) = env
        .core
        .create_api_key(&env.admin, &p.id, "k")
        .await
        .unwrap();
    assert!(secret.expose().starts_with("kf"));
    assert!(!format!("{secret:?}").contains(secret.expose()));
    let token = env.core.exchange_api_key(secret.expose()).await.unwrap();
    assert_eq!(token.expires_in, 3600);
    assert_eq!(token.expiration - token.issued_at, 3600);
    let caller = env.core.authenticate(&token.token).await.unwrap();
    assert_eq!(caller.principal.id, p.id);

    env.core.revoke_api_key(&env.admin, &key_id).await.unwrap();
    assert!(matches!(
        env.core.authenticate(&token.token).await,
        Err(CoreError::Unauthenticated(_))
    ));
    assert!(matches!(
        env.core.exchange_api_key(secret.expose()).await,
        Err(CoreError::Unauthenticated(_))
    ));

    // A token signed by another deployment's key is refused.
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = open_core(foreign_dir.path()).await;
    let boot = foreign
        .dev_bootstrap(DevSetup {
            master_key_file: foreign_dir.path().join("dev-master.key"),
            previous_api_key: None,
        })
        .await
        .unwrap();
    let foreign_token = foreign.exchange_api_key(&boot.api_key).await.unwrap();
    assert!(matches!(
        env.core.authenticate(&foreign_token.token).await,
        Err(CoreError::Unauthenticated(_))
    ));

    // The API key is stored only as a hash.
    let mut db = raw_db(&env.db_path()).await;
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT hash FROM api_keys")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for (hash,) in rows {
        assert_eq!(hash.len(), 32);
        assert!(
            !hash
                .windows(8)
                .any(|w| secret.expose().as_bytes().windows(8).any(|s| s == w))
        );
    }
}

#[tokio::test]
async fn audit_chain_verifies_and_detects_changed_removed_and_reordered_events() {
    use keyfort_core::{AuditProblem, AuditQuery};
    let env = env().await;
    let key = env
        .core
        .create_key(&env.admin, &env.instance, named("audited"))
        .await
        .unwrap();
    env.core
        .key(&env.admin, &env.instance, &key.id)
        .await
        .unwrap();
    env.core
        .transition_key(&env.admin, &env.instance, &key.id, Transition::Disable)
        .await
        .unwrap();
    env.core
        .key(&env.admin, &env.instance, &key.id)
        .await
        .unwrap();
    env.core
        .key_versions(&env.admin, &env.instance, &key.id)
        .await
        .unwrap();
    // A refused request is recorded too.
    let reader = env.caller_with("reader", Role::Reader).await;
    assert!(
        env.core
            .create_key(&reader, &env.instance, named("nope"))
            .await
            .is_err()
    );

    let all = AuditQuery {
        limit: 1000,
        ..AuditQuery::default()
    };
    let events = env
        .core
        .audit_events(&env.admin, &env.instance, &all)
        .await
        .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"key.create"), "{actions:?}");
    assert!(actions.contains(&"key.read"));
    assert!(actions.contains(&"key.disable"));
    let denied = events.iter().find(|e| e.outcome == "denied").unwrap();
    assert_eq!(denied.actor, "reader");
    assert_eq!(denied.action, "key.create");
    let filtered = env
        .core
        .audit_events(
            &env.admin,
            &env.instance,
            &AuditQuery {
                target: Some(key.id.clone()),
                limit: 100,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(filtered.len() >= 3 && filtered.iter().all(|e| e.target == key.id));
    let cadf = events[0].to_cadf();
    assert_eq!(
        cadf["typeURI"],
        "http://schemas.dmtf.org/cloud/audit/1.0/event"
    );
    assert!(cadf["initiator"]["name"].is_string());
    // Readers may not read the audit trail.
    assert!(
        env.core
            .audit_events(&reader, &env.instance, &all)
            .await
            .is_err()
    );

    let ok = env
        .core
        .verify_audit(&env.admin, &env.instance)
        .await
        .unwrap();
    assert_eq!(ok.problem, None);
    assert_eq!(ok.events as usize, events.len());

    let n = events.len() as i64;
    assert!(n >= 5);
    // Changed: edit the body of event 2.
    let mut db = raw_db(&env.db_path()).await;
    let replace_in_body = |from: &'static str, to: &'static str| {
        move |mut event: serde_json::Value| {
            let body = event["body"].as_str().unwrap().replace(from, to);
            event["body"] = body.into();
            Some(event)
        }
    };
    edit_event(&mut db, &env.instance, 2, replace_in_body("admin", "eve")).await;
    let v = env
        .core
        .verify_audit(&env.admin, &env.instance)
        .await
        .unwrap();
    assert_eq!(v.problem, Some((2, AuditProblem::ChangedEvent)));
    // Restore, then reorder: swap the contents of events 3 and 4.
    edit_event(&mut db, &env.instance, 2, replace_in_body("eve", "admin")).await;
    assert_eq!(
        env.core
            .verify_audit(&env.admin, &env.instance)
            .await
            .unwrap()
            .problem,
        None
    );
    swap_events(&mut db, &env.instance, 3, 4).await;
    let v = env
        .core
        .verify_audit(&env.admin, &env.instance)
        .await
        .unwrap();
    assert_eq!(v.problem, Some((3, AuditProblem::BrokenLink)));
    // Removed: put the order back, then delete event 4.
    swap_events(&mut db, &env.instance, 3, 4).await;
    assert_eq!(
        env.core
            .verify_audit(&env.admin, &env.instance)
            .await
            .unwrap()
            .problem,
        None
    );
    edit_event(&mut db, &env.instance, 4, |_| None).await;
    db.close().await.unwrap();
    let v = env
        .core
        .verify_audit(&env.admin, &env.instance)
        .await
        .unwrap();
    assert_eq!(v.problem, Some((5, AuditProblem::MissingEvent)));
}

#[tokio::test]
async fn allowed_ip_policy_refuses_other_sources_and_says_so() {
    use keyfort_core::InstancePolicyType;
    let env = env().await;
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
    env.core
        .check_source(&env.admin, &env.instance, ip("192.0.2.1"))
        .await
        .unwrap();
    let attrs = serde_json::json!({"allowed_ip": ["10.0.0.0/8", "2001:db8::/32"]});
    env.core
        .set_instance_policies(
            &env.admin,
            &env.instance,
            vec![(
                InstancePolicyType::AllowedIp,
                true,
                attrs.as_object().unwrap().clone(),
            )],
        )
        .await
        .unwrap();
    env.core
        .check_source(&env.admin, &env.instance, ip("10.1.2.3"))
        .await
        .unwrap();
    env.core
        .check_source(&env.admin, &env.instance, ip("2001:db8::1"))
        .await
        .unwrap();
    for refused in [ip("192.0.2.1"), ip("::1"), None] {
        assert!(matches!(
            env.core
                .check_source(&env.admin, &env.instance, refused)
                .await,
            Err(CoreError::Forbidden { .. })
        ));
    }
    let events = env
        .core
        .audit_events(
            &env.admin,
            &env.instance,
            &keyfort_core::AuditQuery {
                action: Some("request.source".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.outcome == "denied"));
    // Turning the policy off lets everyone in again at once.
    env.core
        .set_instance_policies(
            &env.admin,
            &env.instance,
            vec![(InstancePolicyType::AllowedIp, false, serde_json::Map::new())],
        )
        .await
        .unwrap();
    env.core
        .check_source(&env.admin, &env.instance, ip("192.0.2.1"))
        .await
        .unwrap();
}

/// A clock the test moves by hand.
struct TestClock(std::sync::atomic::AtomicI64);

impl keyfort_core::Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Someone who may not read an instance's audit trail cannot tell whether the instance exists.
#[tokio::test]
async fn the_audit_trail_does_not_tell_strangers_which_instances_exist() {
    let env = env().await;
    let writer = env.caller_with("audit-stranger", Role::Writer).await;
    let query = keyfort_core::AuditQuery {
        limit: 10,
        ..Default::default()
    };
    for instance in [env.instance.as_str(), "no-such-instance"] {
        assert!(
            matches!(
                env.core.audit_events(&writer, instance, &query).await,
                Err(CoreError::Forbidden { .. })
            ),
            "{instance}"
        );
    }
    // An administrator is told.
    assert!(matches!(
        env.core
            .audit_events(&env.admin, "no-such-instance", &query)
            .await,
        Err(CoreError::InstanceNotFound { .. })
    ));
}

/// A core on a new SQLite database in `dir` with a clock the test moves (starting at
/// 1 700 000 000 000 ms), its dev instance bootstrapped: the core, the clock, the administrator
/// and the instance id.
async fn dev_core_with_clock(dir: &Path) -> (Keyfort, Arc<TestClock>, Arc<Caller>, String) {
    let store = SqliteStore::open(&dir.join("keyfort.db")).await.unwrap();
    let clock = Arc::new(TestClock(std::sync::atomic::AtomicI64::new(
        1_700_000_000_000,
    )));
    let core = Keyfort::open_with_clock(
        Arc::new(store),
        CoreConfig::new(Duration::from_secs(3600), TokenSigner::generate().unwrap()),
        clock.clone(),
    )
    .await
    .unwrap();
    let boot = core
        .dev_bootstrap(DevSetup {
            master_key_file: dir.join("dev.key"),
            previous_api_key: None,
        })
        .await
        .unwrap();
    let token = core.exchange_api_key(&boot.api_key).await.unwrap();
    let admin = core.authenticate(&token.token).await.unwrap();
    (core, clock, admin, boot.instance_id)
}

#[tokio::test]
async fn maintenance_rotates_due_keys_and_purges_old_deletions() {
    use keyfort_core::{KeyPolicyUpdate, RotationPolicy};
    use std::sync::atomic::Ordering;
    const DAY: i64 = 24 * 3600 * 1000;
    let dir = tempfile::tempdir().unwrap();
    let (core, clock, admin, id) = dev_core_with_clock(dir.path()).await;

    let rotating = core
        .create_key(&admin, &id, named("monthly"))
        .await
        .unwrap();
    core.set_key_policies(
        &admin,
        &id,
        &rotating.id,
        KeyPolicyUpdate {
            rotation: Some(RotationPolicy {
                enabled: true,
                interval_month: 1,
            }),
            dual_auth_delete: None,
        },
    )
    .await
    .unwrap();
    let steady = core
        .create_key(&admin, &id, named("no-policy"))
        .await
        .unwrap();
    let doomed = core.create_key(&admin, &id, named("doomed")).await.unwrap();
    core.delete_key(&admin, &id, &doomed.id, false)
        .await
        .unwrap();

    // Nothing is due yet.
    let report = core.run_maintenance().await.unwrap();
    assert!(
        report.rotated.is_empty() && report.purged.is_empty(),
        "{report:?}"
    );

    clock.0.fetch_add(31 * DAY, Ordering::SeqCst);
    let report = core.run_maintenance().await.unwrap();
    assert_eq!(report.rotated, vec![rotating.id.clone()]);
    assert!(report.purged.is_empty());
    assert_eq!(
        core.key_versions(&admin, &id, &rotating.id)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        core.key_versions(&admin, &id, &steady.id)
            .await
            .unwrap()
            .len(),
        1
    );
    // Not due again until another month has passed.
    assert!(core.run_maintenance().await.unwrap().rotated.is_empty());

    clock.0.fetch_add(60 * DAY, Ordering::SeqCst);
    let report = core.run_maintenance().await.unwrap();
    assert_eq!(report.purged, vec![doomed.id.clone()]);
    assert_eq!(report.rotated, vec![rotating.id.clone()]);
    assert!(matches!(
        core.key(&admin, &id, &doomed.id).await,
        Err(CoreError::KeyNotFound { .. })
    ));
    let events = core
        .audit_events(
            &admin,
            &id,
            &keyfort_core::AuditQuery {
                action: Some("key.purge".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "keyfort");
}

/// A key past its expiration date stops wrapping at once and still unwraps; the next maintenance
/// pass records it as Deactivated with an audit event, and it cannot be enabled again.
#[tokio::test]
async fn an_expired_key_stops_wrapping_and_maintenance_deactivates_it() {
    use std::sync::atomic::Ordering;
    const MINUTE: i64 = 60 * 1000;
    let dir = tempfile::tempdir().unwrap();
    let (core, clock, admin, id) = dev_core_with_clock(dir.path()).await;
    let now = clock.0.load(Ordering::SeqCst);
    let expiring = core
        .create_key(
            &admin,
            &id,
            NewKey {
                expires_at: Some(now + 5 * MINUTE),
                ..named("expiring")
            },
        )
        .await
        .unwrap();
    let lasting = core
        .create_key(&admin, &id, named("lasting"))
        .await
        .unwrap();
    let wrapped = core
        .wrap_key(&admin, &id, &expiring.id, None, &[])
        .await
        .unwrap();
    assert!(core.run_maintenance().await.unwrap().deactivated.is_empty());

    clock.0.fetch_add(6 * MINUTE, Ordering::SeqCst);
    // Before any maintenance pass: no more wraps, unwraps still work.
    assert!(matches!(
        core.wrap_key(&admin, &id, &expiring.id, None, &[]).await,
        Err(CoreError::KeyNotUsable {
            state: KeyState::Deactivated,
            ..
        })
    ));
    let plain = core
        .unwrap_key(&admin, &id, &expiring.id, &wrapped.ciphertext, &[])
        .await
        .unwrap();
    assert_eq!(
        plain.plaintext.as_slice(),
        wrapped.generated_plaintext.as_ref().unwrap().as_slice()
    );
    core.wrap_key(&admin, &id, &lasting.id, None, &[])
        .await
        .unwrap();

    let report = core.run_maintenance().await.unwrap();
    assert_eq!(report.deactivated, vec![expiring.id.clone()]);
    let key = core.key(&admin, &id, &expiring.id).await.unwrap();
    assert_eq!(key.state, KeyState::Deactivated);
    assert_eq!(key.deactivated_at, Some(now + 6 * MINUTE));
    assert_eq!(
        core.key(&admin, &id, &lasting.id).await.unwrap().state,
        KeyState::Active
    );
    // Recorded once, by the server.
    assert!(core.run_maintenance().await.unwrap().deactivated.is_empty());
    let events = core
        .audit_events(
            &admin,
            &id,
            &keyfort_core::AuditQuery {
                action: Some("key.deactivate".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "keyfort");
    assert_eq!(events[0].target, expiring.id);
    // Still unwraps once recorded; enabling it again is refused.
    core.unwrap_key(&admin, &id, &expiring.id, &wrapped.ciphertext, &[])
        .await
        .unwrap();
    assert!(
        core.transition_key(&admin, &id, &expiring.id, Transition::Enable)
            .await
            .is_err(),
        "an expired key cannot be enabled"
    );
}

fn secret_object(id: Option<&str>, material: &[u8]) -> keyfort_core::objects::NewObject {
    keyfort_core::objects::NewObject {
        object_type: keyfort_core::objects::ObjectType::SecretData,
        algorithm: String::new(),
        bit_length: 0,
        name: None,
        attributes: serde_json::Map::new(),
        material: Some(Zeroizing::new(material.to_vec())),
        initial_state: KeyState::PreActive,
        id: id.map(str::to_owned),
    }
}

#[tokio::test]
async fn undo_of_a_creation_only_for_the_creator_and_an_unchanged_object() {
    let env = env().await;
    let (core, instance) = (&env.core, env.instance.as_str());
    let writer = env.caller_with("undo-writer", Role::Manager).await;
    let other = env.caller_with("undo-other", Role::Manager).await;
    let created = core
        .create_object(&writer, instance, secret_object(None, &[7; 32]))
        .await
        .unwrap();
    // Another principal cannot undo it, nor can its creator once the object has changed.
    let refused = core
        .undo_object_creation(&other, instance, &created.id, created.row_version)
        .await;
    assert!(
        matches!(refused, Err(CoreError::Conflict { .. })),
        "{refused:?}"
    );
    let changed = core
        .update_object(
            &writer,
            instance,
            &created.id,
            "key.attributes.update",
            |k| {
                k.attributes
                    .insert("note".into(), serde_json::json!("changed"));
                Ok(())
            },
        )
        .await
        .unwrap();
    let refused = core
        .undo_object_creation(&writer, instance, &created.id, created.row_version)
        .await;
    assert!(
        matches!(refused, Err(CoreError::Conflict { .. })),
        "{refused:?}"
    );
    // At the version it is at, its creator removes it for good.
    core.undo_object_creation(&writer, instance, &created.id, changed.row_version)
        .await
        .unwrap();
    let gone = core.key(&writer, instance, &created.id).await;
    assert!(
        matches!(gone, Err(CoreError::KeyNotFound { .. })),
        "{gone:?}"
    );
}

#[tokio::test]
async fn replacing_an_object_keeps_its_id_and_needs_the_manager_role() {
    let env = env().await;
    let (core, instance) = (&env.core, env.instance.as_str());
    let id = "5d3c2b1a-0f9e-4d8c-b7a6-958473625140";
    let first = core
        .create_object(&env.admin, instance, secret_object(Some(id), &[1; 16]))
        .await
        .unwrap();
    assert_eq!(first.id, id);
    let writer = env.caller_with("replace-writer", Role::Writer).await;
    let refused = core
        .replace_object(&writer, instance, secret_object(Some(id), &[2; 16]))
        .await;
    assert!(
        matches!(refused, Err(CoreError::Forbidden { .. })),
        "{refused:?}"
    );
    let replaced = core
        .replace_object(&env.admin, instance, secret_object(Some(id), &[3; 24]))
        .await
        .unwrap();
    assert_eq!(replaced.id, id);
    let (_, material) = core
        .object_material(&env.admin, instance, id)
        .await
        .unwrap();
    assert_eq!(material.as_slice(), &[3; 24]);
    let missing = core
        .replace_object(
            &env.admin,
            instance,
            secret_object(Some("00000000-0000-4000-8000-000000000000"), &[4; 16]),
        )
        .await;
    assert!(
        matches!(missing, Err(CoreError::KeyNotFound { .. })),
        "{missing:?}"
    );
}

/// KMIP Locate's walk reads the instance a page at a time: every object counts and the window
/// of ids is right across page boundaries, however many objects there are.
#[tokio::test]
async fn locate_walks_every_object_page_by_page() {
    let env = env().await;
    let (core, instance) = (&env.core, env.instance.as_str());
    let (before, _) = core
        .locate_objects(&env.admin, instance, |_| true, 0, Some(0))
        .await
        .unwrap();
    // More than two pages of 1000.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2100u32 {
        let (core, admin, instance) = (core.clone(), env.admin.clone(), env.instance.clone());
        tasks.spawn(async move {
            core.create_object(&admin, &instance, secret_object(None, &i.to_be_bytes()))
                .await
                .unwrap()
                .id
        });
    }
    let mut created = std::collections::HashSet::new();
    while let Some(id) = tasks.join_next().await {
        created.insert(id.unwrap());
    }
    let (total, all) = core
        .locate_objects(&env.admin, instance, |_| true, 0, None)
        .await
        .unwrap();
    assert_eq!(total, before + 2100);
    assert_eq!(all.len(), total);
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), total, "an object listed twice");
    assert!(created.iter().all(|id| distinct.contains(id)));
    // A window across the first page boundary, and one past the end.
    let (total, window) = core
        .locate_objects(&env.admin, instance, |_| true, 995, Some(10))
        .await
        .unwrap();
    assert_eq!((total, window.as_slice()), (all.len(), &all[995..1005]));
    let (_, none) = core
        .locate_objects(&env.admin, instance, |_| true, all.len(), None)
        .await
        .unwrap();
    assert!(none.is_empty());
    // A filter counts only what it keeps.
    let kept: std::collections::HashSet<String> = all.iter().step_by(3).cloned().collect();
    let (total, ids) = core
        .locate_objects(&env.admin, instance, |k| kept.contains(&k.id), 0, None)
        .await
        .unwrap();
    assert_eq!(total, kept.len());
    assert_eq!(ids, all.iter().step_by(3).cloned().collect::<Vec<_>>());
}

/// The listing of all keys' registrations reads them a page at a time: every one counts once,
/// in key then CRN order, and the window is right across page boundaries.
#[tokio::test]
async fn registrations_of_all_keys_are_walked_page_by_page() {
    let env = env().await;
    let (core, instance) = (&env.core, env.instance.as_str());
    let mut keys = Vec::new();
    for i in 0..21 {
        let key = core
            .create_key(&env.admin, instance, named(&format!("registered-{i}")))
            .await
            .unwrap();
        keys.push(key.id);
    }
    // 2,100 registrations: more than two pages of 1000.
    let mut tasks = tokio::task::JoinSet::new();
    for key in &keys {
        for n in 0..100 {
            let (core, admin, instance, key) = (
                core.clone(),
                env.admin.clone(),
                env.instance.clone(),
                key.clone(),
            );
            tasks.spawn(async move {
                let crn = format!("crn:v1:test:{n:03}");
                core.put_registration(&admin, &instance, &key, &crn, None, None, false)
                    .await
                    .unwrap();
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let (total, all) = core
        .registrations_matching(&env.admin, instance, None, |_| true, 0, usize::MAX)
        .await
        .unwrap();
    assert_eq!((total, all.len()), (2100, 2100));
    let order: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r.key_id.as_str(), r.resource_crn.as_str()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(order, sorted, "not in key then CRN order, or repeated");
    let (total, window) = core
        .registrations_matching(&env.admin, instance, None, |_| true, 995, 10)
        .await
        .unwrap();
    assert_eq!((total, window.as_slice()), (2100, &all[995..1005]));
    let (total, kept) = core
        .registrations_matching(
            &env.admin,
            instance,
            None,
            |r| r.resource_crn.ends_with('7'),
            0,
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!((total, kept.len()), (210, 210));
    assert!(kept.iter().all(|r| r.resource_crn.ends_with('7')));
}
