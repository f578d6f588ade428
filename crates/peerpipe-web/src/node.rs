//! The node: the signaling WebSocket to the server, admission, requests and
//! their answers, presence, connection requests, and relayed frames routed to
//! their connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use js_sys::{Array, Function, Reflect, Uint8Array};
use peerpipe_proto::id::{DeviceId, Identity};
use peerpipe_proto::relay::{self, RelayHeader};
use peerpipe_proto::session::{self, PathId, Session};
use peerpipe_proto::signal::{
    ClientMessage, CloseReason, ErrorCode, IceServer, Limits, NONCE_LEN, PeerInfo, ServerMessage,
    SessionId, hello_payload,
};
use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, WebSocket};

use peerpipe_proto::code::{Code, Psk};

use crate::code::{self, CodeState};
use crate::conn::{Conn, ConnRef, DirectSetup, turn};
use crate::connection::WasmConnection;
use crate::js::{self, Deferred, Obj};

/// The largest packet a direct path carries (as natively).
const MAX_PACKET: usize = 62 * 1024;

/// Settings from the page.
pub(crate) struct Settings {
    pub server: String,
    pub token: String,
    pub label: String,
    pub identity: Identity,
    pub max_message_size: u32,
    /// Whether connections may move to a WebRTC data channel.
    pub direct: bool,
    /// STUN/TURN servers to use instead of the ones the server announces.
    pub ice_servers: Option<Vec<IceServer>>,
}

/// A request to the server waiting for its answer.
pub(crate) enum Pending {
    ListPeers(Deferred),
    Connect {
        done: Deferred,
        service: Option<String>,
        /// The key of a one-time code, bound into the handshake.
        psk: Option<Psk>,
    },
    /// A nameplate for a code offer.
    CodeAllocate(Deferred),
    /// Claiming `code`.
    CodeClaim {
        done: Deferred,
        code: Code,
    },
    Accept(SessionId),
    /// Routing connection `id` again.
    Resume(SessionId),
    /// Accepting the peer's new route for a connection.
    ResumeAccept,
}

/// The first wait before reconnecting, and the longest.
const BACKOFF_MIN_MS: f64 = 100.0;
const BACKOFF_MAX_MS: f64 = 4000.0;

/// Where the link is in its life.
enum Phase {
    /// Waiting for the challenge, then the welcome; `bind` waits on `done`
    /// (`None`: a reconnect).
    Admission(Option<Deferred>),
    Up,
    /// The link dropped; a reconnect attempt is due.
    Reconnecting,
    Closed,
}

/// The node's state, shared by the page's handle and the socket's callbacks.
pub(crate) struct NodeState {
    pub(crate) settings: Settings,
    ws: WebSocket,
    phase: Phase,
    limits: Option<Limits>,
    /// Where WebRTC attempts find candidates.
    ice_servers: Vec<IceServer>,
    next_req: u64,
    /// The next relay path id (relay paths are numbered from 1; direct paths
    /// carry the negotiator's bits).
    next_path: u64,
    pending: HashMap<u64, Pending>,
    /// Connections by their id (the server session they were set up on).
    conns: HashMap<SessionId, ConnRef>,
    /// Server session → the connection routed on it.
    routes: HashMap<SessionId, SessionId>,
    /// Reconnect attempts since the link was last up.
    attempts: u32,
    /// Connection requests the page has not answered.
    incoming: HashMap<SessionId, (PeerInfo, Option<String>)>,
    /// One-time codes by nameplate.
    pub(crate) codes: HashMap<u32, CodeState>,
    on_event: Function,
    /// The socket's callbacks, kept alive with the node.
    callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
    /// Runs the next reconnect attempt, and its pending timer.
    reconnect: Option<Closure<dyn FnMut()>>,
    reconnect_timer: Option<JsValue>,
    /// Asks again for routes of code connections, and its pending timer.
    resume_retry: Option<Closure<dyn FnMut()>>,
    resume_timer: Option<JsValue>,
}

