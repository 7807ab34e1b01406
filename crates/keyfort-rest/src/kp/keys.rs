//! Keys: create / import, get, list, count, move, delete, purge, restore, versions (§3–§5, §11).

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyfort_core::kms::{key_policies_of, pending_deletion};
use keyfort_core::{
    Comparison, DateCondition, ImportedMaterial, Key, KeyDate, KeyPolicyUpdate, KeyQuery, KeySort,
    KeySortField, KeyState, Keyfort, KmsTimings, NewKey, RotationPolicy, SearchMode, SearchScope,
    SecureImport,
};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::envelope::{self, KEY, KpError, collection, json_reply, reply};
use super::error::Op;
use super::{Kp, KpBody, Prefer};

/// Largest page of keys (§11).
const MAX_PAGE: u64 = 5000;
const DEFAULT_PAGE: u64 = 200;

/// The waiting periods used to derive `restoreAllowed`, `purgeAllowedFrom`, … The core does not
/// expose the configured ones yet, so Key Protect's defaults are shown.
/// What the key view's date flags are computed against: the core's waiting periods, and the
/// time now by the core's clock.
pub(crate) struct KeyView {
    timings: KmsTimings,
    now: i64,
}

pub(crate) fn key_view(core: &Keyfort) -> KeyView {
    KeyView {
        timings: core.kms_timings(),
        now: core.now_ms(),
    }
}

