//! The binary's command line and its bad-input errors: one line on stderr, the right exit code,
//! and nothing written.

use std::path::Path;
use std::process::{Command, Output};

const ENV_VARS: [&str; 14] = [
    "KEYFORT_CONFIG",
    "KEYFORT_DATA_DIR",
    "KEYFORT_HTTP_ADDR",
    "KEYFORT_KMIP_ADDR",
    "KEYFORT_GRPC_ADDR",
    "KEYFORT_LOG_FORMAT",
    "KEYFORT_LOG_LEVEL",
    "KEYFORT_TLS_CERT_FILE",
    "KEYFORT_TLS_KEY_FILE",
    "KEYFORT_ADDR",
    "KEYFORT_CACERT",
    "KEYFORT_API_KEY",
    "KEYFORT_INSTANCE",
    "RUST_LOG",
];

fn keyfort(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyfort"));
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run keyfort: {e}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exactly one line, starting `keyfort: error: `.
fn one_error_line(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("keyfort: error: "), "{err:?}");
    err.trim_end().to_owned()
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[test]
fn help_shows_the_command_tree() {
    let out = keyfort(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for (command, words) in [
        ("server", "Run the Keyfort server"),
        ("health", "alive"),
        ("token", "access token"),
        ("instance", "instances"),
        ("key", "keys"),
        ("version", "version"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{command} ")))
            .unwrap_or_else(|| panic!("no `{command}` in:\n{help}"));
        assert!(line.contains(words), "{line}");
    }

    let out = keyfort(&["key", "--help"]);
    let help = stdout(&out);
    for sub in [
        "create",
        "list",
        "get",
        "--instance",
        "--addr",
        "--ca-cert",
        "--api-key",
    ] {
        assert!(help.contains(sub), "`{sub}` missing in:\n{help}");
    }
    let out = keyfort(&["instance", "--help"]);
    let help = stdout(&out);
    assert!(help.contains("list") && help.contains("status"), "{help}");

    let out = keyfort(&["server", "--help"]);
    let help = stdout(&out);
    for flag in [
        "--dev",
        "--config",
        "--data-dir",
        "--http-addr",
        "--kmip-addr",
        "--grpc-addr",
        "--log-format",
        "--log-level",
    ] {
        assert!(help.contains(flag), "`{flag}` missing in:\n{help}");
    }
}

#[test]
fn version_prints_the_version() {
    let out = keyfort(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("keyfort {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = keyfort(&["server", "--http-addr", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    let out = keyfort(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn malformed_config_names_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("keyfort.toml");
    std::fs::write(&config, "data_dir = \"x\"\n\n[log\nlevel = \"info\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let data_dir = dir.path().join("data");
    let out = keyfort(&[
        "server",
        "--config",
        &path_str(&config),
        "--data-dir",
        &path_str(&data_dir),
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_error_line(&out);
    assert!(
        err.contains(&format!("invalid config file {}: line 3", config.display())),
        "{err}"
    );
    assert!(!data_dir.exists(), "nothing created on a config error");
}

#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("keyfort.toml");
    std::fs::write(&config, "[tls]\ncert_file = \"a\"\nkey_flie = \"b\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = keyfort(&["server", "--dev", "--config", &path_str(&config)]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_error_line(&out);
    assert!(err.contains("line 3") && err.contains("key_flie"), "{err}");
}

#[test]
fn non_dev_server_requires_tls() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data_dir = dir.path().join("data");
    let out = keyfort(&[
        "server",
        "--data-dir",
        &path_str(&data_dir),
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_error_line(&out);
    assert!(err.contains("no TLS certificate configured"), "{err}");
    assert!(!data_dir.exists());
}

#[test]
fn missing_tls_files_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data_dir = dir.path().join("data");
    let cert = dir.path().join("missing.crt");
    let out = keyfort(&[
        "server",
        "--data-dir",
        &path_str(&data_dir),
        "--http-addr",
        "127.0.0.1:0",
        "--tls-cert-file",
        &path_str(&cert),
        "--tls-key-file",
        &path_str(&dir.path().join("missing.key")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = one_error_line(&out);
    assert!(
        err.contains(&format!("cannot read TLS certificate {}", cert.display())),
        "{err}"
    );
    assert!(!data_dir.exists());
}

#[test]
fn port_in_use_is_named_and_nothing_is_written() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data_dir = dir.path().join("data");
    let out = keyfort(&[
        "server",
        "--dev",
        "--data-dir",
        &path_str(&data_dir),
        "--http-addr",
        &addr.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = one_error_line(&out);
    assert_eq!(
        err,
        format!("keyfort: error: cannot listen on {addr}: address in use")
    );
    assert!(
        !data_dir.exists(),
        "data dir not created when the port is taken"
    );
}

#[test]
fn unusable_data_dir_is_named() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap_or_else(|e| panic!("{e}"));
    let data_dir = file.join("data");
    let out = keyfort(&[
        "server",
        "--dev",
        "--data-dir",
        &path_str(&data_dir),
        "--http-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = one_error_line(&out);
    assert!(
        err.contains(&format!("cannot use data directory {}", data_dir.display())),
        "{err}"
    );
}

#[test]
fn client_commands_need_an_api_key() {
    let out = keyfort(&["token", "--addr", "https://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = one_error_line(&out);
    assert!(err.contains("no API key"), "{err}");
}

#[test]
fn client_reports_an_unreachable_server() {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let out = keyfort(&["health", "--addr", &format!("https://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = one_error_line(&out);
    assert!(
        err.contains(&format!("GET https://127.0.0.1:{port}/healthz failed")),
        "{err}"
    );
}
