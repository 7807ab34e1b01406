//! Writes, each a function taking the connection inside the caller's transaction. Constraint
//! violations are told apart by the constraint's name (see the migration), so no write reads
//! first to find out whether a row exists, except where the trait asks for a precise error the
//! constraints cannot give (a missing parent of a delete, a stale row version).

use sqlx::PgConnection;

use super::Touched;
use super::audit::{self, ChainHeads};
use super::rows::{already_exists, constraint, json_strings, not_found, stale};
use crate::{
    ApiKeyRecord, Applied, AuditEventInput, InstanceRecord, InstanceSecretRecord, KeyRecord,
    KeyRingRecord, KeyVersionRecord, PrincipalRecord, RegistrationRecord, Result, StoreError,
    Write, WriteBatch,
};

type Conn = PgConnection;

/// Applies every write of `batch` in order on `conn`; the caller commits or rolls back.
pub(super) async fn apply_in(
    conn: &mut Conn,
    batch: &WriteBatch,
    touched: &mut Touched,
) -> Result<Vec<Applied>> {
    let mut heads = ChainHeads::new();
    let mut applied = Vec::with_capacity(batch.writes.len());
    for write in &batch.writes {
        applied.push(apply_write(conn, write, &mut heads, touched).await?);
    }
    Ok(applied)
}

async fn apply_write(
    conn: &mut Conn,
    write: &Write,
    heads: &mut ChainHeads,
    touched: &mut Touched,
) -> Result<Applied> {
    Ok(match write {
        Write::InsertKey { key, first_version } => {
            insert_key_in(conn, key, first_version).await?;
            touched.key(&key.instance_id, &key.id);
            Applied::Done
        }
        Write::UpdateKey(key) => {
            let v = update_key_in(conn, key).await?;
            touched.key(&key.instance_id, &key.id);
            Applied::RowVersion(v)
        }
        Write::AddKeyVersion { key, version } => {
            let v = update_key_in(conn, key).await?;
            insert_version(conn, version).await?;
            touched.key(&key.instance_id, &key.id);
            Applied::RowVersion(v)
        }
        Write::PurgeKey {
            instance_id,
            key_id,
        } => {
            purge_key_in(conn, instance_id, key_id).await?;
            touched.key(instance_id, key_id);
            Applied::Done
        }
        Write::InsertKeyRing(ring) => {
            insert_key_ring_in(conn, ring).await?;
            Applied::Done
        }
        Write::DeleteKeyRing { instance_id, id } => {
            delete_key_ring_in(conn, instance_id, id).await?;
            Applied::Done
        }
        Write::UpdateInstance(instance) => {
            let v = update_instance_in(conn, instance).await?;
            touched.instance(&instance.id);
            Applied::RowVersion(v)
        }
        Write::PutInstanceSecret(secret) => {
            upsert_secret(conn, secret).await?;
            touched.instance(&secret.instance_id);
            Applied::Done
        }
        Write::DeleteInstanceSecret { instance_id, name } => {
            sqlx::query("DELETE FROM instance_secrets WHERE instance_id = $1 AND name = $2")
                .bind(instance_id)
                .bind(name)
                .execute(&mut *conn)
                .await?;
            touched.instance(instance_id);
            Applied::Done
        }
        Write::PutRegistration(r) => {
            put_registration_in(conn, r).await?;
            Applied::Done
        }
        Write::DeleteRegistration {
            instance_id,
            key_id,
            resource_crn,
        } => {
            let done = sqlx::query(
                "DELETE FROM registrations \
                 WHERE instance_id = $1 AND key_id = $2 AND resource_crn = $3",
            )
            .bind(instance_id)
            .bind(key_id)
            .bind(resource_crn)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 0 {
                return Err(not_found("registration", resource_crn));
            }
            Applied::Done
        }
        Write::InsertKmipAdapter(adapter) => {
            super::kmip_adapters::insert_adapter_in(conn, adapter).await?;
            Applied::Done
        }
        Write::DeleteKmipAdapter { instance_id, id } => {
            super::kmip_adapters::delete_adapter_in(conn, instance_id, id).await?;
            Applied::Done
        }
        Write::InsertKmipCertificate(certificate) => {
            super::kmip_adapters::insert_certificate_in(conn, certificate).await?;
            Applied::Done
        }
        Write::DeleteKmipCertificate {
            instance_id,
            adapter_id,
            id,
        } => {
            super::kmip_adapters::delete_certificate_in(conn, instance_id, adapter_id, id).await?;
            Applied::Done
        }
        Write::AppendAudit(event) => Applied::Audit(audit::append_in(conn, event, heads).await?),
        Write::Keystore(w) => super::keystores::apply_in(conn, w).await?,
    })
}

