-- Wake idle workers when jobs are enqueued: one notification per INSERT or COPY statement on
-- channel jobs_<schema> (the worker listens to jobs_{{schema}}), sent by PostgreSQL only when the
-- enqueuing transaction commits. The channel comes from the table's own schema, so every tenant's
-- queue wakes only its own workers. started_at records when a worker claimed the job (for the
-- enqueue-to-start latency of benches/events.rs).
ALTER TABLE {{tables.jobs}} ADD COLUMN IF NOT EXISTS started_at TIMESTAMPTZ;

CREATE OR REPLACE FUNCTION {{schema}}.notify_jobs_enqueued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobs_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER jobs_enqueued
AFTER INSERT ON {{tables.jobs}}
FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.notify_jobs_enqueued();
