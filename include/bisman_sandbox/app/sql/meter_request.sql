-- Count one request against a tenant's usage unless it is already at or over a quota, in one
-- statement: effective quota per period (tenant_quotas override, else plan_quotas; NULL =
-- unlimited), usage of the UTC day and month, and the conditional upsert.
-- Concurrent requests at quota - 1 may both pass: the limit is soft by a request or two.
WITH clock AS (
    SELECT (now() AT TIME ZONE 'UTC')::date AS today,
           date_trunc('month', now() AT TIME ZONE 'UTC')::date AS month_start
),
tenant AS (
    SELECT id, plan FROM tenants WHERE id = %(tenant_id)s
),
quotas AS (
    SELECT p.period,
           CASE WHEN tq.tenant_id IS NOT NULL THEN tq.quota ELSE pq.quota END AS quota
    FROM tenant t
    CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
    LEFT JOIN tenant_quotas tq
           ON tq.tenant_id = t.id AND tq.metric = %(metric)s AND tq.period = p.period
    LEFT JOIN plan_quotas pq
           ON pq.plan = t.plan AND pq.metric = %(metric)s AND pq.period = p.period
),
used AS (
    SELECT COALESCE(SUM(u.quantity) FILTER (WHERE u.usage_date = c.today), 0)::bigint AS day,
           COALESCE(SUM(u.quantity), 0)::bigint AS month
    FROM clock c
    LEFT JOIN client_daily_usage u
           ON u.tenant_id = %(tenant_id)s AND u.metric = %(metric)s
          AND u.usage_date BETWEEN c.month_start AND c.today
),
breach AS (
    SELECT q.period, q.quota, CASE q.period WHEN 'day' THEN u.day ELSE u.month END AS usage
    FROM quotas q CROSS JOIN used u
    WHERE %(enforce)s
      AND q.quota IS NOT NULL
      AND CASE q.period WHEN 'day' THEN u.day ELSE u.month END >= q.quota
    ORDER BY q.period  -- 'day' before 'month'
    LIMIT 1
),
counted AS (
    INSERT INTO client_daily_usage AS cdu (tenant_id, usage_date, metric, quantity, updated_at)
    SELECT t.id, c.today, %(metric)s, 1, now()
    FROM tenant t CROSS JOIN clock c
    WHERE %(count)s AND NOT EXISTS (SELECT 1 FROM breach)
    ON CONFLICT (tenant_id, usage_date, metric)
    DO UPDATE SET quantity = cdu.quantity + 1, updated_at = now()
    RETURNING cdu.quantity
)
SELECT EXISTS (SELECT 1 FROM tenant) AS tenant_exists,
       (SELECT period FROM breach) AS breach_period,
       (SELECT quota FROM breach) AS breach_quota,
       (SELECT usage FROM breach) AS breach_usage,
       (SELECT quantity FROM counted) AS day_quantity
