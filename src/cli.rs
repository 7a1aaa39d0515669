//! The command line: `check`, `migrate`, `daemon`, `run`, `estimate`, `eval`, `status`, `resume`, `review`, `revert`,
//! `user`, `token`, `sandbox`.
//! Exit codes: 0 ok, 1 failed, 2 usage or configuration error.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod accounts;
mod progress;
mod review;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::{self, Engine};
use crate::provider::Provider;
use crate::store::{ItemState, NewRun, Run, RunCounts, RunStart, RunStatus, Store, redact_url};
use progress::Progress;

#[derive(Parser)]
#[command(
    name = "enrichd",
    version,
    about = "Fills missing record fields with an AI model, with review and safe write-back"
)]
struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "ENRICHD_CONFIG", default_value = "enrichd.toml")]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, env = "ENRICHD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config, then test the database, every connection and every provider.
    Check {
        /// Only validate the config; make no connections.
        #[arg(long)]
        offline: bool,
    },
    /// Create or upgrade the database schema.
    Migrate,
    /// Run schedules, workers and the HTTP server until SIGTERM/SIGINT.
    Daemon {
        /// Listen here instead of `server.bind`.
        #[arg(long)]
        bind: Option<String>,
        /// Serve only the review UI and the API: no schedules and no workers, so the shop's and the
        /// model's secrets are not needed (reviewing works; undo does not).
        #[arg(long)]
        ui_only: bool,
    },
    /// Run a pipeline now (or resume its unfinished run) and exit when nothing is left that does not
    /// need a human.
    Run {
        /// The pipeline's name (`[pipelines.NAME]`).
        pipeline: String,
        /// Enrich at most this many records.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Read the candidate records and report what would be enriched; store and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: list each record it would enrich (id, name, the fields it would fill).
        #[arg(long, requires = "dry_run", conflicts_with = "json")]
        list: bool,
        /// With --dry-run: print the records it would enrich and the counts as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Send a sample of the candidate records to the model and project cost and time for all of
    /// them, realtime and in batch mode. Stores and writes nothing.
    Estimate {
        /// The pipeline's name (`[pipelines.NAME]`).
        pipeline: String,
        /// Candidate records to send.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        sample: u64,
        /// Print the estimate as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the model on records a person already filled: the pipeline's task is run on a
    /// sample of them with those fields emptied, and each answer is compared with the person's
    /// value (per field: accuracy, per-class precision and recall, confusion matrix, and for each
    /// confidence threshold the share auto-approved and their accuracy). Writes nothing to the
    /// platform; the report is stored and shown at /pipelines/PIPELINE/eval.
    Eval {
        /// The pipeline's name (`[pipelines.NAME]`).
        pipeline: String,
        /// Records to evaluate at most, spread evenly over the listing.
        #[arg(long, default_value_t = crate::eval::DEFAULT_SAMPLE as u64, value_parser = clap::value_parser!(u64).range(1..))]
        sample: u64,
        /// Evaluate only this field (a record field or answer property of the task; repeatable).
        /// A named free-text field is compared exactly.
        #[arg(long = "field", value_name = "FIELD")]
        fields: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show runs: item counts by state, spend, timings; with RUN its report (`--json`: as JSON).
    Status {
        /// One run's id: its report instead of the list of runs.
        run_id: Option<i64>,
        /// Print as JSON.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Follow the run (RUN, or the newest) with progress until it stops moving, then show its report.
        #[arg(long)]
        watch: bool,
    },
    /// Resume a paused run (paused for its error rate, or by an operator): it claims work again and
    /// its error-rate window starts afresh. The daemon, or `enrichd run PIPELINE`, then works it.
    Resume {
        /// The paused run's id.
        run: i64,
        /// Your name, for the audit trail.
        #[arg(long = "as", env = "ENRICHD_REVIEWER", value_name = "NAME")]
        reviewer: String,
        /// Print the resumed run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The review queue: list, show, approve, reject, edit, release.
    #[command(subcommand)]
    Review(review::ReviewCommand),
    /// Undo written items: put back exactly the values our write replaced and read them back,
    /// unless the record was edited since (then it is a conflict and nothing is written). An item the
    /// store cannot fully restore through this connection (WooCommerce alt text) is partially
    /// reverted, with what is left and why. Exits 1 unless every item is reverted.
    Revert {
        /// One written item's id.
        #[arg(long, conflicts_with = "run", required_unless_present = "run")]
        item: Option<i64>,
        /// Every written item of the run (prints the count; act with `--confirm N`).
        #[arg(long)]
        run: Option<i64>,
        /// The count of written items you were shown for `--run`; without it nothing is changed.
        #[arg(long, requires = "run")]
        confirm: Option<i64>,
        /// Your name, for the audit trail.
        #[arg(long = "as", env = "ENRICHD_REVIEWER", value_name = "NAME")]
        reviewer: String,
        /// Print each item's outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Authorise a Xero or QuickBooks Online connection (OAuth2 with PKCE): prints the address to
    /// open in a browser, receives the platform's redirect on http://127.0.0.1:PORT/callback, lets
    /// you choose the organisation, and stores the tokens encrypted (`database.secret_key`). Runs
    /// waiting for the connection resume.
    Connect {
        /// The connection's name (`[connections.NAME]`).
        connection: String,
        /// The loopback port of the redirect URI registered with the app.
        #[arg(long, default_value_t = crate::oauth::connect::DEFAULT_PORT)]
        port: u16,
        /// The organisation to connect (Xero tenant id, QuickBooks realm id), instead of asking.
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
        /// An OAuth2 scope to ask for instead of the platform's defaults (repeatable).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Seconds to wait for the browser's redirect.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
    /// Accounts people sign in with, each with a role: viewer, reviewer, operator or admin.
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// API tokens: each acts as its account, with the account's role.
    #[command(subcommand)]
    Token(accounts::TokenCommand),
    /// Start a sandbox server for trying enrichd without accounts.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Try everything on this machine, no accounts: a WooCommerce sandbox with a generated hardware
    /// catalogue, a simulated model (or OpenAI when OPENAI_API_KEY is set), an SQLite database, and
    /// the daemon running the catalogue pipeline. Ctrl-C stops it all.
    Demo {
        /// Which demo: `shop` (WooCommerce product copy with a review sample, the default),
        /// `helpdesk` (Zendesk ticket triage every minute, confident answers written at once) or
        /// `invoices` (Xero draft bills read from their PDFs, checked, clean ones written at once).
        #[arg(value_enum, default_value_t = DemoKind::Shop)]
        kind: DemoKind,
        /// `helpdesk`: tickets in the generated account (about 60% not triaged).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
        tickets: u64,
        /// `invoices`: bills in the generated Xero organisation (most of them draft bills with a document).
        #[arg(long, default_value_t = 60, value_parser = at_least_one)]
        bills: usize,
        /// Products in the generated catalogue (about 40% without a description).
        #[arg(long, default_value_t = 300, value_parser = at_least_one)]
        products: usize,
        /// Where the daemon listens.
        #[arg(long, default_value = "127.0.0.1:8686")]
        bind: String,
        /// Keep the database, config and certificate here (default: a temporary folder removed on exit).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The demos `enrichd demo` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoKind {
    /// A WooCommerce shop's product copy, with a review sample.
    Shop,
    /// Support-ticket triage on a Zendesk account, every minute.
    Helpdesk,
    /// Supplier bills in a Xero organisation: documents read, checked, saved onto the draft bills.
    Invoices,
}

impl Command {
    /// Whether the command connects to a shop or a model: only these read all the config's secrets,
    /// so looking at runs and the queue needs none (`daemon --ui-only` reads only `server.auth`'s).
    fn connects(&self) -> bool {
        match self {
            // `review regenerate` asks the model; the rest of `review` only looks and decides.
            Command::Review(review) => review.connects(),
            Command::Migrate
            | Command::Status { .. }
            | Command::Resume { .. }
            | Command::User(_)
            | Command::Token(_)
            | Command::Daemon { ui_only: true, .. } => false,
            _ => true,
        }
    }
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// The teststore platform, filled with a sparse hardware catalogue.
    Teststore {
        /// Products in the catalogue.
        #[arg(long, default_value_t = 300)]
        products: u64,
        /// Every Nth product has no description (0: none lacks one).
        #[arg(long, default_value_t = 3)]
        missing_every: u64,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8701)]
        port: u16,
        /// The bearer token clients must send.
        #[arg(long, default_value = "sandbox-token")]
        token: String,
    },
    /// A WooCommerce store (`wc/v3` over HTTPS with a self-signed certificate) filled with a
    /// generated hardware catalogue.
    Woocommerce {
        /// Products in the generated catalogue.
        #[arg(long, default_value_t = 300)]
        products: usize,
        /// Share of products (0.0–1.0) without a description.
        #[arg(long, default_value_t = 0.4, value_parser = share)]
        missing_share: f64,
        /// Seed of the generated catalogue.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// HTTPS port.
        #[arg(long, default_value_t = 8703)]
        port: u16,
        /// Also serve plain HTTP here (only OAuth 1.0a-signed requests authenticate there).
        #[arg(long)]
        http_port: Option<u16>,
    },
    /// A Zendesk Support account (API v2 over plain HTTP on 127.0.0.1) with generated tickets in
    /// several languages, a Category dropdown, and a share already triaged by agents.
    Zendesk {
        /// Tickets generated.
        #[arg(long, default_value_t = 200)]
        tickets: u64,
        /// Share of tickets (0.0–1.0) agents have already triaged (their values are `eval`'s ground truth).
        #[arg(long, default_value_t = 0.4, value_parser = share)]
        triaged_share: f64,
        /// Seed of the generated tickets.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8704)]
        port: u16,
        /// Share of tickets (0.0–1.0) an agent edits right after enrichd reads them to write, so the
        /// write meets a newer edit.
        #[arg(long, default_value_t = 0.0, value_parser = share)]
        agent_edits: f64,
        /// A new customer ticket arrives every this many seconds (0: none).
        #[arg(long, default_value_t = 0)]
        new_ticket_every: u64,
    },
    /// A Freshdesk account (API v2 over plain HTTP on 127.0.0.1) with generated tickets, a Category
    /// dropdown, and a share already triaged by agents.
    Freshdesk {
        /// Tickets generated.
        #[arg(long, default_value_t = 200)]
        tickets: u64,
        /// Share of tickets (0.0–1.0) agents have already triaged.
        #[arg(long, default_value_t = 0.4, value_parser = share)]
        triaged_share: f64,
        /// Seed of the generated tickets.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8705)]
        port: u16,
    },
    /// A Help Scout account (Mailbox API 2.0 and its OAuth2 token endpoint over plain HTTP on
    /// 127.0.0.1) with generated conversations, a Category field, and a share already triaged.
    Helpscout {
        /// Conversations generated.
        #[arg(long, default_value_t = 200)]
        conversations: u64,
        /// Share of conversations (0.0–1.0) agents have already triaged.
        #[arg(long, default_value_t = 0.4, value_parser = share)]
        triaged_share: f64,
        /// Seed of the generated conversations.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8706)]
        port: u16,
    },
    /// A Xero organisation (Accounting API, identity and `/connections` on one plain-HTTP base URL on
    /// 127.0.0.1) with draft supplier bills whose PDFs it generates.
    Xero {
        /// Bills generated.
        #[arg(long, default_value_t = 60)]
        bills: usize,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8707)]
        port: u16,
    },
    /// A QuickBooks Online company (API v3 and the OAuth2 endpoints on one plain-HTTP base URL on
    /// 127.0.0.1) with bills and their attached PDFs.
    Quickbooks {
        /// Bills generated.
        #[arg(long, default_value_t = 60)]
        bills: u64,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8708)]
        port: u16,
    },
    /// An OpenAI-compatible simulated model.
    Provider {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8702)]
        port: u16,
        /// The API key clients must send (default: any).
        #[arg(long)]
        api_key: Option<String>,
        /// Milliseconds each answer takes.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
}

