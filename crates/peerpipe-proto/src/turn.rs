//! A TURN client (RFC 8656) over UDP, sans-IO: one allocation on one TURN
//! server, whose relayed address a direct-path attempt offers as a `relay`
//! candidate when the peers cannot reach each other's own addresses.
//!
//! The client authenticates with the long-term credential mechanism (RFC 8489
//! §9.2: the server's 401 names a realm and a nonce, requests then carry
//! `USERNAME`, `REALM`, `NONCE` and an HMAC-SHA1 `MESSAGE-INTEGRITY` keyed with
//! `MD5(user:realm:password)`), follows stale-nonce answers (438), refreshes the
//! allocation and the permissions before they expire, retransmits requests
//! (0.5, 1, 2, 4 s apart) and reports a server that never answers. Data goes
//! out in Send indications and comes back in Data indications; a permission for
//! a peer's IP address is created the first time something is sent to it, and
//! the first few datagrams wait for it. Responses to authenticated requests
//! must carry a valid `MESSAGE-INTEGRITY`, others are ignored. User names and
//! passwords are used as given (no SASLprep): keep them ASCII.
//!
//! The caller owns the socket and the clock: it sends what [`TurnClient::poll_transmit`]
//! returns to [`TurnClient::server`], feeds datagrams from the server to
//! [`TurnClient::handle_datagram`], and calls [`TurnClient::handle_timeout`] at
//! [`TurnClient::poll_timeout`].
//!
//! ```
//! use peerpipe_proto::time::Instant;
//! use peerpipe_proto::turn::TurnClient;
//!
//! let server = "127.0.0.1:3478".parse().unwrap();
//! let mut client = TurnClient::new(server, "user", "pass", [7; 32], Instant::now());
//! // The first request is an unauthenticated Allocate; the server's 401 tells
//! // the realm and nonce to authenticate with.
//! let allocate = client.poll_transmit().unwrap();
//! assert_eq!(&allocate[..2], &[0x00, 0x03]);
//! assert!(client.relayed().is_none());
//! ```

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha1::Sha1;

use crate::stun::{self, HEADER_LEN, TransactionId};
use crate::time::Instant;

const ALLOCATE: u16 = 0x0003;
const REFRESH: u16 = 0x0004;
const CREATE_PERMISSION: u16 = 0x0008;
const SEND_INDICATION: u16 = 0x0016;
const DATA_INDICATION: u16 = 0x0017;
/// Class bits of a success and an error response.
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;
const CLASS_MASK: u16 = 0x0110;

const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const LIFETIME: u16 = 0x000d;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA: u16 = 0x0013;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_TRANSPORT: u16 = 0x0019;
/// REQUESTED-TRANSPORT's value for UDP (protocol 17).
const UDP: [u8; 4] = [17, 0, 0, 0];

/// Waits between a request's transmissions; after the last, it has failed.
const RETRIES: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// The allocation lifetime asked for, in seconds.
const ASK_LIFETIME: u32 = 600;
/// A permission lasts 300 s (RFC 8656 §9); it is refreshed after this.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Datagrams held per peer address while its permission is being created.
const WAITING_MAX: usize = 8;
/// The largest datagram a Send indication carries (the whole message must
/// fit a UDP datagram).
pub const MAX_DATA: usize = 65_000;
/// Re-authentications (401 or 438 answers) one request may go through.
const REAUTH_MAX: u8 = 3;

/// Why the allocation could not be made or kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// The server refused the user name or password.
    #[error("the TURN server refused the user name or password")]
    Unauthorized,
    /// The server answered with another error.
    #[error("the TURN server refused: {code} {reason}")]
    Refused {
        /// The STUN error code (e.g. 486, allocation quota reached).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// No answer after every retransmission.
    #[error("no answer from the TURN server")]
    NoAnswer,
    /// A success response without the relayed address.
    #[error("malformed answer from the TURN server")]
    Malformed,
}

