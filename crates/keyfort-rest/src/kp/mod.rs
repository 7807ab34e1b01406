//! The Key Protect v2 compatible door (`/api/v2`, `specs/keyprotect-api.md`), plus the admin
//! routes for the audit trail ([`audit`]) and identity management ([`iam`]).
//!
//! Every `/api/v2` handler takes a [`Kp`] (the authenticated caller bound to this request, the
//! `Bluemix-Instance`, the optional `X-Kms-Key-Ring` and `Prefer` headers, the query string) and
//! answers with a KP collection envelope, or a KP error envelope built in [`error`].

mod actions;
pub(crate) mod audit;
mod envelope;
mod error;
pub(crate) mod iam;
mod import_token;
mod keys;
mod kmip_adapters;
mod policies;
mod registrations;
mod rings;

mod aliases;
mod correlation;
mod events;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::routing::{delete, get, post};
use keyfort_core::{AuthFailure, Caller, CoreError, Keyfort};
use serde_json::Value;

pub(crate) use envelope::KpError;
use error::Op;

/// The header that carries the correlation id of a request, in and out.
const CORRELATION_ID: HeaderName = HeaderName::from_static("correlation-id");
const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
const BLUEMIX_INSTANCE: HeaderName = HeaderName::from_static("bluemix-instance");
const KEY_RING: HeaderName = HeaderName::from_static("x-kms-key-ring");
const PREFER: HeaderName = HeaderName::from_static("prefer");
/// Longest correlation id accepted from a client; longer ones are replaced.
const MAX_CORRELATION_ID_LEN: usize = 128;

/// The `/api/v2` routes (§3 endpoint table).
pub(crate) fn routes() -> Router<Keyfort> {
    Router::new()
        .route(
            "/keys",
            get(keys::list).head(keys::count).post(keys::create),
        )
        .route(
            "/keys_with_policy_overrides",
            post(keys::create_with_overrides),
        )
        .route("/keys/registrations", get(registrations::list_all))
        .route(
            "/keys/{id}",
            get(keys::get)
                .patch(keys::patch)
                .delete(keys::delete)
                .post(actions::deprecated_action),
        )
        .route("/keys/{id}/metadata", get(keys::metadata))
        .route("/keys/{id}/purge", delete(keys::purge))
        .route("/keys/{id}/restore", post(keys::restore))
        .route("/keys/{id}/versions", get(keys::versions))
        .route("/keys/{id}/actions/{action}", post(actions::action))
        .route(
            "/keys/{id}/policies",
            get(policies::key_policies).put(policies::set_key_policies),
        )
        .route(
            "/instance/policies",
            get(policies::instance_policies).put(policies::set_instance_policies),
        )
        .route("/instance/allowed_ip_port", get(policies::allowed_ip_port))
        .route("/event_ack", post(events::acknowledge))
        .route(
            "/import_token",
            get(import_token::retrieve).post(import_token::create),
        )
        .route("/keys/{id}/registrations", get(registrations::list))
        .route(
            "/keys/{id}/registrations/{crn}",
            post(registrations::create)
                .put(registrations::replace)
                .patch(registrations::update)
                .delete(registrations::delete),
        )
        .route(
            "/keys/{id}/aliases/{alias}",
            post(aliases::create).delete(aliases::delete),
        )
        .route(
            "/kmip_adapters",
            get(kmip_adapters::list).post(kmip_adapters::create),
        )
        .route(
            "/kmip_adapters/{id}",
            get(kmip_adapters::get).delete(kmip_adapters::delete),
        )
        .route(
            "/kmip_adapters/{id}/kmip_objects",
            get(kmip_adapters::list_objects),
        )
        .route(
            "/kmip_adapters/{id}/kmip_objects/{object}",
            get(kmip_adapters::get_object).delete(kmip_adapters::delete_object),
        )
        .route(
            "/kmip_adapters/{id}/certificates",
            get(kmip_adapters::list_certificates).post(kmip_adapters::add_certificate),
        )
        .route(
            "/kmip_adapters/{id}/certificates/{certificate}",
            get(kmip_adapters::get_certificate).delete(kmip_adapters::delete_certificate),
        )
        .route("/key_rings", get(rings::list))
        .route(
            "/key_rings/{ring}",
            post(rings::create).delete(rings::delete),
        )
        .fallback(not_found)
        .layer(correlation::Correlate)
}

