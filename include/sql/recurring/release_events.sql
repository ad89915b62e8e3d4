-- Give back the claims of %(claimed_by)s whose message could not be sent: nothing is recorded, and the
-- next run (or a concurrent one) claims them again.
DELETE FROM bisman_ops_claims WHERE dedup_key = ANY(%(dedup_keys)s::text[]) AND claimed_by = %(claimed_by)s