/// What the client has to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation is made: peers can reach us at `relayed`; the server saw
    /// us as `mapped`.
    Allocated {
        /// The relayed transport address on the server.
        relayed: SocketAddr,
        /// Our address as the server saw it (server-reflexive), if it said.
        mapped: Option<SocketAddr>,
    },
    /// The allocation failed or was lost; the client is closed.
    Failed(TurnError),
}

/// What a datagram from the server was.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// Data a peer sent to our relayed address.
    Data {
        /// The peer's address.
        from: SocketAddr,
        /// The datagram the peer sent.
        data: &'a [u8],
    },
    /// A response the client took in.
    Handled,
    /// Not a message for this client (or one that failed its checks): dropped.
    Ignored,
}

/// Long-term credentials for the realm the server named.
struct Auth {
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: [u8; 16],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocate,
    Refresh { lifetime: u32 },
    Permission(IpAddr),
}

struct Request {
    txid: TransactionId,
    kind: Kind,
    bytes: Vec<u8>,
    authenticated: bool,
    reauths: u8,
    sent: usize,
    next_at: Instant,
}

struct Permission {
    ip: IpAddr,
    /// When to refresh it; `None` while it is being created.
    refresh_at: Option<Instant>,
    /// Send indications waiting for the permission.
    waiting: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated {
        relayed: SocketAddr,
        refresh_at: Option<Instant>,
    },
    Closed,
}

/// One allocation on one TURN server. See the [module docs](self).
pub struct TurnClient {
    server: SocketAddr,
    username: String,
    password: String,
    auth: Option<Auth>,
    rng: ChaCha20Rng,
    state: State,
    requests: Vec<Request>,
    permissions: Vec<Permission>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
}

