-- Keyfort SQLite schema, version 2: master key rotation (KYOK), signed commands, audit trail.
--
-- Same conventions as 0001: named constraints, times in Unix milliseconds, STRICT tables.

-- Secrets of an instance itself, sealed under its master key (an archived master key during a
-- rotation, ...). Deleted with the instance's keys on zeroization.
CREATE TABLE instance_secrets (
    instance_id     TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    sealed          BLOB    NOT NULL,
    mk_version      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    CONSTRAINT pk_instance_secrets PRIMARY KEY (instance_id, name),
    CONSTRAINT fk_instance_secrets_instance FOREIGN KEY (instance_id) REFERENCES instances (id)
) STRICT;

-- Nonces of signed commands already executed (replay protection). A nonce is kept until its
-- command expires; expired rows are purged by the writes that add new ones.
CREATE TABLE command_nonces (
    instance_id     TEXT    NOT NULL,
    nonce           TEXT    NOT NULL,
    expires_at      INTEGER NOT NULL,
    CONSTRAINT pk_command_nonces PRIMARY KEY (instance_id, nonce)
) STRICT;

-- The purge of expired nonces.
CREATE INDEX ix_command_nonces_expires ON command_nonces (expires_at);

-- The audit trail: per instance, a hash chain without gaps (seq 1, 2, 3, ...), where
-- hash = SHA-256(prev_hash || seq as u64 BE || at as i64 BE || body) and the first prev_hash is
-- 32 zero bytes. Append-only: the store never updates or deletes a row. No foreign key: the trail
-- outlives what it talks about.
CREATE TABLE audit_events (
    instance_id     TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    prev_hash       BLOB    NOT NULL,
    hash            BLOB    NOT NULL,
    CONSTRAINT pk_audit_events PRIMARY KEY (instance_id, seq),
    CONSTRAINT ck_audit_events_seq CHECK (seq >= 1),
    CONSTRAINT ck_audit_events_prev_hash CHECK (length(prev_hash) = 32),
    CONSTRAINT ck_audit_events_hash CHECK (length(hash) = 32)
) STRICT;

-- The re-seal job's scan: versions of an instance sealed under an older master key.
CREATE INDEX ix_key_versions_mk ON key_versions (instance_id, mk_version);
