//! The CLI: parses arguments and calls into the library; nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use aliassync::config::{Config, DEFAULT_PATH};

/// Exit code for an invalid configuration (sysexits EX_CONFIG); the unit does not restart on it.
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(name = "aliassync", version, about = "Keeps KMS key aliases in sync across regions and clouds")]
#[command(after_help = "Exit codes: 0 success, 1 runtime error, 2 usage error, 78 invalid configuration.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: consume desired state from Kafka and reconcile every owned target.
    Run {
        /// Configuration file (TOML); every key can be overridden by ALIASSYNC__SECTION__KEY.
        #[arg(long, short, env = "ALIASSYNC_CONFIG", default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration (and that every credential reference resolves), then exit.
    CheckConfig {
        #[arg(long, short, env = "ALIASSYNC_CONFIG", default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { config } => match Config::load(&config).and_then(|c| c.resolve_credentials().map(|_| c)) {
            Ok(c) => {
                println!(
                    "{}: OK ({} targets: {})",
                    config.display(),
                    c.targets.len(),
                    c.targets.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Cmd::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            aliassync::telemetry::logging::init(cfg.log.format, &cfg.log.level);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            match rt.block_on(aliassync::daemon::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(aliassync::daemon::RunError::Config(e)) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::from(EXIT_CONFIG)
                }
                Err(e) => {
                    tracing::error!(error = %e, "aliassync failed");
                    eprintln!("aliassync: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
