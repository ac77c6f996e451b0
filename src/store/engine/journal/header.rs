//! The journal's first page: what it holds, how it is tagged, and how a start judges it.
//!
//! ```text
//! magic "IDBJRNL\0" | format u32 LE | 0u32 | journal id u64 LE | key (32 B) | tag (16 B) | zeros
//! ```
//!
//! The tag is an HMAC over the fields before it, under the key, so a changed byte anywhere in
//! the header is found, rather than read as another key (every record would then fail its
//! check, and the journal look empty) or another data file's id (the journal would be
//! emptied).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::check::{Check, MARKER_LEN, labelled_tag};
use super::{FORMAT, RECORDS_START};

const MAGIC: &[u8; 8] = b"IDBJRNL\0";
/// Formats of development builds that never shipped: their journals are refused while they
/// hold anything (see [`Header::Older`]), never read.
const OLDER_FORMATS: [u32; 2] = [1, 2];
/// Magic, format, padding, journal id, key: what the header's tag covers.
const HEADER_FIELDS: usize = 56;
/// The fields and their tag; zeros follow up to [`RECORDS_START`].
pub(super) const HEADER_LEN: usize = 72;

/// What the first page of a journal file says.
pub(super) enum Header {
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
    /// The header of a development build's journal (formats 1 and 2, which never shipped):
    /// this build does not read their records. `records`: anything follows the header.
    Older { format: u32, records: bool },
}

/// A header page of format [`FORMAT`] (or `format`, for tests) for journal id `id` under `key`.
pub(super) fn header(format: u32, id: u64, key: &[u8; 32]) -> Vec<u8> {
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
pub(super) fn read_header(file: &File) -> std::io::Result<Header> {
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
        let mut check = Check::new(key);
        check.verify = trusted;
        if !trusted {
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
    match format {
        FORMAT if tag_checks(FORMAT) => {}
        FORMAT => return damaged(0, "the header does not match its check".into(), false),
        // The header but for its format field checks: its records can be read, and trusted.
        _ if tag_checks(FORMAT) => {
            return Header::Damaged {
                offset: 8,
                what: format!(
                    "its format field says {format}, yet the rest of the header checks as format {FORMAT}"
                ),
                id,
                check: Check::new(key),
            };
        }
        // A newer build's journal, its header intact: not damage, and not ours to read.
        _ if format > FORMAT && tag_checks(format) => return Header::Newer { format },
        _ if OLDER_FORMATS.contains(&format) => {
            return Header::Older {
                format,
                records: len > RECORDS_START,
            };
        }
        _ => {
            return damaged(
                8,
                format!("its format ({format}) is unknown and the header does not match its check"),
                false,
            );
        }
    }
    if let Some(at) = page
        .get(HEADER_LEN..)
        .and_then(|zeros| zeros.iter().position(|b| *b != 0))
    {
        // What the header says checks: its records are this file's, if the id is the data
        // file's.
        return damaged(
            HEADER_LEN + at,
            "a byte that must be zero is not".into(),
            true,
        );
    }
    Header::Sound {
        id,
        check: Check::new(key),
    }
}

/// A header page of `format` for journal id `id` with a key of zeros and no tag, as the
/// development formats 1 and 2 wrote it.
#[cfg(test)]
pub(super) fn untagged_header(format: u32, id: u64) -> Vec<u8> {
    let mut file = vec![0u8; RECORDS_START as usize];
    file[..8].copy_from_slice(MAGIC);
    file[8..12].copy_from_slice(&format.to_le_bytes());
    file[16..24].copy_from_slice(&id.to_le_bytes());
    file
}
