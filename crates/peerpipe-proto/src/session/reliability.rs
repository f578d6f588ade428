//! Reliability: packet numbers, packets kept until acknowledged and resent on a
//! new path, acknowledgements owed to the peer, and the pings that measure the
//! round-trip time ([`Reliability`], the session's part for them).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::frame::Frame;
use super::packet::{TAG_LEN, UNRELIABLE_BIT};
use super::{PathId, ProtocolError, StreamId};
use crate::time::Instant;

/// Acknowledge at once after this many reliable packets.
const ACK_EVERY: u32 = 8;
/// The most pongs owed at once (further pings are not answered).
pub(super) const MAX_PONGS: usize = 8;

/// The RTT assumed before the first sample.
pub const INITIAL_RTT: Duration = Duration::from_millis(100);

/// Smoothed round-trip time (RFC 6298 weights).
#[derive(Debug, Clone, Copy)]
pub struct Rtt {
    smoothed: Option<Duration>,
    var: Duration,
    latest: Duration,
}

impl Default for Rtt {
    fn default() -> Self {
        Self {
            smoothed: None,
            var: INITIAL_RTT / 2,
            latest: INITIAL_RTT,
        }
    }
}

impl Rtt {
    /// Adds a sample.
    pub fn sample(&mut self, rtt: Duration) {
        self.latest = rtt;
        match self.smoothed {
            None => {
                self.smoothed = Some(rtt);
                self.var = rtt / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(rtt);
                self.var = (self.var * 3 + diff) / 4;
                self.smoothed = Some((s * 7 + rtt) / 8);
            }
        }
    }

    /// The smoothed RTT ([`INITIAL_RTT`] before any sample).
    pub fn get(&self) -> Duration {
        self.smoothed.unwrap_or(INITIAL_RTT)
    }
}

/// A packet kept until acknowledged.
#[derive(Debug)]
pub(super) struct SentPacket {
    pub pn: u64,
    /// The packet in its unencrypted `PLAIN` form (header, then frames): a
    /// trusted path sends it as it is, any other gets the frames sealed.
    pub packet: Bytes,
    sent: Instant,
    /// Stream offsets it completes, for streams in one-chunk mode.
    pub stream_ends: Vec<(StreamId, u64)>,
}

impl SentPacket {
    /// The bytes it counts for in the send buffer: its encrypted size, whichever
    /// path it goes on.
    pub fn cost(&self) -> u64 {
        packet_cost(&self.packet)
    }
}

fn packet_cost(packet: &Bytes) -> u64 {
    (packet.len() + TAG_LEN) as u64
}

/// What became of a reliable packet that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// The next one expected: its frames are new. With whether an
    /// acknowledgement is now pending for the first time (arm the ack timer).
    Fresh {
        /// The first packet owed an acknowledgement since the last one went out.
        first_unacked: bool,
    },
    /// Seen before, or left over from a replaced path: dropped.
    Old,
}

/// Sent and received packet numbers, acknowledgements both ways, RTT and pings.
#[derive(Debug)]
pub(super) struct Reliability {
    next_pn: u64,
    next_unreliable: u64,
    unacked: VecDeque<SentPacket>,
    unacked_bytes: u64,
    /// The next unacknowledged packet to resend on the current path.
    resend_cursor: usize,
    /// Packets from this number on were sent once only (RTT samples are exact).
    first_fresh_pn: u64,

    rcv_next: u64,
    highest_unreliable: Option<u64>,
    ack_pending: u32,
    ack_now: bool,
    ack_since: Option<Instant>,

    rtt: Rtt,
    pongs_due: VecDeque<u64>,
    ping_due: bool,
    ping_out: Option<(u64, Instant)>,
    /// The path the outstanding ping went out on.
    ping_path: Option<PathId>,
    next_ping: u64,

    /// When outstanding data last made progress (or began to be outstanding).
    pub last_progress: Instant,
    /// [`super::Event::Slow`] was reported since the last progress.
    pub slow_reported: bool,
}

impl Reliability {
    /// Nothing sent or received yet.
    pub fn new(now: Instant) -> Self {
        Self {
            next_pn: 0,
            next_unreliable: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            resend_cursor: 0,
            first_fresh_pn: 0,
            rcv_next: 0,
            highest_unreliable: None,
            ack_pending: 0,
            ack_now: false,
            ack_since: None,
            rtt: Rtt::default(),
            pongs_due: VecDeque::new(),
            ping_due: false,
            ping_out: None,
            ping_path: None,
            next_ping: 0,
            last_progress: now,
            slow_reported: false,
        }
    }

    // ---- Send side ----

    /// The next reliable packet's number.
    pub fn next_pn(&self) -> u64 {
        self.next_pn
    }

    /// The number of the next packet to build.
    pub fn packet_number(&self, reliable: bool) -> u64 {
        if reliable {
            self.next_pn
        } else {
            self.next_unreliable | UNRELIABLE_BIT
        }
    }

