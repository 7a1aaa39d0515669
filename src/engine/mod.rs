//! The engine: turns config into running parts (connectors, providers, tasks) and drives items
//! through their life — discovery, enrichment, review policy, write-back, undo — with leases kept alive
//! while work runs and expired ones reclaimed.
//!
//! Each phase is a loop that claims work from the store, does the network part with no transaction
//! open, and records the outcome as one transition. Several loops, processes or daemons can run the
//! same pipeline: the store's claims keep them from sharing an item.

mod batch;
mod discovery;
mod documents;
mod enrich;
mod hooks;
mod lookup;
mod pauses;
mod regenerate;
mod revert;
mod writeback;

pub use pauses::platform_pause;
pub use regenerate::{MAX_NOTE_CHARS, RegenerateError, check_note, regenerate};
pub use revert::{LeftOver, RevertOutcome, RevertResult, RevertTally, revert, revert_run, tally};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use enrichd_connector::Connector;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConnectionConfig, DaemonConfig, Mode, PipelineConfig};
use crate::provider::{Provider, TokenUsage};
use crate::store::{RetryPolicy, RunStatus, Store, Usage};
use crate::task::Task;

/// One pipeline, built: its connector, provider and task.
pub struct Pipeline {
    pub name: String,
    pub config: PipelineConfig,
    pub connector: Arc<dyn Connector>,
    pub provider: Arc<Provider>,
    /// The task as configured.
    pub base_task: Arc<Task>,
    /// The task with the values the platform allowed when the pipeline's latest run started (see
    /// [`Task::with_allowed`]), and when this process last looked them up.
    live_task: std::sync::RwLock<(Arc<Task>, Option<std::time::Instant>)>,
    /// Seconds between polls of a submitted batch (from the provider's config).
    pub batch_poll_seconds: f64,
    /// What the connection's organisation used when the pipeline's latest run started (currencies,
    /// tax rates, accounts), for the task's rules; `None` when it says nothing.
    organisation: std::sync::RwLock<Option<Arc<enrichd_connector::lookup::Organisation>>>,
}

/// How long a process uses the allowed values it last read before reading the store again (another
/// daemon may have started a run with newer ones).
const ALLOWED_VALUES_TTL: Duration = Duration::from_secs(30);

