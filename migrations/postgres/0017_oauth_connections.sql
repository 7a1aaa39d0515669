-- OAuth2 connections (Xero, QuickBooks Online): `enrichd connect`, rotating tokens shared by several
-- daemons, and runs that pause for the platform instead of failing.

-- The stored token set's refresh token, as a keyed digest (the token itself is only in the
-- ciphertext): saving a rotated set is a compare-and-swap on it, so two daemons cannot both replace
-- the same refresh token.
ALTER TABLE credentials ADD COLUMN refresh_digest TEXT;
-- Who is refreshing the stored refresh token now, and until when that claim holds: the others wait
-- for its result instead of refreshing the same token.
ALTER TABLE credentials ADD COLUMN refresh_claimed_by TEXT;
ALTER TABLE credentials ADD COLUMN refresh_claim_until BIGINT;
-- Why the connection must be authorised again (`enrichd connect`): the platform refused its refresh
-- token. While set, no token request is made.
ALTER TABLE credentials ADD COLUMN needs_connect TEXT;
-- The organisation `enrichd connect` chose (Xero tenant id, QuickBooks realm id) and its name.
ALTER TABLE credentials ADD COLUMN tenant_id TEXT;
ALTER TABLE credentials ADD COLUMN tenant_name TEXT;

-- A run paused for its platform: when it resumes by itself (a used-up daily allowance resets), or
-- the connection it waits to be authorised again (`enrichd connect` resumes it).
ALTER TABLE runs ADD COLUMN resume_at BIGINT;
ALTER TABLE runs ADD COLUMN waits_for_connection TEXT;