    /// Packet `pn` went out for the first time. A reliable one is kept until
    /// acknowledged; returns whether nothing was outstanding before it.
    pub fn sent(
        &mut self,
        now: Instant,
        pn: u64,
        packet: &Bytes,
        stream_ends: Vec<(StreamId, u64)>,
    ) -> bool {
        if pn & UNRELIABLE_BIT != 0 {
            self.next_unreliable += 1;
            return false;
        }
        self.next_pn += 1;
        let was_idle = self.unacked.is_empty();
        if was_idle {
            self.last_progress = now;
        }
        self.unacked_bytes += packet_cost(packet);
        self.unacked.push_back(SentPacket {
            pn,
            packet: packet.clone(),
            sent: now,
            stream_ends,
        });
        self.resend_cursor = self.unacked.len();
        was_idle
    }

    /// Whether packets await acknowledgement.
    pub fn has_unacked(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// Bytes of packets awaiting acknowledgement.
    pub fn unacked_bytes(&self) -> u64 {
        self.unacked_bytes
    }

    /// When the oldest outstanding thing (unacknowledged packet or ping) went out.
    pub fn oldest_outstanding(&self) -> Option<Instant> {
        let oldest_unacked = self.unacked.front().map(|p| p.sent);
        let ping = self.ping_out.map(|(_, sent)| sent);
        [oldest_unacked, ping].into_iter().flatten().min()
    }

    /// The path changed: every unacknowledged packet goes out again, and a
    /// ping out on the old path is sent again on the new one. Returns whether
    /// there is anything to resend.
    pub fn rewind(&mut self, now: Instant) -> bool {
        if self.ping_out.take().is_some() {
            self.ping_due = true;
        }
        self.resend_cursor = 0;
        // Acks of resent packets would measure from the first send: no RTT samples.
        self.first_fresh_pn = self.next_pn;
        if self.unacked.is_empty() {
            return false;
        }
        // A resend is progress in the making: give it a full threshold.
        self.last_progress = now;
        true
    }

    /// The next packet to resend on the current path.
    pub fn next_resend(&mut self) -> Option<&SentPacket> {
        let p = self.unacked.get(self.resend_cursor)?;
        self.resend_cursor += 1;
        Some(p)
    }

    /// The peer acknowledged every packet below `next`, holding the
    /// acknowledgement back `delay_us`. `each` sees every packet this
    /// acknowledges; returns how many it did.
    pub fn on_ack(
        &mut self,
        now: Instant,
        next: u64,
        delay_us: u32,
        mut each: impl FnMut(&SentPacket),
    ) -> Result<usize, ProtocolError> {
        if next > self.next_pn {
            return Err(ProtocolError::BadAck);
        }
        let mut newest = None;
        let mut acked = 0;
        while self.unacked.front().is_some_and(|p| p.pn < next) {
            let Some(p) = self.unacked.pop_front() else {
                break;
            };
            acked += 1;
            self.unacked_bytes -= p.cost();
            each(&p);
            newest = Some(p);
        }
        if acked == 0 {
            return Ok(0);
        }
        self.resend_cursor = self.resend_cursor.saturating_sub(acked);
        if let Some(p) = newest.filter(|p| p.pn + 1 == next && p.pn >= self.first_fresh_pn) {
            let delay = Duration::from_micros(u64::from(delay_us));
            let sample = now.saturating_duration_since(p.sent);
            self.rtt.sample(sample.checked_sub(delay).unwrap_or(sample));
        }
        self.last_progress = now;
        self.slow_reported = false;
        Ok(acked)
    }

    // ---- Receive side ----

    /// Reliable packet `pn` arrived, authentic.
    pub fn on_reliable(&mut self, now: Instant, pn: u64) -> Arrival {
        if pn != self.rcv_next {
            // A duplicate (resend or replay: acknowledge again at once so the
            // sender stops resending) or a leftover from a replaced path.
            self.ack_now |= pn < self.rcv_next;
            return Arrival::Old;
        }
        self.rcv_next += 1;
        self.ack_pending += 1;
        if self.ack_pending >= ACK_EVERY {
            self.ack_now = true;
        }
        let first_unacked = self.ack_since.is_none();
        if first_unacked {
            self.ack_since = Some(now);
        }
        Arrival::Fresh { first_unacked }
    }

    /// Unreliable packet `pn` arrived, authentic: whether it is new.
    pub fn on_unreliable(&mut self, pn: u64) -> bool {
        if self.highest_unreliable.is_some_and(|h| pn <= h) {
            return false;
        }
        self.highest_unreliable = Some(pn);
        true
    }

    /// The acknowledgement delay passed: acknowledge what is pending.
    pub fn ack_delay_passed(&mut self) {
        self.ack_now = self.ack_pending > 0;
    }

    /// The acknowledgement to put in the next packet, if one is due: at once,
    /// or with `reliable` frames the packet carries anyway.
    pub fn take_ack(&mut self, now: Instant, reliable: bool) -> Option<Frame> {
        if self.ack_pending == 0 || !(self.ack_now || reliable) {
            return None;
        }
        let delay = self
            .ack_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.ack_pending = 0;
        self.ack_now = false;
        self.ack_since = None;
        Some(Frame::Ack {
            next: self.rcv_next,
            delay_us: u32::try_from(delay.as_micros()).unwrap_or(u32::MAX),
        })
    }

    // ---- Pings and RTT ----

    /// The smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.rtt.get()
    }

