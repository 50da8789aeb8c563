//! connection-limit: a cgroup's TCP connections to its peers are limited to a number held at
//! once (a database pool run dry) or to a rate of new ones (a rate-limited third party). The
//! kernel counts: cgroup sock_addr connect hooks admit or refuse, and the cgroup sock release
//! hook frees a seat when its socket goes (kernel 5.18+ for the errno, as connect-error).
use chaos_common::{FaultConfig, LimitParams};

use crate::{
    errno::Errno,
    filters::Filters,
    kernel::mechanism::Mechanism,
    kernel::programs::{self, ProgramSpec},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Connections held at once.
    Seats(u32),
    /// New connections: one per `interval_ns`, `burst` at once after a quiet spell.
    Rate { interval_ns: u64, burst: u32 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionLimit {
    pub limit: Limit,
    pub errno: Errno,
    pub filters: Filters,
}

impl ConnectionLimit {
    pub const MECHANISMS: &'static [Mechanism] = &[Mechanism::CgroupSockAddr];

    pub fn programs(mechanism: Mechanism) -> Option<&'static [&'static ProgramSpec]> {
        (mechanism == Mechanism::CgroupSockAddr).then_some(
            &[
                &programs::LIMIT4,
                &programs::LIMIT6,
                &programs::LIMIT_RELEASE,
            ][..],
        )
    }

    pub fn apply(&self, config: &mut FaultConfig) {
        // Only TCP has connections to count.
        config.proto = u32::from(chaos_common::proto::TCP);
        config.limit = match self.limit {
            Limit::Seats(max_connections) => LimitParams {
                max_connections,
                ..LimitParams::default()
            },
            Limit::Rate { interval_ns, burst } => LimitParams {
                interval_ns,
                burst_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)),
                ..LimitParams::default()
            },
        };
    }

    pub fn describe(&self) -> String {
        match self.limit {
            Limit::Seats(max) => format!("at most {max} connections at once"),
            Limit::Rate { interval_ns, burst } => format!(
                "at most {:.1} new connections/s (burst {burst})",
                1e9 / interval_ns.max(1) as f64
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_becomes_the_interval_and_the_burst_its_lead() {
        let fault = ConnectionLimit {
            limit: Limit::Rate {
                interval_ns: 20_000_000,
                burst: 5,
            },
            errno: Errno(111),
            filters: Filters::everything(),
        };
        let mut config = FaultConfig::default();
        fault.apply(&mut config);
        assert_eq!(config.limit.interval_ns, 20_000_000);
        assert_eq!(config.limit.burst_ns, 80_000_000);
        assert_eq!(config.limit.max_connections, 0);
        assert_eq!(config.proto, 6);
        assert_eq!(fault.describe(), "at most 50.0 new connections/s (burst 5)");
        let seats = ConnectionLimit {
            limit: Limit::Seats(5),
            ..fault
        };
        let mut config = FaultConfig::default();
        seats.apply(&mut config);
        assert_eq!(
            (config.limit.max_connections, config.limit.burst_ns),
            (5, 0)
        );
        assert_eq!(
            ConnectionLimit::programs(Mechanism::CgroupSockAddr).map(<[_]>::len),
            Some(3)
        );
        assert!(ConnectionLimit::programs(Mechanism::FmodRet).is_none());
    }
}
