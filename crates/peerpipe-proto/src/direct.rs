//! Direct-path negotiation: what two devices tell each other, inside their
//! encrypted session, to set up a direct path beside the relay.
//!
//! Every signal travels as one session `PATH_SIGNAL`
//! ([`Session::send_path_signal`](crate::session::Session::send_path_signal)), so
//! the server carries only ciphertext and cannot substitute the DTLS fingerprint
//! that an offer or answer pins. Each signal names the *attempt* it belongs to:
//! a new attempt replaces the old one on both sides, and signals of an older
//! attempt are ignored.
//!
//! Wire form: `kind (u8) | attempt (u32, big-endian) | text (UTF-8, the rest)`.
//!
//! | kind | signal | text |
//! |---|---|---|
//! | 1 | [`DirectSignal::Offer`] | an SDP offer |
//! | 2 | [`DirectSignal::Answer`] | an SDP answer |
//! | 3 | [`DirectSignal::Candidate`] | one ICE candidate line |
//! | 4 | [`DirectSignal::Close`] | empty |
//! | 5 | [`DirectSignal::Decline`] | empty |
//!
//! ```
//! use peerpipe_proto::direct::DirectSignal;
//!
//! let offer = DirectSignal::Offer { attempt: 3, sdp: "v=0\r\n".into() };
//! assert_eq!(DirectSignal::decode(&offer.encode()), Ok(offer));
//! assert!(DirectSignal::decode(&[9, 0, 0, 0, 1]).is_err());
//! ```

use crate::session::frame::MAX_PATH_SIGNAL;

const HEADER_LEN: usize = 5;
const K_OFFER: u8 = 1;
const K_ANSWER: u8 = 2;
const K_CANDIDATE: u8 = 3;
const K_CLOSE: u8 = 4;
const K_DECLINE: u8 = 5;

/// One direct-path negotiation signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectSignal {
    /// The dialing side starts attempt `attempt` with this SDP offer.
    Offer {
        /// The attempt it starts.
        attempt: u32,
        /// The SDP offer.
        sdp: String,
    },
    /// The other side's SDP answer to the offer of `attempt`.
    Answer {
        /// The attempt it answers.
        attempt: u32,
        /// The SDP answer.
        sdp: String,
    },
    /// One more local candidate of the sender (trickle).
    Candidate {
        /// The attempt it belongs to.
        attempt: u32,
        /// The candidate line (`candidate:… typ host …`).
        candidate: String,
    },
    /// The sender gave attempt `attempt` up (it failed, went silent, or the
    /// application asked for a new one): drop it.
    Close {
        /// The attempt that ended.
        attempt: u32,
    },
    /// The sender takes no direct path on this connection (relay only): do not
    /// offer again.
    Decline {
        /// The offer it declines.
        attempt: u32,
    },
}

/// Why a signal could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectSignalError {
    /// Shorter than the 5-byte header.
    #[error("a direct-path signal of {0} bytes is shorter than its header")]
    Truncated(usize),
    /// Longer than a session path signal may be.
    #[error("a direct-path signal of {0} bytes is longer than {MAX_PATH_SIGNAL}")]
    TooLong(usize),
    /// An unknown kind byte.
    #[error("unknown direct-path signal kind {0}")]
    UnknownKind(u8),
    /// The text is not UTF-8, or is empty where it must not be (or the reverse).
    #[error("malformed text in a direct-path signal of kind {0}")]
    BadText(u8),
}

impl DirectSignal {
    /// The attempt the signal belongs to.
    pub fn attempt(&self) -> u32 {
        match self {
            Self::Offer { attempt, .. }
            | Self::Answer { attempt, .. }
            | Self::Candidate { attempt, .. }
            | Self::Close { attempt }
            | Self::Decline { attempt } => *attempt,
        }
    }

    fn parts(&self) -> (u8, &str) {
        match self {
            Self::Offer { sdp, .. } => (K_OFFER, sdp),
            Self::Answer { sdp, .. } => (K_ANSWER, sdp),
            Self::Candidate { candidate, .. } => (K_CANDIDATE, candidate),
            Self::Close { .. } => (K_CLOSE, ""),
            Self::Decline { .. } => (K_DECLINE, ""),
        }
    }

    /// The wire form (see the [module docs](self)).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, text) = self.parts();
        let mut out = Vec::with_capacity(HEADER_LEN + text.len());
        out.push(kind);
        out.extend_from_slice(&self.attempt().to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out
    }

    /// Decodes and validates one signal.
    pub fn decode(buf: &[u8]) -> Result<Self, DirectSignalError> {
        if buf.len() > MAX_PATH_SIGNAL {
            return Err(DirectSignalError::TooLong(buf.len()));
        }
        let Some((header, text)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(DirectSignalError::Truncated(buf.len()));
        };
        let [kind, a, b, c, d] = *header;
        let attempt = u32::from_be_bytes([a, b, c, d]);
        let text = std::str::from_utf8(text).map_err(|_| DirectSignalError::BadText(kind))?;
        let needs_text = matches!(kind, K_OFFER | K_ANSWER | K_CANDIDATE);
        if matches!(kind, K_OFFER..=K_DECLINE) && needs_text == text.is_empty() {
            return Err(DirectSignalError::BadText(kind));
        }
        let text = text.to_owned();
        Ok(match kind {
            K_OFFER => Self::Offer { attempt, sdp: text },
            K_ANSWER => Self::Answer { attempt, sdp: text },
            K_CANDIDATE => Self::Candidate {
                attempt,
                candidate: text,
            },
            K_CLOSE => Self::Close { attempt },
            K_DECLINE => Self::Decline { attempt },
            other => return Err(DirectSignalError::UnknownKind(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let all = [
            DirectSignal::Offer {
                attempt: 1,
                sdp: "v=0".into(),
            },
            DirectSignal::Answer {
                attempt: u32::MAX,
                sdp: "v=0 ünïcode".into(),
            },
            DirectSignal::Candidate {
                attempt: 7,
                candidate: "candidate:1 1 udp 2130706175 127.0.0.1 5000 typ host".into(),
            },
            DirectSignal::Close { attempt: 2 },
            DirectSignal::Decline { attempt: 0 },
        ];
        for s in all {
            assert_eq!(DirectSignal::decode(&s.encode()), Ok(s));
        }
    }

    #[test]
    fn bad_input_is_refused_with_its_reason() {
        assert_eq!(
            DirectSignal::decode(&[1, 0, 0]),
            Err(DirectSignalError::Truncated(3))
        );
        assert_eq!(
            DirectSignal::decode(&[0, 0, 0, 0, 1]),
            Err(DirectSignalError::UnknownKind(0))
        );
        assert_eq!(
            DirectSignal::decode(&[K_OFFER, 0, 0, 0, 1]),
            Err(DirectSignalError::BadText(K_OFFER))
        );
        assert_eq!(
            DirectSignal::decode(&[K_CLOSE, 0, 0, 0, 1, b'x']),
            Err(DirectSignalError::BadText(K_CLOSE))
        );
        assert_eq!(
            DirectSignal::decode(&[K_ANSWER, 0, 0, 0, 1, 0xff, 0xfe]),
            Err(DirectSignalError::BadText(K_ANSWER))
        );
        let long = vec![K_OFFER; MAX_PATH_SIGNAL + 1];
        assert_eq!(
            DirectSignal::decode(&long),
            Err(DirectSignalError::TooLong(MAX_PATH_SIGNAL + 1))
        );
    }
}