/// A count of at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A share between 0.0 and 1.0.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        Ok(x) => Err(format!("{x} is not between 0.0 and 1.0")),
        Err(e) => Err(e.to_string()),
    }
}

/// The command line's definition (every command, argument and help text).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// A command's failure: the exit code and what to tell the user.
struct Failure {
    code: u8,
    message: String,
}

fn failed(message: impl Into<String>) -> Failure {
    Failure { code: 1, message: message.into() }
}

fn config_error(message: impl Into<String>) -> Failure {
    Failure { code: 2, message: message.into() }
}

/// Parses arguments, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    if !matches!(cli.command, Command::Daemon { .. } | Command::Demo { .. } | Command::Sandbox(_)) {
        end_quietly_on_closed_pipe();
    }
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// A reader that goes away early (`enrichd status | head -1`) ends the command as it ends any Unix
/// tool, quietly, instead of `println!` panicking on the broken pipe (Rust ignores SIGPIPE by
/// default). Not for the servers: their sockets already report a closed peer as an error, and a
/// closed stdout must not stop them.
fn end_quietly_on_closed_pipe() {
    // SAFETY: restores the default action of one signal before any thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ENRICHD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        // rustls-platform-verifier logs each refused certificate by its enum name; the error it
        // causes says the same in plain words (`enrichd_connector::http::transport_error`).
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tokio_cron_scheduler=warn,rustls_platform_verifier=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    if let Command::Sandbox(which) = cli.command {
        return sandbox(which).await;
    }
    if let Command::Demo { kind, tickets, products, bills, bind, dir } = &cli.command {
        return match kind {
            DemoKind::Shop => demo(*products, bind, dir.as_deref()).await,
            DemoKind::Helpdesk => demo_helpdesk(*tickets, bind, dir.as_deref()).await,
            DemoKind::Invoices => demo_invoices(*bills, bind, dir.as_deref()).await,
        };
    }
    let mut config = Config::read(&cli.config).map_err(|e| config_error(e.to_string()))?;
    if cli.command.connects() {
        config.resolve_secrets().map_err(|e| match cli.command {
            Command::Daemon { .. } => {
                config_error(format!("{e} (`enrichd daemon --ui-only` serves the review UI without it)"))
            }
            _ => config_error(e.to_string()),
        })?;
    } else if matches!(cli.command, Command::Daemon { .. }) {
        config.resolve_server_secrets().map_err(|e| config_error(e.to_string()))?;
    }
    match cli.command {
        Command::Check { offline } => check(&config, offline).await,
        Command::Migrate => {
            let store = open_store(&config).await?;
            println!("database {} is up to date", redact_url(&config.database.url));
            store.close().await;
            Ok(())
        }
        Command::Daemon { bind, ui_only } => {
            daemon(&config, bind, if ui_only { Work::UiOnly } else { Work::Pipelines }).await
        }
        Command::Run { pipeline, limit, dry_run, list, json } => {
            config.pipeline(&pipeline).map_err(config_error)?;
            if dry_run {
                let output = match (list, json) {
                    (_, true) => DryRunOutput::Json,
                    (true, false) => DryRunOutput::List,
                    (false, false) => DryRunOutput::Summary,
                };
                dry_run_pipeline(&config, &pipeline, limit, output).await
            } else {
                run(&config, &pipeline, limit).await
            }
        }
        Command::Status { run_id, json: _, watch: true } => watch(&config, run_id).await,
        Command::Status { run_id, json, watch: false } => status(&config, run_id, json).await,
        Command::Resume { run, reviewer, json } => resume(&config, run, &reviewer, json).await,
        Command::Review(command) => review::review(&config, command).await,
        Command::User(command) => accounts::user(&config, command).await,
        Command::Token(command) => accounts::token(&config, command).await,
        Command::Revert { item, run, confirm, reviewer, json } => {
            review::revert_cmd(&config, item, run, confirm, &reviewer, json).await
        }
        Command::Estimate { pipeline, sample, json } => {
            config.pipeline(&pipeline).map_err(config_error)?;
            let estimate = crate::estimate::estimate(&config, &pipeline, sample as usize).await.map_err(failed)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&estimate).expect("serialisable"));
            } else {
                print!("{}", estimate.report());
            }
            Ok(())
        }
        Command::Eval { pipeline, sample, fields, json } => {
            config.pipeline(&pipeline).map_err(config_error)?;
            let store = open_store(&config).await?;
            let options = crate::eval::EvalOptions { sample: sample as usize, fields };
            let result = crate::eval::evaluate(&config, &store, &pipeline, &options).await;
            store.close().await;
            let report = result.map_err(|e| match e {
                crate::eval::EvalError::Usage(m) => config_error(m),
                crate::eval::EvalError::Failed(m) => failed(m),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
            } else {
                print!("{}", report.text());
            }
            Ok(())
        }
        Command::Connect { connection, port, tenant, scopes, wait_secs } => {
            let options = crate::oauth::connect::ConnectOptions {
                port,
                tenant,
                scopes,
                wait: Duration::from_secs(wait_secs.max(1)),
                interactive: std::io::IsTerminal::is_terminal(&std::io::stdin()),
            };
            connect(&config, &connection, &options).await
        }
        Command::Sandbox(_) | Command::Demo { .. } => unreachable!("handled above"),
    }
}

