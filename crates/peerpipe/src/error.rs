//! One error type per operation, each variant saying what happened and what to do.

use std::fmt;
use std::io;
use std::time::Duration;

use peerpipe_proto::code::CodeParseError;
use peerpipe_proto::signal::ErrorCode;

/// Why a connection ended. Carried by [`NodeEvent::ConnectionClosed`](crate::NodeEvent::ConnectionClosed),
/// [`SendError::Closed`], [`RecvError::Closed`] and [`StreamError::Closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side closed the connection ([`Connection::close`](crate::Connection::close)
    /// or the last handle was dropped).
    Local,
    /// The peer closed the connection in order.
    PeerClosed,
    /// The peer's node no longer knows the connection (it stopped or restarted) or
    /// closed its end without saying why.
    PeerDisconnected,
    /// The peer sent a message larger than this node's maximum of `max` bytes
    /// (peers check the limit before sending, so the peer is broken).
    MessageTooLarge {
        /// This node's limit in bytes.
        max: usize,
    },
    /// Nothing arrived from the peer within the idle time-out: it, or every path to
    /// it, is gone.
    TimedOut(Duration),
    /// A packet failed authentication: something between the devices (the relay
    /// or the network) altered or forged data. Nothing of it was delivered.
    Integrity,
    /// The end-to-end handshake failed: the other side does not hold the key of
    /// the device id it claims.
    Handshake(String),
    /// The peer sent frames that break the connection protocol (a bug or an
    /// incompatible version on one side), or says this side did.
    Protocol(String),
    /// The connection was never fully set up: the server cancelled or timed it out.
    Cancelled,
    /// This node was shut down or dropped.
    NodeStopped,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("closed by this side"),
            Self::PeerClosed => f.write_str("closed by the peer"),
            Self::PeerDisconnected => f.write_str("the peer no longer has this connection"),
            Self::MessageTooLarge { max } => write!(
                f,
                "the peer sent a message over this node's maximum message size of {max} bytes"
            ),
            Self::TimedOut(idle) => write!(f, "nothing heard from the peer for {idle:?}"),
            Self::Integrity => f.write_str(
                "a packet failed authentication (altered in transit); nothing of it was delivered",
            ),
            Self::Handshake(m) => write!(f, "end-to-end handshake failed: {m}"),
            Self::Protocol(m) => write!(f, "connection protocol error: {m}"),
            Self::Cancelled => f.write_str("cancelled by the server before it was set up"),
            Self::NodeStopped => f.write_str("this node stopped"),
        }
    }
}

/// Why [`NodeBuilder::bind`](crate::NodeBuilder::bind) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// A required builder setting is missing or invalid: fix the program.
    #[error("invalid node configuration: {0}")]
    Config(&'static str),
    /// The server could not be reached or the WebSocket failed: check the URL, the
    /// network and that the server runs, then try again.
    #[error("cannot reach the server")]
    Unreachable(#[source] io::Error),
    /// The server refused the token (malformed or minted with another secret):
    /// get a token for this server.
    #[error("the server refused the token: it is malformed or was not issued by this server")]
    BadToken,
    /// The token has expired: mint or request a new one.
    #[error("the token has expired; get a new one")]
    TokenExpired,
    /// The server could not verify the device signature (a clock-free check: this is
    /// a bug or a tampering proxy).
    #[error("the server refused the device signature")]
    BadSignature,
    /// The user already has the most devices online the server allows: stop one.
    #[error("too many devices of this user are online")]
    TooManyDevices,
    /// The server speaks another protocol version: upgrade this program or the server.
    #[error("the server does not support this protocol version")]
    UnsupportedVersion,
    /// The node has no token and the server admits no anonymous devices: get a
    /// token for this server.
    #[error("the server admits no anonymous devices: {0}")]
    AnonymousRefused(String),
    /// The server refused admission with another code: see the message.
    #[error("the server refused admission: {code}: {message}")]
    Refused {
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server sent something unexpected during the handshake: is the URL a
    /// peerpipe server of a compatible version?
    #[error("unexpected handshake from the server: {0}")]
    Protocol(String),
    /// TLS to a `wss://` server failed: the server's certificate is not trusted
    /// (trust it with [`NodeBuilder::trust_certificates`](crate::NodeBuilder::trust_certificates))
    /// or names another host, or there is no usable root certificate.
    #[error("TLS: {0}")]
    Tls(String),
    /// No admission within the connect time-out: the server or network is too slow
    /// or unreachable; try again or raise the time-out.
    #[error("no admission from the server within {0:?}")]
    TimedOut(Duration),
}

impl BindError {
    /// Whether retrying with the same settings cannot help (the node stops instead
    /// of reconnecting).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Config(_)
                | Self::Tls(_)
                | Self::AnonymousRefused(_)
                | Self::BadToken
                | Self::TokenExpired
                | Self::BadSignature
                | Self::UnsupportedVersion
        )
    }

    pub(crate) fn from_code(code: ErrorCode, message: String, anonymous: bool) -> Self {
        match code {
            ErrorCode::Forbidden if anonymous => Self::AnonymousRefused(message),
            ErrorCode::BadToken => Self::BadToken,
            ErrorCode::TokenExpired => Self::TokenExpired,
            ErrorCode::BadSignature => Self::BadSignature,
            ErrorCode::TooManyDevices => Self::TooManyDevices,
            ErrorCode::UnsupportedVersion => Self::UnsupportedVersion,
            code => Self::Refused { code, message },
        }
    }
}

