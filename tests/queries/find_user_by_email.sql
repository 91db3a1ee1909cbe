-- A user by email. Named parameters and placeholders work in a query file as in a literal;
-- this comment's :colons and the string below are left alone.
SELECT id, email, name
FROM <<tables.users>>
WHERE email = :email
  AND coalesce(name, '') <> 'x:y'
