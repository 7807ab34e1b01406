-- Keyfort PostgreSQL schema, version 1: the same tables as SQLite's migrations 1 to 3, plus the
-- per-instance audit chain head.
--
-- Conventions (shared with the SQLite schema):
-- * every constraint is named: pk_<table>, fk_<table>_<target>, uq_<table>[_<what>], ck_<table>_<what>;
--   the store maps violations by constraint name, never by message;
-- * times are Unix milliseconds (BIGINT), booleans are BOOLEAN;
-- * `tags` and the aliases are JSON arrays of strings as TEXT; `attributes`, `roles`,
--   `unseal_config` and `policies` are JSON owned by the core and opaque here;
-- * every mutable row has `row_version` (optimistic concurrency).

CREATE TABLE instances (
    id              TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    mk_version      BIGINT  NOT NULL,
    unseal_method   TEXT    NOT NULL,
    mk_check_value  BYTEA   NOT NULL,
    unseal_config   TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    row_version     BIGINT  NOT NULL,
    -- Key Protect instance policies; not part of the optimistic row_version.
    policies        TEXT    NOT NULL DEFAULT '{}',
    CONSTRAINT pk_instances PRIMARY KEY (id),
    CONSTRAINT uq_instances_name UNIQUE (name)
);

CREATE TABLE key_rings (
    instance_id     TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    created_by      TEXT    NOT NULL,
    CONSTRAINT pk_key_rings PRIMARY KEY (instance_id, id),
    CONSTRAINT fk_key_rings_instance FOREIGN KEY (instance_id) REFERENCES instances (id)
);

CREATE TABLE keys (
    instance_id         TEXT    NOT NULL,
    id                  TEXT    NOT NULL,
    key_ring_id         TEXT    NOT NULL,
    name                TEXT    NOT NULL,
    description         TEXT,
    tags                TEXT    NOT NULL,
    object_type         TEXT    NOT NULL,
    algorithm           TEXT    NOT NULL,
    bit_length          BIGINT  NOT NULL,
    extractable         BOOLEAN NOT NULL,
    imported            BOOLEAN NOT NULL,
    state               BIGINT  NOT NULL,
    created_at          BIGINT  NOT NULL,
    created_by          TEXT    NOT NULL,
    updated_at          BIGINT  NOT NULL,
    activation_at       BIGINT,
    expires_at          BIGINT,
    deactivated_at      BIGINT,
    deleted_at          BIGINT,
    deleted_by          TEXT,
    last_rotated_at     BIGINT,
    current_version_id  TEXT    NOT NULL,
    attributes          TEXT    NOT NULL,
    row_version         BIGINT  NOT NULL,
    CONSTRAINT pk_keys PRIMARY KEY (instance_id, id),
    CONSTRAINT fk_keys_ring FOREIGN KEY (instance_id, key_ring_id)
        REFERENCES key_rings (instance_id, id)
);

CREATE INDEX ix_keys_created ON keys (instance_id, created_at, id);
CREATE INDEX ix_keys_ring ON keys (instance_id, key_ring_id);

CREATE TABLE key_aliases (
    instance_id     TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    position        BIGINT  NOT NULL,
    alias           TEXT    NOT NULL,
    CONSTRAINT pk_key_aliases PRIMARY KEY (instance_id, key_id, position),
    CONSTRAINT uq_key_aliases UNIQUE (instance_id, alias),
    CONSTRAINT fk_key_aliases_key FOREIGN KEY (instance_id, key_id)
        REFERENCES keys (instance_id, id)
);

CREATE TABLE key_versions (
    instance_id     TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    seq             BIGINT  NOT NULL,
    sealed          BYTEA   NOT NULL,
    mk_version      BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    CONSTRAINT pk_key_versions PRIMARY KEY (instance_id, key_id, id),
    CONSTRAINT uq_key_versions_seq UNIQUE (instance_id, key_id, seq),
    CONSTRAINT fk_key_versions_key FOREIGN KEY (instance_id, key_id)
        REFERENCES keys (instance_id, id)
);

-- The re-seal job's scan: versions of an instance sealed under an older master key.
CREATE INDEX ix_key_versions_mk ON key_versions (instance_id, mk_version);

