//! Group commit: item transitions from many concurrent callers — enrichment tasks proposing, the
//! write-back recording outcomes — applied together in one database transaction.
//!
//! Every commit costs a WAL flush (an fsync on Postgres), and every proposal also adds its cost to
//! its run's row, which serialises them all on that row's lock. One at a time, a run cannot go
//! faster than one flush per item. Here the callers hand their moves to one committer task, which
//! takes whatever has queued up while the previous commit ran, applies each item's moves in order
//! (each still one conditional `UPDATE` plus its event), adds the runs' usage once per run, and
//! commits once. Callers wait for their own item's outcome, so nothing changes for them: an item
//! whose move no longer applies (lease lost, state moved on) gets the same error it would alone,
//! and the other items of the group are unaffected. A database error fails nobody by itself: the
//! group is rolled back and each item is applied alone, so one bad item cannot take others with it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::items::{Bind, Move, apply_one};
use super::{Item, ItemState, Result, Store, StoreError, Usage, now_ms};

/// The most items one group commit takes.
const MAX_GROUP: usize = 256;

/// A [`Move`] that owns its strings, so it can travel to the committer task.
pub(super) struct OwnedMove {
    pub(super) from: &'static [ItemState],
    pub(super) to: ItemState,
    pub(super) owner: Option<String>,
    pub(super) sets: Vec<(&'static str, Bind)>,
    pub(super) raw_sets: &'static [&'static str],
    pub(super) guard: Option<(&'static str, Bind)>,
    pub(super) actor: String,
    pub(super) detail: Option<Value>,
    pub(super) run_usage: Option<Usage>,
}

impl OwnedMove {
    fn borrowed(&self) -> Move<'_> {
        Move {
            from: self.from,
            to: self.to,
            owner: self.owner.as_deref(),
            sets: self.sets.clone(),
            raw_sets: self.raw_sets,
            guard: self.guard.clone(),
            actor: &self.actor,
            detail: self.detail.clone(),
            run_usage: self.run_usage,
        }
    }
}

struct Job {
    id: i64,
    moves: Vec<OwnedMove>,
    reply: oneshot::Sender<Result<Item>>,
}

/// The store's handle on its committer task, started on first use.
#[derive(Clone, Default)]
pub(super) struct Committer(Arc<OnceLock<mpsc::UnboundedSender<Job>>>);

impl Store {
    /// Applies `moves` to item `id` in order, all or nothing, committed together with whatever other
    /// items are being applied at the same moment. Same outcome and errors as `apply_all`.
    pub(super) async fn apply_grouped(&self, id: i64, moves: Vec<OwnedMove>) -> Result<Item> {
        for mv in &moves {
            if let Some(from) = mv.from.iter().find(|f| !f.can_become(mv.to)) {
                return Err(StoreError::IllegalTransition { item: id, from: *from, to: mv.to });
            }
        }
        let sender = self.committer.0.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // The task's store has no committer of its own: it applies directly.
            let direct = Store { pool: self.pool.clone(), backend: self.backend, committer: Committer::default() };
            tokio::spawn(run_committer(direct, rx));
            tx
        });
        let (reply, outcome) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = sender.send(Job { id, moves, reply }) {
            // The committer's runtime is gone (a store carried into another runtime): apply alone.
            let moves = job.moves.iter().map(OwnedMove::borrowed).collect();
            return self.apply_all(id, moves).await;
        }
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Refused(format!(
                "item {id}: the commit task stopped before answering; the outcome is unknown"
            )))
        })
    }
}

async fn run_committer(store: Store, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit_group(&store, jobs).await;
    }
}

/// What became of one job inside the group transaction.
enum Applied {
    /// Applied, with each move (from, to, usage) for the telemetry once committed.
    Done(Box<Item>, Vec<(Option<ItemState>, ItemState, Option<Usage>)>),
    /// Its first move matched nothing: nothing of it was applied; explain after the commit.
    NoMatch,
}

async fn commit_group(store: &Store, mut jobs: Vec<Job>) {
    // Rows are locked in id order, as the heartbeat locks them, so the two cannot deadlock.
    jobs.sort_by_key(|job| job.id);
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let moves = job.moves.iter().map(OwnedMove::borrowed).collect();
        let _ = job.reply.send(store.apply_all(job.id, moves).await);
        return;
    }
    match try_group(store, &jobs).await {
        Ok(applied) => {
            for (job, applied) in jobs.into_iter().zip(applied) {
                let outcome = match applied {
                    Applied::Done(item, moved) => {
                        for (prev, to, usage) in moved {
                            crate::telemetry::item_moved(&item.pipeline, prev, to, usage);
                        }
                        Ok(*item)
                    }
                    Applied::NoMatch => {
                        let first = &job.moves[0];
                        Err(store.diagnose(job.id, first.from, first.to, first.owner.as_deref()).await)
                    }
                };
                let _ = job.reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, items = jobs.len(), "group commit failed; applying its items one by one");
            for job in jobs {
                let moves = job.moves.iter().map(OwnedMove::borrowed).collect();
                let _ = job.reply.send(store.apply_all(job.id, moves).await);
            }
        }
    }
}

/// Applies every job in one transaction. A job whose first move matches nothing is skipped (nothing
/// of it was written); one whose later move fails fails the whole group, which is then retried item
/// by item, so no item is ever left half moved.
async fn try_group(store: &Store, jobs: &[Job]) -> Result<Vec<Applied>> {
    let now = now_ms();
    let mut tx = store.pool.begin().await?;
    let mut applied = Vec::with_capacity(jobs.len());
    let mut usage: HashMap<i64, Usage> = HashMap::new();
    for job in jobs {
        let mut last = None;
        let mut moved = Vec::with_capacity(job.moves.len());
        let mut job_usage = Usage::default();
        for (n, mv) in job.moves.iter().enumerate() {
            let mut mv = mv.borrowed();
            let (to, run_usage) = (mv.to, mv.run_usage.take());
            match apply_one(&mut tx, job.id, mv, now).await? {
                Some(item) => {
                    moved.push((item.prev_state, to, run_usage));
                    if let Some(u) = run_usage {
                        job_usage += u;
                    }
                    last = Some(item);
                }
                None if n == 0 => break,
                None => {
                    return Err(StoreError::Refused(format!(
                        "item {}: a later move of the item did not apply in the group",
                        job.id
                    )));
                }
            }
        }
        match last {
            Some(item) => {
                *usage.entry(item.run_id).or_default() += job_usage;
                applied.push(Applied::Done(Box::new(item), moved));
            }
            None => applied.push(Applied::NoMatch),
        }
    }
    let mut runs: Vec<_> = usage.into_iter().filter(|(_, u)| *u != Usage::default()).collect();
    // Always in the same order, so two committers (two daemons) cannot deadlock on run rows.
    runs.sort_by_key(|(run, _)| *run);
    for (run_id, u) in runs {
        sqlx::query(
            "UPDATE runs SET cost_micros = cost_micros + $1, tokens_in = tokens_in + $2, tokens_out = tokens_out + $3 WHERE id = $4",
        )
        .bind(u.cost_micros)
        .bind(u.input_tokens)
        .bind(u.output_tokens)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(applied)
}
