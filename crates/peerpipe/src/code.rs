//! One-time codes: the offering side ([`CodeOffer`]) and the claiming side
//! ([`Node::claim_code`]), on top of the sans-IO exchange in
//! [`peerpipe_proto::code`].
//!
//! Both sides talk to the server through the node's actor, which hands them
//! what arrives for their nameplate ([`CodeSignal`]) on a channel of their own;
//! the incoming connection of a code reaches its offer that way too, never
//! [`Node::next_event`].

use std::time::Duration;

use peerpipe_proto::code::{Code, CodeFrame, CodeParseError, PAKE_MSG_LEN, Pake, Psk, Side};
use peerpipe_proto::signal::{MAX_CHOSEN_NAMEPLATE, PeerInfo};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::command::{CODE_SERVICE, CodeSignal, CodeSlot, Command, Incoming};
use crate::{CodeError, Connection, Node};

impl Node {
    /// Offers a one-time code: allocates a number at the server and picks two
    /// secret words. Show [`CodeOffer::code`] to the person at the other device
    /// (of any user, or anonymous), who passes it to [`Node::claim_code`]; then
    /// [`CodeOffer::accept`] waits for that and returns the connection.
    ///
    /// Fails with [`CodeError::Forbidden`] when the server does not allow codes,
    /// [`CodeError::RateLimited`] after too many code operations.
    pub async fn offer_code(&self) -> Result<CodeOffer, CodeError> {
        self.allocate(None, rand::random()).await
    }

    /// Offers `code` (`123-amber-falcon`: a number from 1 to 999,999 and two
    /// words of [`peerpipe_proto::code::WORDS`]), chosen by the user — a code
    /// agreed on beforehand — instead of one the server draws. Then as
    /// [`Node::offer_code`].
    ///
    /// Fails with [`CodeError::Malformed`] for text that is not such a code,
    /// [`CodeError::Taken`] when the server has that number allocated already,
    /// and the errors of [`Node::offer_code`]. A chosen code is only as hard to
    /// guess as its words: the server still lets each number be tried once.
    pub async fn offer_chosen_code(&self, code: &str) -> Result<CodeOffer, CodeError> {
        let code: Code = code.parse()?;
        if code.nameplate() > MAX_CHOSEN_NAMEPLATE {
            return Err(CodeError::Malformed(CodeParseError::ChosenNameplate));
        }
        self.allocate(Some(code.nameplate()), code.word_indices())
            .await
    }

    async fn allocate(&self, chosen: Option<u32>, words: [u8; 2]) -> Result<CodeOffer, CodeError> {
        let (reply, rx) = oneshot::channel();
        self.send_code_command(Command::CodeAllocate { chosen, reply })
            .await?;
        let slot = self.wait_code_request(0, rx).await?;
        Ok(CodeOffer::new(self.clone(), slot, words))
    }

    /// Connects to the device that offered `code` (`7-amber-falcon`, see
    /// [`Node::offer_code`]): claims the code (a code can be claimed once), runs
    /// the password-authenticated key exchange with the other device through
    /// the server, checks that both used the same code, and connects with the
    /// agreed key bound into the end-to-end handshake. The connection's
    /// [service](Connection::service) is `"code"`.
    ///
    /// Fails with [`CodeError::Malformed`] for text that is not a code,
    /// [`CodeError::NotFound`] for a code that does not exist (any more),
    /// [`CodeError::WrongCode`] when the words do not match (the code is used up
    /// then), and the errors of [`Node::offer_code`].
    pub async fn claim_code(&self, code: &str) -> Result<Connection, CodeError> {
        claim(self, code).await
    }
}

/// Gives the nameplate up (at the server too) when dropped.
struct Release {
    cmd: mpsc::Sender<Command>,
    nameplate: u32,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = self.cmd.try_send(Command::CodeRelease {
            nameplate: self.nameplate,
        });
    }
}

/// A one-time code this node offers, from [`Node::offer_code`].
///
/// Show [`CodeOffer::code`] to the person at the other device and call
/// [`CodeOffer::accept`]. Dropping the offer withdraws the code.
#[must_use = "a code offer does nothing until accept() is awaited"]
pub struct CodeOffer {
    node: Node,
    code: Code,
    text: String,
    ttl: Duration,
    rx: mpsc::Receiver<CodeSignal>,
    _release: Release,
}

