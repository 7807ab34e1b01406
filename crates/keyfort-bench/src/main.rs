//! `keyfort-bench`: the load generator behind `cargo xtask bench` (KMS issue, "Benchmark").
//!
//! Given a running `keyfort server --dev` (its `dev.json`) and an OpenBao dev server, it measures
//! side by side, in one run:
//!
//! * wrap and unwrap of a 32-byte plaintext on Keyfort, a no-op authenticated request on the
//!   same server (`GET /api/keyfort/v1/ping`), and OpenBao transit encrypt/decrypt with an
//!   `aes256-gcm96` key, at each concurrency (1, 8, 64 clients), over HTTP/1.1 keep-alive;
//! * durable key creation on Keyfort against OpenBao's (in-memory) transit key creation and raw
//!   SQLite inserts of the same rows ([`sqlite`]).
//!
//! Targets alternate round by round and the median round is reported, with ratios against the
//! baselines of the same run: absolute numbers move with the machine and its neighbours.
//!
//! The load generator shares the cores with both servers, the same way for every target, on one
//! worker thread per core ([`runtime`]). On one thread (`--client-threads 1`) it lowered the
//! wrap's rate against the no-op's, but not the no-op's own.

#![forbid(unsafe_code)]

mod cluster;
mod error;
mod load;
mod ops;
mod report;
mod runtime;
mod setup;
mod sqlite;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::error::BenchError;
use crate::ops::Op;
use crate::report::{Results, Target};

#[derive(Debug, Parser)]
#[command(
    name = "keyfort-bench",
    version,
    about = "Keyfort KMS benchmark load generator"
)]
pub(crate) struct Args {
    /// The `dev.json` of a running `keyfort server --dev`.
    #[arg(long)]
    dev_json: PathBuf,
    /// Base URL of an OpenBao dev server, e.g. http://127.0.0.1:8200 (required unless
    /// --cluster-dev-json).
    #[arg(long)]
    bao_addr: Option<String>,
    /// Several-node mode: the `dev.json` of each node sharing one PostgreSQL database. Measures
    /// wrap and key creation on the first 1, 2, ... of them and on --dev-json (one node on
    /// SQLite), and prints the ratios.
    #[arg(long, value_delimiter = ',')]
    cluster_dev_json: Vec<PathBuf>,
    /// OpenBao root token.
    #[arg(long, default_value = "bench-root")]
    bao_token: String,
    /// Short run for development: 1 s rounds, 1 round per target.
    #[arg(long)]
    quick: bool,
    /// Measured seconds per round [default: 5, --quick 1].
    #[arg(long)]
    duration: Option<f64>,
    /// Unmeasured seconds before each round [default: a fifth of --duration].
    #[arg(long)]
    warmup: Option<f64>,
    /// Rounds per target; the median is reported [default: 3, --quick 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Concurrent clients of the throughput rounds.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    /// Concurrent clients of the key creation rounds.
    #[arg(long, default_value_t = 64)]
    create_clients: usize,
    /// Directory of the raw SQLite baseline database [default: the directory of --dev-json,
    /// so the same disk as Keyfort's database].
    #[arg(long)]
    sqlite_dir: Option<PathBuf>,
    /// Worker threads of the load generator; 1 means a current-thread runtime [default: one
    /// per core].
    #[arg(long)]
    client_threads: Option<usize>,
    /// Process id of the Keyfort server, to report its CPU time per request.
    #[arg(long)]
    keyfort_pid: Option<u32>,
    /// Process id of the OpenBao server, to report its CPU time per request.
    #[arg(long)]
    bao_pid: Option<u32>,
}

