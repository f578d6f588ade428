//! One connection to another device: its session, driven in turns on the
//! JavaScript event loop, and what the page waits for on it (the handshake,
//! confirmations, stream reads and writes).
//!
//! A turn hands what the session has to send to the relay WebSocket, acts on
//! every session event, runs the direct-path negotiator's actions and arms one
//! timer for the next deadline. Calls into the page (its event handler) happen
//! after the turn, with nothing borrowed, so that a handler may call back in.

use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use bytes::Bytes;
use js_sys::Function;
use peerpipe_proto::direct::DirectSignal;
use peerpipe_proto::direct::negotiator::{Action, Begin, Kind, Negotiator};
use peerpipe_proto::relay;
use peerpipe_proto::session::{
    self, CLOSE_INTEGRITY, CLOSE_PROTOCOL, Event, MessageId, PathId, ReadError, SendMessageError,
    Session, StreamId, WriteError,
};
use peerpipe_proto::signal::{ClientMessage, IceServer, PeerInfo, SessionId};
use peerpipe_proto::time::Instant;
use std::cell::RefCell;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast as _, JsValue};
use web_sys::WebSocket;

use crate::js::{self, Deferred};
use crate::rtc::{self, RtcAttempt, RtcEvent};

/// The most bytes a stream read hands the page at once.
const READ_CHUNK: usize = 64 * 1024;
/// WebSocket bytes buffered in the browser past which the session's packets
/// wait: the relay is the bottleneck then, not the session.
const WS_HIGH_WATER: f64 = 4.0 * 1024.0 * 1024.0;
/// How soon a turn held back by a full WebSocket buffer runs again, in ms.
const WS_RETRY_MS: f64 = 2.0;

/// A write waiting for stream credit.
struct PendingWrite {
    data: Vec<u8>,
    offset: usize,
    done: Deferred,
}

