//! Key policies and instance policies (§9).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyfort_core::{InstancePolicy, InstancePolicyType, Key, KeyPolicies, Keyfort, PolicyStamp};
use serde_json::{Map, Value, json};

use super::envelope::{KpError, POLICY, collection, json_reply};
use super::error::Op;
use super::keys::{crn, date, policy_update};
use super::{Kp, KpAnySource, KpBody};

/// Media type of the allowed IP port answer (§2).
const ALLOWED_IP_METADATA: &str = "application/vnd.ibm.kms.allowed_ip_metadata+json";

/// `GET /instance/allowed_ip_port` (§3 #26): `{private_endpoint_port}` while an allowedIP
/// policy is enabled, no resource otherwise. Keyfort enforces the policy on the port the
/// client reached, so that port (from the request's authority, else HTTPS's 443) is returned.
pub(crate) async fn allowed_ip_port(
    State(core): State<Keyfort>,
    KpAnySource(kp): KpAnySource,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, KpError> {
    let authority = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    let served_on = authority
        .and_then(|a| a.parse::<axum::http::uri::Authority>().ok())
        .and_then(|a| a.port_u16())
        .unwrap_or(443);
    let port = core
        .allowed_ip_port(&kp.caller, &kp.instance, served_on)
        .await
        .map_err(kp.err(Op::ALLOWED_IP_PORT))?;
    let resources = port
        .map(|p| vec![json!({"private_endpoint_port": p})])
        .unwrap_or_default();
    Ok(json_reply(
        StatusCode::OK,
        &collection(ALLOWED_IP_METADATA, resources),
    ))
}

const KEY_POLICY_NAMES: [&str; 2] = ["dualAuthDelete", "rotation"];

/// `?policy=` of the key policy endpoints, checked.
fn key_policy_param(kp: &Kp) -> Result<Option<&'static str>, KpError> {
    match kp.query.get("policy") {
        None => Ok(None),
        Some(p) => KEY_POLICY_NAMES
            .into_iter()
            .find(|n| *n == p)
            .map(Some)
            .ok_or_else(|| super::bad_param(kp, "policy", "must be dualAuthDelete or rotation")),
    }
}

fn stamped(key: &Key, stamp: &PolicyStamp, name: &str, value: Value) -> Value {
    json!({
        "type": POLICY,
        "crn": crn(&key.instance_id, &key.id),
        "creationDate": date(stamp.created_at),
        "createdBy": stamp.created_by,
        "lastUpdateDate": date(stamp.updated_at),
        "updatedBy": stamp.updated_by,
        name: value,
    })
}

fn key_policy_resources(key: &Key, p: &KeyPolicies, only: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some((enabled, stamp)) = &p.dual_auth_delete
        && only.is_none_or(|o| o == "dualAuthDelete")
    {
        out.push(stamped(
            key,
            stamp,
            "dualAuthDelete",
            json!({"enabled": enabled}),
        ));
    }
    if let Some((rot, stamp)) = &p.rotation
        && only.is_none_or(|o| o == "rotation")
    {
        out.push(stamped(
            key,
            stamp,
            "rotation",
            json!({"enabled": rot.enabled, "interval_month": rot.interval_month}),
        ));
    }
    out
}

pub(crate) async fn key_policies(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
) -> Result<Response, KpError> {
    let only = key_policy_param(&kp)?;
    let (key, p) = core
        .key_policies(&kp.caller, &kp.instance, &id)
        .await
        .map_err(kp.err(Op::POLICY_GET))?;
    Ok(json_reply(
        StatusCode::OK,
        &collection(POLICY, key_policy_resources(&key, &p, only)),
    ))
}

