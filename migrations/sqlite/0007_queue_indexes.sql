-- Claims take the lowest ids first among the items a phase can work on. The items_claim index
-- (pipeline, state, next_attempt_at) cannot give them in id order, so every claim sorted the whole
-- queue: at 100,000 queued items each claim of a few items read and sorted 100,000 rows. These
-- partial indexes hold only the claimable items, in id order, so a claim reads as many rows as it takes.
CREATE INDEX items_queued ON items (pipeline, id) WHERE state = 'queued';
CREATE INDEX items_writable ON items (pipeline, id) WHERE state IN ('approved', 'write_failed');
