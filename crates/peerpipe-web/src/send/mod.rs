//! Sending files by one-time code: what `peerpipe send` does, from the
//! page's `Blob`s (picked or dropped files, a folder's files).
//!
//! The paths are checked as a collection's are ([`Collection::new`]) before
//! anything else, so that a bad list is refused before a code is taken.
//! [`hashing`] then hashes the files while the page shows the code; a
//! receiver that comes early is told to wait ([`announce::preparing`]). On
//! the code's connection the collection is named by hash
//! ([`announce::named`]) and [`serving`] answers the receiver's share
//! requests, reading the files in bounded slices at the pace the stream's
//! credit allows. The send ends when the receiver says it has everything
//! ([`announce::done`]), or why not.

mod hashing;
mod serving;

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Function, Promise};
use peerpipe_share::collection::{Collection, CollectionError, Entry};
use peerpipe_share::hash::Hash;
use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise, spawn_local};
use web_sys::Blob;

use crate::conn::{ConnRef, turn, until};
use crate::connection::WasmConnection;
use crate::js::{self, Deferred, Obj};
use crate::receive::announce::{self, Said};
use crate::receive::{close, say};
use crate::task::{self, Wakers};
use hashing::Content;

/// How long a message to the receiver may take to be queued.
const GOODBYE_MS: f64 = 10_000.0;
/// How long a send that ends early waits for what it queued to arrive
/// before it drops the connection.
const CLOSE_MS: f64 = 3_000.0;

/// A send's state, shared by its page handle and its tasks.
struct State {
    /// The files as the page gave them, in its order.
    paths: Vec<String>,
    files: Vec<Blob>,
    total: u64,
    /// The hashed collection once hashing ended, or why it failed.
    hashed: Option<Result<Rc<Content>, JsValue>>,
    /// Why the send stops (cancelled, a file failed), once it does.
    stopped: Option<JsValue>,
    /// The code's connection, once the receiver came.
    conn: Option<ConnRef>,
    /// Bytes of file data served so far.
    sent: u64,
    /// Whether `serve` was called.
    serving: bool,
    on_event: Function,
    wakers: Wakers,
}

type StateRef = Rc<RefCell<State>>;

/// Tells the page `kind` with `detail`, nothing borrowed.
fn emit(state: &StateRef, kind: &str, detail: JsValue) {
    let handler = state.borrow().on_event.clone();
    let _ = handler.call2(&JsValue::UNDEFINED, &kind.into(), &detail);
}

/// Wakes every task waiting on `state`.
fn notify(state: &StateRef) {
    let wakers = state.borrow_mut().wakers.take();
    for w in wakers {
        w.wake();
    }
}

/// Records why the send stops (the first reason wins); every task ends on it.
fn stop(state: &StateRef, e: JsValue) {
    {
        let mut s = state.borrow_mut();
        if s.stopped.is_none() {
            s.stopped = Some(e);
        }
    }
    notify(state);
}

/// The typed error of a list of files that is no collection.
fn path_error(e: &CollectionError) -> JsValue {
    let code = match e {
        CollectionError::UnsafePath { .. } => "BadPath",
        CollectionError::Conflict(_) => "Conflict",
        CollectionError::TooLarge => "TooLarge",
        _ => "BadPath",
    };
    js::error(code, &e.to_string())
}

/// The outcome of hashing, once it ended.
async fn hashed(state: &StateRef) -> Result<Rc<Content>, JsValue> {
    std::future::poll_fn(|cx| {
        let mut s = state.borrow_mut();
        if let Some(e) = &s.stopped {
            return std::task::Poll::Ready(Err(e.clone()));
        }
        match &s.hashed {
            Some(r) => std::task::Poll::Ready(r.clone()),
            None => {
                s.wakers.register(cx.waker());
                std::task::Poll::Pending
            }
        }
    })
    .await
}

/// What ends a send on `conn`: the receiver's last message, the
/// connection's end, or a stop of this side.
enum Ending {
    Message(bytes::Bytes),
    Stopped(JsValue),
}

