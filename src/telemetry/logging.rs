//! tracing setup: human-readable by default, JSON on request; RUST_LOG overrides the configured level.
//! The level filter sits behind a reload handle, so SIGHUP can apply a changed `log.level` without a restart.

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

struct Reloadable {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The `log.level` directive in force (None while RUST_LOG rules).
    level: Mutex<Option<String>>,
}

static RELOAD: OnceLock<Reloadable> = OnceLock::new();

pub fn init(format: LogFormat, level: &str) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let configured = from_env.is_none().then(|| level.to_string());
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed(),
    };
    if tracing_subscriber::registry().with(filter).with(output).try_init().is_ok() {
        let _ = RELOAD.set(Reloadable { handle, level: Mutex::new(configured) });
    }
}

/// What [`set_level`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelChange {
    /// The filter now is `to` (it was `from`).
    Changed {
        from: String,
        to: String,
    },
    Unchanged,
    /// RUST_LOG is set: it wins over `log.level`, at start and on reload.
    OverriddenByEnv,
    /// Logging was not set up through [`init`] (tests, benchmarks).
    NotReloadable,
}

/// Applies a new `log.level` directive (already validated by the config).
pub fn set_level(level: &str) -> Result<LevelChange, String> {
    let Some(r) = RELOAD.get() else { return Ok(LevelChange::NotReloadable) };
    let mut cur = r.level.lock().unwrap_or_else(|e| e.into_inner());
    let Some(from) = cur.clone() else { return Ok(LevelChange::OverriddenByEnv) };
    if from == level {
        return Ok(LevelChange::Unchanged);
    }
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    r.handle.reload(filter).map_err(|e| e.to_string())?;
    *cur = Some(level.to_string());
    Ok(LevelChange::Changed { from, to: level.to_string() })
}
