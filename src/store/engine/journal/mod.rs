//! The write-ahead journal: how a batch becomes durable without a redb commit of its own.
//!
//! A durable redb commit writes every page its batch dirtied, wherever they lie in the file,
//! then syncs. On the project's VM that scattered write costs 1–5 ms at the 99th percentile
//! against 0.5 ms for the same bytes written contiguously (`benches/disk_flush.py`), and a
//! message waits on the commit in progress and then on its own. So the writer commits most
//! batches to redb without a sync (`Durability::None`: the pages stay in redb's memory and
//! readers see them at once), and makes each one durable by appending its ops to this file in
//! one contiguous write and one `fdatasync`. Every `storage.checkpoint_interval` one batch is a
//! durable redb commit (a *checkpoint*), which makes everything before it durable in the redb
//! file itself; the journal then starts over at its beginning. After a crash the store opens at
//! its last checkpoint and replays the journal's batches after it, through the code that
//! applied them the first time ([`super::redo`]).
//!
//! This module knows the file, not what a record means ([`super::record`] does). Layout
//! (format 3, the only one this build reads or writes):
//!
//! ```text
//! header (4 KiB): magic "IDBJRNL\0" | format u32 LE | 0u32 | journal id u64 LE | key (32 B)
//!                 | tag (16 B) | zeros
//! records, back to back from offset 4096:
//!     marker (8 B) | payload length u32 LE | seq u64 LE | tag (16 B) | payload
//! ```
//!
//! [`header`] judges the first page, [`check`] tells records from other bytes, [`scan`] reads
//! them back and tells a torn last write from damage, [`cursor`] is the writer's place in the
//! file.
//!
//! Why a key and not a checksum: what follows the newest record is old bytes, and some of them
//! were chosen by clients (a `client_id` is stored as sent). With a plain crc, bytes crafted to
//! look like a record with a high seq, left behind by an earlier round exactly where a later
//! round stops, would be replayed after a crash; a client cannot tag bytes without the key,
//! which never leaves the journal file (mode 0600). At each start, once what the file holds is
//! replayed and checkpointed, it is emptied and given a new key ([`Journal::clear`]): the
//! writer then numbers batches from the last one replayed, and no record of the run before may
//! be left to meet them. What to do about damage is the store's decision
//! ([`super::recovery`]): refuse to start, or move the file aside ([`Journal::move_aside`]) when
//! the operator accepts the loss.
//!
//! The journal id ties the file to one data file (`name_value["journal_id"]`): a journal whose
//! sound header carries another id (a restored backup, a deleted database) is emptied rather
//! than replayed into the wrong data. A journal of formats 1 or 2, written by development
//! builds that never shipped, is refused while it holds anything past its header: it may hold
//! acknowledged batches this build cannot read, and neither replaying nor emptying it is ours
//! to decide.

pub mod check;
pub mod cursor;
pub mod header;
pub mod scan;

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use check::Check;
pub use check::Record;
use header::{Header, header, read_header};
pub use scan::{Damage, Scan};

use crate::store::StoreError;

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

/// Bytes in front of each record's payload: its marker, length, seq and tag.
pub const RECORD_HEADER: usize = 36;

/// The format this build reads and writes.
pub const FORMAT: u32 = 3;

/// The journal file of one data dir.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// The data file's journal id, written in the header.
    id: u64,
    check: Check,
    /// The header as found failed its check: where, and how.
    header_damage: Option<(u64, String)>,
}

/// How [`Journal::open`] found the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// It belongs to this data file, or its header is damaged ([`Journal::scan`] says so):
    /// its records may need replaying.
    Existing,
    /// There was none, or one of a development format with nothing in it: an empty one was
    /// created.
    Created,
    /// It belonged to another data file and was emptied.
    Replaced,
}

