//! One handler for every request: route by shape to a cloud (or the admin API), then run the same
//! pipeline for all clouds: outage and latency faults, authentication, throttling and injected
//! errors, the operation itself, and the call counters.

use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Extension;
use serde_json::json;

use crate::app::App;
use crate::counters::Outcome;
use crate::faults::{Late, Outage};
use crate::verify::{self, AuthFailure};
use crate::wire::{respond, ApiError, CallInfo, Cloud, RawRequest};
use crate::{admin, alibaba, aws, huawei};

/// The largest request accepted; KMS requests are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;
/// How long a "hang" outage holds a request: longer than any client timeout in the tests.
const HANG: Duration = Duration::from_secs(3600);

/// The default region of a listener (`--region-listen ADDR=REGION`).
#[derive(Clone)]
pub struct ListenerRegion(pub Option<String>);

pub async fn handle(State(app): State<Arc<App>>, Extension(lr): Extension<ListenerRegion>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return plain(413, "request body too large or unreadable"),
    };
    let raw = RawRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        raw_query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
        listener_region: lr.0,
    };
    if raw.path.starts_with("/_emulator/") || raw.path == "/_emulator" {
        return admin::handle(&app, &raw);
    }
    // Alibaba STS and ECS metadata (token issuing, not KMS): before the KMS routing, which would take an
    // STS `Action` for a KMS one.
    if let Some(resp) = crate::alibaba_sts::handle(&app, &raw) {
        return resp;
    }
    // Huawei IAM assume-agency and ECS metadata keys (token issuing, not KMS).
    if let Some(resp) = crate::huawei_iam::handle(&app, &raw) {
        return resp;
    }
    // Huawei first (its path is unmistakable), then AWS (its target header), then Alibaba (whose
    // shape is "has an Action"): no SDK request matches two of these.
    let cloud = if huawei::matches(&raw) {
        Cloud::Huawei
    } else if aws::matches(&raw) {
        Cloud::Aws
    } else if alibaba::matches(&raw) {
        Cloud::Alibaba
    } else {
        tracing::warn!(method = %raw.method, path = %raw.path, "unrecognised request");
        return plain(404, "kms-emulator: not an AWS, Alibaba or Huawei KMS request");
    };
    run(&app, cloud, &raw).await
}

fn plain(status: u16, msg: &str) -> Response {
    respond(status, "application/json", json!({ "message": msg }).to_string().into_bytes(), &[])
}

fn call_info(app: &App, cloud: Cloud, req: &RawRequest) -> CallInfo {
    match cloud {
        Cloud::Aws => aws::call_info(app, req),
        Cloud::Alibaba => alibaba::call_info(app, req),
        Cloud::Huawei => huawei::call_info(app, req),
    }
}

fn authenticate(app: &App, cloud: Cloud, req: &RawRequest) -> Result<(), ApiError> {
    let mapped = |r: Result<(), AuthFailure>, f: fn(AuthFailure) -> ApiError| r.map_err(f);
    match cloud {
        Cloud::Aws => mapped(verify::aws(app, req), aws::auth_error),
        Cloud::Alibaba => {
            let params = alibaba::params_of(req);
            // An STS session's key needs its live token; then the signature as for any key.
            crate::alibaba_sts::check_session(app, req, &params)?;
            mapped(verify::alibaba(app, req, &params), alibaba::auth_error)
        }
        Cloud::Huawei => {
            // An issued key needs its live, signed X-Security-Token; then the signature as for any key.
            crate::huawei_iam::check_session(app, req)?;
            mapped(verify::huawei(app, req), huawei::auth_error)
        }
    }
}

fn execute(app: &App, cloud: Cloud, req: &RawRequest, info: &CallInfo) -> Result<Response, ApiError> {
    match cloud {
        Cloud::Aws => aws::execute(app, req, info),
        Cloud::Alibaba => alibaba::execute(app, req, info),
        Cloud::Huawei => huawei::execute(app, req, info),
    }
}

fn render(cloud: Cloud, err: &ApiError, info: &CallInfo) -> Response {
    match cloud {
        Cloud::Aws => aws::render_error(err),
        Cloud::Alibaba => alibaba::render_error(err, info),
        Cloud::Huawei => huawei::render_error(err, info),
    }
}

fn throttled(cloud: Cloud) -> ApiError {
    match cloud {
        Cloud::Aws => aws::throttled(),
        Cloud::Alibaba => alibaba::throttled(),
        Cloud::Huawei => huawei::throttled(),
    }
}

fn unavailable(cloud: Cloud) -> ApiError {
    match cloud {
        Cloud::Aws => aws::unavailable(),
        Cloud::Alibaba => alibaba::unavailable(),
        Cloud::Huawei => huawei::unavailable(),
    }
}

async fn run(app: &App, cloud: Cloud, req: &RawRequest) -> Response {
    let info = call_info(app, cloud, req);
    let early = app.faults.early(&info);
    if let Some(outage) = early.outage {
        app.counters.record(&info, Outcome::Outage);
        tracing::info!(cloud = cloud.as_str(), op = %info.operation, ?outage, "outage");
        match outage {
            Outage::Drop => {
                // Unwinding out of the handler ends hyper's connection task, which closes the socket
                // with no response: the client sees the connection drop, as when a frontend dies.
                // resume_unwind skips the panic hook, so nothing is printed. axum has no other way
                // to abort a connection from a handler.
                std::panic::resume_unwind(Box::new("kms-emulator: outage (drop)"));
            }
            Outage::Hang => {
                tokio::time::sleep(HANG).await;
                return render(cloud, &unavailable(cloud), &info);
            }
            Outage::Unavailable => return render(cloud, &unavailable(cloud), &info),
        }
    }
    if !early.latency.is_zero() {
        tokio::time::sleep(early.latency).await;
    }
    let (result, throttled_hit, injected, auth) = match authenticate(app, cloud, req) {
        Err(e) => (Err(e), false, false, true),
        Ok(()) => match app.faults.late(&info) {
            Late::Throttled => (Err(throttled(cloud)), true, false, false),
            Late::Inject(e) => (Err(e), false, true, false),
            Late::Pass => (execute(app, cloud, req, &info), false, false, false),
        },
    };
    match result {
        Ok(resp) => {
            app.counters.record(&info, Outcome::Ok);
            tracing::debug!(cloud = cloud.as_str(), account = %info.account, region = %info.region, op = %info.operation, "ok");
            resp
        }
        Err(e) => {
            app.counters.record(&info, Outcome::Error { code: &e.code, throttled: throttled_hit, injected, auth });
            tracing::info!(
                cloud = cloud.as_str(), account = %info.account, region = %info.region, op = %info.operation,
                status = e.status, code = %e.code, message = %e.message, "error"
            );
            render(cloud, &e, &info)
        }
    }
}