/// Loads a demo's own config, creates its pipeline's first run, and returns them with the command
/// line a shell runs for more (this binary and the demo's config, quoted where needed).
async fn start_demo_run(path: &std::path::Path, pipeline_name: &str) -> Result<(Config, Run, String), Failure> {
    let config = Config::load(path).map_err(|e| failed(format!("the demo's own config: {e}")))?;
    let store = open_store(&config).await?;
    let pipeline = &config.pipelines[pipeline_name];
    let new = crate::scheduler::manual_run(pipeline_name, pipeline);
    let run = match store.create_run(&new).await.map_err(|e| failed(e.to_string()))? {
        RunStart::Created(run) | RunStart::AlreadyActive(run) => run,
        RunStart::TickTaken => unreachable!("manual runs have no tick"),
    };
    store.close().await;
    let exe = std::env::current_exe().map_err(|e| failed(format!("finding this program's path: {e}")))?;
    let enrichd =
        format!("{} --config {}", shell_word(&exe.display().to_string()), shell_word(&path.display().to_string()));
    Ok((config, run, enrichd))
}

async fn demo(products: usize, bind: &str, dir: Option<&std::path::Path>) -> Result<(), Failure> {
    let demo = crate::demo::prepare(products, dir, bind).await.map_err(failed)?;
    let (config, run, enrichd) = start_demo_run(&demo.config, "catalogue").await?;
    let sample = (crate::demo::DEMO_SAMPLE as usize).min(demo.bare);
    let announce = move |addr: SocketAddr| {
        println!("enrichd demo");
        println!(
            "  store     WooCommerce sandbox at {} ({} products, {} without a description)",
            demo.shop_url, demo.products, demo.bare
        );
        println!("  model     {}", demo.model_label);
        println!("  files     {} (config, SQLite database, certificate)", demo.dir.display());
        println!(
            "  run       {} of pipeline catalogue: the first {sample} proposals wait for review, then the run is held",
            run.id,
        );
        println!(
            "  review    http://{addr}/queue?run={} (the review UI; keys: a approve, r reject, e edit, j/k next/previous)",
            run.id
        );
        println!("            or: {enrichd} review list --run {}", run.id);
        println!("            {enrichd} review approve --run {} --confirm {sample} --as YOUR_NAME", run.id);
        println!("            {enrichd} review release --run {} --as YOUR_NAME", run.id);
        println!("  run page  http://{addr}/runs/{} (progress and the report)", run.id);
        println!("  status    {enrichd} status {}", run.id);
        demo
    };
    let demo = serve_daemon(&config, None, Work::Pipelines, announce).await?;
    drop(demo);
    Ok(())
}

async fn demo_helpdesk(tickets: u64, bind: &str, dir: Option<&std::path::Path>) -> Result<(), Failure> {
    let demo = crate::demo::prepare_helpdesk(tickets, dir, bind).await.map_err(failed)?;
    let (config, run, enrichd) = start_demo_run(&demo.config, "triage").await?;
    let announce = move |addr: SocketAddr| {
        println!("enrichd demo helpdesk");
        println!(
            "  helpdesk  Zendesk sandbox at {} ({} tickets, {} not triaged; a new one every {} s)",
            demo.account_url,
            demo.tickets,
            demo.untriaged,
            crate::demo::NEW_TICKET_EVERY
        );
        println!("  model     {}", demo.model_label);
        println!("  files     {} (config, SQLite database)", demo.dir.display());
        println!(
            "  pipeline  triage: every minute, tickets without a category; answers at least {} sure are written at once",
            crate::demo::HELPDESK_MIN_CONFIDENCE
        );
        println!("  run       {} (the first one, started now)", run.id);
        println!("  review    http://{addr}/queue (the less sure answers wait here)");
        println!("  runs      http://{addr}/runs (one run per minute with new tickets; none for a quiet minute)");
        println!("  status    {enrichd} status");
        demo
    };
    let demo = serve_daemon(&config, None, Work::Pipelines, announce).await?;
    drop(demo);
    Ok(())
}