/// Something for the page, told after the turn.
pub(crate) enum Out {
    /// An event for the connection's handler: its type and detail.
    Event(&'static str, JsValue),
    /// Tell the server the connection ended.
    Forget,
}

/// How a connection goes direct.
pub(crate) struct DirectSetup {
    /// This side dialed: it offers direct paths.
    pub dialer: bool,
    /// Direct paths are allowed (not relay-only).
    pub allowed: bool,
    /// Where WebRTC attempts find their candidates.
    pub ice_servers: Vec<IceServer>,
}

/// A connection's state, shared by its page handle, the node and its timer.
pub(crate) struct Conn {
    /// The server's session id the connection was set up on: its name for good.
    pub id: SessionId,
    /// The relay route now: the server session, its path in the session, and
    /// the socket it goes out on. `None` while the link to the server is down.
    route: Option<(SessionId, PathId, WebSocket)>,
    /// This side dialed: it routes the connection again after a loss.
    pub dialer: bool,
    /// A new route was asked for.
    pub resuming: bool,
    /// Made with a one-time code, so with a device of another user: the
    /// server routes it again only while the accepting side allows it, and no
    /// presence says when that side is back, so the dialer retries on a timer.
    pub by_code: bool,
    pub peer: PeerInfo,
    pub service: Option<String>,
    /// A Rust task takes the streams the peer opens ([`Conn::poll_accept`])
    /// instead of the page's handler.
    pub serving: bool,
    session: Session,
    negotiator: Negotiator,
    /// The running WebRTC attempt, with its session path.
    rtc: Option<(PathId, RtcAttempt)>,
    ice_servers: Vec<IceServer>,
    /// Set once the connection exists, for the attempts' callbacks.
    me: Weak<RefCell<Conn>>,
    /// Resolved with the connection once the handshake finished.
    waiting: Option<(Deferred, JsValue)>,
    confirms: HashMap<MessageId, Deferred>,
    /// Messages refused for a full queue, with their sends' promises.
    queued: VecDeque<(Bytes, bool, Deferred)>,
    readers: HashMap<StreamId, Deferred>,
    writers: HashMap<StreamId, PendingWrite>,
    /// The page's handler, and what happened before it was set.
    handler: Option<Function>,
    early: Vec<(&'static str, JsValue)>,
    closing: Option<Vec<Deferred>>,
    /// Why the node ended the connection, if it did (reported instead of a
    /// local close).
    aborted: Option<JsValue>,
    pub closed: Option<JsValue>,
    timer: Option<(JsValue, Instant)>,
    timer_fn: Option<Closure<dyn FnMut()>>,
    /// The path last told to the page.
    told_path: &'static str,
    /// Called once the connection ended, to forget it.
    forget: Option<Box<dyn Fn()>>,
    /// Rust tasks waiting on the connection ([`until`]): woken after every
    /// turn in which the session had events.
    wakers: Vec<Waker>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The timer's callback goes with the connection.
        if let Some((handle, _)) = self.timer.take() {
            js::clear_timeout(&handle);
        }
    }
}

/// A shared connection.
pub(crate) type ConnRef = Rc<RefCell<Conn>>;

impl Conn {
    /// Connection `id`, not routed yet ([`Conn::route_up`]).
    pub fn new(
        id: SessionId,
        peer: PeerInfo,
        service: Option<String>,
        session: Session,
        direct: DirectSetup,
    ) -> ConnRef {
        let DirectSetup {
            dialer,
            allowed,
            ice_servers,
        } = direct;
        let conn = Rc::new(RefCell::new(Self {
            id,
            route: None,
            dialer,
            resuming: false,
            by_code: false,
            peer,
            service,
            serving: false,
            session,
            // No QUIC in a browser: the native side answers its QUIC offer's
            // refusal with WebRTC.
            negotiator: Negotiator::new(dialer, allowed, false),
            rtc: None,
            ice_servers,
            me: Weak::new(),
            waiting: None,
            confirms: HashMap::new(),
            queued: VecDeque::new(),
            readers: HashMap::new(),
            writers: HashMap::new(),
            handler: None,
            early: Vec::new(),
            closing: None,
            aborted: None,
            closed: None,
            timer: None,
            timer_fn: None,
            told_path: "relay",
            forget: None,
            wakers: Vec::new(),
        }));
        let weak: Weak<RefCell<Self>> = Rc::downgrade(&conn);
        let fire = Closure::<dyn FnMut()>::new(move || {
            if let Some(conn) = weak.upgrade() {
                {
                    let mut c = conn.borrow_mut();
                    c.timer = None;
                    let now = Instant::now();
                    c.session.handle_timeout(now);
                    c.negotiator.handle_timeout(now);
                }
                turn(&conn);
            }
        });
        conn.borrow_mut().timer_fn = Some(fire);
        conn.borrow_mut().me = Rc::downgrade(&conn);
        conn
    }

    /// Runs `forget` once the connection ended.
    pub fn on_forget(&mut self, forget: impl Fn() + 'static) {
        self.forget = Some(Box::new(forget));
    }

    /// Resolves `done` with `value` once the handshake finished (or rejects it
    /// if the connection ends first).
    pub fn wait_connected(&mut self, done: Deferred, value: JsValue) {
        self.waiting = Some((done, value));
    }

    /// The path the traffic takes: `"relay"` or `"webrtc"`.
    pub fn path(&self) -> &'static str {
        match self.session.current_path().and_then(Kind::of) {
            Some(_) => "webrtc",
            None => "relay",
        }
    }

    /// Leaves the current data channel and negotiates a new one at once,
    /// staying on the relay meanwhile.
    pub fn restart_direct(&mut self) {
        self.negotiator.restart(Instant::now());
    }

    /// The connection is routed on server session `route` (session path
    /// `path`, out on `ws`); a previous route goes down. With a data channel
    /// carrying the traffic, the relay waits as a standby.
    pub fn route_up(&mut self, route: SessionId, path: PathId, ws: WebSocket) {
        let now = Instant::now();
        if let Some((_, old, _)) = self.route.take() {
            self.session.handle_path_down(now, old);
        }
        self.route = Some((route, path, ws));
        let direct = self
            .session
            .current_path()
            .is_some_and(|p| self.negotiator.is_up(p));
        if direct {
            self.session.handle_path_standby(now, path);
        } else {
            self.session.handle_path_up(now, path);
        }
    }