/// Why the node stopped on its own, in [`NodeEvent::Stopped`](crate::NodeEvent::Stopped).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// Reconnecting failed in a way retrying cannot fix (bad or expired token, ...):
    /// fix the cause and bind a new node.
    #[error("the server refused this node on reconnect")]
    Admission(#[source] BindError),
    /// Another connection with this device's identity took over at the server. Run
    /// one node per identity.
    #[error("another node with the same device identity connected to the server")]
    Replaced,
}

/// Why a request to the server ([`Node::online_peers`](crate::Node::online_peers)) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The link to the server is down; the node is reconnecting. Try again after
    /// [`NodeEvent::Reconnected`](crate::NodeEvent::Reconnected).
    #[error("not connected to the server (reconnecting)")]
    NotConnected,
    /// No answer within the request time-out: try again.
    #[error("no answer from the server within {0:?}")]
    TimedOut(Duration),
    /// The server answered with an error.
    #[error("the server refused the request: {code}: {message}")]
    Server {
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The node has stopped: bind a new one.
    #[error("the node has stopped")]
    Stopped,
}

/// Why [`Node::connect`](crate::Node::connect) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The device belongs to this user but is not online: wait for its
    /// [`NodeEvent::PeerOnline`](crate::NodeEvent::PeerOnline).
    #[error("the device is not online")]
    PeerOffline,
    /// No such device for this user (devices of other users look the same): check the id.
    #[error("no such device for this user")]
    NotFound,
    /// The server does not allow this connection (for example to this device itself).
    #[error("the server does not allow this connection")]
    Forbidden,
    /// The service label is not 1 to 32 bytes of `a-z`, `0-9` and `-`: fix the program.
    #[error("invalid service label {0:?}: use 1 to 32 bytes of a-z, 0-9 and -")]
    InvalidService(String),
    /// The other device rejected the connection.
    #[error("the device rejected the connection")]
    Rejected,
    /// No answer within the connect time-out (the other device did not accept or
    /// reject in time): try again later.
    #[error("the device did not answer within {0:?}")]
    TimedOut(Duration),
    /// The link to the server is down; the node is reconnecting. Try again after
    /// [`NodeEvent::Reconnected`](crate::NodeEvent::Reconnected).
    #[error("not connected to the server (reconnecting)")]
    NotConnected,
    /// The device accepted, but the connection ended before the end-to-end
    /// handshake finished (see the reason): the device does not hold the key of
    /// its id, the path altered the handshake, or the device went away.
    #[error("the end-to-end handshake failed: {0}")]
    Handshake(CloseReason),
    /// The server answered with another error.
    #[error("the server refused the connection: {code}: {message}")]
    Server {
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The node has stopped: bind a new one.
    #[error("the node has stopped")]
    Stopped,
}

