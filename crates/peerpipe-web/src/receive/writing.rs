//! The page side of a receive: verified groups handed to the page's file
//! sinks in order, one write at a time, each awaited (the sink's
//! backpressure holds the fetching back through [`super::WRITE_AHEAD`]).
//!
//! Files are written blob by blob in the layout's order, which is the order
//! groups are requested in; a blob that several files share (the same
//! contents twice, or empty files) is written to all of their sinks at once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use js_sys::{Function, Promise, Reflect, Uint8Array};
use peerpipe_share::collection::{Collection, Layout};
use wasm_bindgen::JsCast as _;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

use super::fetching::pump;
use super::{STALL_MS, StateRef, message_of, wait};
use crate::js::{self, Obj};
use crate::task;

/// The most bytes handed to a sink in one write.
const BATCH: u64 = 1 << 20;
/// How often progress is told, in ms (and at the end of every file).
const PROGRESS_MS: f64 = 100.0;
/// How long a sink's `abort` may take.
const ABORT_MS: f64 = 5_000.0;

/// One file's sink, as the page gave it.
struct Sink {
    path: String,
    handle: JsValue,
}

fn sink_error(path: &str, what: &str, cause: &JsValue) -> JsValue {
    let e = js::error(
        "Sink",
        &format!("{what} {path} failed: {}", message_of(cause)),
    );
    let _ = Reflect::set(&e, &"cause".into(), cause);
    e
}

impl Sink {
    /// Calls the sink's method `name` with `args` and awaits what it returns.
    async fn call(&self, name: &str, arg: &JsValue) -> Result<JsValue, JsValue> {
        let f: Function = Reflect::get(&self.handle, &name.into())?
            .dyn_into()
            .map_err(|_| {
                js::error(
                    "Sink",
                    &format!("the sink of {} has no {name}()", self.path),
                )
            })?;
        let value = f.call1(&self.handle, arg)?;
        JsFuture::from(Promise::resolve(&value)).await
    }

    async fn write(&self, data: &JsValue) -> Result<(), JsValue> {
        self.call("write", data)
            .await
            .map(|_| ())
            .map_err(|e| sink_error(&self.path, "writing", &e))
    }

    async fn close(&self) -> Result<(), JsValue> {
        self.call("close", &JsValue::UNDEFINED)
            .await
            .map(|_| ())
            .map_err(|e| sink_error(&self.path, "closing", &e))
    }

    /// Tells the sink its file will not be complete (best effort).
    async fn abort(&self, why: &JsValue) {
        let _ = task::timeout(ABORT_MS, self.call("abort", why)).await;
    }
}

/// `f`'s output, or the receive's failure if that comes first: a sink that
/// never settles cannot hold up a receive that was cancelled or lost its
/// sender.
async fn unless_failed<T>(
    state: &StateRef,
    f: impl Future<Output = Result<T, JsValue>>,
) -> Result<T, JsValue> {
    let mut f = pin!(f);
    let mut failed = pin!(wait(state, |s| s.failed.clone()));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        if let Poll::Ready(e) = failed.as_mut().poll(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    })
    .await
}

/// Opens the sink of `path` through the page's `open(path, size)`.
async fn open_sink(open: &Function, path: &str, size: u64, offset: u64) -> Result<Sink, JsValue> {
    let opening = open
        .call3(
            &JsValue::UNDEFINED,
            &path.into(),
            &(size as f64).into(),
            &(offset as f64).into(),
        )
        .map_err(|e| sink_error(path, "opening", &e))?;
    let handle = JsFuture::from(Promise::resolve(&opening))
        .await
        .map_err(|e| sink_error(path, "opening", &e))?;
    Ok(Sink {
        path: path.to_owned(),
        handle,
    })
}

/// Progress, told to the page.
struct Progress<'a> {
    on_event: &'a Function,
    total: u64,
    /// Bytes of the files closed so far.
    bytes: u64,
    /// Bytes of blobs handed to sinks (a blob that several files share
    /// counts once).
    blob_written: u64,
    last: f64,
}

impl Progress<'_> {
    /// Tells `bytes` written in all, `file_bytes` of `path`; at most every
    /// [`PROGRESS_MS`] unless `now`.
    fn tell(
        &mut self,
        state: &StateRef,
        bytes: u64,
        path: &str,
        file_bytes: u64,
        file_size: u64,
        now: bool,
    ) {
        let at = js_sys::Date::now();
        if !now && at - self.last < PROGRESS_MS {
            return;
        }
        self.last = at;
        // Verified: what is written, and what waits for the sink.
        let verified = bytes + state.borrow().verified.saturating_sub(self.blob_written);
        let detail = Obj::new()
            .set("bytes", bytes as f64)
            .set("verified", verified as f64)
            .set("total", self.total as f64)
            .set("path", path)
            .set("fileBytes", file_bytes as f64)
            .set("fileSize", file_size as f64)
            .build();
        let _ = self
            .on_event
            .call2(&JsValue::UNDEFINED, &"progress".into(), &detail);
    }
}

