//! The stable driver of the fuzz targets (`indaba::fuzzing`): no nightly toolchain, no
//! libFuzzer, so no coverage guidance; instead a seeded, bounded, mutation-based loop over the
//! committed corpus (`fuzz/corpus/<target>/`, which also holds each finding's input as a
//! regression). Each target first runs every corpus file, then mutates them for
//! `INDABA_FUZZ_SECONDS` (default 1; CI runs longer: `.ci/run`). Anything that panics is saved
//! under `target/fuzz-crashes/<target>/` and printed, with the seed that found it.
//!
//! * `INDABA_FUZZ_SEED=N` repeats a run's mutations (the seed is printed at each start).
//! * `INDABA_FUZZ_INPUT=path` runs the named target on that one file only.
//!
//! docs/RELIABILITY.md says how to run longer, with libFuzzer (`fuzz/`), and how to add a
//! target.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indaba::fuzzing::{TARGETS, Target};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed inputs of `name`, in a stable order.
fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read corpus file");
            (p, bytes)
        })
        .collect()
}

/// Bytes worth inserting whole: what the parsers look for.
const DICTIONARY: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"1e309",
    b"9007199254740991",
    b"9007199254740992",
    b"18446744073709551616",
    b"\\u0000",
    b"\\ud800",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"%",
    b"&",
    b"=",
    b"?",
    b"/",
    b"\n",
    b"\r\n",
    b"{user}",
    b"{user2}",
    b"{service}",
    b"Content-Type: application/json\n",
    b"Authorization: Bearer {user}\n",
    b"X-Service-Token: {service}\n",
    b"[[",
    b"]]",
    b"\"type\"",
    b"\"text\"",
    b"\"exp\"",
    b"\"user_id\"",
    b"\"alg\"",
    b"\"none\"",
    b"\"HS256\"",
    b"\"participants\"",
    b"\"conversation\"",
    b"\"client_id\"",
    b"[server]",
    b"[limits]",
    b"[storage]",
    b"[log]",
    b"[auth]",
    b" = ",
    b"\"1s\"",
    b"\"0s\"",
    b"%env\n",
    b"INDABA_LOG__LEVEL=",
    b"INDABA_LIMITS__MAX_TEXT_BYTES=",
    b"\x81\x85",
    b"\x88\x82",
    b"\xff\xff\xff\xff\xff\xff\xff\xff",
];

/// One random change to `input`, sometimes taking from `other` (another corpus input).
fn mutate_once(rng: &mut fastrand::Rng, input: &mut Vec<u8>, other: &[u8]) {
    let len = input.len();
    match rng.u8(0..10) {
        0 if len > 0 => {
            let i = rng.usize(0..len);
            input[i] ^= 1 << rng.u8(0..8);
        }
        1 if len > 0 => {
            let i = rng.usize(0..len);
            input[i] = [0, 0xff, 0x7f, 0x80, b'0', b'9', b' ', rng.u8(..)][rng.usize(0..8)];
        }
        2 if len > 0 => {
            let start = rng.usize(0..len);
            let end = (start + rng.usize(1..=16)).min(len);
            input.drain(start..end);
        }
        3 => {
            let at = rng.usize(0..=len);
            let word = DICTIONARY[rng.usize(0..DICTIONARY.len())];
            input.splice(at..at, word.iter().copied());
        }
        4 if len > 0 => {
            // Repeat a piece: nesting, long runs.
            let start = rng.usize(0..len);
            let end = (start + rng.usize(1..=32)).min(len);
            let piece = input[start..end].to_vec();
            let at = rng.usize(0..=len);
            for _ in 0..rng.usize(1..=8) {
                input.splice(at..at, piece.iter().copied());
            }
        }
        5 if !other.is_empty() => {
            // Splice: the front of this input and the back of another.
            let cut = rng.usize(0..=len);
            let from = rng.usize(0..other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        6 if len > 0 => input.truncate(rng.usize(0..len)),
        7 if len > 1 => {
            let (a, b) = (rng.usize(0..len), rng.usize(0..len));
            input.swap(a, b);
        }
        8 if len > 0 => {
            // An ASCII digit run made larger or a number replaced: ids and lengths.
            let i = rng.usize(0..len);
            let number = [rng.u64(..).to_string(), rng.i64(..).to_string(), "0".into()]
                [rng.usize(0..3)]
            .clone();
            input.splice(i..i, number.into_bytes());
        }
        _ => {
            let at = rng.usize(0..=len);
            input.insert(at, rng.u8(..));
        }
    }
    input.truncate(64 * 1024);
}

/// Runs `target` on `input`; on a panic, saves the input and fails with where it went.
fn run_one(name: &str, target: Target, input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_ok() {
        return;
    }
    let dir = root().join("target/fuzz-crashes").join(name);
    std::fs::create_dir_all(&dir).expect("crash dir");
    let hash = input.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    let path = dir.join(format!("crash-{hash:016x}"));
    std::fs::write(&path, input).expect("save the crashing input");
    panic!(
        "fuzz target `{name}` panicked on {what} (see the panic above). The input ({} bytes) is saved as {}; repeat it with\n  INDABA_FUZZ_INPUT={} cargo test --test fuzz {name}\nInput: {:?}",
        input.len(),
        path.display(),
        path.display(),
        String::from_utf8_lossy(input)
    );
}

fn fuzz(name: &str) {
    let target = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .expect("a target of that name");
    if let Ok(path) = std::env::var("INDABA_FUZZ_INPUT") {
        let input = std::fs::read(&path).expect("INDABA_FUZZ_INPUT");
        run_one(name, target, &input, &path);
        return;
    }
    let corpus = corpus(name);
    assert!(!corpus.is_empty(), "fuzz/corpus/{name} holds no input");
    for (path, input) in &corpus {
        run_one(name, target, input, &path.display().to_string());
    }
    let seconds: f64 = std::env::var("INDABA_FUZZ_SECONDS")
        .ok()
        .map(|s| s.parse().expect("INDABA_FUZZ_SECONDS: a number of seconds"))
        .unwrap_or(1.0);
    let seed = std::env::var("INDABA_FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("INDABA_FUZZ_SEED: an integer"))
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let base = &corpus[rng.usize(0..corpus.len())].1;
        let other = &corpus[rng.usize(0..corpus.len())].1;
        let mut input = base.clone();
        for _ in 0..rng.usize(1..=8) {
            mutate_once(&mut rng, &mut input, other);
        }
        run_one(name, target, &input, &format!("run {runs} of seed {seed}"));
        runs += 1;
    }
    println!(
        "fuzz {name}: {} corpus inputs, then {runs} mutated inputs in {seconds} s (INDABA_FUZZ_SEED={seed}): no failure",
        corpus.len()
    );
}

/// Every target has its test below and a corpus.
#[test]
fn every_target_is_driven() {
    let source = std::fs::read_to_string(root().join("tests/fuzz.rs")).expect("this file");
    for (name, _) in TARGETS {
        assert!(
            source.contains(&format!("fn {name}() {{\n    fuzz(\"{name}\");")),
            "no test drives `{name}`"
        );
        assert!(
            Path::new(&root().join("fuzz/fuzz_targets").join(format!("{name}.rs"))).is_file(),
            "no cargo-fuzz target fuzz/fuzz_targets/{name}.rs"
        );
    }
}

#[test]
fn ws_frames() {
    fuzz("ws_frames");
}

#[test]
fn http_request() {
    fuzz("http_request");
}

#[test]
fn jwt() {
    fuzz("jwt");
}

#[test]
fn journal() {
    fuzz("journal");
}

#[test]
fn config() {
    fuzz("config");
}
