//! `tar c DIR | peerpipe connect ID` → `peerpipe listen | SLOW READER | tar x` with
//! 1 GiB of files: the reader runs at a quarter of the pipeline's speed for most of
//! the stream, the sender's memory stays within a fixed bound (it holds back instead
//! of buffering), and the extracted tree is byte-identical.
//!
//! Slow in a debug build: run with
//! `cargo test --release -p peerpipe-cli --test tar_slow_consumer -- --ignored`.
//! `PEERPIPE_TEST_TAR_MIB` sets the input size in MiB (default 1024), e.g. 64 for a
//! quick debug run.

mod common;

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, ServeProcess, TempDir, client, device_id, peak_rss_kib, rss_kib, wait_online,
    wait_timeout,
};
use rand::RngCore as _;

const MIB: u64 = 1024 * 1024;
/// Input size in MiB unless `PEERPIPE_TEST_TAR_MIB` says otherwise.
const DEFAULT_MIB: u64 = 1024;
/// Large files the input is split into (plus a few small ones).
const LARGE_FILES: u64 = 4;
/// Peak resident memory allowed for the sender, `peerpipe connect`. By design it
/// holds at most one stream credit window (16 MiB at most) of data that the
/// receiver has not taken yet, plus its 256 KiB copy buffer and the link's bounded
/// queues; its own RSS with no data moving is ~10 MiB. 64 MiB leaves room for the
/// allocator and the runtime's threads and is still far below what buffering the
/// input (1 GiB) would show.
const SENDER_RSS_BOUND_KIB: u64 = 64 * 1024;
/// Peak resident memory allowed for the server: it relays with bounded per-link
/// queues and holds no stream data of its own (the bound `backpressure.rs` uses).
const SERVER_RSS_BOUND_KIB: u64 = 96 * 1024;
/// The reader runs at full speed for the first 1/8 of the stream to measure the
/// pipeline's speed, then at 1/`SLOW_FACTOR` of it until 7/8 of the stream.
const SLOW_FACTOR: f64 = 4.0;
/// The slow stretch never goes below this rate (bytes/s), so it stays bounded in time.
const MIN_SLOW_RATE: f64 = 4.0 * MIB as f64;
/// Until everything is through: set-up, 1 GiB with 3/4 of it at a quarter of
/// debug-build speed (~50 MB/s) and the tree comparison, with slack. A release
/// run takes a small part of it.
const BOUND: Duration = Duration::from_secs(240);
/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

fn input_mib() -> u64 {
    std::env::var("PEERPIPE_TEST_TAR_MIB")
        .ok()
        .map(|v| v.parse().expect("PEERPIPE_TEST_TAR_MIB: a number of MiB"))
        .unwrap_or(DEFAULT_MIB)
}

/// Writes `LARGE_FILES` files of `total / LARGE_FILES` bytes (random data, every MiB
/// made distinct by its index) and a few small ones under `root`.
fn make_tree(root: &Path, total: u64) {
    let mut rng = rand::thread_rng();
    let mut block = vec![0u8; MIB as usize];
    for f in 0..LARGE_FILES {
        let dir = root.join(format!("d{f}"));
        std::fs::create_dir_all(&dir).unwrap();
        rng.fill_bytes(&mut block);
        let mut out = std::io::BufWriter::new(File::create(dir.join("large.bin")).unwrap());
        let size = total / LARGE_FILES;
        let mut written = 0;
        while written < size {
            block[..8].copy_from_slice(&(written / MIB).to_le_bytes());
            let n = (size - written).min(MIB) as usize;
            out.write_all(&block[..n]).unwrap();
            written += n as u64;
        }
        out.flush().unwrap();
        std::fs::write(dir.join("small.txt"), format!("file {f}\n")).unwrap();
    }
    std::fs::write(root.join("empty"), b"").unwrap();
}

