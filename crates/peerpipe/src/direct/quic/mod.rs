//! The QUIC endpoint of a node: one UDP socket that both accepts and dials, a
//! self-signed certificate, and mutual pinning.
//!
//! Each node makes a fresh self-signed certificate; its SHA-256 fingerprint
//! (the *pin*) travels to the peer inside the encrypted, authenticated session.
//! A connection is made only with the certificate whose pin the session
//! delivered, both ways: the dialing side checks the server's certificate
//! against the peer's pin, and the accepting side admits only client
//! certificates whose pins it was told to expect ([`QuicEndpoint::expect`]),
//! then hands each connection out with its pin so it reaches the right session.
//! A certificate that matches no pin ends the handshake with TLS
//! `access_denied`, reported as [`QuicError::PinMismatch`] on both sides.
//!
//! Because TLS 1.3 finishes the client's handshake before the server has
//! judged the client's certificate, the accepting side speaks first: it opens
//! the path's stream and sends [`HELLO`]; the dialing side counts the
//! connection as made only when that arrives.
//!
//! Session packets travel on that one bidirectional stream, each behind a
//! 4-byte big-endian length ([`write_packet`], [`read_packet`]).
//!
//! The parts: this module (endpoint, certificates, pinning, framing),
//! [`path`] (one attempt: dial or accept, then carry the session's packets),
//! [`socket`] (the UDP socket shared with STUN and hole punching) and
//! [`congestion`] (the rate-based congestion controller).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use peerpipe_proto::direct::MAX_QUIC_CANDIDATES;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use quinn::rustls::crypto::{
    WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use quinn::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};
use quinn::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use quinn::rustls::{
    self, CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme,
};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

mod congestion;
pub(super) mod path;
mod socket;

use self::socket::StunSocket;
use crate::direct::io::{reachable, resolve};

/// The SHA-256 fingerprint of a certificate's DER.
pub(crate) type Pin = [u8; 32];
/// Names one attempt to the accepting endpoint (as the TLS server name).
pub(crate) type Token = [u8; 16];

/// The TLS server name that carries an attempt token (a DNS label).
fn server_name(token: Token) -> String {
    let mut name = String::from("a");
    for b in token {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

fn parse_server_name(name: &str) -> Option<Token> {
    let hex = name.strip_prefix('a')?;
    if hex.len() != 32 {
        return None;
    }
    let mut token = [0u8; 16];
    for (i, b) in token.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(token)
}

/// An incoming connection, completed.
struct Admitted {
    pin: Pin,
    token: Token,
    accepted: Accepted,
}

/// What the accepting side sends first on the path's stream.
pub(crate) const HELLO: u8 = 0x50;
/// The ALPN both sides offer: a version check for free.
const ALPN: &[u8] = b"peerpipe/1";
/// TLS `access_denied`, as QUIC carries it (crypto error 0x100 + 49).
const ACCESS_DENIED: u8 = 49;
/// How long a dial waits for the accepting side's hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Silence after which a QUIC connection is dead (keepalives go every 5 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
const KEEPALIVE: Duration = Duration::from_secs(5);
/// How long an attempt waits for its server-reflexive addresses.
const GATHER_TIMEOUT: Duration = Duration::from_secs(1);
/// The waits between hole punches toward a peer that dials this node.
const PUNCH_SCHEDULE: [Duration; 6] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// UDP socket buffers: the kernel's default drops datagrams at full speed.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Why a QUIC connection could not be made or kept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QuicError {
    /// A certificate did not match the pin the session delivered (either side
    /// refused the other's).
    #[error("the peer's QUIC certificate does not match the fingerprint sent in the session")]
    PinMismatch,
    /// No hello from the accepting side in time.
    #[error("no answer on the QUIC connection")]
    Timeout,
    /// The connection failed or was closed.
    #[error("QUIC connection: {0}")]
    Connection(quinn::ConnectionError),
    /// The endpoint could not start the connection.
    #[error("cannot dial over QUIC: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The path's stream failed.
    #[error("QUIC stream: {0}")]
    Stream(String),
    /// Setting up the endpoint failed.
    #[error("cannot set up QUIC: {0}")]
    Setup(String),
}

impl From<quinn::ConnectionError> for QuicError {
    fn from(e: quinn::ConnectionError) -> Self {
        let denied = quinn::TransportErrorCode::crypto(ACCESS_DENIED);
        match &e {
            quinn::ConnectionError::TransportError(t) if t.code == denied => Self::PinMismatch,
            quinn::ConnectionError::ConnectionClosed(c) if c.error_code == denied => {
                Self::PinMismatch
            }
            _ => Self::Connection(e),
        }
    }
}

fn setup(e: impl std::fmt::Display) -> QuicError {
    QuicError::Setup(e.to_string())
}

fn fingerprint(cert: &CertificateDer<'_>) -> Pin {
    Sha256::digest(cert.as_ref()).into()
}

fn mismatch() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Checks the handshake signatures: the peer holds its certificate's key.
#[derive(Debug)]
struct Signatures(WebPkiSupportedAlgorithms);

/// The handshake-signature methods both verifiers share: the signatures are
/// checked with the provider's algorithms, only the certificate is pinned.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.signatures.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.signatures.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.signatures.0.supported_schemes()
        }
    };
}

