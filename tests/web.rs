//! The web pages over real HTTP: what `/` (demo chat), `/admin/` (operator console) and their
//! assets are served with (types, caching, security headers), and the `[web] demo` and
//! `[web] admin` switches. Their behaviour in a browser is
//! tests/browser.rs.

mod common;

use common::{Daemon, Options, config_file, key_file};
use reqwest::blocking::Response;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use sha2::{Digest, Sha256};

fn get(d: &Daemon, path: &str) -> Response {
    d.http.get(d.url(path)).send().expect("GET")
}

fn header<'a>(r: &'a Response, name: &reqwest::header::HeaderName) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .expect("text")
}

/// The paths a text references: `src="/…"`, `href="/…"` and `from "/…"` (module imports).
fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["src=\"", "href=\"", "from \""] {
        for part in text.split(marker).skip(1) {
            let path = part.split('"').next().unwrap_or("");
            if path.starts_with('/') {
                found.push(path.to_owned());
            }
        }
    }
    found
}

#[test]
fn the_page_and_everything_it_loads_are_served_with_their_types_and_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let seen = page_and_its_files(&d, "/");
    assert!(seen.len() >= 5, "the page loads its files: {seen:?}");
    let _ = d.stop();
}

/// Checks `page` and, transitively, every file it and its scripts load: status, content type,
/// caching, the security headers, nothing inline for the policy to allow. Answers the paths.
fn page_and_its_files(d: &Daemon, page_path: &str) -> Vec<String> {
    let page = get(d, page_path);
    assert_eq!(page.status(), 200, "{page_path}");
    assert_eq!(header(&page, &CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(&page, &CACHE_CONTROL), "no-cache");
    assert!(header(&page, &ETAG).starts_with('"'));
    assert_eq!(header(&page, &X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(header(&page, &REFERRER_POLICY), "no-referrer");
    let csp = header(&page, &CONTENT_SECURITY_POLICY).to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        &format!("connect-src 'self' ws://{}", d.addr),
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(
        !csp.contains("unsafe"),
        "no unsafe-inline or unsafe-eval: {csp}"
    );
    let html = page.text().expect("body");

    // Nothing inline for the policy to have to allow.
    assert!(!html.contains("style="), "an inline style attribute");
    for part in html.split("<script").skip(1) {
        let tag = part.split('>').next().unwrap_or("");
        assert!(tag.contains("src="), "an inline <script>: <script{tag}>");
    }
    assert!(
        !html
            .split_whitespace()
            .any(|w| w.starts_with("on") && w.contains("=\"")),
        "an inline event handler attribute"
    );
    // Nothing from elsewhere: every reference is a path on this origin.
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "a CDN"
    );

    // Every file the page and its scripts load, with its type; the module imports too.
    let mut queue = references(&html);
    let mut seen = Vec::new();
    while let Some(path) = queue.pop() {
        if seen.contains(&path) {
            continue;
        }
        let response = get(d, &path);
        assert_eq!(response.status(), 200, "{path}");
        let expected = match path.rsplit_once('.').map(|(_, e)| e) {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("{path}: unexpected kind {other:?}"),
        };
        assert_eq!(header(&response, &CONTENT_TYPE), expected, "{path}");
        assert_eq!(header(&response, &X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header(&response, &CACHE_CONTROL), "no-cache", "{path}");
        assert!(header(&response, &ETAG).starts_with('"'), "{path}");
        let body = response.text().expect("body");
        if path.ends_with(".js") {
            queue.extend(references(&body));
            for banned in ["innerHTML", "eval(", "new Function"] {
                assert!(!body.contains(banned), "{path} uses {banned}");
            }
        }
        seen.push(path);
    }
    seen
}

#[test]
fn an_unchanged_file_is_a_304_by_its_etag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let first = get(&d, "/assets/demo/app.js");
    let etag = header(&first, &ETAG).to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_ne!(etag, header(&get(&d, "/"), &ETAG), "each file its own tag");

    let again = d
        .http
        .get(d.url("/assets/demo/app.js"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .expect("GET");
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, &ETAG), etag);
    assert_eq!(header(&again, &CACHE_CONTROL), "no-cache");
    assert!(again.bytes().expect("body").is_empty());

    let stale = d
        .http
        .get(d.url("/assets/demo/app.js"))
        .header(IF_NONE_MATCH, "\"something-else\"")
        .send()
        .expect("GET");
    assert_eq!(stale.status(), 200);
    assert!(!stale.bytes().expect("body").is_empty());

    let head = d.http.head(d.url("/")).send().expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, &CONTENT_TYPE), "text/html; charset=utf-8");
    let _ = d.stop();
}

