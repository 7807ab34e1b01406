//! Getting the servers ready: a token, a root key and the door to use on Keyfort; the transit
//! engine and an `aes256-gcm96` key on OpenBao. Every probe checks a round trip before the
//! measured requests, which only look at the status.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::error::BenchError;
use crate::ops::{HttpOp, Shape};

/// The 32-byte plaintext every wrap and encrypt sends.
pub const PLAINTEXT: [u8; 32] = *b"keyfort-bench 32-byte plaintext!";
/// The OpenBao transit key of the throughput rounds.
const BAO_KEY: &str = "bench";
/// The API-key grant of the IAM-compatible token endpoint.
const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";
/// Per-request limit, so a stuck server fails the run instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle keep-alive connections kept per host: one per client task at the highest concurrency.
const POOL_PER_HOST: usize = 64;

/// Which of Keyfort's two APIs serves an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// Key Protect compatible, `/api/v2`.
    KeyProtect,
    /// Keyfort's admin API, `/api/keyfort/v1`.
    Admin,
}

impl Door {
    pub fn describe(self) -> &'static str {
        match self {
            Door::KeyProtect => "Key Protect API (/api/v2)",
            Door::Admin => "admin API (/api/keyfort/v1; /api/v2 not served yet)",
        }
    }
}

/// Keyfort's measured operations.
pub struct Keyfort {
    pub wrap: HttpOp,
    pub unwrap: HttpOp,
    pub noop: HttpOp,
    pub create: HttpOp,
    pub create_door: Door,
    pub wrap_door: Door,
}

/// OpenBao's measured operations.
pub struct OpenBao {
    pub encrypt: HttpOp,
    pub decrypt: HttpOp,
    pub create: HttpOp,
    pub version: String,
}

/// A client for the load: HTTP/1.1 only (keep-alive, no h2 multiplexing through ALPN), one pool
/// shared by every task, `headers` on every request.
fn client(ca_pem: Option<&[u8]>, headers: HeaderMap) -> Result<reqwest::Client, BenchError> {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(POOL_PER_HOST)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .default_headers(headers);
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| BenchError::step("parsing the dev CA certificate", e))?;
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| BenchError::step("building the HTTP client", e))
}

fn header(value: &str, what: &str) -> Result<HeaderValue, BenchError> {
    HeaderValue::from_str(value).map_err(|e| BenchError::step(format!("{what} header"), e))
}

fn join(base: &Url, path: &str) -> Result<Url, BenchError> {
    base.join(path)
        .map_err(|e| BenchError::step(format!("URL {base}{path}"), e))
}

/// Sends one setup request; returns its status and JSON body (`Null` when empty or not JSON).
async fn send(
    client: &reqwest::Client,
    method: Method,
    url: Url,
    body: Option<&Value>,
    step: &str,
) -> Result<(StatusCode, Value), BenchError> {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| BenchError::step(step, e))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| BenchError::step(step, e))?;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, json))
}

/// `send`, requiring a 2xx answer.
async fn expect_ok(
    client: &reqwest::Client,
    method: Method,
    url: Url,
    body: Option<&Value>,
    step: &str,
) -> Result<Value, BenchError> {
    let (status, json) = send(client, method, url, body, step).await?;
    if status.is_success() {
        Ok(json)
    } else {
        Err(BenchError::Status {
            step: step.into(),
            status,
            body: json.to_string(),
        })
    }
}

fn string_at<'a>(json: &'a Value, pointer: &str, step: &str) -> Result<&'a str, BenchError> {
    json.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| BenchError::Invalid {
            step: step.into(),
            detail: format!("no string at {pointer} in {json}"),
        })
}

/// A route the server does not have: 404 or 405 without a JSON error body of the API.
fn missing_route(status: StatusCode, body: &Value) -> bool {
    matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) && body.is_null()
}

/// The KP collection body that creates one root key named `name`.
fn kp_create_body(name: &str) -> Value {
    json!({
        "metadata": {
            "collectionType": "application/vnd.ibm.kms.key+json",
            "collectionTotal": 1
        },
        "resources": [{
            "type": "application/vnd.ibm.kms.key+json",
            "name": name,
            "extractable": false
        }]
    })
}

