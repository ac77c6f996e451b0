//! The REST messaging API over real HTTP: every endpoint, its edges and its errors.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Daemon, Options, raw_request, read_response, split};
use serde_json::{Value, json};

const CONV: &str = "/api/v1/messaging/conversations/";
const MSGS: &str = "/api/v1/messaging/messages/";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A token exactly as djangorestframework-simplejwt 5 issues it: its header, its claims, the
/// user id as a string.
fn simplejwt_token(secret: &[u8], user_id: u64) -> String {
    let header = jsonwebtoken::Header {
        typ: Some("JWT".into()),
        alg: jsonwebtoken::Algorithm::HS256,
        ..Default::default()
    };
    let claims = json!({
        "token_type": "access",
        "exp": now() + 300,
        "iat": now(),
        "jti": "e3b0c44298fc1c149afbf4c8996fb924",
        "user_id": user_id.to_string(),
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

#[test]
fn seed_000_requests_verbatim_with_a_simplejwt_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let guest = simplejwt_token(d.secret(), 1);
    let host = simplejwt_token(d.secret(), 2);
    let call = |token: &str, method: &str, path: &str, body: Option<&str>| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = d
            .http
            .request(method, d.url(path))
            .header("Authorization", format!("Bearer {token}"));
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_owned());
        }
        split(req.send().expect("request"))
    };

    // Create Conversation
    let (status, conv) = call(
        &guest,
        "POST",
        CONV,
        Some(
            r#"{"participants": [1, 2], "property": 1, "booking": null, "subject": "Inquiry about property"}"#,
        ),
    );
    assert_eq!(status, 201, "{conv}");
    assert_eq!(conv["participants"], json!([1, 2]));
    assert_eq!(conv["property"], 1);
    assert_eq!(conv["booking"], Value::Null);
    assert_eq!(conv["subject"], "Inquiry about property");
    assert_eq!(conv["unread_count"], 0);
    let id = conv["id"].as_u64().expect("id");

    // Send Message
    let (status, msg) = call(
        &guest,
        "POST",
        MSGS,
        Some(&format!(
            r#"{{"conversation": {id}, "receiver": 2, "text": "Hello, I'm interested in your property", "message_type": "text"}}"#
        )),
    );
    assert_eq!(status, 201, "{msg}");
    assert_eq!(msg["sender"], 1);
    assert_eq!(msg["receiver"], 2);
    assert_eq!(msg["is_read"], false);
    assert!(
        msg["created_at"]
            .as_str()
            .expect("created_at")
            .ends_with('Z')
    );
    let msg_id = msg["id"].as_u64().expect("id");

    // Get Unread Count (the host has one)
    let (status, body) = call(&host, "GET", &format!("{CONV}unread_count/"), None);
    assert_eq!((status, body["unread_count"].as_u64()), (200, Some(1)));

    // List Messages
    let (status, page) = call(&host, "GET", &format!("{MSGS}?conversation={id}"), None);
    assert_eq!(status, 200);
    assert_eq!(page["count"], 1);
    assert_eq!(
        page["results"][0]["text"],
        "Hello, I'm interested in your property"
    );

    // Mark Message as Read (no body, as the seed sends it)
    let (status, read) = call(
        &host,
        "POST",
        &format!("{MSGS}{msg_id}/mark_as_read/"),
        None,
    );
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["is_read"], true);
    let (_, body) = call(&host, "GET", &format!("{CONV}unread_count/"), None);
    assert_eq!(body["unread_count"], 0);
    // The sender now sees it read by every recipient.
    let (_, mine) = call(&guest, "GET", &format!("{MSGS}{msg_id}/"), None);
    assert_eq!(mine["is_read"], true);

    // Archive Conversation
    let (status, archived) = call(&host, "POST", &format!("{CONV}{id}/archive/"), None);
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["is_archived"], true);
    let (_, guest_view) = call(&guest, "GET", &format!("{CONV}{id}/"), None);
    assert_eq!(guest_view["is_archived"], false, "archive is per caller");
}

#[test]
fn conversation_creation_is_deduplicated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let (s1, a) = d.post(1, CONV, &json!({"participants": [1, 2], "property": 7}));
    let (s2, b) = d.post(2, CONV, &json!({"participants": [2, 1], "property": 7}));
    let (s3, c) = d.post(1, CONV, &json!({"participants": [2], "property": 8}));
    let (s4, e) = d.post(1, CONV, &json!({"participants": [2, 2, 1], "property": 7}));
    assert_eq!((s1, s2, s3, s4), (201, 200, 201, 200));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["id"], e["id"]);
    assert_ne!(a["id"], c["id"]);
    assert_eq!(
        c["participants"],
        json!([1, 2]),
        "the caller is always a participant"
    );
    let (status, err) = d.post(1, CONV, &json!({"participants": [1]}));
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_participants"))
    );
    // The document says 1 to 100 ids (`maxItems`), and schemathesis sent 101 copies of one
    // id: the list as sent is held to it, not only the participants it names.
    let mut many = vec![2u64; 100];
    let (status, _) = d.post(1, CONV, &json!({ "participants": many, "property": 7 }));
    assert_eq!(status, 200, "100 ids, one participant besides the caller");
    many.push(2);
    let (status, err) = d.post(1, CONV, &json!({ "participants": many, "property": 7 }));
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_participants"))
    );
}