impl Pipeline {
    /// The task as it applies now: the configured one, with the platform's allowed values.
    pub fn task(&self) -> Arc<Task> {
        self.live_task.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    fn set_allowed(&self, allowed: &BTreeMap<String, Vec<String>>) {
        let task = if allowed.is_empty() {
            self.base_task.clone()
        } else {
            match self.base_task.with_allowed(allowed) {
                Ok(task) => Arc::new(task),
                Err(e) => {
                    tracing::warn!(pipeline = %self.name, error = %e, "the platform's allowed values do not fit the task; using the task as configured");
                    self.base_task.clone()
                }
            }
        };
        *self.live_task.write().unwrap_or_else(|e| e.into_inner()) = (task, Some(std::time::Instant::now()));
    }

    /// Reads the values the platform allows now for each record field the task fills, keeps them for
    /// the pipeline (so every daemon and a resumed run use the same), and uses them from now on.
    pub async fn refresh_allowed(&self, store: &Store) -> Result<BTreeMap<String, Vec<String>>, String> {
        let mut allowed = self.config.allowed.clone();
        for field in self.base_task.fields.values() {
            match self.connector.allowed_values(&self.config.entity, field).await {
                Ok(Some(values)) => {
                    allowed.insert(field.clone(), values);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(format!(
                        "reading the values connection {} allows for {field} failed: {e}",
                        self.config.connection
                    ));
                }
            }
        }
        store.save_allowed_values(&self.name, &allowed).await.map_err(|e| e.to_string())?;
        self.set_allowed(&allowed);
        if self.reads_organisation() {
            let organisation = self.connector.organisation().await.map_err(|e| {
                format!("reading what the organisation of connection {} uses failed: {e}", self.config.connection)
            })?;
            store.save_organisation(&self.name, organisation.as_ref()).await.map_err(|e| e.to_string())?;
            *self.organisation.write().unwrap_or_else(|e| e.into_inner()) = organisation.map(Arc::new);
        }
        Ok(allowed)
    }

    /// Whether the task checks or looks anything up against the organisation's own data.
    fn reads_organisation(&self) -> bool {
        !self.base_task.rules.is_empty() || self.base_task.look_up.is_some()
    }

    /// What the connection's organisation used when the latest run started.
    pub fn organisation(&self) -> Option<Arc<enrichd_connector::lookup::Organisation>> {
        self.organisation.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the allowed values another process kept, when this process's are older than
    /// [`ALLOWED_VALUES_TTL`].
    pub async fn reload_allowed(&self, store: &Store) {
        let fresh = self
            .live_task
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .is_some_and(|at| at.elapsed() < ALLOWED_VALUES_TTL);
        if fresh {
            return;
        }
        match store.pipeline_state(&self.name).await {
            Ok(state) => {
                let mut allowed = self.config.allowed.clone();
                allowed.extend(state.allowed_values);
                self.set_allowed(&allowed);
                // None is also what a pipeline whose run has not read it yet has: keep what this
                // process read itself rather than racing its own run's start.
                if let Some(organisation) = state.organisation {
                    *self.organisation.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(organisation));
                }
            }
            Err(e) => tracing::warn!(pipeline = %self.name, error = %e, "reading the pipeline's allowed values failed"),
        }
    }

    /// Prices `usage` on this pipeline's model: the providers' batch APIs (mode = "batch") bill
    /// half the realtime price.
    fn usage(&self, usage: TokenUsage) -> Usage {
        let priced = self.provider.cost_micros(&self.config.model, usage);
        let realtime = priced.unwrap_or(0);
        let cost_micros = match self.config.mode {
            crate::config::Mode::Batch => (realtime as f64 * crate::estimate::BATCH_DISCOUNT).round() as i64,
            crate::config::Mode::Realtime => realtime,
        };
        let unpriced = priced.is_none() && (usage.input > 0 || usage.output > 0);
        Usage { input_tokens: usage.input, output_tokens: usage.output, cost_micros, unpriced }
    }
}

/// Everything a worker needs.
pub struct Engine {
    pub store: Store,
    pub pipelines: BTreeMap<String, Arc<Pipeline>>,
    pub connectors: BTreeMap<String, Arc<dyn Connector>>,
    pub providers: BTreeMap<String, Arc<Provider>>,
    /// Each configured pipeline's task, also in an engine that only looks (`daemon --ui-only`):
    /// what a reviewer's edit is held to.
    pub tasks: BTreeMap<String, Arc<Task>>,
    /// Each configured pipeline as set up (its config and its connection's platform), also in an
    /// engine that only looks: what the pipelines page shows.
    pub setups: BTreeMap<String, PipelineSetup>,
    /// Built by [`Engine::build_for_looking`]: nothing connects to a shop or a model.
    pub looking_only: bool,
    /// This process's lease owner name.
    pub owner: String,
    pub daemon: DaemonConfig,
}

/// A configured pipeline as people see it: its config and the platform its connection reaches.
#[derive(Debug, Clone)]
pub struct PipelineSetup {
    pub config: PipelineConfig,
    /// The connection's kind (`woocommerce`, `zendesk`, `xero`, …).
    pub platform: &'static str,
}

fn pipeline_setups(config: &Config) -> BTreeMap<String, PipelineSetup> {
    config
        .pipelines
        .iter()
        .map(|(name, p)| {
            let platform = config.connections.get(&p.connection).map_or("unknown", |c| c.kind());
            (name.clone(), PipelineSetup { config: p.clone(), platform })
        })
        .collect()
}

/// A connector for one configured connection, keeping no tokens it acquires (see [`build_connection`]).
/// OAuth2 connections (Xero, QuickBooks) need their stored tokens: use [`build_named`] for them.
pub fn build_connector(config: &ConnectionConfig) -> Arc<dyn Connector> {
    build_connection("", config, None)
}

/// The connector for connection `name` of `config`, for a command that opens no store of its own:
/// an OAuth2 connection reads its tokens from `database.url` when first used.
pub fn build_named(config: &Config, name: &str) -> Arc<dyn Connector> {
    let connection = &config.connections[name];
    match crate::oauth::OrgConnector::new(name, connection, crate::oauth::Tokens::of(config, None)) {
        Some(org) => Arc::new(org),
        None => build_connector(connection),
    }
}

/// A connector for connection `name`; tokens it acquires at run time (Help Scout's client
/// credentials) are kept in `tokens`, encrypted, when given. OAuth2 connections (Xero, QuickBooks)
/// keep theirs in `tokens` too, and without it have none (`database.secret_key` is needed).
pub fn build_connection(
    name: &str,
    config: &ConnectionConfig,
    tokens: Option<Arc<dyn enrichd_connector::oauth2::TokenStore>>,
) -> Arc<dyn Connector> {
    build_connection_with(name, config, tokens, crate::oauth::Tokens::NoKey)
}

fn build_connection_with(
    name: &str,
    config: &ConnectionConfig,
    tokens: Option<Arc<dyn enrichd_connector::oauth2::TokenStore>>,
    vault: crate::oauth::Tokens,
) -> Arc<dyn Connector> {
    let at = format!("connections.{name}");
    if let Some(org) = crate::oauth::OrgConnector::new(name, config, vault) {
        return Arc::new(org);
    }
    match config {
        ConnectionConfig::TestStore(c) => Arc::new(enrichd_teststore::TestStore::new(
            &c.base_url,
            c.token.0.expose_secret().to_owned().into(),
            Duration::from_secs_f64(c.timeout_seconds),
        )),
        ConnectionConfig::WooCommerce(c) => Arc::new(
            c.options()
                .ok()
                .and_then(|o| enrichd_woocommerce::WooCommerce::new(o).ok())
                .expect("woocommerce connections are validated when the config loads"),
        ),
        ConnectionConfig::Zendesk(c) => Arc::new(
            c.validate(&at)
                .ok()
                .and_then(|o| enrichd_zendesk::Zendesk::new(o).ok())
                .expect("zendesk connections are validated when the config loads"),
        ),
        ConnectionConfig::Freshdesk(c) => Arc::new(
            c.validate(&at)
                .ok()
                .and_then(|o| enrichd_freshdesk::Freshdesk::new(o).ok())
                .expect("freshdesk connections are validated when the config loads"),
        ),
        ConnectionConfig::HelpScout(c) => Arc::new(
            c.validate(&at)
                .ok()
                .and_then(|o| enrichd_helpscout::HelpScout::new(name, o, tokens).ok())
                .expect("helpscout connections are validated when the config loads"),
        ),
        ConnectionConfig::Xero(_) | ConnectionConfig::QuickBooks(_) => unreachable!("built as OrgConnector above"),
    }
}

/// Each pipeline's task, by pipeline name (tasks need no secrets).
fn pipeline_tasks(config: &Config) -> BTreeMap<String, Arc<Task>> {
    let built: BTreeMap<&String, Arc<Task>> = config
        .tasks
        .iter()
        .map(|(name, t)| (name, Arc::new(Task::build(name, t).expect("tasks are validated when the config loads"))))
        .collect();
    config.pipelines.iter().map(|(name, p)| (name.clone(), built[&p.task].clone())).collect()
}

impl Engine {
    /// Builds every connection, provider, task and pipeline of a validated config. Its connectors
    /// and providers can connect only when the config's secrets are resolved
    /// ([`Config::resolve_secrets`]); before, they hold the references, not credentials.
    pub fn build(config: &Config, store: Store) -> Engine {
        // Tokens connections acquire are kept only encrypted: without `database.secret_key` they
        // live in memory and are requested again after a restart.
        let vault: Option<Arc<dyn enrichd_connector::oauth2::TokenStore>> =
            config.database.secret_key.as_ref().map(|key| {
                Arc::new(crate::store::CredentialVault::new(store.clone(), Some(&key.0)))
                    as Arc<dyn enrichd_connector::oauth2::TokenStore>
            });
        let connectors: BTreeMap<String, Arc<dyn Connector>> = config
            .connections
            .iter()
            .map(|(name, c)| {
                let org_tokens = crate::oauth::Tokens::of(config, Some(&store));
                (name.clone(), build_connection_with(name, c, vault.clone(), org_tokens))
            })
            .collect();
        let providers: BTreeMap<String, Arc<Provider>> =
            config.providers.iter().map(|(name, p)| (name.clone(), Arc::new(Provider::build(name, p)))).collect();
        let tasks = pipeline_tasks(config);
        let pipelines = config
            .pipelines
            .iter()
            .map(|(name, p)| {
                let pipeline = Pipeline {
                    name: name.clone(),
                    config: p.clone(),
                    connector: connectors[&p.connection].clone(),
                    provider: providers[&p.provider].clone(),
                    base_task: tasks[name].clone(),
                    live_task: std::sync::RwLock::new((tasks[name].clone(), None)),
                    batch_poll_seconds: config.providers[&p.provider].batch_poll_seconds(),
                    organisation: std::sync::RwLock::new(None),
                };
                if !p.allowed.is_empty() {
                    pipeline.set_allowed(&p.allowed);
                }
                (name.clone(), Arc::new(pipeline))
            })
            .collect();
        Engine {
            store,
            pipelines,
            connectors,
            providers,
            tasks,
            setups: pipeline_setups(config),
            looking_only: false,
            owner: owner_name(),
            daemon: config.daemon.clone(),
        }
    }

