//! A reader that takes 1 MiB/s slows the writer: buffered bytes stay bounded on
//! both sides, far below the window cap.
mod sim;

use std::time::Duration;

use peerpipe_proto::session::{Config, WriteError};
use sim::{Pair, read_into};

#[test]
fn slow_reader_bounds_buffers_on_both_sides() {
    const RATE: u64 = 1024 * 1024;
    let config = Config::default();
    let cap = config.max_window;
    let mut pair = Pair::new(config, Duration::from_millis(25), 100_000_000);
    pair.run_until(|p| p.a.is_connected() && p.b.is_connected());
    pair.tick = Some(Duration::from_millis(10));
    let id = pair.a.open_stream().unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let start = pair.now;
    let (mut read, mut max_send, mut max_recv, mut written) = (0u64, 0, 0, 0u64);
    let mut got = Vec::new();
    pair.run_until(|p| {
        loop {
            match p.a.stream(id).write(&chunk) {
                Ok(n) => written += n as u64,
                Err(WriteError::Blocked) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let _ = p.b.accept_stream();
        let allowed = ((p.now - start).as_secs_f64() * RATE as f64) as u64;
        got.clear();
        read_into(
            &mut p.b,
            id,
            &mut got,
            allowed.saturating_sub(read) as usize,
        );
        read += got.len() as u64;
        max_send = max_send.max(p.a.send_buffered());
        max_recv = max_recv.max(p.b.recv_buffered());
        p.now - start >= Duration::from_secs(8)
    });
    println!(
        "slow reader: read {read} B, written {written} B in 8 s; peak buffered: \
         sender {max_send} B, receiver {max_recv} B, receiver window {} KiB",
        pair.b.recv_window() / 1024
    );
    // The writer moved at the reader's pace, not the link's.
    assert!(
        written < read + 4 * 1024 * 1024,
        "written {written}, read {read}"
    );
    assert!(read >= 7 * RATE, "read {read}");
    assert!(max_send <= cap && max_recv <= cap);
    // With the reader this slow the window stays near 2 RTT of reading.
    assert!(max_recv <= 2 * 1024 * 1024, "receiver buffered {max_recv}");
    assert!(
        max_send <= 2 * 1024 * 1024 + 64 * 1024,
        "sender buffered {max_send}"
    );
}
