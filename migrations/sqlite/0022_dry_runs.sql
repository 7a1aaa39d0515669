-- The pipeline's last dry run from the pipelines page: when, by whom, how many records were read
-- and how many would be enriched. The page shows it beside the items in our database, so nobody has
-- to list a 15,000-record catalogue on every page view to see roughly what a run would take on.
ALTER TABLE pipeline_state ADD COLUMN dry_run_at BIGINT;
ALTER TABLE pipeline_state ADD COLUMN dry_run_by TEXT;
ALTER TABLE pipeline_state ADD COLUMN dry_run_read BIGINT;
ALTER TABLE pipeline_state ADD COLUMN dry_run_candidates BIGINT;