#[test]
fn conversation_list_pagination_order_and_archive_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let ids: Vec<u64> = (0..25).map(|i| d.conversation(1, 100 + i)).collect();
    let (status, page) = d.get(1, &format!("{CONV}?page_size=10"));
    assert_eq!(status, 200);
    assert_eq!(page["count"], 25);
    assert_eq!(page["results"].as_array().expect("results").len(), 10);
    assert_eq!(page["previous"], Value::Null);
    // Newest first among conversations without messages.
    assert_eq!(page["results"][0]["id"], ids[24]);
    let next = page["next"].as_str().expect("next link").to_owned();
    assert!(next.starts_with("http://"), "{next}");
    assert!(
        next.contains("page=2") && next.contains("page_size=10"),
        "{next}"
    );
    let (_, page2) = split(
        d.http
            .get(&next)
            .bearer_auth(d.token(1))
            .send()
            .expect("next"),
    );
    assert_eq!(page2["results"][0]["id"], ids[14]);
    assert!(
        page2["previous"]
            .as_str()
            .expect("previous")
            .contains("page=1")
    );
    let (_, page3) = d.get(1, &format!("{CONV}?page_size=10&page=3"));
    assert_eq!(page3["results"].as_array().expect("results").len(), 5);
    assert_eq!(page3["next"], Value::Null);

    // A message makes the oldest conversation the most recent.
    d.send(100, ids[0], "bump");
    let (_, page) = d.get(1, CONV);
    assert_eq!(page["results"][0]["id"], ids[0]);
    assert_eq!(page["results"][0]["last_message"]["text"], "bump");
    assert_eq!(page["results"][0]["unread_count"], 1);

    // Archived conversations move to ?archived=true.
    let (status, _) = d.post(1, &format!("{CONV}{}/archive/", ids[3]), &json!({}));
    assert_eq!(status, 200);
    let (_, active) = d.get(1, CONV);
    assert_eq!(active["count"], 24);
    let (_, archived) = d.get(1, &format!("{CONV}?archived=true"));
    assert_eq!(archived["count"], 1);
    assert_eq!(archived["results"][0]["id"], ids[3]);
    let (status, unarchived) = d.post(1, &format!("{CONV}{}/unarchive/", ids[3]), &json!({}));
    assert_eq!(
        (status, unarchived["is_archived"].as_bool()),
        (200, Some(false))
    );

    for bad in ["?page=0", "?archived=maybe", "?page=x", "?page_size=0"] {
        let (status, body) = d.get(1, &format!("{CONV}{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_query");
    }
    // As Django REST framework: an oversized page_size is capped, a page past the end is 404.
    let (status, all) = d.get(1, &format!("{CONV}?page_size=500"));
    assert_eq!(status, 200);
    assert_eq!(all["results"].as_array().expect("results").len(), 25);
    let (status, body) = d.get(1, &format!("{CONV}?page=9"));
    assert_eq!(
        (status, body["detail"].as_str()),
        (404, Some("Invalid page."))
    );

    // A brand-new conversation is the most recently active one, even without messages.
    let fresh = d.conversation(1, 999);
    let (_, page) = d.get(1, CONV);
    assert_eq!(page["results"][0]["id"], fresh);
}

#[test]
fn message_pagination_edges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let conv = d.conversation(1, 2);
    let ids: Vec<u64> = (0..120)
        .map(|i| {
            d.send(1 + i % 2, conv, &format!("m{i}"))["id"]
                .as_u64()
                .expect("id")
        })
        .collect();
    let list = |q: &str| d.get(2, &format!("{MSGS}?conversation={conv}{q}"));
    let page_ids = |page: &Value| -> Vec<u64> {
        page["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|m| m["id"].as_u64().expect("id"))
            .collect()
    };

    // Default: the newest 50, oldest first within the page.
    let (status, newest) = list("");
    assert_eq!(status, 200);
    assert_eq!(newest["count"], 120);
    assert_eq!(page_ids(&newest), ids[70..].to_vec());
    assert_eq!(newest["previous"], Value::Null);
    // `next` walks to older messages until there are none.
    let mut seen = page_ids(&newest);
    let mut next = newest["next"].as_str().map(str::to_owned);
    while let Some(url) = next {
        let (_, page) = split(
            d.http
                .get(&url)
                .bearer_auth(d.token(2))
                .send()
                .expect("next"),
        );
        let mut older = page_ids(&page);
        older.extend(seen);
        seen = older;
        next = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(
        seen, ids,
        "walking `next` gives every message exactly once, in order"
    );

    let (_, after) = list(&format!("&after={}&limit=10", ids[9]));
    assert_eq!(page_ids(&after), ids[10..20].to_vec());
    assert!(
        after["previous"]
            .as_str()
            .expect("newer")
            .contains(&format!("after={}", ids[19]))
    );
    assert!(
        after["next"]
            .as_str()
            .expect("older")
            .contains(&format!("before={}", ids[10]))
    );
    let (_, before) = list(&format!("&before={}&limit=5", ids[5]));
    assert_eq!(page_ids(&before), ids[0..5].to_vec());
    assert_eq!(before["next"], Value::Null);
    let (_, empty) = list(&format!("&after={}", ids[119]));
    assert!(page_ids(&empty).is_empty());
    assert_eq!(empty["previous"], Value::Null);
    let (_, all) = list("&limit=200");
    assert_eq!(page_ids(&all), ids);

    for bad in [
        "&limit=0",
        "&before=1&after=2",
        "&before=-1",
        "&after=x",
        "&after=9007199254740993",
    ] {
        let (status, body) = list(bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // An oversized limit is capped, as Django REST framework caps page sizes.
    let (status, capped) = list("&limit=500");
    assert_eq!(status, 200);
    assert_eq!(page_ids(&capped).len(), 120);
    // Links from an empty page at either end of the history are still valid requests.
    for edge in [
        format!("&before={}", ids[0]),
        format!("&after={}", ids[119]),
    ] {
        let (_, empty) = list(&edge);
        assert!(page_ids(&empty).is_empty(), "{edge}");
        for link in ["previous", "next"] {
            if let Some(url) = empty[link].as_str() {
                let (status, page) = split(
                    d.http
                        .get(url)
                        .bearer_auth(d.token(2))
                        .send()
                        .expect("link"),
                );
                assert_eq!(status, 200, "{edge} {link}: {url} -> {page}");
                assert!(!page_ids(&page).is_empty(), "{edge} {link} leads somewhere");
            }
        }
    }
    let (status, body) = d.get(2, MSGS);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_query"))
    );
}

#[test]
fn client_id_makes_sends_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let conv = d.conversation(1, 2);
    let body = json!({"conversation": conv, "text": "once", "client_id": "c-1"});
    let (s1, first) = d.post(1, MSGS, &body);
    let (s2, again) = d.post(1, MSGS, &body);
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["client_id"], "c-1");
    let (status, conflict) = d.post(
        1,
        MSGS,
        &json!({"conversation": conv, "text": "different", "client_id": "c-1"}),
    );
    assert_eq!(
        (status, conflict["error"].as_str()),
        (409, Some("client_id_conflict"))
    );
    // Another sender's client ids are their own.
    let (status, other) = d.post(2, MSGS, &body);
    assert_eq!(status, 201);
    assert_ne!(other["id"], first["id"]);
    let (_, page) = d.get(1, &format!("{MSGS}?conversation={conv}"));
    assert_eq!(page["count"], 2);
}

