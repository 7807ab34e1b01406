//! `keyfort iam …`: principals, their roles and their API keys (administrators).

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, ClientArgs};

use super::instance::ADMIN;
use super::{CliError, parse_id, print_json};

#[derive(Debug, clap::Args)]
pub struct IamArgs {
    #[command(subcommand)]
    command: IamCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum IamCommand {
    /// Users and service identities
    #[command(subcommand)]
    Principal(PrincipalCommand),
    /// API keys of principals
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
}

#[derive(Debug, clap::Subcommand)]
enum PrincipalCommand {
    /// List every principal
    List,
    /// Show one principal (id or name)
    Get {
        #[arg(value_parser = parse_id)]
        principal: String,
    },
    /// Create a principal with role grants, e.g. --role Manager@<instance> or
    /// --role Writer@<instance>/<key ring>; a bare --role Administrator is deployment-wide.
    /// Roles: Reader, ReaderPlus, Writer, Manager, KeyPurge, KmipAdapterManager, Administrator
    Create {
        name: String,
        /// A workload rather than a person
        #[arg(long)]
        service: bool,
        /// The instance the principal belongs to (none: deployment-wide)
        #[arg(long)]
        instance: Option<String>,
        /// ROLE[@INSTANCE[/RING]]; repeatable
        #[arg(long = "role", value_name = "GRANT")]
        roles: Vec<String>,
    },
    /// Replace a principal's role grants, or disable / enable it
    Update {
        #[arg(value_parser = parse_id)]
        principal: String,
        /// ROLE[@INSTANCE[/RING]]; repeatable; replaces every grant
        #[arg(long = "role", value_name = "GRANT")]
        roles: Vec<String>,
        /// Remove every grant
        #[arg(long, conflicts_with = "roles")]
        no_roles: bool,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ApiKeyCommand {
    /// List a principal's API keys (never the secrets)
    List {
        #[arg(value_parser = parse_id)]
        principal: String,
    },
    /// Issue an API key; the secret is printed once
    Create {
        #[arg(value_parser = parse_id)]
        principal: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Replace an API key with a new one (printed once) and revoke the old one
    Rotate {
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Revoke an API key: its tokens stop working
    Revoke {
        #[arg(value_parser = parse_id)]
        id: String,
    },
}

/// `ROLE[@INSTANCE[/RING]]` as the admin API's grant object.
fn grant(text: &str) -> Value {
    match text.split_once('@') {
        None => json!({"role": text}),
        Some((role, scope)) => match scope.split_once('/') {
            None => json!({"role": role, "instance": scope}),
            Some((instance, ring)) => json!({"role": role, "instance": instance, "key_ring": ring}),
        },
    }
}

pub async fn run(args: IamArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let principals = [&ADMIN[..], &["principals"]].concat();
    let value = match args.command {
        IamCommand::Principal(PrincipalCommand::List) => {
            client.call(Method::GET, &principals, None).await?
        }
        IamCommand::Principal(PrincipalCommand::Get { principal }) => {
            client
                .call(
                    Method::GET,
                    &[&principals[..], &[&principal]].concat(),
                    None,
                )
                .await?
        }
        IamCommand::Principal(PrincipalCommand::Create {
            name,
            service,
            instance,
            roles,
        }) => {
            let body = json!({
                "name": name,
                "kind": if service { "service" } else { "user" },
                "instance_id": instance,
                "roles": roles.iter().map(|r| grant(r)).collect::<Vec<_>>(),
            });
            client.call(Method::POST, &principals, Some(&body)).await?
        }
        IamCommand::Principal(PrincipalCommand::Update {
            principal,
            roles,
            no_roles,
            disable,
            enable,
        }) => {
            let mut body = serde_json::Map::new();
            if no_roles || !roles.is_empty() {
                body.insert("roles".into(), roles.iter().map(|r| grant(r)).collect());
            }
            if disable || enable {
                body.insert("disabled".into(), Value::Bool(disable));
            }
            client
                .call(
                    Method::PATCH,
                    &[&principals[..], &[&principal]].concat(),
                    Some(&Value::Object(body)),
                )
                .await?
        }
        IamCommand::ApiKey(ApiKeyCommand::List { principal }) => {
            client
                .call(
                    Method::GET,
                    &[&principals[..], &[&principal, "api_keys"]].concat(),
                    None,
                )
                .await?
        }
        IamCommand::ApiKey(ApiKeyCommand::Create { principal, name }) => {
            let body = json!({"name": name});
            client
                .call(
                    Method::POST,
                    &[&principals[..], &[&principal, "api_keys"]].concat(),
                    Some(&body),
                )
                .await?
        }
        IamCommand::ApiKey(ApiKeyCommand::Rotate { id }) => {
            client
                .call(
                    Method::POST,
                    &[&ADMIN[..], &["api_keys", &id, "rotate"]].concat(),
                    None,
                )
                .await?
        }
        IamCommand::ApiKey(ApiKeyCommand::Revoke { id }) => {
            client
                .call(
                    Method::DELETE,
                    &[&ADMIN[..], &["api_keys", &id]].concat(),
                    None,
                )
                .await?
        }
    };
    print_json(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse() {
        assert_eq!(grant("Administrator"), json!({"role": "Administrator"}));
        assert_eq!(
            grant("Manager@i1"),
            json!({"role": "Manager", "instance": "i1"})
        );
        assert_eq!(
            grant("Writer@i1/ring-a"),
            json!({"role": "Writer", "instance": "i1", "key_ring": "ring-a"})
        );
        assert_eq!(
            grant("KmipAdapterManager@i1"),
            json!({"role": "KmipAdapterManager", "instance": "i1"})
        );
    }
}
