//! drop, reset, delay, corrupt and the DNS faults at the TC layer, on an interface, a pod's host-side veth, or a cgroup's packets
//! on an interface: tcx links where the kernel has them (6.6+), clsact filters otherwise.
use chaos_common::{FaultKind, PacketParams, flags, loss_model};

use crate::filters::Filters;
use crate::{
    error::{ChaosError, Result},
    filters::{Cidr, Direction, PortRange},
    kernel::mechanism::Mechanism,
    kernel::programs::{self, ProgramSpec},
    net::interface::Hooks,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketAction {
    Drop,
    Reset,
    /// Egress only: the departure time moves `delay` (± jitter) later, under fq.
    Delay(Timing),
    /// One random payload bit flips; with `fix_checksum` the L4 checksum follows.
    Corrupt {
        fix_checksum: bool,
    },
    /// DNS queries of the fault's names get an answer with this response code, or with `None`
    /// are lost.
    DnsError {
        rcode: Option<u32>,
    },
    /// Egress only: a copy of the packet leaves just before it.
    Duplicate,
    /// Egress only: matching packets, all flows together, leave no faster than the rate.
    Bandwidth {
        bytes_per_sec: u64,
        burst_bytes: u64,
    },
    /// DNS queries of the fault's names leave `delay` (± jitter) later, under fq.
    DnsDelay(Timing),
}

/// How much later delay and dns-delay send a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub delay_ns: u64,
    /// Uniform: the half-width; normal and pareto: the scale.
    pub jitter_ns: u64,
    pub distribution: Distribution,
}

impl Timing {
    /// The fault's delay, jitter and distribution (uniform unless given).
    pub fn of(fault: &chaos_model::Fault) -> Self {
        Timing {
            delay_ns: fault.delay.map_or(0, |d| d.0.as_nanos() as u64),
            jitter_ns: fault.jitter.map_or(0, |j| j.0.as_nanos() as u64),
            distribution: fault.distribution.unwrap_or(Distribution::Uniform),
        }
    }
}

impl PacketAction {
    /// Why the action works only as packets leave an interface, for those that do: departure
    /// times are honoured on egress only, and a copy's second pass is synchronous only there.
    pub fn egress_only(&self) -> Option<&'static str> {
        match self {
            PacketAction::Delay(_) => {
                Some("delay can only hold packets back as they leave an interface")
            }
            PacketAction::DnsDelay(_) => {
                Some("dns-delay holds queries back as they leave an interface, under fq")
            }
            PacketAction::Bandwidth { .. } => {
                Some("bandwidth paces packets as they leave an interface, under fq")
            }
            PacketAction::Duplicate => {
                Some("duplicate sends its copies as packets leave an interface")
            }
            _ => None,
        }
    }

    /// delay and dns-delay: their timing.
    pub fn delay(&self) -> Option<Timing> {
        match *self {
            PacketAction::Delay(timing) | PacketAction::DnsDelay(timing) => Some(timing),
            _ => None,
        }
    }
}

pub use chaos_model::{Distribution, LossModel};

/// The kernel's `jitter` value of a distribution.
pub fn distribution_value(distribution: Distribution) -> u32 {
    match distribution {
        Distribution::Uniform => chaos_common::jitter::UNIFORM,
        Distribution::Normal => chaos_common::jitter::NORMAL,
        Distribution::Pareto => chaos_common::jitter::PARETO,
    }
}

/// The kernel's distribution tables, one after the other in `jitter` order: each entry is a
/// quantile at (i + 1/2) / DIST_TABLE_SIZE in units of jitter / DIST_SCALE, so a uniformly
/// random index draws from the distribution, as netem's tables do.
pub fn distribution_tables() -> Vec<i32> {
    use statrs::distribution::{ContinuousCDF as _, Normal};
    let size = chaos_common::DIST_TABLE_SIZE;
    let scale = f64::from(chaos_common::DIST_SCALE);
    let quantile = |i: u32| (f64::from(i) + 0.5) / f64::from(size);
    let normal = Normal::standard();
    let normal_table = (0..size).map(|i| normal.inverse_cdf(quantile(i)));
    // netem's pareto table: shape 3 (mean 1.5), centred on its mean and scaled by 4/3.
    let pareto_table = (0..size).map(|i| (quantile(i).powf(-1.0 / 3.0) - 1.5) * 4.0 / 3.0);
    normal_table
        .chain(pareto_table)
        .map(|units| (units * scale).round() as i32)
        .collect()
}

