//! The WooCommerce connector: products and variations over the `wc/v3` REST API.
//!
//! - Auth: consumer key and secret as HTTP Basic over HTTPS, as query parameters when a server drops
//!   the `Authorization` header, and OAuth 1.0a one-legged signatures over plain HTTP (the only thing
//!   WooCommerce accepts there). URLs carry keys in the last two cases, and WooCommerce echoes them in
//!   `Link`: no URL is ever put in a log line or an error.
//! - Listing: `orderby=id&order=asc` (the default date order skips and repeats products that share a
//!   creation second), `per_page` up to 100, stopping on an empty page or at `X-WP-TotalPages`;
//!   incremental pulls with `modified_after` and `dates_are_gmt=true` (without it the time is read in
//!   the site's zone).
//! - Records: text fields decoded from WordPress's entity encoding, `tags` and `categories` by name,
//!   `images[].alt` as `[{id, alt}]`, `seo_title`/`seo_description` mapped to the store's SEO plugin
//!   meta keys (Yoast or Rank Math, detected from the store's own `meta_data` or set in config), and
//!   every other meta entry as `meta.<key>`. The version is `date_modified_gmt`.
//! - Writes: `products/batch` in chunks of at most 100 with per-item outcomes (variations: one
//!   `PUT products/{parent}/variations/{id}` each); lists WooCommerce replaces wholesale are merged
//!   with the product's current list, never truncated; alt text goes only to that product's own
//!   image ids.
//! - Reverts ([`WriteMode::Restore`]): tag and category lists become exactly the previous ones, and
//!   meta entries (SEO fields included) that were absent are deleted (a meta value of null, which
//!   WooCommerce's `WC_Data::save_meta_data` deletes). An empty `alt` is ignored by the products API
//!   (alt text lives on the media attachment), so alt text our write added cannot be cleared with
//!   WooCommerce keys: [`not_restored_reason`] says so, and the engine reports a partial revert.
//! - Fetch by id: `include=` in chunks of 100 with `status=any`, then the ids not found once more
//!   with `status=trash` (WordPress's `any` leaves the trash out).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use enrichd_connector::{
    Change, Connector, ConnectorError, Page, PageRequest, Record, RecordLink, Version, WriteMode, WriteOutcome,
    WriteResult, WriteSubmission, http,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

/// Most items one batch request may carry (more is a 413 that applies nothing).
pub const MAX_BATCH: usize = 100;
/// Most records one listing page may hold (WordPress refuses more with a 400).
pub const MAX_PER_PAGE: u32 = 100;
/// Tries per read (reads are idempotent): enough that a store answering 30% of requests with 5xx
/// or 429 still lists a whole catalogue, waiting at most about ten seconds per request.
const READ_ATTEMPTS: u32 = 6;

/// How requests authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// Basic over HTTPS, OAuth 1.0a over plain HTTP.
    #[default]
    Auto,
    /// HTTP Basic with the consumer key and secret (HTTPS only).
    Basic,
    /// `consumer_key` and `consumer_secret` query parameters (HTTPS only), for servers that drop the
    /// `Authorization` header.
    Query,
    /// OAuth 1.0a one-legged, HMAC-SHA1 (what plain-HTTP staging sites need).
    OAuth1,
}

/// Which SEO plugin's meta keys hold the SEO title and meta description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seo {
    /// Detected from the keys the store's products already carry.
    #[default]
    Auto,
    Yoast,
    RankMath,
    /// No SEO fields.
    None,
}

impl Seo {
    /// `(title key, description key)`.
    fn keys(self) -> Option<(&'static str, &'static str)> {
        match self {
            Seo::Yoast => Some(("_yoast_wpseo_title", "_yoast_wpseo_metadesc")),
            Seo::RankMath => Some(("rank_math_title", "rank_math_description")),
            Seo::Auto | Seo::None => None,
        }
    }
}

/// Where the REST API lives under the site's root URL.
const API_PATH: &str = "/wp-json/wc/v3";

/// A connection's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The site's root URL (`https://shop.example.com`); the API is under `/wp-json/wc/v3`.
    pub base_url: String,
    pub consumer_key: SecretString,
    pub consumer_secret: SecretString,
    pub auth: Auth,
    pub seo: Seo,
    pub timeout: Duration,
    /// A PEM certificate to trust besides the system roots (a staging site's own CA).
    pub ca_cert_pem: Option<String>,
    /// `status` filter for listings (`publish`, `draft`, ...); `None` lists every status but trash.
    pub status: Option<String>,
}

/// A change and the `update` entry that carries it.
type Update<'a> = (&'a Change, Map<String, Value>);

/// The WooCommerce connector.
pub struct WooCommerce {
    api: String,
    key: SecretString,
    secret: SecretString,
    auth: Auth,
    seo_setting: Seo,
    seo: OnceCell<Seo>,
    status: Option<String>,
    http: reqwest::Client,
    /// Items per batch: 100, or less once the store has said (with a 413) that it takes fewer.
    batch_limit: AtomicUsize,
}

