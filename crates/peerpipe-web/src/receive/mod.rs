//! Receiving files by one-time code: what `peerpipe receive` does, in the
//! browser, with the page's own sink for the bytes.
//!
//! On the code's connection the sender names its collection by hash (a
//! message, see [`announce`]); the receiver fetches the collection and the
//! group hashes of every blob over share streams ([`peerpipe_share::wire`]),
//! checks both against the hash, and shows the page what is offered
//! ([`WasmReceive`]). If the page accepts, [`fetching`] drives the sans-IO
//! scheduler ([`peerpipe_share::fetch::Fetch`]) with requests for 16 KiB
//! groups, verifying each against its blob's outboard in wasm as it arrives,
//! and [`writing`] hands the verified groups to the page's sink in file
//! order, awaiting every write. Memory stays bounded: the scheduler keeps at
//! most [`MAX_IN_FLIGHT`] bytes requested, and no more is requested while
//! [`WRITE_AHEAD`] verified bytes wait for the sink. At the end the sender is
//! told (it exits then), or told why not (it exits with that reason).

pub(crate) mod announce;
pub(crate) mod fetching;
mod resume;
mod writing;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use js_sys::{Array, Function, Promise};
use peerpipe_share::collection::{Collection, Layout};
use peerpipe_share::fetch::Fetch;
use peerpipe_share::hash::{Hash, Outboard};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};

use crate::conn::{ConnRef, turn};
use crate::connection::WasmConnection;
use crate::js::{self, Deferred, Obj};
use crate::task::{self, Wakers};

/// The most bytes requested from the sender and not yet arrived.
pub const MAX_IN_FLIGHT: u64 = 8 << 20;
/// Verified bytes waiting for the page's sink past which nothing more is
/// requested.
pub const WRITE_AHEAD: u64 = 8 << 20;
/// The most chunk groups (64 GiB) a collection may have here: the group
/// hashes (32 bytes each) and the scheduler's state stay within a page's
/// memory.
pub const MAX_GROUPS: u64 = 1 << 22;
/// How long the sender has to name its files, and to answer a metadata request.
const REQUEST_MS: f64 = 30_000.0;
/// How long the receive waits for the next group before it gives up.
const STALL_MS: f64 = 60_000.0;
/// How long the last words to the sender (done, or why not) may take.
const GOODBYE_MS: f64 = 10_000.0;

/// Where a receive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The collection is known; the page decides.
    Offered,
    /// The page accepted: fetching and writing.
    Accepted,
    /// Declined, failed, cancelled or finished.
    Over,
}

/// A receive's state, shared by its page handle and its tasks.
struct State {
    conn: ConnRef,
    hash: Hash,
    /// The sender offers a short text (`send --text`), not files to keep.
    text: bool,
    collection: Collection,
    layout: Layout,
    outboards: Vec<Outboard>,
    phase: Phase,
    /// The verified groups at the start of each blob that the sink held
    /// already (resuming), once accepted.
    kept: Vec<u64>,
    /// The scheduler, once accepted. Its only peer is the sender, `0`.
    fetch: Option<Fetch<u32>>,
    /// Verified groups not yet handed to the sink, by global group.
    ready: BTreeMap<u64, Vec<u8>>,
    /// Bytes in `ready`.
    ready_bytes: u64,
    /// Fresh verified bytes so far.
    verified: u64,
    /// Requests whose streams are still open.
    requests: usize,
    /// Why the receive failed, once it did.
    failed: Option<JsValue>,
    wakers: Wakers,
}

type StateRef = Rc<RefCell<State>>;

/// Wakes every task waiting on `state`.
fn notify(state: &StateRef) {
    let wakers = state.borrow_mut().wakers.take();
    for w in wakers {
        w.wake();
    }
}

/// Waits until `ready` returns a value, trying again whenever `state` is
/// notified.
fn wait<'a, T>(
    state: &'a StateRef,
    mut ready: impl FnMut(&mut State) -> Option<T> + 'a,
) -> impl std::future::Future<Output = T> + 'a {
    std::future::poll_fn(move |cx| {
        let mut s = state.borrow_mut();
        match ready(&mut s) {
            Some(v) => std::task::Poll::Ready(v),
            None => {
                s.wakers.register(cx.waker());
                std::task::Poll::Pending
            }
        }
    })
}

/// Records the first failure; every task ends on it.
fn fail(state: &StateRef, e: JsValue) {
    {
        let mut s = state.borrow_mut();
        if s.failed.is_none() {
            s.failed = Some(e);
        }
    }
    notify(state);
}

/// The `code` of an error from this module (or of the connection).
pub(crate) fn code_of(e: &JsValue) -> String {
    js_sys::Reflect::get(e, &"code".into())
        .ok()
        .and_then(|c| c.as_string())
        .unwrap_or_default()
}

/// The message of an `Error`, or the value as text.
pub(crate) fn message_of(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".to_owned())
}

