-- Recorded claims older than any period they deduplicate within (their events stay in events).
DELETE FROM bisman_ops_claims WHERE recorded_at < now() - interval '40 days'
