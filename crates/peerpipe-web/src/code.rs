//! One-time codes in the browser: offering one ([`WasmCodeOffer`]) and
//! claiming one, on top of the sans-IO exchange in [`peerpipe_proto::code`],
//! as the native library does.
//!
//! A code's life, per nameplate: the allocator waits for a claim; once the
//! code is claimed and the page waits for the result, both run SPAKE2, key
//! confirmation and their introductions (who each device is, said only once
//! the other proved the code) through the server; then the claimer dials the
//! allocator with the agreed key bound into the end-to-end handshake and the
//! allocator accepts that one request. Frames that arrive before the exchange
//! starts wait in a small inbox; every step is bounded by a timer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use js_sys::{Function, Promise};
use peerpipe_proto::code::{Code, CodeFrame, Confirm, Keyed, Pake, Psk, Side};
use peerpipe_proto::signal::{self, ClientMessage, PeerInfo, SessionId};
use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;

use crate::js::{self, Deferred};
use crate::node::{self, NodeRef, NodeState, Pending};

/// The service label of a code's connection, as natively.
pub(crate) const SERVICE: &str = "code";

/// How long the key exchange may take, and how long the allocator waits for
/// the claimer's connection request after it (as natively: the request and
/// connect time-outs).
const EXCHANGE_MS: f64 = 10_000.0;
const CONNECT_MS: f64 = 15_000.0;

/// Frames kept for an exchange that has not started; more is a protocol error.
const INBOX: usize = 4;

/// Where a code's exchange is.
enum Step {
    /// Not started: the peer or the page's waiter is missing.
    Idle,
    /// Our SPAKE2 message is out.
    Pake(Pake),
    /// Our key confirmation is out.
    Confirm(Confirm),
    /// The confirmations matched and our introduction is out.
    Introduced(Keyed),
    /// Both agree on the key and know each other; the allocator waits for
    /// the connection request.
    Keyed(Psk),
}

/// A nameplate this node allocated or claimed.
pub(crate) struct CodeState {
    code: Code,
    side: Side,
    /// Whether the code is claimed (always, for the claimer).
    claimed: bool,
    /// The other device, once it introduced itself.
    peer: Option<PeerInfo>,
    step: Step,
    /// Settles with the connection or the reason there is none.
    done: Option<Deferred>,
    /// Frames from the peer before the exchange started.
    inbox: VecDeque<Vec<u8>>,
    /// The peer's connection request that came before the key was agreed.
    early: Option<SessionId>,
    /// The running step's deadline and its callback.
    timer: Option<(JsValue, Closure<dyn FnMut()>)>,
}

impl Drop for CodeState {
    fn drop(&mut self) {
        if let Some((handle, _)) = self.timer.take() {
            js::clear_timeout(&handle);
        }
    }
}

impl CodeState {
    fn new(code: Code, side: Side, done: Option<Deferred>) -> Self {
        Self {
            code,
            side,
            claimed: side == Side::Claimer,
            peer: None,
            step: Step::Idle,
            done,
            inbox: VecDeque::new(),
            early: None,
            timer: None,
        }
    }
}

/// A one-time code this node offers. Show [`WasmCodeOffer::code`] to the person
/// at the other device and call [`WasmCodeOffer::accept`].
#[wasm_bindgen]
pub struct WasmCodeOffer {
    node: Weak<RefCell<NodeState>>,
    nameplate: u32,
    text: String,
    valid_for_ms: f64,
}

#[wasm_bindgen]
impl WasmCodeOffer {
    /// The code to show, like `7-amber-falcon`.
    #[wasm_bindgen(getter)]
    pub fn code(&self) -> String {
        self.text.clone()
    }

    /// How long the code stays valid unclaimed, in milliseconds from when the
    /// server allocated it.
    #[wasm_bindgen(getter, js_name = validFor)]
    pub fn valid_for(&self) -> f64 {
        self.valid_for_ms
    }

