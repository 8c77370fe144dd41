//! The CLI: parses arguments and calls into the library; nothing else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use aliassync::config::{Config, LogFormat, DEFAULT_PATH};

/// Exit code for an invalid configuration (sysexits EX_CONFIG); the unit does not restart on it.
const EXIT_CONFIG: u8 = 78;
/// `plan` found drift.
const EXIT_DRIFT: u8 = 2;
/// `publish` refused a file that removes aliases from a target (no `--allow-removals`); nothing was sent.
const EXIT_REFUSED: u8 = 4;

#[derive(Parser)]
#[command(name = "aliassync", version, about = "Keeps KMS key aliases in sync across regions and clouds")]
#[command(after_help = "Exit codes: 0 success (plan: in sync), 1 error, 2 plan found drift (clap usage errors \
also exit 2), 4 publish refused a file that removes aliases (nothing sent; --allow-removals), 78 invalid \
configuration.")]
struct Cli {
    /// Configuration file (TOML); every key can be overridden by ALIASSYNC__SECTION__KEY.
    #[arg(long, short, global = true, env = "ALIASSYNC_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: consume desired state from Kafka and reconcile every owned target.
    Run,
    /// Validate the configuration (and that every credential reference resolves), then exit.
    CheckConfig,
    /// Read the topic to its end, list the targets, print the diff; changes nothing.
    /// Exit 0 in sync, 2 on drift, 1 on error.
    Plan {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Print the managed aliases of targets, merged, as one desired-state file (adopt what exists).
    /// Fails whole (naming the target) if any target cannot be listed.
    Import {
        /// Targets to read; their aliases merge into one file (alias -> target -> key).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        targets: Vec<String>,
        /// Every configured target.
        #[arg(long)]
        all: bool,
        /// JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Publish a desired-state file (YAML or JSON) as events: changed aliases only, at the next revision.
    /// Prints the plan first (per target: creates, re-points, removals, on stderr) and refuses, with exit 4
    /// and nothing sent, a file that would remove aliases from a target unless --allow-removals.
    Publish {
        file: PathBuf,
        /// Print the plan and the events (stdout), send nothing; exits 4 as publish would refuse.
        #[arg(long)]
        dry_run: bool,
        /// Also mark aliases the topic has but the file lacks as absent (deleted everywhere: removals).
        #[arg(long)]
        delete_missing: bool,
        /// Publish even if aliases lose their key in some target (a removal or `state: absent`).
        #[arg(long)]
        allow_removals: bool,
        /// The plan, the decision and the events as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(EXIT_CONFIG)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("aliassync: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::CheckConfig => match cfg.resolve_credentials().and_then(|_| cfg.kafka_properties()) {
            Ok(_) => {
                let names: Vec<_> = cfg.targets.keys().cloned().collect();
                println!("{}: OK ({} targets: {})", cli.config.display(), names.len(), names.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", cli.config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Cmd::Run => {
            aliassync::telemetry::logging::init(cfg.log.format, &cfg.log.level);
            match aliassync::daemon::run_blocking(cfg, &cli.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(aliassync::daemon::RunError::Config(e)) => {
                    eprintln!("{}: {e}", cli.config.display());
                    ExitCode::from(EXIT_CONFIG)
                }
                Err(e) => {
                    tracing::error!(error = %e, "aliassync failed");
                    fail(e)
                }
            }
        }
        Cmd::Plan { json, target } => {
            aliassync::telemetry::logging::init(LogFormat::Text, "warn");
            match runtime().block_on(aliassync::cli::plan(&cfg, json, target.as_deref())) {
                Ok(false) => ExitCode::SUCCESS,
                Ok(true) => ExitCode::from(EXIT_DRIFT),
                Err(e) => fail(e),
            }
        }
        Cmd::Import { targets, all, json } => {
            aliassync::telemetry::logging::init(LogFormat::Text, "warn");
            match runtime().block_on(aliassync::cli::import(&cfg, &targets, all, json)) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Cmd::Publish { file, dry_run, delete_missing, allow_removals, json } => {
            aliassync::telemetry::logging::init(LogFormat::Text, "warn");
            let state = match aliassync::cli::statefile::StateFile::read(&file) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let opts = aliassync::cli::publish::Options { dry_run, delete_missing, allow_removals, json };
            match runtime().block_on(aliassync::cli::publish(&cfg, &state, opts)) {
                Ok(aliassync::cli::publish::Outcome::Refused) => ExitCode::from(EXIT_REFUSED),
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}
