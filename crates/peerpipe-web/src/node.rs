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
use peerpipe_proto::session::{self, Session};
use peerpipe_proto::signal::{
    ClientMessage, CloseReason, ErrorCode, IceServer, Limits, NONCE_LEN, PeerInfo, ServerMessage,
    SessionId, hello_payload,
};
use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, WebSocket};

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

enum Pending {
    ListPeers(Deferred),
    Connect {
        done: Deferred,
        service: Option<String>,
    },
    Accept(SessionId),
}

/// Where the link is in its life.
enum Phase {
    /// Waiting for the challenge, then the welcome; `bind` waits on `done`.
    Admission(Option<Deferred>),
    Up,
    Closed,
}

/// The node's state, shared by the page's handle and the socket's callbacks.
pub(crate) struct NodeState {
    settings: Settings,
    ws: WebSocket,
    phase: Phase,
    limits: Option<Limits>,
    /// Where WebRTC attempts find candidates.
    ice_servers: Vec<IceServer>,
    next_req: u64,
    pending: HashMap<u64, Pending>,
    conns: HashMap<SessionId, ConnRef>,
    /// Connection requests the page has not answered.
    incoming: HashMap<SessionId, (PeerInfo, Option<String>)>,
    on_event: Function,
    /// The socket's callbacks, kept alive with the node.
    _callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Drop for NodeState {
    fn drop(&mut self) {
        // The socket may still fire once its callbacks are gone.
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
    let ws = WebSocket::new(&settings.server).map_err(|e| {
        js::error(
            "Config",
            &format!("cannot open a WebSocket to {}: {e:?}", settings.server),
        )
    })?;
    ws.set_binary_type(BinaryType::Arraybuffer);
    let (promise, done) = Deferred::new();
    let node = Rc::new(RefCell::new(NodeState {
        settings,
        ws: ws.clone(),
        phase: Phase::Admission(Some(done)),
        limits: None,
        ice_servers: Vec::new(),
        next_req: 1,
        pending: HashMap::new(),
        conns: HashMap::new(),
        incoming: HashMap::new(),
        on_event,
        _callbacks: Vec::new(),
    }));
    let weak = Rc::downgrade(&node);
    // Events are read by property, not by class: Node.js's `ws` has
    // event classes of its own.
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        if let (Some(node), Ok(data)) = (weak.upgrade(), Reflect::get(&e, &"data".into())) {
            message(&node, data);
        }
    });
    let weak = Rc::downgrade(&node);
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        let why = Reflect::get(&e, &"reason".into())
            .ok()
            .and_then(|r| r.as_string())
            .unwrap_or_default();
        if let Some(node) = weak.upgrade() {
            link_lost(&node, &why);
        }
    });
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    node.borrow_mut()._callbacks = vec![on_message, on_close];
    Ok((node, promise))
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
        let conn = node.borrow().conns.get(&header.session).cloned();
        if let Some(conn) = conn {
            conn.borrow_mut().packet(frame);
            turn(&conn);
        }
    }
}

