//! drop and reset at the TC layer, on an interface, a pod's host-side veth, or a cgroup's packets
//! on an interface: tcx links where the kernel has them (6.6+), clsact filters otherwise.
use std::str::FromStr;

use chaos_common::{FaultKind, PacketParams, flags, loss_model};

use super::Filters;
use crate::{
    filters::{Cidr, Direction, PortRange},
    interface::Hooks,
    mechanism::Mechanism,
    programs::{self, ProgramSpec},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketAction {
    Drop,
    Reset,
    /// Egress only: the departure time moves `delay` (± jitter) later, under fq.
    Delay {
        delay_ns: u64,
        jitter_ns: u64,
        distribution: Distribution,
    },
    /// One random payload bit flips; with `fix_checksum` the L4 checksum follows.
    Corrupt {
        fix_checksum: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    /// Uniform in [delay - jitter, delay + jitter].
    Uniform,
    /// Normal around delay with standard deviation jitter.
    Normal,
    /// netem's pareto: a heavy tail of late packets, from 0.67 jitter early to about 25 late.
    Pareto,
}

impl Distribution {
    /// The kernel's `jitter` value.
    pub fn kernel_value(self) -> u32 {
        match self {
            Distribution::Uniform => chaos_common::jitter::UNIFORM,
            Distribution::Normal => chaos_common::jitter::NORMAL,
            Distribution::Pareto => chaos_common::jitter::PARETO,
        }
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

/// How drops are spread over matching packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossModel {
    /// Each packet independently, with `--probability`.
    Random,
    /// Every Nth matching packet.
    EveryNth(u32),
    /// The first N matching packets.
    First(u32),
    /// Bursts: good→bad with p, bad→good with r, delivery h in bad and k in good (netem's gemodel).
    GilbertElliott { p: f64, r: f64, h: f64, k: f64 },
}

impl FromStr for LossModel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let accepted =
            "random, every-nth:N, first:N or gilbert-elliott:P,R,H,K (fractions in [0, 1])";
        let (name, args) = text.split_once(':').unwrap_or((text, ""));
        let count = |args: &str| match args.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "{name} needs a positive count; accepted: {accepted}"
            )),
        };
        match name {
            "random" if args.is_empty() => Ok(LossModel::Random),
            "every-nth" => count(args).map(LossModel::EveryNth),
            "first" => count(args).map(LossModel::First),
            "gilbert-elliott" => {
                let values: Vec<f64> = args
                    .split(',')
                    .filter_map(|v| v.trim().parse().ok())
                    .collect();
                match values[..] {
                    [p, r, h, k] if values.iter().all(|v| (0.0..=1.0).contains(v)) => {
                        Ok(LossModel::GilbertElliott { p, r, h, k })
                    }
                    _ => Err(format!(
                        "gilbert-elliott takes four fractions P,R,H,K; accepted: {accepted}"
                    )),
                }
            }
            _ => Err(format!("accepted: {accepted}")),
        }
    }
}

/// A fraction as a u32 threshold against a uniform u32 (1.0 saturates to u32::MAX).
fn threshold(fraction: f64) -> u32 {
    (fraction * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

impl LossModel {
    fn params(self) -> PacketParams {
        let mut params = PacketParams::default();
        match self {
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
}

/// TCP flag names for `--tcp-flags`.
pub fn parse_tcp_flags(text: &str) -> Result<u32, String> {
    let accepted = "comma-separated TCP flags: FIN, SYN, RST, PSH, ACK, URG";
    text.split(',')
        .map(|flag| match flag.trim().to_ascii_uppercase().as_str() {
            "FIN" => Ok(0x01),
            "SYN" => Ok(0x02),
            "RST" => Ok(0x04),
            "PSH" => Ok(0x08),
            "ACK" => Ok(0x10),
            "URG" => Ok(0x20),
            _ => Err(format!("accepted: {accepted}")),
        })
        .try_fold(0, |all, flag| flag.map(|f| all | f))
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
}

impl PacketFault {
    pub fn kind(&self) -> FaultKind {
        match self.action {
            PacketAction::Drop => FaultKind::Drop,
            PacketAction::Reset => FaultKind::Reset,
            PacketAction::Delay { .. } => FaultKind::Delay,
            PacketAction::Corrupt { .. } => FaultKind::Corrupt,
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
        config.packet = self.loss.params();
        config.packet.tcp_flags = self.tcp_flags;
        if let PacketAction::Delay {
            delay_ns,
            jitter_ns,
            distribution,
        } = self.action
        {
            config.packet.delay_ns = delay_ns;
            config.packet.jitter_ns = jitter_ns;
            config.packet.distribution = distribution.kernel_value();
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
        if let Some(seed) = self.seed {
            config.flags |= flags::SEEDED;
            config.packet.seed = seed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_models_parse() {
        assert_eq!("random".parse::<LossModel>(), Ok(LossModel::Random));
        assert_eq!(
            "every-nth:3".parse::<LossModel>(),
            Ok(LossModel::EveryNth(3))
        );
        assert_eq!("first:10".parse::<LossModel>(), Ok(LossModel::First(10)));
        assert_eq!(
            "gilbert-elliott:0.01,0.3,0,1".parse::<LossModel>(),
            Ok(LossModel::GilbertElliott {
                p: 0.01,
                r: 0.3,
                h: 0.0,
                k: 1.0
            })
        );
        for bad in [
            "every-nth:0",
            "first:x",
            "gilbert-elliott:1,2",
            "gilbert-elliott:0.1,0.2,0.3,1.5",
            "bursty",
        ] {
            assert!(bad.parse::<LossModel>().is_err(), "{bad}");
        }
        let params = LossModel::GilbertElliott {
            p: 0.5,
            r: 1.0,
            h: 0.0,
            k: 1.0,
        }
        .params();
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

    #[test]
    fn tcp_flags_parse() {
        assert_eq!(parse_tcp_flags("SYN"), Ok(0x02));
        assert_eq!(parse_tcp_flags("psh,ack"), Ok(0x18));
        assert!(parse_tcp_flags("SYN,BOGUS").is_err());
    }
}
