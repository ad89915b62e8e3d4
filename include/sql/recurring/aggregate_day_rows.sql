-- Day rows for the days %(days)s: each day's usage per tenant and metric, only the usage rows updated
-- after %(since)s (the day's own entry: NULL reads the whole day). A late day so costs its changed
-- rows, found through client_daily_usage_date_updated_at_idx, not a pass over the day. A row whose
-- quantity did not change is left as it is (computed_at included), so re-running a day rewrites
-- nothing.
INSERT INTO tenant_usage AS tu (tenant_id, metric, period, period_start, quantity, computed_at)
SELECT c.tenant_id, c.metric, 'day', c.usage_date, c.quantity, now()
FROM unnest(%(days)s::date[], %(since)s::timestamptz[]) AS d (day, since)
JOIN client_daily_usage c ON c.usage_date = d.day AND (d.since IS NULL OR c.updated_at > d.since)
ON CONFLICT (tenant_id, metric, period, period_start) DO UPDATE
    SET quantity = EXCLUDED.quantity, computed_at = EXCLUDED.computed_at
    WHERE tu.quantity IS DISTINCT FROM EXCLUDED.quantity
