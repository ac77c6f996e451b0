//! Appending a record with one write that is durable when it returns: `O_DIRECT | O_DSYNC`.
//!
//! A buffered `pwrite` then `fdatasync` copies the record into the page cache, and the sync
//! then finds the dirty page, starts its writeback through the filesystem's page machinery and
//! waits for it, then flushes the disk's cache: two system calls and most of the journal's CPU
//! per commit ("The writer's cost per commit" in docs/PERFORMANCE.md). Written with
//! `O_DIRECT | O_DSYNC` the same bytes go from our buffer to the device in one call, which
//! returns once they are on stable storage (the kernel issues the write with FUA, or a cache
//! flush after it) — the guarantee `fdatasync` gave, for exactly these bytes.
//!
//! `O_DIRECT` writes whole, aligned blocks. Records are not padded to blocks (the journal's
//! 1 MiB bound would hold fewer of them): each write starts at the block that holds the end of
//! the records so far, repeats the bytes of it that precede the new record (kept from the
//! write before, so never read back), and zero-fills the rest of its last block. The repeated
//! bytes are the ones already on the disk, so a crash that tears that block leaves them as
//! they were whichever of its sectors landed; a buffered write rewrote that shared page in the
//! same way at writeback. The zeros only replace what followed the newest record: bytes of an
//! earlier round that no scan accepts after the run of records ([`super::scan`]).
//!
//! A filesystem that refuses `O_DIRECT` at open (some FUSE ones, tmpfs before Linux 6.6) gets
//! the buffered write and `fdatasync` as before ([`super::Journal::open`]).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The alignment and granularity of every direct write: the page size, which is a multiple
/// of every common logical block size (512 B, 4 KiB).
pub const BLOCK: usize = 4096;

/// The journal file opened `O_DIRECT | O_DSYNC`, and the bytes of the block the records
/// end in.
#[derive(Debug)]
pub struct Direct {
    file: File,
    /// An over-allocated buffer; the writes use its [`BLOCK`]-aligned part.
    buffer: Vec<u8>,
    /// The file offset the bytes in `prefix` end at: they are the file's bytes from the
    /// start of that offset's block up to it. `None` after a failed write (reread then).
    end: Option<u64>,
    prefix: Vec<u8>,
}

/// The flags a file must be opened with for [`Direct`].
#[cfg(target_os = "linux")]
pub fn flags() -> Option<i32> {
    Some(libc::O_DIRECT | libc::O_DSYNC)
}

/// No `O_DIRECT` outside Linux: the buffered write and `fdatasync` are used.
#[cfg(not(target_os = "linux"))]
pub fn flags() -> Option<i32> {
    None
}

impl Direct {
    pub fn new(file: File) -> Self {
        Self {
            file,
            buffer: Vec::new(),
            end: None,
            prefix: Vec::with_capacity(BLOCK),
        }
    }

    /// Writes `bytes` at `offset` and zeros after them to the end of their last block,
    /// durably. `file` is the same file opened buffered, to read the bytes in front of
    /// `offset` when they are not known (the first write after a failed one).
    pub fn write_at(&mut self, file: &File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        let start = offset - offset % BLOCK as u64;
        let front = (offset - start) as usize;
        if self.end != Some(offset) {
            self.end = None;
            self.prefix.resize(front, 0);
            file.read_exact_at(&mut self.prefix, start)?;
            self.end = Some(offset);
        }
        let len = (front + bytes.len()).div_ceil(BLOCK) * BLOCK;
        if self.buffer.len() < len + BLOCK {
            self.buffer.resize(len + BLOCK, 0);
        }
        let skip = self.buffer.as_ptr().align_offset(BLOCK);
        let block = &mut self.buffer[skip..skip + len];
        block[..front].copy_from_slice(&self.prefix);
        block[front..front + bytes.len()].copy_from_slice(bytes);
        block[front + bytes.len()..].fill(0);
        // Whatever the outcome, the bytes in front of the next write must be read back unless
        // this one is known to have been written whole.
        self.end = None;
        self.file.write_all_at(block, start)?;
        let end = offset + bytes.len() as u64;
        let tail = (end % BLOCK as u64) as usize;
        let last = front + bytes.len() - tail;
        self.prefix.clear();
        self.prefix.extend_from_slice(&block[last..last + tail]);
        self.end = Some(end);
        Ok(())
    }
}
