//! Who may use the server, and how: sessions, sign-in, API tokens, CSRF and the bind-address rule.
//!
//! Every browser gets a session (a random id in an HttpOnly, SameSite=Strict cookie; the sessions
//! live in memory, so a restarted daemon signs everyone out). A session carries a CSRF token that
//! every state-changing form sends back, and, once signed in, the reviewer's name, which becomes the
//! actor (`reviewer:NAME`) of what they do. With `[server.auth] password` reviewers sign in with
//! their name and that password; without `[server.auth]` the server is open to this machine only
//! (loopback address, loopback `Host` header) and asks just for a name. API clients authenticate with
//! `Authorization: Bearer <server.auth.token>` and act as `api`; a bearer token is no ambient
//! credential, so those requests need no CSRF token. On an open server API calls without a session
//! act as `local`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config::ServerAuthConfig;
use crate::roles::{Refusal, Role};

const COOKIE: &str = "enrichd_session";
/// The actor of API calls on an open (loopback-only) server.
const LOCAL: &str = "local";
/// Sessions nobody signed in to expire sooner and are the first to go when there are too many.
const ANONYMOUS_TTL: Duration = Duration::from_secs(3600);
const MAX_SESSIONS: usize = 10_000;
/// The largest form body read for its CSRF token.
const MAX_FORM_BYTES: usize = 1 << 20;

/// The signed-in reviewer (or `api` for a bearer token), as the actor written to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewer {
    /// The name shown on pages.
    pub name: String,
    /// The actor recorded with events: `reviewer:NAME` or `api`.
    pub actor: String,
    /// What they may do (see [`crate::roles`]).
    pub role: Role,
}

impl Reviewer {
    /// Checks that this caller may do `action` (words for people, e.g. "revert a write").
    pub fn require(&self, needed: Role, action: &str) -> Result<(), Refusal> {
        self.role.require(needed, &self.name, action)
    }
}

/// The session's CSRF token, for forms.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

struct Session {
    reviewer: Option<String>,
    csrf: String,
    last_seen: Instant,
}

struct Inner {
    password: Option<SecretString>,
    token: Option<SecretString>,
    auth_configured: bool,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

/// The server's access rules and its sessions. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

impl Access {
    /// From `[server.auth]`; `None` means open to this machine only.
    pub fn new(auth: Option<&ServerAuthConfig>) -> Access {
        let inner = Inner {
            password: auth.and_then(|a| a.password.as_ref()).map(|s| s.0.clone()),
            token: auth.and_then(|a| a.token.as_ref()).map(|s| s.0.clone()),
            auth_configured: auth.is_some(),
            ttl: Duration::from_secs(auth.map_or(12, |a| a.session_hours).saturating_mul(3600)),
            sessions: Mutex::new(HashMap::new()),
        };
        Access { inner: Arc::new(inner) }
    }

    /// Whether `[server.auth]` is configured.
    pub fn auth_configured(&self) -> bool {
        self.inner.auth_configured
    }

    /// Whether signing in asks for the password.
    pub fn needs_password(&self) -> bool {
        self.inner.password.is_some()
    }

    /// Whether people can sign in to the UI at all (not when only an API token is configured).
    pub fn can_sign_in(&self) -> bool {
        !self.inner.auth_configured || self.inner.password.is_some()
    }

    /// Checks a sign-in; on success the session gets a fresh id (the old one is dropped, so a
    /// planted cookie cannot ride along) and the new cookie is returned.
    pub(super) fn sign_in(
        &self,
        old_session: Option<&str>,
        name: &str,
        password: Option<&str>,
    ) -> Result<String, String> {
        if !self.can_sign_in() {
            return Err("signing in is not configured: set server.auth.password".into());
        }
        let name = valid_name(name)?;
        if let Some(expected) = &self.inner.password
            && !same_secret(expected.expose_secret(), password.unwrap_or_default())
        {
            return Err("wrong name or password".into());
        }
        let mut sessions = self.sessions();
        if let Some(old) = old_session {
            sessions.remove(old);
        }
        let id = random_token();
        sessions.insert(id.clone(), Session { reviewer: Some(name), csrf: random_token(), last_seen: Instant::now() });
        Ok(id)
    }

