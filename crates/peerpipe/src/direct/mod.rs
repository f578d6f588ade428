//! The direct path: negotiated inside the encrypted session, run beside the relay.
//!
//! A connection's driver owns one [`Direct`] shell around the sans-IO
//! [`Negotiator`] of `peerpipe-proto`, which decides what runs when (the
//! browser build drives the same one). After the session
//! handshake the dialing side offers an *attempt*, QUIC first (the node's one
//! QUIC endpoint, certificates pinned through the session: [`quic::path`]), or a
//! WebRTC data channel after QUIC failed twice or when the peer has no QUIC: it
//! binds UDP sockets on its host addresses, builds a [`Transport`] ([`WebRtc`],
//! on str0m) and sends the offer as a session path signal; the other side
//! answers the same way. Each attempt runs in its own task ([`run`]) that owns the
//! sockets and the transport. When the channel opens, the task hands the driver a
//! bounded packet queue and the session moves its traffic there; the relay stays
//! as a standby. When the attempt fails (the transport says so, or the session
//! finds the path silent), the session falls back to the relay, the peer is told
//! to drop the attempt too, and the dialing side offers a new one after a backoff.
//!
//! A new attempt is a fresh ICE agent, DTLS handshake and SCTP association
//! rather than an ICE restart of the old one: after an outage SCTP's
//! retransmission timer has backed off (data resumed only 11 s after a 20 s
//! outage in our measurements), while a fresh association is up in a few
//! milliseconds on a LAN and the session resends whatever was in flight anyway.

mod io;
mod quic;
mod webrtc;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerpipe_proto::direct::DirectSignal;
use peerpipe_proto::direct::negotiator::{self, Begin, Kind, Negotiator};
use peerpipe_proto::session::PathId;
use peerpipe_proto::signal::IceServer;
use tokio::sync::{mpsc, watch};

use self::io::{Io, TurnServer, bind_sockets};
pub(crate) use self::quic::QuicNode;
pub(crate) use self::webrtc::WebRtc;

/// The largest session packet on any path (fits every data channel's message
/// size limit, which is 64 KiB for a peer that announces none).
pub(crate) const MAX_PACKET: usize = 62 * 1024;
/// Packets queued between the session and a direct path's task.
const OUT_QUEUE: usize = 4;
/// Signals queued for a direct path's task.
const SIGNAL_QUEUE: usize = 32;
/// Events a connection's direct tasks queue for its driver.
pub(crate) const EVENT_QUEUE: usize = 64;
/// An attempt whose channel is not open by then has failed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which paths a node's connections may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PathPolicy {
    /// Start on the relay, move to a direct path when one opens, back to the
    /// relay when it fails. The default.
    #[default]
    Any,
    /// Never try a direct path: everything goes through the server's relay (for
    /// networks where UDP is unwanted). The peer is told, so it does not offer.
    RelayOnly,
    /// Drop the relay once the direct path is up (for testing that data really
    /// goes direct): if the direct path then fails, the connection ends at its
    /// idle time-out.
    DirectOnly,
}

/// The kind of path a connection's traffic takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathKind {
    /// Through the server's relay.
    Relay,
    /// A direct WebRTC data channel between the two devices (shown as
    /// `direct`, as before it had a name of its own).
    WebRtc,
    /// A direct QUIC connection between two native devices, its certificate
    /// pinned through the session.
    Quic,
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Relay => "relay",
            Self::WebRtc => "direct",
            Self::Quic => "quic",
        })
    }
}

/// Initialises the WebRTC stack's crypto (30–60 ms the first time in a
/// process) on a blocking thread, so that the first direct attempt, which runs
/// inside a connection's driver, does not stall the connection's relay traffic.
pub(crate) fn warm_up() {
    tokio::task::spawn_blocking(webrtc::warm_up);
}

/// The kind of the path `path` names.
pub(crate) fn path_kind(path: PathId) -> PathKind {
    match Kind::of(path) {
        None => PathKind::Relay,
        Some(Kind::WebRtc) => PathKind::WebRtc,
        Some(Kind::Quic) => PathKind::Quic,
    }
}

