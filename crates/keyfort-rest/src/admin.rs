//! The admin API (`/api/keyfort/v1`): instances and their keys, for the CLI and operators.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyfort_core::{
    Caller, CoreError, Instance, Key, KeyPolicyUpdate, KeyQuery, KeyState, Keyfort, NewKey,
    Transition,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::ApiJson;

/// Largest page of keys.
const MAX_PAGE: u64 = 5000;

/// The peer address of the connection: the socket's, never a header the client writes.
pub(crate) struct Peer(Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`.
                .map(|axum::extract::ConnectInfo(a)| a.ip().to_canonical()),
        ))
    }
}

/// The instance's allowedIP policy guards its keys on this API as on Key Protect's: a request
/// from elsewhere is refused (and audited).
async fn allowed(
    core: &Keyfort,
    caller: &Caller,
    instance: &str,
    Peer(peer): Peer,
) -> Result<(), ApiError> {
    let caller = caller.for_request(None, peer.map(|p| p.to_string()));
    Ok(core.check_source(&caller, instance, peer).await?)
}

pub(crate) fn routes() -> Router<Keyfort> {
    Router::new()
        .route("/ping", get(ping))
        .route("/instances", get(list_instances).post(create_instance))
        .route("/instances/{instance}", get(instance))
        .route("/instances/{instance}/seal", post(seal_instance))
        .route(
            "/instances/{instance}/keys",
            get(list_keys).post(create_key),
        )
        .route("/instances/{instance}/keys/{key}", get(key))
        .route(
            "/instances/{instance}/keys/{key}/material",
            get(key_material),
        )
        .route(
            "/instances/{instance}/keys/{key}/versions",
            get(key_versions),
        )
        .route(
            "/instances/{instance}/keys/{key}/actions/{action}",
            post(key_action),
        )
        .route("/instances/{instance}/keys/{key}/wrap", post(wrap))
        .route("/instances/{instance}/keys/{key}/unwrap", post(unwrap))
}

#[derive(Serialize)]
pub(crate) struct InstanceView {
    id: String,
    name: String,
    state: &'static str,
    master_key_version: u32,
    created_at: String,
    updated_at: String,
}

impl From<Instance> for InstanceView {
    fn from(i: Instance) -> Self {
        InstanceView {
            state: i.state.as_str(),
            master_key_version: i.mk_version,
            created_at: rfc3339(i.created_at),
            updated_at: rfc3339(i.updated_at),
            id: i.id,
            name: i.name,
        }
    }
}

#[derive(Serialize)]
struct KeyView {
    id: String,
    instance_id: String,
    key_ring_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    tags: Vec<String>,
    aliases: Vec<String>,
    object_type: String,
    algorithm: String,
    bit_length: u32,
    extractable: bool,
    imported: bool,
    state: &'static str,
    created_at: String,
    created_by: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<String>,
    current_version_id: String,
}

impl From<Key> for KeyView {
    fn from(k: Key) -> Self {
        KeyView {
            state: state_name(k.state),
            created_at: rfc3339(k.created_at),
            updated_at: rfc3339(k.updated_at),
            expires_at: k.expires_at.map(rfc3339),
            deleted_at: k.deleted_at.map(rfc3339),
            id: k.id,
            instance_id: k.instance_id,
            key_ring_id: k.key_ring_id,
            name: k.name,
            description: k.description,
            tags: k.tags,
            aliases: k.aliases,
            object_type: k.object_type,
            algorithm: k.algorithm,
            bit_length: k.bit_length,
            extractable: k.extractable,
            imported: k.imported,
            created_by: k.created_by,
            current_version_id: k.current_version_id,
        }
    }
}

fn state_name(state: KeyState) -> &'static str {
    match state {
        KeyState::PreActive => "pre_active",
        KeyState::Active => "active",
        KeyState::Suspended => "suspended",
        KeyState::Deactivated => "deactivated",
        KeyState::Compromised => "compromised",
        KeyState::Destroyed => "destroyed",
        KeyState::DestroyedCompromised => "destroyed_compromised",
    }
}

fn state_from_name(name: &str) -> Option<KeyState> {
    KeyState::ALL.into_iter().find(|s| state_name(*s) == name)
}

/// Unix milliseconds as RFC 3339 UTC.
fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

fn parse_rfc3339(field: &'static str, text: &str) -> Result<i64, ApiError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .ok_or(ApiError::BadRequest {
            code: "INVALID_FIELD",
            message: format!("{field} must be an RFC 3339 date-time"),
        })
}

/// An authenticated request that does nothing: the baseline of the benchmarks (same TLS,
/// routing and token verification as every API call, no core work).
async fn ping(Authenticated(_caller): Authenticated) -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn list_instances(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let instances: Vec<InstanceView> = core
        .instances(&caller)
        .await?
        .into_iter()
        .map(InstanceView::from)
        .collect();
    Ok(Json(json!({ "instances": instances })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInstanceBody {
    name: String,
}

async fn create_instance(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateInstanceBody>,
) -> Result<Response, ApiError> {
    let instance = core.create_instance(&caller, &body.name).await?;
    Ok((StatusCode::CREATED, Json(InstanceView::from(instance))).into_response())
}

async fn instance(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(instance): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    Ok(Json(core.instance(&caller, &instance).await?.into()))
}

async fn seal_instance(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(instance): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    Ok(Json(core.seal_instance(&caller, &instance).await?.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    key_ring_id: Option<String>,
    #[serde(default)]
    extractable: bool,
    #[serde(default)]
    bit_length: Option<u32>,
    /// Base64 key material to import.
    #[serde(default)]
    payload: Option<Zeroizing<String>>,
    #[serde(default)]
    expires_at: Option<String>,
}

async fn create_key(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    peer: Peer,
    Path(instance): Path<String>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    allowed(&core, &caller, &instance, peer).await?;
    let payload = match &body.payload {
        Some(b64) => Some(Zeroizing::new(STANDARD.decode(b64.as_bytes()).map_err(
            |_| ApiError::BadRequest {
                code: "INVALID_FIELD",
                message: "payload must be base64".into(),
            },
        )?)),
        None => None,
    };
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|t| parse_rfc3339("expires_at", t))
        .transpose()?;
    let request = NewKey {
        name: body.name,
        description: body.description,
        tags: body.tags,
        aliases: body.aliases,
        key_ring_id: body.key_ring_id,
        extractable: body.extractable,
        bit_length: body.bit_length.unwrap_or(256),
        payload,
        expires_at,
        ..NewKey::default()
    };
    // The instance's keyCreateImportAccess and key policy defaults apply here too.
    let key = core
        .kms_create_key(
            &caller,
            &instance,
            request,
            KeyPolicyUpdate::default(),
            None,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(KeyView::from(key))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListKeysParams {
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    offset: Option<u64>,
    /// Comma-separated state names.
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    extractable: Option<bool>,
    #[serde(default)]
    key_ring_id: Option<String>,
    #[serde(default)]
    search: Option<String>,
}

async fn list_keys(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    peer: Peer,
    Path(instance): Path<String>,
    params: Result<Query<ListKeysParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    allowed(&core, &caller, &instance, peer).await?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest {
        code: "INVALID_QUERY",
        message: e.body_text(),
    })?;
    let states = match params.state.as_deref().filter(|s| !s.is_empty()) {
        Some(list) => list
            .split(',')
            .map(|s| {
                state_from_name(s.trim()).ok_or_else(|| ApiError::BadRequest {
                    code: "INVALID_QUERY",
                    message: format!("unknown state {:?}", s.trim()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let limit = params.limit.unwrap_or(200);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest {
            code: "INVALID_QUERY",
            message: format!("limit must be 1 to {MAX_PAGE}"),
        });
    }
    let query = KeyQuery {
        key_ring_id: params.key_ring_id,
        states,
        extractable: params.extractable,
        search: params.search,
        offset: params.offset.unwrap_or(0),
        limit: Some(limit),
        ..KeyQuery::default()
    };
    let listing = core.list_keys(&caller, &instance, &query).await?;
    let keys: Vec<KeyView> = listing.keys.into_iter().map(KeyView::from).collect();
    Ok(Json(json!({ "keys": keys, "total": listing.total })))
}

async fn key(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    peer: Peer,
    Path((instance, key)): Path<(String, String)>,
) -> Result<Json<KeyView>, ApiError> {
    allowed(&core, &caller, &instance, peer).await?;
    Ok(Json(core.key(&caller, &instance, &key).await?.into()))
}

async fn key_versions(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    peer: Peer,
    Path((instance, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    allowed(&core, &caller, &instance, peer).await?;
    let versions: Vec<Value> = core
        .key_versions(&caller, &instance, &key)
        .await?
        .into_iter()
        .map(|v| {
            json!({
                "id": v.id,
                "seq": v.seq,
                "created_at": rfc3339(v.created_at),
                "master_key_version": v.mk_version,
            })
        })
        .collect();
    Ok(Json(json!({ "versions": versions })))
}

async fn key_material(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    peer: Peer,
    Path((instance, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    allowed(&core, &caller, &instance, peer).await?;
    let material = core.key_material(&caller, &instance, &key).await?;
    let payload = Zeroizing::new(STANDARD.encode(material.as_slice()));
    Ok(Json(json!({ "payload": payload.as_str() })))
}

async fn key_action(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    peer: Peer,
    Path((instance, key, action)): Path<(String, String, String)>,
) -> Result<Json<KeyView>, ApiError> {
    allowed(&core, &caller, &instance, peer).await?;
    let transition = match action.as_str() {
        "activate" => Transition::Activate,
        "reactivate" => Transition::Reactivate,
        "disable" => Transition::Disable,
        "enable" => Transition::Enable,
        "deactivate" => Transition::Deactivate,
        "compromise" => Transition::Compromise,
        "delete" => Transition::Delete,
        "destroy" => Transition::Destroy,
        "restore" => Transition::Restore,
        _ => {
            return Err(ApiError::BadRequest {
                code: "UNKNOWN_ACTION",
                message: format!("unknown key action {action:?}"),
            });
        }
    };
    // Delete, destroy, restore, enable and disable keep Key Protect's rules (dual authorization,
    // registrations, restore window, waiting periods); the rest are plain transitions.
    let key = match transition {
        Transition::Delete => core.delete_key(&caller, &instance, &key, false).await?,
        Transition::Destroy => {
            let current = core.key(&caller, &instance, &key).await?;
            if current.state.apply(Transition::Destroy).is_none() {
                return Err(CoreError::InvalidTransition {
                    id: current.id,
                    state: current.state,
                    transition,
                }
                .into());
            }
            core.delete_key(&caller, &instance, &current.id, false)
                .await?
        }
        Transition::Restore => core.restore_key(&caller, &instance, &key, None).await?,
        Transition::Enable | Transition::Disable => {
            core.kms_transition(&caller, &instance, &key, transition)
                .await?
        }
        _ => {
            core.transition_key(&caller, &instance, &key, transition)
                .await?
        }
    };
    Ok(Json(key.into()))
}

fn decode_b64(field: &'static str, text: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    STANDARD
        .decode(text.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| ApiError::BadRequest {
            code: "INVALID_FIELD",
            message: format!("{field} must be base64"),
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrapBody {
    /// Base64 data to wrap; without it the server generates a 32-byte DEK and returns it.
    #[serde(default)]
    plaintext: Option<Zeroizing<String>>,
    #[serde(default)]
    aad: Vec<String>,
}

/// Envelope encryption with a root key: `{"ciphertext", "key_version", "plaintext"?}`.
async fn wrap(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    peer: Peer,
    Path((instance, key)): Path<(String, String)>,
    ApiJson(body): ApiJson<WrapBody>,
) -> Result<Json<Value>, ApiError> {
    allowed(&core, &caller, &instance, peer).await?;
    let plaintext = body
        .plaintext
        .as_deref()
        .map(|p| decode_b64("plaintext", p))
        .transpose()?;
    let wrapped = core
        .wrap_key(&caller, &instance, &key, plaintext, &body.aad)
        .await?;
    let mut answer = json!({
        "ciphertext": STANDARD.encode(&wrapped.ciphertext),
        "key_version": wrapped.key_version_id,
    });
    if let Some(generated) = &wrapped.generated_plaintext {
        let encoded = Zeroizing::new(STANDARD.encode(generated.as_slice()));
        answer["plaintext"] = Value::String(encoded.as_str().to_owned());
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnwrapBody {
    ciphertext: String,
    #[serde(default)]
    aad: Vec<String>,
}

/// `{"plaintext", "key_version", "rewrapped"?: {"ciphertext", "key_version"}}`.
async fn unwrap(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    peer: Peer,
    Path((instance, key)): Path<(String, String)>,
    ApiJson(body): ApiJson<UnwrapBody>,
) -> Result<Json<Value>, ApiError> {
    allowed(&core, &caller, &instance, peer).await?;
    let ciphertext = decode_b64("ciphertext", &body.ciphertext)?;
    let unwrapped = core
        .unwrap_key(&caller, &instance, &key, &ciphertext, &body.aad)
        .await?;
    let plaintext = Zeroizing::new(STANDARD.encode(unwrapped.plaintext.as_slice()));
    let mut answer = json!({
        "plaintext": plaintext.as_str(),
        "key_version": unwrapped.key_version_id,
    });
    if let Some(rewrapped) = unwrapped.rewrapped {
        answer["rewrapped"] = json!({
            "ciphertext": STANDARD.encode(&rewrapped.ciphertext),
            "key_version": rewrapped.key_version_id,
        });
    }
    Ok(Json(answer))
}