// ---- instances ------------------------------------------------------------------------------

pub(super) async fn insert_instance_in(conn: &mut Conn, i: &InstanceRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO instances (id, name, state, mk_version, unseal_method, mk_check_value, \
         unseal_config, created_at, updated_at, row_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&i.id)
    .bind(&i.name)
    .bind(&i.state)
    .bind(i.mk_version)
    .bind(&i.unseal_method)
    .bind(&i.mk_check_value)
    .bind(&i.unseal_config)
    .bind(i.created_at)
    .bind(i.updated_at)
    .bind(i.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("pk_instances") => already_exists("instance", &i.id),
        Some("uq_instances_name") => already_exists("instance name", &i.name),
        _ => e.into(),
    })?;
    Ok(())
}

async fn update_instance_in(conn: &mut Conn, i: &InstanceRecord) -> Result<i64> {
    let done = sqlx::query(
        "UPDATE instances SET name = $1, state = $2, mk_version = $3, unseal_method = $4, \
         mk_check_value = $5, unseal_config = $6, updated_at = $7, \
         row_version = row_version + 1 WHERE id = $8 AND row_version = $9",
    )
    .bind(&i.name)
    .bind(&i.state)
    .bind(i.mk_version)
    .bind(&i.unseal_method)
    .bind(&i.mk_check_value)
    .bind(&i.unseal_config)
    .bind(i.updated_at)
    .bind(&i.id)
    .bind(i.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("uq_instances_name") => already_exists("instance name", &i.name),
        _ => e.into(),
    })?;
    if done.rows_affected() == 0 {
        let found = exists(conn, "SELECT 1 FROM instances WHERE id = $1", &[&i.id]).await?;
        return Err(stale("instance", &i.id, found, i.row_version));
    }
    Ok(i.row_version + 1)
}

async fn upsert_secret(conn: &mut Conn, s: &InstanceSecretRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO instance_secrets (instance_id, name, sealed, mk_version, created_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (instance_id, name) DO UPDATE SET sealed = excluded.sealed, \
         mk_version = excluded.mk_version, created_at = excluded.created_at",
    )
    .bind(&s.instance_id)
    .bind(&s.name)
    .bind(&s.sealed)
    .bind(s.mk_version)
    .bind(s.created_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("fk_instance_secrets_instance") => not_found("instance", &s.instance_id),
        _ => e.into(),
    })?;
    Ok(())
}

pub(super) async fn zeroize_in(
    conn: &mut Conn,
    i: &InstanceRecord,
    event: &AuditEventInput,
    touched: &mut Touched,
) -> Result<i64> {
    // First, so that a stale or missing instance deletes nothing (the transaction rolls back).
    let row_version = update_instance_in(conn, i).await?;
    for sql in [
        "DELETE FROM keystore_attributes WHERE instance_id = $1",
        "DELETE FROM keystore_objects WHERE instance_id = $1",
        "DELETE FROM keystores WHERE instance_id = $1",
        "DELETE FROM registrations WHERE instance_id = $1",
        "DELETE FROM key_aliases WHERE instance_id = $1",
        "DELETE FROM key_versions WHERE instance_id = $1",
        "DELETE FROM keys WHERE instance_id = $1",
        "DELETE FROM key_rings WHERE instance_id = $1 AND id <> 'default'",
        "DELETE FROM instance_secrets WHERE instance_id = $1",
        "DELETE FROM kmip_certificates WHERE instance_id = $1",
        "DELETE FROM kmip_adapters WHERE instance_id = $1",
    ] {
        sqlx::query(sql).bind(&i.id).execute(&mut *conn).await?;
    }
    audit::append_in(conn, event, &mut ChainHeads::new()).await?;
    touched.instance(&i.id);
    Ok(row_version)
}

