//! `[notifications]` and `[pipelines.<name>.notifications]`: which webhooks hear which run events.
//!
//! ```toml
//! [notifications]
//! public_url = "https://enrichd.example.com"      # links in messages point at the run page there
//!
//! [notifications.webhooks.ops]
//! url = "${OPS_SLACK_WEBHOOK_URL}"                  # or a plain https URL
//! secret = "${OPS_WEBHOOK_SECRET}"                  # signs every delivery (HMAC-SHA256)
//! events = ["run_paused", "writes_failing"]         # default: all four
//!
//! [pipelines.catalogue.notifications]
//! webhooks = ["ops"]                                # only these endpoints hear this pipeline
//! events = ["run_paused", "run_finished"]           # and only these events
//! ```

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::config::Secret;

/// A run event a webhook can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A `sample_first` run's sample is proposed and waits for review before the rest goes on.
    SampleWaiting,
    /// A run paused itself (error rate, budget, the platform's allowance or connection); says why.
    RunPaused,
    /// A run finished (done, failed or cancelled); carries its report.
    RunFinished,
    /// Writes to the platform keep failing in a run (see [`NotificationsConfig::writes_failing`]).
    WritesFailing,
}

impl Event {
    pub const ALL: [Event; 4] = [Event::SampleWaiting, Event::RunPaused, Event::RunFinished, Event::WritesFailing];

    /// The name used in the config, the payload and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::SampleWaiting => "sample_waiting",
            Event::RunPaused => "run_paused",
            Event::RunFinished => "run_finished",
            Event::WritesFailing => "writes_failing",
        }
    }

    /// What it is, in words for the run page.
    pub fn plain(self) -> &'static str {
        match self {
            Event::SampleWaiting => "sample waiting for review",
            Event::RunPaused => "run paused",
            Event::RunFinished => "run finished",
            Event::WritesFailing => "writes failing",
        }
    }
}

impl std::str::FromStr for Event {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Event::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| format!("unknown notification event {s:?}"))
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[notifications]`: the webhook endpoints and how deliveries are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// The address people open the UI at (`https://enrichd.example.com`): messages link to the run
    /// page there. Without it messages carry no link.
    pub public_url: Option<String>,
    /// `[notifications.webhooks.<name>]`: the endpoints.
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookEndpoint>,
    /// Attempts per delivery before it is given up (marked failed on the run page).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles per attempt (with jitter), up to `retry_max_seconds`.
    /// A receiver's `Retry-After` is honoured when it asks for longer.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest wait between attempts.
    #[serde(default = "default_retry_max_seconds")]
    pub retry_max_seconds: u64,
    /// How long one delivery may take (connecting, sending, the receiver's answer).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
    /// How often a daemon looks for run events to notify about and for deliveries that are due.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// When writes count as failing.
    #[serde(default)]
    pub writes_failing: WritesFailing,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            webhooks: BTreeMap::new(),
            max_attempts: default_max_attempts(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_seconds: default_retry_max_seconds(),
            timeout_seconds: default_timeout_seconds(),
            poll_interval_ms: default_poll_interval_ms(),
            writes_failing: WritesFailing::default(),
        }
    }
}

fn default_max_attempts() -> u32 {
    8
}
fn default_retry_base_ms() -> u64 {
    10_000
}
fn default_retry_max_seconds() -> u64 {
    3_600
}
fn default_timeout_seconds() -> f64 {
    10.0
}
fn default_poll_interval_ms() -> u64 {
    1_000
}

/// `[notifications.writes_failing]`: a run's writes are failing when `failures` failed write
/// attempts follow each other with no gap longer than `window_seconds`. One notification per such
/// episode; a quiet `window_seconds` ends it, and failures after that start a new one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritesFailing {
    #[serde(default = "default_failures")]
    pub failures: u32,
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
}

impl Default for WritesFailing {
    fn default() -> Self {
        Self { failures: default_failures(), window_seconds: default_window_seconds() }
    }
}

fn default_failures() -> u32 {
    5
}
fn default_window_seconds() -> u64 {
    600
}

