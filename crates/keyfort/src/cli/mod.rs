//! The command tree. One file per command group; each returns a value or a [`CliError`], and
//! `main` turns the error into one line on stderr and an exit code.

mod audit;
mod custodian;
mod health;
mod iam;
mod instance;
mod key;
mod kmip;
mod server;
mod token;

use std::io::{self, Write};

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::client::ClientError;
use crate::config::ConfigError;
use crate::server::ServerError;

/// Keyfort: a self-hosted cloud HSM and key orchestrator.
///
/// `keyfort server --dev` starts a server that needs no setup; the other commands talk to a
/// running server, found through --addr/KEYFORT_ADDR, --ca-cert/KEYFORT_CACERT and
/// --api-key/KEYFORT_API_KEY.
#[derive(Debug, Parser)]
#[command(name = "keyfort", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Keyfort server (HTTPS: health, token endpoint, admin API)
    Server(server::ServerArgs),
    /// Check that a server is alive (/healthz) and ready (/readyz)
    Health(health::HealthArgs),
    /// Exchange the API key for an access token and print it
    Token(token::TokenArgs),
    /// Manage instances: create, initialize with custodians, unseal, seal, signed commands
    Instance(instance::InstanceArgs),
    /// A custodian's own files: make key pairs, sign commands (no server needed)
    Custodian(custodian::CustodianArgs),
    /// Identity management: principals, role grants, API keys (administrators)
    Iam(iam::IamArgs),
    /// An instance's hash-chained audit trail: list, verify, export as CADF
    Audit(audit::AuditArgs),
    /// Create, list and read keys in an instance; wrap and unwrap with root keys
    Key(key::KeyArgs),
    /// KMIP client certificates: register one for a role in an instance, list, remove
    Kmip(kmip::KmipArgs),
    /// Print the version of this binary
    Version,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Server(args) => server::run(args).await,
        Command::Health(args) => health::run(args).await,
        Command::Token(args) => token::run(args).await,
        Command::Instance(args) => instance::run(args).await,
        Command::Custodian(args) => custodian::run(args).await,
        Command::Key(args) => key::run(args).await,
        Command::Kmip(args) => kmip::run(args).await,
        Command::Iam(args) => iam::run(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Version => print_line(&format!("keyfort {}", env!("CARGO_PKG_VERSION"))),
    }
}

/// Prints a JSON value, pretty, on stdout.
fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.into()))?;
    print_line(&text)
}

/// Prints a line on stdout; a closed pipe is an error, not a panic.
fn print_line(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Rejects ids that could not name one path segment.
fn parse_id(s: &str) -> Result<String, String> {
    if s.is_empty() || s == "." || s == ".." {
        Err(format!("invalid id {s:?}"))
    } else {
        Ok(s.to_owned())
    }
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Custodian(#[from] custodian::CustodianError),
    #[error(transparent)]
    Command(#[from] instance::CommandError),
    #[error("cannot write to stdout")]
    Output(#[source] io::Error),
    #[error(transparent)]
    Audit(#[from] audit::ChainBroken),
    #[error("cannot read {}", path.display())]
    ReadFile {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CliError {
    /// 2 for a configuration the server cannot use, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::Server(_)
            | Self::Client(_)
            | Self::Custodian(_)
            | Self::Command(_)
            | Self::Output(_)
            | Self::Audit(_)
            | Self::ReadFile { .. } => 1,
        }
    }
}

/// The error and its sources on one line: `outer: cause: root cause`.
pub fn report(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their source in their own message; say it once.
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn report_joins_the_chain_on_one_line() {
        let err = CliError::Config(ConfigError::ReadFile {
            path: "/etc/k.toml".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "No such file"),
        });
        assert_eq!(
            report(&err),
            "cannot read config file /etc/k.toml: No such file"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn ids_must_be_one_segment() {
        assert!(parse_id("..").is_err());
        assert!(parse_id("").is_err());
        assert_eq!(parse_id("abc").ok().as_deref(), Some("abc"));
    }
}
