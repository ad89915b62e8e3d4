-- Claim notifications by dedup_key, in key order (so concurrent claimers cannot deadlock), and
-- commit: the mail then goes out with no transaction open. A key already recorded (in events, or a
-- recorded claim) or claimed by a live sender is skipped; a claim whose sender died (past its
-- expires_at) is taken over. A key another transaction is claiming right now makes this wait for
-- that short transaction. RETURNING says which keys are now ours. %(claims)s: a JSON array of
-- {tenant_id, payload, dedup_key} (one parameter for the batch).
INSERT INTO bisman_ops_claims AS cl (dedup_key, type, tenant_id, payload, claimed_by, claimed_at, expires_at)
SELECT c.item ->> 'dedup_key', %(type)s, (c.item ->> 'tenant_id')::bigint, c.item -> 'payload',
       %(claimed_by)s, now(), now() + make_interval(secs => %(lease_s)s)
FROM jsonb_array_elements(%(claims)s::jsonb) WITH ORDINALITY AS c (item, ord)
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.dedup_key = c.item ->> 'dedup_key')
ORDER BY c.ord
ON CONFLICT (dedup_key) DO UPDATE
    SET type = EXCLUDED.type, tenant_id = EXCLUDED.tenant_id, payload = EXCLUDED.payload,
        claimed_by = EXCLUDED.claimed_by, claimed_at = EXCLUDED.claimed_at, expires_at = EXCLUDED.expires_at
    WHERE cl.recorded_at IS NULL AND cl.expires_at < now()
RETURNING dedup_key, tenant_id, payload
