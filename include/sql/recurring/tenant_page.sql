-- The next page of tenant ids after %(after_id)s: its last id and its size (0 at the end).
SELECT max(id) AS to_id, count(*) AS tenants
FROM (SELECT id FROM tenants WHERE id > %(after_id)s ORDER BY id LIMIT %(page_size)s) page
