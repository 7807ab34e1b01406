-- Keyfort PostgreSQL schema: the KMIP adapter index holds only the keys that belong to an adapter.
--
-- Every other key creation no longer inserts an entry into it. kmip_objects names the index
-- condition, so that it still uses the index.
DROP INDEX ix_keys_kmip_adapter;
CREATE INDEX ix_keys_kmip_adapter
    ON keys (instance_id, ((attributes::jsonb) #>> '{kmip_adapter,adapter_id}'))
    WHERE ((attributes::jsonb) #>> '{kmip_adapter,adapter_id}') IS NOT NULL;