/// The dialing side's check: the server's certificate is the pinned one.
#[derive(Debug)]
struct PinnedServer {
    pin: Pin,
    signatures: Signatures,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if intermediates.is_empty() && fingerprint(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(mismatch())
        }
    }

    signature_checks!();
}

/// Pins the accepting side expects, counted (several attempts may expect one).
type Expected = Arc<Mutex<HashMap<Pin, usize>>>;

/// The accepting side's check: the client's certificate is an expected one.
#[derive(Debug)]
struct PinnedClients {
    expected: Expected,
    signatures: Signatures,
}

impl ClientCertVerifier for PinnedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let expected = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        if intermediates.is_empty() && expected.contains_key(&fingerprint(end_entity)) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(mismatch())
        }
    }

    signature_checks!();
}

/// While it lives, the endpoint admits the peer whose certificate has this pin.
pub(crate) struct Expectation {
    pin: Pin,
    expected: Expected,
}

impl Drop for Expectation {
    fn drop(&mut self) {
        let mut expected = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = expected.get_mut(&self.pin) {
            *n -= 1;
            if *n == 0 {
                expected.remove(&self.pin);
            }
        }
    }
}

/// A node's QUIC endpoint. See the [module docs](self).
pub(crate) struct QuicEndpoint {
    endpoint: quinn::Endpoint,
    /// The endpoint's socket, for STUN binding requests.
    socket: Arc<StunSocket>,
    pin: Pin,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    expected: Expected,
    transport: Arc<quinn::TransportConfig>,
}

