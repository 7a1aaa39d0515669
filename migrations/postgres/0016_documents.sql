-- Documents read by the model (issue 16): the attachment list a connector gave with each record,
-- and the bytes of every attachment fetched for an item, kept so a retry, a batch resubmission or
-- the review page never fetch them from the platform again.

-- The record's attachments as listed (JSON array of AttachmentRef); NULL when it had none.
ALTER TABLE items ADD COLUMN attachments TEXT;

CREATE TABLE item_documents (
    item_id       BIGINT  NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    attachment_id TEXT    NOT NULL,
    -- Order in the record's attachment list: the order the model sees them in.
    position      INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    media_type    TEXT    NOT NULL,
    bytes         BYTEA   NOT NULL,
    sha256        TEXT    NOT NULL,
    -- The PDF's text layer, extracted locally; NULL for images and PDFs without one.
    text          TEXT,
    pages         INTEGER,
    fetched_at    BIGINT  NOT NULL,
    PRIMARY KEY (item_id, attachment_id)
);