/// Where a node's direct attempts may bind, as learnt from its server link.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirectEnv {
    /// Host addresses to offer candidates on.
    pub hosts: Vec<IpAddr>,
    /// STUN servers (`HOST:PORT`) to learn server-reflexive addresses from.
    pub stun: Vec<String>,
    /// TURN servers to allocate relayed addresses on.
    pub turn: Vec<TurnServer>,
    /// The node's QUIC endpoint, when QUIC is allowed and it could be bound.
    pub quic: Option<std::sync::Arc<QuicNode>>,
}

impl DirectEnv {
    /// The host addresses for a node whose server link leaves from `local`: only
    /// loopback when the server is on this machine's loopback (the peers are on
    /// this machine too), else that address and the default-route addresses.
    pub(crate) fn for_link(local: Option<SocketAddr>, ice_servers: &[IceServer]) -> Self {
        let stun = ice_servers.iter().filter_map(stun_host_port).collect();
        let turn = ice_servers
            .iter()
            .filter_map(TurnServer::from_ice)
            .collect();
        let mut hosts = Vec::new();
        match local.map(|a| a.ip()) {
            Some(ip) if ip.is_loopback() => hosts.push(ip),
            local => {
                hosts.extend(local);
                for probe in [
                    SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 9)),
                    SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9)),
                ] {
                    if let Some(ip) = route_source(probe)
                        && !hosts.contains(&ip)
                    {
                        hosts.push(ip);
                    }
                }
            }
        }
        Self {
            hosts,
            stun,
            turn,
            quic: None,
        }
    }
}

/// `HOST:PORT` of a `stun:` URL; `None` for TURN servers.
fn stun_host_port(server: &IceServer) -> Option<String> {
    let rest = server.url.strip_prefix("stun:")?;
    let host_port = rest.split('?').next()?;
    // `IceServer::check` (at start and on decode) guarantees HOST:PORT.
    Some(host_port.to_string())
}

/// The address this host sends from toward `to` (a UDP `connect` sends nothing).
fn route_source(to: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = StdUdpSocket::bind(bind).ok()?;
    socket.connect(to).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// A direct-path stack, sans-IO: it is handed datagrams, signals and the clock,
/// and says what to send where.
pub(crate) trait Transport: Send + 'static {
    /// A datagram arrived on local socket `local` from `from`.
    fn handle_datagram(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8]);
    /// The time from [`Out::Timeout`] passed.
    fn handle_timeout(&mut self, now: Instant);
    /// The peer's answer or candidate for this attempt.
    fn handle_signal(&mut self, signal: DirectSignal);
    /// A STUN server saw local socket `base` as `mapped`: offer it to the peer.
    fn add_server_reflexive(&mut self, mapped: SocketAddr, base: SocketAddr);
    /// A TURN server relays for local socket `base` at `relayed`: offer it to
    /// the peer. Datagrams from `relayed` go out through the TURN server.
    fn add_relayed(&mut self, relayed: SocketAddr, base: SocketAddr);
    /// Whether one more packet of `len` bytes may go in flight now.
    fn has_room(&mut self, len: usize) -> bool;
    /// Queues one session packet; false when there is no room after all.
    fn send(&mut self, packet: &[u8]) -> bool;
    /// The next thing to do; [`Out::Timeout`] when there is nothing before then.
    fn poll_output(&mut self) -> Out;
    /// Tells the peer the path closes (best effort).
    fn close(&mut self);
}

/// What a [`Transport`] wants done.
pub(crate) enum Out {
    /// Send `data` from local socket `from` to `to`.
    Transmit {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// Send this signal to the peer (inside the session).
    Signal(DirectSignal),
    /// The path is open: session packets may flow.
    Open,
    /// A session packet arrived.
    Packet(Bytes),
    /// The path failed for good.
    Failed(String),
    /// Nothing to do before this instant.
    Timeout(Instant),
}

/// What a direct path's task tells its connection's driver.
#[derive(Debug)]
pub(crate) enum DirectEvent {
    /// Send this signal to the peer.
    Signal(PathId, DirectSignal),
    /// The path opened; session packets for it go into `out`.
    Up(PathId, mpsc::Sender<Bytes>),
    /// A session packet arrived on the path.
    Packet(PathId, Bytes),
    /// The path failed.
    Down(PathId, String),
}

/// What the negotiator asks of its connection's driver.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send this signal to the peer inside the session.
    Signal(DirectSignal),
    /// A direct path opened: move the session's traffic there.
    Up(PathId, mpsc::Sender<Bytes>),
    /// The direct path is gone: the session falls back to the relay.
    Down(PathId),
}

