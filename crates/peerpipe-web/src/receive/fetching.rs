//! The network side of a receive: share requests on the code's connection
//! (one stream each, as [`peerpipe_share::wire`] says), the collection and
//! its outboards checked against the announced hash, and the scheduler
//! ([`Fetch`]) driven with `Get` requests whose every group is verified
//! before it joins the groups ready for the sink.

use std::rc::Rc;

use bytes::Bytes;
use peerpipe_proto::session::StreamId;
use peerpipe_share::bitmap::Bitmap;
use peerpipe_share::collection::{Collection, Layout, MAX_ENCODED};
use peerpipe_share::fetch::{self, Fetch, Received};
use peerpipe_share::hash::{GROUP_SIZE, Hash, Outboard};
use peerpipe_share::time::Instant;
use peerpipe_share::wire::{Request, Status};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;

use super::{MAX_GROUPS, MAX_IN_FLIGHT, StateRef, WRITE_AHEAD, fail, notify};
use crate::conn::{ConnRef, turn, until};
use crate::js;
use crate::task;

/// The scheduler's name for the sender, the only peer.
const SENDER: u32 = 0;
/// Groups read on one request between two chances for the scheduler to
/// issue more (the budget frees up as groups arrive).
const PUMP_EVERY: u64 = 64;
/// How often a sender that does not hold everything yet is asked again, and
/// for how long at most.
const HAVE_PAUSE_MS: f64 = 500.0;
const HAVE_POLLS: u32 = 1200;

fn protocol(what: &str) -> JsValue {
    js::error(
        "Protocol",
        &format!("the sender broke the share protocol: {what}"),
    )
}

fn corrupt(what: &str) -> JsValue {
    js::error(
        "Corrupt",
        &format!("{what} from the sender failed verification; nothing of it was written"),
    )
}

/// Writes all of `data` to stream `id`.
pub(crate) async fn write_all(conn: &ConnRef, id: StreamId, data: &[u8]) -> Result<(), JsValue> {
    let mut at = 0;
    while at < data.len() {
        at += until(conn, |c| c.poll_write(id, &data[at..])).await?;
        turn(conn);
    }
    Ok(())
}

/// Up to `max` bytes of stream `id`, `None` at its end.
pub(crate) async fn read(
    conn: &ConnRef,
    id: StreamId,
    max: usize,
) -> Result<Option<Bytes>, JsValue> {
    let chunk = until(conn, |c| c.poll_read(id, max)).await?;
    // What was read is credit the sender may use again.
    turn(conn);
    Ok(chunk)
}

/// Exactly `len` bytes of stream `id`. Memory grows as the sender sends, not
/// by what it claimed.
async fn read_exact(conn: &ConnRef, id: StreamId, len: u64) -> Result<Vec<u8>, JsValue> {
    let mut buf = Vec::with_capacity(len.min(1 << 20) as usize);
    while (buf.len() as u64) < len {
        let want = (len - buf.len() as u64).min(1 << 20) as usize;
        match read(conn, id, want).await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => return Err(protocol("an answer ended early")),
        }
    }
    Ok(buf)
}

/// Checks that stream `id` ends here: the sender sent all it was asked for.
async fn read_end(conn: &ConnRef, id: StreamId) -> Result<(), JsValue> {
    match read(conn, id, 1).await? {
        None => Ok(()),
        Some(_) => Err(protocol("an answer went on past its end")),
    }
}

/// Opens a stream, sends `request` and reads the answer's status.
async fn ask(conn: &ConnRef, request: Request) -> Result<StreamId, JsValue> {
    let id = until(conn, |c| c.poll_open()).await?;
    write_all(conn, id, &request.encode()).await?;
    conn.borrow_mut().finish(id)?;
    turn(conn);
    let status = read_exact(conn, id, 1).await?;
    match status.first().and_then(|&b| Status::from_byte(b)) {
        Some(Status::Ok) => Ok(id),
        Some(Status::NotFound) => Err(js::error(
            "NotFound",
            "the sender does not have the files it named",
        )),
        Some(Status::NotHeld) => Err(js::error(
            "NotHeld",
            "the sender does not hold the data it offered",
        )),
        None => Err(protocol("an unknown status")),
    }
}

/// The collection named `hash` and the outboards of its blobs, each checked
/// against its hash; refused past [`MAX_GROUPS`].
pub(super) async fn metadata(
    conn: &ConnRef,
    hash: Hash,
) -> Result<(Collection, Vec<Outboard>), JsValue> {
    let id = ask(conn, Request::Collection(hash)).await?;
    let head = read_exact(conn, id, 8).await?;
    let len = u64::from_be_bytes(head.try_into().map_err(|_| protocol("a short length"))?);
    if len > MAX_ENCODED {
        return Err(js::error(
            "TooLarge",
            &format!("the sender's list of files is larger than {MAX_ENCODED} bytes"),
        ));
    }
    let encoded = read_exact(conn, id, len).await?;
    read_end(conn, id).await?;
    if Hash::of(&encoded) != hash {
        return Err(corrupt("the list of files"));
    }
    let collection = Collection::decode(&encoded).map_err(|e| {
        js::error(
            "Collection",
            &format!("the sender's list of files is refused: {e}"),
        )
    })?;
    let layout = Layout::new(&collection);
    if layout.groups() > MAX_GROUPS {
        return Err(js::error(
            "TooLarge",
            &format!(
                "the files hold more than {} GiB: too much for one receive in a page",
                (MAX_GROUPS * GROUP_SIZE) >> 30
            ),
        ));
    }
    let id = ask(conn, Request::Outboards(hash)).await?;
    let mut outboards = Vec::with_capacity(layout.blobs().len());
    for blob in layout.blobs() {
        let raw = read_exact(conn, id, blob.groups() * 32).await?;
        let groups = raw
            .chunks_exact(32)
            .map(|c| <[u8; 32]>::try_from(c).unwrap_or([0; 32]))
            .collect();
        let outboard =
            Outboard::from_parts(blob.size, groups).map_err(|_| corrupt("the hashes of a file"))?;
        outboard
            .verify(blob.hash)
            .map_err(|_| corrupt("the hashes of a file"))?;
        outboards.push(outboard);
    }
    read_end(conn, id).await?;
    Ok((collection, outboards))
}

