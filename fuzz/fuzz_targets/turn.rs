//! The TURN client takes any datagram from its server without panicking, and
//! everything it sends is a well-formed STUN message.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerpipe_proto::stun;
use peerpipe_proto::turn::TurnClient;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let server = "192.0.2.1:3478".parse().unwrap();
    let peer = "198.51.100.7:9000".parse().unwrap();
    let mut client = TurnClient::new(server, "user", "pass", [0; 32], start);
    let mut rest = data;
    let mut now = start;
    // Datagrams come length-prefixed (u16); the byte after each says what
    // else happens: time passes, or data is sent to a peer.
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        let _ = client.handle_datagram(now, datagram);
        match tail.first() {
            Some(b) if b & 1 == 1 => now += Duration::from_millis(u64::from(*b) * 100),
            Some(_) => {
                let _ = client.send_to(now, peer, b"payload");
            }
            None => {}
        }
        client.handle_timeout(now);
        while let Some(msg) = client.poll_transmit() {
            assert!(stun::is_stun(&msg));
        }
        while client.poll_event().is_some() {}
        rest = tail.get(1..).unwrap_or_default();
    }
    client.close(now);
    while let Some(msg) = client.poll_transmit() {
        assert!(stun::is_stun(&msg));
    }
});