    /// The relay route is gone (the link dropped, or the server ended it):
    /// the connection waits for another, on its data channel if it has one.
    pub fn route_down(&mut self) {
        if let Some((_, path, _)) = self.route.take() {
            self.session.handle_path_down(Instant::now(), path);
        }
    }

    /// The server session the connection is routed on.
    pub fn route(&self) -> Option<SessionId> {
        self.route.as_ref().map(|(r, _, _)| *r)
    }

    /// A relayed packet arrived.
    pub fn packet(&mut self, payload: Bytes) {
        if let Some((_, path, _)) = &self.route {
            self.session.handle_packet(Instant::now(), *path, payload);
        }
    }

    /// The server says the peer is gone, or the node stops.
    pub fn abort(&mut self, code: &str, message: &str) {
        if self.closed.is_none() && self.aborted.is_none() {
            self.aborted = Some(js::error(code, message));
            self.session.close(1, message);
        }
    }

    /// Sets the page's event handler and hands it what happened before, then
    /// the messages that waited for it (a turn after this sends their
    /// confirmations).
    pub fn set_handler(&mut self, handler: Function) -> Vec<(&'static str, JsValue)> {
        self.handler = Some(handler);
        let mut early = std::mem::take(&mut self.early);
        while let Some(m) = self.session.recv_message() {
            early.push(("message", js::bytes(&m.data)));
        }
        early
    }

    /// Sends a message; the promise settles when it is queued, or, with
    /// `confirm`, when the peer's application took it.
    pub fn send(&mut self, data: Bytes, confirm: bool, done: Deferred) {
        if let Some(e) = &self.closed {
            return done.reject(e);
        }
        if !self.queued.is_empty() {
            return self.queued.push_back((data, confirm, done));
        }
        self.try_send(data, confirm, done);
    }

    fn try_send(&mut self, data: Bytes, confirm: bool, done: Deferred) {
        match self.session.send_message(data.clone(), confirm) {
            Ok(id) if confirm => {
                self.confirms.insert(id, done);
            }
            Ok(_) => done.resolve(&JsValue::UNDEFINED),
            Err(SendMessageError::Blocked) => self.queued.push_back((data, confirm, done)),
            Err(SendMessageError::TooLarge { max }) => done.reject(&js::error(
                "MessageTooLarge",
                &format!(
                    "the message exceeds the peer's limit of {max} bytes: split it or use a stream"
                ),
            )),
            Err(e) => done.reject(&js::error("Closed", &e.to_string())),
        }
    }

    /// Opens a stream.
    pub fn open_stream(&mut self) -> Result<StreamId, JsValue> {
        if let Some(e) = &self.closed {
            return Err(e.clone());
        }
        self.session.open_stream().map_err(|e| match e {
            session::OpenError::Limit => js::error(
                "TooManyStreams",
                "the peer's limit of open streams is reached: finish a stream first",
            ),
            e => js::error("Closed", &e.to_string()),
        })
    }

    /// Writes all of `data` to stream `id`; the promise settles once the
    /// session took the last byte (backpressure: it waits for credit).
    pub fn write(&mut self, id: StreamId, data: Vec<u8>, done: Deferred) {
        if self.writers.contains_key(&id) {
            return done.reject(&js::error(
                "WriteInProgress",
                "a write on this stream is still waiting: await it before the next",
            ));
        }
        let pending = PendingWrite {
            data,
            offset: 0,
            done,
        };
        self.continue_write(id, pending);
    }

    fn continue_write(&mut self, id: StreamId, mut w: PendingWrite) {
        while w.offset < w.data.len() {
            match self.session.stream(id).write(&w.data[w.offset..]) {
                Ok(n) => w.offset += n,
                Err(WriteError::Blocked) => {
                    self.writers.insert(id, w);
                    return;
                }
                Err(e) => return w.done.reject(&write_error(e)),
            }
        }
        w.done.resolve(&JsValue::UNDEFINED);
    }

    /// Reads from stream `id`: the promise settles with bytes, or `null` at
    /// its end.
    pub fn read(&mut self, id: StreamId, done: Deferred) {
        if self.readers.contains_key(&id) {
            return done.reject(&js::error(
                "ReadInProgress",
                "a read on this stream is still waiting: await it before the next",
            ));
        }
        self.continue_read(id, done);
    }

