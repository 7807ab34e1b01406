//! Import tokens for secure import (§10).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyfort_core::{ImportToken, Keyfort};
use serde_json::{Value, json};

use super::envelope::{KpError, json_reply};
use super::error::Op;
use super::keys::date;
use super::{Kp, KpBody};

const DEFAULT_EXPIRATION_SECS: u64 = 600;
const DEFAULT_RETRIEVALS: u32 = 1;

fn token_json(t: &ImportToken) -> Value {
    let mut v = json!({
        "creationDate": date(t.created_at),
        "expirationDate": date(t.expires_at),
        "expiration": t.expiration,
        "maxAllowedRetrievals": t.max_retrievals,
        "remainingRetrievals": t.remaining_retrievals,
    });
    if let Some(pem) = &t.public_key_pem {
        v["payload"] = json!(STANDARD.encode(pem.as_bytes()));
    }
    if let Some(nonce) = &t.nonce {
        v["nonce"] = json!(STANDARD.encode(nonce));
    }
    v
}

pub(crate) async fn create(
    State(core): State<Keyfort>,
    kp: Kp,
    body: KpBody,
) -> Result<Response, KpError> {
    let op = Op::IMPORT_TOKEN_CREATE;
    let body = body.0.unwrap_or(Value::Null);
    let number = |name: &'static str| match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            kp.fail(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD_ERR",
                format!("The field `{name}` must be: a positive integer"),
                op,
            )
            .with_target("field", name)
        }),
    };
    let expiration = number("expiration")?.unwrap_or(DEFAULT_EXPIRATION_SECS);
    let retrievals = match number("maxAllowedRetrievals")? {
        None => DEFAULT_RETRIEVALS,
        // Out of range values go to the core, which refuses them with the rule.
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
    };
    let t = core
        .create_import_token(&kp.caller, &kp.instance, expiration, retrievals)
        .await
        .map_err(kp.err(op))?;
    Ok(json_reply(StatusCode::OK, &token_json(&t)))
}

pub(crate) async fn retrieve(State(core): State<Keyfort>, kp: Kp) -> Result<Response, KpError> {
    let t = core
        .retrieve_import_token(&kp.caller, &kp.instance)
        .await
        .map_err(kp.err(Op::IMPORT_TOKEN_GET))?;
    Ok(json_reply(StatusCode::OK, &token_json(&t)))
}
