-- The days just aggregated: their new watermark (this transaction's start, earlier than anything it
-- read) and the latest usage updated_at each was read at. Written for every day read, so the
-- watermark moves on and a day is not read again once no row of it is newer than the margin allows.
INSERT INTO tenant_usage_days AS a (day, source_updated_at, aggregated_at)
SELECT d.day, d.source_updated_at, now()
FROM unnest(%(days)s::date[], %(source_updated_at)s::timestamptz[]) AS d (day, source_updated_at)
ON CONFLICT (day) DO UPDATE
    SET source_updated_at = EXCLUDED.source_updated_at, aggregated_at = EXCLUDED.aggregated_at
