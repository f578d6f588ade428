//! Answering share requests on a connection.

use std::time::Duration;

use peerpipe_share::wire::{MAX_REQUEST, Request, Status};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::ShareError;
use super::content::{Content, IO_CHUNK, Library};
use crate::{Connection, Stream};

/// How long a peer has to send its whole request once it opened a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Stream stop/reset code: the request was malformed.
const MALFORMED: u32 = 1;

/// Answers the share requests `conn`'s peer sends, from `library`, until the
/// connection ends. Each request is answered on its own task.
pub async fn serve(conn: Connection, library: Library) {
    while let Ok(stream) = conn.accept_stream().await {
        let library = library.clone();
        let peer = conn.peer().id;
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &library).await {
                tracing::debug!("share request from {peer}: {e}");
            }
        });
    }
}

async fn answer(mut stream: Stream, library: &Library) -> Result<(), ShareError> {
    let mut buf = Vec::with_capacity(MAX_REQUEST);
    let mut limited = (&mut stream).take(MAX_REQUEST as u64 + 1);
    tokio::time::timeout(REQUEST_TIMEOUT, limited.read_to_end(&mut buf))
        .await
        .map_err(|_| ShareError::Timeout("the peer's request"))??;
    let Ok(request) = Request::decode(&buf) else {
        let _ = stream.reset(MALFORMED);
        return Err(ShareError::Protocol("malformed request"));
    };
    let Some(content) = library.get(&request.collection()) else {
        stream.write_all(&[Status::NotFound as u8]).await?;
        return finish(stream).await;
    };
    match request {
        Request::Collection(_) => {
            let encoded = content.encoded();
            let mut head = vec![Status::Ok as u8];
            head.extend_from_slice(&(encoded.len() as u64).to_be_bytes());
            stream.write_all(&head).await?;
            stream.write_all(encoded).await?;
        }
        Request::Outboards(_) => {
            stream.write_all(&[Status::Ok as u8]).await?;
            for outboard in content.outboards() {
                for chunk in outboard.groups().chunks(4096) {
                    stream.write_all(chunk.as_flattened()).await?;
                }
            }
        }
        Request::Have(_) => {
            let mut body = vec![Status::Ok as u8];
            body.extend_from_slice(&content.have().encode());
            body.extend_from_slice(&content.fetching().encode());
            stream.write_all(&body).await?;
        }
        Request::Get { start, end, .. } => {
            if end > content.layout().groups() || !content.holds(start..end) {
                stream.write_all(&[Status::NotHeld as u8]).await?;
                return finish(stream).await;
            }
            stream.write_all(&[Status::Ok as u8]).await?;
            send_groups(&mut stream, &content, start, end).await?;
        }
    }
    finish(stream).await
}

/// Streams groups `start..end` from disk, reading the next chunk while the last
/// one is written.
async fn send_groups(
    stream: &mut Stream,
    content: &std::sync::Arc<Content>,
    start: u64,
    end: u64,
) -> Result<(), ShareError> {
    let per_chunk = IO_CHUNK / peerpipe_share::hash::GROUP_SIZE;
    let read = |g: u64| {
        let content = content.clone();
        let last = (g + per_chunk).min(end);
        tokio::task::spawn_blocking(move || content.read_groups(g, last))
    };
    let mut next = Some(read(start));
    let mut g = start;
    while let Some(pending) = next.take() {
        let data = pending
            .await
            .map_err(|_| ShareError::Protocol("disk reader failed"))??;
        g = (g + per_chunk).min(end);
        if g < end {
            next = Some(read(g));
        }
        let sent = stream.write_all(data.bytes()).await;
        let len = data.bytes().len() as u64;
        content.recycle(data);
        sent?;
        content.add_uploaded(len);
    }
    Ok(())
}

async fn finish(mut stream: Stream) -> Result<(), ShareError> {
    stream.shutdown().await?;
    Ok(())
}
