//! The WebRTC transport: one str0m `Rtc` with one reliable, ordered data channel.
//!
//! Settings follow `docs/research/str0m-0.25.md`: SCTP's own send budget is set
//! above anything we queue, and `has_room` caps the bytes in flight to what the
//! round-trip time needs (str0m's SCTP walks its whole in-flight list on every
//! poll, so a larger budget than the path needs costs throughput: 8 MB/s with
//! 1 MiB in flight on loopback against 70 with 64 KiB). The round-trip time is
//! estimated from the setup, which takes about ten of them (ICE checks, DTLS,
//! SCTP, channel open); the session's own RTT would not do, as it includes
//! the queueing this cap is there to bound.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerpipe_proto::direct::DirectSignal;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::error::IceError;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use super::{Out, Transport};

const LABEL: &str = "peerpipe";
/// The least and the most bytes in flight on the channel.
const MIN_IN_FLIGHT: usize = 64 * 1024;
const MAX_IN_FLIGHT: usize = 1024 * 1024;
/// In-flight bytes per second of round-trip time (32 MB/s × RTT).
const IN_FLIGHT_PER_SEC: u128 = 32_000_000;
/// Round trips from building the `Rtc` to the channel being open.
const SETUP_ROUND_TRIPS: u32 = 10;

/// A direct path over a WebRTC data channel.
pub(crate) struct WebRtc {
    rtc: Rtc,
    attempt: u32,
    channel: Option<ChannelId>,
    pending: Option<SdpPendingOffer>,
    out: VecDeque<Out>,
    failed: bool,
    created: Instant,
    /// The most bytes in flight, set when the channel opens.
    cap: usize,
}

/// The in-flight cap for a path with round-trip time `rtt`.
fn in_flight_cap(rtt: Duration) -> usize {
    let cap = rtt.as_nanos() * IN_FLIGHT_PER_SEC / 1_000_000_000;
    usize::try_from(cap)
        .unwrap_or(MAX_IN_FLIGHT)
        .clamp(MIN_IN_FLIGHT, MAX_IN_FLIGHT)
}

/// Builds and drops one `Rtc`: the process-wide crypto set-up happens here.
pub(super) fn warm_up() {
    drop(config(Instant::now()));
}

fn config(now: Instant) -> Rtc {
    RtcConfig::new()
        // Never the limit: `has_room` keeps well below it.
        .set_sctp_max_buffered_amount(MAX_IN_FLIGHT + super::MAX_PACKET)
        .build(now)
}

impl WebRtc {
    fn new(now: Instant, attempt: u32, locals: &[SocketAddr]) -> Result<Self, String> {
        let mut rtc = config(now);
        let mut any = false;
        for addr in locals {
            let candidate = Candidate::host(*addr, "udp").map_err(|e| e.to_string())?;
            any |= rtc.add_local_candidate(candidate).is_some();
        }
        if !any {
            return Err("no usable local address".into());
        }
        Ok(Self {
            rtc,
            attempt,
            channel: None,
            pending: None,
            out: VecDeque::new(),
            failed: false,
            created: now,
            cap: MIN_IN_FLIGHT,
        })
    }

    /// The dialing side: an `Rtc` and its offer (the first output).
    pub(crate) fn offer(now: Instant, attempt: u32, locals: &[SocketAddr]) -> Result<Self, String> {
        let mut me = Self::new(now, attempt, locals)?;
        let mut api = me.rtc.sdp_api();
        let channel = api.add_channel_with_config(ChannelConfig {
            label: LABEL.into(),
            ordered: true,
            reliability: Reliability::Reliable,
            negotiated: None,
            protocol: String::new(),
        });
        let (offer, pending) = api.apply().ok_or("no offer to make")?;
        me.channel = Some(channel);
        me.pending = Some(pending);
        me.out.push_back(Out::Signal(DirectSignal::Offer {
            attempt,
            sdp: offer.to_sdp_string(),
        }));
        Ok(me)
    }