impl WooCommerce {
    pub fn new(options: Options) -> Result<WooCommerce, ConnectorError> {
        let base = options.base_url.trim_end_matches('/');
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            return Err(ConnectorError::permanent(format!(
                "woocommerce: base_url must start with https:// or http:// (got {base:?})"
            )));
        }
        let auth = match options.auth {
            Auth::Auto if https => Auth::Basic,
            Auth::Auto => Auth::OAuth1,
            Auth::Basic | Auth::Query if !https => {
                return Err(ConnectorError::permanent(
                    "woocommerce: over plain http:// WooCommerce accepts only OAuth 1.0a signatures; set auth = \"oauth1\" (or \"auto\"), or use https://",
                ));
            }
            other => other,
        };
        let mut builder = http::builder(options.timeout);
        if let Some(pem) = &options.ca_cert_pem {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
                ConnectorError::permanent(format!("woocommerce: ca_cert is not a PEM certificate: {e}"))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| {
            ConnectorError::permanent(format!("woocommerce: building the HTTP client failed: {}", e.without_url()))
        })?;
        Ok(WooCommerce {
            api: format!("{base}{API_PATH}"),
            key: options.consumer_key,
            secret: options.consumer_secret,
            auth,
            seo_setting: options.seo,
            seo: OnceCell::new(),
            status: options.status,
            http,
            batch_limit: AtomicUsize::new(MAX_BATCH),
        })
    }

    /// The SEO plugin in use (detected once per process when set to `auto`).
    pub async fn seo(&self) -> Result<Seo, ConnectorError> {
        if self.seo_setting != Seo::Auto {
            return Ok(self.seo_setting);
        }
        self.seo.get_or_try_init(|| self.detect_seo()).await.copied()
    }

    /// Looks at the meta keys of up to 100 products for Yoast's or Rank Math's.
    async fn detect_seo(&self) -> Result<Seo, ConnectorError> {
        let query = [
            ("per_page", "100".to_owned()),
            ("orderby", "id".into()),
            ("order", "asc".into()),
            ("_fields", "id,meta_data".into()),
        ];
        let (products, _) =
            self.get_json("woocommerce: GET products (SEO plugin detection)", "products", &query).await?;
        let mut found = Seo::None;
        for product in products.as_array().into_iter().flatten() {
            for meta in product.get("meta_data").and_then(Value::as_array).into_iter().flatten() {
                match meta.get("key").and_then(Value::as_str).unwrap_or_default() {
                    k if k.starts_with("_yoast_wpseo_") => return Ok(Seo::Yoast),
                    k if k.starts_with("rank_math_") => found = Seo::RankMath,
                    _ => {}
                }
            }
        }
        tracing::info!(seo = ?found, "woocommerce: SEO plugin detected from product meta");
        Ok(found)
    }

    /// A request to `path` (under `wc/v3`) with `query`, authenticated.
    fn request(&self, method: Method, path: &str, query: &[(&str, String)]) -> RequestBuilder {
        let url = format!("{}/{path}", self.api);
        let key = self.key.expose_secret();
        let secret = self.secret.expose_secret();
        match self.auth {
            Auth::Basic | Auth::Auto => self.http.request(method, url).query(query).basic_auth(key, Some(secret)),
            Auth::Query => {
                self.http.request(method, url).query(query).query(&[("consumer_key", key), ("consumer_secret", secret)])
            }
            Auth::OAuth1 => {
                let signed = oauth1_url(method.as_str(), &url, query, key, secret, None, None);
                self.http.request(method, signed)
            }
        }
    }

    /// GETs JSON, retrying transient failures (reads are idempotent).
    async fn get_json(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(Value, HeaderMap), ConnectorError> {
        http::with_retries(READ_ATTEMPTS, Duration::from_millis(300), || async {
            let response = http::send(self.request(Method::GET, path, query), what).await?;
            let headers = response.headers().clone();
            let body: Value = http::json(response, what).await?;
            Ok((body, headers))
        })
        .await
    }

    async fn fields_of(&self, product: &Value) -> Result<Record, ConnectorError> {
        let seo = self.seo().await?;
        record_from(product, seo)
    }

    async fn list_products(&self, request: &PageRequest) -> Result<Page, ConnectorError> {
        let page: u64 = parse_cursor(request.cursor.as_deref())?;
        let per_page = request.per_page.clamp(1, MAX_PER_PAGE);
        let mut query = vec![
            ("page", page.to_string()),
            ("per_page", per_page.to_string()),
            ("orderby", "id".into()),
            ("order", "asc".into()),
        ];
        if let Some(status) = &self.status {
            query.push(("status", status.clone()));
        }
        if let Some(after) = &request.modified_after {
            query.push(("modified_after", gmt_param(after)?));
            query.push(("dates_are_gmt", "true".into()));
        }
        let what = format!("woocommerce: GET products page {page}");
        let (body, headers) = self.get_json(&what, "products", &query).await?;
        let products = body.as_array().ok_or_else(|| malformed(&what, "a list of products"))?;
        let mut records = Vec::with_capacity(products.len());
        for product in products {
            records.push(self.fields_of(product).await?);
        }
        // Without `X-WP-TotalPages` (a proxy stripped it) a full page may have a successor.
        let full = records.len() >= per_page as usize;
        let last = records.is_empty() || header_u64(&headers, "X-WP-TotalPages").map_or(!full, |p| page >= p);
        Ok(Page {
            records,
            next: (!last).then(|| (page + 1).to_string()),
            total: header_u64(&headers, "X-WP-Total"),
            resume: None,
        })
    }

    /// Variations, one variable product at a time. The cursor is `P:I:V`: page `P` of variable
    /// products (ids only), the `I`th of them, its variations page `V`.
    async fn list_variations(&self, request: &PageRequest) -> Result<Page, ConnectorError> {
        let (mut parent_page, mut index, mut var_page) = parse_variation_cursor(request.cursor.as_deref())?;
        let per_page = request.per_page.clamp(1, MAX_PER_PAGE);
        loop {
            let mut query = vec![
                ("page", parent_page.to_string()),
                ("per_page", "100".to_owned()),
                ("orderby", "id".into()),
                ("order", "asc".into()),
                ("type", "variable".into()),
                ("_fields", "id".into()),
            ];
            if let Some(status) = &self.status {
                query.push(("status", status.clone()));
            }
            let what = format!("woocommerce: GET variable products page {parent_page}");
            let (body, headers) = self.get_json(&what, "products", &query).await?;
            let parents: Vec<u64> = body
                .as_array()
                .ok_or_else(|| malformed(&what, "a list of products"))?
                .iter()
                .filter_map(|p| p.get("id").and_then(Value::as_u64))
                .collect();
            let pages = header_u64(&headers, "X-WP-TotalPages").unwrap_or(parent_page);
            let Some(&parent) = parents.get(index) else {
                if parents.is_empty() || parent_page >= pages {
                    return Ok(Page { records: Vec::new(), next: None, total: None, resume: None });
                }
                (parent_page, index, var_page) = (parent_page + 1, 0, 1);
                continue;
            };
            let mut query = vec![
                ("page", var_page.to_string()),
                ("per_page", per_page.to_string()),
                ("orderby", "id".into()),
                ("order", "asc".into()),
            ];
            if let Some(after) = &request.modified_after {
                query.push(("modified_after", gmt_param(after)?));
                query.push(("dates_are_gmt", "true".into()));
            }
            let what = format!("woocommerce: GET variations of product {parent} page {var_page}");
            let (body, headers) = self.get_json(&what, &format!("products/{parent}/variations"), &query).await?;
            let variations = body.as_array().ok_or_else(|| malformed(&what, "a list of variations"))?;
            let mut records = Vec::with_capacity(variations.len());
            for v in variations {
                records.push(self.fields_of(&with_parent(v, parent)).await?);
            }
            let var_pages = header_u64(&headers, "X-WP-TotalPages").unwrap_or(var_page);
            let next = if !variations.is_empty() && var_page < var_pages {
                Some(format!("{parent_page}:{index}:{}", var_page + 1))
            } else if index + 1 < parents.len() {
                Some(format!("{parent_page}:{}:1", index + 1))
            } else if parent_page < pages {
                Some(format!("{}:0:1", parent_page + 1))
            } else {
                None
            };
            return Ok(Page { records, next, total: None, resume: None });
        }
    }

    async fn fetch_products(&self, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        let mut wanted: Vec<u64> = ids.iter().filter_map(|id| id.parse::<u64>().ok()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found: Vec<Value> = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(MAX_PER_PAGE as usize) {
            found.extend(self.products_by_id(chunk, "any").await?);
        }
        // `status=any` leaves out the trash, as WordPress's `any` does. A trashed product is still a
        // product: it must be seen (and its version compared), not mistaken for one that is gone.
        let seen: BTreeSet<u64> = found.iter().filter_map(|p| p.get("id").and_then(Value::as_u64)).collect();
        let missing: Vec<u64> = wanted.into_iter().filter(|id| !seen.contains(id)).collect();
        for chunk in missing.chunks(MAX_PER_PAGE as usize) {
            found.extend(self.products_by_id(chunk, "trash").await?);
        }
        let mut out = Vec::with_capacity(found.len());
        for product in &found {
            out.push(self.fields_of(product).await?);
        }
        Ok(out)
    }

    /// The products among `ids` (at most [`MAX_PER_PAGE`]) with `status`.
    async fn products_by_id(&self, ids: &[u64], status: &str) -> Result<Vec<Value>, ConnectorError> {
        let query = [
            ("include", ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
            ("per_page", MAX_PER_PAGE.to_string()),
            ("orderby", "id".into()),
            ("order", "asc".into()),
            ("status", status.to_owned()),
        ];
        let what = format!("woocommerce: GET {} products by id (status {status})", ids.len());
        let (body, _) = self.get_json(&what, "products", &query).await?;
        match body {
            Value::Array(products) => Ok(products),
            _ => Err(malformed(&what, "a list of products")),
        }
    }

    async fn fetch_variations(&self, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        let mut by_parent: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for id in ids {
            if let Some((parent, variation)) = split_variation_id(id) {
                by_parent.entry(parent).or_default().push(variation);
            }
        }
        let mut out = Vec::new();
        for (parent, variations) in by_parent {
            for chunk in variations.chunks(MAX_PER_PAGE as usize) {
                let query = [
                    ("include", chunk.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
                    ("per_page", MAX_PER_PAGE.to_string()),
                ];
                let what = format!("woocommerce: GET {} variations of product {parent}", chunk.len());
                let (body, _) = match self.get_json(&what, &format!("products/{parent}/variations"), &query).await {
                    Ok(found) => found,
                    // The parent is gone: so are its variations.
                    Err(e) if e.status == Some(404) => continue,
                    Err(e) => return Err(e),
                };
                for v in body.as_array().ok_or_else(|| malformed(&what, "a list of variations"))? {
                    out.push(self.fields_of(&with_parent(v, parent)).await?);
                }
            }
        }
        Ok(out)
    }

    /// One batch request: `changes` all for `path` (`products/batch` or a parent's variations).
    async fn write_batch(
        &self,
        path: &str,
        changes: &[Update<'_>],
        outcome_id: impl Fn(&Value) -> Option<String>,
    ) -> Result<Vec<WriteOutcome>, ConnectorError> {
        let what = format!("woocommerce: POST {path} updating {}", changes.len());
        let body = json!({ "update": changes.iter().map(|(_, body)| Value::Object(body.clone())).collect::<Vec<_>>() });
        let response = http::send(self.request(Method::POST, path, &[]).json(&body), &what).await?;
        let answer: Value = http::json(response, &what).await?;
        let updates =
            answer.get("update").and_then(Value::as_array).ok_or_else(|| malformed(&what, "an `update` list"))?;
        if updates.len() != changes.len() {
            return Err(ConnectorError::transient(format!(
                "{what}: answered {} outcomes for {} changes",
                updates.len(),
                changes.len()
            )));
        }
        // One entry per item, in request order.
        let mut outcomes = Vec::with_capacity(changes.len());
        for ((change, _), entry) in changes.iter().zip(updates) {
            let result = match entry.get("error") {
                Some(error) => WriteResult::Failed(item_error(&change.id, error)),
                None => {
                    if outcome_id(entry).is_some_and(|id| id != change.id) {
                        return Err(ConnectorError::transient(format!(
                            "{what}: outcomes came back out of order (expected record {})",
                            change.id
                        )));
                    }
                    let version = entry.get("date_modified_gmt").and_then(Value::as_str).map(|v| Version(v.to_owned()));
                    WriteResult::Written { version }
                }
            };
            outcomes.push(WriteOutcome { id: change.id.clone(), result });
        }
        Ok(outcomes)
    }

    async fn write_products(&self, changes: &[Change]) -> Result<Vec<WriteOutcome>, ConnectorError> {
        let seo = self.seo().await?;
        let mut outcomes = Vec::new();
        let mut bodies = Vec::new();
        for change in changes {
            let Ok(id) = change.id.parse::<u64>() else {
                outcomes.push(failed(&change.id, format!("record {}: not a WooCommerce product id", change.id)));
                continue;
            };
            match update_body(id, change, seo) {
                Ok(body) => bodies.push((change, body)),
                Err(message) => outcomes.push(failed(&change.id, message)),
            }
        }
        // A store can lower WooCommerce's limit of 100 (`woocommerce_rest_batch_items_limit`): a
        // larger batch is a 413 that applies nothing, so it is safe to send again in smaller pieces.
        let mut start = 0;
        while start < bodies.len() {
            let limit = self.batch_limit.load(Ordering::Relaxed).max(1);
            let chunk = &bodies[start..(start + limit).min(bodies.len())];
            let done = self
                .write_batch("products/batch", chunk, |e| e.get("id").and_then(Value::as_u64).map(|i| i.to_string()))
                .await;
            match done {
                Err(e) if is_too_large(&e) && chunk.len() > 1 => {
                    let lower = batch_limit_in(&e.message).unwrap_or(chunk.len() / 2).clamp(1, chunk.len() - 1);
                    self.batch_limit.fetch_min(lower, Ordering::Relaxed);
                    tracing::warn!(
                        limit = lower,
                        "woocommerce: the store accepts fewer than {} items per batch; sending smaller batches",
                        chunk.len()
                    );
                    continue;
                }
                Ok(done) => outcomes.extend(done),
                Err(e) => {
                    if outcomes.is_empty() && chunk.len() == bodies.len() {
                        return Err(e);
                    }
                    outcomes.extend(
                        chunk
                            .iter()
                            .map(|(c, _)| WriteOutcome { id: c.id.clone(), result: WriteResult::Failed(e.clone()) }),
                    );
                }
            }
            start += chunk.len();
        }
        Ok(outcomes)
    }

    /// Variations are written one `PUT products/{parent}/variations/{id}` at a time: that is the
    /// variation write captured against a real store (it also bumps the parent's
    /// `date_modified_gmt`), and it gives each change its own outcome. An error that is not about the
    /// item (authentication, rate limit, 5xx, transport) ends the call: the changes not yet sent
    /// fail with it, and if none was sent the call as a whole fails.
    async fn write_variations(&self, changes: &[Change]) -> Result<Vec<WriteOutcome>, ConnectorError> {
        let seo = self.seo().await?;
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut updates: Vec<(u64, u64, Update<'_>)> = Vec::new();
        for change in changes {
            let Some((parent, id)) = split_variation_id(&change.id) else {
                outcomes.push(failed(&change.id, format!("record {}: not a variation id (PARENT/ID)", change.id)));
                continue;
            };
            match update_body(id, change, seo) {
                Ok(mut body) => {
                    body.remove("id");
                    updates.push((parent, id, (change, body)));
                }
                Err(message) => outcomes.push(failed(&change.id, message)),
            }
        }
        for (sent, (parent, id, (change, body))) in updates.iter().enumerate() {
            let what = format!("woocommerce: PUT variation {} (product {parent})", change.id);
            let path = format!("products/{parent}/variations/{id}");
            let answer = match http::send(self.request(Method::PUT, &path, &[]).json(body), &what).await {
                Ok(response) => http::json::<Value>(response, &what).await,
                Err(e) => Err(e),
            };
            let result = match answer {
                Ok(variation) => WriteResult::Written {
                    version: variation.get("date_modified_gmt").and_then(Value::as_str).map(|v| Version(v.to_owned())),
                },
                // The variation (or its parent) is not there: this item only.
                Err(e) if matches!(e.status, Some(400 | 404 | 409 | 410 | 422)) => WriteResult::Failed(e),
                Err(e) => {
                    if sent == 0 && outcomes.is_empty() {
                        return Err(e);
                    }
                    let rest = updates[sent..].iter().map(|(_, _, (c, _))| WriteOutcome {
                        id: c.id.clone(),
                        result: WriteResult::Failed(e.clone()),
                    });
                    outcomes.extend(rest);
                    return Ok(outcomes);
                }
            };
            outcomes.push(WriteOutcome { id: change.id.clone(), result });
        }
        Ok(outcomes)
    }
}

#[async_trait]
impl Connector for WooCommerce {
    fn kind(&self) -> &'static str {
        "woocommerce"
    }

    /// The product page (the record's `permalink`) and the product's edit page in wp-admin (a
    /// variation is edited on its parent's page).
    fn record_links(&self, _entity: &str, external_id: &str, fields: &Value) -> Vec<RecordLink> {
        let mut links = Vec::new();
        if let Some(link) =
            fields.get("permalink").and_then(Value::as_str).and_then(|p| RecordLink::new("Product page", p))
        {
            links.push(link);
        }
        let post = match split_variation_id(external_id) {
            Some((parent, _)) => Some(parent),
            None => external_id.parse::<u64>().ok(),
        };
        let site = self.api.strip_suffix(API_PATH).unwrap_or(&self.api);
        if let Some(link) = post.and_then(|id| {
            RecordLink::new("Edit in wp-admin", format!("{site}/wp-admin/post.php?post={id}&action=edit"))
        }) {
            links.push(link);
        }
        links
    }

    async fn check(&self, entity: &str) -> Result<(), ConnectorError> {
        check_entity(entity)?;
        let what = "woocommerce: GET products (check)";
        self.get_json(what, "products", &[("per_page", "1".into())]).await?;
        self.seo().await?;
        Ok(())
    }

    async fn list(&self, entity: &str, request: &PageRequest) -> Result<Page, ConnectorError> {
        match check_entity(entity)? {
            Entity::Product => self.list_products(request).await,
            Entity::Variation => self.list_variations(request).await,
        }
    }

    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        match check_entity(entity)? {
            Entity::Product => self.fetch_products(ids).await,
            Entity::Variation => self.fetch_variations(ids).await,
        }
    }

    fn max_write_batch(&self) -> usize {
        self.batch_limit.load(Ordering::Relaxed).clamp(1, MAX_BATCH)
    }

    async fn write(&self, entity: &str, changes: &[Change]) -> Result<WriteSubmission, ConnectorError> {
        let outcomes = match check_entity(entity)? {
            Entity::Product => self.write_products(changes).await?,
            Entity::Variation => self.write_variations(changes).await?,
        };
        Ok(WriteSubmission::Done(outcomes))
    }

    fn holds(&self, field: &str, written: &Value, stored: Option<&Value>) -> bool {
        holds(field, written, stored)
    }

    fn restored(&self, field: &str, previous: &Value, stored: Option<&Value>) -> bool {
        restored(field, previous, stored)
    }

    fn not_restored_reason(&self, field: &str, previous: &Value, stored: Option<&Value>) -> String {
        not_restored_reason(field, previous, stored)
    }

    fn not_held_reason(&self, field: &str, stored: Option<&Value>) -> String {
        let meta_key = field.strip_prefix("meta.");
        let seo = matches!(field, "seo_title" | "seo_description");
        match stored {
            None if meta_key.is_some() || seo => format!(
                "{field}: WooCommerce accepted the write but did not store the meta value (some stores and plugins \
                 silently drop writes to protected meta keys); it was absent when read back"
            ),
            // The record shows an SEO field whose meta entry is missing as "": the value was dropped.
            Some(Value::String(s)) if s.is_empty() && seo => format!(
                "{field}: WooCommerce accepted the write but did not store the meta value (some stores and plugins \
                 silently drop writes to protected meta keys); it was empty when read back"
            ),
            None => format!("{field} was absent when the product was read back after the write"),
            Some(v) => format!(
                "{field} held {} when read back after the write (a plugin or the store changed or refused it)",
                short(v)
            ),
        }
    }
}

#[derive(Clone, Copy)]
enum Entity {
    Product,
    Variation,
}

fn check_entity(entity: &str) -> Result<Entity, ConnectorError> {
    match entity {
        "product" | "products" => Ok(Entity::Product),
        "variation" | "variations" => Ok(Entity::Variation),
        other => Err(ConnectorError::permanent(format!(
            "woocommerce: unknown entity {other:?}; available: \"product\", \"variation\""
        ))),
    }
}

/// The record enrichd keeps of a product or variation.
pub fn record_from(product: &Value, seo: Seo) -> Result<Record, ConnectorError> {
    let id = product.get("id").and_then(Value::as_u64).ok_or_else(|| malformed("woocommerce: product", "an id"))?;
    let parent = product.get("parent_id").and_then(Value::as_u64).filter(|p| *p > 0);
    let is_variation = product.get("type").and_then(Value::as_str) == Some("variation") || parent.is_some();
    let record_id = match parent {
        Some(parent) if is_variation => format!("{parent}/{id}"),
        _ => id.to_string(),
    };
    let version = product
        .get("date_modified_gmt")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(&format!("woocommerce: product {record_id}"), "date_modified_gmt"))?;
    let mut fields = Map::new();
    let text = |key: &str| product.get(key).and_then(Value::as_str).map(decode_entities);
    for key in ["name", "sku", "type", "status", "regular_price", "price", "weight", "permalink"] {
        if let Some(v) = text(key) {
            fields.insert(key.into(), Value::String(v));
        }
    }
    for key in ["description", "short_description"] {
        if let Some(v) = product.get(key).and_then(Value::as_str) {
            fields.insert(key.into(), Value::String(v.to_owned()));
        }
    }
    if let Some(d) = product.get("dimensions").filter(|d| d.is_object()) {
        fields.insert("dimensions".into(), d.clone());
    }
    for key in ["categories", "tags"] {
        if let Some(terms) = product.get(key).and_then(Value::as_array) {
            let names: Vec<Value> = terms
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .map(|n| Value::String(decode_entities(n)))
                .collect();
            fields.insert(key.into(), Value::Array(names));
        }
    }
    if let Some(attributes) = product.get("attributes").and_then(Value::as_array) {
        let list: Vec<Value> = attributes
            .iter()
            .map(|a| {
                let mut out = Map::new();
                if let Some(n) = a.get("name").and_then(Value::as_str) {
                    out.insert("name".into(), Value::String(decode_entities(n)));
                }
                for k in ["options", "option"] {
                    if let Some(v) = a.get(k) {
                        out.insert(k.into(), v.clone());
                    }
                }
                Value::Object(out)
            })
            .collect();
        fields.insert("attributes".into(), Value::Array(list));
    }
    let images = product_images(product);
    let alts: Vec<Value> = images
        .iter()
        .filter_map(|i| {
            let id = i.get("id").and_then(Value::as_u64).filter(|id| *id > 0)?;
            Some(
                json!({"id": id, "alt": i.get("alt").and_then(Value::as_str).map(decode_entities).unwrap_or_default()}),
            )
        })
        .collect();
    let described: Vec<Value> =
        images.iter().map(|i| json!({"id": i.get("id"), "name": i.get("name"), "src": i.get("src")})).collect();
    fields.insert("images".into(), Value::Array(described));
    fields.insert("images[].alt".into(), Value::Array(alts));
    let mut meta_values: BTreeMap<String, Value> = BTreeMap::new();
    for meta in product.get("meta_data").and_then(Value::as_array).into_iter().flatten() {
        if let (Some(key), Some(value)) = (meta.get("key").and_then(Value::as_str), meta.get("value")) {
            meta_values.insert(key.to_owned(), value.clone());
        }
    }
    if let Some((title, description)) = seo.keys() {
        for (field, key) in [("seo_title", title), ("seo_description", description)] {
            fields.insert(field.into(), meta_values.get(key).cloned().unwrap_or(Value::String(String::new())));
        }
    }
    for (key, value) in meta_values {
        fields.insert(format!("meta.{key}"), value);
    }
    if let Some(parent) = parent.filter(|_| is_variation) {
        fields.insert("parent_id".into(), json!(parent));
    }
    Ok(Record {
        id: record_id,
        version: Version(version.to_owned()),
        fields,
        attachments: Vec::new(),
        native: Some(product.clone()),
    })
}

/// A product's images, or a variation's single image as a list.
fn product_images(product: &Value) -> Vec<Value> {
    if let Some(list) = product.get("images").and_then(Value::as_array) {
        return list.clone();
    }
    product.get("image").filter(|i| i.is_object()).cloned().into_iter().collect()
}

/// The `update` entry for one change, merged with the product as re-read (`change.native`).
fn update_body(id: u64, change: &Change, seo: Seo) -> Result<Map<String, Value>, String> {
    let native = change.native.as_ref();
    let mut body = Map::new();
    body.insert("id".into(), json!(id));
    let mut meta: Vec<Value> = Vec::new();
    for (field, value) in &change.fields {
        match field.as_str() {
            "name" | "description" | "short_description" | "sku" | "regular_price" | "weight" => {
                let Some(text) = value.as_str() else {
                    return Err(format!("record {}: field {field} must be text, got {}", change.id, short(value)));
                };
                body.insert(field.clone(), Value::String(text.to_owned()));
            }
            "tags" | "categories" => {
                let names = value
                    .as_array()
                    .ok_or_else(|| format!("record {}: field {field} must be a list of names", change.id))?;
                let current = native.and_then(|n| n.get(field)).and_then(Value::as_array).cloned().unwrap_or_default();
                if change.mode == WriteMode::Restore {
                    body.insert(field.clone(), Value::Array(restored_terms(&change.id, field, names, &current)?));
                    continue;
                }
                let mut merged: Vec<Value> =
                    current.iter().filter_map(|t| t.get("id").map(|id| json!({"id": id}))).collect();
                let known: Vec<String> = current
                    .iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str))
                    .map(|n| decode_entities(n).to_lowercase())
                    .collect();
                if field == "categories"
                    && names.iter().any(|n| !known.contains(&n.as_str().unwrap_or("").to_lowercase()))
                {
                    return Err(format!(
                        "record {}: new categories cannot be created by name through a product write; only tags can",
                        change.id
                    ));
                }
                let mut added: Vec<String> = Vec::new();
                for name in names {
                    let Some(name) = name.as_str().map(str::trim).filter(|n| !n.is_empty()) else {
                        continue;
                    };
                    let lower = name.to_lowercase();
                    if !known.contains(&lower) && !added.contains(&lower) {
                        merged.push(json!({"name": name}));
                        added.push(lower);
                    }
                }
                body.insert(field.clone(), Value::Array(merged));
            }
            "images[].alt" => {
                let wanted: BTreeMap<u64, String> = value
                    .as_array()
                    .ok_or_else(|| format!("record {}: field images[].alt must be a list of {{id, alt}}", change.id))?
                    .iter()
                    .filter_map(|e| Some((e.get("id")?.as_u64()?, e.get("alt")?.as_str()?.to_owned())))
                    .collect();
                let current = native.map(product_images).unwrap_or_default();
                let ours: Vec<u64> = current.iter().filter_map(|i| i.get("id").and_then(Value::as_u64)).collect();
                if let Some(stray) = wanted.keys().find(|id| !ours.contains(id)) {
                    return Err(format!(
                        "record {}: image {stray} is not one of this product's images; alt text goes only to its own",
                        change.id
                    ));
                }
                // The whole list, ids kept, so nothing is dropped; only our images' alt changes.
                let images: Vec<Value> = current
                    .iter()
                    .filter_map(|i| {
                        let id = i.get("id").and_then(Value::as_u64)?;
                        let alt = wanted
                            .get(&id)
                            .cloned()
                            .or_else(|| i.get("alt").and_then(Value::as_str).map(str::to_owned))
                            .unwrap_or_default();
                        Some(json!({"id": id, "alt": alt}))
                    })
                    .collect();
                if native.is_some_and(|n| n.get("image").is_some() && n.get("images").is_none()) {
                    body.insert("image".into(), images.into_iter().next().unwrap_or(Value::Null));
                } else {
                    body.insert("images".into(), Value::Array(images));
                }
            }
            "seo_title" | "seo_description" => {
                let Some((title, description)) = seo.keys() else {
                    return Err(format!(
                        "record {}: {field} needs an SEO plugin's meta keys, and none was detected on this store; set `seo` on the connection",
                        change.id
                    ));
                };
                let key = if field == "seo_title" { title } else { description };
                // The record shows an absent SEO entry as "": putting "absent" back deletes the entry
                // (WooCommerce deletes a meta entry whose value is set to null) instead of storing "".
                let absent = value.is_null() || value.as_str() == Some("");
                let value = if change.mode == WriteMode::Restore && absent { &Value::Null } else { value };
                meta.push(json!({"key": key, "value": value}));
            }
            other => match other.strip_prefix("meta.") {
                Some(key) if !key.is_empty() => meta.push(json!({"key": key, "value": value})),
                _ => return Err(format!("record {}: WooCommerce has no writable field {other:?}", change.id)),
            },
        }
    }
    if !meta.is_empty() {
        body.insert("meta_data".into(), Value::Array(meta));
    }
    Ok(body)
}

