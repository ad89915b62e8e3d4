-- The BISMAN ERP application tables the DAGs read and write (CONTRACT.md, "Application database").
-- The application's own migrations (prisma) own them in production; this is the equivalent schema
-- for the sandbox and tests.

CREATE TABLE tenants (
    id                     bigint PRIMARY KEY,
    slug                   text NOT NULL UNIQUE,
    name                   text NOT NULL,
    plan                   text NOT NULL CHECK (plan IN ('free', 'pro', 'enterprise')),
    status                 text NOT NULL CHECK (status IN ('trialing', 'active', 'past_due', 'canceled')),
    trial_ends_at          timestamptz NULL,
    billing_email          text NULL,
    stripe_customer_id     text NULL,
    stripe_subscription_id text NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE plan_quotas (
    plan   text   NOT NULL CHECK (plan IN ('free', 'pro', 'enterprise')),
    metric text   NOT NULL,
    period text   NOT NULL CHECK (period IN ('day', 'month')),
    quota  bigint NULL,  -- NULL: unlimited
    PRIMARY KEY (plan, metric, period)
);

CREATE TABLE tenant_quotas (
    tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    metric    text   NOT NULL,
    period    text   NOT NULL CHECK (period IN ('day', 'month')),
    quota     bigint NULL,  -- NULL: unlimited, overriding the plan's limit
    PRIMARY KEY (tenant_id, metric, period)
);

CREATE TABLE client_daily_usage (
    tenant_id  bigint      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    usage_date date        NOT NULL,
    metric     text        NOT NULL,
    quantity   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, usage_date, metric)
);
-- The daily jobs read one day (or one month) for every tenant.
CREATE INDEX client_daily_usage_date_idx ON client_daily_usage (usage_date);

CREATE TABLE tenant_usage (
    tenant_id    bigint      NOT NULL,
    metric       text        NOT NULL,
    period       text        NOT NULL CHECK (period IN ('day', 'month')),
    period_start date        NOT NULL,
    quantity     bigint      NOT NULL,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, metric, period, period_start)
);

CREATE TABLE events (
    id          bigserial   PRIMARY KEY,
    tenant_id   bigint      NULL,
    type        text        NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    dedup_key   text        NULL UNIQUE
);
CREATE INDEX events_type_occurred_at_idx ON events (type, occurred_at);
