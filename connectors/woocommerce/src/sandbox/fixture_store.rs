//! The captured fixture store (`tests/fixtures/woocommerce`), rebuilt from the captured request
//! bodies and responses rather than typed out again.

use chrono::NaiveDateTime;
use serde_json::{Map, Value, json};

use super::WooSandbox;
use super::store::{Catalogue, Term};

const BATCH_DELETE_30: &str = include_str!("../../tests/fixtures/woocommerce/products_batch_delete_30.http");
const CREATE_SIMPLE: &str = include_str!("../../tests/fixtures/woocommerce/requests/product_create_simple.json");
const CREATE_VARIABLE: &str = include_str!("../../tests/fixtures/woocommerce/requests/product_create_variable.json");
const CREATE_YOAST: &str = include_str!("../../tests/fixtures/woocommerce/requests/product_create_yoast_meta.json");
const BATCH_CREATE_27: &str = include_str!("../../tests/fixtures/woocommerce/requests/products_batch_create_27.json");
const UPDATE_WITH_META: &str = include_str!("../../tests/fixtures/woocommerce/requests/product_update_with_meta.json");
const BATCH_UPDATE: &str =
    include_str!("../../tests/fixtures/woocommerce/requests/products_batch_update_with_invalid_id.json");

fn at(time: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(&format!("2026-11-22T{time}"), "%Y-%m-%dT%H:%M:%S").expect("fixed fixture time")
}

fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str::<Value>(text).ok().and_then(|v| v.as_object().cloned()).expect("fixture JSON object")
}

fn body_of_capture(capture: &str) -> Value {
    let body = capture.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).expect("fixture body is JSON")
}

/// Products 11–42 (the first round) with variations 13–14, tags 18–19; next ids 43 (posts) and 16 (terms).
pub fn build_start(sandbox: &WooSandbox) {
    let mut inner = sandbox.lock();
    let c = &mut inner.catalogue;
    for (id, name) in [(18, "cotton"), (19, "summer")] {
        c.tags.insert(id, Term { id, name: name.into(), slug: name.into(), description: String::new(), parent: 0 });
    }
    let deleted = body_of_capture(BATCH_DELETE_30);
    for product in deleted["delete"].as_array().into_iter().flatten() {
        let id = product["id"].as_u64().unwrap_or_default();
        let created = parse(&product["date_created_gmt"]);
        let modified = parse(&product["date_modified_gmt"]);
        let mut body = product.as_object().cloned().unwrap_or_default();
        for key in ["id", "categories", "variations", "images"] {
            body.remove(key);
        }
        insert_with_id(c, id, None, &body, created);
        let variation_ids: Vec<u64> =
            product["variations"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
        // The first round ran the same variation commands as the second (see build_final).
        for (vid, body) in variation_ids.into_iter().zip(hoodie_variations()) {
            insert_with_id(c, vid, Some(id), body.as_object().expect("literal"), created);
        }
        let p = c.products.get_mut(&id).expect("just inserted");
        p.categories =
            product["categories"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_u64()).collect();
        p.created = created;
        p.modified = modified;
    }
    c.next_post_id = 43;
    c.next_term_id = 16;
}

/// The bodies of `product_variation_create_S` and `_M` (inline `-d` in the README).
fn hoodie_variations() -> [Value; 2] {
    [
        json!({"sku":"FX-HOODIE-S","regular_price":"49.00","manage_stock":true,"stock_quantity":5,"attributes":[{"name":"Size","option":"S"}]}),
        json!({"sku":"FX-HOODIE-M","regular_price":"52.00","sale_price":"45.00","attributes":[{"name":"Size","option":"M"}]}),
    ]
}

fn parse(v: &Value) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(v.as_str().unwrap_or_default(), "%Y-%m-%dT%H:%M:%S").unwrap_or_default()
}

fn insert_with_id(c: &mut Catalogue, id: u64, parent: Option<u64>, body: &Map<String, Value>, now: NaiveDateTime) {
    c.next_post_id = id;
    let written = c.write(None, parent, body, now).expect("captured product body is valid");
    debug_assert_eq!(written, id);
    if let Some(p) = c.products.get_mut(&id) {
        p.created = now;
        p.modified = now;
    }
}

/// Applies the captured commands that changed the store, at the captured times.
pub fn build_final(sandbox: &WooSandbox) {
    let mut inner = sandbox.lock();
    let c = &mut inner.catalogue;
    let write = |c: &mut Catalogue, id: Option<u64>, parent: Option<u64>, body: &Map<String, Value>, time: &str| {
        let id = c.write(id, parent, body, at(time)).expect("captured request body is valid");
        c.settle_slug(id);
        id
    };
    for body in
        [json!({"name": "Clothing", "description": "Apparel and accessories"}), json!({"name": "Home & Garden"})]
    {
        c.create_category(body.as_object().expect("literal")).expect("fresh category names");
    }
    for id in 11..=42 {
        c.remove(id);
    }
    write(c, None, None, &object(CREATE_SIMPLE), "02:31:03");
    let hoodie = write(c, None, None, &object(CREATE_VARIABLE), "02:31:03");
    for v in hoodie_variations() {
        write(c, None, Some(hoodie), v.as_object().expect("literal"), "02:31:04");
    }
    write(c, None, None, &object(CREATE_YOAST), "02:31:04");
    // The 27 batch-created products were stamped over five seconds, in these group sizes.
    let batch = object(BATCH_CREATE_27);
    let seconds = [5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9];
    for (item, second) in batch["create"].as_array().into_iter().flatten().zip(seconds) {
        write(c, None, None, item.as_object().expect("batch item"), &format!("02:31:{second:02}"));
    }
    write(c, Some(50), None, &object(UPDATE_WITH_META), "02:31:34");
    let title =
        json!({"meta_data":[{"key":"_yoast_wpseo_title","value":"Ceramic Coffee Mug (350 ml) | Woo Fixture Shop"}]});
    write(c, Some(47), None, title.as_object().expect("literal"), "02:31:42");
    for item in object(BATCH_UPDATE)["update"].as_array().into_iter().flatten() {
        let mut fields = item.as_object().cloned().unwrap_or_default();
        let id = fields.remove("id").and_then(|v| v.as_u64()).unwrap_or_default();
        if c.products.contains_key(&id) {
            write(c, Some(id), None, &fields, "02:31:42");
        }
    }
    write(c, Some(53), None, &Map::new(), "02:32:14");
    write(c, Some(54), None, json!({"regular_price":"20.14"}).as_object().expect("literal"), "02:32:14");
    write(c, Some(46), Some(hoodie), json!({"regular_price":"55.00"}).as_object().expect("literal"), "02:32:16");
    c.trash(74, at("02:32:27"));
}
