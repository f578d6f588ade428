//! Signaling messages: JSON text frames between a device and the server.
//!
//! Every frame is one JSON object with `"v": 1` and a `"type"`. The exchange:
//!
//! 1. On connect the server sends [`ServerMessage::Challenge`] with a random nonce.
//! 2. The device answers [`ClientMessage::Hello`] with its token, its id and a
//!    signature over [`hello_payload`] (nonce and token, domain-separated).
//! 3. The server answers [`ServerMessage::Welcome`] (with the user's online devices
//!    and the limits in force) or [`ServerMessage::Error`] and closes.
//! 4. Then requests carry a `req` number that the answer repeats; events
//!    (presence, incoming connections, closes) are pushed at any time.
//!
//! A hello with an empty token admits an *anonymous* device (if the server
//! allows them): it belongs to no user, sees no peers and nobody sees it; it can
//! only use one-time codes.
//!
//! One-time codes let two devices of different users (or anonymous ones) meet:
//! one allocates a nameplate ([`ClientMessage::CodeAllocate`]), the other claims
//! it ([`ClientMessage::CodeClaim`]; a nameplate can be claimed once), then the
//! two exchange a few small opaque messages through the server
//! ([`ClientMessage::CodeMessage`]: the PAKE of [`crate::code`]) and may connect
//! to each other while the code is live.
//!
//! A device may also open *doors* ([`ClientMessage::OpenDoor`], see
//! [`crate::door`]): a device of any user that names one in its
//! [`ClientMessage::Connect`] reaches it while the door is open.
//!
//! Relayed session data travels in binary frames, see [`crate::relay`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::door::Door;
use crate::id::DeviceId;

/// The signaling protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The most bytes a text frame from a client may have. Larger frames are
/// refused unparsed.
pub const MAX_TEXT_FRAME: usize = 16 * 1024;
/// The most devices a [`ServerMessage::Welcome`] or [`ServerMessage::Peers`]
/// lists, and so the most devices a server lets one user have online.
pub const MAX_LISTED_PEERS: usize = 4096;
/// The most bytes a text frame from the server may have: a list of
/// [`MAX_LISTED_PEERS`] devices with the longest labels fits. Larger frames
/// are refused unparsed.
pub const MAX_SERVER_TEXT_FRAME: usize = 1024 * 1024;
/// The most bytes a device label may have.
pub const MAX_LABEL_LEN: usize = 64;
/// The most bytes of free text (error messages, reject reasons) in a frame.
pub const MAX_REASON_LEN: usize = 256;
/// Length of the server's challenge nonce in bytes.
pub const NONCE_LEN: usize = 32;
/// The most bytes a service label ([`ClientMessage::Connect`]) may have.
pub const MAX_SERVICE_LEN: usize = 32;
/// The most bytes a code message body carries (decoded).
pub const MAX_CODE_BODY: usize = 512;
/// The most code messages each of the two devices of a code may send.
pub const MAX_CODE_MESSAGES: u8 = 4;

/// Whether `service` is a valid service label: 1 to [`MAX_SERVICE_LEN`] bytes of
/// `a-z`, `0-9` and `-`.
pub fn valid_service(service: &str) -> bool {
    !service.is_empty()
        && service.len() <= MAX_SERVICE_LEN
        && service
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

/// The text form of a code message body: unpadded base64url.
pub fn encode_code_body(body: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
}

/// The bytes of a code message body; at most [`MAX_CODE_BODY`] of them.
pub fn decode_code_body(text: &str) -> Result<Vec<u8>, DecodeError> {
    use base64::Engine as _;
    if text.len() > MAX_CODE_BODY.div_ceil(3) * 4 {
        return Err(DecodeError::Invalid(format!(
            "a code message body has at most {MAX_CODE_BODY} bytes"
        )));
    }
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| DecodeError::Invalid("a code message body is unpadded base64url".into()))?;
    if body.len() > MAX_CODE_BODY {
        return Err(DecodeError::Invalid(format!(
            "a code message body has at most {MAX_CODE_BODY} bytes"
        )));
    }
    Ok(body)
}

const HELLO_DOMAIN: &[u8] = b"peerpipe-hello-v1\0";

/// The bytes a device signs to answer a challenge: domain, nonce, token.
///
/// Binding the token stops a captured signature from being replayed with another
/// token, and the fresh nonce stops it from being replayed at all.
pub fn hello_payload(nonce: &[u8; NONCE_LEN], token: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(HELLO_DOMAIN.len() + NONCE_LEN + token.len());
    v.extend_from_slice(HELLO_DOMAIN);
    v.extend_from_slice(nonce);
    v.extend_from_slice(token.as_bytes());
    v
}

