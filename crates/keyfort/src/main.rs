//! `keyfort`: the Keyfort server and its command-line client in one binary.
//!
//! Exit codes: 0 success, 1 failure, 2 unusable command line or configuration.

#![forbid(unsafe_code)]

mod cli;
mod client;
mod cluster;
mod config;
mod dev;
mod fsutil;
mod kmip;
mod logging;
mod peers;
mod serve;
mod server;
mod store_url;
mod tls;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Many small allocations freed on other threads (requests, sqlx's worker threads): mimalloc
/// handles them with far less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long blocking work (such as database threads) may delay the exit after the command ends.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keyfort: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(cli));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyfort: error: {}", cli::report(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
