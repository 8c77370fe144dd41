//! kms-emulator: a test-only stand-in for the key and alias APIs of AWS KMS, Alibaba Cloud KMS and
//! Huawei Cloud KMS, on one 127.0.0.1 port. No public emulator exists for Alibaba or Huawei, so
//! this one's wire format is proven by driving it with the official Python SDKs (tests/sdk).
//!
//! Requests are routed by shape: `POST /` with `X-Amz-Target: TrentService.*` is AWS; an
//! `x-acs-action` header or `Action` parameter is Alibaba; `/v1.0/{project}/kms/...` is Huawei;
//! `/_emulator/...` is the admin API (state, fault injection, call counters). Signatures are
//! verified with the library's own signers against the configured credentials.
//!
//! Temporary credentials, on the same port: Alibaba STS (`Action` with `Version=2015-04-01`: AssumeRole,
//! AssumeRoleWithOIDC, GetCallerIdentity) and Alibaba ECS RAM-role metadata (`/latest/api/token`,
//! `/latest/meta-data/ram/security-credentials/`) in `alibaba_sts`; the sessions they issue (`sessions`) are
//! accepted by the KMS with their security token until they expire (`--sts-session-seconds` shortens them).
//!
//! Modules: `dispatch` (routing and the per-call pipeline), `aws` / `alibaba` / `huawei` (one wire
//! format each), `verify` (signature checks), `state` (keys and aliases), `names` (alias rules),
//! `faults` + `counters` + `admin` (test control), `config` (credentials and options), `wire`
//! (shared types).

mod admin;
mod alibaba;
mod alibaba_sts;
mod app;
mod aws;
mod config;
mod counters;
mod dispatch;
mod faults;
mod huawei;
mod huawei_iam;
mod names;
mod sessions;
mod state;
mod verify;
mod wire;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use clap::Parser;

use crate::app::App;
use crate::config::{Credentials, HuaweiPrefix, Options};
use crate::dispatch::ListenerRegion;

#[derive(Parser)]
#[command(
    name = "kms-emulator",
    version,
    about = "Test-only KMS alias API emulator for AWS, Alibaba Cloud and Huawei Cloud"
)]
struct Cli {
    /// Address to serve on; loopback only. Port 0 picks a free port (printed on stdout).
    #[arg(long, env = "KMS_EMULATOR_LISTEN", default_value = "127.0.0.1:15060")]
    listen: SocketAddr,
    /// An extra listener whose Alibaba and Huawei requests default to REGION (their signatures carry
    /// no region, and 127.0.0.1 is no regional hostname). Repeatable.
    #[arg(long = "region-listen", value_name = "ADDR=REGION")]
    region_listen: Vec<String>,
    /// TOML file of [[credential]] tables (cloud, access_key_id, secret, optional account); replaces
    /// the built-in fake credentials.
    #[arg(long, env = "KMS_EMULATOR_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// Region of Alibaba requests whose Host and parameters name none.
    #[arg(long, default_value = "cn-hangzhou")]
    alibaba_region: String,
    /// Region of Huawei requests whose Host names none.
    #[arg(long, default_value = "cn-north-4")]
    huawei_region: String,
    /// Whether Huawei alias names must start with `alias/` (the Huawei docs disagree).
    #[arg(long, value_enum, default_value_t = HuaweiPrefix::Required)]
    huawei_alias_prefix: HuaweiPrefix,
    /// Largest accepted difference between a request's signing time and now, in seconds; 0 = unchecked.
    #[arg(long, default_value_t = 900)]
    max_clock_skew: u64,
    /// Do not list the predefined `alias/aws/ebs` and `alias/aws/s3` entries in AWS scopes.
    #[arg(long)]
    no_aws_managed_aliases: bool,
    /// Lifetime in seconds of every temporary credential the STS / IAM / metadata endpoints issue, whatever
    /// the request asks (e.g. 45 to watch clients refresh); default: as requested.
    #[arg(long, env = "KMS_EMULATOR_STS_SESSION_SECONDS")]
    sts_session_seconds: Option<u64>,
    /// The RAM role whose STS credentials the Alibaba ECS metadata endpoints
    /// (`/latest/meta-data/ram/security-credentials/<role>`) hand out.
    #[arg(long, default_value = "acs:ram::1234567890123456:role/aliassync-ecs")]
    alibaba_ecs_role_arn: String,
    /// An Alibaba role whose trust policy requires this ExternalId in AssumeRole. Repeatable.
    #[arg(long = "alibaba-role-external-id", value_name = "ROLE_ARN=EXTERNAL_ID")]
    alibaba_role_external_id: Vec<String>,
    /// tracing filter (e.g. `info`, `debug`, `kms_emulator=debug`).
    #[arg(long, env = "KMS_EMULATOR_LOG", default_value = "info")]
    log: String,
}

fn parse_region_listen(s: &str) -> Result<(SocketAddr, String), String> {
    let (addr, region) = s.split_once('=').ok_or_else(|| format!("--region-listen {s:?}: expected ADDR=REGION"))?;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("--region-listen {s:?}: {e}"))?;
    if region.is_empty() {
        return Err(format!("--region-listen {s:?}: empty region"));
    }
    Ok((addr, region.to_string()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).map_err(|e| format!("--log: {e}"))?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let credentials = match &cli.credentials {
        Some(path) => Credentials::load(path)?,
        None => Credentials::defaults(),
    };
    credentials.sessions.set_lifetime_override(cli.sts_session_seconds.map(Duration::from_secs));
    let options = Options {
        alibaba_region: cli.alibaba_region.clone(),
        huawei_region: cli.huawei_region.clone(),
        huawei_prefix: cli.huawei_alias_prefix,
        max_clock_skew: (cli.max_clock_skew > 0).then(|| Duration::from_secs(cli.max_clock_skew)),
        aws_managed_aliases: !cli.no_aws_managed_aliases,
    };
    alibaba_sts::configure(&cli.alibaba_ecs_role_arn, &cli.alibaba_role_external_id)?;
    let app = Arc::new(App::new(options, credentials));

    let mut listeners = vec![(cli.listen, None)];
    for s in &cli.region_listen {
        let (addr, region) = parse_region_listen(s)?;
        listeners.push((addr, Some(region)));
    }
    for (addr, region) in listeners {
        // A test double with no authentication on its admin API must never be reachable from elsewhere.
        if !addr.ip().is_loopback() {
            return Err(format!("refusing to listen on {addr}: loopback addresses only"));
        }
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let router = Router::new()
            .fallback(dispatch::handle)
            .with_state(app.clone())
            .layer(Extension(ListenerRegion(region.clone())));
        tracing::info!(%bound, region = region.as_deref().unwrap_or("(default)"), "kms-emulator listening");
        println!("KMS_EMULATOR_URL=http://{bound}");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(%bound, error = %e, "server stopped");
            }
        });
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}
