//! Replays every captured WooCommerce exchange in `tests/fixtures/woocommerce` against the sandbox
//! and compares what comes back with what the real store sent.
//!
//! Requests are rebuilt from the fixture README's command list (method, URL, credentials, body
//! from `requests/` or the inline `-d`) and sent in the README's order, over HTTPS, and over plain
//! HTTP for the one plain-HTTP capture, to a sandbox that starts in the captured store's state
//! before the first command. The sandbox clock is pinned to each capture's `Date` header.
//!
//! Compared: status; `X-WP-Total`, `X-WP-TotalPages`; `Link` rels and their URLs (path and query,
//! host and key values ignored); the body's JSON types and object key sets recursively; lists of
//! objects matched by `id` (same id set, or same length where the order is random); product values
//! (names, SKUs, descriptions as served, prices, statuses, slugs, terms, meta keys and values,
//! attributes); errors' `code`, `message` and `data.status` exactly.
//!
//! What may legitimately differ (the one place that says so):
//! - timestamps: within [`TIME_TOLERANCE_SECS`] — the real store stamped a batch over several
//!   seconds and the variation's parent a second after the variation, the pinned clock does not;
//! - meta ids: the real ids come from `wp_postmeta`'s auto-increment, which WooCommerce's own
//!   hidden meta also consumes; instead the test checks that an update by key kept the id;
//! - `related_ids`: WooCommerce picks them at random on every read;
//! - lists in the default `orderby=date` order (see [`RANDOM_ORDER`]): products created in the same
//!   second tie and come back in a random order per request — that instability is what the
//!   sandbox reproduces (finding 1), so only the length and the totals are compared;
//! - the redacted key values in `auth_query_string_keys_ok.http`'s `Link` header.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use enrichd_woocommerce::sandbox::{
    APP_PASSWORD, APP_USER, CONSUMER_KEY, CONSUMER_SECRET, READ_ONLY_CONSUMER_KEY, READ_ONLY_CONSUMER_SECRET,
    WooSandbox,
};
use serde_json::Value;

const TIME_TOLERANCE_SECS: i64 = 6;

/// Captures listed in the default date order, whose members depend on a random tie-break.
const RANDOM_ORDER: [&str; 9] = [
    "products_modified_after_gmt_value_without_dates_are_gmt.http",
    "products_list_page1.http",
    "products_list_page2.http",
    "products_list_page3_last.http",
    "products_list_default_params.http",
    "products_list_after_trash.http",
    "products_list_fields_subset.http",
    "auth_query_string_keys_ok.http",
    "auth_application_password_ok.http",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/woocommerce")
}

/// A capture: status, headers (name lower-cased, in order), body.
struct Capture {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Capture {
    fn parse(raw: &str) -> Self {
        let (head, body) = raw.split_once("\r\n\r\n").expect("capture has a blank line after the headers");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
        let headers =
            lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect();
        Self { status, headers, body: body.to_owned() }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn links(&self) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == "link").map(|(_, v)| v.as_str()).collect()
    }
}

/// One README entry: the capture file, its status, and the curl command.
struct Command {
    file: String,
    method: String,
    url: String,
    user: Option<String>,
    body: Option<Vec<u8>>,
}

fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, ' ') => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

fn substitute(text: &str) -> String {
    text.replace("$CK_RO", READ_ONLY_CONSUMER_KEY)
        .replace("$CS_RO", READ_ONLY_CONSUMER_SECRET)
        .replace("$CK", CONSUMER_KEY)
        .replace("$CS", CONSUMER_SECRET)
        .replace("$APP_PW", APP_PASSWORD)
        .replace("admin:", &format!("{APP_USER}:"))
}

