//! How a journal's records are told apart from other bytes: the key-derived marker in front
//! of each, and the tag that covers it.
//!
//! ```text
//! marker (8 B) | payload length u32 LE | seq u64 LE | tag (16 B) | payload
//! ```
//!
//! The tag is the first half of an HMAC-SHA256 over the length, the seq and the payload, under
//! the header's key. The marker, the same in front of every record of one file, is an HMAC of
//! its own under that key: a scan that lost its place past a damaged record finds the next by
//! it, and bytes a client chose never carry it, since the key never leaves the file.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::RECORD_HEADER;

/// Bytes of a tag: the first half of an HMAC-SHA256.
pub(super) const TAG_LEN: usize = 16;
/// Bytes of the marker in front of every record.
pub(super) const MARKER_LEN: usize = 8;

type RecordMac = Hmac<Sha256>;

/// One record of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// How the records of the file as found are read and checked.
#[derive(Clone, Copy)]
pub(super) struct Check {
    /// The header's key.
    key: [u8; 32],
    /// What every record starts with.
    pub(super) marker: [u8; MARKER_LEN],
    /// False when the header failed its own check: its key cannot be trusted, and records are
    /// found by their marker, lengths and seqs alone, to say what the file holds, never to
    /// replay.
    pub(super) verify: bool,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key and marker stay out of logs.
        f.debug_struct("Check")
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl Check {
    /// Records under `key`, checked.
    pub(super) fn new(key: [u8; 32]) -> Self {
        Check {
            key,
            marker: marker(&key),
            verify: true,
        }
    }

    /// The length and seq of the record whose front starts `bytes`, if its front is there and
    /// starts with the marker. Nothing is checked yet.
    pub(super) fn front(&self, bytes: &[u8]) -> Option<(usize, u64)> {
        if bytes.len() < RECORD_HEADER || bytes[..MARKER_LEN] != self.marker {
            return None;
        }
        let len = u32::from_le_bytes(bytes[MARKER_LEN..12].try_into().expect("4 bytes")) as usize;
        let seq = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        Some((len, seq))
    }

    /// Whether a record's front `head` matches its `payload`.
    fn verifies(&self, head: &[u8], payload: &[u8]) -> bool {
        let mut mac = record_mac(&self.key);
        mac.update(&head[MARKER_LEN..20]);
        mac.update(payload);
        mac.verify_truncated_left(&head[20..RECORD_HEADER]).is_ok()
    }

    /// The record at the start of `bytes` and its length in the file, if it is whole and
    /// checks.
    pub(super) fn record(&self, bytes: &[u8]) -> Option<(Record, usize)> {
        let (len, seq) = self.front(bytes)?;
        if bytes.len() - RECORD_HEADER < len {
            return None;
        }
        let payload = &bytes[RECORD_HEADER..RECORD_HEADER + len];
        if self.verify && !self.verifies(&bytes[..RECORD_HEADER], payload) {
            return None;
        }
        let record = Record {
            seq,
            payload: payload.to_vec(),
        };
        Some((record, RECORD_HEADER + len))
    }

    /// Fills in the front of a record whose payload follows [`RECORD_HEADER`] reserved bytes
    /// at the start of `record`.
    pub(super) fn seal(&self, record: &mut [u8], seq: u64) {
        let (head, payload) = record.split_at_mut(RECORD_HEADER);
        let len = u32::try_from(payload.len()).expect("a record is smaller than the journal");
        head[..MARKER_LEN].copy_from_slice(&self.marker);
        head[MARKER_LEN..12].copy_from_slice(&len.to_le_bytes());
        head[12..20].copy_from_slice(&seq.to_le_bytes());
        let mut mac = record_mac(&self.key);
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
pub(super) fn labelled_tag(key: &[u8; 32], label: &[u8], data: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = record_mac(key);
    mac.update(label);
    mac.update(data);
    mac.finalize().into_bytes()[..TAG_LEN]
        .try_into()
        .expect("16 bytes")
}

/// The bytes every record under `key` starts with.
fn marker(key: &[u8; 32]) -> [u8; MARKER_LEN] {
    labelled_tag(key, b"indaba journal record marker", &[])[..MARKER_LEN]
        .try_into()
        .expect("8 bytes")
}
