//! Connection frames, carried as relay payloads between two devices.
//!
//! - `MSG`: `[0x01][flags: u8][msg id: u64 BE][chunk]` — one chunk of an
//!   application message; `FIN` marks its last chunk, `CONFIRM` (on every chunk)
//!   asks the receiver to acknowledge once the application has taken it.
//! - `ACK`: `[0x02][msg id: u64 BE]` — the application took message `id`.
//! - `CLOSE`: `[0x03][code: u16 BE][reason: utf-8]` — the sender ends the connection:
//!   [`CLOSE_NORMAL`] after all its data, [`CLOSE_MESSAGE_TOO_LARGE`] (reason: the
//!   limit in decimal) or [`CLOSE_PROTOCOL`] (reason: what was wrong).
//!
//! Messages are sent one after another (never interleaved) with ids counting up
//! from 0, so the receiver reassembles one message at a time and can check the
//! order. [`Reassembler`] does that with a cap on the message size.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Flag: the last chunk of a message.
pub const FLAG_FIN: u8 = 0x01;
/// Flag: the sender wants an `ACK` once the application takes the message.
pub const FLAG_CONFIRM: u8 = 0x02;
/// `CLOSE` code: the sender closed in order, after everything it sent.
pub const CLOSE_NORMAL: u16 = 0;
/// `CLOSE` code: a message exceeded the receiver's limit; the reason is the limit.
pub const CLOSE_MESSAGE_TOO_LARGE: u16 = 1;
/// `CLOSE` code: the peer's frames broke the protocol; the reason says how.
pub const CLOSE_PROTOCOL: u16 = 2;
/// Bytes of a `MSG` frame before its chunk.
pub const MSG_HEADER_LEN: usize = 10;
/// The most bytes of a `CLOSE` reason.
pub const MAX_CLOSE_REASON: usize = 123;

const T_MSG: u8 = 0x01;
const T_ACK: u8 = 0x02;
const T_CLOSE: u8 = 0x03;

/// One connection frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A chunk of a message.
    Msg {
        /// `FLAG_FIN` and/or `FLAG_CONFIRM`.
        flags: u8,
        /// The message id.
        id: u64,
        /// The chunk.
        chunk: Bytes,
    },
    /// The application took message `id`.
    Ack {
        /// The message id.
        id: u64,
    },
    /// The sender ends the connection.
    Close {
        /// An application close code (0: normal).
        code: u16,
        /// A short explanation.
        reason: String,
    },
}

fn truncated_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Why bytes are not a connection frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame ends before its fields do.
    #[error("frame truncated")]
    Truncated,
    /// Unknown frame type byte.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// Unknown flag bits, or trailing bytes after a fixed-size frame.
    #[error("malformed frame")]
    Malformed,
}

impl Frame {
    /// Bytes the encoded frame takes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Msg { chunk, .. } => MSG_HEADER_LEN + chunk.len(),
            Self::Ack { .. } => 9,
            Self::Close { reason, .. } => 3 + truncated_reason(reason).len(),
        }
    }

    /// Writes the frame.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::Msg { flags, id, chunk } => {
                buf.put_u8(T_MSG);
                buf.put_u8(*flags);
                buf.put_u64(*id);
                buf.put_slice(chunk);
            }
            Self::Ack { id } => {
                buf.put_u8(T_ACK);
                buf.put_u64(*id);
            }
            Self::Close { code, reason } => {
                buf.put_u8(T_CLOSE);
                buf.put_u16(*code);
                buf.put_slice(truncated_reason(reason).as_bytes());
            }
        }
    }

    /// Reads one frame that fills all of `buf`.
    pub fn decode(mut buf: Bytes) -> Result<Self, FrameError> {
        if buf.is_empty() {
            return Err(FrameError::Truncated);
        }
        match buf.get_u8() {
            T_MSG => {
                if buf.len() < MSG_HEADER_LEN - 1 {
                    return Err(FrameError::Truncated);
                }
                let flags = buf.get_u8();
                if flags & !(FLAG_FIN | FLAG_CONFIRM) != 0 {
                    return Err(FrameError::Malformed);
                }
                let id = buf.get_u64();
                Ok(Self::Msg {
                    flags,
                    id,
                    chunk: buf,
                })
            }
            T_ACK => match buf.len() {
                8 => Ok(Self::Ack { id: buf.get_u64() }),
                n if n < 8 => Err(FrameError::Truncated),
                _ => Err(FrameError::Malformed),
            },
            T_CLOSE => {
                if buf.len() < 2 {
                    return Err(FrameError::Truncated);
                }
                let code = buf.get_u16();
                if buf.len() > MAX_CLOSE_REASON {
                    return Err(FrameError::Malformed);
                }
                let reason = String::from_utf8(buf.to_vec()).map_err(|_| FrameError::Malformed)?;
                Ok(Self::Close { code, reason })
            }
            t => Err(FrameError::UnknownType(t)),
        }
    }
}

/// Why the peer's message stream is invalid. Either ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// A message grew past the receiver's maximum message size.
    #[error("incoming message exceeds the maximum message size of {max} bytes")]
    TooLarge {
        /// The limit in force.
        max: usize,
    },
    /// A chunk arrived with an id out of sequence.
    #[error("message {got} arrived where message {expected} was due")]
    OutOfOrder {
        /// The id the receiver expected.
        expected: u64,
        /// The id that arrived.
        got: u64,
    },
}

