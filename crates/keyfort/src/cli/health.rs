//! `keyfort health`: GET /healthz and /readyz.

use serde_json::json;

use crate::client::{Client, ClientArgs, ClientError};

use super::{CliError, print_json};

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Prints both answers; fails unless both are 2xx.
pub async fn run(args: HealthArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let healthz = client.get_unauthenticated(&["healthz"]).await?;
    let readyz = client.get_unauthenticated(&["readyz"]).await?;
    print_json(&json!({
        "healthz": { "status": healthz.status.as_u16(), "body": healthz.body },
        "readyz": { "status": readyz.status.as_u16(), "body": readyz.body },
    }))?;
    for (endpoint, answer) in [("/healthz", &healthz), ("/readyz", &readyz)] {
        if !answer.status.is_success() {
            return Err(ClientError::Unhealthy {
                endpoint,
                status: answer.status,
            }
            .into());
        }
    }
    Ok(())
}
