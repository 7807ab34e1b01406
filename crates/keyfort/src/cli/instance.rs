//! `keyfort instance …`: the admin API's instances and the Keep-Your-Own-Key ceremony
//! (DESIGN §2): initialization with custodians, unsealing with their parts, sealing, and
//! commands that custodians sign and an administrator submits.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyfort_core::{Command, CustodianPublic, KeyPart, SignedCommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, ClientArgs, ClientError};
use crate::fsutil;

use super::custodian::{CustodianError, PassphraseArg, open_secret, read_text, write_file};
use super::{CliError, parse_id, print_json};

/// The admin API's prefix.
pub const ADMIN: [&str; 3] = ["api", "keyfort", "v1"];
/// Lifetime of a new command unless `--expires-in` says otherwise.
const DEFAULT_COMMAND_LIFETIME: &str = "1h";

#[derive(Debug, clap::Args)]
pub struct InstanceArgs {
    #[command(subcommand)]
    command: InstanceCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum InstanceCommand {
    /// List the instances
    List,
    /// Create an uninitialized instance (administrators)
    Create {
        /// Instance name: letters, digits, '-' and '_'
        name: String,
    },
    /// Show an instance's sealing state, custodians, loaded parts and re-seal progress (no API
    /// key needed when the id is given)
    Status {
        /// Instance id (default: --instance/KEYFORT_INSTANCE, or the only one)
        #[arg(value_parser = parse_id)]
        id: Option<String>,
        #[command(flatten)]
        instance: InstanceArg,
    },
    /// Give an instance its first master key, split to custodians (writes DIR/<name>.part for
    /// each) or protected by the server's HSM (administrators)
    #[command(group(clap::ArgGroup::new("method").required(true).args(["custodians", "hsm"])))]
    Init {
        /// Instance id
        #[arg(value_parser = parse_id)]
        id: String,
        /// The custodians' public key files, comma-separated
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "FILE,…",
            requires = "threshold"
        )]
        custodians: Vec<PathBuf>,
        /// Parts needed to unseal (M of N)
        #[arg(long, requires = "custodians")]
        threshold: Option<u8>,
        /// Protect the master key with the server's HSM instead of custodians
        #[arg(long, conflicts_with_all = ["custodians", "threshold"])]
        hsm: bool,
        /// Where to write the part files
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
    },
    /// Submit one custodian's part toward unsealing, signed with their key (no API key needed)
    Unseal {
        /// Instance id
        #[arg(value_parser = parse_id)]
        id: String,
        /// The custodian's part file
        #[arg(long, value_name = "FILE")]
        part: PathBuf,
        /// The custodian's private key file
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Seal an instance: its master key leaves memory at once (administrators)
    Seal {
        /// Instance id
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Commands that custodians sign: rotate the master key, zeroize, change custodians
    #[command(subcommand)]
    Command(CommandCommand),
}

#[derive(Debug, clap::Subcommand)]
enum CommandCommand {
    /// Write a new unsigned command file (no server needed); custodians then run
    /// `keyfort custodian sign`
    New {
        /// What the command does
        kind: CommandKind,
        /// Instance id
        #[arg(value_parser = parse_id)]
        id: String,
        /// The command file to write
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// How long the command stays valid: e.g. 90s, 30m, 1h, 2d (at most 7d)
        #[arg(long, value_name = "DURATION", default_value = DEFAULT_COMMAND_LIFETIME,
              value_parser = parse_duration)]
        expires_in: Duration,
        /// set-custodians: the new custodians' public key files, comma-separated
        #[arg(long, value_delimiter = ',', value_name = "FILE,…")]
        custodians: Vec<PathBuf>,
        /// set-custodians: parts needed to unseal with the new custodians
        #[arg(long)]
        threshold: Option<u8>,
    },
    /// Submit a signed command file (administrators); new part files go to DIR
    Submit {
        /// The signed command file
        #[arg(value_name = "COMMAND_FILE")]
        file: PathBuf,
        /// Where to write new part files
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CommandKind {
    /// A new master key; everything is re-sealed under it and the old one forgotten
    Rotate,
    /// Destroy the master key and every key of the instance, for good
    Zeroize,
    /// A new custodian set and threshold (with a new master key)
    SetCustodians,
}

/// `--instance`, for commands that act inside one instance.
#[derive(Debug, Clone, clap::Args)]
pub struct InstanceArg {
    /// Instance id (default: the only instance on the server)
    #[arg(long, env = "KEYFORT_INSTANCE", value_parser = parse_id, global = true)]
    pub instance: Option<String>,
}

pub async fn run(args: InstanceArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let value = match args.command {
        InstanceCommand::List => list(&client).await?,
        InstanceCommand::Create { name } => {
            client
                .call(
                    Method::POST,
                    &[&ADMIN[..], &["instances"]].concat(),
                    Some(&json!({ "name": name })),
                )
                .await?
        }
        InstanceCommand::Status { id, instance } => {
            let id = resolve(&client, id.or(instance.instance)).await?;
            client
                .send_unauthenticated(Method::GET, &unseal_path(&id), None)
                .await?
        }
        InstanceCommand::Init {
            id,
            custodians,
            threshold,
            hsm,
            out_dir,
        } => init(&client, &id, &custodians, threshold, hsm, &out_dir).await?,
        InstanceCommand::Unseal {
            id,
            part,
            key,
            passphrase,
        } => unseal(&client, &id, &part, &key, &passphrase).await?,
        InstanceCommand::Seal { id } => {
            client
                .call(
                    Method::POST,
                    &[&ADMIN[..], &["instances", &id, "seal"]].concat(),
                    None,
                )
                .await?
        }
        InstanceCommand::Command(CommandCommand::New {
            kind,
            id,
            out,
            expires_in,
            custodians,
            threshold,
        }) => new_command(kind, &id, &out, expires_in, &custodians, threshold)?,
        InstanceCommand::Command(CommandCommand::Submit { file, out_dir }) => {
            submit_command(&client, &file, &out_dir).await?
        }
    };
    print_json(&value)
}

fn unseal_path(id: &str) -> Vec<&str> {
    [&ADMIN[..], &["instances", id, "unseal"]].concat()
}

fn now_unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads the custodians' `.pub` files (before any network call: a bad file fails fast).
fn read_publics(files: &[PathBuf]) -> Result<Vec<CustodianPublic>, CustodianError> {
    files
        .iter()
        .map(|path| {
            CustodianPublic::from_json(&read_text(path)?).map_err(|source| {
                CustodianError::core("custodian public key", path.clone(), source)
            })
        })
        .collect()
}

async fn init(
    client: &Client,
    id: &str,
    custodian_files: &[PathBuf],
    threshold: Option<u8>,
    hsm: bool,
    out_dir: &Path,
) -> Result<Value, CliError> {
    let path = [&ADMIN[..], &["instances", id, "init"]].concat();
    if hsm {
        return Ok(client
            .call(Method::POST, &path, Some(&json!({ "hsm": true })))
            .await?);
    }
    let custodians = read_publics(custodian_files)?;
    prepare_out_dir(out_dir)?;
    let body = json!({
        "custodians": custodians.iter().map(CustodianPublic::to_value).collect::<Vec<_>>(),
        "threshold": threshold,
    });
    let answer = client.call(Method::POST, &path, Some(&body)).await?;
    let written = write_parts(&answer, out_dir)?;
    Ok(json!({ "instance_id": id, "master_key_version": 1, "parts_written": written }))
}

async fn unseal(
    client: &Client,
    id: &str,
    part_file: &Path,
    key_file: &Path,
    passphrase: &PassphraseArg,
) -> Result<Value, CliError> {
    let part = KeyPart::from_json(&read_text(part_file)?)
        .map_err(|source| CustodianError::core("key part", part_file.to_path_buf(), source))?;
    let secret = open_secret(key_file, passphrase)?;
    let submission = secret
        .unseal_submission(&part, now_unix_secs())
        .map_err(|source| CustodianError::core("key part", part_file.to_path_buf(), source))?;
    Ok(client
        .send_unauthenticated(Method::POST, &unseal_path(id), Some(&submission.to_value()))
        .await?)
}

fn new_command(
    kind: CommandKind,
    id: &str,
    out: &Path,
    expires_in: Duration,
    custodian_files: &[PathBuf],
    threshold: Option<u8>,
) -> Result<Value, CliError> {
    let command = match (kind, threshold) {
        (CommandKind::Rotate, _) if custodian_files.is_empty() && threshold.is_none() => {
            Command::RotateMasterKey
        }
        (CommandKind::Zeroize, _) if custodian_files.is_empty() && threshold.is_none() => {
            Command::Zeroize
        }
        (CommandKind::SetCustodians, Some(threshold)) if !custodian_files.is_empty() => {
            Command::SetCustodians {
                custodians: read_publics(custodian_files)?,
                threshold,
            }
        }
        (CommandKind::SetCustodians, _) => return Err(CommandError::SetCustodiansArgs.into()),
        _ => return Err(CommandError::UnexpectedCustodians.into()),
    };
    if out.exists() {
        return Err(CustodianError::Exists {
            path: out.to_path_buf(),
        }
        .into());
    }
    let lifetime = i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX);
    let expires_at = now_unix_secs().saturating_add(lifetime);
    let signed = SignedCommand::new(id, command, expires_at)
        .map_err(|source| CustodianError::core("command", out.to_path_buf(), source))?;
    write_file(out, signed.to_json().as_bytes(), fsutil::PUBLIC)?;
    Ok(json!({
        "command": signed.command.name(),
        "instance_id": id,
        "expires_at": expires_at,
        "file": out,
    }))
}

