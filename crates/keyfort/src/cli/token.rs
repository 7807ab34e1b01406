//! `keyfort token`: POST /identity/token with the API key.

use crate::client::{Client, ClientArgs};

use super::{CliError, print_json};

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Prints the token endpoint's JSON (`access_token`, `token_type`, `expires_in`, `expiration`).
pub async fn run(args: TokenArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    print_json(&client.token().await?)
}
