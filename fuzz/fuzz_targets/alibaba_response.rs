//! Fuzz target: see aliassync::fuzzing::alibaba_response for the input layout and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aliassync::fuzzing::alibaba_response(data));