/// The settings of a run, resolved from [`Args`].
pub(crate) struct Plan {
    window: Duration,
    warmup: Duration,
    rounds: usize,
    keyfort_pid: Option<u32>,
    bao_pid: Option<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match runtime::build(runtime::threads(args.client_threads)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyfort-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut text = format!("keyfort-bench: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), BenchError> {
    let seconds = |flag: &str, s: f64| {
        Duration::try_from_secs_f64(s).map_err(|e| BenchError::Invalid {
            step: flag.into(),
            detail: format!("{s}: {e}"),
        })
    };
    let window = seconds(
        "--duration",
        args.duration.unwrap_or(if args.quick { 1.0 } else { 5.0 }),
    )?;
    let plan = Plan {
        window,
        warmup: match args.warmup {
            Some(s) => seconds("--warmup", s)?,
            None => window / 5,
        },
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        keyfort_pid: args.keyfort_pid,
        bao_pid: args.bao_pid,
    };

    if !args.cluster_dev_json.is_empty() {
        return cluster::run(&args.dev_json, &args.cluster_dev_json, &plan, args).await;
    }
    let keyfort = setup::keyfort(&args.dev_json).await?;
    let Some(bao_addr) = &args.bao_addr else {
        return Err(BenchError::Invalid {
            step: "--bao-addr".into(),
            detail: "required (the OpenBao baseline)".into(),
        });
    };
    let bao = setup::openbao(bao_addr, &args.bao_token).await?;
    let sqlite_dir = match &args.sqlite_dir {
        Some(dir) => dir.clone(),
        None => args
            .dev_json
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let db_path = sqlite_dir.join("raw-sqlite-baseline.db");
    let pool = sqlite::open(&db_path)
        .await
        .map_err(|e| BenchError::step(format!("opening {}", db_path.display()), e))?;
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("Keyfort KMS benchmark");
    println!(
        "  keyfort: wrap/unwrap via the {}; key creation via the {}",
        keyfort.wrap_door.describe(),
        keyfort.create_door.describe()
    );
    println!(
        "  openbao: {} dev server (in memory, plain HTTP), transit aes256-gcm96",
        bao.version
    );
    println!(
        "  load: {} on {cores} core(s) shared with both servers; HTTP/1.1 keep-alive, one pooled client per server",
        match runtime::threads(args.client_threads) {
            1 => "current-thread runtime".to_owned(),
            n => format!("{n}-thread runtime"),
        }
    );
    println!(
        "  rounds: {} per target, {:.1} s each after {:.1} s warm-up, targets alternating; median round shown",
        plan.rounds,
        plan.window.as_secs_f64(),
        plan.warmup.as_secs_f64()
    );
    println!("  raw sqlite baseline: {}", db_path.display());
    println!("  load average at start: {}", load_average());
    println!(
        "  srv/load us/op: CPU time of the server process / of this load generator per \
         completed request (from /proc; steadier than ops/s on shared cores); cores: the \
         cores both kept busy, on average (the rest of the machine's were idle)"
    );
    println!();

    let mut results = Results::default();
    let targets: Vec<(Target, Arc<Op>)> = vec![
        (Target::KeyfortWrap, Arc::new(Op::Http(keyfort.wrap))),
        (Target::KeyfortNoop, Arc::new(Op::Http(keyfort.noop))),
        (Target::BaoEncrypt, Arc::new(Op::Http(bao.encrypt))),
        (Target::KeyfortUnwrap, Arc::new(Op::Http(keyfort.unwrap))),
        (Target::BaoDecrypt, Arc::new(Op::Http(bao.decrypt))),
    ];
    // A round without one success means a server is gone or refusing: stop measuring, report
    // what was measured, and fail.
    let mut dead = false;
    'throughput: for &clients in &args.clients {
        for i in 0..plan.rounds {
            for (target, op) in &targets {
                dead = !measure(&mut results, &plan, clients, i, *target, op).await;
                if dead {
                    break 'throughput;
                }
            }
        }
    }

    let creators: Vec<(Target, Arc<Op>)> = vec![
        (Target::KeyfortCreate, Arc::new(Op::Http(keyfort.create))),
        (Target::BaoCreate, Arc::new(Op::Http(bao.create))),
        (
            Target::SqlitePerKey,
            Arc::new(Op::Sqlite(sqlite::RawSqlite::new(
                &pool,
                sqlite::Mode::PerKey,
                run_id,
            ))),
        ),
        (
            Target::SqliteGroup,
            Arc::new(Op::Sqlite(sqlite::RawSqlite::new(
                &pool,
                sqlite::Mode::GroupCommit,
                run_id,
            ))),
        ),
    ];
    'creation: for i in 0..plan.rounds {
        if dead {
            break;
        }
        for (target, op) in &creators {
            dead = !measure(&mut results, &plan, args.create_clients, i, *target, op).await;
            if dead {
                break 'creation;
            }
        }
    }
    drop(creators);
    pool.close().await;

    println!("\n  load average at end: {}\n", load_average());
    print!("{}", results.render(&args.clients, args.create_clients));
    match results.error_count() {
        0 => Ok(()),
        count => Err(BenchError::RequestsFailed { count }),
    }
}

/// The 1/5/15-minute load averages (Linux), so a reader can tell a busy machine from a slow
/// server: the cores are shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// One round of one target; progress goes to stderr, the table to stdout. Returns whether any
/// request of the round succeeded.
async fn measure(
    results: &mut Results,
    plan: &Plan,
    clients: usize,
    round: usize,
    target: Target,
    op: &Arc<Op>,
) -> bool {
    let server = match target {
        Target::KeyfortWrap
        | Target::KeyfortNoop
        | Target::KeyfortUnwrap
        | Target::KeyfortCreate => plan.keyfort_pid,
        Target::BaoEncrypt | Target::BaoDecrypt | Target::BaoCreate => plan.bao_pid,
        Target::SqlitePerKey | Target::SqliteGroup => None,
    }
    .map(|pid| pid.to_string());
    let server_cpu = || server.as_deref().and_then(load::cpu_seconds);
    let (client_before, server_before) = (load::cpu_seconds("self"), server_cpu());
    let started = std::time::Instant::now();
    let mut measured = load::run(Arc::clone(op), clients, plan.warmup, plan.window).await;
    let wall_s = started.elapsed().as_secs_f64();
    measured.cpu = load::cpu_seconds("self")
        .zip(client_before)
        .map(|(after, before)| load::CpuUse {
            wall_s,
            client_s: after - before,
            server_s: server_cpu()
                .zip(server_before)
                .map(|(after, before)| after - before),
        });
    eprintln!(
        "  {clients:>2} clients, round {}/{}: {:<36} {:>9.0}/s{}",
        round + 1,
        plan.rounds,
        target.label(),
        measured.ops_per_sec(),
        match measured.error_count() {
            0 => String::new(),
            n => format!("  {n} errors"),
        }
    );
    let alive = measured.ok > 0 || measured.error_count() == 0;
    results.add(clients, target, measured);
    if !alive {
        eprintln!("keyfort-bench: no request of that round succeeded; stopping the run");
    }
    alive
}
