-- Notifications: webhooks about runs ("sample waiting for review", "run paused", "run finished",
-- "writes failing"), kept as an outbox so each is recorded once and delivered from the table.

-- One row per notification and endpoint. The key (run, event, occurrence, endpoint) is unique, so
-- several daemons (or one daemon after a restart) that see the same run event record it once.
-- `occurrence` is the id of the event row it is about (a pause's event, the first failed write of
-- an episode), so a second pause after a resume is a new notification.
CREATE TABLE notifications (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           BIGINT  NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    pipeline         TEXT    NOT NULL,
    event            TEXT    NOT NULL
        CHECK (event IN ('sample_waiting', 'run_paused', 'run_finished', 'writes_failing')),
    occurrence       BIGINT  NOT NULL,
    -- The endpoint's name in `[notifications.webhooks.<name>]`, and its URL masked for people
    -- (scheme and host only: webhook URLs such as Slack's carry their secret in the path).
    endpoint         TEXT    NOT NULL,
    target           TEXT    NOT NULL,
    -- The JSON body, fixed when the notification is recorded (no secrets in it).
    payload          TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT  NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    -- When it was delivered or given up on.
    finished_at      BIGINT,
    last_error       TEXT,
    UNIQUE (run_id, event, occurrence, endpoint)
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX notifications_run ON notifications (run_id, id);

-- Every delivery attempt: what the receiver answered, or why it could not be reached.
CREATE TABLE notification_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id BIGINT  NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt         BIGINT  NOT NULL,
    at              BIGINT  NOT NULL,
    duration_ms     BIGINT  NOT NULL,
    http_status     BIGINT,
    error           TEXT,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'failed')),
    -- When the next attempt is due (outcome 'retrying').
    retry_at        BIGINT,
    UNIQUE (notification_id, attempt)
);

-- How far the daemons have looked through the event log for run events to notify about. It starts
-- at the newest event, so upgrading does not notify about history.
CREATE TABLE notification_watch (
    id       BIGINT PRIMARY KEY CHECK (id = 1),
    event_id BIGINT NOT NULL
);
INSERT INTO notification_watch (id, event_id) SELECT 1, COALESCE(MAX(id), 0) FROM events;

-- The watcher looks up the few event kinds it notifies about by id, never the whole log.
CREATE INDEX events_kind_state ON events (kind, to_state, id);
