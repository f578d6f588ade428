//! Stream half-close, reset and stop carry typed outcomes to the other side; the
//! one-chunk mode keeps one chunk unacknowledged at a time.
mod sim;

use peerpipe_proto::session::{Config, Event, ReadError, WriteError};
use sim::{Pair, events, read_into};

#[test]
fn finish_reset_and_stop() {
    let mut pair = Pair::connected(Config::default());
    let fin = pair.a.open_stream().unwrap();
    let reset = pair.a.open_stream().unwrap();
    let stop = pair.a.open_stream().unwrap();
    pair.a.stream(fin).write(b"all of it").unwrap();
    pair.a.stream(fin).finish().unwrap();
    assert_eq!(pair.a.stream(fin).write(b"more"), Err(WriteError::Finished));
    pair.a.stream(reset).write(b"some").unwrap();
    pair.a.stream(reset).reset(42).unwrap();
    pair.a.stream(stop).write(b"x").unwrap();
    pair.run_until(|p| events(&mut p.b).contains(&Event::StreamOpened(stop)));
    let mut got = Vec::new();
    pair.run_until(|p| read_into(&mut p.b, fin, &mut got, usize::MAX));
    assert_eq!(got, b"all of it");
    pair.run_until(|p| p.b.stream(reset).read(100) == Err(ReadError::Reset(42)));
    pair.b.stream(stop).stop(9).unwrap();
    pair.run_until(|p| p.a.stream(stop).write(b"y") == Err(WriteError::Stopped(9)));
    assert!(pair.a.close_reason().is_none() && pair.b.close_reason().is_none());
}

#[test]
fn one_chunk_in_flight() {
    let config = Config::default();
    let chunk = config.max_frame_payload;
    let mut pair = Pair::connected(config);
    let id = pair.a.open_stream().unwrap();
    pair.a.stream(id).set_one_chunk_in_flight(true).unwrap();
    let data = vec![3u8; 10 * chunk];
    assert_eq!(pair.a.stream(id).write(&data), Ok(chunk));
    assert_eq!(pair.a.stream(id).write(&data), Err(WriteError::Blocked));
    let mut written = chunk;
    let mut got = Vec::new();
    let mut max_ahead = 0;
    pair.run_until(|p| {
        if written < data.len()
            && let Ok(n) = p.a.stream(id).write(&data[written..])
        {
            written += n;
        }
        let _ = p.b.accept_stream();
        read_into(&mut p.b, id, &mut got, usize::MAX);
        max_ahead = max_ahead.max(written - got.len());
        got.len() == data.len()
    });
    assert!(max_ahead <= chunk, "{max_ahead}");
}
