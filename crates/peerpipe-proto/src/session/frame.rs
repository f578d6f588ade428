//! Frames: the decrypted content of a `DATA` packet, one after another.
//!
//! All integers are big-endian. Stream ids and offsets are `u64`, codes `u32`.
//!
//! | type | frame            | fields                                              |
//! |------|------------------|-----------------------------------------------------|
//! | 0x01 | `ACK`            | next expected reliable packet number, ack delay µs (u32) |
//! | 0x02 | `PING`           | id                                                  |
//! | 0x03 | `PONG`           | id (echoed)                                         |
//! | 0x04 | `STREAM`         | stream id, offset, flags (0x01 FIN), len (u32), data |
//! | 0x05 | `MAX_DATA`       | session credit: absolute byte count                 |
//! | 0x06 | `MAX_STREAM_DATA`| stream id, absolute offset                          |
//! | 0x07 | `RESET_STREAM`   | stream id, code, final size                         |
//! | 0x08 | `STOP_SENDING`   | stream id, code                                     |
//! | 0x09 | `MESSAGE`        | message id, flags (0x01 FIN, 0x02 CONFIRM), len (u32), chunk |
//! | 0x0a | `MESSAGE_TAKEN`  | message id                                          |
//! | 0x0b | `CLOSE`          | code, reason len (u8), reason (utf-8)               |
//! | 0x0c | `PATH_SIGNAL`    | len (u32), data: path negotiation (offers, candidates) |
//!
//! `ACK`, `PING` and `PONG` are the only frames allowed in unreliable packets.

use bytes::{Buf, BufMut, Bytes};

use super::packet::MAX_CIPHERTEXT_LEN;

/// The most data bytes one `STREAM` or `MESSAGE` frame carries.
pub const MAX_FRAME_PAYLOAD: usize = 60 * 1024;
/// The most bytes of a `CLOSE` reason.
pub const MAX_CLOSE_REASON: usize = 255;
/// `STREAM` flag: the last byte of the stream.
pub const STREAM_FIN: u8 = 0x01;
/// `MESSAGE` flag: the last chunk of the message.
pub const MESSAGE_FIN: u8 = 0x01;
/// `MESSAGE` flag: the sender wants `MESSAGE_TAKEN` once the application took it.
pub const MESSAGE_CONFIRM: u8 = 0x02;
/// Bytes of a `STREAM` frame before its data.
pub const STREAM_HEADER_LEN: usize = 22;
/// Bytes of a `MESSAGE` frame before its chunk.
pub const MESSAGE_HEADER_LEN: usize = 14;
/// The most bytes of one `PATH_SIGNAL`.
pub const MAX_PATH_SIGNAL: usize = 16 * 1024;

const T_ACK: u8 = 0x01;
const T_PING: u8 = 0x02;
const T_PONG: u8 = 0x03;
const T_STREAM: u8 = 0x04;
const T_MAX_DATA: u8 = 0x05;
const T_MAX_STREAM_DATA: u8 = 0x06;
const T_RESET_STREAM: u8 = 0x07;
const T_STOP_SENDING: u8 = 0x08;
const T_MESSAGE: u8 = 0x09;
const T_MESSAGE_TAKEN: u8 = 0x0a;
const T_CLOSE: u8 = 0x0b;
const T_PATH_SIGNAL: u8 = 0x0c;

/// Why decrypted bytes are not a sequence of frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A frame ends before its fields do.
    #[error("frame truncated")]
    Truncated,
    /// Unknown frame type byte.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// Unknown flags, an over-long field or a bad reason string.
    #[error("malformed frame")]
    Malformed,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// All reliable packets below `next` arrived.
    Ack {
        /// The next reliable packet number the sender of the ack expects.
        next: u64,
        /// Microseconds the ack was held back before sending.
        delay_us: u32,
    },
    /// Asks for a `Pong` with the same id.
    Ping {
        /// Echoed back.
        id: u64,
    },
    /// Answers a `Ping`.
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// Stream data.
    Stream {
        /// The stream.
        id: u64,
        /// Offset of the first byte in the stream.
        offset: u64,
        /// Whether this is the end of the stream.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
    /// The sender may send up to this many bytes over all streams and messages.
    MaxData(u64),
    /// The sender may send stream `id` up to this offset.
    MaxStreamData {
        /// The stream.
        id: u64,
        /// Absolute offset.
        max: u64,
    },
    /// The sender abandoned its side of the stream.
    ResetStream {
        /// The stream.
        id: u64,
        /// Application code.
        code: u32,
        /// Bytes the stream had when reset.
        final_size: u64,
    },
    /// The receiver wants no more data on the stream.
    StopSending {
        /// The stream.
        id: u64,
        /// Application code.
        code: u32,
    },
    /// A chunk of a message.
    Message {
        /// Message id, counting up from 0.
        id: u64,
        /// `MESSAGE_FIN` and/or `MESSAGE_CONFIRM`.
        flags: u8,
        /// The chunk.
        chunk: Bytes,
    },
    /// The remote application took message `id`.
    MessageTaken {
        /// The message id.
        id: u64,
    },
    /// Path negotiation between the two shells (for example a WebRTC offer,
    /// answer or candidate), opaque to the session; at most [`MAX_PATH_SIGNAL`] bytes.
    PathSignal(Bytes),
    /// The sender ends the session.
    Close {
        /// Application code.
        code: u32,
        /// Short explanation (at most [`MAX_CLOSE_REASON`] bytes).
        reason: String,
    },
}

