//! `POST /event_ack` (§3 #32, §10): a service acknowledges a key lifecycle event.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyfort_core::{EventAck, Keyfort};
use serde_json::Value;

use super::envelope::KpError;
use super::error::Op;
use super::keys::parse_date;
use super::{Kp, KpBody};

pub(crate) async fn acknowledge(
    State(core): State<Keyfort>,
    kp: Kp,
    body: KpBody,
) -> Result<Response, KpError> {
    let op = Op::EVENT_ACK;
    let r = body.resource(&kp, op)?;
    let field = |name: &str| -> Result<String, KpError> {
        match r.get(name) {
            Some(Value::String(v)) => Ok(v.clone()),
            _ => Err(kp
                .fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD_ERR",
                    format!("The field `{name}` must be: present, a string"),
                    op,
                )
                .with_target("field", name)),
        }
    };
    let event_id = field("eventId")?;
    let adopter_key_state = field("adopterKeyState")?;
    let processed_at = parse_date(&kp, op, "timestamp", &field("timestamp")?)?;
    let rewrapped_key_version = match r.get("keyStateData") {
        None | Some(Value::Null) => None,
        Some(Value::Object(data)) => match data.get("rewrappedKeyVersion") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.clone()),
            Some(_) => {
                return Err(kp
                    .fail(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD_ERR",
                        "The field `keyStateData.rewrappedKeyVersion` must be: a key version id",
                        op,
                    )
                    .with_target("field", "keyStateData.rewrappedKeyVersion"));
            }
        },
        Some(_) => {
            return Err(kp
                .fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD_ERR",
                    "The field `keyStateData` must be: an object",
                    op,
                )
                .with_target("field", "keyStateData"));
        }
    };
    core.acknowledge_event(
        &kp.caller,
        &kp.instance,
        EventAck {
            event_id,
            adopter_key_state,
            processed_at,
            rewrapped_key_version,
        },
    )
    .await
    .map_err(kp.err(op))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