async fn demo_invoices(bills: usize, bind: &str, dir: Option<&std::path::Path>) -> Result<(), Failure> {
    let demo = crate::demo::prepare_invoices(bills, dir, bind).await.map_err(failed)?;
    let (config, run, enrichd) = start_demo_run(&demo.config, "bills").await?;
    let announce = move |addr: SocketAddr| {
        println!("enrichd demo invoices");
        println!(
            "  books     Xero sandbox at {} ({} bills, {} draft bills with a document; {} requests a minute)",
            demo.books_url,
            demo.bills,
            demo.candidates,
            crate::demo::INVOICES_DEMO_PER_MINUTE
        );
        println!("  model     {}", demo.model_label);
        println!("  files     {} (config, SQLite database)", demo.dir.display());
        println!(
            "  pipeline  bills: each draft bill's document read, checked and looked up; clean ones written at once, the rest wait"
        );
        println!("  run       {} (started now)", run.id);
        println!(
            "  review    http://{addr}/queue (bills that failed a check, new suppliers, credit notes, duplicates)"
        );
        println!("  runs      http://{addr}/runs/{}", run.id);
        println!("  status    {enrichd} status");
        demo
    };
    let demo = serve_daemon(&config, None, Work::Pipelines, announce).await?;
    drop(demo);
    Ok(())
}

/// `word` as one shell word: as it is when it has nothing a shell would split or expand.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

async fn connect(
    config: &Config,
    connection: &str,
    options: &crate::oauth::connect::ConnectOptions,
) -> Result<(), Failure> {
    if !config.connections.contains_key(connection) {
        let known: Vec<&str> = config.connections.keys().map(String::as_str).collect();
        return Err(config_error(format!("no connection named {connection:?} (connections: {})", known.join(", "))));
    }
    let store = open_store(config).await?;
    let result = crate::oauth::connect::connect(config, &store, connection, options, |url, redirect| {
        println!("Open this address in a browser to authorise connection {connection}:");
        println!();
        println!("  {url}");
        println!();
        println!("Waiting for the platform to redirect the browser to {redirect} ...");
    })
    .await;
    store.close().await;
    let connected = result.map_err(failed)?;
    let name = connected.tenant_name.as_deref().map(|n| format!("{n}, ")).unwrap_or_default();
    println!(
        "connection {} authorised for organisation {name}{}; tokens stored encrypted",
        connected.connection, connected.tenant_id
    );
    if !connected.resumed_runs.is_empty() {
        let ids: Vec<String> = connected.resumed_runs.iter().map(|id| id.to_string()).collect();
        println!("resumed run(s) {} that waited for it", ids.join(", "));
    }
    Ok(())
}

async fn open_store(config: &Config) -> Result<Store, Failure> {
    let url = &config.database.url;
    let store = Store::connect(url, config.database.max_connections)
        .await
        .map_err(|e| failed(format!("database.url {}: {e}", redact_url(url))))?;
    store.migrate().await.map_err(|e| failed(format!("database.url {}: {e}", redact_url(url))))?;
    Ok(store)
}

async fn check(config: &Config, offline: bool) -> Result<(), Failure> {
    println!(
        "config {} is valid: {} connection(s), {} provider(s), {} task(s), {} pipeline(s)",
        config.file.display(),
        config.connections.len(),
        config.providers.len(),
        config.tasks.len(),
        config.pipelines.len()
    );
    for (name, p) in &config.pipelines {
        if !config.priced(p) {
            println!("warn  pipelines.{name}: {}; until then its spend shows as unknown", config.unpriced_message(p));
        }
    }
    if offline {
        print_shared_auth_deprecation(config, false);
        return Ok(());
    }
    let mut problems = Vec::new();
    let mut accounts = 0;
    match Store::connect(&config.database.url, 1).await {
        Ok(store) => match store.ping().await {
            Ok(()) => {
                println!("ok    database {}", redact_url(&config.database.url));
                // An older schema has no accounts table yet: then there are no accounts.
                accounts = store.accounts().await.map_or(0, |a| a.len());
            }
            Err(e) => problems.push(format!("database.url {}: {e}", redact_url(&config.database.url))),
        },
        Err(e) => problems.push(format!("database.url {}: {e}", redact_url(&config.database.url))),
    }
    if accounts > 0 {
        println!("ok    accounts: {accounts} (people sign in with their own; `enrichd user list`)");
    }
    print_shared_auth_deprecation(config, accounts > 0);
    for (name, conn) in &config.connections {
        // OAuth2 connections (Xero, QuickBooks) read the tokens `enrichd connect` stored.
        let connector = engine::build_named(config, name);
        let mut entities: Vec<&str> =
            config.pipelines.values().filter(|p| &p.connection == name).map(|p| p.entity.as_str()).collect();
        entities.dedup();
        if entities.is_empty() {
            println!("skip  connections.{name}: no pipeline uses it");
        }
        for entity in entities {
            match connector.check(entity).await {
                Ok(()) => println!("ok    connections.{name} ({}): can list {entity}", conn.kind()),
                Err(e) => problems.push(format!("connections.{name}: {e}")),
            }
        }
    }
    for (name, p) in &config.providers {
        match Provider::build(name, p).check().await {
            Ok(()) => println!("ok    providers.{name}"),
            Err(e) => problems.push(format!("providers.{name}: {e}")),
        }
    }
    for p in &problems {
        println!("FAIL  {p}");
    }
    if problems.is_empty() { Ok(()) } else { Err(failed(format!("{} check(s) failed", problems.len()))) }
}

/// `check`: the `[server.auth]` deprecation, when it is configured.
fn print_shared_auth_deprecation(config: &Config, accounts: bool) {
    if let Some(auth) = &config.server.auth {
        let note = crate::server::shared_auth_deprecation(auth.password.is_some(), auth.token.is_some(), accounts);
        println!("warn  server.auth: {note}");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
    }
}

/// What a daemon does besides serving the UI and API.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Schedules and workers for every pipeline.
    Pipelines,
    /// Nothing: `--ui-only`.
    UiOnly,
}

async fn daemon(config: &Config, bind: Option<String>, work: Work) -> Result<(), Failure> {
    serve_daemon(config, bind, work, |addr| match work {
        Work::Pipelines => println!("enrichd daemon listening on http://{addr}"),
        Work::UiOnly => {
            println!("enrichd daemon listening on http://{addr} (UI only: no schedules, no workers, no undo)")
        }
    })
    .await
}