/// The files under `root`, relative to it, sorted.
fn list_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// Asserts that `a` and `b` hold the same files with the same bytes (streamed, not
/// loaded whole).
fn assert_same_tree(a: &Path, b: &Path) {
    let files = list_files(a);
    assert_eq!(files, list_files(b), "the extracted tree has other files");
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for rel in &files {
        let (mut fa, mut fb) = (
            File::open(a.join(rel)).unwrap(),
            File::open(b.join(rel)).unwrap(),
        );
        let mut offset = 0u64;
        loop {
            let n = read_full(&mut fa, &mut x);
            let m = read_full(&mut fb, &mut y);
            assert!(
                n == m && x[..n] == y[..m],
                "{} differs in the MiB at {offset}",
                rel.display()
            );
            if n == 0 {
                break;
            }
            offset += n as u64;
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Copies `from` into `to` (the reader between `peerpipe listen` and `tar x`): at
/// full speed for the first 1/8 of `expected`, then at 1/`SLOW_FACTOR` of the speed
/// seen so far until 7/8, then at full speed again. Returns the bytes copied and
/// the measured full speed (bytes/s).
fn slow_copy(
    mut from: impl std::io::Read,
    mut to: impl std::io::Write,
    expected: u64,
    progress: &AtomicU64,
) -> (u64, f64) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut first_byte = None;
    let mut fast_rate = 0.0;
    // (start, bytes copied at start, rate) of the slow stretch.
    let mut slow: Option<(Instant, u64, f64)> = None;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading the listener's stdout: {e}"),
        };
        let started = *first_byte.get_or_insert_with(Instant::now);
        to.write_all(&buf[..n]).expect("writing into tar x");
        total += n as u64;
        progress.store(total, Ordering::Relaxed);
        if slow.is_none() && total >= expected / 8 {
            fast_rate = total as f64 / started.elapsed().as_secs_f64().max(1e-3);
            slow = Some((
                Instant::now(),
                total,
                (fast_rate / SLOW_FACTOR).max(MIN_SLOW_RATE),
            ));
        }
        if let Some((since, at, rate)) = slow.filter(|_| total < expected / 8 * 7) {
            let due = Duration::from_secs_f64((total - at) as f64 / rate);
            if let Some(ahead) = due.checked_sub(since.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
    (total, fast_rate)
}

/// Peak memory of one process: the highest of its sampled RSS and of the kernel's
/// high-water mark while it ran.
#[derive(Default)]
struct Peak(u64);

impl Peak {
    fn sample(&mut self, pid: u32) {
        self.0 = self.0.max(rss_kib(pid)).max(peak_rss_kib(pid));
    }
}

#[test]
#[ignore = "1 GiB with a slow consumer: run with --release -- --ignored (CI does)"]
fn tar_through_peerpipe_to_a_slow_consumer_keeps_the_sender_small() {
    let mib = input_mib();
    let dir = TempDir::new("tar-slow");
    let (src, dst) = (dir.path("src"), dir.path("dst"));
    let made = Instant::now();
    make_tree(&src, mib * MIB);
    std::fs::create_dir_all(&dst).unwrap();
    eprintln!("made a {mib} MiB tree in {:.2?}", made.elapsed());

    let server = ServeProcess::start(&dir.0);
    let token = server.token("fay");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let listener_id = device_id(&b);
    let (connect_log, listen_log) = (dir.path("connect.log"), dir.path("listen.log"));
    let logs = || {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| format!("({e})"));
        format!(
            "\n--- connect stderr ---\n{}--- listen stderr ---\n{}",
            read(&connect_log),
            read(&listen_log)
        )
    };

    let mut untar = KillOnDrop(
        Command::new("tar")
            .arg("x")
            .arg("-C")
            .arg(&dst)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let untar_in = untar.stdin.take().unwrap();
    let mut listen = KillOnDrop(
        client("listen", &[], &server, &token, &b)
            .stdout(Stdio::piped())
            .stderr(File::create(&listen_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let listen_out = listen.stdout.take().unwrap();
    wait_online(&server, &token, &a, &listener_id);

    let mut tar = KillOnDrop(
        Command::new("tar")
            .arg("c")
            .arg("-C")
            .arg(&src)
            .arg(".")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let tar_out = tar.stdout.take().unwrap();
    let started = Instant::now();
    let mut connect = KillOnDrop(
        client("connect", &[&listener_id], &server, &token, &a)
            .stdin(tar_out)
            .stderr(File::create(&connect_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let progress = Arc::new(AtomicU64::new(0));
    let copier = std::thread::spawn({
        let progress = progress.clone();
        // The tar stream is a little larger than the files (headers, padding).
        move || slow_copy(listen_out, untar_in, mib * MIB, &progress)
    });

    // Sample memory until the sender exits (bounded).
    let (mut sender, mut receiver, mut server_peak) =
        (Peak::default(), Peak::default(), Peak::default());
    let deadline = started + BOUND;
    let connect_status = loop {
        sender.sample(connect.id());
        receiver.sample(listen.id());
        server_peak.sample(server.child.id());
        if let Some(status) = connect.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "connect did not finish within {BOUND:?} ({} bytes through){}",
            progress.load(Ordering::Relaxed),
            logs()
        );
        std::thread::sleep(SAMPLE_EVERY);
    };
    let sent = started.elapsed();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut finish = |child: &mut KillOnDrop, what: &str| -> ExitStatus {
        let status = wait_timeout(child, remaining)
            .unwrap_or_else(|| panic!("{what} did not finish within {BOUND:?}{}", logs()));
        server_peak.sample(server.child.id());
        status
    };
    let tar_status = finish(&mut tar, "tar c");
    let listen_status = finish(&mut listen, "listen");
    let (through, fast_rate) = copier.join().unwrap();
    let untar_status = finish(&mut untar, "tar x");
    let elapsed = started.elapsed();

    eprintln!(
        "{through} tar bytes in {elapsed:.2?} ({:.1} MB/s overall; full speed {:.1} MB/s, \
         3/4 of the stream at a quarter of it; connect exited after {sent:.2?}); peak RSS: \
         sender {} KiB, server {} KiB (receiver {} KiB, not bounded here)",
        through as f64 / elapsed.as_secs_f64() / 1e6,
        fast_rate / 1e6,
        sender.0,
        server_peak.0,
        receiver.0
    );
    assert!(
        connect_status.success() && listen_status.success(),
        "connect exited with {connect_status}, listen with {listen_status}{}",
        logs()
    );
    assert!(tar_status.success(), "tar c exited with {tar_status}");
    assert!(untar_status.success(), "tar x exited with {untar_status}");
    assert!(
        sender.0 < SENDER_RSS_BOUND_KIB,
        "the sender's peak RSS {} KiB is above the bound {SENDER_RSS_BOUND_KIB} KiB",
        sender.0
    );
    assert!(
        server_peak.0 < SERVER_RSS_BOUND_KIB,
        "the server's peak RSS {} KiB is above the bound {SERVER_RSS_BOUND_KIB} KiB",
        server_peak.0
    );
    assert!(
        through >= mib * MIB,
        "only {through} tar bytes came through for {mib} MiB of files"
    );
    assert_same_tree(&src, &dst);
}
