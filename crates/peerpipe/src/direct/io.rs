//! An attempt's sockets and what gathers candidates on them: STUN binding
//! requests (server-reflexive addresses) and TURN allocations (relayed
//! addresses). [`Io`] routes the transport's datagrams: from a host address
//! straight out of its socket, from a relayed address through its TURN server.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::task::Poll;
use std::time::{Duration, Instant};

use peerpipe_proto::signal::IceServer;
use peerpipe_proto::stun;
use peerpipe_proto::turn::{Received, TurnClient, TurnEvent};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use super::Transport;

/// UDP socket buffers: the kernel's default drops datagrams at full speed.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// The wait after each STUN binding request: three requests, then give up.
const STUN_RETRIES: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_millis(1500),
];
/// How long resolving a STUN or TURN server's name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// One bound UDP socket of an attempt.
pub(super) struct Socket {
    pub(super) socket: UdpSocket,
    pub(super) local: SocketAddr,
}

pub(super) fn bind_sockets(hosts: &[IpAddr]) -> io::Result<Vec<Socket>> {
    let mut sockets = Vec::new();
    let mut last = None;
    for ip in hosts {
        match bind_udp(SocketAddr::new(*ip, 0)) {
            Ok(s) => sockets.push(s),
            Err(e) => last = Some(e),
        }
    }
    if sockets.is_empty() {
        return Err(last.unwrap_or_else(|| io::Error::other("no host address to bind")));
    }
    Ok(sockets)
}

fn bind_udp(addr: SocketAddr) -> io::Result<Socket> {
    use socket2::{Domain, Protocol, Socket as RawSocket, Type};
    let raw = RawSocket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at its maximum.
    let _ = raw.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = raw.set_send_buffer_size(SOCKET_BUFFER);
    raw.bind(&addr.into())?;
    raw.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(raw.into())?;
    let local = socket.local_addr()?;
    Ok(Socket { socket, local })
}

/// One binding request to a STUN server from one local socket.
struct Binding {
    txid: stun::TransactionId,
    local: SocketAddr,
    server: SocketAddr,
    /// Requests sent so far.
    sent: usize,
    next_at: Instant,
}

/// What a datagram was to the STUN client.
enum Stun {
    /// Not a response to one of our requests: the transport's.
    Pass,
    /// Our server-reflexive address for local socket `base`, if it was one.
    Answered(Option<(SocketAddr, SocketAddr)>),
}

/// The binding requests of one attempt: every local socket asks every STUN
/// server of its address family, with a few retries.
#[derive(Default)]
struct Bindings(Vec<Binding>);

impl Bindings {
    async fn new(servers: &[String], sockets: &[Socket]) -> Self {
        let now = Instant::now();
        let mut bindings = Vec::new();
        for server in servers {
            for server in resolve(server).await {
                for socket in sockets.iter().filter(|s| reachable(s.local, server)) {
                    bindings.push(Binding {
                        txid: rand::random(),
                        local: socket.local,
                        server,
                        sent: 0,
                        next_at: now,
                    });
                }
            }
        }
        Self(bindings)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.0.iter().map(|b| b.next_at).min()
    }

    /// Sends what is due; drops requests that were never answered.
    fn handle_timeout(&mut self, now: Instant, sockets: &[Socket]) {
        self.0.retain_mut(|b| {
            if b.next_at > now {
                return true;
            }
            let Some(wait) = STUN_RETRIES.get(b.sent) else {
                tracing::debug!(server = %b.server, "no answer from the STUN server");
                return false;
            };
            send_from(sockets, b.local, &stun::binding_request(b.txid), b.server);
            b.sent += 1;
            b.next_at = now + *wait;
            true
        });
    }

    fn handle_datagram(&mut self, local: SocketAddr, data: &[u8]) -> Stun {
        if self.0.is_empty() || !stun::is_stun(data) {
            return Stun::Pass;
        }
        let found = self.0.iter().enumerate().find_map(|(i, b)| {
            if b.local != local {
                return None;
            }
            match stun::parse_binding_response(data, b.txid) {
                Err(stun::StunError::NotOurs) => None,
                other => Some((i, other)),
            }
        });
        let Some((i, answer)) = found else {
            return Stun::Pass;
        };
        let binding = self.0.swap_remove(i);
        match answer {
            Ok(mapped) => {
                tracing::debug!(server = %binding.server, base = %local, %mapped, "server-reflexive address");
                Stun::Answered(Some((mapped, local)))
            }
            Err(e) => {
                tracing::debug!(server = %binding.server, "STUN: {e}");
                Stun::Answered(None)
            }
        }
    }
}

/// The addresses of a `HOST:PORT` server (none when it cannot be resolved in time).
pub(super) async fn resolve(server: &str) -> Vec<SocketAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(server)).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            tracing::debug!(%server, "cannot resolve: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::debug!(%server, "resolving timed out");
            Vec::new()
        }
    }
}

