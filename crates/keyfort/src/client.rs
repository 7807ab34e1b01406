//! The HTTPS client of the CLI: trusts `--ca-cert` (or the system roots), exchanges the API key
//! for an access token at `/identity/token`, then calls with `Authorization: Bearer`.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;
use zeroize::Zeroizing;

/// The IAM grant type for API keys (IBM Cloud IAM).
pub const APIKEY_GRANT_TYPE: &str = "urn:ibm:params:oauth:grant-type:apikey";
/// Where the CLI goes when neither `--addr` nor `KEYFORT_ADDR` is set (DESIGN §5).
pub const DEFAULT_ADDR: &str = "https://127.0.0.1:8443";
/// Longest error body quoted in a message.
const MAX_QUOTED_BODY: usize = 2000;

/// The longest a download may take in all ([`Client::download`]); other calls have a minute.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Connection options shared by every command that talks to a server.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Server URL
    #[arg(long, env = "KEYFORT_ADDR", global = true, default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// PEM file of the CA to trust instead of the system roots
    #[arg(long, env = "KEYFORT_CACERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// API key, exchanged for an access token
    #[arg(long, env = "KEYFORT_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
}

/// A connected client.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: Option<Zeroizing<String>>,
}

/// An HTTP answer: status and body (JSON when it parses, else a string).
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub body: Value,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Self, ClientError> {
        let base = Url::parse(&args.addr).map_err(|source| ClientError::Addr {
            addr: args.addr.clone(),
            source,
        })?;
        if !matches!(base.scheme(), "https" | "http") || base.cannot_be_a_base() {
            return Err(ClientError::AddrScheme {
                addr: args.addr.clone(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("keyfort-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &args.ca_cert {
            let pem = std::fs::read(path).map_err(|source| ClientError::ReadCa {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                ClientError::ParseCa {
                    path: path.clone(),
                    source,
                }
            })?;
            if certs.is_empty() {
                return Err(ClientError::EmptyCa { path: path.clone() });
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(ClientError::Build)?;
        Ok(Self {
            http,
            base,
            api_key: args.api_key.clone().map(Zeroizing::new),
        })
    }

    /// The URL of `segments` below the base address; each segment is percent-encoded, so an id
    /// cannot change the path.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `new` checked that the base can be a base, so this branch is always taken.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request without authentication; any status is returned.
    pub async fn get_unauthenticated(&self, segments: &[&str]) -> Result<Answer, ClientError> {
        let url = self.url(segments);
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|source| ClientError::Send {
                method: Method::GET,
                url: url.clone(),
                source,
            })?;
        answer(Method::GET, url, resp).await
    }

    /// A JSON request without authentication (custodian operations: the request carries its own
    /// signature); a non-2xx status is an error.
    pub async fn send_unauthenticated(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = self.url(segments);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|source| ClientError::Send {
            method: method.clone(),
            url: url.clone(),
            source,
        })?;
        success(answer(method, url, resp).await?)
    }

    /// Exchanges the API key for an access token; returns the token endpoint's JSON.
    pub async fn token(&self) -> Result<Value, ClientError> {
        let api_key = self.api_key.as_ref().ok_or(ClientError::NoApiKey)?;
        let url = self.url(&["identity", "token"]);
        let form = [
            ("grant_type", APIKEY_GRANT_TYPE),
            ("apikey", api_key.as_str()),
        ];
        let resp = self
            .http
            .post(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|source| ClientError::Send {
                method: Method::POST,
                url: url.clone(),
                source,
            })?;
        success(answer(Method::POST, url, resp).await?)
    }

    async fn bearer(&self) -> Result<Zeroizing<String>, ClientError> {
        let token = self.token().await?;
        token
            .get("access_token")
            .and_then(Value::as_str)
            .map(|t| Zeroizing::new(t.to_owned()))
            .ok_or(ClientError::NoAccessToken)
    }

    /// An authenticated call; a non-2xx status is an error.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        self.call_url(method, self.url(segments), body).await
    }

    /// [`Client::call`] with query parameters.
    pub async fn call_with_query(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.call_url(method, url, None).await
    }

    /// GETs `segments` with `query` and writes the answer's body to `out` as it arrives (a
    /// listing as long as the audit export), with no bound on the whole transfer's time; an
    /// error answer is read whole and returned as [`Client::call`] returns it. `Ok(Err(_))`:
    /// writing to `out` failed.
    pub async fn download(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        out: &mut dyn std::io::Write,
    ) -> Result<std::io::Result<()>, ClientError> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let token = self.bearer().await?;
        let failed = |source| ClientError::Send {
            method: Method::GET,
            url: url.clone(),
            source,
        };
        let mut resp = self
            .http
            .get(url.clone())
            .bearer_auth(token.as_str())
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(failed)?;
        if !resp.status().is_success() {
            success(answer(Method::GET, url.clone(), resp).await?)?;
            return Ok(Ok(()));
        }
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if let Err(e) = out.write_all(&chunk) {
                return Ok(Err(e));
            }
        }
        Ok(out.flush())
    }

    async fn call_url(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let token = self.bearer().await?;
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token.as_str())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|source| ClientError::Send {
            method: method.clone(),
            url: url.clone(),
            source,
        })?;
        success(answer(method, url, resp).await?)
    }
}

