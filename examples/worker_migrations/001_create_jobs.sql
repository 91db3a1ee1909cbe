-- The background worker's queue: jobs are claimed with FOR UPDATE SKIP LOCKED inside the
-- transaction that records their result, so a worker that dies mid-job leaves it queued.
CREATE TABLE IF NOT EXISTS {{tables.jobs}} (
    id BIGSERIAL PRIMARY KEY,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'done', 'parked')),
    attempts INT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS jobs_queued_idx ON {{tables.jobs}} (id) WHERE status = 'queued';

CREATE TABLE IF NOT EXISTS {{tables.job_results}} (
    job_id BIGINT PRIMARY KEY REFERENCES {{tables.jobs}} (id),
    result TEXT NOT NULL,
    worker TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
