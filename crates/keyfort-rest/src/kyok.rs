//! Keep Your Own Key on the admin API (DESIGN §2): initialization with custodians or an HSM,
//! unsealing with custodians' signed parts, and commands signed by custodians.
//!
//! | route | auth | core call |
//! |---|---|---|
//! | `POST /instances/{id}/init` | admin bearer | `initialize_with_custodians` / `initialize_with_hsm` |
//! | `GET /instances/{id}/unseal` | none | `unseal_status` |
//! | `POST /instances/{id}/unseal` | none: the custodian's signature is the authentication | `submit_unseal_part` |
//! | `POST /instances/{id}/commands` | admin bearer, plus the custodians' signatures | `execute_command` |
//!
//! Bodies are the custodian files' JSON (`keyfort-custodian-public-v1`, `keyfort-command-v1`) and
//! the unseal submission; the core reads them, so this door never interprets their fields.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Json;
use axum::routing::{get, post};
use keyfort_core::{
    CommandOutcome, CustodianPublic, KeyPart, Keyfort, SignedCommand, UnsealMethod, UnsealStatus,
    UnsealSubmission,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::InstanceView;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::ApiJson;

pub(crate) fn routes() -> Router<Keyfort> {
    Router::new()
        .route("/instances/{instance}/init", post(initialize))
        .route(
            "/instances/{instance}/unseal",
            get(unseal_status).post(submit_part),
        )
        .route("/instances/{instance}/commands", post(execute_command))
}

/// `{"custodians": [<.pub file JSON>…], "threshold": M}` or `{"hsm": true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    #[serde(default)]
    custodians: Option<Vec<Value>>,
    #[serde(default)]
    threshold: Option<u8>,
    #[serde(default)]
    hsm: bool,
}

fn bad_request(message: &str) -> ApiError {
    ApiError::BadRequest {
        code: "INVALID_FIELD",
        message: message.to_owned(),
    }
}

async fn initialize(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(instance): Path<String>,
    ApiJson(body): ApiJson<InitBody>,
) -> Result<Json<Value>, ApiError> {
    match body {
        InitBody {
            hsm: true,
            custodians: None,
            threshold: None,
        } => {
            let initialized = core.initialize_with_hsm(&caller, &instance).await?;
            Ok(Json(json!({ "instance": InstanceView::from(initialized) })))
        }
        InitBody {
            hsm: false,
            custodians: Some(custodians),
            threshold: Some(threshold),
        } => {
            let custodians = custodians
                .iter()
                .map(CustodianPublic::from_value)
                .collect::<Result<Vec<_>, _>>()?;
            let parts = core
                .initialize_with_custodians(&caller, &instance, custodians, threshold)
                .await?;
            Ok(Json(json!({ "parts": parts_json(&parts) })))
        }
        _ => Err(bad_request(
            "give either `custodians` and `threshold`, or `hsm: true`",
        )),
    }
}

/// The parts as the objects of their `.part` files.
fn parts_json(parts: &[KeyPart]) -> Vec<Value> {
    parts
        .iter()
        .map(|part| {
            let text = part.to_json();
            // `to_json` writes a JSON object; should that ever fail to parse, the text still
            // carries the part and the CLI writes it as is.
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        })
        .collect()
}

fn method_name(method: UnsealMethod) -> &'static str {
    match method {
        UnsealMethod::None => "none",
        UnsealMethod::DevKeyFile => "dev_key_file",
        UnsealMethod::Custodians => "custodians",
        UnsealMethod::Hsm => "hsm",
    }
}

/// The unseal status as JSON; it names custodians and versions, never a secret.
pub(crate) fn status_json(s: &UnsealStatus) -> Value {
    let reseal = s.reseal.as_ref().map(|r| {
        json!({
            "from_version": r.from_version,
            "to_version": r.to_version,
            "total": r.total,
            "done": r.done,
            "running": r.running,
        })
    });
    json!({
        "id": s.instance_id,
        "state": s.state.as_str(),
        "master_key_version": s.mk_version,
        "method": method_name(s.method),
        "threshold": s.threshold,
        "custodians": s.custodians,
        "loaded": s.loaded,
        "reseal": reseal,
    })
}

/// No authentication: custodians need it before any administrator can act, and it reveals no
/// secret.
async fn unseal_status(
    State(core): State<Keyfort>,
    Path(instance): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(status_json(&core.unseal_status(&instance).await?)))
}

/// No bearer token: the core verifies the custodian's signature over the submission, its
/// freshness and its nonce, and the share against the one issued.
async fn submit_part(
    State(core): State<Keyfort>,
    Path(instance): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let submission = UnsealSubmission::from_value(&body)?;
    let status = core.submit_unseal_part(&instance, submission).await?;
    Ok(Json(status_json(&status)))
}

async fn execute_command(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(instance): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let command = SignedCommand::from_value(&body)?;
    let outcome = core.execute_command(&caller, &instance, command).await?;
    Ok(Json(match outcome {
        CommandOutcome::Rotated { mk_version, parts } => json!({
            "outcome": "rotated",
            "master_key_version": mk_version,
            "parts": parts_json(&parts),
        }),
        CommandOutcome::CustodiansChanged { mk_version, parts } => json!({
            "outcome": "custodians_changed",
            "master_key_version": mk_version,
            "parts": parts_json(&parts),
        }),
        CommandOutcome::Zeroized => json!({ "outcome": "zeroized", "parts": [] }),
    }))
}
