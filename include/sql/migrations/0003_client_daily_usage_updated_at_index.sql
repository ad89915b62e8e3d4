-- Added by bisman-ops for the daily aggregation's late-usage check (CONTRACT.md: the project may add,
-- and says so). Each run asks, for each of the last 35 days, the latest updated_at of that day's
-- usage rows; with this index that is one index descent per day instead of reading the day's
-- ~400k rows (14M rows for the lookback at 100k tenants).
CREATE INDEX IF NOT EXISTS client_daily_usage_date_updated_at_idx ON client_daily_usage (usage_date, updated_at);