/// A connection's direct-path shell (runs inside its driver): the
/// [`Negotiator`] decides, this runs the attempts it starts as tasks and
/// carries its signals.
pub(crate) struct Direct {
    negotiator: Negotiator,
    env: watch::Receiver<DirectEnv>,
    events: mpsc::Sender<DirectEvent>,
    /// The running attempt's path and signal queue (dropping it stops the task).
    task: Option<(PathId, mpsc::Sender<DirectSignal>)>,
    /// The packet queue of an attempt that just opened, until the negotiator
    /// says the session may use it.
    opened: Option<(PathId, mpsc::Sender<Bytes>)>,
}

impl Direct {
    pub(crate) fn new(
        policy: PathPolicy,
        offerer: bool,
        env: watch::Receiver<DirectEnv>,
    ) -> (Self, mpsc::Receiver<DirectEvent>) {
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let quic = env.borrow().quic.is_some();
        let direct = Self {
            negotiator: Negotiator::new(offerer, policy != PathPolicy::RelayOnly, quic),
            env,
            events,
            task: None,
            opened: None,
        };
        (direct, rx)
    }

    /// The session handshake finished: the offering side starts at once.
    pub(crate) fn connected(&mut self, now: Instant) {
        self.negotiator.handle_connected(now);
    }