/// Sets up the scheduler (nothing held yet), asks the sender what it holds,
/// and lets requests go out.
pub(super) fn begin(state: &StateRef) {
    let missing = {
        let mut s = state.borrow_mut();
        let groups = s.layout.groups();
        let config = fetch::Config {
            max_in_flight: MAX_IN_FLIGHT,
            ..fetch::Config::default()
        };
        // What the sink held verified already is done.
        let mut done = Bitmap::new(groups);
        for (blob, &kept) in s.layout.blobs().iter().zip(&s.kept) {
            done.set_range(blob.first_group..blob.first_group + kept);
        }
        let mut fetch = Fetch::new(s.layout.clone(), done, 0, config);
        let complete = fetch.is_complete();
        fetch.add_peer(SENDER);
        s.fetch = Some(fetch);
        !complete
    };
    if missing {
        let state = state.clone();
        spawn_local(async move {
            if let Err(e) = have(&state).await {
                fail(&state, e);
            }
        });
    }
}

/// Asks the sender what it holds until it holds everything (a `send` does
/// at once).
async fn have(state: &StateRef) -> Result<(), JsValue> {
    let (conn, hash, groups) = {
        let s = state.borrow();
        (s.conn.clone(), s.hash, s.layout.groups())
    };
    for _ in 0..HAVE_POLLS {
        let id = ask(&conn, Request::Have(hash)).await?;
        let bytes = groups.div_ceil(8);
        let raw = read_exact(&conn, id, 2 * bytes).await?;
        read_end(&conn, id).await?;
        let (have, fetching) = raw.split_at(bytes as usize);
        let bad = |_| protocol("a have-bitmap of the wrong size");
        let have = Bitmap::decode(groups, have).map_err(bad)?;
        let fetching = Bitmap::decode(groups, fetching).map_err(bad)?;
        let full = have.is_full();
        {
            let mut s = state.borrow_mut();
            if s.failed.is_some() {
                return Ok(());
            }
            if let Some(f) = s.fetch.as_mut() {
                f.handle_have(SENDER, &have, &fetching);
            }
        }
        pump(state);
        if full {
            return Ok(());
        }
        task::sleep(HAVE_PAUSE_MS).await;
    }
    Err(js::error(
        "NotHeld",
        "the sender never came to hold all of the files it offered",
    ))
}

/// Issues the requests the scheduler wants now, unless the sink is behind.
pub(super) fn pump(state: &StateRef) {
    let mut issue = Vec::new();
    {
        let mut s = state.borrow_mut();
        if s.failed.is_some() || s.ready_bytes >= WRITE_AHEAD {
            return;
        }
        let now = Instant::now();
        let Some(fetch) = s.fetch.as_mut() else {
            return;
        };
        // Bounded: each request takes groups out of the pool.
        while let Some(r) = fetch.poll_request(now) {
            issue.push(r);
        }
        s.requests += issue.len();
    }
    for r in issue {
        let state = Rc::clone(state);
        spawn_local(async move { request(state, r).await });
    }
}

/// Carries out request `r` and tells the scheduler it ended.
async fn request(state: StateRef, r: fetch::Request<u32>) {
    let result = get(&state, r).await;
    {
        let mut s = state.borrow_mut();
        s.requests -= 1;
        if let Some(f) = s.fetch.as_mut() {
            f.handle_finished(r.id);
        }
    }
    if let Err(e) = result {
        fail(&state, e);
    }
    pump(&state);
    notify(&state);
}

/// Fetches the groups of `r`, verifying each; fresh ones wait for the sink.
async fn get(state: &StateRef, r: fetch::Request<u32>) -> Result<(), JsValue> {
    let (conn, hash) = {
        let s = state.borrow();
        (s.conn.clone(), s.hash)
    };
    let id = ask(
        &conn,
        Request::Get {
            collection: hash,
            start: r.start,
            end: r.end,
        },
    )
    .await?;
    for g in r.start..r.end {
        let (len, blob, local) = {
            let s = state.borrow();
            if s.failed.is_some() {
                return Ok(());
            }
            let Some((blob, local)) = s.layout.locate(g) else {
                return Err(protocol("a request past the files"));
            };
            (s.layout.group_len(g), blob, local)
        };
        let data = read_exact(&conn, id, len).await?;
        let verdict = {
            let mut s = state.borrow_mut();
            let ok = s
                .outboards
                .get(blob)
                .is_some_and(|o| o.verify_group(local, &data));
            let Some(fetch) = s.fetch.as_mut() else {
                return Ok(());
            };
            let verdict = fetch.handle_group(r.id, g, ok, Instant::now());
            if verdict == Received::Fresh {
                s.ready.insert(g, data);
                s.ready_bytes += len;
                s.verified += len;
            }
            verdict
        };
        match verdict {
            Received::Fresh => notify(state),
            Received::Duplicate => {}
            Received::Corrupt { .. } => return Err(corrupt("a 16 KiB group")),
            Received::Unexpected { .. } => return Err(protocol("a group out of order")),
        }
        if (g - r.start) % PUMP_EVERY == PUMP_EVERY - 1 {
            pump(state);
        }
    }
    read_end(&conn, id).await
}
