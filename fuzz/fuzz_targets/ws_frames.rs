#![no_main]
//! `cargo fuzz run ws_frames fuzz/corpus/ws_frames`: see `indaba::fuzzing::ws_frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| indaba::fuzzing::ws_frames(data));
