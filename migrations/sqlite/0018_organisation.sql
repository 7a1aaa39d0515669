-- What the organisation behind a pipeline's connection uses (currencies, tax rates, accounts), read
-- when a run starts, so task rules on every daemon and in a resumed run check against the same facts.
ALTER TABLE pipeline_state ADD COLUMN organisation TEXT;
