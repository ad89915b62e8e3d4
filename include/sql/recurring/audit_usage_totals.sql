-- Usage of the week [%(week_start)s, %(week_end)s] per metric: total, tenants with usage.
SELECT metric, sum(quantity)::bigint AS total, count(DISTINCT tenant_id) AS tenants
FROM client_daily_usage
WHERE usage_date BETWEEN %(week_start)s AND %(week_end)s
GROUP BY metric
ORDER BY metric