/// Unix milliseconds as RFC 3339 UTC.
pub(crate) fn date(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The key's CRN.
pub(crate) fn crn(instance: &str, key_id: &str) -> String {
    format!("crn:v1:keyfort:private:kms:local:a/keyfort:{instance}:key:{key_id}")
}

/// The Key Protect key resource (§4); `payload` only for standard keys where the spec says.
pub(crate) fn key_resource(key: &Key, view: &KeyView, payload: Option<&[u8]>) -> Value {
    let (timings, now) = (&view.timings, view.now);
    let mut r = Map::new();
    let mut put = |k: &str, v: Value| {
        r.insert(k.to_owned(), v);
    };
    put("type", json!(KEY));
    put("id", json!(key.id));
    put("name", json!(key.name));
    put("aliases", json!(key.aliases));
    if let Some(d) = &key.description {
        put("description", json!(d));
    }
    put("tags", json!(key.tags));
    put("state", json!(key.state.key_protect()));
    if let Some(e) = key.expires_at {
        put("expirationDate", json!(date(e)));
    }
    put("extractable", json!(key.extractable));
    put("crn", json!(crn(&key.instance_id, &key.id)));
    put("imported", json!(key.imported));
    put("keyRingID", json!(key.key_ring_id));
    put("creationDate", json!(date(key.created_at)));
    put("createdBy", json!(key.created_by));
    put("algorithmType", json!(key.algorithm));
    put(
        "algorithmMetadata",
        json!({"bitLength": key.bit_length.to_string(), "mode": "Deprecated"}),
    );
    put("algorithmBitSize", json!(key.bit_length));
    put("algorithmMode", json!("Deprecated"));
    put("lastUpdateDate", json!(date(key.updated_at)));
    if let Some(t) = key.last_rotated_at {
        put("lastRotateDate", json!(date(t)));
    }
    // A version is made at creation and at each rotation.
    put(
        "keyVersion",
        json!({
            "id": key.current_version_id,
            "creationDate": date(key.last_rotated_at.unwrap_or(key.created_at)),
        }),
    );
    let policies = key_policies_of(key);
    let dual = policies.dual_auth_delete.as_ref().is_some_and(|(e, _)| *e);
    let mut dual_block = json!({"enabled": dual});
    if dual {
        let pending = pending_deletion(key).filter(|(_, exp)| *exp > now);
        dual_block["keySetForDeletion"] = json!(pending.is_some());
        if let Some((_, exp)) = pending {
            dual_block["authExpiration"] = json!(date(exp));
        }
    }
    put("dualAuthDelete", dual_block);
    if let Some((rot, _)) = policies.rotation {
        put(
            "rotation",
            json!({"enabled": rot.enabled, "interval_month": rot.interval_month}),
        );
    }
    let deleted = key.state.is_destroyed();
    put("deleted", json!(deleted));
    if let Some(d) = key.deleted_at.filter(|_| deleted) {
        let restore_until = d.saturating_add(ms(timings.restore_window));
        let purge_from = d.saturating_add(ms(timings.purge_after));
        put("deletionDate", json!(date(d)));
        if let Some(by) = &key.deleted_by {
            put("deletedBy", json!(by));
        }
        put("restoreExpirationDate", json!(date(restore_until)));
        put(
            "restoreAllowed",
            json!(
                key.state == KeyState::Destroyed
                    && now <= restore_until
                    && key.expires_at.is_none_or(|e| e > now)
            ),
        );
        put("purgeAllowed", json!(now >= purge_from));
        put("purgeAllowedFrom", json!(date(purge_from)));
    }
    if let Some(p) = payload {
        let encoded = Zeroizing::new(STANDARD.encode(p));
        put("payload", json!(encoded.as_str()));
    }
    Value::Object(r)
}

/// One key in a collection.
fn one_key(core: &Keyfort, key: &Key, payload: Option<&[u8]>) -> Value {
    collection(KEY, vec![key_resource(key, &key_view(core), payload)])
}

// ---- create ---------------------------------------------------------------------------------

pub(crate) async fn create(
    State(core): State<Keyfort>,
    kp: Kp,
    body: KpBody,
) -> Result<Response, KpError> {
    create_key(core, kp, body, false).await
}

pub(crate) async fn create_with_overrides(
    State(core): State<Keyfort>,
    kp: Kp,
    body: KpBody,
) -> Result<Response, KpError> {
    create_key(core, kp, body, true).await
}

fn field_error(kp: &Kp, op: Op, field: &str, rule: &str) -> KpError {
    kp.fail(
        StatusCode::BAD_REQUEST,
        "INVALID_FIELD_ERR",
        format!("The field `{field}` must be: {rule}"),
        op,
    )
    .with_target("field", field)
}

fn text(r: &Value, name: &str) -> Option<String> {
    r.get(name).and_then(Value::as_str).map(str::to_owned)
}

pub(crate) fn b64(kp: &Kp, op: Op, field: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, KpError> {
    STANDARD
        .decode(text.trim().as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| field_error(kp, op, field, "base64 encoded data"))
}

pub(crate) fn parse_date(kp: &Kp, op: Op, field: &str, text: &str) -> Result<i64, KpError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .ok_or_else(|| field_error(kp, op, field, "an RFC 3339 date-time"))
}

fn strings(kp: &Kp, op: Op, r: &Value, field: &str) -> Result<Vec<String>, KpError> {
    match r.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| field_error(kp, op, field, "a list of strings"))
            })
            .collect(),
        Some(_) => Err(field_error(kp, op, field, "a list of strings")),
    }
}

