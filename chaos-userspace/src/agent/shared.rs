//! What the agent's request handlers and its controller share: the fault service, the token,
//! and the agent's own metrics.
use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::{service::FaultService, telemetry::metrics::FaultMetrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CodeLabel {
    pub(super) code: String,
}

/// What every request handler shares.
pub struct Shared {
    pub(super) service: FaultService,
    pub(super) token: Option<Vec<u8>>,
    pub(super) fault_metrics: Arc<FaultMetrics>,
    pub(super) requests: Family<CodeLabel, Counter>,
    pub(super) active: Gauge,
}

impl Shared {
    pub(super) fn new(service: FaultService, token: Option<Vec<u8>>) -> Self {
        Self {
            service,
            token,
            fault_metrics: Arc::new(FaultMetrics::default()),
            requests: Family::default(),
            active: Gauge::default(),
        }
    }

    /// After every change: the metrics' view of the faults.
    /// Every fault's counters, read from the kernel: once a second (a scrape is at most that
    /// far behind), not on every arm or stop, whose cost would grow with the faults armed.
    pub(super) async fn refresh_metrics(&self) {
        self.fault_metrics.update(self.service.samples().await);
        self.refresh_active().await;
    }

    /// The armed-faults gauge, after an arm or a stop.
    pub(super) async fn refresh_active(&self) {
        self.active.set(self.service.active().await as i64);
    }
}