/// Logs in to the dev server described by `dev_json`, creates a root key, finds the door for
/// wrap and key creation, and checks a wrap/unwrap round trip.
pub async fn keyfort(dev_json: &Path) -> Result<Keyfort, BenchError> {
    let step = format!("reading {}", dev_json.display());
    let text = std::fs::read(dev_json).map_err(|e| BenchError::step(&step, e))?;
    let dev: Value = serde_json::from_slice(&text).map_err(|e| BenchError::step(&step, e))?;
    let addr = string_at(&dev, "/http_addr", &step)?;
    let instance = string_at(&dev, "/instance_id", &step)?.to_owned();
    let api_key = string_at(&dev, "/api_key", &step)?;
    let ca_path = string_at(&dev, "/ca_cert", &step)?;
    let ca_pem = std::fs::read(ca_path)
        .map_err(|e| BenchError::step(format!("reading the dev CA {ca_path}"), e))?;
    let base_text = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("https://{addr}")
    };
    let base =
        Url::parse(&base_text).map_err(|e| BenchError::step(format!("URL {base_text}"), e))?;

    let login = client(Some(&ca_pem), HeaderMap::new())?;
    let step = "getting a token at /identity/token";
    let response = login
        .post(join(&base, "/identity/token")?)
        .form(&[("grant_type", APIKEY_GRANT), ("apikey", api_key)])
        .send()
        .await
        .map_err(|e| BenchError::step(step, e))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(BenchError::Status {
            step: step.into(),
            status,
            body: body.to_string(),
        });
    }
    let token = string_at(&body, "/access_token", step)?;

    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        header(&format!("Bearer {token}"), "Authorization")?,
    );
    headers.insert(
        HeaderName::from_static("bluemix-instance"),
        header(&instance, "Bluemix-Instance")?,
    );
    let http = client(Some(&ca_pem), headers)?;

    let ping = join(&base, "/api/keyfort/v1/ping")?;
    expect_ok(&http, Method::GET, ping.clone(), None, "no-op probe (ping)").await?;

    // Root key: the KP door if it is served, else the admin API.
    let kp_keys = join(&base, "/api/v2/keys")?;
    let admin_keys = join(&base, &format!("/api/keyfort/v1/instances/{instance}/keys"))?;
    let step = "creating the root key";
    let (status, body) = send(
        &http,
        Method::POST,
        kp_keys.clone(),
        Some(&kp_create_body("bench-root")),
        step,
    )
    .await?;
    let (create_door, key_id) = if status.is_success() {
        (
            Door::KeyProtect,
            string_at(&body, "/resources/0/id", step)?.to_owned(),
        )
    } else if missing_route(status, &body) {
        let body = expect_ok(
            &http,
            Method::POST,
            admin_keys.clone(),
            Some(&json!({ "name": "bench-root" })),
            step,
        )
        .await?;
        (Door::Admin, string_at(&body, "/id", step)?.to_owned())
    } else {
        return Err(BenchError::Status {
            step: step.into(),
            status,
            body: body.to_string(),
        });
    };

    // Wrap and unwrap: the KP door if it has them, else the admin API.
    let plaintext_b64 = STANDARD.encode(PLAINTEXT);
    let wrap_body = json!({ "plaintext": plaintext_b64 });
    let kp_action = |action: &str| join(&base, &format!("/api/v2/keys/{key_id}/actions/{action}"));
    let admin_action = |action: &str| {
        join(
            &base,
            &format!("/api/keyfort/v1/instances/{instance}/keys/{key_id}/{action}"),
        )
    };
    let step = "wrap probe";
    let (status, body) = send(
        &http,
        Method::POST,
        kp_action("wrap")?,
        Some(&wrap_body),
        step,
    )
    .await?;
    let (wrap_door, wrapped) = if status.is_success() {
        (Door::KeyProtect, body)
    } else if missing_route(status, &body) {
        let body = expect_ok(
            &http,
            Method::POST,
            admin_action("wrap")?,
            Some(&wrap_body),
            step,
        )
        .await?;
        (Door::Admin, body)
    } else {
        return Err(BenchError::Status {
            step: step.into(),
            status,
            body: body.to_string(),
        });
    };
    let ciphertext = string_at(&wrapped, "/ciphertext", step)?.to_owned();
    let (wrap_url, unwrap_url) = match wrap_door {
        Door::KeyProtect => (kp_action("wrap")?, kp_action("unwrap")?),
        Door::Admin => (admin_action("wrap")?, admin_action("unwrap")?),
    };
    let unwrap_body = json!({ "ciphertext": ciphertext });
    let step = "unwrap probe";
    let unwrapped = expect_ok(
        &http,
        Method::POST,
        unwrap_url.clone(),
        Some(&unwrap_body),
        step,
    )
    .await?;
    if string_at(&unwrapped, "/plaintext", step)? != plaintext_b64 {
        return Err(BenchError::Invalid {
            step: step.into(),
            detail: "unwrap did not return the wrapped plaintext".into(),
        });
    }

    let create = match create_door {
        Door::KeyProtect => Shape::Unique(Box::new(move |n| {
            let body = kp_create_body(&format!("k{n}"));
            (kp_keys.clone(), Some(body.to_string()))
        })),
        Door::Admin => Shape::Unique(Box::new(move |n| {
            let body = json!({ "name": format!("k{n}") });
            (admin_keys.clone(), Some(body.to_string()))
        })),
    };
    Ok(Keyfort {
        wrap: HttpOp::new(
            &http,
            Method::POST,
            Shape::Fixed {
                url: wrap_url,
                body: Some(wrap_body.to_string()),
            },
        ),
        unwrap: HttpOp::new(
            &http,
            Method::POST,
            Shape::Fixed {
                url: unwrap_url,
                body: Some(unwrap_body.to_string()),
            },
        ),
        noop: HttpOp::new(
            &http,
            Method::GET,
            Shape::Fixed {
                url: ping,
                body: None,
            },
        ),
        create: HttpOp::new(&http, Method::POST, create),
        create_door,
        wrap_door,
    })
}

