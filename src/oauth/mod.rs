//! OAuth2 connections (Xero, QuickBooks Online) as the engine uses them: their tokens come from
//! `enrichd connect` ([`connect`]) and live encrypted in the database ([`CredentialVault`]), with
//! the organisation the person chose there (Xero tenant, QuickBooks realm).
//!
//! The connector crates take the organisation when they are built, and the engine is built before
//! the database is read, so an OAuth2 connection is an [`OrgConnector`]: it builds the platform's
//! connector when first used, with the organisation from config or else the one stored by
//! `enrichd connect`, and hands every call to it.

pub mod connect;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use enrichd_connector::oauth2::{NEEDS_CONNECT, TokenSet, TokenStore};
use enrichd_connector::{
    AttachmentRef, Change, Connector, ConnectorError, Page, PageRequest, PendingWrite, Record, WriteOutcome,
    WriteSubmission, lookup,
};
use secrecy::SecretString;
use serde_json::Value;

use crate::config::{Config, ConnectionConfig};
use crate::store::{CredentialVault, Store};

/// Where an OAuth2 connection's tokens come from.
#[derive(Clone)]
pub enum Tokens {
    /// The encrypted vault on the engine's database.
    Vault(CredentialVault),
    /// The vault on `database.url`, opened when first needed (commands that open no store:
    /// `run --dry-run`, `estimate`, `eval`).
    Open { url: String, max_connections: u32, secret_key: Option<SecretString> },
    /// No `database.secret_key`: tokens cannot be kept, so there are none.
    NoKey,
}

impl Tokens {
    /// The tokens of `config`'s database: the vault on `store` when given.
    pub fn of(config: &Config, store: Option<&Store>) -> Tokens {
        let key = config.database.secret_key.as_ref().map(|k| k.0.clone());
        match (store, key) {
            (_, None) => Tokens::NoKey,
            (Some(store), Some(key)) => Tokens::Vault(CredentialVault::new(store.clone(), Some(&key))),
            (None, Some(key)) => Tokens::Open {
                url: config.database.url.clone(),
                max_connections: config.database.max_connections,
                secret_key: Some(key),
            },
        }
    }

    async fn vault(&self) -> Result<Option<CredentialVault>, ConnectorError> {
        match self {
            Tokens::Vault(v) => Ok(Some(v.clone())),
            Tokens::NoKey => Ok(None),
            Tokens::Open { url, max_connections, secret_key } => {
                let store = Store::connect(url, *max_connections).await.map_err(|e| {
                    ConnectorError::permanent(format!("database.url {}: {e}", crate::store::redact_url(url)))
                })?;
                store.migrate().await.map_err(|e| ConnectorError::permanent(e.to_string()))?;
                Ok(Some(CredentialVault::new(store, secret_key.as_ref())))
            }
        }
    }
}

/// A token store for a connection without `database.secret_key`: OAuth2 tokens are kept only
/// encrypted, so there are none to use.
struct NoKey;

#[async_trait]
impl TokenStore for NoKey {
    async fn load(&self, connection: &str) -> Result<Option<TokenSet>, ConnectorError> {
        let mut e = ConnectorError::permanent(format!(
            "connection {connection}: database.secret_key is not set, and OAuth2 tokens are kept only encrypted; \
             set it and run `enrichd connect {connection}`"
        ));
        e.code = Some(NEEDS_CONNECT.into());
        Err(e)
    }

    async fn save(&self, connection: &str, _tokens: &TokenSet) -> Result<(), ConnectorError> {
        Err(ConnectorError::permanent(format!(
            "connection {connection}: database.secret_key is not set, so its tokens cannot be stored encrypted"
        )))
    }
}

/// A ready access token from config (QuickBooks `access_token`): used as it is, never refreshed.
struct ReadyToken(SecretString);

#[async_trait]
impl TokenStore for ReadyToken {
    async fn load(&self, _connection: &str) -> Result<Option<TokenSet>, ConnectorError> {
        Ok(Some(TokenSet {
            access_token: self.0.clone(),
            refresh_token: SecretString::from(""),
            expires_at: i64::MAX / 2,
        }))
    }

