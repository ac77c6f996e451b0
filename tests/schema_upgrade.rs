//! A data dir written by an older release opens in this one with every user's view as it was.
//!
//! `tests/fixtures/schema-4/` is a dev-mode data dir made by the last schema-4 build (release
//! `indaba-final` of 2026-12-07, the build before memberships were derived from the
//! conversation's counters): [`scenario`], a clean stop, then [`journaled`] with no checkpoint
//! and `kill -9`, so at the next start the file's memberships are upgraded and the journal's
//! last batches replayed on top of them by the new build's ops. `make_the_schema_4_fixture`
//! (ignored) makes it again from such a binary, and checks [`expected`] against it first: the
//! figures below are the old build's own answers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Daemon, Options};
use serde_json::{Value, json};

const CONV: &str = "/api/v1/messaging/conversations/";
const MSGS: &str = "/api/v1/messaging/messages/";
const SECRET: &str = "upgrade-tests-service-secret-0123456789";
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-4");

fn options() -> Options {
    Options::env(&[("INDABA_SERVICE__SHARED_SECRET", SECRET)])
}

/// The conversations of the scenario, by the ids the fixture gave them.
struct Ids {
    older: u64,
    group: u64,
    newer: u64,
    one_to_one: u64,
}

/// Users 1, 2 and 3 in a group; 3 also with 9 and 8, 1 also with 4. Reads to a middle message,
/// archives undone by others' messages and kept by one's own, a tombstone. The fixture's
/// daemon stops cleanly after this: it is in the data file.
fn scenario(d: &Daemon) -> Ids {
    let older = d.conversation(3, 9);
    let (status, body) = d.post(1, CONV, &json!({"participants": [1, 2, 3]}));
    assert_eq!(status, 201, "{body}");
    let group = body["id"].as_u64().expect("id");
    let newer = d.conversation(3, 8);
    let one_to_one = d.conversation(1, 4);
    let g: Vec<u64> = ["g0", "g1", "g2"]
        .iter()
        .map(|text| d.send(1, group, text)["id"].as_u64().expect("id"))
        .collect();
    d.send(2, group, "h0");
    let (status, _) = d.post(3, &format!("{MSGS}{}/mark_as_read/", g[1]), &json!({}));
    assert_eq!(status, 200);
    d.post(3, &format!("{CONV}{group}/archive/"), &json!({}));
    d.send(4, one_to_one, "x0");
    d.send(4, one_to_one, "x1");
    d.post(1, &format!("{CONV}{one_to_one}/archive/"), &json!({}));
    d.send(4, one_to_one, "x2");
    d.post(4, &format!("{CONV}{one_to_one}/archive/"), &json!({}));
    d.send(4, one_to_one, "x3");
    d.send(2, group, "h1");
    d.post(3, &format!("{CONV}{group}/archive/"), &json!({}));
    let (status, _) = d.service(
        SECRET,
        "DELETE",
        &format!("/api/admin/messages/{}", g[2]),
        None,
    );
    assert_eq!(status, 200);
    Ids {
        older,
        group,
        newer,
        one_to_one,
    }
}

/// Then, with no checkpoint before the fixture's daemon is killed: in the journal only, for
/// the new build to replay onto the upgraded file.
fn journaled(d: &Daemon, ids: &Ids) {
    d.send(4, ids.one_to_one, "x4");
    d.post(
        3,
        &format!("{CONV}{}/mark_all_read/", ids.group),
        &json!({}),
    );
    d.send(2, ids.group, "h2");
}

/// A conversation in a user's list: (id, unread, archived, last message's text).
type Listed = (u64, u64, bool, Value);

/// A user, their total unread count, and their conversations in list order.
type UserView = (u64, u64, Vec<Listed>);

/// Each user's view: the total unread count, then each of their conversations in list order
/// (not archived, then archived) as (id, unread, archived, last message's text).
fn views(d: &Daemon) -> Vec<UserView> {
    let mut out = Vec::new();
    for user in [1, 2, 3, 4] {
        let (_, total) = d.get(user, &format!("{CONV}unread_count/"));
        let mut conversations = Vec::new();
        for query in ["", "?archived=true"] {
            let (status, list) = d.get(user, &format!("{CONV}{query}"));
            assert_eq!(status, 200, "{list}");
            for c in list["results"].as_array().expect("results") {
                conversations.push((
                    c["id"].as_u64().expect("id"),
                    c["unread_count"].as_u64().expect("unread"),
                    c["is_archived"].as_bool().expect("archived"),
                    c["last_message"]["text"].clone(),
                ));
            }
        }
        out.push((
            user,
            total["unread_count"].as_u64().expect("total"),
            conversations,
        ));
    }
    out
}

