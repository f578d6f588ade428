//! The frames the nodes of a cluster send each other over their links.
//!
//! Each node keeps one TCP link to every other node it has something for, and
//! sends on it only (links are one-way: a node answers over its own link to
//! the sender). A link starts with a challenge from the accepting node and the
//! dialing node's proof that it holds the cluster's shared token secret; then
//! frames follow, each a 4-byte big-endian length (of what follows it), a
//! type byte and the fields. Every length is checked against what the frame
//! holds and against [`MAX_LINK_FRAME`]; a frame that does not decode ends the
//! link.
//!
//! ```
//! use peerpipe_proto::node_link::{Frame, decode, encode};
//!
//! let frame = Frame::Gone { conn: 7 };
//! let mut wire = Vec::new();
//! encode(&frame, &mut wire);
//! assert_eq!(decode(&wire).unwrap(), Some((frame, wire.len())));
//! assert_eq!(decode(&wire[..3]).unwrap(), None, "a frame not complete yet");
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::id::DeviceId;
use crate::signal::{ErrorCode, SessionId};
use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The longest frame a link carries (length field included): above the
/// largest relayed frame and control message any node admits.
pub const MAX_LINK_FRAME: usize = 16 << 20;
/// Bytes of the accepting node's challenge.
pub const NONCE_LEN: usize = 32;
/// Bytes of the dialing node's proof.
pub const MAC_LEN: usize = 32;
/// The longest text a link frame carries (control messages, labels, users).
const MAX_TEXT: usize = 1 << 20;

/// A device's connection on the node that admitted it, as it is described to
/// another node (which then stands in for it in sessions and presence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// The connection's id on its node.
    pub conn: u64,
    /// The device.
    pub device: DeviceId,
    /// The user (for an anonymous device, a key of its own).
    pub user: String,
    /// Admitted without a token.
    pub anonymous: bool,
    /// The connection's source address.
    pub ip: IpAddr,
    /// The label the device gave itself.
    pub label: String,
}

/// One frame of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// From the accepting node, first: the nonce to prove the secret over.
    Challenge {
        /// Random bytes.
        nonce: [u8; NONCE_LEN],
    },
    /// From the dialing node, first: who it is and its proof ([`proof`]).
    Auth {
        /// The dialing node's id.
        node: u32,
        /// HMAC-SHA256 over the nonce and the node id, keyed with the secret.
        mac: [u8; MAC_LEN],
    },
    /// An encoded control message for connection `conn` of the receiving node.
    ToCtrl {
        /// The receiving node's connection.
        conn: u64,
        /// The encoded server message.
        text: String,
    },
    /// A relayed frame for connection `conn` of the receiving node.
    ToRelay {
        /// The receiving node's connection.
        conn: u64,
        /// The frame, relay header first.
        frame: Bytes,
    },
    /// The end of an established session, for connection `conn` of the
    /// receiving node, behind the frames relayed to it (or, with `discard`,
    /// instead of those still queued).
    ToClosed {
        /// The receiving node's connection.
        conn: u64,
        /// The session.
        session: SessionId,
        /// Drop the session's frames still queued.
        discard: bool,
        /// The encoded `closed` message.
        text: String,
    },
    /// Close connection `conn` of the receiving node with an error.
    Kill {
        /// The receiving node's connection.
        conn: u64,
        /// The error.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// A control message from a device of the sending node, for a session or
    /// code that lives on the receiving node.
    Control {
        /// The device's connection.
        from: Conn,
        /// The encoded client message.
        text: String,
    },
    /// A relayed frame from connection `conn` of the sending node, for a
    /// session that lives on the receiving node.
    RelayFrom {
        /// The sending node's connection.
        conn: u64,
        /// The frame, relay header first.
        frame: Bytes,
    },
    /// A device of the sending node is online for its user, who has devices
    /// on the receiving node.
    Joined {
        /// The device's connection.
        from: Conn,
        /// It was just admitted: an older connection of the device on the
        /// receiving node is replaced. (Not when the sending node repeats
        /// what it has: the receiving node may hold a newer one.)
        replace: bool,
    },
    /// Connection `conn` of the sending node is gone.
    Gone {
        /// The sending node's connection.
        conn: u64,
    },
    /// The receiving node's connection `conn` is known to the sending node
    /// (which learned of it from shared storage): tell it when it is gone
    /// (at once, if it is gone already).
    Subscribe {
        /// The receiving node's connection.
        conn: u64,
    },
    /// The sending node may have lost frames to or from the receiving node (a
    /// link broke, or it judged the receiving node gone): the receiving node
    /// forgets what it holds of the sending node's connections, and both
    /// tell each other again what they have.
    Reset,
    /// The queue of the sending node's connection `conn` for `session`, a
    /// session of the receiving node, overflowed: that session ends.
    Overflow {
        /// The sending node's connection.
        conn: u64,
        /// The session.
        session: SessionId,
    },
}

