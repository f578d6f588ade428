//! Small bridges to the JavaScript host: errors with a `code`, plain objects,
//! promises settled from Rust, timers and random bytes. They use only what
//! browsers and Node.js 20+ both have on `globalThis`.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

/// A JavaScript `Error` whose `code` names what went wrong (the names of the
/// native library's error variants) and whose message says what to do.
pub fn error(code: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    let _ = Reflect::set(&e, &"code".into(), &code.into());
    e.into()
}

/// A plain object built field by field.
pub struct Obj(Object);

impl Obj {
    /// An empty object.
    pub fn new() -> Self {
        Self(Object::new())
    }

    /// Sets `key` to `value`.
    pub fn set(self, key: &str, value: impl Into<JsValue>) -> Self {
        let _ = Reflect::set(&self.0, &key.into(), &value.into());
        self
    }

    /// The object.
    pub fn build(self) -> JsValue {
        self.0.into()
    }
}

/// Bytes as a fresh `Uint8Array`.
pub fn bytes(data: &[u8]) -> JsValue {
    Uint8Array::from(data).into()
}

/// The two ends of a promise that Rust settles later.
pub struct Deferred {
    resolve: Function,
    reject: Function,
}

impl Deferred {
    /// A pending promise and its settling ends.
    pub fn new() -> (Promise, Self) {
        let slot: Rc<RefCell<Option<(Function, Function)>>> = Rc::default();
        let fill = slot.clone();
        let promise = Promise::new(&mut |resolve, reject| {
            *fill.borrow_mut() = Some((resolve, reject));
        });
        // The executor ran synchronously inside `new Promise`.
        let (resolve, reject) = slot
            .borrow_mut()
            .take()
            .unwrap_or_else(|| (Function::new_no_args(""), Function::new_no_args("")));
        (promise, Self { resolve, reject })
    }

    /// Fulfils the promise with `value`.
    pub fn resolve(self, value: &JsValue) {
        let _ = self.resolve.call1(&JsValue::UNDEFINED, value);
    }

    /// Rejects the promise with `error`.
    pub fn reject(self, error: &JsValue) {
        let _ = self.reject.call1(&JsValue::UNDEFINED, error);
    }
}

fn global_fn(name: &str) -> Option<Function> {
    Reflect::get(&js_sys::global(), &name.into())
        .ok()?
        .dyn_into::<Function>()
        .ok()
}

/// Runs `callback` after `ms` milliseconds; the handle cancels it.
pub fn set_timeout(callback: &Function, ms: f64) -> Option<JsValue> {
    let args = Array::of2(callback, &ms.into());
    global_fn("setTimeout")?
        .apply(&JsValue::UNDEFINED, &args)
        .ok()
}

/// Cancels a timer of [`set_timeout`].
pub fn clear_timeout(handle: &JsValue) {
    if let Some(clear) = global_fn("clearTimeout") {
        let _ = clear.call1(&JsValue::UNDEFINED, handle);
    }
}

/// 32 bytes from `crypto.getRandomValues`.
pub fn random32() -> Result<[u8; 32], JsValue> {
    let crypto = Reflect::get(&js_sys::global(), &"crypto".into())?;
    let get: Function = Reflect::get(&crypto, &"getRandomValues".into())?.dyn_into()?;
    let buf = Uint8Array::new_with_length(32);
    get.call1(&crypto, &buf)?;
    let mut out = [0u8; 32];
    buf.copy_to(&mut out);
    Ok(out)
}
