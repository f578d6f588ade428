//! A session fed arbitrary packets, before and after its handshake, never panics
//! and never delivers anything that did not authenticate.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peerpipe_proto::id::Identity;
use peerpipe_proto::session::{Config, PathId, Session};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let ia = Identity::from_secret_bytes([1; 32]);
    let ib = Identity::from_secret_bytes([2; 32]);
    let mut a = Session::new(now, Config::default(), &ia, ib.device_id(), [1; 32]).unwrap();
    let mut b = Session::new(now, Config::default(), &ib, ia.device_id(), [2; 32]).unwrap();
    let mut fresh = Session::new(now, Config::default(), &ib, ia.device_id(), [3; 32]).unwrap();
    for s in [&mut a, &mut b, &mut fresh] {
        s.handle_path_up(now, PathId(0));
    }
    for _ in 0..3 {
        while let Some(t) = a.poll_transmit(now) {
            b.handle_packet(now, t.path, t.payload);
        }
        while let Some(t) = b.poll_transmit(now) {
            a.handle_packet(now, t.path, t.payload);
        }
    }
    // Length-prefixed packets: [len: u16 BE][bytes].
    let mut rest = data;
    let mut t = now;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let packet = Bytes::copy_from_slice(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        t += Duration::from_millis(1);
        b.handle_packet(t, PathId(0), packet.clone());
        fresh.handle_packet(t, PathId(0), packet);
        b.handle_timeout(t);
        while b.poll_transmit(t).is_some() {}
        while fresh.poll_transmit(t).is_some() {}
        while b.poll_event().is_some() {}
        // Nothing the fuzzer made up can authenticate.
        assert!(b.recv_message().is_none());
        assert!(b.accept_stream().is_none());
    }
});