/// The key material of a rotate or restore body: `payload` alone, or sealed to the import token
/// with `encryptedNonce`, `iv` and `encryptionAlgorithm` (default `RSAES_OAEP_SHA_256`). The
/// fields may sit in the body itself or in a one-resource collection. `None` without `payload`.
pub(crate) fn imported_material(
    kp: &Kp,
    op: Op,
    body: Option<Value>,
) -> Result<Option<ImportedMaterial>, KpError> {
    let Some(body) = body else { return Ok(None) };
    let r = if body.get("resources").is_some() {
        let mut list = envelope::resources_of(body, kp, op)?;
        if list.len() != 1 {
            return Err(kp.fail(
                StatusCode::BAD_REQUEST,
                "NUM_COLLECTION_RESOURCE_ERR",
                "exactly one resource is expected",
                op,
            ));
        }
        list.remove(0)
    } else {
        body
    };
    if !r.is_object() {
        return Err(kp.fail(
            StatusCode::BAD_REQUEST,
            "BAD_BODY_ERR",
            "the request body must be a JSON object",
            op,
        ));
    }
    let payload = match r.get("payload") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(b64(kp, op, "payload", p)?),
        Some(_) => {
            return Err(field_error(
                kp,
                op,
                "payload",
                "base64 encoded key material",
            ));
        }
    };
    let algorithm = text(&r, "encryptionAlgorithm");
    let sealed = algorithm.is_some() || r.get("encryptedNonce").is_some();
    let Some(payload) = payload else {
        if sealed {
            return Err(field_error(
                kp,
                op,
                "payload",
                "present for a secure import",
            ));
        }
        return Ok(None);
    };
    if !sealed {
        return Ok(Some(ImportedMaterial::Plain(payload)));
    }
    let sha256 = match algorithm.as_deref() {
        None | Some("RSAES_OAEP_SHA_256") => true,
        Some("RSAES_OAEP_SHA_1") => false,
        Some(_) => {
            return Err(field_error(
                kp,
                op,
                "encryptionAlgorithm",
                "RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1",
            ));
        }
    };
    let need = |field: &'static str| {
        text(&r, field)
            .ok_or_else(|| field_error(kp, op, field, "present for a secure import"))
            .and_then(|t| b64(kp, op, field, &t))
    };
    Ok(Some(ImportedMaterial::Sealed(SecureImport {
        payload: payload.to_vec(),
        sha256,
        encrypted_nonce: need("encryptedNonce")?.to_vec(),
        iv: need("iv")?.to_vec(),
    })))
}

/// The policy blocks of a create-with-overrides or key policy resource.
pub(crate) fn policy_update(kp: &Kp, op: Op, r: &Value) -> Result<KeyPolicyUpdate, KpError> {
    let mut update = KeyPolicyUpdate::default();
    if let Some(d) = r.get("dualAuthDelete").filter(|v| !v.is_null()) {
        update.dual_auth_delete = Some(
            d.get("enabled")
                .and_then(Value::as_bool)
                .ok_or_else(|| field_error(kp, op, "dualAuthDelete.enabled", "a boolean"))?,
        );
    }
    if let Some(rot) = r.get("rotation").filter(|v| !v.is_null()) {
        let enabled = rot.get("enabled").and_then(Value::as_bool).unwrap_or(true);
        let interval = match rot.get("interval_month") {
            None | Some(Value::Null) => 1,
            Some(v) => v
                .as_u64()
                .and_then(|m| u8::try_from(m).ok())
                .ok_or_else(|| field_error(kp, op, "rotation.interval_month", "1 to 12"))?,
        };
        update.rotation = Some(RotationPolicy {
            enabled,
            interval_month: interval,
        });
    }
    Ok(update)
}

async fn create_key(
    core: Keyfort,
    kp: Kp,
    body: KpBody,
    overrides: bool,
) -> Result<Response, KpError> {
    let op = Op::KEY_CREATE;
    let r = body.resource(&kp, op)?;
    let name = text(&r, "name").ok_or_else(|| field_error(&kp, op, "name", "a key name"))?;
    let extractable = match r.get("extractable") {
        None | Some(Value::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| field_error(&kp, op, "extractable", "a boolean"))?,
    };
    let expires_at = text(&r, "expirationDate")
        .map(|t| parse_date(&kp, op, "expirationDate", &t))
        .transpose()?;
    let payload = text(&r, "payload")
        .map(|p| b64(&kp, op, "payload", &p))
        .transpose()?;
    let secure_import = match text(&r, "encryptionAlgorithm") {
        None => None,
        Some(alg) => {
            let sha256 = match alg.as_str() {
                "RSAES_OAEP_SHA_256" => true,
                "RSAES_OAEP_SHA_1" => false,
                _ => {
                    return Err(field_error(
                        &kp,
                        op,
                        "encryptionAlgorithm",
                        "RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1",
                    ));
                }
            };
            let need = |field: &'static str| {
                text(&r, field)
                    .ok_or_else(|| field_error(&kp, op, field, "present for a secure import"))
                    .and_then(|t| b64(&kp, op, field, &t))
            };
            let payload = payload
                .as_ref()
                .ok_or_else(|| field_error(&kp, op, "payload", "present for a secure import"))?;
            Some(SecureImport {
                payload: payload.to_vec(),
                sha256,
                encrypted_nonce: need("encryptedNonce")?.to_vec(),
                iv: need("iv")?.to_vec(),
            })
        }
    };
    let policies = if overrides {
        policy_update(&kp, op, &r)?
    } else {
        KeyPolicyUpdate::default()
    };
    let imported_plain = secure_import.is_none().then_some(payload).flatten();
    let request = NewKey {
        name,
        description: text(&r, "description"),
        tags: strings(&kp, op, &r, "tags")?,
        aliases: strings(&kp, op, &r, "aliases")?,
        key_ring_id: kp.key_ring.clone(),
        extractable,
        payload: imported_plain,
        expires_at,
        ..NewKey::default()
    };
    let key = core
        .kms_create_key(&kp.caller, &kp.instance, request, policies, secure_import)
        .await
        .map_err(kp.err(op))?;
    // Standard keys come with their material only when the caller asks for the representation.
    let material = if key.extractable && kp.prefer == Prefer::Representation {
        core.kms_key_with_payload(&kp.caller, &kp.instance, &key.id)
            .await
            .map_err(kp.err(op))?
            .1
    } else {
        None
    };
    Ok(reply(
        StatusCode::CREATED,
        KEY,
        &one_key(&core, &key, material.as_deref().map(Vec::as_slice)),
    ))
}

