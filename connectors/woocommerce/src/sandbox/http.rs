//! The `wc/v3` routes: one handler parses the path into a closed set of routes, applies faults and
//! authentication, and answers with WordPress's headers and PHP-style JSON.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, NaiveDateTime};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::oauth1;
use super::store::{ApiError, Catalogue, Context, ParamErrors, Product, enum_message};
use super::text;
use super::{AppliedWrite, Inner, Permission, WooSandbox, Writer};

/// Which listener a request came through; it decides which credentials are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

pub fn router(sandbox: WooSandbox, scheme: Scheme) -> Router {
    Router::new().fallback(handle).with_state((sandbox, scheme))
}

/// The routes under `/wp-json/wc/v3/`.
#[derive(Debug, Clone, Copy)]
enum Route {
    Products,
    Product(u64),
    Batch,
    Variations(u64),
    Variation(u64, u64),
    Categories,
    Tags,
    SystemStatus,
    Index,
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        let path = path.trim_end_matches('/');
        if path == "/wp-json" {
            return Some(Route::Index);
        }
        let rest = path.strip_prefix("/wp-json/wc/v3/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| s.parse::<u64>().ok().filter(|_| s.bytes().all(|b| b.is_ascii_digit()));
        Some(match parts.as_slice() {
            ["products"] => Route::Products,
            ["products", "batch"] => Route::Batch,
            ["products", "categories"] => Route::Categories,
            ["products", "tags"] => Route::Tags,
            ["products", p] => Route::Product(id(p)?),
            ["products", p, "variations"] => Route::Variations(id(p)?),
            ["products", p, "variations", v] => Route::Variation(id(p)?, id(v)?),
            ["system_status"] => Route::SystemStatus,
            _ => return None,
        })
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Products | Route::Variations(_) | Route::Categories | Route::Tags => "GET, POST",
            Route::Product(_) | Route::Variation(..) => "GET, POST, PUT, PATCH, DELETE",
            Route::Batch => "POST, PUT, PATCH",
            Route::SystemStatus | Route::Index => "GET",
        }
    }
}

/// What a request does, once route and method are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    List,
    Get,
    Create,
    Update,
    Delete,
    Batch,
}

impl Op {
    fn of(route: Route, method: &Method) -> Option<Self> {
        let m = method.as_str();
        Some(match (route, m) {
            (Route::Products | Route::Variations(_) | Route::Categories | Route::Tags, "GET") => Op::List,
            (Route::Products | Route::Variations(_) | Route::Categories, "POST") => Op::Create,
            (Route::Product(_) | Route::Variation(..), "GET") => Op::Get,
            (Route::Product(_) | Route::Variation(..), "PUT" | "PATCH" | "POST") => Op::Update,
            (Route::Product(_) | Route::Variation(..), "DELETE") => Op::Delete,
            (Route::Batch, "POST" | "PUT" | "PATCH") => Op::Batch,
            (Route::SystemStatus | Route::Index, "GET") => Op::Get,
            _ => return None,
        })
    }

    /// The error WooCommerce gives an unauthenticated request for this operation.
    fn forbidden(self, route: Route) -> ApiError {
        let (code, message) = match (self, route) {
            (Op::List, _) | (Op::Get, Route::SystemStatus) => {
                ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
            }
            (Op::Get, _) => ("woocommerce_rest_cannot_view", "Sorry, you cannot view this resource."),
            (Op::Create, _) => ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."),
            (Op::Update, _) => ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."),
            (Op::Delete, _) => {
                ("woocommerce_rest_cannot_delete", "Sorry, you are not allowed to delete this resource.")
            }
            (Op::Batch, _) => {
                ("woocommerce_rest_cannot_batch", "Sorry, you are not allowed to batch manipulate this resource.")
            }
        };
        ApiError::new(401, code, message)
    }
}

/// One request, parsed.
struct Request {
    scheme: Scheme,
    base: String,
    method: Method,
    path: String,
    /// Decoded query pairs in request order.
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A response under construction: status, JSON body, extra headers.
struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
    allow: Option<&'static str>,
    /// 401s from failed authentication carry `Vary: Origin` instead of the no-cache headers.
    auth_failure: bool,
    api_link: bool,
}

impl Reply {
    fn ok(status: u16, body: Value) -> Self {
        Self { status, body, headers: Vec::new(), allow: None, auth_failure: false, api_link: true }
    }

    fn error(e: &ApiError) -> Self {
        Self::ok(e.status, e.body())
    }