pub(super) async fn use_nonce_in(
    conn: &mut Conn,
    instance_id: &str,
    nonce: &str,
    expires_at: i64,
    now: i64,
) -> Result<()> {
    // Insert before purging: a replayed nonce is caught even if it has expired meanwhile.
    sqlx::query("INSERT INTO command_nonces (instance_id, nonce, expires_at) VALUES ($1, $2, $3)")
        .bind(instance_id)
        .bind(nonce)
        .bind(expires_at)
        .execute(&mut *conn)
        .await
        .map_err(|e| match constraint(&e) {
            Some("pk_command_nonces") => already_exists("command nonce", nonce),
            _ => e.into(),
        })?;
    sqlx::query("DELETE FROM command_nonces WHERE expires_at < $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn set_policies_in(
    conn: &mut Conn,
    instance_id: &str,
    policies: &str,
    touched: &mut Touched,
) -> Result<()> {
    let done = sqlx::query("UPDATE instances SET policies = $1 WHERE id = $2")
        .bind(policies)
        .bind(instance_id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(not_found("instance", instance_id));
    }
    touched.instance(instance_id);
    Ok(())
}

// ---- key rings ------------------------------------------------------------------------------

async fn insert_key_ring_in(conn: &mut Conn, r: &KeyRingRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO key_rings (instance_id, id, created_at, created_by) VALUES ($1, $2, $3, $4)",
    )
    .bind(&r.instance_id)
    .bind(&r.id)
    .bind(r.created_at)
    .bind(&r.created_by)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("pk_key_rings") => already_exists("key ring", &r.id),
        Some("fk_key_rings_instance") => not_found("instance", &r.instance_id),
        _ => e.into(),
    })?;
    Ok(())
}

async fn delete_key_ring_in(conn: &mut Conn, instance_id: &str, id: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM key_rings WHERE instance_id = $1 AND id = $2")
        .bind(instance_id)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(|e| match constraint(&e) {
            // A key (in any state) still names the ring.
            Some("fk_keys_ring") => in_use_error(id),
            _ => e.into(),
        })?;
    if done.rows_affected() == 0 {
        return Err(not_found("key ring", id));
    }
    Ok(())
}

fn in_use_error(id: &str) -> StoreError {
    StoreError::InUse {
        what: "key ring",
        id: id.to_owned(),
    }
}

// ---- keys -----------------------------------------------------------------------------------

async fn insert_key_in(conn: &mut Conn, key: &KeyRecord, first: &KeyVersionRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO keys (instance_id, id, key_ring_id, name, description, tags, object_type, \
         algorithm, bit_length, extractable, imported, state, created_at, created_by, updated_at, \
         activation_at, expires_at, deactivated_at, deleted_at, deleted_by, last_rotated_at, \
         current_version_id, attributes, row_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24)",
    )
    .bind(&key.instance_id)
    .bind(&key.id)
    .bind(&key.key_ring_id)
    .bind(&key.name)
    .bind(&key.description)
    .bind(json_strings(&key.tags))
    .bind(&key.object_type)
    .bind(&key.algorithm)
    .bind(key.bit_length)
    .bind(key.extractable)
    .bind(key.imported)
    .bind(key.state)
    .bind(key.created_at)
    .bind(&key.created_by)
    .bind(key.updated_at)
    .bind(key.activation_at)
    .bind(key.expires_at)
    .bind(key.deactivated_at)
    .bind(key.deleted_at)
    .bind(&key.deleted_by)
    .bind(key.last_rotated_at)
    .bind(&key.current_version_id)
    .bind(&key.attributes)
    .bind(key.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("pk_keys") => already_exists("key", &key.id),
        Some("fk_keys_ring") => not_found("key ring", &key.key_ring_id),
        _ => e.into(),
    })?;
    insert_aliases(conn, key).await?;
    insert_version(conn, first).await
}

async fn update_key_in(conn: &mut Conn, key: &KeyRecord) -> Result<i64> {
    let done = sqlx::query(
        "UPDATE keys SET key_ring_id = $1, name = $2, description = $3, tags = $4, \
         extractable = $5, state = $6, updated_at = $7, activation_at = $8, expires_at = $9, \
         deactivated_at = $10, deleted_at = $11, deleted_by = $12, last_rotated_at = $13, \
         current_version_id = $14, attributes = $15, row_version = row_version + 1 \
         WHERE instance_id = $16 AND id = $17 AND row_version = $18",
    )
    .bind(&key.key_ring_id)
    .bind(&key.name)
    .bind(&key.description)
    .bind(json_strings(&key.tags))
    .bind(key.extractable)
    .bind(key.state)
    .bind(key.updated_at)
    .bind(key.activation_at)
    .bind(key.expires_at)
    .bind(key.deactivated_at)
    .bind(key.deleted_at)
    .bind(&key.deleted_by)
    .bind(key.last_rotated_at)
    .bind(&key.current_version_id)
    .bind(&key.attributes)
    .bind(&key.instance_id)
    .bind(&key.id)
    .bind(key.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("fk_keys_ring") => not_found("key ring", &key.key_ring_id),
        _ => e.into(),
    })?;
    if done.rows_affected() == 0 {
        let found = exists(
            conn,
            "SELECT 1 FROM keys WHERE instance_id = $1 AND id = $2",
            &[&key.instance_id, &key.id],
        )
        .await?;
        return Err(stale("key", &key.id, found, key.row_version));
    }
    sqlx::query("DELETE FROM key_aliases WHERE instance_id = $1 AND key_id = $2")
        .bind(&key.instance_id)
        .bind(&key.id)
        .execute(&mut *conn)
        .await?;
    insert_aliases(conn, key).await?;
    Ok(key.row_version + 1)
}

