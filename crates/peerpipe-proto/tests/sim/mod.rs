//! A simulated pair of sessions: a virtual clock and seeded links with latency,
//! bandwidth (serialisation and queueing) and path death. `step()` moves packets
//! and jumps the clock to the next wakeup: no sleeps, whole minutes in milliseconds.
#![allow(dead_code)] // Each scenario file uses a different part of the harness.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerpipe_proto::id::Identity;
use peerpipe_proto::session::{Config, Event, PathId, ReadError, Session, StreamId, WriteError};

/// Which session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first device.
    A,
    /// The second device.
    B,
}

/// One direction of a path: packets serialised at `bandwidth`, then `latency` late.
#[derive(Debug)]
pub struct Link {
    pub latency: Duration,
    /// Bytes per second.
    pub bandwidth: u64,
    free_at: Instant,
    /// Packets in flight with their arrival time, in order.
    pub in_flight: VecDeque<(Instant, Bytes)>,
    /// Bytes ever sent into the link.
    pub sent: u64,
}

impl Link {
    fn new(now: Instant, latency: Duration, bandwidth: u64) -> Self {
        Self {
            latency,
            bandwidth,
            free_at: now,
            in_flight: VecDeque::new(),
            sent: 0,
        }
    }

    fn send(&mut self, now: Instant, packet: Bytes) {
        let serialise = Duration::from_nanos(
            (packet.len() as u128 * 1_000_000_000 / u128::from(self.bandwidth)) as u64,
        );
        let depart = self.free_at.max(now) + serialise;
        self.free_at = depart;
        self.sent += packet.len() as u64;
        self.in_flight.push_back((depart + self.latency, packet));
    }

    /// Bytes queued or in flight.
    pub fn bytes(&self) -> usize {
        self.in_flight.iter().map(|(_, p)| p.len()).sum()
    }
}

/// Both directions of a path.
#[derive(Debug)]
pub struct Path {
    pub a_to_b: Link,
    pub b_to_a: Link,
    /// Drops everything, in flight and sent later, without anyone being told.
    pub silent: bool,
}

/// Two sessions joined by paths.
pub struct Pair {
    pub now: Instant,
    pub start: Instant,
    pub a: Session,
    pub b: Session,
    pub paths: BTreeMap<u64, Path>,
    /// Bytes delivered to each side, by arrival time (for throughput figures).
    pub delivered_to_b: Vec<(Instant, usize)>,
    pub latency: Duration,
    pub bandwidth: u64,
    /// Also wake up this often (for applications that act on the clock).
    pub tick: Option<Duration>,
    next_path: u64,
}

/// The two identities used everywhere.
pub fn identities() -> (Identity, Identity) {
    (
        Identity::from_secret_bytes([1; 32]),
        Identity::from_secret_bytes([2; 32]),
    )
}

impl Pair {
    /// Two sessions with `config`, one path of the given one-way latency and
    /// bandwidth, not yet stepped.
    pub fn new(config: Config, latency: Duration, bandwidth: u64) -> Self {
        let now = Instant::now();
        let (ia, ib) = identities();
        let a = Session::new(now, config.clone(), &ia, ib.device_id(), [0xa; 32]).unwrap();
        let b = Session::new(now, config, &ib, ia.device_id(), [0xb; 32]).unwrap();
        let mut pair = Self {
            now,
            start: now,
            a,
            b,
            paths: BTreeMap::new(),
            delivered_to_b: Vec::new(),
            latency,
            bandwidth,
            tick: None,
            next_path: 0,
        };
        pair.open_path();
        pair
    }

    /// A connected pair: 10 ms one-way, 100 MB/s.
    pub fn connected(config: Config) -> Self {
        let mut pair = Self::new(config, Duration::from_millis(10), 100_000_000);
        pair.run_until(|p| p.a.is_connected() && p.b.is_connected());
        pair
    }

    /// Opens a new path with the pair's latency and bandwidth; both sides move to it.
    pub fn open_path(&mut self) -> u64 {
        let id = self.add_link();
        self.a.handle_path_up(self.now, PathId(id));
        self.b.handle_path_up(self.now, PathId(id));
        id
    }

    /// Opens a new path that both sides keep as a standby.
    pub fn open_standby_path(&mut self) -> u64 {
        let id = self.add_link();
        self.a.handle_path_standby(self.now, PathId(id));
        self.b.handle_path_standby(self.now, PathId(id));
        id
    }

    /// Adds a path's links without telling the sessions.
    pub fn add_link(&mut self) -> u64 {
        let id = self.next_path;
        self.next_path += 1;
        self.paths.insert(
            id,
            Path {
                a_to_b: Link::new(self.now, self.latency, self.bandwidth),
                b_to_a: Link::new(self.now, self.latency, self.bandwidth),
                silent: false,
            },
        );
        id
    }

