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
//! This module knows the file, not what a record means. Layout:
//!
//! ```text
//! header (4 KiB): magic "IDBJRNL\0" | format u32 LE | 0u32 | journal id u64 LE | zeros
//! records, back to back from offset 4096:
//!     payload length u32 LE | crc32 u32 LE | seq u64 LE | payload
//! ```
//!
//! The crc covers the seq and the payload. Seqs only grow while the daemon runs (the writer
//! numbers every batch it attempts), and each checkpoint records its seq in the redb file, so
//! recovery reads from the first record while each is whole, matches its crc and has a seq
//! above the one before it and above the checkpoint's. The scan therefore ends at a torn last
//! write, and at the records an earlier round left further into the file (their seqs are
//! lower), without erasing them as it goes. At each start, once what it holds is replayed and
//! checkpointed, the file is emptied ([`Journal::clear`]): the writer then numbers batches
//! from the last one replayed, and no record of the run before may be left to meet them.
//!
//! The journal id ties the file to one data file (`name_value["journal_id"]`): a journal found
//! beside a data file with another id (a restored backup, a deleted database) is emptied
//! rather than replayed into the wrong data.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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

/// Bytes in front of each record's payload: its length, crc and seq.
pub const RECORD_HEADER: usize = 16;

const MAGIC: &[u8; 8] = b"IDBJRNL\0";
const FORMAT: u32 = 1;
/// Magic, format, padding, journal id.
const HEADER_LEN: usize = 24;

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
        let journal = Journal {
            file,
            path: path.clone(),
        };
        let mut header = [0u8; HEADER_LEN];
        let found = match journal.file.read_exact_at(&mut header, 0) {
            Ok(()) => Some(header),
            // Shorter than a header: new, or a crash cut its creation short. Nothing of it
            // was ever acknowledged.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => None,
            Err(e) => return Err(error(e.to_string())),
        };
        let opened = match found {
            Some(header) => {
                if &header[..8] != MAGIC {
                    return Err(error(
                        "not an indaba journal (wrong magic bytes); move it away to start".into(),
                    ));
                }
                let format = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
                if format != FORMAT {
                    return Err(error(format!(
                        "journal format {format}, this indaba reads format {FORMAT}; start the indaba that wrote it once, so it folds the journal into the data file"
                    )));
                }
                let found_id = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
                if found_id == id {
                    Opened::Existing
                } else {
                    journal.reset(id).map_err(|e| error(e.to_string()))?;
                    Opened::Replaced
                }
            }
            None => {
                journal.reset(id).map_err(|e| error(e.to_string()))?;
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
        Ok(Journal {
            file: File::open(&path)?,
            path,
        })
    }

    /// Empties the file and writes a header for `id`, durably.
    fn reset(&self, id: u64) -> std::io::Result<()> {
        self.file.set_len(0)?;
        let mut header = vec![0u8; RECORDS_START as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        header[16..24].copy_from_slice(&id.to_le_bytes());
        self.file.write_all_at(&header, 0)?;
        self.file.sync_all()
    }

    /// The records after `after` (a checkpoint's seq), in order, up to the first that is
    /// incomplete, damaged or not newer than the one before.
    pub fn records(&self, after: u64) -> Result<Vec<Record>, StoreError> {
        let read = || -> std::io::Result<Vec<u8>> {
            let len = self.file.metadata()?.len().saturating_sub(RECORDS_START);
            let mut bytes = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
            self.file.read_exact_at(&mut bytes, RECORDS_START)?;
            Ok(bytes)
        };
        let bytes = read().map_err(|e| StoreError::Journal {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        Ok(scan(&bytes, after))
    }

    /// Drops every record, durably: called once the store has replayed what it needed and
    /// checkpointed. A crash can leave records of batches that were never acknowledged behind
    /// a torn one, and the restarted writer numbers its batches from the last one replayed, so
    /// without this a later recovery could meet such a record, with a seq that looks new, right
    /// where the new records end.
    pub fn clear(&self) -> Result<(), StoreError> {
        (|| {
            self.file.set_len(RECORDS_START)?;
            self.file.sync_all()
        })()
        .map_err(|e| StoreError::Journal {
            path: self.path.clone(),
            message: e.to_string(),
        })
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
}

/// Fills in the header of a record whose payload follows [`RECORD_HEADER`] reserved bytes
/// at the start of `record`.
pub fn seal(record: &mut [u8], seq: u64) {
    let (header, payload) = record.split_at_mut(RECORD_HEADER);
    let len = u32::try_from(payload.len()).expect("a record is smaller than the journal");
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[8..16]);
    crc.update(payload);
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// The valid run of records at the start of `bytes` with seqs above `after`.
fn scan(bytes: &[u8], after: u64) -> Vec<Record> {
    let mut records = Vec::new();
    let mut last = after;
    let mut rest = bytes;
    while rest.len() >= RECORD_HEADER {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        if seq <= last || rest.len() - RECORD_HEADER < len {
            break;
        }
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        let mut check = crc32fast::Hasher::new();
        check.update(&rest[8..16]);
        check.update(payload);
        if check.finalize() != crc {
            break;
        }
        records.push(Record {
            seq,
            payload: payload.to_vec(),
        });
        last = seq;
        rest = &rest[RECORD_HEADER + len..];
    }
    records
}

/// Makes a new directory entry durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0; RECORD_HEADER];
        bytes.extend_from_slice(payload);
        seal(&mut bytes, seq);
        bytes
    }

    fn open(dir: &Path, id: u64) -> (Journal, Opened) {
        Journal::open(dir, id).expect("open")
    }

    #[test]
    fn records_after_the_checkpoint_come_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (journal, opened) = open(dir.path(), 7);
        assert_eq!(opened, Opened::Created);
        let mut offset = RECORDS_START;
        for (seq, payload) in [(3, &b"a"[..]), (4, b""), (6, b"ccc")] {
            let bytes = record(seq, payload);
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
    }

    #[test]
    fn cleared_records_are_gone_and_the_journal_still_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (journal, _) = open(dir.path(), 3);
        journal
            .write_at(RECORDS_START, &record(9, b"old run"))
            .expect("write");
        journal.clear().expect("clear");
        assert!(journal.records(0).expect("records").is_empty());
        drop(journal);
        let (journal, opened) = open(dir.path(), 3);
        assert_eq!(opened, Opened::Existing);
        journal
            .write_at(RECORDS_START, &record(4, b"new run"))
            .expect("write");
        assert_eq!(journal.records(0).expect("records").len(), 1);
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_scan() {
        let good = record(1, b"first");
        let second = record(2, b"second");
        let third = record(3, b"third");
        let all = [good.clone(), second.clone(), third].concat();
        assert_eq!(scan(&all, 0).len(), 3);
        // Cut anywhere inside the second record: only the first is whole.
        for cut in good.len() + 1..good.len() + second.len() {
            assert_eq!(scan(&all[..cut], 0).len(), 1, "cut at {cut}");
        }
        // One flipped payload bit in the second: the scan stops before it, not after.
        let mut damaged = all.clone();
        damaged[good.len() + RECORD_HEADER + 2] ^= 1;
        assert_eq!(scan(&damaged, 0).len(), 1);
        // A length that runs past the end is a torn write, not a reason to panic.
        let mut long = all;
        long[good.len()..good.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(scan(&long, 0).len(), 1);
    }

    #[test]
    fn records_of_an_earlier_round_are_not_read_as_new() {
        // Round one wrote seqs 1..=3; a checkpoint at 3; round two wrote 4 over the start.
        let round_one = [record(1, b"xxxxxxxx"), record(2, b"y"), record(3, b"z")].concat();
        let mut file = round_one.clone();
        let newer = record(4, b"n");
        file[..newer.len()].copy_from_slice(&newer);
        // What follows 4 is the tail of an old record or old records with lower seqs.
        let found = scan(&file, 3);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].seq, 4);
        // Nothing written since the checkpoint: the old records are not replayed.
        assert!(scan(&round_one, 3).is_empty());
    }

    #[test]
    fn a_journal_of_another_data_file_is_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (journal, _) = open(dir.path(), 1);
        journal
            .write_at(RECORDS_START, &record(5, b"theirs"))
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
}