impl QuicEndpoint {
    /// Binds an endpoint on `addr` with a fresh certificate (inside a tokio runtime).
    pub(crate) fn bind(addr: SocketAddr) -> Result<Self, QuicError> {
        let made =
            rcgen::generate_simple_self_signed(vec!["peerpipe".to_owned()]).map_err(setup)?;
        let cert = made.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
        let expected = Expected::default();
        let transport = Arc::new(transport_config()?);
        let server = server_config(&cert, &key, &expected, &transport)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let inner = quinn::Runtime::wrap_udp_socket(&*runtime, udp_socket(addr).map_err(setup)?)
            .map_err(setup)?;
        let socket = StunSocket::new(inner);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config()?,
            Some(server),
            socket.clone(),
            runtime,
        )
        .map_err(setup)?;
        Ok(Self {
            endpoint,
            socket,
            pin: fingerprint(&cert),
            cert,
            key,
            expected,
            transport,
        })
    }

    /// The address the endpoint's socket is bound to.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// This endpoint's certificate fingerprint, for the peer.
    pub(crate) fn pin(&self) -> Pin {
        self.pin
    }

    /// Admits connections from the peer with certificate pin `pin` while the
    /// returned value lives.
    pub(crate) fn expect(&self, pin: Pin) -> Expectation {
        let mut expected = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        *expected.entry(pin).or_default() += 1;
        Expectation {
            pin,
            expected: self.expected.clone(),
        }
    }

    /// Dials `addr` for the attempt the peer named `token`, accepting only
    /// the certificate with pin `peer`; returns once the accepting side's
    /// hello arrived, with the path's stream.
    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        peer: Pin,
        token: Token,
    ) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), QuicError> {
        let config = self.client_config(peer)?;
        let connection = self
            .endpoint
            .connect_with(config, addr, &server_name(token))?
            .await?;
        let hello = async {
            let (send, mut recv) = connection.accept_bi().await?;
            let mut byte = [0u8];
            recv.read_exact(&mut byte).await.map_err(read_error)?;
            if byte[0] != HELLO {
                return Err(QuicError::Stream("unexpected hello".into()));
            }
            Ok((send, recv))
        };
        match tokio::time::timeout(HELLO_TIMEOUT, hello).await {
            Ok(Ok((send, recv))) => Ok((connection, send, recv)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(QuicError::Timeout),
        }
    }

    /// Completes an incoming connection from an expected peer: its pin, the
    /// attempt token it dialed with, and the path's stream (the hello already
    /// sent).
    async fn admit(&self, incoming: quinn::Incoming) -> Result<Admitted, QuicError> {
        let connection = incoming.await?;
        let pin = connection
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|certs| certs.first().map(fingerprint))
            .ok_or(QuicError::PinMismatch)?;
        let token = connection
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.server_name)
            .and_then(|name| parse_server_name(&name))
            .ok_or_else(|| QuicError::Stream("no attempt token".into()))?;
        let (mut send, recv) = connection.open_bi().await?;
        send.write_all(&[HELLO])
            .await
            .map_err(|e| QuicError::Stream(e.to_string()))?;
        Ok(Admitted {
            pin,
            token,
            accepted: (connection, send, recv),
        })
    }

    fn client_config(&self, peer: Pin) -> Result<quinn::ClientConfig, QuicError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let signatures = Signatures(provider.signature_verification_algorithms);
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(setup)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer {
                pin: peer,
                signatures,
            }))
            .with_client_auth_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(setup)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(setup)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.transport.clone());
        Ok(config)
    }
}

impl Drop for QuicEndpoint {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"bye");
    }
}

fn server_config(
    cert: &CertificateDer<'static>,
    key: &PrivatePkcs8KeyDer<'static>,
    expected: &Expected,
    transport: &Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, QuicError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let signatures = Signatures(provider.signature_verification_algorithms);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_client_cert_verifier(Arc::new(PinnedClients {
            expected: expected.clone(),
            signatures,
        }))
        .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(key.clone_key()))
        .map_err(setup)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(setup)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport.clone());
    Ok(config)
}

/// Windows that keep a LAN path busy at ~400 MB/s without overrunning the
/// socket buffers; keepalives hold NAT mappings open.
fn transport_config() -> Result<quinn::TransportConfig, QuicError> {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(16 << 20))
        .receive_window(quinn::VarInt::from_u32(32 << 20))
        .send_window(32 << 20)
        .keep_alive_interval(Some(KEEPALIVE))
        .mtu_discovery_config(Some(mtu_discovery()))
        .congestion_controller_factory(Arc::new(congestion::RateModelConfig))
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().map_err(setup)?));
    Ok(t)
}

/// Path MTU discovery up to [`MAX_UDP_PAYLOAD`]: on paths that carry larger
/// datagrams than Ethernet (loopback, jumbo-frame LANs) each packet then carries
/// up to 4.5 times more data, and quinn's per-packet work (header protection,
/// AEAD set-up, acknowledgement tracking) shrinks as much. Where probes are lost,
/// packets stay at the 1452-byte default.
fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut m = quinn::MtuDiscoveryConfig::default();
    m.upper_bound(MAX_UDP_PAYLOAD);
    m
}

/// Accepts datagrams up to [`MAX_UDP_PAYLOAD`] from the peer.
fn endpoint_config() -> Result<quinn::EndpointConfig, QuicError> {
    let mut c = quinn::EndpointConfig::default();
    c.max_udp_payload_size(MAX_UDP_PAYLOAD).map_err(setup)?;
    Ok(c)
}

