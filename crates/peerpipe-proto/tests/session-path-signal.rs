//! Path signals (the shells' path negotiation) travel encrypted, reliably and in
//! order, across a path death too; their size and queue are bounded.
mod sim;

use bytes::Bytes;
use peerpipe_proto::session::{Config, Event, MAX_PATH_SIGNAL, SendMessageError};
use sim::{Pair, events};

#[test]
fn signals_arrive_in_order_across_a_path_death() {
    let mut pair = Pair::connected(Config::default());
    let signals: Vec<Bytes> = (0..10u8)
        .map(|i| Bytes::from(vec![i; 100 + usize::from(i)]))
        .collect();
    for s in &signals[..5] {
        pair.a.send_path_signal(s.clone()).unwrap();
    }
    // The path dies with the first signals in flight; a new one takes over.
    pair.flush();
    pair.kill_path(0);
    pair.open_path();
    for s in &signals[5..] {
        pair.a.send_path_signal(s.clone()).unwrap();
    }
    let mut got = Vec::new();
    pair.run_until(|p| {
        while let Some(s) = p.b.recv_path_signal() {
            got.push(s);
        }
        got.len() == signals.len()
    });
    assert_eq!(got, signals);
    assert!(pair.b.recv_path_signal().is_none());
}

#[test]
fn signals_are_bounded() {
    let mut pair = Pair::connected(Config::default());
    let too_big = Bytes::from(vec![0u8; MAX_PATH_SIGNAL + 1]);
    assert!(matches!(
        pair.a.send_path_signal(too_big),
        Err(SendMessageError::TooLarge { .. })
    ));
    let mut queued = 0;
    while pair
        .a
        .send_path_signal(Bytes::from_static(b"offer"))
        .is_ok()
    {
        queued += 1;
        assert!(queued <= 64, "the queue is unbounded");
    }
    assert_eq!(
        pair.a.send_path_signal(Bytes::from_static(b"x")),
        Err(SendMessageError::Blocked)
    );
    // Once they went out there is room again.
    pair.flush();
    pair.a
        .send_path_signal(Bytes::from_static(b"later"))
        .unwrap();
    pair.run_until(|p| events(&mut p.b).contains(&Event::PathSignal));
}

#[test]
fn a_shell_that_never_reads_keeps_only_the_newest() {
    let mut pair = Pair::connected(Config::default());
    let mut sent = 0u32;
    pair.run_until(|p| {
        if sent < 200
            && p.a
                .send_path_signal(Bytes::from(sent.to_be_bytes().to_vec()))
                .is_ok()
        {
            sent += 1;
        }
        sent == 200 && p.a.send_buffered() == 0
    });
    let kept: Vec<Bytes> = std::iter::from_fn(|| pair.b.recv_path_signal()).collect();
    assert!(kept.len() <= 32, "{} kept", kept.len());
    assert_eq!(
        kept.last().map(|b| b.to_vec()),
        Some(199u32.to_be_bytes().to_vec())
    );
    assert!(pair.b.close_reason().is_none());
}
