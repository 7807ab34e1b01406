//! Bearer-token authentication of HTTP requests, through the core's shared verifier.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use keyfort_core::{AuthFailure, Caller, CoreError, Keyfort};

use crate::error::ApiError;

/// The authenticated caller of a request (`Authorization: Bearer <access token>`).
pub(crate) struct Authenticated(pub Arc<Caller>);

impl FromRequestParts<Keyfort> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        core: &Keyfort,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or(CoreError::Unauthenticated(AuthFailure::Missing))?;
        Ok(Authenticated(core.authenticate(token).await?))
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
pub(crate) fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