// ---- read -----------------------------------------------------------------------------------

pub(crate) async fn get(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
) -> Result<Response, KpError> {
    let (key, payload) = core
        .kms_key_with_payload(&kp.caller, &kp.instance, &id)
        .await
        .map_err(kp.err(Op::KEY_GET))?;
    Ok(json_reply(
        StatusCode::OK,
        &one_key(&core, &key, payload.as_deref().map(Vec::as_slice)),
    ))
}

pub(crate) async fn metadata(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
) -> Result<Response, KpError> {
    let key = core
        .key(&kp.caller, &kp.instance, &id)
        .await
        .map_err(kp.err(Op::KEY_GET))?;
    Ok(json_reply(StatusCode::OK, &one_key(&core, &key, None)))
}

/// KP state numbers to core states (3 and 5 each cover two core states).
fn states(kp: &Kp, list: &str) -> Result<Vec<KeyState>, KpError> {
    let mut out = Vec::new();
    for s in list.split(',') {
        let matching: Vec<KeyState> = match s.trim().parse::<u8>() {
            Ok(n) => KeyState::ALL
                .into_iter()
                .filter(|st| st.key_protect() == n)
                .collect(),
            Err(_) => Vec::new(),
        };
        if matching.is_empty() {
            return Err(super::bad_param(
                kp,
                "state",
                "must list states 0, 1, 2, 3 or 5",
            ));
        }
        out.extend(matching);
    }
    Ok(out)
}

/// The query of `GET/HEAD /keys` (§11): `state`, `extractable`, `filter`, `sort`, `search`,
/// and the key ring of `X-Kms-Key-Ring`.
fn key_query(kp: &Kp, paging: Option<(u64, u64)>) -> Result<KeyQuery, KpError> {
    let q = &kp.query;
    let mut states_list = q.get("state").map(|s| states(kp, s)).transpose()?;
    let mut extractable = q.bool(kp, "extractable")?;
    let mut dates = Vec::new();
    if let Some(filter) = q.get("filter") {
        let filter = parse_filter(kp, filter)?;
        if filter.states.is_some() && states_list.is_some()
            || filter.extractable.is_some() && extractable.is_some()
        {
            return Err(super::bad_param(
                kp,
                "filter",
                "must not repeat a property given in `state` or `extractable`",
            ));
        }
        states_list = states_list.or(filter.states);
        extractable = extractable.or(filter.extractable);
        dates = filter.dates;
    }
    let sort = q.get("sort").map(|s| parse_sort(kp, s)).transpose()?;
    let search = q.get("search").map(|s| parse_search(kp, s)).transpose()?;
    let (limit, offset) = paging.unwrap_or((1, 0));
    let (search, search_mode) = match search {
        Some((text, mode)) => (Some(text), mode),
        None => (None, SearchMode::default()),
    };
    Ok(KeyQuery {
        key_ring_id: kp.key_ring.clone(),
        states: states_list.unwrap_or_default(),
        extractable,
        search,
        search_mode,
        dates,
        // Key Protect sorts by id unless told otherwise.
        sort: sort.unwrap_or_else(|| {
            vec![KeySort {
                field: KeySortField::Id,
                descending: false,
            }]
        }),
        offset,
        limit: Some(limit),
    })
}

