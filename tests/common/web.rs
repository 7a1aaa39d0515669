//! The review UI's server over HTTP: a WooCommerce run waiting for review served on a free loopback
//! port, a client that does not follow redirects, and the session and CSRF plumbing of its forms.

use std::time::Duration;

use super::TestDb;
use super::harness::start_run;
use super::woo::{Woo, woo, work_until_idle};
use enrichd::config::Config;
use enrichd::server::{Access, Site, serve};
use enrichd::store::RunStatus;
use enrichd_woocommerce::sandbox::WooSandbox;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A product list from `tests/fixtures/ui/`.
pub fn fixture(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/ui/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `products` through pipeline `catalogue` with `review` (a policy name or the review table's
/// body), run until it waits for review; then the server on a free loopback port with `access`.
/// Returns the pipeline, the run's id, the server's base URL and what stops it.
pub async fn serve_shop(
    db: &TestDb,
    products: Vec<Value>,
    review: &str,
    access: Access,
) -> (Woo, i64, String, CancellationToken) {
    let w = woo(db, WooSandbox::with_products(products), review, 3).await;
    let run = start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let config = Config::load(&w.config).unwrap();
    let site = Site { access, ..Site::from_config(&config) };
    let stop = CancellationToken::new();
    let (addr, _server) = serve(w.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    (w, run.id, format!("http://{addr}"), stop)
}

/// An HTTP client that shows redirects instead of following them.
pub fn http() -> reqwest::Client {
    enrichd_connector::http::builder(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The session cookie a response sets (`enrichd_session=…`).
pub fn set_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("enrichd_session="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("the page has a form with a CSRF token") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Posts the sign-in form as `name` with `password` (from a fresh session); returns the response.
pub async fn try_sign_in(client: &reqwest::Client, base: &str, name: &str, password: &str) -> reqwest::Response {
    let r = client.get(format!("{base}/login")).send().await.unwrap();
    let anonymous = set_cookie(&r).unwrap();
    let csrf = csrf_of(&r.text().await.unwrap());
    client
        .post(format!("{base}/login"))
        .header("cookie", &anonymous)
        .form(&[("csrf", csrf.as_str()), ("name", name), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// Signs `name` in over HTTP; returns the session cookie.
pub async fn sign_in(client: &reqwest::Client, base: &str, name: &str, password: &str) -> String {
    let r = try_sign_in(client, base, name, password).await;
    assert_eq!(r.status(), 303, "signing in as {name}");
    set_cookie(&r).unwrap()
}
