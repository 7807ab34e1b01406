//! Server configuration: a TOML file, environment overrides and command-line flags.
//!
//! Precedence, highest first: flags > environment (`KEYFORT_*`) > config file > defaults.
//! Unknown keys in the file are an error, and every error names where the bad value came from
//! (the file and line, the environment variable, or the flag).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "keyfort-data";
/// Default HTTPS address (DESIGN §5). Loopback: exposing the server is an explicit choice.
pub const DEFAULT_HTTP_ADDR: SocketAddr = loopback(8443);
/// Default KMIP address (DESIGN §5).
pub const DEFAULT_KMIP_ADDR: SocketAddr = loopback(5696);
/// Default gRPC address (DESIGN §5); the gRPC door does not exist yet.
pub const DEFAULT_GRPC_ADDR: SocketAddr = loopback(9876);
/// Default lifetime of an access token issued at `/identity/token`.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;
/// Default log filter.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default number of key versions re-sealed per batch during a master key rotation.
pub const DEFAULT_RESEAL_BATCH_SIZE: usize = 256;

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
}

/// The environment variables read by [`Overrides::from_env`].
pub mod env {
    pub const DATA_DIR: &str = "KEYFORT_DATA_DIR";
    pub const STORE: &str = "KEYFORT_STORE";
    pub const HTTP_ADDR: &str = "KEYFORT_HTTP_ADDR";
    pub const KMIP_ADDR: &str = "KEYFORT_KMIP_ADDR";
    pub const GRPC_ADDR: &str = "KEYFORT_GRPC_ADDR";
    pub const LOG_FORMAT: &str = "KEYFORT_LOG_FORMAT";
    pub const LOG_LEVEL: &str = "KEYFORT_LOG_LEVEL";
    pub const TLS_CERT_FILE: &str = "KEYFORT_TLS_CERT_FILE";
    pub const TLS_KEY_FILE: &str = "KEYFORT_TLS_KEY_FILE";
    pub const RESEAL_BATCH_SIZE: &str = "KEYFORT_RESEAL_BATCH_SIZE";
    pub const RESEAL_PAUSE_MS: &str = "KEYFORT_RESEAL_PAUSE_MS";
    pub const KMS_CHANGE_GUARD_SECS: &str = "KEYFORT_KMS_CHANGE_GUARD_SECS";
    pub const KMS_ROTATE_GUARD_SECS: &str = "KEYFORT_KMS_ROTATE_GUARD_SECS";
    pub const KMS_DUAL_AUTH_WINDOW_SECS: &str = "KEYFORT_KMS_DUAL_AUTH_WINDOW_SECS";
    pub const KMS_PURGE_AFTER_SECS: &str = "KEYFORT_KMS_PURGE_AFTER_SECS";
    pub const KMS_RESTORE_WINDOW_SECS: &str = "KEYFORT_KMS_RESTORE_WINDOW_SECS";
    /// The standard `tracing` filter variable; below `KEYFORT_LOG_LEVEL`.
    pub const RUST_LOG: &str = "RUST_LOG";
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(()),
        }
    }
}

/// The config file as written. Every field is optional; see [`Config`] for the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    /// `postgres://…`: the shared database of several nodes (default: SQLite in `data_dir`).
    pub store: Option<String>,
    pub http_addr: Option<SocketAddr>,
    pub kmip_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub kyok: KyokSection,
    /// `[hsm]`: a PKCS#11 token that protects master keys of HSM-backed instances.
    pub hsm: Option<HsmSection>,
    /// `[grpc]`: the GREP11-compatible gRPC door (on `grpc_addr`).
    #[serde(default)]
    pub grpc: GrpcSection,
    #[serde(default)]
    pub kms: KmsSection,
    /// `[kmip]`: the KMIP listener (see `crate::kmip`).
    #[serde(default)]
    pub kmip: crate::kmip::KmipSection,
    /// `[cluster]`: the node-to-node channel that hands master keys to peers.
    pub cluster: Option<crate::peers::ClusterSection>,
}

/// `[kms]`: Key Protect's waiting periods, in seconds (defaults: Key Protect's own values —
/// 30 s change guard, 1 h rotation guard, 7 days dual-authorization window, 4 h before purge,
/// 30 days to restore).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsSection {
    pub change_guard_secs: Option<u64>,
    pub rotate_guard_secs: Option<u64>,
    pub dual_auth_window_secs: Option<u64>,
    pub purge_after_secs: Option<u64>,
    pub restore_window_secs: Option<u64>,
}

