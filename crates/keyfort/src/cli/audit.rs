//! `keyfort audit list|verify|export`: an instance's hash-chained audit trail (Managers of the
//! instance and administrators).

use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, ClientArgs};

use super::instance::{ADMIN, InstanceArg, resolve};
use super::{CliError, print_json};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    #[command(flatten)]
    instance: InstanceArg,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// List events, oldest first, with filters; page with --after-seq
    List(Filters),
    /// Recompute the whole chain: exits 1 if an event was changed, removed or reordered
    Verify,
    /// Export events as JSON lines in CADF shape
    Export(Filters),
}

#[derive(Debug, clap::Args)]
struct Filters {
    /// Only events after this sequence number
    #[arg(long)]
    after_seq: Option<i64>,
    /// Only events at or after this time (RFC 3339)
    #[arg(long)]
    from: Option<String>,
    /// Only events before this time (RFC 3339)
    #[arg(long)]
    until: Option<String>,
    /// Only events about this key, ring or instance id
    #[arg(long)]
    target: Option<String>,
    /// Only this action, e.g. key.wrap
    #[arg(long)]
    action: Option<String>,
    /// Only this outcome: success, denied or failure
    #[arg(long)]
    outcome: Option<String>,
    /// At most this many events
    #[arg(long)]
    limit: Option<u64>,
}

impl Filters {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let mut push = |name, v: Option<String>| {
            if let Some(v) = v {
                q.push((name, v));
            }
        };
        push("after_seq", self.after_seq.map(|v| v.to_string()));
        push("from", self.from.clone());
        push("until", self.until.clone());
        push("target", self.target.clone());
        push("action", self.action.clone());
        push("outcome", self.outcome.clone());
        push("limit", self.limit.map(|v| v.to_string()));
        q
    }
}

/// The chain of an instance does not verify.
#[derive(Debug, thiserror::Error)]
#[error("audit chain of instance {instance} is broken at event {seq}: {problem}")]
pub struct ChainBroken {
    instance: String,
    seq: i64,
    problem: String,
}

pub async fn run(args: AuditArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let instance = resolve(&client, args.instance.instance).await?;
    let base = [&ADMIN[..], &["instances", &instance, "audit"]].concat();
    match args.command {
        AuditCommand::List(f) => {
            let value = client
                .call_with_query(Method::GET, &base, &f.query())
                .await?;
            print_json(&value)
        }
        AuditCommand::Verify => {
            let value = client
                .call(Method::GET, &[&base[..], &["verify"]].concat(), None)
                .await?;
            print_json(&value)?;
            if value.get("ok").and_then(Value::as_bool) == Some(true) {
                Ok(())
            } else {
                let problem = value.get("problem").cloned().unwrap_or(Value::Null);
                Err(CliError::Audit(ChainBroken {
                    instance,
                    seq: problem.get("seq").and_then(Value::as_i64).unwrap_or(0),
                    problem: problem
                        .get("problem")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_owned(),
                }))
            }
        }
        AuditCommand::Export(f) => {
            // JSON lines, written as they arrive: the trail may be larger than memory.
            let mut out = std::io::stdout().lock();
            client
                .download(&[&base[..], &["export"]].concat(), &f.query(), &mut out)
                .await?
                .map_err(CliError::Output)
        }
    }
}