#[test]
fn unknown_files_and_other_methods_get_the_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    for path in [
        "/assets/demo/nope.js",
        "/assets/",
        "/assets/../src/main.rs",
        "/index.html",
    ] {
        let (status, body) = common::split(get(&d, path));
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "not_found", "{path}");
    }
    let post = d.http.post(d.url("/")).body("x").send().expect("POST");
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let _ = d.stop();
}

/// With a config file the demo is off unless `[web] demo = true`; off, `/` and its assets are
/// the JSON 404 of any unknown path.
#[test]
fn the_demo_switch_defaults_off_with_a_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "key");
    let (path, secret) = config_file(dir.path(), &key, "");
    let options = Options {
        config: Some(path),
        secret: Some(secret.clone()),
        env: Vec::new(),
    };
    let d = Daemon::start_with(&dir.path().join("data"), options.clone());
    for path in ["/", "/assets/demo/app.js", "/assets/common/base.css"] {
        let response = get(&d, path);
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(header(&response, &CONTENT_TYPE), "application/json");
        let (_, body) = common::split(response);
        assert_eq!(body["error"], "not_found", "{path}");
    }
    assert!(!d.log_text().contains("demo chat"), "{}", d.log_text());
    let _ = d.stop();

    // Switched on in the file, and from the environment.
    let on_dir = tempfile::tempdir().expect("tempdir");
    let on_key = key_file(on_dir.path(), "key");
    let (on_path, on_secret) = config_file(on_dir.path(), &on_key, "[web]\ndemo = true\n");
    let d = Daemon::start_with(
        &on_dir.path().join("data"),
        Options {
            config: Some(on_path),
            secret: Some(on_secret),
            env: Vec::new(),
        },
    );
    assert_eq!(get(&d, "/").status(), 200);
    assert!(d.log_text().contains("demo chat: open http://"));
    let _ = d.stop();
    let d = Daemon::start_with(
        &dir.path().join("data"),
        Options {
            env: vec![("INDABA_WEB__DEMO".to_owned(), "true".to_owned())],
            ..options
        },
    );
    assert_eq!(get(&d, "/").status(), 200);
    let _ = d.stop();
}

/// Dev mode serves the demo; the environment can still switch it off.
#[test]
fn dev_mode_serves_the_demo_unless_switched_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(dir.path(), Options::env(&[("INDABA_WEB__DEMO", "false")]));
    assert_eq!(get(&d, "/").status(), 404);
    let _ = d.stop();
    let d = Daemon::start(dir.path());
    assert_eq!(get(&d, "/").status(), 200);
    assert!(d.log_text().contains("demo chat: open http://"));
    let _ = d.stop();
}

/// The packaged configuration ships with the demo and the console off (and says so, not by
/// accident of a missing section).
#[test]
fn the_packaged_config_ships_with_the_pages_off() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config.toml");
    let text = std::fs::read_to_string(&path).expect("packaging/config.toml");
    let table: toml::Table = toml::from_str(&text).expect("TOML");
    assert_eq!(
        table
            .get("web")
            .and_then(|w| w.get("demo"))
            .and_then(toml::Value::as_bool),
        Some(false),
        "packaging/config.toml must say `[web] demo = false`"
    );
    assert_eq!(
        table
            .get("web")
            .and_then(|w| w.get("admin"))
            .and_then(toml::Value::as_bool),
        Some(false),
        "packaging/config.toml must say `[web] admin = false`"
    );
}

/// Every path of the operator console: the page (with and without the slash) and its files.
const CONSOLE_PATHS: [&str; 9] = [
    "/admin/",
    "/admin",
    "/assets/admin/console.js",
    "/assets/admin/charts.js",
    "/assets/admin/console.css",
    "/assets/vendor/uplot/uPlot.iife.min.js",
    "/assets/vendor/uplot/uPlot.min.css",
    "/assets/vendor/uplot/LICENSE",
    "/assets/admin/nope.js",
];