impl KmsSection {
    /// Fields of `self` win over those of `other`.
    fn or(&self, other: &KmsSection) -> KmsSection {
        KmsSection {
            change_guard_secs: self.change_guard_secs.or(other.change_guard_secs),
            rotate_guard_secs: self.rotate_guard_secs.or(other.rotate_guard_secs),
            dual_auth_window_secs: self.dual_auth_window_secs.or(other.dual_auth_window_secs),
            purge_after_secs: self.purge_after_secs.or(other.purge_after_secs),
            restore_window_secs: self.restore_window_secs.or(other.restore_window_secs),
        }
    }

    /// The core's timings, defaults filled in.
    pub fn timings(&self) -> keyfort_core::KmsTimings {
        let d = keyfort_core::KmsTimings::default();
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        keyfort_core::KmsTimings {
            change_guard: secs(self.change_guard_secs, d.change_guard),
            rotate_guard: secs(self.rotate_guard_secs, d.rotate_guard),
            dual_auth_window: secs(self.dual_auth_window_secs, d.dual_auth_window),
            purge_after: secs(self.purge_after_secs, d.purge_after),
            restore_window: secs(self.restore_window_secs, d.restore_window),
        }
    }
}

/// `[hsm]`: where the key that wraps HSM-backed master keys lives. The user PIN comes from
/// `pin_file` or, if absent, from the `KEYFORT_HSM_PIN` environment variable; never from this file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    pub token_label: String,
    #[serde(default = "default_hsm_key_label")]
    pub key_label: String,
    pub pin_file: Option<PathBuf>,
    /// Generate the wrapping key on the token if it is missing (default true).
    #[serde(default = "default_true")]
    pub create_key_if_missing: bool,
}

fn default_hsm_key_label() -> String {
    "keyfort-mk-wrap".to_owned()
}

fn default_true() -> bool {
    true
}

/// `[tls]`: the server certificate chain and its private key, both PEM.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `[grpc]`: `enabled = false` keeps the gRPC door closed (it is on by default, TLS like HTTPS).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSection {
    pub enabled: Option<bool>,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub token_ttl_secs: Option<u64>,
    /// `/metrics` without an access token (default false: deployment administrators only).
    pub unauthenticated_metrics: Option<bool>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

/// `[kyok]`: pacing of the background re-seal after a master key rotation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KyokSection {
    pub reseal_batch_size: Option<usize>,
    pub reseal_pause_ms: Option<u64>,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Values that can override the file: the same shape for flags and for the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub http_addr: Option<SocketAddr>,
    pub kmip_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub reseal_batch_size: Option<usize>,
    pub reseal_pause_ms: Option<u64>,
    pub kms: KmsSection,
}

impl Overrides {
    /// Reads the `KEYFORT_*` variables (and `RUST_LOG` as a fallback log level) through `lookup`,
    /// so tests need not touch the process environment. Empty values count as unset.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let addr = |name: &'static str| -> Result<Option<SocketAddr>, ConfigError> {
            get(name)
                .map(|v| {
                    v.trim().parse().map_err(|source| ConfigError::EnvAddr {
                        var: name,
                        value: v.clone(),
                        source,
                    })
                })
                .transpose()
        };
        let log_format = get(env::LOG_FORMAT)
            .map(|v| {
                v.trim().parse().map_err(|()| ConfigError::EnvLogFormat {
                    var: env::LOG_FORMAT,
                    value: v.clone(),
                })
            })
            .transpose()?;
        let number = |name: &'static str| -> Result<Option<u64>, ConfigError> {
            get(name)
                .map(|v| {
                    v.trim().parse().map_err(|_| ConfigError::EnvNumber {
                        var: name,
                        value: v.clone(),
                    })
                })
                .transpose()
        };
        let reseal_batch_size = number(env::RESEAL_BATCH_SIZE)?
            .map(|n| {
                usize::try_from(n).map_err(|_| ConfigError::EnvNumber {
                    var: env::RESEAL_BATCH_SIZE,
                    value: n.to_string(),
                })
            })
            .transpose()?;
        Ok(Self {
            data_dir: get(env::DATA_DIR).map(PathBuf::from),
            store: get(env::STORE),
            http_addr: addr(env::HTTP_ADDR)?,
            kmip_addr: addr(env::KMIP_ADDR)?,
            grpc_addr: addr(env::GRPC_ADDR)?,
            log_format,
            log_level: get(env::LOG_LEVEL).or_else(|| get(env::RUST_LOG)),
            tls_cert_file: get(env::TLS_CERT_FILE).map(PathBuf::from),
            tls_key_file: get(env::TLS_KEY_FILE).map(PathBuf::from),
            reseal_batch_size,
            reseal_pause_ms: number(env::RESEAL_PAUSE_MS)?,
            kms: KmsSection {
                change_guard_secs: number(env::KMS_CHANGE_GUARD_SECS)?,
                rotate_guard_secs: number(env::KMS_ROTATE_GUARD_SECS)?,
                dual_auth_window_secs: number(env::KMS_DUAL_AUTH_WINDOW_SECS)?,
                purge_after_secs: number(env::KMS_PURGE_AFTER_SECS)?,
                restore_window_secs: number(env::KMS_RESTORE_WINDOW_SECS)?,
            },
        })
    }
}

