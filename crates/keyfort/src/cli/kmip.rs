//! `keyfort kmip client …`: register, list and remove KMIP client certificates (administrators).

use std::path::PathBuf;

use reqwest::Method;
use serde_json::json;

use crate::client::{Client, ClientArgs};

use super::instance::ADMIN;
use super::{CliError, parse_id, print_json};

#[derive(Debug, clap::Args)]
pub struct KmipArgs {
    #[command(subcommand)]
    command: KmipCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum KmipCommand {
    /// KMIP client certificates: each maps to one role in one instance
    #[command(subcommand)]
    Client(ClientCommand),
}

#[derive(Debug, clap::Subcommand)]
enum ClientCommand {
    /// Register a client certificate (PEM) for a role in an instance
    Add {
        /// The client certificate, PEM
        #[arg(long)]
        cert: PathBuf,
        #[arg(long, value_parser = parse_id)]
        instance: String,
        /// Reader, ReaderPlus, Writer or Manager (Manager may activate, revoke, destroy and
        /// change attributes)
        #[arg(long, default_value = "Writer")]
        role: String,
    },
    /// List registered client certificates
    List,
    /// Remove a client certificate by its SHA-256 fingerprint: its connections are refused
    Remove {
        #[arg(value_parser = parse_id)]
        fingerprint: String,
    },
}

pub async fn run(args: KmipArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let clients = [&ADMIN[..], &["kmip", "clients"]].concat();
    let KmipCommand::Client(command) = args.command;
    let value = match command {
        ClientCommand::Add {
            cert,
            instance,
            role,
        } => {
            let pem = std::fs::read_to_string(&cert)
                .map_err(|source| CliError::ReadFile { path: cert, source })?;
            let body = json!({"certificate": pem, "instance": instance, "role": role});
            client.call(Method::POST, &clients, Some(&body)).await?
        }
        ClientCommand::List => client.call(Method::GET, &clients, None).await?,
        ClientCommand::Remove { fingerprint } => {
            client
                .call(
                    Method::DELETE,
                    &[&clients[..], &[&fingerprint]].concat(),
                    None,
                )
                .await?
        }
    };
    print_json(&value)
}
