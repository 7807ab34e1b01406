//! Custodians and the files they hold (DESIGN §2: Keep Your Own Key).
//!
//! A custodian has two key pairs: X25519, to which their master-key parts are sealed, and Ed25519,
//! with which they sign unseal submissions and administrative commands. The files:
//!
//! | file | content | format tag |
//! |---|---|---|
//! | `alice.pub` | name, both public keys | `keyfort-custodian-public-v1` |
//! | `alice.key` | both private keys, AES-256-GCM under an scrypt key from a passphrase | `keyfort-custodian-private-v1` |
//! | `alice.part` | one Shamir share of a master key, sealed to alice's X25519 key | `keyfort-key-part-v1` |
//! | `cmd.json` | a command for the server with custodians' signatures | `keyfort-command-v1` |
//!
//! Every file is JSON; binary fields are standard base64. What is signed or bound as associated
//! data is a fixed line-oriented text (see [`UnsealSubmission::signed_bytes`],
//! [`SignedCommand::signed_bytes`], [`KeyPart::aad`]), never re-serialized JSON.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyfort_crypto::ed25519;
use keyfort_crypto::kdf::{ScryptParams, scrypt};
use keyfort_crypto::sealbox::{self, X25519Secret};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::Result;
use crate::error::CoreError;

const PUBLIC_FORMAT: &str = "keyfort-custodian-public-v1";
const PRIVATE_FORMAT: &str = "keyfort-custodian-private-v1";
const PART_FORMAT: &str = "keyfort-key-part-v1";
const COMMAND_FORMAT: &str = "keyfort-command-v1";
const UNSEAL_DOMAIN: &str = "keyfort-unseal-v1";
/// Largest custodian, part or command file accepted.
pub const MAX_FILE_LEN: usize = 64 * 1024;

fn invalid(field: &'static str, rule: &'static str) -> CoreError {
    CoreError::InvalidField { field, rule }
}

fn parse_json(text: &str, field: &'static str) -> Result<Value> {
    if text.len() > MAX_FILE_LEN {
        return Err(invalid(field, "file too large"));
    }
    let v: Value = serde_json::from_str(text).map_err(|_| invalid(field, "not valid JSON"))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(invalid(field, "must be a JSON object"))
    }
}

fn str_field<'a>(v: &'a Value, name: &str, field: &'static str) -> Result<&'a str> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or(invalid(field, "a required field is missing"))
}

fn u64_field(v: &Value, name: &str, field: &'static str) -> Result<u64> {
    v.get(name)
        .and_then(Value::as_u64)
        .ok_or(invalid(field, "a required number is missing"))
}

fn b64_field(v: &Value, name: &str, field: &'static str) -> Result<Vec<u8>> {
    B64.decode(str_field(v, name, field)?)
        .map_err(|_| invalid(field, "a field is not base64"))
}

fn key32(bytes: &[u8], field: &'static str) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| invalid(field, "a key has the wrong length"))
}

/// A custodian as the server knows them: name and public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustodianPublic {
    pub name: String,
    pub encryption_key: [u8; 32],
    pub signing_key: [u8; 32],
}

impl CustodianPublic {
    /// A stable identifier: the first 16 bytes of SHA-256 over both public keys, in hex.
    pub fn id(&self) -> String {
        let mut input = Vec::with_capacity(64 + 32);
        input.extend_from_slice(PUBLIC_FORMAT.as_bytes());
        input.extend_from_slice(&self.encryption_key);
        input.extend_from_slice(&self.signing_key);
        hex::encode(&keyfort_crypto::digest::sha256(&input)[..16])
    }

    /// As JSON (the `.pub` file, and the server's stored form).
    pub fn to_value(&self) -> Value {
        json!({
            "format": PUBLIC_FORMAT,
            "id": self.id(),
            "name": self.name,
            "encryption_key": B64.encode(self.encryption_key),
            "signing_key": B64.encode(self.signing_key),
        })
    }

    /// Reads a `.pub` file (or the server's stored form).
    pub fn from_value(v: &Value) -> Result<CustodianPublic> {
        const F: &str = "custodian public key file";
        if str_field(v, "format", F)? != PUBLIC_FORMAT {
            return Err(invalid(F, "unknown format"));
        }
        let name = str_field(v, "name", F)?.to_owned();
        validate_name(&name)?;
        let c = CustodianPublic {
            name,
            encryption_key: key32(&b64_field(v, "encryption_key", F)?, F)?,
            signing_key: key32(&b64_field(v, "signing_key", F)?, F)?,
        };
        if let Some(id) = v.get("id").and_then(Value::as_str)
            && id != c.id()
        {
            return Err(invalid(F, "the id does not match the keys"));
        }
        Ok(c)
    }