impl std::fmt::Debug for CodeOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeOffer")
            .field("nameplate", &self.code.nameplate())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CodeOffer {
    /// The service label of connections made by a one-time code
    /// ([`Incoming::service`], [`Connection`]s from [`CodeOffer::accept`]).
    pub const SERVICE: &str = CODE_SERVICE;

    pub(crate) fn new(node: Node, slot: CodeSlot, words: [u8; 2]) -> Self {
        // The server never hands out nameplate 0 (its messages are decoded strictly).
        let code = Code::new(slot.nameplate, words)
            .unwrap_or_else(|| unreachable!("nameplates start at 1"));
        Self {
            _release: Release {
                cmd: node.command_sender().clone(),
                nameplate: slot.nameplate,
            },
            node,
            text: code.to_string(),
            code,
            ttl: slot.ttl,
            rx: slot.rx,
        }
    }

    /// The code to show, like `7-amber-falcon`: its number and two secret words.
    pub fn code(&self) -> &str {
        &self.text
    }

    /// The code's number (the part the server knows).
    pub fn nameplate(&self) -> u32 {
        self.code.nameplate()
    }

    /// How long the code stays valid unclaimed, counted from when the server
    /// allocated it.
    pub fn valid_for(&self) -> Duration {
        self.ttl
    }

    /// Waits until another device claims the code (at most as long as the code
    /// is valid: then [`CodeError::Expired`]), runs the key exchange with it
    /// (within the request time-out), and accepts its connection (within the
    /// connect time-out), bound to the agreed key. The connection's
    /// [service](Connection::service) is `"code"`; it is an ordinary
    /// [`Connection`] (relay at once, direct when ready) whose later events
    /// ([`NodeEvent::PathChanged`](crate::NodeEvent::PathChanged),
    /// [`NodeEvent::ConnectionClosed`](crate::NodeEvent::ConnectionClosed)) are
    /// reported like any other's.
    ///
    /// A device that claims with the wrong words makes both sides fail with
    /// [`CodeError::WrongCode`]; the code is used up then.
    pub async fn accept(mut self) -> Result<Connection, CodeError> {
        let nameplate = self.code.nameplate();
        // The server ends the code at its time-out; this is a bound in case it
        // does not say so.
        let deadline = Instant::now() + self.ttl + self.node.request_timeout();
        loop {
            match timeout_at(deadline, self.rx.recv()).await {
                Err(_) | Ok(Some(CodeSignal::Closed)) => return Err(CodeError::Expired),
                Ok(None) => return Err(link_gone(&self.node)),
                Ok(Some(CodeSignal::Claimed)) => break,
                // Nothing else can come before a claim.
                Ok(Some(CodeSignal::Message(_) | CodeSignal::Incoming(_))) => {}
            }
        }
        tracing::debug!(nameplate, "code claimed; exchanging keys");
        let mut exchange = Exchange {
            node: &self.node,
            rx: &mut self.rx,
            nameplate,
            early: None,
        };
        let (peer, psk) = exchange.run(&self.code, Side::Allocator).await?;
        let early = exchange.early.take().filter(|i| i.peer().id == peer.id);
        let incoming = match early {
            Some(incoming) => incoming,
            None => {
                let deadline = Instant::now() + self.node.connect_timeout();
                loop {
                    match timeout_at(deadline, self.rx.recv()).await {
                        Err(_) => return Err(CodeError::TimedOut(self.node.connect_timeout())),
                        Ok(None) => return Err(link_gone(&self.node)),
                        Ok(Some(CodeSignal::Closed)) => return Err(CodeError::PeerGone),
                        Ok(Some(CodeSignal::Incoming(i))) if i.peer().id == peer.id => break i,
                        Ok(Some(_)) => {}
                    }
                }
            }
        };
        incoming
            .with_psk(psk)
            .accept()
            .await
            .map_err(CodeError::Accept)
    }
}

