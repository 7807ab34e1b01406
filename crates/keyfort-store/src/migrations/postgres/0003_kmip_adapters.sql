-- Keyfort PostgreSQL schema: Key Protect KMIP adapters and their client certificates.
--
-- Same conventions as 0001 (named constraints, times in Unix milliseconds as BIGINT). Rows are
-- written once and deleted, never updated (no row_version).

CREATE TABLE kmip_adapters (
    instance_id     TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    description     TEXT,
    profile         TEXT    NOT NULL,
    crk_id          TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    created_by      TEXT    NOT NULL,
    updated_at      BIGINT  NOT NULL,
    updated_by      TEXT    NOT NULL,
    CONSTRAINT pk_kmip_adapters PRIMARY KEY (instance_id, id),
    CONSTRAINT uq_kmip_adapters_name UNIQUE (instance_id, name),
    CONSTRAINT fk_kmip_adapters_instance FOREIGN KEY (instance_id) REFERENCES instances (id)
);

CREATE TABLE kmip_certificates (
    instance_id     TEXT    NOT NULL,
    adapter_id      TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    certificate     TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    created_by      TEXT    NOT NULL,
    CONSTRAINT pk_kmip_certificates PRIMARY KEY (instance_id, adapter_id, id),
    CONSTRAINT uq_kmip_certificates_id UNIQUE (id),
    CONSTRAINT uq_kmip_certificates_name UNIQUE (instance_id, adapter_id, name),
    CONSTRAINT uq_kmip_certificates_fingerprint UNIQUE (fingerprint),
    CONSTRAINT fk_kmip_certificates_adapter FOREIGN KEY (instance_id, adapter_id)
        REFERENCES kmip_adapters (instance_id, id)
);

-- kmip_objects: the keys an adapter's clients created, named in their attributes by the core.
CREATE INDEX ix_keys_kmip_adapter
    ON keys (instance_id, ((attributes::jsonb) #>> '{kmip_adapter,adapter_id}'));
