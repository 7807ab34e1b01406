//! Identity management on the admin API (administrators only): principals, their role grants,
//! their API keys.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, patch, post};
use keyfort_core::{
    ApiKeyInfo, ApiKeySecret, Keyfort, Principal, PrincipalKind, Role, RoleGrant, Scope,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::keys::date;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::ApiJson;

pub(crate) fn routes() -> Router<Keyfort> {
    Router::new()
        .route("/principals", get(list).post(create))
        .route("/principals/{id}", patch(update).get(one))
        .route(
            "/principals/{id}/api_keys",
            get(api_keys).post(create_api_key),
        )
        .route("/api_keys/{id}/rotate", post(rotate_api_key))
        .route("/api_keys/{id}", delete(revoke_api_key))
}

/// A role grant as on the wire: `{"role", "instance"?, "key_ring"?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    role: String,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    key_ring: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest {
        code: "INVALID_FIELD",
        message,
    }
}

fn grants(list: Vec<GrantBody>) -> Result<Vec<RoleGrant>, ApiError> {
    list.into_iter()
        .map(|g| {
            let role = Role::from_name(&g.role)
                .ok_or_else(|| bad(format!("unknown role {:?}", g.role)))?;
            let scope = match (g.instance, g.key_ring) {
                (None, None) => Scope::Deployment,
                (Some(i), None) => Scope::Instance(i),
                (Some(instance), Some(ring)) => Scope::KeyRing { instance, ring },
                (None, Some(_)) => return Err(bad("a key_ring grant needs its instance".into())),
            };
            Ok(RoleGrant { role, scope })
        })
        .collect()
}

fn grant_json(g: &RoleGrant) -> Value {
    match &g.scope {
        Scope::Deployment => json!({"role": g.role.name()}),
        Scope::Instance(i) => json!({"role": g.role.name(), "instance": i}),
        Scope::KeyRing { instance, ring } => {
            json!({"role": g.role.name(), "instance": instance, "key_ring": ring})
        }
    }
}

fn principal_json(p: &Principal) -> Value {
    json!({
        "id": p.id,
        "instance_id": p.instance_id,
        "name": p.name,
        "kind": match p.kind { PrincipalKind::User => "user", PrincipalKind::Service => "service" },
        "roles": p.roles.iter().map(grant_json).collect::<Vec<_>>(),
        "disabled": p.disabled,
        "created_at": date(p.created_at),
    })
}

fn api_key_json(k: &ApiKeyInfo) -> Value {
    json!({
        "id": k.id,
        "principal_id": k.principal_id,
        "name": k.name,
        "created_at": date(k.created_at),
        "expires_at": k.expires_at.map(date),
        "revoked_at": k.revoked_at.map(date),
    })
}

/// A new API key: the secret is shown this once.
fn new_api_key(id: &str, secret: &ApiKeySecret) -> Value {
    json!({"id": id, "api_key": secret.expose()})
}

async fn list(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let list = core.principals(&caller).await?;
    Ok(Json(
        json!({"principals": list.iter().map(principal_json).collect::<Vec<_>>()}),
    ))
}

async fn one(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(principal_json(&core.principal(&caller, &id).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    roles: Vec<GrantBody>,
}

async fn create(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let kind = match body.kind.as_deref() {
        None | Some("user") => PrincipalKind::User,
        Some("service") => PrincipalKind::Service,
        Some(other) => return Err(bad(format!("kind must be user or service, not {other:?}"))),
    };
    let roles = grants(body.roles)?;
    let p = core
        .create_principal(
            &caller,
            body.instance_id.as_deref(),
            &body.name,
            kind,
            roles,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(principal_json(&p))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    roles: Option<Vec<GrantBody>>,
    #[serde(default)]
    disabled: Option<bool>,
}

async fn update(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let roles = body.roles.map(grants).transpose()?;
    let p = core
        .update_principal(&caller, &id, roles, body.disabled)
        .await?;
    Ok(Json(principal_json(&p)))
}

async fn api_keys(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let list = core.api_keys(&caller, &id).await?;
    Ok(Json(
        json!({"api_keys": list.iter().map(api_key_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApiKeyBody {
    #[serde(default)]
    name: Option<String>,
}

async fn create_api_key(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: NewApiKeyBody = if body.iter().all(u8::is_ascii_whitespace) {
        NewApiKeyBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
            code: "BAD_BODY",
            message: e.to_string(),
        })?
    };
    let name = body.name.unwrap_or_else(|| "api-key".to_owned());
    let principal = core.principal(&caller, &id).await?;
    let (key_id, secret) = core.create_api_key(&caller, &principal.id, &name).await?;
    Ok((StatusCode::CREATED, Json(new_api_key(&key_id, &secret))).into_response())
}

async fn rotate_api_key(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (key_id, secret) = core.rotate_api_key(&caller, &id).await?;
    Ok((StatusCode::CREATED, Json(new_api_key(&key_id, &secret))).into_response())
}

async fn revoke_api_key(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    core.revoke_api_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
