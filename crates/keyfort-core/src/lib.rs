//! Keyfort's domain and services: the one API that every door (REST, KMIP, gRPC, CLI) calls.
//!
//! - [`Keyfort`] is the service handle: instances and their sealing state, keys and their
//!   lifecycle, principals, API keys and access tokens.
//! - [`lifecycle`] holds the single key state machine, mapped to Key Protect, KMIP and UKO states.
//! - [`instance`] holds the instance state machine (uninitialized → sealed ↔ unsealed) and the
//!   in-memory master keys of unsealed instances.
//! - [`auth`] holds principals, roles, API keys and signed access tokens.
//!
//! Domain types here are not wire types: each door converts at its edge.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod custodian;
pub mod grep11;
pub mod iam;
pub mod instance;
pub mod key;
pub mod keystores;
pub mod kmip_adapters;
pub mod kmip_clients;
pub mod kms;
mod kms_list;
pub mod kyok;
pub mod lifecycle;
pub mod maintenance;
pub mod objects;
pub mod wrap;

mod cache;
mod clock;
mod cluster;
mod dev;
mod error;
mod service;

pub use audit::{AuditEvent, AuditProblem, AuditQuery, AuditVerification};
pub use auth::{
    AccessToken, Action, ApiKeySecret, Caller, Principal, PrincipalKind, RequestInfo, Role,
    RoleGrant, Scope, TokenSigner,
};
pub use clock::{Clock, SystemClock, UnixMillis};
pub use cluster::{ClusterGuard, ClusterLocks};
pub use custodian::{
    Command, CustodianPublic, CustodianSecret, KeyPart, SignedCommand, UnsealSubmission,
};
pub use dev::{DevBootstrap, DevSetup};
pub use error::{AuthFailure, CoreError};
pub use iam::ApiKeyInfo;
pub use instance::{Instance, InstanceState, UnsealMethod};
pub use key::{
    Comparison, DateCondition, Key, KeyDate, KeyKind, KeyListing, KeyQuery, KeySort, KeySortField,
    KeyVersion, NewKey, SearchMode, SearchScope,
};
pub use kmip_adapters::{
    KmipAdapter, KmipAdapterRefusal, KmipCertificate, KmipObject, NewKmipAdapter, Page, Paging,
};
pub use kmip_clients::{KmipClient, KmipSession, certificate_fingerprint};
pub use kms::{
    EventAck, ImportToken, ImportedMaterial, InstancePolicy, InstancePolicyType, KeyPolicies,
    KeyPolicyUpdate, KeyRing, KmsRefusal, KmsTimings, PolicyStamp, Registration, RotationPolicy,
    SecureImport,
};
pub use kyok::{CommandOutcome, MasterKeyProtector, PartRejection, ResealProgress, UnsealStatus};
pub use lifecycle::{KeyState, Transition, Usage};
pub use maintenance::MaintenanceReport;
pub use service::{CoreConfig, Keyfort, new_id};
pub use wrap::{Unwrapped, Wrapped};

/// Result of a core operation.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