/// The admin routes of this module, under `/api/keyfort/v1`.
pub(crate) fn admin_routes() -> Router<Keyfort> {
    audit::routes().merge(iam::routes())
}

async fn not_found(headers: HeaderMap) -> KpError {
    KpError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND_ERR",
        "no such endpoint in the Key Protect v2 API",
        Op::REQUEST,
    )
    .with_correlation(correlation_of(&headers))
}

/// The correlation id the [`correlation::Correlate`] layer put on the request.
fn correlation_of(headers: &HeaderMap) -> String {
    headers
        .get(CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unavailable")
        .to_owned()
}

/// `Prefer: return=representation | return=minimal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefer {
    Representation,
    Minimal,
    /// No (or an unknown) preference.
    Unset,
}

/// One `/api/v2` request: who, on which instance, with which headers and query.
pub(crate) struct Kp {
    pub caller: Caller,
    pub instance: String,
    pub key_ring: Option<String>,
    pub prefer: Prefer,
    pub correlation_id: String,
    pub query: Params,
}

impl Kp {
    /// The KP error for a failed core call of operation `op`.
    pub fn err(&self, op: Op) -> impl FnOnce(CoreError) -> KpError + '_ {
        move |e| KpError::core(&e, op, &self.correlation_id)
    }

    /// A KP error of this request.
    pub fn fail(
        &self,
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        op: Op,
    ) -> KpError {
        KpError::new(status, code, message, op).with_correlation(self.correlation_id.clone())
    }
}

impl FromRequestParts<Keyfort> for Kp {
    type Rejection = KpError;

    async fn from_request_parts(parts: &mut Parts, core: &Keyfort) -> Result<Self, KpError> {
        Kp::extract(parts, core, true).await
    }
}

/// A [`Kp`] request exempt from the allowedIP policy (Key Protect lets
/// `GET /instance/allowed_ip_port` through from any address).
pub(crate) struct KpAnySource(pub Kp);

impl FromRequestParts<Keyfort> for KpAnySource {
    type Rejection = KpError;

    async fn from_request_parts(parts: &mut Parts, core: &Keyfort) -> Result<Self, KpError> {
        Kp::extract(parts, core, false).await.map(KpAnySource)
    }
}

impl Kp {
    async fn extract(parts: &mut Parts, core: &Keyfort, check_source: bool) -> Result<Kp, KpError> {
        let correlation_id = correlation_of(&parts.headers);
        let token = crate::auth::bearer_token(parts);
        let authenticated = match token {
            Some(t) => core.authenticate(t).await,
            None => Err(CoreError::Unauthenticated(AuthFailure::Missing)),
        };
        let caller = authenticated.map_err(|e| KpError::core(&e, Op::REQUEST, &correlation_id))?;
        let header = |name: &HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let instance = header(&BLUEMIX_INSTANCE).ok_or_else(|| {
            KpError::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST_ERR",
                "the Bluemix-Instance header is required",
                Op::REQUEST,
            )
            .with_target("header", "Bluemix-Instance")
            .with_correlation(correlation_id.clone())
        })?;
        let prefer = match header(&PREFER).as_deref().map(str::to_ascii_lowercase) {
            Some(p) if p.contains("return=representation") => Prefer::Representation,
            Some(p) if p.contains("return=minimal") => Prefer::Minimal,
            _ => Prefer::Unset,
        };
        // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_canonical());
        let source = peer.map(|ip| ip.to_string());
        let query = Params::parse(parts.uri.query()).map_err(|()| {
            KpError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_PARAM_ERR",
                "the query string is not valid",
                Op::REQUEST,
            )
            .with_correlation(correlation_id.clone())
        })?;
        let key_ring = header(&KEY_RING);
        let caller = caller
            .for_request(Some(correlation_id.clone()), source)
            .in_key_ring(key_ring.clone());
        if check_source {
            core.check_source(&caller, &instance, peer)
                .await
                .map_err(|e| KpError::core(&e, Op::REQUEST, &correlation_id))?;
        }
        Ok(Kp {
            caller,
            instance,
            key_ring,
            prefer,
            correlation_id,
            query,
        })
    }
}

