//! `/metrics`: Prometheus text exposition (format 0.0.4) of each instance's sealing state and
//! re-seal progress.
//!
//! It names every instance of the deployment, so by default only a deployment administrator's
//! access token reads it (401 without a valid token, 403 with another principal's, in the admin
//! API's error shape). A deployment whose scraper cannot present one opens it with
//! [`MetricsAccess::Open`] (`[auth] unauthenticated_metrics = true`), as one opens a
//! listener's metrics in Vault.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keyfort_core::{CoreError, InstanceState, Keyfort};

use crate::auth::Authenticated;
use crate::error::ApiError;

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Deployment administrators only (an access token).
    #[default]
    Administrators,
    /// Anyone who reaches the listener.
    Open,
}

pub(crate) fn routes(access: MetricsAccess) -> Router<Keyfort> {
    match access {
        MetricsAccess::Administrators => Router::new().route("/metrics", get(for_administrators)),
        MetricsAccess::Open => Router::new().route("/metrics", get(metrics)),
    }
}

async fn for_administrators(
    Authenticated(caller): Authenticated,
    core: State<Keyfort>,
) -> Result<Response, ApiError> {
    if !caller.is_administrator() {
        return Err(CoreError::Forbidden {
            principal: caller.principal.name.clone(),
            action: "read the deployment's metrics",
        }
        .into());
    }
    Ok(metrics(core).await)
}

/// One sample line per instance for each metric.
struct Sample {
    instance: String,
    name: String,
    unsealed: bool,
    reseal_total: u64,
    reseal_done: u64,
    reseal_running: bool,
}

async fn metrics(State(core): State<Keyfort>) -> Response {
    let statuses = match core.all_unseal_statuses().await {
        Ok(statuses) => statuses,
        Err(e) => {
            tracing::error!(error = ?e, "metrics: cannot list instances");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
        }
    };
    let samples: Vec<Sample> = statuses
        .into_iter()
        .map(|(instance, status)| {
            let reseal = status.reseal.as_ref();
            Sample {
                unsealed: status.state == InstanceState::Unsealed,
                reseal_total: reseal.map_or(0, |r| r.total),
                reseal_done: reseal.map_or(0, |r| r.done),
                reseal_running: reseal.is_some_and(|r| r.running),
                instance: instance.id,
                name: instance.name,
            }
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&samples),
    )
        .into_response()
}

fn render(samples: &[Sample]) -> String {
    type Value = fn(&Sample) -> u64;
    let metrics: [(&str, &str, Value); 4] = [
        (
            "keyfort_instance_unsealed",
            "Whether the instance's master key is loaded (1) or not (0).",
            |s| u64::from(s.unsealed),
        ),
        (
            "keyfort_reseal_total",
            "Key versions to re-seal in the current master key rotation.",
            |s| s.reseal_total,
        ),
        (
            "keyfort_reseal_done",
            "Key versions re-sealed so far in the current master key rotation.",
            |s| s.reseal_done,
        ),
        (
            "keyfort_reseal_running",
            "Whether a re-seal job is running in this process (1) or not (0).",
            |s| u64::from(s.reseal_running),
        ),
    ];
    let mut out = String::new();
    for (metric, help, value) in metrics {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for s in samples {
            let _ = writeln!(
                out,
                "{metric}{{instance=\"{}\",name=\"{}\"}} {}",
                escape(&s.instance),
                escape(&s.name),
                value(s)
            );
        }
    }
    out
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_instance_and_metric() {
        let text = render(&[Sample {
            instance: "i\"1".into(),
            name: "prod".into(),
            unsealed: true,
            reseal_total: 10,
            reseal_done: 4,
            reseal_running: true,
        }]);
        assert!(text.contains("# TYPE keyfort_instance_unsealed gauge\n"));
        assert!(text.contains("keyfort_instance_unsealed{instance=\"i\\\"1\",name=\"prod\"} 1\n"));
        assert!(text.contains("keyfort_reseal_total{instance=\"i\\\"1\",name=\"prod\"} 10\n"));
        assert!(text.contains("keyfort_reseal_done{instance=\"i\\\"1\",name=\"prod\"} 4\n"));
        assert!(text.contains("keyfort_reseal_running{instance=\"i\\\"1\",name=\"prod\"} 1\n"));
        assert_eq!(text.lines().count(), 12);
    }
}
