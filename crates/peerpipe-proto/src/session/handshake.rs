//! The Noise handshake between two devices that know each other's keys.
//!
//! `Noise_KK_25519_ChaChaPoly_BLAKE2s` with X25519 keys derived from the devices'
//! Ed25519 keys. The initiator is the device with the smaller [`DeviceId`] (so both
//! sides agree without talking). Two messages: `hello` (initiator → responder) and
//! `reply` (responder → initiator); each carries the sender's [`TransportParams`]
//! as its encrypted payload. The prologue binds the protocol name, its version and
//! both device ids.
//!
//! With a pre-shared key ([`Psk`], from a one-time code: see [`crate::code`]) the
//! pattern is `Noise_KKpsk2_25519_ChaChaPoly_BLAKE2s`: the responder's `reply`
//! then also proves it holds the key, and both sides must hold the same one, or
//! the handshake fails with [`HandshakeError::Authentication`]. A side with a key
//! and a side without one never agree either.
//!
//! The states are typed and consume themselves (rustls style):
//! [`InitiatorStart`] → [`AwaitReply`] → [`Keys`], [`AwaitHello`] → [`Keys`].

use bytes::{Buf, BufMut};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::{HandshakeState, StatelessTransportState};

use super::packet::{MAX_HANDSHAKE_LEN, VERSION};
use crate::id::{DeviceId, Identity};

const NOISE_PARAMS: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";
const NOISE_PARAMS_PSK: &str = "Noise_KKpsk2_25519_ChaChaPoly_BLAKE2s";

/// A 32-byte pre-shared key that a session's handshake must also prove.
/// Its `Debug` form does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(pub [u8; 32]);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

const PROLOGUE_LABEL: &[u8] = b"peerpipe-session";

/// Why the handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer did not prove it holds the expected device key (or its message was
    /// altered in transit): the Noise message did not authenticate.
    #[error("the peer is not the expected device or its handshake was altered")]
    Authentication,
    /// The handshake message or its parameters are malformed.
    #[error("malformed handshake message")]
    Malformed,
    /// Both ends claim the same device id.
    #[error("a device cannot open a session with itself")]
    SameDevice,
    /// The remote device id is not a valid Ed25519 key.
    #[error("the remote device id is not a valid key")]
    RemoteKey,
}

/// Limits each side announces in its handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportParams {
    /// The initial credit of every stream the peer sends on, in bytes.
    pub stream_window: u32,
    /// The initial credit of the whole session, in bytes.
    pub session_window: u32,
    /// The most streams the peer may have open towards the sender at a time.
    pub max_streams: u32,
    /// The largest message the sender accepts, in bytes.
    pub max_message: u32,
}

impl TransportParams {
    const LEN: usize = 16;

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u32(self.stream_window);
        buf.put_u32(self.session_window);
        buf.put_u32(self.max_streams);
        buf.put_u32(self.max_message);
    }

    fn decode(mut buf: &[u8]) -> Result<Self, HandshakeError> {
        if buf.len() != Self::LEN {
            return Err(HandshakeError::Malformed);
        }
        Ok(Self {
            stream_window: buf.get_u32(),
            session_window: buf.get_u32(),
            max_streams: buf.get_u32(),
            max_message: buf.get_u32(),
        })
    }
}

/// Which side of the handshake a device plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends `hello`; the device with the smaller id.
    Initiator,
    /// Answers with `reply`.
    Responder,
}

impl Role {
    /// The role `local` plays towards `remote`.
    pub fn of(local: &DeviceId, remote: &DeviceId) -> Result<Self, HandshakeError> {
        match local.cmp(remote) {
            std::cmp::Ordering::Less => Ok(Self::Initiator),
            std::cmp::Ordering::Greater => Ok(Self::Responder),
            std::cmp::Ordering::Equal => Err(HandshakeError::SameDevice),
        }
    }
}

/// The result of a finished handshake: transport keys and the peer's limits.
pub struct Keys {
    /// Encrypts and decrypts packets with explicit nonces.
    pub transport: StatelessTransportState,
    /// What the peer announced.
    pub remote_params: TransportParams,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("remote_params", &self.remote_params)
            .finish_non_exhaustive()
    }
}

/// The initiator before it sent `hello`.
pub struct InitiatorStart(HandshakeState, TransportParams);
/// The initiator waiting for `reply`.
pub struct AwaitReply(HandshakeState);
/// The responder waiting for `hello`.
pub struct AwaitHello(HandshakeState, TransportParams);

/// Starts the handshake for `identity` towards `remote`, as the [`Role`] their ids
/// give. `seed` feeds the ephemeral key generation (the core has no random source).
pub fn start(
    identity: &Identity,
    remote: &DeviceId,
    params: TransportParams,
    seed: [u8; 32],
) -> Result<Start, HandshakeError> {
    start_with_psk(identity, remote, params, seed, None)
}