/// The server certificate chain and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive string, validated.
    pub level: String,
}

/// Pacing of the background re-seal job (`[kyok]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KyokConfig {
    /// Key versions re-sealed per batch (at least 1).
    pub reseal_batch_size: usize,
    /// Pause between batches.
    pub reseal_pause: Duration,
}

/// The resolved server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--dev`: generated certificates, an unsealed instance and an API key.
    pub dev: bool,
    pub data_dir: PathBuf,
    /// The PostgreSQL database; `None`: SQLite in the data directory.
    pub store: Option<crate::store_url::StoreUrl>,
    pub http_addr: SocketAddr,
    pub kmip_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Whether the gRPC door listens on `grpc_addr` (`[grpc] enabled`, default true).
    pub grpc_enabled: bool,
    /// Required outside dev mode; ignored in dev mode (it generates its own).
    pub tls: Option<TlsFiles>,
    pub token_ttl: Duration,
    /// Who may read `/metrics` (`[auth] unauthenticated_metrics`).
    pub metrics_access: keyfort_rest::MetricsAccess,
    pub log: LogConfig,
    pub kyok: KyokConfig,
    pub hsm: Option<HsmSection>,
    pub kms: keyfort_core::KmsTimings,
    pub kmip: crate::kmip::KmipSection,
    pub cluster: Option<crate::peers::ClusterSection>,
}

