//! The WooCommerce sandbox: an in-memory store behind the `wc/v3` REST API that behaves like the
//! WooCommerce 9.9.5 store captured in `tests/fixtures/woocommerce` (see `tests/fixtures_replay.rs`,
//! which replays every capture against it).
//!
//! What it reproduces, because a connector must cope with it:
//! - pagination headers and `Link` URLs that repeat the query (query-string keys included), a page
//!   past the end as `200 []`, and an unstable default `orderby=date` order: products created in the
//!   same second come back in a different order on every request, so paging by date skips and
//!   repeats products; only `orderby=id` (or `include`) is stable;
//! - `date_modified_gmt` bumped by every write (also `{}`, same values, meta-only, trash, and a
//!   variation's parent). The sandbox clock makes each write strictly later than the product's
//!   previous `date_modified_gmt` (one virtual second is added when needed), so a never-clobber
//!   check that compares timestamps sees every edit even when tests write within one second;
//! - `modified_after` read in the site's time zone unless `dates_are_gmt=true` or the value has a
//!   `Z`/offset;
//! - stored values that differ from sent ones (entities, `wpautop` on read, prices as strings);
//! - list and meta writes as WooCommerce applies them: `tags`, `categories` and `images` replace the
//!   product's list, a `meta_data` entry with a null value deletes the key, and an image's `alt` is
//!   the media attachment's (every product using the image shows it) and is written only when
//!   non-empty: an empty `alt` never clears one;
//! - the auth rules: Basic and query-string keys only over HTTPS, verified OAuth 1.0a over plain
//!   HTTP, read-only keys, application passwords, with WooCommerce's exact 401 bodies;
//! - batch limits and per-item errors, and injectable faults (latency, 5xx, 429 with `Retry-After`,
//!   meta keys silently dropped, a human editing a product between a read and a write).

mod catalogue;
mod fixture_store;
mod http;
mod oauth1;
mod store;
mod text;
mod tls;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::NaiveDateTime;
use serde_json::{Map, Value};

pub use catalogue::generate_catalogue;
pub use chrono_tz::Tz;
pub use oauth1::{Method as OAuthSignatureMethod, base_string as oauth_base_string, sign as oauth_sign};

use store::{Catalogue, Context};

/// The read/write key every sandbox accepts unless told otherwise.
pub const CONSUMER_KEY: &str = "ck_sandbox_read_write_0000000000000000000000";
/// Secret of [`CONSUMER_KEY`].
pub const CONSUMER_SECRET: &str = "cs_sandbox_read_write_0000000000000000000000";
/// A read-only key.
pub const READ_ONLY_CONSUMER_KEY: &str = "ck_sandbox_read_only_00000000000000000000000";
/// Secret of [`READ_ONLY_CONSUMER_KEY`].
pub const READ_ONLY_CONSUMER_SECRET: &str = "cs_sandbox_read_only_00000000000000000000000";
/// The WordPress user that owns the keys and the application password.
pub const APP_USER: &str = "admin";
/// An application password of [`APP_USER`].
pub const APP_PASSWORD: &str = "abcd EFGH ijkl MNOP qrst UVWX";

/// What a REST key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    ReadWrite,
}

/// Faults injected into API requests (not into the inspection methods). Rates are shares of
/// requests in `0.0..=1.0`.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added to every request.
    pub latency: Duration,
    /// Share of requests answered `503` before doing anything.
    pub server_error_rate: f64,
    /// Share of requests answered `429` with `Retry-After` before doing anything.
    pub rate_limit_rate: f64,
    /// The `Retry-After` seconds sent with a 429.
    pub retry_after_secs: u64,
    /// Meta keys whose writes are answered 200 but not stored, like stores whose SEO plugin filters
    /// its own keys (e.g. `_yoast_wpseo_metadesc`).
    pub dropped_meta_keys: HashSet<String>,
    /// A batch limit below WooCommerce's 100, as a store lowers it with the
    /// `woocommerce_rest_batch_items_limit` filter: larger batches are a 413 that applies nothing.
    pub batch_limit: Option<usize>,
}