async fn submit_command(client: &Client, file: &Path, out_dir: &Path) -> Result<Value, CliError> {
    let text = read_text(file)?;
    let command = SignedCommand::from_json(&text)
        .map_err(|source| CustodianError::core("command", file.to_path_buf(), source))?;
    prepare_out_dir(out_dir)?;
    let body: Value = serde_json::from_str(&text).map_err(|_| CommandError::NotJson {
        path: file.to_path_buf(),
    })?;
    let path = [&ADMIN[..], &["instances", &command.instance_id, "commands"]].concat();
    let answer = client.call(Method::POST, &path, Some(&body)).await?;
    let written = write_parts(&answer, out_dir)?;
    Ok(json!({
        "outcome": answer.get("outcome").cloned().unwrap_or(Value::Null),
        "instance_id": command.instance_id,
        "master_key_version": answer.get("master_key_version").cloned().unwrap_or(Value::Null),
        "parts_written": written,
    }))
}

/// Creates the output directory before the server is asked for parts, so they have somewhere
/// to go.
fn prepare_out_dir(dir: &Path) -> Result<(), CustodianError> {
    std::fs::create_dir_all(dir).map_err(|source| CustodianError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes each part of an answer's `parts` to `DIR/<custodian name>.part` (0600), or
/// `<name>.v<version>.part` if that file exists: a part the server handed out exists nowhere
/// else, so it must never be lost to a name clash. If a part cannot be written at all, the
/// whole answer is printed on stdout before the error.
fn write_parts(answer: &Value, out_dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let parts = answer
        .get("parts")
        .and_then(Value::as_array)
        .ok_or(ClientError::Unexpected {
            what: "the answer has no `parts` list",
        })?;
    let mut written = Vec::with_capacity(parts.len());
    for part in parts {
        let result = write_part(part, out_dir);
        match result {
            Ok(path) => written.push(path),
            Err(e) => {
                // Last resort: the parts on stdout, so they can be saved by hand.
                print_json(answer)?;
                return Err(e.into());
            }
        }
    }
    Ok(written)
}

fn write_part(part: &Value, out_dir: &Path) -> Result<PathBuf, CustodianError> {
    let text = match part {
        Value::String(text) => text.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    };
    let field = |name: &str| part.get(name).and_then(Value::as_str).unwrap_or_default();
    let name = safe_file_stem(field("custodian_name"), field("custodian_id"));
    let version = part
        .get("master_key_version")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    let mut path = out_dir.join(format!("{name}.part"));
    if path.exists() {
        path = out_dir.join(format!("{name}.v{version}.part"));
    }
    if path.exists() {
        return Err(CustodianError::Exists { path });
    }
    write_file(&path, text.as_bytes(), fsutil::PRIVATE)?;
    Ok(path)
}

/// A file name from a custodian name: anything but letters, digits, '-', '_' and '.' becomes
/// '_', so a name cannot leave the directory.
fn safe_file_stem(name: &str, fallback: &str) -> String {
    let source = if name.is_empty() { fallback } else { name };
    let mut stem: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() || stem.starts_with('.') {
        stem.insert(0, '_');
    }
    stem
}

/// `90s`, `30m`, `1h`, `2d` or plain seconds; at least 1 second and at most 7 days.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {text:?}: use s, m, h or d")),
    };
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|s| (1..=7 * 86_400).contains(s))
        .ok_or_else(|| format!("{text:?} is not a duration between 1s and 7d"))?;
    Ok(Duration::from_secs(secs))
}

