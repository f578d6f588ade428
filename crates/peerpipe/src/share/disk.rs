//! Disk I/O of shared content: reusable chunk buffers, and writes that go past
//! the page cache where the file system allows it.
//!
//! A download writes every byte once and never reads it back, so caching what it
//! writes only costs: the kernel must find (and on a virtual machine often fault
//! in) a fresh page for each 4 KiB before copying into it. Large verified
//! chunks therefore go to disk with `O_DIRECT` (Linux): their page-aligned part
//! straight from the buffer, the unaligned tail of a file through the cache. A
//! direct write waits for the device, so small ones (a small file, the end of
//! a large one) go through the cache, where the kernel batches them. A file
//! system that refuses direct I/O (tmpfs, some network file systems) gets
//! ordinary writes from then on.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::content::IO_CHUNK;

/// The alignment direct I/O needs of buffers, offsets and lengths (the largest
/// logical block size in use).
const ALIGN: usize = 4096;
/// Free buffers a pool keeps; more in use at once are made and dropped.
const POOL_CAP: usize = 16;
/// The smallest aligned run written past the cache: below it, waiting for the
/// device costs more than the copy into the cache saves.
const DIRECT_MIN: usize = 256 * 1024;

/// A buffer of up to [`IO_CHUNK`] bytes whose start is page-aligned. Its memory is
/// initialized once, when the buffer is made, and reused from then on.
pub(crate) struct Chunk {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Chunk {
    fn new() -> Self {
        let raw = vec![0; IO_CHUNK as usize + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { raw, start, len: 0 }
    }

    /// Sets the length (at most [`IO_CHUNK`]); the bytes are whatever the buffer
    /// held last.
    fn set_len(&mut self, len: usize) {
        self.len = len.min(IO_CHUNK as usize);
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The bytes, to fill.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Free [`Chunk`]s, so steady streaming allocates nothing.
#[derive(Default)]
pub(crate) struct Pool {
    free: Mutex<Vec<Chunk>>,
}

impl Pool {
    /// A buffer of `len` bytes (at most [`IO_CHUNK`]).
    pub(crate) fn take(&self, len: usize) -> Chunk {
        let mut chunk = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_else(Chunk::new);
        chunk.set_len(len);
        chunk
    }

    /// Returns a buffer for reuse.
    pub(crate) fn give(&self, chunk: Chunk) {
        if let Ok(mut free) = self.free.lock()
            && free.len() < POOL_CAP
        {
            free.push(chunk);
        }
    }
}

/// Writes files, directly where the file system allows it.
pub(crate) struct Writer {
    direct: AtomicBool,
}

impl Default for Writer {
    fn default() -> Self {
        Self {
            direct: AtomicBool::new(cfg!(target_os = "linux")),
        }
    }
}

impl Writer {
    /// Writes all of `data` at `offset` of the file `path`, created if absent.
    pub(crate) fn write_at(&self, path: &Path, data: &[u8], offset: u64) -> io::Result<()> {
        let aligned = data.as_ptr().align_offset(ALIGN) == 0 && offset.is_multiple_of(ALIGN as u64);
        let head = if aligned {
            data.len() / ALIGN * ALIGN
        } else {
            0
        };
        let mut done = 0;
        if head >= DIRECT_MIN && self.direct.load(Ordering::Relaxed) {
            match write_direct(path, &data[..head], offset) {
                Ok(()) => done = head,
                // Refused (the file system has no direct I/O) or cut short at
                // an odd length: the whole chunk goes through the cache.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    tracing::debug!("no direct I/O on {}: {e}", path.display());
                    self.direct.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        if done < data.len() {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?
                .write_all_at(&data[done..], offset + done as u64)?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn write_direct(path: &Path, data: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(path)?
        .write_all_at(data, offset)
}

#[cfg(not(target_os = "linux"))]
fn write_direct(_: &Path, _: &[u8], _: u64) -> io::Result<()> {
    Err(io::ErrorKind::InvalidInput.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_and_reused() {
        let pool = Pool::default();
        let mut a = pool.take(10);
        assert_eq!(a.bytes().len(), 10);
        assert_eq!(a.bytes().as_ptr().align_offset(ALIGN), 0);
        a.bytes_mut().copy_from_slice(b"0123456789");
        let at = a.bytes().as_ptr();
        pool.give(a);
        let b = pool.take(IO_CHUNK as usize + 1);
        assert_eq!(b.bytes().as_ptr(), at, "the free buffer is reused");
        assert_eq!(b.bytes().len(), IO_CHUNK as usize, "capped at one chunk");
    }

    #[test]
    fn writes_aligned_heads_and_odd_tails() {
        let dir = std::env::temp_dir().join(format!("peerpipe-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let writer = Writer::default();
        let pool = Pool::default();
        // A new file: an aligned chunk large enough to go past the cache, with
        // an odd tail, then an unaligned write before it.
        let mut chunk = pool.take(DIRECT_MIN + 5);
        for (i, b) in chunk.bytes_mut().iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        writer
            .write_at(&path, chunk.bytes(), 2 * ALIGN as u64)
            .unwrap();
        writer.write_at(&path, b"abc", 7).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 2 * ALIGN + DIRECT_MIN + 5);
        assert_eq!(&got[7..10], b"abc");
        assert!(got[..7].iter().all(|&b| b == 0));
        assert!(got[10..2 * ALIGN].iter().all(|&b| b == 0));
        assert_eq!(&got[2 * ALIGN..], chunk.bytes());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
