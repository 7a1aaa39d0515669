//! A Xero connection's settings as written in config, and their validation. The daemon hands this
//! struct the connection's table and its key path, and gets [`Options`] or an error naming the key.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use enrichd_connector::ConfigError;

/// Xero's API host (the Accounting API is under `/api.xro/2.0`, tenants under `/connections`).
pub const API_URL: &str = "https://api.xero.com";
/// Xero's identity host (the token endpoint is `/connect/token`).
pub const IDENTITY_URL: &str = "https://identity.xero.com";
/// Where a person authorises the app (authorisation code + PKCE).
pub const AUTHORIZE_URL: &str = "https://login.xero.com/identity/connect/authorize";

/// `[connections.<name>]` with `kind = "xero"` (the `kind` key is the daemon's, not ours).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XeroConfig {
    /// The app's OAuth2 client id (a secret reference: `"${XERO_CLIENT_ID}"` or `"file:/path"`).
    pub client_id: Option<SecretString>,
    /// The app's OAuth2 client secret (a secret reference).
    pub client_secret: Option<SecretString>,
    /// The organisation (`tenantId` from `/connections`) every call is made for. `enrichd connect`
    /// picks it; a Custom Connection serves one organisation and may leave it out.
    pub tenant_id: Option<String>,
    /// The API host, `https://api.xero.com` unless set (a sandbox: `http://127.0.0.1:PORT`).
    pub base_url: Option<String>,
    /// The identity host serving `/connect/token`: `https://identity.xero.com` by default, or
    /// `base_url` when only that is set (a sandbox serves both on one address).
    pub identity_url: Option<String>,
    /// The app is a Xero Custom Connection: tokens come from the client credentials grant, one
    /// organisation, no refresh token and no `enrichd connect`.
    #[serde(default)]
    pub custom_connection: bool,
    /// Seconds before a request is abandoned (30 unless set).
    pub timeout_secs: Option<u64>,
}

/// Validated settings, ready for [`crate::Xero::new`].
#[derive(Debug, Clone)]
pub struct Options {
    /// `https://api.xero.com` (no trailing slash).
    pub base_url: String,
    /// `https://identity.xero.com/connect/token`.
    pub token_url: String,
    /// Where `enrichd connect` sends the person to authorise.
    pub authorize_url: String,
    pub client_id: SecretString,
    pub client_secret: SecretString,
    pub tenant_id: Option<String>,
    pub custom_connection: bool,
    pub timeout: Duration,
}

impl XeroConfig {
    /// Checks the settings found at `path` (`connections.books`); errors name the offending key.
    pub fn validate(&self, path: &str) -> Result<Options, ConfigError> {
        let err = |key: &str, message: String| ConfigError { key: format!("{path}.{key}"), message };
        let secret = |key: &str, value: &Option<SecretString>| -> Result<SecretString, ConfigError> {
            match value {
                None => {
                    Err(err(key, "missing: the Xero app's credentials (from developer.xero.com/app/manage)".into()))
                }
                Some(v) if v.expose_secret().trim().is_empty() => Err(err(key, "is empty".into())),
                Some(v) => Ok(v.clone()),
            }
        };
        let client_id = secret("client_id", &self.client_id)?;
        let client_secret = secret("client_secret", &self.client_secret)?;
        let base_url = match &self.base_url {
            None => API_URL.to_owned(),
            Some(url) => url_of(url).map_err(|m| err("base_url", m))?,
        };
        let identity = match (&self.identity_url, &self.base_url) {
            (Some(url), _) => url_of(url).map_err(|m| err("identity_url", m))?,
            (None, Some(_)) => base_url.clone(),
            (None, None) => IDENTITY_URL.to_owned(),
        };
        let authorize_url = if identity == IDENTITY_URL {
            AUTHORIZE_URL.to_owned()
        } else {
            format!("{identity}/identity/connect/authorize")
        };
        let tenant_id = match self.tenant_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) if is_uuid(t) => Some(t.to_ascii_lowercase()),
            Some(t) => {
                return Err(err(
                    "tenant_id",
                    format!(
                        "{t:?} is not a Xero tenant id (a UUID such as fe79f7dd-b6d4-4a92-ba7b-538af6289c58, from `enrichd connect`)"
                    ),
                ));
            }
        };
        let timeout = match self.timeout_secs {
            Some(0) => return Err(err("timeout_secs", "must be at least 1".into())),
            Some(secs) => Duration::from_secs(secs),
            None => Duration::from_secs(30),
        };
        Ok(Options {
            base_url,
            token_url: format!("{identity}/connect/token"),
            authorize_url,
            client_id,
            client_secret,
            tenant_id,
            custom_connection: self.custom_connection,
            timeout,
        })
    }
}

/// An http(s) address without a path; plain http only on loopback (credentials cross it).
fn url_of(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or("");
    let host_name = host.split(['/', ':']).next().unwrap_or("");
    if host_name.is_empty() {
        return Err(format!("{url:?} is not an http(s):// URL"));
    }
    let loopback = ["localhost", "127.0.0.1", "[::1]"].contains(&host_name) || host.starts_with("[::1]");
    if url.starts_with("http://") && !loopback {
        return Err(format!("{url:?} is plain http://: tokens would cross the network unencrypted; use https://"));
    }
    if host.contains('/') {
        return Err(format!(
            "{url:?} has a path; give the host only (the connector adds /api.xro/2.0, /connect/token)"
        ));
    }
    Ok(url.to_owned())
}

/// `8-4-4-4-12` hex digits.
pub(crate) fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

impl enrichd_connector::ConnectionSettings for XeroConfig {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_like: serde_json::Value) -> XeroConfig {
        serde_json::from_value(toml_like).unwrap()
    }

    #[test]
    fn errors_name_the_key() {
        let c = config(serde_json::json!({"client_secret": "s"}));
        assert_eq!(c.validate("connections.books").unwrap_err().key, "connections.books.client_id");
        let c = config(serde_json::json!({"client_id": "i", "client_secret": "s", "tenant_id": "acme"}));
        let e = c.validate("connections.books").unwrap_err();
        assert_eq!(e.key, "connections.books.tenant_id");
        assert!(e.message.contains("\"acme\""), "{e}");
        let c = config(serde_json::json!({"client_id": "i", "client_secret": "s", "base_url": "http://xero.example"}));
        assert_eq!(c.validate("c").unwrap_err().key, "c.base_url");
        let unknown = serde_json::from_value::<XeroConfig>(serde_json::json!({"client_id": "i", "tenant": "x"}));
        assert!(unknown.unwrap_err().to_string().contains("unknown field `tenant`"));
    }

    #[test]
    fn defaults_and_one_base_sandbox() {
        let c = config(serde_json::json!({"client_id": "i", "client_secret": "s"}));
        let o = c.validate("c").unwrap();
        assert_eq!(o.base_url, API_URL);
        assert_eq!(o.token_url, "https://identity.xero.com/connect/token");
        assert_eq!(o.authorize_url, AUTHORIZE_URL);
        let c = config(serde_json::json!({"client_id": "i", "client_secret": "s", "base_url": "http://127.0.0.1:9/",
            "tenant_id": "FE79F7DD-B6D4-4A92-BA7B-538AF6289C58", "custom_connection": true}));
        let o = c.validate("c").unwrap();
        assert_eq!(o.token_url, "http://127.0.0.1:9/connect/token");
        assert_eq!(o.tenant_id.as_deref(), Some("fe79f7dd-b6d4-4a92-ba7b-538af6289c58"));
        assert!(o.custom_connection);
    }
}
