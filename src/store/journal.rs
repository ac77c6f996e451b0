//! The write-ahead journal: how a batch becomes durable without a redb commit of its own.
//!
//! A durable redb commit writes every page its batch dirtied, wherever they lie in the file,
//! then syncs. On the project's VM that scattered write costs 1–5 ms at the 99th percentile
//! against 0.5 ms for the same bytes written contiguously (`benches/disk_flush.py`), and a
//! message waits on the commit in progress and then on its own. So the writer commits most
//! batches to redb without a sync (`Durability::None`: the pages stay in redb's memory and
//! readers see them at once), and makes each one durable by appending its requests to this
//! file in one contiguous write and one `fdatasync`. Every `storage.checkpoint_interval` one
//! batch is a durable redb commit (a *checkpoint*), which makes everything before it durable
//! in the redb file itself; the journal then starts over at its beginning. After a crash the
//! store opens at its last checkpoint and replays the journal's batches after it, through the
//! code that applied them the first time ([`super::writer`]).
//!
//! This module knows the file, not what a record means. Layout (format 2):
//!
//! ```text
//! header (4 KiB): magic "IDBJRNL\0" | format u32 LE | 0u32 | journal id u64 LE | key (32 B) | zeros
//! records, back to back from offset 4096:
//!     payload length u32 LE | seq u64 LE | tag (16 B) | payload
//! ```
//!
//! The tag is HMAC-SHA256 over the length, the seq and the payload, under the header's key (the
//! first 16 bytes of it). Seqs only grow while the daemon runs (the writer numbers every batch
//! it attempts), and the data file records the seq of the newest batch it holds, so recovery
//! reads from the first record while each is whole, carries a good tag and has a seq above the
//! one before it, and replays those above the data file's. The scan therefore ends at a torn last write, and
//! at the records an earlier round left further into the file (their seqs are lower), without
//! erasing them as it goes. The key is why a checksum is not enough: what follows the newest
//! record is old bytes, and some of them were chosen by clients (a `client_id` is stored as
//! sent). With a plain crc, bytes crafted to look like a record with a high seq, left behind
//! by an earlier round exactly where a later round stops, would be replayed after a crash; a
//! client cannot tag bytes without the key, which never leaves the journal file (mode 0600).
//! At each start, once what the file holds is replayed and checkpointed, it is emptied and
//! given a new key ([`Journal::clear`]): the writer then numbers batches from the last one
//! replayed, and no record of the run before may be left to meet them.
//!
//! Format 1, written by the first builds with a journal, checked records with a crc32 and had
//! no key. Such a journal is still read at open, replayed, and then emptied into format 2.
//!
//! The journal id ties the file to one data file (`name_value["journal_id"]`): a journal found
//! beside a data file with another id (a restored backup, a deleted database) is emptied
//! rather than replayed into the wrong data.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::StoreError;

/// File name of the journal inside the data dir.
pub const JOURNAL_FILE: &str = "indaba.journal";

/// Where records start; the header has the first page to itself.
pub const RECORDS_START: u64 = 4096;

/// Bytes of records written after one checkpoint before the next batch must be a checkpoint
/// itself: bounds the file, and the work a recovery replays.
pub const CAPACITY: u64 = 64 << 20;

/// Bytes of records after which the next batch is a checkpoint, however recent the last one.
/// A checkpoint writes the pages the journaled batches dirtied, which grow with the messages
/// they hold, and holds the writer (and every message behind it) meanwhile: at 45,000
/// messages/s, 250 ms of them made checkpoints of 11.9 ms on average (up to 26 ms); with this
/// bound, 8.2 ms. Under heavier load it also bounds what a crash leaves to replay.
pub const CHECKPOINT_BYTES: u64 = 1 << 20;

/// Bytes in front of each record's payload: its length, seq and tag.
pub const RECORD_HEADER: usize = 28;