/// Request counters by route kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `GET products` and `GET products/{id}/variations`.
    pub list: u64,
    /// `GET products/{id}` and `GET products/{id}/variations/{vid}`.
    pub get: u64,
    /// `PUT`/`PATCH`/`POST products/{id}` and variation updates.
    pub put: u64,
    /// `POST products/batch`.
    pub batch: u64,
    /// `POST products` and variation creates.
    pub create: u64,
    /// `DELETE products/{id}`.
    pub delete: u64,
    /// Everything else that reached a route (categories, tags, system status, index).
    pub other: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Requests answered 429 or 503 by [`Faults`].
    pub rejected_by_faults: u64,
}

/// Who changed a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A request through the API (the connector under test).
    Api,
    /// [`WooSandbox::edit_as_human`] or the edit hook: someone in wp-admin.
    Human,
}

/// One write the sandbox applied to a product or variation.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedWrite {
    pub product_id: u64,
    /// The body fields as sent (for a batch item: the item without `id`).
    pub fields: Map<String, Value>,
    /// The `date_modified_gmt` the write produced.
    pub at: NaiveDateTime,
    pub by: Writer,
}

struct PendingEdit {
    reads_left: u64,
    product_id: u64,
    changes: Map<String, Value>,
}

struct ApiKey {
    key: String,
    secret: String,
    permission: Permission,
}

struct Inner {
    catalogue: Catalogue,
    keys: Vec<ApiKey>,
    app_passwords: Vec<(String, String)>,
    used_nonces: HashSet<(String, String)>,
    /// `None`: the system clock. `Some(t)`: a pinned virtual time (GMT).
    pinned_now: Option<NaiveDateTime>,
    faults: Faults,
    stats: Stats,
    writes: Vec<AppliedWrite>,
    pending_edit: Option<PendingEdit>,
    /// Mixed into the per-request shuffle of equal sort keys.
    order_seed: u64,
    requests: u64,
}

/// A WooCommerce store in memory. Cloning shares the same store; start it on HTTP, HTTPS or both.
#[derive(Clone)]
pub struct WooSandbox {
    inner: Arc<Mutex<Inner>>,
    tls: Arc<tls::Identity>,
}

impl Default for WooSandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl WooSandbox {
    /// An empty store (site time zone Europe/Berlin) accepting [`CONSUMER_KEY`] (read/write),
    /// [`READ_ONLY_CONSUMER_KEY`] and the application password [`APP_USER`]:[`APP_PASSWORD`].
    pub fn new() -> Self {
        let inner = Inner {
            catalogue: Catalogue::new(chrono_tz::Europe::Berlin),
            keys: vec![
                ApiKey { key: CONSUMER_KEY.into(), secret: CONSUMER_SECRET.into(), permission: Permission::ReadWrite },
                ApiKey {
                    key: READ_ONLY_CONSUMER_KEY.into(),
                    secret: READ_ONLY_CONSUMER_SECRET.into(),
                    permission: Permission::Read,
                },
            ],
            app_passwords: vec![(APP_USER.into(), APP_PASSWORD.into())],
            used_nonces: HashSet::new(),
            pinned_now: None,
            faults: Faults::default(),
            stats: Stats::default(),
            writes: Vec::new(),
            pending_edit: None,
            order_seed: 0x5eed,
            requests: 0,
        };
        Self { inner: Arc::new(Mutex::new(inner)), tls: Arc::new(tls::Identity::generate()) }
    }

    /// A store holding `products`, each a `POST products` body (categories may be given by name as
    /// `{"name": ..}` and are created). Products get ids from 10 upwards in order.
    pub fn with_products(products: impl IntoIterator<Item = Value>) -> Self {
        let sandbox = Self::new();
        for body in products {
            sandbox.seed_product(&body).expect("a seed product body is valid");
        }
        sandbox
    }

    /// The state of the captured fixture store after all captures: products 43–74 (variable 44
    /// with variations 45 and 46, Yoast meta on 47, draft 59, 74 in the trash, the captured
    /// updates applied), categories 16–17 and tags 18–19, with the captured timestamps.
    pub fn fixture_store() -> Self {
        let sandbox = Self::fixture_replay_start();
        fixture_store::build_final(&sandbox);
        sandbox
    }

