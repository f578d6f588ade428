//! The window grows from its small start until one stream fills a 100 ms RTT link.
mod sim;

use std::time::Duration;

use peerpipe_proto::session::{Config, WriteError};
use sim::{Pair, read_into};

/// What [`fill_link`] measured.
struct Fill {
    /// Time from the first write until the last second ran at ≥ 70 % of the link.
    time_to_fill: Duration,
    /// Bytes per second over the second after that.
    steady: u64,
    /// The receiver's session window at the end.
    window: u64,
}

/// Bytes that arrived at b during the simulated second before `now`.
fn last_second(p: &Pair) -> u64 {
    let from = p.now - Duration::from_secs(1);
    p.delivered_to_b
        .iter()
        .rev()
        .take_while(|(t, _)| *t > from)
        .map(|(_, n)| *n as u64)
        .sum()
}

/// Streams as fast as credit allows over a link of `bandwidth` bytes/s and 100 ms
/// RTT, reading at once on the other side.
fn fill_link(bandwidth: u64) -> Fill {
    let mut pair = Pair::new(Config::default(), Duration::from_millis(50), bandwidth);
    pair.run_until(|p| p.a.is_connected() && p.b.is_connected());
    let id = pair.a.open_stream().unwrap();
    let chunk = vec![0x5a; 256 * 1024];
    let mut sink = Vec::new();
    let mut filled = None;
    let start = pair.now;
    pair.run_until(|p| {
        loop {
            match p.a.stream(id).write(&chunk) {
                Ok(_) => {}
                Err(WriteError::Blocked) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let _ = p.b.accept_stream();
        read_into(&mut p.b, id, &mut sink, usize::MAX);
        sink.clear();
        let now = p.now;
        assert!(now - start < Duration::from_secs(10), "link never filled");
        match filled {
            None if now - start >= Duration::from_secs(1)
                && last_second(p) * 10 >= bandwidth * 7 =>
            {
                filled = Some(now);
                false
            }
            Some(at) => now - at >= Duration::from_secs(1),
            None => false,
        }
    });
    let fill = Fill {
        time_to_fill: filled.unwrap() - start,
        steady: last_second(&pair),
        window: pair.b.recv_window(),
    };
    println!(
        "{} MB/s link, 100 ms RTT: >= 70% after {:?}; the second after: {:.1} MB/s; \
         session window {} KiB; smoothed RTT {:?}",
        bandwidth / 1_000_000,
        fill.time_to_fill,
        fill.steady as f64 / 1e6,
        fill.window / 1024,
        pair.a.rtt(),
    );
    fill
}

#[test]
fn window_grows_to_fill_a_10_mb_s_link() {
    let fill = fill_link(10_000_000);
    assert!(
        fill.time_to_fill <= Duration::from_secs(3),
        "{:?}",
        fill.time_to_fill
    );
    assert!(fill.steady * 10 >= 10_000_000 * 8, "steady {}", fill.steady);
    assert!(
        fill.window >= 1_000_000,
        "window {} below the BDP",
        fill.window
    );
}

/// The full 100 MB/s figure pushes hundreds of megabytes through ChaCha20-Poly1305,
/// which takes minutes without optimisation: run with `--release -- --ignored`.
#[test]
#[ignore = "slow in debug builds; run with --release -- --ignored"]
fn window_grows_to_fill_a_100_mb_s_link() {
    let fill = fill_link(100_000_000);
    assert!(
        fill.time_to_fill <= Duration::from_secs(4),
        "{:?}",
        fill.time_to_fill
    );
    assert!(
        fill.steady * 10 >= 100_000_000 * 8,
        "steady {}",
        fill.steady
    );
    assert!(
        fill.window >= 10_000_000,
        "window {} below the BDP",
        fill.window
    );
}
