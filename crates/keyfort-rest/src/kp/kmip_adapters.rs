//! KMIP adapters, their client certificates and their objects (§3 row 38): resources in
//! snake_case, collection types `kmip_adapter`, `kmip_client_certificate`, `kmip_object`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyfort_core::objects::ObjectType;
use keyfort_core::{Keyfort, KmipAdapter, KmipCertificate, KmipObject, NewKmipAdapter, Paging};
use serde_json::{Value, json};

use super::envelope::{
    KMIP_ADAPTER, KMIP_CERTIFICATE, KMIP_OBJECT, KpError, collection, json_reply, reply,
};
use super::error::Op;
use super::keys::date;
use super::{Kp, KpBody};

/// `limit` defaults and maxima (Key Protect: 100 and 200 for adapters and certificates, 100
/// and 5000 for objects).
const DEFAULT_LIMIT: u64 = 100;
const MAX_ADAPTERS_LIMIT: u64 = 200;
const MAX_OBJECTS_LIMIT: u64 = 5000;
/// The KMIP states `kmip_objects` lists by default: Pre-Active, Active, Deactivated,
/// Compromised.
const DEFAULT_OBJECT_STATES: [u32; 4] = [1, 2, 3, 4];

fn adapter_json(a: &KmipAdapter) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "description": a.description,
        "profile": a.profile,
        "profile_data": {"crk_id": a.crk_id},
        "created_at": date(a.created_at),
        "created_by": a.created_by,
        "updated_at": date(a.updated_at),
        "updated_by": a.updated_by,
    })
}

fn certificate_json(c: &KmipCertificate, with_pem: bool) -> Value {
    let mut v = json!({
        "id": c.id,
        "name": c.name,
        "created_at": date(c.created_at),
        "created_by": c.created_by,
    });
    if with_pem {
        v["certificate"] = json!(c.certificate);
    }
    v
}

/// The KMIP Object Type enumeration value (KMIP 1.4 §9.1.3.2.12).
fn kmip_object_type(object_type: &str) -> u32 {
    match ObjectType::parse(object_type) {
        Some(ObjectType::Certificate) => 1,
        Some(ObjectType::SymmetricKey) | None => 2,
        Some(ObjectType::PublicKey) => 3,
        Some(ObjectType::PrivateKey) => 4,
        Some(ObjectType::SecretData) => 7,
        Some(ObjectType::OpaqueObject) => 8,
    }
}

fn object_json(o: &KmipObject) -> Value {
    let k = &o.key;
    let mut v = json!({
        "id": k.id,
        "kmip_object_type": kmip_object_type(&k.object_type),
        "state": k.state.kmip(),
        "created_at": date(k.created_at),
        "created_by": k.created_by,
        "created_by_kmip_client_cert_id": o.created_by_cert_id,
        "updated_at": date(k.updated_at),
    });
    if k.state.is_destroyed() {
        v["destroyed_at"] = json!(date(k.deleted_at.unwrap_or(k.updated_at)));
        v["destroyed_by"] = json!(k.deleted_by);
    }
    v
}

fn paging(kp: &Kp, max: u64) -> Result<Paging, KpError> {
    let (limit, offset) = kp.query.paging(kp, DEFAULT_LIMIT, max)?;
    Ok(Paging { offset, limit })
}

/// Adds `totalCount` to a list's metadata when `totalCount=true`.
fn with_total(kp: &Kp, mut body: Value, total: u64) -> Result<Value, KpError> {
    if kp.query.bool(kp, "totalCount")? == Some(true) {
        body["metadata"]["totalCount"] = json!(total);
    }
    Ok(body)
}

/// A text field of a request resource: absent, null, or a string.
fn text(kp: &Kp, r: &Value, name: &'static str, op: Op) -> Result<Option<String>, KpError> {
    match r.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field(kp, name, "a string", op)),
    }
}

fn field(kp: &Kp, name: &'static str, rule: &str, op: Op) -> KpError {
    kp.fail(
        StatusCode::BAD_REQUEST,
        "INVALID_FIELD_ERR",
        format!("The field `{name}` must be: {rule}"),
        op,
    )
    .with_target("field", name)
}

// ---- adapters -------------------------------------------------------------------------------

pub(crate) async fn create(
    State(core): State<Keyfort>,
    kp: Kp,
    body: KpBody,
) -> Result<Response, KpError> {
    let op = Op::KMIP_ADAPTER_CREATE;
    let r = body.resource(&kp, op)?;
    if !r.is_object() {
        return Err(field(&kp, "resources", "an array of objects", op));
    }
    let profile =
        text(&kp, &r, "profile", op)?.ok_or_else(|| field(&kp, "profile", "native_1.0", op))?;
    let crk_id = match r.get("profile_data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(d)) => match d.get("crk_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(field(
                    &kp,
                    "profile_data",
                    "{\"crk_id\": <root key id>}",
                    op,
                ));
            }
        },
        Some(_) => {
            return Err(field(
                &kp,
                "profile_data",
                "{\"crk_id\": <root key id>}",
                op,
            ));
        }
    };
    let req = NewKmipAdapter {
        name: text(&kp, &r, "name", op)?,
        description: text(&kp, &r, "description", op)?,
        profile,
        crk_id,
        allow_expiring_key: kp.query.bool(&kp, "allowExpiringKey")?.unwrap_or(false),
    };
    let adapter = core
        .create_kmip_adapter(&kp.caller, &kp.instance, req)
        .await
        .map_err(kp.err(op))?;
    Ok(json_reply(
        StatusCode::CREATED,
        &collection(KMIP_ADAPTER, vec![adapter_json(&adapter)]),
    ))
}

