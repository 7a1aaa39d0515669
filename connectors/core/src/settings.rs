//! What a connector crate's config section shares with the daemon: the error naming the key that is
//! wrong, and the secrets it holds. Each crate owns its own `[connections.<name>]` struct and its
//! validation (as Vector's components do); the daemon hands it the table and the key path it came
//! from, resolves the secrets the struct names, and builds the connector.

use secrecy::SecretString;

/// A config key that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The full key path (`connections.support.api_token`).
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A connection's settings as a connector crate declares them.
pub trait ConnectionSettings {
    /// Every secret-bearing key (its name under the connection, and the value). In the config file a
    /// secret is a reference (`"${ENV_VAR}"` or `"file:/path"`); the daemon checks that it is one when
    /// the config loads and replaces it with the value it names only for commands that connect.
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut SecretString)>;
}

/// A platform address given as `base_url`: trimmed of a trailing `/`, `http(s)://` with a host, no
/// path (`api_path` is where the connector finds the API under it), and `https://` unless the host is
/// loopback, since `carries` (the credential, in words) would cross the network unencrypted. The
/// error is the message for the key; `address_of` says whose address it should be.
pub fn account_url(url: &str, carries: &str, address_of: &str, api_path: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or("");
    let host_name = host.split(['/', ':']).next().unwrap_or("");
    if host_name.is_empty() {
        return Err(format!("{url:?} is not an http(s):// URL"));
    }
    let loopback = ["localhost", "127.0.0.1"].contains(&host_name) || host.starts_with("[::1]");
    if url.starts_with("http://") && !loopback {
        return Err(format!("{url:?} is plain http://: {carries} would cross the network unencrypted; use https://"));
    }
    if host.contains('/') {
        return Err(format!("{url:?} has a path; give {address_of} address only (the API is under {api_path})"));
    }
    Ok(url.to_owned())
}
