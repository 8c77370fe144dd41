//! aliassync: keeps KMS key aliases in sync across regions and clouds, driven by a compacted Kafka
//! topic of desired state. Modules follow the data's path:
//! source → event/desired → reconcile → provider; config, secret and telemetry serve them all, and
//! names (alias rules, key-id shapes, provider kinds) is the leaf they share.

pub mod cli;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod desired;
pub mod drift;
pub mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod keyid;
pub mod names;
pub mod provider;
pub mod reconcile;
pub mod secret;
pub mod source;
pub mod telemetry;