#[test]
fn unread_counts_across_two_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let c1 = d.conversation(1, 2);
    let c2 = d.conversation(1, 3);
    let m: Vec<u64> = (0..3)
        .map(|i| d.send(1, c1, &format!("a{i}"))["id"].as_u64().expect("id"))
        .collect();
    d.send(3, c2, "from three");
    let unread = |user| d.get(user, &format!("{CONV}unread_count/")).1["unread_count"].clone();
    assert_eq!(unread(2), 3);
    assert_eq!(unread(1), 1);
    assert_eq!(unread(3), 0, "your own messages are never unread");

    let (_, list) = d.get(2, "/api/v1/messages/unread/");
    assert_eq!(list["count"], 3);
    assert_eq!(list["results"].as_array().expect("results").len(), 3);
    assert_eq!(list["results"][0]["text"], "a0");

    // Reading message 2 reads message 1 too.
    let (status, _) = d.post(2, &format!("{MSGS}{}/mark_as_read/", m[1]), &json!({}));
    assert_eq!(status, 200);
    assert_eq!(unread(2), 1);
    let (_, first) = d.get(2, &format!("{MSGS}{}/", m[0]));
    assert_eq!(first["is_read"], true);
    let (_, last) = d.get(2, &format!("{MSGS}{}/", m[2]));
    assert_eq!(last["is_read"], false);
    // Reading an older message again never moves the marker back.
    d.post(2, &format!("{MSGS}{}/mark_as_read/", m[0]), &json!({}));
    assert_eq!(unread(2), 1);

    let (status, conv) = d.post(2, &format!("{CONV}{c1}/mark_all_read/"), &json!({}));
    assert_eq!((status, conv["unread_count"].as_u64()), (200, Some(0)));
    assert_eq!(unread(2), 0);
    let (_, list) = d.get(2, "/api/v1/messages/unread/");
    assert_eq!(list["count"], 0);

    // Replying reads everything before the reply.
    d.send(1, c2, "reply");
    assert_eq!(unread(1), 0);

    // Counts survive a restart.
    d.send(1, c1, "one more");
    assert!(d.stop().success());
    let d = Daemon::start(dir.path());
    assert_eq!(
        d.get(2, &format!("{CONV}unread_count/")).1["unread_count"],
        1
    );
}

#[test]
fn a_new_message_unarchives_for_recipients_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let conv = d.conversation(1, 2);
    d.post(1, &format!("{CONV}{conv}/archive/"), &json!({}));
    d.post(2, &format!("{CONV}{conv}/archive/"), &json!({}));
    d.send(1, conv, "are you there?");
    let (_, recipient) = d.get(2, &format!("{CONV}{conv}/"));
    assert_eq!(recipient["is_archived"], false);
    let (_, sender) = d.get(1, &format!("{CONV}{conv}/"));
    assert_eq!(sender["is_archived"], true);
    let (_, list) = d.get(2, CONV);
    assert_eq!(list["results"][0]["id"], conv);
}

