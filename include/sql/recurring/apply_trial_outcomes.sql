-- End the given trials in one statement: plan and status, and one event each. A tenant that is no
-- longer trialing (a concurrent run got there first, or the application changed it) is left alone
-- and gets no event; the event's dedup_key makes a repeat a no-op as well.
WITH outcome AS (
    SELECT *
    FROM unnest(%(tenant_ids)s::bigint[], %(new_plans)s::text[], %(event_types)s::text[],
                %(payloads)s::jsonb[], %(dedup_keys)s::text[])
         AS o (tenant_id, new_plan, event_type, payload, dedup_key)
),
ended AS (
    UPDATE tenants t
    SET plan = o.new_plan, status = 'active', updated_at = now()
    FROM outcome o
    WHERE t.id = o.tenant_id AND t.status = 'trialing' AND t.trial_ends_at <= %(as_of)s
    RETURNING t.id
)
INSERT INTO events (tenant_id, type, payload, occurred_at, dedup_key)
SELECT o.tenant_id, o.event_type, o.payload, now(), o.dedup_key
FROM outcome o
JOIN ended e ON e.id = o.tenant_id
ON CONFLICT (dedup_key) DO NOTHING
RETURNING tenant_id
