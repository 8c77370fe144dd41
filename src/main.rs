//! The CLI: parses arguments and calls into the library; nothing else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use aliassync::config::{Config, LogFormat, DEFAULT_PATH};

/// Exit code for an invalid configuration (sysexits EX_CONFIG); the unit does not restart on it.
const EXIT_CONFIG: u8 = 78;
/// `plan` found drift.
const EXIT_DRIFT: u8 = 2;

#[derive(Parser)]
#[command(name = "aliassync", version, about = "Keeps KMS key aliases in sync across regions and clouds")]
#[command(after_help = "Exit codes: 0 success (plan: in sync), 1 error, 2 plan found drift (clap usage errors \
also exit 2), 78 invalid configuration.")]
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
    /// Print the managed aliases of one target as a desired-state file (adopt what exists).
    Import {
        target: String,
        /// JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Publish a desired-state file (YAML or JSON) as events: changed aliases only, at the next revision.
    Publish {
        file: PathBuf,
        /// Print the events instead of sending them.
        #[arg(long)]
        dry_run: bool,
        /// Also mark aliases the topic has but the file lacks as absent (deleted everywhere).
        #[arg(long)]
        delete_missing: bool,
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
        Cmd::Import { target, json } => {
            aliassync::telemetry::logging::init(LogFormat::Text, "warn");
            match runtime().block_on(aliassync::cli::import(&cfg, &target, json)) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Cmd::Publish { file, dry_run, delete_missing } => {
            aliassync::telemetry::logging::init(LogFormat::Text, "warn");
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
            };
            let state = match aliassync::cli::statefile::StateFile::parse(&text) {
                Ok(s) => s,
                Err(e) => return fail(format!("{}: {e}", file.display())),
            };
            let rt = runtime();
            let p = match rt.block_on(aliassync::cli::prepare_publish(&cfg, &state, delete_missing)) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            if dry_run {
                for (_, v) in &p.events {
                    println!("{v}");
                }
                eprintln!("dry run: {} events would be published, {} aliases unchanged", p.events.len(), p.unchanged);
                return ExitCode::SUCCESS;
            }
            match rt.block_on(aliassync::cli::send(&cfg, &p.events)) {
                Ok(()) => {
                    eprintln!(
                        "published {} events to {}, {} aliases unchanged",
                        p.events.len(),
                        cfg.kafka.topic,
                        p.unchanged
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}
