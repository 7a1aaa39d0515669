//! A Freshdesk connection's settings as written in config, and their validation. The crate owns them
//! so the daemon's config does not grow a section per platform: the daemon hands this struct the
//! connection's table and the key path it came from, and gets [`Options`] or an error naming the key.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use enrichd_connector::ConfigError;

/// `[connections.<name>]` with `kind = "freshdesk"` (the `kind` key is the daemon's, not ours).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshdeskConfig {
    /// The account's domain: `acme` for `https://acme.freshdesk.com`.
    pub domain: Option<String>,
    /// The account's URL instead of `domain` (a custom helpdesk address, or a sandbox).
    pub base_url: Option<String>,
    /// The API key of the agent enrichd acts as (Profile settings → "View API key"), sent as Basic
    /// auth `key:X`. Write it as a reference: `"${FRESHDESK_API_KEY}"` or `"file:/path"`.
    pub api_key: Option<SecretString>,
    /// Seconds before a request is abandoned (30 unless set).
    pub timeout_secs: Option<u64>,
    /// The most characters of a ticket's conversation shown to the model (6,000 unless set); the
    /// first and the latest messages are kept.
    pub conversation_chars: Option<usize>,
    /// Where a listing without a cursor or `modified_after` starts (RFC 3339, `2024-01-01T00:00:00Z`).
    /// Freshdesk lists only the last 30 days unless told otherwise; unset, the listing starts at
    /// 2000-01-01 and so sees every ticket.
    pub list_since: Option<String>,
}

/// Validated settings, ready for [`crate::Freshdesk::new`].
#[derive(Debug, Clone)]
pub struct Options {
    /// `https://acme.freshdesk.com` (no trailing slash); the API is under `/api/v2`.
    pub base_url: String,
    pub api_key: SecretString,
    pub timeout: Duration,
    pub conversation_chars: usize,
    /// RFC 3339 UTC instant a listing from the start begins at.
    pub list_since: String,
}

/// Where a listing from the start begins when `list_since` is not set.
pub const DEFAULT_LIST_SINCE: &str = "2000-01-01T00:00:00Z";

impl FreshdeskConfig {
    /// Checks the settings found at `path` (`connections.helpdesk`); errors name the offending key.
    pub fn validate(&self, path: &str) -> Result<Options, ConfigError> {
        let err = |key: &str, message: String| ConfigError { key: format!("{path}.{key}"), message };
        let base_url = match (&self.domain, &self.base_url) {
            (Some(_), Some(_)) => return Err(err("base_url", "set either domain or base_url, not both".into())),
            (None, None) => {
                return Err(err("domain", "missing: set domain (the `acme` of acme.freshdesk.com) or base_url".into()));
            }
            (Some(domain), None) => {
                let domain = domain.trim();
                let valid = !domain.is_empty()
                    && domain.len() <= 63
                    && domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !domain.starts_with('-');
                if !valid {
                    return Err(err(
                        "domain",
                        format!(
                            "{domain:?} is not a Freshdesk domain (letters, digits and '-' only, e.g. \"acme\" for acme.freshdesk.com); for a full address use base_url"
                        ),
                    ));
                }
                format!("https://{}.freshdesk.com", domain.to_ascii_lowercase())
            }
            (None, Some(url)) => {
                enrichd_connector::settings::account_url(url, "the API key", "the helpdesk's", "/api/v2")
                    .map_err(|m| err("base_url", m))?
            }
        };
        let api_key = match &self.api_key {
            None => {
                return Err(err("api_key", "missing: set the agent's API key, e.g. \"${FRESHDESK_API_KEY}\"".into()));
            }
            Some(key) if key.expose_secret().trim().is_empty() => return Err(err("api_key", "is empty".into())),
            Some(key) if key.expose_secret().contains(':') => {
                return Err(err(
                    "api_key",
                    "contains ':'; give the API key alone (enrichd sends it as `key:X` itself)".into(),
                ));
            }
            Some(key) => key.clone(),
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
        let list_since = match self.list_since.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_LIST_SINCE.to_owned(),
            Some(since) => match chrono::DateTime::parse_from_rfc3339(since) {
                Ok(at) => at.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                Err(e) => {
                    return Err(err(
                        "list_since",
                        format!("{since:?} is not an RFC 3339 instant (e.g. 2024-01-01T00:00:00Z): {e}"),
                    ));
                }
            },
        };
        Ok(Options { base_url, api_key, timeout, conversation_chars, list_since })
    }
}

impl enrichd_connector::ConnectionSettings for FreshdeskConfig {
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut SecretString)> {
        self.api_key.as_mut().map(|key| vec![("api_key", key)]).unwrap_or_default()
    }
}