/// Writes every file through sinks from `open`, in order; on failure the
/// open sinks are aborted.
pub(super) async fn write_files(
    state: &StateRef,
    open: &Function,
    on_event: &Function,
) -> Result<(), JsValue> {
    let (blobs, files, kept) = {
        let s = state.borrow();
        let blobs = s.layout.blobs().to_vec();
        let files = files_of_blobs(&s.collection, &s.layout);
        let kept: Vec<u64> = blobs
            .iter()
            .zip(&s.kept)
            .map(|(b, &k)| s.layout.range_len(b.first_group..b.first_group + k))
            .collect();
        (blobs, files, kept)
    };
    let mut progress = Progress {
        on_event,
        total: state.borrow().collection.total_size(),
        bytes: 0,
        blob_written: 0,
        last: 0.0,
    };
    for ((blob, files), &kept) in blobs.iter().zip(&files).zip(&kept) {
        let mut sinks = Vec::with_capacity(files.len());
        let mut result = Ok(());
        for (path, size) in files {
            match unless_failed(state, open_sink(open, path, *size, kept)).await {
                Ok(sink) => sinks.push(sink),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = write_blob(state, blob, kept, &sinks, &mut progress).await;
        }
        if let Err(e) = result {
            for sink in &sinks {
                sink.abort(&e).await;
            }
            return Err(e);
        }
        for sink in &sinks {
            if let Err(e) = unless_failed(state, sink.close()).await {
                for other in &sinks {
                    other.abort(&e).await;
                }
                return Err(e);
            }
        }
        for (path, size) in files {
            progress.bytes += size;
            let done = progress.bytes;
            progress.tell(state, done, path, *size, *size, true);
            let detail = Obj::new()
                .set("path", path.as_str())
                .set("size", *size as f64)
                .build();
            let _ = on_event.call2(&JsValue::UNDEFINED, &"file".into(), &detail);
        }
    }
    Ok(())
}

/// The files (path, size) each blob of `layout` is written to, in order.
pub(super) fn files_of_blobs(collection: &Collection, layout: &Layout) -> Vec<Vec<(String, u64)>> {
    let mut index = HashMap::new();
    let mut files = vec![Vec::new(); layout.blobs().len()];
    for (i, b) in layout.blobs().iter().enumerate() {
        index.insert(b.hash, i);
    }
    for e in collection.entries() {
        if let Some(&i) = index.get(&e.hash) {
            files[i].push((e.path.clone(), e.size));
        }
    }
    files
}

/// Writes the groups of `blob` past its first `kept` bytes (which the sinks
/// hold verified) to `sinks` as they become ready.
async fn write_blob(
    state: &StateRef,
    blob: &peerpipe_share::collection::BlobSlot,
    kept: u64,
    sinks: &[Sink],
    progress: &mut Progress<'_>,
) -> Result<(), JsValue> {
    let end = blob.first_group + blob.groups();
    let mut g = blob.first_group + kept.div_ceil(peerpipe_share::hash::GROUP_SIZE);
    let mut file_bytes = kept;
    while g < end {
        let (batch, next) = task::timeout(
            STALL_MS,
            wait(state, |s| {
                if let Some(e) = &s.failed {
                    return Some(Err(e.clone()));
                }
                if !s.ready.contains_key(&g) {
                    return None;
                }
                let mut groups = Vec::new();
                let mut bytes = 0u64;
                let mut next = g;
                while next < end && bytes < BATCH {
                    let Some(data) = s.ready.remove(&next) else {
                        break;
                    };
                    bytes += data.len() as u64;
                    groups.push(data);
                    next += 1;
                }
                s.ready_bytes -= bytes;
                Some(Ok((groups, next)))
            }),
        )
        .await
        .ok_or_else(|| js::error("TimedOut", "no data arrived from the sender for a minute"))??;
        // Room for more: the scheduler may ask again.
        pump(state);
        let bytes: usize = batch.iter().map(Vec::len).sum();
        let array = Uint8Array::new_with_length(bytes as u32);
        let mut at = 0u32;
        for data in &batch {
            array.subarray(at, at + data.len() as u32).copy_from(data);
            at += data.len() as u32;
        }
        drop(batch);
        g = next;
        for sink in sinks {
            unless_failed(state, sink.write(&array)).await?;
        }
        file_bytes += bytes as u64;
        progress.blob_written += bytes as u64;
        if let Some(first) = sinks.first() {
            let done = progress.bytes + file_bytes;
            progress.tell(state, done, &first.path, file_bytes, blob.size, false);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use peerpipe_share::collection::Entry;
    use peerpipe_share::hash::Hash;

    use super::*;

    #[test]
    fn shared_contents_and_empty_files_are_written_together() {
        let entry = |path: &str, contents: &[u8]| Entry {
            path: path.into(),
            size: contents.len() as u64,
            mode: 0o644,
            mtime: 0,
            hash: Hash::of(contents),
        };
        let collection = Collection::new(vec![
            entry("t/a", b"same"),
            entry("t/b/empty", b""),
            entry("t/b/same", b"same"),
            entry("t/c", b"other"),
            entry("t/d/empty", b""),
        ])
        .unwrap();
        let layout = Layout::new(&collection);
        let files = files_of_blobs(&collection, &layout);
        let paths: Vec<Vec<&str>> = files
            .iter()
            .map(|f| f.iter().map(|(p, _)| p.as_str()).collect())
            .collect();
        assert_eq!(
            paths,
            [
                vec!["t/a", "t/b/same"],
                vec!["t/b/empty", "t/d/empty"],
                vec!["t/c"]
            ]
        );
        // Every file is written exactly once, blob by blob in group order.
        assert_eq!(files.iter().map(Vec::len).sum::<usize>(), 5);
        let firsts: Vec<u64> = layout.blobs().iter().map(|b| b.first_group).collect();
        assert!(firsts.windows(2).all(|w| w[0] <= w[1]));
    }
}