/// `reason` cut to [`MAX_CLOSE_REASON`] bytes on a character boundary.
pub fn truncated_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl Frame {
    /// Whether the frame must be delivered reliably (anything but acks and pings).
    pub fn is_reliable(&self) -> bool {
        !matches!(
            self,
            Self::Ack { .. } | Self::Ping { .. } | Self::Pong { .. }
        )
    }

    /// Bytes the encoded frame takes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Ack { .. } => 12,
            Self::Ping { .. } | Self::Pong { .. } | Self::MaxData(_) => 8,
            Self::MessageTaken { .. } => 8,
            Self::Stream { data, .. } => STREAM_HEADER_LEN - 1 + data.len(),
            Self::MaxStreamData { .. } => 16,
            Self::ResetStream { .. } => 20,
            Self::StopSending { .. } => 12,
            Self::Message { chunk, .. } => MESSAGE_HEADER_LEN - 1 + chunk.len(),
            Self::Close { reason, .. } => 5 + truncated_reason(reason).len(),
            Self::PathSignal(data) => 4 + data.len(),
        }
    }

    /// Writes the frame.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::Ack { next, delay_us } => {
                buf.put_u8(T_ACK);
                buf.put_u64(*next);
                buf.put_u32(*delay_us);
            }
            Self::Ping { id } => {
                buf.put_u8(T_PING);
                buf.put_u64(*id);
            }
            Self::Pong { id } => {
                buf.put_u8(T_PONG);
                buf.put_u64(*id);
            }
            Self::Stream {
                id,
                offset,
                fin,
                data,
            } => {
                buf.put_u8(T_STREAM);
                buf.put_u64(*id);
                buf.put_u64(*offset);
                buf.put_u8(if *fin { STREAM_FIN } else { 0 });
                buf.put_u32(data.len() as u32);
                buf.put_slice(data);
            }
            Self::MaxData(max) => {
                buf.put_u8(T_MAX_DATA);
                buf.put_u64(*max);
            }
            Self::MaxStreamData { id, max } => {
                buf.put_u8(T_MAX_STREAM_DATA);
                buf.put_u64(*id);
                buf.put_u64(*max);
            }
            Self::ResetStream {
                id,
                code,
                final_size,
            } => {
                buf.put_u8(T_RESET_STREAM);
                buf.put_u64(*id);
                buf.put_u32(*code);
                buf.put_u64(*final_size);
            }
            Self::StopSending { id, code } => {
                buf.put_u8(T_STOP_SENDING);
                buf.put_u64(*id);
                buf.put_u32(*code);
            }
            Self::Message { id, flags, chunk } => {
                buf.put_u8(T_MESSAGE);
                buf.put_u64(*id);
                buf.put_u8(*flags);
                buf.put_u32(chunk.len() as u32);
                buf.put_slice(chunk);
            }
            Self::MessageTaken { id } => {
                buf.put_u8(T_MESSAGE_TAKEN);
                buf.put_u64(*id);
            }
            Self::PathSignal(data) => {
                buf.put_u8(T_PATH_SIGNAL);
                buf.put_u32(data.len() as u32);
                buf.put_slice(data);
            }
            Self::Close { code, reason } => {
                let reason = truncated_reason(reason);
                buf.put_u8(T_CLOSE);
                buf.put_u32(*code);
                buf.put_u8(reason.len() as u8);
                buf.put_slice(reason.as_bytes());
            }
        }
    }

    /// Reads one frame from the front of `buf`.
    pub fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let kind = take::<1>(buf)?[0];
        Ok(match kind {
            T_ACK => Self::Ack {
                next: u64_of(buf)?,
                delay_us: u32_of(buf)?,
            },
            T_PING => Self::Ping { id: u64_of(buf)? },
            T_PONG => Self::Pong { id: u64_of(buf)? },
            T_STREAM => {
                let id = u64_of(buf)?;
                let offset = u64_of(buf)?;
                let flags = take::<1>(buf)?[0];
                if flags & !STREAM_FIN != 0 {
                    return Err(DecodeError::Malformed);
                }
                let data = data_of(buf)?;
                if offset.checked_add(data.len() as u64).is_none() {
                    return Err(DecodeError::Malformed);
                }
                Self::Stream {
                    id,
                    offset,
                    fin: flags & STREAM_FIN != 0,
                    data,
                }
            }
            T_MAX_DATA => Self::MaxData(u64_of(buf)?),
            T_MAX_STREAM_DATA => Self::MaxStreamData {
                id: u64_of(buf)?,
                max: u64_of(buf)?,
            },
            T_RESET_STREAM => Self::ResetStream {
                id: u64_of(buf)?,
                code: u32_of(buf)?,
                final_size: u64_of(buf)?,
            },
            T_STOP_SENDING => Self::StopSending {
                id: u64_of(buf)?,
                code: u32_of(buf)?,
            },
            T_MESSAGE => {
                let id = u64_of(buf)?;
                let flags = take::<1>(buf)?[0];
                if flags & !(MESSAGE_FIN | MESSAGE_CONFIRM) != 0 {
                    return Err(DecodeError::Malformed);
                }
                Self::Message {
                    id,
                    flags,
                    chunk: data_of(buf)?,
                }
            }
            T_MESSAGE_TAKEN => Self::MessageTaken { id: u64_of(buf)? },
            T_CLOSE => {
                let code = u32_of(buf)?;
                let len = usize::from(take::<1>(buf)?[0]);
                if buf.len() < len {
                    return Err(DecodeError::Truncated);
                }
                let reason = String::from_utf8(buf.split_to(len).to_vec())
                    .map_err(|_| DecodeError::Malformed)?;
                Self::Close { code, reason }
            }
            T_PATH_SIGNAL => {
                let data = data_of(buf)?;
                if data.len() > MAX_PATH_SIGNAL {
                    return Err(DecodeError::Malformed);
                }
                Self::PathSignal(data)
            }
            t => return Err(DecodeError::UnknownType(t)),
        })
    }

    /// Reads all frames of a decrypted packet.
    pub fn decode_all(mut buf: Bytes) -> Result<Vec<Self>, DecodeError> {
        if buf.len() > MAX_CIPHERTEXT_LEN {
            return Err(DecodeError::Malformed);
        }
        let mut frames = Vec::new();
        while !buf.is_empty() {
            frames.push(Self::decode(&mut buf)?);
        }
        Ok(frames)
    }
}

