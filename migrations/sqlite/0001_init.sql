-- enrichd store, SQLite. Times are Unix milliseconds; JSON is TEXT; money is integer micro-USD.

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline         TEXT    NOT NULL,
    trigger_kind     TEXT    NOT NULL CHECK (trigger_kind IN ('schedule', 'manual')),
    -- The cron tick a scheduled run belongs to; NULL for manual runs. Unique per pipeline, so several
    -- daemons firing the same tick create one run.
    scheduled_for    BIGINT,
    status           TEXT    NOT NULL CHECK (status IN ('discovering', 'running', 'awaiting_review', 'paused', 'done', 'failed', 'cancelled')),
    status_reason    TEXT,
    item_limit       BIGINT,
    max_attempts     INTEGER NOT NULL,
    budget_micros    BIGINT,
    discovery_cursor TEXT,
    discovery_owner  TEXT,
    discovery_expires_at BIGINT,
    discovered       BIGINT  NOT NULL DEFAULT 0,
    cost_micros      BIGINT  NOT NULL DEFAULT 0,
    tokens_in        BIGINT  NOT NULL DEFAULT 0,
    tokens_out       BIGINT  NOT NULL DEFAULT 0,
    created_at       BIGINT  NOT NULL,
    finished_at      BIGINT,
    UNIQUE (pipeline, scheduled_for)
);
-- At most one run per pipeline is discovering or running at a time.
CREATE UNIQUE INDEX runs_one_active ON runs (pipeline) WHERE status IN ('discovering', 'running', 'paused');

CREATE TABLE item_states (name TEXT PRIMARY KEY);
INSERT INTO item_states (name) VALUES
    ('discovered'), ('queued'), ('enriching'), ('proposed'), ('edited'), ('approved'), ('rejected'),
    ('writing'), ('written'), ('conflict'), ('write_failed'), ('skipped'), ('dead');

-- The item's life (DESIGN.md). A trigger refuses any state change not listed here.
CREATE TABLE item_transitions (
    from_state TEXT NOT NULL REFERENCES item_states (name),
    to_state   TEXT NOT NULL REFERENCES item_states (name),
    PRIMARY KEY (from_state, to_state)
);
INSERT INTO item_transitions (from_state, to_state) VALUES
    ('discovered', 'queued'), ('discovered', 'skipped'),
    ('queued', 'enriching'), ('queued', 'skipped'), ('queued', 'dead'),
    ('enriching', 'proposed'), ('enriching', 'queued'), ('enriching', 'skipped'), ('enriching', 'dead'),
    ('proposed', 'approved'), ('proposed', 'rejected'), ('proposed', 'edited'),
    ('edited', 'edited'), ('edited', 'approved'), ('edited', 'rejected'),
    ('approved', 'writing'),
    ('writing', 'written'), ('writing', 'conflict'), ('writing', 'write_failed'), ('writing', 'dead'),
    ('write_failed', 'writing'), ('write_failed', 'dead');

CREATE TABLE items (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           BIGINT  NOT NULL REFERENCES runs (id),
    pipeline         TEXT    NOT NULL,
    entity           TEXT    NOT NULL,
    external_id      TEXT    NOT NULL,
    state            TEXT    NOT NULL REFERENCES item_states (name),
    prev_state       TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    write_attempts   INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    next_attempt_at  BIGINT  NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    record_version   TEXT    NOT NULL,
    input            TEXT    NOT NULL,
    input_hash       TEXT    NOT NULL,
    task_version     TEXT    NOT NULL,
    proposal         TEXT,
    raw_output       TEXT,
    written_version  TEXT,
    cost_micros      BIGINT  NOT NULL DEFAULT 0,
    tokens_in        BIGINT  NOT NULL DEFAULT 0,
    tokens_out       BIGINT  NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    UNIQUE (run_id, entity, external_id),
    CHECK ((state IN ('enriching', 'writing')) = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX items_claim ON items (pipeline, state, next_attempt_at);
CREATE INDEX items_run_state ON items (run_id, state);
CREATE INDEX items_lease ON items (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX items_reuse ON items (pipeline, input_hash);
CREATE INDEX items_record ON items (pipeline, entity, external_id);

CREATE TRIGGER items_legal_transition BEFORE UPDATE OF state ON items
WHEN NEW.state <> OLD.state
 AND NOT EXISTS (SELECT 1 FROM item_transitions WHERE from_state = OLD.state AND to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'illegal item transition');
END;

-- Append-only audit trail.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     BIGINT,
    item_id    BIGINT,
    at         BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    actor      TEXT   NOT NULL,
    detail     TEXT
);
CREATE INDEX events_item ON events (item_id, id);
CREATE INDEX events_run ON events (run_id, id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- OAuth2 tokens and other secrets a connection acquires at run time, encrypted (XChaCha20-Poly1305).
CREATE TABLE credentials (
    connection TEXT PRIMARY KEY,
    nonce      TEXT   NOT NULL,
    ciphertext TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