    /// Ping with the next packet.
    pub fn ping_soon(&mut self) {
        self.ping_due = true;
    }

    /// The peer pinged: answer (up to [`MAX_PONGS`] owed).
    pub fn on_ping(&mut self, id: u64) {
        if self.pongs_due.len() < MAX_PONGS {
            self.pongs_due.push_back(id);
        }
    }

    /// The peer answered ping `id`. If it is the outstanding one, the RTT is
    /// sampled and the path it went out on is returned.
    pub fn on_pong(&mut self, now: Instant, id: u64) -> Option<Option<PathId>> {
        let (_, sent) = self.ping_out.filter(|(ping, _)| *ping == id)?;
        self.rtt.sample(now.saturating_duration_since(sent));
        self.ping_out = None;
        Some(self.ping_path)
    }

    /// Whether pongs or a ping wait to go out.
    pub fn has_pings(&self) -> bool {
        self.ping_due || !self.pongs_due.is_empty()
    }

    /// Encodes the pongs owed and the ping due into `plain`, the ping going out
    /// on `path`.
    pub fn write_pings(&mut self, now: Instant, path: Option<PathId>, plain: &mut Vec<u8>) {
        while let Some(id) = self.pongs_due.pop_front() {
            Frame::Pong { id }.encode(plain);
        }
        if std::mem::take(&mut self.ping_due) {
            let id = self.next_ping;
            self.next_ping += 1;
            self.ping_out = Some((id, now));
            self.ping_path = path;
            Frame::Ping { id }.encode(plain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_smooths() {
        let mut r = Rtt::default();
        assert_eq!(r.get(), INITIAL_RTT);
        r.sample(Duration::from_millis(80));
        assert_eq!(r.get(), Duration::from_millis(80));
        r.sample(Duration::from_millis(160));
        assert_eq!(r.get(), Duration::from_millis(90));
    }

    #[test]
    fn acks_pop_what_they_cover_and_sample_fresh_packets_only() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Reliability::new(t0);
        let packet = Bytes::from_static(b"packet");
        for pn in 0..3 {
            assert_eq!(
                r.sent(t0, r.packet_number(true), &packet, Vec::new()),
                pn == 0
            );
        }
        assert_eq!(r.on_ack(t0, 4, 0, |_| {}), Err(ProtocolError::BadAck));
        let mut seen = Vec::new();
        assert_eq!(r.on_ack(t0 + ms(40), 2, 0, |p| seen.push(p.pn)), Ok(2));
        assert_eq!(seen, [0, 1]);
        assert_eq!(r.rtt(), ms(40));
        // After a path change, acks of resent packets give no sample.
        assert!(r.rewind(t0 + ms(50)));
        assert_eq!(r.next_resend().map(|p| p.pn), Some(2));
        assert!(r.next_resend().is_none());
        assert_eq!(r.on_ack(t0 + ms(500), 3, 0, |_| {}), Ok(1));
        assert_eq!(r.rtt(), ms(40));
        assert!(!r.has_unacked() && r.unacked_bytes() == 0);
    }

    #[test]
    fn duplicates_are_acknowledged_at_once() {
        let t0 = Instant::now();
        let mut r = Reliability::new(t0);
        assert_eq!(
            r.on_reliable(t0, 0),
            Arrival::Fresh {
                first_unacked: true
            }
        );
        assert_eq!(
            r.on_reliable(t0, 1),
            Arrival::Fresh {
                first_unacked: false
            }
        );
        assert_eq!(r.take_ack(t0, false), None, "held back to coalesce");
        assert_eq!(r.on_reliable(t0, 0), Arrival::Old);
        assert_eq!(
            r.take_ack(t0, false),
            Some(Frame::Ack {
                next: 2,
                delay_us: 0
            })
        );
        assert_eq!(
            r.on_reliable(t0, 5),
            Arrival::Old,
            "a leftover of another path"
        );
        assert_eq!(r.take_ack(t0, true), None, "nothing new to acknowledge");
        assert!(r.on_unreliable(UNRELIABLE_BIT | 3));
        assert!(!r.on_unreliable(UNRELIABLE_BIT | 3));
    }
}