    /// Waits until another device claims the code, runs the key exchange with
    /// it and accepts its connection; settles with the connection, or fails
    /// with an `Error` whose `code` is `Expired`, `WrongCode`, `PeerGone`,
    /// `TimedOut`, `NotConnected` or `Cancelled`.
    pub fn accept(&self) -> Promise {
        let (promise, done) = Deferred::new();
        let Some(node) = self.node.upgrade() else {
            done.reject(&js::error("Stopped", "the node was shut down"));
            return promise;
        };
        let ready = {
            let mut n = node.borrow_mut();
            match n.codes.get_mut(&self.nameplate) {
                Some(state) if state.done.is_none() => {
                    state.done = Some(done);
                    true
                }
                Some(_) => {
                    done.reject(&js::error("Busy", "accept() is already waiting"));
                    false
                }
                None => {
                    done.reject(&js::error("Expired", "the code is no longer valid"));
                    false
                }
            }
        };
        if ready {
            start(&node, self.nameplate);
        }
        promise
    }

    /// Withdraws the code: a pending `accept()` fails with `Cancelled`.
    pub fn cancel(&self) {
        if let Some(node) = self.node.upgrade() {
            fail(
                &node,
                self.nameplate,
                &js::error("Cancelled", "the code was withdrawn"),
            );
        }
    }
}

/// Asks the server for a nameplate; settles with a [`WasmCodeOffer`].
pub(crate) fn offer(node: &NodeRef) -> Promise {
    let (promise, done) = Deferred::new();
    match node::up(node) {
        Ok(()) => node::request(node, Pending::CodeAllocate(done), |req| {
            ClientMessage::CodeAllocate {
                req,
                nameplate: None,
            }
        }),
        Err(e) => done.reject(&e),
    }
    promise
}

/// The server allocated `nameplate` for an [`offer`].
pub(crate) fn allocated(node: &NodeRef, done: Deferred, nameplate: u32, ttl_ms: u64) {
    let code = js::random32()
        .ok()
        .and_then(|r| Code::new(nameplate, [r[0], r[1]]));
    let Some(code) = code else {
        node::signal(node, &ClientMessage::CodeRelease { nameplate });
        done.reject(&js::error(
            "Protocol",
            "cannot make a code of this nameplate",
        ));
        return;
    };
    node.borrow_mut()
        .codes
        .insert(nameplate, CodeState::new(code, Side::Allocator, None));
    let offer = WasmCodeOffer {
        node: Rc::downgrade(node),
        nameplate,
        text: code.to_string(),
        valid_for_ms: ttl_ms as f64,
    };
    done.resolve(&offer.into());
}

/// Claims `text` and connects to the device that offered it; settles with
/// the connection.
pub(crate) fn claim(node: &NodeRef, text: &str) -> Promise {
    let (promise, done) = Deferred::new();
    let code: Code = match text.parse() {
        Ok(code) => code,
        Err(e) => {
            done.reject(&js::error("Malformed", &format!("not a code: {e}")));
            return promise;
        }
    };
    match node::up(node) {
        Ok(()) => node::request(node, Pending::CodeClaim { done, code }, |req| {
            ClientMessage::CodeClaim {
                req,
                nameplate: code.nameplate(),
            }
        }),
        Err(e) => done.reject(&e),
    }
    promise
}

/// The claim of `code` went through.
pub(crate) fn joined(node: &NodeRef, done: Deferred, code: Code) {
    let nameplate = code.nameplate();
    let state = CodeState::new(code, Side::Claimer, Some(done));
    node.borrow_mut().codes.insert(nameplate, state);
    start(node, nameplate);
}

/// Another device claimed our `nameplate`.
pub(crate) fn claimed(node: &NodeRef, nameplate: u32) {
    let known = {
        let mut n = node.borrow_mut();
        match n.codes.get_mut(&nameplate) {
            Some(state) if state.side == Side::Allocator && !state.claimed => {
                state.claimed = true;
                true
            }
            _ => false,
        }
    };
    if known {
        start(node, nameplate);
    }
}

/// A frame from the other device of `nameplate`.
pub(crate) fn message(node: &NodeRef, nameplate: u32, body: &str) {
    let Ok(bytes) = signal::decode_code_body(body) else {
        return fail(
            node,
            nameplate,
            &js::error("Protocol", "the other device sent an undecodable message"),
        );
    };
    let mut early = Some(bytes);
    let overflow = {
        let mut n = node.borrow_mut();
        let Some(state) = n.codes.get_mut(&nameplate) else {
            return;
        };
        if matches!(state.step, Step::Idle) && state.inbox.len() < INBOX {
            state.inbox.extend(early.take());
        }
        matches!(state.step, Step::Idle) && early.is_some()
    };
    if overflow {
        fail(
            node,
            nameplate,
            &js::error("Protocol", "too many messages before the exchange"),
        );
    } else if let Some(bytes) = early {
        frame(node, nameplate, &bytes);
    }
}

