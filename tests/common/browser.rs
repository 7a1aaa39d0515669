//! A real browser for the UI tests: headless Chromium through chromedriver (Debian `chromium` and
//! `chromium-driver`), driven with fantoccini. Without chromedriver the browser tests print a notice
//! and are skipped — except with `CI=true`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// chromedriver on a free port, killed on drop.
pub struct Chromedriver {
    child: Child,
    pub url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver, or returns `None` (with a notice) when it is not installed outside CI.
pub async fn chromedriver() -> Option<Chromedriver> {
    let path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    if !std::path::Path::new(&path).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and chromedriver is not at {path}: apt-get install chromium chromium-driver");
        }
        eprintln!("NOTICE: chromedriver is not at {path}; skipping the browser test. CI=true makes this a failure.");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {path}: {e}"));
    let driver = Chromedriver { child, url: format!("http://127.0.0.1:{port}") };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on port {port}");
}

pub async fn browser(driver: &Chromedriver) -> fantoccini::Client {
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1024"],
        }),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("starting Chromium through chromedriver: {e}"))
}

/// Presses one key the way a person does (key down, key up on the focused element).
pub async fn press(client: &fantoccini::Client, key: char) {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let keys =
        KeyActions::new("keyboard".into()).then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
    client.perform_actions(keys).await.unwrap();
}

pub async fn text_of(client: &fantoccini::Client, css: &str) -> String {
    let script = "return document.querySelector(arguments[0]).textContent;";
    client.execute(script, vec![Value::from(css)]).await.unwrap().as_str().unwrap().to_owned()
}

pub async fn click(client: &fantoccini::Client, css: &str) {
    client.find(fantoccini::Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

pub async fn wait_for(client: &fantoccini::Client, css: &str) {
    client.wait().for_element(fantoccini::Locator::Css(css)).await.unwrap_or_else(|e| panic!("waiting for {css}: {e}"));
}

/// Clicks something that loads a new page (a form's submit button) and returns once the new page is
/// there: the old document is marked first, so an element the old page also had does not count.
pub async fn click_and_load(client: &fantoccini::Client, css: &str) {
    client.execute("window.__old_page = true;", vec![]).await.unwrap();
    click(client, css).await;
    let mut waited = Duration::ZERO;
    loop {
        let fresh = client
            .execute("return window.__old_page === undefined && document.readyState === 'complete';", vec![])
            .await
            .unwrap_or(Value::Bool(false));
        if fresh == Value::Bool(true) {
            return;
        }
        assert!(waited < Duration::from_secs(30), "clicking {css} did not load a new page");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
}

/// Signs `name` in through the sign-in form with `password` and waits for the runs page.
pub async fn sign_in(client: &fantoccini::Client, base: &str, name: &str, password: &str) {
    use fantoccini::Locator;
    client.goto(&format!("{base}/login")).await.unwrap();
    client.find(Locator::Css("input[name=name]")).await.unwrap().send_keys(name).await.unwrap();
    client.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(password).await.unwrap();
    click(client, "form.login button").await;
    wait_for(client, "table.runs").await;
}
