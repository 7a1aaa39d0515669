-- Webhook intake (`POST /hooks/{pipeline}`): runs may be triggered by a webhook, and the records
-- webhooks name wait in `hook_queue` until their run's discovery takes them.
--
-- A run's trigger may now be `webhook`. SQLite cannot alter a CHECK constraint; this is the
-- procedure SQLite documents for loosening one (https://sqlite.org/lang_altertable.html, "making
-- other kinds of table schema changes"): edit the table's SQL in the schema table. No stored row
-- changes meaning. The schema changes below (CREATE TABLE, indexes) bump the schema version, so
-- every other connection reloads the edited definition.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, 'CHECK (trigger_kind IN (''schedule'', ''manual''))',
                          'CHECK (trigger_kind IN (''schedule'', ''manual'', ''webhook''))')
 WHERE type = 'table' AND name = 'runs';
PRAGMA writable_schema = RESET;

-- Webhook runs stand beside the pipeline's scheduled or manual run (the schedule stays the safety
-- net): the one-active-run rule is about those only.
DROP INDEX runs_one_active;
CREATE UNIQUE INDEX runs_one_active ON runs (pipeline)
    WHERE (status IN ('discovering', 'running', 'paused') OR review_phase = 'sample_review')
      AND trigger_kind <> 'webhook';
-- At most one webhook run per pipeline takes new records: the open one (discovering, not yet
-- closed by its discovery, which sets a cursor). Webhooks arriving close together join it.
CREATE UNIQUE INDEX runs_one_open_webhook ON runs (pipeline)
    WHERE trigger_kind = 'webhook' AND status = 'discovering' AND discovery_cursor IS NULL;

-- One row per record a verified webhook named, assigned to the open webhook run it joined.
CREATE TABLE hook_queue (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Removed with its run (an empty webhook run is discarded like an empty scheduled one).
    run_id       BIGINT  NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    pipeline     TEXT    NOT NULL,
    entity       TEXT    NOT NULL,
    external_id  TEXT    NOT NULL,
    received_at  BIGINT  NOT NULL,
    -- When the run's discovery made the record an item (in the same transaction).
    taken_at     BIGINT,
    UNIQUE (run_id, entity, external_id)
);
CREATE INDEX hook_queue_pipeline ON hook_queue (pipeline, received_at);