/// Sends `data` as a message (confirmed: settles once the peer's
/// application took it) within `ms`.
pub(crate) async fn say(
    conn: &ConnRef,
    data: Bytes,
    confirm: bool,
    ms: f64,
) -> Result<(), JsValue> {
    let (promise, done) = Deferred::new();
    conn.borrow_mut().send(data, confirm, done);
    turn(conn);
    match task::timeout(ms, JsFuture::from(promise)).await {
        Some(r) => r.map(|_| ()),
        None => Err(js::error("TimedOut", "the sender did not take the message")),
    }
}

/// Closes `conn` once what was sent arrived, within [`GOODBYE_MS`].
pub(crate) async fn close(conn: &ConnRef) {
    let (promise, done) = Deferred::new();
    conn.borrow_mut().close(done);
    turn(conn);
    let _ = task::timeout(GOODBYE_MS, JsFuture::from(promise)).await;
}

/// Tells the sender why the receive ends (when it should hear it) and closes.
async fn end_with(conn: &ConnRef, e: &JsValue) {
    if let Some(reason) = announce::reason_for_sender(&code_of(e), &message_of(e)) {
        let _ = say(conn, announce::failed(&reason), false, GOODBYE_MS).await;
    }
    close(conn).await;
}

/// Starts receiving on `conn`, a code's connection to a sender: settles with
/// the [`WasmReceive`] once the offer is known and verified.
pub(crate) fn start(conn: ConnRef) -> Promise {
    future_to_promise(async move {
        match offer(&conn).await {
            Ok(state) => Ok(WasmReceive {
                state: Rc::new(RefCell::new(state)),
            }
            .into()),
            Err(e) => {
                end_with(&conn, &e).await;
                Err(e)
            }
        }
    })
}

/// The sender's collection, named and verified.
async fn offer(conn: &ConnRef) -> Result<State, JsValue> {
    let (hash, text) = announce::announced(conn, REQUEST_MS).await?;
    let (collection, outboards) = task::timeout(REQUEST_MS, fetching::metadata(conn, hash))
        .await
        .ok_or_else(|| {
            js::error(
                "TimedOut",
                "the sender did not send the list of files in time",
            )
        })??;
    if text && (collection.entries().len() != 1 || collection.total_size() > announce::MAX_TEXT) {
        return Err(js::error(
            "Protocol",
            "the sender broke the share protocol: a text offer that is not one short text",
        ));
    }
    let layout = Layout::new(&collection);
    Ok(State {
        conn: conn.clone(),
        hash,
        text,
        collection,
        layout,
        outboards,
        phase: Phase::Offered,
        kept: Vec::new(),
        fetch: None,
        ready: BTreeMap::new(),
        ready_bytes: 0,
        verified: 0,
        requests: 0,
        failed: None,
        wakers: Wakers::default(),
    })
}

/// Files offered by a sender over a one-time code. The JavaScript package
/// wraps it as `Receive`; this is the low-level handle it uses.
#[wasm_bindgen]
pub struct WasmReceive {
    state: StateRef,
}

#[wasm_bindgen]
impl WasmReceive {
    /// Claims nothing itself: starts receiving on `conn`, the connection of a
    /// claimed code (`WasmNode.claimCode`), which the receive then owns.
    /// Settles with the receive once the sender named its files and their
    /// list arrived verified; fails with an `Error` whose `code` says why
    /// (`SenderStopped`, `NotSending`, `Corrupt`, `Collection`, `TooLarge`,
    /// `TimedOut`, or how the connection ended).
    pub fn start(conn: &WasmConnection) -> Promise {
        start(conn.conn().clone())
    }

    /// The offered files, in order: `[{ path, size }]`.
    #[wasm_bindgen(getter)]
    pub fn files(&self) -> Array {
        self.state
            .borrow()
            .collection
            .entries()
            .iter()
            .map(|e| {
                Obj::new()
                    .set("path", e.path.as_str())
                    .set("size", e.size as f64)
                    .build()
            })
            .collect()
    }

    /// The bytes of all offered files.
    #[wasm_bindgen(getter)]
    pub fn total(&self) -> f64 {
        self.state.borrow().collection.total_size() as f64
    }

    /// What is offered: `"files"`, or `"text"` (one short file, at most
    /// 64 KiB, meant to be shown rather than saved: `peerpipe send --text`).
    #[wasm_bindgen(getter)]
    pub fn kind(&self) -> String {
        if self.state.borrow().text {
            "text"
        } else {
            "files"
        }
        .to_owned()
    }

    /// The collection's BLAKE3 hash, in hex.
    #[wasm_bindgen(getter)]
    pub fn hash(&self) -> String {
        self.state.borrow().hash.to_hex()
    }

    /// The sender's device: `{ id, label }`.
    #[wasm_bindgen(getter)]
    pub fn peer(&self) -> JsValue {
        let s = self.state.borrow();
        let c = s.conn.borrow();
        Obj::new()
            .set("id", c.peer.id.to_string())
            .set("label", c.peer.label.as_str())
            .build()
    }