impl Drop for NodeState {
    fn drop(&mut self) {
        // The socket may still fire once its callbacks are gone; a pending
        // reconnect is called off with it.
        for timer in [self.reconnect_timer.take(), self.resume_timer.take()]
            .into_iter()
            .flatten()
        {
            js::clear_timeout(&timer);
        }
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

/// A shared node.
pub(crate) type NodeRef = Rc<RefCell<NodeState>>;

/// Opens the socket and runs admission; the promise settles with the node once
/// the server admitted it.
pub(crate) fn bind(
    settings: Settings,
    on_event: Function,
) -> Result<(NodeRef, js_sys::Promise), JsValue> {
    let ws = open(&settings.server)?;
    let (promise, done) = Deferred::new();
    let node = Rc::new(RefCell::new(NodeState {
        settings,
        ws,
        phase: Phase::Admission(Some(done)),
        limits: None,
        ice_servers: Vec::new(),
        next_req: 1,
        next_path: 1,
        pending: HashMap::new(),
        conns: HashMap::new(),
        routes: HashMap::new(),
        attempts: 0,
        incoming: HashMap::new(),
        codes: HashMap::new(),
        on_event,
        callbacks: Vec::new(),
        reconnect: None,
        reconnect_timer: None,
        resume_retry: None,
        resume_timer: None,
    }));
    wire(&node);
    let weak = Rc::downgrade(&node);
    let again = Closure::<dyn FnMut()>::new(move || {
        if let Some(node) = weak.upgrade() {
            reconnect(&node);
        }
    });
    node.borrow_mut().reconnect = Some(again);
    let weak = Rc::downgrade(&node);
    let retry = Closure::<dyn FnMut()>::new(move || {
        if let Some(node) = weak.upgrade() {
            node.borrow_mut().resume_timer = None;
            resume_all(&node);
        }
    });
    node.borrow_mut().resume_retry = Some(retry);
    Ok((node, promise))
}

fn open(server: &str) -> Result<WebSocket, JsValue> {
    let ws = WebSocket::new(server).map_err(|e| {
        js::error(
            "Config",
            &format!("cannot open a WebSocket to {server}: {e:?}"),
        )
    })?;
    ws.set_binary_type(BinaryType::Arraybuffer);
    Ok(ws)
}

/// Hands the node's socket its callbacks.
fn wire(node: &NodeRef) {
    // Events are read by property, not by class: Node.js's `ws` has
    // event classes of its own.
    let weak = Rc::downgrade(node);
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        if let (Some(node), Ok(data)) = (weak.upgrade(), Reflect::get(&e, &"data".into())) {
            message(&node, data);
        }
    });
    let weak = Rc::downgrade(node);
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        let why = Reflect::get(&e, &"reason".into())
            .ok()
            .and_then(|r| r.as_string())
            .unwrap_or_default();
        if let Some(node) = weak.upgrade() {
            link_lost(&node, &why);
        }
    });
    let mut n = node.borrow_mut();
    n.ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    n.ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    n.callbacks = vec![on_message, on_close];
}

/// Attempt to get the link back.
fn reconnect(node: &NodeRef) {
    let server = {
        let mut n = node.borrow_mut();
        n.reconnect_timer = None;
        if !matches!(n.phase, Phase::Reconnecting) {
            return;
        }
        n.settings.server.clone()
    };
    match open(&server) {
        Ok(ws) => {
            {
                let mut n = node.borrow_mut();
                n.ws.set_onmessage(None);
                n.ws.set_onclose(None);
                n.ws = ws;
                n.phase = Phase::Admission(None);
            }
            wire(node);
        }
        Err(_) => schedule_reconnect(node),
    }
}

