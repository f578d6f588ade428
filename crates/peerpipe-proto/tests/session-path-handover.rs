//! The two sides learn of a new path a little apart (each from its own direct
//! path task): packets the late side still sends on the old path must not pull
//! the early side back, so both end on the new path while data flows both ways.
mod sim;

use std::time::Duration;

use bytes::Bytes;
use peerpipe_proto::session::{Config, PathId};
use sim::Pair;

#[test]
fn a_staggered_move_ends_with_both_sides_on_the_new_path() {
    let mut pair = Pair::connected(Config::default());
    let direct = pair.add_link();
    pair.a.handle_path_up(pair.now, PathId(direct));
    let b_moves_at = pair.now + Duration::from_millis(30);
    let end = pair.now + Duration::from_millis(500);
    pair.tick = Some(Duration::from_millis(1));
    let mut b_moved = false;
    let mut sent = 0u32;
    pair.run_until(|p| {
        // Both sides keep sending, so each sees the other's fresh data.
        if sent < 400 {
            let _ = p.a.send_message(Bytes::from_static(b"from a"), false);
            let _ = p.b.send_message(Bytes::from_static(b"from b"), false);
            sent += 1;
        }
        while p.a.recv_message().is_some() {}
        while p.b.recv_message().is_some() {}
        if !b_moved && p.now >= b_moves_at {
            b_moved = true;
            p.b.handle_path_up(p.now, PathId(direct));
        }
        p.now >= end
    });
    assert_eq!(pair.a.current_path(), Some(PathId(direct)));
    assert_eq!(pair.b.current_path(), Some(PathId(direct)));
}