/// Waits for the OpenBao dev server at `addr`, mounts transit, creates the `aes256-gcm96` key
/// and checks an encrypt/decrypt round trip.
pub async fn openbao(addr: &str, token: &str) -> Result<OpenBao, BenchError> {
    let base = Url::parse(addr).map_err(|e| BenchError::step(format!("URL {addr}"), e))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-vault-token"),
        header(token, "X-Vault-Token")?,
    );
    let http = client(None, headers)?;

    let health = join(&base, "/v1/sys/health")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let version = loop {
        match send(&http, Method::GET, health.clone(), None, "OpenBao health").await {
            Ok((status, body)) if status.is_success() => {
                break body
                    .get("version")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned();
            }
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok((status, body)) => {
                return Err(BenchError::Status {
                    step: "waiting for OpenBao to be ready".into(),
                    status,
                    body: body.to_string(),
                });
            }
            Err(e) => return Err(e),
        }
    };

    let step = "enabling the transit engine";
    let (status, body) = send(
        &http,
        Method::POST,
        join(&base, "/v1/sys/mounts/transit")?,
        Some(&json!({ "type": "transit" })),
        step,
    )
    .await?;
    let already = status == StatusCode::BAD_REQUEST && body.to_string().contains("already in use");
    if !status.is_success() && !already {
        return Err(BenchError::Status {
            step: step.into(),
            status,
            body: body.to_string(),
        });
    }
    let aes = json!({ "type": "aes256-gcm96" });
    expect_ok(
        &http,
        Method::POST,
        join(&base, &format!("/v1/transit/keys/{BAO_KEY}"))?,
        Some(&aes),
        "creating the transit key",
    )
    .await?;

    let plaintext_b64 = STANDARD.encode(PLAINTEXT);
    let encrypt_url = join(&base, &format!("/v1/transit/encrypt/{BAO_KEY}"))?;
    let decrypt_url = join(&base, &format!("/v1/transit/decrypt/{BAO_KEY}"))?;
    let encrypt_body = json!({ "plaintext": plaintext_b64 });
    let step = "transit encrypt probe";
    let encrypted = expect_ok(
        &http,
        Method::POST,
        encrypt_url.clone(),
        Some(&encrypt_body),
        step,
    )
    .await?;
    let ciphertext = string_at(&encrypted, "/data/ciphertext", step)?;
    let decrypt_body = json!({ "ciphertext": ciphertext });
    let step = "transit decrypt probe";
    let decrypted = expect_ok(
        &http,
        Method::POST,
        decrypt_url.clone(),
        Some(&decrypt_body),
        step,
    )
    .await?;
    if string_at(&decrypted, "/data/plaintext", step)? != plaintext_b64 {
        return Err(BenchError::Invalid {
            step: step.into(),
            detail: "decrypt did not return the encrypted plaintext".into(),
        });
    }

    let keys = join(&base, "/v1/transit/keys/")?;
    let aes_text = aes.to_string();
    let create = Shape::Unique(Box::new(move |n| {
        // `keys` ends with '/', so joining a plain name cannot fail; fall back to the collection
        // itself, which would surface as an error status rather than a panic.
        let url = keys.join(&format!("k{n}")).unwrap_or_else(|_| keys.clone());
        (url, Some(aes_text.clone()))
    }));
    Ok(OpenBao {
        encrypt: HttpOp::new(
            &http,
            Method::POST,
            Shape::Fixed {
                url: encrypt_url,
                body: Some(encrypt_body.to_string()),
            },
        ),
        decrypt: HttpOp::new(
            &http,
            Method::POST,
            Shape::Fixed {
                url: decrypt_url,
                body: Some(decrypt_body.to_string()),
            },
        ),
        create: HttpOp::new(&http, Method::POST, create),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_32_bytes_and_kp_body_is_a_collection() {
        assert_eq!(PLAINTEXT.len(), 32);
        let body = kp_create_body("k1");
        assert_eq!(body["metadata"]["collectionTotal"], 1);
        assert_eq!(body["resources"][0]["name"], "k1");
        assert_eq!(body["resources"][0]["extractable"], false);
    }

    #[test]
    fn only_a_bare_404_or_405_is_a_missing_route() {
        assert!(missing_route(StatusCode::NOT_FOUND, &Value::Null));
        assert!(missing_route(StatusCode::METHOD_NOT_ALLOWED, &Value::Null));
        assert!(!missing_route(
            StatusCode::NOT_FOUND,
            &json!({"resources": [{"errorMsg": "Not Found"}]})
        ));
        assert!(!missing_route(StatusCode::UNAUTHORIZED, &Value::Null));
    }
}
