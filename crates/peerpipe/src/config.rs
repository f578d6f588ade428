//! A bound node's settings, shared by the node, its actor, its link and its
//! connections.

use std::time::Duration;

use peerpipe_proto::id::Identity;
use peerpipe_proto::signal::IceServer;

use crate::direct::PathPolicy;

/// Settings of a bound node.
#[derive(Debug)]
pub(crate) struct Config {
    pub server: String,
    /// Empty: the node is anonymous.
    pub token: String,
    pub identity: Identity,
    pub label: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub confirm_timeout: Duration,
    pub max_message_size: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub slow_threshold: Duration,
    pub idle_timeout: Duration,
    pub path_policy: PathPolicy,
    /// Whether direct paths may be QUIC (between native peers).
    pub quic: bool,
    /// STUN/TURN servers to use instead of the ones the server announces.
    pub ice_servers: Option<Vec<IceServer>>,
    /// TLS to a `wss://` server; `None` for `ws://`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

#[cfg(test)]
impl Config {
    /// Short time-outs and a fixed identity, for unit tests.
    pub(crate) fn for_tests() -> Self {
        Self {
            server: String::new(),
            token: String::new(),
            identity: Identity::from_secret_bytes([1; 32]),
            label: String::new(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(2),
            max_message_size: 1 << 20,
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            slow_threshold: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            path_policy: PathPolicy::Any,
            quic: true,
            ice_servers: None,
            tls: None,
        }
    }
}
