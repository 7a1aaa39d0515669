//! Who may use the server, and how: accounts and roles, sessions, sign-in (throttled), API tokens,
//! CSRF and the bind-address rule.
//!
//! How people sign in is decided per request, from what exists at that moment ([`Mode`]):
//! - **accounts** (`enrichd user add`): account name and password (Argon2id, checked off the async
//!   runtime); the session carries the account, which is read again on every request, so a role
//!   change or a removal applies at once, and a new password ends the sessions signed in before it.
//!   API clients send a per-account token (`enrichd token create`) and act as that account, with its
//!   role. A `[server.auth] token` still acts as `api` (admin) — deprecated; a `[server.auth]
//!   password` no longer signs in, and says so.
//! - **shared password** (`[server.auth]`, no accounts; deprecated): anyone with the password signs
//!   in under the name they type, as admin; the config token acts as `api`, admin.
//! - **open** (neither): the server answers this machine only (loopback peer, loopback `Host`
//!   header) and asks just for a name; whoever is at the machine is admin.
//!
//! Every browser gets a session (a random id in an HttpOnly, SameSite=Strict cookie; the sessions
//! live in memory, so a restarted daemon signs everyone out). A session carries a CSRF token that
//! every state-changing form sends back; a bearer token is no ambient credential, so those requests
//! need none. The actor written to the audit trail is `reviewer:NAME` for a person (signed in, or by
//! their account's token), `api` for the config token, and `local` for an API call without a
//! session on an open server.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::throttle::Throttle;
use crate::accounts::{account_name, name_key, token_hash, verify_nothing, verify_password};
use crate::config::ServerAuthConfig;
use crate::roles::{Refusal, Role};
use crate::store::{Store, StoreError, TokenLookup, now_ms};

const COOKIE: &str = "enrichd_session";
/// The actor of API calls on an open (loopback-only) server.
const LOCAL: &str = "local";
/// The actor of requests with the `[server.auth]` token.
const API: &str = "api";
/// Sessions nobody signed in to expire sooner and are the first to go when there are too many.
const ANONYMOUS_TTL: Duration = Duration::from_secs(3600);
const MAX_SESSIONS: usize = 10_000;
/// The largest form body read for its CSRF token.
const MAX_FORM_BYTES: usize = 1 << 20;
/// An API token's "last used" is written at most this often (not one write per request).
const TOKEN_USE_RESOLUTION: Duration = Duration::from_secs(60);

/// The signed-in person (or `api` for the config token), as the actor written to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewer {
    /// The name shown on pages (an account's name).
    pub name: String,
    /// The actor recorded with events: `reviewer:NAME`, `api` or `local`.
    pub actor: String,
    /// What they may do (see [`crate::roles`]).
    pub role: Role,
}

impl Reviewer {
    /// Checks that this caller may do `action` (words for people, e.g. "revert a write").
    pub fn require(&self, needed: Role, action: &str) -> Result<(), Refusal> {
        self.role.require(needed, &self.name, action)
    }

    fn person(name: String, role: Role) -> Reviewer {
        Reviewer { actor: format!("reviewer:{name}"), name, role }
    }
}

/// How people sign in at this moment (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No accounts and no `[server.auth]`: open to this machine only.
    Open,
    /// `[server.auth]` and no accounts: the shared password (deprecated).
    SharedPassword,
    /// Accounts exist: each person signs in with their own.
    Accounts,
}

/// The session's CSRF token, for forms.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// Who a session signed in as.
#[derive(Debug, Clone)]
enum SignedIn {
    /// An account, by id (a new account of the same name is not this one), and when its password
    /// was set at sign-in (a new password ends the session).
    Account { id: i64, password_set_at: i64 },
    /// The shared `[server.auth]` password, under the name typed; valid while no account exists.
    Shared(String),
    /// The open server, under the name typed; valid while it is open.
    Open(String),
}

struct Session {
    who: Option<SignedIn>,
    csrf: String,
    last_seen: Instant,
}

struct Inner {
    password: Option<SecretString>,
    token: Option<SecretString>,
    auth_configured: bool,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    /// Where the accounts are: the engine's store, attached when the router is built.
    store: OnceLock<Store>,
    throttle: Throttle,
    /// When each API token's use was last written.
    token_uses: Mutex<HashMap<i64, Instant>>,
}

