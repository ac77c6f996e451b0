//! The journal file: opening, clearing, moving aside, and reading back what a crash or
//! damage left.

use std::path::Path;

use super::header::{HEADER_LEN, header, untagged_header};
use super::scan::scan;
use super::*;

fn record(journal: &Journal, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0; RECORD_HEADER];
    bytes.extend_from_slice(payload);
    journal.seal(&mut bytes, seq);
    bytes
}

fn open(dir: &Path, id: u64) -> (Journal, Opened) {
    Journal::open(dir, id).expect("open")
}

/// A journal in a temp dir, for the tests that only scan bytes.
fn scratch() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = open(dir.path(), 1).0;
    (dir, journal)
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

/// The records `journal` would replay after `after`, the file being whole.
fn replayed(journal: &Journal, after: u64) -> Vec<Record> {
    let scan = journal.scan(after).expect("scan");
    assert!(scan.damage.is_none(), "{:?}", scan.damage);
    scan.records
}

/// Records `seqs` back to back, with their offsets in the records area.
fn file_of(journal: &Journal, seqs: &[u64]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for seq in seqs {
        offsets.push(bytes.len());
        bytes.extend(record(journal, *seq, format!("batch {seq}").as_bytes()));
    }
    (bytes, offsets)
}

#[test]
fn records_after_the_checkpoint_come_back_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, opened) = open(dir.path(), 7);
    assert_eq!(opened, Opened::Created);
    let mut offset = RECORDS_START;
    for (seq, payload) in [(3, &b"a"[..]), (4, b""), (6, b"ccc")] {
        let bytes = record(&journal, seq, payload);
        journal.write_at(offset, &bytes).expect("write");
        offset += bytes.len() as u64;
    }
    journal.sync().expect("sync");
    drop(journal);

    let (journal, opened) = open(dir.path(), 7);
    assert_eq!(opened, Opened::Existing);
    let seqs = |after| seqs(&replayed(&journal, after));
    assert_eq!(seqs(0), [3, 4, 6]);
    assert_eq!(replayed(&journal, 0)[2].payload, b"ccc");
    // After a checkpoint the file starts over: records it covers are never ahead of new
    // ones, and a checkpoint at the newest seq leaves nothing to replay.
    assert_eq!(seqs(2), [3, 4, 6]);
    assert_eq!(seqs(6), Vec::<u64>::new());
    // The data file is past some of them (a replay stopped part-way): the rest.
    assert_eq!(seqs(4), [6]);
}

#[test]
fn cleared_records_are_gone_and_the_journal_still_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(dir.path(), 3);
    let old = record(&journal, 9, b"old run");
    journal.write_at(RECORDS_START, &old).expect("write");
    journal.clear().expect("clear");
    assert!(replayed(&journal, 0).is_empty());
    // The old run's record, written back where it was, is not read: the key changed.
    journal.write_at(RECORDS_START, &old).expect("write");
    assert!(replayed(&journal, 0).is_empty());
    drop(journal);
    let (journal, opened) = open(dir.path(), 3);
    assert_eq!(opened, Opened::Existing);
    let new = record(&journal, 4, b"new run");
    journal.write_at(RECORDS_START, &new).expect("write");
    assert_eq!(replayed(&journal, 0).len(), 1);
}

