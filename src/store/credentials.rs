//! Secrets a connection acquires at run time (rotating OAuth2 tokens), encrypted at rest with
//! XChaCha20-Poly1305 under a key derived from `database.secret_key`.
//!
//! Several daemons share one database, so they share a connection's token chain. Refreshing is
//! coordinated here (migration 0017): a daemon claims the refresh of the stored refresh token
//! (`refresh_claimed_by`, `refresh_claim_until`), and saving the rotated set is a compare-and-swap
//! on a keyed digest of the refresh token it replaces (`refresh_digest`), so a loser reads the
//! winner's tokens instead of keeping its own. A refresh token the platform refused marks the
//! connection `needs_connect` until `enrichd connect` stores new tokens.

use std::time::Duration;

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use enrichd_connector::ConnectorError;
use enrichd_connector::oauth2::{NEEDS_CONNECT, TokenSet, TokenStore};
use hmac::{Hmac, Mac};
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
    /// Keys the refresh tokens' digests (so the database holds no unkeyed hash of a token).
    digest_key: Option<[u8; 32]>,
}

/// What the store knows of an OAuth2 connection, for `enrichd status` and `enrichd connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionState {
    pub connection: String,
    /// Tokens are stored.
    pub authorised: bool,
    /// Why the connection must be authorised again, if it must.
    pub needs_connect: Option<String>,
    /// The organisation chosen at `enrichd connect` (Xero tenant id, QuickBooks realm id).
    pub tenant_id: Option<String>,
    pub tenant_name: Option<String>,
    /// Unix ms of the last change.
    pub updated_at: i64,
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
        let digest_key = secret_key.map(|k| {
            let mut d = Sha256::new();
            d.update(b"enrichd refresh token digest\0");
            d.update(k.expose_secret().as_bytes());
            d.finalize().into()
        });
        Self { store, cipher, digest_key }
    }

    /// The keyed digest the compare-and-swap compares: HMAC-SHA-256 of the refresh token.
    fn digest(&self, connection: &str, token: &SecretString) -> Result<String> {
        self.cipher(connection)?;
        let key = self.digest_key.as_ref().expect("a key whenever there is a cipher");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(token.expose_secret().as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    fn seal(&self, connection: &str, plaintext: &[u8]) -> Result<(String, String)> {
        let cipher = self.cipher(connection)?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| StoreError::Credentials(format!("connection {connection}: encryption failed")))?;
        Ok((hex::encode(nonce), hex::encode(sealed)))
    }

    fn sealed_tokens(&self, connection: &str, tokens: &TokenSet) -> Result<(String, String, String)> {
        let stored = StoredTokens {
            access_token: tokens.access_token.expose_secret().to_owned(),
            refresh_token: tokens.refresh_token.expose_secret().to_owned(),
            expires_at: tokens.expires_at,
        };
        let bytes = serde_json::to_vec(&stored).expect("serialisable");
        let (nonce, sealed) = self.seal(connection, &bytes)?;
        Ok((nonce, sealed, self.digest(connection, &tokens.refresh_token)?))
    }

    /// Stores the tokens `enrichd connect` obtained and the organisation chosen, replacing whatever
    /// was stored and clearing a `needs_connect` mark: the connection starts a new token chain.
    pub async fn connected(
        &self,
        connection: &str,
        tokens: &TokenSet,
        tenant_id: Option<&str>,
        tenant_name: Option<&str>,
    ) -> Result<()> {
        let (nonce, sealed, digest) = self.sealed_tokens(connection, tokens)?;
        sqlx::query(
            "INSERT INTO credentials (connection, nonce, ciphertext, updated_at, refresh_digest, tenant_id, tenant_name) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (connection) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
               updated_at = excluded.updated_at, refresh_digest = excluded.refresh_digest, \
               tenant_id = excluded.tenant_id, tenant_name = excluded.tenant_name, \
               refresh_claimed_by = NULL, refresh_claim_until = NULL, needs_connect = NULL",
        )
        .bind(connection)
        .bind(nonce)
        .bind(sealed)
        .bind(now_ms())
        .bind(digest)
        .bind(tenant_id)
        .bind(tenant_name)
        .execute(&self.store.writer)
        .await?;
        Ok(())
    }

    /// What is stored of `connection` (nothing secret), or `None`.
    pub async fn state(&self, connection: &str) -> Result<Option<ConnectionState>> {
        connection_state(&self.store, connection).await
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
        let (nonce, sealed) = self.seal(connection, plaintext)?;
        self.put_sealed(connection, &nonce, &sealed, None).await
    }

    /// Whether anything is stored for `connection`.
    async fn stored(&self, connection: &str) -> Result<bool, ConnectorError> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM credentials WHERE connection = $1")
            .bind(connection)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(|e| to_connector(e.into()))?;
        Ok(exists.is_some())
    }

    async fn put_sealed(&self, connection: &str, nonce: &str, sealed: &str, digest: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO credentials (connection, nonce, ciphertext, updated_at, refresh_digest) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (connection) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
               updated_at = excluded.updated_at, refresh_digest = excluded.refresh_digest, \
               refresh_claimed_by = NULL, refresh_claim_until = NULL, needs_connect = NULL",
        )
        .bind(connection)
        .bind(nonce)
        .bind(sealed)
        .bind(now_ms())
        .bind(digest)
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

