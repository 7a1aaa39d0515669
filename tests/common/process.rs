//! The real `enrichd` binary as a child process: `enrichd run` and `enrichd daemon` with the test
//! secrets in their environment and their output in a log file, SIGKILL, SIGTERM, and waiting for
//! an exit without blocking the test's runtime.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{PROVIDER_KEY, STORE_TOKEN};

/// A running `enrichd` child and the file its output goes to.
pub struct Enrichd {
    pub child: Child,
    pub log: PathBuf,
    /// `enrichd daemon` only: the address its HTTP server bound.
    pub addr: Option<String>,
}

fn command(config: &Path, log: &std::fs::File, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enrichd"));
    command
        .args(["--config", config.to_str().unwrap()])
        .args(args)
        .env("TEST_STORE_TOKEN", STORE_TOKEN)
        .env("TEST_PROVIDER_KEY", PROVIDER_KEY)
        .env("ENRICHD_LOG", "warn")
        .stderr(Stdio::from(log.try_clone().unwrap()));
    command
}

impl Enrichd {
    /// `enrichd run <pipeline>`: works the pipeline's run (resuming an interrupted one) and exits.
    pub fn run(config: &Path, pipeline: &str, log: PathBuf) -> Enrichd {
        let file = std::fs::File::create(&log).unwrap();
        let child =
            command(config, &file, &["run", pipeline]).stdout(Stdio::from(file)).spawn().expect("spawning enrichd run");
        Enrichd { child, log, addr: None }
    }

    /// `enrichd daemon --bind 127.0.0.1:0`, once it has printed the address it serves on.
    pub fn daemon(config: &Path, log: PathBuf) -> Enrichd {
        let file = std::fs::File::create(&log).unwrap();
        let mut child = command(config, &file, &["daemon", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning enrichd daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().rsplit("http://").next().unwrap_or_default().to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "daemon did not start: {line:?} {}", read(&log));
        Enrichd { child, log, addr: Some(addr) }
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