/// Why a one-time code exchange failed: [`Node::offer_code`](crate::Node::offer_code),
/// [`CodeOffer::accept`](crate::CodeOffer::accept) or
/// [`Node::claim_code`](crate::Node::claim_code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// The text is not a code (`7-amber-falcon`): check what was typed.
    #[error("not a valid code: {0}")]
    Malformed(#[from] CodeParseError),
    /// No such code at the server, or it was used already (a code can be tried
    /// once: a wrong guess uses it up), or it expired: ask for a new code.
    #[error("no such code, or it was used already: ask the sender for a new code")]
    NotFound,
    /// The two devices used different codes (a typo, or someone else guessed
    /// the number first): the code is used up; ask the sender for a new one.
    #[error("the codes do not match: ask the sender for a new code")]
    WrongCode,
    /// The chosen code's number is in use at the server
    /// ([`Node::offer_chosen_code`](crate::Node::offer_chosen_code)): choose
    /// another.
    #[error("this code's number is in use: choose another code")]
    Taken,
    /// Nobody claimed the code while it was valid: offer a new one.
    #[error("the code expired before anyone used it")]
    Expired,
    /// The other device left (went offline or gave up) before the exchange finished.
    #[error("the other device left before the exchange finished")]
    PeerGone,
    /// The server does not allow codes for this device (codes are off, or this
    /// device cannot use them): see the message.
    #[error("the server does not allow one-time codes here: {0}")]
    Forbidden(String),
    /// Too many code operations from this address or user: wait a minute.
    #[error("too many code operations: wait a minute and try again")]
    RateLimited,
    /// A step of the exchange did not finish within this time: try again with a
    /// new code.
    #[error("the code exchange did not finish within {0:?}")]
    TimedOut(Duration),
    /// The other device sent something that is not a code exchange message (a
    /// bug or an incompatible version).
    #[error("code exchange protocol error: {0}")]
    Protocol(String),
    /// The link to the server is down, or dropped during the exchange (the code
    /// is gone with it): try again with a new code once reconnected.
    #[error("not connected to the server (reconnecting)")]
    NotConnected,
    /// The codes matched but connecting failed.
    #[error("connecting after the code exchange failed: {0}")]
    Connect(#[source] ConnectError),
    /// The codes matched but accepting the other device's connection failed.
    #[error("accepting the connection after the code exchange failed: {0}")]
    Accept(#[source] AcceptError),
    /// The server answered with another error.
    #[error("the server refused the code request: {code}: {message}")]
    Server {
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The node has stopped: bind a new one.
    #[error("the node has stopped")]
    Stopped,
}

/// Why [`Incoming::accept`](crate::Incoming::accept) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The server did not confirm the accept within the request time-out.
    #[error("the server did not confirm the accept within {0:?}")]
    TimedOut(Duration),
    /// The request is gone: the other device gave up, went offline, or it was
    /// accepted too late. Nothing to do; it may connect again.
    #[error("the connection request has expired")]
    Expired,
    /// The link to the server is down; the request is lost with it.
    #[error("not connected to the server (reconnecting)")]
    NotConnected,
    /// The end-to-end handshake with the other device failed (see the reason).
    #[error("the end-to-end handshake failed: {0}")]
    Handshake(CloseReason),
    /// The server answered with another error.
    #[error("the server refused the accept: {code}: {message}")]
    Server {
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The node has stopped: bind a new one.
    #[error("the node has stopped")]
    Stopped,
}

/// Why [`Connection::send`](crate::Connection::send) or
/// [`Connection::send_confirmed`](crate::Connection::send_confirmed) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message is larger than this node's or the peer's maximum message size
    /// (`max` is the smaller); nothing was sent. Split it, or raise the limit on
    /// both sides.
    #[error("message of {size} bytes exceeds the maximum message size of {max} bytes")]
    MessageTooLarge {
        /// The message size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The connection has ended; whether the message arrived is unknown unless it
    /// was confirmed. Connect again.
    #[error("the connection is closed: {0}")]
    Closed(CloseReason),
    /// The remote application did not take the message within the confirm
    /// time-out; it may still do so. The connection stays open.
    #[error("the peer did not confirm the message within {0:?}")]
    ConfirmTimeout(Duration),
}

/// Why [`Connection::recv`](crate::Connection::recv) failed. An orderly close by the
/// peer is not an error: `recv` returns `Ok(None)` then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The connection ended abnormally (see the reason); data the peer sent after the
    /// last received message may be lost.
    #[error("the connection is closed: {0}")]
    Closed(CloseReason),
}

/// Why a stream operation failed. Stream reads and writes return it inside an
/// [`io::Error`] (get it back with [`StreamError::of`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer abandoned its sending side with this application code; what it
    /// wrote may be incomplete.
    #[error("the peer reset the stream with code {0}")]
    Reset(u32),
    /// The peer does not read this stream any more (application code); nothing
    /// more can be written.
    #[error("the peer stopped reading the stream with code {0}")]
    Stopped(u32),
    /// This side already finished or reset the sending side.
    #[error("the stream's sending side is finished")]
    Finished,
    /// The connection ended before the stream did.
    #[error("the connection is closed: {0}")]
    Closed(CloseReason),
}

impl StreamError {
    /// The stream error inside an I/O error from a stream's read or write, if it
    /// is one.
    pub fn of(error: &io::Error) -> Option<&StreamError> {
        error.get_ref()?.downcast_ref()
    }
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> Self {
        let kind = match e {
            StreamError::Reset(_) => io::ErrorKind::ConnectionReset,
            StreamError::Stopped(_) | StreamError::Finished => io::ErrorKind::BrokenPipe,
            StreamError::Closed(_) => io::ErrorKind::ConnectionAborted,
        };
        io::Error::new(kind, e)
    }
}