/// The query string of a request.
#[derive(Debug, Default)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: Option<&str>) -> Result<Params, ()> {
        let Some(q) = query else {
            return Ok(Params::default());
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).map_err(|_| ())?;
        Ok(Params(pairs.into_iter().collect()))
    }

    /// A parameter; an empty value counts as absent (the Python SDK sends `state=`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn bool(&self, kp: &Kp, name: &'static str) -> Result<Option<bool>, KpError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(bad_param(kp, name, "must be true or false")),
        }
    }

    pub fn u64(&self, kp: &Kp, name: &'static str) -> Result<Option<u64>, KpError> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad_param(kp, name, "must be a non-negative integer"))
            })
            .transpose()
    }

    /// `limit` (1 to `max`, default `default`) and `offset` (default 0).
    pub fn paging(&self, kp: &Kp, default: u64, max: u64) -> Result<(u64, u64), KpError> {
        let limit = self.u64(kp, "limit")?.unwrap_or(default);
        if limit == 0 || limit > max {
            return Err(bad_param(kp, "limit", "is out of range"));
        }
        Ok((limit, self.u64(kp, "offset")?.unwrap_or(0)))
    }
}

pub(crate) fn bad_param(kp: &Kp, name: &str, rule: &str) -> KpError {
    kp.fail(
        StatusCode::BAD_REQUEST,
        "INVALID_QUERY_PARAM_ERR",
        format!("The query parameter `{name}` {rule}"),
        Op::REQUEST,
    )
    .with_target("query_param", name)
}

/// A request body: any JSON-ish content type is accepted (§2); `None` when empty.
pub(crate) struct KpBody(pub Option<Value>);

impl FromRequest<Keyfort> for KpBody {
    type Rejection = KpError;

    async fn from_request(req: Request, state: &Keyfort) -> Result<Self, KpError> {
        let correlation_id = correlation_of(req.headers());
        let fail = |status, code, message: &str| {
            KpError::new(status, code, message, Op::REQUEST)
                .with_correlation(correlation_id.clone())
        };
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "BODY_TOO_LARGE_ERR",
                    "the request body is too large",
                )
            } else {
                fail(
                    StatusCode::BAD_REQUEST,
                    "BAD_BODY_ERR",
                    "the request body could not be read",
                )
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(KpBody(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| KpBody(Some(v)))
            .map_err(|_| {
                fail(
                    StatusCode::BAD_REQUEST,
                    "BAD_BODY_ERR",
                    "the request body is not valid JSON",
                )
            })
    }
}

impl KpBody {
    /// The resources of a collection body, checked against `collectionTotal` (§2).
    pub fn resources(self, kp: &Kp, op: Op) -> Result<Vec<Value>, KpError> {
        let Some(body) = self.0 else {
            return Err(kp.fail(
                StatusCode::BAD_REQUEST,
                "NO_BODY_ERR",
                "a request body is required",
                op,
            ));
        };
        envelope::resources_of(body, kp, op)
    }

    /// The first resource of a collection body.
    pub fn resource(self, kp: &Kp, op: Op) -> Result<Value, KpError> {
        let mut list = self.resources(kp, op)?;
        if list.len() != 1 {
            return Err(kp.fail(
                StatusCode::BAD_REQUEST,
                "NUM_COLLECTION_RESOURCE_ERR",
                "exactly one resource is expected",
                op,
            ));
        }
        Ok(list.remove(0))
    }
}