/// Why a link frame did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The length field is above [`MAX_LINK_FRAME`] or below a type byte.
    #[error("a link frame of {0} bytes is outside the allowed sizes")]
    Length(usize),
    /// An unknown frame type.
    #[error("unknown link frame type {0}")]
    Type(u8),
    /// A field runs past the end of the frame, or bytes are left after the last.
    #[error("a {0} link frame is malformed")]
    Malformed(&'static str),
}

/// The proof a dialing node `node` sends for `nonce`.
pub fn proof(secret: &[u8], nonce: &[u8; NONCE_LEN], node: u32) -> [u8; MAC_LEN] {
    let mut mac = mac(secret);
    mac.update(b"peerpipe cluster link v1");
    mac.update(nonce);
    mac.update(&node.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether `mac` is the proof of `node` for `nonce` (compared in constant time).
pub fn verify(secret: &[u8], nonce: &[u8; NONCE_LEN], node: u32, given: &[u8; MAC_LEN]) -> bool {
    let mut mac = mac(secret);
    mac.update(b"peerpipe cluster link v1");
    mac.update(nonce);
    mac.update(&node.to_be_bytes());
    mac.verify_slice(given).is_ok()
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..len as usize]);
}

fn put_conn(out: &mut Vec<u8>, c: &Conn) {
    put_u64(out, c.conn);
    out.extend_from_slice(c.device.as_bytes());
    out.push(u8::from(c.anonymous));
    match c.ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
    put_text(out, &c.user);
    put_text(out, &c.label);
}

/// The frame's header (length and type) and its fields but a trailing body
/// (relayed bytes), which goes on the wire right after: so that a relayed
/// frame is not copied to be framed.
pub fn encode_head(frame: &Frame, out: &mut Vec<u8>) -> Option<Bytes> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let body = match frame {
        Frame::Challenge { nonce } => {
            out.push(0);
            out.extend_from_slice(nonce);
            None
        }
        Frame::Auth { node, mac } => {
            out.push(1);
            out.extend_from_slice(&node.to_be_bytes());
            out.extend_from_slice(mac);
            None
        }
        Frame::ToCtrl { conn, text } => {
            out.push(2);
            put_u64(out, *conn);
            put_text(out, text);
            None
        }
        Frame::ToRelay { conn, frame } => {
            out.push(3);
            put_u64(out, *conn);
            Some(frame.clone())
        }
        Frame::ToClosed {
            conn,
            session,
            discard,
            text,
        } => {
            out.push(4);
            put_u64(out, *conn);
            put_u64(out, session.0);
            out.push(u8::from(*discard));
            put_text(out, text);
            None
        }
        Frame::Kill {
            conn,
            code,
            message,
        } => {
            out.push(5);
            put_u64(out, *conn);
            put_text(out, code.as_str());
            put_text(out, message);
            None
        }
        Frame::Control { from, text } => {
            out.push(6);
            put_conn(out, from);
            put_text(out, text);
            None
        }
        Frame::RelayFrom { conn, frame } => {
            out.push(7);
            put_u64(out, *conn);
            Some(frame.clone())
        }
        Frame::Joined { from, replace } => {
            out.push(8);
            put_conn(out, from);
            out.push(u8::from(*replace));
            None
        }
        Frame::Gone { conn } => {
            out.push(9);
            put_u64(out, *conn);
            None
        }
        Frame::Subscribe { conn } => {
            out.push(10);
            put_u64(out, *conn);
            None
        }
        Frame::Overflow { conn, session } => {
            out.push(11);
            put_u64(out, *conn);
            put_u64(out, session.0);
            None
        }
        Frame::Reset => {
            out.push(12);
            None
        }
    };
    let len = out.len() - start - 4 + body.as_ref().map_or(0, Bytes::len);
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    body
}