    /// Reads a `.pub` file's text.
    pub fn from_json(text: &str) -> Result<CustodianPublic> {
        CustodianPublic::from_value(&parse_json(text, "custodian public key file")?)
    }

    /// Checks a signature by this custodian.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ed25519::verify(&self.signing_key, message, signature).is_ok()
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
        return Err(invalid(
            "custodian name",
            "must be 1 to 64 characters without control characters",
        ));
    }
    Ok(())
}

/// A custodian's private keys, held by the custodian (never by the server).
pub struct CustodianSecret {
    name: String,
    encryption: X25519Secret,
    signing: ed25519::SigningKey,
}

impl fmt::Debug for CustodianSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustodianSecret")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CustodianSecret {
    /// Fresh key pairs for a custodian.
    pub fn generate(name: &str) -> Result<CustodianSecret> {
        validate_name(name)?;
        Ok(CustodianSecret {
            name: name.to_owned(),
            encryption: X25519Secret::generate()?,
            signing: ed25519::SigningKey::generate()?,
        })
    }

    /// The public half.
    pub fn public(&self) -> CustodianPublic {
        CustodianPublic {
            name: self.name.clone(),
            encryption_key: self.encryption.public_key(),
            signing_key: self.signing.public_key(),
        }
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message)
    }

    /// The `.key` file: the private keys under AES-256-GCM with a key derived by scrypt from the
    /// passphrase (the custodian's public id and the format bound as associated data).
    pub fn to_protected_json(&self, passphrase: &[u8], params: ScryptParams) -> Result<String> {
        if passphrase.is_empty() {
            return Err(invalid("passphrase", "must not be empty"));
        }
        let mut salt = [0u8; 16];
        keyfort_crypto::rng::fill(&mut salt)?;
        let mut kek = Zeroizing::new([0u8; 32]);
        scrypt(passphrase, &salt, params, kek.as_mut_slice())?;
        let signing_pkcs8 = self.signing.to_pkcs8()?;
        let encryption = self.encryption.to_bytes();
        let mut plaintext = Zeroizing::new(Vec::with_capacity(32 + signing_pkcs8.len()));
        plaintext.extend_from_slice(encryption.as_slice());
        plaintext.extend_from_slice(&signing_pkcs8);
        let id = self.public().id();
        let aad = format!("{PRIVATE_FORMAT}\n{id}");
        let (nonce, ciphertext) =
            keyfort_crypto::aes::gcm_encrypt_random_iv(kek.as_slice(), aad.as_bytes(), &plaintext)?;
        let file = json!({
            "format": PRIVATE_FORMAT,
            "name": self.name,
            "public": self.public().to_value(),
            "kdf": {"alg": "scrypt", "log_n": params.log_n, "r": params.r, "p": params.p,
                    "salt": B64.encode(salt)},
            "nonce": B64.encode(nonce),
            "ciphertext": B64.encode(ciphertext),
        });
        Ok(serde_json::to_string_pretty(&file).unwrap_or_else(|_| file.to_string()))
    }

    /// Opens a `.key` file with its passphrase. A wrong passphrase or an edited file gives one
    /// error that says which file could not be opened and nothing more.
    pub fn from_protected_json(text: &str, passphrase: &[u8]) -> Result<CustodianSecret> {
        const F: &str = "custodian private key file";
        let v = parse_json(text, F)?;
        if str_field(&v, "format", F)? != PRIVATE_FORMAT {
            return Err(invalid(F, "unknown format"));
        }
        let public =
            CustodianPublic::from_value(v.get("public").ok_or(invalid(F, "public keys missing"))?)?;
        let kdf = v.get("kdf").ok_or(invalid(F, "kdf missing"))?;
        if str_field(kdf, "alg", F)? != "scrypt" {
            return Err(invalid(F, "unknown kdf"));
        }
        let params = ScryptParams {
            log_n: u8::try_from(u64_field(kdf, "log_n", F)?)
                .map_err(|_| invalid(F, "bad kdf parameter"))?,
            r: u32::try_from(u64_field(kdf, "r", F)?)
                .map_err(|_| invalid(F, "bad kdf parameter"))?,
            p: u32::try_from(u64_field(kdf, "p", F)?)
                .map_err(|_| invalid(F, "bad kdf parameter"))?,
        };
        let salt = b64_field(kdf, "salt", F)?;
        let nonce = b64_field(&v, "nonce", F)?;
        let ciphertext = b64_field(&v, "ciphertext", F)?;
        let mut kek = Zeroizing::new([0u8; 32]);
        scrypt(passphrase, &salt, params, kek.as_mut_slice())?;
        let aad = format!("{PRIVATE_FORMAT}\n{}", public.id());
        let plaintext =
            keyfort_crypto::aes::gcm_decrypt(kek.as_slice(), &nonce, aad.as_bytes(), &ciphertext)
                .map_err(|_| invalid(F, "wrong passphrase, or the file was changed"))?;
        if plaintext.len() < 33 {
            return Err(invalid(F, "damaged private keys"));
        }
        let secret = CustodianSecret {
            name: public.name.clone(),
            encryption: X25519Secret::from_bytes(&plaintext[..32])?,
            signing: ed25519::SigningKey::from_pkcs8(&plaintext[32..])?,
        };
        if secret.public() != public {
            return Err(invalid(F, "the private keys do not match the public keys"));
        }
        Ok(secret)
    }

    /// Opens a key part addressed to this custodian and returns its share.
    pub fn open_part(&self, part: &KeyPart) -> Result<Zeroizing<Vec<u8>>> {
        if part.custodian_id != self.public().id() {
            return Err(invalid(
                "key part",
                "this part belongs to another custodian",
            ));
        }
        sealbox::open(&self.encryption, &part.aad(), &part.sealed).map_err(|_| {
            invalid(
                "key part",
                "the part was changed or is not sealed to this custodian",
            )
        })
    }

    /// Builds a signed unseal submission for a part (the custodian side of `instance unseal`).
    pub fn unseal_submission(&self, part: &KeyPart, issued_at: i64) -> Result<UnsealSubmission> {
        let share = self.open_part(part)?;
        let mut nonce = [0u8; 16];
        keyfort_crypto::rng::fill(&mut nonce)?;
        let mut s = UnsealSubmission {
            instance_id: part.instance_id.clone(),
            mk_version: part.mk_version,
            custodian_id: part.custodian_id.clone(),
            share,
            nonce: hex::encode(nonce),
            issued_at,
            signature: [0u8; 64],
        };
        s.signature = self.sign(&s.signed_bytes());
        Ok(s)
    }
}

