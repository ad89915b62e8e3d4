-- Claim events by dedup_key, in key order (so concurrent claimers cannot deadlock). A key another
-- transaction holds uncommitted makes this wait for it: if that one commits, the key is skipped;
-- if it rolls back or deletes the row (its send failed), the key is claimed here. RETURNING says
-- which keys this transaction now owns.
INSERT INTO events (tenant_id, type, payload, occurred_at, dedup_key)
SELECT c.tenant_id, %(type)s, c.payload, now(), c.dedup_key
FROM unnest(%(tenant_ids)s::bigint[], %(payloads)s::jsonb[], %(dedup_keys)s::text[])
         WITH ORDINALITY AS c (tenant_id, payload, dedup_key, ord)
ORDER BY c.ord
ON CONFLICT (dedup_key) DO NOTHING
RETURNING dedup_key
