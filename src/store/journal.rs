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
//! This module knows the file, not what a record means. Layout (format 3):
//!
//! ```text
//! header (4 KiB): magic "IDBJRNL\0" | format u32 LE | 0u32 | journal id u64 LE | key (32 B)
//!                 | tag (16 B) | zeros
//! records, back to back from offset 4096:
//!     marker (8 B) | payload length u32 LE | seq u64 LE | tag (16 B) | payload
//! ```
//!
//! A record's tag is HMAC-SHA256 over its length, seq and payload, under the header's key (the
//! first 16 bytes of it). Seqs only grow while the daemon runs (the writer numbers every batch
//! it attempts), and the data file records the seq of the newest batch it holds, so recovery
//! reads from the first record while each is whole, carries a good tag and has a seq above the
//! one before it (the *run*), and replays those above the data file's. The key is why a
//! checksum is not enough: what follows the newest record is old bytes, and some of them were
//! chosen by clients (a `client_id` is stored as sent). With a plain crc, bytes crafted to look
//! like a record with a high seq, left behind by an earlier round exactly where a later round
//! stops, would be replayed after a crash; a client cannot tag bytes without the key, which
//! never leaves the journal file (mode 0600). At each start, once what the file holds is
//! replayed and checkpointed, it is emptied and given a new key ([`Journal::clear`]): the
//! writer then numbers batches from the last one replayed, and no record of the run before may
//! be left to meet them.
//!
//! **Torn or damaged.** The run ends where a crash cut the last write short, or at the records
//! an earlier round left further into the file (their seqs are lower), or at damage. Only
//! damage can leave, past the end, a checked record with a seq above the run's: a write that
//! was synced, so acknowledged, after the one the run ends at. So the scan goes on past the end
//! of the run and looks for one at every offset ([`Journal::scan`]): finding one, it reports
//! damage with what lies beyond it; finding none, the end was a torn write (or nothing), the
//! normal aftermath of a crash. The marker in front of every record (from the key, like the
//! tag) is how it finds records without trusting any length: a damaged length hides where the
//! next record starts, and a client's bytes never carry the marker. Damage to the very last
//! record looks exactly like a torn write and is read as one. The header carries a tag of its
//! own (HMAC over its fields, under its key), so a changed byte anywhere in it is found too,
//! rather than read as another key (every record then fails its check, and the journal looks
//! empty) or another data file's id (the journal would be emptied). What to do about damage is
//! the store's decision ([`super::Store::open`]): refuse to start, or move the file aside
//! ([`Journal::move_aside`]) when the operator accepts the loss.
//!
//! Older formats are still read at open, replayed, and then emptied into format 3. Format 2 had
//! no marker and no header tag: damage past a record is found by trying the offsets whose seq is
//! plausible, and a changed byte in its header's key or id cannot be told from another key or
//! data file. Format 1, written by the first builds with a journal, checked records with a crc32
//! and had no key: its scan ends at the first record the data file holds, as it did then, and
//! no search past its end can tell damage from a client's bytes.
//!
//! The journal id ties the file to one data file (`name_value["journal_id"]`): a journal whose
//! sound header carries another id (a restored backup, a deleted database) is emptied rather
//! than replayed into the wrong data.

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

/// Bytes in front of each record's payload: its marker, length, seq and tag.
pub const RECORD_HEADER: usize = 36;

/// The format this build writes.
pub const FORMAT: u32 = 3;

const MAGIC: &[u8; 8] = b"IDBJRNL\0";
/// Format 2: records without a marker, a header without a tag. Read for a replay, never
/// written.
const FORMAT_TAG: u32 = 2;
/// Format 1, the first builds with a journal: crc32 records, no key. Read, never written.
const FORMAT_CRC: u32 = 1;
/// Magic, format, padding, journal id, key: what the header's tag covers.
const HEADER_FIELDS: usize = 56;
/// The fields and their tag; zeros follow up to [`RECORDS_START`].
const HEADER_LEN: usize = 72;
/// Bytes of a tag: the first half of an HMAC-SHA256.
const TAG_LEN: usize = 16;
/// Bytes of the marker in front of every format-3 record.
const MARKER_LEN: usize = 8;
/// How far above the newest seq the run reached a format-2 seq may lie for the bytes around it
/// to be checked as a record past a damaged one. Format 2 has no marker to find records by,
/// and every offset past the damage is a candidate; this bounds the tags computed to the few
/// offsets whose seq is plausible. Seqs between two records of one round differ by one plus
/// the batches that failed in between.
const FORMAT_TAG_SEARCH: u64 = 1 << 20;

