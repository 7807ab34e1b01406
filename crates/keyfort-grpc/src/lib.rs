//! Keyfort's gRPC door: the GREP11-compatible crypto service (`grep11.Crypto`, grep11 spec).
//!
//! Keys travel as blobs sealed under the instance master key ([`blob`]); multi-part operations
//! carry their state in sealed state blobs ([`state`]); the server stores nothing for them.
//! Every failure is a gRPC status with one `Grep11Error` detail ([`error`]).
//!
//! Next to it, the keystore service (`keyfort.keystore.v1.Keystore`, [`keystore`]) stores
//! persistent token objects for PKCS#11 libraries.
#![forbid(unsafe_code)]

pub mod attrs;
pub mod blob;
pub mod ck;
pub mod coalesce;
#[doc(hidden)]
pub mod der;
pub mod error;
pub mod keystore;
pub mod mech;
mod ops;
#[doc(hidden)]
pub mod service;
pub mod state;

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod proto {
    include!("generated/grep11.rs");
}

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod keystore_proto {
    include!("generated/keyfort.keystore.v1.rs");
}

pub use error::grep11_error;
pub use service::CryptoService;

/// Largest request message accepted.
pub const MAX_MESSAGE: usize = 2 * 1024 * 1024;

/// The gRPC services (`grep11.Crypto`, `keyfort.keystore.v1.Keystore`) as an axum router, for
/// the binary's TLS accept loop.
pub fn router(core: keyfort_core::Keyfort) -> axum::Router {
    let keystore = keystore_proto::keystore_server::KeystoreServer::new(
        keystore::KeystoreService::new(core.clone()),
    )
    .max_decoding_message_size(MAX_MESSAGE);
    let crypto = proto::crypto_server::CryptoServer::new(CryptoService::new(core))
        .max_decoding_message_size(MAX_MESSAGE);
    tonic::service::Routes::new(crypto)
        .add_service(keystore)
        .prepare()
        .into_axum_router()
}
