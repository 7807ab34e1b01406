//! `cargo xtask`: project tooling.
//!
//! - `cargo xtask tidy`: checks the house rules a compiler cannot see: `unsafe` only in the
//!   modules allowed to hold it, a `// SAFETY:` comment on every `unsafe` block, no `ring` in the
//!   dependency graph (one crypto library), no `todo!`/`unimplemented!` in shipped code.
//! - `cargo xtask bench [--quick]`: the KMS benchmark: Keyfort wrap/unwrap and key creation
//!   against a no-op endpoint, OpenBao transit and raw SQLite, in one run ([`bench`]);
//!   `cargo xtask bench kmip [--quick]`: KMIP Create+Get and Encrypt against pykmip-server
//!   ([`bench_kmip`]).
//! - `cargo xtask bench-cluster [--quick]`: wrap and key creation on 1, 2 and 3 nodes sharing
//!   one PostgreSQL, and SQLite against PostgreSQL for one node, as ratios ([`bench_cluster`]).
//! - `cargo xtask codegen-kmip`: regenerates `crates/keyfort-kmip/src/generated.rs` (KMIP tags
//!   and enumerations) from `../shared/specs/data/*.json` ([`codegen_kmip`]).
//! - `cargo xtask codegen-grpc`: regenerates `crates/keyfort-grpc/src/generated/*.rs` from
//!   `crates/keyfort-grpc/proto/*.proto` (needs `protoc`, e.g. Debian `protobuf-compiler`), through
//!   the separate `xtask/grpc-codegen` crate so the code generator stays out of everyday builds.

mod bench;
mod bench_cluster;
mod bench_kmip;
mod codegen_kmip;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The only files allowed to contain `unsafe` code (DESIGN §3).
const UNSAFE_ALLOWED: &[&str] = &["crates/keyfort-crypto/src/raw.rs"];
/// Crates that must never enter the build: a second crypto library.
const FORBIDDEN_CRATES: &[&str] = &["ring", "openssl", "openssl-sys", "boring", "rsa", "p256"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("tidy") => match tidy(&workspace_root()) {
            Ok(()) => {
                println!("tidy: ok");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("tidy: {p}");
                }
                eprintln!("tidy: {} problem(s)", problems.len());
                ExitCode::FAILURE
            }
        },
        Some("bench") => match bench::run(&workspace_root(), &args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: {e}");
                ExitCode::FAILURE
            }
        },
        Some("bench-cluster") => match bench_cluster::run(&workspace_root(), &args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench-cluster: {e}");
                ExitCode::FAILURE
            }
        },
        Some("codegen-kmip") => {
            let root = workspace_root();
            let data = root.join("../shared/specs/data");
            match codegen_kmip::run(&root, &data) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("codegen-kmip: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("codegen-grpc") => {
            let root = workspace_root();
            let status = std::process::Command::new(env!("CARGO"))
                .args(["run", "--quiet", "--manifest-path"])
                .arg(root.join("xtask/grpc-codegen/Cargo.toml"))
                .arg("--")
                .arg(&root)
                .env("CARGO_TARGET_DIR", root.join("target/grpc-codegen"))
                .status();
            match status {
                Ok(s) if s.success() => ExitCode::SUCCESS,
                Ok(s) => {
                    eprintln!("codegen-grpc: the generator failed ({s})");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("codegen-grpc: cannot run cargo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask tidy\n       cargo xtask codegen-kmip\n       cargo xtask codegen-grpc\n       cargo xtask bench-cluster [--quick]\n       {}",
                bench::usage()
            );
            ExitCode::from(2)
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Runs every check; returns the problems found.
fn tidy(root: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    collect_rust_files(&root.join("crates"), &mut files);
    collect_rust_files(&root.join("xtask"), &mut files);
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        let Ok(text) = std::fs::read_to_string(file) else {
            problems.push(format!("{rel}: unreadable"));
            continue;
        };
        check_file(&rel, &text, &mut problems);
    }
    match build_graph_packages(root) {
        Ok(packages) => {
            for name in FORBIDDEN_CRATES {
                if packages.iter().any(|p| p == name) {
                    problems.push(format!(
                        "build graph: forbidden crate `{name}` is in the build"
                    ));
                }
            }
        }
        Err(e) => problems.push(format!("cannot list the build graph: {e}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Names of every package built for the host (normal, build and dev edges), from `cargo tree`.
/// (Cargo.lock also lists optional dependencies that no feature enables, so it cannot be used.)
fn build_graph_packages(root: &Path) -> Result<Vec<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "tree",
            "--workspace",
            "-e",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn check_file(rel: &str, text: &str, problems: &mut Vec<String>) {
    let is_self = rel.starts_with("xtask/");
    let unsafe_allowed = UNSAFE_ALLOWED.contains(&rel);
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let n = i + 1;
        if !is_self && (code.contains("todo!(") || code.contains("unimplemented!(")) {
            problems.push(format!("{rel}:{n}: todo!/unimplemented! in shipped code"));
        }
        let has_unsafe =
            code.contains("unsafe {") || code.contains("unsafe fn") || code.contains("unsafe impl");
        if has_unsafe && !is_self {
            if !unsafe_allowed {
                problems.push(format!(
                    "{rel}:{n}: `unsafe` outside the allowed FFI modules"
                ));
            } else if code.contains("unsafe {") && !has_safety_comment(&lines, i) {
                problems.push(format!(
                    "{rel}:{n}: `unsafe` block without a `// SAFETY:` comment"
                ));
            }
        }
    }
}

/// Whether a `// SAFETY:` comment is on the line or in the comment lines just above it.
fn has_safety_comment(lines: &[&str], index: usize) -> bool {
    if lines[index].contains("SAFETY:") {
        return true;
    }
    for line in lines[..index].iter().rev() {
        let t = line.trim();
        if t.starts_with("//") {
            if t.contains("SAFETY:") {
                return true;
            }
            continue;
        }
        // Allow the block to start on a continuation line of the statement above.
        if t.ends_with('=') || t.ends_with('(') || t.ends_with(',') || t.is_empty() {
            if t.is_empty() {
                return false;
            }
            continue;
        }
        return false;
    }
    false
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_unsafe_outside_allowed_modules() {
        let mut p = Vec::new();
        check_file("crates/x/src/lib.rs", "fn f() { unsafe { g() } }", &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn requires_safety_comments_in_allowed_modules() {
        let mut p = Vec::new();
        let ok = "// SAFETY: the pointer is valid.\nlet x = unsafe { g() };";
        check_file(UNSAFE_ALLOWED[0], ok, &mut p);
        assert!(p.is_empty(), "{p:?}");
        let bad = "let y = 1;\nlet x = unsafe { g() };";
        check_file(UNSAFE_ALLOWED[0], bad, &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn flags_todo() {
        let mut p = Vec::new();
        check_file("crates/x/src/lib.rs", "fn f() { todo!() }", &mut p);
        assert_eq!(p.len(), 1);
    }
}
