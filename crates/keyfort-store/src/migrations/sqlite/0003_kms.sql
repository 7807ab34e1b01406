-- Keyfort SQLite schema, version 3: the Key Protect v2 API (instance policies, registrations,
-- queryable audit events).
--
-- Same conventions as 0001: named constraints, times in Unix milliseconds, STRICT tables.

-- The instance's Key Protect instance policies, as JSON owned by the core. Not part of the
-- instance's optimistic `row_version`: only `set_instance_policies` writes it.
ALTER TABLE instances ADD COLUMN policies TEXT NOT NULL DEFAULT '{}';

-- Registrations: cloud resources (by CRN) protected by a key. Purging a key deletes its
-- registrations explicitly, in the same transaction (no cascade, as for aliases and versions).
CREATE TABLE registrations (
    instance_id             TEXT    NOT NULL,
    key_id                  TEXT    NOT NULL,
    resource_crn            TEXT    NOT NULL,
    description             TEXT,
    registration_metadata   TEXT,
    prevent_key_deletion    INTEGER NOT NULL,
    key_version_id          TEXT    NOT NULL,
    created_by              TEXT    NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_by              TEXT    NOT NULL,
    updated_at              INTEGER NOT NULL,
    CONSTRAINT pk_registrations PRIMARY KEY (instance_id, key_id, resource_crn),
    CONSTRAINT fk_registrations_key FOREIGN KEY (instance_id, key_id)
        REFERENCES keys (instance_id, id),
    CONSTRAINT ck_registrations_prevent_key_deletion CHECK (prevent_key_deletion IN (0, 1))
) STRICT;

-- Copies of the body's `target`, `action` and `outcome` string fields ('' when absent, not a
-- string, or the body is not JSON), written by the store on append, for query_audit_events.
-- They are not hashed: the body is, and they are derived from it.
ALTER TABLE audit_events ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN action TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN outcome TEXT NOT NULL DEFAULT '';

-- Backfill the events appended before this migration.
UPDATE audit_events SET
    target = CASE WHEN json_type(body, '$.target') = 'text'
        THEN json_extract(body, '$.target') ELSE '' END,
    action = CASE WHEN json_type(body, '$.action') = 'text'
        THEN json_extract(body, '$.action') ELSE '' END,
    outcome = CASE WHEN json_type(body, '$.outcome') = 'text'
        THEN json_extract(body, '$.outcome') ELSE '' END
WHERE json_valid(body);

CREATE INDEX ix_audit_events_target ON audit_events (instance_id, target, seq);
CREATE INDEX ix_audit_events_action ON audit_events (instance_id, action, seq);
