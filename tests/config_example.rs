//! `config.toml.example` is the documentation of every option: it must parse, show the real
//! defaults, and mention every key the daemon accepts.

use std::path::Path;

use indaba::config::{Config, Secret};

fn example() -> (std::path::PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let text = std::fs::read_to_string(&path).expect("read config.toml.example");
    (path, text)
}

#[test]
fn example_parses_and_shows_the_defaults() {
    let (path, _) = example();
    let parsed = Config::load(Some(&path), Vec::new()).expect("example must load");
    assert_eq!(
        parsed.to_redacted_toml(),
        Config::default().to_redacted_toml(),
        "config.toml.example and Config::default() disagree"
    );
}

#[test]
fn example_mentions_every_key_with_a_comment() {
    let (_, text) = example();
    // A config with every optional field set, so that serializing it lists every key.
    let mut all = Config::default();
    all.storage.encryption_key_file = Some("k".into());
    all.storage.encryption_key = Some(Secret::new("k"));
    all.auth.jwt_secret = Some(Secret::new("s"));
    all.auth.jwt_secret_file = Some("f".into());
    all.auth.jwt_public_key_file = Some("p".into());
    all.auth.issuer = Some("i".into());
    all.auth.audience = Some("a".into());
    all.auth.token_cookie = Some("c".into());
    all.auth.session_check_url = Some("u".into());
    all.service.shared_secret = Some(Secret::new("s"));
    all.service.shared_secret_file = Some("s".into());
    all.webhooks.url = Some("https://h".into());
    all.webhooks.secret_file = Some("w".into());
    all.webhooks.auth_header = Some(Secret::new("X-A: b"));
    let table = toml::Table::try_from(&all).expect("serialize");
    let lines: Vec<&str> = text.lines().collect();
    for (section, keys) in &table {
        assert!(
            text.contains(&format!("[{section}]")),
            "section [{section}] missing from config.toml.example"
        );
        for key in keys.as_table().expect("section table").keys() {
            let at = lines
                .iter()
                .position(|l| {
                    let l = l.trim_start_matches('#').trim_start();
                    l.starts_with(&format!("{key} ="))
                })
                .unwrap_or_else(|| panic!("{section}.{key} missing from config.toml.example"));
            assert!(
                at > 0 && lines[at - 1].starts_with('#'),
                "{section}.{key} has no comment line above it"
            );
        }
    }
}