/// One custodian's Shamir share of one master key version, sealed to that custodian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPart {
    pub instance_id: String,
    pub mk_version: u32,
    pub custodian_id: String,
    pub custodian_name: String,
    pub threshold: u8,
    pub sealed: Vec<u8>,
}

impl KeyPart {
    /// Associated data binding the sealed share to its instance, master key version and
    /// custodian: a part cannot be moved to another of them.
    pub fn aad(&self) -> Vec<u8> {
        format!(
            "{PART_FORMAT}\n{}\n{}\n{}\n{}",
            self.instance_id, self.mk_version, self.custodian_id, self.threshold
        )
        .into_bytes()
    }

    /// The `.part` file.
    pub fn to_json(&self) -> String {
        let v = json!({
            "format": PART_FORMAT,
            "instance_id": self.instance_id,
            "master_key_version": self.mk_version,
            "custodian_id": self.custodian_id,
            "custodian_name": self.custodian_name,
            "threshold": self.threshold,
            "sealed": B64.encode(&self.sealed),
        });
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
    }

    /// Reads a `.part` file.
    pub fn from_json(text: &str) -> Result<KeyPart> {
        const F: &str = "key part file";
        let v = parse_json(text, F)?;
        if str_field(&v, "format", F)? != PART_FORMAT {
            return Err(invalid(F, "unknown format"));
        }
        Ok(KeyPart {
            instance_id: str_field(&v, "instance_id", F)?.to_owned(),
            mk_version: u32::try_from(u64_field(&v, "master_key_version", F)?)
                .map_err(|_| invalid(F, "bad master key version"))?,
            custodian_id: str_field(&v, "custodian_id", F)?.to_owned(),
            custodian_name: str_field(&v, "custodian_name", F)?.to_owned(),
            threshold: u8::try_from(u64_field(&v, "threshold", F)?)
                .map_err(|_| invalid(F, "bad threshold"))?,
            sealed: b64_field(&v, "sealed", F)?,
        })
    }
}