    /// The state just before the first captured command (the replay test starts here): the first
    /// round's products 11–42 that `products_batch_delete_30` deletes, tags 18–19, no categories,
    /// the next post id 43 and the next term id 16.
    pub fn fixture_replay_start() -> Self {
        let sandbox = Self::new();
        fixture_store::build_start(&sandbox);
        sandbox
    }

    /// Adds one product from a `POST products` body; categories given by name are created.
    pub fn seed_product(&self, body: &Value) -> Result<u64, String> {
        let mut body = body.as_object().cloned().ok_or("a product body is a JSON object")?;
        let mut inner = self.lock();
        let now = inner.now();
        if let Some(Value::Array(categories)) = body.get_mut("categories") {
            for c in categories.iter_mut() {
                if c.get("id").is_none()
                    && let Some(name) = c.get("name").and_then(Value::as_str).map(str::to_owned)
                {
                    let normalized = text::normalize_name(&name);
                    let id = match inner.catalogue.categories.values().find(|t| t.name == normalized) {
                        Some(t) => t.id,
                        None => {
                            let mut new = Map::new();
                            new.insert("name".into(), Value::String(name));
                            inner.catalogue.create_category(&new).map_err(|e| e.message)?
                        }
                    };
                    *c = serde_json::json!({"id": id});
                }
            }
        }
        let variations = body.remove("variations");
        let id = inner.catalogue.write(None, None, &body, now).map_err(|e| e.message)?;
        inner.catalogue.settle_slug(id);
        if let Some(Value::Array(variations)) = variations {
            for v in variations {
                let v = v.as_object().cloned().unwrap_or_default();
                inner.catalogue.write(None, Some(id), &v, now).map_err(|e| e.message)?;
            }
        }
        Ok(id)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a REST key.
    pub fn add_key(&self, key: &str, secret: &str, permission: Permission) {
        self.lock().keys.push(ApiKey { key: key.into(), secret: secret.into(), permission });
    }

    /// Adds an application password for `user`.
    pub fn add_application_password(&self, user: &str, password: &str) {
        self.lock().app_passwords.push((user.into(), password.into()));
    }

    /// The site's time zone (dates without `_gmt`, and `modified_after` without a zone, use it).
    pub fn set_timezone(&self, timezone: Tz) {
        self.lock().catalogue.timezone = timezone;
    }

    /// Pins the sandbox clock at `gmt` (whole seconds). Writes still move each product's
    /// `date_modified_gmt` forward by at least one second.
    pub fn set_time(&self, gmt: NaiveDateTime) {
        self.lock().pinned_now = Some(gmt);
    }

    /// Moves a pinned clock forward (pins it at the current time first if it was not pinned).
    pub fn advance(&self, by: Duration) {
        let mut inner = self.lock();
        let now = inner.now();
        inner.pinned_now = Some(now + chrono::Duration::from_std(by).unwrap_or_default());
    }

    /// Back to the system clock.
    pub fn use_system_clock(&self) {
        self.lock().pinned_now = None;
    }

    /// The sandbox's current time (GMT, whole seconds).
    pub fn now(&self) -> NaiveDateTime {
        self.lock().now()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        let mut inner = self.lock();
        inner.catalogue.dropped_meta_keys = faults.dropped_meta_keys.clone();
        inner.faults = faults;
    }

    /// Seeds the per-request shuffle of products that tie on the sort key (default `orderby=date`).
    pub fn set_order_seed(&self, seed: u64) {
        self.lock().order_seed = seed;
    }

    /// Edits a product the way someone in wp-admin would: applies `changes` (a `PUT` body) and bumps
    /// `date_modified_gmt`. Recorded in [`writes`](Self::writes) with [`Writer::Human`].
    pub fn edit_as_human(&self, product_id: u64, changes: Value) -> Result<(), String> {
        let changes = changes.as_object().cloned().ok_or("changes are a JSON object")?;
        self.lock().human_edit(product_id, &changes)
    }

    /// Arms a concurrent edit: after `reads` more read requests (lists or single GETs), the next
    /// write request first lets a human apply `changes` to `product_id`, then proceeds. This puts an
    /// edit exactly between a connector's re-read and its write.
    pub fn edit_before_next_write_after_reads(&self, reads: u64, product_id: u64, changes: Value) {
        let changes = changes.as_object().cloned().unwrap_or_default();
        self.lock().pending_edit = Some(PendingEdit { reads_left: reads, product_id, changes });
    }

    /// Whether an armed concurrent edit has not happened yet.
    pub fn edit_pending(&self) -> bool {
        self.lock().pending_edit.is_some()
    }

    /// A product or variation as `GET products/{id}` serves it (`view` context, host `base_url`).
    pub fn product(&self, id: u64) -> Option<Value> {
        let inner = self.lock();
        let p = inner.catalogue.products.get(&id)?;
        Some(inner.catalogue.serve_product(p, Context::View, "https://sandbox.invalid"))
    }

    /// A product or variation as stored (`edit` context: descriptions without `wpautop`).
    pub fn product_raw(&self, id: u64) -> Option<Value> {
        let inner = self.lock();
        let p = inner.catalogue.products.get(&id)?;
        Some(inner.catalogue.serve_product(p, Context::Edit, "https://sandbox.invalid"))
    }

    /// The ids of all products and variations, trashed ones included.
    pub fn product_ids(&self) -> Vec<u64> {
        self.lock().catalogue.products.keys().copied().collect()
    }

    /// Request counters.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Every write applied so far, in order.
    pub fn writes(&self) -> Vec<AppliedWrite> {
        self.lock().writes.clone()
    }

    /// Clears counters, recorded writes, used OAuth nonces and any armed edit; the catalogue stays.
    pub fn reset_inspection(&self) {
        let mut inner = self.lock();
        inner.stats = Stats::default();
        inner.writes.clear();
        inner.used_nonces.clear();
        inner.pending_edit = None;
    }

    /// The self-signed certificate the HTTPS listener presents (PEM), for a client to trust.
    pub fn certificate_pem(&self) -> String {
        self.tls.certificate_pem.clone()
    }

    /// The router (plain), for embedding. Requests through it count as plain HTTP.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone(), http::Scheme::Http)
    }

