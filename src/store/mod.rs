//! The durable store: runs, items (with their state machine and leases), the audit trail, accounts
//! and stored credentials, on an SQLite file (the zero-setup default, in WAL mode) or PostgreSQL.
//!
//! Both backends run the same SQL through sqlx's `Any` driver, with plain types only (integers,
//! text) so they behave alike; the one place they differ is claiming, where Postgres adds
//! `FOR UPDATE SKIP LOCKED` so several daemons can share one database.
//!
//! Rules kept here: every item transition is one conditional `UPDATE` plus one event row in a single
//! transaction; a transition the item's life does not allow is refused (by [`ItemState::can_become`]
//! before any SQL, and by a trigger in the database); work under a lease can only be finished by the
//! lease's owner; no transaction is held across a network call (callers do network work between
//! store calls).

mod accounts;
mod batches;
mod commit;
mod credentials;
mod documents;
mod evals;
mod hooks;
mod items;
mod notifications;
mod overview;
mod pauses;
mod pipelines;
mod plain;
mod regenerate;
mod review;
mod runs;
mod state;
mod undo;
mod warning_kind;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub use accounts::{Account, ApiToken, TokenLookup};
pub use batches::{BatchRow, NewBatch};
pub use credentials::{ConnectionState, CredentialVault, connection_state};
pub use documents::StoredDocument;
pub use evals::{NewEval, StoredEval};
pub use hooks::{HookQueued, HookRecord};
pub use items::{
    Claim, EnrichFailure, EventRecord, FieldChange, Item, NewItem, PriorItem, Proposal, RetryPolicy, Usage,
    VerifyIssue, Work,
};
pub use notifications::{Attempt, AttemptOutcome, AttemptRecord, Delivery, NewNotification, NotificationRecord};
pub use overview::{DryRunCount, Spend};
pub use pauses::PlatformPause;
pub use pipelines::{PipelineState, WriteJob};
pub use plain::{plain_actor, plain_event};
pub use review::{
    BulkOutcome, ConfidenceRange, ProposedValue, ReviewAction, ReviewFilter, ReviewOrder, SampleStats, SkippedItem,
    UnreviewedRelease, ValueCount, reviewer_name,
};
pub use runs::{ErrorRule, NewRun, ReviewPhase, Run, RunCounts, RunReport, RunStart, SampleGate};
pub use state::{ItemState, RunStatus};
pub use warning_kind::{Bound, KindCount, WarningKind};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors from the store. Each names the item or run it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("item {item}: illegal transition {from} → {to}")]
    IllegalTransition { item: i64, from: ItemState, to: ItemState },
    #[error("item {item}: lease is not held by {owner} (the item is {state}, leased by {holder})")]
    LeaseLost { item: i64, owner: String, state: ItemState, holder: String },
    /// The action does not apply to the thing as it is now (said why).
    #[error("{0}")]
    Refused(String),
    /// A bulk action was confirmed for a count that no longer matches; nothing was changed.
    #[error("{matching} items match now, not the {confirmed} confirmed; nothing was changed")]
    CountChanged { matching: i64, confirmed: i64 },
    #[error("{0} not found")]
    NotFound(String),
    /// A sample gate release was asked for before the sample was reviewed, without a reason to
    /// release it anyway; nothing was changed.
    #[error(
        "run {run}: {reviewed} of {of} sample proposals are reviewed{}; review the rest first, or release anyway with a reason",
        if *making { " (the sample is still being made)" } else { "" }
    )]
    SampleNotReviewed { run: i64, reviewed: i64, of: i64, making: bool },
    /// A value given (a reviewer's edit) does not fit what it must be; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("credentials: {0}")]
    Credentials(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the database. Cheap to clone.
///
/// Reads go to `pool`, writes to `writer`. On Postgres they are the same pool. On SQLite, which
/// allows one writer at a time, `writer` is a single connection: writers queue for it in order
/// instead of colliding on the file lock and sleeping in SQLite's busy handler (measured: most of a
/// 20,000-item run's database time was claims and group commits waiting on each other that way),
/// and `pool`'s connections are read-only (`PRAGMA query_only`), so a write sent to the wrong pool
/// fails at once instead of reintroducing the contention. Other processes on the same file still
/// meet the busy timeout.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    writer: AnyPool,
    backend: Backend,
    committer: commit::Committer,
}

