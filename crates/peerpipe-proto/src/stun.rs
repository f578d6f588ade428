//! The STUN binding exchange (RFC 8489), the part peerpipe needs: a device asks
//! a STUN server which address its UDP socket has on the far side of the NATs
//! (its server-reflexive address), and `peerpipe serve` can answer.
//!
//! Only what a binding needs is encoded or read: the 20-byte header, and
//! `XOR-MAPPED-ADDRESS` (or the older `MAPPED-ADDRESS`) in a success response.
//! ICE's own binding checks (with `USERNAME` and `MESSAGE-INTEGRITY`) are the
//! WebRTC stack's business and are not parsed here.
//!
//! ```
//! use peerpipe_proto::stun;
//!
//! let txid = [7u8; 12];
//! let request = stun::binding_request(txid);
//! assert_eq!(stun::parse_binding_request(&request), Some(txid));
//! let seen_from = "203.0.113.9:40000".parse().unwrap();
//! let response = stun::binding_response(txid, seen_from);
//! assert_eq!(stun::parse_binding_response(&response, txid), Ok(seen_from));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed value in every STUN message since RFC 5389.
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// A STUN transaction id.
pub type TransactionId = [u8; 12];

/// The fixed header every STUN message starts with.
pub(crate) const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const MAPPED_ADDRESS: u16 = 0x0001;
pub(crate) const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// Why a datagram is not the binding response that was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not a STUN message, or one for another transaction.
    #[error("not a STUN response to this request")]
    NotOurs,
    /// The server answered with a binding error.
    #[error("the STUN server answered with an error")]
    ErrorResponse,
    /// A success response whose attributes are malformed or lack an address.
    #[error("malformed STUN binding response")]
    Malformed,
}

/// A message header of type `kind` announcing `len` bytes of attributes.
pub(crate) fn header(kind: u16, len: u16, txid: TransactionId) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + usize::from(len));
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(&txid);
    out
}

/// Splits a STUN message into type, transaction id and attributes.
pub(crate) fn split(buf: &[u8]) -> Option<(u16, TransactionId, &[u8])> {
    let (head, body) = buf.split_first_chunk::<HEADER_LEN>()?;
    let kind = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let cookie = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    // The two top bits of every STUN message are zero; lengths are 4-aligned.
    if kind & 0xc000 != 0 || cookie != MAGIC_COOKIE || len != body.len() || len % 4 != 0 {
        return None;
    }
    let mut txid = [0; 12];
    txid.copy_from_slice(&head[8..]);
    Some((kind, txid, body))
}

/// One attribute of a message: its type, value, and where its header starts
/// in the attribute section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attribute<'a> {
    pub kind: u16,
    pub value: &'a [u8],
    pub at: usize,
}

/// The attributes of a message body; `None` if they are malformed.
pub(crate) fn attributes(body: &[u8]) -> Option<Vec<Attribute<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let (head, rest) = body[at..].split_first_chunk::<4>()?;
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let padded = len.checked_add(3)? & !3;
        if rest.len() < padded {
            return None;
        }
        out.push(Attribute {
            kind,
            value: &rest[..len],
            at,
        });
        at += 4 + padded;
    }
    Some(out)
}

/// Appends attribute `kind` with `value` (padded to 4 bytes) to a message and
/// updates the length in its header.
pub(crate) fn push_attribute(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    msg.extend_from_slice(&kind.to_be_bytes());
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(&value[..usize::from(len)]);
    msg.resize(msg.len().next_multiple_of(4), 0);
    set_length(msg, 0);
}

/// Writes into a message's header the length of its attributes plus `extra`
/// bytes (MESSAGE-INTEGRITY counts itself before it is there).
pub(crate) fn set_length(msg: &mut [u8], extra: usize) {
    let len = msg.len().saturating_sub(HEADER_LEN) + extra;
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    msg[2..4].copy_from_slice(&len.to_be_bytes());
}

/// A binding request with transaction id `txid`.
pub fn binding_request(txid: TransactionId) -> Vec<u8> {
    header(BINDING_REQUEST, 0, txid)
}

/// The transaction id of a binding request, or `None` if `buf` is not one.
pub fn parse_binding_request(buf: &[u8]) -> Option<TransactionId> {
    match split(buf)? {
        (BINDING_REQUEST, txid, body) => attributes(body).map(|_| txid),
        _ => None,
    }
}

/// A success response telling the requester it was seen from `addr`.
pub fn binding_response(txid: TransactionId, addr: SocketAddr) -> Vec<u8> {
    let mut out = header(BINDING_SUCCESS, 0, txid);
    push_attribute(&mut out, XOR_MAPPED_ADDRESS, &xor_address(addr, txid));
    out
}