pub(crate) async fn set_key_policies(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
    body: KpBody,
) -> Result<Response, KpError> {
    let op = Op::POLICY_SET;
    let only = key_policy_param(&kp)?;
    let resources = body.resources(&kp, op)?;
    if only.is_some() && resources.len() != 1 {
        return Err(kp.fail(
            StatusCode::BAD_REQUEST,
            "NUM_COLLECTION_RESOURCE_ERR",
            "exactly one policy resource is expected with the `policy` query parameter",
            op,
        ));
    }
    let mut update = keyfort_core::KeyPolicyUpdate::default();
    for r in &resources {
        let u = policy_update(&kp, op, r)?;
        if let Some(o) = only {
            let matches = match o {
                "dualAuthDelete" => u.dual_auth_delete.is_some() && u.rotation.is_none(),
                _ => u.rotation.is_some() && u.dual_auth_delete.is_none(),
            };
            if !matches {
                return Err(kp.fail(
                    StatusCode::BAD_REQUEST,
                    "BODY_QUERY_PARAM_MISMATCH_ERR",
                    "the policy in the body does not match the `policy` query parameter",
                    op,
                ));
            }
        }
        update.dual_auth_delete = u.dual_auth_delete.or(update.dual_auth_delete);
        update.rotation = u.rotation.or(update.rotation);
    }
    if update.dual_auth_delete.is_none() && update.rotation.is_none() {
        return Err(kp.fail(
            StatusCode::BAD_REQUEST,
            "BAD_BODY_ERR",
            "the body sets no policy (dualAuthDelete or rotation)",
            op,
        ));
    }
    let (key, p) = core
        .set_key_policies(&kp.caller, &kp.instance, &id, update)
        .await
        .map_err(kp.err(op))?;
    Ok(json_reply(
        StatusCode::OK,
        &collection(POLICY, key_policy_resources(&key, &p, only)),
    ))
}

fn instance_policy_param(kp: &Kp) -> Result<Option<InstancePolicyType>, KpError> {
    kp.query
        .get("policy")
        .map(|p| {
            InstancePolicyType::from_name(p).ok_or_else(|| {
                super::bad_param(
                    kp,
                    "policy",
                    "must be allowedNetwork, dualAuthDelete, allowedIP, keyCreateImportAccess, metrics or rotation",
                )
            })
        })
        .transpose()
}

fn instance_policy_resource(p: &InstancePolicy) -> Value {
    let mut data = json!({"enabled": p.enabled});
    if p.enabled && !p.attributes.is_empty() {
        data["attributes"] = Value::Object(p.attributes.clone());
    }
    json!({
        "creationDate": date(p.stamp.created_at),
        "createdBy": p.stamp.created_by,
        "updatedBy": p.stamp.updated_by,
        "lastUpdated": date(p.stamp.updated_at),
        "policy_type": p.policy_type.name(),
        "policy_data": data,
    })
}

pub(crate) async fn instance_policies(
    State(core): State<Keyfort>,
    kp: Kp,
) -> Result<Response, KpError> {
    let only = instance_policy_param(&kp)?;
    let list = core
        .instance_policies(&kp.caller, &kp.instance)
        .await
        .map_err(kp.err(Op::POLICY_GET))?;
    let resources = list
        .iter()
        .filter(|p| only.is_none_or(|o| o == p.policy_type))
        .map(instance_policy_resource)
        .collect();
    Ok(json_reply(StatusCode::OK, &collection(POLICY, resources)))
}

pub(crate) async fn set_instance_policies(
    State(core): State<Keyfort>,
    kp: Kp,
    body: KpBody,
) -> Result<Response, KpError> {
    let op = Op::POLICY_SET;
    let only = instance_policy_param(&kp)?;
    let resources = body.resources(&kp, op)?;
    if only.is_some() && resources.len() != 1 {
        return Err(kp.fail(
            StatusCode::BAD_REQUEST,
            "NUM_COLLECTION_RESOURCE_ERR",
            "only one instance policy may be set with the `policy` query parameter",
            op,
        ));
    }
    let mut updates = Vec::new();
    for r in &resources {
        let t = r
            .get("policy_type")
            .and_then(Value::as_str)
            .and_then(InstancePolicyType::from_name)
            .ok_or_else(|| {
                kp.fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD_ERR",
                    "The field `policy_type` must be: an instance policy type",
                    op,
                )
                .with_target("field", "policy_type")
            })?;
        if only.is_some_and(|o| o != t) {
            return Err(kp.fail(
                StatusCode::BAD_REQUEST,
                "BODY_QUERY_PARAM_MISMATCH_ERR",
                "the policy_type in the body does not match the `policy` query parameter",
                op,
            ));
        }
        let data = r.get("policy_data");
        let enabled = data
            .and_then(|d| d.get("enabled"))
            .and_then(Value::as_bool)
            .ok_or_else(|| {
                kp.fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD_ERR",
                    "The field `policy_data.enabled` must be: a boolean",
                    op,
                )
                .with_target("field", "policy_data.enabled")
            })?;
        let attributes: Map<String, Value> = data
            .and_then(|d| d.get("attributes"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        updates.push((t, enabled, attributes));
    }
    core.set_instance_policies(&kp.caller, &kp.instance, updates)
        .await
        .map_err(kp.err(op))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