/// What a message changes for every member of a group (their unread count, the list order, an
/// archive undone) is derived from the conversation's counters since schema 5, not written
/// into each member's row: each member's view must follow every kind of change (others'
/// messages, their own, a read marker moved to a middle message, a tombstone, archiving
/// before and after a message) as it did, and survive a restart.
#[test]
fn group_members_views_follow_every_message() {
    const SECRET: &str = "api-tests-service-secret-0123456789";
    let options = || Options::env(&[("INDABA_SERVICE__SHARED_SECRET", SECRET)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(dir.path(), options());
    let older = d.conversation(3, 9);
    let (status, body) = d.post(1, CONV, &json!({"participants": [1, 2, 3]}));
    assert_eq!(status, 201, "{body}");
    let group = body["id"].as_u64().expect("id");
    let newer = d.conversation(3, 8);
    let ids = |d: &Daemon, user: u64, query: &str| -> Vec<u64> {
        let (_, list) = d.get(user, &format!("{CONV}{query}"));
        let results = list["results"].as_array().expect("results").clone();
        results
            .iter()
            .map(|c| c["id"].as_u64().expect("id"))
            .collect()
    };
    // (total unread, the group's unread, the group archived) for each of 1, 2, 3.
    let views = |d: &Daemon| -> Vec<(u64, u64, bool)> {
        (1..=3)
            .map(|user| {
                let total = d.get(user, &format!("{CONV}unread_count/")).1["unread_count"]
                    .as_u64()
                    .expect("total");
                let (_, conv) = d.get(user, &format!("{CONV}{group}/"));
                (
                    total,
                    conv["unread_count"].as_u64().expect("unread"),
                    conv["is_archived"].as_bool().expect("archived"),
                )
            })
            .collect()
    };
    assert_eq!(ids(&d, 3, ""), vec![newer, group, older]);

    let m: Vec<u64> = ["g0", "g1", "g2"]
        .iter()
        .map(|text| d.send(1, group, text)["id"].as_u64().expect("id"))
        .collect();
    d.send(2, group, "h0");
    assert_eq!(
        views(&d),
        vec![(1, 1, false), (0, 0, false), (4, 4, false)],
        "others' messages count; your own reads everything before it"
    );
    // A message to the group moves it up every member's list, not only the sender's.
    assert_eq!(ids(&d, 3, ""), vec![group, newer, older]);
    let (_, list) = d.get(3, CONV);
    assert_eq!(list["results"][0]["unread_count"], 4);
    assert_eq!(list["results"][0]["last_message"]["text"], "h0");

    // Reading up to a middle message leaves what is above it.
    let (status, _) = d.post(3, &format!("{MSGS}{}/mark_as_read/", m[1]), &json!({}));
    assert_eq!(status, 200);
    assert_eq!(views(&d)[2], (2, 2, false));
    let (_, unread) = d.get(3, "/api/v1/messages/unread/");
    let texts: Vec<&str> = unread["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|m| m["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["g2", "h0"]);
    d.send(1, group, "g3");
    assert_eq!(views(&d), vec![(0, 0, false), (1, 1, false), (3, 3, false)]);

    // A tombstone is still a message: the counts keep it.
    let (status, _) = d.service(
        SECRET,
        "DELETE",
        &format!("/api/admin/messages/{}", m[2]),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(views(&d), vec![(0, 0, false), (1, 1, false), (3, 3, false)]);

    // Your own message reads everything before it, and keeps the conversation archived.
    d.post(3, &format!("{CONV}{group}/archive/"), &json!({}));
    d.send(3, group, "mine");
    assert_eq!(views(&d), vec![(1, 1, false), (2, 2, false), (0, 0, true)]);
    assert_eq!(ids(&d, 3, "?archived=true"), vec![group]);
    assert_eq!(ids(&d, 3, ""), vec![newer, older]);
    // Someone else's brings it back, for every member who archived it.
    d.post(2, &format!("{CONV}{group}/archive/"), &json!({}));
    assert_eq!(views(&d)[1], (2, 2, true));
    d.send(1, group, "g4");
    assert_eq!(views(&d), vec![(0, 0, false), (3, 3, false), (1, 1, false)]);
    assert_eq!(ids(&d, 3, ""), vec![group, newer, older]);
    // Archived again after that message, and unarchived: each as asked.
    d.post(3, &format!("{CONV}{group}/archive/"), &json!({}));
    d.post(3, &format!("{CONV}{group}/mark_all_read/"), &json!({}));
    assert_eq!(views(&d)[2], (0, 0, true));
    d.post(2, &format!("{CONV}{group}/archive/"), &json!({}));
    d.post(2, &format!("{CONV}{group}/unarchive/"), &json!({}));
    assert_eq!(views(&d)[1], (3, 3, false));

    let before = views(&d);
    assert!(d.stop().success());
    let d = Daemon::start_with(dir.path(), options());
    assert_eq!(views(&d), before, "the same after a restart");
    assert_eq!(ids(&d, 3, "?archived=true"), vec![group]);
    assert_eq!(ids(&d, 1, ""), vec![group]);
}

#[test]
fn non_participants_get_404_on_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let conv = d.conversation(1, 2);
    let msg = d.send(1, conv, "private")["id"].as_u64().expect("id");
    let outsider = 3;
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("{CONV}{conv}/"), None),
        ("POST", format!("{CONV}{conv}/archive/"), None),
        ("POST", format!("{CONV}{conv}/unarchive/"), None),
        ("POST", format!("{CONV}{conv}/mark_all_read/"), None),
        ("GET", format!("{MSGS}?conversation={conv}"), None),
        (
            "POST",
            MSGS.to_owned(),
            Some(json!({"conversation": conv, "text": "hi"})),
        ),
        ("GET", format!("{MSGS}{msg}/"), None),
        ("POST", format!("{MSGS}{msg}/mark_as_read/"), None),
    ];
    for (method, path, body) in cases {
        let mut req = d.request(method, outsider, &path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let (status, resp) = split(req.send().expect("request"));
        assert_eq!(status, 404, "{method} {path}: {resp}");
        assert_eq!(resp["error"], "not_found");
    }
    // Nothing the outsider did changed anything.
    let (_, list) = d.get(3, CONV);
    assert_eq!(list["count"], 0);
    let (_, page) = d.get(1, &format!("{MSGS}?conversation={conv}"));
    assert_eq!(page["count"], 1);
    // Unknown ids look the same as forbidden ones.
    let (status, _) = d.get(1, &format!("{CONV}999999/"));
    assert_eq!(status, 404);
    let (status, _) = d.get(1, &format!("{MSGS}999999/"));
    assert_eq!(status, 404);
    // Presence only shows people you share a conversation with.
    let (status, presence) = d.get(3, "/api/v1/messaging/presence/?user_ids=1,2");
    assert_eq!((status, presence), (200, json!([])));
    let (_, presence) = d.get(1, "/api/v1/messaging/presence/?user_ids=2,3");
    assert_eq!(presence.as_array().expect("list").len(), 1);
    assert_eq!(presence[0]["user_id"], 2);
    assert_eq!(presence[0]["online"], false);
    // What the document's pattern for `user_ids` says, no more (schemathesis checks the
    // document against the server): spaces around ids and empty items, not other whitespace.
    let (status, presence) = d.get(1, "/api/v1/messaging/presence/?user_ids=%202%20,,3");
    assert_eq!((status, presence[0]["user_id"].clone()), (200, json!(2)));
    for bad in ["2%093", "2%0A", "2%203"] {
        let (status, resp) = d.get(1, &format!("/api/v1/messaging/presence/?user_ids={bad}"));
        assert_eq!(
            (status, &resp["error"]),
            (400, &json!("invalid_query")),
            "{bad}"
        );
    }
}

#[test]
fn bad_requests_get_precise_4xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(
        dir.path(),
        Options::env(&[
            ("INDABA_LIMITS__MAX_BODY_BYTES", "4096"),
            ("INDABA_LIMITS__MAX_TEXT_BYTES", "100"),
        ]),
    );
    let conv = d.conversation(1, 2);
    let raw = |body: &str, content_type: &str| {
        split(
            d.request("POST", 1, MSGS)
                .header("Content-Type", content_type)
                .body(body.to_owned())
                .send()
                .expect("POST"),
        )
    };
    let expect = |(status, body): (u16, Value), want: u16, code: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error"], code, "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
        body
    };
    expect(raw("{not json", "application/json"), 400, "invalid_json");
    expect(raw("", "application/json"), 400, "invalid_json");
    let b = expect(
        // A decimal string is an id (contract section 7); anything else is not.
        raw(
            &format!(r#"{{"conversation": "{conv}x", "text": "x"}}"#),
            "application/json",
        ),
        400,
        "invalid_request",
    );
    assert!(
        b["detail"]
            .as_str()
            .expect("detail")
            .contains("conversation"),
        "{b}"
    );
    let b = expect(
        raw(
            &format!(r#"{{"conversation": {conv}}}"#),
            "application/json",
        ),
        400,
        "invalid_request",
    );
    assert!(
        b["detail"].as_str().expect("detail").contains("text"),
        "{b}"
    );
    expect(
        raw(
            &format!(r#"{{"conversation": {conv}, "text": "   "}}"#),
            "application/json",
        ),
        400,
        "invalid_request",
    );
    expect(
        raw(
            r#"{"conversation": 424242, "text": "x"}"#,
            "application/json",
        ),
        404,
        "not_found",
    );
    expect(
        raw(
            &format!(
                r#"{{"conversation": {conv}, "text": "{}"}}"#,
                "x".repeat(101)
            ),
            "application/json",
        ),
        400,
        "text_too_long",
    );
    expect(
        raw(
            &format!(r#"{{"conversation": {conv}, "text": "x", "priority": "urgent"}}"#),
            "application/json",
        ),
        400,
        "invalid_request",
    );
    expect(
        raw(
            &format!(r#"{{"conversation": {conv}, "text": "x", "metadata": [1]}}"#),
            "application/json",
        ),
        400,
        "invalid_request",
    );
    expect(
        raw(
            &format!(r#"{{"conversation": {conv}, "text": "x", "receiver": 9}}"#),
            "application/json",
        ),
        400,
        "invalid_receiver",
    );
    expect(
        raw(
            &format!(r#"{{"conversation": {conv}, "text": "x"}}"#),
            "text/plain",
        ),
        415,
        "unsupported_media_type",
    );
    let big = format!(
        r#"{{"conversation": {conv}, "text": "{}"}}"#,
        "x".repeat(5000)
    );
    expect(raw(&big, "application/json"), 413, "payload_too_large");
    expect(
        raw(
            &format!(r#"{{"conversation": {conv}, "text": "x", "receiver": 1}}"#),
            "application/json",
        ),
        400,
        "invalid_receiver",
    );
    // An action endpoint takes no body or `{}` (also as `curl -d '{}'` sends it, form-encoded)...
    let resp = d
        .request("POST", 1, &format!("{CONV}{conv}/archive/"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("{}")
        .send()
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 200);
    // ...and refuses parameters it does not take.
    let (status, body) = d.post(1, &format!("{CONV}{conv}/archive/"), &json!({"x": 1}));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    let (status, body) = split(d.request("DELETE", 1, MSGS).send().expect("DELETE"));
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let resp = d
        .request("PUT", 1, &format!("{CONV}{conv}/"))
        .send()
        .expect("PUT");
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    let (status, _) = d.get(1, "/api/v1/messaging/nothing-here/");
    assert_eq!(status, 404);
    let (status, _) = d.get(1, &format!("{CONV}abc/"));
    assert_eq!(status, 404);

    // Tokens.
    let no_token = split(d.http.get(d.url(CONV)).send().expect("GET"));
    expect(no_token, 401, "not_authenticated");
    let bad = split(
        d.http
            .get(d.url(CONV))
            .bearer_auth("abc.def.ghi")
            .send()
            .expect("GET"),
    );
    expect(bad, 401, "token_invalid");
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"exp": now() - 3600, "user_id": 1}),
        &jsonwebtoken::EncodingKey::from_secret(d.secret()),
    )
    .expect("sign");
    let resp = split(
        d.http
            .get(d.url(CONV))
            .bearer_auth(expired)
            .send()
            .expect("GET"),
    );
    expect(resp, 401, "token_expired");
    let refresh = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"exp": now() + 3600, "user_id": 1, "token_type": "refresh"}),
        &jsonwebtoken::EncodingKey::from_secret(d.secret()),
    )
    .expect("sign");
    let resp = split(
        d.http
            .get(d.url(CONV))
            .bearer_auth(refresh)
            .send()
            .expect("GET"),
    );
    expect(resp, 401, "token_invalid");
}

/// Regression (found by the `http_request` fuzz target in CI): a body with bytes that are not
/// UTF-8 inside a string the server does not read (an unknown field) created a conversation
/// (201): serde_json skips an ignored string without checking its bytes. JSON is UTF-8 (RFC
/// 8259): such a body is 400 `invalid_json`, wherever the bad bytes are, and nothing is made.
#[test]
fn a_body_that_is_not_utf8_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    for body in [
        &b"{\"participants\":[2],\"sub0ject\":\"Inquiry about proper\xffy\",\"property\":1}"[..],
        &b"{\"participants\":[3],\"subject\":\"caf\xc3\"}"[..],
        &b"{\"participants\":[4]} \xff"[..],
    ] {
        let resp = d
            .request("POST", 1, CONV)
            .header("Content-Type", "application/json")
            .body(body.to_vec())
            .send()
            .expect("POST");
        let (status, answer) = split(resp);
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_json")),
            "{} → {answer}",
            String::from_utf8_lossy(body)
        );
    }
    let (_, list) = d.get(1, CONV);
    assert_eq!(list["count"], 0, "{list}");
}