/// Waits with backoff, then reconnects.
fn schedule_reconnect(node: &NodeRef) {
    let (attempt, callback) = {
        let mut n = node.borrow_mut();
        n.attempts += 1;
        n.phase = Phase::Reconnecting;
        let f: Option<Function> = n
            .reconnect
            .as_ref()
            .map(|c| c.as_ref().clone().unchecked_into());
        (n.attempts, f)
    };
    let delay =
        (BACKOFF_MIN_MS * 2f64.powi(attempt.saturating_sub(1).min(16) as i32)).min(BACKOFF_MAX_MS);
    // Spread the attempts of many devices.
    let delay = delay * (0.75 + 0.5 * js_sys::Math::random());
    if let Some(f) = callback {
        node.borrow_mut().reconnect_timer = js::set_timeout(&f, delay);
    }
    emit(
        node,
        "reconnecting",
        Obj::new()
            .set("attempt", attempt)
            .set("delay", delay.round())
            .build(),
    );
}

fn emit(node: &NodeRef, kind: &str, detail: JsValue) {
    let f = node.borrow().on_event.clone();
    let _ = f.call2(&JsValue::UNDEFINED, &kind.into(), &detail);
}

fn peer_js(p: &PeerInfo) -> JsValue {
    Obj::new()
        .set("id", p.id.to_string())
        .set("label", p.label.as_str())
        .build()
}

fn server_error(code: ErrorCode, message: &str) -> JsValue {
    let name = match code {
        ErrorCode::BadToken => "BadToken",
        ErrorCode::TokenExpired => "TokenExpired",
        ErrorCode::BadSignature => "BadSignature",
        ErrorCode::TooManyDevices => "TooManyDevices",
        ErrorCode::UnsupportedVersion => "UnsupportedVersion",
        ErrorCode::PeerOffline => "PeerOffline",
        ErrorCode::NotFound => "NotFound",
        ErrorCode::Forbidden => "Forbidden",
        ErrorCode::Rejected => "Rejected",
        ErrorCode::Timeout => "TimedOut",
        ErrorCode::RateLimited => "RateLimited",
        _ => "Refused",
    };
    js::error(name, message)
}

fn send(ws: &WebSocket, msg: &ClientMessage) {
    let _ = ws.send_with_str(&msg.encode());
}

/// Sends `msg` to the server on the node's link.
pub(crate) fn signal(node: &NodeRef, msg: &ClientMessage) {
    send(&node.borrow().ws, msg);
}

fn message(node: &NodeRef, data: JsValue) {
    if let Some(text) = data.as_string() {
        match ServerMessage::decode(&text) {
            Ok(msg) => server_message(node, msg),
            Err(e) => fail_admission(
                node,
                js::error("Protocol", &format!("undecodable server message: {e}")),
            ),
        }
    } else if let Ok(buf) = data.dyn_into::<js_sys::ArrayBuffer>() {
        let mut frame = Bytes::from(Uint8Array::new(&buf).to_vec());
        let Ok(header) = RelayHeader::decode(&mut frame) else {
            return;
        };
        let conn = {
            let n = node.borrow();
            n.routes
                .get(&header.session)
                .and_then(|id| n.conns.get(id))
                .cloned()
        };
        if let Some(conn) = conn {
            conn.borrow_mut().packet(frame);
            turn(&conn);
        }
    }
}

fn fail_admission(node: &NodeRef, e: JsValue) {
    let done = match &mut node.borrow_mut().phase {
        Phase::Admission(done) => Some(done.take()),
        _ => None,
    };
    match done {
        Some(Some(done)) => {
            node.borrow_mut().phase = Phase::Closed;
            done.reject(&e);
            let _ = node.borrow().ws.close();
        }
        // A reconnect the server refused for good (the token expired, say).
        Some(None) => {
            node.borrow_mut().phase = Phase::Closed;
            let _ = node.borrow().ws.close();
            end_all(
                node,
                "NodeStopped",
                "the server refused this device on reconnect",
            );
            emit(node, "stopped", e);
        }
        None => {}
    }
}

