//! `enrichd connect CONNECTION`: authorises a Xero or QuickBooks Online connection with the OAuth2
//! authorisation code grant and PKCE (S256). The person opens the printed address, consents at the
//! platform, and the platform redirects the browser to `http://127.0.0.1:PORT/callback`, where this
//! command listens. The `state` is checked, the code exchanged for tokens, the organisation chosen
//! (Xero: `GET /connections`, or `--tenant`; QuickBooks: the redirect's `realmId`), and the tokens
//! stored encrypted with it. Runs waiting for this connection resume.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use enrichd_connector::ConnectorError;
use enrichd_connector::oauth2::{TokenSet, TokenStore};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse, PkceCodeChallenge,
    RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{Config, ConnectionConfig};
use crate::store::{CredentialVault, Store};

/// The loopback port `enrichd connect` listens on unless told otherwise; register
/// `http://127.0.0.1:8749/callback` as the app's redirect URI.
pub const DEFAULT_PORT: u16 = 8749;
/// Xero's scopes for reading and writing draft bills with their attachments (`offline_access`
/// gives the refresh token).
pub const XERO_SCOPES: [&str; 5] = [
    "offline_access",
    "accounting.transactions",
    "accounting.attachments",
    "accounting.contacts",
    "accounting.settings",
];

/// How `enrichd connect` runs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The loopback port of the redirect (`0`: any free port).
    pub port: u16,
    /// The organisation to choose (Xero tenant id, QuickBooks realm id), for scripts.
    pub tenant: Option<String>,
    /// Scopes instead of the platform's defaults.
    pub scopes: Vec<String>,
    /// How long to wait for the browser's redirect.
    pub wait: Duration,
    /// Whether a person can be asked to pick among several organisations on the terminal.
    pub interactive: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            port: DEFAULT_PORT,
            tenant: None,
            scopes: Vec::new(),
            wait: Duration::from_secs(600),
            interactive: false,
        }
    }
}

/// What `enrichd connect` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub connection: String,
    pub tenant_id: String,
    pub tenant_name: Option<String>,
    /// Runs that were waiting for this connection and resumed.
    pub resumed_runs: Vec<i64>,
}

/// The app registration and endpoints of one OAuth2 connection.
struct App {
    kind: &'static str,
    authorize_url: String,
    token_url: String,
    client_id: SecretString,
    client_secret: SecretString,
    scopes: Vec<String>,
    /// The realm or tenant the config fixes, if any.
    configured_tenant: Option<String>,
    xero: Option<enrichd_xero::Options>,
}

fn app(config: &Config, name: &str) -> Result<App, String> {
    let at = format!("connections.{name}");
    let connection = config.connections.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.connections.keys().map(String::as_str).collect();
        format!("no connection named {name:?} in {} (connections: {})", config.file.display(), known.join(", "))
    })?;
    match connection {
        ConnectionConfig::Xero(c) => {
            let o = c.validate(&at).map_err(|e| format!("{}: {}", e.key, e.message))?;
            if o.custom_connection {
                return Err(format!(
                    "{at} is a Xero Custom Connection (custom_connection = true): it gets its tokens with its client id \
                     and secret and needs no `enrichd connect`"
                ));
            }
            Ok(App {
                kind: "xero",
                authorize_url: o.authorize_url.clone(),
                token_url: o.token_url.clone(),
                client_id: o.client_id.clone(),
                client_secret: o.client_secret.clone(),
                scopes: XERO_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                configured_tenant: o.tenant_id.clone(),
                xero: Some(o),
            })
        }
        ConnectionConfig::QuickBooks(c) => {
            let o = c.settings.validate(&at).map_err(|e| format!("{}: {}", e.key, e.message))?;
            Ok(App {
                kind: "quickbooks",
                authorize_url: o.authorize_url.clone(),
                token_url: o.token_url.clone(),
                client_id: o.client_id.clone(),
                client_secret: o.client_secret.clone(),
                scopes: vec![enrichd_quickbooks::SCOPE.to_owned()],
                configured_tenant: o.realm_id.clone(),
                xero: None,
            })
        }
        other => Err(format!(
            "{at} is a {} connection; `enrichd connect` authorises xero and quickbooks connections",
            other.kind()
        )),
    }
}