    fn into_response(self, base: &str) -> Response {
        let mut response =
            (StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), php_json(&self.body))
                .into_response();
        let h = response.headers_mut();
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        };
        set("content-type", "application/json; charset=UTF-8".into());
        set("x-robots-tag", "noindex".into());
        if self.api_link {
            set("link", format!("<{base}/wp-json/>; rel=\"https://api.w.org/\""));
        }
        set("x-content-type-options", "nosniff".into());
        set("access-control-expose-headers", "X-WP-Total, X-WP-TotalPages, Link".into());
        set(
            "access-control-allow-headers",
            "Authorization, X-WP-Nonce, Content-Disposition, Content-MD5, Content-Type".into(),
        );
        for (name, value) in self.headers {
            set(name, value);
        }
        if self.auth_failure {
            set("vary", "Origin".into());
        } else {
            if let Some(allow) = self.allow {
                set("allow", allow.into());
            }
            set("expires", "Wed, 11 Jan 1984 05:00:00 GMT".into());
            set("cache-control", "no-cache, must-revalidate, max-age=0, no-store, private".into());
        }
        response
    }
}

/// JSON the way PHP's `json_encode` writes it for WordPress: `\/` and `\uXXXX` for non-ASCII.
fn php_json(value: &Value) -> String {
    let raw = value.to_string();
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if (c as u32) < 0x80 => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out
}

