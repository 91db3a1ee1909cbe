INSERT INTO <<tables.posts>> (user_id, title, body)
VALUES (:user_id, :title, :body)
RETURNING id
