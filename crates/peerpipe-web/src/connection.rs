//! [`WasmConnection`], the page's handle on a connection.

use bytes::Bytes;
use js_sys::{Function, Promise};
use peerpipe_proto::session::StreamId;
use wasm_bindgen::prelude::*;

use crate::conn::{ConnRef, turn};
use crate::js::{Deferred, Obj};

/// A connection to another device, end-to-end encrypted. The JavaScript
/// package wraps it as `Connection` (events, WHATWG streams); this is the
/// low-level handle it uses.
#[wasm_bindgen]
pub struct WasmConnection {
    inner: ConnRef,
}

impl From<ConnRef> for WasmConnection {
    fn from(inner: ConnRef) -> Self {
        Self { inner }
    }
}

impl WasmConnection {
    /// The connection this handle is on.
    pub(crate) fn conn(&self) -> &ConnRef {
        &self.inner
    }
}

fn stream_id(id: f64) -> StreamId {
    StreamId(id as u64)
}

#[wasm_bindgen]
impl WasmConnection {
    /// The device at the other end: `{ id, label }`.
    #[wasm_bindgen(getter)]
    pub fn peer(&self) -> JsValue {
        let c = self.inner.borrow();
        Obj::new()
            .set("id", c.peer.id.to_string())
            .set("label", c.peer.label.as_str())
            .build()
    }

    /// The server's id for the connection.
    #[wasm_bindgen(getter)]
    pub fn session(&self) -> String {
        self.inner.borrow().id.to_string()
    }

    /// What the connection was asked for with, if anything.
    #[wasm_bindgen(getter)]
    pub fn service(&self) -> Option<String> {
        self.inner.borrow().service.clone()
    }

    /// The path the traffic takes now: `"relay"` or `"webrtc"`.
    #[wasm_bindgen(getter)]
    pub fn path(&self) -> String {
        self.inner.borrow().path().to_owned()
    }

    /// Sets the event handler, `(type, detail) => void`. Types: `message`
    /// (detail: `Uint8Array`), `stream` (a stream id the peer opened),
    /// `streamopenable`, `pathchange` (the path), `slow`, `close` (an `Error`
    /// with a `code`). Events from before the handler was set are delivered now.
    #[wasm_bindgen(js_name = setHandler)]
    pub fn set_handler(&self, handler: Function) {
        let early = self.inner.borrow_mut().set_handler(handler.clone());
        for (kind, detail) in early {
            let _ = handler.call2(&JsValue::UNDEFINED, &kind.into(), &detail);
        }
        // The messages just handed over are taken: confirm them.
        turn(&self.inner);
    }

    /// Leaves the current data channel and negotiates a new one at once,
    /// staying on the relay meanwhile; nothing sent is lost or repeated. For a
    /// device whose network changed.
    #[wasm_bindgen(js_name = restartDirect)]
    pub fn restart_direct(&self) {
        self.inner.borrow_mut().restart_direct();
        turn(&self.inner);
    }

    /// Sends a message. Settles once it is queued, or with `confirm` once the
    /// peer's application took it.
    pub fn send(&self, data: &[u8], confirm: bool) -> Promise {
        let (promise, done) = Deferred::new();
        self.inner
            .borrow_mut()
            .send(Bytes::copy_from_slice(data), confirm, done);
        turn(&self.inner);
        promise
    }

    /// Opens a stream and returns its id.
    #[wasm_bindgen(js_name = openStream)]
    pub fn open_stream(&self) -> Result<f64, JsValue> {
        let id = self.inner.borrow_mut().open_stream()?;
        Ok(id.0 as f64)
    }

    /// Writes all of `data` to stream `id`; settles once the session took it
    /// (it waits for the peer's credit: backpressure).
    pub fn write(&self, id: f64, data: Vec<u8>) -> Promise {
        let (promise, done) = Deferred::new();
        self.inner.borrow_mut().write(stream_id(id), data, done);
        turn(&self.inner);
        promise
    }

    /// Reads from stream `id`: settles with a `Uint8Array`, or `null` at the
    /// end of the stream.
    pub fn read(&self, id: f64) -> Promise {
        let (promise, done) = Deferred::new();
        self.inner.borrow_mut().read(stream_id(id), done);
        turn(&self.inner);
        promise
    }

    /// Ends the send side of stream `id` after what was written.
    pub fn finish(&self, id: f64) -> Result<(), JsValue> {
        let r = self.inner.borrow_mut().finish(stream_id(id));
        turn(&self.inner);
        r
    }

    /// Abandons the send side of stream `id`: the peer's reads fail with `code`.
    pub fn reset(&self, id: f64, code: u32) -> Result<(), JsValue> {
        let r = self.inner.borrow_mut().reset(stream_id(id), code);
        turn(&self.inner);
        r
    }

    /// Stops reading stream `id`: the peer's writes fail with `code`.
    pub fn stop(&self, id: f64, code: u32) -> Result<(), JsValue> {
        let r = self.inner.borrow_mut().stop(stream_id(id), code);
        turn(&self.inner);
        r
    }

    /// Closes once everything sent so far arrived; settles when it ended.
    pub fn close(&self) -> Promise {
        let (promise, done) = Deferred::new();
        self.inner.borrow_mut().close(done);
        turn(&self.inner);
        promise
    }

    /// Why the connection ended (an `Error` with a `code`), or `null`.
    #[wasm_bindgen(getter)]
    pub fn closed(&self) -> JsValue {
        self.inner.borrow().closed.clone().unwrap_or(JsValue::NULL)
    }
}