async fn handle(
    State((sandbox, scheme)): State<(WooSandbox, Scheme)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_owned();
    let base = format!("{}://{host}", scheme.as_str());
    let query = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (oauth1::decode(k), oauth1::decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let request = Request { scheme, base: base.clone(), method, path: uri.path().to_owned(), query, headers, body };
    let no_route = || {
        let e = ApiError::new(404, "rest_no_route", "No route was found matching the URL and request method.");
        Reply::error(&e).into_response(&base)
    };
    let Some(route) = Route::parse(&request.path) else { return no_route() };
    let Some(op) = Op::of(route, &request.method) else { return no_route() };

    let faults = sandbox.lock().faults.clone();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let roll: f64 = rand::rng().random();
    if roll < faults.rate_limit_rate {
        sandbox.lock().stats.rejected_by_faults += 1;
        let e = ApiError::new(429, "rate_limited", "Too many requests. Please slow down.");
        let mut reply = Reply::error(&e);
        reply.headers.push(("retry-after", faults.retry_after_secs.max(1).to_string()));
        return reply.into_response(&base);
    }
    if roll < faults.rate_limit_rate + faults.server_error_rate {
        sandbox.lock().stats.rejected_by_faults += 1;
        let e = ApiError::new(503, "service_unavailable", "The store is temporarily unavailable.");
        return Reply::error(&e).into_response(&base);
    }

    let mut inner = sandbox.lock();
    inner.requests += 1;
    let reply = match authenticate(&mut inner, &request) {
        Auth::Failed(e) => {
            inner.stats.unauthorized += 1;
            let mut reply = Reply::error(&e);
            reply.auth_failure = true;
            reply
        }
        Auth::Anonymous if route.needs_auth() => {
            inner.stats.unauthorized += 1;
            let mut reply = Reply::error(&op.forbidden(route));
            reply.auth_failure = true;
            reply
        }
        Auth::User(permission) | Auth::Key(permission) if !allowed(permission, &request.method) => {
            inner.stats.unauthorized += 1;
            let message = if permission == Permission::Read {
                "The API key provided does not have write permissions."
            } else {
                "The API key provided does not have read permissions."
            };
            Reply::error(&ApiError::new(401, "woocommerce_rest_authentication_error", message))
        }
        _ => {
            let mut reply = dispatch(&mut inner, &request, route, op);
            if reply.allow.is_none() {
                reply.allow = Some(route.allow());
            }
            reply
        }
    };
    drop(inner);
    reply.into_response(&base)
}

impl Route {
    fn needs_auth(self) -> bool {
        !matches!(self, Route::Index)
    }
}

enum Auth {
    /// A WordPress user (application password): full rights.
    User(Permission),
    /// A REST key with its permission.
    Key(Permission),
    Anonymous,
    Failed(ApiError),
}

fn allowed(permission: Permission, method: &Method) -> bool {
    let reading = matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
    match permission {
        Permission::ReadWrite => true,
        Permission::Read => reading,
        Permission::Write => !reading,
    }
}

fn auth_error(message: &str) -> Auth {
    Auth::Failed(ApiError::new(401, "woocommerce_rest_authentication_error", message))
}

/// WooCommerce's rules: over HTTPS, Basic (key or application password) or query-string keys; over
/// plain HTTP, only an OAuth 1.0a signature (Basic credentials are ignored there).
fn authenticate(inner: &mut Inner, request: &Request) -> Auth {
    let check_key = |inner: &Inner, key: &str, secret: &str| -> Option<Auth> {
        let k = inner.keys.iter().find(|k| k.key == key)?;
        if oauth1::same(&k.secret, secret) {
            Some(Auth::Key(k.permission))
        } else {
            Some(auth_error("Consumer secret is invalid."))
        }
    };
    match request.scheme {
        Scheme::Https => {
            let basic = request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
            if let Some((user, password)) = basic {
                if let Some(auth) = check_key(inner, &user, &password) {
                    return auth;
                }
                if inner.app_passwords.iter().any(|(u, _)| *u == user) {
                    let ok = inner
                        .app_passwords
                        .iter()
                        .any(|(u, p)| *u == user && p.replace(' ', "") == password.replace(' ', ""));
                    return if ok {
                        Auth::User(Permission::ReadWrite)
                    } else {
                        Auth::Failed(ApiError::new(
                            401,
                            "incorrect_password",
                            "The provided password is an invalid application password.",
                        ))
                    };
                }
                return Auth::Anonymous;
            }
            if let (Some(key), Some(secret)) = (request.param("consumer_key"), request.param("consumer_secret")) {
                return check_key(inner, key, secret).unwrap_or(Auth::Anonymous);
            }
            Auth::Anonymous
        }
        Scheme::Http => oauth(inner, request),
    }
}

fn oauth(inner: &mut Inner, request: &Request) -> Auth {
    let mut params: Vec<(String, String)> = request.query.clone();
    if let Some(header) = request.headers.get("authorization").and_then(|v| v.to_str().ok())
        && header.starts_with("OAuth ")
    {
        params.extend(oauth1::parse_header(header));
    }
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let (Some(key), Some(timestamp), Some(nonce), Some(signature), Some(method)) = (
        get("oauth_consumer_key"),
        get("oauth_timestamp"),
        get("oauth_nonce"),
        get("oauth_signature"),
        get("oauth_signature_method"),
    ) else {
        return Auth::Anonymous;
    };
    let Some(api_key) = inner.keys.iter().find(|k| k.key == key) else {
        return auth_error("Consumer key is invalid.");
    };
    let Some(method) = oauth1::Method::parse(&method) else {
        return auth_error("Invalid signature - signature method is invalid.");
    };
    let url = format!("{}{}", request.base.to_ascii_lowercase(), request.path);
    let base = oauth1::base_string(request.method.as_str(), &url, &params);
    let expected = oauth1::sign(method, &base, &api_key.secret, "");
    if !oauth1::same(&expected, &signature) {
        return auth_error("Invalid signature - provided signature does not match.");
    }
    // The window is checked against the real clock: a pinned sandbox clock (fixture dates) must not
    // make a correctly signed request fail.
    let real_now = chrono::Utc::now().timestamp();
    let window = 15 * 60;
    match timestamp.parse::<i64>() {
        Ok(t) if (real_now - window..=real_now + window).contains(&t) => {}
        _ => return auth_error("Invalid timestamp."),
    }
    let permission = api_key.permission;
    if !inner.used_nonces.insert((key, nonce)) {
        return auth_error("Invalid nonce - nonce has already been used.");
    }
    Auth::Key(permission)
}

fn dispatch(inner: &mut Inner, request: &Request, route: Route, op: Op) -> Reply {
    let result = match (route, op) {
        (Route::Index, _) => {
            inner.stats.other += 1;
            Ok(index(inner, request))
        }
        (Route::SystemStatus, _) => {
            inner.stats.other += 1;
            Ok(system_status(inner, request))
        }
        (Route::Products, Op::List) => {
            inner.stats.list += 1;
            inner.note_read();
            list_products(inner, request, None)
        }
        (Route::Variations(parent), Op::List) => {
            inner.stats.list += 1;
            inner.note_read();
            match inner.catalogue.products.get(&parent).filter(|p| !p.is_variation()) {
                Some(_) => list_products(inner, request, Some(parent)),
                None => Err(ApiError::new(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")),
            }
        }
        (Route::Product(id), Op::Get) => {
            inner.stats.get += 1;
            inner.note_read();
            get_product(inner, request, id)
        }
        (Route::Variation(parent, id), Op::Get) => {
            inner.stats.get += 1;
            inner.note_read();
            match inner.catalogue.products.get(&id).filter(|v| v.parent_id == parent) {
                Some(v) => {
                    Ok(Reply::ok(200, fields_single(inner.catalogue.serve_variation(v, &request.base), request)))
                }
                None => Err(ApiError::new(404, "woocommerce_rest_product_variation_invalid_id", "Invalid ID.")),
            }
        }
        (Route::Products, Op::Create) => {
            inner.stats.create += 1;
            inner.before_write();
            create_product(inner, request, None)
        }
        (Route::Variations(parent), Op::Create) => {
            inner.stats.create += 1;
            inner.before_write();
            if inner.catalogue.products.get(&parent).is_some_and(|p| !p.is_variation()) {
                create_product(inner, request, Some(parent))
            } else {
                Err(ApiError::new(404, "woocommerce_rest_product_invalid_id", "Invalid ID."))
            }
        }
        (Route::Product(id), Op::Update) => {
            inner.stats.put += 1;
            inner.before_write();
            update_product(inner, request, id, None)
        }
        (Route::Variation(parent, id), Op::Update) => {
            inner.stats.put += 1;
            inner.before_write();
            update_product(inner, request, id, Some(parent))
        }
        (Route::Product(id) | Route::Variation(_, id), Op::Delete) => {
            inner.stats.delete += 1;
            inner.before_write();
            delete_product(inner, request, id, matches!(route, Route::Variation(..)))
        }
        (Route::Batch, _) => {
            inner.stats.batch += 1;
            batch(inner, request)
        }
        (Route::Categories, Op::Create) => {
            inner.stats.other += 1;
            json_body(request).and_then(|body| {
                let id = inner.catalogue.create_category(&body)?;
                let term = &inner.catalogue.categories[&id];
                let mut reply = Reply::ok(201, inner.catalogue.serve_category(term, &request.base));
                reply.headers.push(("location", format!("{}/wp-json/wc/v3/products/categories/{id}", request.base)));
                Ok(reply)
            })
        }
        (Route::Categories | Route::Tags, _) => {
            inner.stats.other += 1;
            let c = &inner.catalogue;
            let items: Vec<Value> = if matches!(route, Route::Tags) {
                let mut tags: Vec<_> = c.tags.values().collect();
                tags.sort_by(|a, b| a.name.cmp(&b.name));
                tags.into_iter().map(|t| c.serve_tag(t, &request.base)).collect()
            } else {
                let mut cats: Vec<_> = c.categories.values().collect();
                cats.sort_by(|a, b| a.name.cmp(&b.name));
                cats.into_iter().map(|t| c.serve_category(t, &request.base)).collect()
            };
            paginate(request, items)
        }
        _ => Err(ApiError::new(404, "rest_no_route", "No route was found matching the URL and request method.")),
    };
    result.unwrap_or_else(|e| Reply::error(&e))
}

fn index(inner: &Inner, request: &Request) -> Reply {
    let tz = inner.catalogue.timezone;
    let now = inner.now();
    let offset = chrono::TimeZone::offset_from_utc_datetime(&tz, &now);
    let seconds = chrono::Offset::fix(&offset).local_minus_utc();
    Reply::ok(
        200,
        json!({
            "name": "WooCommerce Sandbox",
            "description": "",
            "url": request.base,
            "home": request.base,
            "gmt_offset": if seconds % 3600 == 0 { json!(seconds / 3600) } else { json!(f64::from(seconds) / 3600.0) },
            "timezone_string": tz.name(),
            "namespaces": ["wp/v2", "wc/v3"],
            "authentication": {},
            "routes": {},
        }),
    )
}

fn system_status(inner: &Inner, request: &Request) -> Reply {
    let base = &request.base;
    let status = json!({
        "environment": {
            "home_url": base, "site_url": base, "store_id": "8a4d3f8e-5c1b-4f57-9c0e-sandbox00001",
            "version": "9.9.5", "log_directory": "/var/www/html/wp-content/uploads/wc-logs/",
            "log_directory_writable": false, "wp_version": "6.9", "wp_multisite": false,
            "wp_memory_limit": 536870912, "wp_debug_mode": true, "wp_cron": false, "language": "en_US",
            "external_object_cache": null, "server_info": "nginx/1.22.1",
            "server_architecture": "Linux x86_64", "php_version": "8.2.36",
            "php_post_max_size": 8388608, "php_max_execution_time": 30, "php_max_input_vars": 1000,
            "curl_version": "7.88.1, OpenSSL/3.0.19", "suhosin_installed": false, "max_upload_size": 8388608,
            "mysql_version": "10.11.19", "mysql_version_string": "10.11.19-MariaDB-0+deb12u1",
            "default_timezone": "UTC", "fsockopen_or_curl_enabled": true, "soapclient_enabled": false,
            "domdocument_enabled": true, "gzip_enabled": true, "mbstring_enabled": true,
            "remote_post_successful": false, "remote_post_response": false,
            "remote_get_successful": false, "remote_get_response": false,
        },
        "settings": {
            "api_enabled": true, "force_ssl": false, "currency": "USD", "currency_symbol": "&#36;",
            "currency_position": "left", "thousand_separator": ",", "decimal_separator": ".",
            "number_of_decimals": 2, "timezone": inner.catalogue.timezone.name(),
        },
        "security": { "secure_connection": request.scheme == Scheme::Https, "hide_errors": false },
    });
    Reply::ok(200, fields_single(status, request))
}

fn get_product(inner: &Inner, request: &Request, id: u64) -> Result<Reply, ApiError> {
    let p = inner.catalogue.products.get(&id).ok_or_else(|| ApiError::invalid_id(404))?;
    let body = inner.catalogue.serve_product(p, Context::View, &request.base);
    Ok(Reply::ok(200, fields_single(body, request)))
}

/// `_fields` on a single object: the listed fields (dotted paths one level deep) plus `_links`,
/// which WordPress adds after filtering.
fn fields_single(body: Value, request: &Request) -> Value {
    let Some(fields) = request.param("_fields") else { return body };
    let mut filtered = filter_fields(&body, fields);
    if let (Some(out), Some(links)) = (filtered.as_object_mut(), body.get("_links")) {
        out.insert("_links".into(), links.clone());
    }
    filtered
}

fn filter_fields(body: &Value, fields: &str) -> Value {
    let Some(obj) = body.as_object() else { return body.clone() };
    let mut out = Map::new();
    for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match field.split_once('.') {
            None => {
                if let Some(v) = obj.get(field) {
                    out.insert(field.into(), v.clone());
                }
            }
            Some((top, sub)) => {
                if let Some(v) = obj.get(top).and_then(|v| v.get(sub)) {
                    let entry = out.entry(top.to_owned()).or_insert_with(|| json!({}));
                    if let Some(e) = entry.as_object_mut() {
                        e.insert(sub.into(), v.clone());
                    }
                }
            }
        }
    }
    Value::Object(out)
}

fn json_body(request: &Request) -> Result<Map<String, Value>, ApiError> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Ok(Map::new()),
        Err(_) => Err(ApiError::new(400, "rest_invalid_json", "Invalid JSON body passed.")
            .with("json_error_code", 4.into())
            .with("json_error_message", "Syntax error".into())),
    }
}

