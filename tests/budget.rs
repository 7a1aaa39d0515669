//! The `enrichd` binary from outside, on money and on TLS: a budget needs a price for its model
//! (exit 2 naming the key and the fix), `check` warns about unpriced models, the spend of an
//! unpriced model shows as unknown in every view (never `$0.0000`); and a TLS failure (the
//! WooCommerce sandbox's own certificate not trusted) is permanent, tried once, and explained in
//! plain words, on the store side and the provider side.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::{self, Enrichd, Env, text};
use common::woo::{woo_env, woo_sandboxes, write_woo_config};
use common::{ConfigOptions, Sandboxes, sandboxes, write_config};
use enrichd_woocommerce::sandbox::{WooSandbox, generate_catalogue};
use serde_json::Value;

fn enrichd(config: &Path, args: &[&str]) -> Output {
    process::output(config, args, &Env::default())
}

/// A config over sandboxes that are never called (`check --offline` only), edited by `edit`.
fn offline_config(dir: &Path, options: &ConfigOptions, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let sb = Sandboxes {
        store: common::StoreSandbox::new("x"),
        store_url: "http://127.0.0.1:9".into(),
        provider: common::ProviderSandbox::new(None),
        provider_url: "http://127.0.0.1:9/v1".into(),
    };
    let path = write_config(dir, "sqlite://unused.db", &sb, options);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = edit(text.clone());
    std::fs::write(&path, edited).unwrap();
    path
}

fn with_model(model: &str) -> impl Fn(String) -> String + '_ {
    move |c: String| {
        assert!(c.contains("model = \"gpt-4o-mini\""));
        c.replace("model = \"gpt-4o-mini\"", &format!("model = \"{model}\""))
    }
}

#[test]
fn a_budget_on_a_model_without_a_price_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let budget = ConfigOptions { extra_pipeline: "budget_usd = 1.0", ..ConfigOptions::default() };
    let path = offline_config(dir.path(), &budget, with_model("foo"));
    let out = enrichd(&path, &["check", "--offline"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "pipelines.catalogue.budget_usd: model \"foo\" on provider \"sim\" has no known price; add [providers.sim.prices.\"foo\"] with input/output per million tokens"
        ),
        "{}",
        text(&out)
    );

    // The fix the message names works.
    let priced = ConfigOptions {
        extra_pipeline: "budget_usd = 1.0",
        extra_provider: "[providers.sim.prices.\"foo\"]\ninput = 1.0\noutput = 2.0",
        ..ConfigOptions::default()
    };
    let path = offline_config(dir.path(), &priced, with_model("foo"));
    let out = enrichd(&path, &["check", "--offline"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("warn"), "{}", text(&out));

    // Without a budget an unpriced model is allowed, and `check` says its spend will be unknown.
    let path = offline_config(dir.path(), &ConfigOptions::default(), with_model("foo"));
    let out = enrichd(&path, &["check", "--offline"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("warn  pipelines.catalogue: model \"foo\" on provider \"sim\" has no known price")
            && text(&out).contains("spend shows as unknown"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_built_in_prices_cover_current_models_of_the_three_providers() {
    let dir = tempfile::tempdir().unwrap();
    let budget = ConfigOptions { extra_pipeline: "budget_usd = 1.0", ..ConfigOptions::default() };
    let providers = [
        ("openai", "gpt-5-mini"),
        ("openai", "gpt-5.4-nano"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-haiku-4-5-20251001"),
        ("gemini", "gemini-2.5-flash"),
        ("gemini", "gemini-2.5-flash-lite"),
    ];
    for (kind, model) in providers {
        let path = offline_config(dir.path(), &budget, |c| {
            let base_url = if kind == "openai" { "base_url = \"http://127.0.0.1:9/v1\"\n" } else { "" };
            with_model(model)(c).replace("provider = \"sim\"", "provider = \"paid\"")
                + &format!("\n[providers.paid]\nkind = \"{kind}\"\n{base_url}api_key = \"${{TEST_PROVIDER_KEY}}\"\n")
        });
        let out = enrichd(&path, &["check", "--offline"]);
        assert_eq!(out.status.code(), Some(0), "{kind} {model} has a built-in price: {}", text(&out));
    }
}

/// A run on a model without a price: its spend is unknown in the run's summary, `status`, the
/// report (text and JSON) and the UI, never `$0.0000`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spend_of_an_unpriced_model_shows_as_unknown() {
    let sb = sandboxes(6, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("enrichd.db").display());
    let path = write_config(dir.path(), &db, &sb, &ConfigOptions::default());
    let text_cfg = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, with_model("house-model-7b")(text_cfg)).unwrap();

    let out = process::output_async(&path, &["run", "catalogue"], &Env::default()).await;
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(printed.contains("cost unknown (the model has no price)"), "the run's report: {printed}");
    assert!(!printed.contains("$0.0000"), "{printed}");

    let out = process::output_async(&path, &["status"], &Env::default()).await;
    assert!(text(&out).contains("spent unknown (the model has no price)"), "{}", text(&out));
    assert!(!text(&out).contains("$0.0000"), "{}", text(&out));
    let out = process::output_async(&path, &["status", "1"], &Env::default()).await;
    assert!(text(&out).contains("cost unknown"), "{}", text(&out));
    let out = process::output_async(&path, &["status", "1", "--json"], &Env::default()).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["tokens_in"].as_i64().unwrap() > 0, "the model was used: {report}");
    assert_eq!(report["cost_usd"], Value::Null, "{report}");
    assert_eq!(report["run"]["cost_unknown"], true, "{report}");

    let daemon = Enrichd::daemon(&path, dir.path().join("daemon.log"));
    let base = daemon.base();
    let http = enrichd_connector::http::builder(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Sign in (a name only: the server has no [server.auth]).
    let login = http.get(format!("{base}/login")).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let form = login.text().await.unwrap();
    let at = form.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = form[at..].split('"').next().unwrap().to_owned();
    let signed_in = http
        .post(format!("{base}/login"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("name", "Grace")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    for page in ["/runs", "/runs/1"] {
        let html =
            http.get(format!("{base}{page}")).header("cookie", &session).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("unknown (the model has no price)"), "{page}: {html}");
        assert!(!html.contains("$0.0000"), "{page}: {html}");
    }
}

/// A TCP relay to `target` that counts the connections made through it.
async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, count)
}

const UNTRUSTED: &str = "the server's certificate is not issued by a certificate authority this machine trusts";

/// The WooCommerce sandbox serves HTTPS with its own certificate; a connection without `ca_cert`
/// fails `check` and `run` at once, on one connection, with what is wrong and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_store_certificate_fails_once_in_plain_words() {
    let sb = woo_sandboxes(WooSandbox::with_products(generate_catalogue(5, 3, 0.5))).await;
    let (relay, connections) = counting_relay(SocketAddr::from(([127, 0, 0, 1], sb.shop_port))).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("enrichd.db").display());
    let path = write_woo_config(dir.path(), &db, &sb, "none", 5, 10.0, "");
    let cfg = std::fs::read_to_string(&path).unwrap();
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.starts_with("ca_cert = "))
        .map(|l| l.replace(&format!("127.0.0.1:{}", sb.shop_port), &relay.to_string()) + "\n")
        .collect();
    std::fs::write(&path, cfg).unwrap();
    let vars = woo_env();
    let env = Env { vars: &vars, ..Env::default() };

    let started = Instant::now();
    let out = process::output_async(&path, &["check"], &env).await;
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("FAIL  connections.shop:") && printed.contains(UNTRUSTED), "{printed}");
    assert!(printed.contains("`ca_cert`"), "the message says what to do: {printed}");
    let fail = printed.lines().find(|l| l.starts_with("FAIL  connections.shop:")).unwrap();
    assert!(!fail.contains("UnknownIssuer") && !fail.contains("invalid peer certificate"), "{fail}");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "a TLS failure is not retried: {printed}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    connections.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let out = process::output_async(&path, &["run", "catalogue"], &env).await;
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("discovery failed on connection shop") && printed.contains(UNTRUSTED), "{printed}");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "listing is tried once: {printed}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

