//! `cargo xtask bench kmip [--quick] [keyfort-kmip-bench options]`: the KMIP benchmark (KMIP
//! issue, "Benchmark"): Keyfort against `pykmip-server` on the same machine, in one run.
//!
//! 1. builds `keyfort` and `keyfort-kmip-bench` in release mode;
//! 2. starts `keyfort server --dev` (port 0) in a fresh data directory under
//!    `target/keyfort-bench/`, whose dev CA, server and client certificates both servers use;
//! 3. installs `PyKMIP` into `.venv` if `pykmip-server` is not there, and starts it with TLS 1.2,
//!    client certificates required, and a SQLite database in the run directory;
//! 4. runs `keyfort-kmip-bench` against both: Create+Get and Encrypt ops/s at 1 and 16
//!    connections, with the ratios, then times 4 KiB writes flushed with `fdatasync` in the run
//!    directory and prints the bound that flush puts on one connection's durable Create+Get.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bench::{Processes, free_port_pair, remove_stale_runs, tail, wait_until};

/// The pykmip-server the baseline runs (as in `tests/python/requirements.txt`).
const PYKMIP_PACKAGE: &str = "PyKMIP==0.11.0";
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"));
    eprintln!("bench kmip: building keyfort and keyfort-kmip-bench (release)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "keyfort",
            "-p",
            "keyfort-bench",
            "--bin",
            "keyfort",
            "--bin",
            "keyfort-kmip-bench",
        ])
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release failed ({status})"));
    }
    let keyfort_bin = target_dir.join("release/keyfort");
    let bench_bin = target_dir.join("release/keyfort-kmip-bench");
    let pykmip = ensure_pykmip(root)?;

    let runs = target_dir.join("keyfort-bench");
    remove_stale_runs(&runs);
    let run_dir = runs.join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| format!("cannot create {}: {e}", run_dir.display()))?;
    let mut processes = Processes::new(run_dir.clone());

    let data_dir = run_dir.join("keyfort");
    let dev_json = data_dir.join("dev.json");
    let keyfort_log = run_dir.join("keyfort.log");
    let mut command = Command::new(&keyfort_bin);
    command
        .args(["server", "--dev", "--data-dir"])
        .arg(&data_dir)
        .args(["--http-addr", "127.0.0.1:0", "--kmip-addr", "127.0.0.1:0"])
        .env("KEYFORT_LOG_LEVEL", "warn");
    processes.spawn("keyfort", command, &keyfort_log)?;
    wait_until(
        START_TIMEOUT,
        &mut processes,
        "keyfort",
        &keyfort_log,
        || dev_json.is_file(),
    )?;
    let dev: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&dev_json).map_err(|e| format!("cannot read dev.json: {e}"))?,
    )
    .map_err(|e| format!("unreadable dev.json: {e}"))?;
    let field = |name: &str| dev[name].as_str().unwrap_or_default().to_owned();
    let tls = data_dir.join("tls");

    let port = free_port_pair()?;
    let config = run_dir.join("pykmip-server.conf");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={}\nkey_path={}\n\
             ca_path={}\nauth_suite=TLS1.2\nenable_tls_client_auth=True\nlogging_level=INFO\n\
             database_path={}\n",
            tls.join("server.pem").display(),
            tls.join("server-key.pem").display(),
            tls.join("ca.pem").display(),
            run_dir.join("pykmip.db").display(),
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let pykmip_log = run_dir.join("pykmip-server.log");
    let mut command = Command::new(&pykmip);
    command
        .arg("-f")
        .arg(&config)
        .arg("-l")
        .arg(run_dir.join("pykmip-server.file.log"));
    processes.spawn("pykmip-server", command, &pykmip_log)?;
    let pykmip_addr = format!("127.0.0.1:{port}");
    wait_until(
        START_TIMEOUT,
        &mut processes,
        "pykmip-server",
        &pykmip_log,
        || TcpStream::connect(&pykmip_addr).is_ok(),
    )?;
    eprintln!(
        "bench kmip: keyfort KMIP on {}, pykmip-server on {pykmip_addr}",
        field("kmip_addr")
    );

    let mut command = Command::new(&bench_bin);
    command
        .args(["--keyfort", &field("kmip_addr"), "--pykmip", &pykmip_addr])
        .args(["--ca", &field("ca_cert")])
        .args([
            "--cert",
            &field("client_cert"),
            "--key",
            &field("client_key"),
        ])
        // Keyfort's data directory is in the run directory: the same file system.
        .arg("--flush-probe")
        .arg(&run_dir);
    let mut rest = args.to_vec();
    if let Some(i) = rest.iter().position(|a| a == "--quick") {
        rest.remove(i);
        command.args(["--duration", "1", "--rounds", "1"]);
    }
    command.args(rest);
    let status = processes.run(command);
    // pykmip-server forks a helper (its policy file monitor) that outlives a SIGTERM to the
    // server itself: stop the server's children by parent id before the guard stops the server.
    if let Some(pid) = processes.pid("pykmip-server") {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &pid.to_string()])
            .status();
    }
    let status = status?;
    if !status.success() {
        eprintln!("bench kmip: keyfort log tail:\n{}", tail(&keyfort_log));
        eprintln!("bench kmip: pykmip-server log tail:\n{}", tail(&pykmip_log));
        return Err(format!("keyfort-kmip-bench failed ({status})"));
    }
    Ok(())
}

/// `pykmip-server` from `.venv`, installed there if missing.
fn ensure_pykmip(root: &Path) -> Result<PathBuf, String> {
    let venv = root.join(".venv");
    let server = venv.join("bin/pykmip-server");
    if server.is_file() {
        return Ok(server);
    }
    if !venv.join("bin/python").exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("cannot run python3 -m venv: {e}"))?;
        if !status.success() {
            return Err(format!("python3 -m venv failed ({status})"));
        }
    }
    eprintln!(
        "bench kmip: installing {PYKMIP_PACKAGE} into {}",
        venv.display()
    );
    let status = Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "--quiet", PYKMIP_PACKAGE])
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !status.success() || !server.is_file() {
        return Err(format!("pip install {PYKMIP_PACKAGE} failed ({status})"));
    }
    Ok(server)
}