#[test]
fn a_torn_last_write_ends_the_scan_quietly() {
    let (_dir, journal) = scratch();
    let (all, at) = file_of(&journal, &[1, 2, 3]);
    let whole = scan(&all, 0, journal.check, None);
    assert_eq!(seqs(&whole.records), [1, 2, 3]);
    assert!(whole.damage.is_none() && whole.torn_at.is_none());
    // Cut anywhere inside the last record: the two before it, and a torn write if its
    // front made it.
    for cut in at[2] + 1..all.len() {
        let found = scan(&all[..cut], 0, journal.check, None);
        assert_eq!(seqs(&found.records), [1, 2], "cut at {cut}");
        assert!(found.damage.is_none(), "cut at {cut}");
        let front = cut - at[2] >= RECORD_HEADER;
        let torn = found.torn_at == Some(RECORDS_START + at[2] as u64);
        assert_eq!(torn, front, "cut at {cut}");
    }
    // Its tail never reached the disk: stale bytes in place of it.
    let mut stale = all.clone();
    stale[at[2] + RECORD_HEADER..].fill(0xee);
    let found = scan(&stale, 0, journal.check, None);
    assert_eq!(seqs(&found.records), [1, 2]);
    assert!(found.damage.is_none());
    // A length that runs past the end is a torn write, not a reason to panic.
    let mut long = all;
    long[at[2] + 8..at[2] + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let found = scan(&long, 0, journal.check, None);
    assert_eq!(seqs(&found.records), [1, 2]);
    assert!(found.damage.is_none());
}

#[test]
fn damage_with_records_after_it_is_reported_with_them() {
    let (_dir, journal) = scratch();
    let (all, at) = file_of(&journal, &[5, 6, 7, 8]);
    // One flipped bit in the second record's marker, length, seq, tag or payload: the run
    // stops before it, and the two after it are found, whatever its length now says.
    for byte in [0, 9, 13, 25, RECORD_HEADER + 2] {
        let mut damaged = all.clone();
        damaged[at[1] + byte] ^= 1;
        let found = scan(&damaged, 4, journal.check, None);
        assert_eq!(seqs(&found.records), [5], "byte {byte}");
        let damage = found.damage.expect("damage");
        assert_eq!(damage.offset, RECORDS_START + at[1] as u64, "byte {byte}");
        assert_eq!(seqs(&damage.lost), [7, 8], "byte {byte}");
        assert!(damage.checked && found.torn_at.is_none());
    }
    // The first record damaged: nothing to replay, the rest found.
    let mut damaged = all.clone();
    damaged[at[0] + 30] ^= 1;
    let found = scan(&damaged, 4, journal.check, None);
    assert!(found.records.is_empty());
    assert_eq!(seqs(&found.damage.expect("damage").lost), [6, 7, 8]);
    // Records the data file already holds lose nothing: not damage that matters.
    let found = scan(&damaged, 8, journal.check, None);
    assert!(found.records.is_empty() && found.damage.is_none());
}

#[test]
fn records_of_an_earlier_round_are_not_read_as_new() {
    let (_dir, journal) = scratch();
    // Round one wrote seqs 1..=3; a checkpoint at 3; round two wrote 4 over the start.
    let round_one = [
        record(
            &journal,
            1,
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ),
        record(&journal, 2, b"y"),
        record(&journal, 3, b"z"),
    ]
    .concat();
    let mut file = round_one.clone();
    let newer = record(&journal, 4, b"n");
    file[..newer.len()].copy_from_slice(&newer);
    // What follows 4 is the tail of an old record, then old records with lower seqs:
    // neither damage nor records to replay.
    let found = scan(&file, 3, journal.check, None);
    assert_eq!(seqs(&found.records), [4]);
    assert!(found.damage.is_none() && found.torn_at.is_none());
    // Nothing written since the checkpoint: the old records are not replayed.
    let found = scan(&round_one, 3, journal.check, None);
    assert!(found.records.is_empty() && found.damage.is_none());
}

#[test]
fn bytes_a_client_chose_are_not_read_as_a_record() {
    // An earlier round left, right where the newest record ends, bytes shaped like a
    // record with a high seq: a client_id is stored as sent. Without the key, whatever
    // tag and marker it carries do not check; nor is it taken for damage.
    let (_dir, journal) = scratch();
    let (_other_dir, other) = scratch();
    let newest = record(&journal, 5, b"acknowledged");
    let forged = record(&other, u64::MAX / 2, b"rename user 1 to admin");
    let file = [newest, forged].concat();
    let found = scan(&file, 4, journal.check, None);
    assert_eq!(seqs(&found.records), [5]);
    assert!(found.damage.is_none());
}

#[test]
fn a_journal_grown_past_its_bound_is_read_up_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _) = open(dir.path(), 1);
    journal
        .write_at(RECORDS_START, &record(&journal, 1, b"kept"))
        .expect("write");
    // Sparse: 16 GiB on paper, nothing on the disk, and never allocated here.
    journal.file.set_len(1 << 34).expect("grow");
    let records = replayed(&journal, 0);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload, b"kept");
}

#[test]
fn a_header_of_zeros_is_a_journal_never_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    std::fs::write(&path, vec![0u8; RECORDS_START as usize]).expect("write");
    let (journal, opened) = open(dir.path(), 4);
    assert_eq!(opened, Opened::Created);
    assert!(replayed(&journal, 0).is_empty());
    assert_eq!(std::fs::read(&path).expect("read")[..8], b"IDBJRNL\0"[..]);
}

#[test]
fn a_journal_of_another_data_file_is_emptied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _) = open(dir.path(), 1);
    journal
        .write_at(RECORDS_START, &record(&journal, 5, b"theirs"))
        .expect("write");
    drop(journal);
    let (journal, opened) = open(dir.path(), 2);
    assert_eq!(opened, Opened::Replaced);
    assert!(replayed(&journal, 0).is_empty());
    // And it is ours now.
    drop(journal);
    assert_eq!(open(dir.path(), 2).1, Opened::Existing);
}

/// A journal of id 5 holding seqs 1..=4, and its bytes.
fn written(dir: &Path) -> Vec<u8> {
    let (journal, _) = open(dir, 5);
    let (records, _) = file_of(&journal, &[1, 2, 3, 4]);
    journal.write_at(RECORDS_START, &records).expect("write");
    std::fs::read(dir.join(JOURNAL_FILE)).expect("read")
}