/// A session id, allocated by the server for one connection between two devices.
///
/// On the wire in JSON it is 16 lowercase hex digits (a string, so that browsers
/// do not lose precision); in binary relay frames it is 8 bytes big-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl FromStr for SessionId {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("a session id is 16 lowercase hex digits");
        }
        u64::from_str_radix(s, 16)
            .map(SessionId)
            .map_err(|_| "a session id is 16 lowercase hex digits")
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A device as other devices of its user see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The device id.
    pub id: DeviceId,
    /// The label the device gave itself (host name, "laptop"); may be empty.
    #[serde(default)]
    pub label: String,
}

/// The most bytes of an ICE server's URL, user name or credential.
pub const MAX_ICE_FIELD: usize = 256;
/// The most ICE servers a welcome lists.
pub const MAX_ICE_SERVERS: usize = 8;

/// A STUN or TURN server devices may use to find a direct path, announced in
/// [`ServerMessage::Welcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:HOST:PORT`, `turn:HOST:PORT` or `turns:HOST:PORT`, optionally with
    /// `?transport=udp|tcp`.
    pub url: String,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Why an ICE server description is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IceServerError(&'static str);

impl IceServer {
    /// A STUN server from `stun:HOST:PORT` (the `stun:` may be left out).
    pub fn stun(url: &str) -> Result<Self, IceServerError> {
        let url = if url.contains(':') && url.starts_with("stun:") {
            url.to_string()
        } else {
            format!("stun:{url}")
        };
        let server = Self {
            url,
            username: None,
            credential: None,
        };
        server.check()?;
        Ok(server)
    }

    /// A TURN server from `URL,USER,PASSWORD` (`turn:` is added if left out).
    pub fn turn(spec: &str) -> Result<Self, IceServerError> {
        let mut parts = spec.splitn(3, ',');
        let (Some(url), Some(user), Some(pass)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(IceServerError("a TURN server is URL,USER,PASSWORD"));
        };
        let url = if url.starts_with("turn:") || url.starts_with("turns:") {
            url.to_string()
        } else {
            format!("turn:{url}")
        };
        let server = Self {
            url,
            username: Some(user.to_string()),
            credential: Some(pass.to_string()),
        };
        server.check()?;
        Ok(server)
    }

    /// Checks the scheme, the `HOST:PORT` and the field sizes.
    pub fn check(&self) -> Result<(), IceServerError> {
        for field in [
            Some(&self.url),
            self.username.as_ref(),
            self.credential.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if field.is_empty()
                || field.len() > MAX_ICE_FIELD
                || field.chars().any(char::is_control)
            {
                return Err(IceServerError(
                    "ICE server fields are 1 to 256 bytes without control characters",
                ));
            }
        }
        let (scheme, rest) = self.url.split_once(':').ok_or(IceServerError(
            "an ICE server URL starts with stun:, turn: or turns:",
        ))?;
        let turn = match scheme {
            "stun" => false,
            "turn" | "turns" => true,
            _ => {
                return Err(IceServerError(
                    "an ICE server URL starts with stun:, turn: or turns:",
                ));
            }
        };
        if turn != self.username.is_some() || turn != self.credential.is_some() {
            return Err(IceServerError(
                "TURN servers need a user name and password, STUN servers have none",
            ));
        }
        let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !matches!(query, "" | "transport=udp" | "transport=tcp") {
            return Err(IceServerError(
                "the only query is ?transport=udp or ?transport=tcp",
            ));
        }
        let (host, port) = host_port
            .rsplit_once(':')
            .ok_or(IceServerError("an ICE server URL needs HOST:PORT"))?;
        let bracketed = host.starts_with('[') && host.ends_with(']');
        let bad_host = host.is_empty() || host.contains('/') || (host.contains(':') && !bracketed);
        if bad_host || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(IceServerError("an ICE server URL needs HOST:PORT"));
        }
        Ok(())
    }
}

/// Limits the server enforces, announced in [`ServerMessage::Welcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The most bytes a binary frame may have, relay header included.
    pub max_frame: u32,
    /// Control messages per second a connection may send (sustained).
    pub control_rate: u32,
    /// How often the server pings, in milliseconds.
    pub ping_interval_ms: u64,
    /// Silence after which the server drops the connection, in milliseconds.
    pub idle_timeout_ms: u64,
}

