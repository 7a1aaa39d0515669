//! OAuth2 access tokens for platforms whose refresh tokens rotate (Xero, QuickBooks Online): every
//! refresh returns a new refresh token and invalidates the old one. If the new one is lost — the
//! process dies between refreshing and saving — the connection is gone until a human re-authorises.
//! So the new token set is persisted through a [`TokenStore`] *before* the access token is used.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{ConnectorError, http};

/// An access token, the refresh token that renews it, and when the access token expires.
#[derive(Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    /// Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Durable storage for a connection's tokens (enrichd keeps them encrypted in its database).
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn load(&self, connection: &str) -> Result<Option<TokenSet>, ConnectorError>;
    async fn save(&self, connection: &str, tokens: &TokenSet) -> Result<(), ConnectorError>;
}

/// The OAuth2 client registration used to refresh.
pub struct OAuth2Client {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

/// Hands out a valid access token for one connection, refreshing (and persisting the rotated refresh
/// token first) when the current one is within a minute of expiring.
pub struct RotatingToken {
    connection: String,
    client: OAuth2Client,
    http: reqwest::Client,
    store: Arc<dyn TokenStore>,
    /// The refresh token from config, used only when the store has none yet (first start).
    bootstrap: Option<SecretString>,
    current: tokio::sync::Mutex<Held>,
}

/// The tokens in memory, and whether they still have to be persisted.
#[derive(Default)]
struct Held {
    tokens: Option<TokenSet>,
    /// Rotated but not yet saved: must be saved before anything else happens.
    unsaved: bool,
    /// An access token the platform refused (401); never handed out again.
    revoked: Option<SecretString>,
}

impl Held {
    fn usable<'a>(&self, tokens: Option<&'a TokenSet>) -> Option<&'a TokenSet> {
        let revoked = self.revoked.as_ref().map(|r| r.expose_secret());
        tokens.filter(|t| fresh(t) && Some(t.access_token.expose_secret()) != revoked)
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
}

const EARLY_REFRESH_SECS: i64 = 60;

impl RotatingToken {
    pub fn new(
        connection: impl Into<String>,
        client: OAuth2Client,
        http: reqwest::Client,
        store: Arc<dyn TokenStore>,
        bootstrap: Option<SecretString>,
    ) -> Self {
        Self {
            connection: connection.into(),
            client,
            http,
            store,
            bootstrap,
            current: tokio::sync::Mutex::new(Held::default()),
        }
    }

    /// A valid access token. Only one refresh runs at a time in this process; before refreshing, the
    /// store is read again in case another daemon already rotated the token. A rotated token set is
    /// saved before its access token is handed out; if saving fails, the set stays in memory (the
    /// old refresh token is already dead) and the save is retried on the next call.
    pub async fn access_token(&self) -> Result<SecretString, ConnectorError> {
        let mut held = self.current.lock().await;
        if held.unsaved {
            let tokens = held.tokens.clone().expect("unsaved implies tokens");
            self.store.save(&self.connection, &tokens).await?;
            held.unsaved = false;
        }
        if let Some(tokens) = held.usable(held.tokens.as_ref()) {
            return Ok(tokens.access_token.clone());
        }
        let stored = self.store.load(&self.connection).await?;
        if let Some(tokens) = held.usable(stored.as_ref()) {
            let access = tokens.access_token.clone();
            held.tokens = stored;
            return Ok(access);
        }
        let refresh = stored
            .map(|t| t.refresh_token)
            .or_else(|| held.tokens.as_ref().map(|t| t.refresh_token.clone()))
            .or_else(|| self.bootstrap.clone())
            .ok_or_else(|| {
                ConnectorError::permanent(format!(
                    "connection {}: no OAuth2 refresh token stored or configured; authorise the connection first",
                    self.connection
                ))
            })?;
        let renewed = self.refresh(&refresh).await?;
        held.tokens = Some(renewed.clone());
        held.unsaved = true;
        self.store.save(&self.connection, &renewed).await?;
        held.unsaved = false;
        Ok(renewed.access_token)
    }

    /// Marks the current access token as refused (after a 401), so the next call refreshes unless
    /// another daemon already stored a newer one.
    pub async fn invalidate(&self) {
        let mut held = self.current.lock().await;
        held.revoked = held.tokens.as_ref().map(|t| t.access_token.clone());
    }

    async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, ConnectorError> {
        let what = format!("connection {}: OAuth2 token refresh", self.connection);
        let request = self
            .http
            .post(&self.client.token_url)
            .basic_auth(&self.client.client_id, Some(self.client.client_secret.expose_secret()))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token.expose_secret())]);
        let response = http::send(request, &what).await?;
        let body: TokenResponse = http::json(response, &what).await?;
        Ok(TokenSet {
            access_token: body.access_token.into(),
            // Some providers do not rotate: keep the old refresh token then.
            refresh_token: body.refresh_token.map(SecretString::from).unwrap_or_else(|| refresh_token.clone()),
            expires_at: now() + body.expires_in.unwrap_or(3600),
        })
    }
}

fn fresh(tokens: &TokenSet) -> bool {
    tokens.expires_at - EARLY_REFRESH_SECS > now()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64
}
