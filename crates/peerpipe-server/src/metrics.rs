//! Counters and gauges, kept in atomics and rendered as Prometheus text by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use peerpipe_proto::signal::ErrorCode;

/// Every error code the server can send, in the order the metrics list them.
const CODES: [ErrorCode; ErrorCode::ALL.len()] = ErrorCode::ALL;

/// A snapshot of the server's counters, from [`Server::stats`](crate::Server::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// WebSocket connections open now (admitted or still in the handshake).
    pub connections: u64,
    /// Devices admitted and online now.
    pub devices_online: u64,
    /// Sessions now, pending and established.
    pub sessions: u64,
    /// Relayed bytes since start (whole binary frames, relay header included).
    pub relay_bytes: u64,
    /// Relayed binary frames since start.
    pub relay_frames: u64,
    /// Sessions ended since start because their relayed frames overflowed the
    /// receiver's queue ([`CloseReason::RelayOverflow`](peerpipe_proto::signal::CloseReason::RelayOverflow)).
    pub relay_overflows: u64,
    /// Error frames sent since start, by [`ErrorCode::as_str`]; codes never sent are absent.
    pub errors: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) connections: AtomicU64,
    connections_total: AtomicU64,
    relay_bytes: AtomicU64,
    relay_frames: AtomicU64,
    relay_overflows: AtomicU64,
    errors: [AtomicU64; CODES.len()],
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the number of connections left open.
    pub(crate) fn connection_closed(&self) -> u64 {
        self.connections.fetch_sub(1, Ordering::AcqRel) - 1
    }

    pub(crate) fn relayed(&self, bytes: usize) {
        self.relay_frames.fetch_add(1, Ordering::Relaxed);
        self.relay_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn relay_overflow(&self) {
        self.relay_overflows.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        let i = CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(CODES.len() - 1);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, devices_online: u64, sessions: u64) -> Stats {
        Stats {
            connections: self.connections.load(Ordering::Relaxed),
            devices_online,
            sessions,
            relay_bytes: self.relay_bytes.load(Ordering::Relaxed),
            relay_frames: self.relay_frames.load(Ordering::Relaxed),
            relay_overflows: self.relay_overflows.load(Ordering::Relaxed),
            errors: CODES
                .iter()
                .zip(&self.errors)
                .map(|(c, n)| (c.as_str(), n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// The Prometheus text exposition of the metrics.
    pub(crate) fn render(&self, devices_online: u64, sessions: u64) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        metric(
            "peerpipe_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections.load(Ordering::Relaxed),
        );
        metric(
            "peerpipe_devices_online",
            "gauge",
            "Devices admitted and online.",
            devices_online,
        );
        metric(
            "peerpipe_sessions",
            "gauge",
            "Sessions, pending and established.",
            sessions,
        );
        metric(
            "peerpipe_connections_total",
            "counter",
            "WebSocket connections accepted since start.",
            self.connections_total.load(Ordering::Relaxed),
        );
        metric(
            "peerpipe_relay_bytes_total",
            "counter",
            "Relayed bytes (whole binary frames).",
            self.relay_bytes.load(Ordering::Relaxed),
        );
        metric(
            "peerpipe_relay_frames_total",
            "counter",
            "Relayed binary frames.",
            self.relay_frames.load(Ordering::Relaxed),
        );
        metric(
            "peerpipe_relay_overflows_total",
            "counter",
            "Sessions ended because their relayed frames overflowed the receiver's queue.",
            self.relay_overflows.load(Ordering::Relaxed),
        );
        out.push_str("# HELP peerpipe_errors_total Error frames sent, by code.\n");
        out.push_str("# TYPE peerpipe_errors_total counter\n");
        for (code, n) in CODES.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "peerpipe_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                n.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_metric() {
        let m = Metrics::default();
        m.connection_opened();
        m.relayed(100);
        m.error(ErrorCode::NotFound);
        let text = m.render(2, 3);
        assert!(text.contains("peerpipe_connections 1\n"));
        assert!(text.contains("peerpipe_devices_online 2\n"));
        assert!(text.contains("peerpipe_sessions 3\n"));
        assert!(text.contains("peerpipe_relay_bytes_total 100\n"));
        assert!(text.contains("peerpipe_errors_total{code=\"not_found\"} 1\n"));
        let stats = m.snapshot(2, 3);
        assert_eq!(stats.errors.get("not_found"), Some(&1));
        assert_eq!(stats.errors.len(), 1);
    }
}
