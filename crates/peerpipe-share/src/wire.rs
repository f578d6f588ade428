//! The request/response exchange on a share stream.
//!
//! The fetching side opens one stream per request, writes a [`Request`] and
//! finishes its half; the serving side answers with a one-byte [`Status`] and,
//! when it is [`Status::Ok`], the body:
//!
//! | request | body |
//! |---|---|
//! | [`Request::Collection`] | `u64` length, then the encoded collection |
//! | [`Request::Outboards`] | the group hashes of every distinct blob, in layout order, 32 bytes each |
//! | [`Request::Have`] | the server's have-bitmap over the layout's groups ([`crate::bitmap::Bitmap::encode`]), then the bitmap of the groups it is fetching itself (all clear for a seed) |
//! | [`Request::Get`] | the bytes of the global groups `start..end`, in order |
//!
//! A request names the collection by hash; all integers are big-endian. The
//! fetcher knows every body's length in advance (from the collection and
//! layout) except the collection's own, which is bounded by
//! [`crate::collection::MAX_ENCODED`]. Cancelling a request is stopping its stream.

use crate::hash::Hash;

/// The largest encoded request.
pub const MAX_REQUEST: usize = 1 + 32 + 16;

/// What a fetching peer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The encoded collection named by the hash.
    Collection(Hash),
    /// The group hashes of all blobs of the collection.
    Outboards(Hash),
    /// Which global groups the server holds, and which it is fetching.
    Have(Hash),
    /// The bytes of global groups `start..end`.
    Get {
        /// The collection.
        collection: Hash,
        /// First global group.
        start: u64,
        /// One past the last global group.
        end: u64,
    },
}

/// The first byte of every answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The body follows.
    Ok = 0,
    /// The server does not know the collection.
    NotFound = 1,
    /// The server does not hold (all of) the requested groups, or the range is invalid.
    NotHeld = 2,
}

impl Status {
    /// Reads a status byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Ok,
            1 => Self::NotFound,
            2 => Self::NotHeld,
            _ => return None,
        })
    }
}

/// A request that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed share request")]
pub struct RequestError;

impl Request {
    /// The collection the request is about.
    pub fn collection(&self) -> Hash {
        match *self {
            Self::Collection(h) | Self::Outboards(h) | Self::Have(h) => h,
            Self::Get { collection, .. } => collection,
        }
    }

    /// The request's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, hash) = match self {
            Self::Collection(h) => (1u8, h),
            Self::Outboards(h) => (2, h),
            Self::Have(h) => (3, h),
            Self::Get { collection, .. } => (4, collection),
        };
        let mut out = Vec::with_capacity(MAX_REQUEST);
        out.push(kind);
        out.extend_from_slice(hash.as_bytes());
        if let Self::Get { start, end, .. } = self {
            out.extend_from_slice(&start.to_be_bytes());
            out.extend_from_slice(&end.to_be_bytes());
        }
        out
    }

    /// Reads a whole request; anything else than exactly one request is refused.
    pub fn decode(buf: &[u8]) -> Result<Self, RequestError> {
        let (&kind, rest) = buf.split_first().ok_or(RequestError)?;
        let hash: [u8; 32] = rest
            .get(..32)
            .ok_or(RequestError)?
            .try_into()
            .map_err(|_| RequestError)?;
        let hash = Hash::from_bytes(hash);
        let rest = &rest[32..];
        let request = match (kind, rest.len()) {
            (1, 0) => Self::Collection(hash),
            (2, 0) => Self::Outboards(hash),
            (3, 0) => Self::Have(hash),
            (4, 16) => {
                let start = u64::from_be_bytes(rest[..8].try_into().map_err(|_| RequestError)?);
                let end = u64::from_be_bytes(rest[8..].try_into().map_err(|_| RequestError)?);
                if start >= end {
                    return Err(RequestError);
                }
                Self::Get {
                    collection: hash,
                    start,
                    end,
                }
            }
            _ => return Err(RequestError),
        };
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_junk_is_refused() {
        let h = Hash::of(b"x");
        for r in [
            Request::Collection(h),
            Request::Outboards(h),
            Request::Have(h),
            Request::Get {
                collection: h,
                start: 3,
                end: 9,
            },
        ] {
            let bytes = r.encode();
            assert!(bytes.len() <= MAX_REQUEST);
            assert_eq!(Request::decode(&bytes), Ok(r));
            assert_eq!(
                Request::decode(&bytes[..bytes.len() - 1]),
                Err(RequestError)
            );
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(Request::decode(&long), Err(RequestError));
        }
        let empty_range = Request::Get {
            collection: h,
            start: 5,
            end: 5,
        };
        assert_eq!(Request::decode(&empty_range.encode()), Err(RequestError));
        assert_eq!(Request::decode(&[9; 33]), Err(RequestError));
        assert_eq!(Request::decode(&[]), Err(RequestError));
        assert_eq!(Status::from_byte(2), Some(Status::NotHeld));
        assert_eq!(Status::from_byte(3), None);
    }
}