    /// When [`Direct::handle_timeout`] wants to run.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.negotiator.poll_timeout()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.sync_env();
        self.negotiator.handle_timeout(now);
        self.carry_out(now, actions);
    }

    /// Whether `path` is the open direct path.
    pub(crate) fn is_up(&self, path: PathId) -> bool {
        self.negotiator.is_up(path)
    }

    /// Leaves the current direct path (if any) and negotiates a new one at once.
    pub(crate) fn restart(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.sync_env();
        self.negotiator.restart(now);
        self.carry_out(now, actions);
    }

    /// The session found `path` silent and left it.
    pub(crate) fn path_failed(&mut self, now: Instant, path: PathId, actions: &mut Vec<Action>) {
        if self.negotiator.active_path() == Some(path) {
            tracing::debug!(?path, "direct path lost: silent for the path time-out");
        }
        self.negotiator.handle_silent(now, path);
        self.carry_out(now, actions);
    }

    /// A path signal from the peer.
    pub(crate) fn handle_signal(&mut self, now: Instant, data: &[u8], actions: &mut Vec<Action>) {
        let signal = match DirectSignal::decode(data) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::debug!("ignoring a path signal: {e}");
                return;
            }
        };
        match &signal {
            DirectSignal::Close { attempt } => {
                tracing::debug!(attempt, "the peer ended the direct attempt");
            }
            DirectSignal::Decline { .. } => tracing::debug!("the peer takes no direct path"),
            _ => {}
        }
        self.sync_env();
        self.negotiator.handle_signal(now, signal);
        self.carry_out(now, actions);
    }

    /// An event from an attempt's task (packets excepted: the driver feeds them
    /// to the session itself).
    pub(crate) fn handle_event(
        &mut self,
        now: Instant,
        event: DirectEvent,
        actions: &mut Vec<Action>,
    ) {
        match event {
            DirectEvent::Signal(path, signal) => {
                self.negotiator.handle_attempt_signal(path, signal);
            }
            DirectEvent::Up(path, out) => {
                self.opened = Some((path, out));
                self.negotiator.handle_open(now, path);
            }
            DirectEvent::Down(path, why) => {
                if self.negotiator.active_path() == Some(path) {
                    tracing::debug!(?path, "direct path lost: {why}");
                }
                self.negotiator.handle_failed(now, path);
            }
            DirectEvent::Packet(..) => {}
        }
        self.carry_out(now, actions);
    }

    /// Tells the negotiator whether the node has a QUIC endpoint now.
    fn sync_env(&mut self) {
        let quic = self.env.borrow().quic.is_some();
        self.negotiator.set_quic(quic);
    }

    /// Does what the negotiator asked.
    fn carry_out(&mut self, now: Instant, actions: &mut Vec<Action>) {
        while let Some(action) = self.negotiator.poll_action() {
            match action {
                negotiator::Action::Start {
                    path,
                    attempt,
                    kind,
                    begin,
                } => self.start(now, path, attempt, kind, begin),
                negotiator::Action::Stop(path) => {
                    if self.task.as_ref().is_some_and(|t| t.0 == path) {
                        self.task = None;
                    }
                    if self.opened.as_ref().is_some_and(|o| o.0 == path) {
                        self.opened = None;
                    }
                }
                negotiator::Action::Signal(signal) => actions.push(Action::Signal(signal)),
                negotiator::Action::Deliver(path, signal) => {
                    if let Some((_, signals)) = self.task.as_ref().filter(|t| t.0 == path)
                        && signals.try_send(signal).is_err()
                    {
                        tracing::debug!(?path, "direct attempt not keeping up");
                    }
                }
                negotiator::Action::Up(path) => {
                    if let Some((_, out)) = self.opened.take().filter(|o| o.0 == path) {
                        tracing::debug!(?path, "direct path open");
                        actions.push(Action::Up(path, out));
                    }
                }
                negotiator::Action::Down(path) => actions.push(Action::Down(path)),
            }
        }
    }

    /// Runs attempt `attempt` as a task: a QUIC one on the node's endpoint, a
    /// WebRTC one on sockets of its own.
    fn start(&mut self, now: Instant, path: PathId, attempt: u32, kind: Kind, begin: Begin) {
        let env = self.env.borrow().clone();
        tracing::debug!(
            attempt,
            hosts = ?env.hosts,
            offerer = begin == Begin::Offer,
            quic = kind == Kind::Quic,
            "direct attempt"
        );
        let (signals, signals_rx) = mpsc::channel(SIGNAL_QUEUE);
        let task = Task {
            path,
            attempt,
            stun: env.stun,
            turn: env.turn,
            open_by: now + OPEN_TIMEOUT,
            signals: signals_rx,
            events: self.events.clone(),
        };
        match (kind, env.quic, begin) {
            (Kind::Quic, Some(node), Begin::AnswerQuic(theirs)) => {
                tokio::spawn(quic::path::run(node, Some(theirs), task));
            }
            (Kind::Quic, Some(node), _) => {
                tokio::spawn(quic::path::run(node, None, task));
            }
            (Kind::Quic, None, _) => {
                // The endpoint went away since the negotiator was told: the
                // attempt fails at once and counts as a QUIC failure.
                let events = self.events.clone();
                tokio::spawn(async move {
                    let why = "no QUIC endpoint".to_owned();
                    let _ = events.send(DirectEvent::Down(path, why)).await;
                });
            }
            (Kind::WebRtc, _, begin) => {
                let offer = match begin {
                    Begin::AnswerSdp(sdp) => Some(sdp),
                    _ => None,
                };
                tokio::spawn(run_webrtc(env.hosts, offer, task));
            }
        }
        self.task = Some((path, signals));
    }
}

/// An attempt task's links to its driver.
struct Task {
    path: PathId,
    attempt: u32,
    /// STUN servers to ask for server-reflexive addresses.
    stun: Vec<String>,
    /// TURN servers to allocate relayed addresses on.
    turn: Vec<TurnServer>,
    open_by: Instant,
    signals: mpsc::Receiver<DirectSignal>,
    events: mpsc::Sender<DirectEvent>,
}

/// Sets up a WebRTC attempt and runs it. Sockets and the WebRTC stack are set
/// up here, in the attempt's own task: the first `Rtc` of a process takes tens
/// of milliseconds, and the driver starts attempts with the connection's
/// state locked.
async fn run_webrtc(hosts: Vec<IpAddr>, offer: Option<String>, task: Task) {
    let id = task.attempt;
    let built = bind_sockets(&hosts)
        .map_err(|e| e.to_string())
        .and_then(|sockets| {
            let locals: Vec<SocketAddr> = sockets.iter().map(|s| s.local).collect();
            let transport = match &offer {
                None => WebRtc::offer(Instant::now(), id, &locals),
                Some(sdp) => WebRtc::answer(Instant::now(), id, &locals, sdp),
            };
            transport.map(|t| (t, sockets))
        });
    match built {
        Ok((transport, sockets)) => run(transport, sockets, task).await,
        Err(e) => {
            let why = format!("cannot set up: {e}");
            let _ = task.events.send(DirectEvent::Down(task.path, why)).await;
        }
    }
}

