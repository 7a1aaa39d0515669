//! `enrichd user add|list|remove|passwd|role` and `enrichd token create|list|revoke`: the accounts
//! people sign in with and their API tokens. They need only the database (like `enrichd review`).
//! Passwords are asked twice on a terminal (without echo), or read as one line with
//! `--password-stdin` for scripts; they never appear on the command line, where `ps` would show them.

use std::io::{BufRead, IsTerminal};

use clap::Subcommand;
use serde_json::json;

use super::{Failure, config_error, failed, open_store};
use crate::accounts::{account_name, check_password, hash_password, new_token, token_hash};
use crate::config::Config;
use crate::roles::Role;
use crate::store::{Store, StoreError};

#[derive(Subcommand)]
pub(super) enum UserCommand {
    /// Create an account. Asks for its password twice (or reads one line with --password-stdin).
    Add {
        /// The account's name (1 to 64 characters; unique regardless of case). People sign in with it
        /// and it names them in the audit trail.
        name: String,
        /// What the account may do: viewer (looks), reviewer (also approves, rejects, edits,
        /// regenerates), operator (also releases samples, resumes runs, reverts writes, starts runs),
        /// admin (also manages accounts).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password as one line from standard input instead of asking for it.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the accounts: name, role, when created.
    List {
        /// Print the accounts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an account and its API tokens; its sessions end on their next request. What it did
    /// stays in the audit trail under its name.
    Remove {
        /// The account's name.
        name: String,
    },
    /// Set an account's password (its sessions signed in before end).
    Passwd {
        /// The account's name.
        name: String,
        /// Read the password as one line from standard input instead of asking for it.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give an account another role, from its next request on.
    Role {
        /// The account's name.
        name: String,
        /// The new role: viewer, reviewer, operator or admin.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
}

#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Create an API token for an account and print it once, alone on a line (store it now: only
    /// its hash is kept). A request with `Authorization: Bearer TOKEN` acts as the account, with its role.
    Create {
        /// The account the token acts as.
        name: String,
        /// What the token is for (shown by `token list`), e.g. "nightly export".
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List the API tokens: id, account, label, created, last used, revoked (never the tokens).
    List {
        /// Print the tokens as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token: it is refused from the next request on.
    Revoke {
        /// The token's id (from `token list`).
        id: i64,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

fn store_failure(e: StoreError) -> Failure {
    failed(e.to_string())
}

fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}

pub(super) async fn user(config: &Config, command: UserCommand) -> Result<(), Failure> {
    let store = open_store(config).await?;
    let result = user_on(&store, command).await;
    store.close().await;
    result
}

pub(super) async fn token(config: &Config, command: TokenCommand) -> Result<(), Failure> {
    let store = open_store(config).await?;
    let result = token_on(&store, command).await;
    store.close().await;
    result
}

async fn user_on(store: &Store, command: UserCommand) -> Result<(), Failure> {
    match command {
        UserCommand::Add { name, role, password_stdin } => {
            let name = account_name(&name).map_err(config_error)?;
            if let Some(existing) = store.account(&name).await.map_err(store_failure)? {
                return Err(failed(format!(
                    "account {name:?}: an account named {:?} exists already (`enrichd user passwd` sets its \
                     password, `enrichd user role` its role)",
                    existing.name
                )));
            }
            let first = !store.has_accounts().await.map_err(store_failure)?;
            let hash = new_password_hash(&name, password_stdin).await?;
            let account = store.add_account(&name, role, &hash).await.map_err(store_failure)?;
            println!("account {} created with role {}", account.name, account.role);
            if first {
                eprintln!(
                    "note: this is the first account: from now on everyone signs in to the review UI with their own \
                     account (a [server.auth] password no longer works), and the server may listen on a non-loopback \
                     address"
                );
            }
            Ok(())
        }
        UserCommand::List { json } => {
            let accounts = store.accounts().await.map_err(store_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({ "accounts": accounts })).expect("serialisable"));
                return Ok(());
            }
            if accounts.is_empty() {
                println!("no accounts (create one with `enrichd user add NAME --role admin`)");
                return Ok(());
            }
            let width = accounts.iter().map(|a| a.name.chars().count()).max().unwrap_or(4).max(4);
            println!("{:<width$}  {:<8}  CREATED", "NAME", "ROLE");
            for a in &accounts {
                println!("{:<width$}  {:<8}  {}", a.name, a.role.as_str(), utc(a.created_at));
            }
            Ok(())
        }
        UserCommand::Remove { name } => {
            let removed = store.remove_account(&name).await.map_err(store_failure)?;
            println!("account {} removed (its API tokens too)", removed.name);
            warn_if_no_admin(store).await?;
            Ok(())
        }
        UserCommand::Passwd { name, password_stdin } => {
            let account = store
                .account(&name)
                .await
                .map_err(store_failure)?
                .ok_or_else(|| store_failure(StoreError::NotFound(format!("account {name:?}"))))?;
            let hash = new_password_hash(&account.name, password_stdin).await?;
            let account = store.set_account_password(&account.name, &hash).await.map_err(store_failure)?;
            println!("password of account {} changed; its sessions signed in before end", account.name);
            Ok(())
        }
        UserCommand::Role { name, role } => {
            let account = store.set_account_role(&name, role).await.map_err(store_failure)?;
            println!("account {} is now {}", account.name, account.role.with_article());
            warn_if_no_admin(store).await?;
            Ok(())
        }
    }
}

/// A note on stderr when accounts exist but none is an admin (nobody can manage accounts in the UI;
/// this command line still can).
async fn warn_if_no_admin(store: &Store) -> Result<(), Failure> {
    let accounts = store.accounts().await.map_err(store_failure)?;
    if accounts.is_empty() {
        eprintln!(
            "note: no accounts are left: the server no longer asks for an account (it is open to its own machine \
             only, or uses [server.auth] if configured)"
        );
    } else if !accounts.iter().any(|a| a.role == Role::Admin) {
        eprintln!("note: no account is an admin any more (`enrichd user role NAME admin` makes one)");
    }
    Ok(())
}

async fn token_on(store: &Store, command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Create { name, label } => {
            let label = label.trim().to_owned();
            if label.chars().count() > 200 || label.chars().any(char::is_control) {
                return Err(config_error("--label: at most 200 printable characters"));
            }
            let token = new_token();
            let created = store.add_api_token(&name, &label, &token_hash(&token)).await.map_err(store_failure)?;
            // The token alone on stdout, so a script can capture it; the rest goes to stderr.
            println!("{token}");
            eprintln!(
                "API token {} for account {} ({}) created: it is shown only this once, store it now. Send it as \
                 `Authorization: Bearer TOKEN`; `enrichd token revoke {}` stops it.",
                created.id,
                created.account,
                if created.label.is_empty() { "no label" } else { &created.label },
                created.id
            );
            Ok(())
        }
        TokenCommand::List { json } => {
            let tokens = store.api_tokens().await.map_err(store_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({ "tokens": tokens })).expect("serialisable"));
                return Ok(());
            }
            if tokens.is_empty() {
                println!("no API tokens (create one with `enrichd token create NAME`)");
                return Ok(());
            }
            println!(
                "{:>4}  {:<20}  {:<24}  {:<20}  {:<20}  REVOKED",
                "ID", "ACCOUNT", "LABEL", "CREATED", "LAST USED"
            );
            for t in &tokens {
                println!(
                    "{:>4}  {:<20}  {:<24}  {:<20}  {:<20}  {}",
                    t.id,
                    t.account,
                    if t.label.is_empty() { "-" } else { &t.label },
                    utc(t.created_at),
                    t.last_used_at.map_or_else(|| "never".to_owned(), utc),
                    t.revoked_at.map_or_else(|| "-".to_owned(), utc),
                );
            }
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            let revoked = store.revoke_api_token(id).await.map_err(store_failure)?;
            println!("API token {} of account {} revoked", revoked.id, revoked.account);
            Ok(())
        }
    }
}

/// A new password for account `name`, checked and hashed: one line of standard input with
/// `--password-stdin`, else asked twice on the terminal.
async fn new_password_hash(name: &str, from_stdin: bool) -> Result<String, Failure> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| failed(format!("account {name}: reading the password from standard input: {e}")))?;
        line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line).to_owned()
    } else if std::io::stdin().is_terminal() {
        let ask = |prompt: String| {
            rpassword::prompt_password(prompt).map_err(|e| failed(format!("account {name}: reading the password: {e}")))
        };
        let first = ask(format!("Password for account {name}: "))?;
        check_password(name, &first).map_err(config_error)?;
        let again = ask("The same password again: ".to_owned())?;
        if again != first {
            return Err(config_error(format!("account {name}: the two passwords do not match; nothing was changed")));
        }
        first
    } else {
        return Err(config_error(format!(
            "account {name}: no password given: run this in a terminal to be asked for one, or pass \
             --password-stdin and write it as one line to standard input"
        )));
    };
    check_password(name, &password).map_err(config_error)?;
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| failed(format!("account {name}: hashing the password: {e}")))?
        .map_err(|e| failed(format!("account {name}: {e}")))
}
