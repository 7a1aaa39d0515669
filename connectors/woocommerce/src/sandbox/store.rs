//! The sandbox's catalogue: products, variations, terms and meta, how a write changes them, and how
//! they are served (`view` for reads, `edit` for write responses, as WooCommerce does).

use std::collections::{BTreeMap, HashSet};

use chrono::{Duration, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use rand::seq::SliceRandom;
use serde_json::{Map, Value, json};

use super::text;

/// A WordPress REST error: status, code, message and extra `data` members.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub data: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: &str) -> Self {
        Self { status, code: code.into(), message: message.into(), data: Map::new() }
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.data.insert(key.into(), value);
        self
    }

    pub fn body(&self) -> Value {
        let mut data = Map::new();
        data.insert("status".into(), self.status.into());
        data.extend(self.data.clone());
        json!({"code": self.code, "message": self.message, "data": data})
    }

    pub fn invalid_id(status: u16) -> Self {
        Self::new(status, "woocommerce_rest_product_invalid_id", "Invalid ID.")
    }
}

/// `rest_invalid_param` with one entry per bad parameter, in the shape WordPress sends.
#[derive(Default)]
pub struct ParamErrors {
    /// Parameter names in the order they were found (the message lists them so).
    order: Vec<String>,
    params: Map<String, Value>,
    details: Map<String, Value>,
}

impl ParamErrors {
    pub fn add(&mut self, param: &str, code: &str, message: String, data: Value) {
        if !self.order.iter().any(|p| p == param) {
            self.order.push(param.into());
        }
        self.params.insert(param.into(), Value::String(message.clone()));
        self.details.insert(param.into(), json!({"code": code, "message": message, "data": data}));
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.params.is_empty() {
            return Ok(());
        }
        let message = format!("Invalid parameter(s): {}", self.order.join(", "));
        Err(ApiError::new(400, "rest_invalid_param", &message)
            .with("params", Value::Object(self.params.clone()))
            .with("details", Value::Object(self.details)))
    }
}

/// A product's or variation's meta entry; `id` is the `postmeta` row id and survives updates.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: u64,
    pub key: String,
    pub value: Value,
}

/// An attachment used as a product image.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: u64,
    pub src: String,
    pub name: String,
    pub alt: String,
    pub created: NaiveDateTime,
}

/// A category or tag.
#[derive(Debug, Clone)]
pub struct Term {
    pub id: u64,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub parent: u64,
}

/// A product or a variation (`parent_id != 0`) as stored.
#[derive(Debug, Clone)]
pub struct Product {
    pub id: u64,
    pub parent_id: u64,
    pub created: NaiveDateTime,
    pub modified: NaiveDateTime,
    /// Writable plain fields in their stored form (`name`, `description`, `regular_price`, ...).
    pub fields: Map<String, Value>,
    pub categories: Vec<u64>,
    pub tags: Vec<u64>,
    pub images: Vec<Image>,
    pub meta: Vec<Meta>,
    pub variations: Vec<u64>,
}

impl Product {
    pub fn str(&self, key: &str) -> &str {
        self.fields.get(key).and_then(Value::as_str).unwrap_or_default()
    }

    pub fn is_variation(&self) -> bool {
        self.parent_id != 0
    }

    pub fn status(&self) -> &str {
        self.str("status")
    }
}

/// The type a writable field must have.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Bool,
    Int,
    IntOrNull,
    StrOrNull,
    Array,
    Object,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Str | Kind::StrOrNull => "string",
            Kind::Bool => "boolean",
            Kind::Int | Kind::IntOrNull => "integer",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }

    /// WordPress's loose checks: numeric strings pass as integers, "true"/"1" as booleans.
    fn accepts(self, v: &Value) -> bool {
        match self {
            Kind::Str => v.is_string(),
            Kind::StrOrNull => v.is_string() || v.is_null(),
            Kind::Bool => v.is_boolean() || matches!(v.as_str(), Some("true" | "false" | "1" | "0")) || v.is_u64(),
            Kind::Int => v.is_i64() || v.as_str().is_some_and(|s| s.parse::<i64>().is_ok()),
            Kind::IntOrNull => v.is_null() || Kind::Int.accepts(v),
            Kind::Array => v.is_array(),
            Kind::Object => v.is_object(),
        }
    }
}

