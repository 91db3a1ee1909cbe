-- Users of the example service.
CREATE TABLE IF NOT EXISTS {{tables.users}} (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