    /// Serves plain HTTP on `addr` (port 0 picks one) in a background task; returns the address.
    /// Over plain HTTP only OAuth 1.0a-signed requests authenticate, as on a real store.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = http::router(self.clone(), http::Scheme::Http);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "woocommerce sandbox (http) stopped");
            }
        });
        Ok(bound)
    }

    /// Serves HTTPS on `addr` with the self-signed certificate of [`certificate_pem`]
    /// (names `localhost` and `127.0.0.1`); returns the address.
    ///
    /// [`certificate_pem`]: Self::certificate_pem
    pub async fn start_https(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let router = http::router(self.clone(), http::Scheme::Https);
        tls::serve(addr, &self.tls, router).await
    }
}

impl Inner {
    fn now(&self) -> NaiveDateTime {
        self.pinned_now.unwrap_or_else(|| {
            let now = chrono::Utc::now().naive_utc();
            now - chrono::Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&now)))
        })
    }

    fn human_edit(&mut self, product_id: u64, changes: &Map<String, Value>) -> Result<(), String> {
        if !self.catalogue.products.contains_key(&product_id) {
            return Err(format!("product {product_id} does not exist"));
        }
        let now = self.now();
        self.catalogue.write(Some(product_id), None, changes, now).map_err(|e| e.message)?;
        let at = self.catalogue.products[&product_id].modified;
        self.writes.push(AppliedWrite { product_id, fields: changes.clone(), at, by: Writer::Human });
        Ok(())
    }

    /// Counts a read towards an armed edit.
    fn note_read(&mut self) {
        if let Some(edit) = self.pending_edit.as_mut() {
            edit.reads_left = edit.reads_left.saturating_sub(1);
        }
    }

    /// Runs an armed edit whose reads are used up; called before a write request is applied.
    fn before_write(&mut self) {
        if self.pending_edit.as_ref().is_some_and(|e| e.reads_left == 0)
            && let Some(edit) = self.pending_edit.take()
            && let Err(e) = self.human_edit(edit.product_id, &edit.changes)
        {
            tracing::warn!(error = %e, "armed concurrent edit could not be applied");
        }
    }
}
