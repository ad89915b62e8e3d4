-- The columns of the given tables in the connection's current schema, from information_schema.
SELECT table_name, column_name, data_type, is_nullable
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = ANY(%(tables)s)
ORDER BY table_name, ordinal_position
