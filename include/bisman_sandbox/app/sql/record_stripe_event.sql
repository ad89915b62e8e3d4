-- Record a verified Stripe event once: a redelivery hits the dedup_key and inserts nothing.
INSERT INTO events (tenant_id, type, payload, occurred_at, dedup_key)
VALUES (
    (SELECT id FROM tenants WHERE stripe_customer_id = %(customer_id)s ORDER BY id LIMIT 1),
    %(type)s,
    %(payload)s,
    COALESCE(to_timestamp(%(created)s::double precision), now()),
    %(dedup_key)s
)
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id, tenant_id