async fn insert_aliases(conn: &mut Conn, key: &KeyRecord) -> Result<()> {
    if key.aliases.is_empty() {
        return Ok(());
    }
    // One statement for every alias, positions in the given order.
    sqlx::query(
        "INSERT INTO key_aliases (instance_id, key_id, position, alias) \
         SELECT $1, $2, a.ord - 1, a.alias FROM unnest($3::text[]) WITH ORDINALITY AS a(alias, ord)",
    )
    .bind(&key.instance_id)
    .bind(&key.id)
    .bind(&key.aliases)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("uq_key_aliases") | Some("pk_key_aliases") => {
            let alias = taken_alias(&e, &key.aliases);
            already_exists("key alias", alias)
        }
        _ => e.into(),
    })?;
    Ok(())
}

/// Which alias a `uq_key_aliases` violation is about: the server's detail names the key
/// (`Key (instance_id, alias)=(…, <alias>) already exists.`); the first alias found there, or the
/// first alias of the key when the detail is unavailable.
fn taken_alias<'a>(e: &sqlx::Error, aliases: &'a [String]) -> &'a str {
    let detail = match e {
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail().map(str::to_owned)),
        _ => None,
    };
    let first = aliases.first().map_or("", String::as_str);
    match detail {
        Some(detail) => aliases
            .iter()
            .find(|a| detail.ends_with(&format!(", {a}) already exists.")))
            .map_or(first, String::as_str),
        None => first,
    }
}

async fn insert_version(conn: &mut Conn, v: &KeyVersionRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO key_versions (instance_id, key_id, id, seq, sealed, mk_version, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&v.instance_id)
    .bind(&v.key_id)
    .bind(&v.id)
    .bind(v.seq)
    .bind(&v.sealed)
    .bind(v.mk_version)
    .bind(v.created_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("pk_key_versions" | "uq_key_versions_seq") => already_exists("key version", &v.id),
        Some("fk_key_versions_key") => not_found("key", &v.key_id),
        _ => e.into(),
    })?;
    Ok(())
}

async fn purge_key_in(conn: &mut Conn, instance_id: &str, id: &str) -> Result<()> {
    // Children before parents; the key's row last tells whether it existed.
    for sql in [
        "DELETE FROM registrations WHERE instance_id = $1 AND key_id = $2",
        "DELETE FROM key_aliases WHERE instance_id = $1 AND key_id = $2",
        "DELETE FROM key_versions WHERE instance_id = $1 AND key_id = $2",
    ] {
        sqlx::query(sql)
            .bind(instance_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    let done = sqlx::query("DELETE FROM keys WHERE instance_id = $1 AND id = $2")
        .bind(instance_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(not_found("key", id));
    }
    Ok(())
}

pub(super) async fn reseal_in(
    conn: &mut Conn,
    v: &KeyVersionRecord,
    expected_mk_version: i64,
    touched: &mut Touched,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE key_versions SET sealed = $1, mk_version = $2 \
         WHERE instance_id = $3 AND key_id = $4 AND id = $5 AND mk_version = $6",
    )
    .bind(&v.sealed)
    .bind(v.mk_version)
    .bind(&v.instance_id)
    .bind(&v.key_id)
    .bind(&v.id)
    .bind(expected_mk_version)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        let found = exists(
            conn,
            "SELECT 1 FROM key_versions WHERE instance_id = $1 AND key_id = $2 AND id = $3",
            &[&v.instance_id, &v.key_id, &v.id],
        )
        .await?;
        return Err(stale("key version", &v.id, found, expected_mk_version));
    }
    touched.key(&v.instance_id, &v.key_id);
    Ok(())
}

// ---- registrations --------------------------------------------------------------------------