/// Writable plain fields of a product: name, type, default.
fn product_fields() -> Vec<(&'static str, Kind, Value)> {
    vec![
        ("name", Kind::Str, json!("")),
        ("slug", Kind::Str, json!("")),
        ("type", Kind::Str, json!("simple")),
        ("status", Kind::Str, json!("publish")),
        ("featured", Kind::Bool, json!(false)),
        ("catalog_visibility", Kind::Str, json!("visible")),
        ("description", Kind::Str, json!("")),
        ("short_description", Kind::Str, json!("")),
        ("sku", Kind::Str, json!("")),
        ("regular_price", Kind::Str, json!("")),
        ("sale_price", Kind::Str, json!("")),
        ("date_on_sale_from", Kind::StrOrNull, Value::Null),
        ("date_on_sale_from_gmt", Kind::StrOrNull, Value::Null),
        ("date_on_sale_to", Kind::StrOrNull, Value::Null),
        ("date_on_sale_to_gmt", Kind::StrOrNull, Value::Null),
        ("virtual", Kind::Bool, json!(false)),
        ("downloadable", Kind::Bool, json!(false)),
        ("downloads", Kind::Array, json!([])),
        ("download_limit", Kind::Int, json!(-1)),
        ("download_expiry", Kind::Int, json!(-1)),
        ("external_url", Kind::Str, json!("")),
        ("button_text", Kind::Str, json!("")),
        ("tax_status", Kind::Str, json!("taxable")),
        ("tax_class", Kind::Str, json!("")),
        ("manage_stock", Kind::Bool, json!(false)),
        ("stock_quantity", Kind::IntOrNull, Value::Null),
        ("stock_status", Kind::Str, json!("instock")),
        ("backorders", Kind::Str, json!("no")),
        ("low_stock_amount", Kind::IntOrNull, Value::Null),
        ("sold_individually", Kind::Bool, json!(false)),
        ("weight", Kind::Str, json!("")),
        ("dimensions", Kind::Object, json!({"length": "", "width": "", "height": ""})),
        ("shipping_class", Kind::Str, json!("")),
        ("reviews_allowed", Kind::Bool, json!(true)),
        ("upsell_ids", Kind::Array, json!([])),
        ("cross_sell_ids", Kind::Array, json!([])),
        ("purchase_note", Kind::Str, json!("")),
        ("menu_order", Kind::Int, json!(0)),
        ("post_password", Kind::Str, json!("")),
        ("global_unique_id", Kind::Str, json!("")),
        ("attributes", Kind::Array, json!([])),
        ("default_attributes", Kind::Array, json!([])),
        ("grouped_products", Kind::Array, json!([])),
        ("brands", Kind::Array, json!([])),
        ("categories", Kind::Array, json!([])),
        ("tags", Kind::Array, json!([])),
        ("images", Kind::Array, json!([])),
        ("meta_data", Kind::Array, json!([])),
        ("image", Kind::Object, Value::Null),
    ]
}

/// Fields handled outside `fields` (terms, images, meta) or computed.
const STRUCTURED: [&str; 5] = ["categories", "tags", "images", "meta_data", "image"];

/// Which request a write came through; it decides the defaults and what is bumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Create,
    Update,
}

/// Serving context: `view` for reads, `edit` for write responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    View,
    Edit,
}

/// Everything the sandbox stores.
pub struct Catalogue {
    pub products: BTreeMap<u64, Product>,
    pub categories: BTreeMap<u64, Term>,
    pub tags: BTreeMap<u64, Term>,
    pub next_post_id: u64,
    pub next_term_id: u64,
    pub next_meta_id: u64,
    pub timezone: Tz,
    /// Meta keys whose writes are accepted with 200 and silently not stored (a fault).
    pub dropped_meta_keys: HashSet<String>,
}

impl Catalogue {
    pub fn new(timezone: Tz) -> Self {
        Self {
            products: BTreeMap::new(),
            categories: BTreeMap::new(),
            tags: BTreeMap::new(),
            next_post_id: 10,
            next_term_id: 16,
            next_meta_id: 100,
            timezone,
            dropped_meta_keys: HashSet::new(),
        }
    }

    fn post_id(&mut self) -> u64 {
        while self.products.contains_key(&self.next_post_id) {
            self.next_post_id += 1;
        }
        let id = self.next_post_id;
        self.next_post_id += 1;
        id
    }

    pub fn term_id(&mut self) -> u64 {
        while self.categories.contains_key(&self.next_term_id) || self.tags.contains_key(&self.next_term_id) {
            self.next_term_id += 1;
        }
        let id = self.next_term_id;
        self.next_term_id += 1;
        id
    }

    fn meta_id(&mut self) -> u64 {
        let id = self.next_meta_id;
        self.next_meta_id += 1;
        id
    }

    pub fn local(&self, gmt: NaiveDateTime) -> NaiveDateTime {
        self.timezone.from_utc_datetime(&gmt).naive_local()
    }

    /// The site-local time `local` as GMT (the earlier reading when a DST change repeats an hour).
    pub fn gmt_of_local(&self, local: NaiveDateTime) -> NaiveDateTime {
        self.timezone
            .from_local_datetime(&local)
            .earliest()
            .map(|t| t.naive_utc())
            .unwrap_or(local - Duration::hours(1))
    }

    /// Creates a category; `term_exists` when the name is taken under the same parent.
    pub fn create_category(&mut self, body: &Map<String, Value>) -> Result<u64, ApiError> {
        let Some(name) = body.get("name").and_then(Value::as_str).filter(|n| !n.trim().is_empty()) else {
            return Err(ApiError::new(400, "rest_missing_callback_param", "Missing parameter(s): name")
                .with("params", json!(["name"])));
        };
        let name = text::normalize_name(name);
        let parent = body.get("parent").and_then(Value::as_u64).unwrap_or(0);
        if let Some(existing) = self.categories.values().find(|t| t.name == name && t.parent == parent) {
            return Err(ApiError::new(
                400,
                "term_exists",
                "A term with the name provided already exists with this parent.",
            )
            .with("resource_id", existing.id.into()));
        }
        let slug = body.get("slug").and_then(Value::as_str).map(text::slugify).unwrap_or_else(|| text::slugify(&name));
        let id = self.term_id();
        let description =
            body.get("description").and_then(Value::as_str).map(text::normalize_entities).unwrap_or_default();
        self.categories.insert(id, Term { id, name, slug, description, parent });
        Ok(id)
    }

    /// The tag named `name`, created when missing.
    fn tag_named(&mut self, name: &str) -> u64 {
        let name = text::normalize_name(name);
        if let Some(t) = self.tags.values().find(|t| t.name == name) {
            return t.id;
        }
        let id = self.term_id();
        self.tags.insert(id, Term { id, slug: text::slugify(&name), name, description: String::new(), parent: 0 });
        id
    }