async fn answer(method: Method, url: Url, resp: reqwest::Response) -> Result<Answer, ClientError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|source| ClientError::Send {
        method,
        url,
        source,
    })?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Answer { status, body })
}

fn success(answer: Answer) -> Result<Value, ClientError> {
    if answer.status.is_success() {
        Ok(answer.body)
    } else {
        let mut body = match &answer.body {
            Value::String(s) => s.clone(),
            other => api_error_line(other).unwrap_or_else(|| other.to_string()),
        };
        if body.len() > MAX_QUOTED_BODY {
            let mut end = MAX_QUOTED_BODY;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
            body.push('…');
        }
        Err(ClientError::Status {
            status: answer.status,
            body,
        })
    }
}

/// `CODE: message` from the admin API's error shape (`{"error": {"code", "message",
/// "correlation_id"}}`); the correlation id is kept for internal errors, where it is what an
/// operator looks up in the server log.
fn api_error_line(body: &Value) -> Option<String> {
    let error = body.get("error")?;
    let code = error.get("code")?.as_str()?;
    let message = error.get("message")?.as_str()?;
    let mut line = format!("{code}: {message}");
    if code == "INTERNAL_ERROR"
        && let Some(id) = error.get("correlation_id").and_then(Value::as_str)
    {
        line.push_str(&format!(" (correlation id {id})"));
    }
    Some(line)
}

/// A command that talks to a server failed. Exit code 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("invalid server address {addr:?} (expected https://host:port)")]
    Addr {
        addr: String,
        #[source]
        source: url::ParseError,
    },
    #[error("invalid server address {addr:?}: expected https://host:port")]
    AddrScheme { addr: String },
    #[error("cannot read CA certificate {}", path.display())]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse CA certificate {}", path.display())]
    ParseCa {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("no certificate found in {}", path.display())]
    EmptyCa { path: PathBuf },
    #[error("cannot build the HTTPS client")]
    Build(#[source] reqwest::Error),
    #[error("no API key: pass --api-key or set KEYFORT_API_KEY")]
    NoApiKey,
    #[error("the token endpoint answered without an access_token")]
    NoAccessToken,
    #[error("{method} {url} failed")]
    Send {
        method: Method,
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("server answered {status}: {body}")]
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
    #[error(
        "no instance given and the server has {count} instances: pass --instance or set KEYFORT_INSTANCE"
    )]
    AmbiguousInstance { count: usize },
    #[error("unexpected answer from the server: {what}")]
    Unexpected { what: &'static str },
    #[error("{endpoint} answered {status}")]
    Unhealthy {
        endpoint: &'static str,
        status: reqwest::StatusCode,
    },
    #[error("key material file {} is larger than {max} bytes", path.display())]
    PayloadTooLarge { path: PathBuf, max: u64 },
    #[error("key material file {} is empty", path.display())]
    EmptyPayload { path: PathBuf },
    #[error("cannot read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(addr: &str) -> Result<Client, ClientError> {
        Client::new(&ClientArgs {
            addr: addr.into(),
            ca_cert: None,
            api_key: None,
        })
    }

    #[test]
    fn url_segments_are_encoded() {
        let c = client("https://127.0.0.1:8443").unwrap_or_else(|e| panic!("{e}"));
        let url = c.url(&["api", "keyfort", "v1", "instances", "../x y"]);
        assert_eq!(
            url.as_str(),
            "https://127.0.0.1:8443/api/keyfort/v1/instances/..%2Fx%20y"
        );
        let c = client("https://h:1/prefix/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.url(&["healthz"]).as_str(), "https://h:1/prefix/healthz");
    }

    #[test]
    fn bad_addresses_are_rejected() {
        assert!(matches!(
            client("ftp://h:1"),
            Err(ClientError::AddrScheme { .. })
        ));
        assert!(matches!(
            client("127.0.0.1:8443"),
            Err(ClientError::Addr { .. })
        ));
        assert!(matches!(client("not a url"), Err(ClientError::Addr { .. })));
    }

    #[test]
    fn error_status_is_quoted_and_bounded() {
        let err = success(Answer {
            status: reqwest::StatusCode::NOT_FOUND,
            body: Value::String("é".repeat(MAX_QUOTED_BODY)),
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.starts_with("server answered 404 Not Found: é"), "{err}");
        assert!(err.len() < MAX_QUOTED_BODY + 64);
    }

    #[test]
    fn api_errors_read_as_code_and_message() {
        let err = success(Answer {
            status: reqwest::StatusCode::BAD_REQUEST,
            body: serde_json::json!({"error": {"code": "PART_REJECTED",
                "message": "key part refused", "correlation_id": "c1"}}),
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert_eq!(
            err,
            "server answered 400 Bad Request: PART_REJECTED: key part refused"
        );
        let line = api_error_line(&serde_json::json!({"error": {"code": "INTERNAL_ERROR",
            "message": "internal error", "correlation_id": "c2"}}));
        assert_eq!(
            line.as_deref(),
            Some("INTERNAL_ERROR: internal error (correlation id c2)")
        );
    }
}
