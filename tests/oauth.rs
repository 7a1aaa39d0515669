//! Rotating OAuth2 refresh tokens, over real HTTP against the teststore sandbox's token endpoint, with
//! the encrypted credential vault as the token store: the rotated token is persisted before the access
//! token is used, a restart uses the stored token rather than the stale one from config, a refused
//! save never loses the rotated token, and a dead refresh token is a clear permanent error.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{StoreSandbox, TestDb};
use enrichd::store::CredentialVault;
use enrichd_connector::ConnectorError;
use enrichd_connector::oauth2::{OAuth2Client, RotatingToken, TokenSet, TokenStore};
use secrecy::{ExposeSecret, SecretString};

fn client(url: &str) -> OAuth2Client {
    OAuth2Client {
        token_url: format!("{url}/oauth/token"),
        client_id: "app".into(),
        client_secret: "app-secret".into(),
    }
}

fn http() -> reqwest::Client {
    enrichd_connector::http::client(Duration::from_secs(10))
}

async fn list_with(url: &str, token: &SecretString) -> u16 {
    http()
        .get(format!("{url}/api/product?per_page=1"))
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A token store that can be told to fail, wrapping the real vault.
struct Flaky {
    inner: CredentialVault,
    fail: AtomicBool,
}

#[async_trait]
impl TokenStore for Flaky {
    async fn load(&self, c: &str) -> Result<Option<TokenSet>, ConnectorError> {
        self.inner.load(c).await
    }
    async fn save(&self, c: &str, t: &TokenSet) -> Result<(), ConnectorError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(ConnectorError::transient("database is unavailable"));
        }
        self.inner.save(c, t).await
    }
}

async fn rotating_tokens_are_persisted_before_use(db: &TestDb) {
    let sandbox = StoreSandbox::new("static-token-unused");
    sandbox.seed_products(3, 1);
    sandbox.enable_oauth("app", "app-secret", "refresh-0", 3600);
    let url = format!("http://{}", sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap());
    let key: SecretString = "vault key".into();
    let vault =
        Arc::new(Flaky { inner: CredentialVault::new(db.store.clone(), Some(&key)), fail: AtomicBool::new(false) });
    let bootstrap: Option<SecretString> = Some("refresh-0".into());

    let tokens = RotatingToken::new("xero", client(&url), http(), vault.clone(), bootstrap.clone());
    let access = tokens.access_token().await.unwrap();
    let (live_refresh, refreshes) = sandbox.oauth_state().unwrap();
    assert_eq!(refreshes, 1);
    let stored = vault.load("xero").await.unwrap().expect("stored before use");
    assert_eq!(stored.refresh_token.expose_secret(), live_refresh, "the rotated refresh token is what is stored");
    assert_eq!(list_with(&url, &access).await, 200);
    // A fresh access token is reused, not refreshed again.
    tokens.access_token().await.unwrap();
    assert_eq!(sandbox.oauth_state().unwrap().1, 1);

    // A restart: the config still holds the dead refresh-0, but the stored token wins.
    let restarted = RotatingToken::new("xero", client(&url), http(), vault.clone(), bootstrap.clone());
    assert_eq!(restarted.access_token().await.unwrap().expose_secret(), access.expose_secret());
    restarted.invalidate().await; // say the platform answered 401
    let renewed = restarted.access_token().await.unwrap();
    assert_ne!(renewed.expose_secret(), access.expose_secret());
    assert_eq!(sandbox.oauth_state().unwrap().1, 2, "refreshed with the stored token, not the stale one");

    // Saving fails right after the platform rotated: the new access token is not handed out, the
    // rotated set is kept in memory, and the next call saves it first — without refreshing again.
    vault.fail.store(true, Ordering::SeqCst);
    restarted.invalidate().await;
    let err = restarted.access_token().await.unwrap_err();
    assert!(err.message.contains("database is unavailable"), "{err}");
    assert_eq!(sandbox.oauth_state().unwrap().1, 3);
    vault.fail.store(false, Ordering::SeqCst);
    let after = restarted.access_token().await.unwrap();
    assert_eq!(sandbox.oauth_state().unwrap().1, 3, "no second refresh: the kept token set was saved");
    assert_eq!(
        vault.load("xero").await.unwrap().unwrap().refresh_token.expose_secret(),
        sandbox.oauth_state().unwrap().0
    );
    assert_eq!(list_with(&url, &after).await, 200);

    // Someone else's refresh killed our token: a permanent error naming the connection.
    let lost = RotatingToken::new("qbo", client(&url), http(), vault.clone(), Some("refresh-0".into()));
    let err = lost.access_token().await.unwrap_err();
    assert!(!err.retryable);
    assert!(err.message.contains("connection qbo: OAuth2 token refresh: HTTP 400 invalid_grant"), "{}", err.message);
    assert!(!err.message.contains("refresh-0"), "no token in errors");
}

on_both_backends! {
    rotating_oauth => rotating_tokens_are_persisted_before_use;
}
