//! Metrics, the HTTP endpoints (/metrics, /healthz, /readyz, /status) and logging.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
