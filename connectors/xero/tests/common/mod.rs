//! A sandbox on a free loopback port and a connector pointed at it, with an in-memory token store
//! that remembers, for every token set it saved, how often the sandbox had already seen its access
//! token used (zero proves the token was saved before it was used).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use enrichd_connector::ConnectorError;
use enrichd_connector::oauth2::{TokenSet, TokenStore};
use enrichd_xero::sandbox::{CLIENT_ID, CLIENT_SECRET, Limits, TENANT_ID, XeroSandbox};
use enrichd_xero::{Xero, XeroConfig};
use secrecy::ExposeSecret;

pub struct MemoryStore {
    pub sandbox: XeroSandbox,
    pub tokens: Mutex<Option<TokenSet>>,
    /// (access token, its uses at the sandbox when saved, refresh token)
    pub saves: Mutex<Vec<(String, u64, String)>>,
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn load(&self, _connection: &str) -> Result<Option<TokenSet>, ConnectorError> {
        Ok(self.tokens.lock().unwrap().clone())
    }
    async fn save(&self, _connection: &str, tokens: &TokenSet) -> Result<(), ConnectorError> {
        let access = tokens.access_token.expose_secret().to_owned();
        let uses = self.sandbox.uses_of(&access);
        self.saves.lock().unwrap().push((access, uses, tokens.refresh_token.expose_secret().to_owned()));
        *self.tokens.lock().unwrap() = Some(tokens.clone());
        Ok(())
    }
}

pub struct Setup {
    pub sandbox: XeroSandbox,
    pub base: String,
    pub store: Arc<MemoryStore>,
    pub xero: Arc<Xero>,
    /// The refresh token the person's authorisation produced.
    pub first_refresh: String,
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A sandbox with `bills` bills and generous limits, authorised; `access_valid` false stores an
/// access token that has already expired (so the first call refreshes).
pub async fn setup(bills: usize, access_valid: bool) -> Setup {
    let sandbox = XeroSandbox::new(bills, 7);
    sandbox.set_limits(Limits { per_minute: 100_000, per_day: 1_000_000, ..Limits::default() });
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{addr}");
    let (access, refresh, expires_in) = sandbox.authorise();
    let expires_at = if access_valid { now() + expires_in } else { now() - 10 };
    let store = Arc::new(MemoryStore {
        sandbox: sandbox.clone(),
        tokens: Mutex::new(Some(TokenSet {
            access_token: access.into(),
            refresh_token: refresh.clone().into(),
            expires_at,
        })),
        saves: Mutex::new(Vec::new()),
    });
    let config: XeroConfig = serde_json::from_value(serde_json::json!({
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "base_url": base, "tenant_id": TENANT_ID,
    }))
    .unwrap();
    let options = config.validate("connections.books").unwrap();
    let xero = Arc::new(Xero::new(options, "books", store.clone()).unwrap());
    Setup { sandbox, base, store, xero, first_refresh: refresh }
}
