-- Serialises aggregations of the same month (a backfill running beside the scheduled run): both
-- rewrite that month's month rows, and the later through-day must win. Transaction-scoped, so it
-- works through PgBouncer's transaction pooling and is released by COMMIT or ROLLBACK.
SELECT pg_advisory_xact_lock(hashtextextended('bisman_daily_usage_aggregation:' || %(month_start)s::text, 0))