    /// Creates (`id = None`) or updates a product or variation from a request body. `parent` is the
    /// parent product for variation routes. `now` is the write's time; `date_modified_gmt` becomes
    /// the later of `now` and one second after the stored value, so every write is visible to a
    /// timestamp comparison even within one second.
    pub fn write(
        &mut self,
        id: Option<u64>,
        parent: Option<u64>,
        body: &Map<String, Value>,
        now: NaiveDateTime,
    ) -> Result<u64, ApiError> {
        let kind = if id.is_some() { WriteKind::Update } else { WriteKind::Create };
        validate(body)?;
        let id = match id {
            Some(id) => id,
            None => {
                let is_variation = parent.is_some();
                let mut fields = Map::new();
                for (name, _, default) in product_fields() {
                    if !STRUCTURED.contains(&name) {
                        fields.insert(name.into(), default);
                    }
                }
                if is_variation {
                    fields.insert("type".into(), json!("variation"));
                    fields.insert("tax_class".into(), json!("parent"));
                    fields.insert("reviews_allowed".into(), json!(false));
                }
                self.check_sku(body, None)?;
                let id = self.post_id();
                self.products.insert(
                    id,
                    Product {
                        id,
                        parent_id: parent.unwrap_or(0),
                        created: now,
                        modified: now,
                        fields,
                        categories: Vec::new(),
                        tags: Vec::new(),
                        images: Vec::new(),
                        meta: Vec::new(),
                        variations: Vec::new(),
                    },
                );
                if let Some(parent) = parent.and_then(|p| self.products.get_mut(&p)) {
                    parent.variations.push(id);
                }
                id
            }
        };
        if kind == WriteKind::Update {
            self.check_sku(body, Some(id))?;
        }
        self.apply(id, body, now);
        if let Some(parent) = parent.or_else(|| self.products.get(&id).map(|p| p.parent_id).filter(|p| *p != 0)) {
            // Saving a variation re-syncs its parent, which saves the parent too.
            if let Some(parent) = self.products.get_mut(&parent) {
                parent.modified = bump(parent.modified, now);
            }
        }
        Ok(id)
    }

    fn check_sku(&self, body: &Map<String, Value>, own: Option<u64>) -> Result<(), ApiError> {
        let Some(sku) = body.get("sku").and_then(Value::as_str).filter(|s| !s.is_empty()) else { return Ok(()) };
        let taken = |s: &str| self.products.values().find(|p| Some(p.id) != own && p.str("sku") == s);
        if let Some(other) = taken(sku) {
            let mut n = 1;
            while taken(&format!("{sku}-{n}")).is_some() {
                n += 1;
            }
            return Err(ApiError::new(400, "product_invalid_sku", "Invalid or duplicated SKU.")
                .with("resource_id", other.id.into())
                .with("unique_sku", format!("{sku}-{n}").into()));
        }
        Ok(())
    }

