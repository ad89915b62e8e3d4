-- A test tenant of the usage checks, fresh: created or reset (no usage, only its own quotas).
INSERT INTO tenants (id, slug, name, plan, status, billing_email)
VALUES (%(id)s, %(slug)s, %(name)s, %(plan)s, 'active', NULL)
ON CONFLICT (id) DO UPDATE SET plan = EXCLUDED.plan, status = 'active', updated_at = now()