type RecordMac = Hmac<Sha256>;

/// How records are laid out, by format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Format 1: length u32 | crc32 | seq u64.
    Crc,
    /// Format 2: length u32 | seq u64 | tag.
    Tag,
    /// Format 3: marker | length u32 | seq u64 | tag.
    Marked,
}

impl Layout {
    /// The layout of a header's format field (a format this build does not know is read as
    /// its own, to say what a damaged file holds).
    fn of(format: u32) -> Self {
        match format {
            FORMAT_CRC => Layout::Crc,
            FORMAT_TAG => Layout::Tag,
            _ => Layout::Marked,
        }
    }

    fn format(self) -> u32 {
        match self {
            Layout::Crc => FORMAT_CRC,
            Layout::Tag => FORMAT_TAG,
            Layout::Marked => FORMAT,
        }
    }

    /// Bytes in front of a record's payload.
    fn head(self) -> usize {
        match self {
            Layout::Crc => 16,
            Layout::Tag => 28,
            Layout::Marked => RECORD_HEADER,
        }
    }
}

/// How the records of the file as found are read and checked.
#[derive(Clone, Copy)]
struct Check {
    layout: Layout,
    /// The header's key (zeros in format 1).
    key: [u8; 32],
    /// Format 3: what every record starts with.
    marker: [u8; MARKER_LEN],
    /// False when the header failed its own check: its key cannot be trusted, and records are
    /// found by their lengths and seqs alone, to say what the file holds, never to replay.
    verify: bool,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key and marker stay out of logs.
        f.debug_struct("Check")
            .field("layout", &self.layout)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl Check {
    /// Records of `format` under `key`, checked.
    fn new(format: u32, key: [u8; 32]) -> Self {
        Check {
            layout: Layout::of(format),
            key,
            marker: marker(&key),
            verify: true,
        }
    }

    /// The length and seq of the record whose front starts `bytes`, if its front is there
    /// (and starts with the marker, in format 3). Nothing is checked yet.
    fn front(&self, bytes: &[u8]) -> Option<(usize, u64)> {
        if bytes.len() < self.layout.head() {
            return None;
        }
        let base = match self.layout {
            Layout::Marked if bytes[..MARKER_LEN] != self.marker => return None,
            Layout::Marked => MARKER_LEN,
            _ => 0,
        };
        let len = u32::from_le_bytes(bytes[base..base + 4].try_into().expect("4 bytes")) as usize;
        let seq_at = match self.layout {
            Layout::Crc => 8,
            _ => base + 4,
        };
        let seq = u64::from_le_bytes(bytes[seq_at..seq_at + 8].try_into().expect("8 bytes"));
        Some((len, seq))
    }

    /// Whether a record's front `head` matches its `payload`.
    fn verifies(&self, head: &[u8], payload: &[u8]) -> bool {
        let (covered, tag) = match self.layout {
            Layout::Crc => {
                let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(&head[8..16]);
                hasher.update(payload);
                return hasher.finalize() == crc;
            }
            Layout::Tag => (&head[..12], &head[12..28]),
            Layout::Marked => (&head[MARKER_LEN..20], &head[20..RECORD_HEADER]),
        };
        let mut mac = record_mac(&self.key);
        mac.update(covered);
        mac.update(payload);
        mac.verify_truncated_left(tag).is_ok()
    }

    /// The record at the start of `bytes` and its length in the file, if it is whole and
    /// checks.
    fn record(&self, bytes: &[u8]) -> Option<(Record, usize)> {
        let (len, seq) = self.front(bytes)?;
        let head = self.layout.head();
        if bytes.len() - head < len {
            return None;
        }
        let payload = &bytes[head..head + len];
        if self.verify && !self.verifies(&bytes[..head], payload) {
            return None;
        }
        let record = Record {
            seq,
            payload: payload.to_vec(),
        };
        Some((record, head + len))
    }
}

/// One record of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What [`Journal::scan`] found in the file.
#[derive(Debug, Default)]
pub struct Scan {
    /// The records to replay: those above the data file's seq in the run of valid records
    /// from the start of the file, in order.
    pub records: Vec<Record>,
    /// The run ended in the front of a newer record that does not check, and nothing newer
    /// lies past it: a write the crash cut short, never acknowledged. Its offset.
    pub torn_at: Option<u64>,
    /// Damage that a torn write does not explain: the file cannot be replayed whole.
    pub damage: Option<Damage>,
}

/// Where a journal is damaged, and what lies beyond the damage.
#[derive(Debug)]
pub struct Damage {
    /// Offset in the file of the first byte known to be wrong (0 for a header that fails its
    /// check as a whole).
    pub offset: u64,
    /// What is wrong there.
    pub what: String,
    /// The records above the data file's seq that a replay cannot reach: past a damaged
    /// record, or every one behind a header that cannot be trusted.
    pub lost: Vec<Record>,
    /// False when `lost` was found by lengths and seqs alone, the header's key being
    /// untrusted: they are what the records say of themselves.
    pub checked: bool,
}

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
    /// There was none: an empty one was created.
    Created,
    /// It belonged to another data file and was emptied.
    Replaced,
}

