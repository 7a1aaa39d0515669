//! Regenerations: a reviewer sent a proposal waiting for review back to the model with a note, and
//! the new answer replaces it (see `crate::engine::regenerate`). The store's part is the one
//! conditional move that keeps it — only while the proposal the model was shown is still the one
//! waiting — and the audit trail: a `regenerated` event with the note, the old proposal and the new
//! values, or a `regenerate_failed` event when no new proposal came of it.

use serde_json::{Value, json};
use sqlx::AssertSqlSafe;

use super::items::{ITEM_COLUMNS, NewEvent, add_run_usage, insert_events};
use super::{Item, ItemState, Proposal, Result, Store, StoreError, Usage, now_ms};

impl Store {
    /// `proposed`/`edited` → `proposed` with `proposal`, the model's new answer to `before` (the item
    /// as it was when the model was asked) and `note`. Kept only if the item still waits for review
    /// with the proposal the model was shown: a reviewer who approved, rejected, edited or
    /// regenerated it meanwhile wins, and this is refused ([`StoreError::Refused`], saying so) with
    /// nothing changed. The tokens and cost go onto the item and its run; the event keeps the note,
    /// the previous proposal (a reviewer's edit included) and the new values.
    #[allow(clippy::too_many_arguments)]
    pub async fn regenerated(
        &self,
        before: &Item,
        proposal: &Proposal,
        raw_output: &str,
        usage: Usage,
        actor: &str,
        note: &str,
    ) -> Result<Item> {
        let Some(previous) = before.proposal.as_ref() else {
            return Err(StoreError::Refused(format!("item {}: no proposal to regenerate", before.id)));
        };
        if !before.state.can_become(ItemState::Proposed) {
            return Err(StoreError::IllegalTransition { item: before.id, from: before.state, to: ItemState::Proposed });
        }
        let old = serde_json::to_string(previous).expect("a proposal always serialises");
        let new = serde_json::to_string(proposal).expect("a proposal always serialises");
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let sql = format!(
            "UPDATE items SET prev_state = state, state = 'proposed', updated_at = $1, proposal = $2, warnings = $3, \
             raw_output = $4, last_error = NULL, cost_micros = cost_micros + $5, tokens_in = tokens_in + $6, \
             tokens_out = tokens_out + $7 \
             WHERE id = $8 AND state IN ('proposed', 'edited') AND proposal = $9 RETURNING {ITEM_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(new.as_str())
            .bind(proposal.warnings.len() as i64)
            .bind(raw_output)
            .bind(usage.cost_micros)
            .bind(usage.input_tokens)
            .bind(usage.output_tokens)
            .bind(before.id)
            .bind(old.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            let now = self.item(before.id).await?;
            return Err(StoreError::Refused(format!(
                "item {} (record {}) changed while the model answered: it is {} now{}; the new answer was not kept",
                before.id,
                before.external_id,
                now.state.plain(),
                if now.state.awaits_review() { ", with another proposal than the one sent" } else { "" }
            )));
        };
        let item = Item::from_row(&row)?;
        add_run_usage(&mut tx, item.run_id, usage).await?;
        let detail = json!({
            "note": note,
            "previous": previous,
            "proposed": proposal.values(),
            "warnings": proposal.warnings,
            "model": proposal.model,
            "tokens_in": usage.input_tokens,
            "tokens_out": usage.output_tokens,
            "cost_micros": usage.cost_micros,
        });
        let event = NewEvent {
            run_id: Some(item.run_id),
            item_id: Some(item.id),
            kind: "regenerated",
            from_state: Some(before.state.as_str().to_owned()),
            to_state: Some(ItemState::Proposed.as_str().to_owned()),
            actor: actor.to_owned(),
            detail: Some(detail.to_string()),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        crate::telemetry::item_moved(&item.pipeline, Some(before.state), ItemState::Proposed, Some(usage));
        Ok(item)
    }

    /// A regeneration of `item` that made no new proposal (the model failed or its answer was
    /// unusable, or the item moved on meanwhile): a `regenerate_failed` event with the note and
    /// why, and what the attempt cost, added to the item's and its run's tokens and spend. The
    /// item's state and proposal are not touched.
    pub async fn regenerate_failed(
        &self,
        item: &Item,
        actor: &str,
        note: &str,
        error: &str,
        usage: Usage,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        if usage != Usage::default() {
            sqlx::query(
                "UPDATE items SET cost_micros = cost_micros + $1, tokens_in = tokens_in + $2, \
                 tokens_out = tokens_out + $3 WHERE id = $4",
            )
            .bind(usage.cost_micros)
            .bind(usage.input_tokens)
            .bind(usage.output_tokens)
            .bind(item.id)
            .execute(&mut *tx)
            .await?;
            add_run_usage(&mut tx, item.run_id, usage).await?;
        }
        let detail: Value = json!({
            "note": note,
            "error": error,
            "tokens_in": usage.input_tokens,
            "tokens_out": usage.output_tokens,
            "cost_micros": usage.cost_micros,
        });
        let event = NewEvent {
            run_id: Some(item.run_id),
            item_id: Some(item.id),
            kind: "regenerate_failed",
            from_state: None,
            to_state: None,
            actor: actor.to_owned(),
            detail: Some(detail.to_string()),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        Ok(())
    }
}
