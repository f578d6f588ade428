//! Direct-path negotiation: what two devices tell each other, inside their
//! encrypted session, to set up a direct path beside the relay, and when
//! ([`negotiator`]).
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
//! | 6 | [`DirectSignal::QuicOffer`] | [`QuicParams`]: certificate pin (64 hex digits), attempt token (32 hex digits), then candidate addresses, space-separated |
//! | 7 | [`DirectSignal::QuicAnswer`] | [`QuicParams`], as for 6 |
//!
//! ```
//! use peerpipe_proto::direct::DirectSignal;
//!
//! let offer = DirectSignal::Offer { attempt: 3, sdp: "v=0\r\n".into() };
//! assert_eq!(DirectSignal::decode(&offer.encode()), Ok(offer));
//! assert!(DirectSignal::decode(&[9, 0, 0, 0, 1]).is_err());
//! ```

pub mod negotiator;

use std::borrow::Cow;
use std::net::SocketAddr;

use crate::session::MAX_PATH_SIGNAL;

const HEADER_LEN: usize = 5;
const K_OFFER: u8 = 1;
const K_ANSWER: u8 = 2;
const K_CANDIDATE: u8 = 3;
const K_CLOSE: u8 = 4;
const K_DECLINE: u8 = 5;
const K_QUIC_OFFER: u8 = 6;
const K_QUIC_ANSWER: u8 = 7;
/// The most candidate addresses one QUIC offer or answer may carry.
pub const MAX_QUIC_CANDIDATES: usize = 16;

/// One side's part of a QUIC attempt: the SHA-256 fingerprint of its
/// self-signed certificate (the peer accepts that certificate and no other),
/// a token naming the attempt, and the addresses its QUIC endpoint can be
/// reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicParams {
    /// SHA-256 of the endpoint's certificate (DER).
    pub pin: [u8; 32],
    /// Names this attempt to the sender's endpoint: the peer dials with it as
    /// the TLS server name, so that several connections between the same two
    /// nodes (one certificate each) reach the right sessions.
    pub token: [u8; 16],
    /// Where to dial it (1 to [`MAX_QUIC_CANDIDATES`]).
    pub candidates: Vec<SocketAddr>,
}

impl QuicParams {
    fn to_text(&self) -> String {
        let mut text = data_encoding::HEXLOWER.encode(&self.pin);
        text.push(' ');
        text.push_str(&data_encoding::HEXLOWER.encode(&self.token));
        for c in &self.candidates {
            text.push(' ');
            text.push_str(&c.to_string());
        }
        text
    }

    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split(' ');
        let pin = data_encoding::HEXLOWER
            .decode(words.next()?.as_bytes())
            .ok()?;
        let pin = <[u8; 32]>::try_from(pin).ok()?;
        let token = data_encoding::HEXLOWER
            .decode(words.next()?.as_bytes())
            .ok()?;
        let token = <[u8; 16]>::try_from(token).ok()?;
        let candidates = words
            .map(|w| w.parse().ok())
            .collect::<Option<Vec<SocketAddr>>>()?;
        if candidates.is_empty() || candidates.len() > MAX_QUIC_CANDIDATES {
            return None;
        }
        Some(Self {
            pin,
            token,
            candidates,
        })
    }
}

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
    /// The dialing side starts QUIC attempt `attempt`: the other side admits
    /// this certificate and answers.
    QuicOffer {
        /// The attempt it starts.
        attempt: u32,
        /// The offering side's certificate pin and addresses.
        quic: QuicParams,
    },
    /// The other side's answer to a QUIC offer: the dialing side dials these
    /// addresses and accepts only this certificate.
    QuicAnswer {
        /// The attempt it answers.
        attempt: u32,
        /// The answering side's certificate pin and addresses.
        quic: QuicParams,
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
            | Self::Decline { attempt }
            | Self::QuicOffer { attempt, .. }
            | Self::QuicAnswer { attempt, .. } => *attempt,
        }
    }

    fn parts(&self) -> (u8, Cow<'_, str>) {
        match self {
            Self::Offer { sdp, .. } => (K_OFFER, sdp.into()),
            Self::Answer { sdp, .. } => (K_ANSWER, sdp.into()),
            Self::Candidate { candidate, .. } => (K_CANDIDATE, candidate.into()),
            Self::Close { .. } => (K_CLOSE, "".into()),
            Self::Decline { .. } => (K_DECLINE, "".into()),
            Self::QuicOffer { quic, .. } => (K_QUIC_OFFER, quic.to_text().into()),
            Self::QuicAnswer { quic, .. } => (K_QUIC_ANSWER, quic.to_text().into()),
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
        let quic = || QuicParams::parse(text).ok_or(DirectSignalError::BadText(kind));
        Ok(match kind {
            K_QUIC_OFFER => Self::QuicOffer {
                attempt,
                quic: quic()?,
            },
            K_QUIC_ANSWER => Self::QuicAnswer {
                attempt,
                quic: quic()?,
            },
            _ => Self::with_text(kind, attempt, text.to_owned())?,
        })
    }

    fn with_text(kind: u8, attempt: u32, text: String) -> Result<Self, DirectSignalError> {
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
            DirectSignal::QuicOffer {
                attempt: 4,
                quic: QuicParams {
                    pin: [0xab; 32],
                    token: [2; 16],
                    candidates: vec!["127.0.0.1:4433".parse().unwrap()],
                },
            },
            DirectSignal::QuicAnswer {
                attempt: 5,
                quic: QuicParams {
                    pin: [1; 32],
                    token: [0xff; 16],
                    candidates: vec![
                        "192.0.2.4:9".parse().unwrap(),
                        "[2001:db8::1]:443".parse().unwrap(),
                    ],
                },
            },
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
        let pin = format!("{} {}", "ab".repeat(32), "cd".repeat(16));
        for bad in [
            String::new(),
            pin.clone(),
            format!("{pin} not-an-address"),
            format!("{} {} 127.0.0.1:1", "ab".repeat(31), "cd".repeat(16)),
            format!("{} {} 127.0.0.1:1", "ab".repeat(32), "cd".repeat(15)),
            format!("{pin}{}", " 127.0.0.1:1".repeat(MAX_QUIC_CANDIDATES + 1)),
        ] {
            let mut buf = vec![K_QUIC_OFFER, 0, 0, 0, 1];
            buf.extend_from_slice(bad.as_bytes());
            assert_eq!(
                DirectSignal::decode(&buf),
                Err(DirectSignalError::BadText(K_QUIC_OFFER)),
                "{bad:?}"
            );
        }
        let long = vec![K_OFFER; MAX_PATH_SIGNAL + 1];
        assert_eq!(
            DirectSignal::decode(&long),
            Err(DirectSignalError::TooLong(MAX_PATH_SIGNAL + 1))
        );
    }
}
