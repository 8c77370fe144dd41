//! Fuzz target: see aliassync::fuzzing::statefile_parse for the input layout and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aliassync::fuzzing::statefile_parse(data));