/// A custodian's share on its way to the server, signed by the custodian.
pub struct UnsealSubmission {
    pub instance_id: String,
    pub mk_version: u32,
    pub custodian_id: String,
    pub share: Zeroizing<Vec<u8>>,
    /// 16 random bytes, hex: a submission is accepted once.
    pub nonce: String,
    /// Unix seconds; the server accepts submissions a few minutes old at most.
    pub issued_at: i64,
    pub signature: [u8; 64],
}

impl fmt::Debug for UnsealSubmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealSubmission")
            .field("instance_id", &self.instance_id)
            .field("mk_version", &self.mk_version)
            .field("custodian_id", &self.custodian_id)
            .field("share", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl UnsealSubmission {
    /// What the custodian signs: the share enters only as its SHA-256.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "{UNSEAL_DOMAIN}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.instance_id,
            self.mk_version,
            self.custodian_id,
            hex::encode(keyfort_crypto::digest::sha256(&self.share)),
            self.nonce,
            self.issued_at
        )
        .into_bytes()
    }

    /// As JSON for the HTTP request body.
    pub fn to_value(&self) -> Value {
        json!({
            "instance_id": self.instance_id,
            "master_key_version": self.mk_version,
            "custodian_id": self.custodian_id,
            "share": B64.encode(self.share.as_slice()),
            "nonce": self.nonce,
            "issued_at": self.issued_at,
            "signature": B64.encode(self.signature),
        })
    }

    /// From the HTTP request body.
    pub fn from_value(v: &Value) -> Result<UnsealSubmission> {
        const F: &str = "unseal submission";
        let signature = b64_field(v, "signature", F)?;
        Ok(UnsealSubmission {
            instance_id: str_field(v, "instance_id", F)?.to_owned(),
            mk_version: u32::try_from(u64_field(v, "master_key_version", F)?)
                .map_err(|_| invalid(F, "bad master key version"))?,
            custodian_id: str_field(v, "custodian_id", F)?.to_owned(),
            share: Zeroizing::new(b64_field(v, "share", F)?),
            nonce: str_field(v, "nonce", F)?.to_owned(),
            issued_at: v
                .get("issued_at")
                .and_then(Value::as_i64)
                .ok_or(invalid(F, "issued_at missing"))?,
            signature: signature
                .as_slice()
                .try_into()
                .map_err(|_| invalid(F, "bad signature length"))?,
        })
    }
}

/// An administrative command that only M custodians together may order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a new master key, re-seal everything under it, forget the old one.
    RotateMasterKey,
    /// Make every key of the instance irrecoverable.
    Zeroize,
    /// Replace the custodian set and threshold (with a new master key split to the new set).
    SetCustodians {
        custodians: Vec<CustodianPublic>,
        threshold: u8,
    },
}

impl Command {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::RotateMasterKey => "rotate_master_key",
            Command::Zeroize => "zeroize",
            Command::SetCustodians { .. } => "set_custodians",
        }
    }

    /// Canonical parameters text (part of what is signed).
    fn params_text(&self) -> String {
        match self {
            Command::RotateMasterKey | Command::Zeroize => String::new(),
            Command::SetCustodians {
                custodians,
                threshold,
            } => {
                let ids: Vec<String> = custodians.iter().map(CustodianPublic::id).collect();
                format!("threshold={threshold};custodians={}", ids.join(","))
            }
        }
    }
}

/// A command with its expiry, nonce and the custodians' signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCommand {
    pub instance_id: String,
    pub command: Command,
    /// 16 random bytes, hex: a command is executed once.
    pub nonce: String,
    /// Unix seconds after which the server refuses the command.
    pub expires_at: i64,
    /// (custodian id, Ed25519 signature over [`SignedCommand::signed_bytes`]).
    pub signatures: Vec<(String, [u8; 64])>,
}

impl SignedCommand {
    /// A new unsigned command.
    pub fn new(instance_id: &str, command: Command, expires_at: i64) -> Result<SignedCommand> {
        let mut nonce = [0u8; 16];
        keyfort_crypto::rng::fill(&mut nonce)?;
        Ok(SignedCommand {
            instance_id: instance_id.to_owned(),
            command,
            nonce: hex::encode(nonce),
            expires_at,
            signatures: Vec::new(),
        })
    }

