-- The %(top)s heaviest tenants of each metric over the week.
SELECT metric, tenant_id, slug, quantity
FROM (
    SELECT c.metric, c.tenant_id, t.slug, sum(c.quantity)::bigint AS quantity,
           row_number() OVER (PARTITION BY c.metric ORDER BY sum(c.quantity) DESC, c.tenant_id) AS rank
    FROM client_daily_usage c
    JOIN tenants t ON t.id = c.tenant_id
    WHERE c.usage_date BETWEEN %(week_start)s AND %(week_end)s
    GROUP BY c.metric, c.tenant_id, t.slug
) ranked
WHERE rank <= %(top)s
ORDER BY metric, rank