/// The server ended `nameplate`: it expired, or the other device left.
pub(crate) fn closed(node: &NodeRef, nameplate: u32) {
    let waiting = node.borrow().codes.get(&nameplate).map(|s| !s.claimed);
    let e = match waiting {
        None => return,
        Some(true) => js::error("Expired", "the code expired before anyone claimed it"),
        Some(false) => js::error("PeerGone", "the other device of the code went away"),
    };
    fail(node, nameplate, &e);
}

/// A connection request from `from` for service `"code"`: whether a code of
/// ours takes it (else it is an ordinary request).
pub(crate) fn incoming(node: &NodeRef, session: SessionId, from: &PeerInfo) -> bool {
    let found = {
        let mut n = node.borrow_mut();
        let found = n.codes.iter_mut().find(|(_, s)| {
            s.side == Side::Allocator && s.peer.as_ref().is_some_and(|p| p.id == from.id)
        });
        match found {
            Some((&nameplate, state)) => {
                let stale = state.early.replace(session);
                Some((nameplate, stale, matches!(state.step, Step::Keyed(_))))
            }
            None => None,
        }
    };
    let Some((nameplate, stale, keyed)) = found else {
        return false;
    };
    if let Some(stale) = stale {
        node::signal(node, &ClientMessage::Reject { session: stale });
    }
    if keyed {
        accept_request(node, nameplate);
    }
    true
}

/// Ends `nameplate` with error `e`: the waiter hears it, the server releases it.
pub(crate) fn fail(node: &NodeRef, nameplate: u32, e: &JsValue) {
    let state = node.borrow_mut().codes.remove(&nameplate);
    if let Some(mut state) = state {
        node::signal(node, &ClientMessage::CodeRelease { nameplate });
        if let Some(early) = state.early.take() {
            node::signal(node, &ClientMessage::Reject { session: early });
        }
        if let Some(done) = state.done.take() {
            done.reject(e);
        }
    }
}

/// Ends every code with `e` (the link dropped, so they are gone at the
/// server, or the node stopped).
pub(crate) fn fail_all(node: &NodeRef, e: &JsValue) {
    let all: Vec<CodeState> = node.borrow_mut().codes.drain().map(|(_, s)| s).collect();
    for mut state in all {
        if let Some(done) = state.done.take() {
            done.reject(e);
        }
    }
}

/// Starts the exchange of `nameplate` once the peer and a waiter are there.
fn start(node: &NodeRef, nameplate: u32) {
    let seed = match js::random32() {
        Ok(seed) => seed,
        Err(e) => return fail(node, nameplate, &e),
    };
    let (first, inbox) = {
        let mut n = node.borrow_mut();
        let Some(state) = n.codes.get_mut(&nameplate) else {
            return;
        };
        if !state.claimed || state.done.is_none() || !matches!(state.step, Step::Idle) {
            return;
        }
        let (pake, first) = Pake::start(&state.code, state.side, seed);
        state.step = Step::Pake(pake);
        (first, std::mem::take(&mut state.inbox))
    };
    arm(node, nameplate, EXCHANGE_MS, "the key exchange");
    send_frame(node, nameplate, &first);
    for bytes in inbox {
        frame(node, nameplate, &bytes);
    }
}