fn record(inner: &mut Inner, id: u64, fields: &Map<String, Value>) {
    let at = inner.catalogue.products[&id].modified;
    inner.writes.push(AppliedWrite { product_id: id, fields: fields.clone(), at, by: Writer::Api });
}

fn create_product(inner: &mut Inner, request: &Request, parent: Option<u64>) -> Result<Reply, ApiError> {
    let body = json_body(request)?;
    let now = inner.now();
    let id = inner.catalogue.write(None, parent, &body, now)?;
    inner.catalogue.settle_slug(id);
    record(inner, id, &body);
    let p = &inner.catalogue.products[&id];
    let (served, location) = match parent {
        None => (
            inner.catalogue.serve_product(p, Context::Edit, &request.base),
            format!("{}/wp-json/wc/v3/products/{id}", request.base),
        ),
        // WooCommerce 9.9 really sends the route pattern in this Location header.
        Some(_) => (
            inner.catalogue.serve_variation(p, &request.base),
            format!("{}/wp-json/wc/v3/products/(?P<product_id>[\\d]+)/variations/{id}", request.base),
        ),
    };
    let mut reply = Reply::ok(201, served);
    reply.headers.push(("location", location));
    Ok(reply)
}

fn update_product(inner: &mut Inner, request: &Request, id: u64, parent: Option<u64>) -> Result<Reply, ApiError> {
    let exists = match parent {
        Some(parent) => inner.catalogue.products.get(&id).is_some_and(|p| p.parent_id == parent),
        None => inner.catalogue.products.contains_key(&id),
    };
    if !exists {
        return Err(match parent {
            Some(_) => ApiError::new(400, "woocommerce_rest_product_variation_invalid_id", "Invalid ID."),
            None => ApiError::invalid_id(400),
        });
    }
    let body = json_body(request)?;
    let now = inner.now();
    inner.catalogue.write(Some(id), parent, &body, now)?;
    inner.catalogue.settle_slug(id);
    record(inner, id, &body);
    let p = &inner.catalogue.products[&id];
    let served = match parent {
        Some(_) => inner.catalogue.serve_variation(p, &request.base),
        None => inner.catalogue.serve_product(p, Context::Edit, &request.base),
    };
    Ok(Reply::ok(200, served))
}

