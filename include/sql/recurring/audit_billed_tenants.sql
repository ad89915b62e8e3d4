-- Every tenant with a Stripe subscription, for the reconciliation.
SELECT id AS tenant_id, slug, plan, status, stripe_subscription_id
FROM tenants
WHERE stripe_subscription_id IS NOT NULL
ORDER BY id
