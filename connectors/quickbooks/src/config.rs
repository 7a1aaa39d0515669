//! A QuickBooks Online connection's settings as written in config, and their validation. The daemon
//! hands this struct the connection's table and the key path it came from, and gets [`Options`] or
//! an error naming the key.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use enrichd_connector::ConfigError;

/// Intuit's production API host.
pub const PRODUCTION_URL: &str = "https://quickbooks.api.intuit.com";
/// Intuit's development (sandbox company) API host.
pub const SANDBOX_URL: &str = "https://sandbox-quickbooks.api.intuit.com";
/// Intuit's OAuth2 token endpoint (both environments).
pub const TOKEN_URL: &str = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer";
/// Intuit's OAuth2 authorisation page (both environments).
pub const AUTHORIZE_URL: &str = "https://appcenter.intuit.com/connect/oauth2";
/// The authorisation page's path under `base_url` (enrichd's sandbox).
pub const AUTHORIZE_PATH: &str = "/connect/oauth2";
/// The OAuth2 scope for the Accounting API.
pub const SCOPE: &str = "com.intuit.quickbooks.accounting";
/// The token endpoint's path, used under `base_url` when `base_url` is set and `token_url` is not
/// (enrichd's own sandbox serves both on one address).
pub const TOKEN_PATH: &str = "/oauth2/v1/tokens/bearer";
/// Intuit discontinued minor versions 1 to 74 on 1 August 2025; 75 is the floor.
pub const MIN_MINOR_VERSION: u32 = 75;

/// Which Intuit environment a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Sandbox,
}

/// `[connections.<name>]` with `kind = "quickbooks"` (the `kind` key is the daemon's, not ours).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickBooksConfig {
    /// The app's OAuth2 client id (a secret reference: `"${QBO_CLIENT_ID}"` or `"file:/path"`).
    pub client_id: Option<SecretString>,
    /// The app's OAuth2 client secret (a secret reference).
    pub client_secret: Option<SecretString>,
    /// The company (`realmId`); `enrichd connect` sets it from the authorisation redirect.
    pub realm_id: Option<String>,
    /// `production` (the default) or `sandbox` (Intuit's development companies).
    pub environment: Option<Environment>,
    /// The API's address instead of `environment` (enrichd's sandbox); the API is under `/v3/company`.
    pub base_url: Option<String>,
    /// The OAuth2 token endpoint; Intuit's unless set, or `<base_url>/oauth2/v1/tokens/bearer` with `base_url`.
    pub token_url: Option<String>,
    /// The OAuth2 authorisation page `enrichd connect` opens; Intuit's unless set, or
    /// `<base_url>/connect/oauth2` with `base_url`.
    pub authorize_url: Option<String>,
    /// Seconds before a request is abandoned (60 unless set; Intuit's own limit is 120).
    pub timeout_secs: Option<u64>,
    /// The `minorversion` sent on every call (75 unless set; lower ones are discontinued).
    pub minor_version: Option<u32>,
}

/// Validated settings, ready for [`crate::QuickBooks::new`].
#[derive(Debug, Clone)]
pub struct Options {
    /// `https://quickbooks.api.intuit.com` (no trailing slash).
    pub base_url: String,
    pub token_url: String,
    /// Where `enrichd connect` sends the user to authorise the app (scope [`SCOPE`]).
    pub authorize_url: String,
    pub client_id: SecretString,
    pub client_secret: SecretString,
    /// `None` until the connection is authorised; every API call needs it.
    pub realm_id: Option<String>,
    pub timeout: Duration,
    pub minor_version: u32,
}