fn fail_admission(node: &NodeRef, e: JsValue) {
    let done = match &mut node.borrow_mut().phase {
        Phase::Admission(done) => done.take(),
        _ => None,
    };
    if let Some(done) = done {
        done.reject(&e);
        let _ = node.borrow().ws.close();
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
        ServerMessage::PeerOnline { peer } => emit(node, "peeronline", peer_js(&peer)),
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
            service,
            ..
        } => {
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
            if let Some(Pending::Connect { done, service }) = pending {
                match start_conn(node, session, peer, service, true) {
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
        ServerMessage::Closed { session, reason } => {
            let conn = node.borrow_mut().conns.remove(&session);
            node.borrow_mut().incoming.remove(&session);
            if let Some(conn) = conn {
                let (code, message) = match reason {
                    CloseReason::PeerDisconnected => {
                        ("PeerDisconnected", "the peer's device went offline")
                    }
                    CloseReason::PeerClosed => ("PeerClosed", "the peer closed the connection"),
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
                Some(Pending::ListPeers(done) | Pending::Connect { done, .. }) => done.reject(&e),
                Some(Pending::Accept(id)) => {
                    let conn = node.borrow_mut().conns.remove(&id);
                    if let Some(conn) = conn {
                        conn.borrow_mut().abort("Expired", &message);
                        turn(&conn);
                    }
                }
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
            if let Some(done) = done {
                done.resolve(&JsValue::UNDEFINED);
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
    let (was, conns, pending) = {
        let mut n = node.borrow_mut();
        let was = std::mem::replace(&mut n.phase, Phase::Closed);
        let conns: Vec<ConnRef> = n.conns.drain().map(|(_, c)| c).collect();
        let pending: Vec<Pending> = n.pending.drain().map(|(_, p)| p).collect();
        n.incoming.clear();
        (was, conns, pending)
    };
    let message = if why.is_empty() {
        "the server closed the connection".to_owned()
    } else {
        format!("the server closed the connection: {why}")
    };
    if let Phase::Admission(Some(done)) = was {
        return done.reject(&js::error("Unreachable", &message));
    }
    let e = js::error("NotConnected", &message);
    for p in pending {
        if let Pending::ListPeers(d) | Pending::Connect { done: d, .. } = p {
            d.reject(&e);
        }
    }
    for conn in conns {
        conn.borrow_mut().abort("NodeStopped", &message);
        turn(&conn);
    }
    if !matches!(was, Phase::Closed) {
        emit(node, "stopped", js::error("Unreachable", &message));
    }
}

/// A new connection on server session `route`, its relay path up.
fn start_conn(
    node: &NodeRef,
    route: SessionId,
    peer: PeerInfo,
    service: Option<String>,
    dialer: bool,
) -> Result<ConnRef, JsValue> {
    let mut n = node.borrow_mut();
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
    let s = Session::new(
        peerpipe_proto::time::Instant::now(),
        config,
        &n.settings.identity,
        peer.id,
        seed,
    )
    .map_err(|e| js::error("Handshake", &e.to_string()))?;
    let direct = DirectSetup {
        dialer,
        allowed: n.settings.direct,
        ice_servers: n.ice_servers.clone(),
    };
    let conn = Conn::new(route, peer, service, s, direct, n.ws.clone());
    let weak = Rc::downgrade(node);
    conn.borrow_mut().on_forget(move || forget(&weak, route));
    conn.borrow_mut().relay_up();
    n.conns.insert(route, conn.clone());
    Ok(conn)
}

fn up(node: &NodeRef) -> Result<(), JsValue> {
    match node.borrow().phase {
        Phase::Up => Ok(()),
        _ => Err(js::error(
            "NotConnected",
            "the node is not connected to the server",
        )),
    }
}

fn request(node: &NodeRef, pending: Pending, msg: impl FnOnce(u64) -> ClientMessage) {
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
    if let Err(e) = up(node) {
        done.reject(&e);
        return promise;
    }
    let svc = service.clone();
    request(node, Pending::Connect { done, service }, move |req| {
        ClientMessage::Connect {
            req,
            to,
            resume: None,
            service: svc,
        }
    });
    promise
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
    if let Err(e) = up(node) {
        done.reject(&e);
        return promise;
    }
    // The accept goes out before the session's first packet.
    request(node, Pending::Accept(id), |req| ClientMessage::Accept {
        req,
        session: id,
    });
    match start_conn(node, id, peer, service, false) {
        Ok(conn) => {
            let handle = WasmConnection::from(conn.clone());
            conn.borrow_mut().wait_connected(done, handle.into());
            turn(&conn);
        }
        Err(e) => done.reject(&e),
    }
    promise
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
fn forget(node: &Weak<RefCell<NodeState>>, route: SessionId) {
    if let Some(node) = node.upgrade() {
        node.borrow_mut().conns.remove(&route);
    }
}

/// Ends every connection and the link.
pub(crate) fn shutdown(node: &NodeRef) {
    node.borrow_mut().phase = Phase::Closed;
    link_lost(node, "");
    let _ = node.borrow().ws.close();
}
