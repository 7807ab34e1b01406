-- Keyfort SQLite schema: fewer B-trees on the write path.
--
-- Same conventions as 0001: named constraints, times in Unix milliseconds, STRICT tables.
--
-- Each commit rewrites the last pages of every B-tree it inserts into, so every B-tree that a key
-- creation touches costs WAL frames in every commit (and again at checkpoint). key_versions
-- becomes a WITHOUT ROWID table, stored in the order of its primary key: one B-tree instead of a
-- rowid table plus the primary key's index. Its columns, constraints and other indexes are
-- unchanged, and so are the rows. The KMIP adapter index now holds only the keys that belong to
-- an adapter.

CREATE TABLE key_versions_0006 (
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
) STRICT, WITHOUT ROWID;

INSERT INTO key_versions_0006 (instance_id, key_id, id, seq, sealed, mk_version, created_at)
SELECT instance_id, key_id, id, seq, sealed, mk_version, created_at
FROM key_versions;

DROP TABLE key_versions;
ALTER TABLE key_versions_0006 RENAME TO key_versions;
-- The re-seal job's scan: versions of an instance sealed under an older master key.
CREATE INDEX ix_key_versions_mk ON key_versions (instance_id, mk_version);

-- kmip_objects: the keys an adapter's clients created, named in their attributes by the core.
-- Other keys have no entry.
DROP INDEX ix_keys_kmip_adapter;
CREATE INDEX ix_keys_kmip_adapter
    ON keys (instance_id, json_extract(attributes, '$.kmip_adapter.adapter_id'))
    WHERE json_extract(attributes, '$.kmip_adapter.adapter_id') IS NOT NULL;
