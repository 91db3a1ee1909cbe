-- pgdbm:no-transaction
-- Built without blocking writes; each statement runs on its own.
CREATE INDEX CONCURRENTLY IF NOT EXISTS posts_user_id_idx ON {{tables.posts}} (user_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS users_created_at_idx ON {{tables.users}} (created_at);