impl Store {
    /// Connects to `url`: `sqlite://path` (created if missing) or `postgres://...`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                format!("unsupported database URL scheme in {:?}: use sqlite:// or postgres://", redact_url(url))
                    .into(),
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let options =
            || AnyPoolOptions::new().max_connections(max_connections.max(1)).acquire_timeout(Duration::from_secs(30));
        let (pool, writer) = match backend {
            Backend::Postgres => {
                let pool = options().connect(&url).await?;
                (pool.clone(), pool)
            }
            Backend::Sqlite => {
                // The writer first: it creates the file and sets WAL mode before any reader opens it.
                let writer = options().max_connections(1).after_connect(|conn, _| Box::pin(sqlite_setup(conn, false)));
                let writer = writer.connect(&url).await?;
                let readers = options().after_connect(|conn, _| Box::pin(sqlite_setup(conn, true)));
                (readers.connect(&url).await?, writer)
            }
        };
        Ok(Store { pool, writer, backend, committer: commit::Committer::default() })
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.writer).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.writer).await?,
        }
        Ok(())
    }

    /// The writing pool, for tests that must reach past the store's API (to prove the database
    /// itself refuses illegal writes).
    #[doc(hidden)]
    pub fn write_pool(&self) -> &AnyPool {
        &self.writer
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A cheap round trip, for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// The transitions the database enforces, for checking against [`ItemState::successors`].
    pub async fn transition_table(&self) -> Result<Vec<(ItemState, ItemState)>> {
        let rows = sqlx::query("SELECT from_state, to_state FROM item_transitions").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((parse_col(r, "from_state")?, parse_col(r, "to_state")?))).collect()
    }
}

/// Settings for every SQLite connection; `read_only` for the reading pool's.
async fn sqlite_setup(conn: &mut sqlx::AnyConnection, read_only: bool) -> Result<(), sqlx::Error> {
    conn.execute("PRAGMA journal_mode = WAL").await?;
    conn.execute("PRAGMA busy_timeout = 15000").await?;
    conn.execute("PRAGMA synchronous = NORMAL").await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    if read_only {
        conn.execute("PRAGMA query_only = ON").await?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as i64
}

pub(crate) fn parse_col<T: FromStr<Err = String>>(row: &AnyRow, col: &str) -> Result<T> {
    let text: String = row.try_get(col)?;
    text.parse().map_err(StoreError::Corrupt)
}

/// How many rows (or list values) of `params_per_row` bind parameters one statement should carry.
/// SQLite looks up each parameter's name by walking a list of all of them when sqlx binds, so a
/// statement's binding costs grow with the square of its parameters (measured: 11% of the daemon's
/// CPU went there with 800-parameter event inserts); about 250 keeps that small. Postgres has no
/// such cost and a round trip per statement, so it takes `postgres_rows`.
pub(crate) fn rows_per_statement(backend: Backend, params_per_row: usize, postgres_rows: usize) -> usize {
    match backend {
        Backend::Sqlite => (250 / params_per_row.max(1)).max(1),
        Backend::Postgres => postgres_rows.max(1),
    }
}

/// The backend of a connection (a transaction's, say).
pub(crate) fn backend_of(conn: &sqlx::AnyConnection) -> Backend {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") { Backend::Sqlite } else { Backend::Postgres }
}

/// `$start, $start+1, ...` for an `IN (...)` list of `n` values.
pub(crate) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact_url("postgres://bob:hunter2@db/x"), "postgres://bob:***@db/x");
        assert_eq!(super::redact_url("postgres://bob@db/x"), "postgres://bob@db/x");
        assert_eq!(super::redact_url("sqlite://a.db"), "sqlite://a.db");
    }
}
