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