/// Runs the daemon until SIGTERM/SIGINT; `announce` is told the address once the server listens,
/// and what it returns lives until the daemon stops.
async fn serve_daemon<T>(
    config: &Config,
    bind: Option<String>,
    work: Work,
    announce: impl FnOnce(SocketAddr) -> T,
) -> Result<T, Failure> {
    let bind = bind.unwrap_or_else(|| config.server.bind.clone());
    let site = crate::server::Site::from_config(config);
    // Whether the server may listen beyond loopback depends on the accounts in the database.
    let store = open_store(config).await?;
    site.access.use_store(store.clone());
    crate::server::check_bind(&bind, &site.access).await.map_err(config_error)?;
    if let Some(auth) = &config.server.auth {
        let accounts = store.has_accounts().await.map_err(|e| failed(e.to_string()))?;
        let note = crate::server::shared_auth_deprecation(auth.password.is_some(), auth.token.is_some(), accounts);
        tracing::warn!("{note}");
    }
    let engine = Arc::new(match work {
        Work::Pipelines => Engine::build(config, store.clone()),
        Work::UiOnly => Engine::build_for_looking(config, store.clone()),
    });
    let stop = CancellationToken::new();
    let upkeep_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (addr, server) =
        crate::server::serve(engine.clone(), site, &bind, upkeep_stop.clone()).await.map_err(failed)?;
    // A daemon that works nothing holds no leases and takes no share of the providers' rate limits.
    let upkeep = (work == Work::Pipelines).then(|| engine.spawn_upkeep(upkeep_stop.clone()));
    // Notifications are recorded and delivered by the daemons that work pipelines.
    let notifier = (work == Work::Pipelines)
        .then(|| Arc::new(crate::notify::Notifier::new(config, store.clone(), &engine.owner)).spawn(stop.clone()));
    let schedules: Vec<crate::scheduler::Schedule> = config
        .pipelines
        .iter()
        .filter(|_| work == Work::Pipelines)
        .filter_map(|(name, p)| {
            Some(crate::scheduler::Schedule {
                pipeline: name.clone(),
                cron: crate::scheduler::parse_cron(p.schedule.as_ref()?).ok()?,
                max_attempts: p.max_attempts as i64,
                budget_micros: p.budget_usd.map(crate::scheduler::usd_to_micros),
                sample: p.review.sample_gate(),
            })
        })
        .collect();
    let scheduled = schedules.len();
    let mut scheduler = crate::scheduler::start(store.clone(), schedules).await.map_err(failed)?;
    let workers: Vec<_> = engine
        .pipelines
        .values()
        .map(|p| {
            let (engine, p, stop, tracker) = (engine.clone(), p.clone(), stop.clone(), tracker.clone());
            tokio::spawn(async move { engine.work_pipeline(p, None, stop, tracker).await })
        })
        .collect();
    tracing::info!(%addr, owner = %engine.owner, pipelines = engine.pipelines.len(), scheduled, "enrichd daemon running");
    let announced = announce(addr);
    shutdown_signal().await;
    stop.cancel();
    let _ = scheduler.shutdown().await;
    engine::drain(&engine, &tracker, engine.shutdown_grace()).await;
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
    }
    if let Some(notifier) = notifier {
        let _ = tokio::time::timeout(Duration::from_secs(2), notifier).await;
    }
    upkeep_stop.cancel();
    if let Some(upkeep) = upkeep {
        let _ = upkeep.await;
    }
    let _ = server.await;
    store.close().await;
    tracing::info!("enrichd daemon stopped");
    Ok(announced)
}

async fn run(config: &Config, pipeline_name: &str, limit: Option<u64>) -> Result<(), Failure> {
    let store = open_store(config).await?;
    let engine = Arc::new(Engine::build(config, store.clone()));
    let pipeline = engine.pipelines[pipeline_name].clone();
    let new =
        NewRun { item_limit: limit.map(|l| l as i64), ..crate::scheduler::manual_run(pipeline_name, &pipeline.config) };
    // A run waiting for review whose approved items are not yet written is unfinished: work it. A
    // new run would skip every record that run holds and write nothing.
    let approved = match store.active_run(pipeline_name).await.map_err(|e| failed(e.to_string()))? {
        Some(_) => None,
        None => run_with_approved_items(&store, pipeline_name).await?,
    };
    let run = if let Some((run, n)) = approved {
        println!("run {} of {pipeline_name} has {n} approved item(s) to write; writing them", run.id);
        run
    } else {
        match store.create_run(&new).await.map_err(|e| failed(e.to_string()))? {
            RunStart::Created(run) => {
                println!("run {} of {pipeline_name} started", run.id);
                run
            }
            RunStart::AlreadyActive(run) if run.status == RunStatus::Paused => {
                store.close().await;
                return Err(failed(format!(
                    "run {} of {pipeline_name} is paused ({}); `enrichd resume {} --as NAME` resumes it, then `enrichd run {pipeline_name}` works it",
                    run.id,
                    run.status_reason.unwrap_or_default(),
                    run.id
                )));
            }
            RunStart::AlreadyActive(run) => {
                println!("resuming run {} of {pipeline_name} ({}), started earlier", run.id, run.plain_state());
                run
            }
            RunStart::TickTaken => unreachable!("manual runs have no tick"),
        }
    };
    let stop = CancellationToken::new();
    let upkeep_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let upkeep = engine.spawn_upkeep(upkeep_stop.clone());
    let worker = {
        let (engine, stop, tracker) = (engine.clone(), stop.clone(), tracker.clone());
        tokio::spawn(async move { engine.work_pipeline(pipeline, Some(run.id), stop, tracker).await })
    };
    let started = Instant::now();
    let mut progress = Progress::new(std::io::stdout().is_terminal());
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut interrupted = false;
    let mut looked = Duration::ZERO;
    let _last_seen = loop {
        tokio::select! {
            _ = &mut signal => { interrupted = true; break store.run(run.id).await.ok() }
            _ = tokio::time::sleep(engine::paced(Duration::from_millis(250), looked)) => {}
        }
        let look = Instant::now();
        let (Ok(current), Ok(counts)) = (store.run(run.id).await, store.counts(run.id).await) else {
            continue;
        };
        looked = look.elapsed();
        progress.show(&current, &counts, started.elapsed());
        // Approved items of a run awaiting review are still ours to write; items held behind a
        // sample gate are not ours until a reviewer releases them.
        let busy = matches!(current.status, RunStatus::Discovering | RunStatus::Running)
            || (current.status == RunStatus::AwaitingReview
                && counts.sum(&[ItemState::Approved, ItemState::Writing, ItemState::WriteFailed]) > 0);
        if !busy {
            break Some(current);
        }
    };
    stop.cancel();
    engine::drain(&engine, &tracker, engine.shutdown_grace()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), worker).await;
    upkeep_stop.cancel();
    let _ = upkeep.await;
    // The last writes may have finished the run since the settle loop last looked.
    if let Err(e) = store.settle_run(run.id, &engine.owner).await {
        tracing::warn!(run = run.id, error = %e, "settling the run failed");
    }
    let report = store.report(run.id).await.map_err(|e| failed(e.to_string()))?;
    for line in report.lines() {
        println!("{line}");
    }
    let (final_run, counts) = (report.run, report.counts);
    store.close().await;
    if interrupted {
        return Err(failed(format!("interrupted; `enrichd run {pipeline_name}` resumes run {}", final_run.id)));
    }
    match final_run.status {
        RunStatus::Failed | RunStatus::Paused | RunStatus::Cancelled => Err(failed(format!(
            "run {} {}: {}",
            final_run.id,
            final_run.status.plain(),
            final_run.status_reason.unwrap_or_default()
        ))),
        _ if counts.get(ItemState::Dead) > 0 => Err(failed(format!(
            "run {}: {} item(s) dead; `enrichd status {}` shows why",
            final_run.id,
            counts.get(ItemState::Dead),
            final_run.id
        ))),
        _ => {
            if counts.awaiting_review() > 0 {
                println!("{} proposal(s) wait for review", counts.awaiting_review());
            }
            if review::held_for_sample(&final_run) {
                println!(
                    "the rest of run {} is held until its sample is reviewed: `enrichd review list --run {0}`, then `enrichd review release --run {0} --as NAME` and `enrichd run {pipeline_name}`",
                    final_run.id
                );
            }
            Ok(())
        }
    }
}

/// The pipeline's oldest run waiting for review that still has approved items to write, with
/// how many.
async fn run_with_approved_items(store: &Store, pipeline: &str) -> Result<Option<(Run, i64)>, Failure> {
    let mut waiting = store.runs(&[RunStatus::AwaitingReview], 1000).await.map_err(|e| failed(e.to_string()))?;
    waiting.retain(|r| r.pipeline == pipeline);
    for run in waiting.into_iter().rev() {
        let counts = store.counts(run.id).await.map_err(|e| failed(e.to_string()))?;
        let to_write = counts.sum(&[ItemState::Approved, ItemState::Writing, ItemState::WriteFailed]);
        if to_write > 0 {
            return Ok(Some((run, to_write)));
        }
    }
    Ok(None)
}

