//! A stream whose every 8-byte word is unique to its position, written into a
//! child's stdin and checked as it is read from another's stdout: a lost,
//! repeated or reordered piece of any size shows as a mismatch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::KillOnDrop;

/// Bytes per write into the sender's stdin (a multiple of 8, see `fill`).
pub const CHUNK: usize = 64 * 1024;

/// Fills `buf` (a multiple of 8 long) with the stream's words from word `first`
/// on. Word `w` (bytes `8w..8w+8`) is unique to its position, so a lost, repeated
/// or reordered piece of any size shows as a mismatch.
pub fn fill(first: u64, buf: &mut [u8]) {
    for (i, word) in buf.chunks_exact_mut(8).enumerate() {
        let w = (first + i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        word.copy_from_slice(&w.to_le_bytes());
    }
}

/// What the receiving side read from `peerpipe listen`'s stdout.
pub struct Received {
    pub total: u64,
    /// Offset of the first byte that differs from the pattern.
    pub first_mismatch: Option<u64>,
}

/// Reads `from` to its end, checking every byte against the pattern and counting
/// into `progress`.
pub fn receive(mut from: impl std::io::Read, progress: &AtomicU64) -> Received {
    let mut buf = vec![0u8; 256 * 1024];
    let mut expected = vec![0u8; buf.len() + 16];
    let mut got = 0u64;
    let mut first_mismatch = None;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading the listener's stdout: {e}"),
        };
        if first_mismatch.is_none() {
            let skip = (got % 8) as usize;
            let words = (skip + n).div_ceil(8);
            fill(got / 8, &mut expected[..words * 8]);
            if buf[..n] != expected[skip..skip + n] {
                let i = (0..n).find(|&i| buf[i] != expected[skip + i]).unwrap();
                first_mismatch = Some(got + i as u64);
            }
        }
        got += n as u64;
        progress.store(got, Ordering::Relaxed);
    }
    Received {
        total: got,
        first_mismatch,
    }
}

/// The clients' stderr logs, shown when something fails.
pub struct Logs {
    pub connect: PathBuf,
    pub listen: PathBuf,
}

impl Logs {
    pub fn show(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| format!("({e})"));
        format!(
            "\n--- connect stderr ---\n{}--- listen stderr ---\n{}",
            read(&self.connect),
            read(&self.listen)
        )
    }
}

/// Polls until `progress` passes `past`, bounded by `bound`; `Err` with a reason
/// when the bound passes or a client exits first.
pub fn wait_progress(
    progress: &AtomicU64,
    past: u64,
    bound: Duration,
    clients: &mut [&mut KillOnDrop],
) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    while progress.load(Ordering::Relaxed) <= past {
        for child in clients.iter_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!(
                    "a client exited ({status}) at {} bytes received",
                    progress.load(Ordering::Relaxed)
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "stuck at {} bytes received for {bound:?}",
                progress.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Writes `total` bytes of the pattern into `to` on a thread; the counter
/// says how much was written so far.
pub fn spawn_writer(
    mut to: impl std::io::Write + Send + 'static,
    total: u64,
) -> (JoinHandle<()>, Arc<AtomicU64>) {
    let written = Arc::new(AtomicU64::new(0));
    let thread = std::thread::spawn({
        let written = written.clone();
        move || {
            let mut buf = vec![0u8; CHUNK];
            let mut offset = 0u64;
            while offset < total {
                fill(offset / 8, &mut buf);
                if to.write_all(&buf).is_err() {
                    return;
                }
                offset += CHUNK as u64;
                written.store(offset, Ordering::Relaxed);
            }
        }
    });
    (thread, written)
}

/// Reads and checks `from` on a thread; the counter says how much arrived.
pub fn spawn_reader(
    from: impl std::io::Read + Send + 'static,
) -> (JoinHandle<Received>, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let thread = std::thread::spawn({
        let received = received.clone();
        move || receive(from, &received)
    });
    (thread, received)
}

/// Waits (bounded) for `child`, one end of the stream, to exit after it
/// resumed; panics with the logs when it does not.
pub fn finish(
    child: &mut KillOnDrop,
    what: &str,
    bound: Duration,
    received: &AtomicU64,
    total: u64,
    logs: &Logs,
) -> std::process::ExitStatus {
    super::wait_timeout(child, bound).unwrap_or_else(|| {
        panic!(
            "{what} did not exit within {bound:?} after the stream resumed \
             ({} of {total} bytes received){}",
            received.load(Ordering::Relaxed),
            logs.show()
        )
    })
}