/// Whether `buf` looks like any STUN message (so it is not for the WebRTC stack
/// when it carries one of our transaction ids).
pub fn is_stun(buf: &[u8]) -> bool {
    split(buf).is_some()
}

/// The mapped address in a binding response to transaction `txid`.
pub fn parse_binding_response(buf: &[u8], txid: TransactionId) -> Result<SocketAddr, StunError> {
    let (kind, id, body) = split(buf).ok_or(StunError::NotOurs)?;
    if id != txid {
        return Err(StunError::NotOurs);
    }
    match kind {
        BINDING_SUCCESS => {}
        BINDING_ERROR => return Err(StunError::ErrorResponse),
        _ => return Err(StunError::NotOurs),
    }
    let attrs = attributes(body).ok_or(StunError::Malformed)?;
    let xored = attrs.iter().find(|a| a.kind == XOR_MAPPED_ADDRESS);
    if let Some(a) = xored {
        return parse_address(a.value, Some(txid)).ok_or(StunError::Malformed);
    }
    let plain = attrs.iter().find(|a| a.kind == MAPPED_ADDRESS);
    plain
        .and_then(|a| parse_address(a.value, None))
        .ok_or(StunError::Malformed)
}

/// The mask XOR-MAPPED-ADDRESS applies: the cookie, then the transaction id.
fn mask(txid: TransactionId) -> [u8; 16] {
    let mut mask = [0; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&txid);
    mask
}

/// An address as an XOR-MAPPED-ADDRESS (or XOR-PEER/RELAYED-ADDRESS) value.
pub(crate) fn xor_address(addr: SocketAddr, txid: TransactionId) -> Vec<u8> {
    let mask = mask(txid);
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut out = vec![0, 0];
    out.extend_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_V4;
            out.extend(ip.octets().iter().zip(mask).map(|(b, m)| b ^ m));
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_V6;
            out.extend(ip.octets().iter().zip(mask).map(|(b, m)| b ^ m));
        }
    }
    out
}

/// Reads a (XOR-)MAPPED-ADDRESS value; `xor` holds the transaction id to unmask with.
pub(crate) fn parse_address(value: &[u8], xor: Option<TransactionId>) -> Option<SocketAddr> {
    let (head, ip) = value.split_first_chunk::<4>()?;
    let mask = xor.map(mask).unwrap_or([0; 16]);
    let port = u16::from_be_bytes([head[2] ^ mask[0], head[3] ^ mask[1]]);
    let ip = match (head[1], ip.len()) {
        (FAMILY_V4, 4) => {
            let mut o = [0; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = ip[i] ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (FAMILY_V6, 16) => {
            let mut o = [0; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = ip[i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_round_trip() {
        let txid = [0xab; 12];
        for addr in ["198.51.100.7:3478", "[2001:db8::5]:65535", "0.0.0.0:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let response = binding_response(txid, addr);
            assert!(is_stun(&response));
            assert_eq!(parse_binding_response(&response, txid), Ok(addr));
        }
    }

    /// RFC 5769 2.2: a sample IPv4 response (the FINGERPRINT and
    /// MESSAGE-INTEGRITY attributes are skipped, the address is read).
    #[test]
    fn the_rfc_5769_sample_response_reads() {
        let hex = "0101003c2112a442b7e7a701bc34d686fa87dfae\
                   8022000b7465737420766563746f7220\
                   002000080001a147e112a643\
                   000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
                   80280004c07d4c96";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut txid = [0; 12];
        txid.copy_from_slice(&bytes[8..20]);
        assert_eq!(
            parse_binding_response(&bytes, txid),
            Ok("192.0.2.1:32853".parse().unwrap())
        );
    }

    #[test]
    fn other_messages_are_told_apart() {
        let txid = [1; 12];
        let response = binding_response(txid, "192.0.2.1:1".parse().unwrap());
        assert_eq!(
            parse_binding_response(&response, [2; 12]),
            Err(StunError::NotOurs)
        );
        assert_eq!(parse_binding_request(&response), None);
        assert_eq!(parse_binding_request(&binding_request(txid)), Some(txid));
        assert_eq!(
            parse_binding_response(&binding_request(txid), txid),
            Err(StunError::NotOurs)
        );
        let mut error = header(BINDING_ERROR, 0, txid);
        assert_eq!(
            parse_binding_response(&error, txid),
            Err(StunError::ErrorResponse)
        );
        error[0] = 0xff;
        assert!(!is_stun(&error));
        let mut truncated = response.clone();
        truncated.truncate(response.len() - 4);
        assert!(parse_binding_response(&truncated, txid).is_err());
        let empty = header(BINDING_SUCCESS, 0, txid);
        assert_eq!(
            parse_binding_response(&empty, txid),
            Err(StunError::Malformed)
        );
    }
}
