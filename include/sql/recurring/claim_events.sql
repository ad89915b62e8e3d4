-- Claim events by dedup_key, in key order (so concurrent claimers cannot deadlock). A key another
-- transaction holds uncommitted makes this wait for it: if that one commits, the key is skipped;
-- if it rolls back or deletes the row (its send failed), the key is claimed here. RETURNING says
-- which keys this transaction now owns. %(claims)s: a JSON array of {tenant_id, payload, dedup_key}
-- (one parameter for the batch, cheaper to send than parallel arrays).
INSERT INTO events (tenant_id, type, payload, occurred_at, dedup_key)
SELECT (c.item ->> 'tenant_id')::bigint, %(type)s, c.item -> 'payload', now(), c.item ->> 'dedup_key'
FROM jsonb_array_elements(%(claims)s::jsonb) WITH ORDINALITY AS c (item, ord)
ORDER BY c.ord
ON CONFLICT (dedup_key) DO NOTHING
RETURNING dedup_key