/// Regression (issue 16, defect 7): `{"participants":[182]}}}]]garbage!!` created a
/// conversation (201): the parser stopped after the first JSON value and ignored the rest. A body
/// is one JSON value and optional whitespace; anything after it is 400 `invalid_json`, and
/// nothing is created.
#[test]
fn json_with_trailing_garbage_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let conv = d.conversation(1, 2);
    let post = |path: &str, body: &str| {
        let resp = d
            .request("POST", 1, path)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .expect("POST");
        let json_type = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/json");
        let (status, body) = split(resp);
        assert!(json_type, "{status} {body}");
        (status, body)
    };
    for body in [
        r#"{"participants":[1,182]}}}]]garbage!!"#.to_owned(),
        r#"{"participants":[1,183]} {"participants":[1,184]}"#.to_owned(),
        r#"{"participants":[1,185]}x"#.to_owned(),
    ] {
        let (status, answer) = post(CONV, &body);
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"], "invalid_json", "{answer}");
        assert!(
            answer["detail"]
                .as_str()
                .is_some_and(|d| d.contains("trailing")),
            "{answer}"
        );
    }
    let (status, answer) = post(
        MSGS,
        &format!(r#"{{"conversation": {conv}, "text": "hi"}}garbage"#),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_json")),
        "{answer}"
    );
    // Nothing was created by the refused bodies.
    let (_, list) = d.get(1, CONV);
    assert_eq!(list["count"], 1, "{list}");
    let (_, page) = d.get(1, &format!("{MSGS}?conversation={conv}"));
    assert_eq!(page["count"], 0, "{page}");
    // Whitespace after the value is fine.
    let (status, answer) = post(CONV, "{\"participants\":[1,186]} \r\n\t ");
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn sends_over_the_rate_limit_get_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(
        dir.path(),
        Options::env(&[
            ("INDABA_LIMITS__MESSAGES_PER_SECOND", "1"),
            ("INDABA_LIMITS__MESSAGES_BURST", "3"),
        ]),
    );
    let conv = d.conversation(1, 2);
    for i in 0..3 {
        d.send(1, conv, &format!("burst {i}"));
    }
    let resp = d
        .request("POST", 1, MSGS)
        .json(&json!({"conversation": conv, "text": "one too many"}))
        .send()
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    let (_, body) = split(resp);
    assert_eq!(body["error"], "rate_limited");
    // Another user is not affected, and the refused message was not stored.
    d.send(2, conv, "my own budget");
    let (_, page) = d.get(1, &format!("{MSGS}?conversation={conv}"));
    assert_eq!(page["count"], 4);
}

