-- Which of the application's tables exist in the restored database (schema public).
SELECT table_name
FROM information_schema.tables
WHERE table_schema = 'public'
  AND table_name = ANY(%(tables)s)
