//! The end of an undo that could not put everything back (the rest of undo's moves are with the
//! review actions in `review.rs`).

use serde_json::Value;

use super::items::{Bind, Move};
use super::{Item, ItemState, Result, Store};

impl Store {
    /// `written` → `partially_reverted`: the revert was written and read back by `actor`, and part of
    /// our write is still on the record. `left` says what and why (kept as the item's `last_error`);
    /// `detail` (what was restored, what is left) goes into the event.
    pub async fn mark_partially_reverted(&self, item: &Item, actor: &str, left: &str, detail: Value) -> Result<Item> {
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Written],
                to: ItemState::PartiallyReverted,
                owner: None,
                sets: vec![("last_error", Bind::Text(left.into()))],
                raw_sets: &[],
                guard: None,
                actor,
                detail: Some(detail),
                run_usage: None,
            },
        )
        .await
    }
}