/// Sends the datagrams the transport has ready now; drops anything else.
fn flush<T: Transport>(transport: &mut T, io: &mut Io) {
    for _ in 0..1024 {
        match transport.poll_output() {
            Out::Transmit { from, to, data } => io.transmit(from, to, &data),
            Out::Timeout(_) | Out::Failed(_) => return,
            Out::Signal(_) | Out::Open | Out::Packet(_) => {}
        }
    }
}

/// Runs one attempt until it fails or the driver drops it.
async fn run<T: Transport>(mut transport: T, sockets: Vec<io::Socket>, mut task: Task) {
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
    let mut out_tx = Some(out_tx);
    let mut open = false;
    let mut pending: Option<Bytes> = None;
    let path = task.path;
    let mut io = Io::new(sockets, &task.stun, &task.turn).await;
    let why = 'run: loop {
        // Hand the transport what the session queued, while it has room.
        if open {
            loop {
                let Some(packet) = pending.take().or_else(|| out_rx.try_recv().ok()) else {
                    break;
                };
                if !transport.has_room(packet.len()) || !transport.send(&packet) {
                    pending = Some(packet);
                    break;
                }
            }
        }
        let deadline = loop {
            match transport.poll_output() {
                Out::Timeout(at) => break at,
                Out::Transmit { from, to, data } => io.transmit(from, to, &data),
                Out::Signal(signal) => {
                    if task
                        .events
                        .send(DirectEvent::Signal(path, signal))
                        .await
                        .is_err()
                    {
                        break 'run None;
                    }
                }
                Out::Open => {
                    open = true;
                    if let Some(out) = out_tx.take()
                        && task.events.send(DirectEvent::Up(path, out)).await.is_err()
                    {
                        break 'run None;
                    }
                }
                Out::Packet(packet) => {
                    if task
                        .events
                        .send(DirectEvent::Packet(path, packet))
                        .await
                        .is_err()
                    {
                        break 'run None;
                    }
                }
                Out::Failed(why) => break 'run Some(why),
            }
        };
        let deadline = io.poll_timeout().map_or(deadline, |at| at.min(deadline));
        let deadline = if open {
            deadline
        } else {
            if Instant::now() >= task.open_by {
                break Some(format!("not open after {OPEN_TIMEOUT:?}"));
            }
            deadline.min(task.open_by)
        };
        let room = open && pending.is_none() && transport.has_room(1);
        tokio::select! {
            signal = task.signals.recv() => match signal {
                Some(signal) => transport.handle_signal(signal),
                None => {
                    // The driver dropped the attempt (the connection may have
                    // ended): send what it queued last, its close packet
                    // perhaps, then say goodbye.
                    while let Some(packet) = pending.take().or_else(|| out_rx.try_recv().ok()) {
                        if !transport.send(&packet) {
                            break;
                        }
                    }
                    flush(&mut transport, &mut io);
                    transport.close();
                    flush(&mut transport, &mut io);
                    io.close();
                    break None;
                }
            },
            () = io.recv(&mut transport) => {}
            packet = out_rx.recv(), if room => pending = packet,
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                io.handle_timeout(now, &mut transport);
                transport.handle_timeout(now);
            }
        }
    };
    if let Some(why) = why {
        io.close();
        let _ = task.events.send(DirectEvent::Down(path, why)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real server on loopback with its STUN responder, and where that answers.
    pub(super) async fn stun_responder() -> (peerpipe_server::Server, SocketAddr) {
        let mut config = peerpipe_server::Config::new(vec![7; 32]);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.stun_listen = Some("127.0.0.1:0".parse().unwrap());
        let server = peerpipe_server::Server::bind(config).await.unwrap();
        let stun_addr = server.stun_addr().unwrap();
        (server, stun_addr)
    }

    #[test]
    fn stun_urls_become_host_and_port() {
        let stun = |url: &str| IceServer::stun(url).unwrap();
        assert_eq!(
            stun_host_port(&stun("stun:example.org:19302")),
            Some("example.org:19302".into())
        );
        let turn = IceServer::turn("turn:example.org:3478,u,p").unwrap();
        assert_eq!(stun_host_port(&turn), None);
    }
}