/// The largest QUIC datagram: quinn hands the kernel up to 10 packets in one
/// segmentation-offload send, which must fit one 65 507-byte UDP payload. Larger
/// packets would end segmentation offload and cost a system call each.
const MAX_UDP_PAYLOAD: u16 = 6500;

fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at its maximum.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn read_error(e: quinn::ReadExactError) -> QuicError {
    match e {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => c.into(),
        other => QuicError::Stream(other.to_string()),
    }
}

/// A connection with its path stream, as the accepting side hands it over.
pub(crate) type Accepted = (quinn::Connection, quinn::SendStream, quinn::RecvStream);

/// A node's endpoint shared by its connections: it hands each accepted
/// connection to the attempt that waits for its pin.
pub(crate) struct QuicNode {
    endpoint: QuicEndpoint,
    candidates: Vec<SocketAddr>,
    /// Attempts waiting for their connection, by token, with the pin it must carry.
    waiting: Mutex<HashMap<Token, (Pin, oneshot::Sender<Accepted>)>>,
}

impl std::fmt::Debug for QuicNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicNode")
            .field("candidates", &self.candidates)
            .finish_non_exhaustive()
    }
}

/// An attempt's wait for the peer's connection; the pin stays admitted while
/// it lives.
pub(crate) struct Waiter {
    rx: oneshot::Receiver<Accepted>,
    _admitted: Expectation,
}

impl Waiter {
    /// The peer's connection, once it arrived.
    pub(crate) async fn arrived(self) -> Option<Accepted> {
        self.rx.await.ok()
    }
}

impl QuicNode {
    /// Binds the node's endpoint for `hosts` (one socket: on the host when
    /// there is a single loopback one, else on every IPv4 address) and starts
    /// accepting.
    pub(crate) fn bind(hosts: &[IpAddr]) -> Result<Arc<Self>, QuicError> {
        let loopback = hosts.iter().find(|ip| ip.is_loopback()).copied();
        let bind_ip = loopback.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let endpoint = QuicEndpoint::bind(SocketAddr::new(bind_ip, 0))?;
        let port = endpoint.local_addr().map_err(setup)?.port();
        let candidates = match loopback {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => hosts
                .iter()
                .filter(|ip| ip.is_ipv4())
                .map(|ip| SocketAddr::new(*ip, port))
                .collect(),
        };
        let node = Arc::new(Self {
            endpoint,
            candidates,
            waiting: Mutex::default(),
        });
        tokio::spawn(accept_loop(Arc::downgrade(&node)));
        Ok(node)
    }

    /// This node's certificate pin.
    pub(crate) fn pin(&self) -> Pin {
        self.endpoint.pin()
    }

    /// Where peers can dial this node: its host addresses, and the addresses
    /// the STUN servers (`HOST:PORT`) see its socket at (asked now: the
    /// request also refreshes the NAT mapping), within [`GATHER_TIMEOUT`].
    pub(crate) async fn candidates(&self, stun: &[String]) -> Vec<SocketAddr> {
        let mut candidates = self.candidates.clone();
        let Ok(local) = self.endpoint.local_addr() else {
            return candidates;
        };
        let mut servers = Vec::new();
        for server in stun {
            servers.extend(
                resolve(server)
                    .await
                    .into_iter()
                    .find(|a| reachable(local, *a)),
            );
        }
        let asks = servers
            .into_iter()
            .map(|server| self.endpoint.socket.server_reflexive(server));
        let found = tokio::time::timeout(GATHER_TIMEOUT, futures_util::future::join_all(asks));
        for mapped in found.await.unwrap_or_default().into_iter().flatten() {
            if !candidates.contains(&mapped) {
                candidates.push(mapped);
            }
        }
        candidates.truncate(MAX_QUIC_CANDIDATES);
        candidates
    }

