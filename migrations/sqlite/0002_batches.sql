-- Provider batches (mode = "batch"), item packing, and daemon presence for shared rate limits.

INSERT INTO item_states (name) VALUES ('batched');
INSERT INTO item_transitions (from_state, to_state) VALUES
    ('enriching', 'batched'), ('batched', 'proposed'), ('batched', 'queued'), ('batched', 'dead');

-- The provider batch an item is in, and which line of it (several items share a line when packed).
ALTER TABLE items ADD COLUMN batch_id BIGINT;
ALTER TABLE items ADD COLUMN batch_line TEXT;
-- Set when a packed answer left the item out: it is sent alone from then on.
ALTER TABLE items ADD COLUMN solo INTEGER NOT NULL DEFAULT 0;
CREATE INDEX items_batch ON items (batch_id) WHERE batch_id IS NOT NULL;

CREATE TABLE batches (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id             BIGINT NOT NULL REFERENCES runs (id),
    pipeline           TEXT   NOT NULL,
    provider           TEXT   NOT NULL,
    model              TEXT   NOT NULL,
    -- Our name for the batch, sent with it where the provider keeps one (OpenAI metadata, Gemini
    -- display name), so a batch submitted just before a crash can be found again.
    tag                TEXT   NOT NULL UNIQUE,
    -- NULL until the provider has accepted the batch.
    provider_batch_id  TEXT,
    state              TEXT   NOT NULL CHECK (state IN ('preparing', 'submitted', 'ended', 'failed', 'abandoned')),
    lines              BIGINT NOT NULL,
    items              BIGINT NOT NULL,
    bytes              BIGINT NOT NULL,
    -- Whoever is submitting a preparing batch, until when.
    lease_owner        TEXT,
    lease_expires_at   BIGINT,
    next_poll_at       BIGINT NOT NULL DEFAULT 0,
    polls              BIGINT NOT NULL DEFAULT 0,
    detail             TEXT,
    created_at         BIGINT NOT NULL,
    submitted_at       BIGINT,
    ended_at           BIGINT
);
CREATE INDEX batches_poll ON batches (pipeline, state, next_poll_at);

CREATE TABLE daemons (
    owner      TEXT   PRIMARY KEY,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);
