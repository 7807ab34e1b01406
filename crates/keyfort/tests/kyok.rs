//! Keep Your Own Key end to end, driving the real binary as custodians and an administrator
//! would: custodian key files, M-of-N initialization, restarts that leave the instance sealed,
//! refused parts, unsealing, master key rotation under load, a crash in the middle of a re-seal
//! and its resumption, no key material at rest, and zeroization.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

#[test]
fn custodians_initialize_unseal_rotate_survive_a_crash_and_zeroize() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Custodian files live outside the data directory, as they would on custodians' machines.
    let cust = tmp.path().join("custodians");
    std::fs::create_dir(&cust).unwrap();
    let logs = tmp.path();
    let file = |name: &str| path_str(&cust.join(name));
    let pass = |who: &str| file(&format!("{who}.pass"));

    // ---- custodians make their keys ----------------------------------------------------------
    let mut server = Server::start(&data, logs, "s1", &[]);
    for who in CUSTODIANS {
        std::fs::write(
            cust.join(format!("{who}.pass")),
            format!("{who} passphrase\n"),
        )
        .unwrap();
        let made = server.json_anon(&[
            "custodian",
            "keygen",
            "--out",
            &file(who),
            "--passphrase-file",
            &pass(who),
        ]);
        assert_eq!(made["name"], who);
        assert_eq!(mode(&cust.join(format!("{who}.key"))), 0o600);
        let key_text = std::fs::read_to_string(cust.join(format!("{who}.key"))).unwrap();
        assert!(key_text.contains("scrypt"), "{key_text}");
    }
    let publics = CUSTODIANS.map(|who| file(&format!("{who}.pub"))).join(",");

    // ---- instances, initialized with custodians -------------------------------------------------
    let prod = server.json(&["instance", "create", "prod"]);
    assert_eq!(prod["state"], "uninitialized");
    let prod = prod["id"].as_str().unwrap().to_owned();
    let other = server.json(&["instance", "create", "other"]);
    let other = other["id"].as_str().unwrap().to_owned();
    for (id, dir) in [(&prod, "v1"), (&other, "other")] {
        let init = server.json(&[
            "instance",
            "init",
            id,
            "--custodians",
            &publics,
            "--threshold",
            "2",
            "--out-dir",
            &file(dir),
        ]);
        assert_eq!(
            init["parts_written"].as_array().map(Vec::len),
            Some(3),
            "{init}"
        );
        for who in CUSTODIANS {
            let part = cust.join(dir).join(format!("{who}.part"));
            assert_eq!(mode(&part), 0o600, "{}", part.display());
        }
    }
    let part = |dir: &str, who: &str| file(&format!("{dir}/{who}.part"));
    let key = |who: &str| file(&format!("{who}.key"));
    // Initializing twice is refused.
    let err = server.refused(
        &[
            "instance",
            "init",
            &prod,
            "--custodians",
            &publics,
            "--threshold",
            "2",
            "--out-dir",
            &file("again"),
        ],
        true,
    );
    assert!(err.contains("INSTANCE_ALREADY_INITIALIZED"), "{err}");

    // ---- keys in prod: three root keys, one standard key; a wrapped DEK ----------------------
    let mut roots = Vec::new();
    for i in 0..3 {
        let created = server.json(&[
            "key",
            "create",
            "--name",
            &format!("root-{i}"),
            "--instance",
            &prod,
        ]);
        assert_eq!(created["extractable"], false);
        roots.push(created["id"].as_str().unwrap().to_owned());
    }
    let standard = server.json(&[
        "key",
        "create",
        "--name",
        "std",
        "--standard",
        "--instance",
        &prod,
    ]);
    let standard = standard["id"].as_str().unwrap().to_owned();
    let material = server.json(&["key", "material", &standard, "--instance", &prod]);
    let material = material["payload"].as_str().unwrap().to_owned();
    let wrapped = server.json(&[
        "key",
        "wrap",
        &roots[0],
        "--instance",
        &prod,
        "--aad",
        "app,v1",
    ]);
    let ciphertext = wrapped["ciphertext"].as_str().unwrap().to_owned();
    let dek = wrapped["plaintext"].as_str().unwrap().to_owned();
    assert_eq!(B64.decode(&dek).unwrap().len(), 32);
    let unwrap_args = [
        "key",
        "unwrap",
        &roots[0],
        "--instance",
        &prod,
        "--ciphertext",
        &ciphertext,
        "--aad",
        "app,v1",
    ];
    assert_eq!(server.json(&unwrap_args)["plaintext"], json!(dek));
    server.terminate();

    // ---- restart: prod is sealed, the dev instance is not ----------------------------------------
    let mut server = Server::start(&data, logs, "s2", &[]);
    let status = server.status(&prod);
    assert_eq!(status["state"], "sealed", "{status}");
    assert_eq!(status["method"], "custodians");
    assert_eq!(status["threshold"], 2);
    assert_eq!(status["custodians"], json!(CUSTODIANS));
    assert_eq!(status["loaded"], json!([]));
    let dev_instance = server.dev["instance_id"].as_str().unwrap().to_owned();
    assert_eq!(server.status(&dev_instance)["state"], "unsealed");
    let err = server.refused(&unwrap_args, true);
    assert!(err.contains("INSTANCE_SEALED"), "{err}");
    let metrics = server.api().text("/metrics");
    assert!(
        metrics.contains(&format!(
            "keyfort_instance_unsealed{{instance=\"{prod}\",name=\"prod\"}} 0"
        )),
        "{metrics}"
    );

    // ---- unsealing, part by part, with refusals that do not count ----------------------------
    let unseal = |dir: &str, who: &str, with_key: &str| {
        vec![
            "instance".to_owned(),
            "unseal".to_owned(),
            prod.clone(),
            "--part".to_owned(),
            part(dir, who),
            "--key".to_owned(),
            key(with_key),
            "--passphrase-file".to_owned(),
            pass(with_key),
        ]
    };
    let alice = unseal("v1", "alice", "alice");
    let status = server.json_anon(&args(&alice));
    assert_eq!(status["state"], "sealed");
    assert_eq!(status["loaded"], json!(["alice"]), "1 of 2: {status}");

    let err = server.refused(&args(&alice), false);
    assert!(
        err.contains("PART_REJECTED") && err.contains("already loaded"),
        "{err}"
    );

    let err = server.refused(&args(&unseal("v1", "bob", "carol")), false);
    assert!(err.contains("belongs to another custodian"), "{err}");

    let tampered = cust.join("v1/bob-tampered.part");
    let mut value: Value =
        serde_json::from_str(&std::fs::read_to_string(cust.join("v1/bob.part")).unwrap()).unwrap();
    let sealed = value["sealed"].as_str().unwrap().to_owned();
    let mid = sealed.len() / 2;
    let flipped = if &sealed[mid..=mid] == "A" { "B" } else { "A" };
    value["sealed"] = json!(format!("{}{flipped}{}", &sealed[..mid], &sealed[mid + 1..]));
    std::fs::write(&tampered, value.to_string()).unwrap();
    let err = server.refused(&args(&unseal("v1", "bob-tampered", "bob")), false);
    assert!(err.contains("was changed"), "{err}");

    let err = server.refused(&args(&unseal("other", "bob", "bob")), false);
    assert!(
        err.contains("PART_REJECTED") && err.contains("another instance"),
        "{err}"
    );
    assert_eq!(
        server.status(&prod)["loaded"],
        json!(["alice"]),
        "refusals did not count"
    );

    let status = server.json_anon(&args(&unseal("v1", "bob", "bob")));
    assert_eq!(status["state"], "unsealed", "{status}");
    assert_eq!(server.json(&unwrap_args)["plaintext"], json!(dek));
    assert_eq!(
        server.json(&["key", "material", &standard, "--instance", &prod])["payload"],
        json!(material)
    );

    // ---- rotation under load -----------------------------------------------------------------
    let load = Load::start(&server, &prod, &roots[1]);
    std::thread::sleep(Duration::from_millis(300));
    let rotate = |name: &str, signers: [&str; 2], out_dir: &str, server: &Server| {
        let cmd = file(name);
        let made = server.json_anon(&[
            "instance",
            "command",
            "new",
            "rotate",
            &prod,
            "--out",
            &cmd,
            "--expires-in",
            "10m",
        ]);
        assert_eq!(made["command"], "rotate_master_key");
        for who in signers {
            let signed = server.json_anon(&[
                "custodian",
                "sign",
                &cmd,
                "--key",
                &key(who),
                "--passphrase-file",
                &pass(who),
            ]);
            assert_eq!(signed["command"], "rotate_master_key");
        }
        server.json(&[
            "instance",
            "command",
            "submit",
            &cmd,
            "--out-dir",
            &file(out_dir),
        ])
    };
    // One signature is not enough.
    let lone = file("rotate-lone.json");
    server.json_anon(&[
        "instance", "command", "new", "rotate", &prod, "--out", &lone,
    ]);
    server.json_anon(&[
        "custodian",
        "sign",
        &lone,
        "--key",
        &key("carol"),
        "--passphrase-file",
        &pass("carol"),
    ]);
    let err = server.refused(
        &[
            "instance",
            "command",
            "submit",
            &lone,
            "--out-dir",
            &file("lone"),
        ],
        true,
    );
    assert!(
        err.contains("COMMAND_REJECTED") && err.contains("not enough"),
        "{err}"
    );
    // Nor does a custodian's command go through without an administrator.
    let err = server.refused(
        &[
            "instance",
            "command",
            "submit",
            &lone,
            "--out-dir",
            &file("lone"),
        ],
        false,
    );
    assert!(err.contains("no API key"), "{err}");

    let outcome = rotate("rotate-1.json", ["alice", "bob"], "v2", &server);
    assert_eq!(outcome["outcome"], "rotated", "{outcome}");
    assert_eq!(outcome["master_key_version"], 2);
    assert_eq!(outcome["parts_written"].as_array().map(Vec::len), Some(3));
    let status = server.wait_status(&prod, "re-seal to v2", |s| {
        s["reseal"]["running"] == json!(false) && s["reseal"]["done"] == s["reseal"]["total"]
    });
    assert_eq!(status["master_key_version"], 2);
    assert_eq!(status["reseal"]["to_version"], 2);
    std::thread::sleep(Duration::from_millis(300));
    let (ops, errors) = load.finish();
    assert!(ops > 0, "the load ran");
    eprintln!("rotation to v2: {ops} wrap/unwrap round trips during the rotation, status {status}");
    assert!(
        errors.is_empty(),
        "{} errors during rotation: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // Replaying the executed command is refused.
    let err = server.refused(
        &[
            "instance",
            "command",
            "submit",
            &file("rotate-1.json"),
            "--out-dir",
            &file("replay"),
        ],
        true,
    );
    assert!(err.contains("COMMAND_REJECTED"), "{err}");

    // ---- many more keys, then sealed: the old parts are stale ---------------------------------
    let api = server.api();
    let mut extra = Vec::with_capacity(EXTRA_KEYS);
    for i in 0..EXTRA_KEYS {
        let (status, created) = api.post(
            &format!("/api/keyfort/v1/instances/{prod}/keys"),
            &json!({"name": format!("bulk-{i}")}),
        );
        assert_eq!(status, 201, "{created}");
        extra.push(created["id"].as_str().unwrap().to_owned());
    }
    drop(api);
    server.json(&["instance", "seal", &prod]);
    assert_eq!(server.status(&prod)["state"], "sealed");
    let err = server.refused(&args(&unseal("v1", "alice", "alice")), false);
    assert!(err.contains("another master key version"), "{err}");
    server.terminate();

    // ---- crash in the middle of a re-seal ------------------------------------------------------
    let paced = [
        ("KEYFORT_RESEAL_BATCH_SIZE", "10"),
        ("KEYFORT_RESEAL_PAUSE_MS", "200"),
    ];
    let mut server = Server::start(&data, logs, "s3", &paced);
    server.json_anon(&args(&unseal("v2", "alice", "alice")));
    let status = server.json_anon(&args(&unseal("v2", "carol", "carol")));
    assert_eq!(status["state"], "unsealed", "{status}");
    // Load again, now across a paced re-seal of 300 keys.
    let load = Load::start(&server, &prod, &roots[2]);
    let outcome = rotate("rotate-2.json", ["alice", "carol"], "v3", &server);
    assert_eq!(outcome["master_key_version"], 3, "{outcome}");
    let status = server.wait_status(&prod, "re-seal to v3 under way", |s| {
        s["reseal"]["running"] == json!(true) && s["reseal"]["done"].as_u64().unwrap_or(0) > 0
    });
    let total = status["reseal"]["total"].as_u64().unwrap();
    assert!(total as usize >= EXTRA_KEYS, "{status}");
    assert!(
        status["reseal"]["done"].as_u64().unwrap() < total,
        "still under way: {status}"
    );
    let metrics = server.api().text("/metrics");
    assert!(
        metrics.contains(&format!(
            "keyfort_reseal_running{{instance=\"{prod}\",name=\"prod\"}} 1"
        )),
        "{metrics}"
    );
    let (ops, errors) = load.finish();
    assert!(ops > 0, "the load ran");
    assert!(errors.is_empty(), "errors during the re-seal: {errors:?}");
    eprintln!("killed during the re-seal at {status} after {ops} round trips under load");
    server.kill();

    let mut server = Server::start(&data, logs, "s4", &[]);
    let status = server.status(&prod);
    assert_eq!(status["state"], "sealed", "{status}");
    assert_eq!(status["master_key_version"], 3);
    server.json_anon(&args(&unseal("v3", "bob", "bob")));
    server.json_anon(&args(&unseal("v3", "carol", "carol")));
    let status = server.wait_status(&prod, "re-seal resumed and done", |s| {
        s["state"] == "unsealed"
            && s["reseal"]["running"] == json!(false)
            && s["reseal"]["done"] == s["reseal"]["total"]
    });
    assert_eq!(status["reseal"]["to_version"], 3, "{status}");
    eprintln!("resumed after the crash: {status}");
    // Every key still works.
    assert_eq!(server.json(&unwrap_args)["plaintext"], json!(dek));
    assert_eq!(
        server.json(&["key", "material", &standard, "--instance", &prod])["payload"],
        json!(material)
    );
    let api = server.api();
    for id in roots.iter().chain(&extra) {
        let (status, body) = api.post(
            &format!("/api/keyfort/v1/instances/{prod}/keys/{id}/wrap"),
            &json!({"plaintext": "AAEC"}),
        );
        assert_eq!(status, 200, "{id}: {body}");
    }
    drop(api);
    server.json(&["instance", "seal", &prod]);
    let err = server.refused(&args(&unseal("v2", "alice", "alice")), false);
    assert!(err.contains("another master key version"), "{err}");
    server.json_anon(&args(&unseal("v3", "alice", "alice")));
    server.json_anon(&args(&unseal("v3", "bob", "bob")));

    // ---- nothing secret at rest in the data directory ------------------------------------------
    let material_bytes = B64.decode(&material).unwrap();
    let dek_bytes = B64.decode(&dek).unwrap();
    let mut files = Vec::new();
    files_under(&data, &mut files);
    assert!(files.iter().any(|f| f.ends_with("keyfort.db")), "{files:?}");
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        for (what, secret) in [
            ("standard key material", &material_bytes),
            ("DEK", &dek_bytes),
        ] {
            for form in [
                secret.clone(),
                hex(secret).into_bytes(),
                B64.encode(secret).into_bytes(),
            ] {
                assert!(
                    !contains(&bytes, &form),
                    "{what} found in {}",
                    path.display()
                );
            }
        }
    }

    // ---- zeroization ---------------------------------------------------------------------------
    let cmd = file("zeroize.json");
    server.json_anon(&[
        "instance", "command", "new", "zeroize", &prod, "--out", &cmd,
    ]);
    for who in ["bob", "carol"] {
        server.json_anon(&[
            "custodian",
            "sign",
            &cmd,
            "--key",
            &key(who),
            "--passphrase-file",
            &pass(who),
        ]);
    }
    let outcome = server.json(&[
        "instance",
        "command",
        "submit",
        &cmd,
        "--out-dir",
        &file("zeroized"),
    ]);
    assert_eq!(outcome["outcome"], "zeroized", "{outcome}");
    assert_eq!(server.status(&prod)["state"], "zeroized");
    let err = server.refused(&["key", "get", &roots[0], "--instance", &prod], true);
    assert!(
        err.contains("404") || err.contains("INSTANCE_ZEROIZED"),
        "{err}"
    );
    let err = server.refused(&unwrap_args, true);
    assert!(
        err.contains("INSTANCE_ZEROIZED") || err.contains("404"),
        "{err}"
    );
    let err = server.refused(&args(&unseal("v3", "alice", "alice")), false);
    assert!(err.contains("INSTANCE_ZEROIZED"), "{err}");
    // The other instance is untouched.
    assert_eq!(server.status(&other)["state"], "sealed");
    // The audit trail (store.audit_events) has no REST endpoint yet; it is checked in the core's
    // tests.
    server.terminate();
}