/// Claims `text` and connects to its offerer: [`Node::claim_code`].
pub(crate) async fn claim(node: &Node, text: &str) -> Result<Connection, CodeError> {
    let code: Code = text.parse()?;
    let nameplate = code.nameplate();
    let (reply, rx) = tokio::sync::oneshot::channel();
    node.send_code_command(Command::CodeClaim { nameplate, reply })
        .await?;
    let mut slot = node.wait_code_request(nameplate, rx).await?;
    let _release = Release {
        cmd: node.command_sender().clone(),
        nameplate,
    };
    tracing::debug!(nameplate, "code joined; exchanging keys");
    let (peer, psk) = Exchange {
        node,
        rx: &mut slot.rx,
        nameplate,
        early: None,
    }
    .run(&code, Side::Claimer)
    .await?;
    tracing::debug!(nameplate, peer = %peer.id.short(), "code confirmed; connecting");
    node.connect_with(peer.id, Some(CodeOffer::SERVICE.to_owned()), Some(psk))
        .await
        .map_err(CodeError::Connect)
}

/// The error for a code channel the actor closed: the link dropped (the code is
/// gone at the server with it) or the node stopped.
fn link_gone(node: &Node) -> CodeError {
    if node.command_sender().is_closed() {
        CodeError::Stopped
    } else {
        CodeError::NotConnected
    }
}

/// The SPAKE2 exchange, key confirmation and introductions with the other
/// device of a code.
struct Exchange<'a> {
    node: &'a Node,
    rx: &'a mut mpsc::Receiver<CodeSignal>,
    nameplate: u32,
    /// A code connection that came before the exchange ended (the caller
    /// checks it is the introduced device's).
    early: Option<Incoming>,
}

impl Exchange<'_> {
    /// Runs the exchange within the request time-out; returns who the other
    /// device is (as it introduced itself once the code was confirmed) and
    /// the session key.
    async fn run(&mut self, code: &Code, side: Side) -> Result<(PeerInfo, Psk), CodeError> {
        let limit = self.node.request_timeout();
        let deadline = Instant::now() + limit;
        let (pake, frame) = Pake::start(code, side, rand::random());
        self.send(frame).await?;
        let CodeFrame::Pake(peer_msg) = self.next(deadline, limit).await? else {
            return Err(CodeError::Protocol(
                "expected the key exchange message first".into(),
            ));
        };
        let peer_msg: &[u8; PAKE_MSG_LEN] = &peer_msg;
        let (confirm, frame) = pake
            .finish(peer_msg)
            .map_err(|e| CodeError::Protocol(e.to_string()))?;
        self.send(frame).await?;
        let CodeFrame::Confirm(theirs) = self.next(deadline, limit).await? else {
            return Err(CodeError::Protocol(
                "expected the key confirmation second".into(),
            ));
        };
        let keyed = confirm.verify(&theirs).map_err(|_| {
            tracing::info!(nameplate = self.nameplate, "the codes do not match");
            CodeError::WrongCode
        })?;
        self.send(keyed.hello(self.node.info())).await?;
        let hello = self.next(deadline, limit).await?;
        keyed
            .accept(&hello)
            .map_err(|e| CodeError::Protocol(format!("the other device's introduction: {e}")))
    }

    async fn send(&self, frame: CodeFrame) -> Result<(), CodeError> {
        self.node
            .send_code_command(Command::CodeSend {
                nameplate: self.nameplate,
                body: frame.encode(),
            })
            .await
    }

    async fn next(&mut self, deadline: Instant, limit: Duration) -> Result<CodeFrame, CodeError> {
        loop {
            match timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Err(CodeError::TimedOut(limit)),
                Ok(None) => return Err(link_gone(self.node)),
                Ok(Some(CodeSignal::Closed)) => return Err(CodeError::PeerGone),
                Ok(Some(CodeSignal::Message(body))) => {
                    return CodeFrame::decode(&body)
                        .map_err(|e| CodeError::Protocol(e.to_string()));
                }
                Ok(Some(CodeSignal::Incoming(i))) => self.early = Some(i),
                Ok(Some(_)) => {}
            }
        }
    }
}