fn server_message(node: &NodeRef, msg: ServerMessage) {
    let admitting = matches!(node.borrow().phase, Phase::Admission(_));
    if admitting {
        return admission(node, msg);
    }
    match msg {
        ServerMessage::Peers { req, peers } => {
            if let Some(Pending::ListPeers(done)) = node.borrow_mut().pending.remove(&req) {
                let list: Array = peers.iter().map(peer_js).collect();
                done.resolve(&list);
            }
        }
        ServerMessage::PeerOnline { peer } => {
            emit(node, "peeronline", peer_js(&peer));
            resume_all(node);
        }
        ServerMessage::PeerOffline { id } => {
            emit(
                node,
                "peeroffline",
                Obj::new().set("id", id.to_string()).build(),
            );
        }
        ServerMessage::Incoming {
            session,
            from,
            resume: Some(id),
            ..
        } => incoming_resume(node, session, &from, id),
        ServerMessage::Incoming {
            session,
            from,
            service,
            ..
        } => {
            // The connection of a code goes to the code's offer.
            if service.as_deref() == Some(code::SERVICE) && code::incoming(node, session, &from) {
                return;
            }
            let detail = Obj::new()
                .set("session", session.to_string())
                .set("peer", peer_js(&from))
                .set(
                    "service",
                    service.clone().map_or(JsValue::NULL, JsValue::from),
                )
                .build();
            node.borrow_mut().incoming.insert(session, (from, service));
            emit(node, "incomingconnection", detail);
        }
        ServerMessage::Connected { req, session, peer } => {
            let pending = node.borrow_mut().pending.remove(&req);
            if let Some(Pending::Resume(id)) = pending {
                let conn = node.borrow().conns.get(&id).cloned();
                match conn {
                    Some(conn) => {
                        conn.borrow_mut().resuming = false;
                        route(node, &conn, session);
                        turn(&conn);
                    }
                    None => send(&node.borrow().ws, &ClientMessage::Close { session }),
                }
            } else if let Some(Pending::Connect { done, service, psk }) = pending {
                match start_conn(node, session, peer, service, psk.as_ref(), true) {
                    Ok(conn) => {
                        let handle = WasmConnection::from(conn.clone());
                        conn.borrow_mut().wait_connected(done, handle.into());
                        turn(&conn);
                    }
                    Err(e) => done.reject(&e),
                }
            } else {
                // Nobody waits for it any more: end it at the server.
                send(&node.borrow().ws, &ClientMessage::Close { session });
            }
        }
        ServerMessage::Accepted { req, .. } => {
            node.borrow_mut().pending.remove(&req);
        }
        ServerMessage::CodeAllocated {
            req,
            nameplate,
            ttl_ms,
        } => {
            let pending = node.borrow_mut().pending.remove(&req);
            match pending {
                Some(Pending::CodeAllocate(done)) => code::allocated(node, done, nameplate, ttl_ms),
                _ => signal(node, &ClientMessage::CodeRelease { nameplate }),
            }
        }
        ServerMessage::CodeJoined { req, nameplate } => {
            let pending = node.borrow_mut().pending.remove(&req);
            match pending {
                Some(Pending::CodeClaim { done, code }) if code.nameplate() == nameplate => {
                    code::joined(node, done, code)
                }
                _ => signal(node, &ClientMessage::CodeRelease { nameplate }),
            }
        }
        ServerMessage::CodeClaimed { nameplate } => code::claimed(node, nameplate),
        ServerMessage::CodeMessage { nameplate, body } => code::message(node, nameplate, &body),
        ServerMessage::CodeClosed { nameplate } => code::closed(node, nameplate),
        ServerMessage::Closed { session, reason } => {
            let conn = node.borrow_mut().conns.remove(&session);
            node.borrow_mut().incoming.remove(&session);
            if let Some(conn) = conn {
                let (code, message) = match reason {
                    CloseReason::PeerDisconnected => {
                        ("PeerDisconnected", "the peer's device went offline")
                    }
                    CloseReason::PeerClosed => ("PeerClosed", "the peer closed the connection"),
                    CloseReason::RelayOverflow => (
                        "RelayOverflow",
                        "the server ended the relay route: the sender outran flow control",
                    ),
                    _ => (
                        "Cancelled",
                        "the connection request ended before it was answered",
                    ),
                };
                conn.borrow_mut().abort(code, message);
                turn(&conn);
            }
        }
        ServerMessage::Error {
            req,
            session,
            code,
            message,
        } => {
            let pending = req.and_then(|r| node.borrow_mut().pending.remove(&r));
            let e = server_error(code, &message);
            match pending {
                Some(
                    Pending::ListPeers(done)
                    | Pending::Connect { done, .. }
                    | Pending::CodeAllocate(done)
                    | Pending::CodeClaim { done, .. },
                ) => done.reject(&e),
                Some(Pending::Accept(id)) => {
                    let conn = node.borrow_mut().conns.remove(&id);
                    if let Some(conn) = conn {
                        conn.borrow_mut().abort("Expired", &message);
                        turn(&conn);
                    }
                }
                // The peer is not back yet: tried again when it comes online,
                // or (a code's peer, whose presence this node does not see)
                // after a while.
                Some(Pending::Resume(id)) => {
                    let by_code = node.borrow().conns.get(&id).is_some_and(|c| {
                        let mut c = c.borrow_mut();
                        c.resuming = false;
                        c.by_code
                    });
                    if by_code {
                        retry_resumes_later(node);
                    }
                }
                Some(Pending::ResumeAccept) => {}
                None if session.is_none() && req.is_none() => {
                    emit(node, "error", e);
                }
                None => {}
            }
        }
        _ => {}
    }
}

