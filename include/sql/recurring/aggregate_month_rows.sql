-- Month-to-date rows for the month starting %(month_start)s: usage from the first of the month through
-- %(through_day)s, per tenant and metric, read from client_daily_usage itself so that late usage for any
-- earlier day of the month is included. Unchanged rows are left as they are; rows with no usage left
-- in the range are deleted.
WITH month_usage AS MATERIALIZED (
    SELECT c.tenant_id, c.metric, sum(c.quantity)::bigint AS quantity
    FROM client_daily_usage c
    WHERE c.usage_date BETWEEN %(month_start)s AND %(through_day)s
    GROUP BY c.tenant_id, c.metric
),
upserted AS (
    INSERT INTO tenant_usage AS tu (tenant_id, metric, period, period_start, quantity, computed_at)
    SELECT m.tenant_id, m.metric, 'month', %(month_start)s, m.quantity, now()
    FROM month_usage m
    ON CONFLICT (tenant_id, metric, period, period_start) DO UPDATE
        SET quantity = EXCLUDED.quantity, computed_at = EXCLUDED.computed_at
        WHERE tu.quantity IS DISTINCT FROM EXCLUDED.quantity
    RETURNING 1
),
deleted AS (
    DELETE FROM tenant_usage tu
    WHERE tu.period = 'month'
      AND tu.period_start = %(month_start)s
      AND NOT EXISTS (SELECT 1 FROM month_usage m WHERE m.tenant_id = tu.tenant_id AND m.metric = tu.metric)
    RETURNING 1
)
SELECT (SELECT count(*) FROM month_usage) AS month_rows,
       (SELECT count(*) FROM upserted) AS month_rows_changed,
       (SELECT count(*) FROM deleted) AS month_rows_deleted
