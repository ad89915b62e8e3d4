-- Claim notifications by dedup_key, in key order (so concurrent claimers cannot deadlock), and
-- commit: the message then goes out with no transaction open. A key already recorded in events, or
-- claimed by a sender whose lease runs, is skipped; a claim whose sender died (past its expires_at)
-- is taken over. A key another transaction is claiming right now makes this wait for that short
-- transaction. RETURNING says which keys are now ours. %(claims)s: a JSON array of
-- {tenant_id, payload, dedup_key} (one parameter for the batch; the payload is not stored here).
WITH wanted AS MATERIALIZED (
    SELECT c.item ->> 'dedup_key' AS dedup_key, (c.item ->> 'tenant_id')::bigint AS tenant_id, c.ord
    FROM jsonb_array_elements(%(claims)s::jsonb) WITH ORDINALITY AS c (item, ord)
    WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.dedup_key = c.item ->> 'dedup_key')
)
INSERT INTO bisman_ops_claims AS cl (dedup_key, type, tenant_id, claimed_by, claimed_at, expires_at)
SELECT w.dedup_key, %(type)s, w.tenant_id, %(claimed_by)s, now(), now() + make_interval(secs => %(lease_s)s)
FROM wanted w
ORDER BY w.ord
ON CONFLICT (dedup_key) DO UPDATE
    SET type = EXCLUDED.type, tenant_id = EXCLUDED.tenant_id, claimed_by = EXCLUDED.claimed_by,
        claimed_at = EXCLUDED.claimed_at, expires_at = EXCLUDED.expires_at
    WHERE cl.expires_at < now()
RETURNING dedup_key, tenant_id
