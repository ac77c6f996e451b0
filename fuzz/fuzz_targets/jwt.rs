#![no_main]
//! `cargo fuzz run jwt fuzz/corpus/jwt`: see `indaba::fuzzing::jwt`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| indaba::fuzzing::jwt(data));
