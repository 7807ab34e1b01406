//! Key actions (§6): wrap, unwrap, rewrap, rotate, enable, disable, setKeyForDeletion,
//! unsetKeyForDeletion, sync; both as `/keys/{id}/actions/{action}` and as the deprecated
//! `POST /keys/{id}?action={action}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyfort_core::{Keyfort, Transition};
use serde_json::Value;
use zeroize::Zeroizing;

use super::envelope::{KEY_ACTION, KpError, reply};
use super::error::Op;
use super::keys::{b64, imported_material, restore_key};
use super::{Kp, KpBody};

pub(crate) async fn action(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((id, action)): Path<(String, String)>,
    body: KpBody,
) -> Result<Response, KpError> {
    run(&core, &kp, &id, &action, body).await
}

/// `POST /keys/{id}?action=<a>` (deprecated form, §3 #21).
pub(crate) async fn deprecated_action(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
    body: KpBody,
) -> Result<Response, KpError> {
    let Some(action) = kp.query.get("action").map(str::to_owned) else {
        return Err(super::bad_param(&kp, "action", "is required"));
    };
    if action == "restore" {
        return restore_key(&core, &kp, &id, body).await;
    }
    run(&core, &kp, &id, &action, body).await
}

async fn run(
    core: &Keyfort,
    kp: &Kp,
    id: &str,
    action: &str,
    body: KpBody,
) -> Result<Response, KpError> {
    let done = StatusCode::NO_CONTENT.into_response();
    match action {
        "wrap" => wrap(core, kp, id, body).await,
        "unwrap" => unwrap(core, kp, id, body).await,
        "rewrap" => rewrap(core, kp, id, body).await,
        "rotate" => {
            let material = imported_material(kp, Op::ROTATE, body.0)?;
            core.rotate_key(&kp.caller, &kp.instance, id, material)
                .await
                .map_err(kp.err(Op::ROTATE))?;
            Ok(done)
        }
        "enable" | "disable" => {
            let (t, op) = if action == "enable" {
                (Transition::Enable, Op::ENABLE)
            } else {
                (Transition::Disable, Op::DISABLE)
            };
            core.kms_transition(&kp.caller, &kp.instance, id, t)
                .await
                .map_err(kp.err(op))?;
            Ok(done)
        }
        "setKeyForDeletion" | "unsetKeyForDeletion" => {
            let set = action == "setKeyForDeletion";
            let op = if set {
                Op::SET_DELETION
            } else {
                Op::UNSET_DELETION
            };
            core.set_key_for_deletion(&kp.caller, &kp.instance, id, set)
                .await
                .map_err(kp.err(op))?;
            Ok(done)
        }
        "sync" => {
            core.sync_key(&kp.caller, &kp.instance, id)
                .await
                .map_err(kp.err(Op::SYNC))?;
            Ok(done)
        }
        _ => Err(kp
            .fail(
                StatusCode::BAD_REQUEST,
                "INVALID_ACTION_ERR",
                format!("unknown key action `{action}`"),
                Op::REQUEST,
            )
            .with_target("action", action)),
    }
}

/// The `aad` list of an action body.
fn aad(kp: &Kp, op: Op, body: Option<&Value>) -> Result<Vec<String>, KpError> {
    match body.and_then(|b| b.get("aad")) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(kp, op, "aad", "a list of strings")),
        Some(_) => Err(invalid(kp, op, "aad", "a list of strings")),
    }
}

fn invalid(kp: &Kp, op: Op, field: &str, rule: &str) -> KpError {
    kp.fail(
        StatusCode::BAD_REQUEST,
        "INVALID_FIELD_ERR",
        format!("The field `{field}` must be: {rule}"),
        op,
    )
    .with_target("field", field)
}

