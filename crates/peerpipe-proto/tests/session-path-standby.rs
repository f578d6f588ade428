//! A relay path that comes back while the direct path carries the traffic stays
//! a standby: no packet moves to it until the direct path dies, and then the
//! stream continues on it, exact.
mod sim;

use peerpipe_proto::session::{Config, PathId};
use sim::{Pair, pattern, read_into, write_and_finish};

#[test]
fn a_standby_path_carries_nothing_until_the_current_one_dies() {
    const LEN: usize = 2 * 1024 * 1024;
    let data = pattern(LEN, 9);
    let mut pair = Pair::connected(Config::default());
    let direct = pair.open_path();
    // The relay (path 0) drops and comes back while the direct path is current.
    pair.kill_path(0);
    let relay = pair.open_standby_path();
    assert_eq!(pair.a.current_path(), Some(PathId(direct)));
    assert_eq!(pair.b.current_path(), Some(PathId(direct)));
    let id = pair.a.open_stream().unwrap();
    let (mut written, mut finished) = (0, false);
    let mut got = Vec::with_capacity(LEN);
    let mut relay_bytes_before_kill = None;
    pair.run_until(|p| {
        write_and_finish(&mut p.a, id, &data, &mut written, &mut finished);
        let _ = p.b.accept_stream();
        if relay_bytes_before_kill.is_none() && got.len() > LEN / 2 {
            relay_bytes_before_kill = Some(p.paths[&relay].a_to_b.sent);
            p.kill_path(direct);
        }
        read_into(&mut p.b, id, &mut got, usize::MAX)
    });
    assert_eq!(relay_bytes_before_kill, Some(0), "the standby carried data");
    assert!(pair.paths[&relay].a_to_b.sent > 0);
    assert!(got == data, "received bytes differ from the bytes written");
    assert_eq!(pair.a.current_path(), Some(PathId(relay)));
}

#[test]
fn a_standby_with_no_other_path_becomes_current() {
    let mut pair = Pair::connected(Config::default());
    pair.kill_path(0);
    let relay = pair.open_standby_path();
    assert_eq!(pair.a.current_path(), Some(PathId(relay)));
    pair.a
        .send_message(bytes::Bytes::from_static(b"over the standby"), false)
        .unwrap();
    pair.run_until(|p| p.b.recv_message().is_some());
}
