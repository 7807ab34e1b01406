//! Registrations of resources protected by keys (§10; create / replace / update / delete are
//! service-to-service in Key Protect, Manager here).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyfort_core::{Keyfort, Registration};
use serde_json::{Value, json};

use super::envelope::{KpError, REGISTRATION, collection, json_reply};
use super::error::Op;
use super::keys::date;
use super::{Kp, KpBody};

fn registration_json(kp: &Kp, r: &Registration) -> Value {
    json!({
        "keyId": r.key_id,
        "resourceCrn": r.resource_crn,
        "createdBy": r.created_by,
        "creationDate": date(r.created_at),
        "updatedBy": r.updated_by,
        "lastUpdated": date(r.updated_at),
        "description": r.description,
        "registrationMetadata": r.registration_metadata,
        "preventKeyDeletion": r.prevent_key_deletion,
        "keyVersion": {"id": r.key_version_id},
        "crn": super::keys::crn(&kp.instance, &r.key_id),
    })
}

/// `urlEncodedResourceCRNQuery`: an exact CRN, or a prefix ending in `*`.
fn crn_matches(pattern: &str, crn: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => crn.starts_with(prefix),
        None => crn == pattern,
    }
}

async fn list_for(core: &Keyfort, kp: &Kp, key: Option<&str>) -> Result<Response, KpError> {
    let (limit, offset) = kp.query.paging(kp, 200, 5000)?;
    let prevent = kp.query.bool(kp, "preventKeyDeletion")?;
    let pattern = kp
        .query
        .get("urlEncodedResourceCRNQuery")
        .map(str::to_owned);
    let (total, page) = core
        .registrations_matching(
            &kp.caller,
            &kp.instance,
            key,
            |r| {
                prevent.is_none_or(|p| p == r.prevent_key_deletion)
                    && pattern
                        .as_deref()
                        .is_none_or(|p| crn_matches(p, &r.resource_crn))
            },
            usize::try_from(offset).unwrap_or(usize::MAX),
            usize::try_from(limit).unwrap_or(usize::MAX),
        )
        .await
        .map_err(kp.err(Op::REGISTRATION_GET))?;
    let page = page.iter().map(|r| registration_json(kp, r)).collect();
    let mut body = collection(REGISTRATION, page);
    if kp.query.bool(kp, "totalCount")? == Some(true) {
        body["metadata"]["totalCount"] = json!(total);
    }
    Ok(json_reply(StatusCode::OK, &body))
}

pub(crate) async fn list(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
) -> Result<Response, KpError> {
    list_for(&core, &kp, Some(&id)).await
}

pub(crate) async fn list_all(State(core): State<Keyfort>, kp: Kp) -> Result<Response, KpError> {
    list_for(&core, &kp, None).await
}

/// The fields of a registration body; `None` where the body does not say.
struct Fields {
    description: Option<Option<String>>,
    metadata: Option<Option<String>>,
    prevent: Option<bool>,
}

fn fields(kp: &Kp, body: KpBody) -> Result<Fields, KpError> {
    let op = Op::REGISTRATION_SET;
    let r = match body.0 {
        None => Value::Null,
        Some(b) if b.get("resources").is_some() => body_resource(kp, b)?,
        Some(b) => b,
    };
    let text = |name: &str| r.get(name).map(|v| v.as_str().map(str::to_owned));
    let prevent = match r.get("preventKeyDeletion") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_bool().ok_or_else(|| {
            kp.fail(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD_ERR",
                "The field `preventKeyDeletion` must be: a boolean",
                op,
            )
            .with_target("field", "preventKeyDeletion")
        })?),
    };
    Ok(Fields {
        description: text("description"),
        metadata: text("registrationMetadata"),
        prevent,
    })
}

fn body_resource(kp: &Kp, b: Value) -> Result<Value, KpError> {
    let mut list = super::envelope::resources_of(b, kp, Op::REGISTRATION_SET)?;
    if list.len() != 1 {
        return Err(kp.fail(
            StatusCode::BAD_REQUEST,
            "NUM_COLLECTION_RESOURCE_ERR",
            "exactly one registration resource is expected",
            Op::REGISTRATION_SET,
        ));
    }
    Ok(list.remove(0))
}

async fn put(
    core: &Keyfort,
    kp: &Kp,
    id: &str,
    crn: &str,
    f: Fields,
    status: StatusCode,
) -> Result<Response, KpError> {
    let r = core
        .put_registration(
            &kp.caller,
            &kp.instance,
            id,
            crn,
            f.description.flatten(),
            f.metadata.flatten(),
            f.prevent.unwrap_or(false),
        )
        .await
        .map_err(kp.err(Op::REGISTRATION_SET))?;
    Ok(json_reply(
        status,
        &collection(REGISTRATION, vec![registration_json(kp, &r)]),
    ))
}

pub(crate) async fn create(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((id, crn)): Path<(String, String)>,
    body: KpBody,
) -> Result<Response, KpError> {
    let f = fields(&kp, body)?;
    put(&core, &kp, &id, &crn, f, StatusCode::CREATED).await
}

pub(crate) async fn replace(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((id, crn)): Path<(String, String)>,
    body: KpBody,
) -> Result<Response, KpError> {
    let f = fields(&kp, body)?;
    put(&core, &kp, &id, &crn, f, StatusCode::OK).await
}

/// PATCH: fields the body leaves out keep their current values.
pub(crate) async fn update(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((id, crn)): Path<(String, String)>,
    body: KpBody,
) -> Result<Response, KpError> {
    let mut f = fields(&kp, body)?;
    let existing = core
        .registrations(&kp.caller, &kp.instance, Some(&id))
        .await
        .map_err(kp.err(Op::REGISTRATION_SET))?
        .into_iter()
        .find(|r| r.resource_crn == crn);
    let Some(existing) = existing else {
        return Err(kp.fail(
            StatusCode::NOT_FOUND,
            "REGISTRATION_NOT_FOUND_ERR",
            "No registration exists for this key and resource",
            Op::REGISTRATION_SET,
        ));
    };
    f.description = Some(f.description.unwrap_or(existing.description));
    f.metadata = Some(f.metadata.unwrap_or(existing.registration_metadata));
    f.prevent = Some(f.prevent.unwrap_or(existing.prevent_key_deletion));
    put(&core, &kp, &id, &crn, f, StatusCode::OK).await
}

pub(crate) async fn delete(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((id, crn)): Path<(String, String)>,
) -> Result<Response, KpError> {
    core.delete_registration(&kp.caller, &kp.instance, &id, &crn)
        .await
        .map_err(kp.err(Op::REGISTRATION_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crn_patterns() {
        assert!(crn_matches("crn:v1:a:*", "crn:v1:a:b"));
        assert!(crn_matches("crn:v1:a:b", "crn:v1:a:b"));
        assert!(!crn_matches("crn:v1:a:b", "crn:v1:a:bc"));
    }
}
