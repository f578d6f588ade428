//! The announcement a sender makes on its local network when there is no
//! server (`peerpipe send --lan`): the number of its code and the port of the
//! server it runs for it. Nothing of the code's words is in it.

use std::fmt;

/// The start of every announcement; the version is part of it.
const MAGIC: &str = "peerpipe-lan/1";
/// The longest announcement there is (`MAGIC`, a ten-digit number, a port).
pub const MAX_LEN: usize = 64;

/// "A sender of code number `nameplate` waits at a server on my address, port `port`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// The code's number (at least 1).
    pub nameplate: u32,
    /// The TCP port of the sender's server (not 0).
    pub port: u16,
}

impl Announcement {
    /// Decodes a datagram; `None` for anything that is not an announcement of
    /// this version (other traffic on the group is ignored, never an error).
    pub fn decode(datagram: &[u8]) -> Option<Self> {
        if datagram.len() > MAX_LEN {
            return None;
        }
        let text = std::str::from_utf8(datagram).ok()?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let mut parts = text.split(' ');
        let (Some(MAGIC), Some(nameplate), Some(port), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(nameplate) || !digits(port) {
            return None;
        }
        let nameplate: u32 = nameplate.parse().ok().filter(|n| *n != 0)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        Some(Self { nameplate, port })
    }

    /// The datagram to send.
    pub fn encode(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for Announcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{MAGIC} {} {}", self.nameplate, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::Announcement;

    #[test]
    fn announcements_round_trip_and_are_parsed_strictly() {
        let a = Announcement {
            nameplate: 7,
            port: 40123,
        };
        assert_eq!(a.encode(), b"peerpipe-lan/1 7 40123\n");
        assert_eq!(Announcement::decode(&a.encode()), Some(a));
        assert_eq!(Announcement::decode(b"peerpipe-lan/1 7 40123"), Some(a));
        let max = Announcement {
            nameplate: u32::MAX,
            port: u16::MAX,
        };
        assert_eq!(Announcement::decode(&max.encode()), Some(max));
        for bad in [
            &b"peerpipe-lan/2 7 40123\n"[..],
            b"peerpipe-lan/1 0 40123\n",
            b"peerpipe-lan/1 7 0\n",
            b"peerpipe-lan/1 7 70000\n",
            b"peerpipe-lan/1 +7 1\n",
            b"peerpipe-lan/1 7\n",
            b"peerpipe-lan/1 7 1 extra\n",
            b"peerpipe-lan/1 7 1\n\n",
            b"peerpipe-lan/1  7 1\n",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(Announcement::decode(bad), None, "{bad:?}");
        }
    }
}
