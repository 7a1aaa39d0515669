-- Review policies (sample gate), reviewer actions and undo.

-- Undo: a written item can be reverted (its replaced values written back) or, when the record was
-- edited upstream since our write, end as a revert conflict with nothing written.
INSERT INTO item_states (name) VALUES ('reverted'), ('revert_conflict');
INSERT INTO item_transitions (from_state, to_state) VALUES
    ('written', 'reverted'), ('written', 'revert_conflict');

-- Set on items proposed while their run's sample gate was closed: the sample a reviewer judges.
ALTER TABLE items ADD COLUMN sample BIGINT NOT NULL DEFAULT 0;
CREATE INDEX items_sample ON items (run_id) WHERE sample = 1;

-- The sample gate of a `sample_first` run. review_phase: NULL (no gate), 'sampling' (enriching the
-- sample), 'sample_review' (sample complete, the rest held for a reviewer), 'released'.
ALTER TABLE runs ADD COLUMN review_phase TEXT CHECK (review_phase IN ('sampling', 'sample_review', 'released'));
ALTER TABLE runs ADD COLUMN sample_size BIGINT;
-- Auto-release threshold in parts per million of reviewed sample items rejected; NULL: manual only.
ALTER TABLE runs ADD COLUMN auto_release_max_reject_ppm BIGINT;
ALTER TABLE runs ADD COLUMN released_at BIGINT;
ALTER TABLE runs ADD COLUMN released_by TEXT;

-- A run held for sample review is still the pipeline's active run: no second run starts beside it.
DROP INDEX runs_one_active;
CREATE UNIQUE INDEX runs_one_active ON runs (pipeline)
    WHERE status IN ('discovering', 'running', 'paused') OR review_phase = 'sample_review';