/// The base64 `ciphertext` of an unwrap / rewrap body.
fn ciphertext(kp: &Kp, op: Op, body: Option<&Value>) -> Result<Zeroizing<Vec<u8>>, KpError> {
    match body
        .and_then(|b| b.get("ciphertext"))
        .and_then(Value::as_str)
    {
        Some(c) => b64(kp, op, "ciphertext", c),
        None => Err(invalid(
            kp,
            op,
            "ciphertext",
            "the ciphertext returned by wrap",
        )),
    }
}

/// The answer of wrap, unwrap and rewrap (§6): the members each one has, written straight from
/// the values (no JSON tree).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ActionAnswer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<String>,
    key_version: VersionRef<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rewrapped_key_version: Option<VersionRef<'a>>,
}

/// `{"id": <key version>}`.
#[derive(serde::Serialize)]
struct VersionRef<'a> {
    id: &'a str,
}

fn encode(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(STANDARD.encode(bytes))
}

async fn wrap(core: &Keyfort, kp: &Kp, id: &str, body: KpBody) -> Result<Response, KpError> {
    let op = Op::WRAP;
    let plaintext = match body.0.as_ref().and_then(|b| b.get("plaintext")) {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.is_empty() => None,
        Some(Value::String(p)) => Some(b64(kp, op, "plaintext", p)?),
        Some(_) => return Err(invalid(kp, op, "plaintext", "base64 encoded key material")),
    };
    let aad = aad(kp, op, body.0.as_ref())?;
    let w = core
        .wrap_key(&kp.caller, &kp.instance, id, plaintext, &aad)
        .await
        .map_err(kp.err(op))?;
    let plaintext = w.generated_plaintext.as_deref().map(|p| encode(p));
    let answer = ActionAnswer {
        ciphertext: Some(STANDARD.encode(&w.ciphertext)),
        key_version: VersionRef {
            id: &w.key_version_id,
        },
        plaintext: plaintext.as_ref().map(|p| p.as_str()),
        rewrapped_key_version: None,
    };
    Ok(reply(StatusCode::OK, KEY_ACTION, &answer))
}

async fn unwrap(core: &Keyfort, kp: &Kp, id: &str, body: KpBody) -> Result<Response, KpError> {
    let op = Op::UNWRAP;
    let ct = ciphertext(kp, op, body.0.as_ref())?;
    let aad = aad(kp, op, body.0.as_ref())?;
    let u = core
        .unwrap_key(&kp.caller, &kp.instance, id, &ct, &aad)
        .await
        .map_err(kp.err(op))?;
    let plaintext = encode(&u.plaintext);
    let answer = ActionAnswer {
        ciphertext: u.rewrapped.as_ref().map(|r| STANDARD.encode(&r.ciphertext)),
        key_version: VersionRef {
            id: &u.key_version_id,
        },
        plaintext: Some(plaintext.as_str()),
        rewrapped_key_version: u.rewrapped.as_ref().map(|r| VersionRef {
            id: &r.key_version_id,
        }),
    };
    Ok(reply(StatusCode::OK, KEY_ACTION, &answer))
}

async fn rewrap(core: &Keyfort, kp: &Kp, id: &str, body: KpBody) -> Result<Response, KpError> {
    let op = Op::REWRAP;
    let ct = ciphertext(kp, op, body.0.as_ref())?;
    let aad = aad(kp, op, body.0.as_ref())?;
    let u = core
        .rewrap_key(&kp.caller, &kp.instance, id, &ct, &aad)
        .await
        .map_err(kp.err(op))?;
    let Some(r) = u.rewrapped else {
        // The core always rewraps; an answer without a new ciphertext would be a lie.
        return Err(kp.fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERR",
            format!("internal error (correlation id {})", kp.correlation_id),
            op,
        ));
    };
    let answer = ActionAnswer {
        ciphertext: Some(STANDARD.encode(&r.ciphertext)),
        key_version: VersionRef {
            id: &u.key_version_id,
        },
        plaintext: None,
        rewrapped_key_version: Some(VersionRef {
            id: &r.key_version_id,
        }),
    };
    Ok(reply(StatusCode::OK, KEY_ACTION, &answer))
}
