//! Key aliases (§3 #33–34).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyfort_core::Keyfort;
use serde_json::json;

use super::Kp;
use super::envelope::{ALIAS, KpError, collection, reply};
use super::error::Op;
use super::keys::date;

pub(crate) async fn create(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((id, alias)): Path<(String, String)>,
) -> Result<Response, KpError> {
    let key = core
        .add_alias(&kp.caller, &kp.instance, &id, &alias)
        .await
        .map_err(kp.err(Op::ALIAS_CREATE))?;
    // The core keeps aliases as names only; the key's last update is when this one was added.
    let resource = json!({
        "keyId": key.id,
        "alias": alias,
        "createdBy": kp.caller.display_name(),
        "creationDate": date(key.updated_at),
    });
    Ok(reply(
        StatusCode::CREATED,
        "application/json",
        &collection(ALIAS, vec![resource]),
    ))
}

pub(crate) async fn delete(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((id, alias)): Path<(String, String)>,
) -> Result<Response, KpError> {
    core.delete_alias(&kp.caller, &kp.instance, &id, &alias)
        .await
        .map_err(kp.err(Op::ALIAS_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
