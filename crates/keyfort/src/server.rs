//! `keyfort server`: wires the store, the core and the REST door, and serves them over HTTPS.
//!
//! Order matters so that bad input changes nothing: the config is validated and the TLS files
//! loaded first, then the listener is bound, and only then is the data directory created and
//! written; `dev.json` is written last, once the server accepts connections.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use tokio::signal::unix::{Signal, SignalKind, signal};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::dev::{self, DevError, DevInfo};
use crate::serve::{self, BindError};
use crate::tls::{self, TlsError};

/// The SQLite database, in the data directory.
pub const DB_FILE: &str = "keyfort.db";
/// The Ed25519 key that signs access tokens (PKCS#8, 0600), in the data directory.
pub const TOKEN_SIGNING_KEY_FILE: &str = "token-signing.key";
/// The dev instance's master key (dev mode only), in the data directory.
pub const DEV_MASTER_KEY_FILE: &str = "dev-master.key";

/// Runs the server until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), ServerError> {
    // Registered first so a signal during startup still leads to a clean shutdown.
    let shutdown = ShutdownSignal::register()?;

    let mut server_tls = match (&config.tls, config.dev) {
        (Some(files), false) => Some(tls::server_config(&files.cert_file, &files.key_file)?),
        (Some(_), true) => {
            tracing::warn!("dev mode uses its own generated certificates; [tls] is ignored");
            None
        }
        (None, _) => None,
    };

    let listener = serve::bind(config.http_addr).await?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| ServerError::LocalAddr {
            addr: config.http_addr,
            source,
        })?;

    let grpc_listener = match config.grpc_enabled {
        true => Some(serve::bind(config.grpc_addr).await?),
        false => None,
    };
    let grpc_addr = match &grpc_listener {
        Some(l) => Some(l.local_addr().map_err(|source| ServerError::LocalAddr {
            addr: config.grpc_addr,
            source,
        })?),
        None => None,
    };

    let data_dir = prepare_data_dir(&config.data_dir)?;
    let mut dev_files = None;
    if config.dev {
        let files = dev::ensure_tls(&data_dir)?;
        server_tls = Some(tls::server_config(&files.server_cert, &files.server_key)?);
        dev_files = Some(files);
    }
    let Some(server_tls) = server_tls else {
        // `Config::resolve` demands TLS files outside dev mode.
        return Err(ServerError::NoTls);
    };

    let started = start_core(&config, &data_dir).await?;

    tracing::info!(
        addr = %http_addr,
        data_dir = %data_dir.display(),
        dev = config.dev,
        "keyfort listening (HTTPS)"
    );
    // One signal stops every door.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.wait().await;
        let _ = stop_tx.send(true);
    });
    if let (Some(files), Some(identity)) = (&dev_files, &started.dev) {
        crate::kmip::register_dev_client(&started.core, files, &identity.instance_id)
            .await
            .map_err(|e| ServerError::Kmip(Box::new(e)))?;
    }
    let kmip = crate::kmip::start(
        &config,
        dev_files.as_ref(),
        started.core.clone(),
        stop_rx.clone(),
    )
    .await
    .map_err(|e| ServerError::Kmip(Box::new(e)))?;
    let grpc_server = grpc_listener.map(|grpc_listener| {
        tracing::info!(addr = ?grpc_addr, "keyfort listening (gRPC, GREP11)");
        tokio::spawn(serve::serve_https(
            grpc_listener,
            server_tls.clone(),
            started.grpc,
            serve::MAX_CONNECTIONS,
            crate::kmip::stopped(stop_rx.clone()),
        ))
    });
    let server = tokio::spawn(serve::serve_https(
        listener,
        server_tls,
        started.app,
        serve::MAX_CONNECTIONS,
        crate::kmip::stopped(stop_rx),
    ));

    if let (Some(files), Some(identity)) = (dev_files, started.dev) {
        let info = DevInfo {
            http_addr: http_addr.to_string(),
            kmip_addr: kmip.as_ref().map(|(addr, _)| addr.to_string()),
            grpc_addr: grpc_addr.map(|a| a.to_string()),
            instance_id: identity.instance_id,
            api_key: identity.api_key.to_string(),
            ca_cert: files.ca_cert,
            client_cert: files.client_cert,
            client_key: files.client_key,
        };
        info.write(&data_dir)?;
        // For a person; a closed stdout must not stop the server (dev.json has it all).
        let banner = info.banner(&DevInfo::url(http_addr), &data_dir);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{banner}").and_then(|()| out.flush());
    }

    server
        .await
        .map_err(ServerError::Task)?
        .map_err(ServerError::Serve)?;
    if let Some((_, task)) = kmip {
        task.await
            .map_err(ServerError::Task)?
            .map_err(ServerError::Serve)?;
    }
    if let Some(grpc_server) = grpc_server {
        grpc_server
            .await
            .map_err(ServerError::Task)?
            .map_err(ServerError::Serve)?;
    }
    tracing::info!("keyfort stopped");
    Ok(())
}