    fn continue_read(&mut self, id: StreamId, done: Deferred) {
        match self.session.stream(id).read(READ_CHUNK) {
            Ok(Some(chunk)) => done.resolve(&js::bytes(&chunk)),
            Ok(None) => done.resolve(&JsValue::NULL),
            Err(ReadError::Blocked) => {
                if let Some(e) = &self.closed {
                    done.reject(e);
                } else {
                    self.readers.insert(id, done);
                }
            }
            Err(ReadError::Reset(code)) => done.reject(&js::error(
                "Reset",
                &format!("the peer reset the stream with code {code}"),
            )),
            Err(e) => done.reject(&js::error("Stopped", &e.to_string())),
        }
    }

    /// Ends the send side of stream `id` after what was written.
    pub fn finish(&mut self, id: StreamId) -> Result<(), JsValue> {
        self.session.stream(id).finish().map_err(write_error)
    }

    /// Abandons the send side of stream `id`.
    pub fn reset(&mut self, id: StreamId, code: u32) -> Result<(), JsValue> {
        if let Some(w) = self.writers.remove(&id) {
            w.done
                .reject(&js::error("Reset", "the stream was reset locally"));
        }
        self.session.stream(id).reset(code).map_err(write_error)
    }

    /// Stops the receive side of stream `id`.
    pub fn stop(&mut self, id: StreamId, code: u32) -> Result<(), JsValue> {
        if let Some(r) = self.readers.remove(&id) {
            r.resolve(&JsValue::NULL);
        }
        self.session
            .stream(id)
            .stop(code)
            .map_err(|e| js::error("Stopped", &e.to_string()))
    }

    /// Closes after everything sent so far arrived; the promise settles once
    /// the connection ended.
    pub fn close(&mut self, done: Deferred) {
        if self.closed.is_some() {
            return done.resolve(&JsValue::UNDEFINED);
        }
        self.closing.get_or_insert_with(Vec::new).push(done);
    }

    fn fail_all(&mut self, e: &JsValue) {
        if let Some((d, _)) = self.waiting.take() {
            d.reject(e);
        }
        for (_, d) in self.confirms.drain() {
            d.reject(e);
        }
        for (_, _, d) in self.queued.drain(..) {
            d.reject(e);
        }
        for (_, d) in self.readers.drain() {
            d.reject(e);
        }
        for (_, w) in self.writers.drain() {
            w.done.reject(e);
        }
    }

    fn event(&mut self, ev: Event, out: &mut Vec<Out>) {
        let now = Instant::now();
        match ev {
            Event::Connected => {
                if let Some((d, value)) = self.waiting.take() {
                    d.resolve(&value);
                }
                self.negotiator.handle_connected(now);
            }
            // A serving task takes them itself, woken after this turn.
            Event::StreamOpened(_) if self.serving => {}
            Event::StreamOpened(_) => {
                while let Some(id) = self.session.accept_stream() {
                    out.push(Out::Event("stream", (id.0 as f64).into()));
                }
            }
            Event::StreamReadable(id) => {
                if let Some(d) = self.readers.remove(&id) {
                    self.continue_read(id, d);
                }
            }
            Event::StreamWritable(id) => {
                if let Some(w) = self.writers.remove(&id) {
                    self.continue_write(id, w);
                }
            }
            Event::StreamOpenable => out.push(Out::Event("streamopenable", JsValue::UNDEFINED)),
            // Taking a message is what confirms it to its sender: messages stay
            // in the session (its bounded queue holds the sender back) until
            // the page has a handler to hand them to.
            Event::MessageReceived if self.handler.is_some() => {
                while let Some(m) = self.session.recv_message() {
                    out.push(Out::Event("message", js::bytes(&m.data)));
                }
            }
            Event::MessageReceived => {}
            Event::MessageWritable => {
                let queued: Vec<_> = self.queued.drain(..).collect();
                for (data, confirm, done) in queued {
                    if self.queued.is_empty() {
                        self.try_send(data, confirm, done);
                    } else {
                        self.queued.push_back((data, confirm, done));
                    }
                }
            }
            Event::MessageConfirmed(id) => {
                if let Some(d) = self.confirms.remove(&id) {
                    d.resolve(&JsValue::UNDEFINED);
                }
            }
            Event::PathSignal => {
                while let Some(raw) = self.session.recv_path_signal() {
                    if let Ok(signal) = DirectSignal::decode(&raw) {
                        self.negotiator.handle_signal(now, signal);
                    }
                }
            }
            Event::Slow => out.push(Out::Event("slow", JsValue::UNDEFINED)),
            Event::PathFailed(path) => self.negotiator.handle_silent(now, path),
            Event::PathChanged(_) => {
                let path = self.path();
                if path != self.told_path {
                    self.told_path = path;
                    out.push(Out::Event("pathchange", path.into()));
                }
            }
            Event::Closed { reason } => {
                let e = self.aborted.take().unwrap_or_else(|| {
                    let (code, message) = close_reason(&reason);
                    js::error(code, &message)
                });
                self.fail_all(&e);
                for d in self.closing.take().unwrap_or_default() {
                    d.resolve(&JsValue::UNDEFINED);
                }
                self.closed = Some(e.clone());
                self.rtc = None;
                out.push(Out::Event("close", e));
                out.push(Out::Forget);
            }
        }
    }

