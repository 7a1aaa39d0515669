//! Secrets a connection acquires at run time (rotating OAuth2 tokens), encrypted at rest with
//! XChaCha20-Poly1305 under a key derived from `database.secret_key`.

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use enrichd_connector::ConnectorError;
use enrichd_connector::oauth2::{TokenSet, TokenStore};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Result, Store, StoreError, now_ms};

/// Encrypted credential storage, usable as the [`TokenStore`] of OAuth2 connections.
#[derive(Clone)]
pub struct CredentialVault {
    store: Store,
    cipher: Option<XChaCha20Poly1305>,
}

#[derive(Serialize, Deserialize)]
struct StoredTokens {
    access_token: String,
    refresh_token: String,
    expires_at: i64,
}

impl CredentialVault {
    /// Without a key the vault refuses to store anything rather than store it in plain text.
    pub fn new(store: Store, secret_key: Option<&SecretString>) -> Self {
        let cipher = secret_key.map(|k| {
            let key = Sha256::digest(k.expose_secret().as_bytes());
            XChaCha20Poly1305::new(&key)
        });
        Self { store, cipher }
    }

    fn cipher(&self, connection: &str) -> Result<&XChaCha20Poly1305> {
        self.cipher.as_ref().ok_or_else(|| {
            StoreError::Credentials(format!(
                "connection {connection}: database.secret_key is not set, so its tokens cannot be stored encrypted"
            ))
        })
    }

    /// Encrypts and stores `plaintext` for `connection`, replacing what was there.
    pub async fn put(&self, connection: &str, plaintext: &[u8]) -> Result<()> {
        let cipher = self.cipher(connection)?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| StoreError::Credentials(format!("connection {connection}: encryption failed")))?;
        sqlx::query(
            "INSERT INTO credentials (connection, nonce, ciphertext, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (connection) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(connection)
        .bind(hex::encode(nonce))
        .bind(hex::encode(sealed))
        .bind(now_ms())
        .execute(&self.store.writer)
        .await?;
        Ok(())
    }

    /// The decrypted secret of `connection`, if one is stored.
    pub async fn get(&self, connection: &str) -> Result<Option<Vec<u8>>> {
        let Some(row) = sqlx::query("SELECT nonce, ciphertext FROM credentials WHERE connection = $1")
            .bind(connection)
            .fetch_optional(&self.store.pool)
            .await?
        else {
            return Ok(None);
        };
        let cipher = self.cipher(connection)?;
        let bad = || {
            StoreError::Credentials(format!(
                "connection {connection}: stored credential cannot be decrypted (wrong database.secret_key?)"
            ))
        };
        let nonce = hex::decode(row.try_get::<String, _>("nonce")?).map_err(|_| bad())?;
        let sealed = hex::decode(row.try_get::<String, _>("ciphertext")?).map_err(|_| bad())?;
        if nonce.len() != 24 {
            return Err(bad());
        }
        cipher.decrypt(XNonce::from_slice(&nonce), sealed.as_slice()).map(Some).map_err(|_| bad())
    }
}

fn to_connector(e: StoreError) -> ConnectorError {
    ConnectorError::permanent(e.to_string())
}

#[async_trait]
impl TokenStore for CredentialVault {
    async fn load(&self, connection: &str) -> Result<Option<TokenSet>, ConnectorError> {
        let Some(bytes) = self.get(connection).await.map_err(to_connector)? else {
            return Ok(None);
        };
        let stored: StoredTokens = serde_json::from_slice(&bytes).map_err(|e| {
            ConnectorError::permanent(format!("connection {connection}: stored tokens are corrupt: {e}"))
        })?;
        Ok(Some(TokenSet {
            access_token: stored.access_token.into(),
            refresh_token: stored.refresh_token.into(),
            expires_at: stored.expires_at,
        }))
    }

    async fn save(&self, connection: &str, tokens: &TokenSet) -> Result<(), ConnectorError> {
        let stored = StoredTokens {
            access_token: tokens.access_token.expose_secret().to_owned(),
            refresh_token: tokens.refresh_token.expose_secret().to_owned(),
            expires_at: tokens.expires_at,
        };
        let bytes = serde_json::to_vec(&stored).expect("serialisable");
        self.put(connection, &bytes).await.map_err(to_connector)
    }
}