    /// An engine for a daemon that only serves the UI and API (`enrichd daemon --ui-only`): the
    /// store, and no connection, provider or pipeline, so nothing connects to a shop or a model.
    pub fn build_for_looking(config: &Config, store: Store) -> Engine {
        Engine {
            store,
            pipelines: BTreeMap::new(),
            connectors: BTreeMap::new(),
            providers: BTreeMap::new(),
            tasks: pipeline_tasks(config),
            setups: pipeline_setups(config),
            looking_only: true,
            owner: owner_name(),
            daemon: config.daemon.clone(),
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.daemon.lease_seconds)
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.daemon.poll_interval_ms.max(10))
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(self.daemon.retry_base_ms),
            max: Duration::from_secs(self.daemon.retry_max_seconds),
        }
    }

    /// The grace period for in-flight work at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.daemon.shutdown_grace_seconds)
    }

    /// Keeps this process's leases alive and reclaims expired ones (of any process), until `stop`.
    pub fn spawn_upkeep(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let lease = engine.lease();
            let beat = (lease / 3).max(Duration::from_millis(50));
            let mut heartbeat = tokio::time::interval(beat);
            let mut reaper = tokio::time::interval((lease / 2).max(Duration::from_millis(100)));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = heartbeat.tick() => {
                        if let Err(e) = engine.store.heartbeat(&engine.owner, lease).await {
                            tracing::warn!(error = %e, "lease heartbeat failed");
                        }
                        engine.share_rate_limits(beat).await;
                    }
                    _ = reaper.tick() => match engine.store.reclaim_expired(&format!("reaper:{}", engine.owner)).await {
                        Ok(ids) if !ids.is_empty() => {
                            crate::telemetry::leases_reclaimed(ids.len());
                            tracing::warn!(count = ids.len(), "reclaimed items whose lease expired")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "reclaiming expired leases failed"),
                    },
                }
            }
        })
    }

    /// Registers this process as alive and splits every provider's rate limits between the daemons
    /// seen recently, so several daemons on one database keep to one credential's limit together.
    pub async fn share_rate_limits(&self, beat: Duration) {
        let window = (beat.as_millis() as i64 * 3).max(1000);
        match self.store.daemon_heartbeat(&self.owner, window).await {
            Ok(daemons) => {
                for provider in self.providers.values() {
                    provider.gate().set_share(daemons);
                }
            }
            Err(e) => tracing::warn!(error = %e, "daemon heartbeat failed; rate limits stay as they were"),
        }
    }

    /// Runs every phase of `pipeline` (all its runs, or only `only_run`) until `stop`. In-flight
    /// work is spawned on `tracker` so the caller can wait for it at shutdown.
    pub async fn work_pipeline(
        self: &Arc<Self>,
        pipeline: Arc<Pipeline>,
        only_run: Option<i64>,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) {
        // A resumed run's items are enriched with the values the platform allowed when the run
        // started (kept in the store), not with the task as configured: load them before any worker
        // claims an item (a restarted process would otherwise race its own settle loop's first read).
        pipeline.reload_allowed(&self.store).await;
        let discover = tokio::spawn(discovery::discovery_loop(self.clone(), pipeline.clone(), only_run, stop.clone()));
        let enrich = match pipeline.config.mode {
            Mode::Realtime => tokio::spawn(enrich::enrich_loop(
                self.clone(),
                pipeline.clone(),
                only_run,
                stop.clone(),
                tracker.clone(),
            )),
            Mode::Batch => tokio::spawn(batch::batch_loop(self.clone(), pipeline.clone(), only_run, stop.clone())),
        };
        let write =
            tokio::spawn(writeback::write_loop(self.clone(), pipeline.clone(), only_run, stop.clone(), tracker));
        let settle = tokio::spawn(settle_loop(self.clone(), pipeline, only_run, stop));
        for handle in [discover, enrich, write, settle] {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "a pipeline loop panicked");
            }
        }
    }
}