fn admission(node: &NodeRef, msg: ServerMessage) {
    match msg {
        ServerMessage::Challenge { nonce } => {
            let nonce: Option<[u8; NONCE_LEN]> = URL_SAFE_NO_PAD
                .decode(nonce.trim_end_matches('='))
                .ok()
                .and_then(|v| v.try_into().ok());
            let Some(nonce) = nonce else {
                return fail_admission(
                    node,
                    js::error("Protocol", "the challenge nonce is not 32 base64url bytes"),
                );
            };
            let n = node.borrow();
            let s = &n.settings;
            let signature = s.identity.sign(&hello_payload(&nonce, &s.token));
            let hello = ClientMessage::Hello {
                token: s.token.clone(),
                device: s.identity.device_id(),
                signature: URL_SAFE_NO_PAD.encode(signature),
                label: s.label.clone(),
            };
            send(&n.ws, &hello);
        }
        ServerMessage::Welcome {
            device,
            limits,
            ice_servers,
            ..
        } => {
            if device != node.borrow().settings.identity.device_id() {
                return fail_admission(
                    node,
                    js::error("Protocol", "the server admitted another device"),
                );
            }
            let done = {
                let mut n = node.borrow_mut();
                n.limits = Some(limits);
                n.ice_servers = n.settings.ice_servers.clone().unwrap_or(ice_servers);
                match std::mem::replace(&mut n.phase, Phase::Up) {
                    Phase::Admission(done) => done,
                    _ => None,
                }
            };
            node.borrow_mut().attempts = 0;
            match done {
                Some(done) => done.resolve(&JsValue::UNDEFINED),
                None => {
                    emit(node, "reconnected", JsValue::UNDEFINED);
                    allow_resumes(node);
                    resume_all(node);
                }
            }
        }
        ServerMessage::Error { code, message, .. } => {
            fail_admission(node, server_error(code, &message))
        }
        other => fail_admission(
            node,
            js::error(
                "Protocol",
                &format!("expected a challenge or welcome, got {other:?}"),
            ),
        ),
    }
}