/// Why a sign-in did not succeed.
#[derive(Debug)]
pub(super) enum SignInError {
    /// Wrong name or password, or signing in is not possible here: 401 with this text.
    Refused(String),
    /// Too many failures for the account or from the address: 429, try again after this long.
    Throttled(Duration),
    /// The database could not answer.
    Unavailable(String),
}

/// What the sign-in page shows.
#[derive(Debug, serde::Serialize)]
pub(super) struct SignInPage {
    /// People sign in with their own accounts.
    pub accounts: bool,
    pub needs_password: bool,
    pub can_sign_in: bool,
    /// The `[server.auth]` deprecation, when it is configured.
    pub deprecation: Option<String>,
}

/// The server's access rules and its sessions. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

impl Access {
    /// From `[server.auth]` (`None`: none configured). Accounts come from the store the router is
    /// built over (see [`Access::use_store`]).
    pub fn new(auth: Option<&ServerAuthConfig>) -> Access {
        let inner = Inner {
            password: auth.and_then(|a| a.password.as_ref()).map(|s| s.0.clone()),
            token: auth.and_then(|a| a.token.as_ref()).map(|s| s.0.clone()),
            auth_configured: auth.is_some(),
            ttl: Duration::from_secs(auth.map_or(12, |a| a.session_hours).saturating_mul(3600)),
            sessions: Mutex::new(HashMap::new()),
            store: OnceLock::new(),
            throttle: Throttle::default(),
            token_uses: Mutex::new(HashMap::new()),
        };
        Access { inner: Arc::new(inner) }
    }

    /// Reads accounts and API tokens from `store` (the first store given stays).
    pub fn use_store(&self, store: Store) {
        let _ = self.inner.store.set(store);
    }

    /// Whether the deprecated `[server.auth]` is configured.
    pub fn auth_configured(&self) -> bool {
        self.inner.auth_configured
    }

    /// How people sign in now: accounts as soon as one exists.
    pub async fn mode(&self) -> Result<Mode, StoreError> {
        if let Some(store) = self.inner.store.get()
            && store.has_accounts().await?
        {
            return Ok(Mode::Accounts);
        }
        Ok(if self.inner.auth_configured { Mode::SharedPassword } else { Mode::Open })
    }

    /// What the sign-in page offers.
    pub(super) async fn sign_in_page(&self) -> Result<SignInPage, StoreError> {
        let mode = self.mode().await?;
        let deprecation = self.inner.auth_configured.then(|| {
            shared_auth_deprecation(self.inner.password.is_some(), self.inner.token.is_some(), mode == Mode::Accounts)
        });
        Ok(match mode {
            Mode::Accounts => SignInPage { accounts: true, needs_password: true, can_sign_in: true, deprecation },
            Mode::SharedPassword => {
                let password = self.inner.password.is_some();
                SignInPage { accounts: false, needs_password: password, can_sign_in: password, deprecation }
            }
            Mode::Open => SignInPage { accounts: false, needs_password: false, can_sign_in: true, deprecation },
        })
    }

