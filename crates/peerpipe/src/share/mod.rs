//! Content sharing over connections: serve collections, download them from
//! every peer that has them, verified, resumable.
//!
//! A [`Content`] is a collection this node holds (hashed from disk with
//! [`Content::from_paths`], or being downloaded). A [`Library`] is what a node
//! serves; [`serve`] answers a connection's share requests from it. A
//! [`Download`] fetches a collection from any number of connections at once
//! (see `peerpipe_share::fetch` for the scheduling), verifies every 16 KiB
//! group before it is written, keeps partial data in a hidden directory next to
//! the targets, and resumes from what is verified there. What it holds is served
//! to other peers while it runs, so downloaders reshare. A [`Single`] streams
//! a one-file collection from one peer in order into a writer instead (to
//! standard output, say), verified, without touching the disk.

mod content;
mod disk;
mod download;
mod serve;
mod single;

use std::path::{Path, PathBuf};

pub use content::{Content, Library};
pub use download::{Download, DownloadOptions, FileProgress, Report};
pub use peerpipe_share::collection::{Collection, Entry};
pub use peerpipe_share::hash::Hash;
pub use serve::serve;
pub use single::Single;

use crate::StreamError;

/// The service label of share connections ([`crate::Node::connect_service`]).
pub const SERVICE: &str = "share";

/// Why sharing or a download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// Reading or writing a local file failed. Displays the path; what went
    /// wrong is the error's [`source`](std::error::Error::source) (shown by
    /// `{:#}` in anyhow, say), so it is never printed twice.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A stream to the peer failed.
    #[error("stream: {0}")]
    Stream(#[from] std::io::Error),
    /// Writing to the caller's writer failed ([`Single::write_to`]); what
    /// went wrong is the error's source.
    #[error("writing the output")]
    Output(#[source] std::io::Error),
    /// The peer does not have the collection.
    #[error("the peer does not have this collection")]
    NotFound,
    /// The peer does not hold the requested range.
    #[error("the peer does not hold the requested range")]
    NotHeld,
    /// Data from the peer did not match its hash.
    #[error("data from the peer failed verification")]
    Corrupt,
    /// The peer broke the share protocol.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The peer's collection is unsafe or malformed.
    #[error(transparent)]
    Collection(#[from] peerpipe_share::collection::CollectionError),
    /// A target file exists with other contents (use `force` to replace it).
    #[error("{0} exists and differs from the incoming file (use --force to overwrite)")]
    Exists(PathBuf),
    /// Writing there could leave the target directory.
    #[error("refusing to write under {0}: {1}")]
    UnsafeTarget(PathBuf, &'static str),
    /// No connected peer has (the rest of) the collection.
    #[error(
        "no device that has the files is connected any more (the sender stopped or lost its network)"
    )]
    NoSource,
    /// Something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Bad input from the user.
    #[error("{0}")]
    Input(String),
    /// The download was dropped while it waited for [`Download::proceed`].
    #[error("the download was cancelled before it started")]
    Cancelled,
}

impl ShareError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<StreamError> for ShareError {
    fn from(e: StreamError) -> Self {
        Self::Stream(e.into())
    }
}
