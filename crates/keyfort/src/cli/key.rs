//! `keyfort key create|list|get|material|wrap|unwrap`: keys of one instance, through the admin
//! API.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use reqwest::Method;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::client::{Client, ClientArgs, ClientError};

use super::instance::{ADMIN, InstanceArg, resolve};
use super::{CliError, parse_id, print_json};

/// Largest key material file accepted by `--payload-file`.
const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
    #[command(flatten)]
    instance: InstanceArg,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum KeyCommand {
    /// Create a key (a root key unless --standard), generated or imported
    Create {
        /// Key name
        #[arg(long)]
        name: String,
        /// A standard key (extractable) instead of a root key
        #[arg(long)]
        standard: bool,
        /// Import this key material (raw bytes) instead of generating it
        #[arg(long, value_name = "FILE")]
        payload_file: Option<PathBuf>,
    },
    /// List the keys
    List,
    /// Show one key
    Get {
        /// Key id
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Print a standard key's material (base64)
    Material {
        /// Key id
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Wrap data (or a new 32-byte DEK the server generates) with a root key
    Wrap {
        /// Root key id
        #[arg(value_parser = parse_id)]
        id: String,
        /// The data to wrap, base64 (default: the server generates a DEK and returns it)
        #[arg(long, value_name = "B64")]
        plaintext_b64: Option<String>,
        /// Additional authenticated data, comma-separated; unwrap needs the same
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        aad: Vec<String>,
    },
    /// Unwrap a ciphertext made by `key wrap` with the same root key
    Unwrap {
        /// Root key id
        #[arg(value_parser = parse_id)]
        id: String,
        /// The ciphertext, base64
        #[arg(long, value_name = "B64")]
        ciphertext: String,
        /// The additional authenticated data given to wrap, comma-separated
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        aad: Vec<String>,
    },
}

pub async fn run(args: KeyArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    // Read the payload before any network call: a bad file fails fast.
    let body = match &args.command {
        KeyCommand::Create {
            name,
            standard,
            payload_file,
        } => Some(create_body(name, *standard, payload_file.as_deref())?),
        KeyCommand::Wrap {
            plaintext_b64, aad, ..
        } => {
            let mut body = Map::new();
            if let Some(p) = plaintext_b64 {
                body.insert("plaintext".into(), Value::String(p.clone()));
            }
            body.insert("aad".into(), aad.clone().into());
            Some(Value::Object(body))
        }
        KeyCommand::Unwrap {
            ciphertext, aad, ..
        } => Some(serde_json::json!({
            "ciphertext": ciphertext,
            "aad": aad,
        })),
        KeyCommand::List | KeyCommand::Get { .. } | KeyCommand::Material { .. } => None,
    };
    let instance = resolve(&client, args.instance.instance).await?;
    let keys = [&ADMIN[..], &["instances", &instance, "keys"]].concat();
    let value = match args.command {
        KeyCommand::Create { .. } => client.call(Method::POST, &keys, body.as_ref()).await?,
        KeyCommand::List => client.call(Method::GET, &keys, None).await?,
        KeyCommand::Get { id } => {
            client
                .call(Method::GET, &[&keys[..], &[&id]].concat(), None)
                .await?
        }
        KeyCommand::Material { id } => {
            client
                .call(Method::GET, &[&keys[..], &[&id, "material"]].concat(), None)
                .await?
        }
        KeyCommand::Wrap { id, .. } => {
            client
                .call(
                    Method::POST,
                    &[&keys[..], &[&id, "wrap"]].concat(),
                    body.as_ref(),
                )
                .await?
        }
        KeyCommand::Unwrap { id, .. } => {
            client
                .call(
                    Method::POST,
                    &[&keys[..], &[&id, "unwrap"]].concat(),
                    body.as_ref(),
                )
                .await?
        }
    };
    print_json(&value)
}

/// `{"name", "extractable", "payload"?}`; the payload is the file's bytes in base64.
fn create_body(
    name: &str,
    standard: bool,
    payload_file: Option<&Path>,
) -> Result<Value, ClientError> {
    let mut body = Map::new();
    body.insert("name".into(), Value::String(name.to_owned()));
    body.insert("extractable".into(), Value::Bool(standard));
    if let Some(path) = payload_file {
        let payload = read_payload(path)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(payload.as_slice());
        body.insert("payload".into(), Value::String(encoded));
    }
    Ok(Value::Object(body))
}

fn read_payload(path: &Path) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let read_error = |source| ClientError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut payload = Zeroizing::new(Vec::new());
    file.take(MAX_PAYLOAD_BYTES + 1)
        .read_to_end(&mut payload)
        .map_err(read_error)?;
    if payload.len() as u64 > MAX_PAYLOAD_BYTES {
        return Err(ClientError::PayloadTooLarge {
            path: path.to_path_buf(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    if payload.is_empty() {
        return Err(ClientError::EmptyPayload {
            path: path.to_path_buf(),
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn create_body_encodes_the_payload() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("k.bin");
        std::fs::write(&file, [0u8, 1, 2, 255]).unwrap_or_else(|e| panic!("{e}"));
        let body = create_body("k", true, Some(&file)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            body,
            json!({"name": "k", "extractable": true, "payload": "AAEC/w=="})
        );
        let body = create_body("r", false, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body, json!({"name": "r", "extractable": false}));
    }

    #[test]
    fn bad_payload_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            create_body("k", false, Some(&empty)),
            Err(ClientError::EmptyPayload { .. })
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![7u8; 70_000]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            create_body("k", false, Some(&big)),
            Err(ClientError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            create_body("k", false, Some(&dir.path().join("missing"))),
            Err(ClientError::ReadFile { .. })
        ));
    }
}
