-- Give back claims whose message could not be sent, inside the claiming transaction: the event is
-- never committed, so the next run (or a concurrent one waiting on the key) claims it again.
DELETE FROM events WHERE type = %(type)s AND dedup_key = ANY(%(dedup_keys)s::text[])