/// `[web] admin` is off by default, in dev mode and with a config file: the console and its
/// files answer the JSON 404 of any unknown path, while the demo chat is still served.
#[test]
fn the_console_is_off_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    assert_eq!(get(&d, "/").status(), 200, "dev mode serves the demo chat");
    for path in CONSOLE_PATHS {
        let response = get(&d, path);
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(header(&response, &CONTENT_TYPE), "application/json");
        let (_, body) = common::split(response);
        assert_eq!(body["error"], "not_found", "{path}");
    }
    assert!(
        !d.log_text().contains("operator console"),
        "{}",
        d.log_text()
    );
    let _ = d.stop();

    let file_dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(file_dir.path(), "key");
    let (path, secret) = config_file(file_dir.path(), &key, "[web]\ndemo = true\n");
    let d = Daemon::start_with(
        &file_dir.path().join("data"),
        Options {
            config: Some(path),
            secret: Some(secret),
            env: Vec::new(),
        },
    );
    assert_eq!(get(&d, "/admin/").status(), 404);
    assert_eq!(get(&d, "/assets/admin/console.js").status(), 404);
    let _ = d.stop();
}

/// Switched on (here with the demo off): the console, everything it loads with its type,
/// caching and security headers, the shared files, the vendored uPlot exactly as pinned in
/// web/vendor/uplot/README.md with its licence beside it; the demo chat's own files stay off.
#[test]
fn the_console_is_served_when_switched_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "key");
    let (path, secret) = config_file(
        dir.path(),
        &key,
        "[web]\nadmin = true\n[service]\nshared_secret = \"web-tests-service-secret-0123\"\n",
    );
    let d = Daemon::start_with(
        &dir.path().join("data"),
        Options {
            config: Some(path),
            secret: Some(secret),
            env: Vec::new(),
        },
    );
    let seen = page_and_its_files(&d, "/admin/");
    for file in [
        "/assets/admin/console.js",
        "/assets/admin/charts.js",
        "/assets/admin/console.css",
        "/assets/vendor/uplot/uPlot.iife.min.js",
        "/assets/vendor/uplot/uPlot.min.css",
        "/assets/common/api.js",
        "/assets/common/base.css",
    ] {
        assert!(
            seen.iter().any(|s| s == file),
            "{file} not loaded: {seen:?}"
        );
    }
    let same = get(&d, "/admin");
    assert_eq!(same.status(), 200);
    assert_eq!(header(&same, &CONTENT_TYPE), "text/html; charset=utf-8");

    // The licence travels with the code, as plain text.
    let license = get(&d, "/assets/vendor/uplot/LICENSE");
    assert_eq!(license.status(), 200);
    assert_eq!(header(&license, &CONTENT_TYPE), "text/plain; charset=utf-8");
    assert!(license.text().expect("body").contains("MIT License"));

    // The vendored files are the pinned ones, byte for byte.
    let pins = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/vendor/uplot/README.md"),
    )
    .expect("web/vendor/uplot/README.md");
    for file in ["uPlot.iife.min.js", "uPlot.min.css"] {
        let served = get(&d, &format!("/assets/vendor/uplot/{file}"))
            .bytes()
            .expect("body");
        let digest = hex::encode(Sha256::digest(&served));
        let pinned = format!("`{file}` — sha256 `{digest}`");
        assert!(
            pins.contains(&pinned),
            "{file}: served sha256 {digest} is not the pinned one"
        );
    }

    // The demo chat's own page and files stay off.
    for path in ["/", "/assets/demo/app.js"] {
        assert_eq!(get(&d, path).status(), 404, "{path}");
    }
    assert!(d.log_text().contains("operator console: open http://"));
    let _ = d.stop();
}

/// The console's page revalidates by its ETag like every page.
#[test]
fn the_console_page_is_a_304_by_its_etag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(dir.path(), Options::env(&[("INDABA_WEB__ADMIN", "true")]));
    let first = get(&d, "/admin/");
    let etag = header(&first, &ETAG).to_owned();
    let again = d
        .http
        .get(d.url("/admin/"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .expect("GET");
    assert_eq!(again.status(), 304);
    assert!(again.headers().contains_key(CONTENT_SECURITY_POLICY));
    // Without a service secret the console cannot sign in, and the log says so.
    assert!(
        d.log_text()
            .contains("cannot sign in: no service.shared_secret"),
        "{}",
        d.log_text()
    );
    let _ = d.stop();
}
