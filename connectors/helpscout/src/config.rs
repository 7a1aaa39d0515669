//! A Help Scout connection's settings as written in config, and their validation. The crate owns them
//! so the daemon's config does not grow a section per platform: the daemon hands this struct the
//! connection's table and the key path it came from, and gets [`Options`] or an error naming the key.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use enrichd_connector::ConfigError;

/// Help Scout's API address.
pub const DEFAULT_BASE_URL: &str = "https://api.helpscout.net";

/// The conversation statuses Help Scout's list filter takes (`active` is its default).
pub const STATUSES: [&str; 5] = ["active", "pending", "closed", "spam", "all"];

/// `[connections.<name>]` with `kind = "helpscout"` (the `kind` key is the daemon's, not ours).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelpScoutConfig {
    /// The API's address (`https://api.helpscout.net` unless set: a sandbox or a proxy).
    pub base_url: Option<String>,
    /// The App ID of a Help Scout app (Your Profile > My Apps), used with the client-credentials grant.
    pub client_id: Option<String>,
    /// The app's App Secret: a reference (`"${HELPSCOUT_CLIENT_SECRET}"` or `"file:/path"`).
    pub client_secret: Option<SecretString>,
    /// The id of the mailbox whose conversations are listed.
    pub mailbox: Option<u64>,
    /// Several mailboxes instead of `mailbox`.
    pub mailboxes: Option<Vec<u64>>,
    /// Which conversations a listing reads: `active` (the default, as Help Scout's), `pending`,
    /// `closed`, `spam` or `all`.
    pub status: Option<String>,
    /// Seconds before a request is abandoned (30 unless set).
    pub timeout_secs: Option<u64>,
    /// The most characters of a conversation shown to the model (6,000 unless set); the first and the
    /// latest messages are kept.
    pub conversation_chars: Option<usize>,
}

/// Validated settings, ready for [`crate::HelpScout::new`].
#[derive(Debug, Clone)]
pub struct Options {
    /// `https://api.helpscout.net` (no trailing slash); the API is under `/v2`.
    pub base_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub mailboxes: Vec<u64>,
    pub status: String,
    pub timeout: Duration,
    pub conversation_chars: usize,
}

impl HelpScoutConfig {
    /// Checks the settings found at `path` (`connections.support`); errors name the offending key.
    pub fn validate(&self, path: &str) -> Result<Options, ConfigError> {
        let err = |key: &str, message: String| ConfigError { key: format!("{path}.{key}"), message };
        let base_url = match &self.base_url {
            None => DEFAULT_BASE_URL.to_owned(),
            Some(url) => enrichd_connector::settings::account_url(url, "the app secret and tokens", "the API's", "/v2")
                .map_err(|m| err("base_url", m))?,
        };
        let client_id = match self.client_id.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(err(
                    "client_id",
                    "missing: set the App ID of a Help Scout app (Your Profile > My Apps)".into(),
                ));
            }
            Some(id) => id.to_owned(),
        };
        let client_secret = match &self.client_secret {
            None => {
                return Err(err(
                    "client_secret",
                    "missing: set the app's App Secret, e.g. \"${HELPSCOUT_CLIENT_SECRET}\"".into(),
                ));
            }
            Some(s) if s.expose_secret().trim().is_empty() => return Err(err("client_secret", "is empty".into())),
            Some(s) => s.clone(),
        };
        let mailboxes = match (self.mailbox, &self.mailboxes) {
            (Some(_), Some(_)) => return Err(err("mailboxes", "set either mailbox or mailboxes, not both".into())),
            (None, None) => return Err(err("mailbox", "missing: set the id of the mailbox to read".into())),
            (None, Some(list)) if list.is_empty() => return Err(err("mailboxes", "is empty".into())),
            (Some(0), None) => return Err(err("mailbox", "0 is not a mailbox id".into())),
            (None, Some(list)) if list.contains(&0) => return Err(err("mailboxes", "0 is not a mailbox id".into())),
            (Some(id), None) => vec![id],
            (None, Some(list)) => {
                let mut list = list.clone();
                list.sort_unstable();
                list.dedup();
                list
            }
        };
        let status = match self.status.as_deref().map(str::trim) {
            None => "active".to_owned(),
            Some(s) if STATUSES.contains(&s) => s.to_owned(),
            Some(s) => {
                return Err(err(
                    "status",
                    format!("{s:?} is not a conversation status; use one of {}", STATUSES.join(", ")),
                ));
            }
        };
        let timeout = match self.timeout_secs {
            Some(0) => return Err(err("timeout_secs", "must be at least 1".into())),
            Some(secs) => Duration::from_secs(secs),
            None => Duration::from_secs(30),
        };
        let conversation_chars = match self.conversation_chars {
            Some(n) if n < 200 => {
                return Err(err("conversation_chars", format!("{n} is too small to show a message; use at least 200")));
            }
            Some(n) => n,
            None => 6000,
        };
        Ok(Options { base_url, client_id, client_secret, mailboxes, status, timeout, conversation_chars })
    }
}

impl enrichd_connector::ConnectionSettings for HelpScoutConfig {
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut SecretString)> {
        self.client_secret.as_mut().map(|s| ("client_secret", s)).into_iter().collect()
    }
}
