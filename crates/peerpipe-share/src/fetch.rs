//! The multi-peer download scheduler, sans-IO.
//!
//! [`Fetch`] decides which peer to ask for which global groups; the caller does
//! the asking and tells it what arrived. It
//!
//! - asks every peer that holds something still missing, keeping requests in
//!   flight per peer in proportion to the throughput measured from it (about
//!   [`Config::target_latency`] worth of data, or [`RTTS_IN_FLIGHT`] round
//!   trips' worth on a slower path — enough for the bandwidth-delay product —
//!   within bounds);
//! - asks peers that hold less first, for the rarest groups they hold (fewest
//!   known holders), starting from a cursor
//!   the caller chooses, so downloaders that start at different places fetch
//!   different groups from a seed and then trade among themselves — a hub
//!   feeding N workers uploads close to one copy;
//! - while other downloaders trade, spares a seed (a peer holding everything)
//!   what they hold or fetch, asks it for at most [`SEED_REQUEST`] groups at a
//!   time, and, when another downloader took the place this one was at, moves
//!   to a point of its own in the next free stretch rather than to its start,
//!   where every downloader that knows the same would go;
//! - drops a peer that sends a group that fails verification, or that makes no
//!   progress on a request for [`Config::stall_timeout`] while another peer
//!   could serve what it holds up (a slow only source is never dropped), and
//!   gives its ranges to others;
//! - ends with an endgame: once every missing group is in flight and few are
//!   left, idle peers are asked for groups already requested elsewhere, and the
//!   first copy wins.
//!
//! It is driven like the session: `handle_*` tells it what happened (a group
//! arrived, a request ended, a peer's have-bitmap, progress on a slow path),
//! `poll_*` asks what to do now (the next request to send, sources that
//! stalled); peers come and go with `add_peer`, `remove_peer`, `drop_peer`.
//!
//! Requests are answered in order, group by group ([`Fetch::handle_group`]); a
//! request that ends early returns the rest of its range ([`Fetch::handle_finished`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use crate::bitmap::Bitmap;
use crate::collection::Layout;
use crate::hash::GROUP_SIZE;
use crate::time::Instant;

/// How long a downloader with nothing in flight waits for groups other peers
/// hold or fetch before it asks a seed for them.
const SEED_GRACE: Duration = Duration::from_secs(1);

/// The most groups one request asks of a seed while other downloaders trade.
pub const SEED_REQUEST: u64 = 64;

/// Round trips of data, at a peer's measured rate, kept requested from it at
/// least: one fills the path, the rest cover a loss's recovery and the time
/// between a request's end and the next one's first byte.
pub const RTTS_IN_FLIGHT: u32 = 3;

/// Tuning of a [`Fetch`].
#[derive(Debug, Clone)]
pub struct Config {
    /// How much data, in time at its measured rate, to keep requested from each peer.
    pub target_latency: Duration,
    /// In-flight bytes per peer before its rate is known, and the least ever.
    pub min_in_flight: u64,
    /// The most bytes requested from one peer at a time.
    pub max_in_flight: u64,
    /// The smallest request, in groups (unless fewer are missing).
    pub min_request: u64,
    /// The largest request, in groups.
    pub max_request: u64,
    /// A peer that delivers nothing on a request for this long is dropped.
    pub stall_timeout: Duration,
    /// The endgame starts when at most this many groups (and at most a
    /// sixty-fourth of the collection) are missing, all in flight. Seeds are
    /// not asked for copies while other peers deliver.
    pub endgame_groups: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            target_latency: Duration::from_millis(250),
            min_in_flight: 2 * 1024 * 1024,
            max_in_flight: 32 * 1024 * 1024,
            min_request: 16,
            max_request: 256,
            stall_timeout: Duration::from_secs(10),
            endgame_groups: 256,
        }
    }
}

/// A request the caller should send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<P> {
    /// Names the request in later calls.
    pub id: u64,
    /// The peer to ask.
    pub peer: P,
    /// First global group.
    pub start: u64,
    /// One past the last global group.
    pub end: u64,
}

/// What a received group meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<P> {
    /// A group that was missing: write it.
    Fresh,
    /// A group that had arrived already (endgame): drop it.
    Duplicate,
    /// The group failed verification: `peer` is dropped; stop the requests `cancel`.
    Corrupt {
        /// The offending peer.
        peer: P,
        /// All of that peer's requests, now void.
        cancel: Vec<u64>,
    },
    /// Not the group the request expects next, or an unknown request: the peer
    /// is dropped as for a corrupt group.
    Unexpected {
        /// The offending peer.
        peer: P,
        /// All of that peer's requests, now void.
        cancel: Vec<u64>,
    },
}

