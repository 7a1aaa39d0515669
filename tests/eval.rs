//! `enrichd eval` as the binary, over real HTTP: the WooCommerce sandbox's generated catalogue
//! (its categories are the ground truth a person set) and the simulated model answering as a
//! classifier with a known error pattern. The expected figures are computed here from the
//! sandbox's products and the pattern alone — not by calling enrichd's scoring.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::TestDb;
use common::process::{Env, output_async, text};
use common::woo::{WooSandboxes, woo_env, woo_sandboxes};
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::sandbox::provider::classify::{Classifier, ErrorRule};
use enrichd::server::{Access, Site, serve};
use enrichd_woocommerce::sandbox::{WooSandbox, generate_catalogue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The catalogue's categories, by the SKU prefix the generator gives each family.
const FAMILIES: [(&str, &str); 5] = [
    ("FAS-", "Fasteners & Fixings"),
    ("HT-", "Hand Tools"),
    ("PTA-", "Power Tool Accessories"),
    ("PLB-", "Plumbing & Heating"),
    ("ELE-", "Electrical"),
];
const PRODUCTS: usize = 70;
/// Every 7th generated product has its categories taken away: not a record a person filled.
const UNCATEGORISED_EVERY: usize = 7;

/// The error pattern: ids in buckets 0–1 of 10 are answered "Electrical" at 0.6; bucket 2 is
/// answered right but at 0.7; the rest right at 0.95.
fn classifier() -> Classifier {
    Classifier {
        clues: [(
            "categories".to_owned(),
            FAMILIES.iter().map(|(prefix, name)| (format!("\"{prefix}"), json!([name]))).collect(),
        )]
        .into(),
        confidence_property: "confidence".into(),
        confidence: 0.95,
        rules: vec![
            ErrorRule {
                modulus: 10,
                buckets: vec![0, 1],
                answers: [("categories".to_owned(), json!(["Electrical"]))].into(),
                confidence: 0.6,
            },
            ErrorRule { modulus: 10, buckets: vec![2], answers: BTreeMap::new(), confidence: 0.7 },
        ],
    }
}

/// FNV-1a, 64-bit, written out here so the test does not lean on the sandbox's own.
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 14695981039346656037;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(1099511628211);
    }
    h
}

/// What the pattern makes the model answer for a product: (category, confidence).
fn predicted(id: u64, sku: &str) -> (String, f64) {
    let right = FAMILIES.iter().find(|(p, _)| sku.starts_with(p)).map(|(_, n)| n.to_string()).unwrap();
    match fnv1a(&id.to_string()) % 10 {
        0 | 1 => ("Electrical".into(), 0.6),
        2 => (right, 0.7),
        _ => (right, 0.95),
    }
}

fn shop() -> WooSandbox {
    let mut products = generate_catalogue(PRODUCTS, 11, 0.4);
    for (i, p) in products.iter_mut().enumerate() {
        if i % UNCATEGORISED_EVERY == 3 {
            p["categories"] = json!([]);
        }
    }
    WooSandbox::with_products(products)
}

/// The truth as the store holds it: product id → (category, sku), for categorised products.
fn truth(shop: &WooSandbox) -> BTreeMap<u64, (String, String)> {
    shop.product_ids()
        .into_iter()
        .filter_map(|id| {
            let p = shop.product(id).unwrap();
            let cat = p["categories"].as_array()?.first()?["name"].as_str()?.replace("&amp;", "&");
            Some((id, (cat, p["sku"].as_str().unwrap().to_owned())))
        })
        .collect()
}