const MAGIC: &[u8; 8] = b"IDBJRNL\0";
/// The format this build writes.
const FORMAT: u32 = 2;
/// The format of the first builds with a journal: read for a replay, never written.
const FORMAT_CRC: u32 = 1;
/// Magic, format, padding, journal id, key.
const HEADER_LEN: usize = 56;
/// Bytes of a record's tag: the first half of its HMAC-SHA256.
const TAG_LEN: usize = 16;
/// Bytes in front of a format-1 record's payload: its length, crc and seq.
const RECORD_HEADER_CRC: usize = 16;

type RecordMac = Hmac<Sha256>;

/// How the records of the file as found are checked.
#[derive(Clone, Copy)]
enum Check {
    /// Format 2: a tag under this key.
    Tag([u8; 32]),
    /// Format 1: a crc32.
    Crc,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.write_str(match self {
            Check::Tag(_) => "Tag",
            Check::Crc => "Crc",
        })
    }
}

/// One record found by [`Journal::records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// The journal file of one data dir.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// The data file's journal id, written in the header.
    id: u64,
    check: Check,
}

/// How [`Journal::open`] found the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// It belongs to this data file: its records may need replaying.
    Existing,
    /// There was none: an empty one was created.
    Created,
    /// It belonged to another data file and was emptied.
    Replaced,
}

impl Journal {
    /// Opens `<data_dir>/indaba.journal` for the data file whose journal id is `id`, creating
    /// it (mode 0600) if missing, and emptying it if it carries another id.
    pub fn open(data_dir: &Path, id: u64) -> Result<(Journal, Opened), StoreError> {
        let path = data_dir.join(JOURNAL_FILE);
        let error = |message: String| StoreError::Journal {
            path: path.clone(),
            message,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| error(e.to_string()))?;
        let mut journal = Journal {
            file,
            path: path.clone(),
            id,
            check: Check::Crc,
        };
        let opened = match read_header(&journal.file).map_err(|e| error(e.to_string()))? {
            Some(header) => {
                let (found_id, check) = parse_header(&header).map_err(error)?;
                if found_id == id {
                    journal.check = check;
                    Opened::Existing
                } else {
                    journal.reset().map_err(|e| error(e.to_string()))?;
                    Opened::Replaced
                }
            }
            None => {
                journal.reset().map_err(|e| error(e.to_string()))?;
                // The file's name must survive a crash too.
                sync_dir(data_dir).map_err(|e| error(e.to_string()))?;
                Opened::Created
            }
        };
        Ok((journal, opened))
    }

    /// The journal of `data_dir` opened for reading only: every write fails, as on a broken
    /// disk.
    #[cfg(test)]
    pub fn read_only(data_dir: &Path) -> std::io::Result<Journal> {
        let path = data_dir.join(JOURNAL_FILE);
        let file = File::open(&path)?;
        let header = read_header(&file)?.ok_or(ErrorKind::UnexpectedEof)?;
        let (id, check) = parse_header(&header).map_err(std::io::Error::other)?;
        Ok(Journal {
            file,
            path,
            id,
            check,
        })
    }

    /// Empties the file and writes a header with a new key, durably. The header is written
    /// over the old one in place before the file is cut to it, so no crash leaves a file
    /// without its magic bytes (which the next start would refuse); records left by a crash
    /// in between carry the old key's tags, which the new key does not accept.
    fn reset(&mut self) -> std::io::Result<()> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut header = vec![0u8; RECORDS_START as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        header[16..24].copy_from_slice(&self.id.to_le_bytes());
        header[24..56].copy_from_slice(&key);
        self.file.write_all_at(&header, 0)?;
        self.file.set_len(RECORDS_START)?;
        self.file.sync_all()?;
        self.check = Check::Tag(key);
        Ok(())
    }

