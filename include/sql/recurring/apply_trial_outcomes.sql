-- Apply the given trial outcomes in one statement, one event each: an ended trial gets its new plan
-- and status 'active'; an extended one (%(new_trial_ends)s not NULL: Stripe's trial_end, later than
-- the database's) stays 'trialing' on its plan with that trial end, so later runs skip it until then.
-- A tenant that is no longer trialing, or whose trial is not over at %(as_of)s any more (a concurrent
-- run got there first, or the application changed it), is left alone and gets no event; the event's
-- dedup_key makes a repeat a no-op as well.
WITH outcome AS (
    SELECT *
    FROM unnest(%(tenant_ids)s::bigint[], %(new_plans)s::text[], %(new_trial_ends)s::timestamptz[],
                %(event_types)s::text[], %(payloads)s::jsonb[], %(dedup_keys)s::text[])
         AS o (tenant_id, new_plan, new_trial_ends_at, event_type, payload, dedup_key)
),
applied AS (
    UPDATE tenants t
    SET plan = COALESCE(o.new_plan, t.plan),
        status = CASE WHEN o.new_trial_ends_at IS NULL THEN 'active' ELSE 'trialing' END,
        trial_ends_at = COALESCE(o.new_trial_ends_at, t.trial_ends_at),
        updated_at = now()
    FROM outcome o
    WHERE t.id = o.tenant_id AND t.status = 'trialing' AND t.trial_ends_at <= %(as_of)s
    RETURNING t.id
)
INSERT INTO events (tenant_id, type, payload, occurred_at, dedup_key)
SELECT o.tenant_id, o.event_type, o.payload, now(), o.dedup_key
FROM outcome o
JOIN applied a ON a.id = o.tenant_id
ON CONFLICT (dedup_key) DO NOTHING
RETURNING tenant_id
