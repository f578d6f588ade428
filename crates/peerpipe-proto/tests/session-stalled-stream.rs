//! A stream whose reader stalls does not stall another stream.
mod sim;

use peerpipe_proto::session::{Config, Event, WriteError};
use sim::{Pair, events, pattern, read_into};

#[test]
fn stalled_stream_does_not_stall_another() {
    const LEN: usize = 4 * 1024 * 1024;
    let data = pattern(LEN, 3);
    let config = Config::default();
    let window = config.stream_window as usize;
    let mut pair = Pair::connected(config);
    let stalled = pair.a.open_stream().unwrap();
    let live = pair.a.open_stream().unwrap();
    let junk = vec![1u8; 64 * 1024];
    let (mut stalled_written, mut written, mut blocked) = (0, 0, false);
    let mut got = Vec::new();
    pair.run_until(|p| {
        loop {
            match p.a.stream(stalled).write(&junk) {
                Ok(n) => stalled_written += n,
                Err(WriteError::Blocked) => {
                    blocked = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        while written < LEN {
            match p.a.stream(live).write(&data[written..]) {
                Ok(n) => written += n,
                Err(WriteError::Blocked) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if written == LEN {
            let _ = p.a.stream(live).finish();
        }
        // The receiver accepts both streams but only ever reads the live one.
        while p.b.accept_stream().is_some() {}
        read_into(&mut p.b, live, &mut got, usize::MAX)
    });
    assert!(got == data);
    assert!(blocked, "the stalled stream should have run out of credit");
    // The stalled stream holds at most its own window; the rest of the session
    // kept flowing.
    assert!(stalled_written <= window, "{stalled_written}");
    assert_eq!(pair.b.recv_buffered(), stalled_written as u64);
    assert!(events(&mut pair.b).contains(&Event::StreamReadable(stalled)));
}
