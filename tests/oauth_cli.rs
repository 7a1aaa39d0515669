//! Xero and QuickBooks from the command line, as a person meets them: `enrichd sandbox xero|
//! quickbooks` print their credentials on lines of their own and a `[connections.books]` table the
//! daemon accepts as it is; `enrichd connect` (the real binary) prints the address to open, takes
//! the redirect and stores the tokens; `enrichd status` and `enrichd check` then see the connection.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{PROVIDER_KEY, ProviderSandbox};

/// A child `enrichd` with piped stdout, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn enrichd(config: &Path, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_enrichd"));
    c.args(["--config", config.to_str().unwrap()])
        .args(args)
        .env("ENRICHD_LOG", "warn")
        .env("TEST_PROVIDER_KEY", PROVIDER_KEY)
        .envs(vars.iter().copied())
        .stdin(Stdio::null());
    c
}

/// Starts `enrichd sandbox KIND --port 0` and reads what it prints up to the end of its config
/// table (the line starting with `last_key`).
async fn sandbox(kind: &str, last_key: &str) -> (Running, Vec<String>) {
    let mut child = enrichd(Path::new("unused.toml"), &["sandbox", kind, "--port", "0", "--bills", "8"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let last_key = last_key.to_owned();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with(&last_key);
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    (Running(child), lines)
}

/// The value printed on the line `label: value`.
fn printed(lines: &[String], label: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{label}:")).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no `{label}:` line in {lines:#?}"))
}

/// The `[connections.books]` table as printed.
fn table(lines: &[String]) -> String {
    let start = lines.iter().position(|l| l == "[connections.books]").expect("a config table");
    lines[start..].join("\n")
}

/// A config around the printed connection table: a database, a simulated model, and a pipeline
/// filling missing invoice numbers.
fn write_config(dir: &Path, connection: &str, provider: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[database]
url = "sqlite://{db}"
secret_key = "${{TEST_SECRET_KEY}}"

{connection}

[providers.sim]
kind = "openai"
base_url = "{provider}"
api_key = "${{TEST_PROVIDER_KEY}}"

[tasks.bill_number]
version = "1"
description = "An invoice number for a draft bill"
system = "You read supplier bills."
prompt = "Bill {{{{ record.id }}}}: give its invoice number."

[tasks.bill_number.output_schema]
type = "object"
additionalProperties = false
required = ["invoice_number"]
properties = {{ invoice_number = {{ type = "string", minLength = 1, maxLength = 200 }} }}

[tasks.bill_number.fields]
invoice_number = "invoice_number"

[pipelines.bills]
connection = "books"
entity = "bills"
task = "bill_number"
provider = "sim"
model = "gpt-4o-mini"
select = {{ missing = ["invoice_number"] }}
"#,
        db = dir.join("enrichd.db").display(),
    );
    let path = dir.join("enrichd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn output(mut command: Command) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickbooks_sandbox_config_works_as_printed() {
    let (_sandbox, lines) = sandbox("quickbooks", "access_token =").await;
    assert!(lines[0].contains("http://127.0.0.1:"), "{lines:#?}");
    let (id, secret, token) =
        (printed(&lines, "client id"), printed(&lines, "client secret"), printed(&lines, "access token"));
    assert_eq!(printed(&lines, "realm"), enrichd_quickbooks::sandbox::REALM_ID);
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &table(&lines), &format!("http://{paddr}/v1"));
    let vars = [
        ("QBO_CLIENT_ID", id.as_str()),
        ("QBO_CLIENT_SECRET", secret.as_str()),
        ("QBO_ACCESS_TOKEN", token.as_str()),
        ("TEST_SECRET_KEY", "a test key"),
    ];
    let (ok, text) = output(enrichd(&config, &["check"], &vars)).await;
    assert!(ok, "{text}");
    assert!(text.contains("ok    connections.books (quickbooks): can list bills"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_connect_from_the_command_line() {
    let (_sandbox, lines) = sandbox("xero", "client_secret =").await;
    let (id, secret) = (printed(&lines, "client id"), printed(&lines, "client secret"));
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &table(&lines), &format!("http://{paddr}/v1"));
    let vars =
        [("XERO_CLIENT_ID", id.as_str()), ("XERO_CLIENT_SECRET", secret.as_str()), ("TEST_SECRET_KEY", "a test key")];

    // Before: check says what to do; status says the connection is not authorised yet.
    let (ok, text) = output(enrichd(&config, &["check"], &vars)).await;
    assert!(!ok && text.contains("enrichd connect books"), "{text}");
    let (_, text) = output(enrichd(&config, &["status"], &vars)).await;
    assert!(text.contains("connection books (xero): not authorised yet"), "{text}");

    // `enrichd connect books`: open the printed address as a browser would.
    let mut child = enrichd(&config, &["connect", "books", "--port", "0", "--wait-secs", "60"], &vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (url, rest) = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "connect ended without printing an address");
            if line.trim_start().starts_with("http://") {
                return (line.trim().to_owned(), reader);
            }
        }
    })
    .await
    .unwrap();
    let page = enrichd_connector::http::client(std::time::Duration::from_secs(30)).get(&url).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let mut child = Running(child);
    let (status, printed_after) = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in rest.lines() {
            text.push_str(&line.unwrap());
            text.push('\n');
        }
        (child.0.wait().unwrap(), text)
    })
    .await
    .unwrap();
    assert!(status.success(), "{printed_after}");
    let tenant = format!("authorised for organisation Sandbox Trading Ltd, {}", enrichd_xero::sandbox::TENANT_ID);
    assert!(printed_after.contains(&tenant), "{printed_after}");

    let (_, text) = output(enrichd(&config, &["status"], &vars)).await;
    assert!(text.contains("connection books (xero): authorised for Sandbox Trading Ltd"), "{text}");
    let (ok, text) = output(enrichd(&config, &["check"], &vars)).await;
    assert!(ok, "{text}");
    assert!(text.contains("ok    connections.books (xero): can list bills"), "{text}");

    // Without the key the command refuses clearly, naming it.
    let no_key = write_config(dir.path(), &table(&lines), &format!("http://{paddr}/v1"));
    let text = std::fs::read_to_string(&no_key).unwrap().replace("secret_key = \"${TEST_SECRET_KEY}\"\n", "");
    std::fs::write(&no_key, text).unwrap();
    let (ok, text) = output(enrichd(&no_key, &["connect", "books", "--port", "0", "--wait-secs", "1"], &vars)).await;
    assert!(!ok && text.contains("database.secret_key is not set"), "{text}");
}