fn link_lost(node: &NodeRef, why: &str) {
    let message = if why.is_empty() {
        "the server closed the connection".to_owned()
    } else {
        format!("the server closed the connection: {why}")
    };
    let (was, conns, pending) = {
        let mut n = node.borrow_mut();
        let was = std::mem::replace(&mut n.phase, Phase::Closed);
        n.routes.clear();
        n.incoming.clear();
        let conns: Vec<ConnRef> = n.conns.values().cloned().collect();
        let pending: Vec<Pending> = n.pending.drain().map(|(_, p)| p).collect();
        (was, conns, pending)
    };
    match was {
        Phase::Admission(Some(done)) => return done.reject(&js::error("Unreachable", &message)),
        Phase::Closed => return,
        _ => {}
    }
    let e = js::error("NotConnected", &message);
    reject_pending(pending, &e);
    // Codes end at the server with the link.
    code::fail_all(node, &e);
    // Connections outlive the link: they wait for a new route, on their
    // data channel if they have one, until their idle time-out.
    for conn in conns {
        {
            let mut c = conn.borrow_mut();
            c.resuming = false;
            c.route_down();
        }
        turn(&conn);
    }
    schedule_reconnect(node);
}

/// Fails the requests whose callers wait.
fn reject_pending(pending: Vec<Pending>, e: &JsValue) {
    for p in pending {
        if let Pending::ListPeers(d)
        | Pending::Connect { done: d, .. }
        | Pending::CodeAllocate(d)
        | Pending::CodeClaim { done: d, .. } = p
        {
            d.reject(e);
        }
    }
}

/// Ends every connection.
fn end_all(node: &NodeRef, code: &str, message: &str) {
    let conns: Vec<ConnRef> = node.borrow_mut().conns.drain().map(|(_, c)| c).collect();
    for conn in conns {
        conn.borrow_mut().abort(code, message);
        turn(&conn);
    }
}

/// Routes connection `conn` on server session `route` (a new relay path).
fn route(node: &NodeRef, conn: &ConnRef, route: SessionId) {
    let (path, ws) = {
        let mut n = node.borrow_mut();
        let path = PathId(n.next_path);
        n.next_path += 1;
        if let Some(old) = conn.borrow().route() {
            n.routes.remove(&old);
        }
        n.routes.insert(route, conn.borrow().id);
        (path, n.ws.clone())
    };
    conn.borrow_mut().route_up(route, path, ws);
}

/// Asks for a new route for every connection this side dialed that has none.
fn resume_all(node: &NodeRef) {
    let todo: Vec<(SessionId, DeviceId, Option<String>)> = {
        let n = node.borrow();
        if !matches!(n.phase, Phase::Up) {
            return;
        }
        n.conns
            .values()
            .filter_map(|c| {
                let mut c = c.borrow_mut();
                (c.dialer && c.route().is_none() && !c.resuming && c.closed.is_none()).then(|| {
                    c.resuming = true;
                    (c.id, c.peer.id, c.service.clone())
                })
            })
            .collect()
    };
    for (id, to, service) in todo {
        request(node, Pending::Resume(id), |req| ClientMessage::Connect {
            req,
            to,
            resume: Some(id),
            service,
            door: None,
        });
    }
}

/// The longest wait before asking again for a code connection's route.
const RESUME_RETRY_MS: f64 = 1000.0;

/// Asks again, in a while, for the routes of connections that have none.
fn retry_resumes_later(node: &NodeRef) {
    let mut n = node.borrow_mut();
    if n.resume_timer.is_some() {
        return;
    }
    let f: Option<Function> = n
        .resume_retry
        .as_ref()
        .map(|c| c.as_ref().clone().unchecked_into());
    if let Some(f) = f {
        n.resume_timer = js::set_timeout(&f, RESUME_RETRY_MS);
    }
}

