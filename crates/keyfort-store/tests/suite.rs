//! The behavioural test suite every [`Store`] implementation must pass (DESIGN §4: "same test
//! suite runs on both"). Each test is a `pub async fn` taking a fresh, empty store; a backend's
//! test file declares `#[macro_use] mod suite;` and calls [`store_suite!`] with a function that
//! opens such a store (see `tests/sqlite.rs`).
//!
//! Backend-specific checks (corrupting a row by raw SQL, reopening a file, schema versions) live
//! in the backend's own test file.

use std::fmt::Debug;
use std::sync::Arc;

use keyfort_crypto::digest::sha256;
use keyfort_store::{
    ApiKeyRecord, Applied, AuditEventInput, AuditEventRecord, AuditFilter, InstanceRecord,
    InstanceSecretRecord, KeyFilter, KeyRecord, KeyRingRecord, KeyVersionRecord, KmipAdapterRecord,
    KmipCertificateRecord, KmipObjectFilter, PrincipalRecord, RegistrationRecord, Result, Store,
    StoreError, Write, WriteBatch,
};
use keyfort_store::{
    Comparison, DateCondition, KeyDate, KeySort, KeySortField, SearchMode, SearchScope,
};
use keyfort_store::{
    KeystoreObjectRecord, KeystoreRecord, KeystoreWrite, ObjectAttribute, ObjectQuery,
};

/// Expands to one `#[tokio::test]` per suite test. `$open` is an `async fn() -> (G, Arc<dyn
/// Store>)` returning a fresh empty store and a guard `G` kept alive for the test (a temporary
/// directory, a database to drop).
macro_rules! store_suite {
    ($open:path) => {
        store_suite!(@tests $open;
            instances,
            instance_updates,
            key_rings,
            key_insert_and_read,
            key_insert_is_atomic,
            aliases_are_unique_per_instance,
            update_key,
            list_and_count_keys,
            list_keys_by_dates_sorted_and_searched,
            list_keys_text_rules,
            list_keys_paging,
            key_versions,
            purge_key,
            principals,
            api_keys,
            concurrent_writes,
            reseal_scan,
            reseal_is_optimistic,
            instance_secrets,
            update_instance_with_is_atomic,
            command_nonces,
            zeroize_instance,
            zeroize_is_optimistic,
            audit_chain,
            concurrent_audit_appends,
            audit_paging,
            audit_chains_are_per_instance,
            apply_is_atomic,
            apply_results,
            apply_errors_are_those_of_the_single_methods,
            apply_audit_chains_with_appends,
            group_commit_under_concurrency,
            grouped_creations_without_aliases_fail_alone,
            registrations,
            registrations_go_with_their_key,
            kmip_adapters,
            kmip_adapter_objects,
            listing_without_kmip_adapter_objects,
            instance_policies,
            query_audit_events,
            list_all_api_keys,
            keystores,
            keystore_objects_find_and_page,
            keystore_object_updates_are_optimistic,
            keystores_go_with_zeroization,
        );
    };
    (@tests $open:path; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (_guard, store) = $open().await;
                crate::suite::$name(store).await;
            }
        )+
    };
}

// ---- record builders ------------------------------------------------------------------------

pub fn instance(id: &str, name: &str, created_at: i64) -> InstanceRecord {
    InstanceRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        state: "uninitialized".to_owned(),
        mk_version: 0,
        unseal_method: String::new(),
        mk_check_value: Vec::new(),
        unseal_config: "{}".to_owned(),
        created_at,
        updated_at: created_at,
        row_version: 1,
    }
}

pub fn ring(instance_id: &str, id: &str) -> KeyRingRecord {
    KeyRingRecord {
        instance_id: instance_id.to_owned(),
        id: id.to_owned(),
        created_at: 1_000,
        created_by: "admin".to_owned(),
    }
}

pub fn key(instance_id: &str, id: &str, aliases: &[&str], created_at: i64) -> KeyRecord {
    KeyRecord {
        instance_id: instance_id.to_owned(),
        id: id.to_owned(),
        key_ring_id: "default".to_owned(),
        name: format!("name-{id}"),
        description: Some(format!("description of {id}")),
        tags: vec!["t1".to_owned(), "t2".to_owned()],
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
        object_type: "symmetric_key".to_owned(),
        algorithm: "AES".to_owned(),
        bit_length: 256,
        extractable: false,
        imported: false,
        state: 1,
        created_at,
        created_by: "alice".to_owned(),
        updated_at: created_at,
        activation_at: Some(created_at),
        expires_at: None,
        deactivated_at: None,
        deleted_at: None,
        deleted_by: None,
        last_rotated_at: None,
        current_version_id: format!("{id}-v1"),
        attributes: r#"{"policy":{"rotation":90}}"#.to_owned(),
        row_version: 1,
    }
}

pub fn version(k: &KeyRecord, seq: i64) -> KeyVersionRecord {
    KeyVersionRecord {
        instance_id: k.instance_id.clone(),
        key_id: k.id.clone(),
        id: format!("{}-v{seq}", k.id),
        seq,
        sealed: vec![0xA5, seq as u8, 0x00, 0xFF],
        mk_version: 1,
        created_at: k.created_at + seq,
    }
}

pub fn principal(
    id: &str,
    instance_id: Option<&str>,
    name: &str,
    created_at: i64,
) -> PrincipalRecord {
    PrincipalRecord {
        id: id.to_owned(),
        instance_id: instance_id.map(str::to_owned),
        name: name.to_owned(),
        kind: "user".to_owned(),
        roles: r#"[{"role":"Manager"}]"#.to_owned(),
        disabled: false,
        created_at,
        updated_at: created_at,
        row_version: 1,
    }
}

pub fn api_key(id: &str, principal_id: &str, hash: &[u8], created_at: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        principal_id: principal_id.to_owned(),
        name: format!("api key {id}"),
        hash: hash.to_vec(),
        created_at,
        expires_at: Some(created_at + 86_400_000),
        revoked_at: None,
        row_version: 1,
    }
}

pub fn secret(instance_id: &str, name: &str, mk_version: i64) -> InstanceSecretRecord {
    InstanceSecretRecord {
        instance_id: instance_id.to_owned(),
        name: name.to_owned(),
        sealed: vec![0x5E, mk_version as u8, 0x00, 0xC3],
        mk_version,
        created_at: 7_000 + mk_version,
    }
}

pub fn audit(instance_id: &str, at: i64, body: &str) -> AuditEventInput {
    AuditEventInput {
        instance_id: instance_id.to_owned(),
        at,
        body: body.to_owned(),
        fields: None,
    }
}