/// Takes one exchange frame from the peer.
fn frame(node: &NodeRef, nameplate: u32, bytes: &[u8]) {
    let frame = match CodeFrame::decode(bytes) {
        Ok(frame) => frame,
        Err(e) => return fail(node, nameplate, &js::error("Protocol", &e.to_string())),
    };
    let me = PeerInfo {
        id: node.borrow().settings.identity.device_id(),
        label: node.borrow().settings.label.clone(),
    };
    let mut n = node.borrow_mut();
    let Some(state) = n.codes.get_mut(&nameplate) else {
        return;
    };
    let step = std::mem::replace(&mut state.step, Step::Idle);
    let e = match (step, frame) {
        (Step::Pake(pake), CodeFrame::Pake(msg)) => match pake.finish(&msg) {
            Ok((confirm, ours)) => {
                state.step = Step::Confirm(confirm);
                drop(n);
                return send_frame(node, nameplate, &ours);
            }
            Err(e) => js::error("Protocol", &e.to_string()),
        },
        (Step::Confirm(confirm), CodeFrame::Confirm(theirs)) => match confirm.verify(&theirs) {
            Ok(keyed) => {
                let hello = keyed.hello(&me);
                state.step = Step::Introduced(keyed);
                drop(n);
                return send_frame(node, nameplate, &hello);
            }
            Err(_) => js::error(
                "WrongCode",
                "the code does not match the other device's (it is used up now)",
            ),
        },
        (Step::Introduced(agreed), hello @ CodeFrame::Hello { .. }) => {
            match agreed.accept(&hello) {
                Ok((peer, psk)) => {
                    state.peer = Some(peer);
                    state.step = Step::Keyed(psk);
                    let side = state.side;
                    let early = state.early.is_some();
                    drop(n);
                    return keyed(node, nameplate, side, early);
                }
                Err(e) => js::error("Protocol", &format!("the other device's introduction: {e}")),
            }
        }
        _ => js::error("Protocol", "the code exchange went out of order"),
    };
    drop(n);
    fail(node, nameplate, &e);
}

/// The key of `nameplate` is agreed: the claimer dials, the allocator takes
/// the request (now, or when it comes).
fn keyed(node: &NodeRef, nameplate: u32, side: Side, early: bool) {
    match side {
        Side::Claimer => {
            let state = node.borrow_mut().codes.remove(&nameplate);
            let Some(mut state) = state else { return };
            let (Some(done), Some(peer), Step::Keyed(psk)) = (
                state.done.take(),
                state.peer.take(),
                std::mem::replace(&mut state.step, Step::Idle),
            ) else {
                return;
            };
            node::dial(node, peer.id, Some(SERVICE.to_owned()), Some(psk), done);
            node::signal(node, &ClientMessage::CodeRelease { nameplate });
        }
        Side::Allocator if early => accept_request(node, nameplate),
        Side::Allocator => arm(
            node,
            nameplate,
            CONNECT_MS,
            "the other device's connection request",
        ),
    }
}

/// Accepts the claimer's connection request with the agreed key.
fn accept_request(node: &NodeRef, nameplate: u32) {
    let state = node.borrow_mut().codes.remove(&nameplate);
    let Some(mut state) = state else { return };
    if let (Some(done), Some(peer), Some(session), Step::Keyed(psk)) = (
        state.done.take(),
        state.peer.take(),
        state.early.take(),
        std::mem::replace(&mut state.step, Step::Idle),
    ) {
        node::accept_with(
            node,
            session,
            peer,
            Some(SERVICE.to_owned()),
            Some(psk),
            done,
        );
    }
    node::signal(node, &ClientMessage::CodeRelease { nameplate });
}

fn send_frame(node: &NodeRef, nameplate: u32, frame: &CodeFrame) {
    let body = signal::encode_code_body(&frame.encode());
    node::signal(node, &ClientMessage::CodeMessage { nameplate, body });
}

/// Bounds the running step of `nameplate` by `ms`.
fn arm(node: &NodeRef, nameplate: u32, ms: f64, what: &'static str) {
    let weak = Rc::downgrade(node);
    let callback = Closure::<dyn FnMut()>::new(move || {
        if let Some(node) = weak.upgrade() {
            let message = format!("{what} took over {} s", ms / 1000.0);
            fail(&node, nameplate, &js::error("TimedOut", &message));
        }
    });
    let f: &Function = callback.as_ref().unchecked_ref();
    let handle = js::set_timeout(f, ms);
    let mut n = node.borrow_mut();
    if let (Some(state), Some(handle)) = (n.codes.get_mut(&nameplate), handle)
        && let Some((old, _)) = state.timer.replace((handle, callback))
    {
        js::clear_timeout(&old);
    }
}
