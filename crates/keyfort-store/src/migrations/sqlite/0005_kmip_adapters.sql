-- Keyfort SQLite schema: Key Protect KMIP adapters and their client certificates.
--
-- Same conventions as 0001: named constraints, times in Unix milliseconds, STRICT tables.
-- Rows are written once and deleted, never updated (no row_version).

-- A KMIP adapter: a named group of KMIP client certificates of one instance whose objects are
-- wrapped by one root key (`crk_id`, profile `native_1.0`).
CREATE TABLE kmip_adapters (
    instance_id     TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    description     TEXT,
    profile         TEXT    NOT NULL,
    crk_id          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL,
    updated_by      TEXT    NOT NULL,
    CONSTRAINT pk_kmip_adapters PRIMARY KEY (instance_id, id),
    CONSTRAINT uq_kmip_adapters_name UNIQUE (instance_id, name),
    CONSTRAINT fk_kmip_adapters_instance FOREIGN KEY (instance_id) REFERENCES instances (id)
) STRICT;

-- A client certificate of an adapter: the holder of its private key may connect to the KMIP
-- port as that adapter. Its fingerprint (SHA-256 of the DER, lower-case hex) is unique in the
-- deployment: it is what the KMIP server looks up.
CREATE TABLE kmip_certificates (
    instance_id     TEXT    NOT NULL,
    adapter_id      TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    certificate     TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    CONSTRAINT pk_kmip_certificates PRIMARY KEY (instance_id, adapter_id, id),
    CONSTRAINT uq_kmip_certificates_id UNIQUE (id),
    CONSTRAINT uq_kmip_certificates_name UNIQUE (instance_id, adapter_id, name),
    CONSTRAINT uq_kmip_certificates_fingerprint UNIQUE (fingerprint),
    CONSTRAINT fk_kmip_certificates_adapter FOREIGN KEY (instance_id, adapter_id)
        REFERENCES kmip_adapters (instance_id, id)
) STRICT;

-- kmip_objects: the keys an adapter's clients created, named in their attributes by the core.
CREATE INDEX ix_keys_kmip_adapter
    ON keys (instance_id, json_extract(attributes, '$.kmip_adapter.adapter_id'));
