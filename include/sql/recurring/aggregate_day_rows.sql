-- Day rows for the days %(days)s: each day's usage per tenant and metric. A row whose quantity did not
-- change is left as it is (computed_at included), so re-running a day rewrites nothing.
INSERT INTO tenant_usage AS tu (tenant_id, metric, period, period_start, quantity, computed_at)
SELECT c.tenant_id, c.metric, 'day', c.usage_date, c.quantity, now()
FROM client_daily_usage c
WHERE c.usage_date = ANY(%(days)s::date[])
ON CONFLICT (tenant_id, metric, period, period_start) DO UPDATE
    SET quantity = EXCLUDED.quantity, computed_at = EXCLUDED.computed_at
    WHERE tu.quantity IS DISTINCT FROM EXCLUDED.quantity
