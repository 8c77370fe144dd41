//! The CLI: parses arguments and calls into the library; nothing else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use aliassync::config::{Config, LogFormat, DEFAULT_PATH};

/// Exit code for an invalid configuration (sysexits EX_CONFIG); the unit does not restart on it.
const EXIT_CONFIG: u8 = 78;
/// `plan` found drift.
const EXIT_DRIFT: u8 = 2;
/// `publish` refused a file that removes aliases from a target (no `--allow-removals`); nothing was sent.
const EXIT_REFUSED: u8 = 4;
/// `wait` (and `publish --wait`): a target failed the revision for good (DESIGN §2.9). The same code as any
/// other error: the contract gives it; the printed `TARGET: … failed …` lines tell the two apart.
const EXIT_FAILED: u8 = 1;
/// `wait` (and `publish --wait`): the timeout passed with targets still pending (DESIGN §2.9).
const EXIT_TIMEOUT: u8 = 3;
/// `wait`: nothing to wait for: the alias (or that revision) is not on the desired topic, or `--target` names
/// a target that is not configured. Its own code, so a typo is not mistaken for a failed or slow rollout.
const EXIT_UNKNOWN: u8 = 5;

#[derive(Parser)]
#[command(name = "aliassync", version, about = "Keeps KMS key aliases in sync across regions and clouds")]
#[command(after_help = "Exit codes: 0 success (plan: in sync; wait: applied in every target), 1 error, or wait: \
a target failed the revision, 2 plan found drift (clap usage errors also exit 2), 3 wait timed out with targets \
pending, 4 publish refused a file that removes aliases (nothing sent; --allow-removals), 5 wait: the alias or \
revision is not on the desired topic, or an unknown --target, 78 invalid configuration.")]
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
    /// Validate the configuration, resolve every target's credentials (assuming roles) and print whom each
    /// target acts as, then exit. Exit 78 invalid config, 1 a target without working credentials.
    CheckConfig {
        /// Only validate the config and load static references; no call to instance metadata, STS or IAM.
        #[arg(long)]
        offline: bool,
    },
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
        /// Then wait until every published alias is applied at its new revision in its targets (as `wait`:
        /// exit 0 applied, 1 a target failed, 3 timeout; the per-target lines go to stderr with --json).
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
        /// How long --wait waits, e.g. 120s, 2m, 1m30s.
        #[arg(long, requires = "wait", value_parser = aliassync::cli::wait::parse_duration, default_value = "120s")]
        timeout: Duration,
    },
    /// Wait until ALIAS is applied at a revision in all its targets (from the status topic). Exit 0 applied,
    /// 1 a target failed it, 3 timeout, 5 unknown alias, revision or target.
    ///
    /// Reads what the targets' owners record on `<kafka.topic>.status` (Kafka access only, no cloud
    /// credentials). Awaited: every target where the alias's desired state names a key (pointing at that key),
    /// and every target where it is absent but was ever recorded (the removal). Prints one line per target:
    /// revision and key when applied; code when failed; on a timeout, the pending targets with the last record
    /// seen for each.
    Wait {
        alias: String,
        /// The revision to wait for (or any later one); default: the alias's latest on the desired topic.
        #[arg(long)]
        revision: Option<u64>,
        /// Only these targets (repeat the option for several).
        #[arg(long = "target")]
        targets: Vec<String>,
        /// How long to wait, e.g. 120s, 2m, 1m30s.
        #[arg(long, value_parser = aliassync::cli::wait::parse_duration, default_value = "120s")]
        timeout: Duration,
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

/// The exit of a wait (`wait`, `publish --wait`).
fn waited(end: aliassync::cli::wait::End) -> ExitCode {
    use aliassync::cli::wait::End;
    match end {
        End::Applied => ExitCode::SUCCESS,
        End::Failed => ExitCode::from(EXIT_FAILED),
        End::TimedOut => ExitCode::from(EXIT_TIMEOUT),
    }
}

/// Caps glibc's malloc arenas at 2 before any thread starts (unless MALLOC_ARENA_MAX says otherwise). By default
/// every thread that allocates may get its own arena (up to 8 per core: tokio's workers, librdkafka's threads),
/// and memory freed in one stays resident there: at 300,000 aliases × 4 targets the cap takes the peak RSS from
/// 111 to 97 MB (`cargo bench --bench load -- aliases 300000`; DESIGN §2.10's budget is the whole process's). The daemon's hot paths hold locks of their own,
/// so the arena lock costs nothing measurable.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before the runtime starts any thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::CheckConfig { offline } => match cfg.resolve_credentials().and_then(|_| cfg.kafka_properties()) {
            Ok(_) => {
                let names: Vec<_> = cfg.targets.keys().cloned().collect();
                if offline {
                    println!(
                        "{}: OK ({} targets: {}; credentials not resolved: --offline)",
                        cli.config.display(),
                        names.len(),
                        names.join(", ")
                    );
                    return ExitCode::SUCCESS;
                }
                let checked = match runtime().block_on(aliassync::credentials::check(&cfg)) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{}: {e}", cli.config.display());
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                let mut failed = 0;
                for c in &checked {
                    match &c.identity {
                        Ok(who) => {
                            let exp = c
                                .expires_at
                                .map(|t| format!(", expires {}", chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()))
                                .unwrap_or_default();
                            println!("target {}: acts as {who} ({}{exp})", c.target, c.source);
                        }
                        Err(e) => {
                            failed += 1;
                            eprintln!("target {}: {e} ({})", c.target, c.source);
                        }
                    }
                }
                if failed > 0 {
                    eprintln!(
                        "{}: {failed} of {} targets have no working credentials",
                        cli.config.display(),
                        names.len()
                    );
                    return ExitCode::FAILURE;
                }
                println!("{}: OK ({} targets: {})", cli.config.display(), names.len(), names.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", cli.config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Cmd::Run => {
            cap_malloc_arenas();
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
        Cmd::Publish { file, dry_run, delete_missing, allow_removals, json, wait, timeout } => {
            aliassync::telemetry::logging::init(LogFormat::Text, "warn");
            let state = match aliassync::cli::statefile::StateFile::read(&file) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let wait = wait.then_some(timeout);
            let opts = aliassync::cli::publish::Options { dry_run, delete_missing, allow_removals, json, wait };
            match runtime().block_on(aliassync::cli::publish(&cfg, &state, opts)) {
                Ok(f) if f.outcome == aliassync::cli::publish::Outcome::Refused => ExitCode::from(EXIT_REFUSED),
                Ok(f) => f.waited.map_or(ExitCode::SUCCESS, waited),
                Err(e) => fail(e),
            }
        }
        Cmd::Wait { alias, revision, targets, timeout } => {
            aliassync::telemetry::logging::init(LogFormat::Text, "warn");
            match runtime().block_on(aliassync::cli::wait(&cfg, &alias, revision, &targets, timeout)) {
                Ok(end) => waited(end),
                Err(aliassync::cli::wait::WaitError::Unknown(e)) => {
                    eprintln!("aliassync: {e}");
                    ExitCode::from(EXIT_UNKNOWN)
                }
                Err(e) => fail(e),
            }
        }
    }
}