/// Creates the data directory (0700) if needed, checks that it is writable, and returns its
/// absolute path.
fn prepare_data_dir(dir: &Path) -> Result<PathBuf, ServerError> {
    let data_dir_error = |source| ServerError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    dev::create_private_dir(dir).map_err(|e| match e {
        DevError::Io { source, .. } => data_dir_error(source),
        other => ServerError::Dev(other),
    })?;
    let dir = dir.canonicalize().map_err(data_dir_error)?;
    let probe = dir.join(format!(".keyfort-write-test.{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| ServerError::DataDir {
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

/// What the core hands to the HTTPS door.
struct Started {
    app: Router,
    core: keyfort_core::Keyfort,
    grpc: Router,
    dev: Option<DevIdentity>,
}

/// The dev instance and its administrator API key.
struct DevIdentity {
    instance_id: String,
    api_key: Zeroizing<String>,
}

async fn start_core(config: &Config, data_dir: &Path) -> Result<Started, ServerError> {
    use keyfort_core::{CoreConfig, DevSetup, Keyfort, TokenSigner};

    let token_signer = TokenSigner::load_or_create(&data_dir.join(TOKEN_SIGNING_KEY_FILE))?;
    let node = crate::cluster::NodeStore::open(config, data_dir).await?;
    let store = node.store.clone();
    let mut core_config = CoreConfig::new(config.token_ttl, token_signer);
    core_config.reseal_batch_size = config.kyok.reseal_batch_size;
    core_config.reseal_pause = config.kyok.reseal_pause;
    core_config.kms_timings = config.kms;
    if let Some(hsm) = &config.hsm {
        core_config.master_key_protector = Some(open_hsm(hsm).await?);
    }
    let core = Keyfort::open(store, core_config).await?;
    node.attach(&core);
    for id in core.unseal_hsm_instances().await? {
        tracing::info!(instance = %id, "instance unsealed by the HSM");
    }
    if let Some(section) = &config.cluster {
        let (peers, listener) = crate::peers::Peers::open(section).await?;
        peers.fetch_all(&core).await;
        peers.spawn(listener, core.clone());
    }
    let dev = if config.dev {
        let boot = core
            .dev_bootstrap(DevSetup {
                master_key_file: data_dir.join(DEV_MASTER_KEY_FILE),
                previous_api_key: DevInfo::previous_api_key(data_dir),
            })
            .await?;
        tracing::info!(
            instance_id = %boot.instance_id,
            created = boot.created,
            "dev instance ready"
        );
        Some(DevIdentity {
            instance_id: boot.instance_id,
            api_key: Zeroizing::new(boot.api_key),
        })
    } else {
        None
    };
    Ok(Started {
        grpc: keyfort_grpc::router(core.clone()),
        app: keyfort_rest::router_with(core.clone(), config.metrics_access),
        core,
        dev,
    })
}

/// Opens the configured PKCS#11 token (blocking work, off the runtime threads).
async fn open_hsm(
    hsm: &crate::config::HsmSection,
) -> Result<Arc<dyn keyfort_core::MasterKeyProtector>, ServerError> {
    let pin =
        match &hsm.pin_file {
            Some(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    ServerError::HsmPin {
                        path: Some(path.clone()),
                        source: Some(source),
                    }
                })?);
                Zeroizing::new(text.lines().next().unwrap_or_default().to_owned())
            }
            None => Zeroizing::new(std::env::var("KEYFORT_HSM_PIN").map_err(|_| {
                ServerError::HsmPin {
                    path: None,
                    source: None,
                }
            })?),
        };
    let config = keyfort_hsm::HsmConfig {
        module: hsm.module.clone(),
        token_label: hsm.token_label.clone(),
        pin,
        key_label: hsm.key_label.clone(),
        create_key_if_missing: hsm.create_key_if_missing,
    };
    let protector =
        tokio::task::spawn_blocking(move || keyfort_hsm::Pkcs11Protector::open(&config))
            .await
            .map_err(ServerError::Task)?
            .map_err(ServerError::Hsm)?;
    tracing::info!(hsm = %keyfort_core::MasterKeyProtector::describe(&protector), "HSM ready");
    Ok(Arc::new(protector))
}

/// SIGTERM or SIGINT (Ctrl-C), whichever comes first.
struct ShutdownSignal {
    term: Signal,
    int: Signal,
}

impl ShutdownSignal {
    fn register() -> Result<Self, ServerError> {
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(ServerError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(ServerError::Signal)?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("interrupt received"),
        }
    }
}

/// The server cannot start or stopped abnormally. Exit code 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot read the address bound for {addr}")]
    LocalAddr {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot use data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("no TLS certificate configured")]
    NoTls,
    #[error(transparent)]
    Dev(#[from] DevError),
    #[error(transparent)]
    Kmip(Box<crate::kmip::KmipError>),
    #[error("cannot install the signal handlers")]
    Signal(#[source] io::Error),
    #[error("cannot open the core")]
    Core(#[from] keyfort_core::CoreError),
    #[error("cannot open the database")]
    Store(#[from] keyfort_store::StoreError),
    #[error("the HTTPS server failed")]
    Serve(#[source] io::Error),
    #[error("the HTTPS server task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot start the node-to-node channel")]
    Peers(#[from] crate::peers::PeerError),
    #[error("cannot open the HSM")]
    Hsm(#[source] keyfort_hsm::HsmError),
    #[error("no HSM PIN: set [hsm] pin_file{} or KEYFORT_HSM_PIN", path.as_ref().map(|p| format!(" (cannot read {})", p.display())).unwrap_or_default())]
    HsmPin {
        path: Option<PathBuf>,
        #[source]
        source: Option<io::Error>,
    },
}
