//! Doors: how a device lets devices of *any* user connect to it, if they hold
//! a secret it handed out (in a share ticket, say).
//!
//! The server keeps users apart: a device may connect only to its own user's
//! devices, or to the other device of a live one-time code. A door is a third,
//! lasting way in. The device holding a [`DoorKey`] opens the key's [`Door`] at
//! the server ([`ClientMessage::OpenDoor`](crate::signal::ClientMessage::OpenDoor));
//! a device of any user that knows the key connects naming the door
//! ([`ClientMessage::Connect`](crate::signal::ClientMessage::Connect) with `door`),
//! and the server lets it through while the door is open.
//!
//! The server sees the door, never the key: both the door and the session's
//! pre-shared key ([`DoorKey::psk`]) are derived from the key one way, and the
//! end-to-end handshake must prove the pre-shared key. So a server (or anyone who
//! learned the door from it) can ring, but cannot get in.
//!
//! ```
//! use peerpipe_proto::door::DoorKey;
//!
//! let key = DoorKey::derive(&[7; 32], b"what this key opens");
//! let door = key.door();
//! assert_eq!(door.to_string().parse(), Ok(door));
//! assert_ne!(key.psk().0[..16], door.as_bytes()[..]);
//! assert_eq!(DoorKey::derive(&[7; 32], b"what this key opens"), key);
//! ```

use std::fmt;
use std::str::FromStr;

use hkdf::Hkdf;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use crate::session::handshake::Psk;

/// The bytes of a [`Door`].
pub const DOOR_LEN: usize = 16;

const SALT: &[u8] = b"peerpipe-door-v1";

/// The secret that opens a door: 32 bytes, handed to whoever may connect.
/// Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct DoorKey(pub [u8; 32]);

impl fmt::Debug for DoorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DoorKey(<redacted>)")
    }
}

impl DoorKey {
    /// A key derived from a device's secret and what the key is for (a
    /// collection's hash): the same inputs give the same key, so a ticket
    /// stays valid each time the same device offers the same thing.
    pub fn derive(secret: &[u8], context: &[u8]) -> Self {
        let mut key = [0; 32];
        expand(secret, &[b"key:", context].concat(), &mut key);
        Self(key)
    }

    /// The door this key opens, which the server sees.
    pub fn door(&self) -> Door {
        let mut door = [0; DOOR_LEN];
        expand(&self.0, b"door", &mut door);
        Door(door)
    }

    /// The pre-shared key the end-to-end handshake of a connection through the
    /// door proves; the server cannot derive it from the door.
    pub fn psk(&self) -> Psk {
        let mut psk = [0; 32];
        expand(&self.0, b"psk", &mut psk);
        Psk(psk)
    }
}

fn expand(ikm: &[u8], info: &[u8], out: &mut [u8]) {
    // HKDF-SHA256 gives up to 8,160 bytes; these outputs are 16 or 32.
    let ok = Hkdf::<Sha256>::new(Some(SALT), ikm).expand(info, out);
    debug_assert!(ok.is_ok());
}

/// What the server knows of a door: 16 bytes, in text 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Door([u8; DOOR_LEN]);

impl Door {
    /// The door's bytes.
    pub fn as_bytes(&self) -> &[u8; DOOR_LEN] {
        &self.0
    }

    /// A door from its bytes.
    pub fn from_bytes(bytes: [u8; DOOR_LEN]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Door({self})")
    }
}

/// Why a text is not a door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a door is 32 lowercase hex digits")]
pub struct DoorParseError;

impl FromStr for Door {
    type Err = DoorParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.as_bytes();
        if digits.len() != 2 * DOOR_LEN {
            return Err(DoorParseError);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(DoorParseError),
        };
        let mut door = [0; DOOR_LEN];
        for (byte, pair) in door.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Ok(Self(door))
    }
}

impl Serialize for Door {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Door {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doors_read_back_and_bad_text_is_refused() {
        let door = DoorKey([3; 32]).door();
        let text = door.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<Door>(), Ok(door));
        assert!(text.to_uppercase().parse::<Door>().is_err());
        assert!(text[..30].parse::<Door>().is_err());
        assert!(format!("{text}00").parse::<Door>().is_err());
        assert!("zz".repeat(16).parse::<Door>().is_err());
    }

    #[test]
    fn keys_differ_by_secret_and_context() {
        let a = DoorKey::derive(&[1; 32], b"x");
        assert_ne!(a, DoorKey::derive(&[2; 32], b"x"));
        assert_ne!(a, DoorKey::derive(&[1; 32], b"y"));
        assert_ne!(a.door(), DoorKey::derive(&[1; 32], b"y").door());
        assert_ne!(a.psk(), DoorKey::derive(&[1; 32], b"y").psk());
        assert_eq!(format!("{a:?}"), "DoorKey(<redacted>)");
    }
}
