//! A trusted path (its carrier encrypts and authenticates, as a pinned QUIC
//! connection does) carries the session's frames unencrypted; when it dies the
//! unacknowledged packets are resent encrypted on the relay, exact; and an
//! unencrypted packet on an untrusted path ends the session as tampering.
mod sim;

use bytes::Bytes;
use peerpipe_proto::session::{CloseReason, Config, PathId};
use sim::{Pair, pattern, read_into, write_and_finish};

const PLAIN: u8 = 0x04;
const DATA: u8 = 0x03;

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_trusted_path_skips_encryption_and_the_relay_takes_over_encrypted() {
    const LEN: usize = 2 * 1024 * 1024;
    let data = pattern(LEN, 21);
    let mut pair = Pair::connected(Config::default());
    let quic = pair.add_link();
    pair.a.trust_path(PathId(quic));
    pair.b.trust_path(PathId(quic));
    pair.a.handle_path_up(pair.now, PathId(quic));
    pair.b.handle_path_up(pair.now, PathId(quic));
    let id = pair.a.open_stream().unwrap();
    let (mut written, mut finished) = (0, false);
    let mut got = Vec::with_capacity(LEN);
    let (mut plain_seen, mut killed) = (false, false);
    let probe = &data[LEN / 8..LEN / 8 + 64];
    pair.run_until(|p| {
        write_and_finish(&mut p.a, id, &data, &mut written, &mut finished);
        let _ = p.b.accept_stream();
        if !killed {
            p.flush();
            if let Some(path) = p.paths.get(&quic) {
                for (_, packet) in &path.a_to_b.in_flight {
                    assert_ne!(packet[1], DATA, "an encrypted packet on the trusted path");
                    plain_seen |= packet[1] == PLAIN && contains(packet, probe);
                }
            }
            if got.len() > LEN / 2 {
                p.kill_path(quic);
                killed = true;
            }
        } else {
            p.flush();
            for (_, packet) in &p.paths[&0].a_to_b.in_flight {
                assert_eq!(packet[1], DATA, "an unencrypted packet on the relay");
                assert!(
                    !contains(packet, probe),
                    "stream bytes in the clear on the relay"
                );
            }
        }
        read_into(&mut p.b, id, &mut got, usize::MAX)
    });
    assert!(
        plain_seen,
        "the stream's bytes never showed on the trusted path"
    );
    assert!(killed);
    assert!(got == data, "received bytes differ from the bytes written");
    assert_eq!(pair.a.current_path(), Some(PathId(0)));
}

#[test]
fn an_unencrypted_packet_on_an_untrusted_path_is_tampering() {
    let mut pair = Pair::connected(Config::default());
    let quic = pair.add_link();
    // Only a trusts the path: b must refuse what a sends on it unencrypted.
    pair.a.trust_path(PathId(quic));
    pair.a.handle_path_up(pair.now, PathId(quic));
    pair.b.handle_path_up(pair.now, PathId(quic));
    pair.a
        .send_message(Bytes::from_static(b"in the clear"), false)
        .unwrap();
    pair.run_until(|p| p.b.close_reason().is_some());
    assert_eq!(pair.b.close_reason(), Some(&CloseReason::Integrity));
    assert!(
        pair.b.recv_message().is_none(),
        "unencrypted data was delivered"
    );
}
