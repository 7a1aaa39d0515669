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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sqlx::{Any, AssertSqlSafe, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::items::{Bind, ITEM_COLUMNS, Move, NewEvent, apply_one, bind_all, insert_events};
use super::{Backend, Item, ItemState, Result, Store, StoreError, Usage, now_ms, placeholders, rows_per_statement};

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
            let direct = Store {
                pool: self.pool.clone(),
                writer: self.writer.clone(),
                backend: self.backend,
                committer: Committer::default(),
            };
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
///
/// The moves are applied in rounds: every job's first move, then every second move, and so on.
/// Within a round, moves of the same shape (same states, same columns set) go out as one
/// `UPDATE ... FROM (VALUES ...)` per chunk rather than one statement per item — on Postgres each
/// statement is a round trip, and the committer is one task doing them in turn. Each row keeps its
/// own conditions (state, lease holder, guard), so an item that no longer qualifies is simply not
/// returned. A job for an item that an earlier job of the group already touches is applied on its
/// own afterwards, as before, so it sees that job's outcome.
async fn try_group(store: &Store, jobs: &[Job]) -> Result<Vec<Applied>> {
    let now = now_ms();
    let mut tx = store.writer.begin().await?;
    if store.backend == Backend::Postgres {
        // Rows are locked in id order up front (as the heartbeat locks them), whatever order the
        // batched updates' plans visit them in, so the two cannot deadlock.
        let mut ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        ids.dedup();
        for chunk in ids.chunks(1000) {
            let sql =
                format!("SELECT id FROM items WHERE id IN ({}) ORDER BY id FOR UPDATE", placeholders(1, chunk.len()));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            q.fetch_all(&mut *tx).await?;
        }
    }
    let mut progress: Vec<Progress> = jobs.iter().map(|_| Progress::default()).collect();
    let mut seen = HashSet::new();
    let repeat: Vec<bool> = jobs.iter().map(|j| !seen.insert(j.id)).collect();
    let mut events = Vec::with_capacity(jobs.len() * 2);
    let rounds = jobs.iter().map(|j| j.moves.len()).max().unwrap_or(0);
    for round in 0..rounds {
        let mut shapes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (j, job) in jobs.iter().enumerate() {
            if !repeat[j] && round < job.moves.len() && (round == 0 || progress[j].last.is_some()) {
                shapes.entry(shape(&job.moves[round])).or_default().push(j);
            }
        }
        for members in shapes.values() {
            let mv = &jobs[members[0]].moves[round];
            let per_row = 1 + mv.sets.len() + usize::from(mv.owner.is_some()) + usize::from(mv.guard.is_some());
            for chunk in members.chunks(rows_per_statement(store.backend, per_row, 200)) {
                let mut moved = update_many(&mut tx, store.backend, jobs, chunk, round, now).await?;
                for &j in chunk {
                    let job = &jobs[j];
                    match moved.remove(&job.id) {
                        Some(item) => progress[j].applied(item, &job.moves[round], &mut events),
                        None if round == 0 => {}
                        None => {
                            return Err(StoreError::Refused(format!(
                                "item {}: a later move of the item did not apply in the group",
                                job.id
                            )));
                        }
                    }
                }
            }
        }
    }
    // Jobs for an item already moved in this group: one statement per move, seeing the earlier job.
    for (j, job) in jobs.iter().enumerate().filter(|(j, _)| repeat[*j]) {
        for (n, mv) in job.moves.iter().enumerate() {
            let mut borrowed = mv.borrowed();
            borrowed.run_usage = None;
            let mut own_events = Vec::new();
            match apply_one(&mut tx, job.id, borrowed, now, &mut own_events).await? {
                Some(item) => progress[j].applied(item, mv, &mut events),
                None if n == 0 => break,
                None => {
                    return Err(StoreError::Refused(format!(
                        "item {}: a later move of the item did not apply in the group",
                        job.id
                    )));
                }
            }
        }
    }
    let mut usage: HashMap<i64, Usage> = HashMap::new();
    let mut applied = Vec::with_capacity(jobs.len());
    for p in progress {
        match p.last {
            Some(item) => {
                *usage.entry(item.run_id).or_default() += p.usage;
                applied.push(Applied::Done(Box::new(item), p.moved));
            }
            None => applied.push(Applied::NoMatch),
        }
    }
    let mut runs: Vec<_> = usage.into_iter().filter(|(_, u)| *u != Usage::default()).collect();
    // Always in the same order, so two committers (two daemons) cannot deadlock on run rows.
    runs.sort_by_key(|(run, _)| *run);
    for (run_id, u) in runs {
        super::items::add_run_usage(&mut tx, run_id, u).await?;
    }
    insert_events(&mut tx, &events, now).await?;
    tx.commit().await?;
    Ok(applied)
}

/// How far one job got inside the group transaction.
#[derive(Default)]
struct Progress {
    last: Option<Item>,
    moved: Vec<(Option<ItemState>, ItemState, Option<Usage>)>,
    usage: Usage,
}

impl Progress {
    fn applied(&mut self, item: Item, mv: &OwnedMove, events: &mut Vec<NewEvent>) {
        events.push(NewEvent {
            run_id: Some(item.run_id),
            item_id: Some(item.id),
            kind: "transition",
            from_state: item.prev_state.map(|s| s.as_str().to_owned()),
            to_state: Some(mv.to.as_str().to_owned()),
            actor: mv.actor.clone(),
            detail: mv.detail.as_ref().map(Value::to_string),
        });
        self.moved.push((item.prev_state, mv.to, mv.run_usage));
        if let Some(u) = mv.run_usage {
            self.usage += u;
        }
        self.last = Some(item);
    }
}

/// What makes two moves expressible as one statement: the same states, the same columns set and
/// the same conditions (the values may differ).
fn shape(mv: &OwnedMove) -> String {
    let from: Vec<&str> = mv.from.iter().map(|s| s.as_str()).collect();
    let sets: Vec<&str> = mv.sets.iter().map(|(col, _)| *col).collect();
    format!(
        "{}>{}|{}|{}|{}|{}",
        from.join(","),
        mv.to.as_str(),
        mv.owner.is_some(),
        sets.join(","),
        mv.raw_sets.join(";"),
        mv.guard.as_ref().map(|(col, _)| *col).unwrap_or("")
    )
}

/// Applies move `round` of the jobs `chunk` (all of one shape, distinct items) in one statement;
/// returns the items it moved, by id. An item not returned did not qualify (state, lease, guard).
async fn update_many(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    jobs: &[Job],
    chunk: &[usize],
    round: usize,
    now: i64,
) -> Result<HashMap<i64, Item>> {
    let first = &jobs[chunk[0]].moves[round];
    let mut binds = vec![Bind::Text(first.to.as_str().into()), Bind::I64(now)];
    let mut sql = String::from("UPDATE items SET prev_state = state, state = $1, updated_at = $2");
    if !first.to.is_leased() {
        sql.push_str(", lease_owner = NULL, lease_expires_at = NULL");
    }
    // The VALUES columns: column1 the id, then each set column, then the lease holder, then the guard.
    for (k, (col, _)) in first.sets.iter().enumerate() {
        sql.push_str(&format!(", {col} = v.column{}", k + 2));
    }
    for raw in first.raw_sets {
        sql.push_str(", ");
        sql.push_str(raw);
    }
    sql.push_str(" FROM (VALUES ");
    for (row, &j) in chunk.iter().enumerate() {
        let job = &jobs[j];
        let mv = &job.moves[round];
        let mut values = vec![Bind::I64(job.id)];
        values.extend(mv.sets.iter().map(|(_, b)| b.clone()));
        values.extend(mv.owner.iter().map(|o| Bind::Text(o.clone())));
        values.extend(mv.guard.iter().map(|(_, b)| b.clone()));
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for (k, value) in values.into_iter().enumerate() {
            if k > 0 {
                sql.push_str(", ");
            }
            let cast = match (&value, backend) {
                (_, Backend::Sqlite) => None,
                (Bind::I64(_), Backend::Postgres) => Some("BIGINT"),
                (_, Backend::Postgres) => Some("TEXT"),
            };
            binds.push(value);
            match cast {
                Some(ty) => sql.push_str(&format!("CAST(${} AS {ty})", binds.len())),
                None => sql.push_str(&format!("${}", binds.len())),
            }
        }
        sql.push(')');
    }
    sql.push_str(") AS v WHERE items.id = v.column1");
    let states: Vec<Bind> = first.from.iter().map(|s| Bind::Text(s.as_str().into())).collect();
    sql.push_str(&format!(" AND items.state IN ({})", placeholders(binds.len() + 1, states.len())));
    binds.extend(states);
    let mut col = 2 + first.sets.len();
    if first.owner.is_some() {
        sql.push_str(&format!(" AND items.lease_owner = v.column{col}"));
        col += 1;
    }
    if let Some((guard, _)) = &first.guard {
        sql.push_str(&format!(" AND items.{guard} = v.column{col}"));
    }
    sql.push_str(" RETURNING ");
    sql.push_str(ITEM_COLUMNS);
    let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&mut **tx).await?;
    rows.iter().map(|row| Item::from_row(row).map(|item| (item.id, item))).collect()
}
