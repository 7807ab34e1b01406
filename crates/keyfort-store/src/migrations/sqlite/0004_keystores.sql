-- Keyfort SQLite schema, version 4: keystores of persistent token objects (the gRPC keystore
-- service).
--
-- Same conventions as 0001: named constraints, times in Unix milliseconds, STRICT tables.
-- Deletes remove attribute rows and objects explicitly, in the same transaction (no cascade).

CREATE TABLE keystores (
    instance_id     TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    CONSTRAINT pk_keystores PRIMARY KEY (instance_id, id),
    CONSTRAINT uq_keystores_name UNIQUE (instance_id, name),
    CONSTRAINT fk_keystores_instance FOREIGN KEY (instance_id) REFERENCES instances (id)
) STRICT;

-- `attributes` is the encoded attribute set (type u64 BE, length u32 BE, value; sorted by type),
-- returned by reads; `keystore_attributes` holds the same pairs, one row each, for searching.
CREATE TABLE keystore_objects (
    instance_id     TEXT    NOT NULL,
    keystore_id     TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    blob            BLOB    NOT NULL,
    attributes      BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    row_version     INTEGER NOT NULL,
    CONSTRAINT pk_keystore_objects PRIMARY KEY (instance_id, keystore_id, id),
    CONSTRAINT fk_keystore_objects_keystore FOREIGN KEY (instance_id, keystore_id)
        REFERENCES keystores (instance_id, id)
) STRICT;

-- `attr_type` is the CK_ATTRIBUTE_TYPE's 64 bits as a signed integer; `digest` is SHA-256 of
-- `value`, which the index holds instead of the value (values such as a certificate's CKA_VALUE
-- can be larger than an index entry may be); searches compare both.
CREATE TABLE keystore_attributes (
    instance_id     TEXT    NOT NULL,
    keystore_id     TEXT    NOT NULL,
    object_id       TEXT    NOT NULL,
    attr_type       INTEGER NOT NULL,
    digest          BLOB    NOT NULL,
    value           BLOB    NOT NULL,
    CONSTRAINT pk_keystore_attributes PRIMARY KEY (instance_id, keystore_id, object_id, attr_type),
    CONSTRAINT fk_keystore_attributes_object FOREIGN KEY (instance_id, keystore_id, object_id)
        REFERENCES keystore_objects (instance_id, keystore_id, id)
) STRICT;

-- C_FindObjects: exact matches on (type, value) through (type, digest), in object id order for paging.
CREATE INDEX ix_keystore_attributes_value
    ON keystore_attributes (instance_id, keystore_id, attr_type, digest, object_id);
