//! `keyfort server --dev` end to end: the real binary on port 0, TLS trusting only the generated
//! CA, the token exchange, the CLI, SIGTERM, and a restart on the same data directory.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const BANNER: &str = "Keyfort dev server is running";

fn keyfort_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyfort"));
    for (var, _) in std::env::vars() {
        if var.starts_with("KEYFORT_") || var == "RUST_LOG" {
            cmd.env_remove(var);
        }
    }
    cmd
}

/// A running dev server; killed on drop if the test did not stop it.
struct DevServer {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl DevServer {
    /// Starts `server --dev` on `data_dir` with logs in `logs`; `tag` names the log files.
    fn start(data_dir: &Path, logs: &Path, tag: &str, http_addr: &str) -> Self {
        let stdout = logs.join(format!("{tag}.out"));
        let stderr = logs.join(format!("{tag}.err"));
        let child = keyfort_command()
            .args(["server", "--dev", "--data-dir"])
            .arg(data_dir)
            .args([
                "--http-addr",
                http_addr,
                "--grpc-addr",
                "127.0.0.1:0",
                "--log-level",
                "info,keyfort=debug",
            ])
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap_or_else(|e| panic!("{e}")))
            .stderr(File::create(&stderr).unwrap_or_else(|e| panic!("{e}")))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start keyfort: {e}"));
        Self {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    fn logs(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits for the banner, printed after dev.json is written.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if std::fs::read_to_string(&self.stdout)
                .unwrap_or_default()
                .contains(BANNER)
            {
                return;
            }
            if let Some(status) = self.try_wait() {
                panic!("keyfort exited early with {status}\n{}", self.logs());
            }
            assert!(
                started.elapsed() < STARTUP_TIMEOUT,
                "no banner after {STARTUP_TIMEOUT:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then waits for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("already stopped"));
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(killed.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                started.elapsed() < STOP_TIMEOUT,
                "still running {STOP_TIMEOUT:?} after SIGTERM\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string `{field}` in {value}"))
}

/// Runs the CLI against the server described by `dev`.
fn cli(dev: &Value, args: &[&str]) -> Output {
    keyfort_command()
        .env(
            "KEYFORT_ADDR",
            format!("https://{}", str_field(dev, "http_addr")),
        )
        .env("KEYFORT_CACERT", str_field(dev, "ca_cert"))
        .env("KEYFORT_API_KEY", str_field(dev, "api_key"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run keyfort: {e}"))
}

/// Runs the CLI and parses its JSON output, failing on a non-zero exit.
fn cli_json(dev: &Value, args: &[&str]) -> Value {
    let out = cli(dev, args);
    assert!(
        out.status.success(),
        "keyfort {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "keyfort {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn https_client(ca_cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca_cert).unwrap_or_else(|e| panic!("{e}"));
    let ca = reqwest::Certificate::from_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_server_end_to_end_and_restart() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data_dir = tmp.path().join("data");
    let logs = tmp.path();

    // ---- first start: everything is created --------------------------------------------------
    let mut server = DevServer::start(&data_dir, logs, "first", "127.0.0.1:0");
    server.wait_ready();
    let dev_json = data_dir.join("dev.json");
    assert_eq!(mode(&dev_json), 0o600);
    let dev = read_json(&dev_json);
    let http_addr = str_field(&dev, "http_addr").to_owned();
    assert!(http_addr.starts_with("127.0.0.1:"), "{http_addr}");
    assert_ne!(http_addr, "127.0.0.1:0", "the real bound port");
    let kmip_addr = str_field(&dev, "kmip_addr");
    assert!(
        kmip_addr.starts_with("127.0.0.1:") && !kmip_addr.ends_with(":0"),
        "{kmip_addr}"
    );
    assert!(str_field(&dev, "grpc_addr").starts_with("127.0.0.1:"));
    let instance_id = str_field(&dev, "instance_id").to_owned();
    let api_key = str_field(&dev, "api_key").to_owned();
    let ca_cert = PathBuf::from(str_field(&dev, "ca_cert"));
    assert!(ca_cert.is_absolute(), "{}", ca_cert.display());
    for field in ["client_cert", "client_key"] {
        assert!(Path::new(str_field(&dev, field)).is_file(), "{field}");
    }
    assert_eq!(mode(Path::new(str_field(&dev, "client_key"))), 0o600);
    let ca_pem = std::fs::read(&ca_cert).unwrap_or_else(|e| panic!("{e}"));
    let banner = std::fs::read_to_string(&server.stdout).unwrap_or_default();
    assert!(
        banner.contains(&format!(
            "export KEYFORT_ADDR=https://{http_addr} KEYFORT_CACERT={} KEYFORT_API_KEY=",
            ca_cert.display()
        )),
        "{banner}"
    );

    // TLS trusting only the generated CA, by name and by address.
    let http = https_client(&ca_cert);
    let port = http_addr.rsplit(':').next().unwrap_or_default();
    for base in [
        format!("https://{http_addr}"),
        format!("https://localhost:{port}"),
    ] {
        let resp = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{base}: {e}"));
        assert_eq!(resp.status(), 200);
    }
    let resp = http
        .get(format!("https://{http_addr}/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);

    // The IAM token exchange.
    let token: Value = http
        .post(format!("https://{http_addr}/identity/token"))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", api_key.as_str()),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(token["token_type"], "Bearer");
    assert!(!str_field(&token, "access_token").is_empty());
    let bad = http
        .post(format!("https://{http_addr}/identity/token"))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", "wrong"),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(bad.status().is_client_error(), "{}", bad.status());

    // The CLI, configured only through the environment.
    let health = cli_json(&dev, &["health"]);
    assert_eq!(health["healthz"]["status"], 200);
    assert_eq!(health["readyz"]["status"], 200);
    let token = cli_json(&dev, &["token"]);
    assert_eq!(token["token_type"], "Bearer");
    let listed = cli_json(&dev, &["instance", "list"]);
    assert!(listed.to_string().contains(&instance_id), "{listed}");
    let status = cli_json(&dev, &["instance", "status"]);
    assert_eq!(str_field(&status, "id"), instance_id);
    let created = cli_json(&dev, &["key", "create", "--name", "e2e-key"]);
    let key_id = str_field(&created, "id").to_owned();
    assert_eq!(str_field(&created, "name"), "e2e-key");
    assert_eq!(created["extractable"], false);
    let material = tmp.path().join("material.bin");
    std::fs::write(&material, [0x42u8; 32]).unwrap_or_else(|e| panic!("{e}"));
    let imported = cli_json(
        &dev,
        &[
            "key",
            "create",
            "--name",
            "imported",
            "--standard",
            "--payload-file",
            &material.to_string_lossy(),
            "--instance",
            &instance_id,
        ],
    );
    assert_eq!(imported["extractable"], true);

    // A wrong API key is one clear error line and exit 1.
    let mut wrong = dev.clone();
    wrong["api_key"] = Value::String("not-the-key".into());
    let out = cli(&wrong, &["key", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("server answered 4"), "{err}");

    // ---- SIGTERM: a clean, prompt exit ----------------------------------------------------------
    let status = server.terminate();
    assert!(status.success(), "exit status {status}\n{}", server.logs());

    // ---- restart on the same directory: same CA, instance, API key and keys --------------------
    let mut server = DevServer::start(&data_dir, logs, "second", "127.0.0.1:0");
    server.wait_ready();
    let dev = read_json(&dev_json);
    assert_eq!(str_field(&dev, "instance_id"), instance_id);
    assert_eq!(str_field(&dev, "api_key"), api_key);
    assert_eq!(
        std::fs::read(&ca_cert).unwrap_or_else(|e| panic!("{e}")),
        ca_pem,
        "CA reused"
    );
    let keys = cli_json(&dev, &["key", "list"]);
    assert!(keys.to_string().contains(&key_id), "{keys}");
    let key = cli_json(&dev, &["key", "get", &key_id]);
    assert_eq!(str_field(&key, "name"), "e2e-key");
    assert_eq!(str_field(&key, "id"), key_id);

    // ---- a second server on the same port fails and writes nothing -----------------------------
    let http_addr = str_field(&dev, "http_addr").to_owned();
    let other_dir = tmp.path().join("other");
    let out = keyfort_command()
        .args(["server", "--dev", "--data-dir"])
        .arg(&other_dir)
        .args(["--http-addr", &http_addr])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!("keyfort: error: cannot listen on {http_addr}: address in use")
    );
    assert!(!other_dir.exists());

    let status = server.terminate();
    assert!(status.success(), "exit status {status}\n{}", server.logs());
}

#[test]
fn json_logs_are_json_lines() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data_dir = tmp.path().join("data");
    let stderr = tmp.path().join("err");
    let stdout = tmp.path().join("out");
    let child = keyfort_command()
        .args(["server", "--dev", "--data-dir"])
        .arg(&data_dir)
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .stdout(File::create(&stdout).unwrap_or_else(|e| panic!("{e}")))
        .stderr(File::create(&stderr).unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut server = DevServer {
        child: Some(child),
        stdout,
        stderr,
    };
    server.wait_ready();
    let status = server.terminate();
    assert!(status.success(), "{}", server.logs());
    let logs = std::fs::read_to_string(&server.stderr).unwrap_or_default();
    assert!(logs.lines().count() >= 2, "{logs}");
    for line in logs.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
    assert!(logs.contains("SIGTERM"), "{logs}");
}

/// Outside dev mode: a config file with `[tls]`, JSON logs giving the bound address, health and
/// readiness over TLS, and no dev files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_server_serves_with_its_own_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .unwrap_or_else(|e| panic!("{e}"));
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .and_then(|p| p.signed_by(&leaf_key, &issuer))
        .unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, data: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("{e}"));
        path
    };
    let ca_file = write("ca.pem", &ca_cert.pem());
    let cert_file = write("tls.crt", &leaf.pem());
    let key_file = write("tls.key", &leaf_key.serialize_pem());
    let data_dir = tmp.path().join("data");
    let config = write(
        "keyfort.toml",
        &format!(
            "data_dir = {data_dir:?}\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n\n[tls]\ncert_file = {cert_file:?}\n\
             key_file = {key_file:?}\n\n[auth]\ntoken_ttl_secs = 300\n\n[log]\nformat = \"json\"\n"
        ),
    );

    let stdout = tmp.path().join("out");
    let stderr = tmp.path().join("err");
    let child = keyfort_command()
        .args(["server", "--config"])
        .arg(&config)
        .stdout(File::create(&stdout).unwrap_or_else(|e| panic!("{e}")))
        .stderr(File::create(&stderr).unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut server = DevServer {
        child: Some(child),
        stdout,
        stderr,
    };

    // The bound address, from the JSON log line announcing it.
    let started = Instant::now();
    let addr = loop {
        let logs = std::fs::read_to_string(&server.stderr).unwrap_or_default();
        let found = logs.lines().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            (v.get("message")?.as_str()? == "keyfort listening (HTTPS)")
                .then(|| v.get("addr")?.as_str().map(str::to_owned))
                .flatten()
        });
        if let Some(addr) = found {
            break addr;
        }
        if let Some(status) = server.try_wait() {
            panic!("keyfort exited early with {status}\n{}", server.logs());
        }
        assert!(started.elapsed() < STARTUP_TIMEOUT, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    let port = addr.rsplit(':').next().unwrap_or_default();
    let http = https_client(&ca_file);
    for path in ["healthz", "readyz"] {
        let resp = http
            .get(format!("https://localhost:{port}/{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", server.logs()));
        assert_eq!(resp.status(), 200, "{path}");
    }
    assert!(data_dir.join("keyfort.db").is_file());
    assert!(
        !data_dir.join("dev.json").exists(),
        "no dev files outside dev mode"
    );
    assert!(
        !data_dir.join("tls").exists(),
        "no dev files outside dev mode"
    );

    let status = server.terminate();
    assert!(status.success(), "{}", server.logs());
}
