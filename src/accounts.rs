//! Accounts' secrets: the rules for names and passwords, password hashing (Argon2id), and per-account
//! API tokens. The CLI (`enrichd user …`, `enrichd token …`) and the server's sign-in share these;
//! the rows live in the store (`crate::store::Account`).
//!
//! Passwords are stored as Argon2id PHC strings: algorithm, parameters and a random salt travel with
//! the hash, so parameters can be raised later without invalidating stored passwords. API tokens are
//! 256 random bits shown once; only their SHA-256 is stored (see [`token_hash`] for why a plain hash
//! is enough there while passwords need a slow one).

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;
use sha2::{Digest, Sha256};

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted: Argon2 takes any length, but an unbounded one is a cheap way to
/// make the server hash megabytes per sign-in attempt.
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// What every API token starts with, so secret scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "enrichd_";

/// An account name as typed, trimmed: 1 to 64 characters, no control characters.
pub fn account_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(format!("account name {name:?}: a name is 1 to 64 characters, without control characters"));
    }
    Ok(name.to_owned())
}

/// The key names are unique by: the name in lower case ("Ada" and "ada" are one account).
pub fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Checks a new password for account `name`: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_CHARS`], and not the account's own name.
pub fn check_password(name: &str, password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if password.trim().is_empty() {
        return Err(format!("account {name}: the password is empty"));
    }
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "account {name}: the password is too weak: {chars} characters, at least {MIN_PASSWORD_CHARS} are needed"
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!("account {name}: the password is longer than {MAX_PASSWORD_CHARS} characters"));
    }
    if name_key(password) == name_key(name) {
        return Err(format!("account {name}: the password is too weak: it is the account's name"));
    }
    Ok(())
}

/// The Argon2id PHC string of `password` with a fresh random salt (default parameters: 19 MiB,
/// 2 passes, 1 lane, as OWASP recommends). Slow on purpose: call it off the async runtime.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password failed: {e}"))
}

/// Whether `password` matches the stored PHC string (`false` for a malformed one, which is logged).
/// Slow on purpose: call it off the async runtime.
pub fn verify_password(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash is not a PHC string");
            false
        }
    }
}

/// Spends the time of one verification, for a name with no account: a sign-in with an unknown name
/// then takes as long as one with a wrong password, so timing does not tell which names exist.
pub fn verify_nothing(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash_password("no account has this password").unwrap_or_default());
    let _ = verify_password(stored, password);
}

/// A new API token: `enrichd_` and 64 hex digits (256 random bits). Shown once; store only
/// [`token_hash`] of it.
pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(rand::rng().random::<[u8; 32]>()))
}

/// The stored form of an API token: its SHA-256, hex. A fast hash is right here, unlike for
/// passwords: a token is 256 random bits, so there is nothing to guess from a leaked hash (slow
/// hashing only protects low-entropy secrets), and a fast, unsalted hash lets the server find the
/// token's row by an indexed lookup on every request.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(account_name("  Ada ").unwrap(), "Ada");
        assert!(account_name("").unwrap_err().contains("1 to 64 characters"));
        assert!(account_name("a\nb").is_err());
        assert!(account_name(&"x".repeat(65)).is_err());
        assert!(account_name(&"é".repeat(64)).is_ok());
        assert_eq!(name_key(" Ada "), "ada");
    }

    #[test]
    fn passwords_are_checked_and_named() {
        assert!(check_password("ada", "").unwrap_err().contains("account ada: the password is empty"));
        let weak = check_password("ada", "short").unwrap_err();
        assert!(weak.contains("account ada") && weak.contains("at least 8"), "{weak}");
        assert!(check_password("adalovelace", "AdaLovelace").unwrap_err().contains("the account's name"));
        assert!(check_password("ada", &"x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
        assert!(check_password("ada", "correct horse").is_ok());
    }

    #[test]
    fn hashes_are_salted_phc_strings_that_verify() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(!a.contains("correct horse"));
        assert!(verify_password(&a, "correct horse"));
        assert!(!verify_password(&a, "correct horsE"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (t1, t2) = (new_token(), new_token());
        assert_ne!(t1, t2);
        assert!(t1.starts_with(TOKEN_PREFIX) && t1.len() == TOKEN_PREFIX.len() + 64, "{t1}");
        assert_eq!(token_hash(&t1).len(), 64);
        assert_eq!(token_hash(&t1), token_hash(&format!("{t1}\n")));
        assert_ne!(token_hash(&t1), token_hash(&t2));
    }
}
