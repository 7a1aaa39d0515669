//! A Zendesk connection's settings as written in config, and their validation. The crate owns them
//! so the daemon's config does not grow a section per platform: the daemon hands this struct the
//! connection's table and the key path it came from, and gets [`Options`] or an error naming the key.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// `[connections.<name>]` with `kind = "zendesk"` (the `kind` key is the daemon's, not ours).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZendeskConfig {
    /// The account's subdomain: `acme` for `https://acme.zendesk.com`.
    pub subdomain: Option<String>,
    /// The account's URL instead of `subdomain` (a host-mapped domain, or a sandbox).
    pub base_url: Option<String>,
    /// The agent whose API token is used (`{email}/token:{api_token}` as Basic auth).
    pub email: Option<String>,
    pub api_token: Option<SecretString>,
    /// An OAuth access token (sent as a bearer token) instead of `email` + `api_token`.
    pub oauth_token: Option<SecretString>,
    /// Seconds before a request is abandoned (30 unless set).
    pub timeout_secs: Option<u64>,
    /// The most characters of a ticket's conversation shown to the model (6,000 unless set); the
    /// first and the latest messages are kept.
    pub conversation_chars: Option<usize>,
    /// When set, a listing from the start finds candidates through Search first:
    /// `type:ticket status<solved <search>` (e.g. `-tags:triaged`). Search stops at 1,000 results;
    /// past them the listing continues with the incremental export from the beginning.
    pub search: Option<String>,
}

pub use enrichd_connector::ConfigError;

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Credentials {
    ApiToken { email: String, token: SecretString },
    OAuth { token: SecretString },
}

/// Validated settings, ready for [`crate::Zendesk::new`].
#[derive(Debug, Clone)]
pub struct Options {
    /// `https://acme.zendesk.com` (no trailing slash); the API is under `/api/v2`.
    pub base_url: String,
    pub credentials: Credentials,
    pub timeout: Duration,
    pub conversation_chars: usize,
    /// The Search condition added to `type:ticket status<solved`, if discovery uses Search.
    pub search: Option<String>,
}

impl ZendeskConfig {
    /// Checks the settings found at `path` (`connections.support`); errors name the offending key.
    pub fn validate(&self, path: &str) -> Result<Options, ConfigError> {
        let err = |key: &str, message: String| ConfigError { key: format!("{path}.{key}"), message };
        let base_url = match (&self.subdomain, &self.base_url) {
            (Some(_), Some(_)) => {
                return Err(err("base_url", "set either subdomain or base_url, not both".into()));
            }
            (None, None) => {
                return Err(err(
                    "subdomain",
                    "missing: set subdomain (the `acme` of acme.zendesk.com) or base_url".into(),
                ));
            }
            (Some(sub), None) => {
                let sub = sub.trim();
                let valid = !sub.is_empty()
                    && sub.len() <= 63
                    && sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !sub.starts_with('-');
                if !valid {
                    return Err(err(
                        "subdomain",
                        format!(
                            "{sub:?} is not a Zendesk subdomain (letters, digits and '-' only, e.g. \"acme\" for acme.zendesk.com); for a full address use base_url"
                        ),
                    ));
                }
                format!("https://{}.zendesk.com", sub.to_ascii_lowercase())
            }
            (None, Some(url)) => {
                enrichd_connector::settings::account_url(url, "the API token", "the account's", "/api/v2")
                    .map_err(|m| err("base_url", m))?
            }
        };
        let credentials = match (&self.email, &self.api_token, &self.oauth_token) {
            (_, Some(_), Some(_)) => {
                return Err(err("oauth_token", "set either email + api_token or oauth_token, not both".into()));
            }
            (Some(_), None, Some(_)) => {
                return Err(err("email", "email goes with api_token; with oauth_token leave it out".into()));
            }
            (None, None, None) => {
                return Err(err("api_token", "missing: set email + api_token, or oauth_token".into()));
            }
            (None, Some(_), None) => {
                return Err(err("email", "missing: api_token needs the agent's email address".into()));
            }
            (Some(_), None, None) => {
                return Err(err("api_token", "missing: email needs the agent's API token".into()));
            }
            (Some(email), Some(token), None) => {
                if !email.contains('@') || email.contains(char::is_whitespace) {
                    return Err(err("email", format!("{email:?} is not an e-mail address")));
                }
                if token.expose_secret().trim().is_empty() {
                    return Err(err("api_token", "is empty".into()));
                }
                Credentials::ApiToken { email: email.trim().to_owned(), token: token.clone() }
            }
            (None, None, Some(token)) => {
                if token.expose_secret().trim().is_empty() {
                    return Err(err("oauth_token", "is empty".into()));
                }
                Credentials::OAuth { token: token.clone() }
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
        let search = match self.search.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(condition) if condition.split_whitespace().any(|t| t.starts_with("type:")) => {
                return Err(err(
                    "search",
                    format!(
                        "{condition:?}: leave `type:` out, the connector searches tickets (type:ticket status<solved)"
                    ),
                ));
            }
            Some(condition) => Some(condition.to_owned()),
        };
        Ok(Options { base_url, credentials, timeout, conversation_chars, search })
    }
}

impl enrichd_connector::ConnectionSettings for ZendeskConfig {
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut SecretString)> {
        let mut secrets = Vec::new();
        if let Some(token) = self.api_token.as_mut() {
            secrets.push(("api_token", token));
        }
        if let Some(token) = self.oauth_token.as_mut() {
            secrets.push(("oauth_token", token));
        }
        secrets
    }
}
