//! A WebRTC attempt: one `RTCPeerConnection` (the browser's, or Node.js's
//! `@roamhq/wrtc`) with one reliable, ordered data channel labelled
//! `peerpipe`, as the native side's str0m attempt has. The negotiator decides
//! when an attempt runs; this carries it out and reports back through `emit`.
//!
//! The offer, answer and candidates travel as path signals inside the
//! session, so the DTLS fingerprint in the SDP is pinned end to end.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use js_sys::{Array, Reflect, Uint8Array};
use peerpipe_proto::direct::DirectSignal;
use peerpipe_proto::signal::IceServer;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    RtcConfiguration, RtcDataChannel, RtcDataChannelInit, RtcDataChannelType, RtcIceCandidateInit,
    RtcIceServer, RtcPeerConnection, RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit,
};

const LABEL: &str = "peerpipe";
/// Data channel bytes buffered past which the session's packets wait.
pub(crate) const HIGH_WATER: u32 = 4 * 1024 * 1024;

/// What an attempt reports.
pub(crate) enum RtcEvent {
    /// A signal for the peer (offer, answer, candidate).
    Signal(DirectSignal),
    /// The data channel opened.
    Open,
    /// A packet arrived on the channel.
    Packet(Bytes),
    /// The channel's buffer drained below half the high-water mark.
    Drained,
    /// The attempt failed or its channel closed.
    Failed,
}

type Emit = Rc<dyn Fn(RtcEvent)>;
type Callback = Closure<dyn FnMut(JsValue)>;

struct Shared {
    channel: Option<RtcDataChannel>,
    channel_callbacks: Vec<Callback>,
    remote_set: bool,
    early_candidates: Vec<String>,
}

/// One running WebRTC attempt.
pub(crate) struct RtcAttempt {
    attempt: u32,
    pc: RtcPeerConnection,
    shared: Rc<RefCell<Shared>>,
    _callbacks: Vec<Callback>,
}

fn config(ice: &[IceServer]) -> RtcConfiguration {
    let servers = Array::new();
    for s in ice {
        let server = RtcIceServer::new();
        server.set_urls(&JsValue::from(s.url.as_str()));
        if let Some(u) = &s.username {
            server.set_username(u);
        }
        if let Some(c) = &s.credential {
            server.set_credential(c);
        }
        servers.push(&server);
    }
    let config = RtcConfiguration::new();
    config.set_ice_servers(&servers);
    config
}

fn sdp_of(desc: &JsValue) -> String {
    Reflect::get(desc, &"sdp".into())
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_default()
}

fn description(kind: RtcSdpType, sdp: &str) -> RtcSessionDescriptionInit {
    let d = RtcSessionDescriptionInit::new(kind);
    d.set_sdp(sdp);
    d
}

fn wire_channel(shared: &Rc<RefCell<Shared>>, channel: RtcDataChannel, emit: &Emit) {
    channel.set_binary_type(RtcDataChannelType::Arraybuffer);
    channel.set_buffered_amount_low_threshold(HIGH_WATER / 2);
    let e = emit.clone();
    let on_open = Callback::new(move |_| e(RtcEvent::Open));
    let e = emit.clone();
    let on_message = Callback::new(move |ev: JsValue| {
        if let Ok(data) = Reflect::get(&ev, &"data".into())
            && let Some(buf) = data.dyn_ref::<js_sys::ArrayBuffer>()
        {
            e(RtcEvent::Packet(Bytes::from(Uint8Array::new(buf).to_vec())));
        }
    });
    let e = emit.clone();
    let on_close = Callback::new(move |_| e(RtcEvent::Failed));
    let e = emit.clone();
    let on_low = Callback::new(move |_| e(RtcEvent::Drained));
    channel.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    channel.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    channel.set_onbufferedamountlow(Some(on_low.as_ref().unchecked_ref()));
    let mut s = shared.borrow_mut();
    s.channel = Some(channel);
    s.channel_callbacks = vec![on_open, on_message, on_close, on_low];
}