impl TurnClient {
    /// A client that asks `server` for an allocation at once; `seed` makes
    /// its transaction ids (give it fresh randomness).
    pub fn new(
        server: SocketAddr,
        username: &str,
        password: &str,
        seed: [u8; 32],
        now: Instant,
    ) -> Self {
        let mut client = Self {
            server,
            username: username.to_owned(),
            password: password.to_owned(),
            auth: None,
            rng: ChaCha20Rng::from_seed(seed),
            state: State::Allocating,
            requests: Vec::new(),
            permissions: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        client.request(Kind::Allocate, 0, now);
        client
    }

    /// The TURN server's address: everything goes there.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// The next datagram to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next thing to tell.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let allocation = match self.state {
            State::Allocated { refresh_at, .. } => refresh_at,
            _ => None,
        };
        let requests = self.requests.iter().map(|r| r.next_at);
        let permissions = self.permissions.iter().filter_map(|p| p.refresh_at);
        requests.chain(permissions).chain(allocation).min()
    }

    /// Retransmits, refreshes, and gives up on requests that were never answered.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for r in &mut self.requests {
            if r.next_at > now {
                continue;
            }
            match RETRIES.get(r.sent) {
                Some(wait) => {
                    self.transmits.push_back(r.bytes.clone());
                    r.sent += 1;
                    r.next_at = now + *wait;
                }
                None => expired.push(r.txid),
            }
        }
        for txid in expired {
            if let Some(i) = self.requests.iter().position(|r| r.txid == txid) {
                let request = self.requests.swap_remove(i);
                self.failed(request.kind, TurnError::NoAnswer);
            }
        }
        if let State::Allocated {
            relayed,
            refresh_at: Some(at),
        } = self.state
            && at <= now
        {
            self.state = State::Allocated {
                relayed,
                refresh_at: None,
            };
            self.request(
                Kind::Refresh {
                    lifetime: ASK_LIFETIME,
                },
                0,
                now,
            );
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter_mut()
            .filter(|p| p.refresh_at.is_some_and(|at| at <= now))
            .map(|p| {
                p.refresh_at = Some(now + PERMISSION_REFRESH);
                p.ip
            })
            .collect();
        for ip in due {
            self.request(Kind::Permission(ip), 0, now);
        }
    }

    /// Sends `data` to `peer` through the relay; false when there is no
    /// allocation (yet) or too much is already waiting for the peer's permission.
    pub fn send_to(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) -> bool {
        if self.relayed().is_none() || data.len() > MAX_DATA {
            return false;
        }
        let txid = self.txid();
        let mut msg = stun::header(SEND_INDICATION, 0, txid);
        stun::push_attribute(&mut msg, XOR_PEER_ADDRESS, &stun::xor_address(peer, txid));
        stun::push_attribute(&mut msg, DATA, data);
        match self.permissions.iter_mut().find(|p| p.ip == peer.ip()) {
            Some(p) if p.refresh_at.is_some() => self.transmits.push_back(msg),
            Some(p) if p.waiting.len() < WAITING_MAX => p.waiting.push(msg),
            Some(_) => return false,
            None => {
                self.permissions.push(Permission {
                    ip: peer.ip(),
                    refresh_at: None,
                    waiting: vec![msg],
                });
                self.request(Kind::Permission(peer.ip()), 0, now);
            }
        }
        true
    }

    /// Releases the allocation (a Refresh with lifetime 0, best effort: send
    /// what [`Self::poll_transmit`] returns) and closes the client.
    pub fn close(&mut self, now: Instant) {
        if self.relayed().is_some() {
            self.request(Kind::Refresh { lifetime: 0 }, 0, now);
        }
        self.state = State::Closed;
        self.requests.clear();
        self.permissions.clear();
    }

    /// A datagram from the server.
    pub fn handle_datagram<'a>(&mut self, now: Instant, data: &'a [u8]) -> Received<'a> {
        let Some((kind, txid, body)) = stun::split(data) else {
            return Received::Ignored;
        };
        let Some(attrs) = stun::attributes(body) else {
            return Received::Ignored;
        };
        if kind == DATA_INDICATION {
            return self.data_indication(txid, &attrs);
        }
        let Some(i) = self.requests.iter().position(|r| r.txid == txid) else {
            return Received::Ignored;
        };
        let request = &self.requests[i];
        if kind & !CLASS_MASK != request_method(request.kind) {
            return Received::Ignored;
        }
        // Only FINGERPRINT may follow MESSAGE-INTEGRITY; anything after it is
        // not covered, so it is not read.
        let mi = attrs.iter().position(|a| a.kind == MESSAGE_INTEGRITY);
        let verified = match (mi, &self.auth) {
            (Some(i), Some(auth)) => verify(data, attrs[i], &auth.key),
            _ => false,
        };
        let attrs = &attrs[..mi.unwrap_or(attrs.len())];
        let class = kind & CLASS_MASK;
        // Success answers to authenticated requests must be authentic. Error
        // answers cannot always be (a 401 or 438 comes before the key is
        // right); only someone who saw the request knows its transaction id.
        if request.authenticated && class == SUCCESS && !verified {
            return Received::Ignored;
        }
        let request = self.requests.swap_remove(i);
        match class {
            SUCCESS => self.success(request.kind, txid, attrs, now),
            ERROR => self.error(request, attrs, now),
            _ => {}
        }
        Received::Handled
    }

    fn data_indication<'a>(
        &self,
        txid: TransactionId,
        attrs: &[stun::Attribute<'a>],
    ) -> Received<'a> {
        if self.relayed().is_none() {
            return Received::Ignored;
        }
        let find = |kind| attrs.iter().find(|a| a.kind == kind).map(|a| a.value);
        let peer = find(XOR_PEER_ADDRESS).and_then(|v| stun::parse_address(v, Some(txid)));
        match (peer, find(DATA)) {
            (Some(from), Some(data)) => Received::Data { from, data },
            _ => Received::Ignored,
        }
    }

    fn success(
        &mut self,
        kind: Kind,
        txid: TransactionId,
        attrs: &[stun::Attribute],
        now: Instant,
    ) {
        let find = |k| attrs.iter().find(|a| a.kind == k).map(|a| a.value);
        let lifetime = find(LIFETIME)
            .and_then(|v| v.try_into().ok())
            .map_or(ASK_LIFETIME, u32::from_be_bytes);
        match kind {
            Kind::Allocate => {
                if self.state != State::Allocating {
                    return;
                }
                let address = |k| find(k).and_then(|v| stun::parse_address(v, Some(txid)));
                let Some(relayed) = address(XOR_RELAYED_ADDRESS) else {
                    self.fail(TurnError::Malformed);
                    return;
                };
                self.state = State::Allocated {
                    relayed,
                    refresh_at: Some(now + refresh_after(lifetime)),
                };
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped: address(stun::XOR_MAPPED_ADDRESS),
                });
            }
            Kind::Refresh { .. } => {
                if let State::Allocated { relayed, .. } = self.state {
                    self.state = State::Allocated {
                        relayed,
                        refresh_at: Some(now + refresh_after(lifetime)),
                    };
                }
            }
            Kind::Permission(ip) => {
                if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
                    if p.refresh_at.is_none() {
                        p.refresh_at = Some(now + PERMISSION_REFRESH);
                    }
                    self.transmits.extend(p.waiting.drain(..));
                }
            }
        }
    }

    fn error(&mut self, request: Request, attrs: &[stun::Attribute], now: Instant) {
        let find = |k| attrs.iter().find(|a| a.kind == k).map(|a| a.value);
        let (code, reason) = find(ERROR_CODE).map_or((0, String::new()), parse_error_code);
        let realm = find(REALM);
        let nonce = find(NONCE);
        let retry_auth = match code {
            // A first 401 is the challenge; one after our credentials is a refusal.
            401 => !request.authenticated,
            438 => true,
            _ => false,
        };
        if let (true, Some(realm), Some(nonce)) = (retry_auth, realm, nonce)
            && request.reauths < REAUTH_MAX
        {
            self.auth = Some(Auth {
                key: long_term_key(&self.username, realm, &self.password),
                realm: realm.to_vec(),
                nonce: nonce.to_vec(),
            });
            self.request(request.kind, request.reauths + 1, now);
            return;
        }
        let error = if code == 401 {
            TurnError::Unauthorized
        } else {
            TurnError::Refused { code, reason }
        };
        self.failed(request.kind, error);
    }

    /// A request ended without success.
    fn failed(&mut self, kind: Kind, error: TurnError) {
        match kind {
            Kind::Allocate | Kind::Refresh { lifetime: 1.. } => self.fail(error),
            Kind::Refresh { lifetime: 0 } => {}
            Kind::Permission(ip) => self.permissions.retain(|p| p.ip != ip),
        }
    }

    fn fail(&mut self, error: TurnError) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.requests.clear();
            self.permissions.clear();
            self.events.push_back(TurnEvent::Failed(error));
        }
    }

    fn txid(&mut self) -> TransactionId {
        let mut txid = [0; 12];
        self.rng.fill_bytes(&mut txid);
        txid
    }

    /// Sends a new request of `kind`, authenticated when credentials are known.
    fn request(&mut self, kind: Kind, reauths: u8, now: Instant) {
        let txid = self.txid();
        let mut msg = stun::header(request_method(kind), 0, txid);
        match kind {
            Kind::Allocate => stun::push_attribute(&mut msg, REQUESTED_TRANSPORT, &UDP),
            Kind::Refresh { lifetime } => {
                stun::push_attribute(&mut msg, LIFETIME, &lifetime.to_be_bytes());
            }
            Kind::Permission(ip) => {
                let peer = SocketAddr::new(ip, 0);
                stun::push_attribute(&mut msg, XOR_PEER_ADDRESS, &stun::xor_address(peer, txid));
            }
        }
        if let Some(auth) = &self.auth {
            sign(&mut msg, &self.username, auth);
        }
        self.transmits.push_back(msg.clone());
        self.requests.push(Request {
            txid,
            kind,
            bytes: msg,
            authenticated: self.auth.is_some(),
            reauths,
            sent: 1,
            next_at: now + RETRIES[0],
        });
    }
}

