-- Days from %(from_day)s to %(to_day)s whose client_daily_usage changed after they were aggregated:
-- the latest updated_at of the day's rows is later than the one the aggregation recorded (or the
-- day was never recorded). One descent of client_daily_usage_date_updated_at_idx per day.
-- source_updated_at: what to record once the day is aggregated (read before aggregating, so a row
-- written meanwhile is newer than it and found by the next run).
-- recorded_updated_at: what the day's last aggregation read (NULL: never aggregated); only rows updated
-- after it changed (a deleted row leaves no trace in updated_at: see delete_stale_day_rows.sql).
SELECT d.day, s.latest AS source_updated_at, a.source_updated_at AS recorded_updated_at,
       a.day IS NOT NULL AS recorded
FROM (SELECT g::date AS day FROM generate_series(%(from_day)s::date, %(to_day)s::date, interval '1 day') g) d
CROSS JOIN LATERAL (
    SELECT max(c.updated_at) AS latest FROM client_daily_usage c WHERE c.usage_date = d.day
) s
LEFT JOIN tenant_usage_days a ON a.day = d.day
WHERE d.day = %(day)s::date
   OR (s.latest IS NOT NULL AND (a.day IS NULL OR s.latest > a.source_updated_at))
ORDER BY d.day