    /// The path the data takes now: `"relay"` or `"webrtc"`.
    #[wasm_bindgen(getter)]
    pub fn path(&self) -> String {
        self.state.borrow().conn.borrow().path().to_owned()
    }

    /// Fetches the files and writes them through `open(path, size, offset)`,
    /// which settles with a file sink `{ write(bytes), close(), abort(reason)
    /// }` (each may return a promise, awaited before the next call) that
    /// keeps the first `offset` bytes of the file and writes on from there.
    /// Every 16 KiB group is verified before it is written; files are
    /// written in order. With `existing(path, size)` (settling with a `Blob`
    /// of what the sink holds of the file from an earlier attempt, or
    /// `null`), what it holds is verified first and only the rest is
    /// fetched: `offset` is then the verified start. `on_event(type,
    /// detail)` hears `progress` (`{ bytes, verified, total, path,
    /// fileBytes, fileSize }`) and `file` (`{ path, size }`, a file written
    /// and closed). Settles with `{ bytes, files, seconds, fetched, reused }`
    /// once every file is closed and the sender was told;
    /// fails with an `Error` whose `code` is `Corrupt`, `Protocol`,
    /// `NotHeld`, `Sink`, `Cancelled`, `TimedOut`, `Busy` or how the
    /// connection ended.
    pub fn accept(
        &self,
        open: Function,
        on_event: Function,
        existing: Option<Function>,
    ) -> Promise {
        let state = self.state.clone();
        let phase = state.borrow().phase;
        if phase != Phase::Offered {
            return Promise::reject(&js::error(
                "Busy",
                "this receive was accepted, declined or cancelled already",
            ));
        }
        state.borrow_mut().phase = Phase::Accepted;
        future_to_promise(async move {
            let result = run(&state, &open, &on_event, existing.as_ref()).await;
            state.borrow_mut().phase = Phase::Over;
            let conn = state.borrow().conn.clone();
            match result {
                Ok(report) => Ok(report),
                Err(e) => {
                    fail(&state, e.clone());
                    end_with(&conn, &e).await;
                    Err(e)
                }
            }
        })
    }

    /// Declines the offer: the sender is told and nothing is fetched.
    /// Settles once the connection closed.
    pub fn decline(&self) -> Promise {
        let state = self.state.clone();
        let phase = state.borrow().phase;
        if phase != Phase::Offered {
            return Promise::reject(&js::error(
                "Busy",
                "this receive was accepted, declined or cancelled already",
            ));
        }
        state.borrow_mut().phase = Phase::Over;
        future_to_promise(async move {
            let conn = state.borrow().conn.clone();
            end_with(&conn, &js::error("Declined", "declined")).await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Stops the receive: before `accept`, as `decline`; during it, the
    /// transfer ends (`accept` fails with `Cancelled`, open sinks are
    /// aborted) and the sender is told.
    pub fn cancel(&self) {
        let phase = self.state.borrow().phase;
        match phase {
            Phase::Offered => {
                let _ = self.decline();
            }
            Phase::Accepted => fail(
                &self.state,
                js::error("Cancelled", "the receive was cancelled"),
            ),
            Phase::Over => {}
        }
    }
}

/// The accepted receive: schedule, fetch, verify, write, and tell the sender.
async fn run(
    state: &StateRef,
    open: &Function,
    on_event: &Function,
    existing: Option<&Function>,
) -> Result<JsValue, JsValue> {
    let started = js_sys::Date::now();
    let kept = match existing {
        Some(existing) => resume::kept(state, existing).await?,
        None => vec![0; state.borrow().layout.blobs().len()],
    };
    state.borrow_mut().kept = kept;
    fetching::begin(state);
    writing::write_files(state, open, on_event).await?;
    // Every file is written; the answers still open must end as they should
    // (a sender that sends more than asked broke the protocol).
    let settled = wait(state, |s| {
        if let Some(e) = &s.failed {
            return Some(Err(e.clone()));
        }
        (s.requests == 0).then_some(Ok(()))
    });
    if let Some(Err(e)) = task::timeout(GOODBYE_MS, settled).await {
        return Err(e);
    }
    let conn = state.borrow().conn.clone();
    // Everything is verified and written: a sender that went away just now
    // does not make that a failure.
    let _ = say(&conn, announce::done(), true, GOODBYE_MS).await;
    close(&conn).await;
    let s = state.borrow();
    Ok(Obj::new()
        .set("bytes", s.collection.total_size() as f64)
        .set("files", s.collection.entries().len() as f64)
        .set("seconds", (js_sys::Date::now() - started) / 1000.0)
        .set("fetched", s.verified as f64)
        .set(
            "reused",
            (s.layout.range_len(0..s.layout.groups()) - s.verified) as f64,
        )
        .build())
}
