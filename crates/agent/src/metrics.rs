//! Opt-in Prometheus metrics (`--metrics-listen 127.0.0.1:PORT`): the agent opens no port
//! unless asked, and only on a loopback address unless `--metrics-allow-remote`.
//!
//! `GET /metrics` answers in the classic Prometheus text format (or OpenMetrics when the
//! scraper asks for it). Service states, restarts, the relay connection and the delivery
//! queues are read at each scrape; events and health check failures are counted as they
//! are stored, from the agent's start.

use crate::config::AgentConfig;
use crate::events::EventLog;
use crate::supervisor::Supervisor;
use anyhow::{Context, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use reeve_proto::api::ServiceState;
use reeve_proto::event::EventKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Every service state, each always reported (zero or not).
const STATES: [ServiceState; 8] = [
    ServiceState::Stopped,
    ServiceState::Starting,
    ServiceState::Running,
    ServiceState::Unhealthy,
    ServiceState::BackingOff,
    ServiceState::Stopping,
    ServiceState::Failed,
    ServiceState::Unknown,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

/// Counters fed by the event log.
#[derive(Clone, Default)]
struct EventCounters {
    events: Family<KindLabel, Counter>,
    health_failures: Family<ServiceLabel, Counter>,
}

impl EventCounters {
    fn count(&self, kind: EventKind, service: Option<&str>) {
        self.events
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
        if kind == EventKind::Unhealthy
            && let Some(s) = service
        {
            self.health_failures
                .get_or_create(&ServiceLabel { service: s.into() })
                .inc();
        }
    }
}

/// What is read at each scrape.
struct Scrape {
    sup: Arc<Supervisor>,
    node: Option<Arc<crate::node::Node>>,
    delivery: PathBuf,
    conn: Mutex<Option<rusqlite::Connection>>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

impl Scrape {
    /// (outbox, inbox) not yet done, from the node's delivery store.
    fn queues(&self) -> Option<(i64, i64)> {
        let mut guard = self.conn.lock().ok()?;
        if guard.is_none() {
            let c = rusqlite::Connection::open_with_flags(
                &self.delivery,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ok()?;
            c.busy_timeout(std::time::Duration::from_secs(2)).ok()?;
            *guard = Some(c);
        }
        let c = guard.as_ref()?;
        let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).ok();
        Some((
            count("SELECT COUNT(*) FROM outbox")?,
            count("SELECT COUNT(*) FROM inbox WHERE state != 'done'")?,
        ))
    }
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let list = self.sup.list();
        let g = ConstGauge::new(0i64);
        let mut family =
            enc.encode_descriptor("services", "Services by state", None, g.metric_type())?;
        for state in STATES {
            let n = list.iter().filter(|s| s.state == state).count() as i64;
            ConstGauge::new(n).encode(family.encode_family(&[("state", state.as_str())])?)?;
        }
        let c = ConstCounter::new(0u64);
        let mut family = enc.encode_descriptor(
            "service_restarts",
            "Restarts of a service by its buddy (since that buddy started)",
            None,
            c.metric_type(),
        )?;
        for s in &list {
            ConstCounter::new(s.restarts)
                .encode(family.encode_family(&[("service", s.name.as_str())])?)?;
        }
        if let Some(node) = &self.node {
            gauge(
                &mut enc,
                "relay_connected",
                "1 while the relay connection to the hub is up",
                i64::from(node.is_connected()),
            )?;
            if let Some((outbox, inbox)) = self.queues() {
                gauge(
                    &mut enc,
                    "outbox_pending",
                    "Messages to the hub not yet acknowledged by it",
                    outbox,
                )?;
                gauge(
                    &mut enc,
                    "inbox_pending",
                    "Requests from the hub stored and not yet finished",
                    inbox,
                )?;
            }
        }
        Ok(())
    }
}

/// The metrics listener, bound early (a bad address fails the start) and counting events
/// from then on; [`Pending::serve`] starts answering once the services are up.
pub struct Pending {
    listener: tokio::net::TcpListener,
    counters: EventCounters,
    addr: SocketAddr,
}

/// Binds the metrics listener if the settings ask for one (the address was checked when
/// the settings were resolved: loopback unless remote access is allowed).
pub async fn bind(cfg: &AgentConfig, log: &EventLog) -> Result<Option<Pending>> {
    let Some(addr) = cfg.metrics_listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let addr = listener.local_addr()?;
    let counters = EventCounters::default();
    let mut rx = log.subscribe();
    let c = counters.clone();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match rx.recv().await {
                Ok(e) => c.count(e.kind, e.service.as_deref()),
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "metrics missed events (busy)");
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
    Ok(Some(Pending {
        listener,
        counters,
        addr,
    }))
}

impl Pending {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `GET /metrics` until the agent exits.
    pub fn serve(
        self,
        sup: Arc<Supervisor>,
        node: Option<Arc<crate::node::Node>>,
        data_dir: &std::path::Path,
    ) {
        let mut r = Registry::with_prefix("reeve_agent");
        r.register(
            "events",
            "Events stored in the event log, by kind",
            self.counters.events.clone(),
        );
        r.register(
            "health_check_failures",
            "Times a service's health check failed its threshold in a row (it turned unhealthy)",
            self.counters.health_failures.clone(),
        );
        r.register_collector(Box::new(Scrape {
            sup,
            node,
            delivery: data_dir.join("delivery.db"),
            conn: Mutex::new(None),
        }));
        let registry = Arc::new(r);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let registry = registry.clone();
                async move { answer(&registry, &headers).await }
            }),
        );
        tracing::info!(addr = %self.addr, "metrics on http://{}/metrics", self.addr);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(self.listener, app).await {
                tracing::warn!("metrics listener failed: {e}");
            }
        });
    }
}

async fn answer(
    registry: &Arc<Registry>,
    headers: &axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let reg = registry.clone();
    // The scrape reads SQLite: off the runtime's one thread.
    let text = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).map(|_| out)
    })
    .await;
    match text {
        Ok(Ok(t)) => {
            let (body, ct) = if openmetrics {
                (
                    t,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (classic(&t), "text/plain; version=0.0.4; charset=utf-8")
            };
            ([(header::CONTENT_TYPE, HeaderValue::from_static(ct))], body).into_response()
        }
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        )
            .into_response(),
    }
}

/// Rewrites OpenMetrics text (what prometheus-client writes) into the classic Prometheus
/// text format: a counter's family takes its samples' `_total` name, and the `# EOF` and
/// `# UNIT` lines go. (The hub has the same function; the agent does not link the hub.)
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
        match ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p))
        {
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
    fn events_are_counted_by_kind_and_unhealthy_by_service() {
        let c = EventCounters::default();
        c.count(EventKind::Running, Some("web"));
        c.count(EventKind::Unhealthy, Some("web"));
        c.count(EventKind::Unhealthy, Some("web"));
        let mut r = Registry::with_prefix("reeve_agent");
        r.register("events", "Events", c.events.clone());
        r.register(
            "health_check_failures",
            "Failures",
            c.health_failures.clone(),
        );
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &r).expect("encode");
        let text = classic(&om);
        assert!(
            text.contains("# TYPE reeve_agent_events_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("reeve_agent_events_total{kind=\"unhealthy\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("reeve_agent_health_check_failures_total{service=\"web\"} 2\n"),
            "{text}"
        );
        assert!(!text.contains("EOF"));
    }
}
