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

/// The [`ConnectorError::code`] of a connection whose refresh token the platform refused: it must be
/// authorised again (`enrichd connect`), and no token request is made until then.
pub const NEEDS_CONNECT: &str = "needs_connect";
/// The OAuth2 error the platform answers for a dead refresh token.
pub const INVALID_GRANT: &str = "invalid_grant";

/// Durable storage for a connection's tokens (enrichd keeps them encrypted in its database).
///
/// Several processes may share one store (daemons on one database). Refreshing a rotating token is
/// then coordinated through it: a process first claims the refresh ([`TokenStore::claim_refresh`]),
/// and saves the rotated set as a compare-and-swap on the refresh token it replaced
/// ([`TokenStore::rotate`]); a process that loses either reads the winner's tokens instead of
/// refreshing again. The defaults suit a store used by one process only.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// The stored tokens. A store may refuse with a [`NEEDS_CONNECT`] error when the connection
    /// must be authorised again.
    async fn load(&self, connection: &str) -> Result<Option<TokenSet>, ConnectorError>;
    /// Stores `tokens`, replacing whatever was stored.
    async fn save(&self, connection: &str, tokens: &TokenSet) -> Result<(), ConnectorError>;

    /// Asks to be the one process refreshing `refresh_token` for the next `hold`, as `holder`.
    /// `false`: another holder is refreshing it, or it is no longer the stored one: read the store
    /// again (shortly) instead of refreshing.
    async fn claim_refresh(
        &self,
        connection: &str,
        refresh_token: &SecretString,
        holder: &str,
        hold: Duration,
    ) -> Result<bool, ConnectorError> {
        let _ = (connection, refresh_token, holder, hold);
        Ok(true)
    }

    /// Stores `tokens` in place of the set whose refresh token was `replaced`, only if that is still
    /// the stored one and no other holder's claim is live: a compare-and-swap. `false`: another
    /// process rotated first, and its tokens are the ones to use.
    async fn rotate(
        &self,
        connection: &str,
        replaced: &SecretString,
        holder: &str,
        tokens: &TokenSet,
    ) -> Result<bool, ConnectorError> {
        let _ = (replaced, holder);
        self.save(connection, tokens).await.map(|()| true)
    }

    /// The platform refused `refresh_token` (`invalid_grant`). `true` when it is still the stored
    /// one: the store marks the connection as needing `enrichd connect` (with `reason`), and its
    /// next [`TokenStore::load`] says so. `false`: another process replaced it meanwhile.
    async fn refused(
        &self,
        connection: &str,
        refresh_token: &SecretString,
        reason: &str,
    ) -> Result<bool, ConnectorError> {
        let _ = (connection, refresh_token, reason);
        Ok(true)
    }
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
    /// Names this token holder in the store's refresh claims.
    holder: String,
}

/// The tokens in memory, and whether they still have to be persisted.
#[derive(Default)]
struct Held {
    tokens: Option<TokenSet>,
    /// Rotated but not yet saved: must be saved (in place of this refresh token) before anything
    /// else happens.
    unsaved: Option<SecretString>,
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
/// How long a refresh claim holds: longer than a token request may take ([`REFRESH_TIMEOUT`]), so
/// no other process refreshes the same token while an answer can still arrive.
pub const CLAIM_HOLD: Duration = Duration::from_secs(60);
/// The longest a token request may take.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a process waiting for another one's refresh reads the store again.
const CLAIM_POLL: Duration = Duration::from_millis(200);

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
            holder: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// A valid access token. Only one refresh runs at a time in this process, and through the
    /// store's claim only one among processes sharing the store: the others wait for its tokens.
    /// Before refreshing, the store is read again in case another daemon already rotated the token.
    /// A rotated token set is saved (a compare-and-swap on the refresh token it replaces) before its
    /// access token is handed out; if saving fails, the set stays in memory (the old refresh token
    /// is already spent) and the save is retried on the next call. A refresh whose answer is lost
    /// leaves the claim with this holder, so the next call refreshes the same token again (Xero
    /// honours it for 30 minutes) rather than waiting for the claim to lapse.
    pub async fn access_token(&self) -> Result<SecretString, ConnectorError> {
        let mut held = self.current.lock().await;
        if let Some(replaced) = held.unsaved.clone() {
            let tokens = held.tokens.clone().expect("unsaved implies tokens");
            let saved = self.store.rotate(&self.connection, &replaced, &self.holder, &tokens).await?;
            held.unsaved = None;
            if !saved {
                held.tokens = None;
            }
        }
        if let Some(tokens) = held.usable(held.tokens.as_ref()) {
            return Ok(tokens.access_token.clone());
        }
        let started = tokio::time::Instant::now();
        loop {
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
                    let mut e = ConnectorError::permanent(format!(
                        "connection {}: no OAuth2 tokens stored; authorise it with `enrichd connect {}`",
                        self.connection, self.connection
                    ));
                    e.code = Some(NEEDS_CONNECT.into());
                    e
                })?;
            if !self.store.claim_refresh(&self.connection, &refresh, &self.holder, CLAIM_HOLD).await? {
                // Another process is refreshing this token: its tokens will be in the store.
                if started.elapsed() > CLAIM_HOLD * 2 {
                    return Err(ConnectorError::transient(format!(
                        "connection {}: another process has been refreshing the OAuth2 token for {} s",
                        self.connection,
                        started.elapsed().as_secs()
                    )));
                }
                tokio::time::sleep(CLAIM_POLL).await;
                continue;
            }
            let renewed = match self.refresh(&refresh).await {
                Ok(renewed) => renewed,
                Err(e) if e.code.as_deref() == Some(INVALID_GRANT) => {
                    if self.store.refused(&self.connection, &refresh, &e.message).await? {
                        let mut e = e;
                        e.message.push_str(&format!(
                            "; the connection must be authorised again: `enrichd connect {}`",
                            self.connection
                        ));
                        return Err(e);
                    }
                    // Another process rotated it meanwhile: use its tokens.
                    continue;
                }
                Err(e) => return Err(e),
            };
            held.tokens = Some(renewed.clone());
            held.unsaved = Some(refresh.clone());
            let saved = self.store.rotate(&self.connection, &refresh, &self.holder, &renewed).await?;
            held.unsaved = None;
            if saved {
                return Ok(renewed.access_token);
            }
            // Another process rotated first: its tokens are the live ones.
            held.tokens = None;
        }
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
            .timeout(REFRESH_TIMEOUT)
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