/// What the first page of a journal file says.
enum Header {
    /// No journal was ever written there.
    Nothing,
    /// A header that checks.
    Sound { id: u64, check: Check },
    /// A header that does not: where and how, the id it gives, and how its records might be
    /// read.
    Damaged {
        offset: u64,
        what: String,
        id: u64,
        check: Check,
    },
    /// A sound header of a format newer than this build's.
    Newer { format: u32 },
}

impl Journal {
    /// Opens `<data_dir>/indaba.journal` for the data file whose journal id is `id`, creating
    /// it (mode 0600) if missing, and emptying it if its header checks and carries another
    /// id. A damaged header leaves the file as it is, for [`Journal::scan`] to report.
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
            check: Check::new(FORMAT, [0; 32]),
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
                    "journal format {format}, this indaba reads formats {FORMAT_CRC} to {FORMAT}; start the indaba that wrote it once, so it folds the journal into the data file"
                )));
            }
            Header::Nothing => {
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
        self.check = Check::new(FORMAT, key);
        self.header_damage = None;
        Ok(())
    }

    /// Reads the records and says which to replay, given `after`, the data file's
    /// `applied_seq`; and whether the file is damaged beyond a torn last write.
    ///
    /// The run of records to replay starts at the first record and ends at the first that is
    /// incomplete, fails its check or is not newer than the one before. Past that end lie a
    /// torn write (the crash), or records of an earlier round (the writer starts over at the
    /// front after each checkpoint, so their seqs are lower), or nothing. Any checked record
    /// there with a seq above both the run's and the data file's is a batch that was
    /// acknowledged after the one the run ends at: the run ended at damage, not at the crash.
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
        Ok(scan(&bytes, after, self.check, self.header_damage.clone()))
    }

    /// Drops every record and takes a new key, durably: called once the store has replayed
    /// what it needed and checkpointed. A crash can leave records of batches that were never
    /// acknowledged behind a torn one, and the restarted writer numbers its batches from the
    /// last one replayed, so without this a later recovery could meet such a record, with a
    /// seq that looks new, right where the new records end. A journal of an older format
    /// becomes the current one here.
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

    /// The format of the file as found (its records' layout); [`FORMAT`] once cleared.
    pub fn format(&self) -> u32 {
        self.check.layout.format()
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
    /// at the start of `record`. Only for a journal [`Journal::clear`] has made the current
    /// format, as the store does at open before its writer starts.
    pub fn seal(&self, record: &mut [u8], seq: u64) {
        assert!(
            self.check.layout == Layout::Marked && self.check.verify,
            "records are written only after clear(), which makes the current format"
        );
        let (head, payload) = record.split_at_mut(RECORD_HEADER);
        let len = u32::try_from(payload.len()).expect("a record is smaller than the journal");
        head[..MARKER_LEN].copy_from_slice(&self.check.marker);
        head[MARKER_LEN..12].copy_from_slice(&len.to_le_bytes());
        head[12..20].copy_from_slice(&seq.to_le_bytes());
        let mut mac = record_mac(&self.check.key);
        mac.update(&head[MARKER_LEN..20]);
        mac.update(payload);
        head[20..RECORD_HEADER].copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
    }
}

