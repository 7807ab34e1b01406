//! `keyfort server --dev`: the files it keeps in the data directory.
//!
//! ```text
//! D/tls/ca.pem, ca-key.pem            the dev CA (reused across restarts)
//! D/tls/server.pem, server-key.pem    localhost, 127.0.0.1, ::1
//! D/tls/client.pem, client-key.pem    clientAuth, for KMIP clients
//! D/dev.json                          addresses, instance id, API key, certificate paths (0600)
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fsutil::{self, PRIVATE, PUBLIC};
use crate::tls::{self, CertAndKey, TlsError};

/// Name of the dev bootstrap file in the data directory.
pub const DEV_JSON: &str = "dev.json";

/// Paths of the dev TLS material, absolute.
#[derive(Debug, Clone)]
pub struct DevTlsFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl DevTlsFiles {
    fn under(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }
}

/// Makes sure the dev CA, server and client certificates exist under `data_dir` (absolute),
/// generating only what is missing. A new CA means new leaf certificates too.
pub fn ensure_tls(data_dir: &Path) -> Result<DevTlsFiles, DevError> {
    let files = DevTlsFiles::under(data_dir);
    if let Some(dir) = files.ca_cert.parent() {
        create_private_dir(dir)?;
    }

    let have_ca = exists(&files.ca_cert)? && exists(&files.ca_key)?;
    let ca_key_pem = if have_ca {
        Zeroizing::new(
            std::fs::read_to_string(&files.ca_key).map_err(|source| DevError::Io {
                path: files.ca_key.clone(),
                source,
            })?,
        )
    } else {
        tracing::info!(path = %files.ca_cert.display(), "generating the dev CA");
        let ca = tls::generate_dev_ca()?;
        write_pair(&ca, &files.ca_cert, &files.ca_key)?;
        ca.key_pem
    };

    let reuse = |cert: &Path, key: &Path| -> Result<bool, DevError> {
        Ok(have_ca && exists(cert)? && exists(key)?)
    };
    if !reuse(&files.server_cert, &files.server_key)? {
        tracing::info!(path = %files.server_cert.display(), "issuing the dev server certificate");
        let leaf = tls::issue_dev_server_cert(&ca_key_pem)?;
        write_pair(&leaf, &files.server_cert, &files.server_key)?;
    }
    if !reuse(&files.client_cert, &files.client_key)? {
        tracing::info!(path = %files.client_cert.display(), "issuing the dev client certificate");
        let leaf = tls::issue_dev_client_cert(&ca_key_pem)?;
        write_pair(&leaf, &files.client_cert, &files.client_key)?;
    }
    Ok(files)
}