fn summary_line(run: &Run, counts: &RunCounts) -> String {
    let reason = run.reason_beyond_state().map(|r| format!(" ({r})")).unwrap_or_default();
    let states: Vec<String> = counts.0.iter().map(|(s, n)| format!("{} {n}", s.plain())).collect();
    format!(
        "run {} {}{reason}: {} items — {} · spent {}, {} tokens in, {} out",
        run.id,
        run.plain_state(),
        counts.total(),
        if states.is_empty() { "none".into() } else { states.join(", ") },
        run.spent_text(),
        run.tokens_in,
        run.tokens_out
    )
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// How `run --dry-run` reports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DryRunOutput {
    /// The counts.
    Summary,
    /// One line per record, then the counts.
    List,
    /// A JSON document with the records and the counts.
    Json,
}

/// One record a dry run would enrich.
#[derive(serde::Serialize)]
struct DryRunRecord {
    id: String,
    /// Its `name`, `title` or `subject`; empty when it has none.
    name: String,
    /// The fields the pipeline would fill.
    fields: Vec<String>,
}

async fn dry_run_pipeline(
    config: &Config,
    pipeline_name: &str,
    limit: Option<u64>,
    output: DryRunOutput,
) -> Result<(), Failure> {
    let p = &config.pipelines[pipeline_name];
    let connector = engine::build_named(config, &p.connection);
    let task = crate::task::Task::build(&p.task, &config.tasks[&p.task])
        .map_err(|(k, m)| config_error(format!("tasks.{}.{k}: {m}", p.task)))?;
    let mut records = Vec::new();
    let found = crate::select::list_candidates(&*connector, p, &task, limit, |record, wanted| {
        let name = crate::select::record_name(record).unwrap_or_default();
        records.push(DryRunRecord { id: record.id.clone(), name, fields: wanted.to_vec() });
    })
    .await
    .map_err(failed)?;
    let (read, by_field) = (found.read, found.by_field);
    let candidates = records.len() as u64;
    if output == DryRunOutput::Json {
        let doc = json!({
            "pipeline": pipeline_name,
            "read": read,
            "candidates": candidates,
            "nothing_missing": read - candidates,
            "fields": by_field,
            "records": records,
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("serialisable"));
        return Ok(());
    }
    if output == DryRunOutput::List {
        for r in &records {
            let name = if r.name.is_empty() { String::new() } else { format!("  {}", r.name) };
            println!("record {}{name}: {}", r.id, r.fields.join(", "));
        }
    }
    let fields: Vec<String> = by_field.iter().map(|(f, n)| format!("{f} {n}")).collect();
    println!(
        "dry run of {pipeline_name}: {read} records read, {candidates} would be enriched ({}), {} have nothing missing; nothing stored or written",
        fields.join(", "),
        read - candidates
    );
    Ok(())
}

async fn status(config: &Config, run_id: Option<i64>, as_json: bool) -> Result<(), Failure> {
    let store = open_store(config).await?;
    let runs = match run_id {
        Some(id) => vec![store.run(id).await.map_err(|e| failed(e.to_string()))?],
        None => store.runs(&[], 20).await.map_err(|e| failed(e.to_string()))?,
    };
    let mut out = Vec::new();
    for run in runs {
        let counts = store.counts(run.id).await.map_err(|e| failed(e.to_string()))?;
        out.push((run, counts));
    }
    if let (Some(id), false) = (run_id, as_json) {
        let report = store.report(id).await.map_err(|e| failed(e.to_string()))?;
        for line in report.lines() {
            println!("{line}");
        }
        for item in store.items(id, Some(ItemState::Dead), 20).await.map_err(|e| failed(e.to_string()))? {
            println!("  dead item {} (record {}): {}", item.id, item.external_id, item.last_error.unwrap_or_default());
        }
        store.close().await;
        return Ok(());
    }
    if let (Some(id), true) = (run_id, as_json) {
        let report = store.report(id).await.map_err(|e| failed(e.to_string()))?;
        println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
        store.close().await;
        return Ok(());
    }
    if as_json {
        let value: Vec<_> = out.iter().map(|(run, counts)| json!({"run": run, "counts": counts})).collect();
        let value = if run_id.is_some() { value.into_iter().next().unwrap_or_default() } else { json!(value) };
        println!("{}", serde_json::to_string_pretty(&value).expect("serialisable"));
    } else if out.is_empty() {
        println!("no runs yet");
        print_oauth_connections(config, &store).await?;
    } else {
        for (run, counts) in &out {
            let ended = run.finished_at.unwrap_or_else(crate::store::now_ms);
            let took = Duration::from_millis((ended - run.created_at).max(0) as u64);
            println!("{} · {} · {}", summary_line(run, counts), run.pipeline, fmt_duration(took));
            if run_id.is_some() {
                for item in store.items(run.id, Some(ItemState::Dead), 20).await.map_err(|e| failed(e.to_string()))? {
                    println!(
                        "  dead item {} (record {}): {}",
                        item.id,
                        item.external_id,
                        item.last_error.unwrap_or_default()
                    );
                }
            }
        }
        print_oauth_connections(config, &store).await?;
    }
    store.close().await;
    Ok(())
}

/// `status`: each OAuth2 connection's authorisation (whether it needs `enrichd connect`).
async fn print_oauth_connections(config: &Config, store: &Store) -> Result<(), Failure> {
    for (name, conn) in &config.connections {
        let custom = matches!(conn, crate::config::ConnectionConfig::Xero(c) if c.custom_connection);
        let ready = matches!(conn, crate::config::ConnectionConfig::QuickBooks(c) if c.access_token.is_some());
        if !matches!(conn.kind(), "xero" | "quickbooks") || custom || ready {
            continue;
        }
        let state = crate::store::connection_state(store, name).await.map_err(|e| failed(e.to_string()))?;
        let line = match state {
            Some(s) if s.needs_connect.is_some() => {
                format!("NEEDS `enrichd connect {name}`: {}", s.needs_connect.as_deref().unwrap_or_default())
            }
            Some(s) if s.authorised => format!(
                "authorised for {}{}",
                s.tenant_name.map(|n| format!("{n}, ")).unwrap_or_default(),
                s.tenant_id.unwrap_or_else(|| "(no organisation stored)".into())
            ),
            _ => format!("not authorised yet: run `enrichd connect {name}`"),
        };
        println!("connection {name} ({}): {line}", conn.kind());
    }
    Ok(())
}

/// `status --watch`: progress of a run another process (the daemon, `enrichd run`) works, until it
/// stops moving; then its report. Ctrl-C stops watching, not the run.
///
/// A run stops moving when it is no longer discovering or running and no work of it is left that
/// a live worker would still do (approved items of a run awaiting review are written, leased items
/// finish), and the report then reads the same twice in a row (the read-back of the last writes
/// lands just after the run settles). The report printed is that last one.
async fn watch(config: &Config, run_id: Option<i64>) -> Result<(), Failure> {
    let store = open_store(config).await?;
    let id = match run_id {
        Some(id) => id,
        None => match store.runs(&[], 1).await.map_err(|e| failed(e.to_string()))?.first() {
            Some(run) => run.id,
            None => {
                store.close().await;
                println!("no runs yet");
                return Ok(());
            }
        },
    };
    // Workers heartbeat every third of a lease: one not seen for two leases is gone.
    let live_window = (config.daemon.lease_seconds * 2000.0).max(1000.0) as i64;
    let mut progress = Progress::new(std::io::stdout().is_terminal());
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut last: Option<crate::store::RunReport> = None;
    let report = loop {
        let look = Instant::now();
        let run = store.run(id).await.map_err(|e| failed(e.to_string()))?;
        let counts = store.counts(id).await.map_err(|e| failed(e.to_string()))?;
        let watched = Duration::from_millis((crate::store::now_ms() - run.created_at).max(0) as u64);
        if still_moving(&store, &run, &counts, live_window).await? {
            progress.show(&run, &counts, watched);
            last = None;
        } else {
            let report = store.report(id).await.map_err(|e| failed(e.to_string()))?;
            if last.as_ref().is_some_and(|l| same_outcome(l, &report)) {
                break report;
            }
            // Shown once per outcome: the look that confirms it prints nothing more.
            progress.show(&report.run, &report.counts, watched);
            last = Some(report);
        }
        let looked = look.elapsed();
        tokio::select! {
            _ = &mut signal => break store.report(id).await.map_err(|e| failed(e.to_string()))?,
            _ = tokio::time::sleep(engine::paced(Duration::from_millis(500), looked)) => {}
        }
    };
    store.close().await;
    for line in report.lines() {
        println!("{line}");
    }
    Ok(())
}

/// Whether a worker is still moving run `run`: it is discovering or running, or a live worker has
/// items of it in hand (leased), to write (approved, or a write to retry, unless the run is paused
/// or cancelled, which stops writing) or just written and not yet read back.
async fn still_moving(store: &Store, run: &Run, counts: &RunCounts, live_window: i64) -> Result<bool, Failure> {
    if matches!(run.status, RunStatus::Discovering | RunStatus::Running) {
        return Ok(true);
    }
    let leased = counts.sum(&[ItemState::Enriching, ItemState::Writing]);
    let writable = if matches!(run.status, RunStatus::Paused | RunStatus::Cancelled) {
        0
    } else {
        counts.sum(&[ItemState::Approved, ItemState::WriteFailed])
    };
    if leased + writable == 0 {
        // Written, and the read-back that verifies the batch still on its way.
        let since = crate::store::now_ms() - live_window;
        if store.unverified_writes(run.id, since).await.map_err(|e| failed(e.to_string()))? == 0 {
            return Ok(false);
        }
    }
    Ok(store.live_workers(live_window).await.map_err(|e| failed(e.to_string()))? > 0)
}

/// Two reports of one run that say the same: status, reason, counts and write checks.
fn same_outcome(a: &crate::store::RunReport, b: &crate::store::RunReport) -> bool {
    (&a.run.status, &a.run.status_reason, &a.counts, a.verified, a.verify_flagged)
        == (&b.run.status, &b.run.status_reason, &b.counts, b.verified, b.verify_flagged)
}

async fn resume(config: &Config, run_id: i64, reviewer: &str, as_json: bool) -> Result<(), Failure> {
    let actor = crate::store::reviewer_name(reviewer).map_err(|m| config_error(format!("--as: {m}")))?;
    let store = open_store(config).await?;
    let result = store.resume_run(run_id, &actor).await;
    store.close().await;
    let run = result.map_err(|e| failed(e.to_string()))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({ "run": run })).expect("serialisable"));
    } else {
        println!(
            "run {} of {} resumed by {} ({}): the daemon picks it up, or `enrichd run {}`",
            run.id,
            run.pipeline,
            crate::store::plain_actor(&actor),
            run.plain_state(),
            run.pipeline
        );
    }
    Ok(())
}