/// On a new link: lets the peers of the code connections this side accepted
/// route them again (the server forgot that with the old link).
fn allow_resumes(node: &NodeRef) {
    let allow: Vec<ClientMessage> = node
        .borrow()
        .conns
        .values()
        .filter_map(|c| {
            let c = c.borrow();
            (c.by_code && !c.dialer && c.closed.is_none()).then(|| ClientMessage::AllowResume {
                peer: c.peer.id,
                connection: c.id,
            })
        })
        .collect();
    for msg in &allow {
        signal(node, msg);
    }
}

/// The peer routes connection `id` again on server session `route`.
fn incoming_resume(node: &NodeRef, route_id: SessionId, from: &PeerInfo, id: SessionId) {
    let conn = node.borrow().conns.get(&id).cloned();
    let known = conn
        .as_ref()
        .is_some_and(|c| !c.borrow().dialer && c.borrow().peer.id == from.id);
    let Some(conn) = conn.filter(|_| known) else {
        send(
            &node.borrow().ws,
            &ClientMessage::Reject { session: route_id },
        );
        return;
    };
    // The accept goes out before the session's first packet on the route.
    request(node, Pending::ResumeAccept, |req| ClientMessage::Accept {
        req,
        session: route_id,
    });
    route(node, &conn, route_id);
    turn(&conn);
}

/// A new connection on server session `route`, its relay path up.
fn start_conn(
    node: &NodeRef,
    route_id: SessionId,
    peer: PeerInfo,
    service: Option<String>,
    psk: Option<&Psk>,
    dialer: bool,
) -> Result<ConnRef, JsValue> {
    let conn = {
        let n = node.borrow();
        let max_frame = n.limits.as_ref().map_or(64 * 1024, |l| l.max_frame);
        let max_packet = (max_frame as usize)
            .saturating_sub(relay::HEADER_LEN)
            .min(MAX_PACKET);
        let config = session::Config {
            max_frame_payload: session::frame_payload_for(max_packet).max(1),
            max_message_size: n.settings.max_message_size,
            ..session::Config::default()
        };
        let seed = js::random32()?;
        let s = Session::with_psk(
            peerpipe_proto::time::Instant::now(),
            config,
            &n.settings.identity,
            peer.id,
            seed,
            psk,
        )
        .map_err(|e| js::error("Handshake", &e.to_string()))?;
        let direct = DirectSetup {
            dialer,
            allowed: n.settings.direct,
            ice_servers: n.ice_servers.clone(),
        };
        Conn::new(route_id, peer, service, s, direct)
    };
    conn.borrow_mut().by_code = psk.is_some();
    // The accepting side of a code connection withdraws its allowance at the end.
    let revoke = (psk.is_some() && !dialer).then(|| ClientMessage::RevokeResume {
        peer: conn.borrow().peer.id,
        connection: route_id,
    });
    let weak = Rc::downgrade(node);
    conn.borrow_mut()
        .on_forget(move || forget(&weak, route_id, revoke.as_ref()));
    node.borrow_mut().conns.insert(route_id, conn.clone());
    route(node, &conn, route_id);
    Ok(conn)
}

pub(crate) fn up(node: &NodeRef) -> Result<(), JsValue> {
    match node.borrow().phase {
        Phase::Up => Ok(()),
        _ => Err(js::error(
            "NotConnected",
            "the node is not connected to the server",
        )),
    }
}

pub(crate) fn request(node: &NodeRef, pending: Pending, msg: impl FnOnce(u64) -> ClientMessage) {
    let mut n = node.borrow_mut();
    let req = n.next_req;
    n.next_req += 1;
    n.pending.insert(req, pending);
    send(&n.ws, &msg(req));
}

/// Asks the server for this user's other online devices.
pub(crate) fn online_peers(node: &NodeRef) -> js_sys::Promise {
    let (promise, done) = Deferred::new();
    match up(node) {
        Ok(()) => request(node, Pending::ListPeers(done), |req| {
            ClientMessage::ListPeers { req }
        }),
        Err(e) => done.reject(&e),
    }
    promise
}