/// What a `filter` parameter asks for.
#[derive(Default)]
struct Filter {
    states: Option<Vec<KeyState>>,
    extractable: Option<bool>,
    dates: Vec<DateCondition>,
}

/// Up to this many terms of one date property in a `filter`.
const MAX_TERMS_PER_DATE: usize = 3;

/// `filter`: space-separated `prop=value` or `prop=op:value` terms; dates are RFC 3339 in
/// double quotes, or `none`; `lte lt gte gt` compare dates; the keyword `none` alone means no
/// filter.
fn parse_filter(kp: &Kp, text: &str) -> Result<Filter, KpError> {
    let bad = |rule: &str| super::bad_param(kp, "filter", rule);
    let mut out = Filter::default();
    let terms: Vec<&str> = text.split_whitespace().collect();
    if terms.len() > 32 {
        return Err(bad("has too many terms"));
    }
    for term in terms {
        if term.eq_ignore_ascii_case("none") {
            continue;
        }
        let (prop, value) = term
            .split_once('=')
            .ok_or_else(|| bad("must be prop=value terms"))?;
        let date = match prop {
            "state" => {
                if out.states.is_some() {
                    return Err(bad("names `state` more than once"));
                }
                out.states = Some(states(kp, value)?);
                continue;
            }
            "extractable" => {
                if out.extractable.is_some() {
                    return Err(bad("names `extractable` more than once"));
                }
                out.extractable = Some(match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("extractable must be true or false")),
                });
                continue;
            }
            "creationDate" => KeyDate::Created,
            "lastUpdateDate" => KeyDate::Updated,
            "lastRotateDate" => KeyDate::Rotated,
            "deletionDate" => KeyDate::Deleted,
            "expirationDate" => KeyDate::Expires,
            _ => {
                return Err(bad(
                    "properties are creationDate, deletionDate, expirationDate, extractable, \
                     lastRotateDate, lastUpdateDate and state",
                ));
            }
        };
        if out.dates.iter().filter(|c| c.date == date).count() >= MAX_TERMS_PER_DATE {
            return Err(bad("names one date property at most three times"));
        }
        let (comparison, value) = match value.split_once(':') {
            Some(("lte", v)) => (Comparison::Lte, v),
            Some(("lt", v)) => (Comparison::Lt, v),
            Some(("gte", v)) => (Comparison::Gte, v),
            Some(("gt", v)) => (Comparison::Gt, v),
            // A bare date has colons of its own.
            _ => (Comparison::Eq, value),
        };
        let value = if value.eq_ignore_ascii_case("none") {
            if comparison != Comparison::Eq {
                return Err(bad("compares dates only with dates, not `none`"));
            }
            None
        } else {
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| bad("dates must be RFC 3339 in double quotes"))?;
            let parsed = time::OffsetDateTime::parse(
                unquoted,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
            .ok_or_else(|| bad("dates must be RFC 3339 in double quotes"))?;
            Some(parsed)
        };
        out.dates.push(DateCondition {
            date,
            comparison,
            value,
        });
    }
    Ok(out)
}

/// `sort`: comma-separated properties, `-` for descending.
fn parse_sort(kp: &Kp, text: &str) -> Result<Vec<KeySort>, KpError> {
    let mut out = Vec::new();
    for term in text.split(',') {
        let (descending, name) = match term.trim().strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, term.trim()),
        };
        let field = match name {
            "id" => KeySortField::Id,
            "state" => KeySortField::State,
            "extractable" => KeySortField::Extractable,
            "imported" => KeySortField::Imported,
            "creationDate" => KeySortField::Date(KeyDate::Created),
            "lastUpdateDate" => KeySortField::Date(KeyDate::Updated),
            "lastRotateDate" => KeySortField::Date(KeyDate::Rotated),
            "deletionDate" => KeySortField::Date(KeyDate::Deleted),
            "expirationDate" => KeySortField::Date(KeyDate::Expires),
            _ => {
                return Err(super::bad_param(
                    kp,
                    "sort",
                    "sorts by id, state, extractable, imported, creationDate, lastUpdateDate, \
                     lastRotateDate, deletionDate or expirationDate",
                ));
            }
        };
        if out.iter().any(|s: &KeySort| s.field == field) {
            return Err(super::bad_param(kp, "sort", "names a property twice"));
        }
        out.push(KeySort { field, descending });
    }
    Ok(out)
}

