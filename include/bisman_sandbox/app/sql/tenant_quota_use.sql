-- Every tenant's api_calls usage of the UTC day and month over its effective quota (tenant_quotas
-- override, else plan_quotas); tenants without a quota for a period have no row.
WITH clock AS (
    SELECT (now() AT TIME ZONE 'UTC')::date AS today,
           date_trunc('month', now() AT TIME ZONE 'UTC')::date AS month_start
),
quotas AS (
    SELECT t.id AS tenant_id, p.period,
           CASE WHEN tq.tenant_id IS NOT NULL THEN tq.quota ELSE pq.quota END AS quota
    FROM tenants t
    CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
    LEFT JOIN tenant_quotas tq ON tq.tenant_id = t.id AND tq.metric = 'api_calls' AND tq.period = p.period
    LEFT JOIN plan_quotas pq ON pq.plan = t.plan AND pq.metric = 'api_calls' AND pq.period = p.period
),
used AS (
    SELECT u.tenant_id,
           COALESCE(SUM(u.quantity) FILTER (WHERE u.usage_date = c.today), 0) AS day,
           COALESCE(SUM(u.quantity), 0) AS month
    FROM client_daily_usage u CROSS JOIN clock c
    WHERE u.metric = 'api_calls' AND u.usage_date BETWEEN c.month_start AND c.today
    GROUP BY u.tenant_id
)
SELECT q.tenant_id, q.period,
       COALESCE(CASE q.period WHEN 'day' THEN u.day ELSE u.month END, 0)::float8 / q.quota AS ratio
FROM quotas q LEFT JOIN used u ON u.tenant_id = q.tenant_id
WHERE q.quota IS NOT NULL AND q.quota > 0
ORDER BY q.tenant_id, q.period