/// `[notifications.webhooks.<name>]`: one receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Where deliveries are POSTed: an `https://` (or `http://`) URL, or a secret reference
    /// (`"${ENV_VAR}"`, `"file:/path"`) for URLs that carry their own secret, as Slack's do.
    pub url: WebhookUrl,
    /// The key deliveries are signed with (`X-Enrichd-Signature`), as `"${ENV_VAR}"` or `"file:/path"`.
    pub secret: Secret,
    /// The events this endpoint hears; all of them when left out.
    #[serde(default = "all_events")]
    pub events: Vec<Event>,
    /// Whether the endpoint hears every pipeline that does not choose its own endpoints. `false`:
    /// only the pipelines that name it in `[pipelines.<name>.notifications] webhooks`.
    #[serde(default = "yes")]
    pub all_pipelines: bool,
}

fn all_events() -> Vec<Event> {
    Event::ALL.to_vec()
}
fn yes() -> bool {
    true
}

/// A webhook URL: written in the file, or read from the environment or a file because it is
/// itself a credential (Slack's incoming-webhook URLs).
#[derive(Clone)]
pub enum WebhookUrl {
    Plain(SecretString),
    Reference(Secret),
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", masked(self.value()))
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if (text.starts_with("${") && text.ends_with('}')) || text.starts_with("file:") {
            return Ok(WebhookUrl::Reference(Secret(text.into())));
        }
        Ok(WebhookUrl::Plain(text.into()))
    }
}

impl WebhookUrl {
    /// The URL (after the config's secrets are read; before, a reference's text).
    pub fn value(&self) -> &str {
        match self {
            WebhookUrl::Plain(s) => s.expose_secret(),
            WebhookUrl::Reference(s) => s.0.expose_secret(),
        }
    }
}

/// `[pipelines.<name>.notifications]`: which endpoints and events this pipeline uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineNotifications {
    /// Only these endpoints hear this pipeline (`[]`: none). Left out: every endpoint with
    /// `all_pipelines = true`.
    pub webhooks: Option<Vec<String>>,
    /// Only these events of this pipeline are sent (each endpoint still hears only its own `events`).
    pub events: Option<Vec<Event>>,
}