fn commands() -> Vec<Command> {
    let readme = std::fs::read_to_string(dir().join("README.md")).expect("fixture README");
    let section = readme.split("## Files and the exact commands").nth(1).expect("command section");
    let mut out = Vec::new();
    let mut file = None;
    for line in section.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("- `") {
            file = rest.split('`').next().map(str::to_owned);
        } else if line.starts_with("curl ") {
            let words = shell_words(line);
            let mut command = Command {
                file: file.take().expect("a command follows its file name"),
                method: "GET".into(),
                url: String::new(),
                user: None,
                body: None,
            };
            let mut i = 1;
            while i < words.len() {
                match words[i].as_str() {
                    "-u" => {
                        command.user = Some(substitute(&words[i + 1]));
                        i += 1;
                    }
                    "-X" => {
                        command.method = words[i + 1].clone();
                        i += 1;
                    }
                    "-d" => {
                        command.body = Some(words[i + 1].clone().into_bytes());
                        i += 1;
                    }
                    "--data-binary" => {
                        let path = words[i + 1].trim_start_matches('@');
                        command.body = Some(std::fs::read(dir().join(path)).expect("request body file"));
                        i += 1;
                    }
                    "-H" => i += 1,
                    w if w.starts_with("http") => command.url = substitute(w),
                    _ => {}
                }
                i += 1;
            }
            if command.body.is_some() && command.method == "GET" {
                command.method = "POST".into();
            }
            out.push(command);
        }
    }
    out
}

/// Replaces scheme, host and port of absolute URLs in `text` by `BASE`, and key values by `KEY`.
fn normalise_urls(text: &str, ours: &[String]) -> String {
    let mut text = text.replace("https://127.0.0.1:8443", "BASE").replace("http://127.0.0.1:8080", "BASE");
    for base in ours {
        text = text.replace(base.as_str(), "BASE");
    }
    let mut out = Vec::new();
    for part in text.split('&') {
        out.push(match part.split_once('=') {
            Some((k @ ("consumer_key" | "consumer_secret"), _)) => format!("{k}=KEY"),
            Some((k, v)) if k.ends_with("?consumer_key") => format!("{k}={}", if v.is_empty() { "" } else { "KEY" }),
            _ => part.to_owned(),
        });
    }
    out.join("&")
}

/// `rel` → URL of a `Link` header (several headers or comma-joined entries).
fn rels(headers: &[&str], ours: &[String]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for header in headers {
        for entry in header.split(", <") {
            let entry = entry.trim_start_matches('<');
            if let Some((url, rel)) = entry.split_once(">; rel=") {
                map.insert(rel.trim_matches('"').to_owned(), normalise_urls(url, ours));
            }
        }
    }
    map
}

const VALUE_KEYS: [&str; 22] = [
    "name",
    "slug",
    "type",
    "status",
    "sku",
    "description",
    "short_description",
    "price",
    "regular_price",
    "sale_price",
    "on_sale",
    "stock_status",
    "stock_quantity",
    "manage_stock",
    "parent_id",
    "price_html",
    "average_rating",
    "total_sales",
    "option",
    "options",
    "key",
    "value",
];

struct Compare<'a> {
    file: &'a str,
    ours: Vec<String>,
    random_order: bool,
    problems: Vec<String>,
}