/// The term list that puts back exactly `names` (a revert): the ids of the product's current terms
/// with those names, so the terms our write added are dropped. A name the product no longer carries
/// is a tag given by name (WooCommerce finds or creates it); a category cannot be created that way.
fn restored_terms(id: &str, field: &str, names: &[Value], current: &[Value]) -> Result<Vec<Value>, String> {
    let mut out: Vec<Value> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for name in names.iter().filter_map(Value::as_str).map(str::trim).filter(|n| !n.is_empty()) {
        let lower = normalise_text(name).to_lowercase();
        if seen.contains(&lower) {
            continue;
        }
        seen.push(lower.clone());
        let term = current
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str).is_some_and(|n| normalise_text(n).to_lowercase() == lower));
        match term.and_then(|t| t.get("id")) {
            Some(term_id) => out.push(json!({"id": term_id})),
            None if field == "tags" => out.push(json!({"name": name})),
            None => {
                return Err(format!(
                    "record {id}: category {name:?} is no longer on the product and cannot be put back by name"
                ));
            }
        }
    }
    Ok(out)
}

/// Whether `stored` is exactly `previous` again after a revert: lists hold the same names (case and
/// entities aside) and nothing more; every image's alt text is the one it had; an SEO field that
/// was absent ("" or null) is absent or empty; other fields as [`holds`].
pub fn restored(field: &str, previous: &Value, stored: Option<&Value>) -> bool {
    match field {
        "tags" | "categories" => {
            let names = |v: Option<&Value>| -> BTreeSet<String> {
                v.and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|s| normalise_text(s).to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            };
            names(Some(previous)) == names(stored)
        }
        "images[].alt" => {
            let have = alts(stored);
            alts(Some(previous)).iter().all(|(id, alt)| have.get(id).is_none_or(|h| h == alt))
        }
        "seo_title" | "seo_description" if previous.is_null() || previous.as_str() == Some("") => {
            stored.is_none_or(|s| s.is_null() || s.as_str() == Some(""))
        }
        _ if previous.is_null() => stored.is_none_or(Value::is_null),
        _ => holds(field, previous, stored),
    }
}