    /// Carries out the negotiator's actions; whether there were any.
    fn negotiate(&mut self) -> bool {
        let now = Instant::now();
        let mut any = false;
        while let Some(action) = self.negotiator.poll_action() {
            any = true;
            match action {
                Action::Signal(signal) => {
                    let _ = self.session.send_path_signal(signal.encode().into());
                }
                Action::Start {
                    path,
                    attempt,
                    kind: Kind::WebRtc,
                    begin,
                } => {
                    let offer = match begin {
                        Begin::AnswerSdp(sdp) => Some(sdp),
                        _ => None,
                    };
                    self.rtc = None;
                    let me = self.me.clone();
                    let emit = Rc::new(move |ev| {
                        if let Some(conn) = me.upgrade() {
                            conn.borrow_mut().rtc_event(path, ev);
                            turn(&conn);
                        }
                    });
                    match RtcAttempt::start(attempt, offer, &self.ice_servers, emit) {
                        Ok(a) => self.rtc = Some((path, a)),
                        Err(_) => self.negotiator.handle_failed(now, path),
                    }
                }
                // This side never offers QUIC, and refuses the peer's.
                Action::Start { path, .. } => self.negotiator.handle_failed(now, path),
                Action::Stop(path) => {
                    if self.rtc.as_ref().is_some_and(|(p, _)| *p == path) {
                        self.rtc = None;
                    }
                }
                Action::Deliver(path, signal) => {
                    if let Some((p, a)) = &self.rtc
                        && *p == path
                    {
                        let me = self.me.clone();
                        a.deliver(
                            signal,
                            Rc::new(move |ev| {
                                if let Some(conn) = me.upgrade() {
                                    conn.borrow_mut().rtc_event(path, ev);
                                    turn(&conn);
                                }
                            }),
                        );
                    }
                }
                Action::Up(path) => self.session.handle_path_up(now, path),
                Action::Down(path) => self.session.handle_path_down(now, path),
            }
        }
        any
    }

    /// What the WebRTC attempt on `path` reports.
    fn rtc_event(&mut self, path: PathId, ev: RtcEvent) {
        if self.rtc.as_ref().is_none_or(|(p, _)| *p != path) {
            return;
        }
        let now = Instant::now();
        match ev {
            RtcEvent::Signal(signal) => self.negotiator.handle_attempt_signal(path, signal),
            RtcEvent::Open => self.negotiator.handle_open(now, path),
            RtcEvent::Packet(packet) => self.session.handle_packet(now, path, packet),
            RtcEvent::Drained => {}
            RtcEvent::Failed => {
                self.rtc = None;
                self.negotiator.handle_failed(now, path);
            }
        }
    }