fn write_config(dir: &Path, database_url: &str, sb: &WooSandboxes) -> PathBuf {
    let pem = dir.join("shop.pem");
    std::fs::write(&pem, sb.shop.certificate_pem()).unwrap();
    let names: Vec<String> = FAMILIES.iter().map(|(_, n)| format!("{n:?}")).collect();
    let text = format!(
        r#"
[database]
url = "{database_url}"

[daemon]
retry_base_ms = 50
retry_max_seconds = 1

[connections.shop]
kind = "woocommerce"
base_url = "https://127.0.0.1:{port}"
consumer_key = "${{WOO_TEST_CK}}"
consumer_secret = "${{WOO_TEST_CS}}"
ca_cert = "{pem}"

[providers.sim]
kind = "openai"
base_url = "{provider}"
api_key = "${{WOO_TEST_PROVIDER_KEY}}"
timeout_seconds = 10

[tasks.categorise]
prompt = "Product {{{{ record.id }}}}: choose its category from the data below, and a description."
items_per_request = 4
fields = {{ categories = "categories", description = "description" }}
html = ["description"]
output_schema = {{ type = "object", additionalProperties = false, required = ["categories", "description", "confidence"], properties = {{ categories = {{ type = "array", minItems = 1, maxItems = 1, items = {{ enum = [{names}] }} }}, description = {{ type = "string" }}, confidence = {{ type = "number", minimum = 0, maximum = 1 }} }} }}

[pipelines.catalogue]
connection = "shop"
entity = "product"
task = "categorise"
provider = "sim"
model = "gpt-4o-mini"
concurrency = 4
max_attempts = 8
select = {{ missing = ["categories"] }}
review = {{ policy = "auto_approve", confidence_field = "confidence", min_confidence = 0.9 }}

[pipelines.tight]
connection = "shop"
entity = "product"
task = "categorise"
provider = "sim"
model = "gpt-4o-mini"
concurrency = 2
budget_usd = 0.0001
select = {{ missing = ["categories"] }}
"#,
        port = sb.shop_port,
        pem = pem.display(),
        provider = sb.provider_url,
        names = names.join(", "),
    );
    let path = dir.join("enrichd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn ratio(n: u64, of: u64) -> Value {
    if of == 0 { Value::Null } else { json!(n as f64 / of as f64) }
}

/// The figures the report must hold for the categories field, computed from the truth and the
/// pattern: accuracy, classes, confusion matrix, threshold table.
fn expected(truth: &BTreeMap<u64, (String, String)>) -> Value {
    let outcomes: Vec<(String, String, f64)> = truth
        .iter()
        .map(|(id, (cat, sku))| {
            let (p, c) = predicted(*id, sku);
            (cat.clone(), p, c)
        })
        .collect();
    let n = outcomes.len() as u64;
    let correct = outcomes.iter().filter(|(t, p, _)| t == p).count() as u64;
    let labels: Vec<String> =
        outcomes.iter().flat_map(|(t, p, _)| [t.clone(), p.clone()]).collect::<BTreeSet<_>>().into_iter().collect();
    let matrix: Vec<Vec<u64>> = labels
        .iter()
        .map(|t| labels.iter().map(|p| outcomes.iter().filter(|o| &o.0 == t && &o.1 == p).count() as u64).collect())
        .collect();
    let classes: Vec<Value> = labels
        .iter()
        .map(|c| {
            let truth = outcomes.iter().filter(|o| &o.0 == c).count() as u64;
            let predicted = outcomes.iter().filter(|o| &o.1 == c).count() as u64;
            let right = outcomes.iter().filter(|o| &o.0 == c && &o.1 == c).count() as u64;
            json!({"class": c, "truth": truth, "predicted": predicted, "correct": right,
                   "precision": ratio(right, predicted), "recall": ratio(right, truth)})
        })
        .collect();
    let mut cuts: Vec<f64> = vec![0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];
    for (_, _, c) in &outcomes {
        if !cuts.contains(c) {
            cuts.push(*c);
        }
    }
    cuts.sort_by(f64::total_cmp);
    let thresholds: Vec<Value> = cuts
        .iter()
        .map(|t| {
            let approved: Vec<_> = outcomes.iter().filter(|o| o.2 >= *t).collect();
            let right = approved.iter().filter(|o| o.0 == o.1).count() as u64;
            let a = approved.len() as u64;
            json!({"threshold": t, "approved": a, "share": a as f64 / n as f64, "correct": right, "accuracy": ratio(right, a)})
        })
        .collect();
    json!({
        "field": "categories", "property": "categories", "evaluated": true, "reason": null,
        "compared_as": "set", "items": n, "failed": 0,
        "scored": n, "correct": correct, "accuracy": ratio(correct, n),
        "classes": classes,
        "confusion": {"labels": labels, "matrix": matrix},
        "thresholds": thresholds,
    })
}

async fn eval_json(config: &Path, args: &[&str]) -> (Value, String) {
    let vars = woo_env();
    let env = Env { vars: &vars, ..Env::default() };
    let out = output_async(config, args, &env).await;
    assert!(out.status.success(), "enrichd {args:?}: {}", text(&out));
    (serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("--json parses: {e}: {}", text(&out))), text(&out))
}

