-- What a write replaced (kept for undo), and the read-after-write check of what it wrote.

-- JSON object: each written field's value upstream just before our write.
ALTER TABLE items ADD COLUMN replaced TEXT;
-- When the written values were read back and compared.
ALTER TABLE items ADD COLUMN verified_at BIGINT;
-- JSON array of {field, written, stored, reason} for fields that did not hold the written value;
-- NULL when every field held (or the check has not run).
ALTER TABLE items ADD COLUMN verify_issues TEXT;
CREATE INDEX items_verify_issues ON items (pipeline) WHERE verify_issues IS NOT NULL;