impl Config {
    /// Merges the sources (flags > env > file > defaults) and validates the result.
    pub fn resolve(
        dev: bool,
        file: Option<(&Path, FileConfig)>,
        env: Overrides,
        flags: Overrides,
    ) -> Result<Self, ConfigError> {
        let (file_path, file) = match file {
            Some((path, cfg)) => (Some(path), cfg),
            None => (None, FileConfig::default()),
        };

        let data_dir = flags
            .data_dir
            .or(env.data_dir)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let store = flags
            .store
            .or(env.store)
            .or(file.store)
            .map(crate::store_url::StoreUrl::parse)
            .transpose()?;
        let http_addr = flags
            .http_addr
            .or(env.http_addr)
            .or(file.http_addr)
            .unwrap_or(DEFAULT_HTTP_ADDR);
        // In dev mode an ephemeral HTTPS port makes the KMIP port ephemeral too (unless given),
        // so that several dev servers can run side by side.
        let kmip_addr = flags
            .kmip_addr
            .or(env.kmip_addr)
            .or(file.kmip_addr)
            .unwrap_or(if dev && http_addr.port() == 0 {
                loopback(0)
            } else {
                DEFAULT_KMIP_ADDR
            });
        let grpc_addr = flags
            .grpc_addr
            .or(env.grpc_addr)
            .or(file.grpc_addr)
            .unwrap_or(DEFAULT_GRPC_ADDR);

        let format = flags
            .log_format
            .or(env.log_format)
            .or(file.log.format)
            .unwrap_or_default();
        let level = flags
            .log_level
            .or(env.log_level)
            .or(file.log.level)
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        if let Err(source) = tracing_subscriber::EnvFilter::builder().parse(&level) {
            return Err(ConfigError::LogLevel {
                value: level,
                source,
            });
        }

        let token_ttl_secs = file.auth.token_ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
        if token_ttl_secs == 0 {
            return Err(ConfigError::TokenTtl {
                path: file_path.map(Path::to_path_buf),
            });
        }

        let cert_file = flags
            .tls_cert_file
            .or(env.tls_cert_file)
            .or(file.tls.cert_file);
        let key_file = flags
            .tls_key_file
            .or(env.tls_key_file)
            .or(file.tls.key_file);
        let tls = match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                cert_file,
                key_file,
            }),
            (None, None) if dev => None,
            (cert, _) if dev => {
                // Half a TLS configuration is a mistake even when dev mode would ignore it.
                return Err(ConfigError::TlsIncomplete {
                    missing: if cert.is_none() {
                        "cert_file"
                    } else {
                        "key_file"
                    },
                });
            }
            (None, None) => return Err(ConfigError::TlsRequired),
            (None, Some(_)) => {
                return Err(ConfigError::TlsIncomplete {
                    missing: "cert_file",
                });
            }
            (Some(_), None) => {
                return Err(ConfigError::TlsIncomplete {
                    missing: "key_file",
                });
            }
        };

        let reseal_batch_size = flags
            .reseal_batch_size
            .or(env.reseal_batch_size)
            .or(file.kyok.reseal_batch_size)
            .unwrap_or(DEFAULT_RESEAL_BATCH_SIZE);
        if reseal_batch_size == 0 {
            return Err(ConfigError::ResealBatchSize {
                path: file_path.map(Path::to_path_buf),
            });
        }
        let reseal_pause_ms = flags
            .reseal_pause_ms
            .or(env.reseal_pause_ms)
            .or(file.kyok.reseal_pause_ms)
            .unwrap_or(0);

        Ok(Self {
            dev,
            data_dir,
            store,
            http_addr,
            kmip_addr,
            grpc_addr,
            grpc_enabled: file.grpc.enabled.unwrap_or(true),
            tls,
            token_ttl: Duration::from_secs(token_ttl_secs),
            metrics_access: if file.auth.unauthenticated_metrics.unwrap_or(false) {
                keyfort_rest::MetricsAccess::Open
            } else {
                keyfort_rest::MetricsAccess::Administrators
            },
            log: LogConfig { format, level },
            kyok: KyokConfig {
                reseal_batch_size,
                reseal_pause: Duration::from_millis(reseal_pause_ms),
            },
            hsm: file.hsm.clone(),
            cluster: file.cluster.clone(),
            kms: flags.kms.or(&env.kms).or(&file.kms).timings(),
            kmip: file.kmip.clone(),
        })
    }
}

/// A configuration that cannot be used. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {}: line {line}, column {column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        /// The TOML parser's description (it names the key for unknown or mistyped keys).
        message: String,
    },
    #[error("invalid {var}={value:?}: expected an IP address and port such as 127.0.0.1:8443")]
    EnvAddr {
        var: &'static str,
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("invalid {var}={value:?}: expected `text` or `json`")]
    EnvLogFormat { var: &'static str, value: String },
    #[error("invalid log level {value:?}")]
    LogLevel {
        value: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("{}[auth] token_ttl_secs must be at least 1", ConfigFileLabel(path.as_deref()))]
    TokenTtl { path: Option<PathBuf> },
    #[error("invalid {var}={value:?}: expected a whole number")]
    EnvNumber { var: &'static str, value: String },
    #[error(
        "{}[kyok] reseal_batch_size (or KEYFORT_RESEAL_BATCH_SIZE) must be at least 1",
        ConfigFileLabel(path.as_deref())
    )]
    ResealBatchSize { path: Option<PathBuf> },
    #[error(
        "no TLS certificate configured: set [tls] cert_file and key_file in the config file \
         (or KEYFORT_TLS_CERT_FILE and KEYFORT_TLS_KEY_FILE), or run `keyfort server --dev`"
    )]
    TlsRequired,
    #[error("invalid store {shown}: only postgres:// (or postgresql://) URLs are supported")]
    Store {
        /// The value, its password left out.
        shown: String,
    },
    #[error("incomplete TLS configuration: [tls] {missing} is missing")]
    TlsIncomplete { missing: &'static str },
}

struct ConfigFileLabel<'a>(Option<&'a Path>);

