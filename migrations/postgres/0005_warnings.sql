-- How many task checks warned about an item's proposal, so the review queue filters on real
-- validator warnings (not on text inside the proposal) with an index instead of a scan.
ALTER TABLE items ADD COLUMN warnings BIGINT NOT NULL DEFAULT 0;
UPDATE items SET warnings = jsonb_array_length(proposal::jsonb -> 'warnings')
    WHERE proposal IS NOT NULL AND jsonb_typeof(proposal::jsonb -> 'warnings') = 'array';
CREATE INDEX items_review ON items (state, warnings, id);
