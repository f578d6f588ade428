//! What the application hears from its node.

use std::time::Duration;

use peerpipe_proto::id::DeviceId;
use peerpipe_proto::signal::{PeerInfo, SessionId};

use crate::command::Incoming;
use crate::direct::PathKind;
use crate::op::Operation;
use crate::{CloseReason, StopError};

/// Something that happened to the node. Read them with [`Node::next_event`](crate::Node::next_event).
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeEvent {
    /// Another device of this user asks to connect: accept or reject it.
    /// (Connections made by a one-time code go to their [`CodeOffer`](crate::CodeOffer) instead.)
    IncomingConnection(Incoming),
    /// Another device of this user came online. After [`NodeEvent::Reconnected`],
    /// this is emitted again for every device online at that moment.
    PeerOnline(PeerInfo),
    /// Another device of this user went offline.
    PeerOffline(DeviceId),
    /// A connection ended (for any reason, including a local close).
    ConnectionClosed {
        /// The device at the other end.
        peer: DeviceId,
        /// The connection.
        session: SessionId,
        /// Why it ended.
        reason: CloseReason,
    },
    /// A connection's traffic moved to another kind of path: to the direct path
    /// when it opened, back to the relay when it failed.
    PathChanged {
        /// The device at the other end.
        peer: DeviceId,
        /// The connection.
        session: SessionId,
        /// The path the traffic takes now.
        path: PathKind,
        /// The round-trip time measured so far.
        rtt: Duration,
    },
    /// The server link dropped; the node tries again after `delay`.
    Reconnecting {
        /// 1 for the first attempt after a loss.
        attempt: u32,
        /// The wait before this attempt.
        delay: Duration,
        /// Why the link dropped or the previous attempt failed.
        error: String,
    },
    /// The server link is back and this device is announced again.
    Reconnected,
    /// An operation has been waiting for longer than the slow threshold
    /// (once per operation); it keeps waiting until its own time-out.
    Slow {
        /// The operation.
        operation: Operation,
        /// How long it has waited.
        elapsed: Duration,
    },
    /// The node stopped on its own and will emit nothing more.
    Stopped {
        /// Why.
        error: StopError,
    },
}
