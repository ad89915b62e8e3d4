-- Primary keys, unique constraints and foreign keys of the given tables, one row per constraint:
-- its columns in key order and, for a foreign key, the table it references.
SELECT tc.table_name,
       tc.constraint_type,
       tc.constraint_name,
       array_agg(kcu.column_name::text ORDER BY kcu.ordinal_position) AS columns,
       (SELECT min(ccu.table_name::text)
          FROM information_schema.constraint_column_usage ccu
         WHERE ccu.constraint_schema = tc.constraint_schema
           AND ccu.constraint_name = tc.constraint_name) AS referenced_table
FROM information_schema.table_constraints tc
JOIN information_schema.key_column_usage kcu
  ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name
 AND kcu.table_name = tc.table_name
WHERE tc.table_schema = current_schema() AND tc.table_name = ANY(%(tables)s)
  AND tc.constraint_type IN ('PRIMARY KEY', 'UNIQUE', 'FOREIGN KEY')
GROUP BY tc.table_name, tc.constraint_type, tc.constraint_name, tc.constraint_schema
ORDER BY tc.table_name, tc.constraint_type, tc.constraint_name