impl NotificationsConfig {
    /// Checks what deserialising cannot; an error is `(key path, message)`.
    pub fn validate<'a>(
        &self,
        pipelines: impl Iterator<Item = (&'a String, Option<&'a PipelineNotifications>)>,
    ) -> Result<(), (String, String)> {
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(("notifications.public_url".into(), "must start with https:// or http://".into()));
        }
        if self.max_attempts == 0 {
            return Err(("notifications.max_attempts".into(), "must be at least 1".into()));
        }
        if !(self.timeout_seconds.is_finite() && self.timeout_seconds > 0.0) {
            return Err(("notifications.timeout_seconds".into(), "must be a positive number".into()));
        }
        if self.poll_interval_ms == 0 {
            return Err(("notifications.poll_interval_ms".into(), "must be at least 1".into()));
        }
        if self.writes_failing.failures == 0 {
            return Err(("notifications.writes_failing.failures".into(), "must be at least 1".into()));
        }
        if self.writes_failing.window_seconds == 0 {
            return Err(("notifications.writes_failing.window_seconds".into(), "must be at least 1".into()));
        }
        for (name, hook) in &self.webhooks {
            if let WebhookUrl::Plain(url) = &hook.url {
                check_url(url.expose_secret()).map_err(|m| (format!("notifications.webhooks.{name}.url"), m))?;
            }
            if hook.events.is_empty() {
                return Err((
                    format!("notifications.webhooks.{name}.events"),
                    "names no event; leave it out to hear all of them, or remove the endpoint".into(),
                ));
            }
        }
        for (pipeline, chosen) in pipelines {
            let Some(webhooks) = chosen.and_then(|c| c.webhooks.as_ref()) else { continue };
            for (i, hook) in webhooks.iter().enumerate() {
                if !self.webhooks.contains_key(hook) {
                    let known: Vec<&str> = self.webhooks.keys().map(String::as_str).collect();
                    return Err((
                        format!("pipelines.{pipeline}.notifications.webhooks[{i}]"),
                        format!(
                            "no webhook {hook:?} in [notifications.webhooks]; {}",
                            if known.is_empty() {
                                "none are configured".into()
                            } else {
                                format!("known: {}", known.join(", "))
                            }
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The secrets to read (the signing keys, and URLs given as references), with their key paths.
    pub fn secrets_mut(&mut self) -> Vec<(String, &mut Secret)> {
        let mut out = Vec::new();
        for (name, hook) in self.webhooks.iter_mut() {
            out.push((format!("notifications.webhooks.{name}.secret"), &mut hook.secret));
            if let WebhookUrl::Reference(url) = &mut hook.url {
                out.push((format!("notifications.webhooks.{name}.url"), url));
            }
        }
        out
    }

    /// Checks the URLs that came from the environment or a file, once read; `(key path, message)`.
    pub fn check_resolved_urls(&self) -> Result<(), (String, String)> {
        for (name, hook) in &self.webhooks {
            if let WebhookUrl::Reference(_) = &hook.url {
                check_url(hook.url.value()).map_err(|m| (format!("notifications.webhooks.{name}.url"), m))?;
            }
        }
        Ok(())
    }

    /// The endpoints that hear `event` of a pipeline configured with `pipeline`.
    pub fn endpoints_for<'a>(
        &'a self,
        event: Event,
        pipeline: Option<&'a PipelineNotifications>,
    ) -> impl Iterator<Item = (&'a String, &'a WebhookEndpoint)> + 'a {
        let events = pipeline.and_then(|p| p.events.as_ref());
        let chosen = pipeline.and_then(|p| p.webhooks.as_ref());
        self.webhooks.iter().filter(move |(name, hook)| {
            hook.events.contains(&event)
                && events.is_none_or(|e| e.contains(&event))
                && match chosen {
                    Some(list) => list.contains(*name),
                    None => hook.all_pipelines,
                }
        })
    }
}

/// Why `url` cannot be a webhook URL. The message never repeats the URL (it may hold a secret).
fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!("must be an https:// or http:// URL, not {}:", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

/// A webhook URL for people and logs: its scheme and host (and port), with the path and query
/// masked, because URLs such as Slack's carry their secret there.
pub fn masked(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.host_str().is_some() => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path() == "/" && u.query().is_none() { "/" } else { "/***" };
            format!("{}://{}{port}{rest}", u.scheme(), u.host_str().unwrap_or_default())
        }
        _ => "(a URL that does not parse)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_path_and_query() {
        assert_eq!(masked("https://hooks.slack.com/services/T0/B0/XXXX"), "https://hooks.slack.com/***");
        assert_eq!(masked("http://127.0.0.1:8080/hook?token=abc"), "http://127.0.0.1:8080/***");
        assert_eq!(masked("https://user:pw@example.com/"), "https://example.com/");
        assert_eq!(masked("not a url"), "(a URL that does not parse)");
    }

    #[test]
    fn endpoints_follow_pipeline_choices() {
        let toml = r#"
            [webhooks.ops]
            url = "https://ops.example.com/hook"
            secret = "${OPS}"
            events = ["run_paused"]
            [webhooks.shop]
            url = "https://shop.example.com/hook"
            secret = "${SHOP}"
            all_pipelines = false
        "#;
        let config: NotificationsConfig = toml::from_str(toml).unwrap();
        let names = |event, p: Option<&PipelineNotifications>| -> Vec<String> {
            config.endpoints_for(event, p).map(|(n, _)| n.clone()).collect()
        };
        assert_eq!(names(Event::RunPaused, None), ["ops"]);
        assert!(names(Event::RunFinished, None).is_empty());
        let shop = PipelineNotifications { webhooks: Some(vec!["shop".into()]), events: None };
        assert_eq!(names(Event::RunFinished, Some(&shop)), ["shop"]);
        let quiet = PipelineNotifications { webhooks: None, events: Some(vec![Event::RunFinished]) };
        assert!(names(Event::RunPaused, Some(&quiet)).is_empty());
    }

    #[test]
    fn a_pipeline_names_only_configured_webhooks() {
        let toml = "[webhooks.ops]\nurl = \"https://x.example.com/\"\nsecret = \"${S}\"\n";
        let config: NotificationsConfig = toml::from_str(toml).unwrap();
        let name = "catalogue".to_owned();
        let chosen = PipelineNotifications { webhooks: Some(vec!["shop".into()]), events: None };
        let (path, message) = config.validate([(&name, Some(&chosen))].into_iter()).unwrap_err();
        assert_eq!(path, "pipelines.catalogue.notifications.webhooks[0]");
        assert_eq!(message, "no webhook \"shop\" in [notifications.webhooks]; known: ops");
    }
}
