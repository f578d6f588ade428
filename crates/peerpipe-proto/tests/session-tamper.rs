//! One flipped byte in transit ends the session with the typed integrity error, and
//! nothing corrupted reaches the application.
mod sim;

use bytes::BytesMut;
use peerpipe_proto::session::{CLOSE_INTEGRITY, CloseReason, Config, Event, WriteError};
use sim::{Pair, events, pattern, read_into};

fn tamper_at(offset_from_end: usize) {
    // More than the initial windows let in flight at once: data is still to
    // come when the tampered packet arrives.
    const LEN: usize = 16 * 1024 * 1024;
    let data = pattern(LEN, 11);
    let mut pair = Pair::connected(Config::default());
    let id = pair.a.open_stream().unwrap();
    let mut written = 0;
    let mut got = Vec::new();
    let mut tampered = false;
    pair.run_until(|p| {
        while written < LEN {
            match p.a.stream(id).write(&data[written..]) {
                Ok(n) => written += n,
                Err(WriteError::Blocked) => break,
                Err(_) => break,
            }
        }
        let _ = p.b.accept_stream();
        if p.b.close_reason().is_none() {
            read_into(&mut p.b, id, &mut got, usize::MAX);
        }
        if !tampered && got.len() > LEN / 4 {
            // Flip one byte of the last packet in flight towards b.
            p.flush();
            let link = &mut p.paths.values_mut().next().unwrap().a_to_b;
            let (_, packet) = link.in_flight.back_mut().unwrap();
            let mut bytes = BytesMut::from(&packet[..]);
            let i = bytes.len() - 1 - offset_from_end.min(bytes.len() - 1);
            bytes[i] ^= 0x01;
            *packet = bytes.freeze();
            tampered = true;
        }
        p.b.close_reason().is_some()
    });
    assert_eq!(pair.b.close_reason(), Some(&CloseReason::Integrity));
    assert!(events(&mut pair.b).contains(&Event::Closed {
        reason: CloseReason::Integrity
    }));
    // The sender learns why, over the same (authenticated) channel.
    pair.run_until(|p| p.a.close_reason().is_some());
    assert!(
        matches!(
            pair.a.close_reason(),
            Some(CloseReason::Remote {
                code: CLOSE_INTEGRITY,
                ..
            })
        ),
        "{:?}",
        pair.a.close_reason()
    );
    // What was delivered is an uncorrupted prefix.
    assert!(got.len() < LEN);
    assert!(got[..] == data[..got.len()], "corrupted data delivered");
}

#[test]
fn flipped_ciphertext_byte_is_an_integrity_error() {
    tamper_at(0); // the tag
    tamper_at(100); // the encrypted frames
}

#[test]
fn flipped_header_byte_is_an_integrity_error() {
    tamper_at(usize::MAX); // the version byte
}

#[test]
fn flipped_packet_number_is_an_integrity_error() {
    // The packet number is the nonce: a changed one does not authenticate.
    for back in [2, 9] {
        let mut pair = Pair::connected(Config::default());
        pair.a
            .send_message(bytes::Bytes::from_static(b"x"), false)
            .unwrap();
        pair.flush();
        let link = &mut pair.paths.values_mut().next().unwrap().a_to_b;
        let (_, packet) = link.in_flight.back_mut().unwrap();
        let mut bytes = BytesMut::from(&packet[..]);
        bytes[back] ^= 0x80; // pn bytes sit at 2..10
        *packet = bytes.freeze();
        pair.run_until(|p| p.b.close_reason().is_some());
        assert_eq!(pair.b.close_reason(), Some(&CloseReason::Integrity));
        assert!(pair.b.recv_message().is_none());
    }
}