#[test]
fn local_accounts_register_login_refresh_me() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let post =
        |path: &str, body: Value| split(d.http.post(d.url(path)).json(&body).send().expect("POST"));
    let (status, user) = post(
        "/api/v1/auth/register/",
        json!({"username": "amara", "password": "long enough pw", "display_name": "Amara O."}),
    );
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_u64().expect("id");
    assert!(
        id >= 1_000_000_000_000,
        "local ids start at auth.local_id_base: {id}"
    );
    assert_eq!(user["display_name"], "Amara O.");
    let (status, dup) = post(
        "/api/v1/auth/register/",
        json!({"username": "amara", "password": "another pw!"}),
    );
    assert_eq!(
        (status, dup["error"].as_str()),
        (409, Some("username_taken"))
    );
    let (status, _) = post(
        "/api/v1/auth/register/",
        json!({"username": "bad name!", "password": "long enough pw"}),
    );
    assert_eq!(status, 400);
    let (status, _) = post(
        "/api/v1/auth/register/",
        json!({"username": "short", "password": "123"}),
    );
    assert_eq!(status, 400);

    let (status, tokens) = post(
        "/api/v1/auth/token/",
        json!({"username": "amara", "password": "long enough pw"}),
    );
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh"].as_str().expect("refresh").to_owned();
    let me = |token: &str| {
        split(
            d.http
                .get(d.url("/api/v1/auth/me/"))
                .bearer_auth(token)
                .send()
                .expect("me"),
        )
    };
    let (status, body) = me(&access);
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"id": id, "username": "amara", "display_name": "Amara O."})
    );
    // The refresh token is not an access token, but it buys a new one.
    assert_eq!(me(&refresh).0, 401);
    let (status, renewed) = post("/api/v1/auth/token/refresh/", json!({"refresh": refresh}));
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(me(renewed["access"].as_str().expect("access")).0, 200);
    let (status, _) = post("/api/v1/auth/token/refresh/", json!({"refresh": access}));
    assert_eq!(status, 401, "an access token cannot refresh");

    // A local user chats like anyone else.
    let (status, conv) = split(
        d.http
            .post(d.url(CONV))
            .bearer_auth(&access)
            .json(&json!({"participants": [7]}))
            .send()
            .expect("POST"),
    );
    assert_eq!(status, 201, "{conv}");

    // Wrong password and unknown user look the same.
    let (s1, wrong) = post(
        "/api/v1/auth/token/",
        json!({"username": "amara", "password": "nope nope"}),
    );
    let (s2, unknown) = post(
        "/api/v1/auth/token/",
        json!({"username": "nobody", "password": "nope nope"}),
    );
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"], "invalid_credentials");

    // Repeated failures for one username are throttled, even with the right password.
    let mut limited = None;
    for _ in 0..12 {
        let resp = d
            .http
            .post(d.url("/api/v1/auth/token/"))
            .json(&json!({"username": "amara", "password": "guess guess"}))
            .send()
            .expect("POST");
        if resp.status().as_u16() == 429 {
            limited = Some(
                resp.headers()["retry-after"]
                    .to_str()
                    .expect("header")
                    .to_owned(),
            );
            break;
        }
    }
    assert!(limited.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
    let (status, _) = post(
        "/api/v1/auth/token/",
        json!({"username": "amara", "password": "long enough pw"}),
    );
    assert_eq!(status, 429);

    // Accounts survive a restart.
    assert!(d.stop().success());
    let d = Daemon::start(dir.path());
    let (status, _) = split(
        d.http
            .post(d.url("/api/v1/auth/token/"))
            .json(&json!({"username": "amara", "password": "long enough pw"}))
            .send()
            .expect("POST"),
    );
    assert_eq!(status, 200);
}

