-- Regenerate with a note: a reviewer sends a proposal waiting for review back to the model, and the
-- new proposal replaces it, waiting for review again (`proposed`). From `edited` the reviewer's edit
-- is discarded with the old proposal (both stay in the item's `regenerated` event). `proposed` →
-- `proposed` changes no state (the trigger does not look at it) and is listed so the table and the
-- code's transitions (src/store/state.rs) stay one and the same.
INSERT INTO item_transitions (from_state, to_state) VALUES ('proposed', 'proposed'), ('edited', 'proposed');