pub(crate) async fn list(State(core): State<Keyfort>, kp: Kp) -> Result<Response, KpError> {
    let op = Op::KMIP_ADAPTER_LIST;
    let paging = paging(&kp, MAX_ADAPTERS_LIMIT)?;
    let page = core
        .kmip_adapters(&kp.caller, &kp.instance, kp.query.get("crk_id"), paging)
        .await
        .map_err(kp.err(op))?;
    let body = collection(KMIP_ADAPTER, page.items.iter().map(adapter_json).collect());
    Ok(json_reply(
        StatusCode::OK,
        &with_total(&kp, body, page.total)?,
    ))
}

pub(crate) async fn get(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
) -> Result<Response, KpError> {
    let adapter = core
        .kmip_adapter(&kp.caller, &kp.instance, &id)
        .await
        .map_err(kp.err(Op::KMIP_ADAPTER_GET))?;
    Ok(json_reply(
        StatusCode::OK,
        &collection(KMIP_ADAPTER, vec![adapter_json(&adapter)]),
    ))
}

pub(crate) async fn delete(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
) -> Result<Response, KpError> {
    core.delete_kmip_adapter(&kp.caller, &kp.instance, &id)
        .await
        .map_err(kp.err(Op::KMIP_ADAPTER_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- certificates ---------------------------------------------------------------------------

pub(crate) async fn add_certificate(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(adapter): Path<String>,
    body: KpBody,
) -> Result<Response, KpError> {
    let op = Op::KMIP_CERT_CREATE;
    let r = body.resource(&kp, op)?;
    let pem = text(&kp, &r, "certificate", op)?
        .ok_or_else(|| field(&kp, "certificate", "a PEM certificate", op))?;
    let name = text(&kp, &r, "name", op)?;
    let cert = core
        .add_kmip_certificate(&kp.caller, &kp.instance, &adapter, name, &pem)
        .await
        .map_err(kp.err(op))?;
    // A vendor media type, as the real service answers this call (§15.2).
    Ok(reply(
        StatusCode::CREATED,
        KMIP_CERTIFICATE,
        &collection(KMIP_CERTIFICATE, vec![certificate_json(&cert, true)]),
    ))
}

pub(crate) async fn list_certificates(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(adapter): Path<String>,
) -> Result<Response, KpError> {
    let paging = paging(&kp, MAX_ADAPTERS_LIMIT)?;
    let page = core
        .kmip_certificates(&kp.caller, &kp.instance, &adapter, paging)
        .await
        .map_err(kp.err(Op::KMIP_CERT_LIST))?;
    let body = collection(
        KMIP_CERTIFICATE,
        page.items
            .iter()
            .map(|c| certificate_json(c, false))
            .collect(),
    );
    Ok(json_reply(
        StatusCode::OK,
        &with_total(&kp, body, page.total)?,
    ))
}

pub(crate) async fn get_certificate(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((adapter, id)): Path<(String, String)>,
) -> Result<Response, KpError> {
    let cert = core
        .kmip_certificate(&kp.caller, &kp.instance, &adapter, &id)
        .await
        .map_err(kp.err(Op::KMIP_CERT_GET))?;
    Ok(json_reply(
        StatusCode::OK,
        &collection(KMIP_CERTIFICATE, vec![certificate_json(&cert, true)]),
    ))
}

pub(crate) async fn delete_certificate(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((adapter, id)): Path<(String, String)>,
) -> Result<Response, KpError> {
    core.delete_kmip_certificate(&kp.caller, &kp.instance, &adapter, &id)
        .await
        .map_err(kp.err(Op::KMIP_CERT_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- objects --------------------------------------------------------------------------------

pub(crate) async fn list_objects(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(adapter): Path<String>,
) -> Result<Response, KpError> {
    let op = Op::KMIP_OBJECT_LIST;
    let paging = paging(&kp, MAX_OBJECTS_LIMIT)?;
    let kmip_states: Vec<u32> = match kp.query.get("state") {
        None => DEFAULT_OBJECT_STATES.to_vec(),
        Some(csv) => csv
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| super::bad_param(&kp, "state", "must be a list of KMIP states 1 to 6"))?,
    };
    let mut states = Vec::new();
    for s in kmip_states {
        let core_states = keyfort_core::kmip_adapters::core_states_of_kmip(s).ok_or_else(|| {
            super::bad_param(&kp, "state", "must be a list of KMIP states 1 to 6")
        })?;
        states.extend(core_states);
    }
    let page = core
        .kmip_objects(&kp.caller, &kp.instance, &adapter, states, paging)
        .await
        .map_err(kp.err(op))?;
    let body = collection(KMIP_OBJECT, page.items.iter().map(object_json).collect());
    Ok(json_reply(
        StatusCode::OK,
        &with_total(&kp, body, page.total)?,
    ))
}

pub(crate) async fn get_object(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((adapter, id)): Path<(String, String)>,
) -> Result<Response, KpError> {
    let object = core
        .kmip_object(&kp.caller, &kp.instance, &adapter, &id)
        .await
        .map_err(kp.err(Op::KMIP_OBJECT_GET))?;
    Ok(json_reply(
        StatusCode::OK,
        &collection(KMIP_OBJECT, vec![object_json(&object)]),
    ))
}

pub(crate) async fn delete_object(
    State(core): State<Keyfort>,
    kp: Kp,
    Path((adapter, id)): Path<(String, String)>,
) -> Result<Response, KpError> {
    let force = kp.query.bool(&kp, "force")?.unwrap_or(false);
    core.delete_kmip_object(&kp.caller, &kp.instance, &adapter, &id, force)
        .await
        .map_err(kp.err(Op::KMIP_OBJECT_DELETE))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
