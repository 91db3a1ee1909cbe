-- A user's posts whose title is one of two, newest first: :user_id used twice binds once.
SELECT p.title
FROM {{tables.posts}} p
JOIN {{tables.users}} u ON u.id = p.user_id
WHERE u.id = :user_id
  AND p.user_id = :user_id
  AND p.title = ANY (ARRAY[:first, :second]::text[])
ORDER BY p.id
