//! Key rings (§10).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyfort_core::Keyfort;
use serde_json::{Value, json};

use super::Kp;
use super::envelope::{KEY_RING, KpError, collection, json_reply};
use super::error::Op;
use super::keys::date;

pub(crate) async fn list(State(core): State<Keyfort>, kp: Kp) -> Result<Response, KpError> {
    let (limit, offset) = kp.query.paging(&kp, 200, 5000)?;
    let rings = core
        .key_rings(&kp.caller, &kp.instance)
        .await
        .map_err(kp.err(Op::RING_LIST))?;
    let total = rings.len();
    let page: Vec<Value> = rings
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|r| json!({"id": r.id, "creationDate": date(r.created_at), "createdBy": r.created_by}))
        .collect();
    let mut body = collection(KEY_RING, page);
    if kp.query.bool(&kp, "totalCount")? == Some(true) {
        body["metadata"]["totalCount"] = json!(total);
    }
    Ok(json_reply(StatusCode::OK, &body))
}

pub(crate) async fn create(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(ring): Path<String>,
) -> Result<Response, KpError> {
    core.create_key_ring(&kp.caller, &kp.instance, &ring)
        .await
        .map_err(kp.err(Op::RING_CREATE))?;
    Ok(StatusCode::CREATED.into_response())
}

pub(crate) async fn delete(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(ring): Path<String>,
) -> Result<Response, KpError> {
    let force = kp.query.bool(&kp, "force")?.unwrap_or(false);
    core.delete_key_ring(&kp.caller, &kp.instance, &ring, force)
        .await
        .map_err(kp.err(Op::RING_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
