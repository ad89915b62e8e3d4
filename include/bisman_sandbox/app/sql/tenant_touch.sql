-- The admin write: mark a tenant updated; reports whether it ran on a replica (it must not).
UPDATE tenants
SET updated_at = now()
WHERE id = %(tenant_id)s
RETURNING id, updated_at, pg_is_in_recovery() AS in_recovery
