-- Events of one type a DAG run recorded (payload.run_id), oldest first.
SELECT e.id, e.tenant_id, e.payload, e.occurred_at, e.dedup_key
FROM events e
WHERE e.type = %(type)s AND e.occurred_at >= %(since)s AND e.payload ->> 'run_id' = %(run_id)s
ORDER BY e.dedup_key