    /// Opens this side's NAT toward `remote` for the peer's dial: a STUN
    /// datagram to each address from the QUIC socket, again after each of
    /// [`PUNCH_SCHEDULE`] (the peer's QUIC resends its first packet if one
    /// arrived before the hole was open).
    pub(crate) async fn punch(&self, remote: &[SocketAddr]) {
        for wait in PUNCH_SCHEDULE {
            for to in remote {
                self.endpoint.socket.punch(*to);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Admits the peer with certificate pin `pin` and waits for its connection.
    pub(crate) fn wait_for(&self, pin: Pin, token: Token) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let admitted = self.endpoint.expect(pin);
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, (pin, tx));
        Waiter {
            rx,
            _admitted: admitted,
        }
    }

    /// Dials every one of `addrs` at once for the attempt the peer named
    /// `token`, accepting only pin `peer`; the first connection made wins.
    pub(crate) async fn connect(
        &self,
        addrs: &[SocketAddr],
        peer: Pin,
        token: Token,
    ) -> Result<Accepted, QuicError> {
        let mut pending: Vec<_> = addrs
            .iter()
            .map(|a| Box::pin(self.endpoint.connect(*a, peer, token)))
            .collect();
        let mut last = QuicError::Timeout;
        while !pending.is_empty() {
            let (result, _, rest) = futures_util::future::select_all(pending).await;
            pending = rest;
            match result {
                Ok(done) => return Ok(done),
                Err(QuicError::PinMismatch) => return Err(QuicError::PinMismatch),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Hands accepted connections to their waiting attempts; closes the others.
async fn accept_loop(node: std::sync::Weak<QuicNode>) {
    loop {
        let Some(strong) = node.upgrade() else { return };
        let endpoint = strong.endpoint.endpoint.clone();
        drop(strong);
        let Some(incoming) = endpoint.accept().await else {
            return;
        };
        let Some(node) = node.upgrade() else { return };
        tokio::spawn(async move {
            match node.endpoint.admit(incoming).await {
                Ok(admitted) => {
                    let waiter = {
                        let mut waiting =
                            node.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                        match waiting.get(&admitted.token) {
                            Some((pin, _)) if *pin == admitted.pin => {
                                waiting.remove(&admitted.token)
                            }
                            _ => None,
                        }
                    };
                    let unwanted = match waiter {
                        Some((_, tx)) => tx.send(admitted.accepted).err(),
                        None => Some(admitted.accepted),
                    };
                    if let Some((connection, ..)) = unwanted {
                        connection.close(0u32.into(), b"no such attempt");
                    }
                }
                Err(e) => tracing::debug!("incoming QUIC connection: {e}"),
            }
        });
    }
}

/// Writes one session packet behind its length.
pub(crate) async fn write_packet(
    send: &mut quinn::SendStream,
    packet: Bytes,
) -> Result<(), QuicError> {
    let len =
        u32::try_from(packet.len()).map_err(|_| QuicError::Stream("packet too long".into()))?;
    let mut chunks = [Bytes::copy_from_slice(&len.to_be_bytes()), packet];
    send.write_all_chunks(&mut chunks)
        .await
        .map_err(|e| QuicError::Stream(e.to_string()))
}

/// Reads one session packet of at most `max` bytes; `None` at the stream's end.
pub(crate) async fn read_packet(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Bytes>, QuicError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(read_error(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > max {
        return Err(QuicError::Stream(format!("a packet of {len} bytes")));
    }
    let mut packet = vec![0; len];
    recv.read_exact(&mut packet).await.map_err(read_error)?;
    Ok(Some(packet.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> QuicEndpoint {
        QuicEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    impl QuicEndpoint {
        /// The next incoming connection, completed.
        async fn accept(
            &self,
        ) -> Option<Result<(Pin, quinn::Connection, quinn::SendStream, quinn::RecvStream), QuicError>>
        {
            let incoming = self.endpoint.accept().await?;
            Some(self.admit(incoming).await.map(|a| {
                assert_eq!(a.token, [9; 16]);
                let (c, s, r) = a.accepted;
                (a.pin, c, s, r)
            }))
        }
    }

    #[test]
    fn tokens_travel_as_server_names() {
        let token = [0xa5; 16];
        let name = server_name(token);
        assert!(ServerName::try_from(name.as_str()).is_ok(), "{name}");
        assert_eq!(parse_server_name(&name), Some(token));
        assert_eq!(parse_server_name("peerpipe"), None);
        assert_eq!(parse_server_name(&name[..20]), None);
    }

    /// The pinned peers connect and exchange framed packets both ways.
    #[tokio::test]
    async fn pinned_peers_connect_and_exchange_packets() {
        let (a, b) = (endpoint(), endpoint());
        let _admit = b.expect(a.pin());
        let b_addr = b.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(a.connect(b_addr, b.pin(), [9; 16]), b.accept());
        let (_conn_a, mut a_send, mut a_recv) = dialed.unwrap();
        let (pin, _conn_b, mut b_send, mut b_recv) = accepted.unwrap().unwrap();
        assert_eq!(pin, a.pin());
        let big = Bytes::from(vec![7u8; 100_000]);
        write_packet(&mut a_send, big.clone()).await.unwrap();
        write_packet(&mut b_send, Bytes::from_static(b"back"))
            .await
            .unwrap();
        assert_eq!(read_packet(&mut b_recv, 1 << 20).await.unwrap(), Some(big));
        let back = read_packet(&mut a_recv, 1 << 20).await.unwrap();
        assert_eq!(back.as_deref(), Some(&b"back"[..]));
        // A packet over the limit is refused.
        write_packet(&mut a_send, Bytes::from(vec![1u8; 2000]))
            .await
            .unwrap();
        assert!(read_packet(&mut b_recv, 1000).await.is_err());
    }

    /// The dialing side was given the wrong pin for the server: refused, typed.
    #[tokio::test]
    async fn a_server_certificate_that_was_not_pinned_is_refused() {
        let (a, b, stranger) = (endpoint(), endpoint(), endpoint());
        let _admit = b.expect(a.pin());
        let b_addr = b.local_addr().unwrap();
        let (dialed, accepted) =
            tokio::join!(a.connect(b_addr, stranger.pin(), [9; 16]), b.accept());
        assert!(matches!(dialed, Err(QuicError::PinMismatch)), "{dialed:?}");
        assert!(matches!(accepted, Some(Err(QuicError::PinMismatch))));
    }

    /// The accepting side does not expect the dialing side's certificate: both
    /// sides see the refusal, the dialer once the hello fails to come.
    #[tokio::test]
    async fn a_client_certificate_that_was_not_pinned_is_refused() {
        let (a, b, stranger) = (endpoint(), endpoint(), endpoint());
        let admit = b.expect(stranger.pin());
        let b_addr = b.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(a.connect(b_addr, b.pin(), [9; 16]), b.accept());
        assert!(matches!(dialed, Err(QuicError::PinMismatch)), "{dialed:?}");
        assert!(matches!(accepted, Some(Err(QuicError::PinMismatch))));
        // Once nobody is expected, not even the stranger gets in.
        drop(admit);
        let (dialed, accepted) =
            tokio::join!(stranger.connect(b_addr, b.pin(), [9; 16]), b.accept());
        assert!(matches!(dialed, Err(QuicError::PinMismatch)), "{dialed:?}");
        assert!(matches!(accepted, Some(Err(QuicError::PinMismatch))));
    }

    /// A STUN binding request goes out of the QUIC socket and its answer is
    /// taken before quinn sees it; QUIC works on the same socket before and after.
    #[tokio::test]
    async fn stun_shares_the_quic_socket() {
        let (server, stun_addr) = crate::direct::tests::stun_responder().await;
        let (a, b) = (endpoint(), endpoint());
        let _admit = b.expect(a.pin());
        let b_addr = b.local_addr().unwrap();
        let mapped = b.socket.server_reflexive(stun_addr).await;
        assert_eq!(mapped, Some(b_addr));
        let (dialed, accepted) = tokio::join!(a.connect(b_addr, b.pin(), [9; 16]), b.accept());
        let (_conn, mut send, _recv) = dialed.unwrap();
        let (_, _conn_b, _send_b, mut recv) = accepted.unwrap().unwrap();
        // STUN in the middle of QUIC traffic.
        let (mapped, _) = tokio::join!(
            b.socket.server_reflexive(stun_addr),
            write_packet(&mut send, Bytes::from_static(b"during"))
        );
        assert_eq!(mapped, Some(b_addr));
        let got = read_packet(&mut recv, 100).await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"during"[..]));
        server.shutdown().await;
    }
}