pub fn registration(k: &KeyRecord, crn: &str, at: i64) -> RegistrationRecord {
    RegistrationRecord {
        instance_id: k.instance_id.clone(),
        key_id: k.id.clone(),
        resource_crn: crn.to_owned(),
        description: Some(format!("protects {crn}")),
        registration_metadata: Some(r#"{"tier":"gold"}"#.to_owned()),
        prevent_key_deletion: false,
        key_version_id: k.current_version_id.clone(),
        created_by: "svc".to_owned(),
        created_at: at,
        updated_by: "svc".to_owned(),
        updated_at: at,
    }
}

pub fn batch(writes: impl IntoIterator<Item = Write>) -> WriteBatch {
    WriteBatch {
        writes: writes.into_iter().collect(),
    }
}

/// An audit body with the three queryable fields.
pub fn event_body(target: &str, action: &str, outcome: &str) -> String {
    format!(r#"{{"target":"{target}","action":"{action}","outcome":"{outcome}"}}"#)
}

/// `SHA-256(prev_hash ‖ seq as u64 BE ‖ at as i64 BE ‖ body)`, computed here independently of
/// the store.
pub fn chain_hash(prev_hash: &[u8], seq: i64, at: i64, body: &str) -> Vec<u8> {
    let mut input = prev_hash.to_vec();
    input.extend_from_slice(&u64::try_from(seq).expect("seq >= 1").to_be_bytes());
    input.extend_from_slice(&at.to_be_bytes());
    input.extend_from_slice(body.as_bytes());
    sha256(&input).to_vec()
}

/// `events` are a whole chain of `instance_id`: seq 1, 2, ... without gaps, each linked to the
/// previous one's hash (32 zero bytes for the first), each hash correct.
#[track_caller]
pub fn assert_chain(instance_id: &str, events: &[AuditEventRecord]) {
    let mut prev = vec![0_u8; 32];
    for (seq, e) in (1_i64..).zip(events) {
        assert_eq!(e.instance_id, instance_id, "{e:?}");
        assert_eq!(e.seq, seq, "no gap: {e:?}");
        assert_eq!(e.prev_hash, prev, "linked to the previous event: {e:?}");
        assert_eq!(e.hash, chain_hash(&prev, e.seq, e.at, &e.body), "{e:?}");
        prev.clone_from(&e.hash);
    }
}

/// An instance `id` with its `default` key ring.
pub async fn instance_with_ring(store: &dyn Store, id: &str, created_at: i64) {
    store
        .insert_instance(&instance(id, &format!("{id}-name"), created_at))
        .await
        .expect("insert instance");
    store
        .insert_key_ring(&ring(id, "default"))
        .await
        .expect("insert default ring");
}

/// Inserts `k` with its first version.
pub async fn insert(store: &dyn Store, k: &KeyRecord) {
    store
        .insert_key(k, &version(k, 1))
        .await
        .expect("insert key");
}

/// The error of `r`, which must have failed.
#[track_caller]
pub fn fails<T: Debug>(r: Result<T>) -> StoreError {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_already_exists(e: StoreError, what: &str, id: &str) {
    assert!(
        matches!(&e, StoreError::AlreadyExists { what: w, id: i } if *w == what && i == id),
        "expected AlreadyExists {{ {what}, {id} }}, got {e:?}"
    );
}

#[track_caller]
fn assert_not_found(e: StoreError, what: &str, id: &str) {
    assert!(
        matches!(&e, StoreError::NotFound { what: w, id: i } if *w == what && i == id),
        "expected NotFound {{ {what}, {id} }}, got {e:?}"
    );
}

#[track_caller]
fn assert_conflict(e: StoreError, what: &str, id: &str, expected: i64) {
    assert!(
        matches!(&e, StoreError::Conflict { what: w, id: i, expected: x }
            if *w == what && i == id && *x == expected),
        "expected Conflict {{ {what}, {id}, {expected} }}, got {e:?}"
    );
}

fn ids(keys: &[KeyRecord]) -> Vec<&str> {
    keys.iter().map(|k| k.id.as_str()).collect()
}

// ---- instances ------------------------------------------------------------------------------

pub async fn instances(store: Arc<dyn Store>) {
    let s = &*store;
    s.ping().await.expect("ping");
    assert!(!s.backend().is_empty());
    assert!(s.list_instances().await.expect("list").is_empty());
    assert_eq!(s.instance("nope").await.expect("get"), None);

    let mut b = instance("inst-b", "beta", 2_000);
    b.mk_check_value = vec![1, 2, 3];
    b.unseal_config = r#"{"custodians":["x"]}"#.to_owned();
    let a = instance("inst-a", "alpha", 2_000);
    let c = instance("inst-c", "gamma", 1_000);
    for i in [&b, &a, &c] {
        s.insert_instance(i).await.expect("insert");
    }
    assert_eq!(s.instance("inst-b").await.expect("get"), Some(b.clone()));
    // Ordered by creation time, then id.
    let listed = s.list_instances().await.expect("list");
    assert_eq!(listed, vec![c.clone(), a.clone(), b.clone()]);

    // Duplicate id, duplicate name: refused, nothing changed.
    assert_already_exists(
        fails(s.insert_instance(&instance("inst-a", "other", 5)).await),
        "instance",
        "inst-a",
    );
    assert_already_exists(
        fails(s.insert_instance(&instance("inst-d", "alpha", 5)).await),
        "instance name",
        "alpha",
    );
    assert_eq!(s.instance("inst-d").await.expect("get"), None);
    assert_eq!(s.list_instances().await.expect("list"), listed);
}

pub async fn instance_updates(store: Arc<dyn Store>) {
    let s = &*store;
    let original = instance("inst-a", "alpha", 1_000);
    s.insert_instance(&original).await.expect("insert");
    s.insert_instance(&instance("inst-b", "beta", 1_000))
        .await
        .expect("insert");

    let mut changed = original.clone();
    changed.name = "alpha-2".to_owned();
    changed.state = "initialized".to_owned();
    changed.mk_version = 1;
    changed.unseal_method = "custodians".to_owned();
    changed.mk_check_value = vec![9; 8];
    changed.unseal_config = r#"{"threshold":2}"#.to_owned();
    changed.updated_at = 5_000;
    assert_eq!(s.update_instance(&changed).await.expect("update"), 2);
    let stored = s.instance("inst-a").await.expect("get").expect("present");
    assert_eq!(
        stored,
        InstanceRecord {
            row_version: 2,
            ..changed.clone()
        }
    );

    // A writer holding the old version loses, and changes nothing.
    let mut stale = original.clone();
    stale.state = "zeroized".to_owned();
    assert_conflict(
        fails(s.update_instance(&stale).await),
        "instance",
        "inst-a",
        1,
    );
    assert_eq!(
        s.instance("inst-a").await.expect("get"),
        Some(stored.clone())
    );

    // A missing instance is NotFound, not Conflict.
    assert_not_found(
        fails(s.update_instance(&instance("ghost", "ghost", 1)).await),
        "instance",
        "ghost",
    );

    // Renaming onto a taken name.
    let mut rename = stored.clone();
    rename.name = "beta".to_owned();
    assert_already_exists(
        fails(s.update_instance(&rename).await),
        "instance name",
        "beta",
    );
    assert_eq!(
        s.instance("inst-a").await.expect("get"),
        Some(stored.clone())
    );

    // The returned version is the one to use next.
    let mut next = stored.clone();
    next.mk_version = 2;
    assert_eq!(s.update_instance(&next).await.expect("update"), 3);
}

// ---- key rings ------------------------------------------------------------------------------

pub async fn key_rings(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    let zeta = ring("inst-a", "zeta");
    let beta = ring("inst-a", "beta");
    s.insert_key_ring(&zeta).await.expect("insert");
    s.insert_key_ring(&beta).await.expect("insert");
    // The same ring id in another instance is another ring.
    s.insert_key_ring(&ring("inst-b", "beta"))
        .await
        .expect("insert");

    assert_eq!(
        s.key_ring("inst-a", "beta").await.expect("get"),
        Some(beta.clone())
    );
    assert_eq!(s.key_ring("inst-a", "nope").await.expect("get"), None);
    assert_eq!(s.key_ring("inst-c", "default").await.expect("get"), None);
    let listed: Vec<String> = s
        .list_key_rings("inst-a")
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["beta", "default", "zeta"]);

    assert_already_exists(fails(s.insert_key_ring(&beta).await), "key ring", "beta");
    assert_not_found(
        fails(s.insert_key_ring(&ring("inst-x", "r")).await),
        "instance",
        "inst-x",
    );

    // In use while a key (in any state) belongs to it.
    let mut k = key("inst-a", "k1", &[], 10);
    k.key_ring_id = "beta".to_owned();
    k.state = 5;
    insert(s, &k).await;
    let e = fails(s.delete_key_ring("inst-a", "beta").await);
    assert!(
        matches!(&e, StoreError::InUse { what: "key ring", id } if id == "beta"),
        "{e:?}"
    );
    assert_eq!(s.key_ring("inst-a", "beta").await.expect("get"), Some(beta));

    // The other instance's `beta` is free.
    s.delete_key_ring("inst-b", "beta").await.expect("delete");
    assert_eq!(s.key_ring("inst-b", "beta").await.expect("get"), None);

    s.purge_key("inst-a", "k1").await.expect("purge");
    s.delete_key_ring("inst-a", "beta").await.expect("delete");
    assert_eq!(s.key_ring("inst-a", "beta").await.expect("get"), None);
    assert_not_found(
        fails(s.delete_key_ring("inst-a", "beta").await),
        "key ring",
        "beta",
    );
}

// ---- keys -----------------------------------------------------------------------------------

pub async fn key_insert_and_read(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    let mut k = key("inst-a", "k1", &["zeta", "Alpha", "mid"], 100);
    k.description = None;
    k.tags = vec!["b".to_owned(), "a".to_owned(), "ü-tag".to_owned()];
    k.extractable = true;
    k.imported = true;
    k.expires_at = Some(i64::MAX);
    k.deleted_by = Some("bob".to_owned());
    k.created_at = -5; // times before 1970 are still times
    let v1 = version(&k, 1);
    s.insert_key(&k, &v1).await.expect("insert");

    assert_eq!(s.key("inst-a", "k1").await.expect("get"), Some(k.clone()));
    assert_eq!(s.key("inst-a", "k2").await.expect("get"), None);
    assert_eq!(s.key("inst-b", "k1").await.expect("get"), None);
    for alias in ["zeta", "Alpha", "mid"] {
        assert_eq!(
            s.key_by_alias("inst-a", alias).await.expect("by alias"),
            Some(k.clone())
        );
    }
    // Aliases match exactly.
    assert_eq!(
        s.key_by_alias("inst-a", "alpha").await.expect("by alias"),
        None
    );
    assert_eq!(
        s.key_by_alias("inst-a", "k1").await.expect("by alias"),
        None
    );
    assert_eq!(
        s.key_versions("inst-a", "k1").await.expect("versions"),
        vec![v1.clone()]
    );
    assert_eq!(
        s.key_version("inst-a", "k1", "k1-v1")
            .await
            .expect("version"),
        Some(v1)
    );
    assert_eq!(
        s.key_version("inst-a", "k1", "k1-v2")
            .await
            .expect("version"),
        None
    );
    assert!(
        s.key_versions("inst-a", "nope")
            .await
            .expect("versions")
            .is_empty()
    );

    // Duplicate id.
    let again = key("inst-a", "k1", &["fresh"], 200);
    assert_already_exists(
        fails(s.insert_key(&again, &version(&again, 1)).await),
        "key",
        "k1",
    );
    assert_eq!(
        s.key_by_alias("inst-a", "fresh").await.expect("by alias"),
        None
    );
    assert_eq!(s.key("inst-a", "k1").await.expect("get"), Some(k));
}

pub async fn key_insert_is_atomic(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;

    // Unknown ring: nothing of the key is stored.
    let mut k = key("inst-a", "k1", &["a1"], 100);
    k.key_ring_id = "missing".to_owned();
    assert_not_found(
        fails(s.insert_key(&k, &version(&k, 1)).await),
        "key ring",
        "missing",
    );
    assert_eq!(s.key("inst-a", "k1").await.expect("get"), None);
    assert_eq!(
        s.key_by_alias("inst-a", "a1").await.expect("by alias"),
        None
    );
    assert!(
        s.key_versions("inst-a", "k1")
            .await
            .expect("versions")
            .is_empty()
    );

    // The first version fails after the key row and its aliases went in: all rolled back.
    let k2 = key("inst-a", "k2", &["a2"], 100);
    insert(s, &k2).await;
    let k3 = key("inst-a", "k3", &["a3"], 100);
    assert_already_exists(
        fails(s.insert_key(&k3, &version(&k2, 1)).await),
        "key version",
        "k2-v1",
    );
    let mut orphan = version(&k3, 1);
    orphan.key_id = "ghost".to_owned();
    assert_not_found(fails(s.insert_key(&k3, &orphan).await), "key", "ghost");
    assert_eq!(s.key("inst-a", "k3").await.expect("get"), None);
    assert_eq!(
        s.key_by_alias("inst-a", "a3").await.expect("by alias"),
        None
    );
    assert_eq!(
        s.key_versions("inst-a", "k2")
            .await
            .expect("versions")
            .len(),
        1
    );
    assert_eq!(
        s.count_keys("inst-a", &KeyFilter::default())
            .await
            .expect("count"),
        1
    );
    // The same key goes in once its version is right.
    insert(s, &k3).await;
    assert_eq!(
        s.count_keys("inst-a", &KeyFilter::default())
            .await
            .expect("count"),
        2
    );
}

pub async fn aliases_are_unique_per_instance(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    let k1 = key("inst-a", "k1", &["shared", "one"], 100);
    insert(s, &k1).await;

    // Same alias, other key, same instance: refused, and nothing of k2 is stored.
    let k2 = key("inst-a", "k2", &["two", "shared"], 200);
    assert_already_exists(
        fails(s.insert_key(&k2, &version(&k2, 1)).await),
        "key alias",
        "shared",
    );
    assert_eq!(s.key("inst-a", "k2").await.expect("get"), None);
    assert_eq!(
        s.key_by_alias("inst-a", "two").await.expect("by alias"),
        None
    );
    assert!(
        s.key_versions("inst-a", "k2")
            .await
            .expect("versions")
            .is_empty()
    );

    // The same alias twice on one key is a collision too.
    let k3 = key("inst-a", "k3", &["dup", "dup"], 300);
    assert_already_exists(
        fails(s.insert_key(&k3, &version(&k3, 1)).await),
        "key alias",
        "dup",
    );
    assert_eq!(s.key("inst-a", "k3").await.expect("get"), None);

    // Another instance may use the alias (and the key id).
    let other = key("inst-b", "k1", &["shared"], 100);
    insert(s, &other).await;
    assert_eq!(
        s.key_by_alias("inst-a", "shared").await.expect("by alias"),
        Some(k1.clone())
    );
    assert_eq!(
        s.key_by_alias("inst-b", "shared").await.expect("by alias"),
        Some(other)
    );

    // Taking another key's alias by update: refused, both keys unchanged.
    let k4 = key("inst-a", "k4", &["four"], 400);
    insert(s, &k4).await;
    let mut steal = k4.clone();
    steal.aliases = vec!["four".to_owned(), "one".to_owned()];
    steal.name = "renamed".to_owned();
    assert_already_exists(fails(s.update_key(&steal).await), "key alias", "one");
    assert_eq!(s.key("inst-a", "k4").await.expect("get"), Some(k4.clone()));
    assert_eq!(s.key("inst-a", "k1").await.expect("get"), Some(k1));

    // Replacing the alias set: old aliases are released, order is kept.
    let mut renamed = k4.clone();
    renamed.aliases = vec!["z-new".to_owned(), "a-new".to_owned()];
    assert_eq!(s.update_key(&renamed).await.expect("update"), 2);
    assert_eq!(
        s.key_by_alias("inst-a", "four").await.expect("by alias"),
        None
    );
    let stored = s
        .key_by_alias("inst-a", "a-new")
        .await
        .expect("by alias")
        .expect("present");
    assert_eq!(stored.aliases, ["z-new", "a-new"]);
    let k5 = key("inst-a", "k5", &["four"], 500);
    insert(s, &k5).await;
}

pub async fn update_key(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    s.insert_key_ring(&ring("inst-a", "other"))
        .await
        .expect("ring");
    let original = key("inst-a", "k1", &["a"], 100);
    insert(s, &original).await;

    let mut changed = original.clone();
    changed.key_ring_id = "other".to_owned();
    changed.name = "new name".to_owned();
    changed.description = None;
    changed.tags = vec![];
    changed.aliases = vec![];
    changed.extractable = true;
    changed.state = 3;
    changed.updated_at = 900;
    changed.activation_at = None;
    changed.expires_at = Some(2_000);
    changed.deactivated_at = Some(800);
    changed.deleted_at = Some(850);
    changed.deleted_by = Some("carol".to_owned());
    changed.last_rotated_at = Some(700);
    changed.current_version_id = "k1-v9".to_owned();
    changed.attributes = "{}".to_owned();
    assert_eq!(s.update_key(&changed).await.expect("update"), 2);
    let stored = s.key("inst-a", "k1").await.expect("get").expect("present");
    assert_eq!(
        stored,
        KeyRecord {
            row_version: 2,
            ..changed.clone()
        }
    );
    assert_eq!(s.key_by_alias("inst-a", "a").await.expect("by alias"), None);

    // Identity and provenance are not replaced.
    let mut identity = stored.clone();
    identity.algorithm = "RSA".to_owned();
    identity.bit_length = 4096;
    identity.object_type = "private_key".to_owned();
    identity.imported = true;
    identity.created_at = 1;
    identity.created_by = "mallory".to_owned();
    assert_eq!(s.update_key(&identity).await.expect("update"), 3);
    let after = s.key("inst-a", "k1").await.expect("get").expect("present");
    assert_eq!(
        after,
        KeyRecord {
            row_version: 3,
            ..stored.clone()
        }
    );

    // Stale version: Conflict, nothing changed (not even the aliases).
    let mut stale = stored.clone(); // row_version 2
    stale.state = 5;
    stale.aliases = vec!["sneaky".to_owned()];
    assert_conflict(fails(s.update_key(&stale).await), "key", "k1", 2);
    assert_eq!(
        s.key("inst-a", "k1").await.expect("get"),
        Some(after.clone())
    );
    assert_eq!(
        s.key_by_alias("inst-a", "sneaky").await.expect("by alias"),
        None
    );

    // Missing key, missing ring.
    assert_not_found(
        fails(s.update_key(&key("inst-a", "ghost", &[], 1)).await),
        "key",
        "ghost",
    );
    let mut moved = after.clone();
    moved.key_ring_id = "missing".to_owned();
    assert_not_found(fails(s.update_key(&moved).await), "key ring", "missing");
    assert_eq!(s.key("inst-a", "k1").await.expect("get"), Some(after));
}

/// One key of the filter fixture: (id, ring, state, extractable, name, aliases, created_at).
type Spec = (
    &'static str,
    &'static str,
    i64,
    bool,
    &'static str,
    &'static [&'static str],
    i64,
);

/// Keys for the filter tests, in instance `inst-a`, and one in `inst-b`.
async fn filter_fixture(s: &dyn Store) {
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    s.insert_key_ring(&ring("inst-a", "r2"))
        .await
        .expect("ring");
    let specs: [Spec; 7] = [
        ("k1", "default", 1, false, "Payroll Root", &["hr-main"], 10),
        ("k2", "default", 1, true, "payroll-standard", &[], 20),
        ("k3", "r2", 2, false, "Backups", &["PAYROLL-old", "bk"], 30),
        ("k4", "r2", 3, true, "logs", &[], 40),
        ("k5", "default", 5, false, "100%_sure", &["under_score"], 50),
        ("k6", "default", 1, false, "same-time-b", &[], 60),
        ("k0", "default", 1, false, "same-time-a", &[], 60),
    ];
    for (id, ring_id, state, extractable, name, aliases, created_at) in specs {
        let mut k = key("inst-a", id, aliases, created_at);
        k.key_ring_id = ring_id.to_owned();
        k.state = state;
        k.extractable = extractable;
        k.name = name.to_owned();
        insert(s, &k).await;
    }
    // Another instance's keys never show.
    let mut foreign = key("inst-b", "kb", &["payroll-b"], 5);
    foreign.name = "payroll elsewhere".to_owned();
    insert(s, &foreign).await;
}

pub async fn list_and_count_keys(store: Arc<dyn Store>) {
    let s = &*store;
    filter_fixture(s).await;
    let check = |filter: KeyFilter, want: &'static [&'static str]| {
        let store = store.clone();
        async move {
            let listed = store.list_keys("inst-a", &filter).await.expect("list");
            assert_eq!(ids(&listed), want, "{filter:?}");
            let n = store.count_keys("inst-a", &filter).await.expect("count");
            assert_eq!(n, want.len() as u64, "{filter:?}");
        }
    };

    // Everything, by creation time then id.
    check(
        KeyFilter::default(),
        &["k1", "k2", "k3", "k4", "k5", "k0", "k6"],
    )
    .await;
    // Page by page after a cursor: by creation time, then by id within a millisecond.
    let after = |created_at: i64, id: &str, limit: Option<u64>| KeyFilter {
        after: Some(keyfort_store::KeyCursor {
            created_at,
            id: id.to_owned(),
        }),
        limit,
        ..Default::default()
    };
    check(after(20, "k2", None), &["k3", "k4", "k5", "k0", "k6"]).await;
    check(after(60, "k0", None), &["k6"]).await;
    check(after(60, "k6", None), &[]).await;
    for (filter, want) in [
        (after(10, "k1", Some(2)), ["k2", "k3"].as_slice()),
        (after(i64::MIN, "", Some(1)), ["k1"].as_slice()),
    ] {
        let listed = s.list_keys("inst-a", &filter).await.expect("list");
        assert_eq!(ids(&listed), want, "{filter:?}");
    }
    check(
        KeyFilter {
            key_ring_id: Some("r2".to_owned()),
            ..Default::default()
        },
        &["k3", "k4"],
    )
    .await;
    check(
        KeyFilter {
            key_ring_id: Some("nope".to_owned()),
            ..Default::default()
        },
        &[],
    )
    .await;
    check(
        KeyFilter {
            states: vec![1],
            ..Default::default()
        },
        &["k1", "k2", "k0", "k6"],
    )
    .await;
    check(
        KeyFilter {
            states: vec![5, 2],
            ..Default::default()
        },
        &["k3", "k5"],
    )
    .await;
    check(
        KeyFilter {
            states: vec![4],
            ..Default::default()
        },
        &[],
    )
    .await;
    check(
        KeyFilter {
            extractable: Some(true),
            ..Default::default()
        },
        &["k2", "k4"],
    )
    .await;
    check(
        KeyFilter {
            extractable: Some(false),
            ..Default::default()
        },
        &["k1", "k3", "k5", "k0", "k6"],
    )
    .await;
    // Case-insensitive substring of the name or of an alias.
    check(
        KeyFilter {
            search: Some("PayRoll".to_owned()),
            ..Default::default()
        },
        &["k1", "k2", "k3"],
    )
    .await;
    check(
        KeyFilter {
            search: Some("HR-M".to_owned()),
            ..Default::default()
        },
        &["k1"],
    )
    .await;
    check(
        KeyFilter {
            search: Some("BK".to_owned()),
            ..Default::default()
        },
        &["k3"],
    )
    .await;
    // Wildcard characters are literal.
    check(
        KeyFilter {
            search: Some("0%_".to_owned()),
            ..Default::default()
        },
        &["k5"],
    )
    .await;
    check(
        KeyFilter {
            search: Some("%".to_owned()),
            ..Default::default()
        },
        &["k5"],
    )
    .await;
    check(
        KeyFilter {
            search: Some("_".to_owned()),
            ..Default::default()
        },
        &["k5"],
    )
    .await;
    check(
        KeyFilter {
            search: Some("r_s".to_owned()),
            ..Default::default()
        },
        &["k5"],
    )
    .await;
    check(
        KeyFilter {
            search: Some("nothing".to_owned()),
            ..Default::default()
        },
        &[],
    )
    .await;
    // Combined.
    check(
        KeyFilter {
            key_ring_id: Some("default".to_owned()),
            states: vec![1, 3],
            extractable: Some(false),
            search: Some("payroll".to_owned()),
            ..Default::default()
        },
        &["k1"],
    )
    .await;
    check(
        KeyFilter {
            key_ring_id: Some("r2".to_owned()),
            states: vec![2, 3],
            extractable: Some(true),
            ..Default::default()
        },
        &["k4"],
    )
    .await;

    // An unknown instance has no keys.
    assert!(
        s.list_keys("inst-x", &KeyFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        s.count_keys("inst-x", &KeyFilter::default())
            .await
            .expect("count"),
        0
    );
    // The listed records are complete (aliases included).
    let listed = s
        .list_keys(
            "inst-a",
            &KeyFilter {
                search: Some("bk".to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(
        listed.first().map(|k| k.aliases.clone()),
        Some(vec!["PAYROLL-old".to_owned(), "bk".to_owned()])
    );
    assert_eq!(
        Some(&listed[0]),
        s.key("inst-a", "k3").await.expect("get").as_ref()
    );
}

pub async fn list_keys_by_dates_sorted_and_searched(store: Arc<dyn Store>) {
    let s = &*store;
    filter_fixture(s).await;
    let mut k2 = s.key("inst-a", "k2").await.expect("get").expect("k2");
    k2.last_rotated_at = Some(25);
    k2.expires_at = Some(100);
    k2.row_version = s.update_key(&k2).await.expect("update");
    let check = |filter: KeyFilter, want: &'static [&'static str]| {
        let store = store.clone();
        async move {
            let listed = store.list_keys("inst-a", &filter).await.expect("list");
            assert_eq!(ids(&listed), want, "{filter:?}");
            let n = store.count_keys("inst-a", &filter).await.expect("count");
            assert_eq!(n, want.len() as u64, "{filter:?}");
        }
    };
    let date = |date, comparison, value| DateCondition {
        date,
        comparison,
        value,
    };
    let dated = |dates: Vec<DateCondition>| KeyFilter {
        dates,
        ..Default::default()
    };
    use Comparison::*;
    use KeyDate::*;
    check(
        dated(vec![date(Created, Gte, Some(30))]),
        &["k3", "k4", "k5", "k0", "k6"],
    )
    .await;
    check(
        dated(vec![
            date(Created, Gt, Some(10)),
            date(Created, Lt, Some(30)),
        ]),
        &["k2"],
    )
    .await;
    check(dated(vec![date(Created, Lte, Some(10))]), &["k1"]).await;
    check(dated(vec![date(Created, Eq, Some(60))]), &["k0", "k6"]).await;
    check(
        dated(vec![date(Rotated, Eq, None)]),
        &["k1", "k3", "k4", "k5", "k0", "k6"],
    )
    .await;
    check(dated(vec![date(Rotated, Gte, Some(20))]), &["k2"]).await;
    check(dated(vec![date(Expires, Lte, Some(100))]), &["k2"]).await;
    check(dated(vec![date(Deleted, Gt, Some(0))]), &[]).await;
    check(
        dated(vec![date(Updated, Gte, Some(40)), date(Expires, Eq, None)]),
        &["k4", "k5", "k0", "k6"],
    )
    .await;

    // Sorted, ties by id.
    let sorted = |terms: &[(KeySortField, bool)]| KeyFilter {
        sort: terms
            .iter()
            .map(|&(field, descending)| KeySort { field, descending })
            .collect(),
        ..Default::default()
    };
    check(
        sorted(&[(KeySortField::State, true)]),
        &["k5", "k4", "k3", "k0", "k1", "k2", "k6"],
    )
    .await;
    check(
        sorted(&[
            (KeySortField::Extractable, false),
            (KeySortField::Date(Created), true),
        ]),
        &["k0", "k6", "k5", "k3", "k1", "k4", "k2"],
    )
    .await;
    check(
        sorted(&[(KeySortField::Id, true)]),
        &["k6", "k5", "k4", "k3", "k2", "k1", "k0"],
    )
    .await;
    check(
        sorted(&[
            (KeySortField::Date(Rotated), true),
            (KeySortField::Imported, false),
        ]),
        &["k2", "k0", "k1", "k3", "k4", "k5", "k6"],
    )
    .await;
    // A missing date sorts before every date, and after them in descending order.
    check(
        sorted(&[(KeySortField::Date(Rotated), false)]),
        &["k0", "k1", "k3", "k4", "k5", "k6", "k2"],
    )
    .await;
    check(
        sorted(&[(KeySortField::Date(Expires), true)]),
        &["k2", "k0", "k1", "k3", "k4", "k5", "k6"],
    )
    .await;

    // Search modes.
    let search = |text: &str, exact, negate, scope| KeyFilter {
        search: Some(text.to_owned()),
        search_mode: SearchMode {
            exact,
            negate,
            scope,
        },
        ..Default::default()
    };
    use SearchScope::*;
    check(search("logs", true, false, NameOrAlias), &["k4"]).await;
    check(search("LOGS", true, false, NameOrAlias), &[]).await;
    check(search("bk", true, false, NameOrAlias), &["k3"]).await;
    check(search("b", true, false, NameOrAlias), &[]).await;
    check(search("payroll", false, false, Name), &["k1", "k2"]).await;
    check(search("payroll", false, false, Alias), &["k3"]).await;
    check(
        search("payroll", false, true, NameOrAlias),
        &["k4", "k5", "k0", "k6"],
    )
    .await;
    check(
        search("logs", true, true, Name),
        &["k1", "k2", "k3", "k5", "k0", "k6"],
    )
    .await;
    check(
        KeyFilter {
            id: Some("k3".to_owned()),
            ..Default::default()
        },
        &["k3"],
    )
    .await;
}

/// Text rules every backend shares: ids sort as bytes, a search folds ASCII letters only, and a
/// text holding NUL matches nothing (and is not an error).
pub async fn list_keys_text_rules(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    for (id, name, aliases) in [
        ("ka", "\u{e4}rzte root", &[][..]),
        ("Kb", "\u{c4}RZTE Root", &["\u{dc}ber-alias"][..]),
        ("k_", "plain", &["\u{dc}BER-ALIAS"][..]),
    ] {
        let mut k = key("inst-a", id, aliases, 10);
        k.name = name.to_owned();
        insert(s, &k).await;
    }
    let check = |filter: KeyFilter, want: &'static [&'static str]| {
        let store = store.clone();
        async move {
            let listed = store.list_keys("inst-a", &filter).await.expect("list");
            assert_eq!(ids(&listed), want, "{filter:?}");
            let n = store.count_keys("inst-a", &filter).await.expect("count");
            assert_eq!(n, want.len() as u64, "{filter:?}");
        }
    };
    // Same creation time: ties go by id, compared as bytes ("K" < "_" < "a").
    check(KeyFilter::default(), &["Kb", "k_", "ka"]).await;
    check(
        KeyFilter {
            sort: vec![KeySort {
                field: KeySortField::Id,
                descending: true,
            }],
            ..Default::default()
        },
        &["ka", "k_", "Kb"],
    )
    .await;

    let search = |text: &str, exact, negate, scope| KeyFilter {
        search: Some(text.to_owned()),
        search_mode: SearchMode {
            exact,
            negate,
            scope,
        },
        ..Default::default()
    };
    use SearchScope::*;
    check(search("ROOT", false, false, Name), &["Kb", "ka"]).await;
    check(search("\u{e4}rzte", false, false, Name), &["ka"]).await;
    check(search("\u{c4}rzte", false, false, Name), &["Kb"]).await;
    check(
        search("\u{dc}ber-ALIAS", false, false, Alias),
        &["Kb", "k_"],
    )
    .await;
    check(search("\u{fc}ber", false, false, NameOrAlias), &[]).await;

    check(search("ro\0ot", false, false, NameOrAlias), &[]).await;
    check(search("ro\0ot", true, false, Name), &[]).await;
    check(search("\0", false, true, NameOrAlias), &["Kb", "k_", "ka"]).await;
    check(
        KeyFilter {
            id: Some("ka\0".to_owned()),
            ..Default::default()
        },
        &[],
    )
    .await;
    check(
        KeyFilter {
            key_ring_id: Some("default\0".to_owned()),
            ..Default::default()
        },
        &[],
    )
    .await;
    assert!(s.key("inst-a", "ka\0").await.expect("get").is_none());
    assert!(
        s.key_by_alias("inst-a", "\u{dc}ber-alias\0")
            .await
            .expect("by alias")
            .is_none()
    );
}

pub async fn list_keys_paging(store: Arc<dyn Store>) {
    let s = &*store;
    filter_fixture(s).await;
    let page = |offset: u64, limit: Option<u64>, states: Vec<i64>| {
        let store = store.clone();
        async move {
            let f = KeyFilter {
                states,
                offset,
                limit,
                ..Default::default()
            };
            let keys = store.list_keys("inst-a", &f).await.expect("list");
            // The count ignores offset and limit.
            let all = store.count_keys("inst-a", &f).await.expect("count");
            (
                ids(&keys)
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
                all,
            )
        }
    };
    assert_eq!(
        page(0, Some(2), vec![]).await,
        (vec!["k1".into(), "k2".into()], 7)
    );
    assert_eq!(
        page(2, Some(2), vec![]).await,
        (vec!["k3".into(), "k4".into()], 7)
    );
    assert_eq!(page(6, Some(2), vec![]).await, (vec!["k6".into()], 7));
    assert_eq!(page(7, Some(2), vec![]).await, (vec![], 7));
    assert_eq!(
        page(5, None, vec![]).await,
        (vec!["k0".into(), "k6".into()], 7)
    );
    assert_eq!(page(0, Some(0), vec![]).await, (vec![], 7));
    assert_eq!(
        page(1, Some(2), vec![1]).await,
        (vec!["k2".into(), "k0".into()], 4)
    );
    // Out-of-range numbers are not errors.
    assert_eq!(page(u64::MAX, Some(u64::MAX), vec![]).await, (vec![], 7));
    assert_eq!(page(0, Some(u64::MAX), vec![]).await.0.len(), 7);
}

pub async fn key_versions(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    let k = key("inst-a", "k1", &["a"], 100);
    let v1 = version(&k, 1);
    s.insert_key(&k, &v1).await.expect("insert");

    let mut rotated = k.clone();
    rotated.current_version_id = "k1-v2".to_owned();
    rotated.last_rotated_at = Some(200);
    rotated.updated_at = 200;
    let v2 = version(&k, 2);
    assert_eq!(s.add_key_version(&rotated, &v2).await.expect("rotate"), 2);
    rotated.row_version = 2;
    rotated.current_version_id = "k1-v3".to_owned();
    let mut v3 = version(&k, 3);
    v3.mk_version = 2;
    v3.sealed = vec![7; 64];
    assert_eq!(s.add_key_version(&rotated, &v3).await.expect("rotate"), 3);
    let stored = s.key("inst-a", "k1").await.expect("get").expect("present");
    assert_eq!(
        stored,
        KeyRecord {
            row_version: 3,
            ..rotated.clone()
        }
    );
    assert_eq!(
        s.key_versions("inst-a", "k1").await.expect("versions"),
        vec![v1.clone(), v2.clone(), v3.clone()]
    );
    assert_eq!(
        s.key_version("inst-a", "k1", "k1-v2")
            .await
            .expect("version"),
        Some(v2)
    );

    // Stale key version: Conflict, and the version is not added.
    let stale = KeyRecord {
        row_version: 2,
        ..stored.clone()
    };
    let v4 = version(&k, 4);
    assert_conflict(fails(s.add_key_version(&stale, &v4).await), "key", "k1", 2);
    assert_eq!(
        s.key_version("inst-a", "k1", "k1-v4")
            .await
            .expect("version"),
        None
    );

    // A version that collides (same seq): refused, and the key row is not updated either.
    let mut changed = stored.clone();
    changed.current_version_id = "k1-v3b".to_owned();
    let mut dup = version(&k, 3);
    dup.id = "k1-v3b".to_owned();
    assert!(matches!(
        fails(s.add_key_version(&changed, &dup).await),
        StoreError::AlreadyExists {
            what: "key version",
            ..
        }
    ));
    assert_eq!(
        s.key("inst-a", "k1").await.expect("get"),
        Some(stored.clone())
    );
    assert_eq!(
        s.key_versions("inst-a", "k1")
            .await
            .expect("versions")
            .len(),
        3
    );

    // A missing key.
    let ghost = key("inst-a", "ghost", &[], 1);
    assert_not_found(
        fails(s.add_key_version(&ghost, &version(&ghost, 2)).await),
        "key",
        "ghost",
    );
}

pub async fn purge_key(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    let k = key("inst-a", "k1", &["a", "b"], 100);
    insert(s, &k).await;
    s.add_key_version(&k, &version(&k, 2))
        .await
        .expect("rotate");
    let keep = key("inst-a", "k2", &["c"], 100);
    insert(s, &keep).await;

    s.purge_key("inst-a", "k1").await.expect("purge");
    assert_eq!(s.key("inst-a", "k1").await.expect("get"), None);
    assert_eq!(s.key_by_alias("inst-a", "a").await.expect("by alias"), None);
    assert!(
        s.key_versions("inst-a", "k1")
            .await
            .expect("versions")
            .is_empty()
    );
    assert_eq!(
        s.key_version("inst-a", "k1", "k1-v1")
            .await
            .expect("version"),
        None
    );
    assert_not_found(fails(s.purge_key("inst-a", "k1").await), "key", "k1");
    // The other key is untouched; the id and aliases can be used again.
    assert_eq!(s.key("inst-a", "k2").await.expect("get"), Some(keep));
    insert(s, &key("inst-a", "k1", &["a", "b"], 300)).await;
    assert_eq!(
        s.count_keys("inst-a", &KeyFilter::default())
            .await
            .expect("count"),
        2
    );
}

// ---- principals and API keys ----------------------------------------------------------------

pub async fn principals(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    let admin = principal("p-admin", None, "admin", 30);
    let alice_a = principal("p-alice-a", Some("inst-a"), "alice", 10);
    let mut alice_b = principal("p-alice-b", Some("inst-b"), "alice", 20);
    alice_b.kind = "service".to_owned();
    alice_b.disabled = true;
    for p in [&admin, &alice_a, &alice_b] {
        s.insert_principal(p).await.expect("insert");
    }
    // A deployment-wide principal may share a name with an instance's.
    s.insert_principal(&principal("p-alice", None, "alice", 40))
        .await
        .expect("insert");

    assert_eq!(
        s.principal("p-alice-b").await.expect("get"),
        Some(alice_b.clone())
    );
    assert_eq!(s.principal("nope").await.expect("get"), None);
    assert_eq!(
        s.principal_by_name(Some("inst-a"), "alice")
            .await
            .expect("get"),
        Some(alice_a.clone())
    );
    assert_eq!(
        s.principal_by_name(Some("inst-b"), "alice")
            .await
            .expect("get"),
        Some(alice_b.clone())
    );
    assert_eq!(
        s.principal_by_name(None, "alice")
            .await
            .expect("get")
            .map(|p| p.id),
        Some("p-alice".to_owned())
    );
    assert_eq!(
        s.principal_by_name(None, "admin").await.expect("get"),
        Some(admin.clone())
    );
    assert_eq!(
        s.principal_by_name(Some("inst-a"), "admin")
            .await
            .expect("get"),
        None
    );
    let order: Vec<String> = s
        .list_principals()
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(order, ["p-alice-a", "p-alice-b", "p-admin", "p-alice"]);

    // Duplicates: id; name within an instance; name among deployment-wide principals.
    assert_already_exists(
        fails(
            s.insert_principal(&principal("p-admin", None, "other", 1))
                .await,
        ),
        "principal",
        "p-admin",
    );
    assert_already_exists(
        fails(
            s.insert_principal(&principal("p-x", Some("inst-a"), "alice", 1))
                .await,
        ),
        "principal name",
        "alice",
    );
    assert_already_exists(
        fails(
            s.insert_principal(&principal("p-y", None, "admin", 1))
                .await,
        ),
        "principal name",
        "admin",
    );
    assert_not_found(
        fails(
            s.insert_principal(&principal("p-z", Some("inst-x"), "zed", 1))
                .await,
        ),
        "instance",
        "inst-x",
    );

    // Update, conflict, not found.
    let mut changed = alice_a.clone();
    changed.roles = r#"[{"role":"Reader"}]"#.to_owned();
    changed.disabled = true;
    changed.name = "alice2".to_owned();
    changed.updated_at = 99;
    assert_eq!(s.update_principal(&changed).await.expect("update"), 2);
    let stored = s
        .principal("p-alice-a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        stored,
        PrincipalRecord {
            row_version: 2,
            ..changed.clone()
        }
    );
    assert_conflict(
        fails(s.update_principal(&alice_a).await),
        "principal",
        "p-alice-a",
        1,
    );
    assert_eq!(
        s.principal("p-alice-a").await.expect("get"),
        Some(stored.clone())
    );
    assert_not_found(
        fails(s.update_principal(&principal("ghost", None, "g", 1)).await),
        "principal",
        "ghost",
    );
    // Identity is not replaced: instance and kind stay.
    let mut moved = stored.clone();
    moved.instance_id = Some("inst-b".to_owned());
    moved.kind = "service".to_owned();
    assert_eq!(s.update_principal(&moved).await.expect("update"), 3);
    let after = s
        .principal("p-alice-a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        after,
        PrincipalRecord {
            row_version: 3,
            ..stored
        }
    );
}

pub async fn api_keys(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    s.insert_principal(&principal("p1", Some("inst-a"), "svc", 1))
        .await
        .expect("insert");
    s.insert_principal(&principal("p2", None, "admin", 1))
        .await
        .expect("insert");
    let hash1 = [0x11_u8; 32];
    let hash2 = [0x22_u8; 32];
    let k1 = api_key("ak1", "p1", &hash1, 20);
    let mut k2 = api_key("ak2", "p1", &hash2, 10);
    k2.expires_at = None;
    s.insert_api_key(&k1).await.expect("insert");
    s.insert_api_key(&k2).await.expect("insert");
    s.insert_api_key(&api_key("ak3", "p2", &[0x33; 32], 5))
        .await
        .expect("insert");

    assert_eq!(
        s.api_key_by_hash(&hash1).await.expect("by hash"),
        Some(k1.clone())
    );
    assert_eq!(s.api_key_by_hash(&[0x44; 32]).await.expect("by hash"), None);
    assert_eq!(
        s.api_key_by_hash(&hash1[..31]).await.expect("by hash"),
        None
    );
    assert_eq!(s.api_key("ak2").await.expect("by id"), Some(k2.clone()));
    assert_eq!(s.api_key("nope").await.expect("by id"), None);
    assert_eq!(
        s.list_api_keys("p1").await.expect("list"),
        vec![k2.clone(), k1.clone()]
    );
    assert!(s.list_api_keys("nobody").await.expect("list").is_empty());

    assert_already_exists(
        fails(
            s.insert_api_key(&api_key("ak1", "p1", &[0x55; 32], 1))
                .await,
        ),
        "api key",
        "ak1",
    );
    assert!(matches!(
        fails(s.insert_api_key(&api_key("ak9", "p2", &hash1, 1)).await),
        StoreError::AlreadyExists { .. }
    ));
    assert_eq!(s.api_key("ak9").await.expect("by id"), None);
    assert_not_found(
        fails(
            s.insert_api_key(&api_key("ak8", "ghost", &[0x66; 32], 1))
                .await,
        ),
        "principal",
        "ghost",
    );

    // Revoke through update.
    let mut revoked = k1.clone();
    revoked.revoked_at = Some(500);
    revoked.name = "retired".to_owned();
    assert_eq!(s.update_api_key(&revoked).await.expect("revoke"), 2);
    let stored = s
        .api_key_by_hash(&hash1)
        .await
        .expect("by hash")
        .expect("present");
    assert_eq!(
        stored,
        ApiKeyRecord {
            row_version: 2,
            ..revoked.clone()
        }
    );
    // A stale update does not un-revoke it.
    assert_conflict(fails(s.update_api_key(&k1).await), "api key", "ak1", 1);
    assert_eq!(s.api_key("ak1").await.expect("by id"), Some(stored.clone()));
    assert_not_found(
        fails(s.update_api_key(&api_key("ghost", "p1", &[1], 1)).await),
        "api key",
        "ghost",
    );
    // The hash and owner are not replaced.
    let mut tampered = stored.clone();
    tampered.hash = vec![0x77; 32];
    tampered.principal_id = "p2".to_owned();
    assert_eq!(s.update_api_key(&tampered).await.expect("update"), 3);
    assert_eq!(
        s.api_key_by_hash(&hash1).await.expect("by hash"),
        Some(ApiKeyRecord {
            row_version: 3,
            ..stored
        })
    );
}

// ---- concurrency ----------------------------------------------------------------------------

/// Many tasks write at once: inserts never fail with a "database busy" error, and optimistic
/// read-modify-write loops lose no update.
pub async fn concurrent_writes(store: Arc<dyn Store>) {
    const TASKS: i64 = 50;
    instance_with_ring(&*store, "inst-a", 1).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..TASKS {
        // An insert of a key with aliases and a version...
        let s = store.clone();
        tasks.spawn(async move {
            let k = key("inst-a", &format!("k{n:02}"), &[&format!("alias-{n}")], n);
            s.insert_key(&k, &version(&k, 1)).await?;
            // ... then a rotation and an update of that key.
            let mut rotated = k.clone();
            rotated.current_version_id = format!("k{n:02}-v2");
            rotated.row_version = s.add_key_version(&rotated, &version(&k, 2)).await?;
            rotated.state = 3;
            s.update_key(&rotated).await?;
            Ok::<_, StoreError>(())
        });
        // An increment of one shared counter, retried on Conflict.
        let s = store.clone();
        tasks.spawn(async move {
            loop {
                let mut i = s
                    .instance("inst-a")
                    .await?
                    .ok_or_else(|| StoreError::NotFound {
                        what: "instance",
                        id: "inst-a".to_owned(),
                    })?;
                i.mk_version += 1;
                match s.update_instance(&i).await {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                    Err(e) => return Err(e),
                }
            }
        });
        // And readers in between.
        let s = store.clone();
        tasks.spawn(async move {
            s.list_keys("inst-a", &KeyFilter::default()).await?;
            Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined
            .expect("task panicked")
            .expect("store operation failed");
    }

    let i = store
        .instance("inst-a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(i.mk_version, TASKS);
    assert_eq!(i.row_version, 1 + TASKS);
    let all = store
        .list_keys("inst-a", &KeyFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len() as i64, TASKS);
    for k in &all {
        assert_eq!((k.state, k.row_version), (3, 3), "{}", k.id);
        assert_eq!(
            store
                .key_versions("inst-a", &k.id)
                .await
                .expect("versions")
                .len(),
            2
        );
    }
    let f = KeyFilter {
        states: vec![3],
        ..Default::default()
    };
    assert_eq!(
        store.count_keys("inst-a", &f).await.expect("count"),
        TASKS as u64
    );
}

// ---- master key rotation --------------------------------------------------------------------

/// `(key_id, id, mk_version)` of each version.
fn version_ids(versions: &[KeyVersionRecord]) -> Vec<(String, String, i64)> {
    versions
        .iter()
        .map(|v| (v.key_id.clone(), v.id.clone(), v.mk_version))
        .collect()
}

fn vid(key_id: &str, id: &str, mk_version: i64) -> (String, String, i64) {
    (key_id.to_owned(), id.to_owned(), mk_version)
}

pub async fn reseal_scan(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    // `kz` is created first, but the scan is ordered by key id, then seq.
    let kz = key("inst-a", "kz", &[], 10);
    insert(s, &kz).await; // kz-v1 under mk 1
    let mut rotated = kz.clone();
    rotated.row_version = s
        .add_key_version(&rotated, &version(&kz, 2))
        .await
        .expect("rotate"); // kz-v2 under mk 1
    let mut v3 = version(&kz, 3);
    v3.mk_version = 2;
    s.add_key_version(&rotated, &v3).await.expect("rotate"); // kz-v3 under mk 2
    let ka = key("inst-a", "ka", &[], 20);
    insert(s, &ka).await; // ka-v1 under mk 1
    // Already under the newest master key.
    let kn = key("inst-a", "kn", &[], 30);
    let mut kn1 = version(&kn, 1);
    kn1.mk_version = 3;
    s.insert_key(&kn, &kn1).await.expect("insert");
    // Another instance's versions never show.
    insert(s, &key("inst-b", "kb", &[], 5)).await;

    let below = |mk: i64, limit: u64| {
        let store = store.clone();
        async move {
            version_ids(
                &store
                    .key_versions_below_mk("inst-a", mk, limit)
                    .await
                    .expect("scan"),
            )
        }
    };
    assert_eq!(
        below(3, 100).await,
        vec![
            vid("ka", "ka-v1", 1),
            vid("kz", "kz-v1", 1),
            vid("kz", "kz-v2", 1),
            vid("kz", "kz-v3", 2),
        ]
    );
    assert_eq!(
        below(2, 100).await,
        vec![
            vid("ka", "ka-v1", 1),
            vid("kz", "kz-v1", 1),
            vid("kz", "kz-v2", 1)
        ]
    );
    assert_eq!(below(1, 100).await, vec![]);
    assert_eq!(below(3, 0).await, vec![]);
    assert_eq!(below(3, u64::MAX).await.len(), 4);
    assert_eq!(below(3, 2).await.len(), 2);
    // Full records, as stored.
    assert_eq!(
        s.key_versions_below_mk("inst-a", 3, 1).await.expect("scan"),
        vec![version(&ka, 1)]
    );
    assert_eq!(
        s.count_key_versions_below_mk("inst-a", 3)
            .await
            .expect("count"),
        4
    );
    assert_eq!(
        s.count_key_versions_below_mk("inst-a", 2)
            .await
            .expect("count"),
        3
    );
    assert_eq!(
        s.count_key_versions_below_mk("inst-x", 3)
            .await
            .expect("count"),
        0
    );

    // The re-seal job: batches of 3 until nothing is left below mk 3.
    let mut batches = Vec::new();
    loop {
        let batch = s.key_versions_below_mk("inst-a", 3, 3).await.expect("scan");
        if batch.is_empty() {
            break;
        }
        batches.push(batch.len());
        for v in batch {
            let resealed = KeyVersionRecord {
                sealed: vec![0xEE, v.seq as u8, v.mk_version as u8],
                mk_version: 3,
                ..v.clone()
            };
            s.reseal_key_version(&resealed, v.mk_version)
                .await
                .expect("reseal");
        }
        assert!(batches.len() <= 2, "the scan makes progress: {batches:?}");
    }
    assert_eq!(batches, [3, 1]);
    assert_eq!(
        s.count_key_versions_below_mk("inst-a", 3)
            .await
            .expect("count"),
        0
    );
    // Only `sealed` and `mk_version` changed.
    let kz_versions = s.key_versions("inst-a", "kz").await.expect("versions");
    let want: Vec<KeyVersionRecord> = [(1, 1), (2, 1), (3, 2)]
        .into_iter()
        .map(|(seq, old_mk)| {
            let original = if seq == 3 {
                v3.clone()
            } else {
                version(&kz, seq)
            };
            KeyVersionRecord {
                sealed: vec![0xEE, seq as u8, old_mk],
                mk_version: 3,
                ..original
            }
        })
        .collect();
    assert_eq!(kz_versions, want);
    assert_eq!(
        s.key_version("inst-a", "kn", "kn-v1").await.expect("get"),
        Some(kn1)
    );
    // The other instance was not touched.
    assert_eq!(
        s.count_key_versions_below_mk("inst-b", 3)
            .await
            .expect("count"),
        1
    );
}

pub async fn reseal_is_optimistic(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    let k = key("inst-a", "k1", &[], 10);
    insert(s, &k).await;
    let v1 = version(&k, 1);

    let first = KeyVersionRecord {
        sealed: vec![1; 40],
        mk_version: 2,
        ..v1.clone()
    };
    s.reseal_key_version(&first, 1).await.expect("reseal");
    assert_eq!(
        s.key_version("inst-a", "k1", "k1-v1").await.expect("get"),
        Some(first.clone())
    );

    // A second job that read the version under mk 1 loses, and changes nothing.
    let second = KeyVersionRecord {
        sealed: vec![2; 40],
        mk_version: 2,
        ..v1.clone()
    };
    assert_conflict(
        fails(s.reseal_key_version(&second, 1).await),
        "key version",
        "k1-v1",
        1,
    );
    assert_eq!(
        s.key_version("inst-a", "k1", "k1-v1").await.expect("get"),
        Some(first.clone())
    );
    // The identity fields of the record select the row; they are never rewritten.
    let mut moved = first.clone();
    moved.seq = 9;
    moved.created_at = 1;
    moved.mk_version = 3;
    s.reseal_key_version(&moved, 2).await.expect("reseal");
    assert_eq!(
        s.key_version("inst-a", "k1", "k1-v1").await.expect("get"),
        Some(KeyVersionRecord {
            mk_version: 3,
            ..first.clone()
        })
    );

    // Unknown versions, keys and instances: NotFound.
    let mut ghost = v1.clone();
    ghost.id = "k1-v7".to_owned();
    assert_not_found(
        fails(s.reseal_key_version(&ghost, 1).await),
        "key version",
        "k1-v7",
    );
    let mut elsewhere = v1.clone();
    elsewhere.instance_id = "inst-b".to_owned();
    assert_not_found(
        fails(s.reseal_key_version(&elsewhere, 1).await),
        "key version",
        "k1-v1",
    );

    // The key is purged while the job runs: NotFound, not Conflict.
    s.purge_key("inst-a", "k1").await.expect("purge");
    assert_not_found(
        fails(s.reseal_key_version(&moved, 3).await),
        "key version",
        "k1-v1",
    );
    assert!(
        s.key_versions("inst-a", "k1")
            .await
            .expect("versions")
            .is_empty()
    );
}

// ---- instance secrets -----------------------------------------------------------------------

pub async fn instance_secrets(store: Arc<dyn Store>) {
    let s = &*store;
    let a = instance("inst-a", "alpha", 1);
    s.insert_instance(&a).await.expect("insert");
    s.insert_instance(&instance("inst-b", "beta", 2))
        .await
        .expect("insert");
    assert_eq!(
        s.instance_secret("inst-a", "archived-mk/1")
            .await
            .expect("get"),
        None
    );

    // Inserted with an instance update.
    let mut next = a.clone();
    next.mk_version = 2;
    next.updated_at = 50;
    let archived = secret("inst-a", "archived-mk/1", 2);
    assert_eq!(
        s.update_instance_with(&next, Some(&archived), None)
            .await
            .expect("update"),
        2
    );
    assert_eq!(
        s.instance_secret("inst-a", "archived-mk/1")
            .await
            .expect("get"),
        Some(archived.clone())
    );
    next.row_version = 2;
    assert_eq!(s.instance("inst-a").await.expect("get"), Some(next.clone()));
    // Names are per instance, and exact.
    assert_eq!(
        s.instance_secret("inst-b", "archived-mk/1")
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        s.instance_secret("inst-a", "ARCHIVED-MK/1")
            .await
            .expect("get"),
        None
    );

    // Replaced (every field) by a secret of the same name; others are separate rows.
    let replacement = InstanceSecretRecord {
        sealed: vec![0xAB; 60],
        ..secret("inst-a", "archived-mk/1", 3)
    };
    assert_eq!(
        s.update_instance_with(&next, Some(&replacement), None)
            .await
            .expect("update"),
        3
    );
    next.row_version = 3;
    let other = secret("inst-a", "other", 3);
    assert_eq!(
        s.update_instance_with(&next, Some(&other), None)
            .await
            .expect("update"),
        4
    );
    next.row_version = 4;
    let b_secret = secret("inst-b", "archived-mk/1", 1);
    let b = s.instance("inst-b").await.expect("get").expect("present");
    s.update_instance_with(&b, Some(&b_secret), None)
        .await
        .expect("update");
    assert_eq!(
        s.instance_secret("inst-a", "archived-mk/1")
            .await
            .expect("get"),
        Some(replacement)
    );
    assert_eq!(
        s.instance_secret("inst-a", "other").await.expect("get"),
        Some(other.clone())
    );

    // Without a secret or an event, it is a plain instance update.
    next.state = "initialized".to_owned();
    assert_eq!(
        s.update_instance_with(&next, None, None)
            .await
            .expect("update"),
        5
    );
    assert_eq!(
        s.instance("inst-a").await.expect("get"),
        Some(InstanceRecord {
            row_version: 5,
            ..next.clone()
        })
    );
    assert!(
        s.audit_events("inst-a", 0, 100)
            .await
            .expect("audit")
            .is_empty()
    );

    // Delete: only that secret; deleting what is not there is fine.
    s.delete_instance_secret("inst-a", "archived-mk/1")
        .await
        .expect("delete");
    assert_eq!(
        s.instance_secret("inst-a", "archived-mk/1")
            .await
            .expect("get"),
        None
    );
    s.delete_instance_secret("inst-a", "archived-mk/1")
        .await
        .expect("delete again");
    s.delete_instance_secret("inst-x", "nope")
        .await
        .expect("delete unknown");
    assert_eq!(
        s.instance_secret("inst-a", "other").await.expect("get"),
        Some(other)
    );
    assert_eq!(
        s.instance_secret("inst-b", "archived-mk/1")
            .await
            .expect("get"),
        Some(b_secret)
    );
}

pub async fn update_instance_with_is_atomic(store: Arc<dyn Store>) {
    let s = &*store;
    let original = instance("inst-a", "alpha", 1);
    s.insert_instance(&original).await.expect("insert");
    let mut current = original.clone();
    current.state = "initialized".to_owned();
    current.row_version = s.update_instance(&current).await.expect("update");
    let stored = s.instance("inst-a").await.expect("get");
    let archived = secret("inst-a", "archived-mk/1", 1);
    let event = audit("inst-a", 100, r#"{"op":"rotate_mk"}"#);

    // A stale row version: Conflict, and neither the secret nor the event is written.
    let mut stale = original.clone();
    stale.mk_version = 2;
    assert_conflict(
        fails(
            s.update_instance_with(&stale, Some(&archived), Some(&event))
                .await,
        ),
        "instance",
        "inst-a",
        1,
    );
    assert_eq!(s.instance("inst-a").await.expect("get"), stored);
    assert_eq!(
        s.instance_secret("inst-a", "archived-mk/1")
            .await
            .expect("get"),
        None
    );
    assert!(
        s.audit_events("inst-a", 0, 100)
            .await
            .expect("audit")
            .is_empty()
    );

    // A missing instance: NotFound, nothing written.
    let ghost = instance("ghost", "ghost", 1);
    assert_not_found(
        fails(
            s.update_instance_with(&ghost, None, Some(&audit("ghost", 1, "{}")))
                .await,
        ),
        "instance",
        "ghost",
    );
    assert!(
        s.audit_events("ghost", 0, 100)
            .await
            .expect("audit")
            .is_empty()
    );

    // The secret fails after the instance row was updated: the update is rolled back too.
    let mut next = current.clone();
    next.mk_version = 2;
    let orphan = secret("inst-x", "archived-mk/1", 1);
    assert_not_found(
        fails(
            s.update_instance_with(&next, Some(&orphan), Some(&event))
                .await,
        ),
        "instance",
        "inst-x",
    );
    assert_eq!(s.instance("inst-a").await.expect("get"), stored);
    assert!(
        s.audit_events("inst-a", 0, 100)
            .await
            .expect("audit")
            .is_empty()
    );

    // All three parts at once.
    assert_eq!(
        s.update_instance_with(&next, Some(&archived), Some(&event))
            .await
            .expect("update"),
        current.row_version + 1
    );
    assert_eq!(
        s.instance("inst-a").await.expect("get"),
        Some(InstanceRecord {
            row_version: current.row_version + 1,
            ..next.clone()
        })
    );
    assert_eq!(
        s.instance_secret("inst-a", "archived-mk/1")
            .await
            .expect("get"),
        Some(archived)
    );
    let events = s.audit_events("inst-a", 0, 100).await.expect("audit");
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].at, events[0].body.as_str()),
        (100, event.body.as_str())
    );
    assert_chain("inst-a", &events);
}

// ---- signed command nonces ------------------------------------------------------------------

pub async fn command_nonces(store: Arc<dyn Store>) {
    let s = &*store;
    for id in ["inst-a", "inst-b"] {
        s.insert_instance(&instance(id, id, 1))
            .await
            .expect("insert");
    }
    let replay = |e: StoreError, nonce: &str| assert_already_exists(e, "command nonce", nonce);

    s.use_command_nonce("inst-a", "n1", 1_000, 100)
        .await
        .expect("first use");
    // A replay, whatever expiry and clock it claims.
    replay(
        fails(s.use_command_nonce("inst-a", "n1", 1_000, 100).await),
        "n1",
    );
    replay(
        fails(s.use_command_nonce("inst-a", "n1", 9_999, 200).await),
        "n1",
    );
    // Nonces are per instance.
    s.use_command_nonce("inst-b", "n1", 1_000, 100)
        .await
        .expect("other instance");
    s.use_command_nonce("inst-a", "n2", 500, 100)
        .await
        .expect("use");
    s.use_command_nonce("inst-a", "n3", 900, 100)
        .await
        .expect("use");

    // Until a use whose clock has passed them, expired nonces are still remembered.
    replay(
        fails(s.use_command_nonce("inst-a", "n3", 5_000, 950).await),
        "n3",
    );
    // A use at time 600 forgets n2 (expired at 500) but not n1 (1000) nor n3 (900).
    s.use_command_nonce("inst-a", "n4", 800, 600)
        .await
        .expect("use");
    s.use_command_nonce("inst-a", "n2", 6_000, 700)
        .await
        .expect("n2 was forgotten");
    replay(
        fails(s.use_command_nonce("inst-a", "n1", 6_000, 700).await),
        "n1",
    );
    replay(
        fails(s.use_command_nonce("inst-a", "n3", 6_000, 700).await),
        "n3",
    );

    // "Past" is strict: a nonce expiring at `now` is kept.
    s.use_command_nonce("inst-a", "n5", 8_000, 800)
        .await
        .expect("use");
    replay(
        fails(s.use_command_nonce("inst-a", "n4", 9_000, 800).await),
        "n4",
    );
    // The purge spans instances: at 1001, n1 of both instances, n3 and n4 go.
    s.use_command_nonce("inst-b", "n6", 9_000, 1_001)
        .await
        .expect("use");
    for (instance_id, nonce) in [
        ("inst-a", "n1"),
        ("inst-a", "n3"),
        ("inst-a", "n4"),
        ("inst-b", "n1"),
    ] {
        s.use_command_nonce(instance_id, nonce, 9_000, 1_001)
            .await
            .expect("forgotten");
    }
    // Unexpired ones stay.
    replay(
        fails(s.use_command_nonce("inst-a", "n2", 9_000, 1_001).await),
        "n2",
    );
    replay(
        fails(s.use_command_nonce("inst-a", "n5", 9_000, 1_001).await),
        "n5",
    );
    replay(
        fails(s.use_command_nonce("inst-b", "n6", 9_000, 1_001).await),
        "n6",
    );
}

// ---- zeroization ----------------------------------------------------------------------------

/// Two instances with rings, keys (aliases, two versions), secrets, principals and one audit
/// event each. Returns the instance records as stored.
async fn zeroize_fixture(s: &dyn Store) -> (InstanceRecord, InstanceRecord) {
    for (id, created_at) in [("inst-a", 1), ("inst-b", 2)] {
        instance_with_ring(s, id, created_at).await;
        s.insert_key_ring(&ring(id, "r2")).await.expect("ring");
        let k1 = key(id, "k1", &["one", "uno"], 10);
        insert(s, &k1).await;
        s.add_key_version(&k1, &version(&k1, 2))
            .await
            .expect("rotate");
        let mut k2 = key(id, "k2", &["two"], 20);
        k2.key_ring_id = "r2".to_owned();
        insert(s, &k2).await;
        s.insert_principal(&principal(&format!("p-{id}"), Some(id), "alice", 1))
            .await
            .expect("principal");
        let i = s.instance(id).await.expect("get").expect("present");
        s.update_instance_with(
            &i,
            Some(&secret(id, "archived-mk/1", 1)),
            Some(&audit(id, 5, r#"{"op":"init"}"#)),
        )
        .await
        .expect("update");
        s.update_instance_with(
            &InstanceRecord {
                row_version: i.row_version + 1,
                ..i.clone()
            },
            Some(&secret(id, "other", 1)),
            None,
        )
        .await
        .expect("update");
    }
    let a = s.instance("inst-a").await.expect("get").expect("present");
    let b = s.instance("inst-b").await.expect("get").expect("present");
    (a, b)
}

/// Everything of instance `id` the zeroize tests look at.
async fn snapshot(
    s: &dyn Store,
    id: &str,
) -> (
    Vec<KeyRecord>,
    Vec<Vec<KeyVersionRecord>>,
    Vec<KeyRingRecord>,
    Vec<Option<InstanceSecretRecord>>,
    Vec<AuditEventRecord>,
) {
    let keys = s.list_keys(id, &KeyFilter::default()).await.expect("list");
    let mut versions = Vec::new();
    for k in ["k1", "k2"] {
        versions.push(s.key_versions(id, k).await.expect("versions"));
    }
    let rings = s.list_key_rings(id).await.expect("rings");
    let mut secrets = Vec::new();
    for name in ["archived-mk/1", "other"] {
        secrets.push(s.instance_secret(id, name).await.expect("secret"));
    }
    let events = s.audit_events(id, 0, 100).await.expect("audit");
    (keys, versions, rings, secrets, events)
}

pub async fn zeroize_instance(store: Arc<dyn Store>) {
    let s = &*store;
    let (a, b) = zeroize_fixture(s).await;
    let b_before = snapshot(s, "inst-b").await;
    assert_eq!(b_before.0.len(), 2);

    let mut zeroized = a.clone();
    zeroized.state = "zeroized".to_owned();
    zeroized.mk_check_value = Vec::new();
    zeroized.updated_at = 9_000;
    let event = audit("inst-a", 9_000, r#"{"op":"zeroize"}"#);
    assert_eq!(
        s.zeroize_instance(&zeroized, &event)
            .await
            .expect("zeroize"),
        a.row_version + 1
    );

    assert_eq!(
        s.instance("inst-a").await.expect("get"),
        Some(InstanceRecord {
            row_version: a.row_version + 1,
            ..zeroized
        })
    );
    let (keys, versions, rings, secrets, events) = snapshot(s, "inst-a").await;
    assert!(keys.is_empty(), "{keys:?}");
    assert!(versions.iter().all(Vec::is_empty), "{versions:?}");
    assert_eq!(rings, vec![ring("inst-a", "default")]);
    assert_eq!(secrets, vec![None, None]);
    for alias in ["one", "uno", "two"] {
        assert_eq!(s.key_by_alias("inst-a", alias).await.expect("alias"), None);
    }
    assert_eq!(
        s.count_keys("inst-a", &KeyFilter::default())
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        s.count_key_versions_below_mk("inst-a", i64::MAX)
            .await
            .expect("count"),
        0
    );
    // The audit trail remains and records the zeroization.
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].body, event.body);
    assert_chain("inst-a", &events);
    // Principals remain.
    assert!(s.principal("p-inst-a").await.expect("get").is_some());

    // The other instance is untouched.
    assert_eq!(snapshot(s, "inst-b").await, b_before);
    assert_eq!(s.instance("inst-b").await.expect("get"), Some(b));
    assert!(
        s.key_by_alias("inst-b", "uno")
            .await
            .expect("alias")
            .is_some()
    );

    // Ids and aliases are free again; the default ring still takes keys.
    insert(s, &key("inst-a", "k1", &["one"], 10_000)).await;
}

pub async fn zeroize_is_optimistic(store: Arc<dyn Store>) {
    let s = &*store;
    let (a, _) = zeroize_fixture(s).await;
    let before = snapshot(s, "inst-a").await;

    let mut stale = a.clone();
    stale.row_version -= 1;
    stale.state = "zeroized".to_owned();
    assert_conflict(
        fails(
            s.zeroize_instance(&stale, &audit("inst-a", 9_000, "{}"))
                .await,
        ),
        "instance",
        "inst-a",
        a.row_version - 1,
    );
    // Nothing deleted, no event appended, the instance unchanged.
    assert_eq!(snapshot(s, "inst-a").await, before);
    assert_eq!(s.instance("inst-a").await.expect("get"), Some(a.clone()));
    assert!(
        s.key_by_alias("inst-a", "two")
            .await
            .expect("alias")
            .is_some()
    );

    let ghost = instance("ghost", "ghost", 1);
    assert_not_found(
        fails(s.zeroize_instance(&ghost, &audit("ghost", 1, "{}")).await),
        "instance",
        "ghost",
    );
    assert!(
        s.audit_events("ghost", 0, 100)
            .await
            .expect("audit")
            .is_empty()
    );
}

// ---- audit ----------------------------------------------------------------------------------

pub async fn audit_chain(store: Arc<dyn Store>) {
    let s = &*store;
    assert!(
        s.audit_events("inst-a", 0, 100)
            .await
            .expect("audit")
            .is_empty()
    );
    let inputs = [
        audit(
            "inst-a",
            1_700_000_000_000,
            r#"{"op":"create_key","key":"k1"}"#,
        ),
        audit("inst-a", -1, r#"{"who":"zoë","op":"ünicode"}"#),
        audit("inst-a", 1_700_000_000_000, ""),
    ];
    let mut appended = Vec::new();
    for input in &inputs {
        appended.push(s.append_audit_event(input).await.expect("append"));
    }
    for (record, input) in appended.iter().zip(&inputs) {
        assert_eq!(
            (&record.instance_id, record.at, &record.body),
            (&input.instance_id, input.at, &input.body)
        );
    }
    assert_eq!(
        appended.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(appended[0].prev_hash, vec![0_u8; 32]);
    assert_eq!(appended[1].prev_hash, appended[0].hash);
    assert_eq!(appended[2].prev_hash, appended[1].hash);
    assert_eq!(
        appended[0].hash,
        chain_hash(&[0; 32], 1, inputs[0].at, &inputs[0].body)
    );
    assert_chain("inst-a", &appended);
    // Read back exactly as returned.
    assert_eq!(
        s.audit_events("inst-a", 0, 100).await.expect("audit"),
        appended
    );
    // Recorded without a copy back: the same chain goes on.
    let recorded = audit("inst-a", 1_700_000_000_001, r#"{"op":"wrap"}"#);
    s.record_audit_event(&recorded).await.expect("record");
    let all = s.audit_events("inst-a", 0, 100).await.expect("audit");
    assert_eq!(all.len(), 4);
    assert_eq!(
        (all[3].seq, &all[3].body, &all[3].prev_hash),
        (4, &recorded.body, &appended[2].hash)
    );
    assert_chain("inst-a", &all);
}

/// Concurrent appends never fork the chain nor leave a gap.
pub async fn concurrent_audit_appends(store: Arc<dyn Store>) {
    const TASKS: i64 = 50;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..TASKS {
        let s = store.clone();
        tasks.spawn(async move {
            let e = s
                .append_audit_event(&audit("inst-a", n, &format!(r#"{{"n":{n}}}"#)))
                .await?;
            Ok::<_, StoreError>(Some(e.seq))
        });
        // Readers in between always see a whole chain.
        let s = store.clone();
        tasks.spawn(async move {
            let events = s.audit_events("inst-a", 0, 1_000).await?;
            assert_chain("inst-a", &events);
            Ok(None)
        });
    }
    let mut seqs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let seq = joined
            .expect("task panicked")
            .expect("store operation failed");
        seqs.extend(seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=TASKS).collect::<Vec<_>>());
    let events = store.audit_events("inst-a", 0, 1_000).await.expect("audit");
    assert_eq!(events.len() as i64, TASKS);
    assert_chain("inst-a", &events);
    let mut bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len() as i64, TASKS, "each event stored once");
}

pub async fn audit_paging(store: Arc<dyn Store>) {
    let s = &*store;
    for n in 1..=7 {
        s.append_audit_event(&audit("inst-a", n * 10, &format!("event {n}")))
            .await
            .expect("append");
    }
    let all = s.audit_events("inst-a", 0, 100).await.expect("audit");
    assert_eq!(all.len(), 7);
    let seqs = |after: i64, limit: u64| {
        let store = store.clone();
        async move {
            store
                .audit_events("inst-a", after, limit)
                .await
                .expect("audit")
                .into_iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(seqs(0, 3).await, [1, 2, 3]);
    assert_eq!(seqs(3, 3).await, [4, 5, 6]);
    assert_eq!(seqs(6, 3).await, [7]);
    assert_eq!(seqs(7, 3).await, Vec::<i64>::new());
    assert_eq!(seqs(2, 1).await, [3]);
    assert_eq!(seqs(0, 0).await, Vec::<i64>::new());
    // Out-of-range numbers are not errors.
    assert_eq!(seqs(-5, u64::MAX).await, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(seqs(i64::MAX, u64::MAX).await, Vec::<i64>::new());
    assert!(
        s.audit_events("inst-x", 0, 100)
            .await
            .expect("audit")
            .is_empty()
    );

    // Following the pages reassembles the chain.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = s.audit_events("inst-a", after, 2).await.expect("audit");
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_chain("inst-a", &paged);
}

pub async fn audit_chains_are_per_instance(store: Arc<dyn Store>) {
    let s = &*store;
    for round in 0..3 {
        for id in ["inst-a", "inst-b"] {
            s.append_audit_event(&audit(id, 100 + round, &format!("round {round}")))
                .await
                .expect("append");
        }
    }
    s.append_audit_event(&audit("inst-b", 500, "b only"))
        .await
        .expect("append");
    let a = s.audit_events("inst-a", 0, 100).await.expect("audit");
    let b = s.audit_events("inst-b", 0, 100).await.expect("audit");
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 4);
    // Each its own chain from seq 1 and the zero hash.
    assert_chain("inst-a", &a);
    assert_chain("inst-b", &b);
    // The instance is not hashed: identical events give identical chains.
    assert_eq!(
        a.iter().map(|e| &e.hash).collect::<Vec<_>>(),
        b[..3].iter().map(|e| &e.hash).collect::<Vec<_>>()
    );
    assert_eq!(b[3].prev_hash, b[2].hash);
}

// ---- batches --------------------------------------------------------------------------------

/// A failing write anywhere in a batch (here the last) leaves nothing of the batch behind, and
/// its error is the batch's.
pub async fn apply_is_atomic(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    let k0 = key("inst-a", "k0", &["zero"], 5);
    insert(s, &k0).await;
    let i = s.instance("inst-a").await.expect("get").expect("present");
    let k1 = key("inst-a", "k1", &["one"], 10);
    let mut stale = i.clone();
    stale.row_version = 7;
    stale.state = "zeroized".to_owned();
    let writes = vec![
        Write::InsertKeyRing(ring("inst-a", "r2")),
        Write::InsertKey {
            key: k1.clone(),
            first_version: version(&k1, 1),
        },
        Write::PutRegistration(registration(&k0, "crn:v1:a", 20)),
        Write::PutInstanceSecret(secret("inst-a", "archived-mk/1", 1)),
        Write::AppendAudit(audit("inst-a", 30, &event_body("k1", "create", "success"))),
        Write::PurgeKey {
            instance_id: "inst-a".to_owned(),
            key_id: "k0".to_owned(),
        },
        Write::UpdateInstance(stale),
    ];
    assert_conflict(
        fails(s.apply(&batch(writes.clone())).await),
        "instance",
        "inst-a",
        7,
    );
    async fn unchanged(s: &dyn Store) {
        assert_eq!(s.key_ring("inst-a", "r2").await.expect("ring"), None);
        assert_eq!(s.key("inst-a", "k1").await.expect("key"), None);
        assert_eq!(s.key_by_alias("inst-a", "one").await.expect("alias"), None);
        assert!(s.key_versions("inst-a", "k1").await.expect("v").is_empty());
        assert_eq!(
            s.key("inst-a", "k0").await.expect("key"),
            Some(key("inst-a", "k0", &["zero"], 5))
        );
        assert!(
            s.registrations("inst-a", None)
                .await
                .expect("reg")
                .is_empty()
        );
        assert_eq!(
            s.instance_secret("inst-a", "archived-mk/1")
                .await
                .expect("secret"),
            None
        );
        assert!(
            s.audit_events("inst-a", 0, 10)
                .await
                .expect("audit")
                .is_empty()
        );
    }
    unchanged(s).await;
    assert_eq!(s.instance("inst-a").await.expect("get"), Some(i.clone()));

    // A failure in the middle: the same.
    let mut middle = writes.clone();
    middle.insert(
        3,
        Write::InsertKey {
            key: k0.clone(),
            first_version: version(&k0, 1),
        },
    );
    middle.pop();
    assert_already_exists(fails(s.apply(&batch(middle)).await), "key", "k0");
    unchanged(s).await;

    // Corrected, the same batch applies whole.
    let mut fixed = writes;
    fixed.pop();
    fixed.push(Write::UpdateInstance(i.clone()));
    s.apply(&batch(fixed)).await.expect("apply");
    assert!(s.key_ring("inst-a", "r2").await.expect("ring").is_some());
    assert_eq!(s.key("inst-a", "k1").await.expect("key"), Some(k1));
    assert_eq!(s.key("inst-a", "k0").await.expect("key"), None);
    assert_eq!(
        s.audit_events("inst-a", 0, 10).await.expect("audit").len(),
        1
    );
    assert_eq!(
        s.instance("inst-a")
            .await
            .expect("get")
            .map(|i| i.row_version),
        Some(i.row_version + 1)
    );
}

/// Each write's result, in order; later writes of a batch see the earlier ones.
pub async fn apply_results(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    assert_eq!(s.apply(&WriteBatch::default()).await.expect("empty"), []);
    let i = s.instance("inst-a").await.expect("get").expect("present");

    let k1 = key("inst-a", "k1", &["one"], 10);
    let mut k1_updated = k1.clone();
    k1_updated.name = "renamed".to_owned();
    k1_updated.aliases = vec!["uno".to_owned()];
    let mut k1_rotated = k1_updated.clone();
    k1_rotated.row_version = 2;
    k1_rotated.current_version_id = "k1-v2".to_owned();
    let mut k2 = key("inst-a", "k2", &[], 11);
    k2.key_ring_id = "r2".to_owned();
    let mut i2 = i.clone();
    i2.mk_version = 3;
    let event = audit("inst-a", 40, &event_body("k1", "rotate", "success"));
    let reg = registration(&k1, "crn:v1:x", 50);

    let applied = s
        .apply(&batch([
            Write::InsertKeyRing(ring("inst-a", "r2")),
            Write::InsertKey {
                key: k1.clone(),
                first_version: version(&k1, 1),
            },
            Write::UpdateKey(k1_updated.clone()),
            Write::AddKeyVersion {
                key: k1_rotated.clone(),
                version: version(&k1, 2),
            },
            Write::UpdateInstance(i2.clone()),
            Write::PutInstanceSecret(secret("inst-a", "archived-mk/1", 1)),
            Write::DeleteInstanceSecret {
                instance_id: "inst-a".to_owned(),
                name: "never-existed".to_owned(),
            },
            Write::PutRegistration(reg.clone()),
            Write::PutRegistration(registration(&k1, "crn:v1:y", 51)),
            Write::DeleteRegistration {
                instance_id: "inst-a".to_owned(),
                key_id: "k1".to_owned(),
                resource_crn: "crn:v1:y".to_owned(),
            },
            Write::AppendAudit(event.clone()),
            Write::InsertKey {
                key: k2.clone(),
                first_version: version(&k2, 1),
            },
            Write::PurgeKey {
                instance_id: "inst-a".to_owned(),
                key_id: "k2".to_owned(),
            },
            Write::DeleteKeyRing {
                instance_id: "inst-a".to_owned(),
                id: "r2".to_owned(),
            },
        ]))
        .await
        .expect("apply");

    let stored_event = s.audit_events("inst-a", 0, 10).await.expect("audit");
    assert_eq!(stored_event.len(), 1);
    assert_eq!(
        (
            stored_event[0].target.as_str(),
            stored_event[0].action.as_str(),
            stored_event[0].outcome.as_str()
        ),
        ("k1", "rotate", "success")
    );
    assert_eq!(
        applied,
        vec![
            Applied::Done,
            Applied::Done,
            Applied::RowVersion(2),
            Applied::RowVersion(3),
            Applied::RowVersion(i.row_version + 1),
            Applied::Done,
            Applied::Done,
            Applied::Done,
            Applied::Done,
            Applied::Done,
            Applied::Audit(stored_event[0].clone()),
            Applied::Done,
            Applied::Done,
            Applied::Done,
        ]
    );
    assert_eq!(
        s.key("inst-a", "k1").await.expect("key"),
        Some(KeyRecord {
            row_version: 3,
            ..k1_rotated
        })
    );
    assert_eq!(
        s.key_versions("inst-a", "k1").await.expect("versions"),
        vec![version(&k1, 1), version(&k1, 2)]
    );
    assert_eq!(
        s.instance("inst-a").await.expect("get"),
        Some(InstanceRecord {
            row_version: i.row_version + 1,
            ..i2
        })
    );
    assert_eq!(
        s.instance_secret("inst-a", "archived-mk/1")
            .await
            .expect("secret"),
        Some(secret("inst-a", "archived-mk/1", 1))
    );
    assert_eq!(s.registrations("inst-a", None).await.expect("reg"), [reg]);
    assert_eq!(s.key("inst-a", "k2").await.expect("key"), None);
    assert_eq!(s.key_ring("inst-a", "r2").await.expect("ring"), None);
}

/// In a batch, each write fails exactly as its single method does.
pub async fn apply_errors_are_those_of_the_single_methods(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    let k1 = key("inst-a", "k1", &["one"], 10);
    insert(s, &k1).await;
    let one = |w: Write| batch([w]);
    let ghost = key("inst-a", "ghost", &[], 1);

    assert_already_exists(
        fails(
            s.apply(&one(Write::InsertKey {
                key: k1.clone(),
                first_version: version(&k1, 1),
            }))
            .await,
        ),
        "key",
        "k1",
    );
    let mut taken = key("inst-a", "k2", &["one"], 1);
    assert_already_exists(
        fails(
            s.apply(&one(Write::InsertKey {
                key: taken.clone(),
                first_version: version(&taken, 1),
            }))
            .await,
        ),
        "key alias",
        "one",
    );
    taken.key_ring_id = "nope".to_owned();
    taken.aliases.clear();
    assert_not_found(
        fails(
            s.apply(&one(Write::InsertKey {
                key: taken.clone(),
                first_version: version(&taken, 1),
            }))
            .await,
        ),
        "key ring",
        "nope",
    );
    let mut stale = k1.clone();
    stale.row_version = 5;
    assert_conflict(
        fails(s.apply(&one(Write::UpdateKey(stale.clone()))).await),
        "key",
        "k1",
        5,
    );
    assert_conflict(
        fails(
            s.apply(&one(Write::AddKeyVersion {
                key: stale,
                version: version(&k1, 2),
            }))
            .await,
        ),
        "key",
        "k1",
        5,
    );
    assert_not_found(
        fails(s.apply(&one(Write::UpdateKey(ghost.clone()))).await),
        "key",
        "ghost",
    );
    assert_not_found(
        fails(
            s.apply(&one(Write::PurgeKey {
                instance_id: "inst-a".to_owned(),
                key_id: "ghost".to_owned(),
            }))
            .await,
        ),
        "key",
        "ghost",
    );
    assert_already_exists(
        fails(
            s.apply(&one(Write::InsertKeyRing(ring("inst-a", "default"))))
                .await,
        ),
        "key ring",
        "default",
    );
    assert_not_found(
        fails(
            s.apply(&one(Write::InsertKeyRing(ring("inst-x", "r"))))
                .await,
        ),
        "instance",
        "inst-x",
    );
    let e = fails(
        s.apply(&one(Write::DeleteKeyRing {
            instance_id: "inst-a".to_owned(),
            id: "default".to_owned(),
        }))
        .await,
    );
    assert!(
        matches!(&e, StoreError::InUse { what: "key ring", id } if id == "default"),
        "{e:?}"
    );
    assert_not_found(
        fails(
            s.apply(&one(Write::UpdateInstance(instance("ghost", "g", 1))))
                .await,
        ),
        "instance",
        "ghost",
    );
    assert_not_found(
        fails(
            s.apply(&one(Write::PutInstanceSecret(secret("ghost", "x", 1))))
                .await,
        ),
        "instance",
        "ghost",
    );
    assert_not_found(
        fails(
            s.apply(&one(Write::PutRegistration(registration(
                &ghost, "crn:1", 1,
            ))))
            .await,
        ),
        "key",
        "ghost",
    );
    assert_not_found(
        fails(
            s.apply(&one(Write::DeleteRegistration {
                instance_id: "inst-a".to_owned(),
                key_id: "k1".to_owned(),
                resource_crn: "crn:none".to_owned(),
            }))
            .await,
        ),
        "registration",
        "crn:none",
    );
    // Nothing changed.
    assert_eq!(s.key("inst-a", "k1").await.expect("key"), Some(k1));
    assert_eq!(
        s.count_keys("inst-a", &KeyFilter::default())
            .await
            .expect("count"),
        1
    );
}

/// Audit events appended inside batches and standalone form one chain; a failed batch's event
/// leaves no gap.
pub async fn apply_audit_chains_with_appends(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    let mut returned = Vec::new();
    returned.push(
        s.append_audit_event(&audit("inst-a", 1, "standalone 1"))
            .await
            .expect("append"),
    );
    let k1 = key("inst-a", "k1", &[], 10);
    let applied = s
        .apply(&batch([
            Write::AppendAudit(audit("inst-a", 2, &event_body("k1", "create", "success"))),
            Write::InsertKey {
                key: k1.clone(),
                first_version: version(&k1, 1),
            },
            Write::AppendAudit(audit("inst-b", 2, "other instance")),
            Write::AppendAudit(audit("inst-a", 3, "batched 2")),
        ]))
        .await
        .expect("apply");
    let mut other = None;
    for a in applied {
        match a {
            Applied::Audit(e) if e.instance_id == "inst-a" => returned.push(e),
            Applied::Audit(e) => other = Some(e),
            Applied::Done => {}
            a @ Applied::RowVersion(_) => panic!("unexpected {a:?}"),
        }
    }
    assert_eq!(other.map(|e| e.seq), Some(1));
    // A failed batch's event is not kept and its seq is reused.
    fails(
        s.apply(&batch([
            Write::AppendAudit(audit("inst-a", 4, "rolled back")),
            Write::InsertKey {
                key: k1.clone(),
                first_version: version(&k1, 1),
            },
        ]))
        .await,
    );
    returned.push(
        s.append_audit_event(&audit("inst-a", 5, "standalone 4"))
            .await
            .expect("append"),
    );
    returned.push(
        match s
            .apply(&batch([Write::AppendAudit(audit(
                "inst-a",
                6,
                "batched 5",
            ))]))
            .await
            .expect("apply")
            .pop()
        {
            Some(Applied::Audit(e)) => e,
            other => panic!("expected an audit event, got {other:?}"),
        },
    );
    let stored = s.audit_events("inst-a", 0, 100).await.expect("audit");
    assert_eq!(stored, returned);
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(stored.iter().all(|e| e.body != "rolled back"));
    assert_chain("inst-a", &stored);
    assert_chain(
        "inst-b",
        &s.audit_events("inst-b", 0, 100).await.expect("b"),
    );
}

/// Many concurrent batches, grouped by the backend as it likes: exactly the failing ones fail,
/// each with its own error; every other one is applied whole; the audit chain has no gap.
/// Key creations without aliases and lone audit appends, the jobs a group runs in one round trip:
/// a creation that collides fails alone, with its own error, and the rest of its group stands.
pub async fn grouped_creations_without_aliases_fail_alone(store: Arc<dyn Store>) {
    const CREATIONS: usize = 300;
    instance_with_ring(&*store, "inst-a", 1).await;
    let taken = key("inst-a", "taken", &[], 0);
    insert(&*store, &taken).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..CREATIONS {
        let s = store.clone();
        tasks.spawn(async move {
            if n % 7 == 3 {
                let r = s
                    .append_audit_event(&audit("inst-a", 0, r#"{"action":"read"}"#))
                    .await
                    .map(|e| vec![Applied::Audit(e)]);
                return (n, r);
            }
            let id = if n % 7 == 5 {
                "taken".to_owned()
            } else {
                format!("k{n:03}")
            };
            let k = key("inst-a", &id, &[], n as i64);
            let writes = vec![
                Write::InsertKey {
                    key: k.clone(),
                    first_version: version(&k, 1),
                },
                Write::AppendAudit(audit(
                    "inst-a",
                    n as i64,
                    &event_body(&id, "create", "success"),
                )),
            ];
            (n, s.apply(&batch(writes)).await)
        });
    }
    let mut created = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (n, result) = joined.expect("task panicked");
        match (n % 7, result) {
            (3, Ok(applied)) => assert!(matches!(applied[..], [Applied::Audit(_)])),
            (5, Err(e)) => assert_already_exists(e, "key", "taken"),
            (_, Ok(applied)) => {
                assert!(
                    matches!(&applied[..], [Applied::Done, Applied::Audit(e)]
                        if e.target == format!("k{n:03}")),
                    "{applied:?}"
                );
                created.push(format!("k{n:03}"));
            }
            (_, Err(e)) => panic!("job {n}: {e}"),
        }
    }
    created.sort();
    let keys = store
        .list_keys("inst-a", &KeyFilter::default())
        .await
        .expect("list");
    let mut stored = ids(&keys);
    stored.retain(|id| *id != "taken");
    assert_eq!(stored, created);
    for id in &created {
        assert_eq!(
            store
                .key_versions("inst-a", id)
                .await
                .expect("versions")
                .len(),
            1
        );
    }
    // Every answered event is in the chain, once, and the chain holds; a failed creation left
    // no event.
    let events = store
        .audit_events("inst-a", 0, 10_000)
        .await
        .expect("events");
    assert_chain("inst-a", &events);
    let reads = events.iter().filter(|e| e.action == "read").count();
    assert_eq!(reads, (0..CREATIONS).filter(|n| n % 7 == 3).count());
    let mut targets: Vec<String> = events
        .iter()
        .filter(|e| e.action == "create")
        .map(|e| e.target.clone())
        .collect();
    targets.sort();
    assert_eq!(targets, created);
}

pub async fn group_commit_under_concurrency(store: Arc<dyn Store>) {
    const BATCHES: usize = 200;
    const APPENDS: usize = 50;
    instance_with_ring(&*store, "inst-a", 1).await;
    // Creations that collide with this key fail alone, even when grouped with others.
    let taken = key("inst-a", "taken", &[], 0);
    insert(&*store, &taken).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..BATCHES {
        let s = store.clone();
        tasks.spawn(async move {
            let id = if n % 10 == 5 {
                "taken".to_owned()
            } else {
                format!("k{n:03}")
            };
            let k = key("inst-a", &id, &[&format!("alias-{n}")], n as i64);
            let mut writes = vec![
                Write::InsertKey {
                    key: k.clone(),
                    first_version: version(&k, 1),
                },
                Write::AppendAudit(audit(
                    "inst-a",
                    n as i64,
                    &event_body(&id, "create", "success"),
                )),
            ];
            if n % 10 == 0 {
                // A stale update of the key just inserted: a conflict.
                let mut stale = k.clone();
                stale.row_version = 42;
                writes.push(Write::UpdateKey(stale));
            }
            (n, s.apply(&batch(writes)).await)
        });
        if n % (BATCHES / APPENDS) == 0 {
            let s = store.clone();
            tasks.spawn(async move {
                let r = s
                    .append_audit_event(&audit("inst-a", 0, r#"{"action":"standalone"}"#))
                    .await
                    .map(|e| vec![Applied::Audit(e)]);
                (usize::MAX, r)
            });
        }
    }
    let mut failed = Vec::new();
    let mut appended = 0;
    while let Some(joined) = tasks.join_next().await {
        let (n, result) = joined.expect("task panicked");
        match result {
            Ok(applied) if n == usize::MAX => {
                assert!(matches!(applied[..], [Applied::Audit(_)]));
                appended += 1;
            }
            Ok(applied) => {
                assert_ne!(n % 10, 0, "batch {n} should have failed");
                assert!(
                    matches!(&applied[..], [Applied::Done, Applied::Audit(e)]
                        if e.target == format!("k{n:03}")),
                    "{applied:?}"
                );
            }
            Err(e) if n % 10 == 5 => {
                assert_already_exists(e, "key", "taken");
                failed.push(n);
            }
            Err(e) => {
                assert_conflict(e, "key", &format!("k{n:03}"), 42);
                failed.push(n);
            }
        }
    }
    failed.sort_unstable();
    assert_eq!(
        failed,
        (0..BATCHES)
            .filter(|n| n % 10 == 0 || n % 10 == 5)
            .collect::<Vec<_>>()
    );
    assert_eq!(appended, APPENDS);

    let keys = store
        .list_keys("inst-a", &KeyFilter::default())
        .await
        .expect("list");
    let want: Vec<String> = (0..BATCHES)
        .filter(|n| n % 10 != 0 && n % 10 != 5)
        .map(|n| format!("k{n:03}"))
        .collect();
    let mut stored_ids = ids(&keys);
    stored_ids.retain(|id| *id != "taken");
    assert_eq!(stored_ids, want);
    for n in [0, 5, 10, 15, 190, 195] {
        assert_eq!(
            store
                .key_by_alias("inst-a", &format!("alias-{n}"))
                .await
                .expect("alias"),
            None
        );
    }
    let events = store
        .audit_events("inst-a", 0, 10_000)
        .await
        .expect("audit");
    assert_eq!(events.len(), want.len() + APPENDS);
    assert_chain("inst-a", &events);
    let mut targets: Vec<&str> = events
        .iter()
        .filter(|e| e.action == "create")
        .map(|e| e.target.as_str())
        .collect();
    targets.sort_unstable();
    assert_eq!(targets, want);
}

// ---- registrations --------------------------------------------------------------------------

pub async fn registrations(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    let k1 = key("inst-a", "k1", &[], 10);
    let k2 = key("inst-a", "k2", &[], 20);
    insert(s, &k1).await;
    insert(s, &k2).await;
    assert!(
        s.registrations("inst-a", None)
            .await
            .expect("list")
            .is_empty()
    );

    let mut k1_b = registration(&k1, "crn:b", 100);
    k1_b.description = None;
    k1_b.registration_metadata = None;
    k1_b.prevent_key_deletion = true;
    let k1_a = registration(&k1, "crn:a", 101);
    let k2_a = registration(&k2, "crn:a", 102);
    for r in [&k2_a, &k1_b, &k1_a] {
        s.apply(&batch([Write::PutRegistration(r.clone())]))
            .await
            .expect("put");
    }
    // Ordered by key, then CRN.
    assert_eq!(
        s.registrations("inst-a", Some("k1")).await.expect("list"),
        vec![k1_a.clone(), k1_b.clone()]
    );
    assert_eq!(
        s.registrations("inst-a", None).await.expect("list"),
        vec![k1_a.clone(), k1_b.clone(), k2_a.clone()]
    );
    assert!(
        s.registrations("inst-a", Some("k3"))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        s.registrations("inst-b", None)
            .await
            .expect("list")
            .is_empty()
    );
    // The same key id and CRN in another instance is another registration.
    let kb = key("inst-b", "k1", &[], 10);
    insert(s, &kb).await;
    s.apply(&batch([Write::PutRegistration(registration(
        &kb, "crn:a", 1,
    ))]))
    .await
    .expect("put");
    assert_eq!(
        s.registrations("inst-b", None).await.expect("list").len(),
        1
    );
    assert_eq!(
        s.registrations("inst-a", None).await.expect("list").len(),
        3
    );
    // Page by page after a cursor, within the instance.
    let after = |cursor: Option<(&'static str, &'static str)>, limit: u64| {
        let store = store.clone();
        async move {
            store
                .registrations_after("inst-a", cursor, limit)
                .await
                .expect("page")
        }
    };
    assert_eq!(after(None, 2).await, vec![k1_a.clone(), k1_b.clone()]);
    assert_eq!(
        after(Some(("k1", "crn:a")), 5).await,
        vec![k1_b.clone(), k2_a.clone()]
    );
    assert_eq!(after(Some(("k1", "crn:b")), 5).await, vec![k2_a.clone()]);
    assert!(after(Some(("k2", "crn:a")), 5).await.is_empty());

    // Put replaces every field of the same (instance, key, CRN).
    let replaced = RegistrationRecord {
        description: Some("new".to_owned()),
        registration_metadata: None,
        prevent_key_deletion: true,
        key_version_id: "k1-v9".to_owned(),
        created_by: "other".to_owned(),
        created_at: 5,
        updated_by: "bob".to_owned(),
        updated_at: 500,
        ..k1_a.clone()
    };
    assert_eq!(
        s.apply(&batch([Write::PutRegistration(replaced.clone())]))
            .await
            .expect("replace"),
        [Applied::Done]
    );
    assert_eq!(
        s.registrations("inst-a", Some("k1")).await.expect("list"),
        vec![replaced.clone(), k1_b.clone()]
    );

    // Delete.
    let delete = |key_id: &str, crn: &str| {
        batch([Write::DeleteRegistration {
            instance_id: "inst-a".to_owned(),
            key_id: key_id.to_owned(),
            resource_crn: crn.to_owned(),
        }])
    };
    s.apply(&delete("k1", "crn:b")).await.expect("delete");
    assert_eq!(
        s.registrations("inst-a", Some("k1")).await.expect("list"),
        vec![replaced]
    );
    assert_not_found(
        fails(s.apply(&delete("k1", "crn:b")).await),
        "registration",
        "crn:b",
    );
    assert_not_found(
        fails(s.apply(&delete("k3", "crn:a")).await),
        "registration",
        "crn:a",
    );
    // A registration of a key that does not exist is refused.
    let ghost = key("inst-a", "ghost", &[], 1);
    assert_not_found(
        fails(
            s.apply(&batch([Write::PutRegistration(registration(
                &ghost, "crn:a", 1,
            ))]))
            .await,
        ),
        "key",
        "ghost",
    );
    assert_eq!(
        s.registrations("inst-a", None).await.expect("list").len(),
        2
    );
}

/// Purging a key (batch or single method) deletes its registrations, and only its; so does
/// zeroizing the instance.
pub async fn registrations_go_with_their_key(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    let k1 = key("inst-a", "k1", &["one"], 10);
    let k2 = key("inst-a", "k2", &[], 20);
    let k3 = key("inst-a", "k3", &[], 30);
    let kb = key("inst-b", "k1", &[], 10);
    for k in [&k1, &k2, &k3, &kb] {
        insert(s, k).await;
    }
    let mut worm = registration(&k1, "crn:a", 1);
    worm.prevent_key_deletion = true;
    s.apply(&batch([
        Write::PutRegistration(worm),
        Write::PutRegistration(registration(&k1, "crn:b", 1)),
        Write::PutRegistration(registration(&k2, "crn:a", 1)),
        Write::PutRegistration(registration(&k3, "crn:a", 1)),
        Write::PutRegistration(registration(&kb, "crn:a", 1)),
    ]))
    .await
    .expect("put");

    // Purge in a batch (the core, not the store, enforces prevent_key_deletion).
    assert_eq!(
        s.apply(&batch([Write::PurgeKey {
            instance_id: "inst-a".to_owned(),
            key_id: "k1".to_owned(),
        }]))
        .await
        .expect("purge"),
        [Applied::Done]
    );
    assert!(
        s.registrations("inst-a", Some("k1"))
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(s.key("inst-a", "k1").await.expect("key"), None);
    // Single method.
    s.purge_key("inst-a", "k2").await.expect("purge");
    assert_eq!(
        s.registrations("inst-a", None).await.expect("list"),
        vec![registration(&k3, "crn:a", 1)]
    );
    assert_eq!(
        s.registrations("inst-b", None).await.expect("list").len(),
        1
    );
    // The id can be used again, without the old registrations.
    insert(s, &key("inst-a", "k1", &["one"], 40)).await;
    assert!(
        s.registrations("inst-a", Some("k1"))
            .await
            .expect("list")
            .is_empty()
    );

    // Zeroization removes the instance's registrations with its keys.
    let i = s.instance("inst-a").await.expect("get").expect("present");
    s.zeroize_instance(&i, &audit("inst-a", 9, "{}"))
        .await
        .expect("zeroize");
    assert!(
        s.registrations("inst-a", None)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        s.registrations("inst-b", None).await.expect("list").len(),
        1
    );
}

// ---- instance policies ----------------------------------------------------------------------

pub async fn instance_policies(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    assert_eq!(s.instance_policies("inst-a").await.expect("get"), "{}");
    assert_not_found(
        fails(s.instance_policies("ghost").await),
        "instance",
        "ghost",
    );
    let before = s.instance("inst-a").await.expect("get").expect("present");

    let policies = r#"{"dualAuthDelete":{"enabled":true},"allowedNetwork":"private-only"}"#;
    let event = audit(
        "inst-a",
        10,
        &event_body("inst-a", "set_policies", "success"),
    );
    s.set_instance_policies("inst-a", policies, &event)
        .await
        .expect("set");
    assert_eq!(s.instance_policies("inst-a").await.expect("get"), policies);
    assert_eq!(s.instance_policies("inst-b").await.expect("get"), "{}");
    // The audit event is in the same transaction.
    let events = s.audit_events("inst-a", 0, 10).await.expect("audit");
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].body.as_str(), events[0].action.as_str()),
        (event.body.as_str(), "set_policies")
    );
    // Policies are not part of the instance record: its row version stays, and an update of
    // the record keeps them.
    assert_eq!(
        s.instance("inst-a").await.expect("get"),
        Some(before.clone())
    );
    let mut renamed = before.clone();
    renamed.name = "renamed".to_owned();
    s.update_instance(&renamed).await.expect("update");
    assert_eq!(s.instance_policies("inst-a").await.expect("get"), policies);

    // Replaced whole.
    s.set_instance_policies("inst-a", "{}", &audit("inst-a", 11, "reset"))
        .await
        .expect("set");
    assert_eq!(s.instance_policies("inst-a").await.expect("get"), "{}");
    assert_chain(
        "inst-a",
        &s.audit_events("inst-a", 0, 10).await.expect("audit"),
    );

    // A missing instance: NotFound, and no event.
    assert_not_found(
        fails(
            s.set_instance_policies("ghost", policies, &audit("ghost", 1, "x"))
                .await,
        ),
        "instance",
        "ghost",
    );
    assert!(
        s.audit_events("ghost", 0, 10)
            .await
            .expect("audit")
            .is_empty()
    );
}

// ---- audit queries --------------------------------------------------------------------------

pub async fn query_audit_events(store: Arc<dyn Store>) {
    let s = &*store;
    let bodies = [
        (100, event_body("k1", "create", "success")),
        (200, event_body("k2", "create", "success")),
        (300, event_body("k1", "wrap", "denied")),
        (
            400,
            r#"{"target":7,"action":"wrap","outcome":null}"#.to_owned(),
        ),
        (500, "not json".to_owned()),
        (600, event_body("k1", "wrap", "success")),
        (700, event_body("inst-a", "set_policies", "failure")),
    ];
    for (at, body) in &bodies {
        s.append_audit_event(&audit("inst-a", *at, body))
            .await
            .expect("append");
    }
    s.append_audit_event(&audit(
        "inst-b",
        100,
        &event_body("k1", "create", "success"),
    ))
    .await
    .expect("append");
    let all = s.audit_events("inst-a", 0, 100).await.expect("audit");
    assert_eq!(
        all.iter()
            .map(|e| (e.target.as_str(), e.action.as_str(), e.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("k1", "create", "success"),
            ("k2", "create", "success"),
            ("k1", "wrap", "denied"),
            ("", "wrap", ""),
            ("", "", ""),
            ("k1", "wrap", "success"),
            ("inst-a", "set_policies", "failure"),
        ]
    );

    let seqs = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .query_audit_events("inst-a", &filter)
                .await
                .expect("query")
                .into_iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        }
    };
    let f = |limit: u64| AuditFilter {
        limit,
        ..Default::default()
    };
    let text = |v: &str| Some(v.to_owned());
    assert_eq!(seqs(f(100)).await, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(seqs(f(3)).await, [1, 2, 3]);
    assert_eq!(seqs(f(0)).await, Vec::<i64>::new());
    assert_eq!(seqs(f(u64::MAX)).await, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        seqs(AuditFilter {
            after_seq: 5,
            ..f(100)
        })
        .await,
        [6, 7]
    );
    assert_eq!(
        seqs(AuditFilter {
            from: Some(300),
            ..f(100)
        })
        .await,
        [3, 4, 5, 6, 7]
    );
    assert_eq!(
        seqs(AuditFilter {
            until: Some(300),
            ..f(100)
        })
        .await,
        [1, 2]
    );
    assert_eq!(
        seqs(AuditFilter {
            from: Some(200),
            until: Some(500),
            ..f(100)
        })
        .await,
        [2, 3, 4]
    );
    assert_eq!(
        seqs(AuditFilter {
            target: text("k1"),
            ..f(100)
        })
        .await,
        [1, 3, 6]
    );
    assert_eq!(
        seqs(AuditFilter {
            action: text("wrap"),
            ..f(100)
        })
        .await,
        [3, 4, 6]
    );
    assert_eq!(
        seqs(AuditFilter {
            outcome: text("success"),
            ..f(100)
        })
        .await,
        [1, 2, 6]
    );
    // Empty matches the events without the field.
    assert_eq!(
        seqs(AuditFilter {
            target: text(""),
            ..f(100)
        })
        .await,
        [4, 5]
    );
    assert_eq!(
        seqs(AuditFilter {
            target: text("nope"),
            ..f(100)
        })
        .await,
        Vec::<i64>::new()
    );
    // Every field at once, and paging.
    let all_fields = AuditFilter {
        after_seq: 1,
        from: Some(100),
        until: Some(700),
        target: text("k1"),
        action: text("wrap"),
        outcome: text("success"),
        limit: 10,
    };
    assert_eq!(seqs(all_fields.clone()).await, [6]);
    assert_eq!(
        seqs(AuditFilter {
            target: text("k1"),
            after_seq: 1,
            ..f(1)
        })
        .await,
        [3]
    );
    // Records come back whole, as audit_events returns them.
    let got = s
        .query_audit_events(
            "inst-a",
            &AuditFilter {
                action: text("wrap"),
                ..f(100)
            },
        )
        .await
        .expect("query");
    assert_eq!(got, vec![all[2].clone(), all[3].clone(), all[5].clone()]);
    // Another instance's events never match.
    assert_eq!(
        s.query_audit_events("inst-b", &f(100))
            .await
            .expect("query")
            .len(),
        1
    );
    assert!(
        s.query_audit_events("inst-x", &f(100))
            .await
            .expect("query")
            .is_empty()
    );
}

// ---- API keys -------------------------------------------------------------------------------

pub async fn list_all_api_keys(store: Arc<dyn Store>) {
    let s = &*store;
    assert!(s.list_all_api_keys().await.expect("list").is_empty());
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    s.insert_principal(&principal("p1", Some("inst-a"), "svc", 1))
        .await
        .expect("insert");
    s.insert_principal(&principal("p2", Some("inst-b"), "svc", 1))
        .await
        .expect("insert");
    s.insert_principal(&principal("p3", None, "admin", 1))
        .await
        .expect("insert");
    let k_b = api_key("ak-b", "p2", &[0x02; 32], 20);
    let k_a = api_key("ak-a", "p1", &[0x01; 32], 20);
    let k_c = api_key("ak-c", "p3", &[0x03; 32], 10);
    let mut k_d = api_key("ak-d", "p1", &[0x04; 32], 30);
    k_d.revoked_at = Some(31);
    for k in [&k_b, &k_a, &k_c, &k_d] {
        s.insert_api_key(k).await.expect("insert");
    }
    // Every principal's, revoked ones included, by creation time then id.
    assert_eq!(
        s.list_all_api_keys().await.expect("list"),
        vec![k_c, k_a, k_b, k_d]
    );
}

// ---- keystores ------------------------------------------------------------------------------

pub fn keystore(instance_id: &str, id: &str, name: &str) -> KeystoreRecord {
    KeystoreRecord {
        instance_id: instance_id.to_owned(),
        id: id.to_owned(),
        name: name.to_owned(),
        created_at: 1_000,
        created_by: "admin".to_owned(),
    }
}

pub fn attr(attr_type: u64, value: &[u8]) -> ObjectAttribute {
    ObjectAttribute {
        attr_type,
        value: value.to_vec(),
    }
}

pub fn token_object(
    ks: &KeystoreRecord,
    id: &str,
    attributes: Vec<ObjectAttribute>,
) -> KeystoreObjectRecord {
    KeystoreObjectRecord {
        instance_id: ks.instance_id.clone(),
        keystore_id: ks.id.clone(),
        id: id.to_owned(),
        blob: format!("sealed {id}").into_bytes(),
        attributes,
        created_at: 2_000,
        updated_at: 2_000,
        row_version: 1,
    }
}

async fn ks_apply(s: &dyn Store, w: KeystoreWrite) -> Result<Vec<Applied>> {
    s.apply(&batch([Write::Keystore(w)])).await
}

pub async fn keystores(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    let a1 = keystore("inst-a", "ks1", "tokens");
    let a2 = keystore("inst-a", "ks2", "archive");
    ks_apply(s, KeystoreWrite::Insert(a1.clone()))
        .await
        .expect("insert");
    ks_apply(s, KeystoreWrite::Insert(a2.clone()))
        .await
        .expect("insert");
    // Names are unique per instance; the same name in another instance is fine.
    let e = fails(
        ks_apply(
            s,
            KeystoreWrite::Insert(keystore("inst-a", "ks3", "tokens")),
        )
        .await,
    );
    assert_already_exists(e, "keystore", "tokens");
    ks_apply(
        s,
        KeystoreWrite::Insert(keystore("inst-b", "ks1", "tokens")),
    )
    .await
    .expect("other instance");
    let e = fails(ks_apply(s, KeystoreWrite::Insert(keystore("nope", "ks9", "x"))).await);
    assert_not_found(e, "instance", "nope");

    assert_eq!(
        s.keystore("inst-a", "ks1").await.expect("get"),
        Some(a1.clone())
    );
    assert_eq!(s.keystore("inst-a", "ks9").await.expect("get"), None);
    // Ordered by name.
    assert_eq!(
        s.list_keystores("inst-a").await.expect("list"),
        vec![a2.clone(), a1.clone()]
    );

    // A keystore holding objects is refused unless forced, and a forced delete takes them.
    let o = token_object(&a1, "o1", vec![attr(0, &[3]), attr(3, b"label")]);
    ks_apply(s, KeystoreWrite::InsertObject(o.clone()))
        .await
        .expect("insert object");
    assert_eq!(
        s.count_keystore_objects("inst-a", "ks1").await.expect("n"),
        1
    );
    let delete = |force| KeystoreWrite::Delete {
        instance_id: "inst-a".to_owned(),
        id: "ks1".to_owned(),
        force,
    };
    let e = fails(ks_apply(s, delete(false)).await);
    assert!(
        matches!(
            e,
            StoreError::InUse {
                what: "keystore",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        s.keystore_object("inst-a", "ks1", "o1")
            .await
            .expect("get")
            .is_some()
    );
    ks_apply(s, delete(true)).await.expect("forced delete");
    assert_eq!(s.keystore("inst-a", "ks1").await.expect("get"), None);
    assert_eq!(
        s.keystore_object("inst-a", "ks1", "o1").await.expect("get"),
        None
    );
    assert_eq!(
        s.count_keystore_objects("inst-a", "ks1").await.expect("n"),
        0
    );
    let e = fails(ks_apply(s, delete(false)).await);
    assert_not_found(e, "keystore", "ks1");
    // Its name is free again, and the other instance's keystore of the same id is untouched.
    ks_apply(
        s,
        KeystoreWrite::Insert(keystore("inst-a", "ks4", "tokens")),
    )
    .await
    .expect("reuse name");
    assert!(s.keystore("inst-b", "ks1").await.expect("get").is_some());
    // An empty keystore goes without force.
    ks_apply(
        s,
        KeystoreWrite::Delete {
            instance_id: "inst-a".to_owned(),
            id: "ks2".to_owned(),
            force: false,
        },
    )
    .await
    .expect("delete empty");

    // Objects need their keystore.
    let ghost = keystore("inst-a", "ks9", "ghost");
    let e = fails(
        ks_apply(
            s,
            KeystoreWrite::InsertObject(token_object(&ghost, "o", vec![])),
        )
        .await,
    );
    assert_not_found(e, "keystore", "ks9");
    // A failed write in a batch leaves nothing behind, audit event included.
    let ks4 = keystore("inst-a", "ks4", "tokens");
    let before = s
        .audit_events("inst-a", 0, 100)
        .await
        .expect("events")
        .len();
    let e = fails(
        s.apply(&batch([
            Write::Keystore(KeystoreWrite::InsertObject(token_object(
                &ks4,
                "fresh",
                vec![attr(3, b"x")],
            ))),
            Write::AppendAudit(audit("inst-a", 5, "{}")),
            Write::Keystore(KeystoreWrite::InsertObject(token_object(
                &ghost,
                "o",
                vec![],
            ))),
        ]))
        .await,
    );
    assert_not_found(e, "keystore", "ks9");
    assert_eq!(
        s.keystore_object("inst-a", "ks4", "fresh")
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        s.audit_events("inst-a", 0, 100)
            .await
            .expect("events")
            .len(),
        before
    );
}

pub async fn keystore_objects_find_and_page(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    let ks = keystore("inst-a", "ks", "tokens");
    let other = keystore("inst-a", "ks-other", "other");
    for k in [&ks, &other] {
        ks_apply(s, KeystoreWrite::Insert(k.clone()))
            .await
            .expect("keystore");
    }
    const CLASS: u64 = 0x0;
    const LABEL: u64 = 0x3;
    const ID: u64 = 0x102;
    const VENDOR: u64 = 0x8000_0000_0000_0001;
    let private = 3u64.to_le_bytes();
    let public = 2u64.to_le_bytes();
    let big = vec![7u8; 20_000];
    let mut objects = Vec::new();
    for i in 0..12u8 {
        let class = [private, public][usize::from(i % 2)];
        let mut attrs = vec![
            attr(CLASS, &class),
            attr(LABEL, format!("key-{}", i / 2).as_bytes()),
            attr(ID, &[i / 2]),
        ];
        if i == 4 {
            // A value far larger than an index entry may be, and a type above i64::MAX.
            attrs.push(attr(VENDOR, &big));
        }
        let o = token_object(&ks, &format!("obj-{i:02}"), attrs);
        ks_apply(s, KeystoreWrite::InsertObject(o.clone()))
            .await
            .expect("insert");
        objects.push(o);
    }
    // The same attributes in another keystore are never found here.
    ks_apply(
        s,
        KeystoreWrite::InsertObject(token_object(
            &other,
            "obj-00",
            objects[0].attributes.clone(),
        )),
    )
    .await
    .expect("insert other");
    let e = fails(ks_apply(s, KeystoreWrite::InsertObject(objects[3].clone())).await);
    assert_already_exists(e, "keystore object", "obj-03");

    assert_eq!(
        s.keystore_object("inst-a", "ks", "obj-04")
            .await
            .expect("get"),
        Some(objects[4].clone())
    );
    let find = |template: Vec<ObjectAttribute>, after: Option<&str>, limit: u64| ObjectQuery {
        template,
        after: after.map(str::to_owned),
        limit,
    };
    let ids = |v: Vec<KeystoreObjectRecord>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();

    // Empty template: everything, by id.
    let all = s
        .find_keystore_objects("inst-a", "ks", &find(vec![], None, 100))
        .await
        .expect("find");
    assert_eq!(all, objects);
    // One attribute.
    let privates = s
        .find_keystore_objects(
            "inst-a",
            "ks",
            &find(vec![attr(CLASS, &private)], None, 100),
        )
        .await
        .expect("find");
    assert_eq!(
        ids(privates),
        ["obj-00", "obj-02", "obj-04", "obj-06", "obj-08", "obj-10"]
    );
    // Several attributes: all must match (the NGINX reload template: class, id, label).
    let one = s
        .find_keystore_objects(
            "inst-a",
            "ks",
            &find(
                vec![attr(CLASS, &public), attr(ID, &[2]), attr(LABEL, b"key-2")],
                None,
                100,
            ),
        )
        .await
        .expect("find");
    assert_eq!(one, vec![objects[5].clone()]);
    // A value of another attribute type, a prefix of a value, a missing attribute: nothing.
    for template in [
        vec![attr(LABEL, &[2])],
        vec![attr(LABEL, b"key")],
        vec![attr(CLASS, &private), attr(ID, &[2]), attr(LABEL, b"key-3")],
        vec![attr(0x11, &[1])],
    ] {
        let found = s
            .find_keystore_objects("inst-a", "ks", &find(template.clone(), None, 100))
            .await
            .expect("find");
        assert!(found.is_empty(), "{template:?} found {found:?}");
    }
    // Large values and high types are found too.
    let vendor = s
        .find_keystore_objects("inst-a", "ks", &find(vec![attr(VENDOR, &big)], None, 100))
        .await
        .expect("find");
    assert_eq!(vendor, vec![objects[4].clone()]);

    // Paging: `after` the last id of the previous page, in id order, nothing twice.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .find_keystore_objects(
                "inst-a",
                "ks",
                &find(vec![attr(CLASS, &private)], after.as_deref(), 4),
            )
            .await
            .expect("page");
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(ids(page));
    }
    assert_eq!(
        seen,
        ["obj-00", "obj-02", "obj-04", "obj-06", "obj-08", "obj-10"]
    );
    let tail = s
        .find_keystore_objects("inst-a", "ks", &find(vec![], Some("obj-09"), 100))
        .await
        .expect("tail");
    assert_eq!(ids(tail), ["obj-10", "obj-11"]);
    // Unknown keystore or instance: nothing.
    assert!(
        s.find_keystore_objects("inst-a", "nope", &find(vec![], None, 10))
            .await
            .expect("find")
            .is_empty()
    );
    assert!(
        s.find_keystore_objects("inst-b", "ks", &find(vec![], None, 10))
            .await
            .expect("find")
            .is_empty()
    );
}

pub async fn keystore_object_updates_are_optimistic(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    let ks = keystore("inst-a", "ks", "tokens");
    ks_apply(s, KeystoreWrite::Insert(ks.clone()))
        .await
        .expect("keystore");
    let o = token_object(&ks, "o1", vec![attr(3, b"old"), attr(0x102, &[1])]);
    ks_apply(s, KeystoreWrite::InsertObject(o.clone()))
        .await
        .expect("insert");

    let mut changed = o.clone();
    changed.blob = b"resealed".to_vec();
    changed.attributes = vec![attr(3, b"new"), attr(0x180, &[1])];
    changed.updated_at = 3_000;
    let applied = ks_apply(s, KeystoreWrite::UpdateObject(changed.clone()))
        .await
        .expect("update");
    assert_eq!(applied, vec![Applied::RowVersion(2)]);
    let stored = s
        .keystore_object("inst-a", "ks", "o1")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(stored.blob, b"resealed");
    assert_eq!(stored.attributes, changed.attributes);
    assert_eq!(
        (stored.created_at, stored.updated_at, stored.row_version),
        (2_000, 3_000, 2)
    );
    // The index follows: the old values are gone, the new ones found.
    let q = |a: ObjectAttribute| ObjectQuery {
        template: vec![a],
        after: None,
        limit: 10,
    };
    for (a, n) in [
        (attr(3, b"old"), 0),
        (attr(0x102, &[1]), 0),
        (attr(3, b"new"), 1),
        (attr(0x180, &[1]), 1),
    ] {
        let found = s
            .find_keystore_objects("inst-a", "ks", &q(a.clone()))
            .await
            .expect("find");
        assert_eq!(found.len(), n, "{a:?}");
    }

    // A stale version changes nothing.
    let mut stale = changed.clone();
    stale.blob = b"lost update".to_vec();
    let e = fails(ks_apply(s, KeystoreWrite::UpdateObject(stale)).await);
    assert_conflict(e, "keystore object", "o1", 1);
    let e = fails(
        ks_apply(
            s,
            KeystoreWrite::DeleteObject {
                instance_id: "inst-a".to_owned(),
                keystore_id: "ks".to_owned(),
                id: "o1".to_owned(),
                row_version: Some(1),
            },
        )
        .await,
    );
    assert_conflict(e, "keystore object", "o1", 1);
    assert_eq!(
        s.keystore_object("inst-a", "ks", "o1")
            .await
            .expect("get")
            .map(|o| o.blob),
        Some(b"resealed".to_vec())
    );
    let mut missing = changed.clone();
    missing.id = "o9".to_owned();
    let e = fails(ks_apply(s, KeystoreWrite::UpdateObject(missing)).await);
    assert_not_found(e, "keystore object", "o9");

    // Delete at the current version, then it is gone, with its index rows.
    ks_apply(
        s,
        KeystoreWrite::DeleteObject {
            instance_id: "inst-a".to_owned(),
            keystore_id: "ks".to_owned(),
            id: "o1".to_owned(),
            row_version: Some(2),
        },
    )
    .await
    .expect("delete");
    assert_eq!(
        s.keystore_object("inst-a", "ks", "o1").await.expect("get"),
        None
    );
    assert!(
        s.find_keystore_objects("inst-a", "ks", &q(attr(3, b"new")))
            .await
            .expect("find")
            .is_empty()
    );
    let delete_o1 = |instance: &str| KeystoreWrite::DeleteObject {
        instance_id: instance.to_owned(),
        keystore_id: "ks".to_owned(),
        id: "o1".to_owned(),
        row_version: None,
    };
    let e = fails(ks_apply(s, delete_o1("inst-a")).await);
    assert_not_found(e, "keystore object", "o1");
    // In a keystore the instance does not have, the keystore is what is missing.
    let e = fails(ks_apply(s, delete_o1("inst-b")).await);
    assert_not_found(e, "keystore", "ks");
    // Without a version, a delete takes whatever is there; and the keystore is empty again.
    ks_apply(s, KeystoreWrite::InsertObject(o.clone()))
        .await
        .expect("insert again");
    ks_apply(
        s,
        KeystoreWrite::DeleteObject {
            instance_id: "inst-a".to_owned(),
            keystore_id: "ks".to_owned(),
            id: "o1".to_owned(),
            row_version: None,
        },
    )
    .await
    .expect("delete unconditionally");
    ks_apply(
        s,
        KeystoreWrite::Delete {
            instance_id: "inst-a".to_owned(),
            id: "ks".to_owned(),
            force: false,
        },
    )
    .await
    .expect("empty keystore deleted");
}

pub async fn keystores_go_with_zeroization(store: Arc<dyn Store>) {
    let s = &*store;
    instance_with_ring(s, "inst-a", 1).await;
    instance_with_ring(s, "inst-b", 2).await;
    let a = keystore("inst-a", "ks", "tokens");
    let b = keystore("inst-b", "ks", "tokens");
    for k in [&a, &b] {
        ks_apply(s, KeystoreWrite::Insert(k.clone()))
            .await
            .expect("keystore");
        ks_apply(
            s,
            KeystoreWrite::InsertObject(token_object(k, "o1", vec![attr(3, b"l")])),
        )
        .await
        .expect("object");
    }
    let record = s.instance("inst-a").await.expect("get").expect("present");
    let zeroized = InstanceRecord {
        state: "zeroized".to_owned(),
        ..record
    };
    s.zeroize_instance(&zeroized, &audit("inst-a", 9_000, "{}"))
        .await
        .expect("zeroize");
    assert!(s.list_keystores("inst-a").await.expect("list").is_empty());
    assert_eq!(
        s.keystore_object("inst-a", "ks", "o1").await.expect("get"),
        None
    );
    let all = ObjectQuery {
        template: vec![attr(3, b"l")],
        after: None,
        limit: 10,
    };
    assert!(
        s.find_keystore_objects("inst-a", "ks", &all)
            .await
            .expect("find")
            .is_empty()
    );
    // The other instance keeps its own.
    assert_eq!(s.list_keystores("inst-b").await.expect("list"), vec![b]);
    assert_eq!(
        s.find_keystore_objects("inst-b", "ks", &all)
            .await
            .expect("find")
            .len(),
        1
    );
}

// ---- KMIP adapters --------------------------------------------------------------------------

pub fn kmip_adapter(instance_id: &str, id: &str, name: &str, at: i64) -> KmipAdapterRecord {
    KmipAdapterRecord {
        instance_id: instance_id.to_owned(),
        id: id.to_owned(),
        name: name.to_owned(),
        description: Some(format!("adapter {name}")),
        profile: "native_1.0".to_owned(),
        crk_id: "crk-1".to_owned(),
        created_at: at,
        created_by: "alice".to_owned(),
        updated_at: at,
        updated_by: "alice".to_owned(),
    }
}

pub fn kmip_certificate(
    a: &KmipAdapterRecord,
    id: &str,
    name: &str,
    at: i64,
) -> KmipCertificateRecord {
    KmipCertificateRecord {
        instance_id: a.instance_id.clone(),
        adapter_id: a.id.clone(),
        id: id.to_owned(),
        name: name.to_owned(),
        fingerprint: format!("fp-{id}"),
        certificate: format!("-----BEGIN CERTIFICATE-----\n{id}\n-----END CERTIFICATE-----\n"),
        created_at: at,
        created_by: "alice".to_owned(),
    }
}

pub async fn kmip_adapters(store: Arc<dyn Store>) {
    let s = store.as_ref();
    instance_with_ring(s, "i1", 1).await;
    instance_with_ring(s, "i2", 2).await;
    let a1 = kmip_adapter("i1", "a1", "first", 10);
    let a2 = kmip_adapter("i1", "a2", "second", 20);
    let other = kmip_adapter("i2", "a3", "first", 5);
    s.apply(&batch([
        Write::InsertKmipAdapter(a2.clone()),
        Write::InsertKmipAdapter(a1.clone()),
        Write::InsertKmipAdapter(other.clone()),
    ]))
    .await
    .expect("insert adapters");
    assert_eq!(
        s.kmip_adapters("i1").await.expect("list"),
        vec![a1.clone(), a2.clone()]
    );
    assert_eq!(
        s.kmip_adapters("i2").await.expect("list"),
        vec![other.clone()]
    );
    assert!(s.kmip_adapters("nope").await.expect("list").is_empty());

    // Names are unique per instance; ids too.
    let dup = kmip_adapter("i1", "a9", "first", 30);
    assert_already_exists(
        fails(s.apply(&batch([Write::InsertKmipAdapter(dup)])).await),
        "kmip adapter",
        "first",
    );
    let dup_id = kmip_adapter("i1", "a1", "third", 30);
    assert_already_exists(
        fails(s.apply(&batch([Write::InsertKmipAdapter(dup_id)])).await),
        "kmip adapter",
        "third",
    );
    // An adapter needs its instance.
    assert_not_found(
        fails(
            s.apply(&batch([Write::InsertKmipAdapter(kmip_adapter(
                "zz", "a8", "x", 1,
            ))]))
            .await,
        ),
        "instance",
        "zz",
    );

    // Certificates: unique id, fingerprint, and name within the adapter.
    let c1 = kmip_certificate(&a1, "c1", "one", 40);
    let c2 = kmip_certificate(&a1, "c2", "two", 50);
    let c3 = kmip_certificate(&a2, "c3", "one", 45);
    s.apply(&batch([
        Write::InsertKmipCertificate(c2.clone()),
        Write::InsertKmipCertificate(c1.clone()),
        Write::InsertKmipCertificate(c3.clone()),
    ]))
    .await
    .expect("insert certificates");
    assert_eq!(
        s.kmip_certificates("i1", "a1").await.expect("list"),
        vec![c1.clone(), c2.clone()]
    );
    assert_eq!(
        s.kmip_certificates("i1", "a2").await.expect("list"),
        vec![c3.clone()]
    );
    assert_eq!(
        s.kmip_certificate_by_fingerprint("fp-c2")
            .await
            .expect("get"),
        Some(c2.clone())
    );
    assert_eq!(
        s.kmip_certificate_by_fingerprint("fp-zz")
            .await
            .expect("get"),
        None
    );
    let mut same_fp = kmip_certificate(&a2, "c4", "four", 60);
    same_fp.fingerprint = "fp-c1".to_owned();
    assert_already_exists(
        fails(
            s.apply(&batch([Write::InsertKmipCertificate(same_fp)]))
                .await,
        ),
        "kmip certificate",
        "four",
    );
    let same_name = kmip_certificate(&a1, "c5", "one", 60);
    assert_already_exists(
        fails(
            s.apply(&batch([Write::InsertKmipCertificate(same_name)]))
                .await,
        ),
        "kmip certificate",
        "one",
    );
    let orphan = kmip_certificate(&kmip_adapter("i1", "gone", "g", 1), "c6", "six", 60);
    assert_not_found(
        fails(
            s.apply(&batch([Write::InsertKmipCertificate(orphan)]))
                .await,
        ),
        "kmip adapter",
        "gone",
    );

    // A failed write in a batch leaves nothing behind.
    let c7 = kmip_certificate(&a1, "c7", "seven", 70);
    fails(
        s.apply(&batch([
            Write::InsertKmipCertificate(c7),
            Write::InsertKmipAdapter(kmip_adapter("i1", "a1", "again", 1)),
        ]))
        .await,
    );
    assert_eq!(
        s.kmip_certificate_by_fingerprint("fp-c7")
            .await
            .expect("get"),
        None
    );

    // Deleting a certificate.
    s.apply(&batch([Write::DeleteKmipCertificate {
        instance_id: "i1".into(),
        adapter_id: "a1".into(),
        id: "c1".into(),
    }]))
    .await
    .expect("delete certificate");
    assert_eq!(
        s.kmip_certificate_by_fingerprint("fp-c1")
            .await
            .expect("get"),
        None
    );
    assert_not_found(
        fails(
            s.apply(&batch([Write::DeleteKmipCertificate {
                instance_id: "i1".into(),
                adapter_id: "a2".into(),
                id: "c2".into(),
            }]))
            .await,
        ),
        "kmip certificate",
        "c2",
    );

    // Deleting an adapter deletes its certificates, and only its own.
    s.apply(&batch([Write::DeleteKmipAdapter {
        instance_id: "i1".into(),
        id: "a1".into(),
    }]))
    .await
    .expect("delete adapter");
    assert_eq!(s.kmip_adapters("i1").await.expect("list"), vec![a2.clone()]);
    assert!(
        s.kmip_certificates("i1", "a1")
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        s.kmip_certificate_by_fingerprint("fp-c2")
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        s.kmip_certificate_by_fingerprint("fp-c3")
            .await
            .expect("get"),
        Some(c3)
    );
    assert_not_found(
        fails(
            s.apply(&batch([Write::DeleteKmipAdapter {
                instance_id: "i2".into(),
                id: "a1".into(),
            }]))
            .await,
        ),
        "kmip adapter",
        "a1",
    );

    // Zeroizing an instance removes its adapters and certificates, and no other instance's.
    let a4 = kmip_adapter("i2", "a4", "fourth", 80);
    s.apply(&batch([
        Write::InsertKmipAdapter(a4.clone()),
        Write::InsertKmipCertificate(kmip_certificate(&a4, "c8", "eight", 90)),
    ]))
    .await
    .expect("insert");
    let i2 = s.instance("i2").await.expect("get").expect("exists");
    s.zeroize_instance(&i2, &audit("i2", 100, "{}"))
        .await
        .expect("zeroize");
    assert!(s.kmip_adapters("i2").await.expect("list").is_empty());
    assert_eq!(
        s.kmip_certificate_by_fingerprint("fp-c8")
            .await
            .expect("get"),
        None
    );
    assert_eq!(s.kmip_adapters("i1").await.expect("list"), vec![a2]);
    assert!(
        s.kmip_certificate_by_fingerprint("fp-c3")
            .await
            .expect("get")
            .is_some()
    );
}

pub async fn kmip_adapter_objects(store: Arc<dyn Store>) {
    let s = store.as_ref();
    instance_with_ring(s, "i1", 1).await;
    instance_with_ring(s, "i2", 2).await;
    let tagged = |instance: &str, id: &str, adapter: &str, state: i64, at: i64| {
        let mut k = key(instance, id, &[], at);
        k.state = state;
        k.attributes = format!(
            r#"{{"kmip":{{"x":1}},"kmip_adapter":{{"adapter_id":"{adapter}","cert_id":"c"}}}}"#
        );
        k
    };
    for k in [
        tagged("i1", "k3", "a1", 1, 30),
        tagged("i1", "k1", "a1", 5, 10),
        tagged("i1", "k2", "a1", 1, 20),
        tagged("i1", "k4", "a2", 1, 40),
        tagged("i2", "k5", "a1", 1, 50),
        key("i1", "k6", &[], 60),
    ] {
        insert(s, &k).await;
    }
    let all = KmipObjectFilter::default();
    let (page, total) = s.kmip_objects("i1", "a1", &all).await.expect("objects");
    assert_eq!(ids(&page), ["k1", "k2", "k3"]);
    assert_eq!(total, 3);
    assert_eq!(page[1], tagged("i1", "k2", "a1", 1, 20));

    let active = KmipObjectFilter {
        states: vec![1, 2],
        ..KmipObjectFilter::default()
    };
    let (page, total) = s.kmip_objects("i1", "a1", &active).await.expect("objects");
    assert_eq!((ids(&page), total), (vec!["k2", "k3"], 2));

    let paged = KmipObjectFilter {
        states: Vec::new(),
        offset: 1,
        limit: Some(1),
    };
    let (page, total) = s.kmip_objects("i1", "a1", &paged).await.expect("objects");
    assert_eq!((ids(&page), total), (vec!["k2"], 3));

    let (page, total) = s.kmip_objects("i1", "a2", &all).await.expect("objects");
    assert_eq!((ids(&page), total), (vec!["k4"], 1));
    let (page, total) = s.kmip_objects("i2", "a1", &all).await.expect("objects");
    assert_eq!((ids(&page), total), (vec!["k5"], 1));
    let (page, total) = s.kmip_objects("i1", "zz", &all).await.expect("objects");
    assert_eq!((page.len(), total), (0, 0));
}

/// `KeyFilter::without_kmip_adapter_objects`: Key Protect's listing, count, search and paging
/// see only real keys, whatever else the attributes hold.
pub async fn listing_without_kmip_adapter_objects(store: Arc<dyn Store>) {
    let s = store.as_ref();
    instance_with_ring(s, "i1", 1).await;
    let object = |id: &str, at: i64| {
        let mut k = key("i1", id, &[], at);
        k.attributes = r#"{"kmip":{"x":1},"kmip_adapter":{"adapter_id":"a1","cert_id":"c","crk_id":"k1","crk_version_id":"k1-v1"}}"#
            .to_owned();
        k
    };
    // The tag's name deeper in the attributes, not a member of them: a real key.
    let mut k3 = key("i1", "k3", &["alias-k3"], 30);
    k3.attributes = r#"{"kmip":{"x-note":{"kmip_adapter":{"adapter_id":"a1"}}}}"#.to_owned();
    let mut o4 = object("o4", 40);
    o4.state = 2;
    for k in [
        key("i1", "k1", &[], 10),
        object("o2", 20),
        k3,
        o4,
        key("i1", "k5", &[], 50),
        object("o6", 60),
    ] {
        insert(s, &k).await;
    }
    let keys_only = |f: KeyFilter| KeyFilter {
        without_kmip_adapter_objects: true,
        ..f
    };
    let check = |filter: KeyFilter, want: Vec<&'static str>, total: u64| async move {
        let listed = s.list_keys("i1", &filter).await.expect("list");
        assert_eq!(ids(&listed), want, "{filter:?}");
        assert_eq!(
            s.count_keys("i1", &filter).await.expect("count"),
            total,
            "{filter:?}"
        );
    };
    check(
        KeyFilter::default(),
        vec!["k1", "o2", "k3", "o4", "k5", "o6"],
        6,
    )
    .await;
    check(keys_only(KeyFilter::default()), vec!["k1", "k3", "k5"], 3).await;
    // Paging counts only real keys.
    check(
        keys_only(KeyFilter {
            offset: 1,
            limit: Some(1),
            ..KeyFilter::default()
        }),
        vec!["k3"],
        3,
    )
    .await;
    check(
        keys_only(KeyFilter {
            offset: 2,
            limit: Some(5),
            ..KeyFilter::default()
        }),
        vec!["k5"],
        3,
    )
    .await;
    // With the other conditions: states, id, search, sort.
    check(
        keys_only(KeyFilter {
            states: vec![2],
            ..KeyFilter::default()
        }),
        vec![],
        0,
    )
    .await;
    check(
        keys_only(KeyFilter {
            id: Some("o2".to_owned()),
            ..KeyFilter::default()
        }),
        vec![],
        0,
    )
    .await;
    check(
        keys_only(KeyFilter {
            search: Some("name-".to_owned()),
            sort: vec![KeySort {
                field: KeySortField::Id,
                descending: true,
            }],
            ..KeyFilter::default()
        }),
        vec!["k5", "k3", "k1"],
        3,
    )
    .await;
    check(
        keys_only(KeyFilter {
            search: Some("alias-k3".to_owned()),
            ..KeyFilter::default()
        }),
        vec!["k3"],
        1,
    )
    .await;
    // The adapter's own listing still has its objects.
    let (page, total) = s
        .kmip_objects("i1", "a1", &KmipObjectFilter::default())
        .await
        .expect("objects");
    assert_eq!((ids(&page), total), (vec!["o2", "o4", "o6"], 3));
}