/// Like [`start`], with a pre-shared key the peer must hold too when `psk` is set.
pub fn start_with_psk(
    identity: &Identity,
    remote: &DeviceId,
    params: TransportParams,
    seed: [u8; 32],
    psk: Option<&Psk>,
) -> Result<Start, HandshakeError> {
    let local = identity.device_id();
    let role = Role::of(&local, remote)?;
    let secret = SigningKey::from_bytes(&identity.secret_bytes()).to_scalar_bytes();
    let remote_public = VerifyingKey::from_bytes(remote.as_bytes())
        .map_err(|_| HandshakeError::RemoteKey)?
        .to_montgomery()
        .to_bytes();
    let (first, second) = match role {
        Role::Initiator => (local, *remote),
        Role::Responder => (*remote, local),
    };
    let mut prologue = Vec::with_capacity(PROLOGUE_LABEL.len() + 65);
    prologue.extend_from_slice(PROLOGUE_LABEL);
    prologue.push(VERSION);
    prologue.extend_from_slice(first.as_bytes());
    prologue.extend_from_slice(second.as_bytes());

    let noise_params = if psk.is_some() {
        NOISE_PARAMS_PSK
    } else {
        NOISE_PARAMS
    }
    .parse()
    .map_err(|_| HandshakeError::Malformed)?;
    let mut builder = snow::Builder::with_resolver(noise_params, Box::new(SeededResolver(seed)))
        .local_private_key(&secret)
        .and_then(|b| b.remote_public_key(&remote_public))
        .and_then(|b| b.prologue(&prologue))
        .map_err(|_| HandshakeError::RemoteKey)?;
    if let Some(psk) = psk {
        builder = builder
            .psk(2, &psk.0)
            .map_err(|_| HandshakeError::Malformed)?;
    }
    Ok(match role {
        Role::Initiator => Start::Initiator(InitiatorStart(
            builder
                .build_initiator()
                .map_err(|_| HandshakeError::RemoteKey)?,
            params,
        )),
        Role::Responder => Start::Responder(AwaitHello(
            builder
                .build_responder()
                .map_err(|_| HandshakeError::RemoteKey)?,
            params,
        )),
    })
}

/// The first state of either role.
pub enum Start {
    /// This device sends `hello`.
    Initiator(InitiatorStart),
    /// This device waits for `hello`.
    Responder(AwaitHello),
}

impl InitiatorStart {
    /// Writes `hello`.
    pub fn write_hello(mut self) -> Result<(AwaitReply, Vec<u8>), HandshakeError> {
        let msg = write(&mut self.0, &self.1)?;
        Ok((AwaitReply(self.0), msg))
    }
}

impl AwaitReply {
    /// Reads `reply` and finishes the handshake.
    pub fn read_reply(mut self, msg: &[u8]) -> Result<Keys, HandshakeError> {
        let remote_params = read(&mut self.0, msg)?;
        finish(self.0, remote_params)
    }
}

impl AwaitHello {
    /// Reads `hello`, writes `reply` and finishes the handshake.
    pub fn read_hello(mut self, msg: &[u8]) -> Result<(Keys, Vec<u8>), HandshakeError> {
        let remote_params = read(&mut self.0, msg)?;
        let reply = write(&mut self.0, &self.1)?;
        Ok((finish(self.0, remote_params)?, reply))
    }
}

fn write(state: &mut HandshakeState, params: &TransportParams) -> Result<Vec<u8>, HandshakeError> {
    let mut payload = Vec::with_capacity(TransportParams::LEN);
    params.encode(&mut payload);
    let mut out = vec![0; MAX_HANDSHAKE_LEN];
    let len = state
        .write_message(&payload, &mut out)
        .map_err(|_| HandshakeError::Malformed)?;
    out.truncate(len);
    Ok(out)
}

fn read(state: &mut HandshakeState, msg: &[u8]) -> Result<TransportParams, HandshakeError> {
    if msg.len() > MAX_HANDSHAKE_LEN {
        return Err(HandshakeError::Malformed);
    }
    let mut payload = [0; MAX_HANDSHAKE_LEN];
    let len = state.read_message(msg, &mut payload).map_err(|e| match e {
        snow::Error::Decrypt | snow::Error::Dh => HandshakeError::Authentication,
        _ => HandshakeError::Malformed,
    })?;
    TransportParams::decode(&payload[..len])
}

fn finish(state: HandshakeState, remote_params: TransportParams) -> Result<Keys, HandshakeError> {
    Ok(Keys {
        transport: state
            .into_stateless_transport_mode()
            .map_err(|_| HandshakeError::Malformed)?,
        remote_params,
    })
}

/// The default pure-Rust primitives, with a seeded generator for ephemeral keys.
struct SeededResolver([u8; 32]);

struct SeededRng(ChaCha20Rng);