fn exists(path: &Path) -> Result<bool, DevError> {
    path.try_exists().map_err(|source| DevError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_pair(pair: &CertAndKey, cert: &Path, key: &Path) -> Result<(), DevError> {
    // Key first: a certificate without its key would be reused but unusable.
    write(key, pair.key_pem.as_bytes(), PRIVATE)?;
    write(cert, pair.cert_pem.as_bytes(), PUBLIC)
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), DevError> {
    fsutil::write_atomic(path, data, mode).map_err(|source| DevError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates a directory (and its parents) with mode 0700 where it is new.
pub fn create_private_dir(dir: &Path) -> Result<(), DevError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DevError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// The content of `D/dev.json`: what a client needs to talk to the dev server.
#[derive(Serialize, Deserialize)]
pub struct DevInfo {
    /// The bound HTTPS address, `host:port`.
    pub http_addr: String,
    /// The bound KMIP address, `host:port` (`null` when `[kmip]` is disabled).
    pub kmip_addr: Option<String>,
    /// The bound gRPC (GREP11) address, `host:port`; `null` when `[grpc] enabled = false`.
    pub grpc_addr: Option<String>,
    pub instance_id: String,
    pub api_key: String,
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl DevInfo {
    /// The URL a client on this machine uses: a wildcard bind address becomes loopback, which
    /// the dev certificate covers.
    pub fn url(addr: SocketAddr) -> String {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("https://{}", SocketAddr::new(ip, addr.port()))
    }

    /// Writes `D/dev.json` atomically with mode 0600.
    pub fn write(&self, data_dir: &Path) -> Result<(), DevError> {
        let path = data_dir.join(DEV_JSON);
        let mut json =
            Zeroizing::new(
                serde_json::to_vec_pretty(self).map_err(|source| DevError::Io {
                    path: path.clone(),
                    source: source.into(),
                })?,
            );
        json.push(b'\n');
        write(&path, &json, PRIVATE)
    }

    /// The API key of a previous dev run, so that restarting keeps it.
    pub fn previous_api_key(data_dir: &Path) -> Option<String> {
        let path = data_dir.join(DEV_JSON);
        let text = Zeroizing::new(std::fs::read(&path).ok()?);
        match serde_json::from_slice::<DevInfo>(&text) {
            Ok(info) => Some(info.api_key),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable dev.json");
                None
            }
        }
    }

    /// What a person reads on stdout when the dev server is up.
    pub fn banner(&self, url: &str, data_dir: &Path) -> String {
        let dev_json = data_dir.join(DEV_JSON);
        format!(
            "\nKeyfort dev server is running. Development only: the master key and the API key \
             are stored in plain files.\n\n\
             \x20 HTTPS:       {url}\n\
             \x20 KMIP:        {kmip}\n\
             \x20 gRPC:        {grpc}\n\
             \x20 Instance:    {instance}\n\
             \x20 API key:     {api_key}\n\
             \x20 CA cert:     {ca}\n\
             \x20 Client cert: {client_cert} (key {client_key})\n\
             \x20 Details:     {dev_json}\n\n\
             Use the CLI from another shell:\n\n\
             \x20 export KEYFORT_ADDR={url} KEYFORT_CACERT={ca_q} KEYFORT_API_KEY={api_key_q}\n\
             \x20 export KEYFORT_INSTANCE={instance_q}\n\
             \x20 keyfort health\n\
             \x20 keyfort key create --name my-first-key\n",
            instance = self.instance_id,
            kmip = self.kmip_addr.as_deref().unwrap_or("(disabled)"),
            grpc = self.grpc_addr.as_deref().unwrap_or("(disabled)"),
            api_key = self.api_key,
            ca = self.ca_cert.display(),
            client_cert = self.client_cert.display(),
            client_key = self.client_key.display(),
            dev_json = dev_json.display(),
            ca_q = shell_quote(&self.ca_cert.to_string_lossy()),
            api_key_q = shell_quote(&self.api_key),
            instance_q = shell_quote(&self.instance_id),
        )
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Dev bootstrap files that cannot be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_default()
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn ensure_tls_generates_once_and_regenerates_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let files = ensure_tls(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        for key in [&files.ca_key, &files.server_key, &files.client_key] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        assert_eq!(mode(&files.ca_cert), 0o644);
        let ca = read(&files.ca_cert);
        let server = read(&files.server_cert);
        let client = read(&files.client_cert);

        let again = ensure_tls(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(&again.ca_cert), ca, "CA reused");
        assert_eq!(read(&again.server_cert), server, "server cert reused");

        std::fs::remove_file(&files.client_key).unwrap_or_else(|e| panic!("{e}"));
        let again = ensure_tls(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(&again.ca_cert), ca, "CA still reused");
        assert_eq!(read(&again.server_cert), server);
        assert_ne!(read(&again.client_cert), client, "client pair reissued");

        std::fs::remove_file(&files.ca_key).unwrap_or_else(|e| panic!("{e}"));
        let again = ensure_tls(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(read(&again.ca_cert), ca, "new CA");
        assert_ne!(read(&again.server_cert), server, "leaves follow a new CA");
    }

    #[test]
    fn dev_json_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let info = DevInfo {
            http_addr: "127.0.0.1:8443".into(),
            kmip_addr: None,
            grpc_addr: None,
            instance_id: "i-1".into(),
            api_key: "secret-key".into(),
            ca_cert: "/d/tls/ca.pem".into(),
            client_cert: "/d/tls/client.pem".into(),
            client_key: "/d/tls/client-key.pem".into(),
        };
        info.write(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(DEV_JSON);
        assert_eq!(mode(&path), 0o600);
        let value: serde_json::Value =
            serde_json::from_slice(&read(&path)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value["kmip_addr"], serde_json::Value::Null);
        assert_eq!(value["grpc_addr"], serde_json::Value::Null);
        assert_eq!(value["http_addr"], "127.0.0.1:8443");
        assert_eq!(
            DevInfo::previous_api_key(dir.path()).as_deref(),
            Some("secret-key")
        );
        let banner = info.banner("https://127.0.0.1:8443", dir.path());
        assert!(banner.contains(
            "export KEYFORT_ADDR=https://127.0.0.1:8443 KEYFORT_CACERT=/d/tls/ca.pem \
             KEYFORT_API_KEY=secret-key"
        ));
    }

    #[test]
    fn url_maps_wildcard_to_loopback() {
        let url = |s: &str| DevInfo::url(s.parse().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(url("0.0.0.0:1"), "https://127.0.0.1:1");
        assert_eq!(url("[::]:2"), "https://[::1]:2");
        assert_eq!(url("127.0.0.1:3"), "https://127.0.0.1:3");
    }

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(shell_quote("/a/b.pem"), "/a/b.pem");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