/// Appends the whole encoded `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    if let Some(body) = encode_head(frame, out) {
        out.extend_from_slice(&body);
    }
}

/// Reads fields off a frame's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LinkError> {
        if self.buf.len() < n {
            return Err(LinkError::Malformed(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LinkError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, LinkError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, LinkError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, LinkError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, LinkError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(LinkError::Malformed(self.what)),
        }
    }

    fn text(&mut self) -> Result<String, LinkError> {
        let len = self.u32()? as usize;
        if len > MAX_TEXT {
            return Err(LinkError::Malformed(self.what));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| LinkError::Malformed(self.what))
    }

    fn conn(&mut self) -> Result<Conn, LinkError> {
        let conn = self.u64()?;
        let device =
            DeviceId::from_bytes(self.array()?).map_err(|_| LinkError::Malformed(self.what))?;
        let anonymous = self.flag()?;
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(LinkError::Malformed(self.what)),
        };
        Ok(Conn {
            conn,
            device,
            anonymous,
            ip,
            user: self.text()?,
            label: self.text()?,
        })
    }

    fn end(self) -> Result<(), LinkError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(LinkError::Malformed(self.what))
        }
    }
}

fn error_code(s: &str) -> ErrorCode {
    ErrorCode::ALL
        .into_iter()
        .find(|c| c.as_str() == s)
        .unwrap_or(ErrorCode::Unknown)
}

/// Decodes one frame from the front of `buf`: the frame and the bytes it took,
/// `None` while it is not complete.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, LinkError> {
    let Some(n) = decode_length(buf)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(4..n) else {
        return Ok(None);
    };
    decode_body(body).map(|f| Some((f, n)))
}

/// The length of the frame at the front of `buf`, length field included,
/// once its length field is there.
pub fn decode_length(buf: &[u8]) -> Result<Option<usize>, LinkError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len == 0 || len > MAX_LINK_FRAME - 4 {
        return Err(LinkError::Length(len));
    }
    Ok(Some(4 + len))
}

/// Like [`decode_body`], for bytes already owned: a relayed frame's bytes are
/// shared with `body`, not copied.
pub fn decode_shared(body: Bytes) -> Result<Frame, LinkError> {
    match body.first() {
        Some(3 | 7) if body.len() >= 9 => {
            let mut conn = [0; 8];
            conn.copy_from_slice(&body[1..9]);
            let conn = u64::from_be_bytes(conn);
            let frame = body.slice(9..);
            Ok(if body[0] == 3 {
                Frame::ToRelay { conn, frame }
            } else {
                Frame::RelayFrom { conn, frame }
            })
        }
        _ => decode_body(&body),
    }
}

