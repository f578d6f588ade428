//! A path dies in the middle of an 8 MiB stream; a new one takes over and the
//! receiver gets exactly the bytes written, nothing lost or repeated.
mod sim;

use std::time::Duration;

use peerpipe_proto::session::Config;
use sim::{Pair, pattern, read_into, write_and_finish};

#[test]
fn path_dies_mid_stream_and_a_new_one_takes_over() {
    const LEN: usize = 8 * 1024 * 1024;
    let data = pattern(LEN, 7);
    let mut pair = Pair::connected(Config::default());
    let id = pair.a.open_stream().unwrap();
    let mut written = 0;
    let mut got = Vec::with_capacity(LEN);
    let mut killed = 0;
    let mut finished = false;
    pair.run_until(|p| {
        write_and_finish(&mut p.a, id, &data, &mut written, &mut finished);
        let _ = p.b.accept_stream();
        if read_into(&mut p.b, id, &mut got, usize::MAX) {
            return true;
        }
        // Kill the path twice: at a quarter and at two thirds of the transfer,
        // each time with packets in flight.
        let in_flight = p.paths.values().map(|p| p.a_to_b.bytes()).sum::<usize>();
        if (killed == 0 && got.len() > LEN / 4 || killed == 1 && got.len() > LEN * 2 / 3)
            && in_flight > 0
        {
            let old = *p.paths.keys().next().unwrap();
            p.kill_path(old);
            p.open_path();
            killed += 1;
        }
        false
    });
    assert_eq!(killed, 2);
    assert_eq!(got.len(), LEN);
    assert!(got == data, "received bytes differ from the bytes written");
    assert!(pair.a.close_reason().is_none() && pair.b.close_reason().is_none());
    assert!(
        pair.elapsed() < Duration::from_secs(10),
        "{:?}",
        pair.elapsed()
    );
}