/// Moves a sandbox's virtual clock forward a second every second, for as long as the process runs.
fn follow_wall_clock(advance: impl Fn(i64) + Send + 'static) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            advance(1);
        }
    });
}

/// A running Zendesk sandbox whose clock follows the wall clock.
pub struct ZendeskAccount {
    pub sandbox: enrichd_zendesk::sandbox::ZendeskSandbox,
    pub base_url: String,
}

impl ZendeskAccount {
    /// Tickets without a category.
    pub fn untriaged(&self) -> usize {
        let category = enrichd_zendesk::sandbox::CATEGORY_FIELD_ID;
        self.sandbox
            .ticket_ids()
            .into_iter()
            .filter_map(|id| self.sandbox.ticket(id))
            .filter(|t| {
                t["custom_fields"].as_array().into_iter().flatten().any(|f| f["id"] == category && f["value"].is_null())
            })
            .count()
    }
}

/// Starts a Zendesk sandbox on `addr` whose clock moves with real time (so the incremental export's
/// one-minute horizon passes as it would), optionally with agents editing and new tickets arriving.
pub async fn start_zendesk_sandbox(
    tickets: u64,
    triaged_share: f64,
    seed: u64,
    addr: SocketAddr,
    agent_edits: f64,
    new_ticket_every: u64,
) -> std::io::Result<ZendeskAccount> {
    use enrichd_zendesk::sandbox::{Faults, ZendeskSandbox};
    let sandbox = ZendeskSandbox::with_triaged_share(tickets, seed, triaged_share);
    sandbox.set_faults(Faults { agent_edit_rate: agent_edits, ..Faults::default() });
    let bound = sandbox.start(addr).await?;
    let clock = sandbox.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seconds = 0u64;
        let mut n = 0u64;
        loop {
            tick.tick().await;
            clock.advance(1);
            seconds += 1;
            if new_ticket_every > 0 && seconds.is_multiple_of(new_ticket_every) {
                let (subject, body) = enrichd_zendesk::sandbox::sample(n);
                clock.create_ticket(subject, body);
                n += 1;
            }
        }
    });
    Ok(ZendeskAccount { sandbox, base_url: format!("http://{bound}") })
}

