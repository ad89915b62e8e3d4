-- A tenant's usage against its effective quotas (tenant_quotas override, else plan_quotas;
-- NULL = unlimited), for the current UTC day and month, every metric that has a quota or usage.
WITH clock AS (
    SELECT (now() AT TIME ZONE 'UTC')::date AS today,
           date_trunc('month', now() AT TIME ZONE 'UTC')::date AS month_start
),
tenant AS (
    SELECT id, plan FROM tenants WHERE id = %(tenant_id)s
),
used AS (
    SELECT u.metric,
           SUM(u.quantity) FILTER (WHERE u.usage_date = c.today)::bigint AS day,
           SUM(u.quantity)::bigint AS month
    FROM client_daily_usage u CROSS JOIN clock c
    WHERE u.tenant_id = %(tenant_id)s AND u.usage_date BETWEEN c.month_start AND c.today
    GROUP BY u.metric
),
keys AS (
    SELECT pq.metric, pq.period FROM plan_quotas pq JOIN tenant t ON pq.plan = t.plan
    UNION
    SELECT tq.metric, tq.period FROM tenant_quotas tq WHERE tq.tenant_id = %(tenant_id)s
    UNION
    SELECT u.metric, p.period FROM used u CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
)
SELECT k.metric,
       k.period,
       CASE k.period WHEN 'day' THEN c.today ELSE c.month_start END AS period_start,
       COALESCE(CASE k.period WHEN 'day' THEN u.day ELSE u.month END, 0) AS usage,
       CASE WHEN tq.tenant_id IS NOT NULL THEN tq.quota ELSE pq.quota END AS quota,
       tq.tenant_id IS NOT NULL AS overridden
FROM keys k
CROSS JOIN clock c
CROSS JOIN tenant t
LEFT JOIN used u ON u.metric = k.metric
LEFT JOIN tenant_quotas tq ON tq.tenant_id = t.id AND tq.metric = k.metric AND tq.period = k.period
LEFT JOIN plan_quotas pq ON pq.plan = t.plan AND pq.metric = k.metric AND pq.period = k.period
ORDER BY k.metric, k.period
