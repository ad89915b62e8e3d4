-- The application's record of a Stripe event (CONTRACT.md: type stripe.<event type>, payload the event).
SELECT id, type, occurred_at
FROM events
WHERE type = %(type)s AND payload ->> 'id' = %(event_id)s
ORDER BY id
LIMIT 1