    fn apply(&mut self, id: u64, body: &Map<String, Value>, now: NaiveDateTime) {
        let is_variation = self.products[&id].is_variation();
        let mut categories = None;
        let mut tags = None;
        let mut images = None;
        if let Some(list) = body.get("categories").and_then(Value::as_array) {
            categories = Some(
                list.iter()
                    .filter_map(|c| c.get("id").and_then(as_u64))
                    .filter(|id| self.categories.contains_key(id))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(list) = body.get("tags").and_then(Value::as_array) {
            let mut ids = Vec::new();
            for tag in list {
                if let Some(tag_id) = tag.get("id").and_then(as_u64).filter(|t| self.tags.contains_key(t)) {
                    ids.push(tag_id);
                } else if let Some(name) = tag.get("name").and_then(Value::as_str) {
                    ids.push(self.tag_named(name));
                }
            }
            ids.dedup();
            tags = Some(ids);
        }
        let image_list: Option<Vec<Value>> = if is_variation {
            body.get("image").map(|i| if i.is_object() { vec![i.clone()] } else { Vec::new() })
        } else {
            body.get("images").and_then(Value::as_array).cloned()
        };
        if let Some(list) = image_list {
            let existing: Vec<Image> = self.products.values().flat_map(|p| p.images.clone()).collect();
            let mut out = Vec::new();
            for item in list {
                let known = item.get("id").and_then(as_u64).and_then(|i| existing.iter().find(|e| e.id == i).cloned());
                let mut image = match known {
                    Some(image) => image,
                    None => {
                        let src = item.get("src").and_then(Value::as_str).unwrap_or_default().to_owned();
                        if src.is_empty() {
                            continue;
                        }
                        let file = src.rsplit('/').next().unwrap_or_default();
                        let stem = file.rsplit_once('.').map_or(file, |(s, _)| s).to_owned();
                        Image { id: self.post_id(), src, name: stem, alt: String::new(), created: now }
                    }
                };
                if let Some(name) = item.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                    image.name = name.to_owned();
                }
                // WooCommerce writes alt text only when it is non-empty: an empty alt never clears one.
                if let Some(alt) = item.get("alt").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                    image.alt = alt.to_owned();
                }
                out.push(image);
            }
            images = Some(out);
        }
        let mut new_meta: Vec<(Option<u64>, String, Value)> = Vec::new();
        if let Some(list) = body.get("meta_data").and_then(Value::as_array) {
            for item in list {
                let Some(key) = item.get("key").and_then(Value::as_str) else { continue };
                if self.dropped_meta_keys.contains(key) {
                    continue;
                }
                let value = item.get("value").cloned().unwrap_or(Value::Null);
                new_meta.push((item.get("id").and_then(as_u64), key.to_owned(), value));
            }
        }
        let mut fresh_ids: Vec<u64> = Vec::new();
        let missing: usize = {
            let product = &self.products[&id];
            // A null value never creates an entry (it deletes one), so it takes no meta id.
            new_meta
                .iter()
                .filter(|(mid, key, value)| {
                    !value.is_null()
                        && !product.meta.iter().any(|m| Some(m.id) == *mid || (mid.is_none() && m.key == *key))
                })
                .count()
        };
        for _ in 0..missing {
            fresh_ids.push(self.meta_id());
        }
        let product = self.products.get_mut(&id).expect("written product exists");
        for (name, kind, _) in product_fields() {
            if STRUCTURED.contains(&name) {
                continue;
            }
            let Some(value) = body.get(name) else { continue };
            let stored = match (name, kind) {
                ("name", _) => json!(text::normalize_name(value.as_str().unwrap_or_default())),
                ("description" | "short_description" | "purchase_note", _) => {
                    json!(text::normalize_entities(value.as_str().unwrap_or_default()))
                }
                ("slug", _) => json!(text::slugify(value.as_str().unwrap_or_default())),
                ("dimensions", _) => {
                    let mut dims = product.fields.get("dimensions").cloned().unwrap_or_else(|| json!({}));
                    if let (Some(d), Some(v)) = (dims.as_object_mut(), value.as_object()) {
                        for key in ["length", "width", "height"] {
                            if let Some(x) = v.get(key).and_then(Value::as_str) {
                                d.insert(key.into(), json!(x));
                            }
                        }
                    }
                    dims
                }
                ("attributes", _) => json!(
                    value
                        .as_array()
                        .map(|a| a.iter().map(|x| attribute(x, is_variation)).collect::<Vec<_>>())
                        .unwrap_or_default()
                ),
                ("default_attributes", _) => json!(
                    value
                        .as_array()
                        .map(|a| a
                            .iter()
                            .map(|x| json!({"id": x.get("id").cloned().unwrap_or(json!(0)), "name": x.get("name").cloned().unwrap_or(json!("")), "option": x.get("option").cloned().unwrap_or(json!(""))}))
                            .collect::<Vec<_>>())
                        .unwrap_or_default()
                ),
                (_, Kind::Int) => json!(value.as_i64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))),
                (_, Kind::IntOrNull) if !value.is_null() => {
                    json!(value.as_i64().or_else(|| value.as_str().and_then(|s| s.parse().ok())))
                }
                (_, Kind::Bool) => json!(matches!(value, Value::Bool(true)) || matches!(value.as_str(), Some("true" | "1")) || value.as_u64() == Some(1)),
                _ => value.clone(),
            };
            product.fields.insert(name.into(), stored);
        }
        if is_variation && body.contains_key("attributes") {
            let option_names: Vec<String> = product.fields["attributes"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.get("option").and_then(Value::as_str).map(str::to_owned)).collect())
                .unwrap_or_default();
            product.fields.insert("name".into(), json!(option_names.join(", ")));
        }
        if let Some(c) = categories {
            product.categories = c;
        }
        if let Some(t) = tags {
            product.tags = t;
        }
        let mut attachment_alts: Vec<(u64, String)> = Vec::new();
        if let Some(i) = images {
            attachment_alts = i.iter().map(|image| (image.id, image.alt.clone())).collect();
            product.images = i;
        }
        let mut fresh = fresh_ids.into_iter();
        for (mid, key, value) in new_meta {
            let found = match mid {
                Some(mid) => product.meta.iter().position(|m| m.id == mid),
                None => product.meta.iter().position(|m| m.key == key),
            };
            match found {
                // `WC_Data::save_meta_data` deletes an entry whose value was set to null.
                Some(i) if value.is_null() => {
                    product.meta.remove(i);
                }
                Some(i) => {
                    product.meta[i].key = key;
                    product.meta[i].value = value;
                }
                None if value.is_null() => {}
                None => {
                    if let Some(new_id) = fresh.next() {
                        product.meta.push(Meta { id: new_id, key, value });
                    }
                }
            }
        }
        product.modified = bump(product.modified, now);
        // Alt text belongs to the media attachment, not the product: every product showing the
        // image shows the new alt (their own `date_modified` does not move).
        for (image_id, alt) in attachment_alts {
            for other in self.products.values_mut().filter(|p| p.id != id) {
                for image in other.images.iter_mut().filter(|i| i.id == image_id) {
                    image.alt.clone_from(&alt);
                }
            }
        }
    }

    /// Moves a product to the trash: status `trash`, slug suffixed, restore meta added, modified bumped.
    pub fn trash(&mut self, id: u64, now: NaiveDateTime) {
        let id_of = id;
        let Some(p) = self.products.get(&id) else { return };
        let (previous_status, previous_slug) = (p.status().to_owned(), p.str("slug").to_owned());
        if let Some(p) = self.products.get_mut(&id) {
            let slug = p.str("slug").to_owned();
            p.fields.insert("status".into(), json!("trash"));
            p.fields.insert("slug".into(), json!(format!("{slug}__trashed")));
            p.modified = bump(p.modified, now);
        }
        // WordPress records how to restore the post in meta that WooCommerce then exposes.
        let time = now.and_utc().timestamp().to_string();
        let entries = [
            ("_wp_trash_meta_status", previous_status),
            ("_wp_trash_meta_time", time),
            ("_wp_desired_post_slug", previous_slug),
        ];
        for (key, value) in entries {
            let id = self.meta_id();
            if let Some(p) = self.products.get_mut(&id_of) {
                p.meta.push(Meta { id, key: key.into(), value: json!(value) });
            }
        }
    }

    /// Deletes a product and its variations for good.
    pub fn remove(&mut self, id: u64) {
        if let Some(p) = self.products.remove(&id) {
            for v in p.variations {
                self.products.remove(&v);
            }
            if let Some(parent) = self.products.get_mut(&p.parent_id) {
                parent.variations.retain(|v| *v != id);
            }
        }
    }

    /// Gives a published product without a slug its unique slug from the name, as WordPress does
    /// when a post is published. Drafts keep an empty slug.
    pub fn settle_slug(&mut self, id: u64) {
        let Some(p) = self.products.get(&id) else { return };
        if p.is_variation() || !p.str("slug").is_empty() || matches!(p.status(), "draft" | "pending" | "auto-draft") {
            return;
        }
        let base = text::slugify(p.str("name"));
        let taken = |s: &str| self.products.values().any(|o| o.id != id && !o.is_variation() && o.str("slug") == s);
        let mut slug = base.clone();
        let mut n = 2;
        while taken(&slug) {
            slug = format!("{base}-{n}");
            n += 1;
        }
        if let Some(p) = self.products.get_mut(&id) {
            p.fields.insert("slug".into(), json!(slug));
        }
    }

    fn price_of(&self, p: &Product) -> (String, bool) {
        if p.str("type") == "variable" {
            let prices = self.variation_prices(p);
            let on_sale = p.variations.iter().filter_map(|v| self.products.get(v)).any(|v| self.price_of(v).1);
            return (prices.first().cloned().unwrap_or_default(), on_sale);
        }
        let sale = p.str("sale_price");
        let regular = p.str("regular_price");
        if !sale.is_empty() && (regular.is_empty() || sale.parse::<f64>().ok() < regular.parse::<f64>().ok()) {
            (sale.to_owned(), true)
        } else {
            (regular.to_owned(), false)
        }
    }

    fn variation_prices(&self, p: &Product) -> Vec<String> {
        let mut prices: Vec<String> = p
            .variations
            .iter()
            .filter_map(|v| self.products.get(v))
            .map(|v| self.price_of(v).0)
            .filter(|x| !x.is_empty())
            .collect();
        prices.sort_by(|a, b| a.parse::<f64>().unwrap_or(0.0).total_cmp(&b.parse::<f64>().unwrap_or(0.0)));
        prices
    }

    fn stock_status(&self, p: &Product) -> String {
        if p.str("type") == "variable" {
            let any =
                p.variations.iter().filter_map(|v| self.products.get(v)).any(|v| self.stock_status(v) == "instock");
            return if any { "instock" } else { "outofstock" }.into();
        }
        if p.fields.get("manage_stock") == Some(&json!(true)) {
            let qty = p.fields.get("stock_quantity").and_then(Value::as_i64).unwrap_or(0);
            if qty <= 0 && p.str("backorders") == "no" {
                return "outofstock".into();
            }
            return "instock".into();
        }
        p.str("stock_status").to_owned()
    }

    fn term_refs(&self, ids: &[u64], terms: &BTreeMap<u64, Term>) -> Value {
        json!(
            ids.iter()
                .filter_map(|i| terms.get(i))
                .map(|t| json!({"id": t.id, "name": t.name, "slug": t.slug}))
                .collect::<Vec<_>>()
        )
    }

    fn date(&self, gmt: NaiveDateTime) -> (String, String) {
        (fmt(self.local(gmt)), fmt(gmt))
    }

    fn image(&self, i: &Image) -> Value {
        let (local, gmt) = self.date(i.created);
        json!({"id": i.id, "date_created": local, "date_created_gmt": gmt, "date_modified": local, "date_modified_gmt": gmt, "src": i.src, "name": i.name, "alt": i.alt})
    }

    fn meta(&self, p: &Product) -> Value {
        json!(p.meta.iter().map(|m| json!({"id": m.id, "key": m.key, "value": m.value})).collect::<Vec<_>>())
    }

    fn permalink(&self, p: &Product, base: &str) -> String {
        if p.is_variation() {
            let parent = self.products.get(&p.parent_id);
            let link = parent.map(|pp| self.permalink(pp, base)).unwrap_or_default();
            let query: Vec<String> = p.fields["attributes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            let name = x.get("name").and_then(Value::as_str).unwrap_or_default();
                            let option = x.get("option").and_then(Value::as_str).unwrap_or_default();
                            format!("attribute_{}={}", text::slugify(name), option)
                        })
                        .collect()
                })
                .unwrap_or_default();
            return if query.is_empty() { link } else { format!("{link}?{}", query.join("&")) };
        }
        if matches!(p.status(), "publish" | "private") && !p.str("slug").is_empty() {
            format!("{base}/product/{}/", p.str("slug"))
        } else {
            format!("{base}/?post_type=product&p={}", p.id)
        }
    }

    /// Up to five published products sharing a category or tag, in random order (WooCommerce
    /// picks related products at random on every read).
    fn related(&self, p: &Product) -> Vec<u64> {
        if p.is_variation() {
            return Vec::new();
        }
        let mut ids: Vec<u64> = self
            .products
            .values()
            .filter(|o| o.id != p.id && !o.is_variation() && o.status() == "publish")
            .filter(|o| {
                o.categories.iter().any(|c| p.categories.contains(c)) || o.tags.iter().any(|t| p.tags.contains(t))
            })
            .map(|o| o.id)
            .collect();
        ids.shuffle(&mut rand::rng());
        ids.truncate(5);
        ids
    }

    /// A product (or a variation reached through `/products/{id}`) as the products endpoints serve it.
    pub fn serve_product(&self, p: &Product, ctx: Context, base: &str) -> Value {
        let (created, created_gmt) = self.date(p.created);
        let (modified, modified_gmt) = self.date(p.modified);
        let (price, on_sale) = self.price_of(p);
        let variable = p.str("type") == "variable";
        let parent = self.products.get(&p.parent_id);
        let (name, slug) = match parent {
            Some(parent) => {
                let name = format!("{} - {}", parent.str("name"), p.str("name"));
                let slug = text::slugify(&name);
                (name, slug)
            }
            None => {
                let slug =
                    if matches!(p.status(), "draft" | "pending") { String::new() } else { p.str("slug").to_owned() };
                (p.str("name").to_owned(), slug)
            }
        };
        let price_html = if variable {
            let prices = self.variation_prices(p);
            text::price_range_html(prices.first().map_or("", String::as_str), prices.last().map_or("", String::as_str))
        } else {
            text::price_html(&price, p.str("regular_price"), on_sale)
        };
        let rich = |key: &str| match ctx {
            Context::View => text::wpautop(p.str(key)),
            Context::Edit => p.str(key).to_owned(),
        };
        let f = |key: &str| p.fields.get(key).cloned().unwrap_or(Value::Null);
        let mut out = json!({
            "id": p.id,
            "name": name,
            "slug": slug,
            "permalink": self.permalink(p, base),
            "date_created": created,
            "date_created_gmt": created_gmt,
            "date_modified": modified,
            "date_modified_gmt": modified_gmt,
            "type": f("type"),
            "status": f("status"),
            "featured": f("featured"),
            "catalog_visibility": f("catalog_visibility"),
            "description": rich("description"),
            "short_description": rich("short_description"),
            "sku": f("sku"),
            "price": price,
            "regular_price": if variable { json!("") } else { f("regular_price") },
            "sale_price": if variable { json!("") } else { f("sale_price") },
            "date_on_sale_from": f("date_on_sale_from"),
            "date_on_sale_from_gmt": f("date_on_sale_from_gmt"),
            "date_on_sale_to": f("date_on_sale_to"),
            "date_on_sale_to_gmt": f("date_on_sale_to_gmt"),
            "on_sale": on_sale,
            "purchasable": !price.is_empty() && p.status() != "trash" || (variable && !p.variations.is_empty()),
            "total_sales": if p.is_variation() { json!("0") } else { json!(0) },
            "virtual": f("virtual"),
            "downloadable": f("downloadable"),
            "downloads": f("downloads"),
            "download_limit": f("download_limit"),
            "download_expiry": f("download_expiry"),
            "external_url": f("external_url"),
            "button_text": f("button_text"),
            "tax_status": f("tax_status"),
            "tax_class": if p.is_variation() { json!("") } else { f("tax_class") },
            "manage_stock": f("manage_stock"),
            "stock_quantity": f("stock_quantity"),
            "backorders": f("backorders"),
            "backorders_allowed": f("backorders") != json!("no"),
            "backordered": false,
            "low_stock_amount": f("low_stock_amount"),
            "sold_individually": f("sold_individually"),
            "weight": f("weight"),
            "dimensions": f("dimensions"),
            "shipping_required": f("virtual") != json!(true),
            "shipping_taxable": f("virtual") != json!(true),
            "shipping_class": f("shipping_class"),
            "shipping_class_id": 0,
            "reviews_allowed": f("reviews_allowed"),
            "average_rating": if ctx == Context::Edit { "0" } else { "0.00" },
            "rating_count": 0,
            "upsell_ids": f("upsell_ids"),
            "cross_sell_ids": f("cross_sell_ids"),
            "parent_id": p.parent_id,
            "purchase_note": f("purchase_note"),
            "categories": self.term_refs(&p.categories, &self.categories),
            "brands": f("brands"),
            "tags": self.term_refs(&p.tags, &self.tags),
            "images": p.images.iter().map(|i| self.image(i)).collect::<Vec<_>>(),
            "attributes": f("attributes"),
            "default_attributes": f("default_attributes"),
            "variations": p.variations,
            "grouped_products": f("grouped_products"),
            "menu_order": f("menu_order"),
            "price_html": price_html,
            "related_ids": self.related(p),
            "meta_data": self.meta(p),
            "stock_status": self.stock_status(p),
            "has_options": variable,
            "post_password": f("post_password"),
            "global_unique_id": f("global_unique_id"),
        });
        let obj = out.as_object_mut().expect("object literal");
        if ctx == Context::Edit {
            obj.insert("permalink_template".into(), json!(format!("{base}/product/%pagename%/")));
            let generated =
                if p.str("slug").is_empty() { text::slugify(p.str("name")) } else { p.str("slug").to_owned() };
            obj.insert("generated_slug".into(), json!(generated));
        }
        let mut links = json!({
            "self": [{"href": format!("{base}/wp-json/wc/v3/products/{}", p.id), "targetHints": {"allow": ["GET", "POST", "PUT", "PATCH", "DELETE"]}}],
            "collection": [{"href": format!("{base}/wp-json/wc/v3/products")}],
        });
        if p.is_variation() {
            links["up"] = json!([{"href": format!("{base}/wp-json/wc/v3/products/{}", p.parent_id)}]);
        }
        obj.insert("_links".into(), links);
        out
    }

    /// A variation as the variations endpoints serve it.
    pub fn serve_variation(&self, p: &Product, base: &str) -> Value {
        let (created, created_gmt) = self.date(p.created);
        let (modified, modified_gmt) = self.date(p.modified);
        let (price, on_sale) = self.price_of(p);
        let f = |key: &str| p.fields.get(key).cloned().unwrap_or(Value::Null);
        json!({
            "id": p.id,
            "type": "variation",
            "date_created": created,
            "date_created_gmt": created_gmt,
            "date_modified": modified,
            "date_modified_gmt": modified_gmt,
            "description": f("description"),
            "permalink": self.permalink(p, base),
            "sku": f("sku"),
            "global_unique_id": f("global_unique_id"),
            "price": price,
            "regular_price": f("regular_price"),
            "sale_price": f("sale_price"),
            "date_on_sale_from": f("date_on_sale_from"),
            "date_on_sale_from_gmt": f("date_on_sale_from_gmt"),
            "date_on_sale_to": f("date_on_sale_to"),
            "date_on_sale_to_gmt": f("date_on_sale_to_gmt"),
            "on_sale": on_sale,
            "status": f("status"),
            "purchasable": !price.is_empty(),
            "virtual": f("virtual"),
            "downloadable": f("downloadable"),
            "downloads": f("downloads"),
            "download_limit": f("download_limit"),
            "download_expiry": f("download_expiry"),
            "tax_status": f("tax_status"),
            "tax_class": f("tax_class"),
            "manage_stock": f("manage_stock"),
            "stock_quantity": f("stock_quantity"),
            "stock_status": self.stock_status(p),
            "backorders": f("backorders"),
            "backorders_allowed": f("backorders") != json!("no"),
            "backordered": false,
            "low_stock_amount": f("low_stock_amount"),
            "weight": f("weight"),
            "dimensions": f("dimensions"),
            "shipping_class": f("shipping_class"),
            "shipping_class_id": 0,
            "image": p.images.first().map(|i| self.image(i)).unwrap_or(Value::Null),
            "attributes": f("attributes"),
            "menu_order": f("menu_order"),
            "meta_data": self.meta(p),
            "name": f("name"),
            "parent_id": p.parent_id,
            "_links": {
                "self": [{"href": format!("{base}/wp-json/wc/v3/products/{}/variations/{}", p.parent_id, p.id), "targetHints": {"allow": ["GET", "POST", "PUT", "PATCH", "DELETE"]}}],
                "collection": [{"href": format!("{base}/wp-json/wc/v3/products/{}/variations", p.parent_id)}],
                "up": [{"href": format!("{base}/wp-json/wc/v3/products/{}", p.parent_id)}],
            },
        })
    }

    /// A category as served, with its product count.
    pub fn serve_category(&self, t: &Term, base: &str) -> Value {
        let count = self.products.values().filter(|p| p.status() == "publish" && p.categories.contains(&t.id)).count();
        json!({
            "id": t.id, "name": t.name, "slug": t.slug, "parent": t.parent, "description": t.description,
            "display": "default", "image": null, "menu_order": 0, "count": count,
            "_links": {
                "self": [{"href": format!("{base}/wp-json/wc/v3/products/categories/{}", t.id), "targetHints": {"allow": ["GET", "POST", "PUT", "PATCH", "DELETE"]}}],
                "collection": [{"href": format!("{base}/wp-json/wc/v3/products/categories")}],
            },
        })
    }

    /// A tag as served, with its product count.
    pub fn serve_tag(&self, t: &Term, base: &str) -> Value {
        let count = self.products.values().filter(|p| p.status() == "publish" && p.tags.contains(&t.id)).count();
        json!({
            "id": t.id, "name": t.name, "slug": t.slug, "description": t.description, "count": count,
            "_links": {
                "self": [{"href": format!("{base}/wp-json/wc/v3/products/tags/{}", t.id), "targetHints": {"allow": ["GET", "POST", "PUT", "PATCH", "DELETE"]}}],
                "collection": [{"href": format!("{base}/wp-json/wc/v3/products/tags")}],
            },
        })
    }
}

