//! Finding someone to talk to: `GET /api/v1/auth/users/?username=` (a local account by its
//! exact name) and `GET /api/v1/auth/users/{id}/` (the names of the people one talks to) —
//! and that neither lets a caller enumerate the users.

mod common;

use common::{Daemon, split};
use serde_json::{Value, json};

/// Registers a local account; returns its id.
fn register(d: &Daemon, username: &str, display_name: Option<&str>) -> u64 {
    let (status, body) = split(
        d.http
            .post(d.url("/api/v1/auth/register/"))
            .json(&json!({"username": username, "password": "a good password", "display_name": display_name}))
            .send()
            .expect("register"),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_u64().expect("id")
}

fn find(d: &Daemon, caller: u64, query: &str) -> (u16, Value) {
    d.get(caller, &format!("/api/v1/auth/users/{query}"))
}

#[test]
fn a_local_account_is_found_by_its_exact_username_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let ann = register(&d, "ann", Some("Ann Author"));
    let bob = register(&d, "bob.b", None);

    let (status, body) = find(&d, ann, "?username=bob.b");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": bob, "username": "bob.b", "display_name": null})
    );
    // Surrounding spaces are not part of a name (registration trims them too).
    let (status, body) = find(&d, bob, "?username=%20ann%20");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["display_name"], "Ann Author");
    // Without the trailing slash, like every path.
    let (status, _) = d.get(ann, "/api/v1/auth/users?username=bob.b");
    assert_eq!(status, 200);

    // No near matches: not a prefix, not another case, not a pattern.
    for near in ["bob", "Bob.b", "BOB.B", "bob.b.", "b%25", "*", "bob.b%00"] {
        let (status, body) = find(&d, ann, &format!("?username={near}"));
        assert_eq!(status, 404, "{near}: {body}");
        assert_eq!(body["error"], "not_found");
    }
    // An external user (known from a token's claim) is not a local account to find.
    let (status, _) = d.get(42, "/api/v1/auth/me/");
    assert_eq!(status, 200);
    let (status, _) = find(&d, ann, "?username=42");
    assert_eq!(status, 404);

    let (status, body) = find(&d, ann, "");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, _) = find(&d, ann, "?username=%20%20");
    assert_eq!(status, 400);
    let long = "x".repeat(10_000);
    let (status, _) = find(&d, ann, &format!("?username={long}"));
    assert_eq!(status, 404);

    let anonymous = d
        .http
        .get(d.url("/api/v1/auth/users/?username=ann"))
        .send()
        .expect("GET");
    assert_eq!(anonymous.status(), 401);
    let _ = d.stop();
}

/// Guessing names costs: past 20 misses a caller gets 429 with `Retry-After`, for hits too;
/// other callers are not affected.
#[test]
fn guessing_usernames_is_rate_limited_per_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let ann = register(&d, "ann", None);
    register(&d, "bob", None);
    for i in 0..20 {
        let (status, _) = find(&d, ann, &format!("?username=guess{i}"));
        assert_eq!(status, 404, "miss {i}");
    }
    let refused = d
        .request("GET", ann, "/api/v1/auth/users/?username=bob")
        .send()
        .expect("GET");
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=3).contains(&wait), "{wait}");
    // Someone else still finds bob.
    let (status, _) = find(&d, 7, "?username=bob");
    assert_eq!(status, 200);
    let _ = d.stop();
}

#[test]
fn a_user_by_id_only_for_oneself_and_people_one_talks_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let ann = register(&d, "ann", Some("Ann"));
    let bob = register(&d, "bob", Some("Bob"));
    let cat = register(&d, "cat", None);

    let path = |id: u64| format!("/api/v1/auth/users/{id}/");
    // A stranger's id is not found, as an id nobody has.
    assert_eq!(d.get(ann, &path(bob)).0, 404);
    assert_eq!(d.get(ann, &path(999_999)).0, 404);
    assert_eq!(d.get(ann, "/api/v1/auth/users/abc/").0, 404);
    let (status, me) = d.get(ann, &path(ann));
    assert_eq!(status, 200);
    assert_eq!(
        me,
        json!({"id": ann, "username": "ann", "display_name": "Ann"})
    );

    d.conversation(ann, bob);
    let (status, body) = d.get(ann, &path(bob));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": bob, "username": "bob", "display_name": "Bob"})
    );
    assert_eq!(d.get(bob, &path(ann)).0, 200, "both ways");
    assert_eq!(d.get(cat, &path(ann)).0, 404, "still a stranger to cat");

    // A participant never seen in a token: found, no names.
    d.conversation(ann, 77);
    let (status, body) = d.get(ann, &path(77));
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"id": 77, "username": null, "display_name": null})
    );
    let _ = d.stop();
}
