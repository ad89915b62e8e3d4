-- Record the messages that went out: their events, in one short transaction. The claims are left to
-- expire (a claimer after that finds the event and skips the key). %(events)s: a JSON array of
-- {tenant_id, payload, dedup_key}.
INSERT INTO events (tenant_id, type, payload, occurred_at, dedup_key)
SELECT (x.e ->> 'tenant_id')::bigint, %(type)s, x.e -> 'payload', now(), x.e ->> 'dedup_key'
FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS x (e, ord)
ORDER BY x.ord
ON CONFLICT (dedup_key) DO NOTHING
