-- The error-rate pause (pipelines' `pause_on_error_rate`) and resuming a paused run.

-- The status a run had when it paused itself ('discovering' or 'running'), so resuming returns there.
ALTER TABLE runs ADD COLUMN paused_from TEXT;
-- When and by whom a paused run was last resumed; the error-rate window counts only outcomes since.
ALTER TABLE runs ADD COLUMN resumed_at BIGINT;
ALTER TABLE runs ADD COLUMN resumed_by TEXT;
