-- Added by bisman-ops: state of its recurring jobs, in tables of its own (the application never
-- reads them).

-- A notification being sent (claim / send / record): the claim is committed before the mail goes
-- out, so no transaction stays open while mailing; once sent, the claim is marked recorded and its
-- event written to `events` in one short transaction. A claim whose sender died is taken over after
-- `expires_at`. Recorded claims are kept (a concurrent claimer then sees "recorded", not "free")
-- and pruned after 40 days by the jobs themselves.
CREATE TABLE IF NOT EXISTS bisman_ops_claims (
    dedup_key   text        PRIMARY KEY,
    type        text        NOT NULL,
    tenant_id   bigint      NULL,
    payload     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    claimed_by  text        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    recorded_at timestamptz NULL
);
CREATE INDEX IF NOT EXISTS bisman_ops_claims_recorded_at_idx ON bisman_ops_claims (recorded_at);

-- The days the daily aggregation has rolled into tenant_usage, each with the latest
-- client_daily_usage.updated_at of that day it saw: a later updated_at means late usage, and the
-- day (with its month) is aggregated again.
CREATE TABLE IF NOT EXISTS tenant_usage_days (
    day               date        PRIMARY KEY,
    source_updated_at timestamptz NULL,
    aggregated_at     timestamptz NOT NULL DEFAULT now()
);
