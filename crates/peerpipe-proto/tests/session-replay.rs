//! Replayed packets (reliable and unreliable) are dropped without effect.
mod sim;

use bytes::Bytes;
use peerpipe_proto::session::{Config, Event};
use sim::{Pair, events};

#[test]
fn replayed_packets_are_dropped() {
    let mut pair = Pair::connected(Config::default());
    let _ = events(&mut pair.b);
    pair.a
        .send_message(Bytes::from_static(b"once"), false)
        .unwrap();
    pair.flush();
    let link = &mut pair.paths.values_mut().next().unwrap().a_to_b;
    let (at, packet) = link.in_flight.back().unwrap().clone();
    // The same packet twice more: right behind, and much later.
    link.in_flight.push_back((at, packet.clone()));
    pair.run_until(|p| p.b.recv_message().is_some());
    let _ = events(&mut pair.b);
    for _ in 0..50 {
        pair.step();
    }
    let link = &mut pair.paths.values_mut().next().unwrap().a_to_b;
    link.in_flight.push_back((pair.now, packet));
    // And an old unreliable packet (ack or ping) from b towards a.
    for _ in 0..50 {
        pair.step();
    }
    assert!(
        pair.b.recv_message().is_none(),
        "a replay delivered the message again"
    );
    assert!(!events(&mut pair.b).contains(&Event::MessageReceived));
    assert!(pair.a.close_reason().is_none() && pair.b.close_reason().is_none());
    // The session still works.
    pair.a
        .send_message(Bytes::from_static(b"twice"), false)
        .unwrap();
    pair.run_until(|p| p.b.recv_message().is_some_and(|m| &m.data[..] == b"twice"));
}

#[test]
fn replayed_unreliable_packet_is_dropped() {
    let mut pair = Pair::connected(Config::default());
    // Capture b's first unreliable packet: the ping it sends once connected.
    let mut captured = None;
    pair.run_until(|p| {
        p.flush();
        let link = &p.paths.values().next().unwrap().b_to_a;
        captured = link.in_flight.front().map(|(_, b)| b.clone());
        captured.as_ref().is_some_and(|b| b[2] & 0x80 != 0)
    });
    for _ in 0..20 {
        pair.step();
    }
    pair.flush();
    let (now, path) = (pair.now, pair.a.current_path().unwrap());
    let rtt = pair.a.rtt();
    pair.a.handle_packet(now, path, captured.unwrap());
    // Accepted, the ping would owe a pong.
    assert_eq!(pair.a.poll_transmit(now), None);
    assert!(pair.a.close_reason().is_none());
    assert_eq!(pair.a.rtt(), rtt);
}
