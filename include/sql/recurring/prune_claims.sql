-- Claims long expired: their events (if sent) stay in events, which is what deduplicates them.
DELETE FROM bisman_ops_claims WHERE claimed_at < now() - interval '40 days'