/// Decodes a frame's bytes after its length field: its type and fields.
pub fn decode_body(body: &[u8]) -> Result<Frame, LinkError> {
    let (&kind, rest) = body.split_first().ok_or(LinkError::Length(0))?;
    let what = match kind {
        0 => "challenge",
        1 => "auth",
        2 => "to-control",
        3 => "to-relay",
        4 => "to-closed",
        5 => "kill",
        6 => "control",
        7 => "relay-from",
        8 => "joined",
        9 => "gone",
        10 => "subscribe",
        11 => "overflow",
        12 => "reset",
        _ => return Err(LinkError::Type(kind)),
    };
    let mut r = Reader { buf: rest, what };
    let frame = match kind {
        0 => Frame::Challenge { nonce: r.array()? },
        1 => Frame::Auth {
            node: r.u32()?,
            mac: r.array()?,
        },
        2 => Frame::ToCtrl {
            conn: r.u64()?,
            text: r.text()?,
        },
        3 | 7 => {
            let conn = r.u64()?;
            let frame = Bytes::copy_from_slice(r.buf);
            r.buf = &[];
            if kind == 3 {
                Frame::ToRelay { conn, frame }
            } else {
                Frame::RelayFrom { conn, frame }
            }
        }
        4 => Frame::ToClosed {
            conn: r.u64()?,
            session: SessionId(r.u64()?),
            discard: r.flag()?,
            text: r.text()?,
        },
        5 => Frame::Kill {
            conn: r.u64()?,
            code: error_code(&r.text()?),
            message: r.text()?,
        },
        6 => Frame::Control {
            from: r.conn()?,
            text: r.text()?,
        },
        8 => Frame::Joined {
            from: r.conn()?,
            replace: r.flag()?,
        },
        9 => Frame::Gone { conn: r.u64()? },
        10 => Frame::Subscribe { conn: r.u64()? },
        12 => Frame::Reset,
        _ => Frame::Overflow {
            conn: r.u64()?,
            session: SessionId(r.u64()?),
        },
    };
    r.end()?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Identity;

    fn conn() -> Conn {
        Conn {
            conn: 42,
            device: Identity::from_secret_bytes([7; 32]).device_id(),
            user: "alice".into(),
            anonymous: false,
            ip: "::1".parse().unwrap(),
            label: "laptop".into(),
        }
    }

    fn all() -> Vec<Frame> {
        vec![
            Frame::Challenge { nonce: [3; 32] },
            Frame::Auth {
                node: 9,
                mac: [4; 32],
            },
            Frame::ToCtrl {
                conn: 1,
                text: "{\"t\":\"x\"}".into(),
            },
            Frame::ToRelay {
                conn: 2,
                frame: Bytes::from_static(b"\x00\x01relayed"),
            },
            Frame::ToClosed {
                conn: 3,
                session: SessionId(u64::MAX),
                discard: true,
                text: "closed".into(),
            },
            Frame::Kill {
                conn: 4,
                code: ErrorCode::Replaced,
                message: "again".into(),
            },
            Frame::Control {
                from: conn(),
                text: "{}".into(),
            },
            Frame::RelayFrom {
                conn: 5,
                frame: Bytes::new(),
            },
            Frame::Joined {
                from: conn(),
                replace: true,
            },
            Frame::Reset,
            Frame::Gone { conn: 6 },
            Frame::Subscribe { conn: 7 },
            Frame::Overflow {
                conn: 8,
                session: SessionId(5),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_and_waits_for_its_last_byte() {
        let mut wire = Vec::new();
        for f in all() {
            encode(&f, &mut wire);
        }
        let mut at = 0;
        for f in all() {
            let (got, n) = decode(&wire[at..]).unwrap().unwrap();
            assert_eq!(got, f);
            for cut in 0..n {
                assert_eq!(decode(&wire[at..at + cut]).unwrap(), None);
            }
            at += n;
        }
        assert_eq!(at, wire.len());
        // The same through the owned decoder.
        let mut at = 0;
        for f in all() {
            let n = decode(&wire[at..]).unwrap().unwrap().1;
            let body = Bytes::copy_from_slice(&wire[at + 4..at + n]);
            assert_eq!(decode_shared(body).unwrap(), f);
            at += n;
        }
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(decode(&[0, 0, 0, 0]), Err(LinkError::Length(0)));
        assert!(matches!(
            decode(&[0xff, 0, 0, 0]),
            Err(LinkError::Length(_))
        ));
        assert_eq!(decode(&[0, 0, 0, 1, 99]), Err(LinkError::Type(99)));
        // A gone frame one byte short, and one with a byte too many.
        assert!(decode(&[0, 0, 0, 8, 9, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode(&[0, 0, 0, 10, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // A text longer than its frame.
        let mut wire = Vec::new();
        encode(
            &Frame::ToCtrl {
                conn: 1,
                text: "abc".into(),
            },
            &mut wire,
        );
        wire[16] = 9;
        assert!(decode(&wire).is_err());
    }

    #[test]
    fn the_proof_binds_secret_nonce_and_node() {
        let secret = [1u8; 32];
        let nonce = [2u8; NONCE_LEN];
        let p = proof(&secret, &nonce, 5);
        assert!(verify(&secret, &nonce, 5, &p));
        assert!(!verify(&secret, &nonce, 6, &p));
        assert!(!verify(&[9u8; 32], &nonce, 5, &p));
        assert!(!verify(&secret, &[3u8; NONCE_LEN], 5, &p));
    }
}