    /// The exact bytes each custodian signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "{COMMAND_FORMAT}\n{}\n{}\n{}\n{}\n{}",
            self.instance_id,
            self.command.name(),
            self.command.params_text(),
            self.nonce,
            self.expires_at
        )
        .into_bytes()
    }

    /// Adds (or replaces) a custodian's signature.
    pub fn sign(&mut self, custodian: &CustodianSecret) {
        let id = custodian.public().id();
        let signature = custodian.sign(&self.signed_bytes());
        self.signatures.retain(|(c, _)| *c != id);
        self.signatures.push((id, signature));
    }

    /// The command file.
    pub fn to_json(&self) -> String {
        let params = match &self.command {
            Command::RotateMasterKey | Command::Zeroize => json!({}),
            Command::SetCustodians {
                custodians,
                threshold,
            } => json!({
                "threshold": threshold,
                "custodians": custodians.iter().map(CustodianPublic::to_value).collect::<Vec<_>>(),
            }),
        };
        let signatures: Vec<Value> = self
            .signatures
            .iter()
            .map(|(id, sig)| json!({"custodian_id": id, "signature": B64.encode(sig)}))
            .collect();
        let v = json!({
            "format": COMMAND_FORMAT,
            "instance_id": self.instance_id,
            "command": self.command.name(),
            "params": params,
            "nonce": self.nonce,
            "expires_at": self.expires_at,
            "signatures": signatures,
        });
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
    }

    /// Reads a command file or request body.
    pub fn from_json(text: &str) -> Result<SignedCommand> {
        SignedCommand::from_value(&parse_json(text, "command")?)
    }

    /// Reads a command from JSON.
    pub fn from_value(v: &Value) -> Result<SignedCommand> {
        const F: &str = "command";
        if str_field(v, "format", F)? != COMMAND_FORMAT {
            return Err(invalid(F, "unknown format"));
        }
        let params = v.get("params").cloned().unwrap_or(json!({}));
        let command = match str_field(v, "command", F)? {
            "rotate_master_key" => Command::RotateMasterKey,
            "zeroize" => Command::Zeroize,
            "set_custodians" => {
                let threshold = u8::try_from(u64_field(&params, "threshold", F)?)
                    .map_err(|_| invalid(F, "bad threshold"))?;
                let custodians = params
                    .get("custodians")
                    .and_then(Value::as_array)
                    .ok_or(invalid(F, "custodians missing"))?
                    .iter()
                    .map(CustodianPublic::from_value)
                    .collect::<Result<Vec<_>>>()?;
                Command::SetCustodians {
                    custodians,
                    threshold,
                }
            }
            _ => return Err(invalid(F, "unknown command")),
        };
        let signatures = v
            .get("signatures")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|s| {
                        let id = str_field(s, "custodian_id", F)?.to_owned();
                        let sig = b64_field(s, "signature", F)?;
                        let sig: [u8; 64] = sig
                            .as_slice()
                            .try_into()
                            .map_err(|_| invalid(F, "bad signature length"))?;
                        Ok((id, sig))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        if signatures.len() > 255 {
            return Err(invalid(F, "too many signatures"));
        }
        Ok(SignedCommand {
            instance_id: str_field(v, "instance_id", F)?.to_owned(),
            command,
            nonce: str_field(v, "nonce", F)?.to_owned(),
            expires_at: v
                .get("expires_at")
                .and_then(Value::as_i64)
                .ok_or(invalid(F, "expires_at missing"))?,
            signatures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custodian(name: &str) -> CustodianSecret {
        CustodianSecret::generate(name).unwrap()
    }

    #[test]
    fn public_file_round_trips_and_detects_edits() {
        let alice = custodian("alice");
        let public = alice.public();
        let text = public.to_value().to_string();
        assert_eq!(CustodianPublic::from_json(&text).unwrap(), public);
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["signing_key"] = json!(B64.encode(custodian("eve").public().signing_key));
        assert!(
            CustodianPublic::from_value(&v).is_err(),
            "id no longer matches"
        );
        assert!(CustodianPublic::from_json("{").is_err());
        assert!(CustodianPublic::from_json(&"x".repeat(MAX_FILE_LEN + 1)).is_err());
    }

    #[test]
    fn private_file_needs_the_passphrase() {
        let alice = custodian("alice");
        let file = alice
            .to_protected_json(b"correct horse", ScryptParams::TEST)
            .unwrap();
        assert!(!file.contains(&hex::encode(alice.encryption.to_bytes().as_slice())));
        let back = CustodianSecret::from_protected_json(&file, b"correct horse").unwrap();
        assert_eq!(back.public(), alice.public());
        let err = CustodianSecret::from_protected_json(&file, b"wrong").unwrap_err();
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
        assert!(alice.to_protected_json(b"", ScryptParams::TEST).is_err());
        let mut v: Value = serde_json::from_str(&file).unwrap();
        v["kdf"]["log_n"] = json!(11);
        assert!(CustodianSecret::from_protected_json(&v.to_string(), b"correct horse").is_err());
    }

    #[test]
    fn parts_open_only_for_their_custodian_and_binding() {
        let alice = custodian("alice");
        let bob = custodian("bob");
        let public = alice.public();
        let mut part = KeyPart {
            instance_id: "i1".into(),
            mk_version: 1,
            custodian_id: public.id(),
            custodian_name: "alice".into(),
            threshold: 2,
            sealed: Vec::new(),
        };
        part.sealed =
            sealbox::seal_to(&public.encryption_key, &part.aad(), b"share-bytes").unwrap();
        let text = part.to_json();
        let parsed = KeyPart::from_json(&text).unwrap();
        assert_eq!(parsed, part);
        assert_eq!(alice.open_part(&parsed).unwrap().as_slice(), b"share-bytes");
        assert!(bob.open_part(&parsed).is_err());
        for edit in [
            KeyPart {
                instance_id: "i2".into(),
                ..part.clone()
            },
            KeyPart {
                mk_version: 2,
                ..part.clone()
            },
            KeyPart {
                threshold: 3,
                ..part.clone()
            },
        ] {
            assert!(alice.open_part(&edit).is_err());
        }
        let mut tampered = part.clone();
        let last = tampered.sealed.len() - 1;
        tampered.sealed[last] ^= 1;
        assert!(alice.open_part(&tampered).is_err());
    }

    #[test]
    fn unseal_submission_signature() {
        let alice = custodian("alice");
        let public = alice.public();
        let mut part = KeyPart {
            instance_id: "i1".into(),
            mk_version: 1,
            custodian_id: public.id(),
            custodian_name: "alice".into(),
            threshold: 2,
            sealed: Vec::new(),
        };
        part.sealed = sealbox::seal_to(&public.encryption_key, &part.aad(), b"share").unwrap();
        let s = alice.unseal_submission(&part, 1000).unwrap();
        assert!(public.verify(&s.signed_bytes(), &s.signature));
        let back = UnsealSubmission::from_value(&s.to_value()).unwrap();
        assert!(public.verify(&back.signed_bytes(), &back.signature));
        let mut forged = UnsealSubmission::from_value(&s.to_value()).unwrap();
        forged.share = Zeroizing::new(b"other".to_vec());
        assert!(!public.verify(&forged.signed_bytes(), &forged.signature));
        assert!(!format!("{s:?}").contains("share\""));
    }

    #[test]
    fn command_round_trip_and_signatures() {
        let alice = custodian("alice");
        let bob = custodian("bob");
        let mut cmd = SignedCommand::new(
            "i1",
            Command::SetCustodians {
                custodians: vec![alice.public(), bob.public()],
                threshold: 2,
            },
            2000,
        )
        .unwrap();
        cmd.sign(&alice);
        cmd.sign(&bob);
        cmd.sign(&alice);
        assert_eq!(cmd.signatures.len(), 2);
        let back = SignedCommand::from_json(&cmd.to_json()).unwrap();
        assert_eq!(back, cmd);
        for (id, sig) in &back.signatures {
            let who = if *id == alice.public().id() {
                alice.public()
            } else {
                bob.public()
            };
            assert!(who.verify(&back.signed_bytes(), sig));
        }
        // Changing the command invalidates the signatures.
        let mut other = back.clone();
        other.command = Command::Zeroize;
        assert!(
            !alice
                .public()
                .verify(&other.signed_bytes(), &other.signatures[0].1)
        );
        assert!(
            SignedCommand::from_json(r#"{"format":"keyfort-command-v1","command":"nope"}"#)
                .is_err()
        );
    }
}