fn take<const N: usize>(buf: &mut Bytes) -> Result<[u8; N], DecodeError> {
    if buf.len() < N {
        return Err(DecodeError::Truncated);
    }
    let mut out = [0; N];
    buf.copy_to_slice(&mut out);
    Ok(out)
}

fn u64_of(buf: &mut Bytes) -> Result<u64, DecodeError> {
    take::<8>(buf).map(u64::from_be_bytes)
}

fn u32_of(buf: &mut Bytes) -> Result<u32, DecodeError> {
    take::<4>(buf).map(u32::from_be_bytes)
}

fn data_of(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = u32_of(buf)? as usize;
    if len > MAX_FRAME_PAYLOAD {
        return Err(DecodeError::Malformed);
    }
    if buf.len() < len {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<u64>(), any::<u32>()).prop_map(|(next, delay_us)| Frame::Ack { next, delay_us }),
            any::<u64>().prop_map(|id| Frame::Ping { id }),
            any::<u64>().prop_map(|id| Frame::Pong { id }),
            (any::<u64>(), 0..u64::MAX / 2, any::<bool>(), bytes(300)).prop_map(
                |(id, offset, fin, data)| Frame::Stream {
                    id,
                    offset,
                    fin,
                    data
                }
            ),
            any::<u64>().prop_map(Frame::MaxData),
            (any::<u64>(), any::<u64>()).prop_map(|(id, max)| Frame::MaxStreamData { id, max }),
            (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(id, code, final_size)| {
                Frame::ResetStream {
                    id,
                    code,
                    final_size,
                }
            }),
            (any::<u64>(), any::<u32>()).prop_map(|(id, code)| Frame::StopSending { id, code }),
            (any::<u64>(), 0u8..4, bytes(300)).prop_map(|(id, flags, chunk)| Frame::Message {
                id,
                flags,
                chunk
            }),
            any::<u64>().prop_map(|id| Frame::MessageTaken { id }),
            bytes(300).prop_map(Frame::PathSignal),
            (any::<u32>(), "\\PC{0,80}").prop_map(|(code, reason)| Frame::Close {
                code,
                reason: truncated_reason(&reason).to_owned()
            }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in prop::collection::vec(frame(), 0..8)) {
            let mut buf = Vec::new();
            for f in &frames {
                let before = buf.len();
                f.encode(&mut buf);
                prop_assert_eq!(buf.len() - before, f.encoded_len());
            }
            prop_assert_eq!(Frame::decode_all(Bytes::from(buf)).unwrap(), frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(v in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Frame::decode_all(Bytes::from(v));
        }
    }

    #[test]
    fn long_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(200);
        let f = Frame::Close { code: 1, reason };
        let mut buf = Vec::new();
        f.encode(&mut buf);
        let Frame::Close { reason, .. } = Frame::decode_all(buf.into()).unwrap().remove(0) else {
            panic!("close")
        };
        assert_eq!(reason.len(), 254);
    }
}