fn request_method(kind: Kind) -> u16 {
    match kind {
        Kind::Allocate => ALLOCATE,
        Kind::Refresh { .. } => REFRESH,
        Kind::Permission(_) => CREATE_PERMISSION,
    }
}

/// When to refresh an allocation that lasts `lifetime` seconds.
fn refresh_after(lifetime: u32) -> Duration {
    let secs = lifetime.saturating_sub(60).max(lifetime / 2).max(1);
    Duration::from_secs(u64::from(secs))
}

/// ERROR-CODE: two zero bytes, the hundreds, the rest, a UTF-8 reason.
fn parse_error_code(value: &[u8]) -> (u16, String) {
    match value {
        [_, _, class, number, reason @ ..] => (
            u16::from(class & 0x07) * 100 + u16::from(*number),
            String::from_utf8_lossy(reason).into_owned(),
        ),
        _ => (0, String::new()),
    }
}

/// The long-term credential key: MD5 of `user:realm:password`.
fn long_term_key(username: &str, realm: &[u8], password: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm);
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

/// Appends USERNAME, NONCE, REALM and MESSAGE-INTEGRITY.
fn sign(msg: &mut Vec<u8>, username: &str, auth: &Auth) {
    stun::push_attribute(msg, USERNAME, username.as_bytes());
    stun::push_attribute(msg, NONCE, &auth.nonce);
    stun::push_attribute(msg, REALM, &auth.realm);
    // The HMAC covers the message with a length that already counts the
    // MESSAGE-INTEGRITY attribute (4 + 20 bytes).
    stun::set_length(msg, 24);
    let mac = hmac_sha1(&auth.key, msg);
    stun::push_attribute(msg, MESSAGE_INTEGRITY, &mac);
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        // HMAC takes keys of any length.
        return [0; 20];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Whether `integrity`, the MESSAGE-INTEGRITY attribute of `msg`, is right.
fn verify(msg: &[u8], integrity: stun::Attribute, key: &[u8]) -> bool {
    let Some(covered) = msg.get(..HEADER_LEN + integrity.at) else {
        return false;
    };
    let mut covered = covered.to_vec();
    stun::set_length(&mut covered, 24);
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return false;
    };
    mac.update(&covered);
    mac.verify_slice(integrity.value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5769 §2.4: a request with long-term credentials (user name
    /// "マトリックス", password "TheMatrIX" after SASLprep, realm
    /// "example.org"), byte for byte.
    #[test]
    fn the_rfc_5769_long_term_sample_signs_the_same() {
        let sample = hex("0001 0060 2112a442 78ad3433c6ad72c029da412e
             0006 0012 e3839ee38388e383aae38383e382afe382b9 0000
             0015 001c 662f2f3439396b39353464364f4c33346f4c39465354767936347341
             0014 000b 6578616d706c652e6f7267 00
             0008 0014 f67024656dd64a3e02b8e0712e85c9a28ca89666");
        let mut txid = [0; 12];
        txid.copy_from_slice(&sample[8..20]);
        let realm = b"example.org";
        let auth = Auth {
            realm: realm.to_vec(),
            nonce: b"f//499k954d6OL34oL9FSTvy64sA".to_vec(),
            key: long_term_key("マトリックス", realm, "TheMatrIX"),
        };
        let mut msg = stun::header(0x0001, 0, txid);
        sign(&mut msg, "マトリックス", &auth);
        assert_eq!(msg, sample);

        let attrs = stun::attributes(&sample[HEADER_LEN..]).unwrap();
        assert_eq!(attrs[3].kind, MESSAGE_INTEGRITY);
        assert!(verify(&sample, attrs[3], &auth.key));
        let wrong = long_term_key("マトリックス", realm, "TheMatrix");
        assert!(!verify(&sample, attrs[3], &wrong));
    }

    /// A server's answer to the client's latest request, built by hand.
    fn answer(client: &TurnClient, kind: u16, attrs: &[(u16, Vec<u8>)], signed: bool) -> Vec<u8> {
        let txid = client.requests.last().unwrap().txid;
        let mut msg = stun::header(kind, 0, txid);
        for (k, v) in attrs {
            stun::push_attribute(&mut msg, *k, v);
        }
        if signed {
            let key = client.auth.as_ref().unwrap().key;
            stun::set_length(&mut msg, 24);
            let mac = hmac_sha1(&key, &msg);
            stun::push_attribute(&mut msg, MESSAGE_INTEGRITY, &mac);
        }
        msg
    }

    fn error_code(code: u16) -> Vec<u8> {
        vec![0, 0, (code / 100) as u8, (code % 100) as u8]
    }

    fn challenged(now: Instant) -> TurnClient {
        let mut client = TurnClient::new("192.0.2.1:3478".parse().unwrap(), "u", "p", [1; 32], now);
        client.poll_transmit().unwrap();
        let challenge = answer(
            &client,
            ALLOCATE | ERROR,
            &[
                (ERROR_CODE, error_code(401)),
                (REALM, b"r".to_vec()),
                (NONCE, b"n1".to_vec()),
            ],
            false,
        );
        assert_eq!(client.handle_datagram(now, &challenge), Received::Handled);
        client
    }

    #[test]
    fn allocates_after_the_challenge_and_relays_data() {
        let now = Instant::now();
        let mut client = challenged(now);
        let signed = client.poll_transmit().unwrap();
        assert_eq!(&signed[..2], &ALLOCATE.to_be_bytes());
        let relayed: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let txid = client.requests[0].txid;
        let ok = |signed| {
            answer(
                &client,
                ALLOCATE | SUCCESS,
                &[(XOR_RELAYED_ADDRESS, stun::xor_address(relayed, txid))],
                signed,
            )
        };
        // An unsigned success is not believed; a signed one is.
        let (unsigned, signed) = (ok(false), ok(true));
        assert_eq!(client.handle_datagram(now, &unsigned), Received::Ignored);
        assert_eq!(client.handle_datagram(now, &signed), Received::Handled);
        assert_eq!(
            client.poll_event(),
            Some(TurnEvent::Allocated {
                relayed,
                mapped: None
            })
        );

        // Data to a new peer waits for its permission.
        let peer: SocketAddr = "198.51.100.4:7000".parse().unwrap();
        assert!(client.send_to(now, peer, b"hello"));
        let permission = client.poll_transmit().unwrap();
        assert_eq!(&permission[..2], &CREATE_PERMISSION.to_be_bytes());
        assert_eq!(client.poll_transmit(), None);
        let granted = answer(&client, CREATE_PERMISSION | SUCCESS, &[], true);
        assert_eq!(client.handle_datagram(now, &granted), Received::Handled);
        let send = client.poll_transmit().unwrap();
        assert_eq!(&send[..2], &SEND_INDICATION.to_be_bytes());

        // A Data indication from the peer comes out as its datagram.
        let txid = [9; 12];
        let mut data = stun::header(DATA_INDICATION, 0, txid);
        stun::push_attribute(&mut data, XOR_PEER_ADDRESS, &stun::xor_address(peer, txid));
        stun::push_attribute(&mut data, DATA, b"hi back");
        assert_eq!(
            client.handle_datagram(now, &data),
            Received::Data {
                from: peer,
                data: b"hi back"
            }
        );
    }

    #[test]
    fn the_allocation_is_refreshed_before_it_expires() {
        let now = Instant::now();
        let mut client = challenged(now);
        client.poll_transmit().unwrap();
        let txid = client.requests[0].txid;
        let relayed: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let ok = answer(
            &client,
            ALLOCATE | SUCCESS,
            &[
                (XOR_RELAYED_ADDRESS, stun::xor_address(relayed, txid)),
                (LIFETIME, 300u32.to_be_bytes().to_vec()),
            ],
            true,
        );
        assert_eq!(client.handle_datagram(now, &ok), Received::Handled);
        let due = now + Duration::from_secs(240);
        assert_eq!(client.poll_timeout(), Some(due));
        client.handle_timeout(due);
        let refresh = client.poll_transmit().unwrap();
        assert_eq!(&refresh[..2], &REFRESH.to_be_bytes());
        assert!(refresh.windows(4).any(|w| w == ASK_LIFETIME.to_be_bytes()));
        assert!(!client.send_to(due, relayed, &vec![0; MAX_DATA + 1]));
    }

    #[test]
    fn a_second_401_is_a_refusal() {
        let now = Instant::now();
        let mut client = challenged(now);
        client.poll_transmit().unwrap();
        let refused = answer(
            &client,
            ALLOCATE | ERROR,
            &[
                (ERROR_CODE, error_code(401)),
                (REALM, b"r".to_vec()),
                (NONCE, b"n2".to_vec()),
            ],
            false,
        );
        assert_eq!(client.handle_datagram(now, &refused), Received::Handled);
        assert_eq!(
            client.poll_event(),
            Some(TurnEvent::Failed(TurnError::Unauthorized))
        );
        assert_eq!(client.poll_timeout(), None);
    }

    #[test]
    fn a_stale_nonce_is_followed() {
        let now = Instant::now();
        let mut client = challenged(now);
        client.poll_transmit().unwrap();
        let stale = answer(
            &client,
            ALLOCATE | ERROR,
            &[
                (ERROR_CODE, error_code(438)),
                (REALM, b"r".to_vec()),
                (NONCE, b"n2".to_vec()),
            ],
            false,
        );
        assert_eq!(client.handle_datagram(now, &stale), Received::Handled);
        let again = client.poll_transmit().unwrap();
        assert!(again.windows(2).any(|w| w == b"n2"));
        assert_eq!(client.poll_event(), None);
    }

    #[test]
    fn a_silent_server_fails_after_the_retransmissions() {
        let start = Instant::now();
        let mut client =
            TurnClient::new("192.0.2.1:3478".parse().unwrap(), "u", "p", [2; 32], start);
        let first = client.poll_transmit().unwrap();
        let mut sent = 1;
        for _ in 0..10 {
            let Some(at) = client.poll_timeout() else {
                break;
            };
            client.handle_timeout(at);
            while let Some(again) = client.poll_transmit() {
                assert_eq!(again, first);
                sent += 1;
            }
        }
        assert_eq!(sent, RETRIES.len());
        assert_eq!(
            client.poll_event(),
            Some(TurnEvent::Failed(TurnError::NoAnswer))
        );
    }

    #[test]
    fn junk_and_strangers_are_ignored() {
        let now = Instant::now();
        let mut client = challenged(now);
        for junk in [&b""[..], &[0u8; 20], &[0xff; 64]] {
            assert_eq!(client.handle_datagram(now, junk), Received::Ignored);
        }
        // A response for a transaction we never started.
        let other = stun::binding_response([3; 12], "192.0.2.9:1".parse().unwrap());
        assert_eq!(client.handle_datagram(now, &other), Received::Ignored);
        // Data before the allocation.
        let mut data = stun::header(DATA_INDICATION, 0, [4; 12]);
        stun::push_attribute(&mut data, DATA, b"x");
        assert_eq!(client.handle_datagram(now, &data), Received::Ignored);
    }
}
