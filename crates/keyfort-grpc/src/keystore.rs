//! The `keyfort.keystore.v1.Keystore` service (`proto/keystore.proto`): persistent token objects
//! for PKCS#11 libraries, next to the crypto service, with the same authentication. Each rpc is
//! one call of `keyfort_core::keystores`; failures go through the crate's one error mapping.

use std::sync::Arc;

use keyfort_core::keystores::{Keystore, ObjectUpdate, TokenAttribute, TokenObject};
use keyfort_core::{AuthFailure, Caller, CoreError, Keyfort};
use tonic::{Request, Response, Status};

use crate::ck::rv;
use crate::error::{Error, Result, ck};
use crate::keystore_proto::{self as pb, keystore_server};

/// The keystore service.
#[derive(Clone, Debug)]
pub struct KeystoreService {
    core: Keyfort,
}

impl KeystoreService {
    pub fn new(core: Keyfort) -> KeystoreService {
        KeystoreService { core }
    }

    /// The caller (`authorization: Bearer <token>`, as for the crypto service) and the instance
    /// it names (`bluemix-instance`), if any.
    async fn caller<T>(&self, req: &Request<T>) -> Result<(Arc<Caller>, Option<String>)> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(CoreError::Unauthenticated(AuthFailure::Missing))?;
        let caller = self.core.authenticate(token.trim()).await?;
        let instance = req
            .metadata()
            .get("bluemix-instance")
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| ck(rv::CKR_ARGUMENTS_BAD, "bluemix-instance is not text"))
            })
            .transpose()?;
        Ok((caller, instance))
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

fn ok<T>(r: Result<T>) -> Reply<T> {
    r.map(Response::new).map_err(Error::into_status)
}

fn attributes_in(attrs: Vec<pb::Attribute>) -> Vec<TokenAttribute> {
    attrs
        .into_iter()
        .map(|a| TokenAttribute {
            attr_type: a.r#type,
            value: a.value,
        })
        .collect()
}

fn keystore_out(k: Keystore) -> pb::KeystoreInfo {
    pb::KeystoreInfo {
        id: k.id,
        name: k.name,
        created_at_ms: k.created_at,
        created_by: k.created_by,
        object_count: k.object_count,
    }
}

fn object_out(o: TokenObject) -> pb::TokenObject {
    pb::TokenObject {
        id: o.id,
        keystore_id: o.keystore_id,
        blob: o.blob,
        attributes: o
            .attributes
            .into_iter()
            .map(|a| pb::Attribute {
                r#type: a.attr_type,
                value: a.value,
            })
            .collect(),
        row_version: o.row_version,
        created_at_ms: o.created_at,
        updated_at_ms: o.updated_at,
    }
}

#[tonic::async_trait]
impl keystore_server::Keystore for KeystoreService {
    async fn create_keystore(
        &self,
        req: Request<pb::CreateKeystoreRequest>,
    ) -> Reply<pb::CreateKeystoreResponse> {
        ok(async {
            let (caller, instance) = self.caller(&req).await?;
            let k = self
                .core
                .create_keystore(&caller, instance.as_deref(), &req.get_ref().name)
                .await?;
            Ok(pb::CreateKeystoreResponse {
                keystore: Some(keystore_out(k)),
            })
        }
        .await)
    }

    async fn list_keystores(
        &self,
        req: Request<pb::ListKeystoresRequest>,
    ) -> Reply<pb::ListKeystoresResponse> {
        ok(async {
            let (caller, instance) = self.caller(&req).await?;
            let all = self.core.keystores(&caller, instance.as_deref()).await?;
            Ok(pb::ListKeystoresResponse {
                keystores: all.into_iter().map(keystore_out).collect(),
            })
        }
        .await)
    }

    async fn delete_keystore(
        &self,
        req: Request<pb::DeleteKeystoreRequest>,
    ) -> Reply<pb::DeleteKeystoreResponse> {
        ok(async {
            let (caller, instance) = self.caller(&req).await?;
            let r = req.get_ref();
            self.core
                .delete_keystore(&caller, instance.as_deref(), &r.keystore_id, r.force)
                .await?;
            Ok(pb::DeleteKeystoreResponse {})
        }
        .await)
    }

    async fn store_object(
        &self,
        req: Request<pb::StoreObjectRequest>,
    ) -> Reply<pb::StoreObjectResponse> {
        ok(async {
            let (caller, instance) = self.caller(&req).await?;
            let r = req.into_inner();
            let o = self
                .core
                .store_token_object(
                    &caller,
                    instance.as_deref(),
                    &r.keystore_id,
                    r.blob,
                    attributes_in(r.attributes),
                )
                .await?;
            Ok(pb::StoreObjectResponse {
                object: Some(object_out(o)),
            })
        }
        .await)
    }

    async fn get_object(&self, req: Request<pb::GetObjectRequest>) -> Reply<pb::GetObjectResponse> {
        ok(async {
            let (caller, instance) = self.caller(&req).await?;
            let r = req.get_ref();
            let o = self
                .core
                .token_object(&caller, instance.as_deref(), &r.keystore_id, &r.id)
                .await?;
            Ok(pb::GetObjectResponse {
                object: Some(object_out(o)),
            })
        }
        .await)
    }

    async fn find_objects(
        &self,
        req: Request<pb::FindObjectsRequest>,
    ) -> Reply<pb::FindObjectsResponse> {
        ok(async {
            let (caller, instance) = self.caller(&req).await?;
            let r = req.into_inner();
            let cursor = (!r.cursor.is_empty()).then_some(r.cursor.as_str());
            let page = self
                .core
                .find_token_objects(
                    &caller,
                    instance.as_deref(),
                    &r.keystore_id,
                    attributes_in(r.template),
                    r.limit,
                    cursor,
                )
                .await?;
            Ok(pb::FindObjectsResponse {
                objects: page.objects.into_iter().map(object_out).collect(),
                next_cursor: page.next_cursor.unwrap_or_default(),
            })
        }
        .await)
    }

    async fn update_object(
        &self,
        req: Request<pb::UpdateObjectRequest>,
    ) -> Reply<pb::UpdateObjectResponse> {
        ok(async {
            let (caller, instance) = self.caller(&req).await?;
            let r = req.into_inner();
            let update = ObjectUpdate {
                row_version: r.row_version,
                blob: r.blob,
                set: attributes_in(r.set),
                remove: r.remove,
            };
            let o = self
                .core
                .update_token_object(&caller, instance.as_deref(), &r.keystore_id, &r.id, update)
                .await?;
            Ok(pb::UpdateObjectResponse {
                object: Some(object_out(o)),
            })
        }
        .await)
    }

    async fn delete_object(
        &self,
        req: Request<pb::DeleteObjectRequest>,
    ) -> Reply<pb::DeleteObjectResponse> {
        ok(async {
            let (caller, instance) = self.caller(&req).await?;
            let r = req.get_ref();
            let version = (r.row_version != 0).then_some(r.row_version);
            self.core
                .delete_token_object(&caller, instance.as_deref(), &r.keystore_id, &r.id, version)
                .await?;
            Ok(pb::DeleteObjectResponse {})
        }
        .await)
    }
}