/// A model server whose certificate is not trusted: `check` says so, and `run` tries each record
/// once (the item is dead with the reason) instead of retrying it `max_attempts` times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_provider_certificate_fails_once_in_plain_words() {
    // An HTTPS server with its own certificate: the TLS handshake fails before any request.
    let shop = WooSandbox::new();
    let tls_port = shop.start_https("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (relay, connections) = counting_relay(tls_port).await;
    let sb = sandboxes(6, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("enrichd.db").display());
    let options = ConfigOptions { max_attempts: 5, ..ConfigOptions::default() };
    let path = write_config(dir.path(), &db, &sb, &options);
    let cfg = std::fs::read_to_string(&path).unwrap().replace(&sb.provider_url, &format!("https://{relay}/v1"));
    std::fs::write(&path, cfg).unwrap();

    let out = process::output_async(&path, &["check"], &Env::default()).await;
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("FAIL  providers.sim:") && printed.contains(UNTRUSTED), "{printed}");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "{printed}");

    connections.store(0, Ordering::SeqCst);
    let out = process::output_async(&path, &["run", "catalogue"], &Env::default()).await;
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    let status = process::output_async(&path, &["status", "1", "--json"], &Env::default()).await;
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    let dead = report["counts"]["dead"].as_i64().unwrap();
    assert_eq!(dead, 3, "the records missing a description: {report}");
    assert_eq!(report["enrich_retries"], dead, "one failed attempt each: {report}");
    assert_eq!(connections.load(Ordering::SeqCst) as i64, dead, "one connection per record, none retried");
    let shown = text(&process::output_async(&path, &["status", "1"], &Env::default()).await);
    assert!(shown.contains(UNTRUSTED), "the dead items say why: {shown}");
}