#[derive(Debug)]
struct Peer {
    have: Bitmap,
    /// Groups the peer is fetching itself (as it last said).
    fetching: Bitmap,
    in_flight: u64,
    rate: f64,
    window_start: Option<Instant>,
    window_bytes: u64,
    requests: BTreeSet<u64>,
    received: u64,
    /// The round-trip time to the peer, as the caller last said.
    rtt: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Req<P> {
    peer: P,
    next: u64,
    end: u64,
    last_progress: Instant,
}

/// Download state of one collection; see the module docs.
#[derive(Debug)]
pub struct Fetch<P> {
    layout: Layout,
    config: Config,
    done: Bitmap,
    /// Live requests covering each group's next delivery.
    in_flight: Vec<u8>,
    /// Known holders of each group among the peers in use.
    holders: Vec<u16>,
    peers: BTreeMap<P, Peer>,
    dropped: BTreeSet<P>,
    requests: BTreeMap<u64, Req<P>>,
    next_id: u64,
    cursor: u64,
    /// Where in a stretch of free groups this downloader lands when another
    /// took the place it was at (fixed per download, from the first cursor).
    salt: u64,
    /// When the last request was issued or the last group arrived.
    last_activity: Option<Instant>,
}

impl<P: Copy + Ord + Debug> Fetch<P> {
    /// A download of `layout` that already holds `done` (verified from disk), whose
    /// first choice among equally rare groups is at `cursor` or after it.
    pub fn new(layout: Layout, done: Bitmap, cursor: u64, config: Config) -> Self {
        let groups = layout.groups();
        assert_eq!(done.len(), groups, "the done-bitmap must cover the layout");
        Self {
            in_flight: vec![0; groups as usize],
            holders: vec![0; groups as usize],
            layout,
            config,
            done,
            peers: BTreeMap::new(),
            dropped: BTreeSet::new(),
            requests: BTreeMap::new(),
            next_id: 0,
            cursor: if groups == 0 { 0 } else { cursor % groups },
            salt: cursor.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16,
            last_activity: None,
        }
    }

    /// The verified groups.
    pub fn done(&self) -> &Bitmap {
        &self.done
    }

    /// The groups requested and not yet delivered: what this downloader tells
    /// others it is fetching.
    pub fn fetching(&self) -> Bitmap {
        let mut map = Bitmap::new(self.layout.groups());
        for (g, &n) in self.in_flight.iter().enumerate() {
            if n > 0 {
                map.set(g as u64);
            }
        }
        map
    }

    /// Whether every group is verified.
    pub fn is_complete(&self) -> bool {
        self.done.is_full()
    }

    /// Bytes received (verified and fresh) from `peer` so far.
    pub fn received_from(&self, peer: P) -> u64 {
        self.peers.get(&peer).map_or(0, |p| p.received)
    }

    /// Whether `peer` was dropped (corrupt data or a stall); it is not used again.
    pub fn is_dropped(&self, peer: P) -> bool {
        self.dropped.contains(&peer)
    }

    /// The peers in use.
    pub fn peers(&self) -> impl Iterator<Item = P> + '_ {
        self.peers.keys().copied()
    }

    /// Starts using `peer` (it holds nothing until [`Fetch::handle_have`]). A dropped
    /// peer stays dropped.
    pub fn add_peer(&mut self, peer: P) {
        if self.dropped.contains(&peer) || self.peers.contains_key(&peer) {
            return;
        }
        self.peers.insert(
            peer,
            Peer {
                have: Bitmap::new(self.layout.groups()),
                fetching: Bitmap::new(self.layout.groups()),
                in_flight: 0,
                rate: 0.0,
                window_start: None,
                window_bytes: 0,
                requests: BTreeSet::new(),
                received: 0,
                rtt: Duration::ZERO,
            },
        );
    }

