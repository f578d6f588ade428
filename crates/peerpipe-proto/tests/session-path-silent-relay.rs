//! The relay is left as silent (a queue on the way held the answers back past
//! the path time-out), the data moves to the direct path, and then the direct
//! path goes away: the session goes back to the relay, which never went down,
//! and the stream arrives exactly. Before, a path left as silent was dropped
//! from the session for good, so with the direct path gone it had no path at
//! all while the relay was still up, and both sides ended on the idle time-out
//! (seen on an emulated 50 ms, 1 %-loss link with WebRTC).
mod sim;

use peerpipe_proto::session::{Config, Event, PathId};
use sim::{Pair, events, pattern, read_into, write_and_finish};

#[test]
fn a_relay_left_as_silent_takes_over_again_when_the_direct_path_goes() {
    const LEN: usize = 4 * 1024 * 1024;
    let data = pattern(LEN, 7);
    let mut pair = Pair::connected(Config::default());
    // The relay (path 0) carries the stream; a direct path waits as a standby.
    let direct = pair.open_standby_path();
    assert_eq!(pair.a.current_path(), Some(PathId(0)));
    let id = pair.a.open_stream().unwrap();
    let (mut written, mut finished) = (0, false);
    let mut got = Vec::with_capacity(LEN);
    let (mut a_events, mut b_events) = (Vec::new(), Vec::new());
    let mut stage = 0;
    pair.run_until(|p| {
        write_and_finish(&mut p.a, id, &data, &mut written, &mut finished);
        let _ = p.b.accept_stream();
        a_events.extend(events(&mut p.a));
        b_events.extend(events(&mut p.b));
        if stage == 0 && got.len() > LEN / 4 {
            p.silence_path(0);
            stage = 1;
        }
        let both_direct = [&p.a, &p.b]
            .iter()
            .all(|s| s.current_path() == Some(PathId(direct)));
        if stage == 1 && both_direct {
            // The relay's queue drained; then the direct path dies.
            p.restore_path(0);
            p.kill_path(direct);
            stage = 2;
        }
        read_into(&mut p.b, id, &mut got, usize::MAX)
    });
    assert_eq!(stage, 2, "the relay was never left");
    assert!(got == data, "received bytes differ from the bytes written");
    assert!(
        a_events.contains(&Event::PathFailed(PathId(0))),
        "{a_events:?}"
    );
    assert!(
        b_events.contains(&Event::PathFailed(PathId(0))),
        "{b_events:?}"
    );
    assert_eq!(pair.a.current_path(), Some(PathId(0)));
    assert_eq!(pair.b.current_path(), Some(PathId(0)));
    assert!(pair.a.close_reason().is_none() && pair.b.close_reason().is_none());
}
