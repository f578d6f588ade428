//! Without any path, outstanding data reports `Slow`, then the session closes with
//! the idle time-out.
mod sim;

use std::time::Duration;

use bytes::Bytes;
use peerpipe_proto::session::{CloseReason, Config, Event};
use sim::{Pair, events};

#[test]
fn slow_then_idle_time_out() {
    let config = Config::default();
    let (slow_after, idle) = (config.slow_after, config.idle_timeout);
    let mut pair = Pair::connected(config);
    let _ = events(&mut pair.a);
    pair.a
        .send_message(Bytes::from(vec![0; 100_000]), false)
        .unwrap();
    pair.flush();
    let path = *pair.paths.keys().next().unwrap();
    let killed_at = pair.now;
    pair.kill_path(path);
    let mut slow_at = None;
    pair.run_until(|p| {
        for e in events(&mut p.a) {
            if e == Event::Slow {
                slow_at = Some(p.now);
            }
        }
        p.a.close_reason().is_some() && p.b.close_reason().is_some()
    });
    let slow = slow_at.expect("Slow event") - killed_at;
    assert!(
        slow >= slow_after - Duration::from_millis(50)
            && slow <= slow_after + Duration::from_millis(50),
        "{slow:?}"
    );
    assert_eq!(pair.a.close_reason(), Some(&CloseReason::IdleTimeout));
    assert_eq!(pair.b.close_reason(), Some(&CloseReason::IdleTimeout));
    let closed = pair.now - killed_at;
    assert!(
        closed <= idle && closed >= idle - Duration::from_secs(6),
        "{closed:?}"
    );
    // Closed means quiet: no more wakeups.
    assert_eq!(pair.a.poll_timeout(), None);
    assert!(!pair.step());
}

#[test]
fn keepalives_hold_an_idle_session_open() {
    let mut pair = Pair::connected(Config::default());
    let start = pair.now;
    pair.run_until(|p| p.now - start > Duration::from_secs(120));
    assert!(pair.a.close_reason().is_none() && pair.b.close_reason().is_none());
    let rtt = pair.a.rtt();
    assert!(
        rtt >= Duration::from_millis(20) && rtt < Duration::from_millis(25),
        "{rtt:?}"
    );
}

#[test]
fn close_reaches_the_peer() {
    let mut pair = Pair::connected(Config::default());
    pair.a.close(7, "bye");
    pair.run_until(|p| p.b.close_reason().is_some());
    assert_eq!(
        pair.b.close_reason(),
        Some(&CloseReason::Remote {
            code: 7,
            reason: "bye".into()
        })
    );
    assert!(events(&mut pair.a).contains(&Event::Closed {
        reason: CloseReason::Local {
            code: 7,
            reason: "bye".into()
        }
    }));
}
