-- Keyfort SQLite schema: audit events stored in blocks.
--
-- Same conventions as 0001: named constraints, times in Unix milliseconds, STRICT tables.
--
-- One row per event cost four B-tree inserts (the table, its primary key, the target and action
-- indexes) and one statement row per event, for every wrap and unwrap. Now the events a
-- transaction appends to one chain are one row of `audit_blocks`: a run of consecutive events as
-- a JSON array, each element `{"seq", "at", "body", "prev_hash", "hash"}` (hashes in hex), the
-- same values and the same chain hash as before. `audit_terms` is the index of the queries: one
-- row per distinct `target:<target>` and `action:<action>` of a block. Outcome and time filters
-- are applied to the events of the blocks read (`first_at`/`last_at` skip whole blocks).

CREATE TABLE audit_blocks (
    instance_id     TEXT    NOT NULL,
    first_seq       INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL,
    first_at        INTEGER NOT NULL,
    last_at         INTEGER NOT NULL,
    -- The hash of the block's last event: the chain's head when this is its last block.
    last_hash       BLOB    NOT NULL,
    events          TEXT    NOT NULL,
    CONSTRAINT pk_audit_blocks PRIMARY KEY (instance_id, first_seq),
    CONSTRAINT ck_audit_blocks_seq CHECK (first_seq >= 1 AND last_seq >= first_seq),
    CONSTRAINT ck_audit_blocks_at CHECK (last_at >= first_at),
    CONSTRAINT ck_audit_blocks_hash CHECK (length(last_hash) = 32)
) STRICT;

CREATE TABLE audit_terms (
    instance_id     TEXT    NOT NULL,
    term            TEXT    NOT NULL,
    first_seq       INTEGER NOT NULL,
    CONSTRAINT pk_audit_terms PRIMARY KEY (instance_id, term, first_seq)
) STRICT, WITHOUT ROWID;

-- The events of version 6, 256 to a block, in seq order.
INSERT INTO audit_blocks (instance_id, first_seq, last_seq, first_at, last_at, last_hash, events)
SELECT instance_id, min(seq), max(seq), min(at), max(at), zeroblob(32),
    json_group_array(json_object(
        'seq', seq, 'at', at, 'body', body,
        'prev_hash', lower(hex(prev_hash)), 'hash', lower(hex(hash))) ORDER BY seq)
FROM audit_events
GROUP BY instance_id, (seq - 1) / 256;

UPDATE audit_blocks SET last_hash = unhex(json_extract(events, '$[#-1].hash'));

WITH e AS (
    SELECT instance_id, target, action,
        min(seq) OVER (PARTITION BY instance_id, (seq - 1) / 256) AS first_seq
    FROM audit_events
)
INSERT OR IGNORE INTO audit_terms (instance_id, term, first_seq)
SELECT instance_id, 'target:' || target, first_seq FROM e WHERE target <> ''
UNION
SELECT instance_id, 'action:' || action, first_seq FROM e WHERE action <> '';

DROP TABLE audit_events;

-- A chain grows only at its end: a block starts right after the instance's last block (or at 1).
-- This refuses forks, gaps and overlaps, whatever writes the row.
CREATE TRIGGER tr_audit_blocks_continue BEFORE INSERT ON audit_blocks
WHEN NEW.first_seq <> 1 + coalesce(
    (SELECT last_seq FROM audit_blocks WHERE instance_id = NEW.instance_id
     ORDER BY first_seq DESC LIMIT 1), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit_blocks: a block must continue its chain');
END;
