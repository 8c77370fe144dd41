//! Fuzz target: see aliassync::fuzzing::config_load for the input layout and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aliassync::fuzzing::config_load(data));