/// Error codes in [`ServerMessage::Error`]. Stable strings; clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not valid JSON of a known message, or a field is out of range.
    BadRequest,
    /// The frame's `v` is not a version this server speaks.
    UnsupportedVersion,
    /// The token is malformed or not signed by this server.
    BadToken,
    /// The token has expired: mint a new one.
    TokenExpired,
    /// The challenge signature does not verify for the claimed device id.
    BadSignature,
    /// No valid hello arrived within the handshake time-out.
    HandshakeTimeout,
    /// The connection sent more control messages than its rate allows.
    RateLimited,
    /// A binary frame exceeded the maximum frame size.
    FrameTooLarge,
    /// The user already has the maximum number of devices online.
    TooManyDevices,
    /// The same device connected again; this older connection is closed.
    Replaced,
    /// The target device belongs to this user but is not online.
    PeerOffline,
    /// No such device for this user (also the answer for other users' devices).
    NotFound,
    /// The operation is not allowed (a session that is not this device's, or itself).
    Forbidden,
    /// The target device rejected the connection.
    Rejected,
    /// The other side did not answer in time.
    Timeout,
    /// The connection was silent past the idle time-out.
    IdleTimeout,
    /// This connection did not read relayed data for too long.
    SlowConsumer,
    /// The server is shutting down; reconnect later.
    ShuttingDown,
    /// A failure inside the server.
    Internal,
    /// The chosen nameplate of a [`ClientMessage::CodeAllocate`] is allocated
    /// already: choose another.
    CodeTaken,
    /// A code this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a server of this version sends, in a stable order (for metrics).
    pub const ALL: [ErrorCode; 20] = [
        Self::BadRequest,
        Self::UnsupportedVersion,
        Self::BadToken,
        Self::TokenExpired,
        Self::BadSignature,
        Self::HandshakeTimeout,
        Self::RateLimited,
        Self::FrameTooLarge,
        Self::TooManyDevices,
        Self::Replaced,
        Self::PeerOffline,
        Self::NotFound,
        Self::Forbidden,
        Self::Rejected,
        Self::Timeout,
        Self::IdleTimeout,
        Self::SlowConsumer,
        Self::ShuttingDown,
        Self::Internal,
        Self::CodeTaken,
    ];

    /// The wire string of the code, as used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadToken => "bad_token",
            Self::TokenExpired => "token_expired",
            Self::BadSignature => "bad_signature",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::RateLimited => "rate_limited",
            Self::FrameTooLarge => "frame_too_large",
            Self::TooManyDevices => "too_many_devices",
            Self::Replaced => "replaced",
            Self::PeerOffline => "peer_offline",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Rejected => "rejected",
            Self::Timeout => "timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
            Self::CodeTaken => "code_taken",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the server closes the connection after sending this code.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Self::UnsupportedVersion
                | Self::BadToken
                | Self::TokenExpired
                | Self::BadSignature
                | Self::HandshakeTimeout
                | Self::FrameTooLarge
                | Self::TooManyDevices
                | Self::Replaced
                | Self::IdleTimeout
                | Self::SlowConsumer
                | Self::ShuttingDown
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session ended, in [`ServerMessage::Closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// The other device closed the session.
    PeerClosed,
    /// The other device's signaling connection dropped.
    PeerDisconnected,
    /// The initiator gave up before the target answered.
    Cancelled,
    /// The target did not answer in time.
    Timeout,
    /// The server is shutting down.
    ShuttingDown,
    /// More of the session's relayed frames waited for the receiving device
    /// than the server queues for one session (or for one receiving device):
    /// the sender went past the session's flow-control window, or the receiver
    /// stopped reading. Only this session ended; both devices stay online and
    /// may route it again.
    RelayOverflow,
    /// A reason this version does not know.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PeerClosed => "peer closed",
            Self::PeerDisconnected => "peer disconnected",
            Self::Cancelled => "cancelled",
            Self::Timeout => "timed out",
            Self::ShuttingDown => "server shutting down",
            Self::RelayOverflow => "relay queue overflowed",
            Self::Unknown => "unknown",
        })
    }
}

/// A frame from a device to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ClientMessage {
    /// Answer to the challenge: who this device is and on whose behalf it connects.
    Hello {
        /// The admission token (see [`crate::token`]); empty (or absent) for an
        /// anonymous device.
        #[serde(default)]
        token: String,
        /// The device id, which must match the signing key.
        device: DeviceId,
        /// Base64url Ed25519 signature over [`hello_payload`].
        signature: String,
        /// A label for the other devices to show.
        #[serde(default)]
        label: String,
    },
    /// Ask for the user's online devices; answered by [`ServerMessage::Peers`].
    ListPeers {
        /// Request number, repeated in the answer.
        req: u64,
    },
    /// Ask to connect to a device; answered by [`ServerMessage::Connected`] or an error.
    Connect {
        /// Request number, repeated in the answer.
        req: u64,
        /// The target device.
        to: DeviceId,
        /// Set when this routes an existing end-to-end session again (its relay
        /// route was lost: the server restarted, a link dropped): the id of the
        /// server session the connection was first set up on. The server passes it
        /// through in [`ServerMessage::Incoming`] without interpreting it; it is a
        /// routing hint only, the session's own keys authenticate what flows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<SessionId>,
        /// What the connection is for (like ALPN): 1 to [`MAX_SERVICE_LEN`] bytes
        /// of `a-z0-9-` (see [`valid_service`]); passed through to the target in
        /// [`ServerMessage::Incoming`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        /// A door of the target ([`ClientMessage::OpenDoor`]) to come in by:
        /// then the target may be a device of any user. Passed through to the
        /// target in [`ServerMessage::Incoming`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        door: Option<Door>,
    },
    /// Accept an incoming session; answered by [`ServerMessage::Accepted`] or an error.
    Accept {
        /// Request number, repeated in the answer.
        req: u64,
        /// The session from [`ServerMessage::Incoming`].
        session: SessionId,
    },
    /// Refuse an incoming session. No answer.
    Reject {
        /// The session from [`ServerMessage::Incoming`].
        session: SessionId,
    },
    /// End a session (or withdraw a pending connect). No answer.
    Close {
        /// The session to end.
        session: SessionId,
    },
    /// Allocate a one-time code's nameplate; answered by
    /// [`ServerMessage::CodeAllocated`] or an error (`code_taken` when the
    /// chosen nameplate is allocated already).
    CodeAllocate {
        /// Request number, repeated in the answer.
        req: u64,
        /// A chosen nameplate (at least 1, at most [`MAX_CHOSEN_NAMEPLATE`])
        /// instead of one the server draws: for a code agreed on beforehand.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nameplate: Option<u32>,
    },
    /// Claim a nameplate another device allocated; answered by
    /// [`ServerMessage::CodeJoined`] or an error (`not_found` for a nameplate that
    /// does not exist, expired or was already claimed: a nameplate is claimed once).
    CodeClaim {
        /// Request number, repeated in the answer.
        req: u64,
        /// The nameplate (the number of the code).
        nameplate: u32,
    },
    /// An opaque message for the other device of a claimed code. No answer.
    CodeMessage {
        /// The nameplate.
        nameplate: u32,
        /// Unpadded base64url of at most [`MAX_CODE_BODY`] bytes.
        body: String,
    },
    /// Give a nameplate up (either device of it): the other device hears
    /// [`ServerMessage::CodeClosed`], and the two may no longer connect because of
    /// it. No answer.
    CodeRelease {
        /// The nameplate.
        nameplate: u32,
    },
    /// Let device `peer` route connection `connection` to this device again
    /// ([`ClientMessage::Connect`] with `resume`) although it is not this user's
    /// device: the two met through a one-time code, whose grant ended once they
    /// were connected. The target of such a connection sends this when it
    /// accepts it and again after every reconnect, since the server forgets it
    /// with the link (and on a restart); without it the server answers such a
    /// resume `not_found`, as for any device of another user. At most
    /// [`MAX_RESUMABLE`] per connection. No answer.
    AllowResume {
        /// The device that dialed the connection.
        peer: DeviceId,
        /// The connection: the server session it was first set up on.
        connection: SessionId,
    },
    /// Withdraw an [`ClientMessage::AllowResume`]: the connection ended. No answer.
    RevokeResume {
        /// The device that dialed the connection.
        peer: DeviceId,
        /// The connection: the server session it was first set up on.
        connection: SessionId,
    },
    /// Let devices of any user (and anonymous ones) connect to this device if
    /// they name `door` ([`crate::door`]): the server forgets it with the
    /// link, so the device opens its doors again after every reconnect. At
    /// most [`MAX_DOORS`] per connection (more: `rate_limited`). No answer.
    OpenDoor {
        /// The door.
        door: Door,
    },
    /// Close a door again: connections through it already made go on. No answer.
    CloseDoor {
        /// The door.
        door: Door,
    },
}

/// How many doors ([`ClientMessage::OpenDoor`]) one server connection may hold open.
pub const MAX_DOORS: usize = 16;

/// How many [`ClientMessage::AllowResume`] one server connection may hold at once.
pub const MAX_RESUMABLE: usize = 64;

/// A frame from the server to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ServerMessage {
    /// The first frame: sign this nonce.
    Challenge {
        /// Base64url of [`NONCE_LEN`] random bytes.
        nonce: String,
    },
    /// Admission succeeded.
    Welcome {
        /// The device id, as admitted.
        device: DeviceId,
        /// The user the token admitted; empty for an anonymous device (one
        /// admitted without a token).
        user: String,
        /// The user's other devices that are online now.
        peers: Vec<PeerInfo>,
        /// The limits in force on this connection.
        limits: Limits,
        /// STUN/TURN servers the operator offers for direct paths (may be empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// The user's other online devices.
    Peers {
        /// The request this answers.
        req: u64,
        /// The devices.
        peers: Vec<PeerInfo>,
    },
    /// Another device of the user came online.
    PeerOnline {
        /// The device.
        peer: PeerInfo,
    },
    /// Another device of the user went offline.
    PeerOffline {
        /// The device id.
        id: DeviceId,
    },
    /// Another device of the user wants to connect. Answer with accept or reject.
    Incoming {
        /// The new session.
        session: SessionId,
        /// Who asks.
        from: PeerInfo,
        /// Set when this routes an existing session again: see
        /// [`ClientMessage::Connect`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<SessionId>,
        /// The service the initiator asked for, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        /// The door the initiator came in by, if it named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        door: Option<Door>,
    },
    /// The target accepted a connect request: relay frames may flow.
    Connected {
        /// The connect request this answers.
        req: u64,
        /// The session.
        session: SessionId,
        /// The target.
        peer: PeerInfo,
    },
    /// The accept went through: relay frames may flow.
    Accepted {
        /// The accept request this answers.
        req: u64,
        /// The session.
        session: SessionId,
    },
    /// A session ended. For an established session the server sends this after
    /// every relay frame it forwarded for the session, so a device that receives
    /// it has all the peer's data.
    Closed {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// A nameplate was allocated for this device.
    CodeAllocated {
        /// The request this answers.
        req: u64,
        /// The nameplate: a free number drawn at random (short while few codes are live).
        nameplate: u32,
        /// How long the nameplate stays valid unclaimed (and the two devices may
        /// connect after a claim), in milliseconds.
        #[serde(default)]
        ttl_ms: u64,
    },
    /// Another device claimed this device's nameplate.
    CodeClaimed {
        /// The nameplate.
        nameplate: u32,
    },
    /// The claim went through.
    CodeJoined {
        /// The request this answers.
        req: u64,
        /// The nameplate.
        nameplate: u32,
    },
    /// A message from the other device of a code.
    CodeMessage {
        /// The nameplate.
        nameplate: u32,
        /// Unpadded base64url of at most [`MAX_CODE_BODY`] bytes.
        body: String,
    },
    /// A nameplate ended: it expired, or the other device released it or went
    /// offline.
    CodeClosed {
        /// The nameplate.
        nameplate: u32,
    },
    /// Something went wrong. Fatal codes (see [`ErrorCode::is_fatal`]) are followed by a close.
    Error {
        /// The request this answers, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        /// The session concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<SessionId>,
        /// What went wrong.
        code: ErrorCode,
        /// A human-readable explanation.
        #[serde(default)]
        message: String,
    },
}

/// Why a text frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than [`MAX_TEXT_FRAME`] (from a client) or
    /// [`MAX_SERVER_TEXT_FRAME`] (from the server): its size and the limit.
    #[error("text frame of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    /// The frame's version is not [`VERSION`].
    #[error("unsupported protocol version {0}")]
    Version(u64),
    /// The frame is not a valid message.
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// The error code to answer this decode error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Version(_) => ErrorCode::UnsupportedVersion,
            Self::TooLarge(..) | Self::Invalid(_) => ErrorCode::BadRequest,
        }
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u8,
    #[serde(flatten)]
    msg: &'a T,
}

fn encode<T: Serialize>(msg: &T) -> String {
    // Serializing these types to JSON cannot fail: no maps with non-string keys, no
    // user-implemented Serialize that errors.
    serde_json::to_string(&EnvelopeOut { v: VERSION, msg }).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str, limit: usize) -> Result<T, DecodeError> {
    if text.len() > limit {
        return Err(DecodeError::TooLarge(text.len(), limit));
    }
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| DecodeError::Invalid("not a JSON object".into()))?;
    match obj.remove("v").map(|v| v.as_u64()) {
        Some(Some(v)) if v == u64::from(VERSION) => {}
        Some(Some(v)) => return Err(DecodeError::Version(v)),
        _ => return Err(DecodeError::Invalid("missing or non-numeric \"v\"".into())),
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Invalid(e.to_string()))
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), DecodeError> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(DecodeError::Invalid(format!(
            "{field} must be at most {max} bytes without control characters"
        )));
    }
    Ok(())
}

/// The largest nameplate a device may choose ([`ClientMessage::CodeAllocate`]):
/// six digits at most to read out.
pub const MAX_CHOSEN_NAMEPLATE: u32 = 999_999;

fn check_nameplate(nameplate: u32) -> Result<(), DecodeError> {
    if nameplate == 0 {
        return Err(DecodeError::Invalid("nameplates start at 1".into()));
    }
    Ok(())
}

impl ClientMessage {
    /// The request number an answer must repeat, for messages that have one.
    pub fn req(&self) -> Option<u64> {
        match self {
            Self::ListPeers { req }
            | Self::Connect { req, .. }
            | Self::Accept { req, .. }
            | Self::CodeAllocate { req, .. }
            | Self::CodeClaim { req, .. } => Some(*req),
            _ => None,
        }
    }

    /// Encodes the message as a versioned JSON text frame.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// Decodes and validates a text frame (size, version, schema, field limits).
    ///
    /// A connect's service label is checked by the server (it answers the request
    /// with `bad_request`), not here.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let msg: Self = decode(text, MAX_TEXT_FRAME)?;
        match &msg {
            Self::Hello {
                token,
                label,
                signature,
                ..
            } => {
                check_text("token", token, crate::token::MAX_TOKEN_LEN)?;
                check_text("label", label, MAX_LABEL_LEN)?;
                check_text("signature", signature, 128)?;
            }
            Self::CodeClaim { nameplate, .. }
            | Self::CodeMessage { nameplate, .. }
            | Self::CodeRelease { nameplate } => check_nameplate(*nameplate)?,
            Self::CodeAllocate {
                nameplate: Some(nameplate),
                ..
            } => {
                check_nameplate(*nameplate)?;
                if *nameplate > MAX_CHOSEN_NAMEPLATE {
                    return Err(DecodeError::Invalid(format!(
                        "a chosen nameplate is at most {MAX_CHOSEN_NAMEPLATE}"
                    )));
                }
            }
            _ => {}
        }
        if let Self::CodeMessage { body, .. } = &msg {
            decode_code_body(body)?;
        }
        Ok(msg)
    }
}

impl ServerMessage {
    /// Encodes the message as a versioned JSON text frame.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// Decodes a text frame from the server.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let msg: Self = decode(text, MAX_SERVER_TEXT_FRAME)?;
        match &msg {
            Self::Welcome { peers, .. } | Self::Peers { peers, .. }
                if peers.len() > MAX_LISTED_PEERS =>
            {
                return Err(DecodeError::Invalid(format!(
                    "a list of more than {MAX_LISTED_PEERS} devices"
                )));
            }
            Self::Incoming {
                service: Some(service),
                ..
            } if !valid_service(service) => {
                return Err(DecodeError::Invalid(format!(
                    "a service label is 1 to {MAX_SERVICE_LEN} bytes of a-z, 0-9 and -"
                )));
            }
            Self::CodeAllocated { nameplate, .. }
            | Self::CodeClaimed { nameplate, .. }
            | Self::CodeJoined { nameplate, .. }
            | Self::CodeClosed { nameplate } => check_nameplate(*nameplate)?,
            Self::CodeMessage { nameplate, body } => {
                check_nameplate(*nameplate)?;
                decode_code_body(body)?;
            }
            _ => {}
        }
        if let Self::Welcome { ice_servers, .. } = &msg {
            if ice_servers.len() > MAX_ICE_SERVERS {
                return Err(DecodeError::Invalid(format!(
                    "more than {MAX_ICE_SERVERS} ICE servers"
                )));
            }
            for server in ice_servers {
                server.check().map_err(|e| {
                    DecodeError::Invalid(format!("ICE server {:?}: {e}", server.url))
                })?;
            }
        }
        Ok(msg)
    }

    /// An error frame with no request or session.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, MAX_REASON_LEN);
        Self::Error {
            req: None,
            session: None,
            code,
            message,
        }
    }
}

/// Shortens `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Identity;

    fn dev(n: u8) -> DeviceId {
        Identity::from_secret_bytes([n; 32]).device_id()
    }

    #[test]
    fn client_messages_round_trip_with_version() {
        let msgs = [
            ClientMessage::Hello {
                token: "pp1.x.1.y".into(),
                device: dev(1),
                signature: "sig".into(),
                label: "laptop".into(),
            },
            ClientMessage::ListPeers { req: 1 },
            ClientMessage::Connect {
                req: 2,
                to: dev(2),
                resume: None,
                service: None,
                door: None,
            },
            ClientMessage::Connect {
                req: 4,
                to: dev(3),
                resume: Some(SessionId(0xab)),
                service: Some("code".into()),
                door: Some(crate::door::DoorKey([1; 32]).door()),
            },
            ClientMessage::OpenDoor {
                door: crate::door::DoorKey([2; 32]).door(),
            },
            ClientMessage::CloseDoor {
                door: crate::door::DoorKey([2; 32]).door(),
            },
            ClientMessage::Accept {
                req: 3,
                session: SessionId(u64::MAX),
            },
            ClientMessage::Reject {
                session: SessionId(5),
            },
            ClientMessage::Close {
                session: SessionId(6),
            },
            ClientMessage::CodeAllocate {
                req: 7,
                nameplate: None,
            },
            ClientMessage::CodeAllocate {
                req: 7,
                nameplate: Some(MAX_CHOSEN_NAMEPLATE),
            },
            ClientMessage::CodeClaim {
                req: 8,
                nameplate: 3,
            },
            ClientMessage::CodeMessage {
                nameplate: 3,
                body: encode_code_body(&[1, 2, 3]),
            },
            ClientMessage::CodeRelease { nameplate: 3 },
            ClientMessage::AllowResume {
                peer: dev(4),
                connection: SessionId(9),
            },
            ClientMessage::RevokeResume {
                peer: dev(4),
                connection: SessionId(9),
            },
        ];
        let reqs: Vec<_> = msgs.iter().map(ClientMessage::req).collect();
        assert_eq!(
            reqs,
            [
                None,
                Some(1),
                Some(2),
                Some(4),
                None,
                None,
                Some(3),
                None,
                None,
                Some(7),
                Some(7),
                Some(8),
                None,
                None,
                None,
                None
            ]
        );
        for m in msgs {
            let text = m.encode();
            assert!(text.contains("\"v\":1"), "{text}");
            assert_eq!(ClientMessage::decode(&text).unwrap(), m);
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let msgs = [
            ServerMessage::Challenge { nonce: "n".into() },
            ServerMessage::Welcome {
                device: dev(1),
                user: "u".into(),
                peers: vec![PeerInfo {
                    id: dev(2),
                    label: "b".into(),
                }],
                limits: Limits {
                    max_frame: 1,
                    control_rate: 2,
                    ping_interval_ms: 3,
                    idle_timeout_ms: 4,
                },
                ice_servers: vec![
                    IceServer::stun("stun.example.org:3478").unwrap(),
                    IceServer::turn("turns:t.example.org:5349?transport=tcp,u,p").unwrap(),
                ],
            },
            ServerMessage::Closed {
                session: SessionId(1),
                reason: CloseReason::PeerClosed,
            },
            ServerMessage::error(ErrorCode::NotFound, "no"),
            ServerMessage::Incoming {
                session: SessionId(2),
                from: PeerInfo {
                    id: dev(2),
                    label: String::new(),
                },
                resume: None,
                service: Some("share".into()),
                door: Some(crate::door::DoorKey([1; 32]).door()),
            },
            ServerMessage::CodeAllocated {
                req: 1,
                nameplate: 7,
                ttl_ms: 600_000,
            },
            ServerMessage::CodeClaimed { nameplate: 7 },
            ServerMessage::CodeJoined {
                req: 2,
                nameplate: 7,
            },
            ServerMessage::CodeMessage {
                nameplate: 7,
                body: encode_code_body(&[0; MAX_CODE_BODY]),
            },
            ServerMessage::CodeClosed { nameplate: 7 },
        ];
        for m in msgs {
            assert_eq!(ServerMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn ice_servers_are_validated() {
        let stun = IceServer::stun("stun:[::1]:3478").unwrap();
        assert_eq!(stun.url, "stun:[::1]:3478");
        assert_eq!(IceServer::stun("h:1").unwrap().url, "stun:h:1");
        let turn = IceServer::turn("h:3478,user,pa,ss").unwrap();
        assert_eq!(turn.url, "turn:h:3478");
        assert_eq!(turn.credential.as_deref(), Some("pa,ss"));
        for bad in [
            "h",
            "stun:h:0",
            "stun:h:x",
            "http:h:1",
            "stun::1",
            "stun:h:1?x=y",
        ] {
            assert!(IceServer::stun(bad).is_err(), "{bad}");
        }
        for bad in ["h:1", "h:1,u", "h:1,,p", "stun:h:1,u,p"] {
            assert!(IceServer::turn(bad).is_err(), "{bad}");
        }
        let long = "x".repeat(MAX_ICE_FIELD + 1);
        assert!(IceServer::turn(&format!("h:1,{long},p")).is_err());
        // A welcome with a broken ICE server is refused whole.
        let text = r#"{"v":1,"type":"welcome","device":"DEV","user":"u","peers":[],
            "limits":{"max_frame":1,"control_rate":1,"ping_interval_ms":1,"idle_timeout_ms":1},
            "ice_servers":[{"url":"turn:h:1"}]}"#
            .replace("DEV", &dev(1).to_string());
        assert!(matches!(
            ServerMessage::decode(&text),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn wire_form_is_stable() {
        let text = ClientMessage::Close {
            session: SessionId(0xab),
        }
        .encode();
        assert_eq!(
            text,
            r#"{"v":1,"type":"close","session":"00000000000000ab"}"#
        );
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert!(matches!(
            ClientMessage::decode("nope"),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            ClientMessage::decode("[]"),
            Err(DecodeError::Invalid(_))
        ));
        assert_eq!(
            ClientMessage::decode(r#"{"v":2,"type":"list_peers","req":1}"#),
            Err(DecodeError::Version(2))
        );
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"list_peers","req":1}"#),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"v":1,"type":"list_peers","req":1,"extra":0}"#),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"v":1,"type":"connect","req":1,"to":"zz"}"#),
            Err(DecodeError::Invalid(_))
        ));
        let to = dev(2);
        for resume in ["AB", &"A".repeat(16), &"0".repeat(15), &"g".repeat(16)] {
            let text =
                format!(r#"{{"v":1,"type":"connect","req":1,"to":"{to}","resume":"{resume}"}}"#);
            assert!(
                matches!(ClientMessage::decode(&text), Err(DecodeError::Invalid(_))),
                "{resume}"
            );
        }
        let big = format!(
            r#"{{"v":1,"type":"list_peers","req":1,"x":"{}"}}"#,
            "a".repeat(MAX_TEXT_FRAME)
        );
        assert!(matches!(
            ClientMessage::decode(&big),
            Err(DecodeError::TooLarge(_, MAX_TEXT_FRAME))
        ));
    }

    #[test]
    fn the_longest_list_of_devices_fits_a_server_frame() {
        // Labels of quotes are the longest once escaped.
        let peer = PeerInfo {
            id: dev(7),
            label: "\"".repeat(MAX_LABEL_LEN),
        };
        let peers = vec![peer; MAX_LISTED_PEERS];
        let text = ServerMessage::Peers {
            req: u64::MAX,
            peers: peers.clone(),
        }
        .encode();
        assert!(text.len() <= MAX_SERVER_TEXT_FRAME, "{}", text.len());
        assert!(
            matches!(ServerMessage::decode(&text), Ok(ServerMessage::Peers { peers: p, .. }) if p.len() == MAX_LISTED_PEERS)
        );
        let mut more = peers;
        more.push(PeerInfo {
            id: dev(8),
            label: String::new(),
        });
        let text = ServerMessage::Peers {
            req: 1,
            peers: more,
        }
        .encode();
        assert!(matches!(
            ServerMessage::decode(&text),
            Err(DecodeError::Invalid(_))
        ));
        let big = format!(
            r#"{{"v":1,"type":"peers","req":1,"peers":[],"x":"{}"}}"#,
            "a".repeat(MAX_SERVER_TEXT_FRAME)
        );
        assert!(matches!(
            ServerMessage::decode(&big),
            Err(DecodeError::TooLarge(_, MAX_SERVER_TEXT_FRAME))
        ));
    }

    #[test]
    fn all_codes_are_listed_once_with_their_wire_names() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn unknown_error_codes_decode_as_unknown() {
        let m = ServerMessage::decode(r#"{"v":1,"type":"error","code":"brand_new"}"#).unwrap();
        assert!(matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn anonymous_hello_may_omit_the_token() {
        let sig = "s".repeat(10);
        let text = format!(
            r#"{{"v":1,"type":"hello","device":"{}","signature":"{sig}"}}"#,
            dev(1)
        );
        let Ok(ClientMessage::Hello { token, .. }) = ClientMessage::decode(&text) else {
            panic!("hello without a token must decode");
        };
        assert!(token.is_empty());
    }

    #[test]
    fn code_messages_are_decoded_strictly() {
        let ok = |t: &str| ClientMessage::decode(t).is_ok();
        assert!(ok(r#"{"v":1,"type":"code_claim","req":1,"nameplate":5}"#));
        assert!(!ok(r#"{"v":1,"type":"code_claim","req":1,"nameplate":0}"#));
        assert!(!ok(r#"{"v":1,"type":"code_claim","req":1,"nameplate":-1}"#));
        assert!(!ok(
            r#"{"v":1,"type":"code_claim","req":1,"nameplate":4294967296}"#
        ));
        assert!(!ok(r#"{"v":1,"type":"code_claim","req":1}"#));
        assert!(!ok(r#"{"v":1,"type":"code_allocate","req":1,"x":1}"#));
        assert!(ok(r#"{"v":1,"type":"code_allocate","req":1}"#));
        assert!(ok(
            r#"{"v":1,"type":"code_allocate","req":1,"nameplate":999999}"#
        ));
        assert!(!ok(
            r#"{"v":1,"type":"code_allocate","req":1,"nameplate":0}"#
        ));
        assert!(!ok(
            r#"{"v":1,"type":"code_allocate","req":1,"nameplate":1000000}"#
        ));
        assert!(!ok(r#"{"v":1,"type":"code_release","nameplate":0}"#));
        let body =
            |b: &str| format!(r#"{{"v":1,"type":"code_message","nameplate":1,"body":"{b}"}}"#);
        assert!(ok(&body("AAEC")));
        assert!(ok(&body("")));
        assert!(!ok(&body("AAEC=")), "padding");
        assert!(!ok(&body("AA+/")), "standard alphabet");
        assert!(ok(&body(&encode_code_body(&[7; MAX_CODE_BODY]))));
        assert!(!ok(&body(&encode_code_body(&[7; MAX_CODE_BODY + 1]))));
        let server = |t: &str| ServerMessage::decode(t).is_ok();
        assert!(!server(
            r#"{"v":1,"type":"code_message","nameplate":1,"body":"*"}"#
        ));
        assert!(!server(r#"{"v":1,"type":"code_closed","nameplate":0}"#));
        let incoming = |svc: &str| {
            format!(
                r#"{{"v":1,"type":"incoming","session":"0000000000000001","from":{{"id":"{}"}},"service":"{svc}"}}"#,
                dev(1)
            )
        };
        assert!(server(&incoming("code")));
        assert!(!server(&incoming("Code")));
        assert!(!server(&incoming("")));
        assert!(!server(&incoming(&"a".repeat(MAX_SERVICE_LEN + 1))));
    }

    #[test]
    fn service_labels_are_validated() {
        assert!(valid_service("code"));
        assert!(valid_service("my-app-2"));
        assert!(valid_service(&"a".repeat(MAX_SERVICE_LEN)));
        for bad in [
            "",
            "Code",
            "a b",
            "a_b",
            "ä",
            &"a".repeat(MAX_SERVICE_LEN + 1),
        ] {
            assert!(!valid_service(bad), "{bad}");
        }
    }

    #[test]
    fn long_labels_are_refused() {
        let m = ClientMessage::Hello {
            token: "t".into(),
            device: dev(1),
            signature: "s".into(),
            label: "x".repeat(MAX_LABEL_LEN + 1),
        };
        assert!(ClientMessage::decode(&m.encode()).is_err());
    }
}