async fn put_registration_in(conn: &mut Conn, r: &RegistrationRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO registrations (instance_id, key_id, resource_crn, description, \
         registration_metadata, prevent_key_deletion, key_version_id, created_by, created_at, \
         updated_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (instance_id, key_id, resource_crn) DO UPDATE SET \
         description = excluded.description, \
         registration_metadata = excluded.registration_metadata, \
         prevent_key_deletion = excluded.prevent_key_deletion, \
         key_version_id = excluded.key_version_id, created_by = excluded.created_by, \
         created_at = excluded.created_at, updated_by = excluded.updated_by, \
         updated_at = excluded.updated_at",
    )
    .bind(&r.instance_id)
    .bind(&r.key_id)
    .bind(&r.resource_crn)
    .bind(&r.description)
    .bind(&r.registration_metadata)
    .bind(r.prevent_key_deletion)
    .bind(&r.key_version_id)
    .bind(&r.created_by)
    .bind(r.created_at)
    .bind(&r.updated_by)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("fk_registrations_key") => not_found("key", &r.key_id),
        _ => e.into(),
    })?;
    Ok(())
}

// ---- principals and API keys ----------------------------------------------------------------

pub(super) async fn insert_principal_in(conn: &mut Conn, p: &PrincipalRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO principals (id, instance_id, name, kind, roles, disabled, created_at, \
         updated_at, row_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&p.id)
    .bind(&p.instance_id)
    .bind(&p.name)
    .bind(&p.kind)
    .bind(&p.roles)
    .bind(p.disabled)
    .bind(p.created_at)
    .bind(p.updated_at)
    .bind(p.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("pk_principals") => already_exists("principal", &p.id),
        Some("uq_principals_name") => already_exists("principal name", &p.name),
        Some("fk_principals_instance") => {
            not_found("instance", p.instance_id.as_deref().unwrap_or_default())
        }
        _ => e.into(),
    })?;
    Ok(())
}

pub(super) async fn update_principal_in(
    conn: &mut Conn,
    p: &PrincipalRecord,
    touched: &mut Touched,
) -> Result<i64> {
    let done = sqlx::query(
        "UPDATE principals SET name = $1, roles = $2, disabled = $3, updated_at = $4, \
         row_version = row_version + 1 WHERE id = $5 AND row_version = $6",
    )
    .bind(&p.name)
    .bind(&p.roles)
    .bind(p.disabled)
    .bind(p.updated_at)
    .bind(&p.id)
    .bind(p.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("uq_principals_name") => already_exists("principal name", &p.name),
        _ => e.into(),
    })?;
    if done.rows_affected() == 0 {
        let found = exists(conn, "SELECT 1 FROM principals WHERE id = $1", &[&p.id]).await?;
        return Err(stale("principal", &p.id, found, p.row_version));
    }
    touched.principals();
    Ok(p.row_version + 1)
}

pub(super) async fn insert_api_key_in(conn: &mut Conn, k: &ApiKeyRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, principal_id, name, hash, created_at, expires_at, revoked_at, \
         row_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&k.id)
    .bind(&k.principal_id)
    .bind(&k.name)
    .bind(&k.hash)
    .bind(k.created_at)
    .bind(k.expires_at)
    .bind(k.revoked_at)
    .bind(k.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("pk_api_keys") => already_exists("api key", &k.id),
        // The hash itself stays out of the error.
        Some("uq_api_keys_hash") => already_exists("api key hash", &k.id),
        Some("fk_api_keys_principal") => not_found("principal", &k.principal_id),
        _ => e.into(),
    })?;
    Ok(())
}

pub(super) async fn update_api_key_in(
    conn: &mut Conn,
    k: &ApiKeyRecord,
    touched: &mut Touched,
) -> Result<i64> {
    let done = sqlx::query(
        "UPDATE api_keys SET name = $1, expires_at = $2, revoked_at = $3, \
         row_version = row_version + 1 WHERE id = $4 AND row_version = $5",
    )
    .bind(&k.name)
    .bind(k.expires_at)
    .bind(k.revoked_at)
    .bind(&k.id)
    .bind(k.row_version)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        let found = exists(conn, "SELECT 1 FROM api_keys WHERE id = $1", &[&k.id]).await?;
        return Err(stale("api key", &k.id, found, k.row_version));
    }
    touched.principals();
    Ok(k.row_version + 1)
}

/// Whether `sql` (a `SELECT 1 ... WHERE <columns> = $1, $2, ...`) finds a row.
async fn exists(conn: &mut Conn, sql: &'static str, args: &[&str]) -> Result<bool> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    Ok(q.fetch_optional(&mut *conn).await?.is_some())
}
