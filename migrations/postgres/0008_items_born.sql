-- Discovery now inserts each item straight into `queued` or `skipped` (its `discovered` event is
-- still written): one UPDATE less per queued item, and none at all (it was one statement each) for a
-- skipped one. The database still holds items to their life: an item can only be born discovered,
-- queued or skipped.
CREATE FUNCTION items_legal_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state NOT IN ('discovered', 'queued', 'skipped') THEN
        RAISE EXCEPTION 'illegal initial item state';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER items_legal_insert BEFORE INSERT ON items
    FOR EACH ROW EXECUTE FUNCTION items_legal_insert();

