//! The web pages in a real browser (the demo chat and the operator console): Debian's `chromium`, driven by Playwright for Python
//! (`tests/browser/*.py`), against the real daemon started here.
//!
//! `bash .ci/run` installs both and sets `INDABA_REQUIRE_BROWSER=1`, so in CI a missing browser
//! fails the test; a plain `cargo test` on a machine without them says so and skips. To run it
//! locally: `apt-get install chromium chromium-driver` and `pip install playwright==1.65.3`
//! (never `playwright install`: the system's Chromium is used).
//!
//! Screenshots go to `$INDABA_SCREENSHOTS_DIR`, else to a scratch directory under `target/`;
//! `INDABA_SCREENSHOTS_DIR=docs/screenshots cargo test --test browser` refreshes the ones the
//! README shows.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::{Daemon, Options};

/// The browser, unless `INDABA_CHROMIUM` names another.
fn chromium() -> PathBuf {
    std::env::var_os("INDABA_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Why the browser tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let browser = chromium();
    if !browser.exists() {
        return Some(format!(
            "no browser at {} (apt-get install chromium chromium-driver)",
            browser.display()
        ));
    }
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.async_api"])
        .output();
    match playwright {
        Ok(out) if out.status.success() => None,
        _ => Some("python3 cannot import playwright (pip install playwright==1.65.3)".to_owned()),
    }
}

/// True when the test may go on; false after printing why it skips. Fails instead when
/// `INDABA_REQUIRE_BROWSER` is set.
fn browser_available() -> bool {
    let Some(why) = missing() else {
        return true;
    };
    assert!(
        std::env::var_os("INDABA_REQUIRE_BROWSER").is_none(),
        "INDABA_REQUIRE_BROWSER is set but the browser tests cannot run: {why}"
    );
    eprintln!("SKIPPED: browser tests: {why}");
    false
}

fn screenshots_dir() -> PathBuf {
    let dir = std::env::var_os("INDABA_SCREENSHOTS_DIR")
        .map(|d| {
            let d = PathBuf::from(d);
            // Relative to the repository, where the README's links point.
            if d.is_relative() {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(d)
            } else {
                d
            }
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    dir
}

/// Runs `tests/browser/<script>` against `daemon` with `extra` arguments; panics with its
/// output if it fails.
fn run_script(daemon: &Daemon, script: &str, extra: &[&str]) {
    // One browser at a time: on a 2-core machine, Chromiums racing each other only make every
    // page's timing a matter of luck.
    static ONE_BROWSER: Mutex<()> = Mutex::new(());
    let _turn = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .arg("--base")
        .arg(daemon.url(""))
        .arg("--chromium")
        .arg(chromium())
        .arg("--screenshots")
        .arg(screenshots_dir())
        .args(extra)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- daemon log\n{}",
        out.status,
        daemon.log_text()
    );
    print!("{stdout}");
}

/// Two users sign up, find each other, chat with typing, read receipts, unread counts and
/// presence; one leaves and catches up, a second tab recovers by `sync` after its connection
/// drops; a phone-sized viewport; no console errors or CSP violations (`demo_chat.py`).
#[test]
fn demo_chat_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Dev mode: the demo is on. A short grace, so "offline" shows within the test.
    let daemon = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_LIMITS__PRESENCE_GRACE", "1s")]),
    );
    run_script(&daemon, "demo_chat.py", &[]);
    stops_cleanly(daemon);
}

/// Nothing the pages did was the daemon's fault: no ERROR in its log, and a clean stop.
fn stops_cleanly(daemon: Daemon) {
    let log = daemon.log_text();
    assert!(
        !log.lines().any(|l| l.contains(" ERROR ")),
        "the daemon logged errors:\n{log}"
    );
    let status = daemon.stop();
    assert!(status.success(), "{status}");
}

/// The HTML API reference at `/api/docs/`: the vendored Redoc renders the daemon's document,
/// its search works, with no console errors, no CSP violations and no request to another
/// origin (`api_docs.py`).
#[test]
fn api_docs_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start_with(dir.path(), Options::default());
    run_script(&daemon, "api_docs.py", &[]);
    stops_cleanly(daemon);
}

/// The operator console: a wrong secret refused, the right one kept in memory only, the
/// messages/s chart moving and the p99 delivery latency shown while a load runs, the users
/// table paged and searched, a user disabled (their demo chat tab says the session ended) and
/// enabled, one erased after a confirm step, a phone-sized viewport; no console errors or CSP
/// violations in either page (`admin_console.py`).
#[test]
fn operator_console_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    const SECRET: &str = "browser-test-service-secret-0123";
    let dir = tempfile::tempdir().expect("tempdir");
    // Dev mode (the demo chat on, for the user being disabled) with the console switched on.
    let daemon = Daemon::start_with(
        dir.path(),
        Options::env(&[
            ("INDABA_WEB__ADMIN", "true"),
            ("INDABA_SERVICE__SHARED_SECRET", SECRET),
        ]),
    );
    assert!(daemon.log_text().contains("operator console: open http://"));
    run_script(&daemon, "admin_console.py", &["--secret", SECRET]);
    stops_cleanly(daemon);
}