    /// The records after `after` (the data file's `applied_seq`), in order, up to the first that is
    /// incomplete, damaged or not newer than the one before.
    pub fn records(&self, after: u64) -> Result<Vec<Record>, StoreError> {
        let read = || -> std::io::Result<Vec<u8>> {
            // No record ends past `CAPACITY` (the writer checkpoints instead), so a file grown
            // beyond it by something else is not read into memory whole.
            let len = self
                .file
                .metadata()?
                .len()
                .saturating_sub(RECORDS_START)
                .min(CAPACITY);
            let mut bytes = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
            self.file.read_exact_at(&mut bytes, RECORDS_START)?;
            Ok(bytes)
        };
        let bytes = read().map_err(|e| self.error(e))?;
        Ok(scan(&bytes, after, self.check))
    }

    /// Drops every record and takes a new key, durably: called once the store has replayed
    /// what it needed and checkpointed. A crash can leave records of batches that were never
    /// acknowledged behind a torn one, and the restarted writer numbers its batches from the
    /// last one replayed, so without this a later recovery could meet such a record, with a
    /// seq that looks new, right where the new records end. A journal of format 1 becomes
    /// format 2 here.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.reset().map_err(|e| self.error(e))
    }

    /// An I/O error on this file, as the store reports it.
    fn error(&self, e: std::io::Error) -> StoreError {
        StoreError::Journal {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Where the file is, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` (whole records) at `offset`; durable only after [`Journal::sync`].
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    /// `fdatasync`: everything written so far is on the disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Fills in the header of a record whose payload follows [`RECORD_HEADER`] reserved bytes
    /// at the start of `record`. Only for a journal [`Journal::clear`] has made format 2, as
    /// the store does at open before its writer starts.
    pub fn seal(&self, record: &mut [u8], seq: u64) {
        let Check::Tag(key) = &self.check else {
            unreachable!("records are written only after clear(), which makes format 2");
        };
        let (header, payload) = record.split_at_mut(RECORD_HEADER);
        let len = u32::try_from(payload.len()).expect("a record is smaller than the journal");
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..12].copy_from_slice(&seq.to_le_bytes());
        let mut mac = record_mac(key);
        mac.update(&header[..12]);
        mac.update(payload);
        header[12..RECORD_HEADER].copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
    }
}

/// The HMAC of one record, keyed.
fn record_mac(key: &[u8; 32]) -> RecordMac {
    <RecordMac as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The first [`HEADER_LEN`] bytes of the file, or `None` if it is shorter or they are zeros:
/// new, or a crash cut its creation short (nothing of it was ever acknowledged).
fn read_header(file: &File) -> std::io::Result<Option<[u8; HEADER_LEN]>> {
    let mut header = [0u8; HEADER_LEN];
    match file.read_exact_at(&mut header, 0) {
        // Zeros: a crash kept the new file's length but not its header. No record was written
        // before the header was durable, and none could be checked without its key.
        Ok(()) if header == [0; HEADER_LEN] => Ok(None),
        Ok(()) => Ok(Some(header)),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// The journal id in a header, and how its records are checked.
fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(u64, Check), String> {
    if &header[..8] != MAGIC {
        return Err("not an indaba journal (wrong magic bytes); move it away to start".into());
    }
    let format = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let id = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let check = match format {
        FORMAT => Check::Tag(header[24..56].try_into().expect("32 bytes")),
        FORMAT_CRC => Check::Crc,
        _ => {
            return Err(format!(
                "journal format {format}, this indaba reads formats {FORMAT_CRC} and {FORMAT}; start the indaba that wrote it once, so it folds the journal into the data file"
            ));
        }
    };
    Ok((id, check))
}

/// The records with seqs above `after` in the valid run at the start of `bytes`: whole
/// records, each tagged right and with a seq above the one before. Records at or below
/// `after` may lead the run (a start stopped part-way through a replay leaves the data file
/// past some of them); a seq that goes down ends it (an earlier round's record).
fn scan(bytes: &[u8], after: u64, check: Check) -> Vec<Record> {
    let mut records = Vec::new();
    let mut last = None;
    let mut rest = bytes;
    while let Some((record, len)) = next_record(rest, check) {
        if last.is_some_and(|last| record.seq <= last) {
            break;
        }
        // Format 1 had no key: past a record the data file holds, the bytes may be a client's
        // (see the module doc), so its scan ends there as it always did.
        if matches!(check, Check::Crc) && record.seq <= after {
            break;
        }
        last = Some(record.seq);
        rest = &rest[len..];
        if record.seq > after {
            records.push(record);
        }
    }
    records
}

/// The record at the start of `bytes` and its length in the file, if it is whole and checks.
fn next_record(bytes: &[u8], check: Check) -> Option<(Record, usize)> {
    let head = match check {
        Check::Tag(_) => RECORD_HEADER,
        Check::Crc => RECORD_HEADER_CRC,
    };
    if bytes.len() < head {
        return None;
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    if bytes.len() - head < len {
        return None;
    }
    let payload = &bytes[head..head + len];
    let seq = match check {
        Check::Tag(key) => {
            let mut mac = record_mac(&key);
            mac.update(&bytes[..12]);
            mac.update(payload);
            mac.verify_truncated_left(&bytes[12..RECORD_HEADER]).ok()?;
            u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"))
        }
        Check::Crc => {
            let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&bytes[8..16]);
            hasher.update(payload);
            if hasher.finalize() != crc {
                return None;
            }
            u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"))
        }
    };
    let record = Record {
        seq,
        payload: payload.to_vec(),
    };
    Some((record, head + len))
}

/// Makes a new directory entry durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A journal file of `format` for journal id `id` with no records, as a test writes it.
#[cfg(test)]
fn test_header(format: u32, id: u64) -> Vec<u8> {
    let mut file = vec![0u8; RECORDS_START as usize];
    file[..8].copy_from_slice(MAGIC);
    file[8..12].copy_from_slice(&format.to_le_bytes());
    file[16..24].copy_from_slice(&id.to_le_bytes());
    file
}

/// A journal as the first builds with one wrote it (format 1: no key, crc32 records), holding
/// `records` (seq, payload) for journal id `id`.
#[cfg(test)]
pub(super) fn format_1_file(id: u64, records: &[(u64, &[u8])]) -> Vec<u8> {
    let mut file = test_header(FORMAT_CRC, id);
    for (seq, payload) in records {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(payload);
        let len = u32::try_from(payload.len()).expect("a small payload");
        file.extend_from_slice(&len.to_le_bytes());
        file.extend_from_slice(&crc.finalize().to_le_bytes());
        file.extend_from_slice(&seq.to_le_bytes());
        file.extend_from_slice(payload);
    }
    file
}

#[cfg(test)]
mod tests {
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
        let seqs = |after| -> Vec<u64> {
            let records = journal.records(after).expect("records");
            records.iter().map(|r| r.seq).collect()
        };
        assert_eq!(seqs(0), [3, 4, 6]);
        assert_eq!(journal.records(0).expect("records")[2].payload, b"ccc");
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
        assert!(journal.records(0).expect("records").is_empty());
        // The old run's record, written back where it was, is not read: the key changed.
        journal.write_at(RECORDS_START, &old).expect("write");
        assert!(journal.records(0).expect("records").is_empty());
        drop(journal);
        let (journal, opened) = open(dir.path(), 3);
        assert_eq!(opened, Opened::Existing);
        let new = record(&journal, 4, b"new run");
        journal.write_at(RECORDS_START, &new).expect("write");
        assert_eq!(journal.records(0).expect("records").len(), 1);
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_scan() {
        let (_dir, journal) = scratch();
        let good = record(&journal, 1, b"first");
        let second = record(&journal, 2, b"second");
        let third = record(&journal, 3, b"third");
        let all = [good.clone(), second.clone(), third].concat();
        assert_eq!(scan(&all, 0, journal.check).len(), 3);
        // Cut anywhere inside the second record: only the first is whole.
        for cut in good.len() + 1..good.len() + second.len() {
            assert_eq!(scan(&all[..cut], 0, journal.check).len(), 1, "cut at {cut}");
        }
        // One flipped bit in the second's payload, seq or tag: the scan stops before it.
        for at in [RECORD_HEADER + 2, 5, 20] {
            let mut damaged = all.clone();
            damaged[good.len() + at] ^= 1;
            assert_eq!(scan(&damaged, 0, journal.check).len(), 1, "bit at {at}");
        }
        // A length that runs past the end is a torn write, not a reason to panic.
        let mut long = all;
        long[good.len()..good.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(scan(&long, 0, journal.check).len(), 1);
    }

    #[test]
    fn records_of_an_earlier_round_are_not_read_as_new() {
        let (_dir, journal) = scratch();
        // Round one wrote seqs 1..=3; a checkpoint at 3; round two wrote 4 over the start.
        let round_one = [
            record(&journal, 1, b"xxxxxxxx"),
            record(&journal, 2, b"y"),
            record(&journal, 3, b"z"),
        ]
        .concat();
        let mut file = round_one.clone();
        let newer = record(&journal, 4, b"n");
        file[..newer.len()].copy_from_slice(&newer);
        // What follows 4 is the tail of an old record or old records with lower seqs.
        let found = scan(&file, 3, journal.check);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].seq, 4);
        // Nothing written since the checkpoint: the old records are not replayed.
        assert!(scan(&round_one, 3, journal.check).is_empty());
    }

    #[test]
    fn bytes_a_client_chose_are_not_read_as_a_record() {
        // An earlier round left, right where the newest record ends, bytes shaped like a
        // record with a high seq: a client_id is stored as sent. Without the key, whatever
        // tag it carries does not check.
        let (_dir, journal) = scratch();
        let (_other_dir, other) = scratch();
        let newest = record(&journal, 5, b"acknowledged");
        let forged = record(&other, u64::MAX / 2, b"rename user 1 to admin");
        let file = [newest, forged].concat();
        let found = scan(&file, 4, journal.check);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].seq, 5);
    }

    #[test]
    fn a_format_1_journal_is_replayed_then_becomes_format_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = format_1_file(7, &[(11, b"one"), (12, b"two")]);
        std::fs::write(dir.path().join(JOURNAL_FILE), &file).expect("write");

        let (mut journal, opened) = open(dir.path(), 7);
        assert_eq!(opened, Opened::Existing);
        let records = journal.records(10).expect("records");
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [11, 12]);
        assert_eq!(records[1].payload, b"two");
        // Without a key, nothing past a record the data file holds is read.
        assert!(journal.records(11).expect("records").is_empty());
        journal.clear().expect("clear");
        let new = record(&journal, 13, b"three");
        journal.write_at(RECORDS_START, &new).expect("write");
        drop(journal);
        let (journal, opened) = open(dir.path(), 7);
        assert_eq!(opened, Opened::Existing);
        let header = std::fs::read(dir.path().join(JOURNAL_FILE)).expect("read");
        assert_eq!(header[8..12], FORMAT.to_le_bytes());
        assert_eq!(journal.records(12).expect("records")[0].payload, b"three");
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
        let records = journal.records(0).expect("records");
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
        assert!(journal.records(0).expect("records").is_empty());
        assert_eq!(std::fs::read(&path).expect("read")[..8], MAGIC[..]);
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
        assert!(journal.records(0).expect("records").is_empty());
        // And it is ours now.
        drop(journal);
        assert_eq!(open(dir.path(), 2).1, Opened::Existing);
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(JOURNAL_FILE);
        std::fs::write(&path, vec![b'x'; 100]).expect("write");
        let err = Journal::open(dir.path(), 1).expect_err("refused");
        assert!(err.to_string().contains("not an indaba journal"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), vec![b'x'; 100]);
    }

    #[test]
    fn a_journal_of_an_unknown_format_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(JOURNAL_FILE);
        let file = test_header(9, 0);
        std::fs::write(&path, &file).expect("write");
        let err = Journal::open(dir.path(), 0).expect_err("refused");
        assert!(err.to_string().contains("journal format 9"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), file);
    }
}