impl RtcAttempt {
    /// Starts attempt `attempt`: as the offering side (`offer` is `None`) it
    /// creates the channel and sends the offer; else it answers `offer`.
    pub fn start(
        attempt: u32,
        offer: Option<String>,
        ice: &[IceServer],
        emit: Emit,
    ) -> Result<Self, JsValue> {
        let pc = RtcPeerConnection::new_with_configuration(&config(ice))?;
        let shared = Rc::new(RefCell::new(Shared {
            channel: None,
            channel_callbacks: Vec::new(),
            remote_set: false,
            early_candidates: Vec::new(),
        }));
        let e = emit.clone();
        let on_candidate = Callback::new(move |ev: JsValue| {
            let line = Reflect::get(&ev, &"candidate".into())
                .ok()
                .filter(|c| !c.is_null() && !c.is_undefined())
                .and_then(|c| Reflect::get(&c, &"candidate".into()).ok())
                .and_then(|c| c.as_string())
                .filter(|c| !c.is_empty());
            if let Some(candidate) = line {
                e(RtcEvent::Signal(DirectSignal::Candidate {
                    attempt,
                    candidate,
                }));
            }
        });
        let state_pc = pc.clone();
        let e = emit.clone();
        let on_state = Callback::new(move |_| {
            if matches!(
                state_pc.connection_state(),
                RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed
            ) {
                e(RtcEvent::Failed);
            }
        });
        pc.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
        pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        let mut callbacks = vec![on_candidate, on_state];
        match offer {
            None => {
                let init = RtcDataChannelInit::new();
                init.set_ordered(true);
                let channel = pc.create_data_channel_with_data_channel_dict(LABEL, &init);
                wire_channel(&shared, channel, &emit);
                let pc2 = pc.clone();
                let e = emit.clone();
                spawn_local(async move {
                    let made = async {
                        let offer = JsFuture::from(pc2.create_offer()).await?;
                        let sdp = sdp_of(&offer);
                        JsFuture::from(
                            pc2.set_local_description(&description(RtcSdpType::Offer, &sdp)),
                        )
                        .await?;
                        Ok::<_, JsValue>(sdp)
                    };
                    match made.await {
                        Ok(sdp) => e(RtcEvent::Signal(DirectSignal::Offer { attempt, sdp })),
                        Err(_) => e(RtcEvent::Failed),
                    }
                });
            }
            Some(sdp) => {
                let s = shared.clone();
                let e = emit.clone();
                let on_channel = Callback::new(move |ev: JsValue| {
                    if let Ok(channel) = Reflect::get(&ev, &"channel".into()) {
                        wire_channel(&s, channel.unchecked_into(), &e);
                    }
                });
                pc.set_ondatachannel(Some(on_channel.as_ref().unchecked_ref()));
                callbacks.push(on_channel);
                let pc2 = pc.clone();
                let s = shared.clone();
                let e = emit.clone();
                spawn_local(async move {
                    let made = async {
                        JsFuture::from(
                            pc2.set_remote_description(&description(RtcSdpType::Offer, &sdp)),
                        )
                        .await?;
                        add_early(&pc2, &s).await;
                        let answer = JsFuture::from(pc2.create_answer()).await?;
                        let sdp = sdp_of(&answer);
                        JsFuture::from(
                            pc2.set_local_description(&description(RtcSdpType::Answer, &sdp)),
                        )
                        .await?;
                        Ok::<_, JsValue>(sdp)
                    };
                    match made.await {
                        Ok(sdp) => e(RtcEvent::Signal(DirectSignal::Answer { attempt, sdp })),
                        Err(_) => e(RtcEvent::Failed),
                    }
                });
            }
        }
        Ok(Self {
            attempt,
            pc,
            shared,
            _callbacks: callbacks,
        })
    }

    /// A signal of this attempt from the peer: its answer or a candidate.
    pub fn deliver(&self, signal: DirectSignal, emit: Emit) {
        match signal {
            DirectSignal::Answer { attempt, sdp } if attempt == self.attempt => {
                let pc = self.pc.clone();
                let s = self.shared.clone();
                spawn_local(async move {
                    let set = JsFuture::from(
                        pc.set_remote_description(&description(RtcSdpType::Answer, &sdp)),
                    );
                    match set.await {
                        Ok(_) => add_early(&pc, &s).await,
                        Err(_) => emit(RtcEvent::Failed),
                    }
                });
            }
            DirectSignal::Candidate { attempt, candidate } if attempt == self.attempt => {
                let ready = self.shared.borrow().remote_set;
                if ready {
                    add_candidate(&self.pc, &candidate);
                } else {
                    self.shared.borrow_mut().early_candidates.push(candidate);
                }
            }
            _ => {}
        }
    }

    /// Bytes buffered in the channel (0 before it opened).
    pub fn buffered(&self) -> u32 {
        self.shared
            .borrow()
            .channel
            .as_ref()
            .map_or(0, RtcDataChannel::buffered_amount)
    }

    /// Sends a packet on the channel.
    pub fn send(&self, packet: &[u8]) {
        if let Some(c) = &self.shared.borrow().channel {
            let _ = c.send_with_u8_array(packet);
        }
    }
}

fn add_candidate(pc: &RtcPeerConnection, candidate: &str) {
    let init = RtcIceCandidateInit::new(candidate);
    init.set_sdp_m_line_index(Some(0));
    let _ = pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init));
}

/// The remote description is set: candidates that came before it go in now.
async fn add_early(pc: &RtcPeerConnection, shared: &Rc<RefCell<Shared>>) {
    let early = {
        let mut s = shared.borrow_mut();
        s.remote_set = true;
        std::mem::take(&mut s.early_candidates)
    };
    for c in early {
        add_candidate(pc, &c);
    }
}

impl Drop for RtcAttempt {
    fn drop(&mut self) {
        // No callback may run once its closure is gone.
        let mut s = self.shared.borrow_mut();
        if let Some(c) = s.channel.take() {
            c.set_onopen(None);
            c.set_onmessage(None);
            c.set_onclose(None);
            c.set_onbufferedamountlow(None);
            c.close();
        }
        s.channel_callbacks.clear();
        self.pc.set_onicecandidate(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_ondatachannel(None);
        self.pc.close();
    }
}