/// What the schema-4 build answers after [`scenario`] and [`journaled`].
fn expected(ids: &Ids) -> Vec<UserView> {
    let Ids {
        older,
        group,
        newer,
        one_to_one,
    } = *ids;
    let h2 = || json!("h2");
    let x4 = || json!("x4");
    vec![
        // g0–g2 are 1's own; h0–h2 are not. x2 brought back what 1 archived.
        (
            1,
            8,
            vec![(group, 3, false, h2()), (one_to_one, 5, false, x4())],
        ),
        // h2 is 2's own: everything before it is read.
        (2, 0, vec![(group, 0, false, h2())]),
        // Read to g1, archived, then all read; h2 brought it back.
        (
            3,
            1,
            vec![
                (group, 1, false, h2()),
                (newer, 0, false, Value::Null),
                (older, 0, false, Value::Null),
            ],
        ),
        // x3 and x4 are 4's own: read, and the archive kept.
        (4, 0, vec![(one_to_one, 0, true, x4())]),
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        // The files only: not the admin socket a killed daemon leaves.
        if !entry.file_type().expect("type").is_file() {
            continue;
        }
        let dest = to.join(entry.file_name());
        std::fs::copy(entry.path(), &dest).expect("copy");
        // Git keeps no modes: the daemon wants its key files readable by their owner only.
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

/// The fixture's conversation ids: the scenario creates them in this order on an empty file.
fn fixture_ids() -> Ids {
    Ids {
        older: 1,
        group: 2,
        newer: 3,
        one_to_one: 4,
    }
}

#[test]
fn a_schema_4_data_dir_opens_with_every_view_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(Path::new(FIXTURE), dir.path());
    let d = Daemon::start_with(dir.path(), options());
    let ids = fixture_ids();
    assert_eq!(views(&d), expected(&ids));
    assert!(
        d.log_text().contains("data file schema upgraded"),
        "{}",
        d.log_text()
    );

    // And the upgraded rows go on counting: a message from 1 counts for 2 and 3; 3's reply
    // reads it all and counts for 1 and 2.
    d.send(1, ids.group, "after");
    let after = views(&d);
    assert_eq!((after[0].1, after[1].1, after[2].1), (5, 1, 2));
    assert_eq!(after[2].2[0], (ids.group, 2, false, json!("after")));
    d.send(3, ids.group, "reply");
    let after = views(&d);
    assert_eq!((after[0].1, after[1].1, after[2].1), (6, 2, 0));
    // Archiving after the upgrade holds until someone else writes.
    d.post(3, &format!("{CONV}{}/archive/", ids.group), &json!({}));
    d.send(3, ids.group, "mine");
    assert_eq!(views(&d)[2].2[2], (ids.group, 0, true, json!("mine")));

    // The same after a restart of the upgraded file.
    let before = views(&d);
    assert!(d.stop().success());
    let d = Daemon::start_with(dir.path(), options());
    assert_eq!(views(&d), before);
}

/// Makes `tests/fixtures/schema-4/` again: `INDABA_SCHEMA_4_BIN=/work/perf/indaba-final cargo
/// test --test schema_upgrade -- --ignored`.
#[test]
#[ignore = "needs a schema-4 build of the daemon (INDABA_SCHEMA_4_BIN)"]
fn make_the_schema_4_fixture() {
    let bin = std::env::var("INDABA_SCHEMA_4_BIN").expect("INDABA_SCHEMA_4_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_bin(Path::new(&bin), dir.path(), options());
    let ids = scenario(&d);
    let fixed = fixture_ids();
    assert_eq!(
        (ids.older, ids.group, ids.newer, ids.one_to_one),
        (fixed.older, fixed.group, fixed.newer, fixed.one_to_one)
    );
    assert!(d.stop().success());
    let no_checkpoint = Options::env(&[
        ("INDABA_SERVICE__SHARED_SECRET", SECRET),
        ("INDABA_STORAGE__CHECKPOINT_INTERVAL", "1h"),
    ]);
    let d = Daemon::start_bin(Path::new(&bin), dir.path(), no_checkpoint);
    journaled(&d, &ids);
    assert_eq!(
        views(&d),
        expected(&ids),
        "the schema-4 build's own answers"
    );
    d.crash();
    let _ = std::fs::remove_dir_all(FIXTURE);
    std::fs::create_dir_all(FIXTURE).expect("fixture dir");
    copy_dir(dir.path(), Path::new(FIXTURE));
}