/// What the platform sent back to the loopback address.
#[derive(Debug, Default, Clone)]
struct Redirect {
    code: Option<String>,
    state: Option<String>,
    realm_id: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Runs `enrichd connect` for connection `name`: `show_url` is called with the address the person
/// must open (the CLI prints it; a test follows it).
pub async fn connect(
    config: &Config,
    store: &Store,
    name: &str,
    options: &ConnectOptions,
    show_url: impl FnOnce(&str, &str),
) -> Result<Connected, String> {
    let app = app(config, name)?;
    let Some(key) = config.database.secret_key.as_ref() else {
        return Err(format!(
            "database.secret_key is not set: enrichd keeps OAuth2 tokens only encrypted. Set it (\"${{ENRICHD_SECRET_KEY}}\" \
             or \"file:/path\", a long random value) and run `enrichd connect {name}` again"
        ));
    };
    let vault = CredentialVault::new(store.clone(), Some(&key.0));

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port))).await.map_err(|e| {
            format!("listening for the redirect on 127.0.0.1:{}: {e} (choose another with --port)", options.port)
        })?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");

    let client = BasicClient::new(ClientId::new(app.client_id.expose_secret().to_owned()))
        .set_client_secret(ClientSecret::new(app.client_secret.expose_secret().to_owned()))
        .set_auth_uri(AuthUrl::new(app.authorize_url.clone()).map_err(|e| format!("authorisation URL: {e}"))?)
        .set_token_uri(TokenUrl::new(app.token_url.clone()).map_err(|e| format!("token URL: {e}"))?)
        .set_redirect_uri(RedirectUrl::new(redirect_uri.clone()).map_err(|e| format!("redirect URI: {e}"))?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let scopes = if options.scopes.is_empty() { app.scopes.clone() } else { options.scopes.clone() };
    let (auth_url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes.into_iter().map(Scope::new))
        .set_pkce_challenge(challenge)
        .url();

    let (tx, rx) = tokio::sync::oneshot::channel::<Redirect>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let shown_name = name.to_owned();
    let router = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| {
            let tx = tx.clone();
            let shown_name = shown_name.clone();
            async move {
                let redirect = Redirect {
                    code: q.get("code").cloned(),
                    state: q.get("state").cloned(),
                    realm_id: q.get("realmId").cloned(),
                    error: q.get("error").cloned(),
                    error_description: q.get("error_description").cloned(),
                };
                let ok = redirect.error.is_none() && redirect.code.is_some();
                if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(redirect);
                }
                let text = if ok {
                    format!("enrichd received the authorisation for connection {shown_name}. You can close this tab; the terminal says how it went.")
                } else {
                    format!("The authorisation for connection {shown_name} was not given. The terminal says why.")
                };
                axum::response::Html(format!(
                    "<!doctype html><meta charset=utf-8><title>enrichd connect</title><p>{}</p>",
                    ammonia::clean_text(&text)
                ))
            }
        }),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
        })
    };
    show_url(auth_url.as_str(), &redirect_uri);
    let redirect = tokio::time::timeout(options.wait, rx).await;
    stop.cancel();
    let _ = server.await;
    let redirect = match redirect {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => return Err("the redirect listener stopped before the browser came back".into()),
        Err(_) => {
            return Err(format!(
                "no redirect arrived at {redirect_uri} within {} s; open the address above in a browser on this machine",
                options.wait.as_secs()
            ));
        }
    };
    if let Some(error) = &redirect.error {
        return Err(format!(
            "the {} authorisation was refused: {error}{}",
            app.kind,
            redirect.error_description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
        ));
    }
    if redirect.state.as_deref() != Some(csrf.secret().as_str()) {
        return Err(
            "the redirect's state does not match the authorisation this command started; nothing was stored (start again)"
                .into(),
        );
    }
    let code = redirect.code.clone().ok_or("the redirect carries no authorisation code")?;

    let http = enrichd_connector::http::builder(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let send = |request: HttpRequest| {
        let http = http.clone();
        async move { send_http(&http, request).await }
    };
    let granted = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&send)
        .await
        .map_err(|e| format!("exchanging the authorisation code at {}: {}", app.token_url, token_error(&e)))?;
    let refresh = granted.refresh_token().ok_or_else(|| {
        format!("the {} token endpoint gave no refresh token (is offline_access among the app's scopes?)", app.kind)
    })?;
    let expires_in = granted.expires_in().map_or(1800, |d| d.as_secs() as i64);
    let tokens = TokenSet {
        access_token: SecretString::from(granted.access_token().secret().to_owned()),
        refresh_token: SecretString::from(refresh.secret().to_owned()),
        expires_at: chrono::Utc::now().timestamp() + expires_in,
    };

    let (tenant_id, tenant_name) = match &app.xero {
        Some(xero) => choose_xero_tenant(name, xero, &tokens, options).await?,
        None => {
            let realm =
                redirect.realm_id.clone().ok_or("the QuickBooks redirect carries no realmId (the company chosen)")?;
            if let Some(wanted) = options.tenant.as_deref().filter(|t| *t != realm) {
                return Err(format!(
                    "--tenant {wanted}: the company authorised in the browser is realm {realm}; nothing was stored"
                ));
            }
            (realm, None)
        }
    };
    if let Some(configured) = app.configured_tenant.as_deref().filter(|t| !t.eq_ignore_ascii_case(&tenant_id)) {
        return Err(format!(
            "connections.{name} names organisation {configured} but the one authorised is {tenant_id}; remove \
             tenant_id/realm_id from the config (enrichd keeps the one chosen here) or authorise that one; nothing was stored"
        ));
    }
    vault
        .connected(name, &tokens, Some(&tenant_id), tenant_name.as_deref())
        .await
        .map_err(|e| format!("storing the tokens: {e}"))?;
    let resumed = store
        .resume_waiting_for(name, &format!("enrichd connect {name}"))
        .await
        .map_err(|e| format!("resuming the runs waiting for {name}: {e}"))?;
    Ok(Connected {
        connection: name.to_owned(),
        tenant_id,
        tenant_name,
        resumed_runs: resumed.iter().map(|r| r.id).collect(),
    })
}

