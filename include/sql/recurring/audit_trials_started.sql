-- Tenants created during the week on a trial (the application starts every trial at sign-up).
SELECT count(*) AS started
FROM tenants
WHERE created_at >= %(from_ts)s AND created_at < %(to_ts)s AND trial_ends_at IS NOT NULL
