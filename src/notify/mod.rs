//! Notifications: signed webhooks about runs — a sample waiting for review, a run paused (and why),
//! a run finished (with its report), writes failing — delivered with retries, and every attempt
//! kept for the run page. See `docs/notifications.md`.
//!
//! Two loops in each daemon that works pipelines: the watcher reads the event log (which every run
//! change already writes) and records notifications in the outbox table, idempotently; the
//! deliverer claims due ones under a lease and POSTs them. So a notification is recorded once
//! however many daemons share the database or restart, and a delivery a daemon did not finish is
//! taken up by another when its lease expires.

mod config;
mod deliver;
mod message;
pub mod view;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::{
    Event, NotificationsConfig, PipelineNotifications, WebhookEndpoint, WebhookUrl, WritesFailing, masked,
};
pub use deliver::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

use crate::config::Config;
use crate::store::Store;

/// Records and delivers the notifications of the pipelines in one config.
pub struct Notifier {
    store: Store,
    config: NotificationsConfig,
    /// Each pipeline's own choice of endpoints and events, if it makes one.
    pipelines: BTreeMap<String, PipelineNotifications>,
    /// Who holds delivery leases (the daemon's owner id).
    owner: String,
    http: reqwest::Client,
}

impl Notifier {
    /// The notifier of `config` (its secrets read), working on `store` as `owner`.
    pub fn new(config: &Config, store: Store, owner: &str) -> Notifier {
        let n = &config.notifications;
        let http = enrichd_connector::http::builder(Duration::from_secs_f64(n.timeout_seconds))
            // A redirected POST would turn into a GET, or carry the signed body somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client configuration is static and valid");
        Notifier {
            store,
            config: n.clone(),
            pipelines: config
                .pipelines
                .iter()
                .filter_map(|(name, p)| Some((name.clone(), p.notifications.clone()?)))
                .collect(),
            owner: owner.to_owned(),
            http,
        }
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.config.poll_interval_ms.max(1))
    }

    /// Watches and delivers until `stop`. A delivery in flight when `stop` fires is abandoned: its
    /// lease expires and it is sent again (receivers dedupe by the payload's `id`).
    pub fn spawn(self: Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if !self.config.webhooks.is_empty() {
                tracing::info!(
                    endpoints = %self.config.webhooks.iter().map(|(n, h)| format!("{n} ({})", masked(h.url.value()))).collect::<Vec<_>>().join(", "),
                    "notifications on"
                );
            }
            let mut tick = tokio::time::interval(self.poll());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = self.watch().await {
                    tracing::warn!(error = %e, "looking for run events to notify about failed");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    result = self.deliver_due() => if let Err(e) = result {
                        tracing::warn!(error = %e, "delivering notifications failed");
                    },
                }
            }
        })
    }
}