/// Moves runs on (to awaiting review, done, paused) as their items allow, and pauses a run whose
/// enrichment fails more often than its pipeline's `pause_on_error_rate`.
///
/// The error-rate check runs at every poll (it reads only the run's dead items, so it stays cheap,
/// and a failing run must stop burning budget promptly). Settling counts all the run's items by state,
/// so it runs at most every [`SETTLE_EVERY`], and less often when counting takes long ([`paced`]).
async fn settle_loop(engine: Arc<Engine>, pipeline: Arc<Pipeline>, only_run: Option<i64>, stop: CancellationToken) {
    let actor = engine.owner.clone();
    let mut next_settle = std::time::Instant::now();
    loop {
        pipeline.reload_allowed(&engine.store).await;
        let runs = match only_run {
            Some(id) => engine.store.run(id).await.map(|r| vec![r]),
            None => {
                engine.store.runs(&[RunStatus::Discovering, RunStatus::Running, RunStatus::AwaitingReview], 100).await
            }
        };
        let settle = std::time::Instant::now() >= next_settle;
        let started = std::time::Instant::now();
        // Runs paused for their platform's daily allowance resume by themselves once it resets.
        match engine.store.resume_due(&pipeline.name, &actor).await {
            Ok(resumed) => {
                for run in resumed {
                    tracing::info!(run = run.id, pipeline = %pipeline.name, "run resumed: the platform's allowance has reset");
                }
            }
            Err(e) => tracing::warn!(pipeline = %pipeline.name, error = %e, "resuming paused runs failed"),
        }
        match runs {
            Ok(runs) => {
                for run in runs.into_iter().filter(|r| r.pipeline == pipeline.name) {
                    if let Some(rule) = pipeline.config.error_rule() {
                        match engine.store.pause_on_errors(run.id, rule, &actor).await {
                            Ok(Some(paused)) => {
                                crate::telemetry::run_paused(&pipeline.name);
                                tracing::warn!(
                                    run = run.id,
                                    pipeline = %pipeline.name,
                                    reason = paused.status_reason.as_deref().unwrap_or_default(),
                                    "run paused: too many enrichment failures; `enrichd resume {}` resumes it",
                                    run.id
                                );
                                continue;
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(run = run.id, error = %e, "checking the run's error rate failed"),
                        }
                    }
                    if settle && let Err(e) = engine.store.settle_run(run.id, &actor).await {
                        tracing::warn!(run = run.id, error = %e, "settling run failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing runs failed"),
        }
        if settle {
            next_settle = std::time::Instant::now() + paced(SETTLE_EVERY, started.elapsed());
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(engine.poll()) => {}
        }
    }
}

/// The settle loop's least interval between settles: settling counts the run's items by state,
/// which reads every item's index entry, so at a short `poll_interval_ms` and a large run it would
/// cost more than the work it watches. A quarter second later to notice a run has finished costs nothing.
const SETTLE_EVERY: Duration = Duration::from_millis(250);

/// How long a loop that watches a run (settling, progress) waits before looking again: at least
/// `min`, and at least ten times what the last look took, so watching a large run (counting its
/// items takes ~100 ms at 100,000 on Postgres) never takes more than a tenth of a connection.
pub fn paced(min: Duration, took: Duration) -> Duration {
    min.max(took * 10)
}

/// Waits for `stop`'s work to finish within `grace`, then gives back whatever is still leased.
pub async fn drain(engine: &Engine, tracker: &TaskTracker, grace: Duration) {
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "in-flight work did not finish within the shutdown grace; releasing its leases"
        );
    }
    if let Err(e) = engine.store.daemon_gone(&engine.owner).await {
        tracing::warn!(error = %e, "could not remove this daemon from the live list; it ages out");
    }
    match engine.store.release(&engine.owner).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(items = n, "released leases at shutdown"),
        Err(e) => tracing::error!(error = %e, "releasing leases failed; they will expire instead"),
    }
}

/// This process's lease owner name: host, process id and a random suffix.
fn owner_name() -> String {
    format!("{}-{}-{}", hostname(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Sleeps `d` unless `stop` fires first; returns false when stopped.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}