    async fn save(&self, _connection: &str, _tokens: &TokenSet) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn claim_refresh(
        &self,
        connection: &str,
        _refresh_token: &SecretString,
        _holder: &str,
        _hold: std::time::Duration,
    ) -> Result<bool, ConnectorError> {
        let mut e = ConnectorError::permanent(format!(
            "connection {connection}: the platform refused the access token from connections.{connection}.access_token \
             (expired or revoked); put a new one there, or remove it and run `enrichd connect {connection}`"
        ));
        e.code = Some(NEEDS_CONNECT.into());
        Err(e)
    }
}

/// A platform whose connector needs the organisation chosen at `enrichd connect`.
#[derive(Clone)]
enum Platform {
    Xero(enrichd_xero::Options),
    QuickBooks(enrichd_quickbooks::Options, Option<SecretString>),
}

impl Platform {
    fn tenant(&self) -> Option<&str> {
        match self {
            Platform::Xero(o) => o.tenant_id.as_deref(),
            Platform::QuickBooks(o, _) => o.realm_id.as_deref(),
        }
    }

    /// Whether the connector can work without an organisation chosen at `enrichd connect`.
    fn settled(&self) -> bool {
        match self {
            Platform::Xero(o) => o.tenant_id.is_some() || o.custom_connection,
            Platform::QuickBooks(o, _) => o.realm_id.is_some(),
        }
    }

    fn with_tenant(&self, tenant: Option<String>) -> Platform {
        match self.clone() {
            Platform::Xero(mut o) => {
                if o.tenant_id.is_none() {
                    o.tenant_id = tenant;
                }
                Platform::Xero(o)
            }
            Platform::QuickBooks(mut o, ready) => {
                if o.realm_id.is_none() {
                    o.realm_id = tenant;
                }
                Platform::QuickBooks(o, ready)
            }
        }
    }

    fn build(&self, name: &str, store: Arc<dyn TokenStore>) -> Result<Arc<dyn Connector>, ConnectorError> {
        Ok(match self {
            Platform::Xero(o) => Arc::new(enrichd_xero::Xero::new(o.clone(), name, store)?),
            Platform::QuickBooks(o, ready) => {
                let store = match ready {
                    Some(token) => Arc::new(ReadyToken(token.clone())) as Arc<dyn TokenStore>,
                    None => store,
                };
                Arc::new(enrichd_quickbooks::QuickBooks::new(name, o.clone(), store)?)
            }
        })
    }
}

/// An OAuth2 connection's connector, built when first used with the organisation from config or
/// else the one `enrichd connect` stored (see the module notes).
pub struct OrgConnector {
    name: String,
    platform: Platform,
    tokens: Tokens,
    /// The vault, once opened.
    vault: tokio::sync::OnceCell<Option<CredentialVault>>,
    /// Built at once without the stored organisation: answers the calls that need none.
    template: Arc<dyn Connector>,
    live: tokio::sync::Mutex<Option<Arc<dyn Connector>>>,
}

impl OrgConnector {
    /// The connector for OAuth2 connection `name`, or `None` when `config` is not an OAuth2 kind.
    pub fn new(name: &str, config: &ConnectionConfig, tokens: Tokens) -> Option<OrgConnector> {
        let at = format!("connections.{name}");
        let platform = match config {
            ConnectionConfig::Xero(c) => {
                Platform::Xero(c.validate(&at).expect("xero connections are validated when the config loads"))
            }
            ConnectionConfig::QuickBooks(c) => Platform::QuickBooks(
                c.settings.validate(&at).expect("quickbooks connections are validated when the config loads"),
                c.access_token.clone(),
            ),
            _ => return None,
        };
        let template = platform.build(name, Arc::new(NoKey)).expect("an HTTP client with static settings");
        Some(OrgConnector {
            name: name.to_owned(),
            platform,
            tokens,
            vault: tokio::sync::OnceCell::new(),
            template,
            live: tokio::sync::Mutex::new(None),
        })
    }

