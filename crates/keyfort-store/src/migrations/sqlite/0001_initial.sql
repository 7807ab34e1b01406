-- Keyfort SQLite schema, version 1.
--
-- Conventions (shared with the PostgreSQL schema):
-- * every constraint is named: pk_<table>, fk_<table>_<target>, uq_<table>[_<what>], ck_<table>_<what>;
-- * times are Unix milliseconds (INTEGER), booleans are 0/1 INTEGERs;
-- * `tags` and the aliases are JSON arrays of strings; `attributes`, `roles` and `unseal_config`
--   are JSON owned by the core and opaque here;
-- * every mutable row has `row_version` (optimistic concurrency).
-- Tables are STRICT so that a value of the wrong type can never be stored.

CREATE TABLE instances (
    id              TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    mk_version      INTEGER NOT NULL,
    unseal_method   TEXT    NOT NULL,
    mk_check_value  BLOB    NOT NULL,
    unseal_config   TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    row_version     INTEGER NOT NULL,
    CONSTRAINT pk_instances PRIMARY KEY (id),
    CONSTRAINT uq_instances_name UNIQUE (name)
) STRICT;

CREATE TABLE key_rings (
    instance_id     TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    CONSTRAINT pk_key_rings PRIMARY KEY (instance_id, id),
    CONSTRAINT fk_key_rings_instance FOREIGN KEY (instance_id) REFERENCES instances (id)
) STRICT;

CREATE TABLE keys (
    instance_id         TEXT    NOT NULL,
    id                  TEXT    NOT NULL,
    key_ring_id         TEXT    NOT NULL,
    name                TEXT    NOT NULL,
    description         TEXT,
    tags                TEXT    NOT NULL,
    object_type         TEXT    NOT NULL,
    algorithm           TEXT    NOT NULL,
    bit_length          INTEGER NOT NULL,
    extractable         INTEGER NOT NULL,
    imported            INTEGER NOT NULL,
    state               INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    created_by          TEXT    NOT NULL,
    updated_at          INTEGER NOT NULL,
    activation_at       INTEGER,
    expires_at          INTEGER,
    deactivated_at      INTEGER,
    deleted_at          INTEGER,
    deleted_by          TEXT,
    last_rotated_at     INTEGER,
    current_version_id  TEXT    NOT NULL,
    attributes          TEXT    NOT NULL,
    row_version         INTEGER NOT NULL,
    CONSTRAINT pk_keys PRIMARY KEY (instance_id, id),
    CONSTRAINT fk_keys_ring FOREIGN KEY (instance_id, key_ring_id)
        REFERENCES key_rings (instance_id, id)
) STRICT;

-- list_keys / count_keys: per instance, in creation order.
CREATE INDEX ix_keys_created ON keys (instance_id, created_at, id);
-- delete_key_ring's "in use" check and the key ring filter.
CREATE INDEX ix_keys_ring ON keys (instance_id, key_ring_id);

-- The aliases of a key, in the order the core gave them. An alias is unique within an instance.
CREATE TABLE key_aliases (
    instance_id     TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    position        INTEGER NOT NULL,
    alias           TEXT    NOT NULL,
    CONSTRAINT pk_key_aliases PRIMARY KEY (instance_id, key_id, position),
    CONSTRAINT uq_key_aliases UNIQUE (instance_id, alias),
    CONSTRAINT fk_key_aliases_key FOREIGN KEY (instance_id, key_id)
        REFERENCES keys (instance_id, id)
) STRICT;

-- Sealed key material, one row per version. Written once (re-sealing on master key rotation will
-- come with its own migration).
CREATE TABLE key_versions (
    instance_id     TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    sealed          BLOB    NOT NULL,
    mk_version      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    CONSTRAINT pk_key_versions PRIMARY KEY (instance_id, key_id, id),
    CONSTRAINT uq_key_versions_seq UNIQUE (instance_id, key_id, seq),
    CONSTRAINT fk_key_versions_key FOREIGN KEY (instance_id, key_id)
        REFERENCES keys (instance_id, id)
) STRICT;

CREATE TABLE principals (
    id              TEXT    NOT NULL,
    instance_id     TEXT,
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    roles           TEXT    NOT NULL,
    disabled        INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    row_version     INTEGER NOT NULL,
    CONSTRAINT pk_principals PRIMARY KEY (id),
    CONSTRAINT fk_principals_instance FOREIGN KEY (instance_id) REFERENCES instances (id)
) STRICT;

-- A name is unique within an instance, and among deployment-wide principals (instance_id NULL,
-- which a plain UNIQUE constraint would treat as all distinct). Instance ids are never empty.
CREATE UNIQUE INDEX uq_principals_name ON principals (COALESCE(instance_id, ''), name);

CREATE TABLE api_keys (
    id              TEXT    NOT NULL,
    principal_id    TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    hash            BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    row_version     INTEGER NOT NULL,
    CONSTRAINT pk_api_keys PRIMARY KEY (id),
    CONSTRAINT uq_api_keys_hash UNIQUE (hash),
    CONSTRAINT fk_api_keys_principal FOREIGN KEY (principal_id) REFERENCES principals (id)
) STRICT;

CREATE INDEX ix_api_keys_principal ON api_keys (principal_id, created_at, id);