#[test]
fn a_changed_header_byte_is_damage_and_the_file_is_left_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    let file = written(dir.path());
    for at in (0..HEADER_LEN).chain([HEADER_LEN, 1000, RECORDS_START as usize - 1]) {
        let mut damaged = file.clone();
        damaged[at] ^= 0x04;
        std::fs::write(&path, &damaged).expect("write");
        let (journal, opened) = open(dir.path(), 5);
        assert_eq!(opened, Opened::Existing, "byte {at}");
        let scan = journal.scan(0).expect("scan");
        let damage = scan
            .damage
            .unwrap_or_else(|| panic!("byte {at}: no damage"));
        // The format field is named; any other byte the header's check covers is not.
        let format = (8..12).contains(&at);
        let expected = match at {
            _ if format => 8,
            _ if at < HEADER_LEN => 0,
            _ => at as u64,
        };
        assert_eq!(damage.offset, expected, "byte {at}");
        if at < HEADER_LEN && !format {
            // Nothing is replayed under a header that fails its check; its records, found
            // by their lengths and seqs, are what the damage puts at stake.
            assert!(scan.records.is_empty(), "byte {at}");
            assert_eq!(seqs(&damage.lost), [1, 2, 3, 4], "byte {at}");
            assert!(!damage.checked, "byte {at}");
        } else {
            // The header's fields check: its records can be replayed.
            assert_eq!(seqs(&scan.records), [1, 2, 3, 4], "byte {at}");
            assert!(damage.lost.is_empty() && damage.checked, "byte {at}");
        }
        drop(journal);
        assert!(std::fs::read(&path).expect("read") == damaged, "byte {at}");
    }
}

#[test]
fn a_file_that_is_not_a_journal_is_damage_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    std::fs::write(&path, vec![b'x'; 100]).expect("write");
    let (journal, _) = open(dir.path(), 1);
    let damage = journal.scan(0).expect("scan").damage.expect("damage");
    assert!(damage.what.contains("magic"), "{}", damage.what);
    assert_eq!(std::fs::read(&path).expect("read"), vec![b'x'; 100]);
}

#[test]
fn a_journal_of_a_newer_format_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    let file = header(FORMAT + 1, 0, &[9; 32]);
    std::fs::write(&path, &file).expect("write");
    let err = Journal::open(dir.path(), 0).expect_err("refused");
    assert!(err.to_string().contains("journal format 4"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), file);
    // An unknown format whose header does not check is damage, and says so.
    let file = untagged_header(9, 0);
    std::fs::write(&path, &file).expect("write");
    let damage = open(dir.path(), 0).0.scan(0).expect("scan").damage;
    assert_eq!(damage.expect("damage").offset, 8);
    assert_eq!(std::fs::read(&path).expect("read"), file);
}

#[test]
fn a_journal_moved_aside_keeps_its_bytes_and_a_new_one_takes_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut file = written(dir.path());
    file[40] ^= 1;
    std::fs::write(dir.path().join(JOURNAL_FILE), &file).expect("write");
    let (journal, _) = open(dir.path(), 5);
    let (fresh, aside) = journal.move_aside().expect("move aside");
    let name = aside.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(name.starts_with("indaba.journal.damaged-"), "{name}");
    assert!(std::fs::read(&aside).expect("read") == file);
    assert!(replayed(&fresh, 0).is_empty());
    drop(fresh);
    // Twice in one second: a second name, nothing overwritten.
    std::fs::write(dir.path().join(JOURNAL_FILE), &file).expect("write");
    let (second, _) = open(dir.path(), 5).0.move_aside().expect("move aside");
    drop(second);
    let moved = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter(|e| {
            let name = e.as_ref().expect("entry").file_name();
            name.to_string_lossy()
                .starts_with("indaba.journal.damaged-")
        })
        .count();
    assert_eq!(moved, 2);
}

/// Journals of the development formats 1 and 2 (which never shipped) are no longer read. One
/// that holds records may hold acknowledged batches: the start is refused, naming the file,
/// and the file is left exactly as it was, neither replayed nor emptied.
#[test]
fn a_development_format_journal_with_records_is_refused_and_left_as_it_was() {
    for format in [1, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(JOURNAL_FILE);
        let mut file = untagged_header(format, 7);
        // A record as format 2 laid it out: length, seq, tag, payload.
        file.extend_from_slice(&5u32.to_le_bytes());
        file.extend_from_slice(&11u64.to_le_bytes());
        file.extend_from_slice(&[0xa5; 16]);
        file.extend_from_slice(b"batch");
        std::fs::write(&path, &file).expect("write");
        let err = Journal::open(dir.path(), 7).expect_err("refused");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("journal format {format}")),
            "{message}"
        );
        assert!(message.contains("move the journal away"), "{message}");
        assert!(
            std::fs::read(&path).expect("read") == file,
            "format {format}"
        );
    }
}

/// With nothing past its header there is nothing to lose: it becomes an empty journal of the
/// current format.
#[test]
fn a_development_format_journal_without_records_is_started_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(JOURNAL_FILE);
    std::fs::write(&path, untagged_header(2, 7)).expect("write");
    let (journal, opened) = open(dir.path(), 7);
    assert_eq!(opened, Opened::Created);
    assert!(replayed(&journal, 0).is_empty());
    drop(journal);
    assert_eq!(open(dir.path(), 7).1, Opened::Existing);
}