    /// Makes a path drop everything from now on, without telling the sessions
    /// (a direct path whose NAT binding or network went away).
    pub fn silence_path(&mut self, id: u64) {
        if let Some(p) = self.paths.get_mut(&id) {
            p.silent = true;
            p.a_to_b.in_flight.clear();
            p.b_to_a.in_flight.clear();
        }
    }

    /// A silenced path carries packets again (a queue that drained, a network
    /// that came back), still without telling the sessions.
    pub fn restore_path(&mut self, id: u64) {
        if let Some(p) = self.paths.get_mut(&id) {
            p.silent = false;
        }
    }

    /// Kills a path: whatever it had in flight is lost.
    pub fn kill_path(&mut self, id: u64) {
        self.paths.remove(&id);
        self.a.handle_path_down(self.now, PathId(id));
        self.b.handle_path_down(self.now, PathId(id));
    }

    pub fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Sends everything both sessions have to send.
    pub fn flush(&mut self) {
        let now = self.now;
        while let Some(t) = self.a.poll_transmit(now) {
            if let Some(p) = self.paths.get_mut(&t.path.0).filter(|p| !p.silent) {
                p.a_to_b.send(now, t.payload);
            }
        }
        while let Some(t) = self.b.poll_transmit(now) {
            if let Some(p) = self.paths.get_mut(&t.path.0).filter(|p| !p.silent) {
                p.b_to_a.send(now, t.payload);
            }
        }
    }

    /// Sends what is due, jumps to the next wakeup (timer or arrival) and handles
    /// it. False when nothing will ever happen again.
    pub fn step(&mut self) -> bool {
        self.flush();
        let arrivals = self
            .paths
            .values()
            .flat_map(|p| [p.a_to_b.in_flight.front(), p.b_to_a.in_flight.front()])
            .flatten()
            .map(|(t, _)| *t);
        let Some(next) = arrivals
            .chain(self.a.poll_timeout())
            .chain(self.b.poll_timeout())
            .chain(self.tick.map(|t| self.now + t))
            .min()
        else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        for (id, p) in &mut self.paths {
            while p.a_to_b.in_flight.front().is_some_and(|(t, _)| *t <= now) {
                let Some((_, packet)) = p.a_to_b.in_flight.pop_front() else {
                    break;
                };
                self.delivered_to_b.push((now, packet.len()));
                self.b.handle_packet(now, PathId(*id), packet);
            }
            while p.b_to_a.in_flight.front().is_some_and(|(t, _)| *t <= now) {
                let Some((_, packet)) = p.b_to_a.in_flight.pop_front() else {
                    break;
                };
                self.a.handle_packet(now, PathId(*id), packet);
            }
        }
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
        true
    }

    /// Steps until `done` holds; panics after a bounded number of steps.
    pub fn run_until(&mut self, mut done: impl FnMut(&mut Self) -> bool) {
        for _ in 0..2_000_000 {
            if done(self) {
                return;
            }
            assert!(
                self.elapsed() < Duration::from_secs(600),
                "condition not reached in 10 simulated minutes"
            );
            assert!(
                self.step(),
                "simulation went quiet before the condition held"
            );
        }
        panic!("condition not reached in bounded steps");
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

/// Drains a session's events.
pub fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Writes what credit allows of `data[*written..]`, and finishes the stream once
/// everything is written.
pub fn write_and_finish(
    s: &mut Session,
    id: StreamId,
    data: &[u8],
    written: &mut usize,
    finished: &mut bool,
) {
    while *written < data.len() {
        match s.stream(id).write(&data[*written..]) {
            Ok(n) => *written += n,
            Err(WriteError::Blocked) => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    if *written == data.len() && !*finished {
        s.stream(id).finish().unwrap();
        *finished = true;
    }
}

/// Reads up to `max` buffered bytes of a stream into `out`; true once it finished.
pub fn read_into(s: &mut Session, id: StreamId, out: &mut Vec<u8>, max: usize) -> bool {
    let mut budget = max;
    while budget > 0 {
        match s.stream(id).read(budget.min(64 * 1024)) {
            Ok(Some(b)) => {
                budget -= b.len();
                out.extend_from_slice(&b);
            }
            Ok(None) => return true,
            // Not yet opened by the peer's first frame, or nothing buffered yet.
            Err(ReadError::Blocked | ReadError::UnknownStream) => return false,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    false
}

/// Deterministic test data: a xorshift stream.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
