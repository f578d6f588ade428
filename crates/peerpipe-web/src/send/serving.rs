//! Answering the receiver's share requests on the code's connection, as
//! `peerpipe send` does ([`peerpipe_share::wire`]): one stream per request,
//! the collection, its outboards, what this side holds (everything), and
//! the bytes of group ranges read from the files in [`READ_CHUNK`] slices,
//! the next slice read while the last one is written. The slices stay
//! JavaScript `ArrayBuffer`s; they enter the WebAssembly memory
//! [`WRITE_PIECE`] bytes at a time, as the stream's credit takes them.

use std::rc::Rc;

use js_sys::Uint8Array;
use peerpipe_proto::session::StreamId;
use peerpipe_share::bitmap::Bitmap;
use peerpipe_share::hash::GROUP_SIZE;
use peerpipe_share::wire::{MAX_REQUEST, Request, Status};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::{JsFuture, spawn_local};

use super::hashing::{Content, READ_CHUNK, file_error, finish_read, start_read};
use super::{StateRef, emit, stop};
use crate::conn::{ConnRef, turn, until};
use crate::js::{self, Obj};
use crate::receive::fetching::{read, write_all};
use crate::task;

/// How long the receiver has to send its whole request once it opened a
/// stream (as natively).
const REQUEST_MS: f64 = 10_000.0;
/// Stream reset code: the request was malformed (as natively).
const MALFORMED: u32 = 1;
/// Bytes copied into the WebAssembly memory for one stream write.
const WRITE_PIECE: u32 = 64 * 1024;

/// Answers every stream the receiver opens on `conn`, each on its own task,
/// until the connection ends.
pub(super) async fn serve(state: StateRef, conn: ConnRef, content: Rc<Content>) {
    while let Ok(id) = until(&conn, |c| c.poll_accept()).await {
        let (state, conn, content) = (state.clone(), conn.clone(), content.clone());
        spawn_local(async move {
            if let Err(e) = answer(&state, &conn, &content, id).await {
                // A file that cannot be read ends the send; a request that
                // went wrong on the wire ends only its stream.
                if crate::receive::code_of(&e) == "File" {
                    stop(&state, e);
                } else {
                    let _ = conn.borrow_mut().reset(id, MALFORMED);
                }
            }
            turn(&conn);
        });
    }
}

/// The whole request on stream `id`: at most [`MAX_REQUEST`] bytes, then
/// its end.
async fn request(conn: &ConnRef, id: StreamId) -> Result<Option<Request>, JsValue> {
    let mut buf = Vec::with_capacity(MAX_REQUEST);
    loop {
        match read(conn, id, MAX_REQUEST + 1 - buf.len()).await? {
            Some(chunk) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_REQUEST {
                    return Ok(None);
                }
            }
            None => return Ok(Request::decode(&buf).ok()),
        }
    }
}

/// Answers the request on stream `id`.
async fn answer(
    state: &StateRef,
    conn: &ConnRef,
    content: &Content,
    id: StreamId,
) -> Result<(), JsValue> {
    let request = task::timeout(REQUEST_MS, request(conn, id))
        .await
        .ok_or_else(|| js::error("TimedOut", "the receiver's request did not arrive"))??;
    let Some(request) = request else {
        conn.borrow_mut().reset(id, MALFORMED)?;
        turn(conn);
        return Ok(());
    };
    let groups = content.layout.groups();
    if request.collection() != content.hash {
        write_all(conn, id, &[Status::NotFound as u8]).await?;
    } else {
        match request {
            Request::Collection(_) => {
                let mut head = vec![Status::Ok as u8];
                head.extend_from_slice(&(content.encoded.len() as u64).to_be_bytes());
                head.extend_from_slice(&content.encoded);
                write_all(conn, id, &head).await?;
            }
            Request::Outboards(_) => {
                write_all(conn, id, &[Status::Ok as u8]).await?;
                for outboard in &content.outboards {
                    for part in outboard.groups().chunks(4096) {
                        write_all(conn, id, part.as_flattened()).await?;
                    }
                }
            }
            Request::Have(_) => {
                let mut body = vec![Status::Ok as u8];
                body.extend_from_slice(&Bitmap::full(groups).encode());
                body.extend_from_slice(&Bitmap::new(groups).encode());
                write_all(conn, id, &body).await?;
            }
            Request::Get { end, .. } if end > groups => {
                write_all(conn, id, &[Status::NotHeld as u8]).await?;
            }
            Request::Get { start, end, .. } => {
                write_all(conn, id, &[Status::Ok as u8]).await?;
                send_groups(state, conn, content, id, start, end).await?;
            }
        }
    }
    conn.borrow_mut().finish(id)?;
    turn(conn);
    Ok(())
}

/// One read of a `Get` answer: bytes `start..end` of layout blob `blob`.
struct Piece {
    blob: usize,
    start: u64,
    end: u64,
}

/// The piece that starts at global group `g` (before `end`): at most
/// [`READ_CHUNK`] bytes, within one blob; and the group after it.
fn piece(content: &Content, g: u64, end: u64) -> Option<(Piece, u64)> {
    let (blob, local) = content.layout.locate(g)?;
    let slot = content.layout.blobs()[blob];
    let run = (end - g)
        .min(slot.groups() - local)
        .min(READ_CHUNK / GROUP_SIZE);
    let start = local * GROUP_SIZE;
    let stop = (start + run * GROUP_SIZE).min(slot.size);
    Some((
        Piece {
            blob,
            start,
            end: stop,
        },
        g + run,
    ))
}

/// Streams global groups `start..end` from the files.
async fn send_groups(
    state: &StateRef,
    conn: &ConnRef,
    content: &Content,
    id: StreamId,
    start: u64,
    end: u64,
) -> Result<(), JsValue> {
    let begin = |g: u64| -> Result<Option<(Piece, u64, JsFuture)>, JsValue> {
        if g >= end {
            return Ok(None);
        }
        let (p, next) = piece(content, g, end)
            .ok_or_else(|| js::error("Protocol", "a group outside the layout"))?;
        let read = start_read(&content.blobs[p.blob], p.start, p.end)
            .map_err(|e| file_error(&content.names[p.blob], &e))?;
        Ok(Some((p, next, read)))
    };
    let mut pending = begin(start)?;
    while let Some((p, next, read)) = pending.take() {
        if let Some(e) = state.borrow().stopped.clone() {
            return Err(e);
        }
        let bytes = finish_read(read, p.end - p.start)
            .await
            .map_err(|e| file_error(&content.names[p.blob], &e))?;
        pending = begin(next)?;
        write_from(conn, id, &bytes).await?;
        let sent = {
            let mut s = state.borrow_mut();
            s.sent += p.end - p.start;
            s.sent.min(s.total)
        };
        let total = state.borrow().total;
        emit(
            state,
            "progress",
            Obj::new()
                .set("sent", sent as f64)
                .set("total", total as f64)
                .build(),
        );
    }
    Ok(())
}

/// Writes `bytes` (a JavaScript array) to stream `id`, [`WRITE_PIECE`]
/// bytes at a time.
async fn write_from(conn: &ConnRef, id: StreamId, bytes: &Uint8Array) -> Result<(), JsValue> {
    let len = bytes.length();
    let mut at = 0;
    while at < len {
        let to = (at + WRITE_PIECE).min(len);
        write_all(conn, id, &bytes.subarray(at, to).to_vec()).await?;
        at = to;
    }
    Ok(())
}
