//! A session configured for a carrier's message size limit never sends a larger
//! packet, whatever mix of data, messages, grants, acks and pings it sends.
mod sim;

use peerpipe_proto::session::{Config, frame_payload_for};
use sim::{Pair, pattern, read_into};

#[test]
fn packets_fit_the_carrier_limit() {
    const LIMIT: usize = 4096;
    let config = Config {
        max_frame_payload: frame_payload_for(LIMIT),
        ..Config::default()
    };
    assert!(config.max_packet_len() <= LIMIT);
    let mut pair = Pair::connected(config);
    let id = pair.a.open_stream().unwrap();
    let back = pair.b.open_stream().unwrap();
    let data = pattern(256 * 1024, 7);
    let mut messages = 0;
    let (mut written, mut written_back) = (0, 0);
    let (mut got, mut got_back) = (Vec::new(), Vec::new());
    let mut largest = 0;
    pair.run_until(|p| {
        if written < data.len() {
            written += p.a.stream(id).write(&data[written..]).unwrap_or(0);
        }
        if written_back < data.len() {
            written_back += p.b.stream(back).write(&data[written_back..]).unwrap_or(0);
        }
        if messages < 50
            && p.a
                .send_message(data[..10_000].to_vec().into(), true)
                .is_ok()
        {
            messages += 1;
        }
        while p.a.recv_message().is_some() {}
        while p.b.recv_message().is_some() {}
        let _ = (p.a.accept_stream(), p.b.accept_stream());
        read_into(&mut p.b, id, &mut got, usize::MAX);
        read_into(&mut p.a, back, &mut got_back, usize::MAX);
        for path in p.paths.values() {
            for link in [&path.a_to_b, &path.b_to_a] {
                for (_, packet) in &link.in_flight {
                    largest = largest.max(packet.len());
                }
            }
        }
        got.len() == data.len() && got_back.len() == data.len()
    });
    assert_eq!(got, data);
    assert_eq!(got_back, data);
    assert!(largest <= LIMIT, "a packet of {largest} bytes");
    assert!(largest > LIMIT / 2, "packets are not filled: {largest}");
}
