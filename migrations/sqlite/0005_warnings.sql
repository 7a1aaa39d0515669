-- How many task checks warned about an item's proposal, so the review queue filters on real
-- validator warnings (not on text inside the proposal) with an index instead of a scan.
ALTER TABLE items ADD COLUMN warnings INTEGER NOT NULL DEFAULT 0;
UPDATE items SET warnings = json_array_length(proposal, '$.warnings')
    WHERE proposal IS NOT NULL AND json_type(proposal, '$.warnings') = 'array';
CREATE INDEX items_review ON items (state, warnings, id);
