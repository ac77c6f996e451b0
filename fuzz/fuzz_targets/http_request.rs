#![no_main]
//! `cargo fuzz run http_request fuzz/corpus/http_request`: see `indaba::fuzzing::http_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| indaba::fuzzing::http_request(data));
