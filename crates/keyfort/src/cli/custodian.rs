//! `keyfort custodian keygen|sign`: a custodian's own files, made and used on their machine.
//! Nothing here talks to a server; the private key never leaves the `.key` file unencrypted.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use keyfort_core::{CoreError, CustodianSecret, SignedCommand, custodian::MAX_FILE_LEN};
use keyfort_crypto::kdf::ScryptParams;
use serde_json::json;
use zeroize::Zeroizing;

use crate::fsutil;

use super::{CliError, print_json};

/// Environment switch for the weak test KDF parameters (see `--kdf-test-params`).
pub const TEST_FAST_KDF_ENV: &str = "KEYFORT_TEST_FAST_KDF";

#[derive(Debug, clap::Args)]
pub struct CustodianArgs {
    #[command(subcommand)]
    command: CustodianCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CustodianCommand {
    /// Make a custodian's key pairs: OUT.pub (to share with the administrators) and OUT.key
    /// (private, 0600, encrypted under a passphrase)
    Keygen {
        /// Path prefix of the files to write (OUT.pub and OUT.key)
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
        /// The custodian's name (default: the file name of OUT)
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        passphrase: PassphraseArg,
        /// FOR TESTS ONLY: protect the key file with weak, fast scrypt parameters. Never use
        /// this for a real custodian key [env: KEYFORT_TEST_FAST_KDF=1]
        #[arg(long, env = TEST_FAST_KDF_ENV, hide_env = true,
              value_parser = clap::builder::FalseyValueParser::new())]
        kdf_test_params: bool,
    },
    /// Add this custodian's signature to a command file (in place)
    Sign {
        /// The command file (from `keyfort instance command new`)
        #[arg(value_name = "COMMAND_FILE")]
        file: PathBuf,
        /// The custodian's private key file
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
}

/// Where the passphrase of a `.key` file comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct PassphraseArg {
    /// Read the passphrase from the first line of FILE instead of prompting on the terminal
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

pub async fn run(args: CustodianArgs) -> Result<(), CliError> {
    match args.command {
        CustodianCommand::Keygen {
            out,
            name,
            passphrase,
            kdf_test_params,
        } => {
            let params = if kdf_test_params {
                ScryptParams::TEST
            } else {
                ScryptParams::INTERACTIVE
            };
            keygen(&out, name.as_deref(), &passphrase, params)
        }
        CustodianCommand::Sign {
            file,
            key,
            passphrase,
        } => sign(&file, &key, &passphrase),
    }
}

fn keygen(
    out: &Path,
    name: Option<&str>,
    passphrase: &PassphraseArg,
    params: ScryptParams,
) -> Result<(), CliError> {
    let name = match name {
        Some(name) => name.to_owned(),
        None => out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| CustodianError::NoName {
                path: out.to_path_buf(),
            })?,
    };
    let pub_file = with_suffix(out, "pub");
    let key_file = with_suffix(out, "key");
    for path in [&pub_file, &key_file] {
        if path.exists() {
            return Err(CustodianError::Exists { path: path.clone() }.into());
        }
    }
    let secret = CustodianSecret::generate(&name)
        .map_err(|source| CustodianError::core("custodian", out.to_path_buf(), source))?;
    let phrase = read_passphrase(passphrase, &key_file, true)?;
    let protected = secret
        .to_protected_json(phrase.as_bytes(), params)
        .map_err(|source| CustodianError::core("custodian", key_file.clone(), source))?;
    let public = secret.public();
    let public_text = serde_json::to_string_pretty(&public.to_value())
        .unwrap_or_else(|_| public.to_value().to_string());
    write_file(&key_file, protected.as_bytes(), fsutil::PRIVATE)?;
    write_file(&pub_file, public_text.as_bytes(), fsutil::PUBLIC)?;
    print_json(&json!({
        "name": public.name,
        "id": public.id(),
        "public_file": pub_file,
        "key_file": key_file,
    }))
}

fn sign(file: &Path, key: &Path, passphrase: &PassphraseArg) -> Result<(), CliError> {
    let text = read_text(file)?;
    let mut command = SignedCommand::from_json(&text)
        .map_err(|source| CustodianError::core("command", file.to_path_buf(), source))?;
    let secret = open_secret(key, passphrase)?;
    command.sign(&secret);
    write_file(file, command.to_json().as_bytes(), fsutil::PUBLIC)?;
    let signers: Vec<&str> = command
        .signatures
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    print_json(&json!({
        "command": command.command.name(),
        "instance_id": command.instance_id,
        "expires_at": command.expires_at,
        "signed_by": secret.public().id(),
        "signatures": signers,
    }))
}

/// `prefix.ext` (`alice` → `alice.pub`), keeping any dots already in the prefix.
fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// Opens a custodian's `.key` file with its passphrase.
pub fn open_secret(key: &Path, passphrase: &PassphraseArg) -> Result<CustodianSecret, CliError> {
    let text = Zeroizing::new(read_text(key)?);
    let phrase = read_passphrase(passphrase, key, false)?;
    CustodianSecret::from_protected_json(&text, phrase.as_bytes())
        .map_err(|source| CustodianError::core("custodian key", key.to_path_buf(), source).into())
}

