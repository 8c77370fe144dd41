//! The emulator's shared state: configuration, credentials, the key/alias store, fault rules and
//! call counters. One instance behind an Arc, handed to every request.

use crate::config::{Credentials, Options};
use crate::counters::Counters;
use crate::faults::Faults;
use crate::state::Store;

pub struct App {
    pub options: Options,
    pub credentials: Credentials,
    pub store: Store,
    pub faults: Faults,
    pub counters: Counters,
}

impl App {
    pub fn new(options: Options, credentials: Credentials) -> App {
        let store = Store::new(options.aws_managed_aliases);
        App { options, credentials, store, faults: Faults::default(), counters: Counters::default() }
    }
}
