-- trial.expired / trial.converted events of the last %(window_days)s days whose mail has not gone out
-- (no trial.notified event for them yet), with where to send it.
SELECT e.id AS event_id, e.tenant_id, e.type, e.payload, e.occurred_at,
       'trial.notified:' || e.id AS dedup_key, t.billing_email, t.name, t.slug
FROM events e
JOIN tenants t ON t.id = e.tenant_id
WHERE e.type IN ('trial.expired', 'trial.converted')
  AND e.occurred_at >= now() - make_interval(days => %(window_days)s)
  AND (%(tenant_ids)s::bigint[] IS NULL OR e.tenant_id = ANY(%(tenant_ids)s::bigint[]))
  AND NOT EXISTS (SELECT 1 FROM events n WHERE n.dedup_key = 'trial.notified:' || e.id)
ORDER BY dedup_key
