//! Resuming: what the page's sink still holds of each file from an earlier
//! attempt is read back and verified group by group against the outboards,
//! before anything is fetched. The verified start of every blob counts as
//! done for the scheduler, and its files are written on from there; what
//! does not verify is fetched again (and the sink drops it).

use js_sys::{Function, Promise, Reflect, Uint8Array};
use peerpipe_share::hash::{GROUP_SIZE, group_count};
use wasm_bindgen::JsCast as _;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

use super::writing::files_of_blobs;
use super::{StateRef, message_of};
use crate::js;

/// The most bytes read back from a sink at once.
const READ: u64 = 1 << 20;

fn existing_error(path: &str, cause: &JsValue) -> JsValue {
    let e = js::error(
        "Sink",
        &format!("reading what {path} holds failed: {}", message_of(cause)),
    );
    let _ = Reflect::set(&e, &"cause".into(), cause);
    e
}

/// Calls `f.name(args)` and awaits it.
async fn call(target: &JsValue, name: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let f: Function = Reflect::get(target, &name.into())?.dyn_into()?;
    let value = f.apply(target, &args.iter().collect())?;
    JsFuture::from(Promise::resolve(&value)).await
}

/// How many groups at the start of the file `path` (of `size` bytes) the
/// page's `existing(path, size)` gives back verified by `check`.
async fn verified_groups(
    existing: &Function,
    path: &str,
    size: u64,
    check: impl Fn(u64, &[u8]) -> bool,
) -> Result<u64, JsValue> {
    let there = existing
        .call2(&JsValue::UNDEFINED, &path.into(), &(size as f64).into())
        .map_err(|e| existing_error(path, &e))?;
    let blob = JsFuture::from(Promise::resolve(&there))
        .await
        .map_err(|e| existing_error(path, &e))?;
    if blob.is_null() || blob.is_undefined() {
        return Ok(0);
    }
    let held = Reflect::get(&blob, &"size".into())
        .ok()
        .and_then(|n| n.as_f64())
        .ok_or_else(|| existing_error(path, &"it gave no Blob".into()))?;
    let held = (held.max(0.0) as u64).min(size);
    // Only whole groups count (the last one of the file may be short).
    let usable = if held == size {
        size
    } else {
        held / GROUP_SIZE * GROUP_SIZE
    };
    let mut g = 0;
    let mut start = 0;
    while start < usable {
        let end = (start + READ).min(usable);
        let part = call(
            &blob,
            "slice",
            &[(start as f64).into(), (end as f64).into()],
        )
        .await
        .map_err(|e| existing_error(path, &e))?;
        let buf = call(&part, "arrayBuffer", &[])
            .await
            .map_err(|e| existing_error(path, &e))?;
        let bytes = Uint8Array::new(&buf).to_vec();
        if bytes.len() as u64 != end - start {
            return Ok(g);
        }
        // `READ` is a whole number of groups: chunks are the file's groups.
        for chunk in bytes.chunks(GROUP_SIZE as usize) {
            if !check(g, chunk) {
                return Ok(g);
            }
            g += 1;
        }
        start = end;
    }
    Ok(g)
}

/// The verified groups at the start of every blob, from what the sink holds:
/// for a blob that several files share, the least of theirs.
pub(super) async fn kept(state: &StateRef, existing: &Function) -> Result<Vec<u64>, JsValue> {
    let (blobs, files) = {
        let s = state.borrow();
        (
            s.layout.blobs().to_vec(),
            files_of_blobs(&s.collection, &s.layout),
        )
    };
    let mut kept = Vec::with_capacity(blobs.len());
    for (b, (blob, files)) in blobs.iter().zip(&files).enumerate() {
        let groups = group_count(blob.size);
        let mut least = groups;
        for (path, size) in files {
            if least == 0 {
                break;
            }
            let state = state.clone();
            let check = move |g: u64, data: &[u8]| {
                state
                    .borrow()
                    .outboards
                    .get(b)
                    .is_some_and(|o| o.verify_group(g, data))
            };
            least = least.min(verified_groups(existing, path, *size, check).await?);
        }
        kept.push(least);
    }
    Ok(kept)
}
