-- Billing keeps its own `users` table (billing contacts): the same placeholder, another table.
CREATE TABLE IF NOT EXISTS {{tables.users}} (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL,
    plan TEXT NOT NULL DEFAULT 'free'
);
