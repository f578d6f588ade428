//! Small futures for the Rust tasks that run on the JavaScript event loop
//! (`wasm_bindgen_futures::spawn_local`): a sleep that clears its timer when
//! dropped, a time limit, and a waker list for tasks waiting on shared state.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use js_sys::Promise;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

/// Resolves after `ms` milliseconds; dropping it clears the timer.
pub struct Sleep {
    done: JsFuture,
    handle: Option<JsValue>,
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            crate::js::clear_timeout(&handle);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match Pin::new(&mut self.done).poll(cx) {
            Poll::Ready(_) => {
                self.handle = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A [`Sleep`] of `ms` milliseconds.
pub fn sleep(ms: f64) -> Sleep {
    let mut handle = None;
    let promise = Promise::new(&mut |resolve, _| {
        handle = crate::js::set_timeout(&resolve, ms);
    });
    Sleep {
        done: JsFuture::from(promise),
        handle,
    }
}

/// `f`'s output, or `None` if it took longer than `ms` milliseconds.
pub async fn timeout<F: Future>(ms: f64, f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut limit = std::pin::pin!(sleep(ms));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if limit.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Tasks waiting for shared state to change; whoever changes it wakes them.
#[derive(Default)]
pub struct Wakers(Vec<Waker>);

impl Wakers {
    /// Adds `waker` (once).
    pub fn register(&mut self, waker: &Waker) {
        if !self.0.iter().any(|w| w.will_wake(waker)) {
            self.0.push(waker.clone());
        }
    }

    /// Takes every waiting task's waker, to wake once nothing is borrowed.
    pub fn take(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.0)
    }
}