/// Whether a socket bound to `local` can reach `server`: same address family,
/// and a loopback socket only a loopback server (and the other way round).
pub(super) fn reachable(local: SocketAddr, server: SocketAddr) -> bool {
    server.is_ipv4() == local.is_ipv4() && server.ip().is_loopback() == local.ip().is_loopback()
}

/// A TURN server to allocate a relayed address on (UDP to the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TurnServer {
    host_port: String,
    username: String,
    password: String,
}

impl TurnServer {
    /// The TURN server an ICE server names; `None` for STUN servers, and for
    /// `turns:` and `?transport=tcp` servers (only TURN over UDP is spoken).
    pub(crate) fn from_ice(server: &IceServer) -> Option<Self> {
        let rest = server.url.strip_prefix("turn:")?;
        let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !matches!(query, "" | "transport=udp") {
            tracing::debug!(url = %server.url, "skipping a TURN server: only UDP is spoken");
            return None;
        }
        Some(Self {
            host_port: host_port.to_owned(),
            username: server.username.clone()?,
            password: server.credential.clone()?,
        })
    }
}

/// One TURN allocation of an attempt, made from local socket `base`.
struct Relay {
    client: TurnClient,
    base: SocketAddr,
}

/// The TURN allocations of one attempt: one per server, from the first socket
/// that can reach it.
#[derive(Default)]
struct Relays(Vec<Relay>);

impl Relays {
    async fn new(servers: &[TurnServer], sockets: &[Socket]) -> Self {
        let now = Instant::now();
        let mut relays = Vec::new();
        for server in servers {
            let found = resolve(&server.host_port)
                .await
                .into_iter()
                .find_map(|addr| {
                    let socket = sockets.iter().find(|s| reachable(s.local, addr))?;
                    Some((addr, socket.local))
                });
            let Some((addr, base)) = found else {
                tracing::debug!(server = %server.host_port, "no socket reaches the TURN server");
                continue;
            };
            let client = TurnClient::new(
                addr,
                &server.username,
                &server.password,
                rand::random(),
                now,
            );
            relays.push(Relay { client, base });
        }
        Self(relays)
    }
}

/// An attempt's sockets, STUN bindings and TURN allocations.
pub(super) struct Io {
    sockets: Vec<Socket>,
    bindings: Bindings,
    relays: Relays,
    buf: Vec<u8>,
}

impl Io {
    /// Starts STUN bindings and TURN allocations on `sockets`.
    pub(super) async fn new(sockets: Vec<Socket>, stun: &[String], turn: &[TurnServer]) -> Self {
        let bindings = Bindings::new(stun, &sockets).await;
        let relays = Relays::new(turn, &sockets).await;
        Self {
            sockets,
            bindings,
            relays,
            // Room for a full-size datagram in a TURN Data indication.
            buf: vec![0; 2048],
        }
    }

    /// Sends a datagram of the transport: through the TURN server when `from`
    /// is a relayed address, else from the socket bound to `from`.
    pub(super) fn transmit(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let relay = self
            .relays
            .0
            .iter_mut()
            .find(|r| r.client.relayed() == Some(from));
        match relay {
            Some(relay) => {
                if !relay.client.send_to(Instant::now(), to, data) {
                    tracing::trace!(%from, %to, "relayed datagram dropped");
                }
                self.flush_relays();
            }
            None => send_from(&self.sockets, from, data, to),
        }
    }

    /// Sends what the TURN clients have queued.
    fn flush_relays(&mut self) {
        for relay in &mut self.relays.0 {
            while let Some(msg) = relay.client.poll_transmit() {
                send_from(&self.sockets, relay.base, &msg, relay.client.server());
            }
        }
    }

    /// Hands the transport what the STUN and TURN clients learnt.
    fn gathered<T: Transport>(&mut self, transport: &mut T) {
        self.flush_relays();
        for relay in &mut self.relays.0 {
            while let Some(event) = relay.client.poll_event() {
                match event {
                    TurnEvent::Allocated { relayed, mapped } => {
                        tracing::debug!(server = %relay.client.server(), %relayed, ?mapped, "TURN allocation");
                        transport.add_relayed(relayed, relay.base);
                    }
                    TurnEvent::Failed(e) => {
                        tracing::debug!(server = %relay.client.server(), "TURN: {e}");
                    }
                }
            }
        }
    }