/// Checks an http(s) URL: https, or http on loopback only (tokens must not cross the network in clear).
fn check_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or("");
    let host_name = if host.starts_with('[') {
        host.split(']').next().map(|h| format!("{h}]")).unwrap_or_default()
    } else {
        host.split(['/', ':']).next().unwrap_or("").to_owned()
    };
    if host_name.is_empty() {
        return Err(format!("{url:?} is not an http(s):// URL"));
    }
    let loopback = ["localhost", "127.0.0.1", "[::1]"].contains(&host_name.as_str());
    if url.starts_with("http://") && !loopback {
        return Err(format!(
            "{url:?} is plain http://: OAuth2 tokens would cross the network unencrypted; use https://"
        ));
    }
    Ok(url.to_owned())
}

impl QuickBooksConfig {
    /// Checks the settings found at `path` (`connections.books`); errors name the offending key.
    pub fn validate(&self, path: &str) -> Result<Options, ConfigError> {
        let err = |key: &str, message: String| ConfigError { key: format!("{path}.{key}"), message };
        let secret = |key: &str, value: &Option<SecretString>| -> Result<SecretString, ConfigError> {
            match value {
                None => Err(err(key, "missing: the app's OAuth2 credentials from the Intuit developer portal".into())),
                Some(v) if v.expose_secret().trim().is_empty() => Err(err(key, "is empty".into())),
                Some(v) => Ok(v.clone()),
            }
        };
        let client_id = secret("client_id", &self.client_id)?;
        let client_secret = secret("client_secret", &self.client_secret)?;
        let base_url = match (&self.environment, &self.base_url) {
            (Some(_), Some(_)) => return Err(err("base_url", "set either environment or base_url, not both".into())),
            (None | Some(Environment::Production), None) => PRODUCTION_URL.to_owned(),
            (Some(Environment::Sandbox), None) => SANDBOX_URL.to_owned(),
            (None, Some(url)) => {
                let url = check_url(url).map_err(|m| err("base_url", m))?;
                if url.contains("/v3") {
                    return Err(err(
                        "base_url",
                        format!("{url:?}: give the address only (the API is under /v3/company)"),
                    ));
                }
                url
            }
        };
        let token_url = match (&self.token_url, &self.base_url) {
            (Some(url), _) => check_url(url).map_err(|m| err("token_url", m))?,
            (None, Some(_)) => format!("{base_url}{TOKEN_PATH}"),
            (None, None) => TOKEN_URL.to_owned(),
        };
        let authorize_url = match (&self.authorize_url, &self.base_url) {
            (Some(url), _) => check_url(url).map_err(|m| err("authorize_url", m))?,
            (None, Some(_)) => format!("{base_url}{AUTHORIZE_PATH}"),
            (None, None) => AUTHORIZE_URL.to_owned(),
        };
        let realm_id = match self.realm_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(realm) if realm.chars().all(|c| c.is_ascii_digit()) => Some(realm.to_owned()),
            Some(realm) => {
                return Err(err(
                    "realm_id",
                    format!("{realm:?} is not a QuickBooks company id (digits only, e.g. \"9130347596823412\")"),
                ));
            }
        };
        let timeout = match self.timeout_secs {
            Some(0) => return Err(err("timeout_secs", "must be at least 1".into())),
            Some(secs) => Duration::from_secs(secs),
            None => Duration::from_secs(60),
        };
        let minor_version = match self.minor_version {
            Some(v) if v < MIN_MINOR_VERSION => {
                return Err(err(
                    "minor_version",
                    format!("{v}: Intuit discontinued minor versions below {MIN_MINOR_VERSION} on 2025-08-01"),
                ));
            }
            Some(v) => v,
            None => MIN_MINOR_VERSION,
        };
        Ok(Options { base_url, token_url, authorize_url, client_id, client_secret, realm_id, timeout, minor_version })
    }
}

impl enrichd_connector::ConnectionSettings for QuickBooksConfig {
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut SecretString)> {
        let mut secrets = Vec::new();
        if let Some(s) = self.client_id.as_mut() {
            secrets.push(("client_id", s));
        }
        if let Some(s) = self.client_secret.as_mut() {
            secrets.push(("client_secret", s));
        }
        secrets
    }
}
