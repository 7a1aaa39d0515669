-- Discovery now inserts each item straight into `queued` or `skipped` (its `discovered` event is
-- still written): one UPDATE less per queued item, and none at all (it was one statement each) for a
-- skipped one. The database still holds items to their life: an item can only be born discovered,
-- queued or skipped.
CREATE TRIGGER items_legal_insert BEFORE INSERT ON items
WHEN NEW.state NOT IN ('discovered', 'queued', 'skipped')
BEGIN
    SELECT RAISE(ABORT, 'illegal initial item state');
END;

