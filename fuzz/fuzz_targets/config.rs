#![no_main]
//! `cargo fuzz run config fuzz/corpus/config`: see `indaba::fuzzing::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| indaba::fuzzing::config(data));
