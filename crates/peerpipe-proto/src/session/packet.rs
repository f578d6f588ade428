//! Session packets: what one path message carries.
//!
//! - `HELLO`: `[version][0x01][noise handshake message 1]`
//! - `REPLY`: `[version][0x02][noise handshake message 2]`
//! - `DATA`: `[version][0x03][packet number: u64 BE][ciphertext]` — the frames of
//!   [`super::frame`], encrypted with ChaCha20-Poly1305 under the session keys with
//!   the packet number as the nonce (16-byte tag at the end).
//! - `PLAIN`: `[version][0x04][packet number: u64 BE][frames]` — the same frames
//!   unencrypted, only on a path the session was told to trust (its carrier
//!   encrypts and authenticates end to end, pinned to the peer the handshake
//!   authenticated); refused on every other path.
//!
//! Packet numbers with the high bit clear (the reliable space) count up from 0 and
//! are acknowledged; those with the high bit set ([`UNRELIABLE_BIT`]) carry only
//! acks and pings, are never acknowledged nor resent, and count up on their own.

use bytes::{Buf, BufMut, Bytes};

/// The session protocol version, first byte of every packet.
pub const VERSION: u8 = 1;
/// The most bytes a handshake message (the body of `HELLO` or `REPLY`) takes:
/// two ephemeral/static keys, tags, transport parameters.
pub const MAX_HANDSHAKE_LEN: usize = 256;
/// The Noise limit on one transport message (ciphertext and tag).
pub const MAX_CIPHERTEXT_LEN: usize = 65535;
/// The AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Bytes of a `DATA` packet before its ciphertext.
pub const DATA_HEADER_LEN: usize = 10;
/// The most bytes a packet takes.
pub const MAX_PACKET_LEN: usize = DATA_HEADER_LEN + MAX_CIPHERTEXT_LEN;
/// Packet numbers at or above this are acks and pings only: never acknowledged.
pub const UNRELIABLE_BIT: u64 = 1 << 63;

const T_HELLO: u8 = 0x01;
const T_REPLY: u8 = 0x02;
/// The `DATA` packet type byte.
pub(super) const T_DATA: u8 = 0x03;
/// The `PLAIN` packet type byte.
pub(super) const T_PLAIN: u8 = 0x04;

/// Why bytes are not a session packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet ends before its header does, or is empty where content is due.
    #[error("packet truncated")]
    Truncated,
    /// Unknown version byte.
    #[error("unknown session version {0}")]
    Version(u8),
    /// Unknown packet type.
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    /// Longer than the protocol allows.
    #[error("packet too long")]
    TooLong,
}

/// A session packet, its payload still encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Noise handshake message 1.
    Hello(Bytes),
    /// Noise handshake message 2.
    Reply(Bytes),
    /// An encrypted packet.
    Data {
        /// The packet number, which is the AEAD nonce.
        pn: u64,
        /// Encrypted frames and tag.
        ciphertext: Bytes,
    },
    /// Frames in the clear, for a trusted path only.
    Plain {
        /// The packet number.
        pn: u64,
        /// The frames.
        frames: Bytes,
    },
}

impl Packet {
    /// Bytes the encoded packet takes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Hello(m) | Self::Reply(m) => 2 + m.len(),
            Self::Data { ciphertext, .. } => DATA_HEADER_LEN + ciphertext.len(),
            Self::Plain { frames, .. } => DATA_HEADER_LEN + frames.len(),
        }
    }

    /// Writes the packet.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        match self {
            Self::Hello(m) => {
                buf.put_u8(T_HELLO);
                buf.put_slice(m);
            }
            Self::Reply(m) => {
                buf.put_u8(T_REPLY);
                buf.put_slice(m);
            }
            Self::Data { pn, ciphertext } => {
                buf.put_u8(T_DATA);
                buf.put_u64(*pn);
                buf.put_slice(ciphertext);
            }
            Self::Plain { pn, frames } => {
                buf.put_u8(T_PLAIN);
                buf.put_u64(*pn);
                buf.put_slice(frames);
            }
        }
    }

    /// Reads a packet that fills all of `buf`.
    pub fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        if buf.len() < 2 {
            return Err(DecodeError::Truncated);
        }
        let version = buf.get_u8();
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let kind = buf.get_u8();
        let rest = buf.split_off(0);
        match kind {
            T_HELLO | T_REPLY => {
                if rest.is_empty() {
                    return Err(DecodeError::Truncated);
                }
                if rest.len() > MAX_HANDSHAKE_LEN {
                    return Err(DecodeError::TooLong);
                }
                Ok(if kind == T_HELLO {
                    Self::Hello(rest)
                } else {
                    Self::Reply(rest)
                })
            }
            T_DATA => {
                let mut rest = rest;
                if rest.len() < 8 + TAG_LEN {
                    return Err(DecodeError::Truncated);
                }
                if rest.len() > 8 + MAX_CIPHERTEXT_LEN {
                    return Err(DecodeError::TooLong);
                }
                let pn = rest.get_u64();
                Ok(Self::Data {
                    pn,
                    ciphertext: rest,
                })
            }
            T_PLAIN => {
                let mut rest = rest;
                if rest.len() <= 8 {
                    return Err(DecodeError::Truncated);
                }
                if rest.len() > 8 + MAX_CIPHERTEXT_LEN {
                    return Err(DecodeError::TooLong);
                }
                let pn = rest.get_u64();
                Ok(Self::Plain { pn, frames: rest })
            }
            t => Err(DecodeError::UnknownType(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet() -> impl Strategy<Value = Packet> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 1..=MAX_HANDSHAKE_LEN)
                .prop_map(|v| Packet::Hello(v.into())),
            prop::collection::vec(any::<u8>(), 1..=MAX_HANDSHAKE_LEN)
                .prop_map(|v| Packet::Reply(v.into())),
            (
                any::<u64>(),
                prop::collection::vec(any::<u8>(), TAG_LEN..2048)
            )
                .prop_map(|(pn, v)| Packet::Data {
                    pn,
                    ciphertext: v.into()
                }),
            (any::<u64>(), prop::collection::vec(any::<u8>(), 1..2048)).prop_map(|(pn, v)| {
                Packet::Plain {
                    pn,
                    frames: v.into(),
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(p in packet()) {
            let mut buf = Vec::new();
            p.encode(&mut buf);
            prop_assert_eq!(buf.len(), p.encoded_len());
            prop_assert_eq!(Packet::decode(&mut Bytes::from(buf)).unwrap(), p);
        }

        #[test]
        fn arbitrary_bytes_never_panic(v in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Packet::decode(&mut Bytes::from(v));
        }
    }
}
