//! What the QuickBooks tests share: a started sandbox, a connector for it, and a token store.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use enrichd_connector::oauth2::{TokenSet, TokenStore};
use enrichd_connector::{Change, ConnectorError, Version, WriteMode};
use enrichd_quickbooks::sandbox::{ACCESS_TOKEN, CLIENT_ID, CLIENT_SECRET, QuickBooksSandbox, REALM_ID, REFRESH_TOKEN};
use enrichd_quickbooks::{QuickBooks, QuickBooksConfig};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// A token store in memory that also notes, at each save, how many API requests the sandbox had
/// already seen carrying the access token being saved (it must be none: saved before used).
pub struct MemoryStore {
    pub tokens: Mutex<Option<TokenSet>>,
    pub saves: Mutex<Vec<(String, String, usize)>>,
    pub sandbox: QuickBooksSandbox,
}

impl MemoryStore {
    pub fn new(sandbox: &QuickBooksSandbox, access: &str, refresh: &str, expires_at: i64) -> Arc<MemoryStore> {
        Arc::new(MemoryStore {
            tokens: Mutex::new(Some(TokenSet {
                access_token: access.to_owned().into(),
                refresh_token: refresh.to_owned().into(),
                expires_at,
            })),
            saves: Mutex::new(Vec::new()),
            sandbox: sandbox.clone(),
        })
    }

    /// (access token, refresh token, API requests already made with that access token) per save.
    pub fn saves(&self) -> Vec<(String, String, usize)> {
        self.saves.lock().unwrap().clone()
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn load(&self, _connection: &str) -> Result<Option<TokenSet>, ConnectorError> {
        Ok(self.tokens.lock().unwrap().clone())
    }
    async fn save(&self, _connection: &str, tokens: &TokenSet) -> Result<(), ConnectorError> {
        let access = tokens.access_token.expose_secret().to_owned();
        let used = self.sandbox.received().iter().filter(|r| r.token == access).count();
        self.saves.lock().unwrap().push((access, tokens.refresh_token.expose_secret().to_owned(), used));
        *self.tokens.lock().unwrap() = Some(tokens.clone());
        Ok(())
    }
}

pub fn far_future() -> i64 {
    4_000_000_000
}

pub async fn start(sandbox: &QuickBooksSandbox) -> String {
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    format!("http://{addr}")
}

pub fn config(base: &str) -> Value {
    json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "realm_id": REALM_ID, "base_url": base})
}

pub fn connector_with(config: Value, store: Arc<dyn TokenStore>) -> QuickBooks {
    let config: QuickBooksConfig = serde_json::from_value(config).unwrap();
    QuickBooks::new("books", config.validate("connections.books").unwrap(), store).unwrap()
}

/// A sandbox with `bills` bills, started, and a connector holding the sandbox's ready token.
pub async fn setup(bills: u64) -> (QuickBooksSandbox, QuickBooks) {
    let sandbox = QuickBooksSandbox::new(bills, 7);
    let base = start(&sandbox).await;
    let store = MemoryStore::new(&sandbox, ACCESS_TOKEN, REFRESH_TOKEN, far_future());
    let qbo = connector_with(config(&base), store);
    (sandbox, qbo)
}

pub fn change(id: &str, version: &str, fields: Value) -> Change {
    let Value::Object(fields) = fields else { panic!("fields must be an object") };
    Change { id: id.into(), base_version: Version(version.into()), fields, native: None, mode: WriteMode::Merge }
}
