-- The days just aggregated, with the latest usage updated_at each was read at.
INSERT INTO tenant_usage_days AS a (day, source_updated_at, aggregated_at)
SELECT d.day, d.source_updated_at, now()
FROM unnest(%(days)s::date[], %(source_updated_at)s::timestamptz[]) AS d (day, source_updated_at)
ON CONFLICT (day) DO UPDATE
    SET source_updated_at = EXCLUDED.source_updated_at, aggregated_at = EXCLUDED.aggregated_at
    WHERE a.source_updated_at IS DISTINCT FROM EXCLUDED.source_updated_at
