//! Fault kinds. Each module says which programs realise its fault, which kernel mechanisms those
//! need, and how its options become the kernel's `FaultConfig`.
pub mod connect_error;
pub mod packet_drop;

use std::fmt::Write as _;

use chaos_common::{FaultConfig, FaultKind, flags};

use crate::{
    errno::Errno,
    filters::{Cidr, PortRange, Probability, Protocol},
    mechanism::Mechanism,
    programs::ProgramSpec,
};

/// What selects the operations a fault applies to, shared by every kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Filters {
    pub peers: Vec<Cidr>,
    pub ports: Vec<PortRange>,
    pub protocol: Option<Protocol>,
    pub probability: Probability,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultSpec {
    ConnectError(connect_error::ConnectError),
    Drop(packet_drop::PacketDrop),
}

impl FaultSpec {
    pub fn kind(&self) -> FaultKind {
        match self {
            FaultSpec::ConnectError(_) => FaultKind::ConnectError,
            FaultSpec::Drop(_) => FaultKind::Drop,
        }
    }

    pub fn name(&self) -> &'static str {
        kind_name(self.kind())
    }

    pub fn filters(&self) -> &Filters {
        match self {
            FaultSpec::ConnectError(fault) => &fault.filters,
            FaultSpec::Drop(fault) => &fault.filters,
        }
    }

    pub fn programs(&self) -> Vec<&'static ProgramSpec> {
        match self {
            FaultSpec::ConnectError(_) => connect_error::PROGRAMS.to_vec(),
            FaultSpec::Drop(fault) => fault.programs(),
        }
    }

    /// Everything the fault needs from the kernel, checked before anything is attached.
    pub fn required_mechanisms(&self) -> &'static [Mechanism] {
        match self {
            FaultSpec::ConnectError(_) => connect_error::MECHANISMS,
            FaultSpec::Drop(_) => packet_drop::MECHANISMS,
        }
    }

    pub fn errno(&self) -> Option<Errno> {
        match self {
            FaultSpec::ConnectError(fault) => Some(fault.errno),
            FaultSpec::Drop(_) => None,
        }
    }

    /// The kernel configuration; `armed` stays 0 until every filter map is filled.
    pub fn config(&self, fault_id: u32, events_per_sec: u32) -> FaultConfig {
        let filters = self.filters();
        let mut flag_bits = match self {
            FaultSpec::ConnectError(_) => 0,
            FaultSpec::Drop(fault) => fault.direction_flags(),
        };
        if !filters.peers.is_empty() {
            flag_bits |= flags::MATCH_PEER;
        }
        if !filters.ports.is_empty() {
            flag_bits |= flags::MATCH_PORT;
        }
        FaultConfig {
            probability: filters.probability.threshold(),
            fault_id,
            kind: self.kind() as u32,
            errno: self.errno().map_or(0, |errno| errno.0),
            flags: flag_bits,
            proto: Protocol::number(filters.protocol),
            events_per_sec,
            armed: 0,
            _reserved: 0,
        }
    }

    /// One line for people: what, how often, to what.
    pub fn describe(&self) -> String {
        let filters = self.filters();
        let mut text = self.name().to_string();
        match self {
            FaultSpec::ConnectError(fault) => {
                let _ = write!(text, " errno {}", fault.errno);
            }
            FaultSpec::Drop(fault) => {
                let _ = write!(text, " {}", format!("{:?}", fault.direction).to_lowercase());
            }
        }
        let _ = write!(text, ", probability {}", filters.probability.0);
        if let Some(protocol) = filters.protocol {
            let _ = write!(text, ", proto {}", format!("{protocol:?}").to_lowercase());
        }
        if !filters.peers.is_empty() {
            let peers: Vec<String> = filters.peers.iter().map(Cidr::to_string).collect();
            let _ = write!(text, ", peers {}", peers.join(","));
        }
        if !filters.ports.is_empty() {
            let ports: Vec<String> = filters.ports.iter().map(PortRange::to_string).collect();
            let _ = write!(text, ", ports {}", ports.join(","));
        }
        text
    }
}

pub fn kind_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::ConnectError => "connect-error",
        FaultKind::Drop => "drop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::Direction;

    fn filters() -> Filters {
        Filters {
            peers: vec!["10.1.0.0/16".parse().unwrap()],
            ports: vec![],
            protocol: Some(Protocol::Tcp),
            probability: Probability(0.5),
        }
    }

    #[test]
    fn connect_error_config_carries_errno_and_filters() {
        let spec = FaultSpec::ConnectError(connect_error::ConnectError {
            errno: Errno(110),
            filters: filters(),
        });
        let config = spec.config(7, 100);
        assert_eq!(config.errno, 110);
        assert_eq!(config.fault_id, 7);
        assert_eq!(config.flags, flags::MATCH_PEER);
        assert_eq!(config.proto, 6);
        assert_eq!(config.probability, 1 << 31);
        assert_eq!(config.armed, 0);
        assert_eq!(
            spec.describe(),
            "connect-error errno ETIMEDOUT (110), probability 0.5, proto tcp, peers 10.1.0.0/16"
        );
    }

    #[test]
    fn drop_direction_selects_programs_and_flags() {
        let spec = FaultSpec::Drop(packet_drop::PacketDrop {
            direction: Direction::Both,
            filters: filters(),
        });
        assert_eq!(spec.programs().len(), 2);
        let config = spec.config(1, 0);
        assert_eq!(
            config.flags & (flags::EGRESS | flags::INGRESS),
            flags::EGRESS | flags::INGRESS
        );
        let egress = FaultSpec::Drop(packet_drop::PacketDrop {
            direction: Direction::Egress,
            filters: filters(),
        });
        assert_eq!(egress.programs().len(), 1);
        assert_eq!(egress.config(1, 0).flags & flags::INGRESS, 0);
    }
}