/// A fraction as a u32 threshold against a uniform u32 (1.0 saturates to u32::MAX).
fn threshold(fraction: f64) -> u32 {
    (fraction * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

/// The kernel's parameters of a loss model.
fn loss_params(loss: LossModel) -> PacketParams {
    let mut params = PacketParams::default();
    match loss {
        LossModel::Random => params.loss_model = loss_model::RANDOM,
        LossModel::EveryNth(n) => {
            params.loss_model = loss_model::EVERY_NTH;
            params.loss_n = n;
        }
        LossModel::First(n) => {
            params.loss_model = loss_model::FIRST_N;
            params.loss_n = n;
        }
        LossModel::GilbertElliott { p, r, h, k } => {
            params.loss_model = loss_model::GILBERT_ELLIOTT;
            params.ge_p = threshold(p);
            params.ge_r = threshold(r);
            params.ge_h = threshold(h);
            params.ge_k = threshold(k);
        }
    }
    params
}

#[derive(Clone, Debug, PartialEq)]
pub struct PacketFault {
    pub action: PacketAction,
    pub direction: Direction,
    /// `peers` are destination CIDRs and `ports` destination ports here.
    pub filters: Filters,
    pub sources: Vec<Cidr>,
    pub source_ports: Vec<PortRange>,
    pub tcp_flags: u32,
    pub loss: LossModel,
    pub seed: Option<u64>,
    /// Forced by `--mechanism`: tcx or clsact.
    pub mechanism: Option<Mechanism>,
    /// DNS faults: the queries they hit.
    pub dns: Option<crate::faults::dns::DnsQuery>,
}

impl PacketFault {
    pub fn kind(&self) -> FaultKind {
        match self.action {
            PacketAction::Drop => FaultKind::Drop,
            PacketAction::Reset => FaultKind::Reset,
            PacketAction::Delay(_) => FaultKind::Delay,
            PacketAction::Corrupt { .. } => FaultKind::Corrupt,
            PacketAction::DnsError { .. } => FaultKind::DnsError,
            PacketAction::DnsDelay(_) => FaultKind::DnsDelay,
            PacketAction::Duplicate => FaultKind::Duplicate,
            PacketAction::Bandwidth { .. } => FaultKind::Bandwidth,
        }
    }

    /// tcx first: its links are owned by the process, so even SIGKILL leaves nothing behind.
    pub const MECHANISMS: &'static [Mechanism] = &[Mechanism::Tcx, Mechanism::TcClsact];

    pub fn programs(hooks: Hooks) -> &'static [&'static ProgramSpec] {
        match (hooks.egress, hooks.ingress) {
            (true, true) => &[&programs::TC_EGRESS, &programs::TC_INGRESS],
            (false, true) => &[&programs::TC_INGRESS],
            _ => &[&programs::TC_EGRESS],
        }
    }

    /// Bits and parameters beyond the shared filters.
    pub fn apply(&self, config: &mut chaos_common::FaultConfig, hooks: Hooks) {
        config.packet = loss_params(self.loss);
        config.packet.tcp_flags = self.tcp_flags;
        if let Some(Timing {
            delay_ns,
            jitter_ns,
            distribution,
        }) = self.action.delay()
        {
            config.packet.delay_ns = delay_ns;
            config.packet.jitter_ns = jitter_ns;
            config.packet.distribution = distribution_value(distribution);
            // Packets of one flow delayed by different amounts (or not at all) would leave out
            // of order under fq: the program then keeps each flow's departures in order.
            let uneven = jitter_ns > 0
                || config.probability < chaos_common::PROBABILITY_ONE
                || self.loss != LossModel::Random;
            if uneven {
                config.flags |= flags::KEEP_ORDER;
            }
        }
        config.flags &= !(flags::EGRESS | flags::INGRESS);
        if hooks.egress {
            config.flags |= flags::EGRESS;
        }
        if hooks.ingress {
            config.flags |= flags::INGRESS;
        }
        if !self.sources.is_empty() {
            config.flags |= flags::MATCH_SRC;
        }
        if !self.source_ports.is_empty() {
            config.flags |= flags::MATCH_SPORT;
        }
        if self.tcp_flags != 0 {
            config.flags |= flags::MATCH_TCP_FLAGS;
        }
        if self.action == (PacketAction::Corrupt { fix_checksum: true }) {
            config.flags |= flags::FIX_CHECKSUM;
        }
        if let PacketAction::Bandwidth {
            bytes_per_sec,
            burst_bytes,
        } = self.action
        {
            let rate = bytes_per_sec.max(1);
            config.packet.rate_bytes_per_sec = rate;
            config.packet.burst_ns =
                (u128::from(burst_bytes) * 1_000_000_000 / u128::from(rate)) as u64;
        }
        if let PacketAction::DnsError { rcode } = self.action {
            match rcode {
                Some(rcode) => config.packet.dns_rcode = rcode,
                None => config.flags |= flags::DNS_DROP,
            }
        }
        if let Some(dns) = &self.dns {
            config.packet.dns_qtype = dns.qtype;
        }
        if let Some(seed) = self.seed {
            config.flags |= flags::SEEDED;
            config.packet.seed = seed;
        }
    }
}

/// The TC rules of a run share one object: their destination index and filter tries must fit
/// its maps. Checked while nothing is attached, so a run over the limits changes nothing.
pub fn check_capacity<'a>(rules: impl Iterator<Item = &'a PacketFault> + Clone) -> Result<()> {
    crate::faults::dns::check_capacity(rules.clone().filter_map(|fault| fault.dns.as_ref()))?;
    let count = rules.clone().count();
    if count > chaos_common::MAX_TC_RULES as usize {
        return Err(ChaosError::input(
            "FILE",
            format!("{count} TC faults in one run"),
            format!("at most {}", chaos_common::MAX_TC_RULES),
        ));
    }
    let destinations: Vec<Vec<crate::filters::Cidr>> = rules
        .clone()
        .map(|fault| fault.filters.peers.clone())
        .collect();
    let index = crate::kernel::rule_index::destination_index(&destinations)?;
    if index.len() > chaos_common::MAX_CIDRS as usize {
        return Err(ChaosError::input(
            "match.dst",
            format!(
                "{} distinct destinations over the run's TC faults",
                index.len()
            ),
            format!("at most {}", chaos_common::MAX_CIDRS),
        ));
    }
    let filter_entries: usize = rules
        .map(|fault| {
            let ports = fault.filters.ports.iter().chain(&fault.source_ports);
            fault.sources.len() + ports.map(|range| range.prefixes().len()).sum::<usize>()
        })
        .sum();
    if filter_entries > chaos_common::MAX_FILTER_ENTRIES as usize {
        return Err(ChaosError::input(
            "match.src",
            format!("{filter_entries} source CIDRs and port blocks over the run's TC faults"),
            format!("at most {}", chaos_common::MAX_FILTER_ENTRIES),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsing is the model's (tested there); here, the kernel's thresholds.
    #[test]
    fn loss_params_are_kernel_thresholds() {
        let params = loss_params(LossModel::GilbertElliott {
            p: 0.5,
            r: 1.0,
            h: 0.0,
            k: 1.0,
        });
        assert_eq!(
            (params.ge_p, params.ge_r, params.ge_h, params.ge_k),
            (1 << 31, u32::MAX, 0, u32::MAX)
        );
    }

    #[test]
    fn distribution_tables_have_the_right_moments() {
        let tables = distribution_tables();
        let size = chaos_common::DIST_TABLE_SIZE as usize;
        assert_eq!(tables.len(), size * chaos_common::jitter::TABLES as usize);
        let scale = f64::from(chaos_common::DIST_SCALE);
        let moments = |table: &[i32]| {
            let values: Vec<f64> = table.iter().map(|&v| f64::from(v) / scale).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
            (mean, var.sqrt())
        };
        let (mean, sd) = moments(&tables[..size]);
        assert!(
            mean.abs() < 0.001 && (sd - 1.0).abs() < 0.01,
            "normal {mean} {sd}"
        );
        let (mean, _) = moments(&tables[size..]);
        let pareto = &tables[size..];
        assert!(mean.abs() < 0.05, "pareto is centred on its mean: {mean}");
        assert!(
            *pareto.iter().min().unwrap() >= -2731,
            "never earlier than 2/3 jitter"
        );
        assert!(*pareto.iter().max().unwrap() > 20 * 4096, "a heavy tail");
    }
}
