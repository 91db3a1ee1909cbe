-- tests/ui/tsql_file_unknown_table.rs: the error names this file, line 4, column 6.
SELECT id
FROM <<tables.users>> u
JOIN <<tables.accounts>> a ON a.user_id = u.id
WHERE u.id = :id
