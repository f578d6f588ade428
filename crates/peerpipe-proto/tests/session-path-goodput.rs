//! A new path that delivers a small fraction of what the old one did (a UDP
//! path whose congestion control collapses under loss, next to a relay that
//! copes) gets the traffic only until its goodput is measured: the session
//! goes back to the better path, the stream arrives exact, and the worse path
//! is tried again later.
mod sim;

use std::time::Duration;

use peerpipe_proto::session::{Config, PathId};
use sim::{Pair, pattern, read_into, write_and_finish};

#[test]
fn the_session_leaves_a_path_with_a_fraction_of_the_goodput() {
    const LEN: usize = 160 * 1024 * 1024;
    let data = pattern(LEN, 21);
    // Path 0 (the relay): 10 ms one way, 100 MB/s.
    let mut pair = Pair::connected(Config::default());
    let id = pair.a.open_stream().unwrap();
    let (mut written, mut finished) = (0, false);
    let mut got = Vec::with_capacity(LEN);
    pair.run_until(|p| {
        write_and_finish(&mut p.a, id, &data, &mut written, &mut finished);
        let _ = p.b.accept_stream();
        read_into(&mut p.b, id, &mut got, usize::MAX);
        got.len() > 24 << 20
    });
    // A direct path of 1 MB/s comes up and takes the traffic.
    let slow = pair.add_link();
    for link in pair
        .paths
        .get_mut(&slow)
        .map(|p| [&mut p.a_to_b, &mut p.b_to_a])
        .unwrap()
    {
        link.bandwidth = 1_000_000;
    }
    pair.a.handle_path_up(pair.now, PathId(slow));
    pair.b.handle_path_up(pair.now, PathId(slow));
    let opened = pair.now;
    pair.run_until(|p| {
        write_and_finish(&mut p.a, id, &data, &mut written, &mut finished);
        read_into(&mut p.b, id, &mut got, usize::MAX);
        p.a.current_path() == Some(PathId(0))
    });
    let left_after = pair.now - opened;
    assert!(
        left_after < Duration::from_secs(5),
        "the slow path kept the traffic for {left_after:?}"
    );
    pair.run_until(|p| {
        write_and_finish(&mut p.a, id, &data, &mut written, &mut finished);
        read_into(&mut p.b, id, &mut got, usize::MAX)
    });
    assert!(got == data, "received bytes differ from the bytes written");
    let left = pair.now;
    // It is tried again after its wait, and left again when data flows.
    pair.run_until(|p| p.a.current_path() == Some(PathId(slow)));
    let waited = pair.now - left;
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(15),
        "retried after {waited:?}"
    );
    let more = pattern(32 << 20, 22);
    let id = pair.a.open_stream().unwrap();
    let (mut written, mut finished) = (0, false);
    let mut got = Vec::with_capacity(more.len());
    pair.run_until(|p| {
        write_and_finish(&mut p.a, id, &more, &mut written, &mut finished);
        let _ = p.b.accept_stream();
        read_into(&mut p.b, id, &mut got, usize::MAX)
    });
    assert!(got == more, "received bytes differ from the bytes written");
    assert_eq!(pair.a.current_path(), Some(PathId(0)));
    assert_eq!(pair.b.current_path(), Some(PathId(0)));
}