/// Regression (issue 16, defect 12): every password hash ran on the blocking pool at once, so a
/// login flood held one Argon2 computation (19 MiB each) per request in flight, hundreds at a
/// time, and competed with the store reads that share that pool. Hashes are now bounded to the
/// cores with a short queue; past it a login or registration is answered 503 `server_busy`
/// with `Retry-After` at once. Correct passwords are used, so the per-address limit on *failed*
/// logins is not what answers.
#[test]
fn a_login_flood_is_bounded_and_store_reads_still_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let account = json!({"username": "flood", "password": "correct horse battery"});
    let post = |path: &str, body: &Value| {
        let resp = d.http.post(d.url(path)).json(body).send().expect("POST");
        let retry_after = resp.headers().contains_key("retry-after");
        let json_type = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/json");
        let (status, body) = split(resp);
        (status, retry_after, json_type, body)
    };
    let (status, _, _, user) = post("/api/v1/auth/register/", &account);
    assert_eq!(status, 201, "{user}");
    let conv = d.conversation(1, 2);
    d.send(1, conv, "still here");
    // Far more at once than the cores and their queue, on any machine this runs on.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let logins = 12 * cores + 16;
    let registrations = 8;
    let barrier = std::sync::Barrier::new(logins + registrations + 1);
    let answers = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..logins + registrations)
            .map(|i| {
                let (post, account, barrier) = (&post, &account, &barrier);
                scope.spawn(move || {
                    let (path, body) = if i < logins {
                        ("/api/v1/auth/token/", account.clone())
                    } else {
                        (
                            "/api/v1/auth/register/",
                            json!({"username": format!("new{i}"), "password": "long enough pw"}),
                        )
                    };
                    barrier.wait();
                    let (status, retry_after, json_type, body) = post(path, &body);
                    (path, status, retry_after, json_type, body)
                })
            })
            .collect();
        barrier.wait();
        // A store read while the flood is under way.
        let (status, page) = d.get(2, &format!("{CONV}{conv}/"));
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["last_message"]["text"], "still here", "{page}");
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect::<Vec<_>>()
    });
    let mut busy = 0;
    for (path, status, retry_after, json_type, body) in &answers {
        assert!(json_type, "{path} {status}: {body}");
        match status {
            200 | 201 => {}
            503 => {
                assert_eq!(body["error"], "server_busy", "{body}");
                assert!(retry_after, "503 without Retry-After: {body}");
                busy += 1;
            }
            429 => assert!(retry_after, "429 without Retry-After: {body}"),
            _ => panic!("{path}: {status} {body}"),
        }
    }
    assert!(
        busy > 0,
        "{logins} logins and {registrations} registrations at once, none refused: {:?}",
        answers.iter().map(|a| a.1).collect::<Vec<_>>()
    );
    assert!(
        answers.iter().any(|a| a.1 == 200),
        "some logins get through"
    );
    // The flood is over: a login is served again.
    let (status, _, _, tokens) = post("/api/v1/auth/token/", &account);
    assert_eq!(status, 200, "{tokens}");
}

#[test]
fn registration_can_be_switched_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_AUTH__ALLOW_REGISTRATION", "false")]),
    );
    let (status, body) = split(
        d.http
            .post(d.url("/api/v1/auth/register/"))
            .json(&json!({"username": "amara", "password": "long enough pw"}))
            .send()
            .expect("POST"),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("registration_disabled"))
    );
}

#[test]
fn external_users_are_provisioned_with_their_username_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path());
    let token = indaba::auth::jwt::TokenMinter::new(d.secret(), "user_id")
        .mint(
            42,
            Some("kofi"),
            indaba::auth::jwt::TokenType::Access,
            std::time::Duration::from_secs(60),
        )
        .expect("mint");
    let (status, me) = split(
        d.http
            .get(d.url("/api/v1/auth/me/"))
            .bearer_auth(&token)
            .send()
            .expect("me"),
    );
    assert_eq!(status, 200);
    assert_eq!(
        me,
        json!({"id": 42, "username": "kofi", "display_name": null})
    );
    assert!(d.stop().success());
    // Remembered across restarts, even when a later token carries no name.
    let d = Daemon::start(dir.path());
    let (_, me) = d.get(42, "/api/v1/auth/me/");
    assert_eq!(me["username"], "kofi");
}