/// Connects to device `to`; settles with the connection once the end-to-end
/// handshake finished.
pub(crate) fn connect(node: &NodeRef, to: &str, service: Option<String>) -> js_sys::Promise {
    let (promise, done) = Deferred::new();
    let to: DeviceId = match to.parse() {
        Ok(id) => id,
        Err(_) => {
            done.reject(&js::error("NotFound", "that is not a device id"));
            return promise;
        }
    };
    dial(node, to, service, None, done);
    promise
}

/// Asks the server to connect to `to`; `done` settles with the connection.
pub(crate) fn dial(
    node: &NodeRef,
    to: DeviceId,
    service: Option<String>,
    psk: Option<Psk>,
    done: Deferred,
) {
    if let Err(e) = up(node) {
        return done.reject(&e);
    }
    let svc = service.clone();
    let pending = Pending::Connect { done, service, psk };
    request(node, pending, move |req| ClientMessage::Connect {
        req,
        to,
        resume: None,
        service: svc,
        door: None,
    });
}

/// Accepts connection request `session`.
pub(crate) fn accept(node: &NodeRef, session: &str) -> js_sys::Promise {
    let (promise, done) = Deferred::new();
    let Ok(id) = session.parse::<SessionId>() else {
        done.reject(&js::error("Expired", "no such connection request"));
        return promise;
    };
    let asked = node.borrow_mut().incoming.remove(&id);
    let Some((peer, service)) = asked else {
        done.reject(&js::error(
            "Expired",
            "the connection request is no longer pending",
        ));
        return promise;
    };
    accept_with(node, id, peer, service, None, done);
    promise
}

/// Accepts connection request `id` from `peer`; `done` settles with the
/// connection.
pub(crate) fn accept_with(
    node: &NodeRef,
    id: SessionId,
    peer: PeerInfo,
    service: Option<String>,
    psk: Option<Psk>,
    done: Deferred,
) {
    if let Err(e) = up(node) {
        return done.reject(&e);
    }
    // The accept goes out before the session's first packet.
    request(node, Pending::Accept(id), |req| ClientMessage::Accept {
        req,
        session: id,
    });
    let allow = psk.is_some().then_some(ClientMessage::AllowResume {
        peer: peer.id,
        connection: id,
    });
    match start_conn(node, id, peer, service, psk.as_ref(), false) {
        Ok(conn) => {
            // A code's peer is another user's device: the server lets it route
            // this connection again only because this side says so.
            if let Some(allow) = &allow {
                signal(node, allow);
            }
            let handle = WasmConnection::from(conn.clone());
            conn.borrow_mut().wait_connected(done, handle.into());
            turn(&conn);
        }
        Err(e) => done.reject(&e),
    }
}

/// Rejects connection request `session`.
pub(crate) fn reject(node: &NodeRef, session: &str) {
    let Ok(id) = session.parse::<SessionId>() else {
        return;
    };
    if node.borrow_mut().incoming.remove(&id).is_some() {
        send(&node.borrow().ws, &ClientMessage::Reject { session: id });
    }
}

/// Forgets an ended connection.
fn forget(node: &Weak<RefCell<NodeState>>, id: SessionId, revoke: Option<&ClientMessage>) {
    if let Some(node) = node.upgrade() {
        let gone = {
            let mut n = node.borrow_mut();
            n.routes.retain(|_, c| *c != id);
            n.conns.remove(&id)
        };
        drop(gone);
        if let Some(msg) = revoke {
            signal(&node, msg);
        }
    }
}

/// Ends every connection and the link.
pub(crate) fn shutdown(node: &NodeRef) {
    node.borrow_mut().phase = Phase::Closed;
    let pending: Vec<Pending> = node.borrow_mut().pending.drain().map(|(_, p)| p).collect();
    let e = js::error("Stopped", "the node was shut down");
    reject_pending(pending, &e);
    code::fail_all(node, &e);
    end_all(node, "NodeStopped", "the node was shut down");
    let _ = node.borrow().ws.close();
}
