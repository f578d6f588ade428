//! Reading the page's files (`Blob`s) in bounded slices, and hashing them
//! into the collection that `peerpipe send` would make of the same tree:
//! BLAKE3 in 16 KiB groups ([`BlobHasher`]), one [`READ_CHUNK`] read at a
//! time, so that only the group hashes (32 bytes per 16 KiB) stay.

use std::collections::HashMap;

use js_sys::Uint8Array;
use peerpipe_share::collection::{Collection, Entry, Layout};
use peerpipe_share::hash::{BlobHasher, Hash, Outboard};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

use super::{StateRef, emit};
use crate::js::{self, Obj};

/// Bytes read from a file at a time, for hashing and for answers.
pub(super) const READ_CHUNK: u64 = 1 << 20;
/// The permission bits every file gets (a page knows no modes).
const MODE: u32 = 0o644;

/// The hashed collection, and where each of its distinct blobs is read from.
pub(super) struct Content {
    pub hash: Hash,
    pub encoded: Vec<u8>,
    pub layout: Layout,
    /// The outboard of each blob of the layout, in its order.
    pub outboards: Vec<Outboard>,
    /// The file each blob of the layout is read from, and its path.
    pub blobs: Vec<Blob>,
    pub names: Vec<String>,
}

/// The error of a file that could not be read.
pub(super) fn file_error(path: &str, e: &JsValue) -> JsValue {
    js::error(
        "File",
        &format!(
            "reading {path} failed ({}): was it changed, moved or deleted? Pick it again",
            crate::receive::message_of(e)
        ),
    )
}

/// A `File`'s `lastModified` in whole seconds since the Unix epoch; 0 for a
/// plain `Blob`, which has none.
fn mtime_of(blob: &Blob) -> u64 {
    js_sys::Reflect::get(blob, &JsValue::from_str("lastModified"))
        .ok()
        .and_then(|v| v.as_f64())
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .map_or(0, |ms| (ms / 1000.0) as u64)
}

/// Starts reading bytes `start..end` of `blob`; the promise gives an
/// `ArrayBuffer`, outside the WebAssembly memory.
pub(super) fn start_read(blob: &Blob, start: u64, end: u64) -> Result<JsFuture, JsValue> {
    let part = blob.slice_with_f64_and_f64(start as f64, end as f64)?;
    Ok(JsFuture::from(part.array_buffer()))
}

/// What a read of `len` bytes gave, checked for its length.
pub(super) async fn finish_read(read: JsFuture, len: u64) -> Result<Uint8Array, JsValue> {
    let bytes = Uint8Array::new(&read.await?);
    if u64::from(bytes.length()) != len {
        return Err(js::error(
            "File",
            "a file is shorter than when it was picked: it changed",
        ));
    }
    Ok(bytes)
}

/// Hashes the files of `state` into their collection, telling the page
/// `hashing` (`{ done, total }` bytes) after every read.
pub(super) async fn hash_all(state: &StateRef) -> Result<Content, JsValue> {
    let (paths, files, total) = {
        let s = state.borrow();
        (s.paths.clone(), s.files.clone(), s.total)
    };
    let mut done = 0u64;
    let mut entries = Vec::with_capacity(files.len());
    let mut by_hash: HashMap<Hash, (Outboard, Blob, String)> = HashMap::new();
    for (path, blob) in paths.iter().zip(&files) {
        let size = blob.size() as u64;
        let mut hasher = BlobHasher::new();
        let mut at = 0;
        while at < size {
            if let Some(e) = state.borrow().stopped.clone() {
                return Err(e);
            }
            let end = (at + READ_CHUNK).min(size);
            let read = start_read(blob, at, end).map_err(|e| file_error(path, &e))?;
            let bytes = finish_read(read, end - at)
                .await
                .map_err(|e| file_error(path, &e))?;
            // One chunk at a time in the WebAssembly memory.
            hasher.update(&bytes.to_vec());
            done += end - at;
            at = end;
            emit(
                state,
                "hashing",
                Obj::new()
                    .set("done", done as f64)
                    .set("total", total as f64)
                    .build(),
            );
        }
        let outboard = hasher.finish();
        let hash = outboard.root();
        entries.push(Entry {
            path: path.clone(),
            size,
            mode: MODE,
            mtime: mtime_of(blob),
            hash,
        });
        by_hash
            .entry(hash)
            .or_insert((outboard, blob.clone(), path.clone()));
    }
    let collection = Collection::new(entries).map_err(|e| super::path_error(&e))?;
    let layout = Layout::new(&collection);
    let mut outboards = Vec::with_capacity(layout.blobs().len());
    let mut blobs = Vec::with_capacity(layout.blobs().len());
    let mut names = Vec::with_capacity(layout.blobs().len());
    for slot in layout.blobs() {
        let (outboard, blob, name) = by_hash
            .remove(&slot.hash)
            .ok_or_else(|| js::error("File", "a file was not hashed"))?;
        outboards.push(outboard);
        blobs.push(blob);
        names.push(name);
    }
    let encoded = collection.encode();
    Ok(Content {
        hash: Hash::of(&encoded),
        encoded,
        layout,
        outboards,
        blobs,
        names,
    })
}
