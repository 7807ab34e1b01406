//! KMIP client certificates on the admin API (administrators only):
//! `GET|POST /api/keyfort/v1/kmip/clients`, `DELETE /api/keyfort/v1/kmip/clients/{fingerprint}`.
//! A certificate (PEM) is registered for one role in one instance; its SHA-256 fingerprint then
//! names the KMIP caller.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get};
use base64::Engine as _;
use keyfort_core::{Keyfort, KmipClient, Role};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::ApiJson;

/// Largest PEM accepted.
const MAX_PEM_LEN: usize = 96 * 1024;

pub(crate) fn routes() -> Router<Keyfort> {
    Router::new()
        .route("/kmip/clients", get(list).post(add))
        .route("/kmip/clients/{fingerprint}", delete(remove))
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest {
        code: "INVALID_FIELD",
        message: message.to_owned(),
    }
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
pub(crate) fn pem_certificate(pem: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let body: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()
        .filter(|d| !d.is_empty())
}

fn date(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn client_json(c: &KmipClient) -> Value {
    json!({
        "fingerprint": c.fingerprint,
        "principal_id": c.principal_id,
        "instance": c.instance_id,
        "role": c.role.name(),
        "disabled": c.disabled,
        "created_at": date(c.created_at),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    /// PEM text of the client certificate.
    certificate: String,
    instance: String,
    role: String,
}

async fn add(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<AddBody>,
) -> Result<Response, ApiError> {
    if body.certificate.len() > MAX_PEM_LEN {
        return Err(bad("the certificate PEM is too large"));
    }
    let der = pem_certificate(&body.certificate)
        .ok_or_else(|| bad("certificate must be a PEM CERTIFICATE block"))?;
    let role = Role::from_name(&body.role).ok_or_else(|| bad("unknown role"))?;
    let client = core
        .add_kmip_client(&caller, &der, &body.instance, role)
        .await?;
    Ok((StatusCode::CREATED, Json(client_json(&client))).into_response())
}

async fn list(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let clients = core.kmip_clients(&caller).await?;
    Ok(Json(
        json!({"clients": clients.iter().map(client_json).collect::<Vec<_>>()}),
    ))
}

async fn remove(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(fingerprint): Path<String>,
) -> Result<StatusCode, ApiError> {
    core.remove_kmip_client(&caller, &fingerprint).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_read() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAQID\nBA==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificate(pem), Some(vec![1, 2, 3, 4]));
        assert_eq!(
            pem_certificate("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
        assert_eq!(pem_certificate("no pem"), None);
    }
}