/// What is stored of `connection` (nothing secret), or `None`; needs no key.
pub async fn connection_state(store: &Store, connection: &str) -> Result<Option<ConnectionState>> {
    let row = sqlx::query(
        "SELECT connection, refresh_digest, needs_connect, tenant_id, tenant_name, updated_at \
         FROM credentials WHERE connection = $1",
    )
    .bind(connection)
    .fetch_optional(&store.pool)
    .await?;
    row.map(|row| {
        Ok(ConnectionState {
            connection: row.try_get("connection")?,
            authorised: row.try_get::<Option<String>, _>("refresh_digest")?.is_some(),
            needs_connect: row.try_get("needs_connect")?,
            tenant_id: row.try_get("tenant_id")?,
            tenant_name: row.try_get("tenant_name")?,
            updated_at: row.try_get("updated_at")?,
        })
    })
    .transpose()
}

impl Store {
    /// What is stored of each connection that keeps credentials (nothing secret).
    pub async fn connection_states(&self) -> Result<Vec<ConnectionState>> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT connection FROM credentials ORDER BY connection").fetch_all(&self.pool).await?;
        let mut states = Vec::with_capacity(names.len());
        for name in names {
            if let Some(state) = connection_state(self, &name).await? {
                states.push(state);
            }
        }
        Ok(states)
    }
}

fn to_connector(e: StoreError) -> ConnectorError {
    ConnectorError::permanent(e.to_string())
}

#[async_trait]
impl TokenStore for CredentialVault {
    async fn load(&self, connection: &str) -> Result<Option<TokenSet>, ConnectorError> {
        let needs: Option<Option<String>> =
            sqlx::query_scalar("SELECT needs_connect FROM credentials WHERE connection = $1")
                .bind(connection)
                .fetch_optional(&self.store.pool)
                .await
                .map_err(|e| to_connector(e.into()))?;
        if let Some(Some(reason)) = needs {
            let mut e = ConnectorError::permanent(format!(
                "connection {connection} needs to be authorised again with `enrichd connect {connection}` \
                 (no token requests are made until then): {reason}"
            ));
            e.code = Some(NEEDS_CONNECT.into());
            return Err(e);
        }
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
        let (nonce, sealed, digest) = self.sealed_tokens(connection, tokens).map_err(to_connector)?;
        self.put_sealed(connection, &nonce, &sealed, Some(&digest)).await.map_err(to_connector)
    }

    async fn claim_refresh(
        &self,
        connection: &str,
        refresh_token: &SecretString,
        holder: &str,
        hold: Duration,
    ) -> Result<bool, ConnectorError> {
        let digest = self.digest(connection, refresh_token).map_err(to_connector)?;
        let now = now_ms();
        let claimed = sqlx::query(
            "UPDATE credentials SET refresh_claimed_by = $1, refresh_claim_until = $2 \
             WHERE connection = $3 AND refresh_digest = $4 AND needs_connect IS NULL \
               AND (refresh_claimed_by IS NULL OR refresh_claimed_by = $1 OR refresh_claim_until < $5)",
        )
        .bind(holder)
        .bind(now + hold.as_millis() as i64)
        .bind(connection)
        .bind(digest.as_str())
        .bind(now)
        .execute(&self.store.writer)
        .await
        .map_err(|e| to_connector(e.into()))?
        .rows_affected();
        if claimed == 1 {
            return Ok(true);
        }
        // Nothing stored yet (a refresh token from config starts the chain): nobody to wait for.
        Ok(!self.stored(connection).await?)
    }

    async fn rotate(
        &self,
        connection: &str,
        replaced: &SecretString,
        holder: &str,
        tokens: &TokenSet,
    ) -> Result<bool, ConnectorError> {
        let old = self.digest(connection, replaced).map_err(to_connector)?;
        let (nonce, sealed, digest) = self.sealed_tokens(connection, tokens).map_err(to_connector)?;
        let now = now_ms();
        let swapped = sqlx::query(
            "UPDATE credentials SET nonce = $1, ciphertext = $2, refresh_digest = $3, updated_at = $4, \
               refresh_claimed_by = NULL, refresh_claim_until = NULL \
             WHERE connection = $5 AND refresh_digest = $6 AND needs_connect IS NULL \
               AND (refresh_claimed_by IS NULL OR refresh_claimed_by = $7 OR refresh_claim_until < $4)",
        )
        .bind(nonce.as_str())
        .bind(sealed.as_str())
        .bind(digest.as_str())
        .bind(now)
        .bind(connection)
        .bind(old.as_str())
        .bind(holder)
        .execute(&self.store.writer)
        .await
        .map_err(|e| to_connector(e.into()))?
        .rows_affected();
        if swapped == 1 {
            return Ok(true);
        }
        // The first tokens of a chain started from config: stored unless someone stored theirs.
        let inserted = sqlx::query(
            "INSERT INTO credentials (connection, nonce, ciphertext, updated_at, refresh_digest) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connection) DO NOTHING",
        )
        .bind(connection)
        .bind(nonce.as_str())
        .bind(sealed.as_str())
        .bind(now)
        .bind(digest.as_str())
        .execute(&self.store.writer)
        .await
        .map_err(|e| to_connector(e.into()))?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn refused(
        &self,
        connection: &str,
        refresh_token: &SecretString,
        reason: &str,
    ) -> Result<bool, ConnectorError> {
        let digest = self.digest(connection, refresh_token).map_err(to_connector)?;
        let marked = sqlx::query(
            "UPDATE credentials SET needs_connect = $1, refresh_claimed_by = NULL, refresh_claim_until = NULL, updated_at = $2 \
             WHERE connection = $3 AND refresh_digest = $4",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(connection)
        .bind(digest.as_str())
        .execute(&self.store.writer)
        .await
        .map_err(|e| to_connector(e.into()))?
        .rows_affected();
        if marked == 1 {
            return Ok(true);
        }
        // Nothing stored: the refused token came from config, and there is nothing else to use.
        Ok(!self.stored(connection).await?)
    }
}
