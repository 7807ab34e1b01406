//! `keyfort iam …` and `keyfort audit …` against a real dev server: a principal with a role,
//! its API key rotated and revoked, every request in the audit trail, and `audit verify`
//! catching an edited event in the database file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn iam_lifecycle_and_audit_verification() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, work.path(), "iam", &[]);
    let instance = server.dev["instance_id"].as_str().unwrap().to_owned();

    // A reader of the dev instance with an API key.
    let reader = server.json(&[
        "iam",
        "principal",
        "create",
        "auditor",
        "--service",
        "--instance",
        &instance,
        "--role",
        &format!("Reader@{instance}"),
    ]);
    let reader_id = reader["id"].as_str().unwrap().to_owned();
    let issued = server.json(&["iam", "api-key", "create", &reader_id, "--name", "ci"]);
    let key1 = issued["api_key"].as_str().unwrap().to_owned();
    let key1_id = issued["id"].as_str().unwrap().to_owned();
    let listed = server.json(&["iam", "api-key", "list", &reader_id]);
    assert!(
        !listed.to_string().contains(&key1),
        "secrets are never listed"
    );

    // The reader can list keys but not create them.
    let ok = server.cli_as(&key1, &["key", "list", "--instance", &instance]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let denied = server.cli_as(
        &key1,
        &["key", "create", "--instance", &instance, "--name", "x"],
    );
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403"));

    // Rotation: the new key works, the old one is refused.
    let rotated = server.json(&["iam", "api-key", "rotate", &key1_id]);
    let key2 = rotated["api_key"].as_str().unwrap().to_owned();
    let key2_id = rotated["id"].as_str().unwrap().to_owned();
    assert!(server.cli_as(&key2, &["token"]).status.success());
    assert!(!server.cli_as(&key1, &["token"]).status.success());
    // Revocation.
    server.json(&["iam", "api-key", "revoke", &key2_id]);
    assert!(!server.cli_as(&key2, &["token"]).status.success());
    // Roles can change: give the principal Manager and disable it.
    let updated = server.json(&[
        "iam",
        "principal",
        "update",
        &reader_id,
        "--role",
        &format!("Manager@{instance}"),
        "--disable",
    ]);
    assert_eq!(updated["disabled"], true);
    assert_eq!(updated["roles"][0]["role"], "Manager");

    // The audit trail has the allowed and the denied requests, and verifies.
    let events = server.json(&["audit", "list", "--instance", &instance, "--limit", "1000"]);
    let events = events["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "key.list" && e["actor"] == "auditor")
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "key.create" && e["outcome"] == "denied")
    );
    let denied_only = server.json(&[
        "audit",
        "list",
        "--instance",
        &instance,
        "--outcome",
        "denied",
    ]);
    assert!(
        denied_only["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["outcome"] == "denied")
    );
    let verified = server.json(&["audit", "verify", "--instance", &instance]);
    assert_eq!(verified["ok"], true, "{verified}");
    let export = server.cli(&["audit", "export", "--instance", &instance]);
    assert!(export.status.success());
    let lines = String::from_utf8(export.stdout).unwrap();
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["typeURI"],
        "http://schemas.dmtf.org/cloud/audit/1.0/event"
    );

    // Edit one event in the database file behind the server's back: verify fails, naming it.
    let db = data.join("keyfort.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::{ConnectOptions as _, Connection as _};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(&db).connect().await.unwrap();
        sqlx::query("UPDATE audit_blocks SET events = replace(events, 'denied', 'success') WHERE instance_id = ?1 AND events LIKE '%denied%'")
            .bind(&instance)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    let out = server.cli(&["audit", "verify", "--instance", &instance]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audit chain") && err.contains("changed"),
        "{err}"
    );
}
