#![no_main]
//! `cargo fuzz run journal fuzz/corpus/journal`: see `indaba::fuzzing::journal`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| indaba::fuzzing::journal(data));