    /// Checks a sign-in; on success the session gets a fresh id (the old one is dropped, so a
    /// planted cookie cannot ride along) and the new cookie is returned. With a password to check,
    /// failures are counted per account name and per `client` address (see [`super::throttle`]).
    pub(super) async fn sign_in(
        &self,
        old_session: Option<&str>,
        name: &str,
        password: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<String, SignInError> {
        let mode = self.mode().await.map_err(|e| SignInError::Unavailable(e.to_string()))?;
        let name = account_name(name).map_err(SignInError::Refused)?;
        let password = password.unwrap_or_default();
        let key = name_key(&name);
        let signed_in = match mode {
            Mode::Open => SignedIn::Open(name),
            Mode::SharedPassword => {
                let Some(expected) = &self.inner.password else {
                    return Err(SignInError::Refused(
                        "signing in is not configured: create an account with `enrichd user add NAME --role ROLE`"
                            .into(),
                    ));
                };
                self.inner.throttle.check(&key, client, Instant::now()).map_err(SignInError::Throttled)?;
                if !same_secret(expected.expose_secret(), password) {
                    self.inner.throttle.failed(&key, client, Instant::now());
                    // Slows guessing down further: the password is shared by everyone.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return Err(SignInError::Refused("wrong name or password".into()));
                }
                SignedIn::Shared(name)
            }
            Mode::Accounts => {
                self.inner.throttle.check(&key, client, Instant::now()).map_err(SignInError::Throttled)?;
                let store = self.inner.store.get().expect("accounts mode has a store");
                let found =
                    store.account_password_hash(&name).await.map_err(|e| SignInError::Unavailable(e.to_string()))?;
                let presented = password.to_owned();
                // Argon2 takes tens of milliseconds of CPU on purpose: not on the async runtime.
                let verified = tokio::task::spawn_blocking(move || match found {
                    Some((account, hash)) => verify_password(&hash, &presented).then_some(account),
                    None => {
                        verify_nothing(&presented);
                        None
                    }
                })
                .await
                .map_err(|e| SignInError::Unavailable(format!("checking the password failed: {e}")))?;
                let Some(account) = verified else {
                    self.inner.throttle.failed(&key, client, Instant::now());
                    let shared = self.inner.password.as_ref().is_some_and(|p| same_secret(p.expose_secret(), password));
                    return Err(SignInError::Refused(if shared {
                        "the shared password of [server.auth] no longer signs in: accounts exist, so sign in with \
                         your own account (an administrator creates it with `enrichd user add`)"
                            .into()
                    } else {
                        "wrong account name or password".into()
                    }));
                };
                SignedIn::Account { id: account.id, password_set_at: account.password_set_at }
            }
        };
        self.inner.throttle.succeeded(&key);
        let mut sessions = self.sessions();
        if let Some(old) = old_session {
            sessions.remove(old);
        }
        let id = random_token();
        sessions.insert(id.clone(), Session { who: Some(signed_in), csrf: random_token(), last_seen: Instant::now() });
        Ok(id)
    }

    /// Ends a session.
    pub(super) fn sign_out(&self, session: &str) {
        self.sessions().remove(session);
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live session with this id: (who signed in, csrf), refreshing its last use.
    fn touch(&self, id: &str) -> Option<(Option<SignedIn>, String)> {
        let mut sessions = self.sessions();
        let ttl = self.inner.ttl;
        let session = sessions.get_mut(id)?;
        let limit = if session.who.is_some() { ttl } else { ANONYMOUS_TTL };
        if session.last_seen.elapsed() > limit {
            sessions.remove(id);
            return None;
        }
        session.last_seen = Instant::now();
        Some((session.who.clone(), session.csrf.clone()))
    }

    /// Forgets who signed in to a session that no longer holds (the account is gone, its password
    /// or the server's mode changed); the session's CSRF token stays, so the sign-in form works.
    fn forget_sign_in(&self, id: &str) {
        if let Some(session) = self.sessions().get_mut(id) {
            session.who = None;
        }
    }

    /// A new session nobody has signed in to: (id, csrf).
    fn new_session(&self) -> (String, String) {
        let mut sessions = self.sessions();
        if sessions.len() >= MAX_SESSIONS {
            let ttl = self.inner.ttl;
            sessions.retain(|_, s| s.last_seen.elapsed() <= if s.who.is_some() { ttl } else { ANONYMOUS_TTL });
            if sessions.len() >= MAX_SESSIONS {
                sessions.retain(|_, s| s.who.is_some());
            }
        }
        let (id, csrf) = (random_token(), random_token());
        sessions.insert(id.clone(), Session { who: None, csrf: csrf.clone(), last_seen: Instant::now() });
        (id, csrf)
    }

    /// Who a session's sign-in is now, in `mode`: `None` when it no longer holds.
    async fn signed_in_as(&self, who: &SignedIn, mode: Mode) -> Result<Option<Reviewer>, StoreError> {
        Ok(match (who, mode) {
            (SignedIn::Account { id, password_set_at }, Mode::Accounts) => {
                let store = self.inner.store.get().expect("accounts mode has a store");
                store
                    .account_by_id(*id)
                    .await?
                    .filter(|a| a.password_set_at == *password_set_at)
                    .map(|a| Reviewer::person(a.name, a.role))
            }
            (SignedIn::Shared(name), Mode::SharedPassword) | (SignedIn::Open(name), Mode::Open) => {
                Some(Reviewer::person(name.clone(), Role::Admin))
            }
            _ => None,
        })
    }

    /// Who a bearer token acts as, or why it is refused.
    async fn bearer(&self, presented: &str) -> Result<Reviewer, String> {
        if self.inner.token.as_ref().is_some_and(|t| same_secret(t.expose_secret(), presented)) {
            return Ok(Reviewer { name: API.into(), actor: API.into(), role: Role::Admin });
        }
        let Some(store) = self.inner.store.get() else { return Err("invalid bearer token".into()) };
        match store.api_token_account(&token_hash(presented)).await {
            Ok(TokenLookup::Live { token_id, account }) => {
                self.note_token_use(store, token_id).await;
                Ok(Reviewer::person(account.name, account.role))
            }
            Ok(TokenLookup::Revoked { token_id, label }) => Err(format!(
                "API token {token_id} ({label}) was revoked; create another with `enrichd token create NAME`"
            )),
            Ok(TokenLookup::Unknown) => Err("invalid bearer token".into()),
            Err(e) => {
                tracing::error!(error = %e, "checking an API token: the database could not answer");
                Err("the API token could not be checked: the database could not answer".into())
            }
        }
    }

    /// Writes the token's last use, at most once per [`TOKEN_USE_RESOLUTION`].
    async fn note_token_use(&self, store: &Store, token_id: i64) {
        {
            let mut uses = self.inner.token_uses.lock().unwrap_or_else(|e| e.into_inner());
            if uses.get(&token_id).is_some_and(|at| at.elapsed() < TOKEN_USE_RESOLUTION) {
                return;
            }
            if uses.len() >= MAX_SESSIONS {
                uses.clear();
            }
            uses.insert(token_id, Instant::now());
        }
        if let Err(e) = store.touch_api_token(token_id, now_ms()).await {
            tracing::warn!(error = %e, token = token_id, "recording an API token's use failed");
        }
    }
}

/// The deprecation note for `[server.auth]`: logged when the daemon starts, printed by `enrichd
/// check`, shown on the sign-in page. `accounts`: whether accounts exist (then the password no
/// longer signs in).
pub fn shared_auth_deprecation(password: bool, token: bool, accounts: bool) -> String {
    let mut note = String::from("[server.auth] is deprecated: ");
    if accounts {
        if password {
            note.push_str(
                "its shared password no longer signs in, because accounts exist (everyone signs in with their own). ",
            );
        }
        if token {
            note.push_str("Its token still acts as `api` (admin); give scripts an account's token instead (`enrichd token create NAME`). ");
        }
        note.push_str("Remove [server.auth] from the config.");
    } else {
        note.push_str(
            "one shared password lets anyone who has it sign in under any name, as admin. Create an account for \
             each person with `enrichd user add NAME --role ROLE` (an admin first), and tokens for scripts with \
             `enrichd token create NAME`; once an account exists the shared password no longer signs in. Then \
             remove [server.auth] from the config.",
        );
    }
    note
}

/// Refuses to serve on a non-loopback address unless people must sign in: accounts exist (in the
/// store given with [`Access::use_store`]) or `[server.auth]` is configured.
pub async fn check_bind(addr: &str, access: &Access) -> Result<(), String> {
    if access.auth_configured() {
        return Ok(());
    }
    match access.mode().await {
        Ok(Mode::Accounts) => return Ok(()),
        Ok(_) => {}
        Err(e) => return Err(format!("server.bind {addr}: cannot tell whether accounts exist: {e}")),
    }
    let resolved: Vec<SocketAddr> = match addr.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => tokio::net::lookup_host(addr)
            .await
            .map_err(|e| format!("server.bind {addr}: cannot resolve: {e}"))?
            .collect(),
    };
    if !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    Err(format!(
        "refusing to serve on {addr} without authentication: anyone who can reach it could approve writes to your \
         stores. Create an account first (`enrichd user add NAME --role admin`), or bind to a loopback address \
         (server.bind or --bind 127.0.0.1:8686). ([server.auth] with a password or token also allows it, but is \
         deprecated.)"
    ))
}

fn random_token() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

/// Compares two secrets in time independent of where they differ (and of their lengths).
fn same_secret(expected: &str, presented: &str) -> bool {
    let (a, b) = (Sha256::digest(expected.as_bytes()), Sha256::digest(presented.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value for a session id.
pub(super) fn session_cookie(id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict"))
        .expect("hex session ids are valid header text")
}

/// The `Set-Cookie` value that removes the session cookie.
pub(super) fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("enrichd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session id the request carries, if any.
pub(super) fn session_id(headers: &HeaderMap) -> Option<&str> {
    cookie_value(headers, COOKIE)
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The Prometheus scrape path (see [`check`]: no session per scrape).
pub(super) const METRICS_PATH: &str = "/metrics";

/// Where the platforms' webhooks arrive (`/hooks/{pipeline}`): no session, no Host rule (they come
/// through whatever proxy reaches this daemon) and no CSRF token; the handler takes a request only
/// with a valid signature under the pipeline's webhook secret.
pub(super) const HOOKS_PREFIX: &str = "/hooks/";

fn is_public(path: &str) -> bool {
    path == "/healthz" || path.starts_with("/assets/") || path.starts_with(HOOKS_PREFIX)
}

fn refuse(status: StatusCode, api: bool, message: &str) -> Response {
    if api {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    } else {
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message.to_owned()).into_response()
    }
}

/// The middleware in front of every route: Host check when open, bearer tokens, sessions, sign-in
/// and CSRF; it also sets the security headers.
pub async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    let mut response = check(&access, request, next).await;
    let headers = response.headers_mut();
    // `img-src https:` for the item page's record thumbnail (the shop's own image address, which
    // differs per connection). Record and proposal HTML is cleaned to an allow-list without `img`
    // before it is shown, so only the page's own `img` elements can load anything.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn check(access: &Access, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if is_public(&path) {
        return next.run(request).await;
    }
    let api = path.starts_with("/api/");
    let mode = match access.mode().await {
        Ok(mode) => mode,
        Err(e) => {
            tracing::error!(error = %e, "access: the database could not answer whether accounts exist");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, api, "the database could not answer; see the daemon's log");
        }
    };
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    // Open to this machine only: a page on another site that rebinds its name to 127.0.0.1 arrives
    // with its own Host header; and a server bound to a public address while it had accounts stays
    // closed to other machines when the last account is removed.
    if mode == Mode::Open {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        if !is_loopback_host(&host) || peer.is_some_and(|ip| !ip.is_loopback()) {
            return refuse(
                StatusCode::FORBIDDEN,
                api,
                "this server is open to its own machine only: create an account (`enrichd user add NAME --role admin`) \
                 to let people sign in from elsewhere",
            );
        }
    }
    let mut request = request;
    request.extensions_mut().insert(mode);
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|auth| auth.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default().trim().to_owned());
    if let Some(presented) = bearer {
        match access.bearer(&presented).await {
            Ok(reviewer) => {
                request.extensions_mut().insert(reviewer);
                return next.run(request).await;
            }
            Err(message) => return refuse(StatusCode::UNAUTHORIZED, api, &message),
        }
    }
    let known = session_id(request.headers()).and_then(|id| access.touch(id).map(|s| (id.to_owned(), s)));
    let (session, signed_in, csrf, fresh) = match known {
        Some((id, (who, csrf))) => (id, who, csrf, false),
        None if path == METRICS_PATH => (String::new(), None, String::new(), false),
        None => {
            let (id, csrf) = access.new_session();
            (id, None, csrf, true)
        }
    };
    let reviewer = match &signed_in {
        None => None,
        Some(who) => match access.signed_in_as(who, mode).await {
            Ok(Some(reviewer)) => Some(reviewer),
            Ok(None) => {
                access.forget_sign_in(&session);
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "access: the database could not answer who is signed in");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    api,
                    "the database could not answer; see the daemon's log",
                );
            }
        },
    };
    // Scrapers call every few seconds without cookies: `/metrics` never makes a session. Unless the
    // server is open it takes a bearer token (above) or a signed-in browser session.
    if path == METRICS_PATH {
        if mode == Mode::Open || reviewer.is_some() {
            return next.run(request).await;
        }
        return refuse(StatusCode::UNAUTHORIZED, false, "send Authorization: Bearer <API token>, or sign in");
    }
    let unsafe_method = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method {
        match csrf_checked(request, &host, &csrf).await {
            Ok(r) => request = r,
            Err(message) => return refuse(StatusCode::FORBIDDEN, api, message),
        }
    }
    // Open to this machine: API clients (curl, scripts) need no session and act as `local`.
    let reviewer = match reviewer {
        None if api && mode == Mode::Open => {
            Some(Reviewer { name: LOCAL.to_owned(), actor: LOCAL.to_owned(), role: Role::Admin })
        }
        other => other,
    };
    let signing_in = path == "/login";
    let mut response = match reviewer {
        None if !signing_in => {
            if api {
                refuse(StatusCode::UNAUTHORIZED, true, "sign in, or send Authorization: Bearer <API token>")
            } else if request.method() == Method::GET {
                let target = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let next = percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC);
                Redirect::to(&format!("/login?next={next}")).into_response()
            } else {
                refuse(StatusCode::UNAUTHORIZED, false, "sign in first")
            }
        }
        reviewer => {
            if let Some(reviewer) = reviewer {
                request.extensions_mut().insert(reviewer);
            }
            request.extensions_mut().insert(CsrfToken(csrf));
            request.extensions_mut().insert(SessionId(session.clone()));
            next.run(request).await
        }
    };
    if fresh && !response.headers().contains_key(header::SET_COOKIE) {
        response.headers_mut().insert(header::SET_COOKIE, session_cookie(&session));
    }
    response
}