    /// Waits for the next datagram and hands it to whoever it is for.
    pub(super) async fn recv<T: Transport>(&mut self, transport: &mut T) {
        let (local, received) = recv_any(&self.sockets, &mut self.buf).await;
        let (len, from) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::trace!("direct path socket: {e}");
                return;
            }
        };
        let data = &self.buf[..len];
        let now = Instant::now();
        let relay = self
            .relays
            .0
            .iter_mut()
            .find(|r| r.base == local && r.client.server() == from);
        if let Some(relay) = relay {
            let relayed = relay.client.relayed();
            match (relay.client.handle_datagram(now, data), relayed) {
                (Received::Data { from, data }, Some(relayed)) => {
                    transport.handle_datagram(now, relayed, from, data);
                }
                (Received::Handled, _) => self.gathered(transport),
                _ => {}
            }
            return;
        }
        match self.bindings.handle_datagram(local, data) {
            Stun::Pass => transport.handle_datagram(now, local, from, data),
            Stun::Answered(Some((mapped, base))) if mapped != base => {
                transport.add_server_reflexive(mapped, base);
            }
            Stun::Answered(_) => {}
        }
    }

    /// When [`Io::handle_timeout`] wants to run.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let relays = self.relays.0.iter().filter_map(|r| r.client.poll_timeout());
        relays.chain(self.bindings.poll_timeout()).min()
    }

    /// Retransmits and refreshes what is due.
    pub(super) fn handle_timeout<T: Transport>(&mut self, now: Instant, transport: &mut T) {
        self.bindings.handle_timeout(now, &self.sockets);
        for relay in &mut self.relays.0 {
            relay.client.handle_timeout(now);
        }
        self.gathered(transport);
    }

    /// Releases the TURN allocations (best effort).
    pub(super) fn close(&mut self) {
        let now = Instant::now();
        for relay in &mut self.relays.0 {
            relay.client.close(now);
        }
        self.flush_relays();
    }
}

/// Receives one datagram on whichever socket has one.
async fn recv_any(
    sockets: &[Socket],
    buf: &mut [u8],
) -> (SocketAddr, io::Result<(usize, SocketAddr)>) {
    poll_fn(|cx| {
        for s in sockets {
            let mut read = ReadBuf::new(buf);
            if let Poll::Ready(r) = s.socket.poll_recv_from(cx, &mut read) {
                return Poll::Ready((s.local, r.map(|from| (read.filled().len(), from))));
            }
        }
        Poll::Pending
    })
    .await
}

/// Sends one datagram from the local socket bound to `from` (none: dropped).
///
/// A direct non-blocking `sendto`: tokio's `try_send_to` refuses until the
/// reactor has seen the socket writable once, which drops a fresh socket's
/// first datagrams. A full socket buffer drops the datagram, as the network
/// would; the transport (and STUN) resend.
fn send_from(sockets: &[Socket], from: SocketAddr, data: &[u8], to: SocketAddr) {
    let Some(s) = sockets.iter().find(|s| s.local == from) else {
        tracing::trace!(%from, %to, "datagram from no socket");
        return;
    };
    let sent = socket2::SockRef::from(&s.socket).send_to(data, &to.into());
    tracing::trace!(%from, %to, len = data.len(), ?sent, "datagram");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_servers_come_from_turn_urls_over_udp() {
        let turn = |spec: &str| TurnServer::from_ice(&IceServer::turn(spec).unwrap());
        assert_eq!(
            turn("turn:example.org:3478,u,p"),
            Some(TurnServer {
                host_port: "example.org:3478".into(),
                username: "u".into(),
                password: "p".into(),
            })
        );
        assert!(turn("turn:example.org:3478?transport=udp,u,p").is_some());
        assert_eq!(turn("turn:example.org:3478?transport=tcp,u,p"), None);
        assert_eq!(turn("turns:example.org:5349,u,p"), None);
        let stun = IceServer::stun("stun:example.org:3478").unwrap();
        assert_eq!(TurnServer::from_ice(&stun), None);
    }

    /// A binding against the real server's STUN responder on loopback: the
    /// socket learns the address the server saw it from.
    #[tokio::test]
    async fn the_servers_stun_responder_tells_a_socket_its_address() {
        let (server, stun_addr) = super::super::tests::stun_responder().await;
        let sockets = vec![bind_udp("127.0.0.1:0".parse().unwrap()).unwrap()];
        let local = sockets[0].local;
        let mut bindings = Bindings::new(&[stun_addr.to_string()], &sockets).await;
        assert_eq!(bindings.0.len(), 1);
        bindings.handle_timeout(Instant::now(), &sockets);
        let mut buf = [0u8; 1500];
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let (len, _) = sockets[0].socket.recv_from(&mut buf).await.unwrap();
                if let Stun::Answered(a) = bindings.handle_datagram(local, &buf[..len]) {
                    return a;
                }
            }
        })
        .await
        .expect("no STUN answer");
        assert_eq!(answer, Some((local, local)));
        assert!(bindings.0.is_empty());
        server.shutdown().await;
    }
}