/// The passphrase: the first line of `--passphrase-file`, or typed twice (once to open) on the
/// terminal without echo.
fn read_passphrase(
    arg: &PassphraseArg,
    key_file: &Path,
    confirm: bool,
) -> Result<Zeroizing<String>, CustodianError> {
    let phrase = match &arg.passphrase_file {
        Some(path) => {
            let read_error = |source| CustodianError::Read {
                path: path.clone(),
                source,
            };
            let file = std::fs::File::open(path).map_err(read_error)?;
            let mut line = Zeroizing::new(String::new());
            BufReader::new(file.take(MAX_FILE_LEN as u64))
                .read_line(&mut line)
                .map_err(read_error)?;
            let trimmed = line.trim_end_matches(['\r', '\n']).len();
            line.truncate(trimmed);
            line
        }
        None => {
            let prompt = format!("Passphrase for {}: ", key_file.display());
            let first =
                Zeroizing::new(rpassword::prompt_password(prompt).map_err(CustodianError::Prompt)?);
            if confirm {
                let again = Zeroizing::new(
                    rpassword::prompt_password("Repeat the passphrase: ")
                        .map_err(CustodianError::Prompt)?,
                );
                if *first != *again {
                    return Err(CustodianError::PassphraseMismatch);
                }
            }
            first
        }
    };
    if phrase.is_empty() {
        return Err(CustodianError::EmptyPassphrase);
    }
    Ok(phrase)
}

/// Reads a custodian, part or command file (bounded).
pub fn read_text(path: &Path) -> Result<String, CustodianError> {
    let read_error = |source| CustodianError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_FILE_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() > MAX_FILE_LEN {
        return Err(CustodianError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_FILE_LEN,
        });
    }
    Ok(text)
}

/// Writes a file atomically with `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CustodianError> {
    fsutil::write_atomic(path, data, mode).map_err(|source| CustodianError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A custodian file or passphrase could not be used. Exit code 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodianError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: usize },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already exists; not overwriting it", path.display())]
    Exists { path: PathBuf },
    #[error("cannot derive a custodian name from {}: pass --name", path.display())]
    NoName { path: PathBuf },
    /// The core refused a file's content (format, passphrase, signature, binding).
    #[error("{what} file {}", path.display())]
    Core {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Box<CoreError>,
    },
    #[error("cannot read the passphrase from the terminal (use --passphrase-file)")]
    Prompt(#[source] std::io::Error),
    #[error("the passphrases do not match")]
    PassphraseMismatch,
    #[error("the passphrase is empty")]
    EmptyPassphrase,
}

impl CustodianError {
    /// The core refused the content of the `what` file at `path`.
    pub fn core(what: &'static str, path: impl Into<PathBuf>, source: CoreError) -> Self {
        CustodianError::Core {
            what,
            path: path.into(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passphrase_file(dir: &Path, text: &str) -> PassphraseArg {
        let path = dir.join("pass");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        PassphraseArg {
            passphrase_file: Some(path),
        }
    }

    #[test]
    fn passphrase_is_the_first_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let arg = passphrase_file(dir.path(), "correct horse\r\nsecond line\n");
        let phrase = read_passphrase(&arg, Path::new("k"), true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(phrase.as_str(), "correct horse");
        let empty = passphrase_file(dir.path(), "\nx\n");
        assert!(matches!(
            read_passphrase(&empty, Path::new("k"), false),
            Err(CustodianError::EmptyPassphrase)
        ));
    }

    #[test]
    fn keygen_writes_private_and_public_files_and_sign_uses_them() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let arg = passphrase_file(dir.path(), "pw\n");
        let out = dir.path().join("alice");
        keygen(&out, None, &arg, ScryptParams::TEST).unwrap_or_else(|e| panic!("{e}"));
        let key = dir.path().join("alice.key");
        let mode = std::fs::metadata(&key).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.unwrap_or_default(), 0o600);
        let public = keyfort_core::CustodianPublic::from_json(
            &read_text(&dir.path().join("alice.pub")).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(public.name, "alice");
        assert!(matches!(
            keygen(&out, None, &arg, ScryptParams::TEST),
            Err(CliError::Custodian(CustodianError::Exists { .. }))
        ));

        let cmd_file = dir.path().join("cmd.json");
        let cmd = SignedCommand::new("i1", keyfort_core::Command::Zeroize, 4_000_000_000)
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&cmd_file, cmd.to_json()).unwrap_or_else(|e| panic!("{e}"));
        sign(&cmd_file, &key, &arg).unwrap_or_else(|e| panic!("{e}"));
        let signed = SignedCommand::from_json(&read_text(&cmd_file).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(signed.signatures.len(), 1);
        assert!(public.verify(&signed.signed_bytes(), &signed.signatures[0].1));

        let wrong = passphrase_file(dir.path(), "not it\n");
        let err = open_secret(&key, &wrong)
            .err()
            .map(|e| super::super::report(&e));
        assert!(
            err.as_deref()
                .unwrap_or_default()
                .contains("wrong passphrase"),
            "{err:?}"
        );
    }
}
