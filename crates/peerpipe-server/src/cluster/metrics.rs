//! What an operator of a cluster watches: Redis's latency and errors, the
//! frames crossing between nodes, the nodes and stand-ins this node knows.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the Redis latency histogram, in seconds.
const BUCKETS: [f64; 7] = [0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1.0];

#[derive(Debug, Default)]
pub(crate) struct ClusterMetrics {
    redis_commands: AtomicU64,
    redis_errors: AtomicU64,
    redis_micros: AtomicU64,
    redis_buckets: [AtomicU64; BUCKETS.len()],
    forwarded_frames: AtomicU64,
    forwarded_bytes: AtomicU64,
    received_frames: AtomicU64,
    links_refused: AtomicU64,
    nodes_died: AtomicU64,
}

impl ClusterMetrics {
    pub(crate) fn redis(&self, took: Duration, ok: bool) {
        self.redis_commands.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.redis_errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.redis_micros.fetch_add(micros, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, n) in BUCKETS.iter().zip(&self.redis_buckets) {
            if secs <= *bound {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn forwarded(&self, bytes: usize) {
        self.forwarded_frames.fetch_add(1, Ordering::Relaxed);
        self.forwarded_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self) {
        self.received_frames.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn link_refused(&self) {
        self.links_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn node_died(&self) {
        self.nodes_died.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the Prometheus text of these metrics.
    pub(crate) fn render(&self, out: &mut String, node: u32, nodes: usize, stand_ins: usize) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        line(
            "peerpipe_cluster_node_id",
            "gauge",
            "This node's id in the cluster.",
            node.to_string(),
        );
        line(
            "peerpipe_cluster_nodes",
            "gauge",
            "Other nodes this node sees alive.",
            nodes.to_string(),
        );
        line(
            "peerpipe_cluster_remote_connections",
            "gauge",
            "Connections of other nodes this node stands in for (in presence and sessions).",
            stand_ins.to_string(),
        );
        line(
            "peerpipe_cluster_forwarded_frames_total",
            "counter",
            "Relayed frames sent to other nodes.",
            get(&self.forwarded_frames).to_string(),
        );
        line(
            "peerpipe_cluster_forwarded_bytes_total",
            "counter",
            "Bytes of relayed frames sent to other nodes.",
            get(&self.forwarded_bytes).to_string(),
        );
        line(
            "peerpipe_cluster_received_frames_total",
            "counter",
            "Link frames received from other nodes.",
            get(&self.received_frames).to_string(),
        );
        line(
            "peerpipe_cluster_links_refused_total",
            "counter",
            "Incoming links whose proof of the shared secret failed.",
            get(&self.links_refused).to_string(),
        );
        line(
            "peerpipe_cluster_nodes_died_total",
            "counter",
            "Nodes found gone (their devices went offline here).",
            get(&self.nodes_died).to_string(),
        );
        line(
            "peerpipe_cluster_redis_errors_total",
            "counter",
            "Redis commands that failed (unreachable, timed out, refused).",
            get(&self.redis_errors).to_string(),
        );
        let name = "peerpipe_cluster_redis_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of Redis commands.\n# TYPE {name} histogram"
        );
        for (bound, n) in BUCKETS.iter().zip(&self.redis_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(n));
        }
        let count = get(&self.redis_commands);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            get(&self.redis_micros) as f64 / 1e6
        );
    }
}
