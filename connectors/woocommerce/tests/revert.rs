//! Putting values back ([`WriteMode::Restore`]) through the WooCommerce connector over HTTPS, against
//! the sandbox store behaving as WooCommerce does: a tag list is replaced by exactly the old one, a
//! meta entry that was absent is deleted (value null), and alt text cannot be cleared (an empty
//! `alt` is ignored; alt text is the media attachment's, shared by every product using the image),
//! which the connector's read-back comparison catches and explains.

use std::net::SocketAddr;
use std::time::Duration;

use enrichd_connector::{Change, Connector, Record, WriteMode, WriteResult, WriteSubmission};
use enrichd_woocommerce::sandbox::{CONSUMER_KEY, CONSUMER_SECRET, WooSandbox};
use enrichd_woocommerce::{Auth, Options, Seo, WooCommerce};
use serde_json::{Map, Value, json};

async fn connector(sandbox: &WooSandbox) -> WooCommerce {
    let https = sandbox.start_https(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    WooCommerce::new(Options {
        base_url: format!("https://127.0.0.1:{}", https.port()),
        consumer_key: CONSUMER_KEY.into(),
        consumer_secret: CONSUMER_SECRET.into(),
        auth: Auth::Basic,
        seo: Seo::Yoast,
        timeout: Duration::from_secs(10),
        ca_cert_pem: Some(sandbox.certificate_pem()),
        status: None,
    })
    .unwrap()
}

async fn fetch(woo: &WooCommerce, id: u64) -> Record {
    woo.fetch("product", &[id.to_string()]).await.unwrap().remove(0)
}

async fn write(woo: &WooCommerce, record: &Record, fields: &Map<String, Value>, mode: WriteMode) {
    let change = Change {
        id: record.id.clone(),
        base_version: record.version.clone(),
        fields: fields.clone(),
        native: record.native.clone(),
        mode,
    };
    let WriteSubmission::Done(outcomes) = woo.write("product", &[change]).await.unwrap() else { panic!("pending") };
    assert!(matches!(outcomes[0].result, WriteResult::Written { .. }), "{outcomes:?}");
}

fn names(record: &Record, field: &str) -> Vec<String> {
    let mut names: Vec<String> =
        record.fields[field].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_restore_puts_lists_and_meta_back_exactly_and_names_the_alt_text_it_cannot_clear() {
    let sandbox = WooSandbox::new();
    let bolt = sandbox
        .seed_product(&json!({
            "name": "Hex bolt M8", "tags": [{"name": "m8"}],
            "images": [{"src": "https://images.example.com/bolt.jpg", "alt": ""}],
            "meta_data": [{"key": "_supplier_ref", "value": "ACM-1"}],
        }))
        .unwrap();
    let image = sandbox.product(bolt).unwrap()["images"][0]["id"].as_u64().unwrap();
    // A second product showing the same image (one media attachment).
    let nut = sandbox.seed_product(&json!({"name": "Hex nut M8", "images": [{"id": image}]})).unwrap();
    let woo = connector(&sandbox).await;

    // Our write: two tags, alt text, an SEO title and a meta key the product did not have.
    let before = fetch(&woo, bolt).await;
    let ours = json!({
        "tags": ["steel", "bolts"],
        "images[].alt": [{"id": image, "alt": "Hex bolt, side view"}],
        "seo_title": "Hex bolt M8 | Trade Hardware",
        "meta.care": "Keep dry",
    });
    let ours = ours.as_object().unwrap();
    let replaced: Map<String, Value> =
        ours.keys().map(|k| (k.clone(), before.fields.get(k).cloned().unwrap_or(Value::Null))).collect();
    assert_eq!(replaced["seo_title"], "", "an absent SEO entry reads as empty");
    write(&woo, &before, ours, WriteMode::Merge).await;
    let after = fetch(&woo, bolt).await;
    assert_eq!(names(&after, "tags"), ["bolts", "m8", "steel"], "a write merges: nothing is removed");
    assert_eq!(fetch(&woo, nut).await.fields["images[].alt"][0]["alt"], "Hex bolt, side view", "alt text is shared");
    for (field, value) in ours {
        assert!(woo.holds(field, value, after.fields.get(field)), "{field} was written");
        assert!(!woo.restored(field, &replaced[field], after.fields.get(field)), "{field} is not the old value");
    }

    // The revert: exactly the old lists; meta that was absent is deleted; alt text cannot be cleared.
    write(&woo, &after, &replaced, WriteMode::Restore).await;
    let back = fetch(&woo, bolt).await;
    assert_eq!(names(&back, "tags"), ["m8"], "the tags our write added are gone");
    let keys: Vec<&str> = back.native.as_ref().unwrap()["meta_data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["_supplier_ref"], "the meta our write added is deleted, not set to \"\"");
    for field in ["tags", "seo_title", "meta.care"] {
        assert!(woo.restored(field, &replaced[field], back.fields.get(field)), "{field} is back");
    }
    let alt = "images[].alt";
    assert_eq!(back.fields[alt][0]["alt"], "Hex bolt, side view", "WooCommerce ignores an empty alt");
    assert!(!woo.restored(alt, &replaced[alt], back.fields.get(alt)));
    let reason = woo.not_restored_reason(alt, &replaced[alt], back.fields.get(alt));
    for part in [&format!("image {image}"), "Hex bolt, side view", "wp/v2/media", "application password"] {
        assert!(reason.contains(part), "{part:?} missing from {reason}");
    }
    assert_eq!(fetch(&woo, nut).await.fields[alt][0]["alt"], "Hex bolt, side view");
}

#[tokio::test]
async fn a_restore_of_a_category_the_product_lost_is_refused_by_name() {
    let sandbox = WooSandbox::new();
    let id = sandbox.seed_product(&json!({"name": "Hinge", "categories": [{"name": "Hinges"}]})).unwrap();
    let woo = connector(&sandbox).await;
    let record = fetch(&woo, id).await;
    let change = Change {
        id: record.id.clone(),
        base_version: record.version.clone(),
        fields: json!({"categories": ["Hinges", "Brackets"]}).as_object().unwrap().clone(),
        native: record.native.clone(),
        mode: WriteMode::Restore,
    };
    let WriteSubmission::Done(outcomes) = woo.write("product", &[change]).await.unwrap() else { panic!("pending") };
    let WriteResult::Failed(e) = &outcomes[0].result else { panic!("{outcomes:?}") };
    assert!(e.message.contains(&format!("record {id}")) && e.message.contains("\"Brackets\""), "{}", e.message);
}
