//! The hub's Prometheus metrics (`GET /metrics`, served on the TLS and the plain-HTTP
//! listeners without a token: it holds only counts, never a node's or operator's name).
//!
//! Counters are kept in memory from the hub's start; the fleet's gauges (nodes, messages by
//! state) are read from the database at each scrape. Names follow the Prometheus
//! conventions: `reeve_hub_…`, counters end in `_total`. The answer is the classic text
//! format (what `promtool check metrics` and every scraper read), or OpenMetrics when the
//! scraper asks for it (`Accept: application/openmetrics-text`).

use crate::Hub;
use anyhow::Result;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The states a message can be in (each always reported, zero or not).
pub const MESSAGE_STATES: [&str; 5] = ["accepted", "delivered", "replied", "expired", "purged"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// The hub's metrics.
pub struct Metrics {
    registry: Registry,
    nodes_connected: Gauge,
    nodes_enrolled: Gauge,
    messages: Family<StateLabel, Gauge>,
    messages_accepted: Counter,
    messages_delivered: Counter,
    relay_frames: Family<DirectionLabel, Counter>,
    refusals: Family<KindLabel, Counter>,
    dead_letters: Counter,
    joins: Family<OutcomeLabel, Counter>,
    api_requests: Family<RequestLabels, Counter>,
    sse_streams: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric (all start at zero).
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("reeve_hub");
        let m = Self {
            nodes_connected: Gauge::default(),
            nodes_enrolled: Gauge::default(),
            messages: Family::default(),
            messages_accepted: Counter::default(),
            messages_delivered: Counter::default(),
            relay_frames: Family::default(),
            refusals: Family::default(),
            dead_letters: Counter::default(),
            joins: Family::default(),
            api_requests: Family::default(),
            sse_streams: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "nodes_connected",
            "Nodes with a live relay connection",
            m.nodes_connected.clone(),
        );
        r.register(
            "nodes_enrolled",
            "Nodes enrolled at the hub",
            m.nodes_enrolled.clone(),
        );
        r.register(
            "messages",
            "Messages the hub holds, by state (accepted, delivered, replied, expired)",
            m.messages.clone(),
        );
        r.register(
            "messages_accepted",
            "Messages accepted into a node's stream (durable in the outbox)",
            m.messages_accepted.clone(),
        );
        r.register(
            "messages_delivered",
            "Messages a node acknowledged (stored in its inbox)",
            m.messages_delivered.clone(),
        );
        r.register(
            "relay_frames",
            "WebSocket frames on the relay, by direction (in: from nodes, out: to nodes)",
            m.relay_frames.clone(),
        );
        r.register(
            "refusals",
            "Refused relay connections and frames, by kind (refused, clone, refused_by_node)",
            m.refusals.clone(),
        );
        r.register(
            "dead_letters",
            "Messages that expired before delivery",
            m.dead_letters.clone(),
        );
        r.register(
            "join_attempts",
            "Node enrolments, by outcome (enrolled, refused, invalid)",
            m.joins.clone(),
        );
        r.register(
            "api_requests",
            "HTTP requests, by method, route template and status",
            m.api_requests.clone(),
        );
        r.register(
            "sse_streams_open",
            "Open live event streams (GET /api/v1/stream)",
            m.sse_streams.clone(),
        );
        for d in ["in", "out"] {
            let _ = m
                .relay_frames
                .get_or_create(&DirectionLabel { direction: d });
        }
        for o in ["enrolled", "refused", "invalid"] {
            let _ = m.joins.get_or_create(&OutcomeLabel { outcome: o });
        }
        Self { registry: r, ..m }
    }

    /// A message was accepted into a node's stream.
    pub fn message_accepted(&self) {
        self.messages_accepted.inc();
    }

    /// A node's ack marked `n` messages delivered.
    pub fn delivered(&self, n: u64) {
        self.messages_delivered.inc_by(n);
    }

    /// A frame arrived on a relay connection.
    pub fn frame_in(&self) {
        self.relay_frames
            .get_or_create(&DirectionLabel { direction: "in" })
            .inc();
    }

    /// A frame was sent on a relay connection.
    pub fn frame_out(&self) {
        self.relay_frames
            .get_or_create(&DirectionLabel { direction: "out" })
            .inc();
    }

    /// A relay connection or frame was refused; `kind` is the error log's kind.
    pub fn refusal(&self, kind: &str) {
        self.refusals
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// `n` messages were dead-lettered.
    pub fn dead_lettered(&self, n: u64) {
        self.dead_letters.inc_by(n);
    }

    /// A join attempt ended: `enrolled`, `refused` (token or name) or `invalid` (request).
    pub fn join(&self, outcome: &'static str) {
        self.joins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// An HTTP request was answered.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.api_requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                route: route.into(),
                status,
            })
            .inc();
    }

    /// A live stream opened; the guard counts it until dropped.
    pub fn stream_opened(&self) -> StreamGuard {
        self.sse_streams.inc();
        StreamGuard(self.sse_streams.clone())
    }

    /// The exposition: gauges refreshed from the hub's state, then every metric.
    /// `openmetrics` selects the OpenMetrics text format, else the classic one.
    pub fn render(&self, hub: &Hub, openmetrics: bool) -> Result<String> {
        let connected = hub.live.lock().map_or(0, |l| l.len());
        let (enrolled, counts) = hub.read(|f| Ok((f.count_nodes(None)?, f.message_counts()?)))?;
        self.nodes_connected.set(connected as i64);
        self.nodes_enrolled.set(enrolled as i64);
        for state in MESSAGE_STATES {
            let n = counts
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.messages
                .get_or_create(&StateLabel { state })
                .set(n as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(if openmetrics { out } else { classic(&out) })
    }
}

/// Counts one open live stream while it lives.
pub struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text (what prometheus-client writes) into the classic Prometheus
/// text format: a counter's family takes its samples' `_total` name, and the `# EOF` and
/// `# UNIT` lines go. Samples are the same in both.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match meta {
            Some(p) => {
                let rest = &line[p.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(p);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name_in_the_classic_format() {
        let m = Metrics::new();
        m.message_accepted();
        m.request("GET", "/api/v1/nodes", 200);
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &m.registry).expect("encode");
        let text = classic(&om);
        assert!(
            text.contains("# TYPE reeve_hub_messages_accepted_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("reeve_hub_messages_accepted_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "reeve_hub_api_requests_total{method=\"GET\",route=\"/api/v1/nodes\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE reeve_hub_sse_streams_open gauge\n"));
        assert!(!text.contains("# EOF"));
        // Every family has HELP and TYPE under the name of its samples.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().expect("name");
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE line"
            );
        }
    }

    #[test]
    fn a_stream_guard_counts_while_it_lives() {
        let m = Metrics::new();
        let g = m.stream_opened();
        assert_eq!(m.sse_streams.get(), 1);
        drop(g);
        assert_eq!(m.sse_streams.get(), 0);
    }
}