    /// The other side: an `Rtc` that accepted `sdp`, and its answer.
    pub(crate) fn answer(
        now: Instant,
        attempt: u32,
        locals: &[SocketAddr],
        sdp: &str,
    ) -> Result<Self, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("bad offer: {e}"))?;
        let mut me = Self::new(now, attempt, locals)?;
        let answer = me
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("cannot accept the offer: {e}"))?;
        me.out.push_back(Out::Signal(DirectSignal::Answer {
            attempt,
            sdp: answer.to_sdp_string(),
        }));
        Ok(me)
    }

    fn fail(&mut self, why: String) {
        if !self.failed {
            self.failed = true;
            self.out.push_back(Out::Failed(why));
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::ChannelOpen(id, _) => {
                self.channel = Some(id);
                self.cap = in_flight_cap(self.created.elapsed() / SETUP_ROUND_TRIPS);
                tracing::debug!(attempt = self.attempt, cap = self.cap, "data channel open");
                self.out.push_back(Out::Open);
            }
            Event::ChannelData(data) if Some(data.id) == self.channel => {
                self.out.push_back(Out::Packet(Bytes::from(data.data)));
            }
            Event::ChannelClose(id) if Some(id) == self.channel => {
                self.fail("the data channel closed".into());
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // Late (15 s or more): the session's path time-out acts first.
                tracing::debug!(attempt = self.attempt, "ICE disconnected");
            }
            _ => {}
        }
    }

    /// Adds a gathered local candidate and trickles it to the peer.
    fn add_gathered(&mut self, candidate: Result<Candidate, IceError>) {
        let added = candidate.map_err(|e| e.to_string()).and_then(|c| {
            self.rtc
                .add_local_candidate(c)
                .map(|c| c.to_sdp_string())
                .ok_or_else(|| "refused by the ICE agent".to_owned())
        });
        match added {
            Ok(candidate) => self.out.push_back(Out::Signal(DirectSignal::Candidate {
                attempt: self.attempt,
                candidate,
            })),
            Err(e) => tracing::debug!("gathered candidate not usable: {e}"),
        }
    }
}

impl Transport for WebRtc {
    fn handle_datagram(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else {
            return; // Not STUN, DTLS or anything else WebRTC speaks.
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: local,
                contents,
            },
        );
        // One `Rtc` per socket: everything that parses is for it.
        if let Err(e) = self.rtc.handle_input(input) {
            self.fail(e.to_string());
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(e.to_string());
        }
    }

    fn handle_signal(&mut self, signal: DirectSignal) {
        match signal {
            DirectSignal::Answer { sdp, .. } => {
                let Some(pending) = self.pending.take() else {
                    return;
                };
                let result = SdpAnswer::from_sdp_string(&sdp)
                    .map_err(|e| format!("bad answer: {e}"))
                    .and_then(|answer| {
                        self.rtc
                            .sdp_api()
                            .accept_answer(pending, answer)
                            .map_err(|e| format!("cannot accept the answer: {e}"))
                    });
                if let Err(e) = result {
                    self.fail(e);
                }
            }
            DirectSignal::Candidate { candidate, .. } => {
                match Candidate::from_sdp_string(&candidate) {
                    Ok(c) => self.rtc.add_remote_candidate(c),
                    Err(e) => tracing::debug!("ignoring a bad remote candidate: {e}"),
                }
            }
            _ => {}
        }
    }

    fn add_server_reflexive(&mut self, mapped: SocketAddr, base: SocketAddr) {
        self.add_gathered(Candidate::server_reflexive(mapped, base, "udp"));
    }

    fn add_relayed(&mut self, relayed: SocketAddr, base: SocketAddr) {
        self.add_gathered(Candidate::relayed(relayed, base, "udp"));
    }

    fn has_room(&mut self, len: usize) -> bool {
        let cap = self.cap;
        let Some(mut channel) = self.channel.and_then(|id| self.rtc.channel(id)) else {
            return false;
        };
        let buffered = channel.buffered_amount();
        buffered == 0 || buffered + len <= cap
    }

    fn send(&mut self, packet: &[u8]) -> bool {
        let Some(mut channel) = self.channel.and_then(|id| self.rtc.channel(id)) else {
            return false;
        };
        match channel.write(true, packet) {
            Ok(queued) => queued,
            Err(e) => {
                self.fail(format!("writing to the data channel: {e}"));
                false
            }
        }
    }

    fn poll_output(&mut self) -> Out {
        loop {
            if let Some(out) = self.out.pop_front() {
                return out;
            }
            if self.failed {
                // Failed was handed out already: nothing more will come.
                return Out::Timeout(Instant::now() + Duration::from_secs(3600));
            }
            if !self.rtc.is_alive() {
                self.fail("the peer closed the connection".into());
                continue;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return Out::Timeout(at),
                Ok(Output::Transmit(t)) => {
                    return Out::Transmit {
                        from: t.source,
                        to: t.destination,
                        data: t.contents.into(),
                    };
                }
                Ok(Output::Event(event)) => self.event(event),
                Err(e) => self.fail(e.to_string()),
            }
        }
    }

    fn close(&mut self) {
        let _ = self.rtc.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_cap_follows_the_round_trip_time() {
        assert_eq!(in_flight_cap(Duration::ZERO), MIN_IN_FLIGHT);
        assert_eq!(in_flight_cap(Duration::from_millis(1)), MIN_IN_FLIGHT);
        assert_eq!(in_flight_cap(Duration::from_millis(20)), 640_000);
        assert_eq!(in_flight_cap(Duration::from_secs(1)), MAX_IN_FLIGHT);
    }
}
