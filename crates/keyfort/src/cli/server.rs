//! `keyfort server`.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{self, Config, FileConfig, LogFormat, Overrides};

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Development mode: creates the data directory, a local CA and certificates, an unsealed
    /// instance and an API key, and writes them to DATA_DIR/dev.json
    #[arg(long)]
    dev: bool,
    /// TOML config file
    #[arg(long, short = 'c', env = "KEYFORT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory [env: KEYFORT_DATA_DIR] [default: ./keyfort-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL database shared by several nodes, `postgres://user:password@host/db`
    /// [env: KEYFORT_STORE] [default: SQLite in the data directory]
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// HTTPS address, port 0 for any free port [env: KEYFORT_HTTP_ADDR] [default: 127.0.0.1:8443]
    #[arg(long, value_name = "IP:PORT")]
    http_addr: Option<SocketAddr>,
    /// KMIP address (not served yet) [env: KEYFORT_KMIP_ADDR] [default: 127.0.0.1:5696]
    #[arg(long, value_name = "IP:PORT")]
    kmip_addr: Option<SocketAddr>,
    /// gRPC address (not served yet) [env: KEYFORT_GRPC_ADDR] [default: 127.0.0.1:9876]
    #[arg(long, value_name = "IP:PORT")]
    grpc_addr: Option<SocketAddr>,
    /// TLS certificate chain, PEM [env: KEYFORT_TLS_CERT_FILE]
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// TLS private key, PEM [env: KEYFORT_TLS_KEY_FILE]
    #[arg(long, value_name = "FILE")]
    tls_key_file: Option<PathBuf>,
    /// Log format [env: KEYFORT_LOG_FORMAT] [default: text]
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `info,keyfort=debug` [env: KEYFORT_LOG_LEVEL, RUST_LOG]
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

pub async fn run(args: ServerArgs) -> Result<(), CliError> {
    let config = resolve(args, |name| std::env::var(name).ok())?;
    crate::logging::init(&config.log);
    if config.dev && !config.http_addr.ip().is_loopback() {
        tracing::warn!(
            addr = %config.http_addr,
            "dev mode is listening beyond loopback; its API key is stored in plain text"
        );
    }
    crate::server::run(config).await?;
    Ok(())
}

fn resolve(
    args: ServerArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, config::ConfigError> {
    let file = match &args.config {
        Some(path) => Some((path.as_path(), FileConfig::load(path)?)),
        None => None,
    };
    let env = Overrides::from_env(env)?;
    let flags = Overrides {
        data_dir: args.data_dir,
        store: args.store,
        http_addr: args.http_addr,
        kmip_addr: args.kmip_addr,
        grpc_addr: args.grpc_addr,
        log_format: args.log_format,
        log_level: args.log_level,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        ..Overrides::default()
    };
    Config::resolve(args.dev, file, env, flags)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn server_args(argv: &[&str]) -> ServerArgs {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Server(args) => args,
            other => panic!("not a server command: {other:?}"),
        }
    }

    #[test]
    fn flags_beat_env_and_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("keyfort.toml");
        std::fs::write(
            &file,
            "data_dir = \"file-dir\"\nhttp_addr = \"127.0.0.1:1\"\nkmip_addr = \"127.0.0.1:3\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let file_arg = file.to_string_lossy().into_owned();
        let args = server_args(&[
            "keyfort",
            "server",
            "--dev",
            "--config",
            &file_arg,
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        let env = |name: &str| match name {
            "KEYFORT_HTTP_ADDR" => Some("127.0.0.1:2".to_owned()),
            "KEYFORT_DATA_DIR" => Some("env-dir".to_owned()),
            _ => None,
        };
        let config = resolve(args, env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:0", "flag");
        assert_eq!(config.data_dir, PathBuf::from("env-dir"), "env over file");
        assert_eq!(config.kmip_addr.to_string(), "127.0.0.1:3", "file");
        assert_eq!(config.log.format, LogFormat::Json);
        assert!(config.dev);
    }

    #[test]
    fn missing_config_file_is_a_config_error() {
        let args = server_args(&["keyfort", "server", "--config", "/nonexistent/keyfort.toml"]);
        let err = resolve(args, |_| None);
        assert!(matches!(err, Err(config::ConfigError::ReadFile { .. })));
    }

    #[test]
    fn bad_flag_values_are_usage_errors() {
        for argv in [
            &["keyfort", "server", "--http-addr", "localhost:1"][..],
            &["keyfort", "server", "--log-format", "xml"][..],
        ] {
            let err = Cli::try_parse_from(argv).err();
            assert_eq!(err.map(|e| e.exit_code()), Some(2), "{argv:?}");
        }
    }
}
