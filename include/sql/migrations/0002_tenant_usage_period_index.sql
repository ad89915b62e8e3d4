-- Added by bisman-ops for its recurring jobs (CONTRACT.md: the project may add, and says so).
-- The daily aggregation and the quota alerts read one period of tenant_usage for every tenant
-- (`WHERE period = 'day' AND period_start BETWEEN ...`, `WHERE period = 'month' AND period_start = ...`);
-- the primary key leads with tenant_id and cannot serve that, so without this index each run scans
-- the whole table, which grows by ~400k rows a day at 100k tenants.
CREATE INDEX IF NOT EXISTS tenant_usage_period_start_idx ON tenant_usage (period, period_start);