/// The session id, for sign-in and sign-out.
#[derive(Debug, Clone)]
pub(super) struct SessionId(pub String);

/// Cross-site requests are refused: a foreign `Origin` always, and a form post without the session's
/// token. JSON bodies need no token: a browser cannot send one cross-site without a CORS preflight,
/// which this server never grants.
async fn csrf_checked(request: Request, host: &str, csrf: &str) -> Result<Request, &'static str> {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && origin.split_once("://").map(|(_, rest)| rest) != Some(host)
    {
        return Err("cross-site request refused (Origin does not match Host)");
    }
    if let Some(token) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        return if same_secret(csrf, token) { Ok(request) } else { Err("wrong CSRF token") };
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if content_type.starts_with("application/json") {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| "form too large")?;
    let presented = if content_type.starts_with("application/x-www-form-urlencoded") {
        form_urlencoded_field(&bytes, "csrf")
    } else {
        None
    };
    match presented {
        Some(token) if same_secret(csrf, &token) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Some(_) => Err("wrong CSRF token: reload the page and try again"),
        None => Err("missing CSRF token"),
    }
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    form_pairs(body).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` pairs, decoded.
pub(super) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &[u8]| {
        let plus: Vec<u8> = s.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
        percent_encoding::percent_decode(&plus).decode_utf8_lossy().into_owned()
    };
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.iter().position(|b| *b == b'=') {
            Some(i) => (decode(&pair[..i]), decode(&pair[i + 1..])),
            None => (decode(pair), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1:8686", "localhost:1", "LOCALHOST", "[::1]:8686", "127.0.0.2"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["evil.example:8686", "192.168.1.2:80", "", "[2001:db8::1]:80", "localhost.evil.example"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn form_fields_decode() {
        let body = b"csrf=ab%2Bc&value=a+b%0D%0Ac&empty";
        assert_eq!(form_urlencoded_field(body, "csrf").as_deref(), Some("ab+c"));
        assert_eq!(form_urlencoded_field(body, "value").as_deref(), Some("a b\r\nc"));
        assert_eq!(form_urlencoded_field(body, "empty").as_deref(), Some(""));
        assert_eq!(form_urlencoded_field(body, "nope"), None);
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cret", "s3cre"));
        assert!(!same_secret("s3cret", ""));
    }

    #[tokio::test]
    async fn binding_elsewhere_needs_auth() {
        let open = Access::new(None);
        assert!(check_bind("127.0.0.1:0", &open).await.is_ok());
        assert!(check_bind("[::1]:0", &open).await.is_ok());
        let err = check_bind("0.0.0.0:8686", &open).await.unwrap_err();
        assert!(err.contains("enrichd user add") && err.contains("--bind"), "{err}");
    }
}
