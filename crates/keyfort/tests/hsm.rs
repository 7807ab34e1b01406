//! HSM-backed unseal end to end: a real SoftHSM2 token holds the key that wraps an instance's
//! master key; the server unseals that instance by itself at every start.
//!
//! Needs Debian's `softhsm2` (the test script installs it). Missing pieces fail the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const MODULE_PATHS: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];
const PIN: &str = "keyfort-e2e-user-pin-2468";

fn module() -> PathBuf {
    MODULE_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "SoftHSM2 module not found in {MODULE_PATHS:?}: install the Debian package softhsm2"
            )
        })
}

/// A fresh SoftHSM2 token in `dir`; returns the config file to pass as SOFTHSM2_CONF.
fn init_token(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "keyfort",
            "--so-pin",
            "1234",
            "--pin",
            PIN,
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("softhsm2-util cannot run ({e}): install the Debian package softhsm2")
        });
    assert!(
        out.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}

fn write_config(dir: &Path, name: &str, pin: &str) -> PathBuf {
    let pin_file = dir.join(format!("{name}.pin"));
    std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[hsm]\nmodule = {:?}\ntoken_label = \"keyfort\"\nkey_label = \"keyfort-mk-wrap\"\npin_file = {:?}\n",
            module().display().to_string(),
            pin_file.display().to_string()
        ),
    )
    .unwrap();
    config
}

#[test]
fn hsm_backed_instance_unseals_itself_at_start() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let conf = init_token(work.path());
    let config = write_config(work.path(), "keyfort", PIN);
    let conf_s = conf.display().to_string();
    let config_s = config.display().to_string();
    let env = [("SOFTHSM2_CONF", conf_s.as_str())];

    let mut server =
        Server::start_with(&data, work.path(), "first", &env, &["--config", &config_s]);
    let created = server.json(&["instance", "create", "vault"]);
    let id = created["id"].as_str().unwrap().to_owned();
    server.json(&["instance", "init", &id, "--hsm"]);
    assert_eq!(server.status(&id)["state"], "unsealed");
    assert_eq!(server.status(&id)["method"], "hsm");
    let payload_file = work.path().join("material.bin");
    let material: Vec<u8> = (0..32u8).map(|i| i ^ 0x5A).collect();
    std::fs::write(&payload_file, &material).unwrap();
    let key = server.json(&[
        "key",
        "create",
        "--instance",
        &id,
        "--name",
        "std",
        "--standard",
        "--payload-file",
        &payload_file.display().to_string(),
    ]);
    let key_id = key["id"].as_str().unwrap().to_owned();
    server.terminate();

    // Restart: the instance is unsealed by the HSM without anyone's help.
    let mut server =
        Server::start_with(&data, work.path(), "second", &env, &["--config", &config_s]);
    assert_eq!(server.status(&id)["state"], "unsealed");
    let read = server.json(&["key", "material", &key_id, "--instance", &id]);
    use base64::Engine as _;
    let back = base64::engine::general_purpose::STANDARD
        .decode(read["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(back, material);
    server.terminate();

    // The wrapped master key is useless without the token: a wrong PIN stops the server with a
    // clear error that does not show the PIN.
    let wrong = write_config(work.path(), "wrong", "not-the-pin-13579");
    let out = Command::new(env!("CARGO_BIN_EXE_keyfort"))
        .env("SOFTHSM2_CONF", &conf)
        .args(["server", "--dev", "--data-dir"])
        .arg(&data)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HSM"), "{err}");
    assert!(!err.contains("not-the-pin-13579"), "{err}");

    // Nothing in the data directory holds the key material.
    let mut files = Vec::new();
    files_under(&data, &mut files);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!contains(&bytes, &material), "material in {}", f.display());
    }
}