/// The HMAC of one record, keyed.
fn record_mac(key: &[u8; 32]) -> RecordMac {
    <RecordMac as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// An HMAC under `key` of `label` and `data`, truncated: the marker and the header's tag. The
/// labels keep them apart from each other and from record tags, whose input starts with a
/// length no record reaches.
fn labelled_tag(key: &[u8; 32], label: &[u8], data: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = record_mac(key);
    mac.update(label);
    mac.update(data);
    mac.finalize().into_bytes()[..TAG_LEN]
        .try_into()
        .expect("16 bytes")
}

/// The bytes every format-3 record under `key` starts with. A scan that lost its place past a
/// damaged record finds the next by them, and bytes a client chose never carry them: the key
/// never leaves the file.
fn marker(key: &[u8; 32]) -> [u8; MARKER_LEN] {
    labelled_tag(key, b"indaba journal record marker", &[])[..MARKER_LEN]
        .try_into()
        .expect("8 bytes")
}

/// A header page of `format` (the tag as format 3 has it) for journal id `id` under `key`.
fn header(format: u32, id: u64, key: &[u8; 32]) -> Vec<u8> {
    let mut page = vec![0u8; RECORDS_START as usize];
    page[..8].copy_from_slice(MAGIC);
    page[8..12].copy_from_slice(&format.to_le_bytes());
    page[16..24].copy_from_slice(&id.to_le_bytes());
    page[24..HEADER_FIELDS].copy_from_slice(key);
    let tag = labelled_tag(key, b"indaba journal header", &page[..HEADER_FIELDS]);
    page[HEADER_FIELDS..HEADER_LEN].copy_from_slice(&tag);
    page
}

/// Reads and judges the first page of `file` (and the marker of its first record, should the
/// header be damaged).
fn read_header(file: &File) -> std::io::Result<Header> {
    let len = file.metadata()?.len();
    let mut start = vec![0u8; len.min(RECORDS_START + MARKER_LEN as u64) as usize];
    file.read_exact_at(&mut start, 0)?;
    Ok(judge_header(&start, len))
}

/// What the first bytes of a journal file say of its header; `len` is the file's length. A
/// file shorter than the header's fields, or zeros with nothing after them, is one a crash cut
/// short while it was created: no record was written before the header was durable.
fn judge_header(start: &[u8], len: u64) -> Header {
    let page = &start[..start.len().min(RECORDS_START as usize)];
    if page.len() < HEADER_FIELDS || (len <= RECORDS_START && page.iter().all(|b| *b == 0)) {
        return Header::Nothing;
    }
    let format = u32::from_le_bytes(page[8..12].try_into().expect("4 bytes"));
    let id = u64::from_le_bytes(page[16..24].try_into().expect("8 bytes"));
    let key: [u8; 32] = page[24..HEADER_FIELDS].try_into().expect("32 bytes");
    // Whether the header's tag checks, with its format field read as `format`.
    let tag_checks = |format: u32| {
        let mut fields = page[..HEADER_FIELDS].to_vec();
        fields[8..12].copy_from_slice(&format.to_le_bytes());
        page.len() >= HEADER_LEN
            && labelled_tag(&key, b"indaba journal header", &fields)
                == page[HEADER_FIELDS..HEADER_LEN]
    };
    let damaged = |offset: usize, what: String, trusted: bool| {
        let mut check = Check::new(format, key);
        check.verify = trusted;
        if !trusted && check.layout == Layout::Marked {
            // The key may be the damaged part: read records by the marker they carry.
            let first = RECORDS_START as usize;
            if let Some(found) = start.get(first..first + MARKER_LEN) {
                check.marker = found.try_into().expect("8 bytes");
            }
        }
        Header::Damaged {
            offset: offset as u64,
            what,
            id,
            check,
        }
    };
    if page[..HEADER_LEN.min(page.len())].iter().all(|b| *b == 0) {
        return damaged(0, "the header is zeros, yet the file goes on".into(), false);
    }
    if &page[..8] != MAGIC {
        return damaged(
            0,
            "the magic bytes are wrong (damaged, or not an indaba journal)".into(),
            false,
        );
    }
    // Bytes that must be zeros, by format; a format-3 header checks its fields itself.
    let zeros = match format {
        FORMAT if tag_checks(FORMAT) => HEADER_LEN..RECORDS_START as usize,
        FORMAT => return damaged(0, "the header does not match its check".into(), false),
        // A format-3 header but for its format field: the rest checks, so its records can be
        // read, and trusted, as format 3.
        _ if tag_checks(FORMAT) => {
            return Header::Damaged {
                offset: 8,
                what: format!(
                    "its format field says {format}, yet the rest of the header checks as format {FORMAT}"
                ),
                id,
                check: Check::new(FORMAT, key),
            };
        }
        FORMAT_TAG | FORMAT_CRC => {
            let from = if format == FORMAT_TAG {
                HEADER_FIELDS
            } else {
                24
            };
            if let Some(at) = page[12..16].iter().position(|b| *b != 0) {
                return damaged(12 + at, "a byte that must be zero is not".into(), false);
            }
            from..RECORDS_START as usize
        }
        // A newer build's journal, its header intact: not damage, and not ours to read.
        _ if tag_checks(format) => return Header::Newer { format },
        _ => {
            return damaged(
                8,
                format!("its format ({format}) is unknown and the header does not match its check"),
                false,
            );
        }
    };
    if let Some(at) = page
        .get(zeros.start..zeros.end.min(page.len()))
        .and_then(|z| z.iter().position(|b| *b != 0))
    {
        // What the header says checks (or, before format 3, cannot be checked): its records
        // are this file's, if the id is the data file's.
        return damaged(
            zeros.start + at,
            "a byte that must be zero is not".into(),
            true,
        );
    }
    Header::Sound {
        id,
        check: Check::new(format, key),
    }
}

/// [`Journal::scan`] on the bytes after the header. `header` is the header's damage, if any.
fn scan(bytes: &[u8], after: u64, check: Check, header: Option<(u64, String)>) -> Scan {
    // The run: whole, checked records from the start, each newer than the one before.
    let mut run = Vec::new();
    let mut last = None;
    let mut end = 0;
    while let Some((record, len)) = check.record(&bytes[end..]) {
        if last.is_some_and(|last| record.seq <= last) {
            break;
        }
        // Format 1 had no key: past a record the data file holds, the bytes may be a client's
        // (see the module doc), so its scan ends there as it always did.
        if check.layout == Layout::Crc && record.seq <= after {
            break;
        }
        last = Some(record.seq);
        end += len;
        if record.seq > after {
            run.push(record);
        }
    }
    if let Some((offset, what)) = header.clone().filter(|_| !check.verify) {
        // Nothing here can be trusted: the run, found by lengths and seqs, is what the file
        // says it holds.
        return Scan {
            records: Vec::new(),
            torn_at: None,
            damage: Some(Damage {
                offset,
                what,
                lost: run,
                checked: false,
            }),
        };
    }
    let newest = last.map_or(after, |last| last.max(after));
    let lost = stranded(bytes, end, newest, check);
    let damage = match (header, lost.is_empty()) {
        (Some((offset, what)), _) => Some(Damage {
            offset,
            what,
            lost,
            checked: true,
        }),
        (None, false) => {
            let what = match check.front(&bytes[end..]) {
                Some(_) => "the record there does not match its check",
                None => "the front of the record there is damaged",
            };
            Some(Damage {
                offset: RECORDS_START + end as u64,
                what: what.into(),
                lost,
                checked: true,
            })
        }
        (None, true) => None,
    };
    let torn = damage.is_none() && newer_front(&bytes[end..], newest, check);
    Scan {
        records: run,
        torn_at: torn.then_some(RECORDS_START + end as u64),
        damage,
    }
}

/// The checked records from `from` on whose seqs are above `newest`: batches acknowledged
/// after the newest one the run before `from` reached, which only damage can have cut off
/// from it. Every offset is tried, since the damage may have taken a record's length with it:
/// format 3 records are found by their marker; format 2, which has none, by a plausible seq
/// (see [`FORMAT_TAG_SEARCH`]); format 1, whose crc a client's bytes can match, not at all.
fn stranded(bytes: &[u8], from: usize, newest: u64, check: Check) -> Vec<Record> {
    let mut found = Vec::new();
    if check.layout == Layout::Crc {
        return found;
    }
    let mut at = from;
    while at < bytes.len() {
        if newer_front(&bytes[at..], newest, check)
            && let Some((record, len)) = check.record(&bytes[at..])
        {
            found.push(record);
            at += len;
        } else {
            at += 1;
        }
    }
    found
}

/// Whether `bytes` start with what looks like the front of a record newer than `newest`.
fn newer_front(bytes: &[u8], newest: u64, check: Check) -> bool {
    check.front(bytes).is_some_and(|(_, seq)| {
        seq > newest && (check.layout == Layout::Marked || seq - newest <= FORMAT_TAG_SEARCH)
    })
}

/// Makes a new directory entry durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A journal file of `format` for journal id `id` with no records and a key of zeros, its
/// header as formats 1 and 2 wrote it (no tag).
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

    /// A format-2 journal for id `id` under `key` holding records `seqs`.
    fn format_2_file(id: u64, key: [u8; 32], seqs: &[u64]) -> (Vec<u8>, Vec<usize>) {
        let mut file = test_header(FORMAT_TAG, id);
        file[24..HEADER_FIELDS].copy_from_slice(&key);
        let mut offsets = Vec::new();
        for seq in seqs {
            offsets.push(file.len() - RECORDS_START as usize);
            let payload = format!("batch {seq}");
            let len = u32::try_from(payload.len()).expect("small");
            let mut head = [0u8; 28];
            head[..4].copy_from_slice(&len.to_le_bytes());
            head[4..12].copy_from_slice(&seq.to_le_bytes());
            let mut mac = record_mac(&key);
            mac.update(&head[..12]);
            mac.update(payload.as_bytes());
            head[12..].copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
            file.extend_from_slice(&head);
            file.extend_from_slice(payload.as_bytes());
        }
        (file, offsets)
    }

    #[test]
    fn a_format_2_journal_is_replayed_and_its_damage_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(JOURNAL_FILE);
        let (file, at) = format_2_file(7, [3; 32], &[11, 12, 13]);
        std::fs::write(&path, &file).expect("write");
        let (journal, opened) = open(dir.path(), 7);
        assert_eq!((opened, journal.format()), (Opened::Existing, FORMAT_TAG));
        assert_eq!(seqs(&replayed(&journal, 10)), [11, 12, 13]);
        drop(journal);
        // The middle record's length damaged: the one after it is still found.
        let mut damaged = file;
        damaged[RECORDS_START as usize + at[1]] ^= 0x40;
        std::fs::write(&path, &damaged).expect("write");
        let scan = open(dir.path(), 7).0.scan(10).expect("scan");
        assert_eq!(seqs(&scan.records), [11]);
        assert_eq!(seqs(&scan.damage.expect("damage").lost), [13]);
    }

    #[test]
    fn a_format_1_journal_is_replayed_then_becomes_the_current_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = format_1_file(7, &[(11, b"one"), (12, b"two")]);
        std::fs::write(dir.path().join(JOURNAL_FILE), &file).expect("write");

        let (mut journal, opened) = open(dir.path(), 7);
        assert_eq!((opened, journal.format()), (Opened::Existing, FORMAT_CRC));
        let records = replayed(&journal, 10);
        assert_eq!(seqs(&records), [11, 12]);
        assert_eq!(records[1].payload, b"two");
        // Without a key, nothing past a record the data file holds is read.
        assert!(replayed(&journal, 11).is_empty());
        journal.clear().expect("clear");
        let new = record(&journal, 13, b"three");
        journal.write_at(RECORDS_START, &new).expect("write");
        drop(journal);
        let (journal, opened) = open(dir.path(), 7);
        assert_eq!((opened, journal.format()), (Opened::Existing, FORMAT));
        assert_eq!(replayed(&journal, 12)[0].payload, b"three");
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
        let file = test_header(9, 0);
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
}
