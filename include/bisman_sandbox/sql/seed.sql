-- Sandbox seed data: plan limits, tenants in every plan and status, a few overrides and a week of
-- metered usage. Idempotent: existing rows are left alone (ON CONFLICT DO NOTHING), so DAG runs
-- that changed a tenant (a downgraded trial, say) keep their changes when the sandbox restarts.
-- Dates are relative to the current UTC day so the daily jobs always find yesterday's usage.

INSERT INTO plan_quotas (plan, metric, period, quota) VALUES
    ('free',       'api_calls',        'day',   1000),
    ('free',       'api_calls',        'month', 20000),
    ('free',       'storage_mb',       'month', 500),
    ('free',       'active_users',     'month', 3),
    ('free',       'invoices_created', 'month', 50),
    ('pro',        'api_calls',        'day',   50000),
    ('pro',        'api_calls',        'month', 1000000),
    ('pro',        'storage_mb',       'month', 20000),
    ('pro',        'active_users',     'month', 50),
    ('pro',        'invoices_created', 'month', 2000),
    -- Enterprise: NULL is unlimited.
    ('enterprise', 'api_calls',        'day',   NULL),
    ('enterprise', 'api_calls',        'month', NULL),
    ('enterprise', 'storage_mb',       'month', 500000),
    ('enterprise', 'active_users',     'month', NULL),
    ('enterprise', 'invoices_created', 'month', NULL)
ON CONFLICT (plan, metric, period) DO NOTHING;

INSERT INTO tenants (id, slug, name, plan, status, trial_ends_at, billing_email,
                     stripe_customer_id, stripe_subscription_id)
VALUES
    (1, 'acme-corp',         'Acme Corp',         'pro',        'active',   NULL,
        'billing+acme-corp@tenants.bisman.test',         'cus_sandbox_acme_corp',   'sub_sandbox_acme_corp'),
    (2, 'globex',            'Globex',            'enterprise', 'active',   NULL,
        'billing+globex@tenants.bisman.test',            'cus_sandbox_globex',      'sub_sandbox_globex'),
    (3, 'initech',           'Initech',           'free',       'active',   NULL,
        'billing+initech@tenants.bisman.test',           'cus_sandbox_initech',     NULL),
    -- Trial still running.
    (4, 'umbrella',          'Umbrella',          'pro',        'trialing', now() + interval '10 days',
        'billing+umbrella@tenants.bisman.test',          'cus_sandbox_umbrella',    'sub_sandbox_umbrella'),
    -- Trial ended two days ago without converting: the trial-expiry DAG downgrades it.
    (5, 'hooli',             'Hooli',             'pro',        'trialing', now() - interval '2 days',
        'billing+hooli@tenants.bisman.test',             'cus_sandbox_hooli',       'sub_sandbox_hooli'),
    (6, 'stark-industries',  'Stark Industries',  'enterprise', 'past_due', NULL,
        'billing+stark-industries@tenants.bisman.test',  'cus_sandbox_stark',       'sub_sandbox_stark'),
    (7, 'wayne-enterprises', 'Wayne Enterprises', 'free',       'canceled', NULL,
        'billing+wayne-enterprises@tenants.bisman.test', 'cus_sandbox_wayne',       'sub_sandbox_wayne'),
    (8, 'soylent',           'Soylent',           'enterprise', 'trialing', now() + interval '3 days',
        'billing+soylent@tenants.bisman.test',           'cus_sandbox_soylent',     'sub_sandbox_soylent')
ON CONFLICT (id) DO NOTHING;

-- Overrides of the plan's limit.
INSERT INTO tenant_quotas (tenant_id, metric, period, quota) VALUES
    (1, 'api_calls',        'day',   75000),
    (3, 'invoices_created', 'month', 100)
ON CONFLICT (tenant_id, metric, period) DO NOTHING;

-- Today (partial) and the six days before it. Initech (free) runs close to its daily api_calls
-- limit of 1000, so the quota alerts have something to find.
INSERT INTO client_daily_usage (tenant_id, usage_date, metric, quantity)
SELECT u.tenant_id,
       (now() AT TIME ZONE 'UTC')::date - d.days_ago,
       u.metric,
       u.base + u.step * (6 - d.days_ago)
FROM (VALUES
        (1, 'api_calls',        30000, 1500),
        (1, 'storage_mb',       8000,  50),
        (1, 'active_users',     30,    1),
        (1, 'invoices_created', 40,    5),
        (2, 'api_calls',        200000, 5000),
        (2, 'storage_mb',       120000, 500),
        (2, 'active_users',     400,   5),
        (3, 'api_calls',        700,   30),
        (3, 'storage_mb',       300,   10),
        (3, 'invoices_created', 2,     1),
        (4, 'api_calls',        5000,  400),
        (4, 'active_users',     8,     1),
        (5, 'api_calls',        1200,  100),
        (6, 'api_calls',        90000, 2000),
        (8, 'api_calls',        15000, 1000)
     ) AS u (tenant_id, metric, base, step)
CROSS JOIN generate_series(0, 6) AS d (days_ago)
ON CONFLICT (tenant_id, usage_date, metric) DO NOTHING;
