-- Stripe events about one object (a PaymentIntent, an invoice) the application has recorded.
SELECT id, type, payload ->> 'id' AS event_id, occurred_at
FROM events
WHERE type = %(type)s AND payload -> 'data' -> 'object' ->> 'id' = %(object_id)s
ORDER BY id
LIMIT 1
