//! One measured operation: an HTTP request to a server, or a raw SQLite write.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};

use crate::sqlite::RawSqlite;

/// An operation the load loop repeats.
pub enum Op {
    Http(HttpOp),
    Sqlite(RawSqlite),
    /// The same operation on several servers (nodes), each call on the next one in turn.
    RoundRobin(Vec<HttpOp>, AtomicU64),
}

impl Op {
    pub async fn call(&self) -> Result<(), OpError> {
        match self {
            Op::Http(op) => op.call().await,
            Op::Sqlite(op) => op.call().await,
            Op::RoundRobin(ops, next) => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                // usize fits u64 on every supported target; an empty list is never built.
                let i = usize::try_from(n % ops.len().max(1) as u64).unwrap_or(0);
                match ops.get(i) {
                    Some(op) => op.call().await,
                    None => Err(OpError::WriterGone),
                }
            }
        }
    }
}

/// How each request of an [`HttpOp`] is made.
pub enum Shape {
    /// The same URL and JSON body every time.
    Fixed { url: Url, body: Option<String> },
    /// A URL and JSON body built from a sequence number unique within the run (key creation).
    Unique(Box<dyn Fn(u64) -> (Url, Option<String>) + Send + Sync>),
}

/// A request to a server through a shared, pooled client (its default headers carry the
/// credentials). Any status other than 2xx is an error; the body is read to the end so the
/// connection goes back to the pool.
pub struct HttpOp {
    client: reqwest::Client,
    method: Method,
    shape: Shape,
    seq: AtomicU64,
}

impl HttpOp {
    pub fn new(client: &reqwest::Client, method: Method, shape: Shape) -> Self {
        Self {
            client: client.clone(),
            method,
            shape,
            seq: AtomicU64::new(0),
        }
    }

    async fn call(&self) -> Result<(), OpError> {
        let (url, body) = match &self.shape {
            Shape::Fixed { url, body } => (url.clone(), body.clone()),
            Shape::Unique(make) => make(self.seq.fetch_add(1, Ordering::Relaxed)),
        };
        let mut request = self.client.request(self.method.clone(), url);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(OpError::Http)?;
        let status = response.status();
        // Read the whole body either way: an unread body would close the connection.
        let body = response.bytes().await.map_err(OpError::Http)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(OpError::Status {
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            })
        }
    }
}

/// Why one measured request failed.
#[derive(Debug)]
pub enum OpError {
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
    Http(reqwest::Error),
    Sqlite(sqlx::Error),
    /// The group-commit writer task is gone.
    WriterGone,
}

impl OpError {
    /// A short label to count failures by.
    pub fn kind(&self) -> String {
        match self {
            OpError::Status { status, .. } => format!("HTTP {}", status.as_u16()),
            OpError::Http(e) if e.is_timeout() => "timeout".into(),
            OpError::Http(e) if e.is_connect() => "connect".into(),
            OpError::Http(_) => "transport".into(),
            OpError::Sqlite(_) => "sqlite".into(),
            OpError::WriterGone => "writer gone".into(),
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Status { status, body } => write!(f, "{status}: {body}"),
            OpError::Http(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
            OpError::Sqlite(e) => write!(f, "{e}"),
            OpError::WriterGone => f.write_str("the group-commit writer task stopped"),
        }
    }
}

impl std::error::Error for OpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpError::Http(e) => Some(e),
            OpError::Sqlite(e) => Some(e),
            OpError::Status { .. } | OpError::WriterGone => None,
        }
    }
}
