//! `peerpipe connect` → `peerpipe listen` with a reader that stops: the writer stops
//! taking stdin after a bounded number of bytes, memory stays bounded in the sender
//! and the server, and once the reader resumes everything arrives intact.

mod common;

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    ServeProcess, TempDir, device_id, rss_kib, spawn_connect, spawn_listen, wait_bounded,
    wait_online,
};

/// Total bytes offered on stdin.
const TOTAL: u64 = 256 * 1024 * 1024;
/// How many bytes may sit in buffers between a stalled reader and the writer: the
/// stream's credit window (granted only as the listener writes its stdout, at most
/// 16 MiB) plus the pipes. Far below `TOTAL`.
const IN_FLIGHT_BOUND: u64 = 24 * 1024 * 1024;
/// The stdin pipe's capacity on Linux.
const PIPE_CAPACITY: u64 = 64 * 1024;
/// Resident memory bound for the sender and the server while the reader stalls.
const RSS_BOUND_KIB: u64 = 96 * 1024;

fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) % 251) as u8
}

#[test]
fn a_stalled_reader_holds_back_the_writer_with_bounded_memory() {
    let dir = TempDir::new("backpressure");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("bob");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let listener_id = device_id(&b);

    let mut listen = spawn_listen(&server, &token, &b);
    let mut listen_out = listen.stdout.take().unwrap();
    wait_online(&server, &token, &a, &listener_id);

    let mut connect = spawn_connect(&server, &token, &a, &listener_id);
    let mut stdin = connect.stdin.take().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let writer = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0u64;
        while offset < TOTAL {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = pattern(offset + i as u64);
            }
            if stdin.write_all(&buf).is_err() {
                return;
            }
            offset += buf.len() as u64;
            counter.store(offset, Ordering::Relaxed);
        }
    });

    // The reader stalls: nobody reads the listener's stdout. Wait until the writer's
    // progress stops (bounded in time), then check how far it got.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = u64::MAX;
    let mut still = 0;
    let mut peak_sender = 0;
    let mut peak_server = 0;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        peak_sender = peak_sender.max(rss_kib(connect.id()));
        peak_server = peak_server.max(rss_kib(server.child.id()));
        let now = written.load(Ordering::Relaxed);
        // Before the connection is up only the stdin pipe fills (64 KiB, and
        // `connect` reads nothing before it is connected): a stall counts once
        // more than that went through and nothing moved for 2 s.
        still = if now == last { still + 1 } else { 0 };
        if (now > PIPE_CAPACITY && still >= 8) || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let stalled_at = written.load(Ordering::Relaxed);
    eprintln!(
        "writer stalled after {stalled_at} bytes; peak RSS: sender {peak_sender} KiB, server {peak_server} KiB"
    );
    assert!(
        stalled_at < IN_FLIGHT_BOUND,
        "writer pushed {stalled_at} bytes into a stalled pipe (bound {IN_FLIGHT_BOUND})"
    );
    assert!(peak_sender < RSS_BOUND_KIB, "sender RSS {peak_sender} KiB");
    assert!(peak_server < RSS_BOUND_KIB, "server RSS {peak_server} KiB");

    // The reader resumes: everything arrives, in order, intact.
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = listen_out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(
                *b,
                pattern(got + i as u64),
                "byte {} differs",
                got + i as u64
            );
        }
        got += n as u64;
    }
    writer.join().unwrap();
    assert!(wait_bounded(&mut connect, Duration::from_secs(60)).success());
    assert!(wait_bounded(&mut listen, Duration::from_secs(60)).success());
    assert_eq!(got, TOTAL);
}