/// `date_modified_gmt` of a write at `now`: never earlier than one second after `previous`.
pub fn bump(previous: NaiveDateTime, now: NaiveDateTime) -> NaiveDateTime {
    now.max(previous + Duration::seconds(1))
}

/// WordPress's date format: whole seconds, no zone suffix.
pub fn fmt(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn attribute(x: &Value, is_variation: bool) -> Value {
    let name = x.get("name").and_then(Value::as_str).unwrap_or_default();
    if is_variation {
        json!({"id": x.get("id").cloned().unwrap_or(json!(0)), "name": name, "slug": text::slugify(name), "option": x.get("option").cloned().unwrap_or(json!(""))})
    } else {
        json!({
            "id": x.get("id").cloned().unwrap_or(json!(0)),
            "name": name,
            "slug": name,
            "position": x.get("position").cloned().unwrap_or(json!(0)),
            "visible": x.get("visible").cloned().unwrap_or(json!(false)),
            "variation": x.get("variation").cloned().unwrap_or(json!(false)),
            "options": x.get("options").cloned().unwrap_or(json!([])),
        })
    }
}

/// Type checks of a product body, all reported at once like WordPress does.
fn validate(body: &Map<String, Value>) -> Result<(), ApiError> {
    let mut errors = ParamErrors::default();
    for (name, kind, _) in product_fields() {
        let Some(value) = body.get(name) else { continue };
        if name == "image" && value.is_null() {
            continue;
        }
        if kind == Kind::Array {
            // A scalar where a list is expected is read as a one-item list, so the error names item 0.
            let items: Vec<Value> = match value {
                Value::Array(a) => a.clone(),
                Value::Object(_) => {
                    errors.add(
                        name,
                        "rest_invalid_type",
                        format!("{name} is not of type array."),
                        json!({"param": name}),
                    );
                    continue;
                }
                other => vec![other.clone()],
            };
            let wants_objects = matches!(
                name,
                "categories" | "tags" | "images" | "meta_data" | "attributes" | "default_attributes" | "downloads"
            );
            let wants_ints = matches!(name, "upsell_ids" | "cross_sell_ids" | "grouped_products" | "brands");
            for (i, item) in items.iter().enumerate() {
                let param = format!("{name}[{i}]");
                if wants_objects && !item.is_object() {
                    errors.add(
                        name,
                        "rest_invalid_type",
                        format!("{param} is not of type object."),
                        json!({"param": param}),
                    );
                    break;
                }
                if wants_ints && !Kind::Int.accepts(item) {
                    errors.add(
                        name,
                        "rest_invalid_type",
                        format!("{param} is not of type integer."),
                        json!({"param": param}),
                    );
                    break;
                }
            }
            continue;
        }
        if !kind.accepts(value) {
            errors.add(
                name,
                "rest_invalid_type",
                format!("{name} is not of type {}.", kind.name()),
                json!({"param": name}),
            );
        }
    }
    for (name, allowed) in [
        ("type", &["simple", "grouped", "external", "variable"][..]),
        ("status", &["draft", "pending", "private", "publish", "future"][..]),
        ("catalog_visibility", &["visible", "catalog", "search", "hidden"][..]),
        ("tax_status", &["taxable", "shipping", "none"][..]),
        ("stock_status", &["instock", "outofstock", "onbackorder"][..]),
        ("backorders", &["no", "notify", "yes"][..]),
    ] {
        if let Some(v) = body.get(name).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            errors.add(name, "rest_not_in_enum", enum_message(name, allowed), Value::Null);
        }
    }
    errors.into_result()
}