    /// The platform's connector, with the organisation chosen (built once it has one).
    pub async fn connector(&self) -> Result<Arc<dyn Connector>, ConnectorError> {
        let mut live = self.live.lock().await;
        if let Some(c) = live.as_ref() {
            return Ok(c.clone());
        }
        let vault = self.vault.get_or_try_init(|| self.tokens.vault()).await?.clone();
        let store: Arc<dyn TokenStore> = match &vault {
            Some(v) => Arc::new(v.clone()),
            None => Arc::new(NoKey),
        };
        let platform = if self.platform.settled() {
            self.platform.clone()
        } else {
            let stored = match &vault {
                Some(v) => v.state(&self.name).await.map_err(|e| ConnectorError::permanent(e.to_string()))?,
                None => None,
            };
            self.platform.with_tenant(stored.and_then(|s| s.tenant_id))
        };
        let connector = platform.build(&self.name, store)?;
        if platform.settled() {
            *live = Some(connector.clone());
        }
        Ok(connector)
    }

    /// The organisation the connector works for, once known.
    pub fn configured_tenant(&self) -> Option<&str> {
        self.platform.tenant()
    }
}

#[async_trait]
impl Connector for OrgConnector {
    fn kind(&self) -> &'static str {
        self.template.kind()
    }

    async fn check(&self, entity: &str) -> Result<(), ConnectorError> {
        self.connector().await?.check(entity).await
    }

    async fn list(&self, entity: &str, request: &PageRequest) -> Result<Page, ConnectorError> {
        self.connector().await?.list(entity, request).await
    }

    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        self.connector().await?.fetch(entity, ids).await
    }

    async fn complete(&self, entity: &str, records: &mut [Record]) -> Result<(), ConnectorError> {
        self.connector().await?.complete(entity, records).await
    }

    async fn fetch_attachment(&self, attachment: &AttachmentRef) -> Result<Bytes, ConnectorError> {
        self.connector().await?.fetch_attachment(attachment).await
    }

    fn max_write_batch(&self) -> usize {
        self.template.max_write_batch()
    }

    async fn write(&self, entity: &str, changes: &[Change]) -> Result<WriteSubmission, ConnectorError> {
        self.connector().await?.write(entity, changes).await
    }

    fn holds(&self, field: &str, written: &Value, stored: Option<&Value>) -> bool {
        self.template.holds(field, written, stored)
    }

    fn restored(&self, field: &str, previous: &Value, stored: Option<&Value>) -> bool {
        self.template.restored(field, previous, stored)
    }

    fn not_restored_reason(&self, field: &str, previous: &Value, stored: Option<&Value>) -> String {
        self.template.not_restored_reason(field, previous, stored)
    }

    fn not_held_reason(&self, field: &str, stored: Option<&Value>) -> String {
        self.template.not_held_reason(field, stored)
    }

    fn record_links(&self, entity: &str, external_id: &str, fields: &Value) -> Vec<enrichd_connector::RecordLink> {
        self.template.record_links(entity, external_id, fields)
    }

    async fn allowed_values(&self, entity: &str, field: &str) -> Result<Option<Vec<String>>, ConnectorError> {
        self.connector().await?.allowed_values(entity, field).await
    }

    async fn organisation(&self) -> Result<Option<lookup::Organisation>, ConnectorError> {
        self.connector().await?.organisation().await
    }

    async fn look_up(&self, entity: &str, bill: &lookup::BillQuery) -> Result<Option<lookup::LookUp>, ConnectorError> {
        self.connector().await?.look_up(entity, bill).await
    }

    async fn poll_write(&self, pending: &PendingWrite) -> Result<Option<Vec<WriteOutcome>>, ConnectorError> {
        self.connector().await?.poll_write(pending).await
    }
}

/// Whether `e` says the connection must be authorised again (`enrichd connect`): the platform
/// refused the refresh token, or the store says so since.
pub fn needs_connect(e: &ConnectorError) -> bool {
    matches!(e.code.as_deref(), Some(NEEDS_CONNECT) | Some(enrichd_connector::oauth2::INVALID_GRANT))
}
