-- What a pipeline carries from one run to the next, whichever daemon made it: where the platform's
-- change feed continues (Zendesk's incremental export cursor), the instant the last listing began
-- (for platforms listed by modification time), and the values the platform allowed for the task's
-- fields when the last run started (a dropdown's live options).
CREATE TABLE pipeline_state (
    pipeline TEXT PRIMARY KEY,
    feed_cursor TEXT,
    listed_since BIGINT,
    allowed_values TEXT,
    updated_at BIGINT NOT NULL
);

-- Asynchronous platform writes (Zendesk update_many jobs), stored before they are polled so a
-- daemon killed while polling resumes the poll instead of submitting the changes again.
CREATE TABLE write_jobs (
    id BIGSERIAL PRIMARY KEY,
    pipeline TEXT NOT NULL,
    entity TEXT NOT NULL,
    job TEXT NOT NULL,
    external_ids TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX write_jobs_open ON write_jobs (pipeline) WHERE finished_at IS NULL;
ALTER TABLE items ADD COLUMN write_job_id BIGINT;
CREATE INDEX items_write_job ON items (write_job_id) WHERE write_job_id IS NOT NULL;
