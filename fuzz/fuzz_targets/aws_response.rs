//! Fuzz target: see aliassync::fuzzing::aws_response for the input layout and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aliassync::fuzzing::aws_response(data));