/// `images[].alt` entries as image id → alt text (normalised).
fn alts(v: Option<&Value>) -> BTreeMap<u64, String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.get("id")?.as_u64()?, normalise_text(e.get("alt")?.as_str()?))))
        .collect()
}

/// Why `stored` is not `previous` again after a revert, naming what is left of our write.
pub fn not_restored_reason(field: &str, previous: &Value, stored: Option<&Value>) -> String {
    match field {
        "images[].alt" => {
            let have = alts(stored);
            let left: Vec<String> = alts(Some(previous))
                .into_iter()
                .filter_map(|(id, alt)| {
                    let now = have.get(&id).filter(|h| **h != alt)?;
                    Some(if alt.is_empty() {
                        format!("image {id} still has alt text {now:?} (it had none)")
                    } else {
                        format!("image {id} has alt text {now:?}, not {alt:?}")
                    })
                })
                .collect();
            let cleared = alts(Some(previous)).iter().any(|(id, alt)| alt.is_empty() && have.contains_key(id));
            let why = if cleared {
                "WooCommerce's products API ignores an empty alt, so alt text cannot be cleared through it; alt \
                 text belongs to the image's media attachment (shared by every product that uses the image), and \
                 clearing it needs the WordPress media endpoint (POST /wp-json/wp/v2/media/<id>) with an \
                 application password, which this connection does not have: clear it in wp-admin's media library"
            } else {
                "the store did not take the alt text back (a plugin or a person changed it)"
            };
            format!("images[].alt: {}; {why}", left.join(", "))
        }
        "tags" | "categories" => {
            let names = |v: Option<&Value>| -> Vec<String> {
                v.and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(normalise_text)
                    .collect()
            };
            let before: Vec<String> = names(Some(previous)).iter().map(|n| n.to_lowercase()).collect();
            let extra: Vec<String> =
                names(stored).into_iter().filter(|n| !before.contains(&n.to_lowercase())).collect();
            let gone: Vec<String> = names(Some(previous))
                .into_iter()
                .filter(|n| !names(stored).iter().any(|s| s.to_lowercase() == n.to_lowercase()))
                .collect();
            format!(
                "{field}: read back after the revert as {}{}{}",
                short(stored.unwrap_or(&Value::Null)),
                if extra.is_empty() { String::new() } else { format!("; still there: {}", extra.join(", ")) },
                if gone.is_empty() { String::new() } else { format!("; missing: {}", gone.join(", ")) },
            )
        }
        _ => match stored {
            Some(v) if !v.is_null() && previous.is_null() => format!(
                "{field} still holds {} after the revert; the store kept the meta entry instead of deleting it",
                short(v)
            ),
            None => format!("{field} was absent when the product was read back after the revert"),
            Some(v) => format!("{field} holds {} after the revert, not {}", short(v), short(previous)),
        },
    }
}

