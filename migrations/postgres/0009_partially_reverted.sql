-- Undo that could not put everything back: the revert was written and read back, and part of our
-- write is still on the record because the platform cannot restore it through the configured
-- credentials (WooCommerce ignores an empty image alt, so alt text our write added stays). The item
-- says what is left and why; it is never counted as reverted.
INSERT INTO item_states (name) VALUES ('partially_reverted');
INSERT INTO item_transitions (from_state, to_state) VALUES ('written', 'partially_reverted');
