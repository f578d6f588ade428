//! A second (direct) path goes silent without anyone noticing: within the path
//! time-out the sender moves back to the first (relay) path, the receiver follows
//! the fresh data, and the stream arrives exactly. Both report the change.
mod sim;

use std::time::Duration;

use peerpipe_proto::session::{Config, Event, PathId};
use sim::{Pair, events, pattern, read_into, write_and_finish};

#[test]
fn a_silent_path_is_left_for_the_standby_and_nothing_is_lost() {
    const LEN: usize = 4 * 1024 * 1024;
    let config = Config::default();
    let path_timeout = config.path_timeout;
    let data = pattern(LEN, 3);
    let mut pair = Pair::connected(config);
    // The relay is path 0; the direct path comes up as path 1 and takes over.
    let direct = pair.open_path();
    assert_eq!(pair.a.current_path(), Some(PathId(direct)));
    let id = pair.a.open_stream().unwrap();
    let (mut written, mut finished) = (0, false);
    let mut got = Vec::with_capacity(LEN);
    let mut silenced_at = None;
    let (mut a_events, mut b_events) = (Vec::new(), Vec::new());
    pair.run_until(|p| {
        write_and_finish(&mut p.a, id, &data, &mut written, &mut finished);
        let _ = p.b.accept_stream();
        a_events.extend(events(&mut p.a));
        b_events.extend(events(&mut p.b));
        if silenced_at.is_none() && got.len() > LEN / 3 {
            p.silence_path(direct);
            silenced_at = Some(p.now);
        }
        read_into(&mut p.b, id, &mut got, usize::MAX)
    });
    assert!(got == data, "received bytes differ from the bytes written");
    assert!(
        a_events.contains(&Event::PathFailed(PathId(direct))),
        "{a_events:?}"
    );
    assert!(
        a_events.contains(&Event::PathChanged(PathId(0))),
        "{a_events:?}"
    );
    assert!(
        b_events.contains(&Event::PathChanged(PathId(0))),
        "{b_events:?}"
    );
    assert_eq!(pair.a.current_path(), Some(PathId(0)));
    assert_eq!(pair.b.current_path(), Some(PathId(0)));
    assert!(pair.a.close_reason().is_none() && pair.b.close_reason().is_none());
    let moved_within = pair.now - silenced_at.unwrap();
    assert!(
        moved_within < path_timeout + Duration::from_secs(2),
        "took {moved_within:?} after the path went silent"
    );
}

#[test]
fn an_idle_silent_path_is_found_by_the_keepalive() {
    let mut pair = Pair::connected(Config::default());
    let direct = pair.open_path();
    pair.silence_path(direct);
    let mut a_events = Vec::new();
    pair.run_until(|p| {
        a_events.extend(events(&mut p.a));
        a_events.contains(&Event::PathFailed(PathId(direct)))
    });
    let config = Config::default();
    assert!(
        pair.elapsed() < config.keepalive_interval + config.path_timeout + Duration::from_secs(1)
    );
    // Messages still flow, over the relay.
    pair.a
        .send_message(bytes::Bytes::from_static(b"still here"), true)
        .unwrap();
    pair.run_until(|p| p.b.recv_message().is_some());
    assert!(pair.a.close_reason().is_none());
}

#[test]
fn a_single_silent_path_is_not_abandoned() {
    let mut pair = Pair::connected(Config::default());
    pair.silence_path(0);
    let mut a_events = Vec::new();
    pair.run_until(|p| {
        a_events.extend(events(&mut p.a));
        p.a.close_reason().is_some()
    });
    // With nowhere to go, the idle time-out decides.
    assert!(
        !a_events.iter().any(|e| matches!(e, Event::PathFailed(_))),
        "{a_events:?}"
    );
}
