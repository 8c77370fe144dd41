//! Alibaba Cloud credentials: static keys for now; the default chain and role assumption come next.

use std::sync::Arc;

use super::{Context, CredentialSource, StaticOnly};
use crate::config::TargetConfig;

/// Target `name`'s credential source.
pub fn source(name: &str, t: &TargetConfig, _ctx: &Context) -> Result<Arc<dyn CredentialSource>, String> {
    if t.credentials == "default" || t.role_arn.is_some() || t.agency_name.is_some() {
        return Err(format!("targets.{name}.credentials: \"default\" is not supported for alibaba yet"));
    }
    Ok(Arc::new(StaticOnly::new(&t.credentials, "alibaba")?))
}
