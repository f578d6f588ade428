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
//! classes exported here, [`WasmNode`], [`WasmConnection`] and [`WasmCodeOffer`], as
//! `Node`, `Connection` and `CodeOffer` with DOM events and WHATWG streams, and keeps the
//! device key in IndexedDB. Connections start on the server's relay and move
//! to a WebRTC data channel (the host's `RTCPeerConnection`) when the network
//! allows, driven by the same negotiator as natively
//! ([`peerpipe_proto::direct::negotiator`]). The node reconnects to the server
//! with backoff and routes its connections again; one-time codes
//! ([`WasmCodeOffer`], [`WasmNode::claim_code`]) connect devices of two users,
//! and [`WasmReceive`] receives the files a `peerpipe send` offers on such a
//! code, verified in 16 KiB groups ([`peerpipe_share`]) before the page's
//! sink gets them; [`WasmSend`] sends the page's files the same way, to
//! `peerpipe receive` or another page. [`qr_svg`] draws a code's link as a
//! QR code.
//!
//! Natively the crate compiles too (for `cargo test` and docs), though its
//! functions need a JavaScript host to run:
//!
//! ```
//! // The device key a page keeps, and the id the server admits it as.
//! let identity = peerpipe_proto::id::Identity::from_secret_bytes([7; 32]);
//! assert_eq!(identity.device_id().to_string().len(), 52);
//! ```

mod code;
mod conn;
mod connection;
mod js;
mod node;
mod qr;
mod receive;
mod rtc;
mod send;
mod task;

use js_sys::{Function, Promise, Uint8Array};
use peerpipe_proto::id::Identity;
use peerpipe_proto::signal::IceServer;
use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;

pub use crate::code::WasmCodeOffer;
pub use crate::connection::WasmConnection;
use crate::node::NodeRef;
pub use crate::qr::qr_svg;
pub use crate::receive::WasmReceive;
pub use crate::send::WasmSend;

/// A device's node: its link to the server. The JavaScript package wraps it
/// as `Node`; this is the low-level handle it uses.
#[wasm_bindgen]
pub struct WasmNode {
    inner: NodeRef,
    id: String,
}

#[wasm_bindgen]
impl WasmNode {
    /// Connects to a server as the device whose 32-byte secret key is
    /// `secret`. `options`: `server` (a `ws://` or `wss://` URL ending in
    /// `/v1/signal`), `token` (empty: anonymous), `label`, `maxMessageSize`,
    /// `direct` (false: relay only), `iceServers` (`[{ urls, username,
    /// credential }]` instead of the server's). `on_event(type, detail)` hears
    /// `peeronline`, `peeroffline`, `incomingconnection`, `error` and
    /// `stopped`. Settles once the server admitted the device, or fails with
    /// an `Error` whose `code` says why (`BadToken`, `Unreachable`, ...).
    pub async fn bind(
        options: JsValue,
        secret: Uint8Array,
        on_event: Function,
    ) -> Result<WasmNode, JsValue> {
        let bytes: [u8; 32] = secret
            .to_vec()
            .try_into()
            .map_err(|_| js::error("Config", "the device secret must be 32 bytes"))?;
        let get = |k: &str| js_sys::Reflect::get(&options, &k.into()).unwrap_or(JsValue::UNDEFINED);
        let text = |k: &str| get(k).as_string().unwrap_or_default();
        let server = text("server");
        if server.is_empty() {
            return Err(js::error("Config", "the server URL is not set"));
        }
        let identity = Identity::from_secret_bytes(bytes);
        let id = identity.device_id().to_string();
        let settings = node::Settings {
            server,
            token: text("token"),
            label: text("label"),
            identity,
            max_message_size: get("maxMessageSize")
                .as_f64()
                .map_or(16 << 20, |n| n.clamp(1.0, f64::from(u32::MAX)) as u32),
            direct: get("direct").as_bool().unwrap_or(true),
            ice_servers: ice_list(&get("iceServers"))?,
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

    /// Offers a one-time code (`7-amber-falcon`) that a device of any user
    /// can claim with [`WasmNode::claim_code`]; settles with a
    /// [`WasmCodeOffer`] whose `accept()` gives the connection.
    #[wasm_bindgen(js_name = offerCode)]
    pub fn offer_code(&self) -> Promise {
        code::offer(&self.inner)
    }

    /// Claims the one-time code `code` and connects to the device that offered
    /// it, the agreed key bound into the end-to-end handshake; fails with
    /// `Malformed`, `NotFound` (no such code, or used), `WrongCode`, ...
    #[wasm_bindgen(js_name = claimCode)]
    pub fn claim_code(&self, code: &str) -> Promise {
        code::claim(&self.inner, code)
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

/// `[{ urls, username, credential }]` (as `RTCIceServer`s are written), or
/// `undefined` for the server's.
fn ice_list(value: &JsValue) -> Result<Option<Vec<IceServer>>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let bad = || {
        js::error(
            "Config",
            "iceServers is a list of { urls, username?, credential? }",
        )
    };
    let list: &js_sys::Array = value.dyn_ref().ok_or_else(bad)?;
    let field = |o: &JsValue, k: &str| {
        js_sys::Reflect::get(o, &k.into())
            .ok()
            .and_then(|v| v.as_string())
    };
    let mut out = Vec::new();
    for item in list.iter() {
        let urls = js_sys::Reflect::get(&item, &"urls".into()).map_err(|_| bad())?;
        let urls: Vec<String> = match urls.as_string() {
            Some(u) => vec![u],
            None => urls
                .dyn_ref::<js_sys::Array>()
                .ok_or_else(bad)?
                .iter()
                .filter_map(|u| u.as_string())
                .collect(),
        };
        for url in urls {
            out.push(IceServer {
                url,
                username: field(&item, "username"),
                credential: field(&item, "credential"),
            });
        }
    }
    Ok(Some(out))
}
