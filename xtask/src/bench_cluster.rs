//! `cargo xtask bench-cluster [keyfort-bench options]`: the several-node benchmark (PostgreSQL
//! issue, "Benchmark"): wrap throughput and key creation rate on 1, 2 and 3 nodes sharing one
//! PostgreSQL, and one node on SQLite against one on PostgreSQL, printed as ratios.
//!
//! 1. builds `keyfort` and `keyfort-bench` in release mode;
//! 2. starts a throwaway PostgreSQL with `scripts/pg.sh` (Debian's packages; installed if missing)
//!    and stops it at the end;
//! 3. starts one `keyfort server --dev` on SQLite and three on the PostgreSQL database (the
//!    second and third with the first one's dev key file and token signing key, as the nodes of
//!    one deployment share them), under `target/keyfort-bench/`;
//! 4. runs `keyfort-bench --cluster-dev-json ...`, which prints the table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bench::{Processes, tail, wait_until};

const NODES: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const SHARED_FILES: [&str; 2] = ["dev-master.key", "token-signing.key"];

/// The throwaway PostgreSQL server; stopped and removed on drop.
struct Postgres {
    root: PathBuf,
    dir: String,
    bindir: String,
    url: String,
}

impl Postgres {
    fn start(root: &Path) -> Result<Postgres, String> {
        let out = Command::new("bash")
            .current_dir(root)
            .args([
                "-c",
                "set -euo pipefail; source scripts/pg.sh; start_test_postgres >&2; trap - EXIT; \
                 printf '%s\\n%s\\n%s\\n' \"$KEYFORT_TEST_PG_DIR\" \"$KEYFORT_TEST_PG_BINDIR\" \
                 \"$KEYFORT_TEST_PG_URL\"",
            ])
            .output()
            .map_err(|e| format!("cannot run scripts/pg.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/pg.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines().map(str::to_owned);
        match (lines.next(), lines.next(), lines.next()) {
            (Some(dir), Some(bindir), Some(url)) => Ok(Postgres {
                root: root.to_path_buf(),
                dir,
                bindir,
                url,
            }),
            _ => Err(format!("scripts/pg.sh printed no server: {text}")),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .current_dir(&self.root)
            .env("KEYFORT_TEST_PG_DIR", &self.dir)
            .env("KEYFORT_TEST_PG_BINDIR", &self.bindir)
            .args(["-c", "source scripts/pg.sh; stop_test_postgres"])
            .status();
    }
}

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"));
    eprintln!("bench-cluster: building keyfort and keyfort-bench (release)");
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

    let pg = Postgres::start(root)?;
    eprintln!("bench-cluster: PostgreSQL in {}", pg.dir);
    let run_dir = target_dir
        .join("keyfort-bench")
        .join(format!("cluster-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| format!("cannot create {}: {e}", run_dir.display()))?;
    let mut processes = Processes::new(run_dir.clone());

    let start = |processes: &mut Processes, name: &str, store: Option<&str>| {
        let data_dir = run_dir.join(name);
        let log = run_dir.join(format!("{name}.log"));
        let mut command = Command::new(&keyfort_bin);
        command
            .args(["server", "--dev", "--data-dir"])
            .arg(&data_dir)
            .args(["--http-addr", "127.0.0.1:0"])
            .env("KEYFORT_LOG_LEVEL", "warn");
        if let Some(url) = store {
            command.args(["--store", url]);
        }
        processes.spawn(name, command, &log)?;
        let dev_json = data_dir.join("dev.json");
        wait_until(START_TIMEOUT, processes, name, &log, || dev_json.is_file())?;
        Ok::<PathBuf, String>(dev_json)
    };
    let sqlite = start(&mut processes, "sqlite", None)?;
    let mut nodes = vec![start(&mut processes, "node0", Some(&pg.url))?];
    for i in 1..NODES {
        let dir = run_dir.join(format!("node{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        for f in SHARED_FILES {
            std::fs::copy(run_dir.join("node0").join(f), dir.join(f))
                .map_err(|e| format!("cannot copy {f}: {e}"))?;
        }
        let dev_json = dir.join("dev.json");
        let node = format!("node{i}");
        let log = run_dir.join(format!("{node}.log"));
        let mut command = Command::new(&keyfort_bin);
        command
            .args(["server", "--dev", "--data-dir"])
            .arg(&dir)
            .args(["--http-addr", "127.0.0.1:0", "--store", &pg.url])
            .env("KEYFORT_LOG_LEVEL", "warn");
        processes.spawn(&node, command, &log)?;
        wait_until(START_TIMEOUT, &mut processes, &node, &log, || {
            dev_json.is_file()
        })?;
        nodes.push(dev_json);
    }
    eprintln!("bench-cluster: 1 SQLite node and {NODES} PostgreSQL nodes up");

    let list: Vec<String> = nodes.iter().map(|p| p.display().to_string()).collect();
    let mut command = Command::new(&bench_bin);
    command
        .arg("--dev-json")
        .arg(&sqlite)
        .args(["--cluster-dev-json", &list.join(",")])
        .args(args);
    let status = processes.run(command)?;
    if !status.success() {
        eprintln!(
            "bench-cluster: node0 log tail:\n{}",
            tail(&run_dir.join("node0.log"))
        );
        return Err(format!("keyfort-bench failed ({status})"));
    }
    drop(processes);
    drop(pg);
    Ok(())
}
