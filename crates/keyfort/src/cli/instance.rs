//! `keyfort instance list|status`: the admin API's instances.

use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, ClientArgs, ClientError};

use super::{CliError, parse_id, print_json};

/// The admin API's prefix.
pub const ADMIN: [&str; 3] = ["api", "keyfort", "v1"];

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
    /// Show one instance (default: --instance/KEYFORT_INSTANCE, or the only one)
    Status {
        /// Instance id
        #[arg(value_parser = parse_id)]
        id: Option<String>,
        #[command(flatten)]
        instance: InstanceArg,
    },
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
        InstanceCommand::Status { id, instance } => {
            let id = resolve(&client, id.or(instance.instance)).await?;
            client
                .call(
                    Method::GET,
                    &[&ADMIN[..], &["instances", &id]].concat(),
                    None,
                )
                .await?
        }
    };
    print_json(&value)
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
}