/// Whether `stored` holds `written` once WooCommerce's normalisation is allowed for.
pub fn holds(field: &str, written: &Value, stored: Option<&Value>) -> bool {
    let Some(stored) = stored else {
        return written.is_null();
    };
    match field {
        "tags" | "categories" => {
            let have: Vec<String> = stored
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|s| normalise_text(s).to_lowercase())
                .collect();
            written
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .all(|n| have.contains(&normalise_text(n).to_lowercase()))
        }
        "images[].alt" => {
            let have: BTreeMap<u64, String> = stored
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| Some((e.get("id")?.as_u64()?, normalise_text(e.get("alt")?.as_str()?))))
                .collect();
            written.as_array().into_iter().flatten().all(|e| {
                let (Some(id), Some(alt)) = (e.get("id").and_then(Value::as_u64), e.get("alt").and_then(Value::as_str))
                else {
                    return false;
                };
                have.get(&id) == Some(&normalise_text(alt))
            })
        }
        _ => match (written, stored) {
            (Value::String(w), Value::String(s)) => normalise_html(w) == normalise_html(s),
            (w, s) => w == s,
        },
    }
}

/// Text as a reader sees it: entities decoded, whitespace collapsed.
fn normalise_text(s: &str) -> String {
    decode_entities(s).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// HTML compared the way WordPress stores it: `wpautop` adds `<p>` wrappers and newlines, `&` comes
/// back as `&amp;`, `<br>` as `<br />`. Paragraph tags and whitespace between tags are ignored;
/// everything else (the words and the other tags) must match.
pub fn normalise_html(s: &str) -> String {
    let decoded = decode_entities(s);
    let mut out = String::with_capacity(decoded.len());
    let mut rest = decoded.as_str();
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let tag = &rest[start..start + end + 1];
        let name = tag.trim_start_matches(['<', '/']).split([' ', '>', '/']).next().unwrap_or_default().to_lowercase();
        match name.as_str() {
            "p" => out.push(' '),
            "br" => out.push_str(" <br> "),
            _ => {
                out.push(' ');
                out.push_str(&tag.replace(" />", ">").replace("/>", ">"));
                out.push(' ');
            }
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes the entities WordPress writes on save (`&amp;`, `&#8217;`, `&quot;`, ...).
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let entity = &tail[1..e];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                "nbsp" => '\u{a0}',
                "ndash" => '–',
                "mdash" => '—',
                "hellip" => '…',
                "rsquo" => '’',
                "lsquo" => '‘',
                "rdquo" => '”',
                "ldquo" => '“',
                _ => {
                    let code = entity.strip_prefix('#')?;
                    let n = match code.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => code.parse().ok()?,
                    };
                    char::from_u32(n)?
                }
            };
            Some((c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &tail[e + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `url` with `query` and the OAuth 1.0a one-legged parameters (HMAC-SHA1, no token, no
/// `oauth_version`), signed over the method, the URL and every query parameter.
pub fn oauth1_url(
    method: &str,
    url: &str,
    query: &[(&str, String)],
    key: &str,
    secret: &str,
    nonce: Option<&str>,
    timestamp: Option<u64>,
) -> String {
    let mut builder = oauth1_request::Builder::<_, _, &str>::new(
        oauth1_request::Credentials::new(key, secret),
        oauth1_request::HMAC_SHA1,
    );
    builder.version(false);
    if let Some(nonce) = nonce {
        builder.nonce(nonce);
    }
    if let Some(ts) = timestamp.and_then(NonZeroU64::new) {
        builder.timestamp(ts);
    }
    let params: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let request = oauth1_request::ParameterList::new(params);
    // The builder signs every parameter but writes only the `oauth_*` ones: add the request's own.
    let signed = builder.to_query(method, url.to_owned(), &request);
    match reqwest::Url::parse(&signed) {
        Ok(mut full) => {
            full.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
            full.to_string()
        }
        Err(_) => signed,
    }
}

fn with_parent(variation: &Value, parent: u64) -> Value {
    let mut v = variation.clone();
    if let Some(map) = v.as_object_mut() {
        map.entry("parent_id").or_insert(json!(parent));
        if map.get("parent_id").and_then(Value::as_u64) == Some(0) {
            map.insert("parent_id".into(), json!(parent));
        }
        map.entry("type").or_insert(json!("variation"));
    }
    v
}

fn split_variation_id(id: &str) -> Option<(u64, u64)> {
    let (parent, variation) = id.split_once('/')?;
    Some((parent.parse().ok()?, variation.parse().ok()?))
}

fn parse_cursor(cursor: Option<&str>) -> Result<u64, ConnectorError> {
    match cursor {
        None => Ok(1),
        Some(c) => c
            .parse()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| ConnectorError::permanent(format!("woocommerce: bad page cursor {c:?}"))),
    }
}

fn parse_variation_cursor(cursor: Option<&str>) -> Result<(u64, usize, u64), ConnectorError> {
    let Some(c) = cursor else {
        return Ok((1, 0, 1));
    };
    let bad = || ConnectorError::permanent(format!("woocommerce: bad variation cursor {c:?}"));
    let mut parts = c.split(':');
    let mut next = || parts.next().and_then(|p| p.parse::<u64>().ok()).ok_or_else(bad);
    let (p, i, v) = (next()?, next()?, next()?);
    Ok((p.max(1), i as usize, v.max(1)))
}

/// `modified_after` as WooCommerce reads it with `dates_are_gmt=true`: `YYYY-MM-DDTHH:MM:SS`.
fn gmt_param(rfc3339: &str) -> Result<String, ConnectorError> {
    let t = rfc3339.trim();
    let ok = t.len() >= 19
        && t.as_bytes().get(10) == Some(&b'T')
        && t[..19].chars().all(|c| c.is_ascii_digit() || "-:T".contains(c));
    if !ok {
        return Err(ConnectorError::permanent(format!(
            "woocommerce: modified_after must be an RFC 3339 UTC time, got {t:?}"
        )));
    }
    if !(t.len() == 19 || t.ends_with('Z') || t.ends_with("+00:00")) && t[19..].chars().any(|c| c == '+' || c == '-') {
        return Err(ConnectorError::permanent(format!("woocommerce: modified_after must be in UTC, got {t:?}")));
    }
    Ok(t[..19].to_owned())
}

/// A 413 `woocommerce_rest_request_entity_too_large`: the batch was over the store's limit and
/// nothing was applied.
fn is_too_large(e: &ConnectorError) -> bool {
    e.status == Some(413) || e.code.as_deref() == Some("woocommerce_rest_request_entity_too_large")
}

/// The limit a 413 states: "Unable to accept more than 30 items for this request."
fn batch_limit_in(message: &str) -> Option<usize> {
    let after = &message[message.find("more than ")? + "more than ".len()..];
    after.split_whitespace().next()?.parse().ok()
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn malformed(what: &str, expected: &str) -> ConnectorError {
    let mut e = ConnectorError::transient(format!("{what}: response is not {expected}"));
    e.code = Some("malformed_body".into());
    e
}

fn failed(id: &str, message: String) -> WriteOutcome {
    WriteOutcome { id: id.to_owned(), result: WriteResult::Failed(ConnectorError::permanent(message)) }
}

/// A per-item error inside a 200 batch answer.
fn item_error(id: &str, error: &Value) -> ConnectorError {
    let code = error.get("code").and_then(Value::as_str).unwrap_or("unknown").to_owned();
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default();
    let status = error.pointer("/data/status").and_then(Value::as_u64).map(|s| s as u16);
    ConnectorError {
        message: format!(
            "woocommerce: record {id}: HTTP {} {code}: {}",
            status.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            decode_entities(message)
        ),
        retryable: status.is_some_and(|s| s == 429 || s >= 500),
        status,
        code: Some(code),
        retry_after: None,
        deferred: false,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(base_url: &str) -> WooCommerce {
        WooCommerce::new(Options {
            base_url: base_url.into(),
            consumer_key: "ck".to_owned().into(),
            consumer_secret: "cs".to_owned().into(),
            auth: Auth::Auto,
            seo: Seo::Auto,
            timeout: Duration::from_secs(5),
            ca_cert_pem: None,
            status: None,
        })
        .unwrap()
    }

    #[test]
    fn record_links_are_the_product_page_and_its_wp_admin_edit_page() {
        let woo = shop("https://shop.example.com/");
        let fields = json!({"name": "Hex bolt", "permalink": "https://shop.example.com/product/hex-bolt/"});
        let links = woo.record_links("product", "42", &fields);
        let pairs: Vec<(&str, &str)> = links.iter().map(|l| (l.label.as_str(), l.url.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("Product page", "https://shop.example.com/product/hex-bolt/"),
                ("Edit in wp-admin", "https://shop.example.com/wp-admin/post.php?post=42&action=edit"),
            ]
        );
        // A variation is edited on its parent's page; a permalink that is not a web address is left out.
        let links = woo.record_links("variation", "42/57", &json!({"permalink": "javascript:alert(1)"}));
        assert_eq!(links.len(), 1, "{links:?}");
        assert_eq!(links[0].url, "https://shop.example.com/wp-admin/post.php?post=42&action=edit");
    }

    #[test]
    fn html_comparison_allows_wordpress_normalisation() {
        let sent = "<p>Strong & light.</p><ul><li>Zinc plated</li><li>M8 × 40</li></ul>";
        let stored = "<p>Strong &amp; light.</p>\n<ul>\n<li>Zinc plated</li>\n<li>M8 × 40</li>\n</ul>\n";
        assert!(holds("description", &json!(sent), Some(&json!(stored))));
        assert!(holds("description", &json!("Plain text"), Some(&json!("<p>Plain text</p>\n"))));
        assert!(!holds("description", &json!("<p>Strong & light.</p>"), Some(&json!("<p>Weak.</p>"))));
        assert!(!holds("meta._yoast_wpseo_metadesc", &json!("x"), None));
        assert!(holds("name", &json!("Mug & Coaster Set"), Some(&json!("Mug &amp; Coaster Set"))));
    }

    #[test]
    fn tags_and_alt_text_hold_when_included() {
        assert!(holds("tags", &json!(["Zinc", "m8"]), Some(&json!(["bolts", "zinc", "M8"]))));
        assert!(!holds("tags", &json!(["Zinc"]), Some(&json!(["bolts"]))));
        let stored = json!([{"id": 5, "alt": "Front &amp; side"}, {"id": 6, "alt": ""}]);
        assert!(holds("images[].alt", &json!([{"id": 5, "alt": "Front & side"}]), Some(&stored)));
        assert!(!holds("images[].alt", &json!([{"id": 6, "alt": "Back"}]), Some(&stored)));
    }

    #[test]
    fn entities_decode() {
        assert_eq!(
            decode_entities("Mug &amp; Coaster &#8211; 2&#x2019;s &bogus; & done"),
            "Mug & Coaster – 2’s &bogus; & done"
        );
    }

    fn change(fields: Value, native: Value) -> Change {
        Change {
            id: "7".into(),
            base_version: Version("v".into()),
            fields: fields.as_object().unwrap().clone(),
            native: Some(native),
            mode: WriteMode::Merge,
        }
    }

    #[test]
    fn lists_are_merged_never_truncated() {
        let native = json!({
            "id": 7,
            "tags": [{"id": 18, "name": "cotton"}],
            "images": [{"id": 5, "alt": "Front"}, {"id": 6, "alt": ""}],
        });
        let c = change(json!({"tags": ["Cotton", "summer"], "images[].alt": [{"id": 6, "alt": "Side"}]}), native);
        let body = update_body(7, &c, Seo::Yoast).unwrap();
        assert_eq!(body["tags"], json!([{"id": 18}, {"name": "summer"}]));
        assert_eq!(body["images"], json!([{"id": 5, "alt": "Front"}, {"id": 6, "alt": "Side"}]));
        let stray = change(json!({"images[].alt": [{"id": 99, "alt": "Not ours"}]}), json!({"id": 7, "images": []}));
        assert!(update_body(7, &stray, Seo::None).unwrap_err().contains("image 99"));
    }

    #[test]
    fn a_restore_replaces_lists_and_deletes_absent_meta() {
        let native = json!({
            "id": 7,
            "tags": [{"id": 18, "name": "cotton"}, {"id": 30, "name": "summer"}],
            "images": [{"id": 5, "alt": "Front"}],
        });
        let mut c = change(
            json!({"tags": ["Cotton", "linen"], "seo_title": "", "meta.care": null, "images[].alt": [{"id": 5, "alt": ""}]}),
            native,
        );
        c.mode = WriteMode::Restore;
        let body = update_body(7, &c, Seo::Yoast).unwrap();
        assert_eq!(body["tags"], json!([{"id": 18}, {"name": "linen"}]), "exactly the old tags, ours dropped");
        assert_eq!(
            body["meta_data"],
            json!([{"key": "care", "value": null}, {"key": "_yoast_wpseo_title", "value": null}]),
            "absent meta is deleted, not set to \"\""
        );
        assert!(restored("tags", &json!(["cotton"]), Some(&json!(["Cotton"]))));
        assert!(!restored("tags", &json!(["cotton"]), Some(&json!(["cotton", "summer"]))));
        assert!(restored("seo_title", &json!(""), None) && restored("seo_title", &json!(null), Some(&json!(""))));
        assert!(!restored("images[].alt", &json!([{"id": 5, "alt": ""}]), Some(&json!([{"id": 5, "alt": "Front"}]))));
    }

    #[test]
    fn seo_fields_map_to_the_plugin_keys() {
        let c = change(json!({"seo_title": "T", "seo_description": "D"}), json!({"id": 7}));
        let body = update_body(7, &c, Seo::RankMath).unwrap();
        assert_eq!(
            body["meta_data"],
            json!([{"key": "rank_math_description", "value": "D"}, {"key": "rank_math_title", "value": "T"}])
        );
        let e = update_body(7, &c, Seo::None).unwrap_err();
        assert!(e.contains("seo_description") && e.contains("`seo`"), "{e}");
    }

    #[test]
    fn oauth1_signs_the_query_without_version() {
        let url = oauth1_url(
            "GET",
            "http://shop.test/wp-json/wc/v3/products",
            &[("per_page", "10".into()), ("page", "2".into())],
            "ck_x",
            "cs_y",
            Some("abcdef"),
            Some(1_700_000_000),
        );
        assert!(url.starts_with("http://shop.test/wp-json/wc/v3/products?"), "{url}");
        for part in [
            "oauth_consumer_key=ck_x",
            "oauth_nonce=abcdef",
            "oauth_signature_method=HMAC-SHA1",
            "oauth_timestamp=1700000000",
            "oauth_signature=",
            "page=2",
            "per_page=10",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        assert!(!url.contains("oauth_version"), "{url}");
    }

    #[test]
    fn modified_after_is_sent_as_gmt_without_suffix() {
        assert_eq!(gmt_param("2026-11-22T02:31:28Z").unwrap(), "2026-11-22T02:31:28");
        assert_eq!(gmt_param("2026-11-22T02:31:28.123+00:00").unwrap(), "2026-11-22T02:31:28");
        assert!(gmt_param("yesterday").is_err());
        assert!(gmt_param("2026-11-22T03:31:28+01:00").is_err());
    }
}