CREATE TABLE principals (
    id              TEXT    NOT NULL,
    instance_id     TEXT,
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    roles           TEXT    NOT NULL,
    disabled        BOOLEAN NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    row_version     BIGINT  NOT NULL,
    CONSTRAINT pk_principals PRIMARY KEY (id),
    CONSTRAINT fk_principals_instance FOREIGN KEY (instance_id) REFERENCES instances (id)
);

-- A name is unique within an instance, and among deployment-wide principals (instance_id NULL).
CREATE UNIQUE INDEX uq_principals_name ON principals (COALESCE(instance_id, ''), name);

CREATE TABLE api_keys (
    id              TEXT    NOT NULL,
    principal_id    TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    hash            BYTEA   NOT NULL,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    row_version     BIGINT  NOT NULL,
    CONSTRAINT pk_api_keys PRIMARY KEY (id),
    CONSTRAINT uq_api_keys_hash UNIQUE (hash),
    CONSTRAINT fk_api_keys_principal FOREIGN KEY (principal_id) REFERENCES principals (id)
);

CREATE INDEX ix_api_keys_principal ON api_keys (principal_id, created_at, id);

CREATE TABLE instance_secrets (
    instance_id     TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    sealed          BYTEA   NOT NULL,
    mk_version      BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    CONSTRAINT pk_instance_secrets PRIMARY KEY (instance_id, name),
    CONSTRAINT fk_instance_secrets_instance FOREIGN KEY (instance_id) REFERENCES instances (id)
);

CREATE TABLE command_nonces (
    instance_id     TEXT    NOT NULL,
    nonce           TEXT    NOT NULL,
    expires_at      BIGINT  NOT NULL,
    CONSTRAINT pk_command_nonces PRIMARY KEY (instance_id, nonce)
);

CREATE INDEX ix_command_nonces_expires ON command_nonces (expires_at);

-- The audit trail, as in SQLite: per instance a gapless hash chain, append-only, no foreign key.
CREATE TABLE audit_events (
    instance_id     TEXT    NOT NULL,
    seq             BIGINT  NOT NULL,
    at              BIGINT  NOT NULL,
    body            TEXT    NOT NULL,
    prev_hash       BYTEA   NOT NULL,
    hash            BYTEA   NOT NULL,
    target          TEXT    NOT NULL DEFAULT '',
    action          TEXT    NOT NULL DEFAULT '',
    outcome         TEXT    NOT NULL DEFAULT '',
    CONSTRAINT pk_audit_events PRIMARY KEY (instance_id, seq),
    CONSTRAINT ck_audit_events_seq CHECK (seq >= 1),
    CONSTRAINT ck_audit_events_prev_hash CHECK (octet_length(prev_hash) = 32),
    CONSTRAINT ck_audit_events_hash CHECK (octet_length(hash) = 32)
);

CREATE INDEX ix_audit_events_target ON audit_events (instance_id, target, seq);
CREATE INDEX ix_audit_events_action ON audit_events (instance_id, action, seq);

-- The head of each instance's chain. An append locks this row (INSERT ... ON CONFLICT DO UPDATE)
-- for the rest of its transaction, so appends from every node to one chain are serialized and
-- each reads the head the previous one committed. Seq 0 and 32 zero bytes before the first event.
CREATE TABLE audit_heads (
    instance_id     TEXT    NOT NULL,
    seq             BIGINT  NOT NULL,
    hash            BYTEA   NOT NULL,
    CONSTRAINT pk_audit_heads PRIMARY KEY (instance_id),
    CONSTRAINT ck_audit_heads_seq CHECK (seq >= 0),
    CONSTRAINT ck_audit_heads_hash CHECK (octet_length(hash) = 32)
);

CREATE TABLE registrations (
    instance_id             TEXT    NOT NULL,
    key_id                  TEXT    NOT NULL,
    resource_crn            TEXT    NOT NULL,
    description             TEXT,
    registration_metadata   TEXT,
    prevent_key_deletion    BOOLEAN NOT NULL,
    key_version_id          TEXT    NOT NULL,
    created_by              TEXT    NOT NULL,
    created_at              BIGINT  NOT NULL,
    updated_by              TEXT    NOT NULL,
    updated_at              BIGINT  NOT NULL,
    CONSTRAINT pk_registrations PRIMARY KEY (instance_id, key_id, resource_crn),
    CONSTRAINT fk_registrations_key FOREIGN KEY (instance_id, key_id)
        REFERENCES keys (instance_id, id)
);
