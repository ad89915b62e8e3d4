-- Trials over at %(as_of)s (a trial ending exactly then is over), oldest tenant id first, a page at a time;
-- %(tenant_ids)s, when not NULL, limits the run to those tenants (tests, targeted re-runs).
SELECT id AS tenant_id, slug, name, plan, billing_email, trial_ends_at, stripe_customer_id,
       stripe_subscription_id
FROM tenants
WHERE status = 'trialing' AND trial_ends_at <= %(as_of)s AND id > %(after_id)s
  AND (%(tenant_ids)s::bigint[] IS NULL OR id = ANY(%(tenant_ids)s::bigint[]))
ORDER BY id
LIMIT %(limit)s
