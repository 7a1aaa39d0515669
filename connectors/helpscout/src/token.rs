//! OAuth2 client-credentials tokens for Help Scout. The grant gives an access token and no refresh
//! token: when it expires (or the API answers 401 because it did) a new one is requested with the
//! app's id and secret. Tokens are kept in the daemon's encrypted [`TokenStore`] when one is given, so
//! a restarted daemon (or another one on the same database) reuses a still-valid token instead of
//! asking for a new one each start. The stored [`TokenSet`]'s `refresh_token` is empty: this grant
//! has none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enrichd_connector::oauth2::{TokenSet, TokenStore};
use enrichd_connector::{ConnectorError, http};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

/// The token endpoint under the API's address.
pub const TOKEN_PATH: &str = "/v2/oauth2/token";

/// Hands out a valid access token for one connection, requesting a new one when the current one is
/// about to expire or was refused.
pub struct ClientCredentials {
    connection: String,
    token_url: String,
    client_id: String,
    client_secret: SecretString,
    http: reqwest::Client,
    store: Option<Arc<dyn TokenStore>>,
    current: tokio::sync::Mutex<Option<TokenSet>>,
    requested: AtomicU64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<i64>,
}

impl ClientCredentials {
    pub fn new(
        connection: impl Into<String>,
        base_url: &str,
        client_id: String,
        client_secret: SecretString,
        http: reqwest::Client,
        store: Option<Arc<dyn TokenStore>>,
    ) -> Self {
        Self {
            connection: connection.into(),
            token_url: format!("{base_url}{TOKEN_PATH}"),
            client_id,
            client_secret,
            http,
            store,
            current: tokio::sync::Mutex::new(None),
            requested: AtomicU64::new(0),
        }
    }

    /// How many tokens this process requested from Help Scout.
    pub fn tokens_requested(&self) -> u64 {
        self.requested.load(Ordering::Relaxed)
    }

    /// A valid access token: the one in memory, else a still-valid one from the store, else a new one
    /// (saved to the store before it is used).
    pub async fn access_token(&self) -> Result<SecretString, ConnectorError> {
        let mut current = self.current.lock().await;
        if let Some(tokens) = current.as_ref().filter(|t| fresh(t)) {
            return Ok(tokens.access_token.clone());
        }
        if let Some(store) = &self.store
            && let Some(stored) = store.load(&self.connection).await?.filter(fresh)
        {
            let access = stored.access_token.clone();
            *current = Some(stored);
            return Ok(access);
        }
        self.renew(&mut current).await
    }

    /// After the API refused `refused` (401: the token expired or was revoked mid-run): a new token,
    /// unless another task of this process (or another daemon, through the store) already replaced
    /// it, in which case that one. Many calls refused at once make one token request, not many.
    pub async fn after_refusal(&self, refused: &SecretString) -> Result<SecretString, ConnectorError> {
        let mut current = self.current.lock().await;
        let differs = |t: &TokenSet| t.access_token.expose_secret() != refused.expose_secret() && fresh(t);
        if let Some(tokens) = current.as_ref().filter(|t| differs(t)) {
            return Ok(tokens.access_token.clone());
        }
        if let Some(store) = &self.store
            && let Some(stored) = store.load(&self.connection).await?.filter(|t| differs(t))
        {
            let access = stored.access_token.clone();
            *current = Some(stored);
            return Ok(access);
        }
        self.renew(&mut current).await
    }

    async fn renew(&self, current: &mut Option<TokenSet>) -> Result<SecretString, ConnectorError> {
        let what = format!("helpscout: connection {}: POST {TOKEN_PATH} (client credentials)", self.connection);
        self.requested.fetch_add(1, Ordering::Relaxed);
        let request = self.http.post(&self.token_url).json(&json!({
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose_secret(),
        }));
        let response = match http::send(request, &what).await {
            Ok(r) => r,
            Err(mut e) if matches!(e.status, Some(400 | 401 | 403)) => {
                e.message = format!(
                    "{}; check the connection's client_id and client_secret (the app's App ID and App Secret, of an active user)",
                    e.message
                );
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let body: TokenResponse = http::json(response, &what).await?;
        let tokens = TokenSet {
            access_token: body.access_token.into(),
            refresh_token: SecretString::from(String::new()),
            expires_at: now() + body.expires_in.unwrap_or(7200),
        };
        if let Some(store) = &self.store {
            store.save(&self.connection, &tokens).await?;
        }
        let access = tokens.access_token.clone();
        *current = Some(tokens);
        Ok(access)
    }
}

/// Whether a token is good for at least another minute (a call started now must not meet its expiry).
fn fresh(tokens: &TokenSet) -> bool {
    tokens.expires_at - 60 > now()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64
}