impl fmt::Display for ConfigFileLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "invalid config file {}: ", path.display()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(Path::new("/etc/keyfort.toml"), text)
    }

    fn tls_file() -> FileConfig {
        FileConfig {
            tls: TlsSection {
                cert_file: Some("file.crt".into()),
                key_file: Some("file.key".into()),
            },
            ..FileConfig::default()
        }
    }

    #[test]
    fn defaults_in_dev_mode() {
        let c = Config::resolve(true, None, Overrides::default(), Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.data_dir, PathBuf::from("keyfort-data"));
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8443");
        assert_eq!(c.kmip_addr.to_string(), "127.0.0.1:5696");
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:9876");
        assert_eq!(c.token_ttl, Duration::from_secs(3600));
        assert_eq!(
            c.metrics_access,
            keyfort_rest::MetricsAccess::Administrators
        );
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.tls, None);
    }

    #[test]
    fn full_file_parses() {
        let f = parse(
            r#"
            data_dir = "/var/lib/keyfort"
            http_addr = "0.0.0.0:443"
            kmip_addr = "0.0.0.0:5696"
            grpc_addr = "[::1]:0"
            [tls]
            cert_file = "/etc/keyfort/tls.crt"
            key_file = "/etc/keyfort/tls.key"
            [auth]
            token_ttl_secs = 600
            unauthenticated_metrics = true
            [log]
            format = "json"
            level = "debug,hyper=info"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = Config::resolve(
            false,
            Some((Path::new("k.toml"), f)),
            Overrides::default(),
            Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/keyfort"));
        assert_eq!(c.http_addr.to_string(), "0.0.0.0:443");
        assert_eq!(c.grpc_addr.to_string(), "[::1]:0");
        assert_eq!(c.token_ttl, Duration::from_secs(600));
        assert_eq!(c.metrics_access, keyfort_rest::MetricsAccess::Open);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "debug,hyper=info");
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert_file: "/etc/keyfort/tls.crt".into(),
                key_file: "/etc/keyfort/tls.key".into()
            })
        );
    }

    #[test]
    fn precedence_flags_over_env_over_file_over_defaults() {
        let file = FileConfig {
            data_dir: Some("from-file".into()),
            http_addr: Some("127.0.0.1:1001".parse().unwrap_or(DEFAULT_HTTP_ADDR)),
            kmip_addr: Some("127.0.0.1:2001".parse().unwrap_or(DEFAULT_HTTP_ADDR)),
            log: LogSection {
                format: Some(LogFormat::Json),
                level: Some("warn".into()),
            },
            ..tls_file()
        };
        let env_vars = |name: &str| match name {
            "KEYFORT_DATA_DIR" => Some("from-env".to_owned()),
            "KEYFORT_HTTP_ADDR" => Some("127.0.0.1:1002".to_owned()),
            "KEYFORT_LOG_FORMAT" => Some("text".to_owned()),
            "KEYFORT_TLS_KEY_FILE" => Some("env.key".to_owned()),
            "RUST_LOG" => Some("trace".to_owned()),
            _ => None,
        };
        let env = Overrides::from_env(env_vars).unwrap_or_else(|e| panic!("{e}"));
        let flags = Overrides {
            data_dir: Some("from-flag".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(false, Some((Path::new("k.toml"), file)), env, flags)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.data_dir,
            PathBuf::from("from-flag"),
            "flag beats env and file"
        );
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:1002", "env beats file");
        assert_eq!(
            c.kmip_addr.to_string(),
            "127.0.0.1:2001",
            "file beats default"
        );
        assert_eq!(
            c.grpc_addr, DEFAULT_GRPC_ADDR,
            "default when nobody sets it"
        );
        assert_eq!(c.log.format, LogFormat::Text, "env beats file");
        assert_eq!(c.log.level, "trace", "RUST_LOG beats the file");
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert_file: "file.crt".into(),
                key_file: "env.key".into()
            })
        );
    }

    #[test]
    fn keyfort_log_level_beats_rust_log_and_flag_beats_both() {
        let env_vars = |name: &str| match name {
            "KEYFORT_LOG_LEVEL" => Some("debug".to_owned()),
            "RUST_LOG" => Some("trace".to_owned()),
            _ => None,
        };
        let env = Overrides::from_env(env_vars).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(env.log_level.as_deref(), Some("debug"));
        let flags = Overrides {
            log_level: Some("error".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(true, None, env, flags).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.log.level, "error");
    }

    #[test]
    fn empty_env_values_are_unset() {
        let env = Overrides::from_env(|_| Some(String::new())).unwrap_or_else(|e| panic!("{e}"));
        assert!(env.data_dir.is_none() && env.http_addr.is_none() && env.log_level.is_none());
    }

    #[test]
    fn bad_env_address_names_the_variable() {
        let err = Overrides::from_env(|name| {
            (name == "KEYFORT_GRPC_ADDR").then(|| "localhost:x".to_owned())
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("KEYFORT_GRPC_ADDR"), "{err}");
        assert!(err.contains("localhost:x"), "{err}");
    }

    #[test]
    fn bad_env_log_format_is_rejected() {
        let err = Overrides::from_env(|name| (name == "KEYFORT_LOG_FORMAT").then(|| "xml".into()));
        assert!(matches!(err, Err(ConfigError::EnvLogFormat { .. })));
    }

    #[test]
    fn unknown_key_names_the_key_file_and_line() {
        let err = parse("data_dir = \"d\"\n\n[log]\nformat = \"text\"\nlevle = \"debug\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("invalid config file /etc/keyfort.toml: line 5"),
            "{err}"
        );
        assert!(err.contains("levle"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn unknown_top_level_key_is_an_error() {
        assert!(matches!(
            parse("http_port = 8443\n"),
            Err(ConfigError::Parse { line: 1, .. })
        ));
    }

    #[test]
    fn syntax_error_gives_line_and_column() {
        match parse("data_dir = \"d\"\nhttp_addr = \n") {
            Err(ConfigError::Parse { line, column, .. }) => {
                assert_eq!(line, 2);
                assert_eq!(column, 13);
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn bad_address_in_file_names_the_line() {
        let err = parse("\nhttp_addr = \"localhost\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn tls_is_required_outside_dev_mode() {
        let err = Config::resolve(false, None, Overrides::default(), Overrides::default());
        assert!(matches!(err, Err(ConfigError::TlsRequired)));
        let half = FileConfig {
            tls: TlsSection {
                cert_file: Some("c".into()),
                key_file: None,
            },
            ..FileConfig::default()
        };
        let err = Config::resolve(
            false,
            Some((Path::new("k.toml"), half)),
            Overrides::default(),
            Overrides::default(),
        );
        assert!(matches!(
            err,
            Err(ConfigError::TlsIncomplete {
                missing: "key_file"
            })
        ));
    }

    #[test]
    fn invalid_log_level_is_rejected() {
        let flags = Overrides {
            log_level: Some("info,keyfort=loud".into()),
            ..Overrides::default()
        };
        let err = Config::resolve(true, None, Overrides::default(), flags);
        assert!(matches!(err, Err(ConfigError::LogLevel { .. })), "{err:?}");
    }

    #[test]
    fn zero_token_ttl_is_rejected() {
        let f = parse("[auth]\ntoken_ttl_secs = 0\n").unwrap_or_else(|e| panic!("{e}"));
        let err = Config::resolve(
            true,
            Some((Path::new("k.toml"), f)),
            Overrides::default(),
            Overrides::default(),
        );
        assert!(matches!(err, Err(ConfigError::TokenTtl { .. })));
    }

    #[test]
    fn kyok_pacing_from_file_and_env() {
        let c = Config::resolve(true, None, Overrides::default(), Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.kyok.reseal_batch_size, DEFAULT_RESEAL_BATCH_SIZE);
        assert_eq!(c.kyok.reseal_pause, Duration::ZERO);
        let f = parse("[kyok]\nreseal_batch_size = 50\nreseal_pause_ms = 5\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let env = Overrides::from_env(|name| (name == env::RESEAL_PAUSE_MS).then(|| "200".into()))
            .unwrap_or_else(|e| panic!("{e}"));
        let c = Config::resolve(
            true,
            Some((Path::new("k.toml"), f)),
            env,
            Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.kyok.reseal_batch_size, 50, "file");
        assert_eq!(
            c.kyok.reseal_pause,
            Duration::from_millis(200),
            "env beats file"
        );
        let err =
            Overrides::from_env(|name| (name == env::RESEAL_BATCH_SIZE).then(|| "ten".into()));
        assert!(matches!(err, Err(ConfigError::EnvNumber { .. })));
        let zero = Overrides::from_env(|name| (name == env::RESEAL_BATCH_SIZE).then(|| "0".into()))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = Config::resolve(true, None, zero, Overrides::default());
        assert!(matches!(err, Err(ConfigError::ResealBatchSize { .. })));
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
