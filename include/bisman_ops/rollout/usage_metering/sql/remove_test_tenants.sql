-- The test tenants and everything written about them; the slug guard keeps real tenants safe.
WITH gone AS (
    DELETE FROM tenants WHERE id = ANY(%(ids)s) AND slug LIKE 'rollout-usage-%%' RETURNING id
),
usage AS (DELETE FROM tenant_usage WHERE tenant_id IN (SELECT id FROM gone) RETURNING 1),
logged AS (DELETE FROM events WHERE tenant_id IN (SELECT id FROM gone) RETURNING 1)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM usage), (SELECT count(*) FROM logged)
