-- The day the month rows run through: the latest aggregated day of the month, or %(day)s if that
-- is later. Backfilling an earlier day therefore never rolls the month total back.
SELECT GREATEST(%(day)s::date, max(period_start)) AS through_day
FROM tenant_usage
WHERE period = 'day' AND period_start BETWEEN %(month_start)s AND %(month_end)s