fn delete_product(inner: &mut Inner, request: &Request, id: u64, variation: bool) -> Result<Reply, ApiError> {
    let force = matches!(request.param("force"), Some("true" | "1"));
    let p = inner.catalogue.products.get(&id).ok_or_else(|| ApiError::invalid_id(404))?;
    let before = if variation {
        inner.catalogue.serve_variation(p, &request.base)
    } else {
        inner.catalogue.serve_product(p, Context::Edit, &request.base)
    };
    if force || variation {
        inner.catalogue.remove(id);
    } else {
        if p.status() == "trash" {
            return Err(ApiError::new(
                410,
                "woocommerce_rest_already_trashed",
                &format!("The product with ID {id} has already been trashed."),
            ));
        }
        let now = inner.now();
        inner.catalogue.trash(id, now);
        record(inner, id, &Map::new());
    }
    Ok(Reply::ok(200, before))
}

fn batch(inner: &mut Inner, request: &Request) -> Result<Reply, ApiError> {
    let body = json_body(request)?;
    let list = |key: &str| body.get(key).and_then(Value::as_array).cloned();
    let (create, update, delete) = (list("create"), list("update"), list("delete"));
    let total = [&create, &update, &delete].iter().map(|l| l.as_ref().map_or(0, Vec::len)).sum::<usize>();
    // Stores can lower the limit with the `woocommerce_rest_batch_items_limit` filter.
    let limit = inner.faults.batch_limit.unwrap_or(crate::MAX_BATCH);
    if total > limit {
        return Err(ApiError::new(
            413,
            "woocommerce_rest_request_entity_too_large",
            &format!("Unable to accept more than {limit} items for this request."),
        ));
    }
    inner.before_write();
    let base = &request.base;
    let mut out = Map::new();
    if let Some(items) = create {
        let results = items
            .iter()
            .map(|item| {
                let fields = item.as_object().cloned().unwrap_or_default();
                let now = inner.now();
                match inner.catalogue.write(None, None, &fields, now) {
                    Ok(id) => {
                        inner.catalogue.settle_slug(id);
                        record(inner, id, &fields);
                        inner.catalogue.serve_product(&inner.catalogue.products[&id], Context::Edit, base)
                    }
                    Err(e) => json!({"id": 0, "error": e.body()}),
                }
            })
            .collect::<Vec<_>>();
        out.insert("create".into(), json!(results));
    }
    if let Some(items) = update {
        let results = items
            .iter()
            .map(|item| {
                let mut fields = item.as_object().cloned().unwrap_or_default();
                let id_value = fields.remove("id").unwrap_or(json!(0));
                let id = id_value.as_u64().or_else(|| id_value.as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
                if inner.catalogue.products.get(&id).is_none_or(|p| p.is_variation()) {
                    return json!({"id": id_value, "error": ApiError::invalid_id(400).body()});
                }
                let now = inner.now();
                match inner.catalogue.write(Some(id), None, &fields, now) {
                    Ok(_) => {
                        inner.catalogue.settle_slug(id);
                        record(inner, id, &fields);
                        inner.catalogue.serve_product(&inner.catalogue.products[&id], Context::Edit, base)
                    }
                    Err(e) => json!({"id": id_value, "error": e.body()}),
                }
            })
            .collect::<Vec<_>>();
        out.insert("update".into(), json!(results));
    }
    if let Some(items) = delete {
        // WooCommerce's batch handler deletes with `force=true` whatever the request says.
        let results = items
            .iter()
            .map(|item| {
                let id = item.as_u64().or_else(|| item.as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
                match inner.catalogue.products.get(&id).filter(|p| !p.is_variation()) {
                    Some(p) => {
                        let served = inner.catalogue.serve_product(p, Context::Edit, base);
                        inner.catalogue.remove(id);
                        served
                    }
                    None => json!({"id": item, "error": ApiError::invalid_id(404).body()}),
                }
            })
            .collect::<Vec<_>>();
        out.insert("delete".into(), json!(results));
    }
    Ok(Reply::ok(200, Value::Object(out)))
}

/// `orderby` values WooCommerce 9.9 accepts for products, in the order its error message lists them.
const ORDERBY: [&str; 19] = [
    "date",
    "id",
    "include",
    "title",
    "slug",
    "modified",
    "popularity",
    "rating",
    "post__in",
    "price",
    "sales",
    "menu_order",
    "random",
    "popularity",
    "rating",
    "menu_order",
    "price",
    "popularity",
    "rating",
];
const STATUS: [&str; 7] = ["any", "future", "trash", "draft", "pending", "private", "publish"];
const TYPES: [&str; 4] = ["simple", "grouped", "external", "variable"];

struct ListParams {
    page: u64,
    per_page: u64,
    orderby: String,
    desc: bool,
    status: String,
    include: Option<Vec<u64>>,
    exclude: Vec<u64>,
    modified_after: Option<NaiveDateTime>,
    modified_before: Option<NaiveDateTime>,
    after: Option<NaiveDateTime>,
    before: Option<NaiveDateTime>,
}

fn int_param(request: &Request, errors: &mut ParamErrors, name: &str, default: u64, max: Option<u64>) -> u64 {
    let Some(raw) = request.param(name) else { return default };
    let Ok(n) = raw.trim().parse::<i64>() else {
        errors.add(name, "rest_invalid_type", format!("{name} is not of type integer."), json!({"param": name}));
        return default;
    };
    match max {
        Some(max) if n < 1 || n as u64 > max => {
            errors.add(
                name,
                "rest_out_of_bounds",
                format!("{name} must be between 1 (inclusive) and {max} (inclusive)"),
                Value::Null,
            );
            default
        }
        None if n < 1 => {
            errors.add(name, "rest_out_of_bounds", format!("{name} must be greater than or equal to 1"), Value::Null);
            default
        }
        _ => n as u64,
    }
}

fn enum_param(request: &Request, errors: &mut ParamErrors, name: &str, allowed: &[&str], default: &str) -> String {
    match request.param(name) {
        None => default.into(),
        Some(v) if allowed.contains(&v) => v.into(),
        Some(_) => {
            errors.add(name, "rest_not_in_enum", enum_message(name, allowed), Value::Null);
            default.into()
        }
    }
}

/// A date parameter as GMT: `Z` or an offset is absolute; otherwise site-local time unless
/// `dates_are_gmt` is true.
fn date_param(request: &Request, errors: &mut ParamErrors, catalogue: &Catalogue, name: &str) -> Option<NaiveDateTime> {
    let raw = request.param(name)?;
    let as_gmt = matches!(request.param("dates_are_gmt"), Some("true" | "1"));
    let parsed = DateTime::parse_from_rfc3339(raw)
        .map(|d| d.naive_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(&raw.replace(' ', "T")).map(|d| d.naive_utc()))
        .ok()
        .or_else(|| {
            let local = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S"))
                .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f"))
                .ok()?;
            Some(if as_gmt { local } else { catalogue.gmt_of_local(local) })
        });
    if parsed.is_none() {
        errors.add(name, "rest_invalid_date", "Invalid date.".into(), Value::Null);
    }
    parsed
}

/// `wp_parse_id_list`: each item through `absint`, so `abc` is 0 (matches nothing).
fn id_list(raw: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = raw
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| {
            let digits: String = s.trim_start_matches('-').chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap_or(0)
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    ids.retain(|i| seen.insert(*i));
    ids
}

fn list_products(inner: &mut Inner, request: &Request, parent: Option<u64>) -> Result<Reply, ApiError> {
    let mut errors = ParamErrors::default();
    let c = &inner.catalogue;
    let params = ListParams {
        page: int_param(request, &mut errors, "page", 1, None),
        per_page: int_param(request, &mut errors, "per_page", 10, Some(u64::from(crate::MAX_PER_PAGE))),
        orderby: enum_param(request, &mut errors, "orderby", &ORDERBY, "date"),
        desc: enum_param(request, &mut errors, "order", &["asc", "desc"], "desc") == "desc",
        status: enum_param(request, &mut errors, "status", &STATUS, "any"),
        include: request.param("include").map(id_list),
        exclude: request.param("exclude").map(id_list).unwrap_or_default(),
        modified_after: date_param(request, &mut errors, c, "modified_after"),
        modified_before: date_param(request, &mut errors, c, "modified_before"),
        after: date_param(request, &mut errors, c, "after"),
        before: date_param(request, &mut errors, c, "before"),
    };
    let kind = enum_param(request, &mut errors, "type", &TYPES, "");
    errors.into_result()?;
    let skus: Option<Vec<&str>> = request.param("sku").map(|s| s.split(',').map(str::trim).collect());
    let search = request.param("search").map(str::to_lowercase);
    let category = request.param("category").map(id_list);
    let tag = request.param("tag").map(id_list);
    let matches = |p: &&Product| -> bool {
        let in_scope = match parent {
            Some(parent) => p.parent_id == parent,
            None => !p.is_variation(),
        };
        in_scope
            && match params.status.as_str() {
                "any" => !matches!(p.status(), "trash" | "auto-draft"),
                s => p.status() == s,
            }
            && params.include.as_ref().is_none_or(|ids| ids.contains(&p.id))
            && !params.exclude.contains(&p.id)
            && params.modified_after.is_none_or(|t| p.modified > t)
            && params.modified_before.is_none_or(|t| p.modified < t)
            && params.after.is_none_or(|t| p.created > t)
            && params.before.is_none_or(|t| p.created < t)
            && (kind.is_empty() || p.str("type") == kind)
            && skus.as_ref().is_none_or(|s| s.contains(&p.str("sku")))
            && search.as_ref().is_none_or(|q| p.str("name").to_lowercase().contains(q))
            && category.as_ref().is_none_or(|ids| p.categories.iter().any(|c| ids.contains(c)))
            && tag.as_ref().is_none_or(|ids| p.tags.iter().any(|t| ids.contains(t)))
    };
    let found: Vec<&Product> = c.products.values().filter(matches).collect();
    // Equal sort keys come back in a different order on every request, like MySQL without a
    // unique tie-breaker; only `id` and `include` orders are total.
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(inner.order_seed ^ inner.requests.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut keyed: Vec<(SortKey, u64, &Product)> = found
        .into_iter()
        .map(|p| {
            let key = match params.orderby.as_str() {
                "id" => SortKey::Int(p.id as i64),
                "include" | "post__in" => {
                    let at = params
                        .include
                        .as_ref()
                        .and_then(|ids| ids.iter().position(|i| *i == p.id))
                        .unwrap_or(usize::MAX);
                    SortKey::Int(at as i64)
                }
                "title" => SortKey::Text(p.str("name").to_lowercase()),
                "slug" => SortKey::Text(p.str("slug").to_owned()),
                "modified" => SortKey::Time(p.modified),
                "price" => SortKey::Float(p.str("regular_price").parse().unwrap_or(0.0)),
                "menu_order" => SortKey::Int(p.fields.get("menu_order").and_then(Value::as_i64).unwrap_or(0)),
                "popularity" | "sales" | "rating" | "random" => SortKey::Int(0),
                _ => SortKey::Time(p.created),
            };
            (key, rng.random::<u64>(), p)
        })
        .collect();
    let include_order = matches!(params.orderby.as_str(), "include" | "post__in");
    keyed.sort_by(|a, b| {
        let by_key = a.0.cmp(&b.0);
        let by_key = if params.desc && !include_order { by_key.reverse() } else { by_key };
        by_key.then(a.1.cmp(&b.1))
    });
    let items: Vec<Value> = keyed
        .into_iter()
        .map(|(_, _, p)| match parent {
            Some(_) => c.serve_variation(p, &request.base),
            None => c.serve_product(p, Context::View, &request.base),
        })
        .collect();
    paginate_with(request, items, params.page, params.per_page)
}

#[derive(PartialEq, PartialOrd)]
enum SortKey {
    Int(i64),
    Float(f64),
    Text(String),
    Time(NaiveDateTime),
}

impl SortKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.partial_cmp(other).unwrap_or(std::cmp::Ordering::Equal)
    }
}

fn paginate(request: &Request, items: Vec<Value>) -> Result<Reply, ApiError> {
    let mut errors = ParamErrors::default();
    let page = int_param(request, &mut errors, "page", 1, None);
    let per_page = int_param(request, &mut errors, "per_page", 10, Some(u64::from(crate::MAX_PER_PAGE)));
    errors.into_result()?;
    paginate_with(request, items, page, per_page)
}

/// One page of `items` with `X-WP-Total`, `X-WP-TotalPages` and the `Link` header WordPress builds:
/// the request's query (re-encoded, `page` replaced in place or appended) on the same URL. When it
/// sends pagination links they replace the `rel="https://api.w.org/"` link.
fn paginate_with(request: &Request, items: Vec<Value>, page: u64, per_page: u64) -> Result<Reply, ApiError> {
    let total = items.len() as u64;
    let pages = total.div_ceil(per_page);
    let fields = request.param("_fields");
    let body: Vec<Value> = items
        .into_iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .map(|item| match fields {
            Some(f) => filter_fields(&item, f),
            None => item,
        })
        .collect();
    let link_to = |target: u64| {
        let mut pairs: Vec<(String, String)> = request.query.clone();
        match pairs.iter_mut().find(|(k, _)| k == "page") {
            Some(p) => p.1 = target.to_string(),
            None => pairs.push(("page".into(), target.to_string())),
        }
        let query: Vec<String> =
            pairs.iter().map(|(k, v)| format!("{}={}", text::urlencode(k), text::urlencode(v))).collect();
        format!("<{}{}?{}>", request.base, request.path, query.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to((page - 1).min(pages.max(1)))));
    }
    if page < pages {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
    }
    let mut reply = Reply::ok(200, Value::Array(body));
    reply.headers.push(("x-wp-total", total.to_string()));
    reply.headers.push(("x-wp-totalpages", pages.to_string()));
    if !links.is_empty() {
        reply.api_link = false;
        reply.headers.push(("link", links.join(", ")));
    }
    Ok(reply)
}
