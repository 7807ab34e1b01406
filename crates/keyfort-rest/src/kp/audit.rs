//! The audit trail on the admin API (`/api/keyfort/v1/instances/{id}/audit…`): query with
//! filters, chain verification, and export as JSON lines of CADF events.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use keyfort_core::{AuditEvent, AuditQuery, Keyfort};
use serde::Deserialize;
use serde_json::{Value, json};

use super::keys::date;
use crate::auth::Authenticated;
use crate::error::ApiError;

/// Default page of `GET …/audit`.
const DEFAULT_LIMIT: u64 = 1000;
/// Page size while exporting.
const EXPORT_PAGE: u64 = 1000;

pub(crate) fn routes() -> Router<Keyfort> {
    Router::new()
        .route("/audit", get(events_of_instance))
        .route("/instances/{instance}/audit", get(events))
        .route("/instances/{instance}/audit/verify", get(verify))
        .route("/instances/{instance}/audit/export", get(export))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filters {
    /// Only with `GET /audit`: the instance (required there).
    instance: Option<String>,
    after_seq: Option<i64>,
    /// RFC 3339.
    from: Option<String>,
    until: Option<String>,
    target: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    limit: Option<u64>,
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest {
        code: "INVALID_QUERY",
        message,
    }
}

fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .ok_or_else(|| bad(format!("{name} must be an RFC 3339 date-time")))
}

impl Filters {
    fn query(&self, limit: u64) -> Result<AuditQuery, ApiError> {
        Ok(AuditQuery {
            after_seq: self.after_seq.unwrap_or(0),
            from: self
                .from
                .as_deref()
                .map(|t| parse_time("from", t))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|t| parse_time("until", t))
                .transpose()?,
            target: self.target.clone(),
            action: self.action.clone(),
            outcome: self.outcome.clone(),
            limit,
        })
    }
}

fn filters(
    q: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Filters, ApiError> {
    q.map(|Query(f)| f).map_err(|e| bad(e.body_text()))
}

fn event_json(e: &AuditEvent) -> Value {
    json!({
        "seq": e.seq,
        "at": date(e.at),
        "actor": e.actor,
        "actor_id": e.actor_id,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "correlation_id": e.correlation_id,
        "source": e.source,
        "details": e.details,
        "hash": hex_string(&e.hash),
        "prev_hash": hex_string(&e.prev_hash),
    })
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn events(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(instance): Path<String>,
    q: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = filters(q)?;
    let query = f.query(f.limit.unwrap_or(DEFAULT_LIMIT))?;
    let list = core.audit_events(&caller, &instance, &query).await?;
    let next = list.last().map(|e| e.seq);
    let events: Vec<Value> = list.iter().map(event_json).collect();
    Ok(Json(json!({"events": events, "next_after_seq": next})))
}

/// `GET /api/keyfort/v1/audit?instance=…&…`: the same listing with the instance as a filter.
async fn events_of_instance(
    state: State<Keyfort>,
    caller: Authenticated,
    q: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = filters(q)?;
    let instance = f
        .instance
        .clone()
        .ok_or_else(|| bad("the instance query parameter is required".to_owned()))?;
    events(state, caller, Path(instance), Ok(Query(f))).await
}

async fn verify(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(instance): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = core.verify_audit(&caller, &instance).await?;
    let problem = v
        .problem
        .map(|(seq, what)| json!({"seq": seq, "problem": what.to_string()}));
    Ok(Json(json!({
        "ok": v.problem.is_none(),
        "events": v.events,
        "head": v.head,
        "problem": problem,
    })))
}

/// Every matching event, oldest first, one CADF JSON object per line.
async fn export(
    State(core): State<Keyfort>,
    Authenticated(caller): Authenticated,
    Path(instance): Path<String>,
    q: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let f = filters(q)?;
    let query = f.query(EXPORT_PAGE)?;
    // The first page before answering: a refusal is then an HTTP error, not a cut body.
    let first = core.audit_events(&caller, &instance, &query).await?;
    let export = Export {
        core,
        caller,
        instance,
        query,
        remaining: f.limit,
        page: Some(first),
        done: false,
    };
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(export, Export::next));
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// An export under way: the body is streamed a page of events at a time as the client reads
/// it, so neither side holds the whole trail.
struct Export {
    core: Keyfort,
    caller: std::sync::Arc<keyfort_core::Caller>,
    instance: String,
    query: AuditQuery,
    remaining: Option<u64>,
    /// The page read before answering, not yet sent.
    page: Option<Vec<AuditEvent>>,
    done: bool,
}

impl Export {
    /// The next page as JSON lines; `None` at the end. A failure after the answer began cuts
    /// the body short (the client sees an incomplete transfer, never a silent end).
    async fn next(mut self) -> Option<(Result<axum::body::Bytes, std::io::Error>, Export)> {
        if self.done {
            return None;
        }
        let page = match self.page.take() {
            Some(page) => page,
            None => match self
                .core
                .audit_events(&self.caller, &self.instance, &self.query)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(instance = %self.instance, error = %e, "audit export stopped");
                    self.done = true;
                    return Some((Err(std::io::Error::other("the audit export stopped")), self));
                }
            },
        };
        let full = page.len() as u64 == self.query.limit;
        let mut out = String::new();
        for e in &page {
            if self.remaining == Some(0) {
                break;
            }
            out.push_str(&e.to_cadf().to_string());
            out.push('\n');
            self.remaining = self.remaining.map(|r| r - 1);
        }
        match page.last() {
            Some(last) if full && self.remaining != Some(0) => self.query.after_seq = last.seq,
            _ => self.done = true,
        }
        if out.is_empty() {
            return None;
        }
        Some((Ok(axum::body::Bytes::from(out)), self))
    }
}