/// `X is not one of a, b, and c.` as WordPress words it.
pub fn enum_message(name: &str, allowed: &[&str]) -> String {
    let list = match allowed {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [a, b] => format!("{a} and {b}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    };
    format!("{name} is not one of {list}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    #[test]
    fn every_write_moves_date_modified_forward_even_within_a_second() {
        let mut c = Catalogue::new(chrono_tz::Europe::Berlin);
        let now = at("2026-11-22T02:31:03");
        let body = json!({"name": "Hex bolt", "regular_price": "1.00"});
        let id = c.write(None, None, body.as_object().unwrap(), now).unwrap();
        let first = c.products[&id].modified;
        c.write(Some(id), None, &Map::new(), now).unwrap();
        let second = c.products[&id].modified;
        assert!(second > first, "a no-op write within the same second still moves date_modified_gmt");
    }

    #[test]
    fn meta_by_key_updates_in_place_and_keeps_its_id() {
        let mut c = Catalogue::new(chrono_tz::Europe::Berlin);
        let now = at("2026-11-22T02:31:03");
        let body = json!({"name": "Mug", "meta_data": [{"key": "_yoast_wpseo_title", "value": "a"}, {"key": "x", "value": 1}]});
        let id = c.write(None, None, body.as_object().unwrap(), now).unwrap();
        let before = c.products[&id].meta[0].id;
        let update = json!({"meta_data": [{"key": "_yoast_wpseo_title", "value": "b"}]});
        c.write(Some(id), None, update.as_object().unwrap(), now).unwrap();
        let meta = &c.products[&id].meta;
        assert_eq!((meta[0].id, meta[0].value.clone(), meta.len()), (before, json!("b"), 2));
    }

    #[test]
    fn lists_are_replaced_and_tags_by_name_are_created() {
        let mut c = Catalogue::new(chrono_tz::Europe::Berlin);
        let now = at("2026-11-22T02:31:03");
        let body = json!({"name": "Saw", "tags": [{"name": "a"}, {"name": "b"}]});
        let id = c.write(None, None, body.as_object().unwrap(), now).unwrap();
        let update = json!({"tags": [{"name": "x"}]});
        c.write(Some(id), None, update.as_object().unwrap(), now).unwrap();
        let names: Vec<&str> = c.products[&id].tags.iter().map(|t| c.tags[t].name.as_str()).collect();
        assert_eq!(names, ["x"]);
    }

    #[test]
    fn sale_price_wins_while_on_sale() {
        let mut c = Catalogue::new(chrono_tz::Europe::Berlin);
        let now = at("2026-11-22T02:31:03");
        let body = json!({"name": "Beanie", "regular_price": "17.68", "sale_price": "12.00"});
        let id = c.write(None, None, body.as_object().unwrap(), now).unwrap();
        c.write(Some(id), None, json!({"regular_price": "24.00"}).as_object().unwrap(), now).unwrap();
        assert_eq!(c.price_of(&c.products[&id]), ("12.00".to_owned(), true));
    }
}