impl Journal {
    /// Opens `<data_dir>/indaba.journal` for the data file whose journal id is `id`, creating
    /// it (mode 0600) if missing, and emptying it if its header checks and carries another
    /// id. A damaged header leaves the file as it is, for [`Journal::scan`] to report. A
    /// journal of a newer format, or of an older one that holds anything, is refused and left
    /// as it is.
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
            check: Check::new([0; 32]),
            header_damage: None,
        };
        let header = read_header(&journal.file).map_err(|e| error(e.to_string()))?;
        let opened = match header {
            Header::Sound { id: found, check } if found == id => {
                journal.check = check;
                Opened::Existing
            }
            Header::Sound { .. } => {
                journal.reset().map_err(|e| error(e.to_string()))?;
                Opened::Replaced
            }
            Header::Damaged {
                offset,
                what,
                id: found,
                mut check,
            } => {
                // Records are this data file's only if the header says so.
                check.verify &= found == id;
                journal.check = check;
                journal.header_damage = Some((offset, what));
                Opened::Existing
            }
            Header::Newer { format } => {
                return Err(error(format!(
                    "journal format {format}, this indaba reads format {FORMAT}; start the indaba that wrote it once, so it folds the journal into the data file"
                )));
            }
            Header::Older {
                format,
                records: true,
            } => {
                return Err(error(format!(
                    "journal format {format} was written by a development build of indaba that never shipped; this indaba reads format {FORMAT} only, and the file holds records it cannot read. The file was left as it is. If the daemon that wrote it stopped cleanly, the data file holds everything: move the journal away and start again; if it crashed, start the build that wrote it once to replay it, stop it cleanly, then move the journal away"
                )));
            }
            Header::Older { records: false, .. } | Header::Nothing => {
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
        let Header::Sound { id, check } = read_header(&file)? else {
            return Err(std::io::Error::other("no sound journal header"));
        };
        Ok(Journal {
            file,
            path,
            id,
            check,
            header_damage: None,
        })
    }

    /// Empties the file and writes a header with a new key, durably. The header is written
    /// over the old one in place before the file is cut to it, so no crash leaves a file
    /// without its magic bytes (which the next start would refuse); records left by a crash
    /// in between carry the old key's tags, which the new key does not accept.
    fn reset(&mut self) -> std::io::Result<()> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        let header = header(FORMAT, self.id, &key);
        self.file.write_all_at(&header, 0)?;
        self.file.set_len(RECORDS_START)?;
        self.file.sync_all()?;
        self.check = Check::new(key);
        self.header_damage = None;
        Ok(())
    }

    /// Reads the records and says which to replay, given `after`, the data file's
    /// `applied_seq`; and whether the file is damaged beyond a torn last write (see
    /// [`scan`]).
    pub fn scan(&self, after: u64) -> Result<Scan, StoreError> {
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
        Ok(scan::scan(
            &bytes,
            after,
            self.check,
            self.header_damage.clone(),
        ))
    }

    /// Drops every record and takes a new key, durably: called once the store has replayed
    /// what it needed and checkpointed. A crash can leave records of batches that were never
    /// acknowledged behind a torn one, and the restarted writer numbers its batches from the
    /// last one replayed, so without this a later recovery could meet such a record, with a
    /// seq that looks new, right where the new records end.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.reset().map_err(|e| self.error(e))
    }

    /// Renames the file to `indaba.journal.damaged-<UTC time>` beside it, durably, and starts
    /// an empty journal in its place: for a start that accepted the loss of what the damage
    /// hides. The damaged file is kept for whoever wants to look into it. Returns the new
    /// journal and where the old one went.
    pub fn move_aside(self) -> Result<(Journal, PathBuf), StoreError> {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(['-', ':'], "");
        let name = |n: u32| match n {
            0 => format!("{JOURNAL_FILE}.damaged-{stamp}"),
            n => format!("{JOURNAL_FILE}.damaged-{stamp}-{n}"),
        };
        let mut n = 0;
        let aside = loop {
            let candidate = self.path.with_file_name(name(n));
            match std::fs::symlink_metadata(&candidate) {
                Err(e) if e.kind() == ErrorKind::NotFound => break candidate,
                Err(e) => return Err(self.error(e)),
                Ok(_) => n += 1,
            }
        };
        std::fs::rename(&self.path, &aside).map_err(|e| self.error(e))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        // The new name must survive a crash: else the next start would meet the damage again.
        sync_dir(dir).map_err(|e| self.error(e))?;
        let (journal, _) = Journal::open(dir, self.id)?;
        Ok((journal, aside))
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

    /// Fills in the front of a record whose payload follows [`RECORD_HEADER`] reserved bytes
    /// at the start of `record`. Only for a journal whose header checks, as [`Journal::clear`]
    /// leaves it: the store clears it at open, before its writer starts.
    pub fn seal(&self, record: &mut [u8], seq: u64) {
        assert!(
            self.check.verify,
            "records are written only after clear(), which writes a sound header"
        );
        self.check.seal(record, seq);
    }
}

/// Makes a new directory entry durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
