-- Alerts due for one evaluation: day quotas of the day %(day)s (when %(check_day)s) and month quotas of
-- the month starting %(month_start)s through %(month_through)s (when %(check_month)s). A run evaluates
-- today and this month, and also a day or a month that ended since the previous run (quota_alerts.py).
-- For every (tenant, metric, period) with a finite effective quota (the
-- tenant's override if it has one, NULL included, else its plan's), the highest threshold in
-- %(thresholds)s that usage has reached, unless that alert is already recorded. Usage that jumped
-- past 100 percent yields the 100 percent alert only. Month usage is the aggregated month-to-date
-- row plus the days after the last aggregated day; day usage is that day's live row. Canceled tenants are skipped;
-- %(tenant_ids)s, when not NULL, limits the run to those tenants (tests, targeted re-runs);
-- %(from_id)s..%(to_id)s is the page of tenant ids to look at (the range lets every table be read
-- through its primary key, which leads with tenant_id).
WITH through AS (
    SELECT COALESCE(max(period_start), %(month_start)s::date - 1) AS through_day
    FROM tenant_usage
    WHERE period = 'day' AND period_start BETWEEN %(month_start)s AND %(month_through)s
),
live_tenants AS (
    SELECT id, plan FROM tenants
    WHERE status <> 'canceled' AND id BETWEEN %(from_id)s AND %(to_id)s
      AND (%(tenant_ids)s::bigint[] IS NULL OR id = ANY(%(tenant_ids)s::bigint[]))
),
effective AS (
    SELECT tq.tenant_id, tq.metric, tq.period, tq.quota
    FROM tenant_quotas tq
    JOIN live_tenants t ON t.id = tq.tenant_id
    WHERE tq.tenant_id BETWEEN %(from_id)s AND %(to_id)s
    UNION ALL
    SELECT t.id, pq.metric, pq.period, pq.quota
    FROM live_tenants t
    JOIN plan_quotas pq ON pq.plan = t.plan
    WHERE NOT EXISTS (
        SELECT 1 FROM tenant_quotas tq
        WHERE tq.tenant_id = t.id AND tq.metric = pq.metric AND tq.period = pq.period
    )
),
month_usage AS (
    SELECT u.tenant_id, u.metric, sum(u.quantity)::bigint AS quantity
    FROM (
        SELECT tu.tenant_id, tu.metric, tu.quantity
        FROM tenant_usage tu, through
        WHERE tu.period = 'month' AND tu.period_start = %(month_start)s
          AND through.through_day >= %(month_start)s AND tu.tenant_id BETWEEN %(from_id)s AND %(to_id)s
        UNION ALL
        SELECT c.tenant_id, c.metric, c.quantity
        FROM client_daily_usage c, through
        WHERE c.usage_date > through.through_day AND c.usage_date <= %(month_through)s
          AND c.tenant_id BETWEEN %(from_id)s AND %(to_id)s
    ) u
    GROUP BY u.tenant_id, u.metric
),
measured AS (
    SELECT e.tenant_id, e.metric, e.period, %(month_start)s::date AS period_start, e.quota, m.quantity AS used
    FROM effective e
    JOIN month_usage m ON m.tenant_id = e.tenant_id AND m.metric = e.metric
    WHERE %(check_month)s AND e.period = 'month' AND e.quota IS NOT NULL
    UNION ALL
    SELECT e.tenant_id, e.metric, e.period, %(day)s::date, e.quota, c.quantity
    FROM effective e
    JOIN client_daily_usage c ON c.tenant_id = e.tenant_id AND c.metric = e.metric AND c.usage_date = %(day)s
                              AND c.tenant_id BETWEEN %(from_id)s AND %(to_id)s
    WHERE %(check_day)s AND e.period = 'day' AND e.quota IS NOT NULL
),
crossed AS (
    SELECT m.*, th.threshold,
           'quota.alert:' || m.tenant_id || ':' || m.metric || ':' || m.period || ':'
               || m.period_start || ':' || th.threshold AS dedup_key
    FROM measured m
    CROSS JOIN LATERAL (
        SELECT max(t) AS threshold
        FROM unnest(%(thresholds)s::int[]) AS t
        WHERE m.used > 0 AND m.used::numeric * 100 >= t::numeric * m.quota
    ) th
    WHERE th.threshold IS NOT NULL
)
SELECT c.dedup_key, c.tenant_id, t.slug, t.name, t.billing_email, c.metric, c.period, c.period_start,
       c.quota, c.used, c.threshold,
       -- The quota.alert event's payload, encoded here once rather than per row in Python.
       jsonb_build_object(
           'run_id', %(run_id)s::text, 'metric', c.metric, 'period', c.period,
           'period_start', c.period_start, 'threshold', c.threshold, 'quota', c.quota, 'used', c.used,
           'percent', CASE WHEN c.quota > 0 THEN round(100.0 * c.used / c.quota, 1) END,
           'slug', t.slug, 'name', t.name, 'emailed_to', t.billing_email
       )::text AS payload_json
FROM crossed c
JOIN tenants t ON t.id = c.tenant_id
WHERE NOT EXISTS (SELECT 1 FROM events ev WHERE ev.dedup_key = c.dedup_key)
ORDER BY c.dedup_key
