//! Accounts and their API tokens (`enrichd user …`, `enrichd token …`, sign-in). The password is
//! only ever held here as an Argon2id PHC string and a token only as its SHA-256 (see
//! [`crate::accounts`]); nothing in this module reads or returns either in plain text.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, now_ms, parse_col};
use crate::accounts::name_key;
use crate::roles::Role;

/// An account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// When the password was last set (ms since the epoch): sessions signed in before that end.
    pub password_set_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An API token as listed: never the token, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: i64,
    /// The owning account's name.
    pub account: String,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What a presented API token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLookup {
    /// A live token: it acts as this account.
    Live { token_id: i64, account: Account },
    /// A token that was revoked (`enrichd token revoke`).
    Revoked { token_id: i64, label: String },
    /// No such token.
    Unknown,
}

const ACCOUNT_COLUMNS: &str = "a.id, a.name, a.role, a.password_set_at, a.created_at, a.updated_at";

fn account(row: &AnyRow) -> Result<Account> {
    Ok(Account {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: parse_col(row, "role")?,
        password_set_at: row.try_get("password_set_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn token(row: &AnyRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        account: row.try_get("account")?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn unknown(name: &str) -> StoreError {
    StoreError::NotFound(format!("account {name:?}"))
}

impl Store {
    /// Whether any account exists: then the server signs people in by account.
    pub async fn has_accounts(&self) -> Result<bool> {
        Ok(sqlx::query("SELECT id FROM accounts LIMIT 1").fetch_optional(&self.pool).await?.is_some())
    }

    /// Creates account `name` (already checked with [`crate::accounts::account_name`]) with a
    /// password hash. A name taken (in any case) is refused, naming it.
    pub async fn add_account(&self, name: &str, role: Role, password_hash: &str) -> Result<Account> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO accounts (name, name_key, role, password_hash, password_set_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5, $5) RETURNING id",
        )
        .bind(name)
        .bind(name_key(name))
        .bind(role.as_str())
        .bind(password_hash)
        .bind(now)
        .fetch_one(&self.writer)
        .await;
        match inserted {
            Ok(row) => Ok(Account {
                id: row.try_get("id")?,
                name: name.to_owned(),
                role,
                password_set_at: now,
                created_at: now,
                updated_at: now,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                let existing = self.account(name).await?.map_or_else(|| name.to_owned(), |a| a.name);
                Err(StoreError::Refused(format!(
                    "account {name:?}: an account named {existing:?} exists already (names are unique regardless of case)"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every account, by name.
    pub async fn accounts(&self) -> Result<Vec<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a ORDER BY a.name_key");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.iter().map(account).collect()
    }

    /// The account named `name` (in any case).
    pub async fn account(&self, name: &str) -> Result<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.name_key = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(name_key(name)).fetch_optional(&self.pool).await?;
        row.as_ref().map(account).transpose()
    }

    /// The account with this id, as it is now (a signed-in session re-reads it on every request).
    pub async fn account_by_id(&self, id: i64) -> Result<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(account).transpose()
    }

    /// For signing in: the account named `name` and its stored password hash.
    pub async fn account_password_hash(&self, name: &str) -> Result<Option<(Account, String)>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a WHERE a.name_key = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(name_key(name)).fetch_optional(&self.pool).await?;
        match row {
            Some(row) => Ok(Some((account(&row)?, row.try_get("password_hash")?))),
            None => Ok(None),
        }
    }

    /// Removes account `name` and its API tokens; its sessions end on their next request. What it
    /// did stays in the audit trail under its name.
    pub async fn remove_account(&self, name: &str) -> Result<Account> {
        let found = self.account(name).await?.ok_or_else(|| unknown(name))?;
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM api_tokens WHERE account_id = $1").bind(found.id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM accounts WHERE id = $1").bind(found.id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Sets account `name`'s password hash; its sessions signed in before now end.
    pub async fn set_account_password(&self, name: &str, password_hash: &str) -> Result<Account> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE accounts SET password_hash = $1, password_set_at = $2, updated_at = $2 WHERE name_key = $3",
        )
        .bind(password_hash)
        .bind(now)
        .bind(name_key(name))
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(unknown(name));
        }
        self.account(name).await?.ok_or_else(|| unknown(name))
    }

    /// Gives account `name` another role, from its next request on.
    pub async fn set_account_role(&self, name: &str, role: Role) -> Result<Account> {
        let done = sqlx::query("UPDATE accounts SET role = $1, updated_at = $2 WHERE name_key = $3")
            .bind(role.as_str())
            .bind(now_ms())
            .bind(name_key(name))
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(unknown(name));
        }
        self.account(name).await?.ok_or_else(|| unknown(name))
    }

    /// Stores a new API token of account `name` by its hash ([`crate::accounts::token_hash`]).
    pub async fn add_api_token(&self, name: &str, label: &str, token_hash: &str) -> Result<ApiToken> {
        let owner = self.account(name).await?.ok_or_else(|| unknown(name))?;
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO api_tokens (account_id, label, token_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(owner.id)
        .bind(label)
        .bind(token_hash)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        Ok(ApiToken {
            id: row.try_get("id")?,
            account: owner.name,
            label: label.to_owned(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        })
    }

    /// Every API token (live and revoked), oldest first.
    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT t.id, a.name AS account, t.label, t.created_at, t.last_used_at, t.revoked_at \
             FROM api_tokens t JOIN accounts a ON a.id = t.account_id ORDER BY t.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token).collect()
    }

    /// Revokes API token `id`: it is refused from the next request on. Revoking it again is refused.
    pub async fn revoke_api_token(&self, id: i64) -> Result<ApiToken> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&self.writer)
            .await?;
        let found = self.api_tokens().await?.into_iter().find(|t| t.id == id);
        match (done.rows_affected(), found) {
            (_, None) => Err(StoreError::NotFound(format!("API token {id}"))),
            (0, Some(t)) => Err(StoreError::Refused(format!(
                "API token {id} ({}, of account {}) was revoked already",
                t.label, t.account
            ))),
            (_, Some(t)) => Ok(t),
        }
    }

    /// The account a presented token (by its hash) acts as.
    pub async fn api_token_account(&self, token_hash: &str) -> Result<TokenLookup> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS}, t.id AS token_id, t.label, t.revoked_at \
             FROM api_tokens t JOIN accounts a ON a.id = t.account_id WHERE t.token_hash = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(token_hash).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(TokenLookup::Unknown) };
        let token_id: i64 = row.try_get("token_id")?;
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        Ok(match revoked {
            Some(_) => TokenLookup::Revoked { token_id, label: row.try_get("label")? },
            None => TokenLookup::Live { token_id, account: account(&row)? },
        })
    }

    /// Records that API token `id` was used at `at` (ms since the epoch).
    pub async fn touch_api_token(&self, id: i64, at: i64) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
