//! The real `enrichd` binary as a child process: one-shot commands, `enrichd run` and `enrichd
//! daemon` with the test secrets in their environment and their output in a log file, SIGKILL,
//! SIGTERM, and waiting for an exit without blocking the test's runtime.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::{PROVIDER_KEY, STORE_TOKEN};

/// How a child `enrichd` logs, and what its environment holds besides the test secrets.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// `ENRICHD_LOG`.
    pub log_level: &'a str,
    /// `--log-format json`.
    pub json_logs: bool,
    /// More variables (the tokens a test's config names).
    pub vars: &'a [(&'a str, &'a str)],
}

impl Default for Env<'_> {
    fn default() -> Self {
        Env { log_level: "warn", json_logs: false, vars: &[] }
    }
}

/// A running `enrichd` child and the file its output goes to. Dropping it stops the process
/// (SIGTERM, then SIGKILL), so a failing test leaves no daemon behind.
pub struct Enrichd {
    pub child: Child,
    pub log: PathBuf,
    /// `enrichd daemon` only: the address its HTTP server bound.
    pub addr: Option<String>,
}

/// `enrichd --config CONFIG ARGS`, with the test secrets and `env`, and no reviewer name inherited
/// from whoever runs the tests.
fn command(config: &Path, args: &[&str], env: &Env) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enrichd"));
    command.args(["--config", config.to_str().unwrap()]);
    if env.json_logs {
        command.args(["--log-format", "json"]);
    }
    command
        .args(args)
        .env("TEST_STORE_TOKEN", STORE_TOKEN)
        .env("TEST_PROVIDER_KEY", PROVIDER_KEY)
        .env("ENRICHD_LOG", env.log_level)
        .env_remove("ENRICHD_REVIEWER")
        .envs(env.vars.iter().copied());
    command
}

/// Runs a one-shot command to its end and returns what it printed and its exit status.
pub fn output(config: &Path, args: &[&str], env: &Env) -> Output {
    command(config, args, env).output().expect("running enrichd")
}

/// [`output`] off the test's runtime, for async tests whose sandboxes must keep answering meanwhile.
pub async fn output_async(config: &Path, args: &[&str], env: &Env<'_>) -> Output {
    let mut command = command(config, args, env);
    tokio::task::spawn_blocking(move || command.output().expect("running enrichd")).await.unwrap()
}

/// [`output`] with `stdin` written to the command's standard input (a password for
/// `--password-stdin`, say), off the test's runtime.
pub async fn output_with_stdin(config: &Path, args: &[&str], env: &Env<'_>, stdin: &str) -> Output {
    use std::io::Write;
    let mut command = command(config, args, env);
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running enrichd");
        // A command that refuses early may close its input first; what it printed tells why.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().expect("running enrichd")
    })
    .await
    .unwrap()
}

/// A finished command's stdout and stderr together, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

impl Enrichd {
    /// `enrichd run <pipeline>`: works the pipeline's run (resuming an interrupted one) and exits.
    pub fn run(config: &Path, pipeline: &str, log: PathBuf) -> Enrichd {
        Enrichd::run_with(config, pipeline, log, &Env::default())
    }

    /// [`Enrichd::run`] with `env`.
    pub fn run_with(config: &Path, pipeline: &str, log: PathBuf, env: &Env) -> Enrichd {
        let file = std::fs::File::create(&log).unwrap();
        let child = command(config, &["run", pipeline], env)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawning enrichd run");
        Enrichd { child, log, addr: None }
    }

    /// `enrichd daemon --bind 127.0.0.1:0`, once it has printed the address it serves on.
    pub fn daemon(config: &Path, log: PathBuf) -> Enrichd {
        Enrichd::daemon_with(config, log, &Env::default())
    }

    /// [`Enrichd::daemon`] with `env`.
    pub fn daemon_with(config: &Path, log: PathBuf, env: &Env) -> Enrichd {
        let file = std::fs::File::create(&log).unwrap();
        let mut child = command(config, &["daemon", "--bind", "127.0.0.1:0"], env)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawning enrichd daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().rsplit("http://").next().unwrap_or_default().to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "daemon did not start: {line:?} {}", read(&log));
        Enrichd { child, log, addr: Some(addr) }
    }

    /// `http://ADDR` of a daemon's server.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr.as_deref().expect("a daemon"))
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        read(&self.log)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, and reap it: nothing of it runs after this returns.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn sigterm(&self) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the process to exit; past `within` it is killed and the test fails with its log.
    pub async fn wait(mut self, within: Duration) -> (ExitStatus, String) {
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return (status, self.output());
                }
                if start.elapsed() > within {
                    self.kill9();
                    panic!("enrichd did not exit within {within:?}; its output:\n{}", self.output());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap()
    }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

impl Drop for Enrichd {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        self.sigterm();
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `enrichd demo ARGS… --bind 127.0.0.1:0 --dir DIR` (in DIR, without an OpenAI key) as a
/// person runs it, and returns it with what it printed up to its `status` line.
pub async fn start_demo(args: &[&str], dir: &Path) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .arg("demo")
        .args(args)
        .args(["--bind", "127.0.0.1:0", "--dir", dir.to_str().unwrap()])
        .env_remove("OPENAI_API_KEY")
        .env_remove("ENRICHD_CONFIG")
        .env("ENRICHD_LOG", "warn")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let last = line.trim_start().starts_with("status");
            lines.push(line);
            if last {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    (child, lines)
}

/// [`start_demo`], then the report of the demo's first run once nothing is in progress and
/// something was written (or after `settle`, whichever comes first), with what it printed. The demo
/// is stopped before returning.
pub async fn demo_report(args: &[&str], dir: &Path, settle: Duration) -> (String, serde_json::Value) {
    let (mut child, lines) = start_demo(args, dir).await;
    let config = dir.join("enrichd.toml");
    let deadline = Instant::now() + settle;
    let report = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_enrichd"))
            .args(["--config", config.to_str().unwrap(), "status", "1", "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let settled = report["in_progress"] == serde_json::json!(0) && report["written"].as_i64().unwrap_or(0) > 0;
        if settled || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    (lines.join("\n"), report)
}