    /// The round-trip time to `peer` is `rtt` (from its connection): at least
    /// [`RTTS_IN_FLIGHT`] of them are kept requested at its rate.
    pub fn set_rtt(&mut self, peer: P, rtt: Duration) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.rtt = rtt;
        }
    }

    /// Bytes of request `id` are arriving, though no whole group yet (a slow
    /// path): the request is not stalled.
    pub fn handle_progress(&mut self, id: u64, now: Instant) {
        if let Some(req) = self.requests.get_mut(&id) {
            req.last_progress = now;
        }
    }

    /// Records what `peer` holds now, and what it is fetching itself (a peer only
    /// gains groups; bits it lost are ignored). Ignored for unknown or dropped
    /// peers and bitmaps of the wrong size.
    pub fn handle_have(&mut self, peer: P, have: &Bitmap, fetching: &Bitmap) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if have.len() != p.have.len() || fetching.len() != p.have.len() {
            return;
        }
        for g in have.ones() {
            if p.have.set(g) {
                self.holders[g as usize] += 1;
            }
        }
        p.fetching = fetching.clone();
    }

    /// Whether a peer other than `seed` that is not a seed itself holds or
    /// fetches group `g`: then a seed is better left alone for it.
    fn traded_elsewhere(&self, seed: P, g: u64) -> bool {
        self.peers
            .iter()
            .any(|(&k, p)| k != seed && !p.have.is_full() && (p.have.get(g) || p.fetching.get(g)))
    }

    /// Stops using `peer` for good; returns its requests, which the caller stops.
    pub fn drop_peer(&mut self, peer: P) -> Vec<u64> {
        self.dropped.insert(peer);
        let Some(p) = self.peers.remove(&peer) else {
            return Vec::new();
        };
        for g in p.have.ones() {
            self.holders[g as usize] -= 1;
        }
        let ids: Vec<u64> = p.requests.into_iter().collect();
        for &id in &ids {
            if let Some(req) = self.requests.remove(&id) {
                self.release(req.next..req.end);
            }
        }
        ids
    }

    /// Removes `peer` (it went away) without holding it against it: it may be added again.
    pub fn remove_peer(&mut self, peer: P) -> Vec<u64> {
        let ids = self.drop_peer(peer);
        self.dropped.remove(&peer);
        ids
    }

    fn release(&mut self, range: std::ops::Range<u64>) {
        for g in range {
            let n = &mut self.in_flight[g as usize];
            *n = n.saturating_sub(1);
        }
    }

    /// The next request to send, if any peer has room and holds something useful.
    /// Call until `None` after every change.
    pub fn poll_request(&mut self, now: Instant) -> Option<Request<P>> {
        if self.done.is_full() {
            return None;
        }
        // Peers holding less first: a seed is asked for what only it holds, while
        // peers that hold part of the collection serve what they can.
        let mut peers: Vec<(u64, P)> = self
            .peers
            .iter()
            .map(|(&k, p)| (p.have.count(), k))
            .collect();
        peers.sort_unstable();
        let mut endgame = None;
        let traders = self.peers.values().any(|p| !p.have.is_full());
        // Seeds are spared groups other peers hold or fetch, unless nothing has
        // been on its way for a while (counted from the first call): then any
        // holder is asked.
        let since = *self.last_activity.get_or_insert(now);
        let spare_seeds =
            !self.requests.is_empty() || now.saturating_duration_since(since) < SEED_GRACE;
        for &(_, peer) in &peers {
            let budget = self.budget(peer);
            if budget == 0 {
                continue;
            }
            let max_groups =
                (budget / GROUP_SIZE).clamp(self.config.min_request, self.config.max_request);
            let seed = self.peers.get(&peer).is_some_and(|p| p.have.is_full());
            // A seed gets small requests while others trade: each commits less
            // before the others hear of it.
            let max_groups = if seed && traders {
                max_groups.min(SEED_REQUEST)
            } else {
                max_groups
            };
            let mut run = self.rarest_run(peer, max_groups, spare_seeds && traders);
            if run.is_none()
                && !(spare_seeds && seed && traders)
                && *endgame.get_or_insert_with(|| self.in_endgame())
            {
                run = self.endgame_run(peer, max_groups);
            }
            if let Some((start, end)) = run {
                return Some(self.issue(peer, start, end, now));
            }
        }
        None
    }

    /// Bytes `peer` may be asked for now.
    fn budget(&self, peer: P) -> u64 {
        let Some(p) = self.peers.get(&peer) else {
            return 0;
        };
        let ahead = self.config.target_latency.max(p.rtt * RTTS_IN_FLIGHT);
        let target = ((p.rate * ahead.as_secs_f64()) as u64)
            .clamp(self.config.min_in_flight, self.config.max_in_flight);
        target.saturating_sub(p.in_flight)
    }

    fn in_endgame(&self) -> bool {
        // At most a sixty-fourth of the collection is fetched twice.
        let limit = self
            .config
            .endgame_groups
            .min((self.layout.groups() / 64).max(4));
        let mut missing = 0;
        for g in 0..self.layout.groups() {
            if !self.done.get(g) {
                if self.in_flight[g as usize] == 0 {
                    return false;
                }
                missing += 1;
                if missing > limit {
                    return false;
                }
            }
        }
        true
    }

    /// The rarest missing, unrequested groups `peer` holds: a run from the cursor.
    /// A seed (a peer holding everything) is asked only for groups no other
    /// downloading peer holds or fetches, when `spare_seeds`: a hub feeding many
    /// downloaders then uploads about one copy, and they trade the rest.
    fn rarest_run(&self, peer: P, max_groups: u64, spare_seeds: bool) -> Option<(u64, u64)> {
        let p = self.peers.get(&peer)?;
        let seed = spare_seeds && p.have.is_full();
        let candidate = |g: u64| {
            !self.done.get(g)
                && self.in_flight[g as usize] == 0
                && p.have.get(g)
                && !(seed && self.traded_elsewhere(peer, g))
        };
        let groups = self.layout.groups();
        if seed {
            return self.seed_run(max_groups, candidate);
        }
        // The first candidate from the cursor among the rarest; a group only this
        // peer holds cannot be beaten, so the scan stops at the first one.
        let mut best: Option<(u16, u64)> = None;
        for g in (0..groups).map(|i| (self.cursor + i) % groups) {
            if !candidate(g) {
                continue;
            }
            let holders = self.holders[g as usize];
            if best.is_none_or(|(h, _)| holders < h) {
                best = Some((holders, g));
                if holders <= 1 {
                    break;
                }
            }
        }
        let (rarest, start) = best?;
        let mut end = start + 1;
        while end < groups
            && end - start < max_groups
            && candidate(end)
            && self.holders[end as usize] <= rarest
        {
            end += 1;
        }
        Some((start, end))
    }

    /// What a spared seed is asked for while other downloaders trade: the groups
    /// from the cursor on, where this downloader left off. When another took
    /// that place, the next free stretch begins where every downloader that
    /// knows the same would start; this one lands at its own point in the
    /// stretch instead, so that downloaders not yet told of each other's latest
    /// requests do not ask the seed for the same groups.
    fn seed_run(&self, max_groups: u64, candidate: impl Fn(u64) -> bool) -> Option<(u64, u64)> {
        let groups = self.layout.groups();
        let first = (0..groups)
            .map(|i| (self.cursor + i) % groups)
            .find(|&g| candidate(g))?;
        let mut start = first;
        if first != self.cursor {
            let mut len = 1;
            while len < groups && candidate((first + len) % groups) {
                len += 1;
            }
            if len > 2 * max_groups {
                start = (first + self.salt % (len - max_groups)) % groups;
            }
        }
        let mut end = start + 1;
        while end < groups && end - start < max_groups && candidate(end) {
            end += 1;
        }
        Some((start, end))
    }

    /// In the endgame: groups in flight elsewhere that `peer` holds and was not asked for.
    fn endgame_run(&self, peer: P, max_groups: u64) -> Option<(u64, u64)> {
        let p = self.peers.get(&peer)?;
        let asked = |g: u64| {
            p.requests
                .iter()
                .filter_map(|id| self.requests.get(id))
                .any(|r| (r.next..r.end).contains(&g))
        };
        let candidate = |g: u64| {
            !self.done.get(g) && self.in_flight[g as usize] == 1 && p.have.get(g) && !asked(g)
        };
        let start = (0..self.layout.groups()).find(|&g| candidate(g))?;
        let mut end = start + 1;
        while end < self.layout.groups() && end - start < max_groups && candidate(end) {
            end += 1;
        }
        Some((start, end))
    }

    fn issue(&mut self, peer: P, start: u64, end: u64, now: Instant) -> Request<P> {
        self.last_activity = Some(now);
        let id = self.next_id;
        self.next_id += 1;
        for g in start..end {
            self.in_flight[g as usize] += 1;
        }
        let bytes = self.layout.range_len(start..end);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight += bytes;
            p.requests.insert(id);
        }
        self.requests.insert(
            id,
            Req {
                peer,
                next: start,
                end,
                last_progress: now,
            },
        );
        self.cursor = end % self.layout.groups().max(1);
        Request {
            id,
            peer,
            start,
            end,
        }
    }

    /// Group `group` arrived on request `id`; `verified` is whether it matched its
    /// hash. The caller writes it only for [`Received::Fresh`].
    pub fn handle_group(
        &mut self,
        id: u64,
        group: u64,
        verified: bool,
        now: Instant,
    ) -> Received<P> {
        let Some(req) = self.requests.get_mut(&id) else {
            return Received::Duplicate;
        };
        let peer = req.peer;
        if group != req.next || group >= req.end {
            let cancel = self.drop_peer(peer);
            return Received::Unexpected { peer, cancel };
        }
        if !verified {
            let cancel = self.drop_peer(peer);
            return Received::Corrupt { peer, cancel };
        }
        req.next += 1;
        req.last_progress = now;
        self.last_activity = Some(now);
        let finished = req.next == req.end;
        self.in_flight[group as usize] -= 1;
        let len = self.layout.group_len(group);
        let fresh = self.done.set(group);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight = p.in_flight.saturating_sub(len);
            if fresh {
                p.received += len;
            }
            p.window_bytes += len;
            let start = *p.window_start.get_or_insert(now);
            let elapsed = now.saturating_duration_since(start);
            if elapsed >= Duration::from_millis(100) {
                let sample = p.window_bytes as f64 / elapsed.as_secs_f64();
                p.rate = if p.rate == 0.0 {
                    sample
                } else {
                    0.7 * p.rate + 0.3 * sample
                };
                p.window_start = Some(now);
                p.window_bytes = 0;
            }
            if finished {
                p.requests.remove(&id);
            }
        }
        if finished {
            self.requests.remove(&id);
        }
        if fresh {
            Received::Fresh
        } else {
            Received::Duplicate
        }
    }

    /// Request `id` ended (answered in full, refused, cut off or cancelled): what
    /// it did not deliver goes back to the pool.
    pub fn handle_finished(&mut self, id: u64) {
        let Some(req) = self.requests.remove(&id) else {
            return;
        };
        let bytes = self.layout.range_len(req.next..req.end);
        if let Some(p) = self.peers.get_mut(&req.peer) {
            p.in_flight = p.in_flight.saturating_sub(bytes);
            p.requests.remove(&id);
        }
        self.release(req.next..req.end);
    }

    /// Whether request `id` still has a group to deliver that is missing here
    /// (in the endgame another peer may have been faster).
    pub fn is_wanted(&self, id: u64) -> bool {
        self.requests
            .get(&id)
            .is_some_and(|r| (r.next..r.end).any(|g| !self.done.get(g)))
    }

    /// Peers that delivered nothing on some request for the stall time-out
    /// while another peer that is not stalled holds a group of that request;
    /// they are dropped, and the caller stops the returned requests. A stalled
    /// peer that nobody else can stand in for is kept: a slow source beats
    /// none (its connection's own time-outs end it if it is gone).
    pub fn poll_stalled(&mut self, now: Instant) -> Vec<(P, Vec<u64>)> {
        let stalled_requests: Vec<Req<P>> = self
            .requests
            .values()
            .filter(|r| now.saturating_duration_since(r.last_progress) >= self.config.stall_timeout)
            .copied()
            .collect();
        let stalled_peers: BTreeSet<P> = stalled_requests.iter().map(|r| r.peer).collect();
        let replaceable: BTreeSet<P> = stalled_requests
            .iter()
            .filter(|r| {
                self.peers.iter().any(|(&k, p)| {
                    !stalled_peers.contains(&k)
                        && (r.next..r.end).any(|g| !self.done.get(g) && p.have.get(g))
                })
            })
            .map(|r| r.peer)
            .collect();
        replaceable
            .into_iter()
            .map(|peer| (peer, self.drop_peer(peer)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collection::{Collection, Entry};
    use crate::hash::Hash;

    fn layout(groups: u64) -> Layout {
        let c = Collection::new(vec![Entry {
            path: "f".into(),
            size: groups * GROUP_SIZE,
            mode: 0o644,
            mtime: 0,
            hash: Hash::from_bytes([1; 32]),
        }])
        .unwrap();
        Layout::new(&c)
    }

    fn small() -> Config {
        Config {
            min_in_flight: 4 * GROUP_SIZE,
            max_in_flight: 8 * GROUP_SIZE,
            min_request: 2,
            max_request: 4,
            endgame_groups: 4,
            ..Config::default()
        }
    }

    /// Delivers every request it is given from `peer`, verified, until done.
    fn drain(fetch: &mut Fetch<u8>, now: Instant) -> Vec<Request<u8>> {
        let mut issued = Vec::new();
        for _ in 0..10_000 {
            let Some(r) = fetch.poll_request(now) else {
                break;
            };
            issued.push(r);
            for g in r.start..r.end {
                fetch.handle_group(r.id, g, true, now);
            }
        }
        issued
    }

    #[test]
    fn one_peer_fetches_everything_once() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(40), Bitmap::new(40), 0, small());
        fetch.add_peer(1u8);
        assert_eq!(fetch.poll_request(now), None, "nothing known held yet");
        fetch.handle_have(1, &Bitmap::full(40), &Bitmap::new(40));
        let issued = drain(&mut fetch, now);
        assert!(fetch.is_complete());
        let total: u64 = issued.iter().map(|r| r.end - r.start).sum();
        assert_eq!(total, 40, "no group asked twice");
        assert!(issued.iter().all(|r| r.end - r.start <= 4));
        assert_eq!(fetch.received_from(1), 40 * GROUP_SIZE);
    }

    #[test]
    fn in_flight_is_bounded_per_peer() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(100), Bitmap::new(100), 0, small());
        fetch.add_peer(1u8);
        fetch.handle_have(1, &Bitmap::full(100), &Bitmap::new(100));
        let mut groups = 0;
        while let Some(r) = fetch.poll_request(now) {
            groups += r.end - r.start;
        }
        assert!((4..=8).contains(&groups), "{groups} groups in flight");
    }

    #[test]
    fn resumed_downloads_ask_only_for_what_is_missing() {
        let now = Instant::now();
        let mut done = Bitmap::new(30);
        done.set_range(0..10);
        done.set_range(20..25);
        let mut fetch = Fetch::new(layout(30), done, 0, small());
        fetch.add_peer(1u8);
        fetch.handle_have(1, &Bitmap::full(30), &Bitmap::new(30));
        let issued = drain(&mut fetch, now);
        let asked: Vec<u64> = issued.iter().flat_map(|r| r.start..r.end).collect();
        let expected: Vec<u64> = (10..20).chain(25..30).collect();
        assert_eq!(asked, expected);
    }

    #[test]
    fn a_corrupt_peer_is_dropped_and_its_range_goes_elsewhere() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(8), Bitmap::new(8), 0, small());
        fetch.add_peer(1u8);
        fetch.add_peer(2u8);
        fetch.handle_have(1, &Bitmap::full(8), &Bitmap::new(8));
        let bad = fetch.poll_request(now).unwrap();
        assert_eq!(bad.peer, 1);
        fetch.handle_group(bad.id, bad.start, true, now);
        let verdict = fetch.handle_group(bad.id, bad.start + 1, false, now);
        assert!(
            matches!(verdict, Received::Corrupt { peer: 1, ref cancel } if cancel.contains(&bad.id))
        );
        assert!(fetch.is_dropped(1));
        fetch.add_peer(1);
        fetch.handle_have(1, &Bitmap::full(8), &Bitmap::new(8));
        assert!(
            fetch.peers().all(|p| p == 2),
            "a dropped peer is not taken back"
        );
        fetch.handle_have(2, &Bitmap::full(8), &Bitmap::new(8));
        let issued = drain(&mut fetch, now);
        assert!(issued.iter().all(|r| r.peer == 2));
        assert!(fetch.is_complete());
        assert_eq!(fetch.received_from(2), 7 * GROUP_SIZE);
    }

    #[test]
    fn an_out_of_order_group_drops_the_peer() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(8), Bitmap::new(8), 0, small());
        fetch.add_peer(1u8);
        fetch.handle_have(1, &Bitmap::full(8), &Bitmap::new(8));
        let r = fetch.poll_request(now).unwrap();
        assert!(matches!(
            fetch.handle_group(r.id, r.start + 1, true, now),
            Received::Unexpected { peer: 1, .. }
        ));
    }

    #[test]
    fn a_stalled_peer_is_dropped_when_another_can_serve() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(8), Bitmap::new(8), 0, small());
        fetch.add_peer(1u8);
        fetch.add_peer(2u8);
        fetch.handle_have(1, &Bitmap::full(8), &Bitmap::new(8));
        let r = fetch.poll_request(now).unwrap();
        assert!(fetch.poll_stalled(now + Duration::from_secs(1)).is_empty());
        assert!(
            fetch.poll_stalled(now + Duration::from_secs(11)).is_empty(),
            "nobody else holds the range yet"
        );
        fetch.handle_have(2, &Bitmap::full(8), &Bitmap::new(8));
        let stalled = fetch.poll_stalled(now + Duration::from_secs(11));
        assert_eq!(stalled, vec![(1, vec![r.id])]);
        let asked: Vec<u64> = drain(&mut fetch, now)
            .iter()
            .flat_map(|r| r.start..r.end)
            .collect();
        assert!(
            (r.start..r.end).all(|g| asked.contains(&g)),
            "the range is free again"
        );
        assert!(fetch.is_complete());
    }

    #[test]
    fn a_slow_only_source_is_kept() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(8), Bitmap::new(8), 0, small());
        fetch.add_peer(1u8);
        fetch.handle_have(1, &Bitmap::full(8), &Bitmap::new(8));
        let r = fetch.poll_request(now).unwrap();
        let late = now + Duration::from_secs(60);
        assert!(fetch.poll_stalled(late).is_empty(), "the only source stays");
        assert!(!fetch.is_dropped(1));
        // Bytes arriving (no whole group yet) count as progress.
        let mut other = Fetch::new(layout(8), Bitmap::new(8), 0, small());
        other.add_peer(1u8);
        other.add_peer(2u8);
        other.handle_have(1, &Bitmap::full(8), &Bitmap::new(8));
        other.handle_have(2, &Bitmap::full(8), &Bitmap::new(8));
        let r2 = other.poll_request(now).unwrap();
        other.handle_progress(r2.id, now + Duration::from_secs(9));
        assert!(
            other
                .poll_stalled(now + Duration::from_secs(11))
                .iter()
                .all(|(p, _)| *p != r2.peer)
        );
        assert_eq!(
            fetch.handle_group(r.id, r.start, true, late),
            Received::Fresh
        );
    }

    #[test]
    fn a_slow_path_keeps_round_trips_of_data_requested() {
        let now = Instant::now();
        let config = Config {
            min_in_flight: 4 * GROUP_SIZE,
            max_in_flight: 1024 * GROUP_SIZE,
            ..Config::default()
        };
        let requested = |rtt: Duration| {
            let mut fetch = Fetch::new(layout(4096), Bitmap::new(4096), 0, config.clone());
            fetch.add_peer(1u8);
            fetch.handle_have(1, &Bitmap::full(4096), &Bitmap::new(4096));
            fetch.set_rtt(1, rtt);
            // 64 groups (1 MiB) a second, measured over a first request.
            let r = fetch.poll_request(now).unwrap();
            for (i, g) in (r.start..r.end).enumerate() {
                fetch.handle_group(
                    r.id,
                    g,
                    true,
                    now + Duration::from_millis(1000 * i as u64 / 64),
                );
            }
            let mut groups = 0;
            while let Some(r) = fetch.poll_request(now + Duration::from_secs(1)) {
                groups += r.end - r.start;
            }
            groups
        };
        // About 250 ms of data (16 groups, rounded up to whole requests) on
        // a short path; three round trips' worth (192) on a 1 s one.
        let fast = requested(Duration::from_millis(10));
        let slow = requested(Duration::from_secs(1));
        assert!((16..=48).contains(&fast), "{fast} groups");
        assert!((180..=230).contains(&slow), "{slow} groups");
    }

    #[test]
    fn rarest_first_keeps_the_seed_for_what_only_it_has() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(16), Bitmap::new(16), 0, small());
        fetch.add_peer(0u8); // the seed
        fetch.add_peer(1u8); // a worker holding the first half
        fetch.handle_have(0, &Bitmap::full(16), &Bitmap::new(16));
        let mut half = Bitmap::new(16);
        half.set_range(0..8);
        fetch.handle_have(1, &half, &Bitmap::new(16));
        let issued = drain(&mut fetch, now);
        assert!(fetch.is_complete());
        for r in issued {
            if r.peer == 0 {
                assert!(
                    r.start >= 8,
                    "the seed was asked for {r:?}, which a worker has"
                );
            }
        }
        assert_eq!(fetch.received_from(0), 8 * GROUP_SIZE);
    }

    #[test]
    fn a_seed_is_spared_what_other_downloaders_hold_or_fetch() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(16), Bitmap::new(16), 0, small());
        fetch.add_peer(0u8); // the hub
        fetch.add_peer(1u8); // a worker that holds 0..4 and is fetching 4..8
        fetch.handle_have(0, &Bitmap::full(16), &Bitmap::new(16));
        let mut held = Bitmap::new(16);
        held.set_range(0..4);
        let mut fetching = Bitmap::new(16);
        fetching.set_range(4..8);
        fetch.handle_have(1, &held, &fetching);
        let first = fetch.poll_request(now).unwrap();
        assert_eq!((first.peer, first.start), (1, 0), "the worker first");
        let mut asked_hub = Vec::new();
        while let Some(r) = fetch.poll_request(now) {
            if r.peer == 0 {
                asked_hub.extend(r.start..r.end);
            }
        }
        assert!(
            asked_hub.iter().all(|&g| g >= 8),
            "the hub was asked for {asked_hub:?}, which the worker holds or fetches"
        );
        assert!(!asked_hub.is_empty(), "the hub serves what nobody else has");
    }

    #[test]
    fn downloaders_whose_place_was_taken_land_apart_in_the_free_stretch() {
        // Downloaders learn that another is fetching 0..100 from the hub, which
        // their cursors fall in: they do not all move on to 100.
        let now = Instant::now();
        let mut fetching = Bitmap::new(1000);
        fetching.set_range(0..100);
        let first_hub_request = |cursor: u64| {
            let config = Config {
                min_in_flight: 64 * GROUP_SIZE,
                max_in_flight: 64 * GROUP_SIZE,
                ..Config::default()
            };
            let mut fetch = Fetch::new(layout(1000), Bitmap::new(1000), cursor, config);
            fetch.add_peer(0u8); // the hub
            fetch.add_peer(1u8); // the third downloader
            fetch.handle_have(0, &Bitmap::full(1000), &Bitmap::new(1000));
            fetch.handle_have(1, &Bitmap::new(1000), &fetching);
            let r = fetch.poll_request(now).unwrap();
            assert_eq!(r.peer, 0);
            assert!(r.start >= 100, "{r:?} asks for what the third fetches");
            assert!(r.end - r.start <= SEED_REQUEST);
            r.start
        };
        // Fifty downloaders whose cursors fell in the taken range spread over
        // the free stretch 100..1000 instead of all starting at 100.
        let starts: BTreeSet<u64> = (0..50).map(|c| first_hub_request(c * 2)).collect();
        assert!(
            starts.len() >= 45,
            "only {} places: {starts:?}",
            starts.len()
        );
        let (lo, hi) = (starts.first().copied(), starts.last().copied());
        assert!(
            lo.zip(hi).is_some_and(|(lo, hi)| hi - lo > 600),
            "{starts:?}"
        );
        // A downloader whose own place is free goes on from there.
        assert_eq!(first_hub_request(500), 500);
    }

    #[test]
    fn a_seed_is_asked_anyway_when_nothing_else_is_coming() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(8), Bitmap::new(8), 0, small());
        fetch.add_peer(0u8);
        fetch.add_peer(1u8);
        fetch.handle_have(0, &Bitmap::full(8), &Bitmap::new(8));
        // The worker says it fetches everything, but nothing is on its way here.
        fetch.handle_have(1, &Bitmap::new(8), &Bitmap::full(8));
        assert_eq!(
            fetch.poll_request(now),
            None,
            "at first the seed is spared what the worker fetches"
        );
        let now = now + SEED_GRACE;
        let r = fetch.poll_request(now).expect("the seed is asked");
        assert_eq!(r.peer, 0);
        for g in r.start..r.end {
            fetch.handle_group(r.id, g, true, now);
        }
        assert_eq!(
            fetch.poll_request(now),
            None,
            "right after a delivery the seed is spared what the worker fetches"
        );
        let later = now + SEED_GRACE;
        assert_eq!(
            fetch.poll_request(later).map(|r| r.peer),
            Some(0),
            "but not for long"
        );
    }

    #[test]
    fn the_endgame_asks_a_second_peer_and_the_first_copy_wins() {
        let now = Instant::now();
        let mut fetch = Fetch::new(layout(4), Bitmap::new(4), 0, small());
        fetch.add_peer(1u8);
        fetch.handle_have(1, &Bitmap::full(4), &Bitmap::new(4));
        let slow = fetch.poll_request(now).unwrap();
        assert_eq!((slow.start, slow.end), (0, 4));
        fetch.add_peer(2u8);
        fetch.handle_have(2, &Bitmap::full(4), &Bitmap::new(4));
        let dup = fetch.poll_request(now).unwrap();
        assert_eq!((dup.peer, dup.start, dup.end), (2, 0, 4));
        assert_eq!(fetch.poll_request(now), None, "at most two copies");
        for g in 0..4 {
            assert_eq!(fetch.handle_group(dup.id, g, true, now), Received::Fresh);
        }
        assert!(fetch.is_complete());
        assert!(!fetch.is_wanted(slow.id), "the slow copy can be cancelled");
        assert_eq!(
            fetch.handle_group(slow.id, 0, true, now),
            Received::Duplicate
        );
        fetch.handle_finished(slow.id);
    }

    #[test]
    fn different_cursors_start_at_different_places() {
        let now = Instant::now();
        let mut a = Fetch::new(layout(64), Bitmap::new(64), 0, small());
        let mut b = Fetch::new(layout(64), Bitmap::new(64), 32, small());
        for f in [&mut a, &mut b] {
            f.add_peer(0u8);
            f.handle_have(0, &Bitmap::full(64), &Bitmap::new(64));
        }
        assert_eq!(a.poll_request(now).unwrap().start, 0);
        assert_eq!(b.poll_request(now).unwrap().start, 32);
    }
}
