//! What the node's handles and its actor say to each other: the [`Command`]s
//! the handles send, the nameplates a code exchange gets back, and
//! [`Incoming`], the actor's question to the application.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use peerpipe_proto::door::Door;
use peerpipe_proto::id::DeviceId;
use peerpipe_proto::session::handshake::Psk;
use peerpipe_proto::signal::{PeerInfo, SessionId};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::connection::Connection;
use crate::op::{Operation, wait_op};
use crate::{AcceptError, CodeError, ConnectError, RequestError};

/// The service label of connections made by a one-time code.
pub(crate) const CODE_SERVICE: &str = "code";

/// What the handles ask of the actor.
pub(crate) enum Command {
    ListPeers {
        reply: oneshot::Sender<Result<Vec<PeerInfo>, RequestError>>,
    },
    Connect {
        to: DeviceId,
        service: Option<String>,
        psk: Option<Psk>,
        door: Option<Door>,
        reply: oneshot::Sender<Result<Connection, ConnectError>>,
    },
    Accept {
        session: SessionId,
        peer: PeerInfo,
        service: Option<String>,
        psk: Option<Psk>,
        reply: oneshot::Sender<Result<Connection, AcceptError>>,
    },
    /// Allocate a nameplate (`chosen`, or one the server draws).
    CodeAllocate {
        chosen: Option<u32>,
        reply: oneshot::Sender<Result<CodeSlot, CodeError>>,
    },
    /// Claim a nameplate.
    CodeClaim {
        nameplate: u32,
        reply: oneshot::Sender<Result<CodeSlot, CodeError>>,
    },
    /// Send a code message to the other device of a nameplate.
    CodeSend {
        nameplate: u32,
        body: Vec<u8>,
    },
    /// Forget a nameplate, and give it up at the server.
    CodeRelease {
        nameplate: u32,
    },
    Reject {
        session: SessionId,
    },
    /// Let devices of any user that hold the door's key in (at the server,
    /// now and after every reconnect); connections through it are bound to `psk`.
    OpenDoor {
        door: Door,
        psk: Psk,
    },
    /// Close a door again.
    CloseDoor {
        door: Door,
    },
    /// An operation waited longer than the slow threshold: the actor reports
    /// [`NodeEvent::Slow`](crate::NodeEvent::Slow).
    Slow {
        operation: Operation,
        elapsed: Duration,
    },
}

/// Signals queued per code before the actor drops further ones (the server
/// forwards at most a few messages per code).
pub(crate) const CODE_QUEUE: usize = 16;

/// What the actor hands a code's owner.
#[derive(Debug)]
pub(crate) enum CodeSignal {
    /// A device claimed the offered nameplate (who it is, it says inside the
    /// exchange).
    Claimed,
    /// A code message from the other device.
    Message(Vec<u8>),
    /// The nameplate ended at the server (expired, released, the other device left).
    Closed,
    /// The other device connects with service `"code"`.
    Incoming(Incoming),
}

/// A nameplate the server gave this node (allocated or claimed).
#[derive(Debug)]
pub(crate) struct CodeSlot {
    pub nameplate: u32,
    /// How long the server keeps the nameplate.
    pub ttl: Duration,
    pub rx: mpsc::Receiver<CodeSignal>,
}

/// A connection request from another device of this user, from
/// [`NodeEvent::IncomingConnection`](crate::NodeEvent::IncomingConnection).
///
/// Answer with [`Incoming::accept`] or [`Incoming::reject`]; dropping it rejects.
pub struct Incoming {
    session: SessionId,
    peer: PeerInfo,
    service: Option<String>,
    /// The key a code exchange agreed on with this peer, or the key of the
    /// door it came in by.
    psk: Option<Psk>,
    /// The door it came in by.
    door: Option<Door>,
    cfg: Arc<Config>,
    cmd: mpsc::Sender<Command>,
    answered: bool,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("session", &self.session)
            .field("peer", &self.peer)
            .field("service", &self.service)
            .field("door", &self.door)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    pub(crate) fn new(
        session: SessionId,
        peer: PeerInfo,
        service: Option<String>,
        cfg: Arc<Config>,
        cmd: mpsc::Sender<Command>,
    ) -> Self {
        Self {
            session,
            peer,
            service,
            psk: None,
            door: None,
            cfg,
            cmd,
            answered: false,
        }
    }

    /// The device that asks to connect (as the server says; the end-to-end
    /// handshake in [`Incoming::accept`] proves it).
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The server's id for the requested connection.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// What the other device asked the connection for
    /// ([`Node::connect_service`](crate::Node::connect_service)), if it said.
    /// Connections of one-time codes are consumed by their
    /// [`CodeOffer`](crate::CodeOffer); one that shows up here with `"code"`
    /// comes from another device of this user.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The door of this node ([`Node::open_door`](crate::Node::open_door)) the
    /// other device came in by: then it may be a device of any user, and
    /// [`Incoming::accept`] succeeds only if it holds the door's key.
    pub fn door(&self) -> Option<Door> {
        self.door
    }

    /// Binds the handshake to the key of a code exchange.
    pub(crate) fn with_psk(mut self, psk: Psk) -> Self {
        self.psk = Some(psk);
        self
    }

    /// Came in by `door`, whose key gives `psk`.
    pub(crate) fn through_door(mut self, door: Door, psk: Psk) -> Self {
        self.door = Some(door);
        self.with_psk(psk)
    }

    /// Accepts the connection and runs the end-to-end handshake; both must finish
    /// within the request time-out.
    pub async fn accept(mut self) -> Result<Connection, AcceptError> {
        self.answered = true;
        let (reply, rx) = oneshot::channel();
        let command = Command::Accept {
            session: self.session,
            peer: self.peer.clone(),
            service: self.service.clone(),
            psk: self.psk.take(),
            reply,
        };
        self.cmd
            .send(command)
            .await
            .map_err(|_| AcceptError::Stopped)?;
        let op = Operation::Accept {
            session: self.session,
            peer: self.peer.id,
        };
        let limit = self.cfg.request_timeout;
        let cmd = self.cmd.clone();
        let on_slow = move |operation, elapsed| {
            let _ = cmd.try_send(Command::Slow { operation, elapsed });
        };
        match wait_op(op, limit, self.cfg.slow_threshold, rx, on_slow).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(AcceptError::Stopped),
            Err(()) => Err(AcceptError::TimedOut(limit)),
        }
    }

    /// Rejects the connection: the other device's `connect` fails with
    /// [`ConnectError::Rejected`](crate::ConnectError::Rejected).
    pub async fn reject(mut self) {
        self.answered = true;
        let _ = self
            .cmd
            .send(Command::Reject {
                session: self.session,
            })
            .await;
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.cmd.try_send(Command::Reject {
                session: self.session,
            });
        }
    }
}
