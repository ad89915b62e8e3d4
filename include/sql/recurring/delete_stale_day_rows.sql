-- Day rows of the days %(days)s whose usage row no longer exists (deleted or corrected upstream).
DELETE FROM tenant_usage tu
WHERE tu.period = 'day'
  AND tu.period_start = ANY(%(days)s::date[])
  AND NOT EXISTS (
      SELECT 1 FROM client_daily_usage c
      WHERE c.usage_date = tu.period_start AND c.tenant_id = tu.tenant_id AND c.metric = tu.metric
  )
