-- Events of the given types recorded in the week, with the tenant's slug.
SELECT e.type, e.tenant_id, t.slug, e.payload, e.occurred_at
FROM events e
LEFT JOIN tenants t ON t.id = e.tenant_id
WHERE e.type = ANY(%(types)s::text[]) AND e.occurred_at >= %(from_ts)s AND e.occurred_at < %(to_ts)s
ORDER BY e.type, e.occurred_at, e.id
