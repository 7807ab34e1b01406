//! The collection envelope and the error envelope of Key Protect v2 (§2, §12).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyfort_core::CoreError;
use serde_json::{Value, json};

use super::Kp;
use super::error::Op;

/// Media types of collections (§2).
pub(crate) const KEY: &str = "application/vnd.ibm.kms.key+json";
pub(crate) const KEY_ACTION: &str = "application/vnd.ibm.kms.key_action+json";
pub(crate) const POLICY: &str = "application/vnd.ibm.kms.policy+json";
pub(crate) const ALIAS: &str = "application/vnd.ibm.kms.alias+json";
pub(crate) const KEY_RING: &str = "application/vnd.ibm.kms.key_ring+json";
pub(crate) const REGISTRATION: &str = "application/vnd.ibm.kms.registration+json";
pub(crate) const KMIP_ADAPTER: &str = "application/vnd.ibm.kms.kmip_adapter+json";
pub(crate) const KMIP_CERTIFICATE: &str = "application/vnd.ibm.kms.kmip_client_certificate+json";
pub(crate) const KMIP_OBJECT: &str = "application/vnd.ibm.kms.kmip_object+json";
pub(crate) const ERROR: &str = "application/vnd.ibm.kms.error+json";
const JSON: &str = "application/json";
const MORE_INFO: &str = "https://cloud.ibm.com/apidocs/key-protect";

/// `{"metadata": {"collectionType", "collectionTotal"}, "resources": [...]}`.
pub(crate) fn collection(kind: &str, resources: Vec<Value>) -> Value {
    json!({
        "metadata": {"collectionType": kind, "collectionTotal": resources.len()},
        "resources": resources,
    })
}

/// A JSON answer with the given status and media type.
pub(crate) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: &impl serde::Serialize,
) -> Response {
    // Values and the typed answers (strings, numbers, string-keyed maps) always serialize.
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON answer as `application/json` (which the Python SDK parses into a dict, §15.2).
pub(crate) fn json_reply(status: StatusCode, body: &Value) -> Response {
    reply(status, JSON, body)
}

/// The resources of a request collection; `collectionTotal`, when given, must match.
pub(crate) fn resources_of(body: Value, kp: &Kp, op: Op) -> Result<Vec<Value>, KpError> {
    let Value::Object(mut map) = body else {
        return Err(kp.fail(
            StatusCode::BAD_REQUEST,
            "BAD_BODY_ERR",
            "the body must be a collection object",
            op,
        ));
    };
    let Some(Value::Array(resources)) = map.remove("resources") else {
        return Err(kp.fail(
            StatusCode::BAD_REQUEST,
            "BAD_BODY_ERR",
            "the body must have a `resources` array",
            op,
        ));
    };
    if let Some(total) = map.get("metadata").and_then(|m| m.get("collectionTotal"))
        && total.as_u64() != Some(resources.len() as u64)
    {
        return Err(kp.fail(
            StatusCode::BAD_REQUEST,
            "COLLECTION_TOTAL_MISMATCH_ERR",
            "The collection total does not match the number of resources",
            op,
        ));
    }
    Ok(resources)
}

/// An error answer of the Key Protect door (§12). Boxed: handlers return it by value.
#[derive(Debug)]
pub(crate) struct KpError(Box<ErrorDetails>);

#[derive(Debug)]
pub(crate) struct ErrorDetails {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub target: Option<(&'static str, String)>,
    pub op: Op,
    pub correlation_id: Option<String>,
}

impl std::ops::Deref for KpError {
    type Target = ErrorDetails;

    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl KpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>, op: Op) -> Self {
        KpError(Box::new(ErrorDetails {
            status,
            code,
            message: message.into(),
            target: None,
            op,
            correlation_id: None,
        }))
    }

    /// The KP answer to a core error (see [`super::error::classify`]).
    pub fn core(e: &CoreError, op: Op, correlation_id: &str) -> KpError {
        super::error::classify(e, op, correlation_id).with_correlation(correlation_id.to_owned())
    }

    pub fn with_target(mut self, kind: &'static str, name: impl Into<String>) -> Self {
        self.0.target = Some((kind, name.into()));
        self
    }

    pub fn with_correlation(mut self, id: String) -> Self {
        self.0.correlation_id = Some(id);
        self
    }

    /// The envelope's JSON.
    pub fn body(&self) -> Value {
        let phrase = self.status.canonical_reason().unwrap_or("Error");
        let mut reason = json!({
            "code": self.code,
            "message": self.message,
            "status": self.status.as_u16(),
            "moreInfo": MORE_INFO,
        });
        if let Some((kind, name)) = &self.target {
            reason["target"] = json!({"type": kind, "name": name});
        }
        let error_msg = format!(
            "{phrase}: {} could not be {}: Please see `reasons` for more details ({})",
            self.op.what, self.op.verb, self.code
        );
        json!({
            "metadata": {"collectionType": ERROR, "collectionTotal": 1},
            "resources": [{"errorMsg": error_msg, "reasons": [reason]}],
        })
    }
}

impl IntoResponse for KpError {
    fn into_response(self) -> Response {
        let mut response = json_reply(self.status, &self.body());
        if let Some(id) = self
            .correlation_id
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            response.headers_mut().insert("correlation-id", id);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_envelope_has_the_kp_shape() {
        let e = KpError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD_ERR",
            "The field `plaintext` must be: base64",
            Op::WRAP,
        )
        .with_target("field", "plaintext");
        let body = e.body();
        assert_eq!(body["metadata"]["collectionType"], ERROR);
        assert_eq!(body["metadata"]["collectionTotal"], 1);
        let r = &body["resources"][0];
        assert_eq!(
            r["errorMsg"],
            "Bad Request: Wrap with key could not be performed: Please see `reasons` for more details (INVALID_FIELD_ERR)"
        );
        assert_eq!(r["reasons"][0]["code"], "INVALID_FIELD_ERR");
        assert_eq!(r["reasons"][0]["status"], 400);
        assert_eq!(r["reasons"][0]["target"]["name"], "plaintext");
    }
}