impl snow::types::Random for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(SeededRng(ChaCha20Rng::from_seed(self.0))))
    }

    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: TransportParams = TransportParams {
        stream_window: 1,
        session_window: 2,
        max_streams: 3,
        max_message: 4,
    };

    fn pair(a: u8, b: u8) -> (InitiatorStart, AwaitHello) {
        let a = Identity::from_secret_bytes([a; 32]);
        let b = Identity::from_secret_bytes([b; 32]);
        let (a, b) = if a.device_id() < b.device_id() {
            (a, b)
        } else {
            (b, a)
        };
        let Ok(Start::Initiator(i)) = start(&a, &b.device_id(), PARAMS, [1; 32]) else {
            panic!("initiator")
        };
        let Ok(Start::Responder(r)) = start(&b, &a.device_id(), PARAMS, [2; 32]) else {
            panic!("responder")
        };
        (i, r)
    }

    #[test]
    fn handshake_completes_and_keys_match() {
        let (i, r) = pair(1, 2);
        let (i, hello) = i.write_hello().unwrap();
        let (rk, reply) = r.read_hello(&hello).unwrap();
        let ik = i.read_reply(&reply).unwrap();
        assert_eq!(ik.remote_params, PARAMS);
        let mut ct = [0; 64];
        let n = ik.transport.write_message(7, b"hi", &mut ct).unwrap();
        let mut pt = [0; 64];
        let m = rk.transport.read_message(7, &ct[..n], &mut pt).unwrap();
        assert_eq!(&pt[..m], b"hi");
        assert!(rk.transport.read_message(8, &ct[..n], &mut pt).is_err());
    }

    #[test]
    fn wrong_remote_key_fails_typed() {
        let a = Identity::from_secret_bytes([1; 32]);
        let b = Identity::from_secret_bytes([2; 32]);
        let (a, b) = if a.device_id() < b.device_id() {
            (a, b)
        } else {
            (b, a)
        };
        // An impostor that responds in b's place: its key is not the one a expects.
        let impostor = (3..40u8)
            .map(|s| Identity::from_secret_bytes([s; 32]))
            .find(|c| c.device_id() > a.device_id())
            .unwrap();
        let Ok(Start::Initiator(i)) = start(&a, &b.device_id(), PARAMS, [0; 32]) else {
            panic!("initiator")
        };
        let Ok(Start::Responder(r)) = start(&impostor, &a.device_id(), PARAMS, [0; 32]) else {
            panic!("responder")
        };
        let (_, hello) = i.write_hello().unwrap();
        assert_eq!(
            r.read_hello(&hello).err(),
            Some(HandshakeError::Authentication)
        );
    }

    fn psk_pair(a: Option<&Psk>, b: Option<&Psk>) -> (InitiatorStart, AwaitHello) {
        let x = Identity::from_secret_bytes([1; 32]);
        let y = Identity::from_secret_bytes([2; 32]);
        let (x, y) = if x.device_id() < y.device_id() {
            (x, y)
        } else {
            (y, x)
        };
        let Ok(Start::Initiator(i)) = start_with_psk(&x, &y.device_id(), PARAMS, [1; 32], a) else {
            panic!("initiator")
        };
        let Ok(Start::Responder(r)) = start_with_psk(&y, &x.device_id(), PARAMS, [2; 32], b) else {
            panic!("responder")
        };
        (i, r)
    }

    #[test]
    fn matching_psks_complete_the_handshake() {
        let psk = Psk([9; 32]);
        let (i, r) = psk_pair(Some(&psk), Some(&psk));
        let (i, hello) = i.write_hello().unwrap();
        let (rk, reply) = r.read_hello(&hello).unwrap();
        let ik = i.read_reply(&reply).unwrap();
        let mut ct = [0; 64];
        let n = ik.transport.write_message(1, b"hi", &mut ct).unwrap();
        let mut pt = [0; 64];
        let m = rk.transport.read_message(1, &ct[..n], &mut pt).unwrap();
        assert_eq!(&pt[..m], b"hi");
        assert_eq!(format!("{psk:?}"), "Psk(<redacted>)");
    }

    #[test]
    fn mismatched_psks_fail_authentication() {
        let (i, r) = psk_pair(Some(&Psk([9; 32])), Some(&Psk([8; 32])));
        let (i, hello) = i.write_hello().unwrap();
        let (_, reply) = r.read_hello(&hello).unwrap();
        assert_eq!(
            i.read_reply(&reply).err(),
            Some(HandshakeError::Authentication)
        );
    }

    #[test]
    fn psk_against_no_psk_fails_either_way() {
        let (i, r) = psk_pair(Some(&Psk([9; 32])), None);
        let (_, hello) = i.write_hello().unwrap();
        assert_eq!(
            r.read_hello(&hello).err(),
            Some(HandshakeError::Authentication)
        );
        let (i, r) = psk_pair(None, Some(&Psk([9; 32])));
        let (_, hello) = i.write_hello().unwrap();
        assert_eq!(
            r.read_hello(&hello).err(),
            Some(HandshakeError::Authentication)
        );
    }

    #[test]
    fn same_device_is_refused() {
        let a = Identity::from_secret_bytes([1; 32]);
        assert!(matches!(
            start(&a, &a.device_id(), PARAMS, [0; 32]),
            Err(HandshakeError::SameDevice)
        ));
    }
}