/// Sends one of the `oauth2` crate's requests with our reqwest client.
async fn send_http(http: &reqwest::Client, request: HttpRequest) -> Result<HttpResponse, reqwest::Error> {
    let request = reqwest::Request::try_from(request)?;
    let response = http.execute(request).await?;
    let mut builder = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await?.to_vec();
    Ok(builder.body(body).expect("status and headers come from a valid response"))
}

/// What the token endpoint said, without any token.
fn token_error<E: std::error::Error + 'static>(
    e: &oauth2::RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => {
            let mut text = r.error().to_string();
            if let Some(d) = r.error_description() {
                text.push_str(&format!(": {d}"));
            }
            text
        }
        oauth2::RequestTokenError::Request(e) => format!("the request failed: {e}"),
        oauth2::RequestTokenError::Parse(e, _) => format!("the answer is not a token response: {e}"),
        oauth2::RequestTokenError::Other(e) => e.clone(),
    }
}

/// Fresh tokens for one call (`GET /connections`), nothing kept.
struct Fresh(TokenSet);

#[async_trait]
impl TokenStore for Fresh {
    async fn load(&self, _connection: &str) -> Result<Option<TokenSet>, ConnectorError> {
        Ok(Some(self.0.clone()))
    }

    async fn save(&self, _connection: &str, _tokens: &TokenSet) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// The Xero organisation to connect: `--tenant`, the only one, or the person's pick.
async fn choose_xero_tenant(
    name: &str,
    options: &enrichd_xero::Options,
    tokens: &TokenSet,
    connect: &ConnectOptions,
) -> Result<(String, Option<String>), String> {
    let xero =
        enrichd_xero::Xero::new(options.clone(), name, Arc::new(Fresh(tokens.clone()))).map_err(|e| e.message)?;
    let tenants: Vec<enrichd_xero::Tenant> = xero
        .tenants()
        .await
        .map_err(|e| format!("listing the organisations: {e}"))?
        .into_iter()
        .filter(|t| t.tenant_type.eq_ignore_ascii_case("ORGANISATION"))
        .collect();
    let describe =
        |t: &enrichd_xero::Tenant| format!("{} ({})", t.tenant_name.as_deref().unwrap_or("unnamed"), t.tenant_id);
    if let Some(wanted) = &connect.tenant {
        return tenants
            .iter()
            .find(|t| t.tenant_id.eq_ignore_ascii_case(wanted.trim()))
            .map(|t| (t.tenant_id.to_ascii_lowercase(), t.tenant_name.clone()))
            .ok_or_else(|| {
                format!(
                    "--tenant {wanted}: not among the organisations this authorisation reaches: {}",
                    tenants.iter().map(describe).collect::<Vec<_>>().join(", ")
                )
            });
    }
    match tenants.as_slice() {
        [] => Err("the authorisation reaches no Xero organisation; choose one on Xero's consent page".into()),
        [one] => Ok((one.tenant_id.to_ascii_lowercase(), one.tenant_name.clone())),
        several if connect.interactive => {
            println!("This authorisation reaches {} organisations:", several.len());
            for (i, t) in several.iter().enumerate() {
                println!("  {}. {}", i + 1, describe(t));
            }
            let count = several.len();
            let picked = tokio::task::spawn_blocking(move || -> Result<usize, String> {
                use std::io::{BufRead, Write};
                print!("Which one? [1-{count}] ");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
                line.trim().parse::<usize>().map_err(|_| format!("{:?} is not a number from the list", line.trim()))
            })
            .await
            .map_err(|e| e.to_string())??;
            several
                .get(picked.wrapping_sub(1))
                .map(|t| (t.tenant_id.to_ascii_lowercase(), t.tenant_name.clone()))
                .ok_or_else(|| format!("{picked} is not a number from the list"))
        }
        several => Err(format!(
            "this authorisation reaches {} organisations; choose one with --tenant ID: {}",
            several.len(),
            several.iter().map(describe).collect::<Vec<_>>().join(", ")
        )),
    }
}
