-- Days from %(from_day)s to %(to_day)s whose client_daily_usage may have changed since they were
-- aggregated, with the day %(day)s itself. One descent of client_daily_usage_date_updated_at_idx per day.
-- A day's watermark is when its last aggregation began (tenant_usage_days.aggregated_at, that
-- transaction's now()): every row it could not see was written by a transaction that had not
-- committed yet, so (the trigger stamping each write) has an updated_at later than the watermark less
-- %(margin)s, the longest a writer is expected to take from a write to its commit. A day is read again
-- when it has a row updated after that, and then only those rows (since); a row seen the last time
-- and read again changes nothing.
-- source_updated_at: the latest updated_at of the day now, recorded for the record (not a watermark:
-- a row committed late can carry an earlier updated_at than one already seen).
-- A deleted row leaves no trace in updated_at: see delete_stale_day_rows.sql.
SELECT d.day, s.latest AS source_updated_at, a.aggregated_at - %(margin)s::interval AS since,
       a.day IS NOT NULL AS recorded
FROM (SELECT g::date AS day FROM generate_series(%(from_day)s::date, %(to_day)s::date, interval '1 day') g) d
CROSS JOIN LATERAL (
    SELECT max(c.updated_at) AS latest FROM client_daily_usage c WHERE c.usage_date = d.day
) s
LEFT JOIN tenant_usage_days a ON a.day = d.day
WHERE d.day = %(day)s::date
   OR (s.latest IS NOT NULL AND (a.day IS NULL OR s.latest > a.aggregated_at - %(margin)s::interval))
ORDER BY d.day