/// Longest search text accepted.
const MAX_SEARCH_LEN: usize = 256;

/// `search`: options `not:`, `exact:`, `escape:` (the rest is literal) and scopes `name:`,
/// `alias:` (both when neither or both are given), in any order, then the text.
fn parse_search(kp: &Kp, text: &str) -> Result<(String, SearchMode), KpError> {
    let mut mode = SearchMode::default();
    let (mut name, mut alias) = (false, false);
    let mut rest = text;
    loop {
        if let Some(r) = rest.strip_prefix("escape:") {
            rest = r;
            break;
        } else if let Some(r) = rest.strip_prefix("not:") {
            mode.negate = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("exact:") {
            mode.exact = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("name:") {
            name = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("alias:") {
            alias = true;
            rest = r;
        } else {
            break;
        }
    }
    if rest.is_empty() || rest.len() > MAX_SEARCH_LEN {
        return Err(super::bad_param(
            kp,
            "search",
            "must have 1 to 256 characters of text after its options",
        ));
    }
    mode.scope = match (name, alias) {
        (true, false) => SearchScope::Name,
        (false, true) => SearchScope::Alias,
        _ => SearchScope::NameOrAlias,
    };
    Ok((rest.to_owned(), mode))
}

/// `metadata.searchQuery` of a search answer (§2).
fn search_query(query: &KeyQuery) -> Option<Value> {
    let text = query.search.as_ref()?;
    let mode = query.search_mode;
    let scopes: &[&str] = match mode.scope {
        SearchScope::NameOrAlias => &["name", "alias"],
        SearchScope::Name => &["name"],
        SearchScope::Alias => &["alias"],
    };
    Some(json!({"query": text, "scopes": scopes, "not": mode.negate, "exact": mode.exact}))
}

pub(crate) async fn list(State(core): State<Keyfort>, kp: Kp) -> Result<Response, KpError> {
    let paging = kp.query.paging(&kp, DEFAULT_PAGE, MAX_PAGE)?;
    let query = key_query(&kp, Some(paging))?;
    let listing = core
        .list_keys(&kp.caller, &kp.instance, &query)
        .await
        .map_err(kp.err(Op::KEY_LIST))?;
    let view = key_view(&core);
    let resources: Vec<Value> = listing
        .keys
        .iter()
        .map(|k| key_resource(k, &view, None))
        .collect();
    let mut body = collection(KEY, resources);
    if kp.query.bool(&kp, "totalCount")? == Some(true) {
        body["metadata"]["totalCount"] = json!(listing.total);
    }
    if let Some(searched) = search_query(&query) {
        body["metadata"]["incompleteSearch"] = json!(listing.incomplete_search);
        body["metadata"]["searchQuery"] = searched;
    }
    Ok(json_reply(StatusCode::OK, &body))
}

/// `HEAD /keys`: the number of matching keys in `Key-Total`.
pub(crate) async fn count(State(core): State<Keyfort>, kp: Kp) -> Result<Response, KpError> {
    let query = key_query(&kp, None)?;
    let listing = core
        .list_keys(&kp.caller, &kp.instance, &query)
        .await
        .map_err(kp.err(Op::KEY_LIST))?;
    let mut response = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&listing.total.to_string()) {
        response.headers_mut().insert("key-total", v);
    }
    Ok(response)
}

pub(crate) async fn versions(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
) -> Result<Response, KpError> {
    let (limit, offset) = kp.query.paging(&kp, DEFAULT_PAGE, MAX_PAGE)?;
    let mut all = core
        .key_versions(&kp.caller, &kp.instance, &id)
        .await
        .map_err(kp.err(Op::VERSIONS))?;
    // Newest first: the current version leads.
    all.reverse();
    let total = all.len();
    let page: Vec<Value> = all
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|v| json!({"id": v.id, "creationDate": date(v.created_at)}))
        .collect();
    let mut body = collection(KEY, page);
    if kp.query.bool(&kp, "totalCount")? == Some(true) {
        body["metadata"]["totalCount"] = json!(total);
    }
    Ok(json_reply(StatusCode::OK, &body))
}

// ---- change ---------------------------------------------------------------------------------

/// `PATCH /keys/{id}`: only `keyRingID` may change (a move between rings).
pub(crate) async fn patch(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
    body: KpBody,
) -> Result<Response, KpError> {
    let op = Op::KEY_PATCH;
    let Some(body) = body.0 else {
        return Err(kp.fail(
            StatusCode::BAD_REQUEST,
            "NO_BODY_ERR",
            "a request body is required",
            op,
        ));
    };
    // Key Protect decodes field names case-insensitively; the Go client sends `KeyRingID`.
    let top = body.as_object().and_then(|o| {
        o.iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("keyRingID"))
            .map(|(_, v)| v.as_str())
    });
    let ring = match top {
        Some(Some(r)) => r.to_owned(),
        Some(None) => {
            return Err(field_error(
                &kp,
                op,
                "keyRingID",
                "the key ring to move the key to",
            ));
        }
        None => envelope::resources_of(body, &kp, op)?
            .first()
            .and_then(|r| text(r, "keyRingID"))
            .ok_or_else(|| field_error(&kp, op, "keyRingID", "the key ring to move the key to"))?,
    };
    let key = core
        .move_key(&kp.caller, &kp.instance, &id, &ring)
        .await
        .map_err(kp.err(op))?;
    Ok(json_reply(StatusCode::OK, &one_key(&core, &key, None)))
}

