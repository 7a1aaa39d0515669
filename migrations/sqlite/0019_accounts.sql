-- Accounts and roles (`enrichd user …`, `enrichd token …`): who signs in to the review UI and the
-- API, and what each may do (see src/roles.rs). They replace the one shared `[server.auth]` password.
CREATE TABLE accounts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    -- As typed when the account was made (1 to 64 characters, no control characters).
    name             TEXT   NOT NULL,
    -- The name in lower case: names are unique regardless of case, and signing in ignores case.
    name_key         TEXT   NOT NULL UNIQUE,
    role             TEXT   NOT NULL CHECK (role IN ('viewer', 'reviewer', 'operator', 'admin')),
    -- An Argon2id PHC string (algorithm, parameters, random salt, hash); never the password.
    password_hash    TEXT   NOT NULL,
    -- When the password was last set (ms since the epoch): sessions signed in before that end.
    password_set_at  BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- Per-account API tokens (`Authorization: Bearer …`): a request with one acts as its account, with
-- the account's role as it is at that moment.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Removed with their account.
    account_id    BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    label         TEXT   NOT NULL,
    -- SHA-256 of the token, hex: the token itself is shown once and never stored.
    token_hash    TEXT   NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    -- Set by `enrichd token revoke`: the token is refused from then on; the row stays for the record.
    revoked_at    BIGINT
);
CREATE INDEX api_tokens_account ON api_tokens (account_id);