#[test]
fn public_key_issuers_rs256_es256_eddsa() {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let cases = [
        ("rsa", jsonwebtoken::Algorithm::RS256),
        ("ec", jsonwebtoken::Algorithm::ES256),
        ("ed25519", jsonwebtoken::Algorithm::EdDSA),
    ];
    for (name, algorithm) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = common::key_file(dir.path(), "k");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[storage]\nencryption_key_file = \"{}\"\n[auth]\njwt_public_key_file = \"{}\"\nissuer = \"https://app.example\"\n",
                key.display(),
                keys.join(format!("{name}.pub.pem")).display()
            ),
        )
        .expect("write config");
        let d = Daemon::start_with(
            &dir.path().join("data"),
            Options {
                config: Some(config),
                // Only for the helper's HS256 tokens, which this daemon must refuse.
                secret: Some("not-the-issuers-key-at-all".into()),
                env: vec![],
            },
        );
        let pem = std::fs::read(keys.join(format!("{name}.pem"))).expect("private key");
        let signing = match algorithm {
            jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
            jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
            _ => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
        }
        .expect("signing key");
        let sign = |claims: Value| {
            jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, &signing)
                .expect("sign")
        };
        let me = |token: &str| {
            split(
                d.http
                    .get(d.url("/api/v1/auth/me/"))
                    .bearer_auth(token)
                    .send()
                    .expect("me"),
            )
        };
        let good = sign(json!({"exp": now() + 300, "user_id": "31", "iss": "https://app.example"}));
        let (status, body) = me(&good);
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["id"], 31);
        let wrong_issuer = sign(json!({"exp": now() + 300, "user_id": 31, "iss": "https://other"}));
        assert_eq!(me(&wrong_issuer).0, 401, "{name}");
        let no_issuer = sign(json!({"exp": now() + 300, "user_id": 31}));
        assert_eq!(
            me(&no_issuer).0,
            401,
            "{name}: a configured issuer is required"
        );
        // An HS256 token is not accepted by a public-key daemon, whatever it is signed with.
        assert_eq!(me(&d.token(31)).0, 401, "{name}");
        // Local accounts need a signing secret this daemon does not have.
        let (status, body) = split(
            d.http
                .post(d.url("/api/v1/auth/token/"))
                .json(&json!({"username": "x", "password": "yyyyyyyy"}))
                .send()
                .expect("POST"),
        );
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("local_accounts_unavailable"))
        );
    }
}

/// Regression (issue 16, defect 8): the errors hyper answered by itself had no body at all —
/// a malformed request line or header (400), a request line too long (414), headers too large
/// or too many (431) — and a request head that never finished was cut off with no answer.
/// Every one of them is now the contract's JSON error, read here off a raw socket.
#[test]
fn http_layer_errors_are_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(
        dir.path(),
        Options::env(&[
            ("INDABA_LIMITS__BODY_TIMEOUT", "1s"),
            ("INDABA_LIMITS__MAX_BODY_BYTES", "4096"),
        ]),
    );
    let send = |request: Vec<u8>| raw_request(d.addr, request).expect("an answer, not a hang-up");
    let malformed: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /he\x01lth HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    ];
    for request in malformed {
        let answer = send(request.to_vec());
        answer.assert_error(400, "malformed_request");
        assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    }
    // A request line longer than any URI the daemon takes: hyper's own limit, 64 KiB, and more.
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    send(long_uri.into_bytes()).assert_error(414, "uri_too_long");
    // One header of half a megabyte; then 150 small ones.
    let big_header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(500_000)
    );
    send(big_header.into_bytes()).assert_error(431, "headers_too_large");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET /health HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    send(many_headers.into_bytes()).assert_error(431, "headers_too_large");
    // Half a head, then silence: 408 after `limits.body_timeout`.
    let mut stalled = std::net::TcpStream::connect(d.addr).expect("connect");
    std::io::Write::write_all(&mut stalled, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Half")
        .expect("write");
    read_response(&mut stalled)
        .expect("408, not a hang-up")
        .assert_error(408, "request_timeout");
    // A body over the limit, still being sent: a real 413, not a reset connection.
    let mut upload = format!(
        "POST {MSGS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n",
        d.token(1)
    )
    .into_bytes();
    upload.extend(std::iter::repeat_n(b' ', 2_000_000));
    send(upload).assert_error(413, "payload_too_large");

    // Well-formed requests around them are served as before, pipelined on one connection:
    // a chunked body, a sized body, then a malformed request, answered in order.
    let conv = d.conversation(1, 2);
    let token = d.token(1);
    let message = format!(r#"{{"conversation": {conv}, "text": "chunked"}}"#);
    let sized = format!(r#"{{"conversation": {conv}, "text": "sized"}}"#);
    let pipelined = format!(
        "POST {MSGS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{message}\r\n0\r\n\r\n\
         POST {MSGS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{sized}\
         GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        message.len(),
        sized.len(),
    );
    let mut stream = std::net::TcpStream::connect(d.addr).expect("connect");
    std::io::Write::write_all(&mut stream, pipelined.as_bytes()).expect("write");
    let first = read_response(&mut stream).expect("first answer");
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["text"], "chunked", "{first:?}");
    let second = read_response(&mut stream).expect("second answer");
    assert_eq!(second.status, 201, "{second:?}");
    assert_eq!(second.body["text"], "sized", "{second:?}");
    read_response(&mut stream)
        .expect("third answer")
        .assert_error(400, "malformed_request");
}

/// The answers over `limits.max_connections` have the same JSON shape, a malformed request's
/// included.
#[test]
fn over_the_connection_limit_is_a_json_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(
        dir.path(),
        Options::env(&[("INDABA_LIMITS__MAX_CONNECTIONS", "1")]),
    );
    let _held = std::net::TcpStream::connect(d.addr).expect("connect");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let answer = raw_request(
        d.addr,
        format!("GET {CONV} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
    )
    .expect("an answer");
    answer.assert_error(503, "too_many_connections");
    assert!(answer.header("retry-after").is_some(), "{answer:?}");
    raw_request(d.addr, b"GARBAGE\r\n\r\n".to_vec())
        .expect("an answer")
        .assert_error(400, "malformed_request");
}
