-- The admin read: a tenant and its month-to-date daily usage, and whether this node is a replica.
SELECT pg_is_in_recovery() AS in_recovery,
       t.id, t.slug, t.plan, t.status,
       COALESCE((
           SELECT jsonb_agg(jsonb_build_object('usage_date', u.usage_date, 'metric', u.metric,
                                               'quantity', u.quantity)
                            ORDER BY u.usage_date, u.metric)
           FROM client_daily_usage u
           WHERE u.tenant_id = t.id
             AND u.usage_date >= date_trunc('month', now() AT TIME ZONE 'UTC')::date
       ), '[]'::jsonb) AS usage
FROM (SELECT 1) AS one
LEFT JOIN tenants t ON t.id = %(tenant_id)s
