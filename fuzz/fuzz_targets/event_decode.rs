//! Fuzz target: see aliassync::fuzzing::event_decode for the input layout and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aliassync::fuzzing::event_decode(data));
