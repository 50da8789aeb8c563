//! Prometheus metrics of a run (`--metrics ADDR`): each fault's counters, as the kernel counts
//! them, served in the OpenMetrics text format at `http://ADDR/metrics` (axum) while the run or
//! the agent lasts.
//!
//! The counters live in per-CPU maps owned by the runner; it samples them once per second (and
//! when a fault ends) into [`FaultMetrics`], which a scrape reads. A scrape is therefore at most
//! a second behind the summary's exact figures.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    error::{ChaosError, Result},
    wire::Counters,
};

/// One fault as the metrics show it.
#[derive(Debug, Clone)]
pub struct FaultSample {
    pub fault_id: u32,
    pub fault: String,
    pub mechanism: &'static str,
    /// The cgroup path or interface names.
    pub scope: String,
    pub armed: bool,
    /// How long it has run (status lines).
    pub age: std::time::Duration,
    pub counters: Counters,
}

/// The latest sample of every fault of the run.
#[derive(Debug, Default)]
pub struct FaultMetrics {
    samples: Mutex<Vec<FaultSample>>,
}

impl FaultMetrics {
    pub fn update(&self, samples: Vec<FaultSample>) {
        if let Ok(mut current) = self.samples.lock() {
            *current = samples;
        }
    }

    fn snapshot(&self) -> Vec<FaultSample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

type Value = fn(&FaultSample) -> u64;

/// The counter families, one series per fault.
const COUNTERS: &[(&str, &str, Value)] = &[
    (
        "chaos_fault_matched",
        "Operations or packets that passed the fault's filters.",
        |s| s.counters.matched,
    ),
    (
        "chaos_fault_injected",
        "Operations or packets the fault was applied to.",
        |s| s.counters.injected,
    ),
    (
        "chaos_fault_events_sampled_out",
        "Injections without an event because of the per-CPU event budget.",
        |s| s.counters.events_sampled_out,
    ),
    (
        "chaos_fault_events_lost",
        "Injections whose event was lost to a full ring buffer.",
        |s| s.counters.events_lost,
    ),
];

impl Collector for FaultMetrics {
    fn encode(
        &self,
        mut encoder: DescriptorEncoder<'_>,
    ) -> std::result::Result<(), std::fmt::Error> {
        let samples = self.snapshot();
        let labels = |s: &FaultSample| {
            [
                ("fault_id", s.fault_id.to_string()),
                ("fault", s.fault.to_string()),
                ("mechanism", s.mechanism.to_string()),
                ("scope", s.scope.clone()),
            ]
        };
        for (name, help, value) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for sample in &samples {
                let labels = labels(sample);
                ConstCounter::new(value(sample)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut armed = encoder.encode_descriptor(
            "chaos_fault_armed",
            "1 while the fault is armed, 0 after its deadline.",
            None,
            MetricType::Gauge,
        )?;
        for sample in &samples {
            let labels = labels(sample);
            ConstGauge::new(i64::from(sample.armed)).encode(armed.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The metrics endpoint's socket, bound before anything is attached so a bad address fails the
/// run with exit 2 and nothing to undo.
pub struct MetricsListener {
    listener: std::net::TcpListener,
}

impl MetricsListener {
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let listener = std::net::TcpListener::bind(addr).map_err(|err| {
            ChaosError::input(
                "--metrics",
                format!("cannot listen on {addr}: {err}"),
                "a free local address such as 127.0.0.1:9464 or [::]:9464",
            )
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|err| ChaosError::io("the metrics socket", err))?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves `registry` at `/metrics` (and `/`), and `beside`'s routes, until the runtime
    /// ends; other paths get 404.
    pub fn serve(self, registry: Arc<Registry>, beside: axum::Router) -> Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|err| ChaosError::io("the metrics socket", err))?;
        let app = router(registry).merge(beside);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(())
    }
}

/// A registry with every fault's series.
pub fn registry_of(metrics: Arc<FaultMetrics>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(metrics));
    registry
}

/// `GET /metrics` (and `/`): the registry in the OpenMetrics text format.
pub fn router(registry: Arc<Registry>) -> axum::Router {
    let scrape = move || {
        let registry = Arc::clone(&registry);
        async move {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &registry) {
                Ok(()) => (
                    axum::http::StatusCode::OK,
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                ),
                Err(_) => (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    [(axum::http::header::CONTENT_TYPE, "text/plain")],
                    String::new(),
                ),
            }
        }
    };
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape.clone()))
        .route("/", axum::routing::get(scrape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_is_a_series_of_each_family() {
        let metrics = Arc::new(FaultMetrics::default());
        metrics.update(vec![FaultSample {
            fault_id: 3,
            fault: "connect-error".into(),
            mechanism: "cgroup-sockaddr",
            scope: "/sys/fs/cgroup/api".into(),
            armed: true,
            age: std::time::Duration::from_secs(3),
            counters: Counters {
                matched: 10,
                injected: 4,
                events_sampled_out: 1,
                events_lost: 0,
            },
        }]);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(metrics));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let labels = r#"fault_id="3",fault="connect-error",mechanism="cgroup-sockaddr",scope="/sys/fs/cgroup/api""#;
        for line in [
            format!("chaos_fault_matched_total{{{labels}}} 10"),
            format!("chaos_fault_injected_total{{{labels}}} 4"),
            format!("chaos_fault_events_sampled_out_total{{{labels}}} 1"),
            format!("chaos_fault_armed{{{labels}}} 1"),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
}