async fn sandbox(which: SandboxCommand) -> Result<(), Failure> {
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    match which {
        SandboxCommand::Teststore { products, missing_every, port, token } => {
            let store = enrichd_teststore::sandbox::Sandbox::new(&token);
            store.seed_products(products, missing_every);
            let addr = store.start(at(port)).await.map_err(|e| failed(format!("binding port {port}: {e}")))?;
            println!(
                "teststore sandbox with {products} products on http://{addr} (bearer token {token:?}); Ctrl-C stops it"
            );
        }
        SandboxCommand::Woocommerce { products, missing_share, seed, port, http_port } => {
            use enrichd_woocommerce::sandbox::{self as woo, WooSandbox};
            let store = WooSandbox::with_products(woo::generate_catalogue(products, seed, missing_share));
            let addr = store.start_https(at(port)).await.map_err(|e| failed(format!("binding port {port}: {e}")))?;
            let pem = std::env::temp_dir().join(format!("enrichd-woocommerce-sandbox-{}.pem", addr.port()));
            std::fs::write(&pem, store.certificate_pem())
                .map_err(|e| failed(format!("writing the certificate to {}: {e}", pem.display())))?;
            println!("WooCommerce sandbox with {products} products on https://{addr}/wp-json/wc/v3/ ; Ctrl-C stops it");
            println!("  certificate (self-signed): {}", pem.display());
            println!("  consumer key:    {}", woo::CONSUMER_KEY);
            println!("  consumer secret: {}", woo::CONSUMER_SECRET);
            println!("  read-only key:   {} / {}", woo::READ_ONLY_CONSUMER_KEY, woo::READ_ONLY_CONSUMER_SECRET);
            if let Some(http_port) = http_port {
                let plain =
                    store.start(at(http_port)).await.map_err(|e| failed(format!("binding port {http_port}: {e}")))?;
                println!("  plain HTTP (OAuth 1.0a only): http://{plain}/wp-json/wc/v3/");
            }
        }
        SandboxCommand::Zendesk { tickets, triaged_share, seed, port, agent_edits, new_ticket_every } => {
            let account = start_zendesk_sandbox(tickets, triaged_share, seed, at(port), agent_edits, new_ticket_every)
                .await
                .map_err(|e| failed(format!("binding port {port}: {e}")))?;
            let untriaged = account.untriaged();
            println!(
                "Zendesk sandbox with {tickets} tickets ({untriaged} not triaged) on {} ; Ctrl-C stops it",
                account.base_url
            );
            println!("  base url:  {}", account.base_url);
            println!("  email:     {}", enrichd_zendesk::sandbox::EMAIL);
            println!("  api token: {}", enrichd_zendesk::sandbox::API_TOKEN);
            println!("  oauth token (read and write): {}", enrichd_zendesk::sandbox::OAUTH_TOKEN);
            if new_ticket_every > 0 {
                println!("  a new ticket arrives every {new_ticket_every} s");
            }
        }
        SandboxCommand::Freshdesk { tickets, triaged_share, seed, port } => {
            use enrichd_freshdesk::sandbox::{API_KEY, FreshdeskSandbox};
            let account = FreshdeskSandbox::with_triaged_share(tickets, seed, triaged_share);
            let addr = account.start(at(port)).await.map_err(|e| failed(format!("binding port {port}: {e}")))?;
            follow_wall_clock(move |s| account.advance(s));
            println!("Freshdesk sandbox with {tickets} tickets on http://{addr} ; Ctrl-C stops it");
            println!("  base url:  http://{addr}");
            println!("  api key:   {API_KEY}");
        }
        SandboxCommand::Helpscout { conversations, triaged_share, seed, port } => {
            use enrichd_helpscout::sandbox::{CLIENT_ID, CLIENT_SECRET, HelpScoutSandbox, MAILBOX_ID};
            let account = HelpScoutSandbox::with_triaged_share(conversations, seed, triaged_share);
            let addr = account.start(at(port)).await.map_err(|e| failed(format!("binding port {port}: {e}")))?;
            follow_wall_clock(move |s| account.advance(s));
            println!("Help Scout sandbox with {conversations} conversations on http://{addr} ; Ctrl-C stops it");
            println!("  base url:      http://{addr}");
            println!("  client id:     {CLIENT_ID}");
            println!("  client secret: {CLIENT_SECRET}");
            println!("  mailbox:       {MAILBOX_ID}");
        }
        SandboxCommand::Xero { bills, port } => {
            use enrichd_xero::sandbox::{CLIENT_ID, CLIENT_SECRET, CUSTOM_CLIENT_ID, CUSTOM_CLIENT_SECRET, TENANT_ID};
            let org = enrichd_xero::sandbox::XeroSandbox::new(bills, 1);
            let addr = org.start(at(port)).await.map_err(|e| failed(format!("binding port {port}: {e}")))?;
            let candidates = org.candidates().len();
            println!(
                "Xero sandbox with {bills} bills ({candidates} draft bills with a document) on http://{addr} ; Ctrl-C stops it"
            );
            println!("base url: http://{addr}");
            println!("client id: {CLIENT_ID}");
            println!("client secret: {CLIENT_SECRET}");
            println!("tenant: {TENANT_ID}");
            println!("custom connection client id: {CUSTOM_CLIENT_ID}");
            println!("custom connection client secret: {CUSTOM_CLIENT_SECRET}");
            println!();
            println!("# export XERO_CLIENT_ID={CLIENT_ID} XERO_CLIENT_SECRET={CLIENT_SECRET}");
            println!("# then `enrichd connect books` (database.secret_key must be set)");
            print!("{}", xero_sandbox_config(&addr.to_string()));
        }
        SandboxCommand::Quickbooks { bills, port } => {
            use enrichd_quickbooks::sandbox::{ACCESS_TOKEN, CLIENT_ID, CLIENT_SECRET, REALM_ID};
            let company = enrichd_quickbooks::sandbox::QuickBooksSandbox::new(bills, 1);
            let addr = company.start(at(port)).await.map_err(|e| failed(format!("binding port {port}: {e}")))?;
            println!("QuickBooks Online sandbox with {bills} bills on http://{addr} ; Ctrl-C stops it");
            println!("base url: http://{addr}");
            println!("client id: {CLIENT_ID}");
            println!("client secret: {CLIENT_SECRET}");
            println!("realm: {REALM_ID}");
            println!("access token: {ACCESS_TOKEN}");
            println!();
            println!(
                "# export QBO_CLIENT_ID={CLIENT_ID} QBO_CLIENT_SECRET={CLIENT_SECRET} QBO_ACCESS_TOKEN={ACCESS_TOKEN}"
            );
            println!("# (or leave access_token out and run `enrichd connect books`)");
            print!("{}", quickbooks_sandbox_config(&addr.to_string()));
        }
        SandboxCommand::Provider { port, api_key, latency_ms } => {
            let provider = crate::sandbox::provider::ProviderSandbox::new(api_key.as_deref());
            provider.set_faults(crate::sandbox::provider::Faults {
                latency: Duration::from_millis(latency_ms),
                ..Default::default()
            });
            let addr = provider.start(at(port)).await.map_err(|e| failed(format!("binding port {port}: {e}")))?;
            println!("simulated model (OpenAI-compatible) on http://{addr}/v1; Ctrl-C stops it");
        }
    }
    shutdown_signal().await;
    Ok(())
}

/// The `[connections.books]` table `enrichd sandbox xero` prints for the sandbox at `addr`.
pub fn xero_sandbox_config(addr: &str) -> String {
    format!(
        "[connections.books]\n\
         kind = \"xero\"\n\
         base_url = \"http://{addr}\"\n\
         client_id = \"${{XERO_CLIENT_ID}}\"\n\
         client_secret = \"${{XERO_CLIENT_SECRET}}\"\n"
    )
}

/// The `[connections.books]` table `enrichd sandbox quickbooks` prints for the sandbox at `addr`.
pub fn quickbooks_sandbox_config(addr: &str) -> String {
    format!(
        "[connections.books]\n\
         kind = \"quickbooks\"\n\
         base_url = \"http://{addr}\"\n\
         realm_id = \"{}\"\n\
         client_id = \"${{QBO_CLIENT_ID}}\"\n\
         client_secret = \"${{QBO_CLIENT_SECRET}}\"\n\
         access_token = \"${{QBO_ACCESS_TOKEN}}\"\n",
        enrichd_quickbooks::sandbox::REALM_ID
    )
}
