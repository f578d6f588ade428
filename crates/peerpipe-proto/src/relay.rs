//! Binary relay frames: `[version: u8][session: u64 BE][payload]`.
//!
//! The server reads only the header: it checks the session belongs to the sending
//! connection and forwards the frame, unchanged, to the other side. The payload is
//! opaque to it (the devices put [`crate::session`] packets there).

use bytes::{Buf, BufMut, Bytes};

use crate::signal::SessionId;

/// The relay frame version byte.
pub const RELAY_VERSION: u8 = 1;
/// Bytes of relay header before the payload.
pub const HEADER_LEN: usize = 9;

/// Why a binary frame is not a relay frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayDecodeError {
    /// Shorter than the header.
    #[error("relay frame shorter than its {HEADER_LEN}-byte header")]
    Short,
    /// Unknown version byte.
    #[error("unknown relay frame version {0}")]
    Version(u8),
}

/// The header of a relay frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayHeader {
    /// The session the payload belongs to.
    pub session: SessionId,
}

impl RelayHeader {
    /// Writes the header.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(RELAY_VERSION);
        buf.put_u64(self.session.0);
    }

    /// Reads the header from the front of `frame`, leaving the payload.
    pub fn decode(frame: &mut Bytes) -> Result<Self, RelayDecodeError> {
        if frame.len() < HEADER_LEN {
            return Err(RelayDecodeError::Short);
        }
        let version = frame.get_u8();
        if version != RELAY_VERSION {
            return Err(RelayDecodeError::Version(version));
        }
        Ok(Self {
            session: SessionId(frame.get_u64()),
        })
    }

    /// Reads the header without consuming anything (for the server's forwarding path).
    pub fn peek(frame: &[u8]) -> Result<Self, RelayDecodeError> {
        Self::decode(&mut Bytes::copy_from_slice(
            frame.get(..HEADER_LEN).ok_or(RelayDecodeError::Short)?,
        ))
    }
}

/// Builds a complete relay frame from a header and a payload.
pub fn encode_frame(session: SessionId, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    RelayHeader { session }.encode(&mut v);
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let frame = encode_frame(SessionId(0x0102030405060708), b"abc");
        assert_eq!(frame.len(), HEADER_LEN + 3);
        assert_eq!(
            RelayHeader::peek(&frame).unwrap().session,
            SessionId(0x0102030405060708)
        );
        let mut b = Bytes::from(frame);
        RelayHeader::decode(&mut b).unwrap();
        assert_eq!(&b[..], b"abc");
    }

    #[test]
    fn bad_headers_are_typed() {
        assert_eq!(RelayHeader::peek(&[1, 2]), Err(RelayDecodeError::Short));
        assert_eq!(
            RelayHeader::peek(&[9; 9]),
            Err(RelayDecodeError::Version(9))
        );
    }
}