async fn eval_gives_the_expected_figures_and_writes_nothing(db: &TestDb) {
    let sb = woo_sandboxes(shop()).await;
    sb.provider.classify(Some(classifier()));
    sb.provider.record_requests(true);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url, &sb);
    let truth = truth(&sb.shop);
    assert!(truth.len() > 40 && truth.len() < PRODUCTS, "some products lack a category: {}", truth.len());
    sb.shop.reset_inspection();

    let (report, _) = eval_json(&config, &["eval", "catalogue", "--sample", "500", "--json"]).await;

    // Counts: every product read, the categorised ones found and all of them sampled, four per request.
    assert_eq!(report["records_read"], PRODUCTS as u64, "{report:#}");
    assert_eq!(report["records_found"], truth.len() as u64);
    assert_eq!(report["sampled"], truth.len() as u64);
    assert_eq!(report["requests"], truth.len().div_ceil(4) as u64);
    assert_eq!((report["answered"].clone(), report["failed"].clone()), (json!(truth.len()), json!(0)));
    assert!(report["tokens_in"].as_i64().unwrap() > 0 && report["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(report["confidence_field"], "confidence");

    // The figures, exactly.
    let fields = report["fields"].as_array().unwrap();
    let categories = fields.iter().find(|f| f["field"] == "categories").unwrap();
    assert_eq!(categories, &expected(&truth), "report:\n{categories:#}");
    let accuracy = categories["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.5 && accuracy < 1.0, "the pattern makes some answers wrong: {accuracy}");
    // The free-text description is not scored, and says why.
    let description = fields.iter().find(|f| f["field"] == "description").unwrap();
    assert_eq!(description["evaluated"], false);
    assert!(description["reason"].as_str().unwrap().contains("free text"), "{description}");

    // The model never saw the answers: every record went with its categories emptied.
    let prompts: Vec<String> = sb
        .provider
        .received()
        .iter()
        .map(|r| r.body["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap_or("")).collect())
        .collect();
    assert_eq!(prompts.len() as u64, report["requests"].as_u64().unwrap());
    for prompt in &prompts {
        assert_eq!(prompt.matches("\"categories\": []").count(), prompt.matches("<record ").count(), "{prompt}");
        for (_, name) in FAMILIES {
            assert!(!prompt.contains(name), "the prompt shows category {name:?}:\n{prompt}");
        }
    }

    // Nothing was written to the store.
    let stats = sb.shop.stats();
    assert_eq!((stats.put, stats.batch, stats.create, stats.delete), (0, 0, 0, 0), "{stats:?}");
    assert!(sb.shop.writes().is_empty());

    // Stored, as printed.
    let stored = db.store.eval_reports("catalogue", 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(Some(stored[0].id), report["id"].as_i64());
    let mut printed = report.clone();
    printed["id"] = Value::Null;
    assert_eq!(stored[0].report, printed);

    // A smaller sample: spread over the listing, the same records each time, and said so.
    sb.provider.record_requests(false);
    let (small, _) = eval_json(&config, &["eval", "catalogue", "--sample", "10", "--json"]).await;
    let (again, _) = eval_json(&config, &["eval", "catalogue", "--sample", "10", "--json"]).await;
    assert_eq!((small["sampled"].clone(), small["records_found"].clone()), (json!(10), json!(truth.len())));
    assert_eq!(small["fields"], again["fields"], "the same sample gives the same figures");

    // The text report.
    let vars = woo_env();
    let env = Env { vars: &vars, ..Env::default() };
    let out = output_async(&config, &["eval", "catalogue", "--field", "categories"], &env).await;
    let shown = text(&out);
    println!("{shown}");
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains(&format!("accuracy {:.1}%", accuracy * 100.0)), "{shown}");
    assert!(shown.contains("threshold table") && shown.contains("confusion matrix"), "{shown}");
    assert!(shown.contains("field description (answer property description): not evaluated: not named with --field"));
    assert!(shown.contains("nothing was written to the platform"), "{shown}");

    // The UI page beside the pipeline: the latest report and the earlier ones, linked from the runs page.
    common::woo::set_woo_env();
    let loaded = Config::load(&config).unwrap();
    let engine = std::sync::Arc::new(Engine::build_for_looking(&loaded, db.store.clone()));
    let site = Site { access: Access::new(None), ..Site::from_config(&loaded) };
    let stop = CancellationToken::new();
    let (addr, _server) = serve(engine, site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let session = sign_in(&http, &base).await;
    let get = |path: &str| {
        let url = format!("{base}{path}");
        let (http, session) = (http.clone(), session.clone());
        async move {
            let r = http.get(url).header("cookie", session).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, page) = get("/pipelines/catalogue/eval").await;
    assert_eq!(status, 200, "{page}");
    let latest = db.store.eval_reports("catalogue", 10).await.unwrap();
    assert_eq!(latest.len(), 4);
    assert!(page.contains(&format!("Report #{}", latest[0].id)), "{page}");
    for r in &latest {
        assert!(page.contains(&format!("/pipelines/catalogue/eval?report={}", r.id)), "report {} listed", r.id);
    }
    let (status, first) = get(&format!("/pipelines/catalogue/eval?report={}", stored[0].id)).await;
    assert_eq!(status, 200);
    assert!(first.contains(&format!("{:.1}%", accuracy * 100.0)), "{first}");
    assert!(first.contains("Fasteners &amp; Fixings"), "labels are escaped text");
    assert!(first.contains("Not evaluated: free text"));
    let (_, runs) = get("/runs").await;
    assert!(runs.contains("href=\"/pipelines/catalogue/eval\""), "{runs}");
    let (status, _) = get("/pipelines/nosuch/eval").await;
    assert_eq!(status, 404);
    let (status, api) = get("/api/pipelines/catalogue/evals").await;
    assert_eq!(status, 200);
    let api: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["reports"].as_array().unwrap().len(), 4);
    assert_eq!(api["reports"][3], report);
    stop.cancel();
}

/// The session cookie of a signed-in reviewer on an open (loopback, no `[server.auth]`) server.
async fn sign_in(http: &reqwest::Client, base: &str) -> String {
    let cookie = |r: &reqwest::Response| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("enrichd_session="))
            .map(|v| v.split(';').next().unwrap().to_owned())
            .expect("a session cookie")
    };
    let r = http.get(format!("{base}/login")).send().await.unwrap();
    let anonymous = cookie(&r);
    let page = r.text().await.unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = page[at..].split('"').next().unwrap().to_owned();
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", &anonymous)
        .form(&[("csrf", csrf.as_str()), ("name", "ops")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    cookie(&r)
}

on_both_backends! {
    figures => eval_gives_the_expected_figures_and_writes_nothing;
}

/// Usage errors exit 2 and name what is wrong; a model that keeps failing is reported, not scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_and_retries() {
    let db = common::sqlite().await;
    let sb = woo_sandboxes(shop()).await;
    sb.provider.classify(Some(classifier()));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url, &sb);
    let vars = woo_env();
    let env = Env { vars: &vars, ..Env::default() };

    let out = output_async(&config, &["eval", "nosuch"], &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no pipeline named \"nosuch\"") && text(&out).contains("known: catalogue"));
    let out = output_async(&config, &["eval", "catalogue", "--field", "price"], &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--field price: task categorise fills no such field (it fills categories, description)")
    );
    let out = output_async(&config, &["eval", "catalogue", "--sample", "0"], &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // 429s with Retry-After and 503s: retried, and the figures are the same as without them.
    let (clean, _) = eval_json(&config, &["eval", "catalogue", "--sample", "12", "--json"]).await;
    sb.provider.set_seed(7);
    sb.provider.set_faults(enrichd::sandbox::provider::Faults {
        rate_limit_rate: 0.15,
        server_error_rate: 0.15,
        retry_after: std::time::Duration::from_millis(200),
        ..Default::default()
    });
    let (faulty, _) = eval_json(&config, &["eval", "catalogue", "--sample", "12", "--json"]).await;
    assert_eq!(faulty["failed"], 0, "{faulty:#}");
    assert_eq!(faulty["fields"], clean["fields"]);
    assert!(faulty["requests"].as_u64() > clean["requests"].as_u64(), "retries are counted: {faulty}");

    // The pipeline's budget: requests stop once it is spent; the records not asked are counted.
    sb.provider.set_faults(Default::default());
    let (tight, _) = eval_json(&config, &["eval", "tight", "--sample", "40", "--json"]).await;
    let not_sent = tight["not_sent"].as_u64().unwrap();
    assert!(not_sent > 0 && tight["answered"].as_u64().unwrap() > 0, "{tight:#}");
    assert_eq!(tight["answered"].as_u64().unwrap() + not_sent, 40);
    assert!(tight["cost_usd"].as_f64().unwrap() >= 0.0001, "stopped only once spent: {tight:#}");
    assert_eq!(tight["fields"][0]["failed"].as_u64().unwrap(), not_sent, "records not asked are not scored");

    // A provider that refuses for good: exit 1 with the reason, and no report stored.
    let stored = db.store.eval_reports("catalogue", 10).await.unwrap().len();
    sb.provider.set_faults(enrichd::sandbox::provider::Faults { quota_rate: 1.0, ..Default::default() });
    let out = output_async(&config, &["eval", "catalogue", "--sample", "4", "--json"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("none of the 4 sampled records got a usable answer (record "), "{}", text(&out));
    assert_eq!(db.store.eval_reports("catalogue", 10).await.unwrap().len(), stored);
    db.cleanup().await;
}

/// Zendesk ticket categories: tickets agents triaged (their Category dropdown value is the truth),
/// the shipped triage task with the dropdown's live options as the enum, the simulated model reading
/// the subject, with the same error pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_ticket_categories() {
    use common::zendesk::{helpdesk, write_zendesk_config, zendesk_env};
    use enrichd_zendesk::sandbox::{CATEGORIES, CATEGORY_FIELD_ID, ZendeskSandbox, sample};

    let db = common::sqlite().await;
    let hd = helpdesk(ZendeskSandbox::with_triaged_share(120, 5, 0.4)).await;
    // The model reads the subject: each sample subject names its category.
    let clues: Vec<(String, Value)> =
        (0..20).map(|n| (sample(n).0.to_owned(), json!(CATEGORIES[((n / 4) % 5) as usize].1))).collect();
    let mut pattern = classifier();
    pattern.clues = [("category".to_owned(), clues.clone())].into();
    pattern.rules[0].answers = [("category".to_owned(), json!("feedback"))].into();
    hd.provider.classify(Some(pattern));
    let dir = tempfile::tempdir().unwrap();
    let config = write_zendesk_config(dir.path(), &db.url, &hd, "", "");
    // Past the export's one-minute lag, so the listing holds every ticket.
    hd.account.advance(120);

    // The truth: tickets with a category, and what the pattern answers for each.
    let mut outcomes: Vec<(String, String)> = Vec::new();
    for id in hd.account.ticket_ids() {
        let t = hd.account.ticket(id).unwrap();
        let Some(cat) = t["custom_fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == CATEGORY_FIELD_ID)
            .and_then(|f| f["value"].as_str())
        else {
            continue;
        };
        let subject = t["subject"].as_str().unwrap();
        let right = clues.iter().find(|(s, _)| s == subject).unwrap().1.as_str().unwrap().to_owned();
        let predicted = if fnv1a(&id.to_string()) % 10 < 2 { "feedback".to_owned() } else { right };
        outcomes.push((cat.to_owned(), predicted));
    }
    let n = outcomes.len() as u64;
    assert!(n > 20 && n < 100, "about 40% triaged: {n}");
    let correct = outcomes.iter().filter(|(t, p)| t == p).count() as u64;

    let vars = zendesk_env();
    let env = Env { vars: &vars, ..Env::default() };
    let out = output_async(&config, &["eval", "triage", "--field", "custom.Category", "--json"], &env).await;
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["records_found"], n, "{report:#}");
    assert_eq!(report["requests"], n.div_ceil(10), "ten tickets per request, as the task packs them");
    let field = &report["fields"][0];
    assert_eq!((field["field"].as_str(), field["compared_as"].as_str()), (Some("custom.Category"), Some("enum")));
    assert_eq!((field["scored"].as_u64(), field["correct"].as_u64()), (Some(n), Some(correct)), "{field:#}");
    assert_eq!(field["accuracy"], ratio(correct, n));
    for class in field["classes"].as_array().unwrap() {
        let c = class["class"].as_str().unwrap();
        let truth = outcomes.iter().filter(|o| o.0 == c).count() as u64;
        let predicted = outcomes.iter().filter(|o| o.1 == c).count() as u64;
        let right = outcomes.iter().filter(|o| o.0 == c && o.1 == c).count() as u64;
        assert_eq!(
            class,
            &json!({"class": c, "truth": truth, "predicted": predicted, "correct": right,
            "precision": ratio(right, predicted), "recall": ratio(right, truth)})
        );
    }
    // The prompts offered the dropdown's live options and nothing was written.
    assert!(hd.account.received_writes().is_empty());
    db.cleanup().await;
}