impl Compare<'_> {
    fn problem(&mut self, path: &str, what: String) {
        self.problems.push(format!("{}: {path}: {what}", self.file));
    }

    fn value(&mut self, path: &str, key: &str, want: &Value, got: &Value) {
        if key.starts_with("date_") && want.is_string() && got.is_string() {
            let parse =
                |v: &Value| chrono::NaiveDateTime::parse_from_str(v.as_str().unwrap_or_default(), "%Y-%m-%dT%H:%M:%S");
            if let (Ok(w), Ok(g)) = (parse(want), parse(got)) {
                if (w - g).num_seconds().abs() > TIME_TOLERANCE_SECS {
                    self.problem(path, format!("{want} vs {got}"));
                }
                return;
            }
        }
        let in_meta = path.contains("meta_data");
        let in_related = path.contains("related_ids");
        let compare = (VALUE_KEYS.contains(&key)
            || (key == "id" && !in_meta)
            || key == "href"
            || key == "permalink"
            || key == "code"
            || key == "message")
            && !in_related;
        if !compare {
            return;
        }
        let norm = |v: &Value| match v {
            Value::String(s) => Value::String(normalise_urls(s, &self.ours)),
            other => other.clone(),
        };
        if norm(want) != norm(got) {
            self.problem(path, format!("want {want}, got {got}"));
        }
    }

    fn shape(&mut self, path: &str, key: &str, want: &Value, got: &Value) {
        match (want, got) {
            (Value::Object(w), Value::Object(g)) => {
                let wk: BTreeSet<&String> = w.keys().collect();
                let gk: BTreeSet<&String> = g.keys().collect();
                if wk != gk {
                    self.problem(
                        path,
                        format!(
                            "keys differ: missing {:?}, extra {:?}",
                            wk.difference(&gk).collect::<Vec<_>>(),
                            gk.difference(&wk).collect::<Vec<_>>()
                        ),
                    );
                }
                for (k, wv) in w {
                    if let Some(gv) = g.get(k) {
                        self.shape(&format!("{path}.{k}"), k, wv, gv);
                    }
                }
            }
            (Value::Array(w), Value::Array(g)) => {
                if key == "related_ids" {
                    return;
                }
                let ids = |a: &Vec<Value>| {
                    a.iter().map(|v| v.get("id").and_then(Value::as_u64)).collect::<Option<Vec<u64>>>()
                };
                match (ids(w), ids(g)) {
                    (Some(wi), Some(gi)) if !path.contains("meta_data") => {
                        let top_level_random = self.random_order && !path.contains('.');
                        if top_level_random {
                            if w.len() != g.len() {
                                self.problem(path, format!("{} items, got {}", w.len(), g.len()));
                            }
                        } else if wi.iter().collect::<BTreeSet<_>>() != gi.iter().collect::<BTreeSet<_>>() {
                            self.problem(path, format!("ids {wi:?}, got {gi:?}"));
                        }
                        for (wv, id) in w.iter().zip(&wi) {
                            if let Some(pos) = gi.iter().position(|g| g == id) {
                                self.shape(&format!("{path}[id={id}]"), key, wv, &g[pos]);
                            }
                        }
                    }
                    _ => {
                        if w.len() != g.len() {
                            self.problem(path, format!("{} items, got {}", w.len(), g.len()));
                        }
                        for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                            self.shape(&format!("{path}[{i}]"), key, wv, gv);
                        }
                    }
                }
                // Where the order is total (`id`, `include`), ours must be the same. (The
                // `orderby=modified` capture has three products tied on the same second.)
                if matches!(
                    self.file,
                    "products_list_include_orderby_include.http"
                        | "products_list_orderby_id_asc_page1.http"
                        | "products_list_orderby_id_asc_page2.http"
                        | "products_list_orderby_id_asc_page3.http"
                ) && !path.contains('.')
                    && ids(w) != ids(g)
                {
                    self.problem(path, format!("order {:?}, got {:?}", ids(w), ids(g)));
                }
            }
            (w, g) => {
                let kind = |v: &Value| match v {
                    Value::Null => "null",
                    Value::Bool(_) => "bool",
                    Value::Number(n) if n.is_f64() => "float",
                    Value::Number(_) => "int",
                    Value::String(_) => "string",
                    Value::Array(_) => "array",
                    Value::Object(_) => "object",
                };
                if kind(w) != kind(g) {
                    self.problem(path, format!("type {} ({w}), got {} ({g})", kind(w), kind(g)));
                } else {
                    self.value(path, key, w, g);
                }
            }
        }
    }
}

fn meta_id(body: &Value, key: &str) -> Option<u64> {
    body["meta_data"].as_array()?.iter().find(|m| m["key"] == key)?["id"].as_u64()
}