    /// Hands the session's packets to the WebSocket; false if its buffer is
    /// full and the rest must wait.
    fn transmit(&mut self) -> bool {
        let now = Instant::now();
        loop {
            let full = match (self.session.current_path(), &self.route) {
                (Some(path), Some((_, relay, ws))) if path == *relay => {
                    ws.buffered_amount() as f64 > WS_HIGH_WATER
                }
                (Some(path), _) => self
                    .rtc
                    .as_ref()
                    .is_some_and(|(p, a)| *p == path && a.buffered() > rtc::HIGH_WATER),
                (None, _) => false,
            };
            if full {
                self.session.handle_path_full();
                return false;
            }
            let Some(t) = self.session.poll_transmit(now) else {
                return true;
            };
            if let Some((route, path, ws)) = &self.route
                && t.path == *path
            {
                let frame = relay::encode_frame(*route, &t.payload);
                let _ = ws.send_with_u8_array(&frame);
            } else if let Some((p, a)) = &self.rtc
                && *p == t.path
            {
                a.send(&t.payload);
            }
        }
    }

    fn arm_timer(&mut self, ws_full: bool) {
        let now = Instant::now();
        let mut deadline = [self.session.poll_timeout(), self.negotiator.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if ws_full {
            let soon = now + std::time::Duration::from_millis(WS_RETRY_MS as u64);
            deadline = Some(deadline.map_or(soon, |d| d.min(soon)));
        }
        if let Some((handle, at)) = &self.timer {
            if Some(*at) == deadline {
                return;
            }
            js::clear_timeout(handle);
            self.timer = None;
        }
        let (Some(at), Some(fire)) = (deadline, self.timer_fn.as_ref()) else {
            return;
        };
        let ms = at.saturating_duration_since(now).as_secs_f64() * 1000.0;
        let callback: &Function = fire.as_ref().unchecked_ref();
        if let Some(handle) = js::set_timeout(callback, ms.ceil()) {
            self.timer = Some((handle, at));
        }
    }
}

/// Runs a turn of `conn`, then tells the page what happened.
pub(crate) fn turn(conn: &ConnRef) {
    let mut out = Vec::new();
    let mut wake = Vec::new();
    let (handler, route, forget) = {
        let mut c = conn.borrow_mut();
        let mut full = false;
        for _ in 0..64 {
            full = !c.transmit();
            let mut any = false;
            while let Some(ev) = c.session.poll_event() {
                any = true;
                c.event(ev, &mut out);
            }
            if any || c.closed.is_some() {
                wake.append(&mut c.wakers);
            }
            any |= c.negotiate();
            if c.closing.is_some() && c.closed.is_none() && c.session.send_buffered() == 0 {
                c.session.close(0, "closed");
                any = true;
            }
            if !any || full {
                break;
            }
        }
        if c.closed.is_some() {
            if let Some((handle, _)) = c.timer.take() {
                js::clear_timeout(&handle);
            }
        } else {
            c.arm_timer(full);
        }
        let forget = if c.closed.is_some() {
            c.forget.take()
        } else {
            None
        };
        let route = c.route.as_ref().map(|(r, _, ws)| (*r, ws.clone()));
        (c.handler.clone(), route, forget)
    };
    if let Some(forget) = forget {
        forget();
    }
    for waker in wake {
        waker.wake();
    }
    for item in out {
        match item {
            Out::Event(kind, detail) => match &handler {
                Some(h) => {
                    let _ = h.call2(&JsValue::UNDEFINED, &kind.into(), &detail);
                }
                None => conn.borrow_mut().early.push((kind, detail)),
            },
            Out::Forget => {
                if let Some((session, ws)) = &route {
                    let _ = ws.send_with_str(&ClientMessage::Close { session: *session }.encode());
                }
            }
        }
    }
}

/// Waits until `ready` returns a value, trying again after every turn of
/// `conn` in which its session had events (data, credit, a message, its end).
/// For Rust tasks on the connection; `ready` must not call into the page.
pub(crate) fn until<'a, T>(
    conn: &'a ConnRef,
    mut ready: impl FnMut(&mut Conn) -> Option<T> + 'a,
) -> impl std::future::Future<Output = T> + 'a {
    std::future::poll_fn(move |cx| {
        let mut c = conn.borrow_mut();
        match ready(&mut c) {
            Some(v) => Poll::Ready(v),
            None => {
                if !c.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    c.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    })
}

/// Rust-side stream and message calls, for tasks that drive a protocol on
/// the connection themselves (a share download) instead of the page.
impl Conn {
    /// Why the connection ended, if it did.
    fn ended(&self) -> Option<JsValue> {
        self.closed.clone().or_else(|| self.aborted.clone())
    }

    /// The next message from the peer, taken (which confirms it), or why
    /// there is none; `None` while nothing is there yet.
    pub fn poll_message(&mut self) -> Option<Result<Bytes, JsValue>> {
        if let Some(m) = self.session.recv_message() {
            return Some(Ok(m.data));
        }
        self.ended().map(Err)
    }

    /// Opens a stream, or `None` while the peer's stream limit is reached.
    pub fn poll_open(&mut self) -> Option<Result<StreamId, JsValue>> {
        if let Some(e) = self.ended() {
            return Some(Err(e));
        }
        match self.session.open_stream() {
            Ok(id) => Some(Ok(id)),
            Err(session::OpenError::Limit) => None,
            Err(e) => Some(Err(js::error("Closed", &e.to_string()))),
        }
    }

    /// The next stream the peer opened (for a connection that is
    /// [`Conn::serving`]), or why there is none; `None` while none waits.
    pub fn poll_accept(&mut self) -> Option<Result<StreamId, JsValue>> {
        if let Some(id) = self.session.accept_stream() {
            return Some(Ok(id));
        }
        self.ended().map(Err)
    }

    /// Writes some of `data` to stream `id`: how much, or `None` while it
    /// waits for credit.
    pub fn poll_write(&mut self, id: StreamId, data: &[u8]) -> Option<Result<usize, JsValue>> {
        if let Some(e) = self.ended() {
            return Some(Err(e));
        }
        match self.session.stream(id).write(data) {
            Ok(n) => Some(Ok(n)),
            Err(WriteError::Blocked) => None,
            Err(e) => Some(Err(write_error(e))),
        }
    }

    /// Reads up to `max` bytes of stream `id` (`Ok(None)` at its end), or
    /// `None` while nothing is buffered.
    pub fn poll_read(
        &mut self,
        id: StreamId,
        max: usize,
    ) -> Option<Result<Option<Bytes>, JsValue>> {
        match self.session.stream(id).read(max) {
            Ok(chunk) => Some(Ok(chunk)),
            Err(ReadError::Blocked) => self.ended().map(Err),
            Err(ReadError::Reset(code)) => Some(Err(js::error(
                "Reset",
                &format!("the peer reset the stream with code {code}"),
            ))),
            Err(e) => Some(Err(js::error("Stopped", &e.to_string()))),
        }
    }
}

fn write_error(e: WriteError) -> JsValue {
    match e {
        WriteError::Stopped(code) => js::error(
            "Stopped",
            &format!("the peer stopped reading the stream (code {code})"),
        ),
        WriteError::Finished => js::error("Finished", "the stream's send side is closed"),
        e => js::error("UnknownStream", &e.to_string()),
    }
}

/// The native library's close-reason names, with a message.
fn close_reason(reason: &session::CloseReason) -> (&'static str, String) {
    use session::CloseReason as R;
    match reason {
        R::Local { .. } => ("Local", "closed by this side".into()),
        R::Remote { code: 0, .. } => ("PeerClosed", "the peer closed the connection".into()),
        R::Remote { code, reason } if *code == CLOSE_INTEGRITY || *code == CLOSE_PROTOCOL => (
            "Protocol",
            format!("the peer reported a protocol error: {reason}"),
        ),
        R::Remote { reason, .. } => ("PeerDisconnected", format!("the peer went away: {reason}")),
        R::IdleTimeout => (
            "TimedOut",
            "nothing arrived from the peer for the idle time-out".into(),
        ),
        R::Integrity => (
            "Integrity",
            "a packet failed authentication: the path alters data".into(),
        ),
        R::Handshake(e) => ("Handshake", format!("the end-to-end handshake failed: {e}")),
        other => ("Protocol", other.to_string()),
    }
}
