-- Record the claims of %(claimed_by)s whose message went out: the claim is marked recorded (kept, so
-- a concurrent claimer skips it) and its event is written, in one short transaction. A claim taken
-- over by someone else meanwhile (ours expired) is theirs to record.
WITH recorded AS (
    UPDATE bisman_ops_claims cl
    SET recorded_at = now(), expires_at = 'infinity'
    WHERE cl.dedup_key = ANY(%(dedup_keys)s::text[]) AND cl.claimed_by = %(claimed_by)s
      AND cl.recorded_at IS NULL
    RETURNING cl.dedup_key, cl.type, cl.tenant_id, cl.payload
)
INSERT INTO events (tenant_id, type, payload, occurred_at, dedup_key)
SELECT r.tenant_id, r.type, r.payload, now(), r.dedup_key
FROM recorded r
ORDER BY r.dedup_key
ON CONFLICT (dedup_key) DO NOTHING