/// The answer to delete / purge: the key with `Prefer: return=representation`, else 204.
fn deleted_answer(core: &Keyfort, kp: &Kp, key: &Key) -> Response {
    if kp.prefer == Prefer::Representation {
        json_reply(StatusCode::OK, &one_key(core, key, None))
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

pub(crate) async fn delete(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
) -> Result<Response, KpError> {
    let force = kp.query.bool(&kp, "force")?.unwrap_or(false);
    let key = core
        .delete_key(&kp.caller, &kp.instance, &id, force)
        .await
        .map_err(kp.err(Op::KEY_DELETE))?;
    Ok(deleted_answer(&core, &kp, &key))
}

pub(crate) async fn purge(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
) -> Result<Response, KpError> {
    let key = core
        .purge_key(&kp.caller, &kp.instance, &id)
        .await
        .map_err(kp.err(Op::KEY_PURGE))?;
    // Purged: the record is gone, so the answer shows the key as last seen, minimal by default.
    if kp.prefer == Prefer::Minimal {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(json_reply(StatusCode::OK, &one_key(&core, &key, None)))
}

pub(crate) async fn restore(
    State(core): State<Keyfort>,
    kp: Kp,
    Path(id): Path<String>,
    body: KpBody,
) -> Result<Response, KpError> {
    restore_key(&core, &kp, &id, body).await
}

/// Restore (§3 #10), optionally with the key material of an imported key, plain or sealed to
/// the import token (the older Key Protect restore body).
pub(crate) async fn restore_key(
    core: &Keyfort,
    kp: &Kp,
    id: &str,
    body: KpBody,
) -> Result<Response, KpError> {
    let op = Op::KEY_RESTORE;
    let material = imported_material(kp, op, body.0)?;
    let key = core
        .restore_key(&kp.caller, &kp.instance, id, material)
        .await
        .map_err(kp.err(op))?;
    if kp.prefer == Prefer::Minimal {
        return Ok(StatusCode::CREATED.into_response());
    }
    Ok(reply(StatusCode::CREATED, KEY, &one_key(core, &key, None)))
}
