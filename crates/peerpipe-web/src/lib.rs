//! peerpipe in the browser and in Node.js: the sans-IO core
//! ([`peerpipe_proto`]) compiled to WebAssembly, driven on the JavaScript
//! event loop, behind a small JavaScript API.
//!
//! A page (or a Node.js process) is a device like any other: it is admitted by
//! the same server with a token and its device key, lists the user's other
//! devices, connects to them and accepts their connections, and talks over an
//! end-to-end encrypted session (the server relays only ciphertext): messages
//! with optional delivery confirmation, and streams whose backpressure is the
//! session's credit window.
//!
//! The JavaScript package in `js/` (built by `scripts/web-build`) wraps the
//! two classes exported here, [`WasmNode`] and [`WasmConnection`], as
//! `Node` and `Connection` with DOM events and WHATWG streams, and keeps the
//! device key in IndexedDB. What this build does not do yet: direct paths (it
//! declines them, so connections stay on the relay), reconnecting to the
//! server, one-time codes.
//!
//! Natively the crate compiles too (for `cargo test` and docs), though its
//! functions need a JavaScript host to run:
//!
//! ```
//! // The device key a page keeps, and the id the server admits it as.
//! let identity = peerpipe_proto::id::Identity::from_secret_bytes([7; 32]);
//! assert_eq!(identity.device_id().to_string().len(), 52);
//! ```

mod conn;
mod connection;
mod js;
mod node;

use js_sys::{Function, Promise, Uint8Array};
use peerpipe_proto::id::Identity;
use wasm_bindgen::prelude::*;

pub use crate::connection::WasmConnection;
use crate::node::NodeRef;

/// A device's node: its link to the server. The JavaScript package wraps it
/// as `Node`; this is the low-level handle it uses.
#[wasm_bindgen]
pub struct WasmNode {
    inner: NodeRef,
    id: String,
}

#[wasm_bindgen]
impl WasmNode {
    /// Connects to `server` (a `ws://` or `wss://` URL ending in
    /// `/v1/signal`) as the device whose 32-byte secret key is `secret`, with
    /// `token` (empty: anonymous) and `label`. `on_event(type, detail)`
    /// hears `peeronline`, `peeroffline`, `incomingconnection`, `error` and
    /// `stopped`. Settles once the server admitted the device, or fails with
    /// an `Error` whose `code` says why (`BadToken`, `Unreachable`, ...).
    pub async fn bind(
        server: String,
        token: String,
        label: String,
        secret: Uint8Array,
        on_event: Function,
        max_message_size: u32,
    ) -> Result<WasmNode, JsValue> {
        let bytes: [u8; 32] = secret
            .to_vec()
            .try_into()
            .map_err(|_| js::error("Config", "the device secret must be 32 bytes"))?;
        let identity = Identity::from_secret_bytes(bytes);
        let id = identity.device_id().to_string();
        let settings = node::Settings {
            server,
            token,
            label,
            identity,
            max_message_size,
        };
        let (inner, admitted) = node::bind(settings, on_event)?;
        wasm_bindgen_futures::JsFuture::from(admitted).await?;
        Ok(WasmNode { inner, id })
    }

    /// This device's id.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// This user's other online devices: `[{ id, label }]`.
    #[wasm_bindgen(js_name = onlinePeers)]
    pub fn online_peers(&self) -> Promise {
        node::online_peers(&self.inner)
    }

    /// Connects to device `peer` (optionally for `service`); settles with a
    /// [`WasmConnection`] once the end-to-end handshake finished.
    pub fn connect(&self, peer: &str, service: Option<String>) -> Promise {
        node::connect(&self.inner, peer, service)
    }

    /// Accepts the connection request `session` (from `incomingconnection`).
    pub fn accept(&self, session: &str) -> Promise {
        node::accept(&self.inner, session)
    }

    /// Rejects the connection request `session`.
    pub fn reject(&self, session: &str) {
        node::reject(&self.inner, session);
    }

    /// Ends every connection and the link to the server.
    pub fn shutdown(&self) {
        node::shutdown(&self.inner);
    }
}