    /// Ends a session.
    pub(super) fn sign_out(&self, session: &str) {
        self.sessions().remove(session);
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live session with this id: (reviewer, csrf), refreshing its last use.
    fn touch(&self, id: &str) -> Option<(Option<String>, String)> {
        let mut sessions = self.sessions();
        let ttl = self.inner.ttl;
        let session = sessions.get_mut(id)?;
        let limit = if session.reviewer.is_some() { ttl } else { ANONYMOUS_TTL };
        if session.last_seen.elapsed() > limit {
            sessions.remove(id);
            return None;
        }
        session.last_seen = Instant::now();
        Some((session.reviewer.clone(), session.csrf.clone()))
    }

    /// A new session nobody has signed in to: (id, csrf).
    fn new_session(&self) -> (String, String) {
        let mut sessions = self.sessions();
        if sessions.len() >= MAX_SESSIONS {
            let ttl = self.inner.ttl;
            sessions.retain(|_, s| s.last_seen.elapsed() <= if s.reviewer.is_some() { ttl } else { ANONYMOUS_TTL });
            if sessions.len() >= MAX_SESSIONS {
                sessions.retain(|_, s| s.reviewer.is_some());
            }
        }
        let (id, csrf) = (random_token(), random_token());
        sessions.insert(id.clone(), Session { reviewer: None, csrf: csrf.clone(), last_seen: Instant::now() });
        (id, csrf)
    }

    fn bearer_ok(&self, presented: &str) -> bool {
        self.inner.token.as_ref().is_some_and(|t| same_secret(t.expose_secret(), presented))
    }
}

/// Refuses to serve on a non-loopback address unless `[server.auth]` is configured.
pub async fn check_bind(addr: &str, access: &Access) -> Result<(), String> {
    if access.auth_configured() {
        return Ok(());
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
         stores. Configure [server.auth] (password and/or token) in the config, or bind to a loopback address \
         (server.bind or --bind 127.0.0.1:8686)"
    ))
}

/// Reviewer names: what they type, trimmed; 1–64 characters, no control characters.
fn valid_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err("a name is 1 to 64 characters".into());
    }
    Ok(name.to_owned())
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
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    // Open to this machine only: a page on another site that rebinds its name to 127.0.0.1 arrives
    // with its own Host header.
    if !access.auth_configured() && !is_loopback_host(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            api,
            "this server is open to its own machine only (Host is not loopback)",
        );
    }
    let mut request = request;
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|auth| auth.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default().trim().to_owned());
    if let Some(presented) = bearer {
        if !access.bearer_ok(&presented) {
            return refuse(StatusCode::UNAUTHORIZED, api, "invalid bearer token");
        }
        request.extensions_mut().insert(Reviewer { name: "api".into(), actor: "api".into(), role: Role::Admin });
        return next.run(request).await;
    }
    // Scrapers call every few seconds without cookies: `/metrics` never makes a session. With
    // `[server.auth]` it takes the bearer token (above) or a signed-in browser session.
    if path == METRICS_PATH {
        if !access.auth_configured() {
            return next.run(request).await;
        }
        let signed_in = session_id(request.headers()).and_then(|id| access.touch(id)).is_some_and(|(r, _)| r.is_some());
        if signed_in {
            return next.run(request).await;
        }
        return refuse(StatusCode::UNAUTHORIZED, false, "send Authorization: Bearer <server.auth.token>, or sign in");
    }
    let known = session_id(request.headers()).and_then(|id| access.touch(id).map(|s| (id.to_owned(), s)));
    let (session, reviewer, csrf, fresh) = match known {
        Some((id, (reviewer, csrf))) => (id, reviewer, csrf, false),
        None => {
            let (id, csrf) = access.new_session();
            (id, None, csrf, true)
        }
    };
    let unsafe_method = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method {
        match csrf_checked(request, &host, &csrf).await {
            Ok(r) => request = r,
            Err(message) => return refuse(StatusCode::FORBIDDEN, api, message),
        }
    }
    // Open to this machine: API clients (curl, scripts) need no session and act as `local`.
    let reviewer = match reviewer {
        None if api && !access.auth_configured() => Some(LOCAL.to_owned()),
        other => other,
    };
    let signing_in = path == "/login";
    let mut response = match &reviewer {
        None if !signing_in => {
            if api {
                refuse(StatusCode::UNAUTHORIZED, true, "sign in, or send Authorization: Bearer <server.auth.token>")
            } else if request.method() == Method::GET {
                let target = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let next = percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC);
                Redirect::to(&format!("/login?next={next}")).into_response()
            } else {
                refuse(StatusCode::UNAUTHORIZED, false, "sign in first")
            }
        }
        _ => {
            if let Some(name) = reviewer {
                let actor = if api && name == LOCAL { LOCAL.to_owned() } else { format!("reviewer:{name}") };
                request.extensions_mut().insert(Reviewer { actor, name, role: Role::Admin });
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

    #[test]
    fn names() {
        assert_eq!(valid_name("  Ada ").unwrap(), "Ada");
        assert!(valid_name("").is_err());
        assert!(valid_name("a\nb").is_err());
        assert!(valid_name(&"x".repeat(65)).is_err());
    }

    #[tokio::test]
    async fn binding_elsewhere_needs_auth() {
        let open = Access::new(None);
        assert!(check_bind("127.0.0.1:0", &open).await.is_ok());
        assert!(check_bind("[::1]:0", &open).await.is_ok());
        let err = check_bind("0.0.0.0:8686", &open).await.unwrap_err();
        assert!(err.contains("[server.auth]") && err.contains("--bind"), "{err}");
    }
}