#[tokio::test]
async fn every_capture_replays_against_the_sandbox() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sandbox = WooSandbox::fixture_replay_start();
    let https = sandbox.start_https(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let http = sandbox.start(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let ours =
        vec![format!("https://{https}"), format!("http://{http}"), format!("https://127.0.0.1:{}", https.port())];
    let client = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(sandbox.certificate_pem().as_bytes()).unwrap()])
        .no_proxy()
        .build()
        .unwrap();

    let commands = commands();
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".http"))
        .collect();
    let replayed: BTreeSet<String> = commands.iter().map(|c| c.file.clone()).collect();
    assert_eq!(on_disk, replayed, "every capture has a command in the README and is replayed (none skipped)");

    let mut problems = Vec::new();
    let mut bodies: BTreeMap<String, Value> = BTreeMap::new();
    for command in &commands {
        let capture = Capture::parse(&std::fs::read_to_string(dir().join(&command.file)).unwrap());
        if let Some(date) = capture.header("date") {
            let t = httpdate::parse_http_date(date).unwrap();
            let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
            sandbox.set_time(chrono::DateTime::from_timestamp(secs, 0).unwrap().naive_utc());
        }
        let url = command
            .url
            .replace("https://127.0.0.1:8443", &format!("https://127.0.0.1:{}", https.port()))
            .replace("http://127.0.0.1:8080", &format!("http://{http}"));
        let mut request = client.request(command.method.parse().unwrap(), &url);
        if let Some(user) = &command.user {
            let (u, p) = user.split_once(':').unwrap();
            request = request.basic_auth(u, Some(p));
        }
        if let Some(body) = &command.body {
            request = request.header("content-type", "application/json").body(body.clone());
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{}: {e}", command.file));
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (total, pages) = (header("x-wp-total"), header("x-wp-totalpages"));
        let links: Vec<String> =
            response.headers().get_all("link").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        let text = response.text().await.unwrap();
        let mut cmp = Compare {
            file: &command.file,
            ours: ours.clone(),
            random_order: RANDOM_ORDER.contains(&command.file.as_str()),
            problems: Vec::new(),
        };
        if status != capture.status {
            cmp.problem("status", format!("want {}, got {status}: {text}", capture.status));
        }
        for (name, got) in [("x-wp-total", &total), ("x-wp-totalpages", &pages)] {
            if capture.header(name).map(str::to_owned) != *got {
                cmp.problem(name, format!("want {:?}, got {got:?}", capture.header(name)));
            }
        }
        let want_links = rels(&capture.links(), &ours);
        let got_links = rels(&links.iter().map(String::as_str).collect::<Vec<_>>(), &ours);
        if want_links != got_links {
            cmp.problem("Link", format!("want {want_links:?}, got {got_links:?}"));
        }
        let want: Value = serde_json::from_str(&capture.body).unwrap();
        match serde_json::from_str::<Value>(&text) {
            Err(e) => cmp.problem("body", format!("not JSON ({e}): {text}")),
            Ok(got) => {
                if want.get("code").is_some() {
                    for key in ["code", "message"] {
                        if want[key] != got[key] {
                            cmp.problem(key, format!("want {}, got {}", want[key], got[key]));
                        }
                    }
                    if want["data"]["status"] != got["data"]["status"] {
                        cmp.problem(
                            "data.status",
                            format!("want {}, got {}", want["data"]["status"], got["data"]["status"]),
                        );
                    }
                }
                cmp.shape("$", "", &want, &got);
                bodies.insert(command.file.clone(), got);
            }
        }
        problems.extend(cmp.problems);
    }

    // Meta ids cannot match the real store's, but an update by key must keep the entry's id.
    let before = meta_id(&bodies["product_get_with_yoast_meta.http"], "_yoast_wpseo_title");
    let after = meta_id(&bodies["product_update_put_existing_meta_key.http"], "_yoast_wpseo_title");
    if before.is_none() || before != after {
        problems.push(format!("meta id of _yoast_wpseo_title changed on update by key: {before:?} → {after:?}"));
    }
    // Finding 4: every write bumps date_modified_gmt, a variation's parent included.
    let modified = |file: &str| bodies[file]["date_modified_gmt"].as_str().unwrap_or_default().to_owned();
    if modified("product_get_variable_after_variation_update.http") <= modified("product_get_variable.http") {
        problems.push("the variation update did not bump the parent's date_modified_gmt".into());
    }

    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}
