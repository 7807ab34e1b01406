//! The correlation id of every `/api/v2` request: the client's `Correlation-Id` or
//! `X-Correlation-ID`, else a fresh one, put on the request as `Correlation-Id` (for the
//! handlers, their errors and the audit trail) and echoed in the response's `Correlation-Id`.
//!
//! A layer of its own rather than `axum::middleware::from_fn`, which boxes the rest of the
//! router and its future for every request: this runs on every wrap and unwrap.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use tower::{Layer, Service};

use super::{CORRELATION_ID, MAX_CORRELATION_ID_LEN, X_CORRELATION_ID};

/// The layer: wraps the routes in [`CorrelateService`].
#[derive(Clone, Copy)]
pub(super) struct Correlate;

impl<S> Layer<S> for Correlate {
    type Service = CorrelateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorrelateService { inner }
    }
}

#[derive(Clone)]
pub(super) struct CorrelateService<S> {
    inner: S,
}

impl<S> Service<Request> for CorrelateService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Echo<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = of(&request);
        request.headers_mut().insert(CORRELATION_ID, id.clone());
        Echo {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The routes' answer, with the request's correlation id put on it.
    pub(super) struct Echo<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F> Future for Echo<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(CORRELATION_ID, id);
        }
        Poll::Ready(Ok(response))
    }
}

/// The client's correlation id when it gave a usable one, else a fresh one.
fn of(request: &Request) -> HeaderValue {
    let given = [CORRELATION_ID, X_CORRELATION_ID].iter().find_map(|h| {
        request
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= MAX_CORRELATION_ID_LEN)
            .and_then(|v| HeaderValue::from_str(v).ok())
    });
    given.unwrap_or_else(|| {
        keyfort_core::new_id()
            .ok()
            .and_then(|fresh| HeaderValue::from_str(&fresh).ok())
            .unwrap_or(HeaderValue::from_static("unavailable"))
    })
}