/// A command file could not be made or sent. Exit code 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    #[error("set-custodians needs --custodians and --threshold")]
    SetCustodiansArgs,
    #[error("--custodians and --threshold are only for set-custodians")]
    UnexpectedCustodians,
    #[error("{} is not JSON", path.display())]
    NotJson { path: PathBuf },
}

async fn list(client: &Client) -> Result<Value, ClientError> {
    client
        .call(Method::GET, &[&ADMIN[..], &["instances"]].concat(), None)
        .await
}

/// The instance to act on: the one given, or else the server's only instance.
pub async fn resolve(client: &Client, given: Option<String>) -> Result<String, ClientError> {
    if let Some(id) = given {
        return Ok(id);
    }
    let listed = list(client).await?;
    let ids = instance_ids(&listed).ok_or(ClientError::Unexpected {
        what: "the instance list is not a list of objects with an `id`",
    })?;
    match ids.as_slice() {
        [only] => Ok(only.clone()),
        _ => Err(ClientError::AmbiguousInstance { count: ids.len() }),
    }
}

/// The ids in an instance list: a bare array or one under `instances` or `resources`.
fn instance_ids(listed: &Value) -> Option<Vec<String>> {
    let items = match listed {
        Value::Array(items) => items,
        Value::Object(map) => map
            .get("instances")
            .or_else(|| map.get("resources"))
            .and_then(Value::as_array)?,
        _ => return None,
    };
    items
        .iter()
        .map(|item| {
            item.get("id")
                .or_else(|| item.get("instance_id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn instance_ids_accepts_the_usual_shapes() {
        let ids = |v: Value| instance_ids(&v);
        assert_eq!(ids(json!([{"id": "a"}])), Some(vec!["a".to_owned()]));
        assert_eq!(
            ids(json!({"instances": [{"id": "a"}, {"id": "b"}]})),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(ids(json!({"resources": []})), Some(vec![]));
        assert_eq!(ids(json!({"instances": [{"name": "x"}]})), None);
        assert_eq!(ids(json!("nope")), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        for bad in ["0s", "8d", "1w", "h", "", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_files_for_each_kind() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut pubs = Vec::new();
        for name in ["dan", "erin"] {
            let secret =
                keyfort_core::CustodianSecret::generate(name).unwrap_or_else(|e| panic!("{e}"));
            let path = dir.path().join(format!("{name}.pub"));
            std::fs::write(&path, secret.public().to_value().to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            pubs.push(path);
        }
        let hour = Duration::from_secs(3600);
        let out = dir.path().join("set.json");
        assert!(matches!(
            new_command(CommandKind::SetCustodians, "i1", &out, hour, &[], Some(2)),
            Err(CliError::Command(CommandError::SetCustodiansArgs))
        ));
        assert!(matches!(
            new_command(CommandKind::Rotate, "i1", &out, hour, &pubs, None),
            Err(CliError::Command(CommandError::UnexpectedCustodians))
        ));
        new_command(CommandKind::SetCustodians, "i1", &out, hour, &pubs, Some(2))
            .unwrap_or_else(|e| panic!("{e}"));
        let cmd = SignedCommand::from_json(&read_text(&out).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        match cmd.command {
            Command::SetCustodians {
                custodians,
                threshold,
            } => {
                assert_eq!(threshold, 2);
                let names: Vec<&str> = custodians.iter().map(|c| c.name.as_str()).collect();
                assert_eq!(names, ["dan", "erin"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(cmd.expires_at > now_unix_secs() + 3500);
        assert!(
            new_command(CommandKind::Zeroize, "i1", &out, hour, &[], None).is_err(),
            "an existing file is not overwritten"
        );
    }

    #[test]
    fn part_file_names_stay_in_the_directory() {
        assert_eq!(safe_file_stem("alice", "id"), "alice");
        assert_eq!(safe_file_stem("../etc/passwd", "id"), "_.._etc_passwd");
        assert_eq!(safe_file_stem("", "abc"), "abc");
        assert_eq!(safe_file_stem("Zoë Smith", "id"), "Zo__Smith");
    }

    #[test]
    fn parts_never_overwrite_each_other() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let part = json!({"custodian_name": "alice", "master_key_version": 2, "sealed": "x"});
        let answer = json!({"parts": [part.clone()]});
        let first = write_parts(&answer, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let second = write_parts(&answer, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, vec![dir.path().join("alice.part")]);
        assert_eq!(second, vec![dir.path().join("alice.v2.part")]);
        assert!(write_parts(&answer, dir.path()).is_err());
    }
}