/// The next message from the receiver, or why the send stops.
async fn next(state: &StateRef, conn: &ConnRef) -> Result<Ending, JsValue> {
    let mut message = std::pin::pin!(until(conn, |c| c.poll_message()));
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(m) = message.as_mut().poll(cx) {
            return std::task::Poll::Ready(m.map(Ending::Message));
        }
        let mut s = state.borrow_mut();
        if let Some(e) = &s.stopped {
            return std::task::Poll::Ready(Ok(Ending::Stopped(e.clone())));
        }
        s.wakers.register(cx.waker());
        std::task::Poll::Pending
    })
    .await
}

/// Ends the connection after `e`: a receiver still waiting for the names
/// hears why (when it is this side's own reason), what is queued gets
/// [`CLOSE_MS`] to arrive, then the connection is dropped.
async fn give_up(conn: &ConnRef, e: &JsValue) {
    let ours = matches!(crate::receive::code_of(e).as_str(), "Cancelled" | "File");
    if ours && conn.borrow().closed.is_none() {
        let reason = crate::receive::message_of(e);
        let _ = say(conn, announce::failed(&reason), false, GOODBYE_MS).await;
    }
    let (promise, done) = Deferred::new();
    conn.borrow_mut().close(done);
    turn(conn);
    let _ = task::timeout(CLOSE_MS, JsFuture::from(promise)).await;
    conn.borrow_mut().abort("Local", "the send ended");
    turn(conn);
}

/// The send on the code's connection `conn`, once the receiver came.
async fn run(state: &StateRef, conn: &ConnRef) -> Result<JsValue, JsValue> {
    let started = js_sys::Date::now();
    let ready = state.borrow().hashed.clone();
    let content = match ready {
        Some(r) => r?,
        None => {
            say(conn, announce::preparing(), false, GOODBYE_MS).await?;
            hashed(state).await?
        }
    };
    say(conn, announce::named(&content.hash), false, GOODBYE_MS).await?;
    spawn_local(serving::serve(state.clone(), conn.clone(), content.clone()));
    loop {
        let message = match next(state, conn).await? {
            Ending::Message(m) => m,
            Ending::Stopped(e) => return Err(e),
        };
        turn(conn);
        if message == announce::done() {
            close(conn).await;
            let s = state.borrow();
            return Ok(Obj::new()
                .set("bytes", s.total as f64)
                .set("files", s.paths.len() as f64)
                .set("sent", s.sent as f64)
                .set("seconds", (js_sys::Date::now() - started) / 1000.0)
                .build());
        }
        if let Said::Failed(why) = announce::parse(&message) {
            close(conn).await;
            return Err(match why.as_str() {
                announce::DECLINED => js::error(
                    "Declined",
                    "the receiver declined the files; nothing was sent",
                ),
                announce::ENDED => js::error(
                    "ReceiverStopped",
                    "the receiver ended the transfer (a problem on its side)",
                ),
                _ => js::error("ReceiverStopped", &format!("the receiver stopped: {why}")),
            });
        }
    }
}

/// Files sent over a one-time code. The JavaScript package wraps it as
/// `Send`; this is the low-level handle it uses.
#[wasm_bindgen]
pub struct WasmSend {
    state: StateRef,
}