/// A complete incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id (to acknowledge it).
    pub id: u64,
    /// Whether the sender asked for an acknowledgement.
    pub confirm: bool,
    /// The payload.
    pub data: Bytes,
}

/// Rejoins message chunks, one message at a time, within a size cap.
#[derive(Debug)]
pub struct Reassembler {
    max: usize,
    next_id: u64,
    buf: BytesMut,
}

impl Reassembler {
    /// A reassembler that refuses messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max: max_message,
            next_id: 0,
            buf: BytesMut::new(),
        }
    }

    /// Feeds one chunk; returns the message when its last chunk arrives.
    pub fn push(
        &mut self,
        flags: u8,
        id: u64,
        chunk: Bytes,
    ) -> Result<Option<Message>, ReassemblyError> {
        if id != self.next_id {
            return Err(ReassemblyError::OutOfOrder {
                expected: self.next_id,
                got: id,
            });
        }
        if self.buf.len() + chunk.len() > self.max {
            return Err(ReassemblyError::TooLarge { max: self.max });
        }
        let fin = flags & FLAG_FIN != 0;
        let data = if fin && self.buf.is_empty() {
            chunk
        } else {
            self.buf.extend_from_slice(&chunk);
            if !fin {
                return Ok(None);
            }
            self.buf.split().freeze()
        };
        self.next_id += 1;
        Ok(Some(Message {
            id,
            confirm: flags & FLAG_CONFIRM != 0,
            data,
        }))
    }
}

/// Splits a message into `MSG` frames of at most `max_chunk` payload bytes each.
///
/// An empty message is one frame with an empty chunk.
pub fn split_message(
    id: u64,
    data: &Bytes,
    confirm: bool,
    max_chunk: usize,
) -> impl Iterator<Item = Frame> + '_ {
    let max_chunk = max_chunk.max(1);
    let count = data.len().div_ceil(max_chunk).max(1);
    let base = if confirm { FLAG_CONFIRM } else { 0 };
    (0..count).map(move |i| {
        let start = i * max_chunk;
        let end = (start + max_chunk).min(data.len());
        Frame::Msg {
            flags: if i + 1 == count {
                base | FLAG_FIN
            } else {
                base
            },
            id,
            chunk: data.slice(start..end),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(f: &Frame) -> Frame {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        assert_eq!(b.len(), f.encoded_len());
        Frame::decode(b.freeze()).unwrap()
    }

    proptest! {
        #[test]
        fn msg_round_trips(flags in 0u8..4, id: u64, chunk in proptest::collection::vec(any::<u8>(), 0..300)) {
            let f = Frame::Msg { flags, id, chunk: Bytes::from(chunk) };
            prop_assert_eq!(round_trip(&f), f);
        }

        #[test]
        fn close_round_trips(code: u16, reason in "[a-z ]{0,123}") {
            let f = Frame::Close { code, reason };
            prop_assert_eq!(round_trip(&f), f);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Frame::decode(Bytes::from(bytes));
        }

        #[test]
        fn split_then_reassemble(len in 0usize..5000, chunk in 1usize..700) {
            let data = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
            let mut r = Reassembler::new(len.max(1));
            let mut out = None;
            for f in split_message(0, &data, true, chunk) {
                let Frame::Msg { flags, id, chunk } = f else { unreachable!() };
                prop_assert!(out.is_none());
                out = r.push(flags, id, chunk).unwrap();
            }
            let m = out.unwrap();
            prop_assert_eq!(m.data, data);
            prop_assert!(m.confirm);
        }
    }

    #[test]
    fn ack_and_close_round_trip() {
        assert_eq!(round_trip(&Frame::Ack { id: 7 }), Frame::Ack { id: 7 });
        let long = Frame::Close {
            code: 1,
            reason: "é".repeat(100),
        };
        let Frame::Close { reason, .. } = round_trip(&long) else {
            panic!()
        };
        assert!(reason.len() <= MAX_CLOSE_REASON);
    }

    #[test]
    fn malformed_frames_are_typed() {
        assert_eq!(Frame::decode(Bytes::new()), Err(FrameError::Truncated));
        assert_eq!(
            Frame::decode(Bytes::from_static(&[9])),
            Err(FrameError::UnknownType(9))
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(&[1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(&[2, 0, 0])),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(&[3, 0, 0, 0xff])),
            Err(FrameError::Malformed)
        );
    }

    #[test]
    fn reassembler_enforces_cap_and_order() {
        let mut r = Reassembler::new(4);
        assert_eq!(r.push(0, 0, Bytes::from_static(b"abc")), Ok(None));
        assert_eq!(
            r.push(FLAG_FIN, 0, Bytes::from_static(b"de")),
            Err(ReassemblyError::TooLarge { max: 4 })
        );
        let mut r = Reassembler::new(4);
        assert_eq!(
            r.push(FLAG_FIN, 1, Bytes::new()),
            Err(ReassemblyError::OutOfOrder {
                expected: 0,
                got: 1
            })
        );
        let m = r
            .push(FLAG_FIN, 0, Bytes::from_static(b"ok"))
            .unwrap()
            .unwrap();
        assert_eq!((m.id, m.confirm, &m.data[..]), (0, false, &b"ok"[..]));
    }
}
