//! Fetching a one-file collection from one peer, in order, into a writer
//! (standard output, memory): nothing touches the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use peerpipe_share::collection::{Collection, Layout};
use peerpipe_share::hash::{GROUP_SIZE, Hash, Outboard};
use peerpipe_share::wire::Request;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::ShareError;
use super::content::IO_CHUNK;
use super::download::{ask, metadata};
use crate::Connection;

/// A collection of exactly one file, its metadata fetched and verified, ready
/// to be streamed in order into a writer with [`Single::write_to`].
///
/// Unlike a [`super::Download`], it fetches from one peer only, in file order,
/// and keeps nothing: no partial files, no resume. Every byte it writes out
/// was verified against the collection's hash first.
#[derive(Debug)]
pub struct Single {
    hash: Hash,
    collection: Collection,
    outboard: Outboard,
}

impl Single {
    /// Fetches and verifies the collection `hash` and its outboards from
    /// `conn`'s peer (within `limit`). Any number of files is accepted here, so
    /// that the caller can show what is offered; [`Single::write_to`] refuses
    /// more than one.
    pub async fn fetch(conn: &Connection, hash: Hash, limit: Duration) -> Result<Self, ShareError> {
        let found = metadata(conn, hash, limit).await?;
        let (collection, mut outboards) = (found.collection, found.outboards);
        // A collection without files has no outboard; it writes nothing.
        let outboard = outboards.pop().unwrap_or_else(|| Outboard::of(&[]));
        Ok(Self {
            hash,
            collection,
            outboard,
        })
    }

    /// What is offered.
    pub fn collection(&self) -> &Collection {
        &self.collection
    }

    /// Streams the one file from `conn`'s peer into `out`, in order, each
    /// 16 KiB group verified before it is written; `written` counts the bytes
    /// written so far (for a progress bar). A read that waits longer than
    /// `stall` for data ends it with [`ShareError::Timeout`]; a failed write
    /// to `out` is [`ShareError::Output`]. Refuses a
    /// collection of more than one file with [`ShareError::Input`] before
    /// asking for any data. Flushes `out` at the end.
    pub async fn write_to<W: AsyncWrite + Unpin>(
        &self,
        conn: &Connection,
        out: &mut W,
        written: &AtomicU64,
        stall: Duration,
    ) -> Result<u64, ShareError> {
        let entries = self.collection.entries().len();
        if entries > 1 {
            return Err(ShareError::Input(format!(
                "the collection has {entries} files, not one"
            )));
        }
        let layout = Layout::new(&self.collection);
        let groups = layout.groups();
        if groups > 0 {
            let mut stream = ask(
                conn,
                Request::Get {
                    collection: self.hash,
                    start: 0,
                    end: groups,
                },
            )
            .await?;
            let per_chunk = IO_CHUNK / GROUP_SIZE;
            let mut buf = Vec::with_capacity(IO_CHUNK as usize);
            let mut g = 0;
            while g < groups {
                let last = (g + per_chunk).min(groups);
                buf.resize(layout.range_len(g..last) as usize, 0);
                read_within(&mut stream, &mut buf, stall).await?;
                let mut at = 0;
                for local in g..last {
                    let len = layout.group_len(local) as usize;
                    if !self.outboard.verify_group(local, &buf[at..at + len]) {
                        return Err(ShareError::Corrupt);
                    }
                    at += len;
                }
                out.write_all(&buf).await.map_err(ShareError::Output)?;
                written.fetch_add(buf.len() as u64, Ordering::Relaxed);
                g = last;
            }
        }
        out.flush().await.map_err(ShareError::Output)?;
        Ok(written.load(Ordering::Relaxed))
    }
}

/// Fills `buf` from `stream`, giving up when no byte arrives for `stall`.
async fn read_within<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
    stall: Duration,
) -> Result<(), ShareError> {
    let mut at = 0;
    while at < buf.len() {
        let n = tokio::time::timeout(stall, stream.read(&mut buf[at..]))
            .await
            .map_err(|_| ShareError::Timeout("data from the peer"))??;
        if n == 0 {
            return Err(ShareError::Protocol("the peer ended its answer early"));
        }
        at += n;
    }
    Ok(())
}