#[wasm_bindgen]
impl WasmSend {
    /// Checks `paths` (relative, `/`-separated, as a collection's: no empty,
    /// `.` or `..` part, no backslash or NUL, no path twice, no file that is
    /// also a folder of another) with their `files` (`Blob`s, as many) and
    /// starts hashing them; `on_event(type, detail)` hears `hashing` (`{
    /// done, total }`) and, once serving, `progress` (`{ sent, total }`).
    /// Fails at once with an `Error` whose `code` is `BadPath`, `Conflict`,
    /// `TooLarge`, `NoFiles` or `BadFile` (not a `Blob`).
    #[wasm_bindgen(constructor)]
    pub fn new(paths: Vec<String>, files: Array, on_event: Function) -> Result<WasmSend, JsValue> {
        if paths.is_empty() {
            return Err(js::error("NoFiles", "there are no files to send"));
        }
        if files.length() as usize != paths.len() {
            return Err(js::error("BadFile", "every path needs its file"));
        }
        let mut blobs = Vec::with_capacity(paths.len());
        for (path, file) in paths.iter().zip(files.iter()) {
            let blob = file
                .dyn_into::<Blob>()
                .map_err(|_| js::error("BadFile", &format!("{path}: not a Blob or File")))?;
            blobs.push(blob);
        }
        // The same checks as the collection made after hashing, before it.
        let draft = paths
            .iter()
            .zip(&blobs)
            .map(|(path, blob)| Entry {
                path: path.clone(),
                size: blob.size() as u64,
                mode: 0,
                mtime: 0,
                hash: Hash::from_bytes([0; 32]),
            })
            .collect();
        let draft = Collection::new(draft).map_err(|e| path_error(&e))?;
        let state = Rc::new(RefCell::new(State {
            paths,
            files: blobs,
            total: draft.total_size(),
            hashed: None,
            stopped: None,
            conn: None,
            sent: 0,
            serving: false,
            on_event,
            wakers: Wakers::default(),
        }));
        let task = state.clone();
        spawn_local(async move {
            let result = hashing::hash_all(&task).await.map(Rc::new);
            task.borrow_mut().hashed = Some(result);
            notify(&task);
        });
        Ok(WasmSend { state })
    }

    /// The bytes of all files.
    #[wasm_bindgen(getter)]
    pub fn total(&self) -> f64 {
        self.state.borrow().total as f64
    }

    /// The path the data takes: `"relay"` or `"webrtc"`, or `null` before
    /// the receiver came.
    #[wasm_bindgen(getter)]
    pub fn path(&self) -> Option<String> {
        let s = self.state.borrow();
        s.conn.as_ref().map(|c| c.borrow().path().to_owned())
    }

    /// The collection's BLAKE3 hash in hex, once hashed (else `null`).
    #[wasm_bindgen(getter)]
    pub fn hash(&self) -> Option<String> {
        match &self.state.borrow().hashed {
            Some(Ok(content)) => Some(content.hash.to_hex()),
            _ => None,
        }
    }

    /// Settles once the files are hashed; fails as hashing did (`File`: a
    /// file could not be read; `Cancelled`).
    pub fn hashed(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move { hashed(&state).await.map(|_| JsValue::UNDEFINED) })
    }

    /// Sends on `conn`, the connection of this send's claimed code, which
    /// the send then owns: waits for hashing (the receiver is told to wait),
    /// names the collection and serves the receiver's requests. Settles
    /// with `{ bytes, files, sent, seconds }` once the receiver said it has
    /// everything, verified; fails with an `Error` whose `code` is
    /// `Declined`, `ReceiverStopped`, `Cancelled`, `File`, `Busy` or how the
    /// connection ended (`PeerClosed`, `PeerDisconnected`, `TimedOut`, ...).
    pub fn serve(&self, conn: &WasmConnection) -> Promise {
        let state = self.state.clone();
        if std::mem::replace(&mut state.borrow_mut().serving, true) {
            return Promise::reject(&js::error("Busy", "this send is serving already"));
        }
        let conn = conn.conn().clone();
        conn.borrow_mut().serving = true;
        state.borrow_mut().conn = Some(conn.clone());
        future_to_promise(async move {
            let result = run(&state, &conn).await;
            if let Err(e) = &result {
                stop(&state, e.clone());
                give_up(&conn, e).await;
            }
            result
        })
    }

    /// Stops the send: hashing and serving end, the receiver (if any) is
    /// told, and `serve` fails with `Cancelled`.
    pub fn cancel(&self) {
        stop(
            &self.state,
            js::error("Cancelled", "the sender cancelled the transfer"),
        );
    }
}
