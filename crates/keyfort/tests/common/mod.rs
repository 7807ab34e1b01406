//! The harness the end-to-end tests share: a real `keyfort server --dev` process, the CLI
//! against it, and the HTTP API as an application would use it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
pub use serde_json::{Value, json};

pub mod kmip;

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
pub const POLL_TIMEOUT: Duration = Duration::from_secs(60);
pub const BANNER: &str = "Keyfort dev server is running";
pub const CUSTODIANS: [&str; 3] = ["alice", "bob", "carol"];
/// Keys added before the crash test, so the re-seal takes several paced batches.
pub const EXTRA_KEYS: usize = 300;

pub fn keyfort_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyfort"));
    for (var, _) in std::env::vars() {
        if var.starts_with("KEYFORT_") || var == "RUST_LOG" {
            cmd.env_remove(var);
        }
    }
    cmd
}

/// A running `server --dev`; killed on drop if the test did not stop it.
pub struct Server {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    pub dev: Value,
}

impl Server {
    pub fn start(data_dir: &Path, logs: &Path, tag: &str, env: &[(&str, &str)]) -> Server {
        Server::start_with(data_dir, logs, tag, env, &[])
    }

    /// [`Server::start`] with extra arguments for `keyfort server`.
    pub fn start_with(
        data_dir: &Path,
        logs: &Path,
        tag: &str,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Server {
        let stdout = logs.join(format!("{tag}.out"));
        let stderr = logs.join(format!("{tag}.err"));
        let child = keyfort_command()
            .args(["server", "--dev", "--data-dir"])
            .arg(data_dir)
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .args(["--log-level", "info"])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("cannot start keyfort");
        let mut server = Server {
            child: Some(child),
            stdout,
            stderr,
            dev: Value::Null,
        };
        let started = Instant::now();
        while !std::fs::read_to_string(&server.stdout)
            .unwrap_or_default()
            .contains(BANNER)
        {
            if let Some(status) = server.try_wait() {
                panic!("keyfort exited early with {status}\n{}", server.logs());
            }
            assert!(started.elapsed() < STARTUP_TIMEOUT, "{}", server.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        // The banner is printed after dev.json is written.
        let text = std::fs::read(data_dir.join("dev.json")).unwrap();
        server.dev = serde_json::from_slice(&text).unwrap();
        server
    }

    pub fn logs(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn addr(&self) -> String {
        format!("https://{}", self.dev["http_addr"].as_str().unwrap())
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) {
        let pid = self.child.as_ref().map(Child::id).expect("running");
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                assert!(status.success(), "exit {status}\n{}", self.logs());
                return;
            }
            assert!(started.elapsed() < STOP_TIMEOUT, "{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash, nothing flushed beyond what the database already has.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The CLI against this server, as the administrator (API key from dev.json).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, true)
    }

    /// The CLI with no API key: what a custodian has.
    pub fn cli_anon(&self, args: &[&str]) -> Output {
        self.cli_with(args, false)
    }

    /// The CLI with a given API key.
    pub fn cli_as(&self, api_key: &str, args: &[&str]) -> Output {
        keyfort_command()
            .env("KEYFORT_ADDR", self.addr())
            .env("KEYFORT_CACERT", self.dev["ca_cert"].as_str().unwrap())
            .env("KEYFORT_API_KEY", api_key)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn cli_with(&self, args: &[&str], admin: bool) -> Output {
        let mut cmd = keyfort_command();
        cmd.env("KEYFORT_ADDR", self.addr())
            .env("KEYFORT_CACERT", self.dev["ca_cert"].as_str().unwrap())
            .env("KEYFORT_TEST_FAST_KDF", "1")
            .args(args);
        if admin {
            cmd.env("KEYFORT_API_KEY", self.dev["api_key"].as_str().unwrap());
        }
        cmd.output().unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        ok_json(args, self.cli(args))
    }

    pub fn json_anon(&self, args: &[&str]) -> Value {
        ok_json(args, self.cli_anon(args))
    }

    /// Runs a command that must fail with exit 1 and one error line; returns that line.
    pub fn refused(&self, args: &[&str], admin: bool) -> String {
        let out = self.cli_with(args, admin);
        assert_eq!(
            out.status.code(),
            Some(1),
            "keyfort {args:?} should fail: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    }

    pub fn status(&self, instance: &str) -> Value {
        self.json_anon(&["instance", "status", instance])
    }

    /// Polls the unseal status until `done` says so.
    pub fn wait_status(&self, instance: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let status = self.status(instance);
            if done(&status) {
                return status;
            }
            assert!(
                started.elapsed() < POLL_TIMEOUT,
                "{what}: last status {status}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn api(&self) -> Api {
        Api::new(self)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn ok_json(args: &[&str], out: Output) -> Value {
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

/// The HTTP API directly, as an application would use it (blocking calls on a runtime of its
/// own, so it can live on any thread).
pub struct Api {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pem = std::fs::read(server.dev["ca_cert"].as_str().unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .build()
            .unwrap();
        let base = server.addr();
        let api_key = server.dev["api_key"].as_str().unwrap().to_owned();
        let token: Value = runtime.block_on(async {
            http.post(format!("{base}/identity/token"))
                .form(&[
                    ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                    ("apikey", api_key.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        Api {
            runtime,
            http,
            base,
            token: token["access_token"].as_str().unwrap().to_owned(),
        }
    }

    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.token);
            if let Some(body) = body {
                req = req.json(body);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    (
                        status,
                        serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    )
                }
                Err(e) => (0, Value::String(e.to_string())),
            }
        })
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    pub fn text(&self, path: &str) -> String {
        self.runtime.block_on(async {
            let resp = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        })
    }
}

/// Keeps wrapping and unwrapping with a root key until stopped; counts failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    pub fn start(server: &Server, instance: &str, key: &str) -> Load {
        let api = server.api();
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let base = format!("/api/keyfort/v1/instances/{instance}/keys/{key}");
        let (stop2, ops2, errors2) = (stop.clone(), ops.clone(), errors.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                n += 1;
                let plaintext = B64.encode(n.to_be_bytes());
                let aad = json!(["load", n.to_string()]);
                let (status, wrapped) = api.post(
                    &format!("{base}/wrap"),
                    &json!({"plaintext": plaintext, "aad": aad}),
                );
                if status != 200 {
                    errors2
                        .lock()
                        .unwrap()
                        .push(format!("wrap {status}: {wrapped}"));
                    continue;
                }
                let (status, unwrapped) = api.post(
                    &format!("{base}/unwrap"),
                    &json!({"ciphertext": wrapped["ciphertext"], "aad": aad}),
                );
                if status != 200 || unwrapped["plaintext"] != json!(plaintext) {
                    errors2
                        .lock()
                        .unwrap()
                        .push(format!("unwrap {status}: {unwrapped}"));
                    continue;
                }
                ops2.fetch_add(1, Ordering::Relaxed);
            }
        });
        Load {
            stop,
            ops,
            errors,
            thread,
        }
    }

    /// Stops the load; returns (successful round trips, errors).
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let errors = self.errors.lock().unwrap().clone();
        (self.ops.load(Ordering::Relaxed), errors)
    }
}

pub fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

pub fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A DER element: `tag`, its definite length (up to 65535 bytes) and `content`.
pub fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else if len < 0x100 {
        out.extend([0x81, u8::try_from(len).unwrap()]);
    } else {
        out.extend([0x82, u8::try_from(len >> 8).unwrap(), (len & 0xFF) as u8]);
    }
    out.extend_from_slice(content);
    out
}
