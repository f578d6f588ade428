//! The sans-IO core of peerpipe.
//!
//! This crate holds what both ends of every peerpipe link must agree on, with no
//! I/O, clock or random source of its own (callers pass time and randomness in):
//!
//! - [`id`]: device identities (Ed25519) and device ids in text form;
//! - [`token`]: admission tokens bound to a user, signed with HMAC-SHA256;
//! - [`signal`]: the versioned JSON signaling messages between device and server;
//! - [`lan`]: the multicast announcement of a sender on a network without a server;
//! - [`code`]: one-time codes (`7-amber-falcon`) and the SPAKE2 exchange that
//!   turns one into a session key between devices of different users;
//! - [`door`]: lasting ways in for devices of any user that hold a secret (share
//!   tickets);
//! - [`relay`]: the binary relay frame header the server forwards by;
//! - [`node_link`]: the frames between the server nodes of a cluster;
//! - [`resp`]: the Redis protocol (RESP2) the server nodes of a cluster speak;
//! - [`session`]: the end-to-end encrypted, reliable session over replaceable
//!   paths, with multiplexed streams and credit flow control (driven by the
//!   caller's clock and randomness; simulated in `tests/`);
//! - [`direct`]: the direct-path negotiation signals the session carries;
//! - [`stun`]: the STUN binding exchange that finds a device's public address;
//! - [`turn`]: a TURN client whose relayed address serves peers that cannot
//!   reach each other directly.
//!
//! ```
//! use peerpipe_proto::{id::Identity, signal::{hello_payload, ClientMessage}, token};
//!
//! let secret = [42u8; 32];
//! let tok = token::mint(&secret, "alice", 2_000_000_000).unwrap();
//! let device = Identity::from_secret_bytes([1; 32]);
//! let nonce = [7u8; 32];
//! let sig = device.sign(&hello_payload(&nonce, &tok));
//! assert!(device.device_id().verify(&hello_payload(&nonce, &tok), &sig).is_ok());
//! assert_eq!(token::verify(&secret, &tok, 1_900_000_000).unwrap().user, "alice");
//! let hello = ClientMessage::ListPeers { req: 1 }.encode();
//! assert_eq!(ClientMessage::decode(&hello).unwrap(), ClientMessage::ListPeers { req: 1 });
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod code;
pub mod direct;
pub mod door;
pub mod id;
pub mod lan;
pub mod node_link;
pub mod relay;
pub mod resp;
pub mod session;
pub mod signal;
pub mod stun;
pub mod time;
pub mod token;
pub mod turn;
