//! Confirmed messages resolve only once the remote application took them; large
//! messages are chunked and rejoined; size limits are typed.
mod sim;

use bytes::Bytes;
use peerpipe_proto::session::{Config, Event, SendMessageError};
use sim::{Pair, events, pattern};

#[test]
fn confirmation_waits_for_the_remote_application() {
    let mut pair = Pair::connected(Config::default());
    let _ = events(&mut pair.a);
    let big = Bytes::from(pattern(3 * 1024 * 1024 + 17, 5));
    let first = pair.a.send_message(big.clone(), true).unwrap();
    let second = pair
        .a
        .send_message(Bytes::from_static(b"small"), false)
        .unwrap();
    pair.run_until(|p| {
        events(&mut p.b)
            .iter()
            .filter(|e| **e == Event::MessageReceived)
            .count()
            > 0
    });
    // Arrived, not yet taken: no confirmation for a long while.
    for _ in 0..200 {
        pair.step();
    }
    assert!(
        !events(&mut pair.a)
            .iter()
            .any(|e| matches!(e, Event::MessageConfirmed(_)))
    );
    let m = pair.b.recv_message().unwrap();
    assert_eq!(m.id, first);
    assert!(m.data == big);
    pair.run_until(|p| events(&mut p.a).contains(&Event::MessageConfirmed(first)));
    pair.run_until(|p| p.b.recv_message().is_some_and(|m| m.id == second));
    for _ in 0..50 {
        pair.step();
    }
    assert!(!events(&mut pair.a).contains(&Event::MessageConfirmed(second)));
}

#[test]
fn message_limits_are_typed() {
    let config = Config {
        max_message_size: 1000,
        ..Config::default()
    };
    let mut pair = Pair::connected(config);
    assert_eq!(
        pair.a.send_message(Bytes::from(vec![0; 1001]), false),
        Err(SendMessageError::TooLarge { max: 1000 })
    );
    pair.a
        .send_message(Bytes::from(vec![0; 600]), false)
        .unwrap();
    assert_eq!(
        pair.a.send_message(Bytes::from(vec![0; 600]), false),
        Err(SendMessageError::Blocked)
    );
    pair.run_until(|p| events(&mut p.a).contains(&Event::MessageWritable));
    pair.a
        .send_message(Bytes::from(vec![0; 600]), false)
        .unwrap();
}
